"""The CPU loop and the disks' I/O executor (boot/cpu.py, ``Cpu.block_io``).

Completions of asynchronous block requests reach the devices on the CPU's
thread, between slices; a halted CPU with requests in flight waits for them
on the host instead of letting virtual time leap to its next timer, so a
guest's command timeout cannot expire while the host is still reading.
"""

import time

import pytest

from asm import assemble
from drivebay.block.backend import BlockBackend
from drivebay.block.chain import Chain
from drivebay.block.drivers import open_image
from drivebay.block.faulty import FaultRule, FaultyDriver
from drivebay.block.io import InlineIo, IoThreads, Op, Request
from drivebay.block.raw import RawDriver
from drivebay.boot.cpu import StopReason
from drivebay.boot.machine import PcMachine
from drivebay.hw.clock import NS_PER_SEC

CODE = 0x7C00
LATENCY_S = 0.15


def halting_guest(machine):
    """Real mode: IF set, halt forever (only an interrupt or the host ends it)."""
    machine.ram.load(CODE, assemble(".code16\n sti\n1: hlt\n jmp 1b\n", CODE))
    machine.cpu.reset_to_real_mode()
    machine.cpu.set_reg("cs", 0)
    machine.cpu.set_reg("eip", CODE)


def slow_disk(tmp_path, io):
    path = tmp_path / "disk.raw"
    RawDriver.create(str(path), 1 << 20)
    slow = FaultyDriver(open_image(str(path), writable=True), [FaultRule(op="read", latency=LATENCY_S)])
    return BlockBackend(Chain([slow]), io=io)


@pytest.mark.parametrize("threads", [1, 4])
def test_a_halted_cpu_waits_for_a_request_in_flight(tmp_path, threads):
    with PcMachine(memory_mb=4, io_threads=threads) as machine:
        assert isinstance(machine.block_io, IoThreads) and machine.cpu.block_io is machine.block_io
        halting_guest(machine)
        disk = slow_disk(tmp_path, machine.block_io)
        seen = []

        def done(event):
            seen.append((event.ok, machine.clock.now_ns(), len(machine.block_io._done)))
            machine.cpu.request_exit(7)

        before_ns = machine.clock.now_ns()
        disk.submit(Request(Op.READ, 0, (bytearray(512),)), done)
        started = time.monotonic()
        result = machine.run(timeout_s=30)          # 30 s of virtual time: far beyond the latency
        host_s = time.monotonic() - started
        disk.close()
    assert result.reason is StopReason.EXIT and result.exit_code == 7
    ok, at_ns, queued = seen[0]
    assert ok and queued == 0                       # delivered on the CPU's thread by the loop
    # Virtual time followed the host while waiting: it did not leap to the
    # budget (30 s).  The first sync may add the time since the machine was
    # built, a fraction of a second even on a loaded host.
    waited_ns = at_ns - before_ns
    assert LATENCY_S * NS_PER_SEC * 0.9 <= waited_ns <= (host_s + 1.0) * NS_PER_SEC


def test_without_requests_in_flight_an_idle_cpu_skips_time():
    """Nothing in flight: HLT with no timer lets virtual time jump to the budget at once."""
    with PcMachine(memory_mb=4, io_threads=1) as machine:
        halting_guest(machine)
        started = time.monotonic()
        result = machine.run(timeout_s=30)
    assert result.reason is StopReason.TIMEOUT and result.virtual_ns >= 30 * NS_PER_SEC
    assert time.monotonic() - started < 10          # no host wait for the 30 s


def test_inline_executor_completions_are_delivered_by_the_loop(tmp_path):
    with PcMachine(memory_mb=4, io_threads=0) as machine:
        assert isinstance(machine.block_io, InlineIo)
        halting_guest(machine)
        path = tmp_path / "d.raw"
        RawDriver.create(str(path), 1 << 20)
        disk = machine._open_medium(str(path))
        assert disk.io is machine.block_io
        got = []
        disk.submit(Request(Op.WRITE, 512, (b"\x5a" * 512,)),
                    lambda e: (got.append(e.ok), machine.cpu.request_exit(1)))
        assert got == []                            # the request ran; its completion waits
        result = machine.run(timeout_s=1)
    assert result.reason is StopReason.EXIT and got == [True]
    assert path.read_bytes()[512:1024] == b"\x5a" * 512


def test_machine_closes_its_executor_but_not_a_callers():
    mine = IoThreads(1)
    try:
        with PcMachine(memory_mb=4, block_io=mine) as machine:
            assert machine.block_io is mine
        assert mine._workers[0].is_alive()
    finally:
        mine.close()
    with PcMachine(memory_mb=4, io_threads=1) as machine:
        workers = machine.block_io._workers
    assert not workers[0].is_alive()

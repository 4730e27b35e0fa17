"""Code the CPU already ran, overwritten behind unicorn's back, runs anew.

Unicorn caches translated blocks and drops them only when the CPU itself
stores to their page.  A device's DMA into guest RAM (GuestMemory) and the
CPU loop's one-call REP INSW write the RAM buffer directly; without an
invalidation the old translation keeps running.  That is what a boot does:
the MBR at 0x7C00 runs, reads the partition's boot sector over itself and
jumps to 0x7C00 again (SYSLINUX's mbr.bin on AHCI ran its own stale copy).
"""

import pytest

from asm import assemble
from drivebay.boot.cpu import StopReason
from drivebay.boot.machine import PcMachine

TARGET = 0x20000
CODE = 0x10000
PROBE, SWAP, DATA, EXIT = 0x80, 0x81, 0x82, 0x501


def routine(value):
    return assemble(f"movb ${value}, %al\n outb %al, ${PROBE:#x}\n ret\n", TARGET)


PROGRAM = f"""
    movl $0x9000, %esp
    call {TARGET:#x}
    outb %al, ${SWAP:#x}       /* the host overwrites the routine here */
    call {TARGET:#x}
    movl ${TARGET - 2:#x}, %edi /* REP INSW of the third routine over the second; */
                               /* the CPU stores the first word, on the page before */
    movw ${DATA:#x}, %dx
    movl $8, %ecx
    cld
    rep insw
    call {TARGET:#x}
    xorl %eax, %eax
    movw ${EXIT:#x}, %dx
    outw %ax, %dx
1:  hlt
    jmp 1b
"""


@pytest.mark.parametrize("how", ["view", "write"])
def test_code_overwritten_by_dma_and_rep_insw_runs_anew(how):
    seen = []
    with PcMachine(memory_mb=4, io_threads=0) as machine:
        def swap(offset, size, value):
            code = routine(2)
            if how == "view":
                machine.memory.view(TARGET, len(code))[:] = code
            else:
                machine.memory.write(TARGET, code)

        third = (b"\x90\x90" + routine(3)).ljust(16, b"\x90")

        def insw(offset, size, count):
            return third[:size * count]

        machine.io.add("probe", PROBE, 1, lambda o, s: 0, lambda o, s, v: seen.append(v))
        machine.io.add("swap", SWAP, 1, lambda o, s: 0, swap)
        machine.io.add("data", DATA, 2, lambda o, s: int.from_bytes(third[:2], "little"),
                       lambda o, s, v: None, read_repeat=insw)
        machine.ram.load(TARGET, routine(1))
        machine.ram.load(CODE, assemble(PROGRAM, CODE))
        machine.cpu.enter_flat_protected_mode(CODE)
        result = machine.run(timeout_s=5)
    assert (result.reason, result.exit_code) == (StopReason.EXIT, 0)
    assert seen == [1, 2, 3]

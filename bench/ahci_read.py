#!/usr/bin/env python3
"""Guest-visible AHCI read throughput: drivebay against QEMU's ahci (TCG) in one run.

The guest program ``bench_ahci`` (firmware/tests/bench_ahci.c) reads from
the disk on AHCI port 0 and checks every sector's first word against the
pattern written here (its LBA as a little-endian u32).  Four patterns:

    seq-128K-QD1    128 KiB READ DMA EXT, one at a time, sequential
    seq-128K-QD32   128 KiB READ FPDMA QUEUED, 32 tags in flight, sequential
    rand-4K-QD1     4 KiB READ DMA EXT at LCG-chosen aligned LBAs
    rand-4K-QD32    4 KiB READ FPDMA QUEUED, 32 tags in flight, the same LBAs

each twice: taking completions by interrupt (INTx, HLT in between: what an
operating system does) and, as "NAME-polled", by polling PxCI/PxSACT with
the port's interrupts off (the device and I/O path without the cost of
delivering interrupts).

Both emulators read the same raw image (its pages in the host cache: it was
just written), each through its own default I/O path (drivebay: PcMachine's
I/O threads; QEMU: cache=writeback, aio=threads).  Timing is on the host:
the guest prints ``# bench-start`` before its first request and
``# bench-end`` after its last completion, and the host notes when each
line arrives on the serial console, so boot and set-up cost nothing.  The
best of ``--repeat`` runs per emulator is reported as MB/s and IOPS, with
the ratio drivebay/QEMU; everything goes to bench/results/ahci_read.json.
A run whose guest reports a failure (a wrong sector, a lost completion) is
not timed: it is listed under ``<emulator>_failed_runs`` and run again.
"""

import argparse
import os
import pathlib
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from harness import QEMU, QEMU_DEVICES, parse_tap  # noqa: E402

from drivebay.boot.cpu import StopReason  # noqa: E402
from drivebay.boot.firmware import guest_program  # noqa: E402
from drivebay.boot.machine import DEFAULT_IO_THREADS, PcMachine  # noqa: E402

import benchlib

MiB = 1 << 20
SECTOR = 512
START, END = "# bench-start", "# bench-end"
PORTS = 6                        # as QEMU's ahci, so both guests see the same PI
MEMORY_MB = 64                   # 32 buffers of 128 KiB fit easily
TIMEOUT_S = 1800


def make_disk(path, mib):
    """Every sector holds its LBA as a little-endian u32, repeated."""
    with open(path, "wb") as f:
        for first in range(0, mib * 2048, 2048):
            f.write(b"".join(struct.pack("<I", lba) * (SECTOR // 4)
                             for lba in range(first, first + 2048)))


def cases(args):
    """name -> (guest command line, requests, bytes per request).  Each
    pattern runs interrupt-driven (as an operating system's driver) and
    polled (the device and I/O path alone, without interrupt delivery)."""
    seq = args.seq_mib * MiB // (128 << 10)
    rand = args.rand_count
    patterns = {
        "seq-128K-QD1": (f"mode=seq depth=1 kib=128 count={seq}", seq, 128 << 10),
        "seq-128K-QD32": (f"mode=seq depth=32 kib=128 count={seq}", seq, 128 << 10),
        "rand-4K-QD1": (f"mode=rand depth=1 kib=4 count={rand}", rand, 4096),
        "rand-4K-QD32": (f"mode=rand depth=32 kib=4 count={rand}", rand, 4096),
    }
    out = {}
    for name, (cmdline, requests, size) in patterns.items():
        out[name] = (cmdline + " irq=1", requests, size)
        out[name + "-polled"] = (cmdline + " irq=0", requests, size)
    return out


class LineClock:
    """Console bytes in, with the host time at which the marker lines ended."""

    def __init__(self):
        self.text = bytearray()
        self.marks = {}
        self._line = bytearray()

    def feed(self, data):
        now = time.perf_counter()
        self.text.extend(data)
        self._line.extend(data)
        while (end := self._line.find(b"\n")) >= 0:
            line = self._line[:end].decode("latin-1").rstrip("\r")
            del self._line[:end + 1]
            if line in (START, END):
                self.marks.setdefault(line, now)

    def elapsed(self):
        if START not in self.marks or END not in self.marks:
            return None
        return self.marks[END] - self.marks[START]


def devices(disk):
    return [("ahci", {"ports": PORTS, "drives": {0: {"type": "hdd", "path": str(disk)}}})]


def run_drivebay(elf, disk, cmdline, io_threads):
    clock = LineClock()
    with PcMachine(memory_mb=MEMORY_MB, serial_out=clock.feed, io_threads=io_threads) as machine:
        for name, options in devices(disk):
            machine.add_device(name, **options)
        machine.load_program(elf, cmdline=cmdline)
        result = machine.run(timeout_s=TIMEOUT_S)
    status = result.exit_code if result.reason == StopReason.EXIT else None
    return clock, parse_tap("drivebay", status, clock.text.decode("latin-1"))


def run_qemu(elf, disk, cmdline):
    cmd = [QEMU, "-machine", "pc", "-nodefaults", "-m", str(MEMORY_MB), "-kernel", str(elf),
           "-append", cmdline, "-serial", "stdio", "-display", "none", "-monitor", "none",
           "-no-reboot", "-device", "isa-debug-exit,iobase=0x501,iosize=2", "-accel", "tcg"]
    for name, options in devices(disk):
        cmd += QEMU_DEVICES[name](options)
    clock = LineClock()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          bufsize=0) as proc:
        while chunk := os.read(proc.stdout.fileno(), 65536):
            clock.feed(chunk)
        code = proc.wait(timeout=TIMEOUT_S)
    status = code >> 1 if code & 1 else None
    return clock, parse_tap("qemu", status, clock.text.decode("latin-1"))


class RunFailed(Exception):
    pass


def timed(emulator, elf, disk, cmdline, io_threads):
    if emulator == "drivebay":
        clock, outcome = run_drivebay(elf, disk, cmdline, io_threads)
    else:
        clock, outcome = run_qemu(elf, disk, cmdline)
    elapsed = clock.elapsed()
    if not outcome.passed or elapsed is None:
        failures = "; ".join(d for d in outcome.failures().values()) or "no TAP result"
        raise RunFailed(f"{emulator} {cmdline!r}: {failures}")
    return elapsed


def timed_runs(emulator, elf, disk, cmdline, args):
    """``args.repeat`` good runs; a failed run is reported and run again (at
    most ``args.retries`` times in all), never timed."""
    runs, failed = [], []
    while len(runs) < args.repeat:
        try:
            runs.append(timed(emulator, elf, disk, cmdline, args.io_threads))
        except RunFailed as e:
            failed.append(str(e))
            print(f"  run failed: {e}", flush=True)
            if len(failed) > args.retries:
                raise SystemExit(f"{emulator}: {len(failed)} failed runs of {cmdline!r}")
    return runs, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-mib", type=int, default=256)
    ap.add_argument("--seq-mib", type=int, default=256, help="MiB read by each sequential run")
    ap.add_argument("--rand-count", type=int, default=4000, help="reads per random run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--retries", type=int, default=3, help="failed runs tolerated per case")
    ap.add_argument("--io-threads", type=int, default=DEFAULT_IO_THREADS)
    ap.add_argument("--case", action="append", help="run only these cases")
    ap.add_argument("--only", choices=("drivebay", "qemu"), help="run one emulator (no ratios)")
    ap.add_argument("--out", default=benchlib.default_out("ahci_read"))
    args = ap.parse_args()
    emulators = [args.only] if args.only else ["drivebay", "qemu"]
    chosen = {k: v for k, v in cases(args).items() if not args.case or k in args.case}
    result = {"benchmark": "ahci_read", "image_mib": args.image_mib, "repeat": args.repeat,
              "io_threads": args.io_threads, "host_cpus": os.cpu_count(),
              "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        disk = pathlib.Path(tmp) / "disk.img"
        # A copy: the build tree's ELF is relinked whenever firmware/ is rebuilt.
        elf = shutil.copy(guest_program("bench_ahci"), pathlib.Path(tmp) / "bench_ahci.elf")
        make_disk(disk, args.image_mib)
        for name, (cmdline, requests, size) in chosen.items():
            row = {"cmdline": cmdline, "requests": requests, "request_bytes": size}
            for emulator in emulators:
                runs, failed = timed_runs(emulator, elf, disk, cmdline, args)
                best = min(runs)
                row[f"{emulator}_seconds"] = runs
                if failed:
                    row[f"{emulator}_failed_runs"] = failed
                row[f"{emulator}_MBps"] = requests * size / 1e6 / best
                row[f"{emulator}_IOPS"] = requests / best
            line = f"{name:14s}"
            for emulator in emulators:
                line += (f"  {emulator} {row[f'{emulator}_MBps']:8.1f} MB/s "
                         f"{row[f'{emulator}_IOPS']:9.0f} IOPS")
            if len(emulators) == 2:
                row["ratio_drivebay_to_qemu"] = row["drivebay_MBps"] / row["qemu_MBps"]
                line += f"  ratio {row['ratio_drivebay_to_qemu']:.3f}"
            print(line, flush=True)
            result[name] = row
    if len(emulators) == 2 and not args.case:
        benchlib.save_results(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

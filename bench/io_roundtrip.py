#!/usr/bin/env python3
"""Port-I/O and MMIO round trips per second from a guest loop: drivebay vs QEMU TCG.

The guest program ``bench_io`` (firmware/tests/bench_io.c) performs N port
reads of the PCI configuration data register and N MMIO reads of the local
APIC version register.  Each emulator runs it twice in this process's
session, with N and with N=0; the difference of the wall times is the cost
of the 2N accesses, which removes boot and start-up costs on both sides.
QEMU's time includes its own start-up (the N=0 run cancels it).

Writes a JSON result (bench/results/io_roundtrip.json) and prints the ratio
drivebay/QEMU in accesses per second (QEMU is expected to be far faster: it
handles these accesses in C; the figure tracks our per-access overhead).
"""

import argparse
import json
import pathlib
import subprocess
import sys
import time

from drivebay.boot.cpu import StopReason
from drivebay.boot.firmware import guest_program
from drivebay.boot.machine import PcMachine

import benchlib

QEMU = ["qemu-system-x86_64", "-machine", "pc", "-m", "64", "-serial", "stdio",
        "-display", "none", "-monitor", "none", "-no-reboot", "-accel", "tcg",
        "-device", "isa-debug-exit,iobase=0x501,iosize=2"]


def drivebay_run(elf, n):
    out = bytearray()
    machine = PcMachine(memory_mb=64, serial_out=out.extend)
    machine.load_program(elf, cmdline=f"n={n}")
    t0 = time.perf_counter()
    result = machine.run(timeout_s=600)
    elapsed = time.perf_counter() - t0
    if result.reason != StopReason.EXIT or result.exit_code != 0:
        raise SystemExit(f"drivebay run failed: {result}\n{out.decode(errors='replace')}")
    return elapsed


def qemu_run(elf, n):
    t0 = time.perf_counter()
    done = subprocess.run(QEMU + ["-kernel", str(elf), "-append", f"n={n}"],
                          capture_output=True, timeout=600)
    elapsed = time.perf_counter() - t0
    if done.returncode != 1:
        raise SystemExit(f"qemu run failed with {done.returncode}: {done.stdout.decode(errors='replace')}")
    return elapsed


def best_of(fn, elf, n, repeat):
    return min(fn(elf, n) for _ in range(repeat))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000, help="accesses of each kind per run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=benchlib.default_out("io_roundtrip"))
    args = ap.parse_args()
    elf = guest_program("bench_io")
    accesses = 2 * args.n
    db = best_of(drivebay_run, elf, args.n, args.repeat) - best_of(drivebay_run, elf, 0, args.repeat)
    qm = best_of(qemu_run, elf, args.n, args.repeat) - best_of(qemu_run, elf, 0, args.repeat)
    result = {
        "benchmark": "io_roundtrip",
        "accesses": accesses,
        "drivebay_seconds": db,
        "qemu_seconds": qm,
        "drivebay_per_second": accesses / db,
        "qemu_per_second": accesses / qm,
        "ratio_drivebay_to_qemu": (accesses / db) / (accesses / qm),
    }
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"drivebay: {result['drivebay_per_second']:,.0f} accesses/s")
    print(f"qemu tcg: {result['qemu_per_second']:,.0f} accesses/s")
    print(f"ratio drivebay/qemu: {result['ratio_drivebay_to_qemu']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

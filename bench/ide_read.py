#!/usr/bin/env python3
"""Sequential read throughput from a guest over IDE: PIO and bus-master DMA,
drivebay against QEMU (its board PIIX3 IDE, TCG) in the same run.

The guest program ``bench_ide`` reads MIB mebibytes from LBA 0 in 64 KiB
requests and checks every sector.  Each emulator runs it with mib=N and
mib=0; the difference of the wall times is the cost of the reads, which
removes boot and start-up costs on both sides.  Results go to
bench/results/ide_read.json as MB/s and the ratio drivebay/QEMU.
"""

import argparse
import pathlib
import struct
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from harness import run_drivebay, run_qemu  # noqa: E402

from drivebay.boot.firmware import guest_program  # noqa: E402

import benchlib

MiB = 1 << 20


def make_disk(path, mib):
    with open(path, "wb") as f:
        for first in range(0, (mib + 1) * 2048, 2048):
            f.write(b"".join(struct.pack("<I", lba) * 128 for lba in range(first, first + 2048)))


def timed(runner, elf, disk, mode, mib):
    drives = {(0, 0): {"type": "hdd", "path": str(disk)}}
    t = time.perf_counter()
    out = runner(elf, cmdline=f"mode={mode} mib={mib}", devices=[("piix3-ide", {"drives": drives})],
                 timeout_s=1800)
    elapsed = time.perf_counter() - t
    if not out.passed:
        raise SystemExit(f"{out.emulator} failed:\n{out.output}")
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pio-mib", type=int, default=4)
    ap.add_argument("--dma-mib", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default=benchlib.default_out("ide_read"))
    args = ap.parse_args()
    elf = guest_program("bench_ide")
    result = {"benchmark": "ide_read"}
    sizes = {"pio": args.pio_mib, "dma": args.dma_mib}
    with tempfile.TemporaryDirectory() as tmp:
        disk = pathlib.Path(tmp) / "disk.img"
        make_disk(disk, max(sizes.values()))
        for mode, mib in sizes.items():
            row = {"mib": mib}
            for name, runner in (("drivebay", run_drivebay), ("qemu", run_qemu)):
                full = min(timed(runner, elf, disk, mode, mib) for _ in range(args.repeat))
                empty = min(timed(runner, elf, disk, mode, 0) for _ in range(args.repeat))
                row[f"{name}_MBps"] = mib * MiB / 1e6 / max(full - empty, 1e-6)
            row["ratio_drivebay_to_qemu"] = row["drivebay_MBps"] / row["qemu_MBps"]
            result[mode] = row
            print(f"{mode}: drivebay {row['drivebay_MBps']:.1f} MB/s, qemu {row['qemu_MBps']:.1f} MB/s, "
                  f"ratio {row['ratio_drivebay_to_qemu']:.3f}")
    benchlib.save_results(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

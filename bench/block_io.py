#!/usr/bin/env python3
"""Block-layer throughput: drivebay against qemu-img on the same images, same run.

For each format (raw, VDI, VHD, VMDK sparse, Parallels) a dynamic image of SIZE (default 1 GiB) is
filled with random data by ``qemu-img convert``; then:

* 64 KiB sequential reads of the whole disk and 4 KiB random reads: drivebay
  reads through its chain in one thread, one request at a time; qemu-img
  runs ``qemu-img bench`` with queue depth 1 (the same shape of work) and
  with its default depth 64 for reference;
* 64 KiB sequential writes into a fresh image;
* convert raw -> format: ``drivebay.block.convert`` against ``qemu-img convert``.

Every figure is reported as drivebay/qemu-img (higher is better for
drivebay) and written to bench/results/block_io.json.  Page cache on both
sides (qemu-img -t writeback), so these measure the block layers, not the disk.
"""

import argparse
import os
import pathlib
import random
import subprocess
import sys
import tempfile
import time

from drivebay.block import bitmap_impl
from drivebay.block.chain import open_chain
from drivebay.block.convert import convert
from drivebay.block.drivers import driver_for

import benchlib

QEMU_FMT = {"raw": "raw", "vdi": "vdi", "vhd": "vpc", "vmdk": "vmdk", "parallels": "parallels"}
MiB = 1 << 20


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def qemu_bench(path, fmt, count, size, step, depth, write=False, pattern_random=False):
    cmd = ["qemu-img", "bench", "-f", QEMU_FMT[fmt], "-t", "writeback", "-c", str(count),
           "-s", str(size), "-d", str(depth)]
    cmd += ["-S", str(step)] if step else []
    cmd += ["-w"] if write else []
    cmd.append(str(path))
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    # "Run completed in 1.234 seconds."
    return float(out.rsplit("completed in", 1)[1].split()[0])


def drivebay_seq_read(path, size, block=64 * 1024):
    with open_chain(path) as chain:
        buf = bytearray(block)
        view = memoryview(buf)
        return timed(lambda: [chain.readinto(o, view) for o in range(0, size, block)])


def drivebay_random_read(path, size, count, block=4096, seed=7):
    rnd = random.Random(seed)
    offsets = [rnd.randrange(size // block) * block for _ in range(count)]
    with open_chain(path) as chain:
        view = memoryview(bytearray(block))
        return timed(lambda: [chain.readinto(o, view) for o in offsets])


def drivebay_seq_write(path, size, block=64 * 1024):
    data = os.urandom(block)
    with open_chain(path, writable=True) as chain:
        return timed(lambda: ([chain.write(o, data) for o in range(0, size, block)], chain.flush()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--random-reads", type=int, default=50_000)
    ap.add_argument("--formats", default="raw,vdi,vhd,vmdk,parallels")
    ap.add_argument("--out", default=benchlib.default_out("block_io"))
    args = ap.parse_args()
    size = args.size_mib * MiB
    results = {"size_bytes": size, "bitmap_backend": bitmap_impl.BACKEND, "formats": {}}
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        tmp = pathlib.Path(tmp)
        src = tmp / "random.raw"
        with open(src, "wb") as f:
            for _ in range(size // (16 * MiB)):
                f.write(os.urandom(16 * MiB))
        for fmt in args.formats.split(","):
            r = {}
            img = tmp / f"disk.{fmt}"
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", QEMU_FMT[fmt]] +
                           (["-o", "force_size=on"] if fmt == "vhd" else []) +
                           [str(src), str(img)], check=True)
            n64 = size // (64 * 1024)
            q1 = qemu_bench(img, fmt, n64, 65536, 65536, 1)
            q64 = qemu_bench(img, fmt, n64, 65536, 65536, 64)
            d = drivebay_seq_read(img, size)
            r["seq_read_64k"] = {"drivebay_s": d, "qemu_d1_s": q1, "qemu_d64_s": q64,
                                 "ratio_vs_d1": q1 / d, "ratio_vs_d64": q64 / d}
            q1 = qemu_bench(img, fmt, args.random_reads, 4096, 0, 1)
            q64 = qemu_bench(img, fmt, args.random_reads, 4096, 0, 64)
            d = drivebay_random_read(img, size, args.random_reads)
            r["random_read_4k"] = {"drivebay_s": d, "qemu_d1_s": q1, "qemu_d64_s": q64,
                                   "ratio_vs_d1": q1 / d, "ratio_vs_d64": q64 / d}
            for who in ("d", "q"):
                fresh = tmp / f"w{who}.{fmt}"
                driver_for(fmt).create(fresh, size)
                if who == "d":
                    dw = drivebay_seq_write(fresh, size)
                else:
                    qw = qemu_bench(fresh, fmt, n64, 65536, 65536, 1, write=True)
                fresh.unlink()
            r["seq_write_64k"] = {"drivebay_s": dw, "qemu_d1_s": qw, "ratio_vs_d1": qw / dw}
            out_d, out_q = tmp / f"cd.{fmt}", tmp / f"cq.{fmt}"
            with open_chain(src, format="raw") as chain:
                dc = timed(lambda: convert(chain, out_d, fmt))
            qc = timed(lambda: subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", QEMU_FMT[fmt],
                                               str(src), str(out_q)], check=True))
            r["convert_from_raw"] = {"drivebay_s": dc, "qemu_s": qc, "ratio": qc / dc}
            for p in (out_d, out_q, img):
                p.unlink()
            results["formats"][fmt] = r
            print(f"{fmt}: " + ", ".join(
                f"{k} {v.get('ratio_vs_d1', v.get('ratio')):.2f}x" for k, v in r.items()))
    benchlib.save_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

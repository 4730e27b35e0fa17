#!/usr/bin/env python3
"""The asynchronous I/O path against ``qemu-img bench -i threads``, same images, same run.

For each format (raw, VDI, VHD) a dynamic image of SIZE (default 1 GiB) is
filled with random data by ``qemu-img convert``; then, with the host cache on
(qemu-img ``-t writeback``) and off (``-t none``, O_DIRECT), at queue depths
1, 8 and 32:

* 4 KiB "random" reads: qemu-img bench has no random pattern, so both sides
  read with a stride of 7919 × 4 KiB (a prime number of blocks), wrapping
  around the disk (qemu-img's ``offset %= image_size``): every 4 KiB block,
  in scattered order;
* 64 KiB sequential reads;
* 64 KiB sequential writes (overwrites).  qemu-img's time ends when the
  last write completes (it flushes when closing, untimed); drivebay's does
  too with the host cache on, and with it off includes a final flush, so that
  drivebay's own write cache is on the disk when its clock stops, as
  qemu-img's O_DIRECT writes are.

drivebay runs BlockBackend.submit() with 1 and with 4 I/O threads (IoThreads;
``--threads`` adds more),
keeping DEPTH requests in flight and resubmitting from the completion
callbacks, as a device model would.  qemu-img's thread pool sizes itself.
Each figure is the median of REPEAT runs, drivebay and qemu-img alternating;
the page cache is warmed before each cache-on read run.  Ratios are
drivebay/qemu-img requests per second (higher is better for drivebay).
Results go to bench/results/io_path.json.

With the host cache off, reads go to the pool's host queue (io_uring, see
block/uring.py); ``--uring off`` measures its thread fallback instead.
With the host cache on, reads the page cache holds run on the submitting
thread (preadv2 RWF_NOWAIT, see block/backend.py), so their figures do not
depend on the thread count.  ``--pool-reads`` also measures every read
through the I/O threads (no RWF_NOWAIT, no host queue).
"""

import argparse
import mmap
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from drivebay.block.backend import BlockBackend
from drivebay.block.io import IoThreads, Op, Request

import benchlib

QEMU_FMT = {"raw": "raw", "vdi": "vdi", "vhd": "vpc"}
MiB = 1 << 20
STRIDE_BLOCKS = 7919
WORKLOADS = {                      # name: (request size, step, write)
    "4k-random-read": (4096, 4096 * STRIDE_BLOCKS, False),
    "64k-seq-read": (65536, 65536, False),
    "64k-seq-write": (65536, 65536, True),
}


def qemu_bench(path, fmt, cache, size, step, depth, count, write):
    cmd = ["qemu-img", "bench", "-f", QEMU_FMT[fmt], "-t", "writeback" if cache else "none",
           "-i", "threads", "-c", str(count), "-s", str(size), "-S", str(step),
           "-d", str(depth)]
    if write:
        cmd += ["-w"]
    out = subprocess.run(cmd + [str(path)], capture_output=True, text=True, check=True).stdout
    return float(out.rsplit("completed in", 1)[1].split()[0])   # "Run completed in 1.234 seconds."


def drivebay_bench(backend, io, size, step, depth, count, write, flush):
    """Seconds for ``count`` requests kept ``depth`` deep (and a final flush)."""
    disk = backend.size
    bufs = [memoryview(mmap.mmap(-1, size)) for _ in range(depth)]
    for b in bufs:
        b[:] = os.urandom(size) if write else bytes(size)
    op = Op.WRITE if write else Op.READ
    state = {"next": 0, "left": count, "error": None}

    def submitter(k):
        def done(event):
            if event.error is not None:
                state["error"] = event.error
            state["left"] -= 1
            i = state["next"]
            if i < count:
                state["next"] = i + 1
                backend.submit(Request(op, (i * step) % disk, (bufs[k],)), callbacks[k])
        return done

    callbacks = [submitter(k) for k in range(depth)]
    start = time.perf_counter()
    for k in range(min(depth, count)):
        i = state["next"]
        state["next"] = i + 1
        backend.submit(Request(op, (i * step) % disk, (bufs[k],)), callbacks[k])
    while state["left"]:
        io.wait(1)
        io.poll_completions()
    if flush:
        flushed = []
        backend.submit(Request(Op.FLUSH), flushed.append)
        while not flushed:
            io.wait(1)
            io.poll_completions()
    elapsed = time.perf_counter() - start
    if state["error"] is not None:
        raise state["error"]
    return elapsed


def warm(path):
    with open(path, "rb", buffering=0) as f:
        while f.read(8 * MiB):
            pass


def make_image(folder, fmt, size):
    src = folder / "random.raw"
    if not src.exists():
        with open(src, "wb") as f:
            for _ in range(size // (16 * MiB)):
                f.write(os.urandom(16 * MiB))
    img = folder / f"disk.{fmt}"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", QEMU_FMT[fmt]] +
                   (["-o", "force_size=on"] if fmt == "vhd" else []) + [str(src), str(img)],
                   check=True)
    return img


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--formats", default="raw,vdi,vhd")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--depths", default="1,8,32")
    ap.add_argument("--threads", default="1,4")
    ap.add_argument("--cache", default="on,off")
    ap.add_argument("--count-4k", type=int, default=20000, help="requests per 4 KiB run")
    ap.add_argument("--count-64k", type=int, default=0,
                    help="requests per 64 KiB run (default: the whole disk)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--uring", choices=("on", "off"), default="on",
                    help="off: the host queue's thread fallback (reads of host cache off)")
    ap.add_argument("--pool-reads", action="store_true",
                    help="also measure reads through the I/O threads only")
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR", "/var/tmp"),
                    help="a disk-backed folder (O_DIRECT)")
    ap.add_argument("--out", default=benchlib.default_out("io_path"))
    args = ap.parse_args()
    size = args.size_mib * MiB
    depths = [int(d) for d in args.depths.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",")]
    caches = [c == "on" for c in args.cache.split(",")]
    qemu_version = subprocess.run(["qemu-img", "--version"], capture_output=True,
                                  text=True).stdout.splitlines()[0]
    results = {"size_bytes": size, "qemu": qemu_version, "cpus": os.cpu_count(),
               "python": platform.python_version(), "repeat": args.repeat,
               "uring": args.uring, "runs": []}
    variants = [(t, True) for t in thread_counts]
    if args.pool_reads:
        variants += [(t, False) for t in thread_counts]
    print(f"{'format':6} {'workload':15} {'cache':5} {'depth':>5}  {'qemu-img':>10}  " +
          "  ".join(f"{'t' + str(t) + ('' if nw else '-pool'):>16}" for t, nw in variants))
    with tempfile.TemporaryDirectory(prefix="drivebay-bench-", dir=args.dir) as tmp:
        folder = pathlib.Path(tmp)
        for fmt in args.formats.split(","):
            img = make_image(folder, fmt, size)
            for name in args.workloads.split(","):
                req, step, write = WORKLOADS[name]
                count = args.count_4k if req == 4096 else (args.count_64k or size // req)
                for cache in caches:
                    for depth in depths:
                        row = bench_cell(img, fmt, cache, req, step, write, depth, count,
                                         variants, args.repeat, args.uring == "on")
                        row.update(format=fmt, workload=name, cache="on" if cache else "off",
                                   depth=depth, count=count)
                        results["runs"].append(row)
                        print(f"{fmt:6} {name:15} {row['cache']:5} {depth:5}  "
                              f"{row['qemu_iops']:8.0f}/s  " + "  ".join(
                                  f"{row['drivebay'][v]['iops']:8.0f}/s {row['drivebay'][v]['ratio']:5.2f}x"
                                  for v in row["drivebay"]), flush=True)
            img.unlink()
    benchlib.save_results(args.out, results)
    return 0


def bench_cell(img, fmt, cache, req, step, write, depth, count, variants, repeat, uring):
    qemu, ours = [], {v: [] for v in variants}
    pools = {t: IoThreads(t, uring=uring) for t, _ in variants}
    try:
        for _ in range(repeat):
            if cache and not write:
                warm(img)
            qemu.append(qemu_bench(img, fmt, cache, req, step, depth, count, write))
            for threads, nowait in variants:
                if cache and not write:
                    warm(img)
                io = pools[threads]
                with BlockBackend.open(img, read_only=not write, io=io, host_cache=cache,
                                       nowait_reads=nowait, host_queue=nowait) as b:
                    ours[(threads, nowait)].append(
                        drivebay_bench(b, io, req, step, depth, count, write,
                                       flush=write and not cache))
    finally:
        for io in pools.values():
            io.close()
    q = statistics.median(qemu)
    row = {"qemu_s": q, "qemu_iops": count / q, "qemu_all_s": qemu, "drivebay": {}}
    for (threads, nowait), times in ours.items():
        d = statistics.median(times)
        key = f"threads={threads}" + ("" if nowait else ",pool-reads")
        row["drivebay"][key] = {"s": d, "all_s": times, "iops": count / d,
                                "bytes_per_s": count * req / d, "ratio": q / d}
    return row


if __name__ == "__main__":
    sys.exit(main())

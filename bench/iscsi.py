#!/usr/bin/env python3
"""iSCSI reads: drivebay's initiator against QEMU's (libiscsi, Debian's
qemu-block-extra) on the same LUN of a private tgtd, same run.

A LUN of SIZE (default 256 MiB) of random data; then:

* 64 KiB sequential reads at queue depth 1: ``IscsiDriver.readinto`` in a
  loop against ``qemu-img bench -d 1``;
* 64 KiB sequential reads at queue depth 8: BlockBackend on IoThreads(4)
  (and on 8 threads) keeping 8 requests in flight against ``qemu-img bench
  -d 8`` (an I/O thread waits for its command: the threads bound the depth);
* 64 KiB sequential writes at queue depth 1 against ``qemu-img bench -w -d 1``;
* the whole LUN copied to a raw file: ``drivebay img convert`` against
  ``qemu-img convert``.

Each figure is MB/s and drivebay/qemu-img (higher is better for drivebay);
written to bench/results/iscsi.json.  Loopback TCP to tgtd, the backing file
in the page cache: this measures the initiators (and tgtd), not a network.
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from drivebay.block.backend import BlockBackend
from drivebay.block.chain import Chain
from drivebay.block.convert import convert
from drivebay.block.io import IoThreads, Op, Request
from drivebay.block.iscsi import IscsiDriver

import benchlib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from tgtd import Tgtd  # noqa: E402

MiB = 1 << 20
BLOCK = 64 * 1024


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def qemu_bench(url, count, depth, write=False):
    cmd = ["qemu-img", "bench", "-f", "raw", "-c", str(count), "-s", str(BLOCK), "-d", str(depth)]
    cmd += ["-w"] if write else []
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    return float(out.rsplit("completed in", 1)[1].split()[0])


def drivebay_qd1(url, size, write=False):
    with IscsiDriver.open(url, writable=write) as image:
        buf = memoryview(bytearray(os.urandom(BLOCK)))
        step = image.write if write else image.readinto
        return timed(lambda: [step(o, buf) for o in range(0, size, BLOCK)])


def drivebay_queued(url, size, depth, threads=4):
    io = IoThreads(threads)
    backend = BlockBackend(Chain([IscsiDriver.open(url)]), io=io)
    bufs = [bytearray(BLOCK) for _ in range(depth)]

    def run():
        offsets = iter(range(0, size, BLOCK))
        free, state = list(range(depth)), {"pending": 0, "more": True}

        def done(d):                     # on this thread, inside poll_completions
            assert d.ok, d.error
            free.append(d.request.tag)
            state["pending"] -= 1
        while state["more"] or state["pending"]:
            while free and state["more"]:
                offset = next(offsets, None)
                if offset is None:
                    state["more"] = False
                    break
                slot = free.pop()
                state["pending"] += 1
                backend.submit(Request(Op.READ, offset, (bufs[slot],), tag=slot), done)
            io.wait(1)
            io.poll_completions()
    try:
        return timed(run)
    finally:
        backend.close()
        io.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256, help="LUN size in MiB")
    ap.add_argument("--out", default=benchlib.default_out("iscsi"))
    args = ap.parse_args()
    size = args.size * MiB
    count = size // BLOCK
    with tempfile.TemporaryDirectory(prefix="drivebay-bench-iscsi-") as work:
        daemon = Tgtd(work)
        try:
            t = daemon.target("bench", size=size, content=os.urandom(size))
            url = t.url()
            rows = {}

            def row(name, ours, theirs):
                rows[name] = {"drivebay_mb_s": size / MiB / ours, "qemu_mb_s": size / MiB / theirs,
                              "ratio": theirs / ours}
                r = rows[name]
                print(f"{name:<28} drivebay {r['drivebay_mb_s']:8.0f} MB/s   qemu-img "
                      f"{r['qemu_mb_s']:8.0f} MB/s   ratio {r['ratio']:.2f}")

            drivebay_qd1(url, size)                       # warm the page cache under tgtd
            row("seq-read-64K-QD1", drivebay_qd1(url, size), qemu_bench(url, count, 1))
            row("seq-read-64K-QD8", drivebay_queued(url, size, 8), qemu_bench(url, count, 8))
            row("seq-read-64K-QD8-8threads", drivebay_queued(url, size, 8, threads=8),
                qemu_bench(url, count, 8))
            row("seq-write-64K-QD1", drivebay_qd1(url, size, write=True),
                qemu_bench(url, count, 1, write=True))
            ours_out, theirs_out = os.path.join(work, "d.raw"), os.path.join(work, "q.raw")

            def ours():
                with IscsiDriver.open(url) as image:
                    convert(image, ours_out, "raw")
            theirs = timed(lambda: subprocess.run(["qemu-img", "convert", "-O", "raw", url,
                                                   theirs_out], check=True))
            row("convert-to-raw", timed(ours), theirs)
        finally:
            daemon.stop()
    benchlib.save_results(args.out, {"size_mib": args.size, "block": BLOCK, "results": rows})


if __name__ == "__main__":
    main()

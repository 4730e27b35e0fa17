#!/usr/bin/env python3
"""Bandwidth groups on the real clock: accuracy, sharing, limit changes, cost.

Two raw disks of SIZE (default 256 MiB) on a disk-backed folder, read with
64 KiB requests eight deep through BlockBackend.submit() and an IoThreads
pool, host cache on (the page cache serves far faster than any limit here,
so the group alone decides the rate).  Completions are time-stamped as the
CPU loop sees them.

(a) accuracy: group "Limit" at ``--limit`` (VBoxManage units, default 20M =
    20 MiB/s) shared by both disks, both busy for ``--seconds`` (10): the
    delivered total must be the limit ± 3 %, each disk about half;
(b) the split follows demand: disk B asks for a quarter of the limit (paced
    submissions), disk A for all it can get: B gets its quarter, A the rest;
(c) a change while I/O runs: at the middle of a run the limit is halved
    (``VBoxManage bandwidthctl set Limit --limit 10M``); reported: how long
    after the call the rate over 100 ms windows stays within 10 % of the new
    limit, and the new rate measured from 200 ms after the change;
(d) the cost of a group without a limit (0) against no group at all: 4 KiB
    reads eight deep through the I/O threads (and through the page-cache
    fast path), runs alternating ABBA; best runs and medians.

Writes bench/results/throttle.json.  Not a test: no thresholds here, only
figures (the tests in tests/unit/block/test_throttle.py use a fake clock).
"""

import argparse
import mmap
import os
import pathlib
import statistics
import sys
import tempfile
import time

from drivebay.block.backend import BlockBackend
from drivebay.block.io import IoThreads, Op, Request
from drivebay.block.throttle import BandwidthGroups, parse_limit

import benchlib

MiB = 1 << 20
REQ = 64 << 10
DEPTH = 8


class Disk:
    """One disk kept busy (``pace`` None) or fed at ``pace`` bytes/s."""

    def __init__(self, name, backend, log, pace=None):
        self.name, self.backend, self.log, self.pace = name, backend, log, pace
        self.bufs = [memoryview(mmap.mmap(-1, REQ)) for _ in range(DEPTH)]
        self.free = list(range(DEPTH))
        self.next_offset = 0
        self.next_time = 0.0
        self.stopped = False

    def _submit(self, k):
        offset = self.next_offset
        self.next_offset = (offset + REQ) % self.backend.size
        self.backend.submit(Request(Op.READ, offset, (self.bufs[k],)),
                            lambda d, k=k: self._done(d, k))

    def _done(self, event, k):
        assert event.ok, event.error
        self.log.append((time.monotonic(), self.name, REQ))
        self.free.append(k)
        self.feed()

    def feed(self):
        now = time.monotonic()
        while self.free and not self.stopped:
            if self.pace is not None:
                if now < self.next_time:
                    return
                self.next_time = max(self.next_time, now - 0.05) + REQ / self.pace
            self._submit(self.free.pop())


def drive(io, disks, seconds, at=None, action=None):
    """Run the disks for ``seconds``; call ``action()`` once ``at`` seconds in."""
    start = time.monotonic()
    for d in disks:
        d.stopped = False
        d.feed()
    while True:
        now = time.monotonic()
        if at is not None and action is not None and now - start >= at:
            action()
            action = None
        if now - start >= seconds:
            break
        io.wait(0.002)
        io.poll_completions()
        for d in disks:
            d.feed()
    for d in disks:
        d.stopped = True
    for d in disks:
        d.backend.drain()
    io.poll_completions()
    return start


def rate(log, since, until, name=None):
    return sum(n for t, who, n in log if since <= t < until and (name is None or who == name)) \
        / (until - since)


def make_disks(folder, size):
    paths = []
    for name in ("a", "b"):
        path = folder / f"{name}.raw"
        with open(path, "wb") as f:
            for _ in range(size // (16 * MiB)):
                f.write(os.urandom(16 * MiB))
        paths.append(path)
    return paths


def accuracy(io, paths, limit, seconds):
    groups = BandwidthGroups()
    g = groups.add("Limit", limit=limit)
    log = []
    with BlockBackend.open(paths[0], read_only=True, io=io, bandwidth_group=g) as a, \
            BlockBackend.open(paths[1], read_only=True, io=io, bandwidth_group=g) as b:
        start = drive(io, [Disk("a", a, log), Disk("b", b, log)], seconds)
    groups.close()
    total = rate(log, start, start + seconds)
    want = parse_limit(limit)
    return {"limit_bytes_per_s": want, "seconds": seconds, "delivered_bytes_per_s": total,
            "error_percent": 100 * (total - want) / want,
            "disk_a_bytes_per_s": rate(log, start, start + seconds, "a"),
            "disk_b_bytes_per_s": rate(log, start, start + seconds, "b")}


def split(io, paths, limit, seconds):
    groups = BandwidthGroups()
    g = groups.add("Limit", limit=limit)
    want = parse_limit(limit)
    log = []
    with BlockBackend.open(paths[0], read_only=True, io=io, bandwidth_group=g) as a, \
            BlockBackend.open(paths[1], read_only=True, io=io, bandwidth_group=g) as b:
        start = drive(io, [Disk("a", a, log), Disk("b", b, log, pace=want / 4)], seconds)
    groups.close()
    s, e = start + 1, start + seconds
    return {"disk_b_asked_bytes_per_s": want / 4,
            "disk_a_bytes_per_s": rate(log, s, e, "a"), "disk_b_bytes_per_s": rate(log, s, e, "b"),
            "total_bytes_per_s": rate(log, s, e)}


def change(io, paths, limit, seconds):
    groups = BandwidthGroups()
    g = groups.add("Limit", limit=limit)
    old = parse_limit(limit)
    new = old // 2
    log = []
    when = {}

    def halve():
        when["t"] = time.monotonic()
        groups.set("Limit", limit=new)

    with BlockBackend.open(paths[0], read_only=True, io=io, bandwidth_group=g) as a, \
            BlockBackend.open(paths[1], read_only=True, io=io, bandwidth_group=g) as b:
        start = drive(io, [Disk("a", a, log), Disk("b", b, log)], seconds, at=seconds / 2,
                      action=halve)
    groups.close()
    t0, end = when["t"], start + seconds
    window = 0.1
    settle = None
    for k in range(int((end - t0 - window) / 0.01)):
        s = t0 + k * 0.01
        ok = all(abs(rate(log, x, x + window) - new) <= 0.1 * new
                 for x in [s + j * window for j in range(int((end - s) / window) - 1)])
        if ok:
            settle = s - t0
            break
    return {"old_bytes_per_s": old, "new_bytes_per_s": new,
            "rate_before_bytes_per_s": rate(log, start + 1, t0),
            "rate_from_200ms_after_bytes_per_s": rate(log, t0 + 0.2, end),
            "settled_after_s": settle}


def unlimited_cost(io, path, runs, count):
    """Median seconds for ``count`` 4 KiB reads 8 deep: no group vs an unlimited group."""
    groups = BandwidthGroups()
    g = groups.add("Unlimited", limit=0)
    out = {}
    for nowait in (False, True):
        times = {"no group": [], "unlimited group": []}
        pairs = (("no group", None), ("unlimited group", g))
        for i in range(runs):
            for label, group in pairs if i % 2 == 0 else reversed(pairs):   # ABBA: no order bias
                with BlockBackend.open(path, read_only=True, io=io, bandwidth_group=group,
                                       nowait_reads=nowait) as b:
                    times[label].append(read_burst(io, b, count))
        # The fastest run of each is the least disturbed by the rest of the
        # host (thread scheduling makes single runs noisy); medians too.
        a, b = min(times["no group"]), min(times["unlimited group"])
        ma, mb = statistics.median(times["no group"]), statistics.median(times["unlimited group"])
        out["page-cache fast path" if nowait else "I/O threads"] = {
            "no_group_best_s": a, "unlimited_group_best_s": b, "cost_percent": 100 * (b - a) / a,
            "median_cost_percent": 100 * (mb - ma) / ma, "runs": times}
    groups.close()
    return out


def read_burst(io, backend, count):
    bufs = [memoryview(mmap.mmap(-1, 4096)) for _ in range(DEPTH)]
    state = {"next": 0, "left": count}
    step = 4096 * 7919

    def cb(k):
        def done(event):
            state["left"] -= 1
            i = state["next"]
            if i < count:
                state["next"] = i + 1
                backend.submit(Request(Op.READ, (i * step) % backend.size, (bufs[k],)),
                               callbacks[k])
        return done
    callbacks = [cb(k) for k in range(DEPTH)]
    start = time.perf_counter()
    for k in range(DEPTH):
        state["next"] += 1
        backend.submit(Request(Op.READ, (k * step) % backend.size, (bufs[k],)), callbacks[k])
    while state["left"]:
        io.wait(1)
        io.poll_completions()
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", default="20M", help="VBoxManage units (default 20M = 20 MiB/s)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--count", type=int, default=50000)
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR", "/var/tmp"))
    ap.add_argument("--out", default=benchlib.default_out("throttle"))
    args = ap.parse_args()
    io = IoThreads(4)
    results = {}
    with tempfile.TemporaryDirectory(prefix="drivebay-throttle-", dir=args.dir) as tmp:
        paths = make_disks(pathlib.Path(tmp), args.size_mib * MiB)
        r = results["accuracy"] = accuracy(io, paths, args.limit, args.seconds)
        print(f"(a) {args.limit} over {args.seconds:.0f} s, two busy disks: "
              f"{r['delivered_bytes_per_s'] / MiB:.3f} MiB/s ({r['error_percent']:+.2f} %); "
              f"a {r['disk_a_bytes_per_s'] / MiB:.2f}, b {r['disk_b_bytes_per_s'] / MiB:.2f} MiB/s")
        r = results["split"] = split(io, paths, args.limit, args.seconds)
        print(f"(b) b asks {r['disk_b_asked_bytes_per_s'] / MiB:.2f} MiB/s: b gets "
              f"{r['disk_b_bytes_per_s'] / MiB:.2f}, a gets {r['disk_a_bytes_per_s'] / MiB:.2f}, "
              f"total {r['total_bytes_per_s'] / MiB:.2f} MiB/s")
        r = results["change"] = change(io, paths, args.limit, args.seconds)
        settled = "never" if r["settled_after_s"] is None else \
            f"{r['settled_after_s'] * 1000:.0f} ms"
        print(f"(c) {r['old_bytes_per_s'] / MiB:.0f} -> {r['new_bytes_per_s'] / MiB:.0f} MiB/s "
              f"mid-run: before {r['rate_before_bytes_per_s'] / MiB:.2f} MiB/s; from 200 ms after "
              f"the change {r['rate_from_200ms_after_bytes_per_s'] / MiB:.3f} MiB/s; 100 ms "
              f"windows within 10 % of the new limit from {settled} after the change")
        r = results["unlimited_cost"] = unlimited_cost(io, paths[0], args.runs, args.count)
        for path_name, c in r.items():
            print(f"(d) unlimited group vs none, 4 KiB reads ({path_name}): "
                  f"{c['cost_percent']:+.2f} % time (best runs), "
                  f"{c['median_cost_percent']:+.2f} % (medians)")
    io.close()
    benchlib.save_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

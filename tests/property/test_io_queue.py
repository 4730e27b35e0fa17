"""Concurrent requests through the I/O thread pool against a bytearray model.

Each example sends batches of requests (reads, writes, zero writes, discards,
flushes; unaligned, vectored, FUA) that are all in flight at once through an
IoThreads pool, on raw, VDI, VHD and a differencing VDI chain, with the host
cache on and off (and off with a write cache small enough that its
background drains run alongside the requests).  With the cache off, reads
go to the pool's host queue: io_uring, and (on raw and the differencing
chain) its thread fallback.  Within a batch no write overlaps another
request (their order would be the guest's race), so after each batch every read must have
returned the model's data and the model takes the batch's writes.  At the
end the image, reopened, must equal the model and check clean.
"""

import os
import random
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivebay.block.backend import BlockBackend
from drivebay.block.chain import open_chain
from drivebay.block.drivers import open_image
from drivebay.block.io import IoThreads, Op, Request, mount_fstype
from drivebay.block.raw import RawDriver
from drivebay.block.vdi import VdiDriver
from drivebay.block.vhd import VhdDriver

MiB = 1 << 20
SIZE = 4 * MiB
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

request = st.tuples(
    st.sampled_from(["read", "read", "write", "write", "write", "zeroes", "discard", "flush"]),
    st.integers(0, SIZE - 1),                       # offset
    st.integers(1, 300_000),                        # length
    st.integers(1, 4),                              # buffers it is split into
    st.booleans(),                                  # FUA
    st.integers(0, 255))                            # fill byte seed
batches = st.lists(st.lists(request, min_size=1, max_size=24), min_size=1, max_size=6)


def _folder():
    base = tempfile.gettempdir()
    if mount_fstype(base) in ("tmpfs", "ramfs"):
        base = os.environ.get("DRIVEBAY_DISK_TMP", "/var/tmp")
    return tempfile.mkdtemp(prefix="drivebay-ioq-", dir=base)


def make_image(folder, fmt):
    """The path to write and the disk's initial content."""
    initial = bytearray(SIZE)
    if fmt == "raw":
        path = os.path.join(folder, "d.raw")
        RawDriver.create(path, SIZE)
    elif fmt == "vdi":
        path = os.path.join(folder, "d.vdi")
        VdiDriver.create(path, SIZE, block_size=64 << 10)
    elif fmt == "vhd":
        path = os.path.join(folder, "d.vhd")
        VhdDriver.create(path, SIZE, block_size=128 << 10)
    else:
        parent = os.path.join(folder, "p.vdi")
        VdiDriver.create(parent, SIZE, block_size=64 << 10)
        data = random.Random(1).randbytes(MiB)
        with open_image(parent, writable=True) as p:
            p.write(MiB // 2, data)
        initial[MiB // 2:MiB // 2 + MiB] = data
        with open_image(parent) as p:
            path = os.path.join(folder, "d.vdi")
            VdiDriver.create(path, None, parent=p, block_size=64 << 10)
    return path, initial


def split(buf, parts, rnd):
    cuts = sorted(rnd.sample(range(1, len(buf)), min(parts - 1, len(buf) - 1)))
    edges = [0, *cuts, len(buf)]
    view = memoryview(buf)
    return tuple(view[a:b] for a, b in zip(edges, edges[1:]))


@pytest.fixture(scope="module")
def pool():
    io = IoThreads(4)
    yield io
    io.close()


@pytest.fixture(scope="module")
def thread_pool():
    """Reads of host cache off through the host queue's thread fallback
    (what a kernel without io_uring gets)."""
    io = IoThreads(4, uring=False)
    yield io
    io.close()


def overlaps(a, b):
    return a[0] < b[1] and b[0] < a[1]


@pytest.mark.parametrize("cache", [True, False, 64 << 10],
                         ids=["cache-on", "cache-off", "cache-off-small-write-cache"])
@pytest.mark.parametrize("fmt", ["raw", "vdi", "vhd", "vdi-diff"])
@SETTINGS
@given(plan=batches)
def test_concurrent_requests_against_a_model(pool, fmt, cache, plan):
    run_plan(pool, fmt, cache, plan)


@pytest.mark.parametrize("cache", [False, 64 << 10], ids=["cache-off", "cache-off-small-write-cache"])
@pytest.mark.parametrize("fmt", ["raw", "vdi-diff"])
@SETTINGS
@given(plan=batches)
def test_host_queue_fallback_against_a_model(thread_pool, fmt, cache, plan):
    assert thread_pool.host_queue.kind == "threads"
    run_plan(thread_pool, fmt, cache, plan)


def run_plan(pool, fmt, cache, plan):
    folder = _folder()
    try:
        path, model = make_image(folder, fmt)
        rnd = random.Random(len(plan))
        options = {"write_cache_bytes": cache} if not isinstance(cache, bool) else {}
        backend = BlockBackend.open(path, io=pool, host_cache=cache is True, discard=True,
                                    **options)
        try:
            for batch in plan:
                run_batch(backend, pool, batch, model, rnd)
        finally:
            backend.close()
        with open_chain(path) as chain:
            assert chain.read(0, SIZE) == model
            report = chain.top.check()
            assert report.clean, report.errors + report.leaks
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_batch(backend, pool, batch, model, rnd):
    writes, reads, submitted = [], [], []
    for kind, offset, length, parts, fua, seed in batch:
        length = min(length, SIZE - offset)
        span = (offset, offset + length)
        if kind == "flush":
            submitted.append((Request(Op.FLUSH), None))
            continue
        if any(overlaps(span, w) for w in writes) or \
                (kind != "read" and any(overlaps(span, r) for r in reads)):
            continue
        if kind == "read":
            buf = bytearray(length)
            submitted.append((Request(Op.READ, offset, split(buf, parts, rnd)), buf))
            reads.append(span)
            continue
        writes.append(span)
        if kind == "write":
            data = bytes([(seed + i) & 0xFF for i in range(251)]) * (length // 251 + 1)
            data = bytearray(data[:length])
            submitted.append((Request(Op.WRITE, offset, split(data, parts, rnd), fua=fua),
                              data))
        elif kind == "zeroes":
            submitted.append((Request(Op.WRITE_ZEROES, offset, length=length, fua=fua), None))
        else:
            submitted.append((Request(Op.DISCARD, offset, length=length), None))
    done = {}
    for req, _ in submitted:
        backend.submit(req, lambda d: done.__setitem__(id(d.request), d))
    while len(done) < len(submitted):
        assert pool.wait(30), "requests did not complete"
        pool.poll_completions()
    discarded = []
    for req, buf in submitted:
        d = done[id(req)]
        assert d.ok, d.error
        if req.op is Op.READ:
            assert buf == model[req.offset:req.offset + req.length]
        elif req.op is Op.WRITE:
            model[req.offset:req.offset + req.length] = buf
        elif req.op is Op.WRITE_ZEROES:
            model[req.offset:req.offset + req.length] = bytes(req.length)
        elif req.op is Op.DISCARD:
            discarded.append((req.offset, req.length))
    for offset, length in discarded:                # unchanged or zero, byte by byte
        now = bytearray(length)
        backend.readinto(offset, now)
        old = model[offset:offset + length]
        if now != old:
            assert all(n == o or n == 0 for n, o in zip(now, old)), "discard invented data"
            model[offset:offset + length] = now

"""Host queues (block/uring.py): io_uring and its thread fallback against a
bytearray model of a file, errors reported per operation, the choice
between them, and the reads of host cache off that BlockBackend lays on them."""

import errno
import mmap
import os
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivebay.block import uring
from drivebay.block.backend import BlockBackend
from drivebay.block.io import IoThreads, Op, Request
from drivebay.block.raw import RawDriver
from drivebay.block.vdi import VdiDriver
from test_io import disk_dir, run  # noqa: F401 (a fixture), E402

KINDS = [True, False]
KIND_IDS = ["io_uring", "threads"]
FILE_MAX = 96 << 10
NO_SUCH_FD = 999_999          # far above any descriptor a test process holds
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


class Collector:
    """An ``on_complete`` that keeps every result and lets a test wait for them."""

    def __init__(self):
        self.results = {}
        self.calls = 0
        self._cond = threading.Condition()

    def __call__(self, results):
        with self._cond:
            self.calls += 1
            for token, res in results:
                assert token not in self.results, "an operation completed twice"
                self.results[token] = res
            self._cond.notify_all()

    def wait_for(self, n, timeout=30):
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.results) >= n, timeout), \
                f"{len(self.results)} of {n} operations completed"


@pytest.fixture(params=KINDS, ids=KIND_IDS)
def kind(request):
    return request.param


def open_queue(kind, collector, threads=3):
    q = uring.open_host_queue(collector, threads=threads, uring=kind)
    assert q.kind == ("io_uring" if kind else "threads")
    return q


def split(buf, parts):
    n = len(buf)
    edges = sorted({0, n, *(n * k // parts for k in range(1, parts))})
    view = memoryview(buf)
    return [view[a:b] for a, b in zip(edges, edges[1:])]


operation = st.tuples(
    st.sampled_from(["read", "read", "write", "write", "sync", "eio", "enospc", "badf"]),
    st.integers(0, FILE_MAX),          # offset (past the end of the file too)
    st.integers(1, 20_000),            # length
    st.integers(1, 4),                 # buffers
    st.integers(0, 255))               # fill byte
batches = st.lists(st.lists(operation, min_size=1, max_size=20), min_size=1, max_size=5)


@pytest.mark.parametrize("uring_kind", KINDS, ids=KIND_IDS)
@SETTINGS
@given(plan=batches, initial=st.integers(0, FILE_MAX))
def test_operations_against_a_model(tmp_path, uring_kind, plan, initial):
    """Reads return the file's bytes and stop at its end (short reads leave
    the rest of the buffer alone), writes land and extend the file,
    fdatasync succeeds, and failures (EIO, ENOSPC, EBADF) come back as
    minus their errno for their operation only."""
    model = bytearray(os.urandom(initial))
    path = tmp_path / "f"
    path.write_bytes(model)
    fd = os.open(path, os.O_RDWR)
    mem = os.open("/proc/self/mem", os.O_RDONLY)     # address 0 is never mapped: EIO
    full = os.open("/dev/full", os.O_WRONLY)          # ENOSPC on every write
    collector = Collector()
    q = open_queue(uring_kind, collector)
    try:
        for batch in plan:
            run_batch(q, collector, batch, model, fd, mem, full)
    finally:
        q.close()
        for f in (fd, mem, full):
            os.close(f)
    assert path.read_bytes() == model


def run_batch(q, collector, batch, model, fd, mem, full):
    collector.results.clear()
    writes, reads, laid = [], [], []
    for i, (kind, offset, length, parts, fill) in enumerate(batch):
        span = (offset, offset + length)
        token = (i, kind)
        if kind == "read":
            if any(overlaps(span, w) for w in writes):
                continue
            buf = bytearray([0xEE]) * length
            assert q.read(fd, split(buf, parts), offset, token)
            reads.append(span)
            laid.append((token, offset, buf))
        elif kind == "write":
            span = (min(offset, len(model)), offset + length)   # a write past the end extends it
            if any(overlaps(span, s) for s in writes + reads):
                continue
            data = bytearray([fill]) * length        # kept alive until the completion
            assert q.write(fd, split(data, parts), offset, token)
            writes.append(span)
            laid.append((token, offset, data))
        elif kind == "sync":
            assert q.fdatasync(fd, token)
            laid.append((token, 0, None))
        elif kind == "eio":
            assert q.read(mem, [bytearray(length)], offset % 4096, token)
            laid.append((token, 0, None))
        elif kind == "enospc":
            assert q.write(full, [bytes(length)], 0, token)
            laid.append((token, 0, None))
        else:
            assert q.read(NO_SUCH_FD, [bytearray(length)], offset, token)
            laid.append((token, 0, None))
        q.commit()
    collector.wait_for(len(laid))
    assert len(collector.results) == len(laid)
    for token, offset, buf in laid:
        res = collector.results[token]
        kind = token[1]
        if kind == "read":
            got = max(0, min(len(buf), len(model) - offset))
            assert res == got
            assert buf[:got] == model[offset:offset + got]
            assert buf[got:] == bytearray([0xEE]) * (len(buf) - got)
        elif kind == "write":
            assert res == len(buf)
            if offset > len(model):
                model.extend(bytes(offset - len(model)))
            model[offset:offset + len(buf)] = buf
        elif kind == "sync":
            assert res == 0
        else:
            assert res == -{"eio": errno.EIO, "enospc": errno.ENOSPC, "badf": errno.EBADF}[kind]


def overlaps(a, b):
    return a[0] < b[1] and b[0] < a[1]


def test_plugged_operations_wait_for_unplug(tmp_path, kind):
    collector = Collector()
    q = open_queue(kind, collector)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        q.plug()
        for i in range(3):
            assert q.write(fd, [b"x" * 10], i * 10, i)
            q.commit()
        assert q.laid == 3 and collector.calls == 0   # nothing handed over yet
        q.unplug()
        assert q.laid == 0
        collector.wait_for(3)
        assert collector.results == {0: 10, 1: 10, 2: 10}
    finally:
        q.close()
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"x" * 30


def test_a_full_queue_refuses_more(tmp_path, kind):
    q = open_queue(kind, Collector())
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        q.plug()
        laid = 0
        while q.read(fd, [bytearray(1)], 0, laid):
            laid += 1
        assert laid == uring.RING_ENTRIES and q.space() == 0
        q.unplug()
    finally:
        q.close()
        os.close(fd)


def test_too_many_buffers_for_one_operation(tmp_path, kind):
    q = open_queue(kind, Collector())
    try:
        with pytest.raises(ValueError, match="buffers"):
            q.read(0, [bytearray(1)] * (uring.MAX_IOV + 1), 0, "t")
    finally:
        q.close()


def test_close_waits_for_operations_in_flight(tmp_path, kind):
    collector = Collector()
    q = open_queue(kind, collector)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    for i in range(50):
        q.write(fd, [bytes([i]) * 4096], i * 4096, i)
    q.commit()
    q.close()
    os.close(fd)
    assert len(collector.results) == 50


# -- choosing the kind ------------------------------------------------------------------------

def test_the_environment_turns_io_uring_off(monkeypatch):
    monkeypatch.setenv(uring.URING_ENV, "0")
    q = uring.open_host_queue(Collector())
    try:
        assert q.kind == "threads"
    finally:
        q.close()
    assert uring.uring_wanted(True)          # a parameter wins over the environment
    monkeypatch.setenv(uring.URING_ENV, "1")
    assert uring.uring_wanted() and not uring.uring_wanted(False)


@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EPERM])
def test_a_kernel_without_io_uring_gets_threads(monkeypatch, err):
    def refuse(entries):
        raise OSError(err, os.strerror(err))
    monkeypatch.setattr(uring._uring, "Ring", refuse)
    q = uring.open_host_queue(Collector(), uring=True)
    try:
        assert q.kind == "threads"
    finally:
        q.close()


def test_this_kernel_gives_io_uring():
    """The machines drivebay is tested on have io_uring: the ring itself is tested."""
    q = uring.open_host_queue(Collector(), uring=True)
    try:
        assert q.kind == "io_uring"
    finally:
        q.close()


# -- host cache off: BlockBackend's reads on the host queue --------------------------------------

@pytest.fixture
def pool(kind):
    io = IoThreads(2, uring=kind)
    yield io
    io.close()


def filled_raw(disk_dir, data):
    """A raw image of 1 MiB holding ``data`` (one byte repeated, or 1 MiB)."""
    path = os.path.join(disk_dir, "d.raw")
    RawDriver.create(path, 1 << 20)
    with open(path, "r+b") as f:
        f.write(data * (1 << 20) if len(data) == 1 else data)
    return path


def counting(io):
    """Count the operations laid on ``io``'s host queue."""
    q = io.host_queue
    counts = {"read": 0}
    read = q.read

    def counted(*args):
        counts["read"] += 1
        return read(*args)
    q.read = counted
    return counts


def test_reads_with_the_cache_off_go_to_the_host_queue(disk_dir, pool):
    data = os.urandom(1 << 20)
    path = filled_raw(disk_dir, data)
    counts = counting(pool)
    with BlockBackend.open(path, io=pool, host_cache=False) as b:
        aligned = mmap.mmap(-1, 8192)
        odd = bytearray(3000)
        a, c = memoryview(aligned), memoryview(bytearray(5000))
        done = run(b, Request(Op.READ, 4096, (a[:4096], a[4096:])),    # one host read, two buffers
                   Request(Op.READ, 777, (odd,)),                         # through a bounce buffer
                   Request(Op.READ, 8192, (c[:1000], c[1000:])))
        assert all(d.ok for d in done)
        assert aligned[:] == data[4096:12288]
        assert odd == data[777:3777]
        assert c.tobytes() == data[8192:13192]
    assert counts["read"] >= 3


def test_cached_writes_are_read_back_through_the_host_queue(disk_dir, pool):
    path = filled_raw(disk_dir, b"\x11")
    with BlockBackend.open(path, io=pool, host_cache=False) as b:
        counts = counting(pool)
        assert run(b, Request(Op.WRITE, 1000, (b"\x22" * 5000,)))[0].ok
        assert b.chain.top.file.direct.dirty          # still in the write cache
        buf = bytearray(8192)
        assert run(b, Request(Op.READ, 0, (buf,)))[0].ok
        assert counts["read"] == 1
        assert buf == b"\x11" * 1000 + b"\x22" * 5000 + b"\x11" * 2192


def test_a_read_submitted_before_a_write_returns_the_old_data(disk_dir, pool):
    path = filled_raw(disk_dir, b"\x33")
    with BlockBackend.open(path, io=pool, host_cache=False) as b:
        for _ in range(20):
            buf = bytearray(65536)
            read = Request(Op.READ, 0, (buf,))
            write = Request(Op.WRITE, 0, (b"\x44" * 65536,), fua=True)
            r, w = run(b, read, write)
            assert r.ok and w.ok and buf == b"\x33" * 65536
            buf2 = bytearray(65536)
            assert run(b, Request(Op.READ, 0, (buf2,)))[0].ok and buf2 == b"\x44" * 65536
            assert run(b, Request(Op.WRITE, 0, (b"\x33" * 65536,)))[0].ok


def test_reads_past_the_end_of_a_shrunk_file_are_zeros(disk_dir, pool):
    """A short read (the file ends inside the request) leaves zeros, as
    the I/O threads' reads do."""
    path = filled_raw(disk_dir, b"\x55")
    with BlockBackend.open(path, io=pool, host_cache=False, lock=False) as b:
        os.truncate(path, 10000)                  # behind the backend's back
        buf, odd = bytearray(16384), bytearray(5000)
        done = run(b, Request(Op.READ, 0, (buf,)), Request(Op.READ, 9000, (odd,)))
        assert all(d.ok for d in done)
        assert buf == b"\x55" * 10000 + bytes(6384)
        assert odd == b"\x55" * 1000 + bytes(4000)


def test_a_failing_file_fails_only_its_requests(disk_dir, pool):
    """EIO from the host reaches the completion of each request that read
    the failing file (a parent whose descriptor now reads unmapped memory),
    while requests served by the child succeed."""
    parent = os.path.join(disk_dir, "p.vdi")
    VdiDriver.create(parent, 1 << 20, block_size=64 << 10)
    with BlockBackend.open(parent) as p:
        p.write(0, b"\x66" * (1 << 20))
    child = os.path.join(disk_dir, "c.vdi")
    from drivebay.block.drivers import open_image
    with open_image(parent) as p:
        VdiDriver.create(child, None, parent=p, block_size=64 << 10)
    with BlockBackend.open(child, io=pool, host_cache=False) as b:
        assert run(b, Request(Op.WRITE, 0, (b"\x77" * 65536,), fua=True))[0].ok
        parent_file = b.chain.images[1].file
        mem = os.open("/proc/self/mem", os.O_RDONLY)
        saved = os.dup(parent_file.fd)
        os.dup2(mem, parent_file.fd)              # reads at small offsets: EIO
        try:
            good, bad, also = bytearray(65536), bytearray(4096), bytearray(4096)
            done = run(b, Request(Op.READ, 0, (good,)), Request(Op.READ, 65536, (bad,)),
                       Request(Op.READ, 4096, (also,)))
        finally:
            os.dup2(saved, parent_file.fd)
            os.close(saved)
            os.close(mem)
        assert done[0].ok and done[2].ok
        assert good == b"\x77" * 65536 and also == b"\x77" * 4096
        assert not done[1].ok and done[1].errno == errno.EIO
        assert parent_file.path in str(done[1].error)


# -- a thread waiting on the ring ------------------------------------------------------------

def test_a_waiting_thread_reports_on_the_ring_itself():
    """``wait_here`` reports completions on the waiting thread; the ring's
    own thread steps aside meanwhile."""
    threads = []
    collector = Collector()

    def on_complete(results):
        threads.append(threading.current_thread())
        collector(results)
    q = uring.open_host_queue(on_complete, uring=True)
    r, w = os.pipe()
    try:
        buf = bytearray(5)
        assert q.read(r, [buf], 0, "pipe")      # in flight until the pipe has data
        q.commit()
        q.wait_here(0.01, lambda: False)          # nothing completes: a timeout
        assert q.in_flight == 1 and not collector.results
        writer = threading.Thread(target=write_once_waiting, args=(q, w, b"hello"))
        writer.start()
        while not collector.results:
            q.wait_here(None, lambda: False)
        writer.join()
        assert collector.results == {"pipe": 5} and buf == b"hello"
        assert threads == [threading.current_thread()]
    finally:
        q.close()
        os.close(r)
        os.close(w)


def write_once_waiting(q, fd, data):
    """Write ``data`` to ``fd`` once a thread sleeps in ``q.wait_here``."""
    for _ in range(10_000):
        if q.waiters:
            break
        time.sleep(0.001)
    os.write(fd, data)


def test_a_completion_from_the_pool_ends_a_wait_on_the_ring(disk_dir):
    """While a thread waits on the ring (a read of a pipe stays in flight),
    a completion the I/O threads queue (a write) kicks it awake."""
    io = IoThreads(2, uring=True)
    r, w = os.pipe()
    buf = bytearray(1)
    try:
        q = io.host_queue
        assert q.read(r, [buf], 0, (lambda arg, res: None, None))
        q.commit()
        path = os.path.join(disk_dir, "d.raw")
        RawDriver.create(path, 1 << 20)
        with BlockBackend.open(path, io=io, host_cache=False) as b:
            done, woken = [], []
            waiter = threading.Thread(target=lambda: woken.append(io.wait(None)))
            waiter.start()
            for _ in range(10_000):               # until the waiter sleeps on the ring
                if q.waiters:
                    break
                time.sleep(0.001)
            assert q.waiters == 1
            b.submit(Request(Op.WRITE, 0, (b"x" * 4096,)), done.append)
            waiter.join(60)                       # no hang: the kick ended the wait
            assert not waiter.is_alive() and woken == [True]
            io.poll_completions()
            assert done[0].ok
    finally:
        os.write(w, b"!")                         # let the pipe read finish
        io.close()
        os.close(r)
        os.close(w)


def test_a_waiting_thread_runs_a_queued_operation_without_io_uring(tmp_path, monkeypatch):
    """The thread fallback: a thread in ``wait_here`` runs an operation no
    worker has taken yet itself, and a ``kick`` ends a wait with none queued."""
    threads = []
    collector = Collector()
    gate, taken = threading.Event(), threading.Event()
    run_op = uring.run_op

    def gated(op):                                  # the worker's operation waits for the gate
        if op[4] == "gate":
            taken.set()
            gate.wait(60)
        return run_op(op)
    monkeypatch.setattr(uring, "run_op", gated)

    def on_complete(results):
        threads.append(threading.current_thread())
        collector(results)
    q = uring.open_host_queue(on_complete, threads=1, uring=False)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        assert q.fdatasync(fd, "gate")              # the one worker holds on to it
        q.commit()
        assert taken.wait(60)
        data = bytearray(b"queued")
        assert q.write(fd, [data], 0, "file")
        q.commit()
        assert q.in_flight == 2
        q.wait_here(None, lambda: False)             # runs the write here
        assert collector.results == {"file": 6} and threads == [threading.current_thread()]
        kicker = threading.Thread(target=lambda: (gate.set(), collector.wait_for(2), q.kick()))
        kicker.start()
        q.wait_here(None, lambda: len(collector.results) == 2)   # nothing queued: until the kick
        kicker.join()
        assert collector.results["gate"] == 0
    finally:
        gate.set()
        q.close()
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"queued"

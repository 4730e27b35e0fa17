"""The I/O path: asynchronous requests through I/O threads, completions on
the polling thread, flush ordering, host cache off (O_DIRECT with bounce
buffers and a write cache), fault injection through the faulty filter."""

import errno
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import pytest

from drivebay.block import io as io_mod
from drivebay.block.backend import BlockBackend, MemoryBackend
from drivebay.block.chain import Chain, open_chain
from drivebay.block.driver import ImageFile
from drivebay.block.drivers import open_image
from drivebay.block.faulty import FaultRule, FaultyDriver, load_rules
from drivebay.block.io import (WRITE_CACHE_BYTES, DirectIO, InlineIo, IoThreads, Op, Request,
                               RequestDone, dio_alignment, mount_fstype)
from drivebay.block.raw import RawDriver
from drivebay.block.vdi import VdiDriver
from drivebay.block.vhd import VhdDriver
from drivebay.errors import ConfigError, ImageError

MiB = 1 << 20
CREATORS = {"raw": RawDriver, "vdi": VdiDriver, "vhd": VhdDriver}


@pytest.fixture
def disk_dir(tmp_path):
    """A folder on a disk-backed file system: O_DIRECT tests must not run on a
    tmpfs /tmp (older kernels refuse O_DIRECT there; newer ones fake it)."""
    if mount_fstype(str(tmp_path)) not in ("tmpfs", "ramfs"):
        yield str(tmp_path)
        return
    path = tempfile.mkdtemp(prefix="drivebay-io-", dir=os.environ.get("DRIVEBAY_DISK_TMP",
                                                                       "/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def io_threads():
    io = IoThreads(4)
    yield io
    io.close()


def run(backend, *requests, io=None):
    """Submit every request at once, wait for all completions; the RequestDones in order."""
    io = io or backend.io
    done = {}
    for r in requests:
        backend.submit(r, lambda d, r=r: done.__setitem__(id(r), d))
    while len(done) < len(requests):
        io.wait(5)
        io.poll_completions()
    return [done[id(r)] for r in requests]


def make(disk_dir, fmt, size=8 * MiB, name=None):
    path = os.path.join(disk_dir, name or f"disk.{fmt}")
    CREATORS[fmt].create(path, size)
    return path


# -- requests and completions ---------------------------------------------------------------

def test_request_length_comes_from_its_views():
    a, b = bytearray(512), memoryview(bytearray(1024))
    r = Request(Op.READ, 0, (a, b))
    assert r.length == 1536
    assert all(type(v) is memoryview and v.format == "B" for v in r.views)
    assert Request(Op.DISCARD, 4096, length=8192).length == 8192
    words = memoryview(bytearray(64)).cast("I")
    assert Request(Op.WRITE, 0, (words,)).length == 64


def test_inline_completions_wait_for_poll_and_run_on_the_poller():
    backend = MemoryBackend(bytearray(4096))
    seen = []
    backend.submit(Request(Op.WRITE, 0, (b"abcd",)), seen.append)
    backend.submit(Request(Op.READ, 0, (bytearray(4),)), seen.append)
    assert seen == [] and backend.io.pending == 2
    assert backend.poll_completions() == 2
    assert [d.ok for d in seen] == [True, True]
    assert bytes(seen[1].request.views[0]) == b"abcd"


def test_shuffled_inline_completions_come_in_another_order():
    backend = MemoryBackend(bytearray(1 << 16), io=InlineIo(shuffle=3))
    order = []
    for i in range(16):
        backend.submit(Request(Op.READ, 512 * i, (bytearray(512),), tag=i),
                       lambda d: order.append(d.request.tag))
    backend.poll_completions()
    assert sorted(order) == list(range(16)) and order != list(range(16))


def test_poll_delivers_only_what_was_waiting():
    backend = MemoryBackend(bytearray(4096))
    count = []

    def again(done):
        count.append(done)
        backend.submit(Request(Op.READ, 0, (bytearray(1),)), again)
    backend.submit(Request(Op.READ, 0, (bytearray(1),)), again)
    assert backend.poll_completions() == 1
    assert backend.poll_completions() == 1
    assert len(count) == 2


@pytest.mark.parametrize("fmt", ["raw", "vdi", "vhd"])
def test_threads_complete_on_the_polling_thread(disk_dir, io_threads, fmt):
    path = make(disk_dir, fmt)
    threads = []
    notified = threading.Event()
    io_threads.notify = notified.set
    with BlockBackend.open(path, io=io_threads) as b:
        data = os.urandom(256 << 10)
        reqs = [Request(Op.WRITE, i * 65536 + 7, (data[i * 65536:(i + 1) * 65536],))
                for i in range(4)]
        for r in reqs:
            b.submit(r, lambda d: threads.append(threading.current_thread()))
        while len(threads) < 4:
            assert io_threads.wait(5)
            io_threads.poll_completions()
        assert set(threads) == {threading.current_thread()}
        assert notified.is_set()
        out = bytearray(len(data))
        (done,) = run(b, Request(Op.READ, 7, (out,)))
        assert done.ok and out == data


@pytest.mark.parametrize("fmt", ["raw", "vdi", "vhd"])
@pytest.mark.parametrize("cache", [True, False], ids=["cache-on", "cache-off"])
def test_vectored_requests(disk_dir, io_threads, fmt, cache):
    path = make(disk_dir, fmt)
    rnd = random.Random(5)
    pieces = [os.urandom(rnd.randrange(1, 5000)) for _ in range(7)]
    with BlockBackend.open(path, io=io_threads, host_cache=cache) as b:
        (w,) = run(b, Request(Op.WRITE, 3 * MiB - 1000, tuple(pieces), fua=True))
        assert w.ok, w.error
        outs = [bytearray(len(p)) for p in reversed(pieces)]
        (r,) = run(b, Request(Op.READ, 3 * MiB - 1000, tuple(outs)))
        assert r.ok
        assert b"".join(outs) == b"".join(pieces)


def test_zero_writes_and_discards(disk_dir, io_threads):
    path = make(disk_dir, "vdi")
    with BlockBackend.open(path, io=io_threads, discard=True) as b:
        b.write(0, b"\xaa" * (3 * MiB))
        w, d = run(b, Request(Op.WRITE_ZEROES, 100, length=1000),
                   Request(Op.DISCARD, MiB, length=MiB))
        assert w.ok and d.ok
        out = bytearray(3 * MiB)
        run(b, Request(Op.READ, 0, (out,)))
        assert out[:100] == b"\xaa" * 100 and out[100:1100] == bytes(1000)
        assert out[1100:MiB] == b"\xaa" * (MiB - 1100)
        assert out[MiB:2 * MiB] == bytes(MiB)            # a whole VDI block discarded reads zeros
        assert out[2 * MiB:] == b"\xaa" * MiB


def test_bad_requests_complete_with_an_errno(disk_dir, io_threads):
    path = make(disk_dir, "raw", size=MiB)
    with BlockBackend.open(path, io=io_threads) as b:
        past, = run(b, Request(Op.READ, MiB - 512, (bytearray(1024),)))
        assert not past.ok and past.errno == errno.EINVAL and "outside" in str(past.error)
        ro_buf, = run(b, Request(Op.READ, 0, (b"immutable",)))
        assert ro_buf.errno == errno.EINVAL
    with BlockBackend.open(path, read_only=True, io=io_threads) as b:
        w, = run(b, Request(Op.WRITE, 0, (b"x",)))
        assert w.errno == errno.EROFS
        f, = run(b, Request(Op.FLUSH))
        assert f.ok


def test_synchronous_calls_still_raise(disk_dir):
    path = make(disk_dir, "raw", size=MiB)
    with BlockBackend.open(path) as b:
        with pytest.raises(ImageError, match="outside"):
            b.readinto(MiB, bytearray(1))
        b.write(10, b"sync")
        buf = bytearray(4)
        b.readinto(10, buf)
        assert buf == b"sync"
    with BlockBackend.open(path, read_only=True) as b:
        with pytest.raises(Exception, match="read-only"):
            b.write(0, b"x")


def test_close_waits_for_requests_in_flight(disk_dir, io_threads):
    path = make(disk_dir, "raw", size=MiB)
    top = open_image(path, writable=True)
    slow = FaultyDriver(top, [FaultRule(op="write", latency=0.05)])
    b = BlockBackend(Chain([slow]), io=io_threads)
    got = []
    for i in range(4):
        b.submit(Request(Op.WRITE, 4096 * i, (b"w" * 4096,)), got.append)
    b.close()
    assert [e[3] for e in slow.events].count("end") == 4
    io_threads.poll_completions()
    assert len(got) == 4


# -- flush ordering ---------------------------------------------------------------------------

@pytest.mark.parametrize("trial", range(5))
def test_a_flush_waits_for_the_writes_submitted_before_it(disk_dir, io_threads, trial):
    path = make(disk_dir, "vdi", name=f"f{trial}.vdi")
    with open_chain(path, writable=True) as chain:
        slow = FaultyDriver(chain.top, [FaultRule(op="write", offset=0, length=4096,
                                                  latency=0.03)])
        b = BlockBackend(Chain([slow]), io=io_threads)
        order = []
        reqs = [Request(Op.WRITE, 0, (b"a" * 4096,), tag="slow"),
                Request(Op.WRITE, 3 * MiB, (b"b" * 4096,), tag="fast"),
                Request(Op.WRITE_ZEROES, 5 * MiB, length=4096, tag="zeroes"),
                Request(Op.FLUSH, tag="flush")]
        for r in reqs:
            b.submit(r, lambda d: order.append((d.request.tag, d.ok)))
        b.submit(Request(Op.WRITE, 6 * MiB, (b"c" * 512,), tag="after"),
                 lambda d: order.append((d.request.tag, d.ok)))
        while len(order) < 5:
            io_threads.wait(5)
            io_threads.poll_completions()
        b.drain()
        events = slow.events
        flush_start = events.index(("flush", 0, 0, "start"))
        for op, offset, length in (("write", 0, 4096), ("write", 3 * MiB, 4096),
                                   ("write-zeroes", 5 * MiB, 4096)):
            assert events.index((op, offset, length, "end")) < flush_start
        tags = [t for t, _ in order]
        assert tags.index("flush") > max(tags.index("slow"), tags.index("fast"),
                                         tags.index("zeroes"))
        assert all(ok for _, ok in order)
        b.close()


def test_a_fua_write_is_flushed_before_it_completes(disk_dir, io_threads):
    path = make(disk_dir, "raw", size=MiB)
    with open_chain(path, writable=True) as chain:
        rec = FaultyDriver(chain.top)
        b = BlockBackend(Chain([rec]), io=io_threads)
        (d,) = run(b, Request(Op.WRITE, 0, (b"z" * 512,), fua=True))
        assert d.ok
        assert [e[0] for e in rec.events if e[3] == "start"] == ["write", "flush"]
        b.close()


def test_a_flush_with_nothing_in_flight_runs_at_once(disk_dir, io_threads):
    path = make(disk_dir, "raw", size=MiB)
    with BlockBackend.open(path, io=io_threads) as b:
        (d,) = run(b, Request(Op.FLUSH))
        assert d.ok


# -- host cache off: O_DIRECT -------------------------------------------------------------------

def test_direct_io_alignment_is_known(disk_dir):
    path = make(disk_dir, "raw", size=MiB)
    f = ImageFile(path)
    mem, off = dio_alignment(f.fd)
    f.close()
    assert mem >= 1 and off in (512, 1024, 2048, 4096)


# (offset, length, memory offset of the buffer, read-only source)
EDGES = [(0, 512, 0, False), (0, 4096, 0, False), (512, 512, 0, False), (1, 1, 0, False),
         (511, 2, 0, False), (4095, 4097, 0, False), (4096, 65536, 1, False),
         (100, 10000, 3, True), (0, 8192, 0, True), (MiB - 3, 3, 0, False),
         (MiB - 100, 300, 0, False), (MiB + 5000, 17, 0, False), (3 * 4096, 3 * 4096, 512, False)]


@pytest.mark.parametrize("offset,length,shift,readonly", EDGES)
@pytest.mark.parametrize("cache_bytes", [0, WRITE_CACHE_BYTES], ids=["no-cache", "write-cache"])
def test_direct_io_edges_against_a_model(disk_dir, offset, length, shift, readonly, cache_bytes):
    path = os.path.join(disk_dir, "edge.raw")
    model = bytearray(os.urandom(MiB))
    with open(path, "wb") as f:
        f.write(model)
    f = ImageFile(path, writable=True)
    f.set_host_cache(False, cache_bytes=cache_bytes)
    try:
        data = os.urandom(length)
        src = bytearray(length + shift)
        src[shift:] = data
        view = memoryview(bytes(src) if readonly else src)[shift:]
        f.pwrite(offset, view)
        end = offset + length
        if end > len(model):
            model.extend(bytes(end - len(model)))
        model[offset:end] = data
        assert f.size() == len(model)
        for a, n, s in ((offset, length, shift), (max(0, offset - 700), length + 1400, 1),
                        (0, len(model) + 4096, 0)):
            buf = bytearray(n + s)
            got = f.preadinto(a, memoryview(buf)[s:])
            want = model[a:a + n]
            assert got == len(want)
            assert buf[s:s + len(want)] == want
            assert buf[s + len(want):] == bytes(n - len(want))
        f.sync()
        with open(path, "rb") as check:
            assert check.read() == model           # on disk, and the file is no longer
    finally:
        f.close()


def test_direct_writes_wait_in_the_cache_until_a_flush(disk_dir, io_threads):
    path = os.path.join(disk_dir, "full.raw")
    with open(path, "wb") as f:
        f.write(bytes(MiB))                   # no holes: the raw driver maps it all as data
    with BlockBackend.open(path, io=io_threads, host_cache=False) as b:
        b._drain_timer = object()            # hold off the timer: this test watches the cache
        (w,) = run(b, Request(Op.WRITE, 4096, (b"cached!!" * 512,)))
        assert w.ok
        with open(path, "rb") as f:
            f.seek(4096)
            assert f.read(8) == bytes(8)      # acknowledged, still in our write cache
        out = bytearray(8)
        (r,) = run(b, Request(Op.READ, 4096, (out,)))
        assert r.ok and out == b"cached!!"    # reads see the cache
        assert b._direct_files[0].direct.dirty
        (fl,) = run(b, Request(Op.FLUSH))
        assert fl.ok and not b._direct_files[0].direct.dirty
        with open(path, "rb") as f:
            f.seek(4096)
            assert f.read(8) == b"cached!!"
        b._drain_timer = None


def test_reading_a_hole_of_a_raw_file_drains_the_cache_first(disk_dir, io_threads):
    path = make(disk_dir, "raw", size=MiB)      # sparse: SEEK_HOLE says zeros
    with BlockBackend.open(path, io=io_threads, host_cache=False) as b:
        b._drain_timer = object()
        run(b, Request(Op.WRITE, 8192, (b"in the cache",)))
        out = bytearray(12)
        b.readinto(8192, out)
        assert out == b"in the cache"
        b._drain_timer = None


def test_the_timer_drains_the_write_cache(disk_dir, io_threads):
    path = make(disk_dir, "raw", size=MiB)
    with BlockBackend.open(path, io=io_threads, host_cache=False) as b:
        (w,) = run(b, Request(Op.WRITE, 0, (b"timer" * 100,)))
        assert w.ok
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(path, "rb") as f:
                if f.read(5) == b"timer":
                    break
            time.sleep(0.01)
        else:
            pytest.fail("the write cache was not drained without a flush")
        assert b._direct_files[0].direct.dirty == 0


def test_a_full_write_cache_drains_in_order(disk_dir):
    path = os.path.join(disk_dir, "order.raw")
    with open(path, "wb") as f:
        f.truncate(64 << 10)
    f = ImageFile(path, writable=True)
    f.set_host_cache(False, cache_bytes=8192)
    writes = [(0, b"a" * 3000), (100, b"b" * 10), (2999, b"c" * 4000), (50, b"d" * 7000)]
    model = bytearray(64 << 10)
    for at, data in writes:
        f.pwrite(at, data)
        model[at:at + len(data)] = data
        assert f.direct.dirty <= 8192
    assert f.pread(0, len(model)) == model
    f.close()
    with open(path, "rb") as check:
        assert check.read() == model


def test_direct_images_of_every_format(disk_dir, io_threads):
    for fmt in ("vdi", "vhd"):
        path = make(disk_dir, fmt)
        data = os.urandom(3 * MiB)
        with BlockBackend.open(path, io=io_threads, host_cache=False) as b:
            run(b, *[Request(Op.WRITE, 1000 + i * 65536, (data[i * 65536:(i + 1) * 65536],))
                     for i in range(48)])
            run(b, Request(Op.FLUSH))
        with open_chain(path) as chain:
            assert chain.read(1000, len(data)) == data
            assert chain.top.check().clean


def test_a_file_system_without_o_direct_is_named(tmp_path):
    """ramfs has no direct I/O: host cache off must say so when the image is opened."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to mount a ramfs")
    script = textwrap.dedent("""
        import os, sys
        from drivebay.block.backend import BlockBackend
        from drivebay.errors import ImageError
        path = os.path.join(sys.argv[1], "disk.raw")
        with open(path, "wb") as f:
            f.truncate(1 << 20)
        BlockBackend.open(path).close()                     # cache on works
        try:
            BlockBackend.open(path, host_cache=False)
        except ImageError as e:
            print("ERROR", e)
    """)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["unshare", "-rm", "sh", "-c",
                        f'mount -t ramfs none "$1" && exec "{sys.executable}" -c "$2" "$1"',
                        "sh", str(mnt), script], capture_output=True, text=True, timeout=60)
    if r.returncode and "mount" in r.stderr and "permission" in r.stderr.lower():
        pytest.skip(f"no user namespaces here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    assert "ERROR" in r.stdout
    assert "host file system (ramfs)" in r.stdout and "host I/O cache on" in r.stdout


def test_switching_the_cache_back_on(disk_dir):
    path = make(disk_dir, "raw", size=MiB)
    f = ImageFile(path, writable=True)
    f.set_host_cache(False)
    f.pwrite(3, b"x")
    f.set_host_cache(True)
    assert f.direct is None and f.pread(3, 1) == b"x"
    f.close()


# -- fault injection -------------------------------------------------------------------------------

def test_injected_errors_reach_the_completion(disk_dir, io_threads):
    path = make(disk_dir, "raw", size=MiB)
    with open_chain(path, writable=True) as chain:
        faulty = FaultyDriver(chain.top, [
            FaultRule(op="write", offset=8192, length=4096, error="ENOSPC", after=1, count=1),
            FaultRule(op="read", offset=0, length=512, error=errno.EIO)])
        b = BlockBackend(Chain([faulty]), io=io_threads)
        first, second, third = (run(b, Request(Op.WRITE, 8192, (b"w" * 512,)))[0]
                                for _ in range(3))
        assert first.ok and not second.ok and third.ok
        assert second.errno == errno.ENOSPC and "ENOSPC" in str(second.error)
        bad, good = run(b, Request(Op.READ, 0, (bytearray(512),)),
                        Request(Op.READ, 512, (bytearray(512),)))
        assert bad.errno == errno.EIO and good.ok
        with pytest.raises(ImageError, match="EIO"):
            b.readinto(0, bytearray(1))
        b.close()


def test_reads_of_holes_and_parents_pass_through_the_filter(disk_dir):
    base = make(disk_dir, "vdi", name="base.vdi")
    with open_image(base, writable=True) as im:
        im.write(0, b"parent" * 1000)
    with open_image(base) as p:
        VdiDriver.create(os.path.join(disk_dir, "child.vdi"), None, parent=p)
    chain = open_chain(os.path.join(disk_dir, "child.vdi"), writable=True)
    faulty = FaultyDriver(chain.top, [FaultRule(op="read", offset=2 * MiB, error="EIO")])
    wrapped = Chain([faulty] + chain.images[1:])
    b = BlockBackend(wrapped)
    out = bytearray(6000)
    b.readinto(0, out)
    assert out == (b"parent" * 1000)[:6000]
    with pytest.raises(ImageError, match="injected"):
        b.readinto(2 * MiB + 5, bytearray(10))           # a hole, still faulted
    b.write(3, b"child")
    b.readinto(0, out)
    assert out[:12] == b"parchildrent"
    b.close()


def test_rules_from_a_file(tmp_path):
    rules_file = tmp_path / "rules.conf"
    rules_file.write_text(textwrap.dedent("""
        # drivebay fault rules
        [rule full]
        op = write
        offset = 1048576
        length = 65536
        error = ENOSPC
        after = 2
        count = 1

        [rule slow-flush]
        op = flush
        latency = 0.001
    """))
    full, slow = load_rules(rules_file)
    assert (full.name, full.op, full.offset, full.length, full.error, full.after, full.count) == \
        ("full", "write", MiB, 65536, errno.ENOSPC, 2, 1)
    assert (slow.op, slow.latency, slow.error) == ("flush", 0.001, None)
    assert full.matches("write", MiB + 65535, 1) and not full.matches("write", MiB + 65536, 1)
    assert not full.matches("read", MiB, 1)
    bad = tmp_path / "bad.conf"
    bad.write_text("[rule x]\nop = explode\n")
    with pytest.raises(ConfigError, match="explode"):
        load_rules(bad)
    bad.write_text("[rule x]\nerror = EWHAT\n")
    with pytest.raises(ConfigError, match="EWHAT"):
        load_rules(bad)
    bad.write_text("[other]\nop = read\n")
    with pytest.raises(ConfigError, match="rule NAME"):
        load_rules(bad)


def test_every_op_is_recorded_in_order():
    backend_image = MemoryImage(MiB)
    faulty = FaultyDriver(backend_image)
    b = BlockBackend(Chain([faulty]), discard=True)
    b.write(0, b"1")
    b.write_zeroes(512, 512)
    b.discard(4096, 4096)
    b.flush()
    b.readinto(0, bytearray(1))
    assert [e[0] for e in faulty.events if e[3] == "start"] == \
        ["write", "write-zeroes", "discard", "flush", "read"]


class MemoryImage:
    """The smallest BlockDriver-shaped image: a bytearray (for filter tests)."""

    def __init__(self, size):
        from drivebay.block.driver import Extent, State
        self._extent, self._state = Extent, State
        self.data = bytearray(size)
        self.size = size
        self.file = None
        self.path = "memory"
        self.writable = True
        self.backing_read = None
        self.uuid = self.modification_uuid = self.parent_uuid = None
        self.parent_modification_uuid = self.parent_locator = None
        self.variant, self.cluster_size, self.for_check = "memory", 512, False

    def check_range(self, offset, length):
        assert 0 <= offset and offset + length <= self.size

    def block_status(self, offset, length):
        return [self._extent(offset, length, self._state.DATA, offset)]

    def read_allocated_into(self, ext, view):
        view[:] = self.data[ext.host_offset:ext.host_offset + len(view)]

    def write(self, offset, data):
        self.data[offset:offset + len(data)] = data

    def write_zeroes(self, offset, length):
        self.data[offset:offset + length] = bytes(length)

    def discard(self, offset, length):
        self.write_zeroes(offset, length)

    def flush(self):
        pass

    def close(self):
        pass


def test_request_done_is_an_event():
    r = Request(Op.FLUSH)
    d = RequestDone(r)
    assert d.ok and d.errno == 0
    with pytest.raises(AttributeError):
        d.error = ValueError()


def test_direct_io_refuses_a_file_system_that_reports_no_direct_io(disk_dir, monkeypatch):
    path = make(disk_dir, "raw", size=MiB)
    import drivebay.block.io as io_mod
    monkeypatch.setattr(io_mod, "dio_alignment", lambda fd: (0, 0))
    f = ImageFile(path)
    with pytest.raises(ImageError, match=r"host file system \(\w+\) has no direct I/O"):
        DirectIO(f)
    f.close()


def test_busy_counts_requests_whose_completion_is_not_queued(disk_dir, io_threads):
    """What the CPU loop waits on (boot/cpu.py): submitted, not yet completed."""
    path = make(disk_dir, "raw", size=MiB)
    slow = FaultyDriver(open_image(path, writable=True), [FaultRule(op="read", latency=0.1)])
    b = BlockBackend(Chain([slow]), io=io_threads)
    assert not io_threads.busy
    got = []
    b.submit(Request(Op.READ, 0, (bytearray(512),)), got.append)
    b.submit(Request(Op.READ, MiB, (bytearray(512),)), got.append)   # refused: past the end
    assert io_threads.busy
    while io_threads.pending < 2:
        io_threads.wait(1)
    assert not io_threads.busy and got == []
    io_threads.poll_completions()
    assert sorted(e.ok for e in got) == [False, True]
    b.close()


@pytest.mark.parametrize("readonly", [False, True])
def test_bounce_buffers_beyond_the_pool_are_freed(disk_dir, monkeypatch, readonly):
    """A bounce buffer the pool does not keep is closed after the transfer,
    with no view of it left open (a BufferError from a drain thread before)."""
    monkeypatch.setattr(io_mod, "BOUNCE_KEEP", 0)
    path = os.path.join(disk_dir, "bounce.raw")
    with open(path, "wb") as f:
        f.write(bytes(MiB))
    f = ImageFile(path, writable=not readonly)
    f.set_host_cache(False, cache_bytes=0)
    try:
        if not readonly:
            f.pwrite(100, b"x" * 5000)                   # unaligned: through a bounce buffer
        got = bytearray(6000)
        f.preadinto(50, memoryview(got)[1:])             # unaligned view: bounced too
        want = bytes(50) + (b"x" * 5000 if not readonly else bytes(5000)) + bytes(949)
        assert bytes(got[1:]) == want[:5999]
    finally:
        f.close()

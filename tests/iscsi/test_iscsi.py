"""drivebay's iSCSI initiator against a real target (tgtd): login, discovery,
byte-exact I/O checked in the backing file, R2T, concurrency, flush, UNMAP,
write protection, a target that dies, and the URL's errors."""

import errno
import json
import os
import signal
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivebay.block import iscsi_session
from drivebay.block.backend import BlockBackend
from drivebay.block.chain import Chain, open_chain
from drivebay.block.drivers import open_image
from drivebay.block.io import IoThreads, Op, Request
from drivebay.block.iscsi import IscsiDriver, IscsiUrl
from drivebay.block.iscsi_session import LoginError, discover
from drivebay.errors import ConfigError, ImageError
from drivebay.system.cli import main

MiB = 1 << 20


# -- login ----------------------------------------------------------------------------------

def test_login_without_authentication_reads_the_backing_file(tgtd):
    content = os.urandom(3 * MiB + 4096)
    t = tgtd.target("plain", size=8 * MiB, content=content)
    with open_image(t.url()) as image:
        assert isinstance(image, IscsiDriver)
        assert image.size == 8 * MiB and image.block_size == 512
        assert image.read(0, len(content)) == content
        assert image.read(5 * MiB, MiB) == bytes(MiB)
        assert image.info()["vendor"] == "IET"
        assert image.block_status(0, image.size)[0].state.value == "data"


def test_chap_login_and_wrong_password(tgtd):
    t = tgtd.target("chap", users=[("alice", "secret-alice1")], content=b"chap!" * 100)
    with open_image(t.url("alice", "secret-alice1")) as image:
        assert image.read(0, 500) == b"chap!" * 100
        assert "secret" not in image.path and "alice%***" in image.path
    with pytest.raises(LoginError) as e:
        open_image(t.url("alice", "wrong-password1"))
    assert "authentication failed" in str(e.value) and e.value.errno == errno.EACCES
    assert "wrong-password1" not in str(e.value)
    with pytest.raises(LoginError) as e:           # no credentials for a CHAP target
        open_image(t.url())
    assert "login refused" in str(e.value)


def test_mutual_chap(tgtd):
    t = tgtd.target("mutual", users=[("bob", "bob-secret-12")],
                    outgoing=("tgt", "target-secret-12"), content=b"m" * 512)
    with IscsiDriver.open(t.url("bob", "bob-secret-12"), target_user="tgt",
                          target_password="target-secret-12") as image:
        assert image.read(0, 512) == b"m" * 512
    with pytest.raises(LoginError, match="failed mutual CHAP"):
        IscsiDriver.open(t.url("bob", "bob-secret-12"), target_user="tgt",
                         target_password="not-the-one-12")


def test_login_follows_a_redirection(tgtd, tgtd_factory):
    real = tgtd_factory(host="127.0.0.2")       # tgtd will not redirect to its own address
    t = real.target("moved", content=b"the real one" * 40)
    tgtd.target("moved", params={"RedirectAddress": "127.0.0.2", "RedirectPort": real.port,
                                 "RedirectReason": "Temporary"})
    here = f"iscsi://127.0.0.1:{tgtd.port}/{t.iqn}/1"
    with open_image(here) as image:
        assert image.read(0, 480) == b"the real one" * 40
        assert (image.session.host, image.session.port) == ("127.0.0.2", real.port)


def test_unknown_target_and_lun(tgtd):
    t = tgtd.target("exists")
    with pytest.raises(LoginError, match="target not found") as e:
        open_image(t.url().replace(":exists/", ":missing/"))
    assert e.value.errno == errno.ENOENT
    with pytest.raises(ImageError, match="no LUN 7"):
        open_image(t.url(lun=7))


def test_discovery(tgtd):
    tgtd.target("disc-a")
    tgtd.target("disc-b")
    found = dict(discover("127.0.0.1", tgtd.port, timeout=5))
    for name in ("disc-a", "disc-b"):
        addresses = found[f"iqn.2026-01.org.drivebay.test:{name}"]
        assert addresses and addresses[0].startswith(f"127.0.0.1:{tgtd.port}")


# -- data --------------------------------------------------------------------------------------

def test_writes_land_byte_exact_in_the_backing_file(tgtd):
    t = tgtd.target("write", size=4 * MiB)
    with open_image(t.url(), writable=True) as image:
        image.write(0, b"A" * 4096)
        image.write(MiB + 3, b"unaligned write")              # read-modify-write of a block
        image.write(4 * MiB - 512, b"Z" * 512)
        image.flush()
        assert image.read(MiB, 32) == b"\0\0\0unaligned write" + bytes(14)
    assert t.file_bytes(0, 4096) == b"A" * 4096
    assert t.file_bytes(MiB, 32) == b"\0\0\0unaligned write" + bytes(14)
    assert t.file_bytes(4 * MiB - 512) == b"Z" * 512
    with open_image(t.url()) as image:
        with pytest.raises(ImageError, match="outside"):
            image.read(4 * MiB - 512, 1024)


@pytest.mark.parametrize("initial_r2t", ["Yes", "No"])
def test_large_transfers_cross_bursts_and_r2t(tgtd, initial_r2t):
    """Small bursts and segments on the target: a 3 MiB write needs
    immediate data, unsolicited Data-Out (InitialR2T=No) and many R2Ts."""
    t = tgtd.target(f"burst-{initial_r2t}", size=8 * MiB,
                    params={"MaxBurstLength": 65536, "FirstBurstLength": 16384,
                            "MaxRecvDataSegmentLength": 4096, "InitialR2T": initial_r2t})
    data = os.urandom(3 * MiB + 512)
    with open_image(t.url(), writable=True) as image:
        p = image.session.params
        assert (p.max_burst, p.first_burst, p.max_xmit) == (65536, 16384, 4096)
        assert p.initial_r2t == (initial_r2t == "Yes")
        image.write(512, data)
        assert image.read(512, len(data)) == data
    assert t.file_bytes(512, len(data)) == data


def test_flush_sends_synchronize_cache(tgtd):
    t = tgtd.target("flush")
    sent = []
    with open_image(t.url(), writable=True) as image:
        execute = image.session.execute

        def recording(lun, cdb, **kw):
            sent.append(cdb[0])
            return execute(lun, cdb, **kw)
        image.session.execute = recording
        image.write(0, b"F" * 512)
        image.flush()
    assert sent == [0x8A, 0x35]
    assert t.file_bytes(0, 512) == b"F" * 512


def test_discard_unmaps_on_a_thin_lun(tgtd):
    t = tgtd.target("thin", size=4 * MiB, content=b"\xff" * (4 * MiB), thin=True)
    with open_image(t.url(), writable=True) as image:
        assert image.unmap
        image.discard(MiB + 100, MiB)       # whole blocks inside the range only
        image.flush()
        assert image.read(MiB, 1024) == b"\xff" * 512 + bytes(512)
    assert t.file_bytes(MiB, 512) == b"\xff" * 512          # partly covered blocks stay
    assert t.file_bytes(MiB + 512, MiB - 512) == bytes(MiB - 512)
    assert t.file_bytes(2 * MiB, 512) == b"\xff" * 512


# -- concurrency ---------------------------------------------------------------------------

def test_backend_with_io_threads_reads_and_writes_concurrently(tgtd):
    """BlockBackend(Chain([image])) on an IoThreads pool, as a VM attaches a LUN."""
    size = 8 * MiB
    content = os.urandom(size)
    t = tgtd.target("backend", size=size, content=content)
    io = IoThreads(4)
    try:
        backend = BlockBackend(Chain([open_image(t.url(), writable=True)]), io=io,
                               host_cache=False)
        with backend:
            reads = [(i * 256 * 1024 + (i % 3) * 512, 64 * 1024 * (1 + i % 4)) for i in range(24)]
            bufs = [bytearray(n) for _, n in reads]
            done = []
            for (off, n), buf in zip(reads, bufs):
                backend.submit(Request(Op.READ, off, (buf,)), done.append)
            writes = [(6 * MiB + i * 65536, os.urandom(65536)) for i in range(8)]
            for off, data in writes:
                backend.submit(Request(Op.WRITE, off, (data,)), done.append)
            backend.submit(Request(Op.FLUSH), done.append)
            deadline = time.monotonic() + 30
            while len(done) < len(reads) + len(writes) + 1 and time.monotonic() < deadline:
                io.wait(1)
                io.poll_completions()
            assert len(done) == len(reads) + len(writes) + 1
            assert all(d.ok for d in done), [d.error for d in done if not d.ok]
            for (off, n), buf in zip(reads, bufs):
                assert buf == content[off:off + n]
        for off, data in writes:
            assert t.file_bytes(off, len(data)) == data
    finally:
        io.close()


@pytest.mark.parametrize("queue", [128, 2])
def test_one_session_serves_many_threads(tgtd, queue):
    """Eight threads on one session; with MaxQueueCmd=2 the target's CmdSN
    window holds most of them back at any time."""
    size = 4 * MiB
    t = tgtd.target(f"threads-{queue}", size=size, params={"MaxQueueCmd": queue})
    with open_image(t.url(), writable=True) as image:
        window = (image.session.max_cmd_sn - image.session.cmd_sn + 1) & 0xFFFFFFFF
        assert window <= queue + 1          # tgtd: MaxCmdSN = ExpCmdSN + MaxQueueCmd
        errors = []

        def worker(k):
            try:
                base = k * (size // 8)
                for i in range(6):
                    data = bytes([k * 16 + i]) * (32768 + 512 * i)
                    image.write(base + i * 4096, data)
                    if image.read(base + i * 4096, len(data)) != data:
                        errors.append(f"thread {k} step {i}: data differs")
            except Exception as e:          # reported below
                errors.append(repr(e))
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert not any(th.is_alive() for th in threads)
        assert errors == []


# -- write protection, a dying target ----------------------------------------------------

def test_read_only_lun(tgtd):
    t = tgtd.target("ro", readonly=True, content=b"R" * 4096)
    with pytest.raises(ImageError, match="write-protected") as e:
        open_image(t.url(), writable=True)
    assert e.value.errno == errno.EROFS
    with open_image(t.url()) as image:
        assert image.write_protected and image.read(0, 4096) == b"R" * 4096
        backend = BlockBackend(Chain([image]))
        done = []
        backend.submit(Request(Op.WRITE, 0, (bytes(512),)), done.append)
        backend.poll_completions()
        assert not done[0].ok and done[0].errno == errno.EROFS


def test_lun_made_read_only_under_a_writer_gives_erofs(tgtd):
    t = tgtd.target("ro-later")
    with open_image(t.url(), writable=True) as image:
        image.write(0, b"w" * 512)
        t.set_lun(readonly=1)
        with pytest.raises(ImageError, match="DATA PROTECT") as e:
            image.write(512, b"x" * 512)
        assert e.value.errno == errno.EROFS and "WRITE(16) at LBA 1" in str(e.value)
    assert t.file_bytes(0, 1024) == b"w" * 512 + bytes(512)


def test_target_killed_mid_session_gives_an_error(tgtd_factory):
    daemon = tgtd_factory()
    t = daemon.target("killed")
    image = IscsiDriver.open(t.url(), writable=True, timeout=5)
    try:
        image.write(0, b"k" * 512)
        daemon.stop(signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(ImageError) as e:
            image.read(0, 512)
        assert time.monotonic() - started < 5
        assert "iscsi://127.0.0.1" in str(e.value) and e.value.errno
        with pytest.raises(ImageError):     # and stays failed
            image.write(0, b"x" * 512)
    finally:
        image.close()


def test_target_killed_under_transfers_in_flight(tgtd_factory):
    """Four threads stream 1 MiB reads and writes; the target dies under
    them: every thread gets an error, none hangs."""
    daemon = tgtd_factory()
    t = daemon.target("killed-busy", size=32 * MiB)
    image = IscsiDriver.open(t.url(), writable=True, timeout=5)
    outcome, running = {}, threading.Barrier(5)

    def worker(k):
        running.wait()
        try:
            while True:
                at = (k * 8 * MiB) % (32 * MiB)
                image.write(at, bytes([k]) * MiB) if k % 2 else image.read(at, MiB)
        except ImageError as e:
            outcome[k] = e
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    try:
        for th in threads:
            th.start()
        running.wait()
        time.sleep(0.3)
        daemon.stop(signal.SIGKILL)
        for th in threads:
            th.join(10)
        assert not any(th.is_alive() for th in threads)
        assert sorted(outcome) == [0, 1, 2, 3]
        assert all(e.errno for e in outcome.values())
    finally:
        image.close()


def test_session_logs_in_again_after_the_target_restarts(tgtd_factory):
    daemon = tgtd_factory()
    t = daemon.target("restart", content=b"before" * 100)
    with open_image(t.url(), writable=True) as image:
        image.write(4096, b"one" * 100)
        first = image.session
        daemon.stop(signal.SIGKILL)
        again = tgtd_factory(port=daemon.port)         # same portal, same backing file
        again.target("restart", backing=t.backing)
        assert image.read(0, 600) == b"before" * 100   # logged in again, transparently
        image.write(8192, b"two" * 100)
        assert image.session is not first and image.file.reconnects == 1
    assert t.file_bytes(4096, 300) == b"one" * 100 and t.file_bytes(8192, 300) == b"two" * 100


def test_target_that_stops_answering_times_out(tgtd_factory):
    daemon = tgtd_factory()
    t = daemon.target("stopped")
    image = IscsiDriver.open(t.url(), timeout=1.0)
    try:
        os.kill(daemon.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(ImageError, match="no answer from the target in 1 s") as e:
                image.read(0, 512)
            assert e.value.errno == errno.ETIMEDOUT
        finally:
            os.kill(daemon.proc.pid, signal.SIGCONT)
    finally:
        image.close()


def test_target_pings_are_answered(tgtd):
    """tgtd sends NOP-In every second and drops a connection that leaves two
    unanswered; the session answers and stays up."""
    t = tgtd.target("nop", params={"nop_interval": 1, "nop_count": 2})
    with open_image(t.url()) as image:
        time.sleep(3.5)
        assert image.read(0, 512) == bytes(512)
        image.session.ping(timeout=5)


# -- URLs and the command line ------------------------------------------------------------

@pytest.mark.parametrize("url, field", [
    ("iscsi://", "host"),
    ("iscsi:///iqn.x/1", "host"),
    ("iscsi://h:0/iqn.x/1", "port"),
    ("iscsi://h:http/iqn.x/1", "port"),
    ("iscsi://h/1", "target name"),
    ("iscsi://h/iqn.x/", "LUN"),
    ("iscsi://h/iqn.x/one", "LUN"),
    ("iscsi://h/iqn.x/99999", "LUN"),
    ("iscsi://bob@h/iqn.x/1", "password"),
    ("iscsi://%pw@h/iqn.x/1", "user name"),
    ("iscsi://[::1/iqn.x/1", "IPv6"),
    ("iscsi://h/iqn.bad name/1", "target name"),
])
def test_bad_url_is_refused_naming_the_field(url, field):
    with pytest.raises(ConfigError, match=field):
        open_image(url)


def test_url_parts_and_password_masking():
    u = IscsiUrl("iscsi://joe%p@ss@[fe80::1]:3261/iqn.2026-01.x:y/3")
    assert (u.user, u.password, u.host, u.port, u.target, u.lun) == \
        ("joe", "p@ss", "fe80::1", 3261, "iqn.2026-01.x:y", 3)
    assert u.masked == "iscsi://joe%***@[fe80::1]:3261/iqn.2026-01.x:y/3"
    assert IscsiUrl("iscsi://host/iqn.a/0").port == iscsi_session.DEFAULT_PORT
    # libiscsi's arguments for mutual CHAP, and the initiator's IQN, percent-encoded.
    u = IscsiUrl("iscsi://h/iqn.a/1?target_user=t&target_password=a%26b%2Fc&initiator=iqn.x:y")
    assert (u.target_user, u.target_password, u.initiator, u.lun) == ("t", "a&b/c", "iqn.x:y", 1)
    assert "a%26b" not in u.masked and "target_password=***" in u.masked
    for bad, words in (("?foo=1", "unknown argument 'foo'"),
                       ("?target_user=t", "needs both"),
                       ("?initiator=a&initiator=b", "given twice")):
        with pytest.raises(ConfigError, match=words):
            IscsiUrl("iscsi://h/iqn.a/1" + bad)


def test_open_chain_and_cli_info_and_convert(tgtd, tmp_path, capsys):
    content = os.urandom(2 * MiB)
    t = tgtd.target("cli", size=4 * MiB, content=content)
    with open_chain(t.url()) as chain:
        assert chain.size == 4 * MiB and chain.read(0, MiB) == content[:MiB]
    assert main(["img", "info", "--output", "json", t.url()]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["virtual-size"] == 4 * MiB and facts["format"] == "iscsi"
    assert facts["target"] == t.iqn and facts["lun"] == 1
    out = str(tmp_path / "copy.vdi")
    assert main(["img", "convert", "-O", "vdi", t.url(), out]) == 0
    with open_image(out) as copy:
        assert copy.format_name == "vdi" and copy.size == 4 * MiB
        assert copy.read(0, 4 * MiB) == content + bytes(2 * MiB)


# -- a model: concurrent batches through BlockBackend against a bytearray --------------------

MODEL_SIZE = 2 * MiB
op = st.tuples(st.sampled_from(["read", "write", "flush"]), st.integers(0, MODEL_SIZE // 512 - 1),
               st.integers(1, 256), st.integers(0, 255))
batches = st.lists(st.lists(op, min_size=1, max_size=12), min_size=1, max_size=4)


@pytest.fixture(scope="module")
def model_disk(tgtd):
    t = tgtd.target("model", size=MODEL_SIZE, params={"MaxQueueCmd": 2})   # a narrow window
    io = IoThreads(4)
    backend = BlockBackend(Chain([open_image(t.url(), writable=True)]), io=io)
    yield t, backend, bytearray(MODEL_SIZE)
    backend.close()
    io.close()


def _disjoint(batch):
    """The ops of a batch whose ranges no write of the batch overlaps (so
    their order does not matter)."""
    taken, chosen = [], []
    for kind, block, count, seed in batch:
        start = block * 512
        end = min(MODEL_SIZE, start + count * 512)
        if kind != "flush" and any(s < end and start < e and (kind == "write" or w)
                                   for s, e, w in taken):
            continue
        if kind != "flush":
            taken.append((start, end, kind == "write"))
        chosen.append((kind, start, end - start, seed))
    return chosen


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batches=batches)
def test_concurrent_batches_match_a_model(model_disk, batches):
    t, backend, model = model_disk
    io = backend.io
    for batch in batches:
        done, reads = [], []
        for kind, offset, length, seed in _disjoint(batch):
            if kind == "write":
                data = bytes((seed + i * 13) & 0xFF for i in range(256)) * (length // 256) + \
                    bytes((seed + i * 13) & 0xFF for i in range(length % 256))
                model[offset:offset + length] = data
                backend.submit(Request(Op.WRITE, offset, (data,)), done.append)
            elif kind == "read":
                buf = bytearray(length)
                reads.append((offset, buf, bytes(model[offset:offset + length])))
                backend.submit(Request(Op.READ, offset, (buf,)), done.append)
            else:
                backend.submit(Request(Op.FLUSH), done.append)
        want = len(reads) + sum(1 for k, *_ in _disjoint(batch) if k != "read")
        deadline = time.monotonic() + 30
        while len(done) < want and time.monotonic() < deadline:
            io.wait(1)
            io.poll_completions()
        assert len(done) == want and all(d.ok for d in done)
        for offset, buf, expect in reads:
            assert buf == expect, f"read at {offset}"
    assert t.file_bytes(0, MODEL_SIZE) == model

"""Bandwidth groups with a fake clock: VBoxManage units, shares between disks,
idle disks, limit changes while I/O runs, QEMU's extra limits.  No test
sleeps or times anything: a FakeTime plays both the clock and the timer."""

import heapq
import itertools

import pytest

from drivebay.block.backend import BlockBackend, MemoryBackend
from drivebay.block.io import Op, Request, TimerHandle
from drivebay.block.raw import RawDriver
from drivebay.block.throttle import (BandwidthGroup, BandwidthGroups, Limits, format_limit,
                                     parse_limit)
from drivebay.errors import ConfigError

MiB = 1 << 20


class FakeTime:
    """A monotonic clock that moves only when told, and the timer that goes with it."""

    def __init__(self):
        self.now = 0.0
        self._heap = []
        self._seq = itertools.count()

    def __call__(self):
        return self.now

    def call_at(self, deadline, fn):
        handle = TimerHandle(deadline, fn)
        heapq.heappush(self._heap, (deadline, next(self._seq), handle))
        return handle

    def advance(self, seconds):
        end = self.now + seconds
        while self._heap and self._heap[0][0] <= end:
            deadline, _, handle = heapq.heappop(self._heap)
            if handle.cancelled:
                continue
            self.now = max(self.now, deadline)
            handle.fn()
        self.now = end


@pytest.fixture
def clock():
    return FakeTime()


def group(clock, **limits):
    return BandwidthGroup("g", limits=Limits(**limits), clock=clock, timer=clock)


class Recorder:
    """Starts of requests: (time, member, bytes)."""

    def __init__(self, clock):
        self.clock = clock
        self.starts = []

    def submit(self, member, size, is_write=False):
        member.submit(size, is_write, lambda: self.starts.append((self.clock(), member.name, size)))

    def bytes(self, name=None, until=None, since=0.0):
        return sum(n for t, m, n in self.starts
                   if (name is None or m == name) and since <= t and (until is None or t <= until))


# -- VBoxManage units ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [
    ("20", 20 * MiB), ("0", 0), ("20M", 20 * MiB), ("512K", 512 * 1024), ("2G", 2 << 30),
    ("8m", 1_000_000), ("8k", 1000), ("1g", 125_000_000), ("100m", 12_500_000), (4096, 4096)])
def test_vboxmanage_limit_units(text, value):
    assert parse_limit(text) == value


@pytest.mark.parametrize("text", ["-1", "20MB", " 20", "20 ", "20 M", "", "M", "1.5M", "20T",
                                  "9223372036854775807G", -5])
def test_bad_limits_are_refused(text):
    with pytest.raises(ConfigError):
        parse_limit(text)


def test_limits_are_listed_as_vboxmanage_does():
    assert format_limit(0) == "Limit: 0 (no limit)"
    assert format_limit(20 * MiB) == "Limit: 20 MBytes/sec"
    assert format_limit(125_000) == "Limit: 125000 Bytes/sec"
    groups = BandwidthGroups(clock=FakeTime(), timer=FakeTime())
    groups.add("Limit", limit="20M")
    assert groups.list() == ["Name: 'Limit', Type: Disk, Limit: 20 MBytes/sec"]


@pytest.mark.parametrize("bad", [dict(bps_total=-1), dict(bps_total=1, bps_read=1),
                                 dict(iops_total=5, iops_write=1), dict(bps_read_max=10),
                                 dict(bps_total=10, bps_total_max=5),
                                 dict(bps_total=10, bps_total_max_length=2),
                                 dict(bps_total=10, bps_total_max=20, bps_total_max_length=0.5)])
def test_inconsistent_qemu_limits_are_refused(bad):
    with pytest.raises(ConfigError):
        Limits(**bad)


# -- one disk ------------------------------------------------------------------------------------------

def test_no_limit_passes_everything_at_once(clock):
    g = group(clock)
    rec = Recorder(clock)
    m = g.attach("a")
    for _ in range(100):
        rec.submit(m, MiB)
    assert rec.bytes() == 100 * MiB and g.waiting == 0


def test_the_rate_holds_over_time(clock):
    g = group(clock, bps_total=MiB)
    rec = Recorder(clock)
    m = g.attach("a")
    for _ in range(200):
        rec.submit(m, 64 << 10)
    for step in range(1, 101):
        clock.advance(0.1)
        t = step * 0.1
        done = rec.bytes(until=t)
        # never more than the rate plus the bucket (a tenth of a second) plus one request
        assert done <= MiB * t + MiB / 10 + (64 << 10)
        assert done >= MiB * t - (64 << 10)


def test_a_request_larger_than_the_bucket_passes_when_it_has_drained(clock):
    g = group(clock, bps_total=MiB)
    rec = Recorder(clock)
    m = g.attach("a")
    rec.submit(m, 4 * MiB)                       # 40 buckets' worth: passes at once
    rec.submit(m, 4096)
    assert len(rec.starts) == 1
    clock.advance(3.8)
    assert len(rec.starts) == 1                  # the debt of the big one is still leaking
    clock.advance(0.2)
    assert len(rec.starts) == 2
    assert 3.89 <= rec.starts[1][0] <= 3.91       # (4 MiB - bucket) / 1 MiB/s


def test_flushes_are_never_limited(clock):
    g = group(clock, bps_total=1)
    backend = MemoryBackend(bytearray(MiB), bandwidth_group=g)
    got = []
    backend.submit(Request(Op.WRITE, 0, (bytes(4096),)), got.append)
    backend.submit(Request(Op.WRITE, 0, (bytes(4096),)), got.append)
    backend.submit(Request(Op.FLUSH), got.append)
    backend.poll_completions()
    assert [d.request.op for d in got] == [Op.WRITE]     # the flush waits for the second write
    clock.advance(10_000)
    backend.poll_completions()
    assert [d.request.op for d in got] == [Op.WRITE, Op.WRITE, Op.FLUSH]
    backend.submit(Request(Op.FLUSH), got.append)
    backend.poll_completions()
    assert got[-1].request.op is Op.FLUSH


# -- shares between disks --------------------------------------------------------------------------

def test_two_busy_disks_share_the_limit_evenly(clock):
    g = group(clock, bps_total=2 * MiB)
    rec = Recorder(clock)
    a, b = g.attach("a"), g.attach("b")
    for _ in range(400):
        rec.submit(a, 32 << 10)
        rec.submit(b, 32 << 10)
    clock.advance(10)
    total, ra, rb = rec.bytes(), rec.bytes("a"), rec.bytes("b")
    assert abs(total - 20 * MiB) <= MiB / 5 + (64 << 10)
    assert abs(ra - rb) <= 32 << 10


def test_an_idle_disk_leaves_its_share(clock):
    g = group(clock, bps_total=2 * MiB)
    rec = Recorder(clock)
    a, b = g.attach("a"), g.attach("b")
    for _ in range(1000):
        rec.submit(a, 32 << 10)
    clock.advance(10)
    assert rec.bytes("b") == 0
    assert abs(rec.bytes("a") - 20 * MiB) <= MiB / 5 + (32 << 10)


def test_the_split_follows_demand(clock):
    """b asks for a quarter of the limit: it gets all of it, a gets the rest."""
    g = group(clock, bps_total=4 * MiB)
    rec = Recorder(clock)
    a, b = g.attach("a"), g.attach("b")
    for _ in range(2000):
        rec.submit(a, 64 << 10)
    for step in range(100):                      # b: 1 MiB/s in 10 ms pieces
        rec.submit(b, MiB // 100)
        clock.advance(0.01)
    piece = MiB // 100
    assert 99 * piece <= rec.bytes("b") <= 100 * piece      # all it asked (the last may wait)
    assert abs(rec.bytes("a") - 3 * MiB) <= 2 * (64 << 10) + 4 * MiB // 10


def test_several_groups_are_independent(clock):
    groups = BandwidthGroups(clock=clock, timer=clock)
    slow, fast = groups.add("slow", limit="1M"), groups.add("fast", limit="4M")
    rec = Recorder(clock)
    s, f = slow.attach("s"), fast.attach("f")
    for _ in range(1000):
        rec.submit(s, 32 << 10)
        rec.submit(f, 32 << 10)
    clock.advance(5)
    assert abs(rec.bytes("s") - 5 * MiB) <= MiB // 5
    assert abs(rec.bytes("f") - 20 * MiB) <= MiB


# -- changes while I/O runs ------------------------------------------------------------------------

def test_a_lower_limit_applies_at_once(clock):
    groups = BandwidthGroups(clock=clock, timer=clock)
    g = groups.add("Limit", limit="20M")
    rec = Recorder(clock)
    a, b = g.attach("a"), g.attach("b")
    for _ in range(3000):
        rec.submit(a, 64 << 10)
        rec.submit(b, 64 << 10)
    clock.advance(2)
    groups.set("Limit", limit="10M")
    change = clock.now
    clock.advance(3)
    # within 200 ms of the change the group runs at the new rate, and stays there
    for start in (0.2, 0.5, 1.0, 2.0):
        window = rec.bytes(since=change + start, until=change + start + 0.5)
        assert abs(window - 5 * MiB) <= 2 * (64 << 10), start
    assert rec.bytes(since=change, until=change + 0.2) <= 2 * MiB + (128 << 10)


def test_a_higher_limit_and_no_limit_apply_at_once(clock):
    groups = BandwidthGroups(clock=clock, timer=clock)
    g = groups.add("Limit", limit="1M")
    rec = Recorder(clock)
    m = g.attach("a")
    for _ in range(1000):
        rec.submit(m, 64 << 10)
    clock.advance(1)
    groups.set("Limit", limit="8M")
    change = clock.now
    clock.advance(1)
    assert abs(rec.bytes(since=change + 0.1, until=change + 1) - 8 * MiB * 0.9) <= 3 * (64 << 10)
    groups.set("Limit", limit=0)                 # 0 = no limit: everything waiting goes now
    assert g.waiting == 0 and len(rec.starts) == 1000


def test_removing_a_group_in_use_is_refused(clock, tmp_path):
    groups = BandwidthGroups(clock=clock, timer=clock)
    g = groups.add("Limit", limit="20M")
    path = tmp_path / "d.raw"
    RawDriver.create(path, MiB)
    backend = BlockBackend.open(path, bandwidth_group=g, name="disk1")
    with pytest.raises(ConfigError, match=r"'Limit' is still used by 1 disk\(s\) \(disk1\)"):
        groups.remove("Limit")
    backend.close()
    groups.remove("Limit")
    assert "Limit" not in groups
    with pytest.raises(ConfigError, match="no bandwidth group named 'Limit'"):
        groups.set("Limit", limit=1)


def test_group_names_and_types(clock):
    groups = BandwidthGroups(clock=clock, timer=clock)
    groups.add("a")
    with pytest.raises(ConfigError, match="already exists"):
        groups.add("a")
    with pytest.raises(ConfigError, match="type 'usb' unknown"):
        groups.add("b", kind="usb")
    with pytest.raises(ConfigError, match="empty"):
        groups.add("")
    net = groups.add("net", kind="network", limit="10m")
    with pytest.raises(ConfigError, match="network"):
        MemoryBackend(bytearray(512), bandwidth_group=net)


# -- QEMU's extra limits -------------------------------------------------------------------------------

def test_read_and_write_limits_are_separate(clock):
    g = group(clock, bps_read=MiB, bps_write=4 * MiB)
    rec = Recorder(clock)
    m = g.attach("a")
    reads = Recorder(clock)
    for _ in range(200):
        reads.submit(m, 64 << 10, is_write=False)
    clock.advance(2)
    assert abs(reads.bytes() - 2 * MiB) <= MiB / 10 + (64 << 10)
    del rec


def test_writes_do_not_wait_behind_reads_of_another_disk(clock):
    g = group(clock, bps_read=MiB)
    rec = Recorder(clock)
    reader, writer = g.attach("r"), g.attach("w")
    for _ in range(100):
        rec.submit(reader, 64 << 10)
    for _ in range(100):
        rec.submit(writer, 64 << 10, is_write=True)
    clock.advance(1)
    assert rec.bytes("w") == 100 * (64 << 10)


def test_iops_limits_and_iops_size(clock):
    g = group(clock, iops_total=100)
    rec = Recorder(clock)
    m = g.attach("a")
    for _ in range(1000):
        rec.submit(m, 512)
    clock.advance(5)
    assert abs(len(rec.starts) - 500) <= 11
    g2 = group(clock, iops_total=100, iops_size=4096)
    rec2 = Recorder(clock)
    m2 = g2.attach("b")
    for _ in range(100):
        rec2.submit(m2, 64 << 10)              # 16 operations each
    clock.advance(5)
    assert abs(len(rec2.starts) - 500 / 16) <= 2


def test_bursts(clock):
    """1 MiB/s on average, up to 4 MiB/s for 2 s: the first seconds go fast."""
    g = group(clock, bps_total=MiB, bps_total_max=4 * MiB, bps_total_max_length=2)
    rec = Recorder(clock)
    m = g.attach("a")
    for _ in range(1000):
        rec.submit(m, 64 << 10)
    clock.advance(1)
    first = rec.bytes(until=1)
    assert 3 * MiB <= first <= 4 * MiB + MiB // 2
    clock.advance(20)
    late = rec.bytes(since=15, until=20)
    assert abs(late - 5 * MiB) <= MiB // 2


# -- through a backend --------------------------------------------------------------------------------------

def test_backend_requests_wait_for_the_group(clock, tmp_path):
    groups = BandwidthGroups(clock=clock, timer=clock)
    g = groups.add("Limit", limit="1M")
    path = tmp_path / "d.raw"
    RawDriver.create(path, 4 * MiB)
    got = []
    with BlockBackend.open(path, bandwidth_group=g) as b:
        for i in range(8):
            b.submit(Request(Op.WRITE, i * (256 << 10), (bytes(256 << 10),)), got.append)
        b.poll_completions()
        assert len(got) == 1
        clock.advance(1)
        b.poll_completions()
        assert 4 <= len(got) <= 5
        clock.advance(5)
        b.poll_completions()
        assert len(got) == 8 and all(d.ok for d in got)
        b.readinto(0, bytearray(MiB))           # synchronous (IDE) I/O is not limited


def test_a_backend_leaving_the_group_releases_its_waiting_requests(clock):
    g = group(clock, bps_total=1000)
    backend = MemoryBackend(bytearray(MiB), bandwidth_group=g)
    got = []
    for _ in range(5):
        backend.submit(Request(Op.READ, 0, (bytearray(4096),)), got.append)
    backend.close()
    backend.poll_completions()
    assert len(got) == 5 and not g.members

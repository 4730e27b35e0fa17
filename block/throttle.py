"""Bandwidth groups: shared I/O limits for several disks, changeable at run time.

VirtualBox (``VBoxManage bandwidthctl <vm> add|set|remove|list``, IBandwidthControl):

* a group has a name, a type (``disk``; ``network`` groups shape network
  adapters, which drivebay does not emulate) and a limit in bytes per second,
  0 meaning no limit;
* every disk attached to the group shares its limit: together they never
  exceed it, and a disk that does no I/O leaves its share to the others;
* the limit can be changed while I/O runs and applies at once;
* a group that disks still use cannot be removed;
* reads and writes draw on one budget, and a request larger than what is
  left passes at the next refill (PDMAsyncCompletion's pdmacEpIsTransferAllowed).

The limit's units are VBoxManage's (VBoxManageBandwidthControl.cpp,
parseLimit): a number alone is megabytes per second, with the suffixes
``K``, ``M``, ``G`` for kilo-, mega-, gigabytes per second (powers of 1024:
``_1K``, ``_1M``, ``_1G``) and ``k``, ``m``, ``g`` for kilo-, mega-,
gigabits per second (powers of 1000, divided by 8: 125, 125 000 and
125 000 000 bytes).  VBoxManage ignores what follows the suffix
character ("20MB/s" is 20 MiB/s); drivebay refuses it.

Beyond VirtualBox, the limits of QEMU's throttle groups (``throttling.*``
options, util/throttle.c): separate read and write limits in bytes and
operations per second (a ``total`` limit excludes the per-direction ones),
bursts (``*-max`` rate for ``*-max-length`` seconds) and ``iops-size``
(an operation larger than that counts as several).

How.  Each limit is a leaky bucket as in QEMU's util/throttle.c: a request
may start while the bucket's level is at most its size (a tenth of a
second's worth, or ``max × max-length`` with a burst), then adds its cost to
the level, which leaks at the limit's rate.  A request larger than the
bucket therefore passes when the bucket has drained and leaves it over-full
for the next ones: VirtualBox's "passes at the next refresh", without its
one-second refresh (which lets a whole second's bytes out at once and makes
a new limit wait up to a second).  Requests that may not start yet wait in
their disk's queue, reads and writes apart (a read waiting for a read limit
does not hold up writes); disks are served in turn by deficit round robin,
fair in bytes (QEMU's throttle groups take turns by request), so a busy disk
cannot starve a quiet one, a disk asking for less than its share gets all it
asks, and an idle one takes nothing.
A timer releases waiting requests when the buckets have leaked enough.

Time and the timer are injected (``clock``, ``timer``), so tests drive a
group with a fake clock and no threads; flushes are never limited.  As in
VirtualBox, only requests submitted asynchronously are limited: the
synchronous path (IDE) calls the backend directly.
"""

import collections
import re
import threading
import time
from dataclasses import dataclass, fields

from drivebay.errors import ConfigError

# VBoxManageBandwidthControl.cpp parseLimit: the multiplier per suffix character.
LIMIT_UNITS = {"": 1 << 20, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30,
               "k": 125, "m": 125_000, "g": 125_000_000}
LIMIT_RE = re.compile(r"^(\d+)([kmgKMG]?)$")
INT64_MAX = (1 << 63) - 1
GROUP_TYPES = ("disk", "network")
BUCKET_FRACTION = 10         # util/throttle.c: without a burst limit the bucket holds avg/10
TIMER_SLACK = 1e-6           # seconds added to a computed wait so the bucket has leaked enough
QUANTUM = 64 << 10           # bytes a disk may send per turn (deficit round robin)
DIRECTIONS = (False, True)   # is_write


def parse_limit(text):
    """Bytes per second for a ``VBoxManage bandwidthctl --limit`` value (an int passes through)."""
    if isinstance(text, int):
        value = text
    else:
        m = LIMIT_RE.match(str(text))
        if not m:
            raise ConfigError(f"invalid bandwidth limit {text!r}: a whole number of megabytes "
                              f"per second, or a number with one of the suffixes k, m, g "
                              f"(bits per second) or K, M, G (bytes per second)")
        value = int(m.group(1)) * LIMIT_UNITS[m.group(2)]
    if value < 0:
        raise ConfigError(f"invalid bandwidth limit {text!r}: a limit cannot be negative")
    if value > INT64_MAX:
        raise ConfigError(f"invalid bandwidth limit {text!r}: larger than {INT64_MAX} bytes/s")
    return value


def format_limit(value):
    """A limit as ``VBoxManage bandwidthctl list`` prints it."""
    if not value:
        return "Limit: 0 (no limit)"
    for unit, name in ((1 << 30, "GBytes"), (1 << 20, "MBytes"), (1 << 10, "KBytes")):
        if value % unit == 0:
            return f"Limit: {value // unit} {name}/sec"
    return f"Limit: {value} Bytes/sec"


@dataclass(frozen=True)
class Limits:
    """A group's limits.  ``bps_*`` in bytes/s, ``iops_*`` in operations/s,
    0 = unlimited; ``*_max`` the burst rate and ``*_max_length`` how many
    seconds a burst may last (QEMU's ``throttling.bps-total-max`` and so on)."""
    bps_total: int = 0
    bps_read: int = 0
    bps_write: int = 0
    iops_total: int = 0
    iops_read: int = 0
    iops_write: int = 0
    bps_total_max: int = 0
    bps_read_max: int = 0
    bps_write_max: int = 0
    iops_total_max: int = 0
    iops_read_max: int = 0
    iops_write_max: int = 0
    bps_total_max_length: float = 1.0
    bps_read_max_length: float = 1.0
    bps_write_max_length: float = 1.0
    iops_total_max_length: float = 1.0
    iops_read_max_length: float = 1.0
    iops_write_max_length: float = 1.0
    iops_size: int = 0

    def __post_init__(self):
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ConfigError(f"throttle limit {f.name} is {getattr(self, f.name)}; "
                                  f"limits cannot be negative")
        for kind in ("bps", "iops"):
            total = getattr(self, f"{kind}_total")
            if total and (getattr(self, f"{kind}_read") or getattr(self, f"{kind}_write")):
                raise ConfigError(f"throttle limits: {kind}_total cannot be combined with "
                                  f"{kind}_read or {kind}_write (as in QEMU)")
            for d in ("total", "read", "write"):
                avg, peak = getattr(self, f"{kind}_{d}"), getattr(self, f"{kind}_{d}_max")
                length = getattr(self, f"{kind}_{d}_max_length")
                if peak and not avg:
                    raise ConfigError(f"throttle limits: {kind}_{d}_max needs {kind}_{d}")
                if peak and peak < avg:
                    raise ConfigError(f"throttle limits: {kind}_{d}_max ({peak}) is below "
                                      f"{kind}_{d} ({avg})")
                if length < 1:
                    raise ConfigError(f"throttle limits: {kind}_{d}_max_length must be at "
                                      f"least 1 second")
                if length > 1 and not peak:
                    raise ConfigError(f"throttle limits: {kind}_{d}_max_length needs "
                                      f"{kind}_{d}_max")

    @property
    def unlimited(self):
        return not any(getattr(self, f"{k}_{d}") for k in ("bps", "iops")
                       for d in ("total", "read", "write"))

    def replace(self, **changes):
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        unknown = set(changes) - set(values)
        if unknown:
            raise ConfigError(f"unknown throttle limits: {', '.join(sorted(unknown))}")
        values.update(changes)
        return Limits(**values)


class LeakyBucket:
    """One limit: QEMU's LeakyBucket (avg, max, burst_length, level, burst_level)."""

    __slots__ = ("avg", "max", "burst_length", "level", "burst_level")

    def __init__(self, avg=0, peak=0, burst_length=1.0):
        self.avg, self.max, self.burst_length = avg, peak, burst_length
        self.level = 0.0
        self.burst_level = 0.0

    def leak(self, elapsed):
        self.level = max(0.0, self.level - self.avg * elapsed)
        if self.burst_length > 1:
            self.burst_level = max(0.0, self.burst_level - self.max * elapsed)

    def wait(self):
        """Seconds until a request may start (0: now)."""
        if not self.avg:
            return 0.0
        if not self.max:
            size, burst_size = self.avg / BUCKET_FRACTION, 0
        else:
            size, burst_size = self.max * self.burst_length, self.max / BUCKET_FRACTION
        extra = self.level - size
        if extra > 0:
            return extra / self.avg + TIMER_SLACK
        if self.burst_length > 1:
            extra = self.burst_level - burst_size
            if extra > 0:
                return extra / self.max + TIMER_SLACK
        return 0.0

    def account(self, units):
        if self.avg:
            self.level += units
            if self.burst_length > 1:
                self.burst_level += units


class Member:
    """A disk's place in a group: its queues of waiting requests (reads, writes)."""

    def __init__(self, group, name):
        self.group = group
        self.name = name
        self.queues = {False: collections.deque(), True: collections.deque()}  # (bytes, fn, args)
        self.deficit = {False: 0, True: 0}
        self.bytes_done = 0
        self.requests_done = 0

    def submit(self, size, is_write, fn, args=()):
        """Start ``fn(*args)`` now or when the group's limits allow."""
        group = self.group
        if group.unlimited:
            self.bytes_done += size
            self.requests_done += 1
            fn(*args)
            return
        group.submit(self, size, is_write, fn, args)

    def __repr__(self):
        return f"<bandwidth group member {self.name!r} of {self.group.name!r}>"


class BandwidthGroup:
    """A named group; every member's requests draw on its buckets."""

    def __init__(self, name, kind="disk", limits=None, clock=time.monotonic, timer=None):
        self.name = name
        self.kind = kind
        self.clock = clock
        self.timer = timer
        self.members = []
        self._lock = threading.Lock()
        self._turn = {False: 0, True: 0}
        self._fresh = {False: True, True: True}    # the member whose turn it is gets its quantum
        self._queued = {False: 0, True: 0}
        self._first = False                     # the direction served first on the next pump
        self._last = clock()
        self._buckets = {}
        self._pending = None                    # the timer handle for the next release
        self.limits = Limits()
        self.unlimited = True
        self.set_limits(limits or Limits())

    @property
    def limit(self):
        """The VirtualBox limit (total bytes per second; 0 = none)."""
        return self.limits.bps_total

    def set_limits(self, limits):
        """Replace the limits; they apply to waiting requests at once."""
        with self._lock:
            self._leak(self.clock())
            old = self._buckets
            buckets = {}
            for kind in ("bps", "iops"):
                for d in ("total", "read", "write"):
                    avg = getattr(limits, f"{kind}_{d}")
                    if avg:
                        b = old.get((kind, d)) or LeakyBucket()
                        b.avg = avg
                        b.max = getattr(limits, f"{kind}_{d}_max")
                        b.burst_length = getattr(limits, f"{kind}_{d}_max_length")
                        buckets[(kind, d)] = b
            self._buckets = buckets
            self.limits = limits
            self.unlimited = limits.unlimited
        self._pump()

    def attach(self, name):
        member = Member(self, name)
        with self._lock:
            self.members.append(member)
        return member

    def detach(self, member):
        """Take a disk out of the group; its waiting requests start at once."""
        with self._lock:
            waiting = []
            for d in DIRECTIONS:
                waiting += member.queues[d]
                self._queued[d] -= len(member.queues[d])
                member.queues[d].clear()
            i = self.members.index(member)
            del self.members[i]
            for d in DIRECTIONS:
                if i < self._turn[d]:
                    self._turn[d] -= 1
                if self._turn[d] >= len(self.members):
                    self._turn[d] = 0
                self._fresh[d] = True
        for _, fn, args in waiting:
            fn(*args)

    def submit(self, member, size, is_write, fn, args=()):
        with self._lock:
            member.queues[is_write].append((size, fn, args))
            self._queued[is_write] += 1
        self._pump()

    def _leak(self, now):
        elapsed = now - self._last
        if elapsed > 0:
            for b in self._buckets.values():
                b.leak(elapsed)
        self._last = now

    def _costs(self, size, is_write):
        ops = -(-size // self.limits.iops_size) if self.limits.iops_size and size else 1
        d = "write" if is_write else "read"
        return (("bps", "total", size), ("bps", d, size), ("iops", "total", ops),
                ("iops", d, ops))

    def _release(self):
        """Requests that may start now, and when to look again (None: nothing waits)."""
        now = self.clock()
        self._leak(now)
        ready, deadlines = [], []
        first = self._first
        self._first = not first
        for is_write in (first, not first):
            deadline = self._release_direction(is_write, now, ready)
            if deadline is not None:
                deadlines.append(deadline)
        return ready, min(deadlines, default=None)

    def _release_direction(self, is_write, now, ready):
        """Deficit round robin over the members' queues of one direction."""
        members = self.members
        while self._queued[is_write]:
            n = len(members)
            turn = self._turn[is_write]
            member = members[turn]
            queue = member.queues[is_write]
            if not queue:
                member.deficit[is_write] = 0
                self._turn[is_write], self._fresh[is_write] = (turn + 1) % n, True
                continue
            if self._fresh[is_write]:
                member.deficit[is_write] += QUANTUM
                self._fresh[is_write] = False
            size, fn, args = queue[0]
            if member.deficit[is_write] < size:
                self._turn[is_write], self._fresh[is_write] = (turn + 1) % n, True
                continue
            costs = self._costs(size, is_write)
            if not self.unlimited:
                buckets = self._buckets
                wait = max((buckets[(k, d)].wait() for k, d, _ in costs if (k, d) in buckets),
                           default=0.0)
                if wait > 0:
                    return now + wait
            queue.popleft()
            self._queued[is_write] -= 1
            member.deficit[is_write] -= size
            for k, d, units in costs:
                b = self._buckets.get((k, d))
                if b is not None:
                    b.account(units)
            member.bytes_done += size
            member.requests_done += 1
            ready.append((fn, args))
        return None

    def _pump(self):
        """Start what may start; arrange to be called again when more may."""
        with self._lock:
            ready, deadline = self._release()
            if deadline is not None:
                pending = self._pending
                if pending is None or pending.cancelled or pending.deadline > deadline:
                    if pending is not None:
                        pending.cancel()
                    self._pending = self._timer().call_at(deadline, self._on_timer)
        for fn, args in ready:
            fn(*args)

    def _on_timer(self):
        with self._lock:
            self._pending = None
        self._pump()

    def _timer(self):
        if self.timer is None:
            from drivebay.block.io import Timer    # io.py imports nothing from here
            self.timer = Timer(f"drivebay-throttle-{self.name}", self.clock)
        return self.timer

    @property
    def waiting(self):
        """Requests waiting for the limits."""
        return self._queued[False] + self._queued[True]

    def __repr__(self):
        return f"<bandwidth group {self.name!r} ({self.kind}) {format_limit(self.limit)}>"


class BandwidthGroups:
    """A VM's bandwidth groups, managed as ``VBoxManage bandwidthctl`` does."""

    def __init__(self, clock=time.monotonic, timer=None):
        self.clock = clock
        self.timer = timer
        self._groups = {}

    def add(self, name, kind="disk", limit=0, **limits):
        """Create a group; ``limit`` in VBoxManage units (bytes/s as an int),
        ``limits`` QEMU's extras as Limits fields (``iops_total=...``)."""
        if not name:
            raise ConfigError("bandwidth group name must not be empty")
        if name in self._groups:
            raise ConfigError(f"bandwidth group {name!r} already exists")
        if kind not in GROUP_TYPES:
            raise ConfigError(f"bandwidth group {name!r}: type {kind!r} unknown "
                              f"(known: {', '.join(GROUP_TYPES)})")
        group = BandwidthGroup(name, kind, Limits(bps_total=parse_limit(limit), **limits),
                               self.clock, self._shared_timer())
        self._groups[name] = group
        return group

    def set(self, name, limit=None, **limits):
        """Change a group's limits while I/O runs; ``limit`` None keeps the
        VirtualBox limit, other fields not given keep their values."""
        group = self[name]
        changes = dict(limits)
        if limit is not None:
            changes["bps_total"] = parse_limit(limit)
        group.set_limits(group.limits.replace(**changes))
        return group

    def remove(self, name):
        group = self[name]
        if group.members:
            users = ", ".join(m.name for m in group.members)
            raise ConfigError(f"bandwidth group {name!r} is still used by {len(group.members)} "
                              f"disk(s) ({users}): detach them first")
        del self._groups[name]

    def _shared_timer(self):
        if self.timer is None:
            from drivebay.block.io import Timer
            self.timer = Timer("drivebay-throttle", self.clock)
        return self.timer

    def __getitem__(self, name):
        try:
            return self._groups[name]
        except KeyError:
            raise ConfigError(f"no bandwidth group named {name!r} (defined: "
                              f"{', '.join(self._groups) or 'none'})") from None

    def __contains__(self, name):
        return name in self._groups

    def __iter__(self):
        return iter(self._groups.values())

    def __len__(self):
        return len(self._groups)

    def list(self):
        """Lines as ``VBoxManage bandwidthctl list`` prints them."""
        return [f"Name: '{g.name}', Type: {g.kind.capitalize()}, {format_limit(g.limit)}"
                for g in self]

    def close(self):
        if self.timer is not None and hasattr(self.timer, "close"):
            self.timer.close()

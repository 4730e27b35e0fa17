"""A fault-injecting filter image, as QEMU's blkdebug: EIO, ENOSPC or added
latency on requests chosen by rules, to test guest drivers' error paths
through every controller.

``FaultyDriver(image, rules)`` sits on an open image (the top of a chain, or
any image) and passes every operation to it, except that a request matching
a rule first waits the rule's latency and then, if the rule has an errno,
fails with an ImageError carrying that errno (ENOSPC, EIO, ...) instead of
reaching the image.  A rule matches on

* ``op``: read, write, flush, discard, write-zeroes, or any;
* ``offset`` and ``length``: the byte range a request must overlap (length
  None: to the end of the disk; flushes have no range and match any);
* ``after``: let this many matching requests through first;
* ``count``: then fire for this many (None: for every one after).

Rules come from the API (``FaultRule``) or from a file, one section per rule:

    [rule full-disk]
    op = write
    offset = 1048576
    length = 65536
    error = ENOSPC
    after = 2
    count = 1

    [rule slow-flush]
    op = flush
    latency = 0.02

Every request is recorded in ``events`` as ``(op, offset, length, phase)``
with phase "start", "end" or "error", in the order they happened, so tests
can check ordering (a flush starts only after the writes it covers end).

The filter presents its whole disk as data (``block_status``) so that every
read passes through it, also of ranges the image below holds as zeros or
leaves to its parent; it reads those as the chain would (``backing_read``).
Not modelled: blkdebug's state machine and its internal events
(refcount_block_alloc, l2_update...): drivebay's formats keep their metadata
in memory, and faults of their metadata writes are the crash harness's job.
"""

import configparser
import errno
import threading
import time
from dataclasses import dataclass

from drivebay.block.driver import BlockDriver, Extent, State
from drivebay.errors import ConfigError, ImageError

OPS = ("read", "write", "flush", "discard", "write-zeroes", "any")
ERRNO_NAMES = {"EIO": errno.EIO, "ENOSPC": errno.ENOSPC, "EROFS": errno.EROFS,
               "EINVAL": errno.EINVAL, "EDQUOT": errno.EDQUOT, "ENOMEDIUM": errno.ENOMEDIUM}
RULE_SECTION = "rule"


@dataclass
class FaultRule:
    op: str = "any"
    offset: int = 0
    length: int | None = None
    error: int | None = None          # an errno; None: latency only
    latency: float = 0.0              # seconds
    after: int = 0
    count: int | None = None
    name: str = ""
    seen: int = 0                     # matching requests so far
    fired: int = 0                    # of which the rule acted on

    def __post_init__(self):
        if self.op not in OPS:
            raise ConfigError(f"fault rule {self.name!r}: op {self.op!r} unknown "
                              f"(known: {', '.join(OPS)})")
        if isinstance(self.error, str):
            self.error = parse_errno(self.error, self.name)
        if self.offset < 0 or (self.length is not None and self.length < 0) or \
                self.latency < 0 or self.after < 0 or (self.count is not None and self.count < 0):
            raise ConfigError(f"fault rule {self.name!r}: offset, length, latency, after and "
                              f"count cannot be negative")

    def matches(self, op, offset, length):
        if self.op != "any" and self.op != op:
            return False
        if op == "flush":
            return True
        end = offset + max(length, 1)
        return end > self.offset and (self.length is None or offset < self.offset + self.length)


def parse_errno(text, rule=""):
    text = str(text).strip()
    if text.upper() in ERRNO_NAMES:
        return ERRNO_NAMES[text.upper()]
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"fault rule {rule!r}: error {text!r} is neither an errno number nor "
                          f"one of {', '.join(ERRNO_NAMES)}") from None


def load_rules(path):
    """The rules of a rules file (sections ``[rule NAME]``, see the module docstring)."""
    parser = configparser.ConfigParser(inline_comment_prefixes=("#", ";"))
    try:
        with open(path) as f:
            parser.read_file(f)
    except (OSError, configparser.Error) as e:
        raise ConfigError(f"{path}: cannot read fault rules: {e}") from None
    rules = []
    for section in parser.sections():
        kind, _, name = section.partition(" ")
        if kind != RULE_SECTION:
            raise ConfigError(f"{path}: section [{section}]: expected [rule NAME]")
        s = parser[section]
        unknown = set(s) - {"op", "offset", "length", "error", "latency", "after", "count"}
        if unknown:
            raise ConfigError(f"{path}: [{section}]: unknown keys {', '.join(sorted(unknown))}")
        try:
            rules.append(FaultRule(
                op=s.get("op", "any"), offset=s.getint("offset", 0),
                length=s.getint("length") if "length" in s else None,
                error=parse_errno(s["error"], name) if "error" in s else None,
                latency=s.getfloat("latency", 0.0), after=s.getint("after", 0),
                count=s.getint("count") if "count" in s else None, name=name or section))
        except ValueError as e:
            raise ConfigError(f"{path}: [{section}]: {e}") from None
    return rules


class FaultyDriver(BlockDriver):
    """The filter: an open image wrapped with fault rules."""

    format_name = "faulty"
    description = "fault-injecting filter (QEMU's blkdebug)"

    def __init__(self, inner, rules=(), sleep=time.sleep):
        # Not BlockDriver.__init__: the identity attributes below read through to ``inner``.
        self.inner = inner
        self.file = inner.file
        self.path = inner.path
        self.writable = inner.writable
        self.rules = list(rules)
        self.events = []
        self.sleep = sleep
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, inner, rules_path, **kwargs):
        return cls(inner, load_rules(rules_path), **kwargs)

    size = property(lambda self: self.inner.size)
    uuid = property(lambda self: self.inner.uuid)
    modification_uuid = property(lambda self: self.inner.modification_uuid)
    parent_uuid = property(lambda self: self.inner.parent_uuid)
    parent_modification_uuid = property(lambda self: self.inner.parent_modification_uuid)
    parent_locator = property(lambda self: self.inner.parent_locator)
    variant = property(lambda self: self.inner.variant)
    cluster_size = property(lambda self: self.inner.cluster_size)
    host_files = property(lambda self: getattr(self.inner, "host_files", ()))

    @property
    def for_check(self):
        return self.inner.for_check

    @for_check.setter
    def for_check(self, value):
        self.inner.for_check = value

    @property
    def backing_read(self):
        return self.inner.backing_read

    @backing_read.setter
    def backing_read(self, reader):
        self.inner.backing_read = reader

    # -- the rules

    def add_rule(self, rule=None, **fields):
        """Add a rule (a FaultRule, or its fields); it applies from the next request."""
        rule = rule or FaultRule(**fields)
        with self._lock:
            self.rules.append(rule)
        return rule

    def _enter(self, op, offset, length):
        """Record the request, apply the matching rules; raises the injected error."""
        latency, error, which = 0.0, None, None
        with self._lock:
            for rule in self.rules:
                if not rule.matches(op, offset, length):
                    continue
                rule.seen += 1
                if rule.seen <= rule.after or (rule.count is not None and rule.fired >= rule.count):
                    continue
                rule.fired += 1
                latency += rule.latency
                if error is None and rule.error is not None:
                    error, which = rule.error, rule
            self.events.append((op, offset, length, "start"))
        if latency:
            self.sleep(latency)
        if error is not None:
            with self._lock:
                self.events.append((op, offset, length, "error"))
            err = ImageError(f"{self.path}: injected error {errno.errorcode.get(error, error)} "
                             f"on {op} of {length} bytes at offset {offset} "
                             f"(fault rule {which.name or self.rules.index(which)})")
            err.errno = error
            raise err

    def _leave(self, op, offset, length):
        with self._lock:
            self.events.append((op, offset, length, "end"))

    # -- reading

    def block_status(self, offset, length):
        self.check_range(offset, length)
        return [Extent(offset, length, State.DATA, offset)] if length else []

    def read_allocated_into(self, ext, view):
        self._enter("read", ext.offset, len(view))
        self._read_inner(ext.offset, view)
        self._leave("read", ext.offset, len(view))

    def readinto(self, offset, buf):
        view = memoryview(buf).cast("B")
        self.check_range(offset, len(view))
        self._enter("read", offset, len(view))
        self._read_inner(offset, view)
        self._leave("read", offset, len(view))

    def _read_inner(self, offset, view):
        """What the chain would read here: the image's data, zeros, or below."""
        inner = self.inner
        for ext in inner.block_status(offset, len(view)):
            part = view[ext.offset - offset:ext.offset - offset + ext.length]
            if ext.state is State.DATA:
                inner.read_allocated_into(ext, part)
            elif ext.state is State.UNALLOCATED and inner.backing_read is not None:
                inner.backing_read(ext.offset, part)
            else:
                part[:] = bytes(len(part))

    # -- writing

    def write(self, offset, data):
        n = len(memoryview(data).cast("B"))
        self._enter("write", offset, n)
        self.inner.write(offset, data)
        self._leave("write", offset, n)

    def write_zeroes(self, offset, length):
        self._enter("write-zeroes", offset, length)
        self.inner.write_zeroes(offset, length)
        self._leave("write-zeroes", offset, length)

    def discard(self, offset, length):
        self._enter("discard", offset, length)
        self.inner.discard(offset, length)
        self._leave("discard", offset, length)

    def flush(self):
        self._enter("flush", 0, 0)
        self.inner.flush()
        self._leave("flush", 0, 0)

    # -- the rest passes through

    def resize(self, new_size):
        self.inner.resize(new_size)

    def check(self, repair=False):
        return self.inner.check(repair)

    def set_parent(self, parent_uuid, parent_locator, parent_modification_uuid=None):
        self.inner.set_parent(parent_uuid, parent_locator, parent_modification_uuid)

    def info(self):
        return {**self.inner.info(), "fault_rules": len(self.rules)}

    def close(self):
        self.inner.close()

    def __repr__(self):
        return f"<FaultyDriver over {self.inner!r}, {len(self.rules)} rule(s)>"

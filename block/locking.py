"""Image locking: open file description (OFD) locks, in QEMU's byte layout.

An image a VM writes must not be written by anyone else, nor read by a tool
that trusts its metadata; VirtualBox's "shareable" images are the exception
(several VMs write them at once).  drivebay takes OFD byte-range locks
(``F_OFD_SETLK``, Linux 3.15+) the way QEMU's block/file-posix.c does, so a
drivebay VM and a QEMU process (qemu-img, qemu-system) see each other's
locks:

* byte ``PERM_BASE + i`` (shared lock): "I hold permission i";
* byte ``SHARED_BASE + i`` (shared lock): "I do not let anyone else hold i";

with i the bit index of QEMU's BLK_PERM_* (consistent read 0, write 1,
write unchanged 2, resize 3).  An opener first takes its locks, then tests
(``F_OFD_GETLK`` for a write lock) the complementary bytes: a permission it
wants that someone refuses to share, or a permission it refuses that someone
holds, is a conflict; taking before testing means two racing openers can
both fail but never both succeed.

    opener                 holds (1xx)           refuses to share (2xx)
    read-write             consistent read, write   write
    read-only              consistent read          write
    shareable, read-write  consistent read, write   -
    shareable, read-only   consistent read          -
    forced sharing (-U)    -                        -

So read-only opens share with each other, a read-write open excludes every
other opener (QEMU refuses a second read-write opener even inside one
process, and so do OFD locks: they belong to the open file description, not
the process), and shareable opens exclude only the non-shareable ones.
(QEMU's raw format lets a reader share writes; its image formats do not, and
neither does drivebay.)

Locks are taken when an ImageFile is opened (before any metadata is read)
while an ``image_locking()`` context is active: BlockBackend.open uses one, so
every image of a VM's chains is locked for as long as the VM has it open;
plain ``open_image``/``open_chain`` calls (tools, tests) take no locks.  The
locks go away with the file descriptor, also when the process dies.

A conflict raises ImageLockedError naming the process that holds the image
where it can be found: ``F_OFD_GETLK`` reports ``l_pid == -1`` for OFD locks,
and so does /proc/locks, so the holder is found by reading the ``lock:`` lines
of /proc/PID/fdinfo/FD of the processes this one may inspect.
"""

import contextlib
import contextvars
import fcntl
import os
import struct
from dataclasses import dataclass

from drivebay.errors import ImageError

# linux/fcntl.h; the same numbers on every Linux architecture.  Python's fcntl
# module exports them only from 3.12 on (and not on every build).
F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)

# struct flock on LP64 Linux: short l_type, short l_whence, (pad), off_t l_start,
# off_t l_len, pid_t l_pid, (pad): 32 bytes.
FLOCK = struct.Struct("hhxxxxqqixxxx")
assert FLOCK.size == 32

# QEMU block/file-posix.c: RAW_LOCK_PERM_BASE and RAW_LOCK_SHARED_BASE.
PERM_BASE = 100
SHARED_BASE = 200
# QEMU include/block/block-common.h: bit indexes of BLK_PERM_CONSISTENT_READ,
# BLK_PERM_WRITE, BLK_PERM_WRITE_UNCHANGED and BLK_PERM_RESIZE.
PERM_CONSISTENT_READ = 0
PERM_WRITE = 1
PERM_WRITE_UNCHANGED = 2
PERM_RESIZE = 3
PERM_NAMES = {PERM_CONSISTENT_READ: "consistent read", PERM_WRITE: "write",
              PERM_WRITE_UNCHANGED: "write unchanged", PERM_RESIZE: "resize"}

MAX_FDINFO_SCAN = 1 << 16   # fdinfo files read when naming a holder (a host with huge fd tables)


class ImageLockedError(ImageError):
    """Another opener holds the image in a way this open cannot share.

    ``holders`` lists ``(pid, command)`` of the processes found holding it
    (empty when none could be inspected); ``permission`` names what conflicts."""

    def __init__(self, message, path, holders, permission):
        super().__init__(message)
        self.path = path
        self.holders = holders
        self.permission = permission


@dataclass(frozen=True)
class LockPolicy:
    """How images opened inside an ``image_locking()`` context are locked.

    ``shareable``: VirtualBox's shareable medium type: read-write opens let
    other shareable openers write too.  ``force_share``: take and test no
    locks at all (qemu-img's ``-U``); only for read-only inspection."""
    shareable: bool = False
    force_share: bool = False


_policy = contextvars.ContextVar("drivebay_image_locking", default=None)


@contextlib.contextmanager
def image_locking(shareable=False, force_share=False):
    """Lock every ImageFile opened inside the ``with`` block (see the module docstring)."""
    token = _policy.set(LockPolicy(shareable, force_share))
    try:
        yield
    finally:
        _policy.reset(token)


def current_policy():
    return _policy.get()


def permissions(writable, shareable):
    """``(held, unshared)`` permission indexes for an opener."""
    held = {PERM_CONSISTENT_READ} | ({PERM_WRITE} if writable else set())
    unshared = set() if shareable else {PERM_WRITE}
    return held, unshared


def lock_image(fd, path, writable):
    """Called by ImageFile right after opening: lock ``fd`` as the active policy says."""
    policy = _policy.get()
    if policy is None or policy.force_share:
        return
    acquire(fd, path, writable, policy.shareable)


def acquire(fd, path, writable, shareable=False):
    """Take the locks of a (read-write or read-only, shareable or not) opener,
    then test for conflicting openers; on a conflict every lock taken here is
    dropped and ImageLockedError raised."""
    held, unshared = permissions(writable, shareable)
    try:
        for i in held:
            _setlk(fd, fcntl.F_RDLCK, PERM_BASE + i)
        for i in unshared:
            _setlk(fd, fcntl.F_RDLCK, SHARED_BASE + i)
        for i in sorted(held):
            if _conflicts(fd, SHARED_BASE + i):
                raise _locked(fd, path, SHARED_BASE + i, f'"{PERM_NAMES[i]}"',
                              f"does not share {PERM_NAMES[i]} access")
        for i in sorted(unshared):
            if _conflicts(fd, PERM_BASE + i):
                raise _locked(fd, path, PERM_BASE + i, f'shared "{PERM_NAMES[i]}"',
                              f"has it open for {PERM_NAMES[i]}")
    except OSError as e:
        release(fd)
        raise ImageError(f"{path}: locking the image: {e.strerror}") from None
    except ImageLockedError:
        release(fd)
        raise


def release(fd):
    """Drop every lock this file description holds (closing it does the same)."""
    try:
        _setlk(fd, fcntl.F_UNLCK, 0, 0)
    except OSError:
        pass


def _setlk(fd, kind, start, length=1):
    fcntl.fcntl(fd, F_OFD_SETLK, FLOCK.pack(kind, os.SEEK_SET, start, length, 0))


def _conflicts(fd, byte):
    """True when another open file description holds a lock on ``byte``."""
    raw = fcntl.fcntl(fd, F_OFD_GETLK, FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0))
    return FLOCK.unpack(raw)[0] != fcntl.F_UNLCK


def _locked(fd, path, byte, lock, conflict):
    holders = find_holders(fd, byte)
    me = os.getpid()
    if holders:
        who = " and ".join("another open of it in this process" if pid == me
                           else f"process {pid} ({command})" for pid, command in holders)
    else:
        who = "another process"
    return ImageLockedError(
        f"{path}: image is in use: {who} {conflict} (failed to get the {lock} lock); "
        f"close it there first, or open it read-only with forced sharing (no locks)",
        path, holders, lock)


def find_holders(fd, byte):
    """``[(pid, command)]`` of the processes holding an OFD lock on ``byte`` of
    the file behind ``fd``, found in /proc/*/fdinfo (OFD locks record no pid)."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino} "
    found, scanned = [], 0
    try:
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    except OSError:
        return []
    for pid in pids:
        folder = f"/proc/{pid}/fdinfo"
        try:
            fds = os.listdir(folder)
        except OSError:
            continue
        for name in fds:
            scanned += 1
            if scanned > MAX_FDINFO_SCAN:
                return found
            if pid == os.getpid() and name == str(fd):
                continue
            try:
                with open(f"{folder}/{name}") as f:
                    text = f.read()
            except OSError:
                continue
            if _fdinfo_locks(text, key, byte):
                found.append((pid, _command(pid)))
                break
    return found


def _fdinfo_locks(text, key, byte):
    """Whether an fdinfo text lists an OFD lock on ``key`` (dev:inode) covering ``byte``."""
    for line in text.splitlines():
        if not line.startswith("lock:") or "OFDLCK" not in line or key not in line:
            continue
        fields = line.split(key, 1)[1].split()
        if len(fields) < 2:
            continue
        start = int(fields[0])
        end = None if fields[1] == "EOF" else int(fields[1])
        if start <= byte and (end is None or byte <= end):
            return True
    return False


def _command(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"

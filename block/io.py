"""The I/O path below the devices: requests, I/O threads, host cache modes.

Requests.  A device describes an I/O as a ``Request``: an ``Op`` (read,
write, flush, discard, write-zeroes), a byte offset on the virtual disk, the
guest-memory buffers it reads into or writes from (a vector of memoryviews,
slices of guest RAM), and FUA.  ``BlockBackend.submit(request, callback)``
queues it and returns at once; the outcome comes back as a ``RequestDone``
event passed to ``callback`` on the thread that calls
``poll_completions()`` (the CPU loop), never on an I/O thread.  Devices
therefore stay sans-I/O state machines and never import threading: the
threads live here.

Executors.  ``IoThreads`` is a pool of I/O threads with one completion queue
(VirtualBox's asynchronous I/O manager, QEMU's thread pool): requests run on
the pool, completions wait in the queue until the CPU loop polls them; a
``notify`` callable (set by the CPU loop) is called from the I/O thread when
a completion arrives, to wake the loop.  Two things keep Python's thread
hand-overs (tens of microseconds each) off the common paths: an I/O thread
that finds several requests waiting serves them all and queues their
completions together, and a thread that calls ``wait()`` with nothing else
to do runs waiting requests itself.  BlockBackend adds a third: reads the
host page cache already holds are done on the submitting thread with
preadv2(RWF_NOWAIT), which never blocks; and a fourth for the host cache
off: reads are laid on the pool's host queue (``host_queue``, block/uring.py:
io_uring, or worker threads where the kernel has none) on the submitting
thread, many per system call, and one thread completes them in batches.  ``InlineIo`` runs each request at
submission on the caller's thread but still delivers the completion only on
``poll_completions()``: deterministic, thread-free, for device unit tests
(optionally in shuffled order, to exercise out-of-order completion).

Flush semantics (BlockBackend enforces them): a flush completes only after
every write submitted before it has completed and everything written is on
stable storage (write cache drained, then fdatasync); a FUA write completes
only after the same holds for itself.

Host I/O cache (VirtualBox: per controller, ``--hostiocache on|off``):

* on: ordinary buffered I/O through the host's page cache; a guest flush is
  an fdatasync (QEMU's cache=writeback).
* off: the image files are switched to O_DIRECT (no host read cache) and
  ``DirectIO`` takes over their I/O: transfers whose file offset, length and
  memory address are aligned go straight between guest memory and the disk;
  the others use page-aligned bounce buffers (mmap), with read-modify-write of
  the partial blocks at either end.  Writes go into a small bounded write
  cache of our own (VirtualBox has one too), drained by a guest flush or FUA,
  by a short timer, by another thread once it is a quarter full, or by the
  writer when it is full; reads see it.  The cache keeps writes in the order they
  were made and drains them in that order, one drainer at a time, so a
  process killed while draining leaves the file as a kill between two of the
  driver's writes would: the drivers' crash-safe write orders still hold.
  A host file system that refuses O_DIRECT is named in an ImageError when
  the image is opened; the caller may open it again with the cache on.

Not modelled: Linux native AIO (reads of host cache off use io_uring,
QEMU's ``aio=io_uring``; everything else runs on the thread pool, QEMU's
``aio=threads`` and VirtualBox's failsafe manager), QEMU's writethrough,
directsync and unsafe modes.
"""

import collections
import ctypes
import ctypes.util
import enum
import errno
import fcntl
import heapq
import itertools
import mmap
import os
import queue
import random
import struct
import threading
import time
from dataclasses import dataclass
from typing import NamedTuple

from drivebay.block.uring import MAX_IOV, open_host_queue
from drivebay.errors import ImageError

try:
    from drivebay.block._uring import address as _address
except ImportError:
    def _address(view):
        at = buffer_address(view)
        return 1 if at is None else at

# -- constants ---------------------------------------------------------------------------

DEFAULT_IO_THREADS = 4          # VirtualBox's async manager and QEMU's pool both use a handful
WRITE_CACHE_BYTES = 4 << 20     # VirtualBox's block cache defaults to 5 MB; a little under that
WRITE_CACHE_DELAY = 0.05        # seconds dirty data may wait before the timer drains it
WRITE_CACHE_MAX_ENTRY = 1 << 20  # a sequential run of writes merges into entries up to this size
DIO_FALLBACK_ALIGN = 4096       # any logical block size divides a page: safe when statx cannot say
BOUNCE_MIN = 64 << 10           # smallest bounce buffer (mmap granularity is a page anyway)
BOUNCE_KEEP = 8                 # bounce buffers kept per size class for reuse
ZERO_CHUNK = 1 << 20
IO_BATCH = 32                   # jobs an I/O thread serves before queueing their completions
INLINE_READ_MAX = 256 << 10     # largest read tried from the page cache on the submitting thread

STATX_DIOALIGN = 0x2000         # linux/stat.h: stx_dio_mem_align / stx_dio_offset_align valid
AT_EMPTY_PATH = 0x1000
STATX_SIZE = 256                # struct statx
STATX_DIO_OFFSET = 152          # offset of stx_dio_mem_align (u32), then stx_dio_offset_align

_ZEROS = memoryview(bytes(ZERO_CHUNK))
_STOP = object()                 # tells an I/O thread to end
_BACKGROUND = object()           # marks a job no request waits for

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _statx = _libc.statx
except (OSError, AttributeError):
    _statx = None


# -- requests and completions -----------------------------------------------------------

class Op(enum.Enum):
    READ = "read"
    WRITE = "write"
    FLUSH = "flush"
    DISCARD = "discard"
    WRITE_ZEROES = "write-zeroes"


MUTATING = frozenset({Op.WRITE, Op.DISCARD, Op.WRITE_ZEROES})   # a later flush covers these


@dataclass(eq=False, slots=True)
class Request:
    """One I/O.  ``views``: for READ and WRITE, the guest buffers in order
    (anything with the buffer protocol; READ needs writable ones); their
    total size is the length.  DISCARD and WRITE_ZEROES give ``length``.
    ``tag`` is the device's own (a command slot, a CID): it is not looked at."""
    op: Op
    offset: int = 0
    views: tuple = ()
    length: int = 0
    fua: bool = False
    tag: object = None

    def __post_init__(self):
        views = self.views
        if views:
            length = 0
            for v in views:
                if type(v) is not memoryview or v.format != "B" or v.ndim != 1:
                    views = tuple(_byte_view(v) for v in views)
                    break
            for v in views:
                length += len(v)
            self.views = views if type(views) is tuple else tuple(views)
            self.length = length


def _byte_view(buf):
    view = memoryview(buf)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class RequestDone(NamedTuple):
    """The completion event of a request: ``error`` None on success, else the
    DrivebayError (or, for a bug in drivebay, the exception) and its errno
    (EIO, ENOSPC, EROFS, EINVAL...) for the device to map to its status."""
    request: Request
    error: BaseException | None = None
    errno: int = 0

    @property
    def ok(self):
        return self.error is None


def errno_of(error):
    """The errno a device should report for ``error`` (EIO when it carries none)."""
    return getattr(error, "errno", None) or errno.EIO


# -- O_DIRECT: host cache off ----------------------------------------------------------------

def mount_fstype(path):
    """The type of the file system holding ``path`` (from /proc/self/mountinfo)."""
    try:
        st = os.stat(path)
        dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if left.split()[2] == dev:
                    return right.split()[0]
    except (OSError, IndexError):
        pass
    return "unknown"


def dio_alignment(fd):
    """``(memory, offset)`` alignment O_DIRECT needs on ``fd`` (statx
    STATX_DIOALIGN, Linux 6.1+; a page when the kernel cannot say); (0, 0)
    when the file system says it has no direct I/O."""
    if _statx is not None:
        buf = ctypes.create_string_buffer(STATX_SIZE)
        if _statx(fd, b"", AT_EMPTY_PATH, STATX_DIOALIGN, buf) == 0:
            mask = struct.unpack_from("<I", buf, 0)[0]
            if mask & STATX_DIOALIGN:
                return struct.unpack_from("<II", buf, STATX_DIO_OFFSET)
    return DIO_FALLBACK_ALIGN, DIO_FALLBACK_ALIGN


def buffer_address(view):
    """The address of a writable buffer's first byte; None for a read-only one."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (TypeError, ValueError):
        return None


class BouncePool:
    """Page-aligned (mmap) buffers for transfers O_DIRECT cannot do in place."""

    def __init__(self):
        self._free = collections.defaultdict(list)

    def get(self, size):
        cls = max(BOUNCE_MIN, 1 << (size - 1).bit_length())
        free = self._free[cls]
        try:
            return free.pop()
        except IndexError:
            return mmap.mmap(-1, cls)

    def put(self, buf):
        free = self._free[len(buf)]
        if len(free) < BOUNCE_KEEP:
            free.append(buf)
        else:
            buf.close()

    def close(self):
        for free in self._free.values():
            for buf in free:
                buf.close()
        self._free.clear()


class DirectIO:
    """O_DIRECT I/O for an ImageFile whose host cache is off (see the module docstring).

    The ImageFile delegates pread/preadinto/pwrite/size to this object and
    calls ``drain()`` before every other operation (truncate, allocate, punch
    hole, sync, close), so those see the cached writes on disk first.

    The write cache is a queue of writes in the order they were made
    (a write that continues the last one is merged into it).  Writes leave it
    only from its head, one drainer at a time (``_drain_lock``), so the file
    always holds a prefix of the writes.  Once the cache is a quarter full,
    ``on_high_water`` (set by BlockBackend) has another thread drain it while
    writes go on filling it; a write that finds it full drains batches
    itself, taking turns with that thread (never waiting on a drain that has
    not started: the I/O threads may all be waiting for this write).

    Thread safety: reads may run on several threads at once, and alongside
    a drainer (a read takes a snapshot of the cache, reads the file, then
    lays the snapshot over what it read); writes must not overlap each other
    or reads (BlockBackend's request lock serialises them)."""

    def __init__(self, file, cache_bytes=WRITE_CACHE_BYTES):
        self.file = file
        fd = file.fd
        mem, off = dio_alignment(fd)
        problem = None
        if not off:
            problem = "has no direct I/O (statx reports no O_DIRECT alignment)"
        else:
            try:
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_DIRECT)
            except OSError as e:
                problem = f"refuses O_DIRECT ({e.strerror})"
        if problem:
            raise ImageError(f"{file.path}: the host file system "
                             f"({mount_fstype(file.path)}) {problem}, which host I/O cache "
                             f"off needs: turn the host I/O cache on for this controller")
        self.mem_align = max(mem, 1)
        self.align = off
        self.cache_bytes = cache_bytes
        self.on_dirty = None          # called (on the writer's thread) when the cache stops being empty
        self.on_high_water = None     # called at a quarter full: drain_in_background() elsewhere
        self._mutex = threading.Lock()            # the two queues and the counters
        self._drain_lock = threading.Lock()       # one drainer at a time, head first
        self._entries = collections.deque()       # [offset, bytearray], in the order written
        self._writing = ()                        # entries a drainer has taken and is writing
        self._dirty = 0
        self._end = 0                 # past the last cached byte
        self._draining = False        # a drain_in_background() is asked for or running
        self._pool = BouncePool()

    # -- reading

    def size(self):
        st = self._fstat_size()
        return max(st, self._end) if self._dirty else st

    def _fstat_size(self):
        try:
            return os.fstat(self.file.fd).st_size
        except OSError as e:
            raise self._error(e, "reading the file size", 0) from None

    def _snapshot(self):
        if not self._dirty:
            return ()
        with self._mutex:
            return (*self._writing, *self._entries)

    def preadinto(self, offset, view, what="data"):
        """Fill ``view`` from ``offset`` (zeros past the end); returns the bytes
        that came from the file or the cache."""
        n = len(view)
        if not n:
            return 0
        cached = self._snapshot()
        a = self.align
        end = offset + n
        try:
            if not offset % a and not n % a and self._aligned(view):
                got = os.preadv(self.file.fd, [view], offset)
            else:
                a0, a1 = offset - offset % a, -(-end // a) * a
                buf = self._pool.get(a1 - a0)
                try:
                    raw = os.preadv(self.file.fd, [memoryview(buf)[:a1 - a0]], a0)
                    got = max(0, min(n, raw - (offset - a0)))
                    view[:got] = buf[offset - a0:offset - a0 + got]
                finally:
                    self._pool.put(buf)
        except OSError as e:
            raise self._error(e, f"reading {what}", offset) from None
        if got < n:
            view[got:] = _ZEROS[:n - got] if n - got <= ZERO_CHUNK else bytes(n - got)
        for at, data in cached:
            lo, hi = max(offset, at), min(end, at + len(data))
            if lo < hi:
                view[lo - offset:hi - offset] = data[lo - at:hi - at]
                got = max(got, hi - offset)
        return got

    def _aligned(self, view):
        address = buffer_address(view)
        return address is not None and not address % self.mem_align

    # -- writing

    def pwrite(self, offset, data, what="data"):
        view = memoryview(data).cast("B") if not isinstance(data, memoryview) or \
            data.format != "B" else data
        n = len(view)
        if not n:
            return
        if n > self.cache_bytes:
            self.drain()
            self._write_through(offset, view, what)
            return
        if self._dirty + n > self.cache_bytes:
            self._drain_until(self.cache_bytes - n)      # room for this write, oldest first
        with self._mutex:
            entries = self._entries
            was_clean = not self._dirty
            last = entries[-1] if entries else None
            if last is not None and last[0] + len(last[1]) == offset and \
                    len(last[1]) + n <= WRITE_CACHE_MAX_ENTRY:
                last[1] += view
            else:
                entries.append([offset, bytearray(view)])
            self._dirty += n
            self._end = max(self._end, offset + n)
            high = self._dirty > self.cache_bytes // 4 and not self._draining and \
                self.on_high_water is not None
            if high:
                self._draining = True
        if was_clean and self.on_dirty is not None:
            self.on_dirty()
        if high:
            self.on_high_water()

    @property
    def dirty(self):
        return self._dirty

    def drain(self):
        """Write every cached write to the file, oldest first.  On an error the
        writes not yet written stay cached (a later drain retries them)."""
        self._drain_until(0)

    def drain_in_background(self):
        """Drain until the cache is empty, on a thread of its own while writes
        go on filling it (for ``on_high_water``).  An error stops it; the
        data stays cached for the next ``drain()``, which raises it."""
        try:
            self._drain_until(0)
        except ImageError:
            pass
        finally:
            with self._mutex:
                self._draining = False

    def _drain_until(self, keep):
        """Write the oldest cached writes until at most ``keep`` bytes are left.
        One batch at a time under ``_drain_lock``: two drainers (the
        background one and a writer that needs room) take turns, in order,
        and neither waits for the other to finish more than a batch."""
        while True:
            with self._drain_lock:
                with self._mutex:
                    if self._dirty <= keep or not self._entries:
                        if not self._dirty:
                            self._end = 0
                        return
                    batch = []
                    size = 0
                    while self._entries and size < WRITE_CACHE_MAX_ENTRY:
                        entry = self._entries.popleft()
                        batch.append(entry)
                        size += len(entry[1])
                    self._writing = tuple(batch)
                done = 0
                try:
                    for at, data in batch:
                        self._write_through(at, memoryview(data), "cached data")
                        done += 1
                finally:
                    with self._mutex:
                        self._entries.extendleft(reversed(batch[done:]))
                        self._dirty -= sum(len(data) for _, data in batch[:done])
                        self._writing = ()

    def _write_through(self, offset, view, what):
        n, a = len(view), self.align
        end = offset + n
        fd = self.file.fd
        try:
            if not offset % a and not n % a and self._aligned(view):
                self._pwrite_all(view, offset)
                return
            a0, a1 = offset - offset % a, -(-end // a) * a
            buf = self._pool.get(a1 - a0)
            mv = memoryview(buf)
            try:
                file_size = None
                if offset > a0 or end < a1:
                    file_size = self._fstat_size()
                    # read-modify-write of the partial first and last blocks
                    for b in {a0, a1 - a} if a1 - a0 > a else {a0}:
                        if (b == a0 and offset > a0) or (b == a1 - a and end < a1):
                            got = os.preadv(fd, [mv[b - a0:b - a0 + a]], b)
                            if got < a:
                                mv[b - a0 + got:b - a0 + a] = _ZEROS[:a - got]
                mv[offset - a0:end - a0] = view
                self._pwrite_all(mv[:a1 - a0], a0)
                if file_size is not None and a1 > file_size and end < a1:
                    # the aligned write ran past the intended end of the file
                    os.ftruncate(fd, max(file_size, end))
            finally:
                mv.release()                 # the pool may close the buffer
                self._pool.put(buf)
        except OSError as e:
            raise self._error(e, f"writing {what}", offset) from None

    def _pwrite_all(self, view, offset):
        done = 0
        while done < len(view):
            done += os.pwrite(self.file.fd, view[done:], offset + done)

    def _error(self, e, doing, offset):
        err = ImageError(f"{self.file.path}: {doing} at offset {offset} (O_DIRECT): {e.strerror}")
        err.errno = e.errno
        return err

    def close(self):
        self._pool.close()


class DirectRead:
    """The host reads of one read request with the host cache off, laid on a
    host queue (block/uring.py) rather than run on an I/O thread.

    ``add(direct, offset, view)`` plans reading ``view`` from ``offset`` of
    ``direct``'s file as ``preadinto`` would: straight into ``view`` when
    O_DIRECT allows it (pieces that continue each other in one file share
    one operation), else through a bounce buffer; the write cache is laid
    over what was read.  ``lay(queue, deliver)`` submits them with tokens
    for ``deliver`` (the executor's completion path), and ``on_done(error)``
    is called once all have completed: error None, or the ImageError of the
    first that failed.  Short reads leave zeros, as at the end of a file."""

    __slots__ = ("on_done", "ops", "left", "error")

    def __init__(self, on_done):
        self.on_done = on_done
        self.ops = []          # [direct, buffers, file offset, length, bounce, pieces, cached]
        self.left = 0
        self.error = None

    def add(self, direct, offset, view):
        n, a = len(view), direct.align
        ops = self.ops
        if not offset % a and not n % a and not _address(view) % direct.mem_align:
            last = ops[-1] if ops else None
            if last is not None and last[0] is direct and last[4] is None and \
                    last[2] + last[3] == offset and len(last[1]) < MAX_IOV:
                last[1].append(view)
                last[3] += n
                last[5].append((offset, view))
                return
            ops.append([direct, [view], offset, n, None, [(offset, view)], direct._snapshot()])
            return
        a0, a1 = offset - offset % a, -(-(offset + n) // a) * a
        buf = direct._pool.get(a1 - a0)
        ops.append([direct, [memoryview(buf)[:a1 - a0]], a0, a1 - a0, buf, [(offset, view)],
                    direct._snapshot()])

    def lay(self, queue, deliver):
        """Lay every operation on ``queue`` with the token ``(op_done, op)``;
        ``deliver`` is the queue's ``on_complete``, called here for an
        operation that finds the queue full after all (it is read on this
        thread).  False (nothing laid) when the queue has no room for them all."""
        ops = self.ops
        if queue.space() < len(ops):
            self.release()
            return False
        self.left = len(ops)
        op_done = self.op_done
        for op in ops:
            fd = op[0].file.fd
            if not queue.read(fd, op[1], op[2], (op_done, op)):
                try:
                    res = os.preadv(fd, op[1], op[2])
                except OSError as e:
                    res = -(e.errno or errno.EIO)
                deliver([((op_done, op), res)])
        return True

    def op_done(self, op, res):
        """One operation completed with ``res`` (bytes read, or minus an errno)."""
        direct, _, at, _, bounce, pieces, cached = op
        if res < 0:
            if self.error is None:
                self.error = direct._error(OSError(-res, os.strerror(-res)), "reading data", at)
        else:
            for offset, view in pieces:
                n = len(view)
                got = max(0, min(n, res - (offset - at)))
                if bounce is not None:
                    view[:got] = bounce[offset - at:offset - at + got]
                if got < n:
                    view[got:] = _ZEROS[:n - got] if n - got <= ZERO_CHUNK else bytes(n - got)
                end = offset + n
                for c_at, data in cached:
                    lo, hi = max(offset, c_at), min(end, c_at + len(data))
                    if lo < hi:
                        view[lo - offset:hi - offset] = data[lo - c_at:hi - c_at]
        if bounce is not None:
            self._unbounce(op)
        self.left -= 1
        if not self.left:
            self.on_done(self.error)

    def release(self):
        """Give back the bounce buffers of operations that were never laid."""
        for op in self.ops:
            if op[4] is not None:
                self._unbounce(op)

    @staticmethod
    def _unbounce(op):
        op[1][0].release()        # the view of the bounce buffer, which goes back to the pool
        op[0]._pool.put(op[4])
        op[4] = None


# -- locks ------------------------------------------------------------------------------------

class RWLock:
    """Many readers or one writer; a waiting writer holds off new readers.

    The uncontended paths take only the plain mutex (a read is on the hot
    path of every request); the condition is used only to wait."""

    def __init__(self):
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire_read(self):
        self._mutex.acquire()
        while self._writer or self._writers_waiting:
            self._cond.wait()
        self._readers += 1
        self._mutex.release()

    def release_read(self):
        self._mutex.acquire()
        self._readers -= 1
        if not self._readers and self._writers_waiting:
            self._cond.notify_all()
        self._mutex.release()

    def try_acquire_read(self):
        """Take a read hold unless a writer holds or waits for the lock (never blocks long)."""
        self._mutex.acquire()
        ok = not (self._writer or self._writers_waiting)
        if ok:
            self._readers += 1
        self._mutex.release()
        return ok

    def acquire_write(self):
        self._mutex.acquire()
        self._writers_waiting += 1
        while self._writer or self._readers:
            self._cond.wait()
        self._writers_waiting -= 1
        self._writer = True
        self._mutex.release()

    def release_write(self):
        self._mutex.acquire()
        self._writer = False
        self._cond.notify_all()
        self._mutex.release()


# -- timers -------------------------------------------------------------------------------------

class TimerHandle:
    __slots__ = ("deadline", "fn", "cancelled")

    def __init__(self, deadline, fn):
        self.deadline, self.fn, self.cancelled = deadline, fn, False

    def cancel(self):
        self.cancelled = True


class Timer:
    """One thread calling functions at monotonic deadlines (write-cache drains,
    bandwidth-group refills).  Callbacks must be short: they run on this thread."""

    def __init__(self, name="drivebay-timer", clock=time.monotonic):
        self.clock = clock
        self._name = name
        self._heap = []
        self._seq = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._thread = None
        self._closed = False

    def call_at(self, deadline, fn):
        handle = TimerHandle(deadline, fn)
        with self._cond:
            if self._closed:
                return handle
            heapq.heappush(self._heap, (deadline, next(self._seq), handle))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif self._heap[0][2] is handle:
                self._cond.notify()
        return handle

    def call_later(self, delay, fn):
        return self.call_at(self.clock() + delay, fn)

    def _run(self):
        while True:
            with self._cond:
                while not self._closed:
                    if self._heap and self._heap[0][2].cancelled:
                        heapq.heappop(self._heap)
                        continue
                    now = self.clock()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                if self._closed:
                    return
                handle = heapq.heappop(self._heap)[2]
            handle.fn()

    def close(self):
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()


# -- executors ------------------------------------------------------------------------------------

class _Completions:
    """The completion queue both executors share: filled from any thread,
    emptied by ``poll_completions()`` on the CPU loop's thread."""

    def __init__(self, notify=None):
        self.notify = notify
        self._done = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._waiting = 0
        self._timer = None
        self._local = threading.local()
        self.help_when_waiting = False
        self._count_lock = threading.Lock()
        self._started = 0             # requests begun (``started()``) ...
        self._queued = 0              # ... and completions queued since
        self._host_queue = None       # the host queue once opened
        self._host_lock = threading.Lock()   # one host-queue batch completed at a time

    host_queue = None          # IoThreads: reads of host cache off go there (block/uring.py)

    def _take_job(self):
        return None

    @property
    def timer(self):
        if self._timer is None:
            self._timer = Timer()
        return self._timer

    def started(self):
        """A request was submitted: its completion is owed (see ``busy``)."""
        with self._count_lock:
            self._started += 1

    @property
    def busy(self):
        """Requests submitted whose completion is not queued yet: host work
        the CPU loop must wait for rather than let virtual time run past."""
        return self._started > self._queued

    def _count_queued(self, n):
        with self._count_lock:
            self._queued += n

    def complete(self, callback, done):
        batch = getattr(self._local, "batch", None)
        if batch is not None:
            batch.append((callback, done))
            return
        self._done.append((callback, done))
        self._count_queued(1)
        self._wake()

    def _publish(self, batch):
        """Queue the completions an I/O thread gathered while serving a batch."""
        self._done.extend(batch)
        self._count_queued(len(batch))
        self._wake()

    def host_done(self, results):
        """The host queue's ``on_complete``: ``results`` are ``((fn, arg),
        result)``; each ``fn(arg, result)`` runs here and the completions
        they queue are published together."""
        local = self._local
        with self._host_lock:
            outer = getattr(local, "batch", None)
            batch = local.batch = []
            try:
                for (fn, arg), res in results:
                    fn(arg, res)
            finally:
                local.batch = outer
                if batch:
                    self._publish(batch)

    def _wake(self):
        if self._waiting:
            with self._cond:
                self._cond.notify_all()
        host = self._host_queue
        if host is not None and host.waiters:
            host.kick()
        notify = self.notify
        if notify is not None:
            notify()

    @property
    def pending(self):
        """Completions waiting for ``poll_completions()``."""
        return len(self._done)

    def poll_completions(self, limit=None):
        """Deliver waiting completions to their callbacks on this thread; at
        most ``limit``, and never more than were waiting when called (a
        callback that submits again cannot keep this call going).  Returns
        how many were delivered."""
        done = self._done
        n = len(done) if limit is None else min(limit, len(done))
        host = self._host_queue
        if host is None:
            for _ in range(n):
                callback, event = done.popleft()
                callback(event)
            return n
        host.plug()              # what the callbacks submit goes to the kernel in one call
        try:
            for _ in range(n):
                callback, event = done.popleft()
                callback(event)
        finally:
            host.unplug()
        return n

    def wait(self, timeout=None):
        """Block until a completion is waiting (True) or ``timeout`` passes (False).

        A thread with nothing better to do than wait runs queued requests
        itself meanwhile (when ``help_when_waiting``): a request the pool
        has not started yet then completes without two thread switches.  The
        call may then return later than ``timeout``, by one request's time."""
        if self._done:
            return True
        if self.help_when_waiting:
            job = self._take_job()
            while job is not None:
                fn, args = job
                fn(*args)
                if self._done:
                    return True
                job = self._take_job()
        host = self._host_queue
        if host is not None and host.can_wait_here and host.in_flight:
            return self._wait_on_host(host, timeout)
        with self._cond:
            self._waiting += 1
            try:
                deadline = None if timeout is None else time.monotonic() + timeout
                while not self._done:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._waiting -= 1

    def _wait_on_host(self, host, timeout):
        """``wait()`` while host operations are in flight: on the ring itself
        (see RingQueue.wait_here); a completion queued by another thread
        kicks it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done = self._done
        while not done:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            if not host.in_flight:
                return self.wait(left)
            host.wait_here(left, done.__len__)
        return True

    def close(self):
        if self._timer is not None:
            self._timer.close()


class IoThreads(_Completions):
    """A pool of ``threads`` I/O threads serving every backend attached to it,
    with one completion queue.  ``notify()``, when given, is called from an I/O
    thread after each completion is queued (to wake a sleeping CPU loop); it
    must be thread-safe and quick.  ``help_when_waiting``: see ``wait()``."""

    def __init__(self, threads=DEFAULT_IO_THREADS, notify=None, name="drivebay-io",
                 help_when_waiting=True, uring=None):
        super().__init__(notify)
        if threads < 1:
            raise ValueError("an I/O thread pool needs at least one thread")
        self.threads = threads
        self.name = name
        self.uring = uring            # None: io_uring unless DRIVEBAY_IO_URING=0 (block/uring.py)
        self._host_open = threading.Lock()
        self._closed = False
        self.help_when_waiting = help_when_waiting
        self._jobs = queue.SimpleQueue()
        self._workers = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(threads)]
        for t in self._workers:
            t.start()

    @property
    def host_queue(self):
        """The host queue (opened at first use): a RingQueue, or a
        ThreadQueue of ``threads`` workers without io_uring."""
        host = self._host_queue
        if host is None:
            with self._host_open:
                if self._host_queue is None and not self._closed:
                    self._host_queue = open_host_queue(self.host_done, threads=self.threads,
                                                       uring=self.uring, name=self.name)
                host = self._host_queue
        return host

    def dispatch(self, fn, *args):
        self._jobs.put((fn, args))

    def dispatch_background(self, fn, *args):
        """A job no request waits for (a write-cache drain): for the I/O
        threads only, never run by a thread helping in ``wait()``."""
        self._jobs.put((fn, args, _BACKGROUND))

    def _take_job(self):
        try:
            job = self._jobs.get_nowait()
        except queue.Empty:
            return None
        if job is _STOP or len(job) == 3:
            self._jobs.put(job)
            return None
        return job

    def _work(self):
        """Serve jobs; completions of jobs found waiting together are queued
        together (one wake-up of the CPU loop, one hand-over of the GIL)."""
        jobs = self._jobs
        local = self._local
        job = None
        while True:
            if job is None:
                job = jobs.get()
            batch = local.batch = []
            for _ in range(IO_BATCH):
                if job is _STOP:
                    local.batch = None
                    if batch:
                        self._publish(batch)
                    return
                fn, args = job[0], job[1]
                fn(*args)
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    job = None
                    break
            local.batch = None
            if batch:
                self._publish(batch)

    def close(self):
        with self._host_open:
            self._closed = True
            host = self._host_queue
        if host is not None:
            host.close()         # its completions may still hand flushes to the workers
        for _ in self._workers:
            self._jobs.put(_STOP)
        for t in self._workers:
            t.join()
        super().close()


class InlineIo(_Completions):
    """Runs every request on the submitting thread at once; completions still
    wait for ``poll_completions()``.  With ``shuffle`` (a random.Random, or a
    seed) the waiting completions are delivered in random order, as a
    controller with several requests in flight may see them."""

    threads = 0

    def __init__(self, notify=None, shuffle=None):
        super().__init__(notify)
        self.shuffle = random.Random(shuffle) if isinstance(shuffle, int) else shuffle

    def dispatch(self, fn, *args):
        fn(*args)

    dispatch_background = dispatch

    def poll_completions(self, limit=None):
        if self.shuffle is not None and len(self._done) > 1:
            items = list(self._done)
            self.shuffle.shuffle(items)
            self._done.clear()
            self._done.extend(items)
        return super().poll_completions(limit)

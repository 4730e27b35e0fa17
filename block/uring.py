"""Host queues: reads, writes and fdatasyncs handed to the host kernel in batches.

A host queue takes operations on host file descriptors (``read`` into
buffers, ``write`` from buffers, ``fdatasync``), each with a token, and
reports them done, many at a time, by calling ``on_complete(results)`` on
a thread of its own, ``results`` being a list of ``(token, result)``:
the byte count moved (fewer than asked at the end of a file) or minus an
errno (-EIO, -ENOSPC...).  Nothing is submitted while the caller lays
operations: ``commit()`` hands over everything laid so far, unless the
thread has ``plug()``-ed the queue, in which case ``unplug()`` does (the
CPU loop plugs while it delivers completions, whose callbacks submit the
next requests: they then reach the kernel in one system call).  Operations
are independent: they run in any order and concurrently, and a caller that
needs an order waits for one completion before laying the next.

Two kinds, with the same behaviour:

* ``RingQueue``: Linux io_uring (block/_uring.pyx).  ``commit`` is one
  io_uring_enter for every operation laid; one thread sleeps in
  io_uring_enter (without the GIL) and reports every completion waiting
  when it wakes.  A thread with nothing to do until a completion (the CPU
  loop in ``IoThreads.wait``) may wait on the ring itself (``wait_here``):
  it then reports what completes, one wake-up instead of two, while the
  ring's thread steps aside; ``kick()`` ends such a wait early.
* ``ThreadQueue``: where the kernel has no io_uring or refuses it (ENOSYS;
  EPERM under a seccomp filter or ``kernel.io_uring_disabled``).  Worker
  threads each take their share of the queued operations per wake-up, run
  them with preadv/pwritev/fdatasync and report them together; a thread in
  ``wait_here`` runs one itself.

``open_host_queue`` picks the ring when the kernel gives one, unless
``uring=False`` or the environment says ``DRIVEBAY_IO_URING=0``.
"""

import errno
import itertools
import os
import threading

try:
    from drivebay.block import _uring
except ImportError:          # built without it: every queue is a ThreadQueue
    _uring = None

PLUG_MAX = 8                 # a plugged queue still hands over this many at a time
RING_ENTRIES = 256           # operations in flight at most (the kernel's CQ holds twice that)
MAX_IOV = _uring.MAX_IOV if _uring is not None else 64   # buffers per operation
URING_ENV = "DRIVEBAY_IO_URING"
_FALLBACK_ERRNOS = (errno.ENOSYS, errno.EPERM, errno.EACCES, errno.ENOMEM, errno.EINVAL)

READ, WRITE, SYNC = "read", "write", "fdatasync"


def uring_wanted(uring=None):
    """Whether to try io_uring: ``uring`` when given, else the environment."""
    if uring is not None:
        return bool(uring)
    return os.environ.get(URING_ENV, "1").strip().lower() not in ("0", "off", "no", "false")


def open_host_queue(on_complete, threads=4, uring=None, name="drivebay-hostq"):
    """A RingQueue when io_uring is wanted and the kernel gives one, else a
    ThreadQueue of ``threads`` workers."""
    if uring_wanted(uring) and _uring is not None:
        try:
            return RingQueue(on_complete, name=name)
        except OSError as e:
            if e.errno not in _FALLBACK_ERRNOS:
                raise
    return ThreadQueue(on_complete, threads=threads, name=name)


class HostQueue:
    """What both kinds share: plugging, per thread."""

    kind = None
    waiters = 0                # threads in ``wait_here``
    can_wait_here = False

    def __init__(self, on_complete):
        self.on_complete = on_complete
        self._local = threading.local()

    def plug(self):
        """Hold this thread's ``commit``s until the matching ``unplug``."""
        local = self._local
        local.plugs = getattr(local, "plugs", 0) + 1

    def unplug(self):
        local = self._local
        local.plugs -= 1
        if not local.plugs:
            self.submit()

    def commit(self):
        """Hand over what was laid, unless this thread plugged the queue
        (and fewer than ``PLUG_MAX`` operations wait)."""
        if not getattr(self._local, "plugs", 0) or self.laid >= PLUG_MAX:
            self.submit()

    def space(self):
        """How many more operations may be laid now."""
        raise NotImplementedError

    def submit(self):
        raise NotImplementedError


class RingQueue(HostQueue):
    """A host queue on an io_uring (see the module docstring)."""

    kind = "io_uring"
    can_wait_here = True

    def __init__(self, on_complete, entries=RING_ENTRIES, name="drivebay-hostq"):
        super().__init__(on_complete)
        self._ring = _uring.Ring(entries)
        self._waiters_lock = threading.Lock()
        self._aside = threading.Condition(self._waiters_lock)   # the reaper, while a thread waits here
        self._here = 0                # threads in wait_here, sleeping or reporting
        self._tokens = {}
        self._tags = itertools.count(1)
        self._closed = False
        self._thread = threading.Thread(target=self._reap, name=f"{name}-uring", daemon=True)
        self._thread.start()

    def space(self):
        return min(self._ring.space(), RING_ENTRIES - len(self._tokens))

    @property
    def laid(self):
        return self._ring.laid

    def read(self, fd, views, offset, token):
        """Lay a read of ``offset`` into ``views`` (writable buffers kept
        alive by the caller until the completion).  False when full."""
        return self._lay(self._ring.readv, fd, views, offset, token)

    def write(self, fd, views, offset, token):
        return self._lay(self._ring.writev, fd, views, offset, token)

    def fdatasync(self, fd, token):
        if not self.space():
            return False
        tag = next(self._tags)
        self._tokens[tag] = (token, ())
        self._ring.fdatasync(fd, tag)
        return True

    def _lay(self, how, fd, views, offset, token):
        if not self.space():
            return False
        tag = next(self._tags)
        self._tokens[tag] = (token, views)      # the buffers live until the completion
        try:
            how(fd, views, offset, tag)
        except BaseException:
            del self._tokens[tag]
            raise
        return True

    def submit(self):
        if self._ring.laid:
            self._ring.submit()

    @property
    def in_flight(self):
        """Operations laid and not completed."""
        return len(self._tokens)

    def wait_here(self, timeout, ready):
        """Wait on the ring on this thread, at most ``timeout`` seconds
        (None: no limit), unless ``ready()`` already says there is no need,
        and report what completed on this thread: for a thread that has
        nothing to do until a completion, one wake-up instead of the
        reaping thread's and then its own.  ``kick()`` ends the wait."""
        with self._waiters_lock:
            self.waiters += 1
            self._here += 1
        try:
            try:
                if not ready():
                    self._ring.wait(1, timeout)
            finally:
                with self._waiters_lock:
                    self.waiters -= 1
            self._report()
        finally:
            with self._waiters_lock:
                self._here -= 1
                if not self._here:
                    self._aside.notify()

    def kick(self):
        """End the waits of threads in ``wait_here`` (a no-op completes)."""
        if self._ring.space():
            self._ring.nop(0)
            self._ring.submit()

    def _report(self):
        tokens = self._tokens
        results = []
        for tag, res in self._ring.reap():
            laid = tokens.pop(tag, None)
            if laid is not None:
                results.append((laid[0], res))
        if results:
            self.on_complete(results)

    def _reap(self):
        ring, tokens = self._ring, self._tokens
        while True:
            ring.wait(1)
            if self._here:
                # A thread waits on the ring: it reports what completes (and
                # the no-op a kick adds must stay for it).  Step aside.
                with self._waiters_lock:
                    while self._here and not self._closed:
                        self._aside.wait()
                continue
            self._report()
            if self._closed and not tokens:
                return

    def close(self):
        """Wait for every operation laid and submitted, then close the ring."""
        if self._closed:
            return
        self.submit()
        self._closed = True
        with self._waiters_lock:
            self._aside.notify()
        self._ring.nop(0)              # wakes the reaper; it carries no token
        self._ring.submit()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self._ring.close()


class ThreadQueue(HostQueue):
    """The host queue without io_uring: ``threads`` workers (see the module
    docstring).  A worker woken takes its share of what is queued (all of
    it when it is the only one idle), runs it and reports it in one call."""

    kind = "threads"
    can_wait_here = True

    def __init__(self, on_complete, threads=4, name="drivebay-hostq"):
        super().__init__(on_complete)
        if threads < 1:
            raise ValueError("a host queue needs at least one thread")
        self._laid = []
        self._queued = []
        self._cond = threading.Condition(threading.Lock())       # the workers wait on it
        self._kicked = threading.Condition(self._cond._lock)      # a thread in wait_here
        self._idle = 0
        self._closed = False
        self._busy = 0
        self._workers = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(threads)]
        for t in self._workers:
            t.start()

    def space(self):
        return RING_ENTRIES - len(self._laid) - len(self._queued) - self._busy

    @property
    def laid(self):
        return len(self._laid)

    @property
    def in_flight(self):
        return len(self._laid) + len(self._queued) + self._busy

    def wait_here(self, timeout, ready):
        """Run one queued operation on this thread (no hand-over to a
        worker), or sleep until ``kick()`` or ``timeout`` when none waits."""
        cond = self._cond
        with cond:
            if self._queued:
                op = self._queued.pop(0)
                self._busy += 1
            else:
                op = None
                self.waiters += 1
                try:
                    if not ready():
                        self._kicked.wait(timeout)
                finally:
                    self.waiters -= 1
        if op is not None:
            try:
                results = [(op[4], run_op(op))]
            finally:
                with cond:
                    self._busy -= 1
            self.on_complete(results)

    def kick(self):
        with self._cond:
            self._kicked.notify_all()

    def read(self, fd, views, offset, token):
        return self._lay((READ, fd, views, offset, token))

    def write(self, fd, views, offset, token):
        return self._lay((WRITE, fd, views, offset, token))

    def fdatasync(self, fd, token):
        return self._lay((SYNC, fd, (), 0, token))

    def _lay(self, op):
        if len(op[2]) > MAX_IOV:
            raise ValueError(f"host queue: {len(op[2])} buffers for one operation "
                             f"(at most {MAX_IOV})")
        if self.space() <= 0:
            return False
        self._laid.append(op)
        return True

    def submit(self):
        if not self._laid:
            return
        with self._cond:
            laid, self._laid = self._laid, []
            self._queued.extend(laid)
            if self._idle:
                self._cond.notify(min(self._idle, len(laid)))

    def _work(self):
        cond = self._cond
        while True:
            with cond:
                while not self._queued:
                    if self._closed:
                        return
                    self._idle += 1
                    cond.wait()
                    self._idle -= 1
                queued = self._queued
                share = max(1, -(-len(queued) // (self._idle + 1)))
                batch, self._queued = queued[:share], queued[share:]
                self._busy += len(batch)
            results = [(op[4], run_op(op)) for op in batch]
            with cond:
                self._busy -= len(batch)
            self.on_complete(results)

    def close(self):
        self.submit()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._workers:
            if t is not threading.current_thread():
                t.join()


def run_op(op):
    """Run one operation of a ThreadQueue: the byte count, or minus an errno."""
    kind, fd, views, offset, _ = op
    try:
        if kind is READ:
            return os.preadv(fd, views, offset)
        if kind is WRITE:
            return os.pwritev(fd, views, offset)
        os.fdatasync(fd)
        return 0
    except OSError as e:
        return -(e.errno or errno.EIO)

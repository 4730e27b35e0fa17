"""BlockBackend: the medium as a device model sees it.

Controllers never see image formats or chains.  They see a byte-addressed
disk of ``size`` bytes with a logical sector size, that reads into and
writes from guest-memory views, flushes, and (when the attachment allows)
discards.  Two ways in, on the same methods underneath:

* synchronous (IDE, as VirtualBox's IDE does): ``readinto``, ``write``,
  ``write_zeroes``, ``discard``, ``flush`` return when done and raise
  ImageError/UnsupportedOperation on failure;
* asynchronous (SATA, SCSI, SAS, NVMe, virtio): ``submit(Request, callback)``
  returns at once; ``callback(RequestDone)`` runs later on the thread that
  calls ``poll_completions()`` (block/io.py).  A device never imports
  threading: the I/O threads belong to the ``io`` executor the machine gives
  every backend (an ``IoThreads`` pool, or ``InlineIo`` for tests).

Host I/O failures surface as ImageError (with ``errno`` where the host gave
one; a RequestDone carries it): a device turns them into the medium error
its command set defines (ATA UNC, SCSI MEDIUM ERROR), never into an
exception out of the CPU loop.

Requests run concurrently.  Reads share the chain: the map look-up
(``block_status`` of each image) is serialised, the reads themselves run in
parallel.  Writes, zero writes, discards and flushes have the chain to
themselves: the format drivers are not written for concurrent metadata
updates.  A flush (or a FUA write) completes only after every write
submitted before it has completed and is on stable storage; as in
VirtualBox, bandwidth groups limit only asynchronous requests.

``BlockBackend.open`` locks every image of the chain it opens
(block/locking.py): read-write opens exclusively, read-only ones shared,
``shareable=True`` (VirtualBox's shareable medium type) lets other shareable
openers write too.  ``host_cache=False`` switches the chain's files to
O_DIRECT with a small write cache (block/io.py).
"""

import errno
import os
import threading
from contextlib import nullcontext

from drivebay.block.chain import Chain, open_chain
from drivebay.block.driver import BlockDriver, State
from drivebay.block.io import (INLINE_READ_MAX, MUTATING, WRITE_CACHE_BYTES, WRITE_CACHE_DELAY,
                               ZERO_CHUNK, DirectRead, InlineIo, Op, RequestDone, RWLock,
                               errno_of)
from drivebay.block.locking import image_locking
from drivebay.block.raw import RawDriver
from drivebay.errors import ConfigError, DrivebayError, ImageError, UnsupportedOperation

DISK_SECTOR = 512
OPTICAL_SECTOR = 2048

_ZEROS = memoryview(bytes(ZERO_CHUNK))


def _refusal(exc_type, message, code):
    err = exc_type(message)
    err.errno = code
    return err


def _zero_fill(view):
    n, at = len(view), 0
    while at < n:
        k = min(ZERO_CHUNK, n - at)
        view[at:at + k] = _ZEROS[:k]
        at += k


class AsyncMedium:
    """What both backends share for asynchronous requests: submission,
    flush ordering, bandwidth limits, draining.  A subclass provides
    ``_run(request)`` (raises on failure), ``size``, ``read_only`` and ``name``."""

    def _init_async(self, io, bandwidth_group):
        if bandwidth_group is not None and bandwidth_group.kind != "disk":
            raise ConfigError(f"{self.name}: bandwidth group {bandwidth_group.name!r} is of "
                              f"type {bandwidth_group.kind}; a disk needs a disk group")
        self.io = io if io is not None else InlineIo()
        self._state = threading.Lock()
        self._idle = threading.Condition(self._state)
        self._seq = 0
        self._inflight = {}          # write-like request -> its submission number
        self._parked = []            # (number, request, callback): flushes waiting for writes
        self._outstanding = 0
        self._nowait_reads = False   # see BlockBackend._read_nowait
        self._host_reads = False     # see BlockBackend._read_host
        self.bandwidth = bandwidth_group.attach(self.name) if bandwidth_group is not None else None

    def submit(self, request, callback):
        """Queue ``request`` (a block.io.Request) and return it.  ``callback``
        gets a RequestDone when ``poll_completions()`` delivers it.  A bad
        request (outside the disk, a write to a read-only medium) is not an
        exception: its completion carries the error."""
        self.io.started()
        problem = self._refuse(request)
        if problem is not None:
            self.io.complete(callback, RequestDone(request, problem, errno_of(problem)))
            return request
        op = request.op
        member = self.bandwidth
        if op is Op.READ and self._nowait_reads and request.length <= INLINE_READ_MAX and \
                (member is None or member.group.unlimited) and self._read_nowait(request):
            self.io.complete(callback, RequestDone(request))
            return request
        with self._state:
            self._outstanding += 1
            if op in MUTATING:
                self._seq += 1
                self._inflight[request] = self._seq
            elif op is Op.FLUSH and self._inflight:
                self._parked.append((self._seq, request, callback))
                return request
        if op is Op.READ and self._host_reads and (member is None or member.group.unlimited) \
                and self._read_host(request, callback):
            return request
        if member is not None and op is not Op.FLUSH:
            size = request.length if op is Op.READ or op is Op.WRITE else 0
            member.submit(size, op is not Op.READ, self.io.dispatch,
                          (self._serve, request, callback))
        else:
            self.io.dispatch(self._serve, request, callback)
        return request

    def poll_completions(self, limit=None):
        """Deliver waiting completions (of every backend sharing this executor)."""
        return self.io.poll_completions(limit)

    def drain(self):
        """Wait until every submitted request has run (completions may still
        wait for ``poll_completions()``)."""
        with self._idle:
            while self._outstanding:
                self._idle.wait()

    def _refuse(self, request):
        op = request.op
        if op.__class__ is not Op:
            return _refusal(UnsupportedOperation, f"{self.name}: unknown request {op!r}",
                            errno.EINVAL)
        if op is not Op.FLUSH:
            offset, length = request.offset, request.length
            if offset < 0 or length < 0 or offset + length > self.size:
                return _refusal(ImageError, f"{self.name}: {op.value} of {length} bytes at "
                                f"offset {offset} lies outside the {self.size}-byte disk",
                                errno.EINVAL)
        if op in MUTATING and self.read_only:
            return _refusal(UnsupportedOperation, f"{self.name}: medium is read-only", errno.EROFS)
        if op is Op.READ:
            for v in request.views:
                if v.readonly:
                    return _refusal(UnsupportedOperation,
                                    f"{self.name}: read into a read-only buffer", errno.EINVAL)
        return None

    def _serve(self, request, callback):
        """Run one request (on an I/O thread) and queue its completion."""
        self._finish(request, callback, self._attempt(self._run, request))

    @staticmethod
    def _attempt(run, request):
        try:
            run(request)
            return RequestDone(request)
        except DrivebayError as e:
            return RequestDone(request, e, errno_of(e))
        except Exception as e:      # a drivebay bug: the guest still gets an error status
            return RequestDone(request, e, errno.EIO)

    def _finish(self, request, callback, done):
        ready = self._retire(request)
        self.io.complete(callback, done)
        for r, cb in ready:
            self.io.dispatch(self._serve, r, cb)

    def _retire(self, request):
        """Bookkeeping after a request ran; returns the flushes that may run now."""
        ready = []
        with self._state:
            self._outstanding -= 1
            if self._inflight.pop(request, None) is not None and self._parked:
                low = min(self._inflight.values(), default=None)
                keep = []
                for parked in self._parked:
                    if low is None or parked[0] < low:
                        ready.append(parked[1:])
                    else:
                        keep.append(parked)
                self._parked = keep
            if not self._outstanding:
                self._idle.notify_all()
        return ready

    def _leave_group(self):
        if self.bandwidth is not None:
            self.bandwidth.group.detach(self.bandwidth)
            self.bandwidth = None


class BlockBackend(AsyncMedium):
    def __init__(self, chain, read_only=False, sector_size=DISK_SECTOR, discard=False,
                 non_rotational=False, name=None, io=None, host_cache=True,
                 bandwidth_group=None, write_cache_bytes=WRITE_CACHE_BYTES, nowait_reads=True,
                 host_queue=True):
        self.chain = chain if isinstance(chain, Chain) else Chain([chain])
        self._read_only_asked = read_only
        self._write_cache_bytes = write_cache_bytes
        self._nowait_asked = nowait_reads
        self._host_queue_asked = host_queue
        self.read_only = read_only or not self.chain.top.writable
        self.sector_size = sector_size
        self.discard_enabled = discard
        self.non_rotational = non_rotational
        self.name = name or self.chain.path
        self.host_cache = host_cache
        self._lock = RWLock()                # reads share it, everything else owns it
        self._map_lock = threading.Lock()    # block_status calls (drivers cache metadata)
        self._drain_timer = None
        self._direct_files = []
        self._exclusive_jobs = []            # writes, flushes... waiting for the one I/O thread
        self._exclusive_busy = False         # that is running them (see _serve)
        self._init_async(io, bandwidth_group)
        try:
            self._chain_opened()
        except BaseException:
            self._leave_group()
            raise

    def _chain_opened(self):
        """Set up what depends on the images: the write cache of host cache
        off, and whether reads may be served on the submitting thread."""
        if not self.host_cache:
            self._host_cache_off(self._write_cache_bytes)
        # Reads the host page cache holds are served on the submitting thread
        # (preadv2 RWF_NOWAIT never blocks): no thread hand-over for them.
        # Only where every image reads its data straight from its file.
        plain = all(type(image).read_allocated_into is BlockDriver.read_allocated_into
                    for image in self.chain.images)
        self._nowait_reads = self._nowait_asked and self.host_cache and \
            hasattr(os, "RWF_NOWAIT") and plain
        # With the cache off, asynchronous reads go to the executor's host
        # queue (io_uring), laid on the submitting thread: see _read_host.
        self._host_reads = self._host_queue_asked and not self.host_cache and plain and \
            self.io.host_queue is not None

    @classmethod
    def open(cls, path, read_only=False, format=None, resolver=None, shareable=False,
             lock=True, **options):
        """Open the image at ``path`` with its parents, locking each
        (``lock=False``: no locks, for tools that know better)."""
        with image_locking(shareable=shareable) if lock else nullcontext():
            chain = open_chain(path, writable=not read_only, format=format, resolver=resolver)
        try:
            return cls(chain, read_only=read_only, **options)
        except BaseException:
            chain.close()
            raise

    def _host_cache_off(self, write_cache_bytes):
        seen = set()
        for image in self.chain.images:
            for f in [image.file, *getattr(image, "host_files", ())]:
                if id(f) in seen:
                    continue
                seen.add(id(f))
                f.set_host_cache(False, cache_bytes=write_cache_bytes if f.writable else 0)
                if f.direct is None:         # not a host file (an iSCSI connection)
                    continue
                f.direct.on_dirty = self._dirtied
                f.direct.on_high_water = lambda d=f.direct: self.io.dispatch_background(d.drain_in_background)
                self._direct_files.append(f)

    @property
    def size(self):
        chain = self.chain
        return chain.size if chain is not None else self._detached_size

    def _images(self):
        """The chain, or the error a request gets while there is none
        (detached for a live change that could not open the new images)."""
        chain = self.chain
        if chain is None:
            raise _refusal(ImageError, f"{self.name}: the medium's images are closed (a live "
                                       f"change of them failed)", errno.EIO)
        return chain

    @property
    def sectors(self):
        return self.chain.size // self.sector_size

    @property
    def uuid(self):
        """The active image's UUID (None for formats without one, e.g. raw)."""
        return self.chain.top.uuid

    # -- synchronous requests (IDE) ------------------------------------------------------

    def readinto(self, offset, view):
        view = memoryview(view).cast("B")
        self._images().top.check_range(offset, len(view))
        self._read(offset, view)

    def write(self, offset, data):
        if self.read_only:
            raise UnsupportedOperation(f"{self.name}: medium is read-only")
        self._exclusive(self._images().write, offset, data)

    def write_zeroes(self, offset, length):
        if self.read_only:
            raise UnsupportedOperation(f"{self.name}: medium is read-only")
        self._exclusive(self._images().write_zeroes, offset, length)

    def discard(self, offset, length):
        if self.read_only:
            raise UnsupportedOperation(f"{self.name}: medium is read-only")
        if self.discard_enabled:
            self._exclusive(self._images().discard, offset, length)

    def flush(self):
        if not self.read_only:
            self._exclusive(self._images().flush)

    def close(self):
        """Wait for every request, drain the write cache, release the images.
        Requests still waiting for the bandwidth group start at once."""
        self._leave_group()
        self.drain()
        timer, self._drain_timer = self._drain_timer, None
        if timer is not None:
            timer.cancel()
        if self.chain is not None:
            self.chain.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- switching images under a running device (live snapshots) -------------------------

    def detach_chain(self):
        """Wait for every request, write out the write cache, flush, and close
        the images (releasing their locks).  The backend, which devices and a
        bandwidth group hold, stays; it has no images until ``attach_chain``.
        A live snapshot does this with the CPU paused, so that no request
        arrives meanwhile (QEMU drains the same way before it puts an overlay
        on a running disk).  Returns the detached images' top path."""
        self.drain()
        timer, self._drain_timer = self._drain_timer, None
        if timer is not None:
            timer.cancel()
        try:
            self._drain_cache(errors=True)
            if not self.read_only:
                self.chain.flush()
        finally:
            chain, self.chain = self.chain, None
            self._detached_size = chain.size
            self._direct_files = []
            self._nowait_reads = False
            self._host_reads = False
            chain.close()
        return chain.path

    def attach_chain(self, chain):
        """Serve requests from ``chain`` (a Chain or one image) from now on."""
        if self.chain is not None:
            raise ConfigError(f"{self.name}: attach_chain on a backend that has images")
        chain = chain if isinstance(chain, Chain) else Chain([chain])
        self.chain = chain
        self.read_only = self._read_only_asked or not chain.top.writable
        try:
            self._chain_opened()
        except BaseException:
            self.chain = None
            self._direct_files = []
            chain.close()
            raise

    # -- the work ------------------------------------------------------------------------

    def _refuse(self, request):
        if self.chain is None:
            try:
                self._images()
            except ImageError as e:
                return e
        return AsyncMedium._refuse(self, request)

    def _serve(self, request, callback):
        """Reads run on any I/O thread.  Everything else needs the chain to
        itself: rather than have several threads queue on the lock, the first
        takes it and runs every such request that arrives meanwhile, in the
        order they came; the others go back to serving other work."""
        if request.op is Op.READ:
            AsyncMedium._serve(self, request, callback)
            return
        with self._state:
            self._exclusive_jobs.append((request, callback))
            if self._exclusive_busy:
                return
            self._exclusive_busy = True
        lock = self._lock
        while True:
            with self._state:
                jobs = self._exclusive_jobs
                if not jobs:
                    self._exclusive_busy = False
                    return
                self._exclusive_jobs = []
            lock.acquire_write()
            try:
                for r, cb in jobs:
                    self._finish(r, cb, self._attempt(self._run_exclusive, r))
            finally:
                lock.release_write()

    def _run(self, r):
        at = r.offset
        for view in r.views:
            self._read(at, view)
            at += len(view)

    def _run_exclusive(self, r):
        """A request other than a read, the request lock held."""
        op = r.op
        chain = self.chain
        if op is Op.WRITE:
            if r.length:
                views = r.views
                chain.write(r.offset, views[0] if len(views) == 1 else b"".join(views))
        elif op is Op.WRITE_ZEROES:
            chain.write_zeroes(r.offset, r.length)
        elif op is Op.DISCARD:
            if self.discard_enabled:
                chain.discard(r.offset, r.length)
        if (op is Op.FLUSH or r.fua) and not self.read_only:
            chain.flush()

    def _exclusive(self, fn, *args):
        """A synchronous call that needs the chain to itself."""
        lock = self._lock
        lock.acquire_write()
        try:
            fn(*args)
        finally:
            lock.release_write()

    def _read(self, offset, view):
        """Map the range under the map lock, then read the pieces outside it."""
        lock = self._lock
        lock.acquire_read()
        try:
            images = self.chain.images
            if len(images) == 1 and not self._direct_files:
                image = images[0]
                n = len(view)
                with self._map_lock:
                    extents = image.block_status(offset, n)
                for ext in extents:
                    if ext.offset == offset and ext.length == n:
                        part = view
                    else:
                        part = view[ext.offset - offset:ext.offset - offset + ext.length]
                    if ext.state is State.DATA:
                        image.read_allocated_into(ext, part)
                    else:
                        _zero_fill(part)
                return
            plan = []
            with self._map_lock:
                self._map(0, offset, view, plan)
            if self._direct_files and any(image is None for image, _, _ in plan) and \
                    any(f.direct.dirty for f in self._direct_files):
                # A driver may map holes of the host file (raw: SEEK_HOLE), which
                # know nothing of our write cache: write it out, then map again.
                lock.release_read()
                try:
                    self._drain_cache(errors=True)
                finally:
                    lock.acquire_read()
                plan = []
                with self._map_lock:
                    self._map(0, offset, view, plan)
            for image, ext, part in plan:
                if image is None:
                    _zero_fill(part)
                else:
                    image.read_allocated_into(ext, part)
        finally:
            lock.release_read()

    def _read_nowait(self, request):
        """Try a read without blocking: True when it is done.  False (nothing
        is reported; the pool then does the read) when the request lock or
        the map lock is taken, or a piece is not in the page cache."""
        lock = self._lock
        if not lock.try_acquire_read():
            return False
        try:
            if not self._map_lock.acquire(False):
                return False
            try:
                plan, at = [], request.offset
                for view in request.views:
                    self._map(0, at, view, plan)
                    at += len(view)
            except DrivebayError:
                return False
            finally:
                self._map_lock.release()
            for image, ext, part in plan:
                if image is None:
                    _zero_fill(part)
                    continue
                try:
                    if os.preadv(image.file.fd, [part], ext.host_offset, os.RWF_NOWAIT) != len(part):
                        return False
                except OSError as e:
                    if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                        self._nowait_reads = False
                    return False
            return True
        finally:
            lock.release_read()

    def _read_host(self, request, callback):
        """Lay a read of host cache off on the executor's host queue (no
        thread hand-over to start it): True when laid.  The request lock is
        held for reading until the last of its host reads completes (on the
        host queue's thread).  False, with nothing done, sends the read to
        the I/O threads: when the lock is wanted by a writer, the map fails
        (the pool reports it), a hole of the host file would need the write
        cache written out first, or the queue is full."""
        lock = self._lock
        if not lock.try_acquire_read():
            return False
        read = DirectRead(lambda error: self._host_read_done(request, callback, error))
        try:
            if self._plan_host_read(request, read):
                if not read.ops:                   # holes only
                    self._host_read_done(request, callback, None)
                    return True
                queue = self.io.host_queue
                if read.lay(queue, self.io.host_done):
                    queue.commit()
                    return True
        except DrivebayError:
            pass
        read.release()
        lock.release_read()
        return False

    def _plan_host_read(self, request, read):
        """Map ``request`` into ``read``'s host operations and fill its holes
        with zeros; False when the read cannot go to the host queue."""
        images = self.chain.images
        if len(images) == 1 and type(images[0]) is RawDriver:
            # The disk is the file byte for byte, and a hole of the file reads
            # as zeros by itself: no map (SEEK_DATA/SEEK_HOLE cost more than
            # the read on some file systems), and the write cache is laid over.
            direct, at = images[0].file.direct, request.offset
            if direct is None:
                return False
            for view in request.views:
                read.add(direct, at, view)
                at += len(view)
            return True
        plan, at = [], request.offset
        with self._map_lock:
            for view in request.views:
                self._map(0, at, view, plan)
                at += len(view)
        holes = []
        for image, ext, part in plan:
            if image is None:
                holes.append(part)
            elif image.file.direct is None:
                return False
            else:
                read.add(image.file.direct, ext.host_offset, part)
        if holes and any(f.direct.dirty for f in self._direct_files):
            return False
        for part in holes:
            _zero_fill(part)
        return True

    def _host_read_done(self, request, callback, error):
        self._lock.release_read()
        self._finish(request, callback, RequestDone(request) if error is None else
                     RequestDone(request, error, errno_of(error)))

    def _map(self, level, offset, view, plan):
        """What ``Chain.readinto`` does, as a list of ``(image, extent, view)``
        (image None: zeros) so the reads can run without the map lock."""
        images = self.chain.images
        image = images[level]
        length = len(view)
        inside = max(0, min(length, image.size - offset))   # a parent may be smaller
        if inside < length:
            plan.append((None, None, view[inside:]))
        if inside == 0:
            return
        for ext in image.block_status(offset, inside):
            part = view[ext.offset - offset:ext.offset - offset + ext.length]
            if ext.state is State.DATA:
                plan.append((image, ext, part))
            elif ext.state is State.UNALLOCATED and level + 1 < len(images):
                self._map(level + 1, ext.offset, part, plan)
            else:
                plan.append((None, None, part))

    # -- the write cache of host cache off ------------------------------------------------

    def _dirtied(self):
        """The write cache just got its first dirty bytes: drain them soon."""
        if self._drain_timer is None:
            self._drain_timer = self.io.timer.call_later(WRITE_CACHE_DELAY, self._drain_due)

    def _drain_due(self):
        self._drain_timer = None
        self.io.dispatch_background(self._drain_cache)

    def _drain_cache(self, errors=False):
        """Write the write cache out (``errors``: raise a failure, else keep the
        data cached for the next flush to retry and report)."""
        lock = self._lock
        lock.acquire_write()
        try:
            for f in self._direct_files:
                if f.direct is not None and f.direct.dirty:
                    try:
                        f.direct.drain()
                    except DrivebayError:
                        if errors:
                            raise
        finally:
            lock.release_write()


class MemoryBackend(AsyncMedium):
    """A BlockBackend over a bytearray: for device unit tests and scratch disks.

    ``io`` defaults to ``InlineIo()``: submitted requests run at once and
    their completions wait for ``poll_completions()``."""

    def __init__(self, data, read_only=False, sector_size=DISK_SECTOR, discard=False,
                 non_rotational=False, uuid=None, name="memory", io=None, bandwidth_group=None):
        self.data = data
        self.read_only = read_only
        self.sector_size = sector_size
        self.discard_enabled = discard
        self.non_rotational = non_rotational
        self.uuid = uuid
        self.name = name
        self.flushes = 0
        self._init_async(io, bandwidth_group)

    size = property(lambda self: len(self.data))
    sectors = property(lambda self: len(self.data) // self.sector_size)

    def _range(self, offset, length):
        if offset < 0 or offset + length > len(self.data):
            raise ImageError(f"{self.name}: request {offset}+{length} outside the "
                             f"{len(self.data)}-byte disk")

    def readinto(self, offset, view):
        self._range(offset, len(view))
        view[:] = self.data[offset:offset + len(view)]

    def write(self, offset, data):
        if self.read_only:
            raise UnsupportedOperation(f"{self.name}: medium is read-only")
        self._range(offset, len(data))
        self.data[offset:offset + len(data)] = data

    def write_zeroes(self, offset, length):
        self.write(offset, bytes(length))

    def discard(self, offset, length):
        if self.discard_enabled:
            self.write_zeroes(offset, length)

    def flush(self):
        self.flushes += 1

    def _run(self, r):
        op = r.op
        if op is Op.READ:
            at = r.offset
            for view in r.views:
                self.readinto(at, view)
                at += len(view)
        elif op is Op.WRITE:
            at = r.offset
            for view in r.views:
                self.write(at, view)
                at += len(view)
            if r.fua:
                self.flush()
        elif op is Op.FLUSH:
            self.flush()
        elif op is Op.WRITE_ZEROES:
            self.write_zeroes(r.offset, r.length)
        elif op is Op.DISCARD:
            self.discard(r.offset, r.length)

    def close(self):
        self._leave_group()
        self.drain()

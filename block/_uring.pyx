# cython: boundscheck=False, wraparound=False
"""An io_uring submission and completion ring through the raw system calls.

Linux's io_uring (io_uring_setup(2), io_uring_enter(2)): the process and
the kernel share two rings, one of submission queue entries (an operation,
a file descriptor, a buffer, a file offset, a 64-bit tag) and one of
completion queue entries (the tag and the result: a byte count, or minus
an errno).  Entries are laid in shared memory without a system call; one
io_uring_enter hands the kernel every entry laid since the last, and can
wait for completions in the same call.

``Ring`` is that and no more: block/uring.py builds the host queue on it
(tokens, the thread that waits, the fallback where there is no io_uring).
Every method except ``wait`` runs with the GIL held, which also keeps the
ring's single-producer and single-consumer rules.  Only the kernel's UAPI
header is used (no liburing).
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from libc.errno cimport errno, EAGAIN, EBUSY
from libc.stdint cimport uint32_t, uint64_t, int32_t
from libc.string cimport memset

cdef extern from *:
    """
    #include <errno.h>
    #include <string.h>
    #include <unistd.h>
    #include <sys/mman.h>
    #include <sys/syscall.h>
    #include <sys/uio.h>
    #include <linux/io_uring.h>

    #ifndef __NR_io_uring_setup
    #define __NR_io_uring_setup 425
    #endif
    #ifndef __NR_io_uring_enter
    #define __NR_io_uring_enter 426
    #endif

    #define DB_MAX_IOV 64          /* iovecs one entry may carry */

    typedef struct db_ring {
        int fd;
        unsigned entries;
        void *sq_map, *cq_map;
        size_t sq_map_len, cq_map_len;
        struct io_uring_sqe *sqes;
        size_t sqes_len;
        unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
        unsigned *cq_head, *cq_tail, *cq_mask;
        struct io_uring_cqe *cqes;
        unsigned laid;             /* entries laid and not yet handed to the kernel */
        struct iovec *iovs;        /* DB_MAX_IOV per submission slot */
    } db_ring;

    static int db_ring_setup(db_ring *r, unsigned entries) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        memset(r, 0, sizeof *r);
        r->fd = -1;
        int fd = (int)syscall(__NR_io_uring_setup, entries, &p);
        if (fd < 0)
            return -errno;
        r->fd = fd;
        r->entries = p.sq_entries;
        r->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
        r->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
        if (p.features & IORING_FEAT_SINGLE_MMAP) {
            if (r->cq_map_len > r->sq_map_len)
                r->sq_map_len = r->cq_map_len;
            r->cq_map_len = r->sq_map_len;
        }
        r->sq_map = mmap(0, r->sq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                         fd, IORING_OFF_SQ_RING);
        if (r->sq_map == MAP_FAILED)
            goto fail;
        if (p.features & IORING_FEAT_SINGLE_MMAP) {
            r->cq_map = r->sq_map;
        } else {
            r->cq_map = mmap(0, r->cq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                             fd, IORING_OFF_CQ_RING);
            if (r->cq_map == MAP_FAILED) {
                r->cq_map = 0;
                goto fail;
            }
        }
        r->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
        r->sqes = mmap(0, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                       fd, IORING_OFF_SQES);
        if (r->sqes == MAP_FAILED) {
            r->sqes = 0;
            goto fail;
        }
        r->iovs = mmap(0, (size_t)p.sq_entries * DB_MAX_IOV * sizeof(struct iovec),
                       PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (r->iovs == MAP_FAILED) {
            r->iovs = 0;
            goto fail;
        }
        char *sq = r->sq_map, *cq = r->cq_map;
        r->sq_head = (unsigned *)(sq + p.sq_off.head);
        r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
        r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
        r->sq_array = (unsigned *)(sq + p.sq_off.array);
        r->cq_head = (unsigned *)(cq + p.cq_off.head);
        r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
        r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
        r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
        return 0;
    fail:;
        int e = errno;
        if (r->sq_map && r->sq_map != MAP_FAILED)
            munmap(r->sq_map, r->sq_map_len);
        if (r->cq_map && r->cq_map != MAP_FAILED && r->cq_map != r->sq_map)
            munmap(r->cq_map, r->cq_map_len);
        if (r->sqes)
            munmap(r->sqes, r->sqes_len);
        close(fd);
        memset(r, 0, sizeof *r);
        r->fd = -1;
        return -e;
    }

    static void db_ring_close(db_ring *r) {
        if (r->fd < 0)
            return;
        if (r->iovs)
            munmap(r->iovs, (size_t)r->entries * DB_MAX_IOV * sizeof(struct iovec));
        munmap(r->sqes, r->sqes_len);
        if (r->cq_map != r->sq_map)
            munmap(r->cq_map, r->cq_map_len);
        munmap(r->sq_map, r->sq_map_len);
        close(r->fd);
        r->fd = -1;
    }

    /* Free submission slots (laid entries count as taken). */
    static unsigned db_ring_space(db_ring *r) {
        unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
        return r->entries - (*r->sq_tail + r->laid - head);
    }

    /* The next free entry, zeroed, with its slot number; NULL when full. */
    static struct io_uring_sqe *db_ring_next(db_ring *r, unsigned *slot) {
        if (!db_ring_space(r))
            return 0;
        unsigned index = (*r->sq_tail + r->laid) & *r->sq_mask;
        struct io_uring_sqe *sqe = &r->sqes[index];
        memset(sqe, 0, sizeof *sqe);
        r->sq_array[index] = index;
        *slot = index;
        return sqe;
    }

    /* Hand the laid entries to the kernel; wait for ``min_complete``
       completions too.  Returns the number submitted, or -errno. */
    static int db_ring_enter(db_ring *r, unsigned min_complete) {
        unsigned laid = r->laid;
        if (laid) {
            __atomic_store_n(r->sq_tail, *r->sq_tail + laid, __ATOMIC_RELEASE);
            r->laid = 0;
        }
        unsigned flags = min_complete ? IORING_ENTER_GETEVENTS : 0;
        for (;;) {
            long n = syscall(__NR_io_uring_enter, r->fd, laid, min_complete, flags, 0, 0);
            if (n >= 0)
                return (int)n;
            if (errno != EINTR)
                return -errno;
            if (min_complete)     /* a signal: let the caller look at the ring again */
                return 0;
        }
    }

    /* Entries published to the kernel that it has not taken yet (an enter
       that failed with EAGAIN or EBUSY leaves them). */
    static unsigned db_ring_unsubmitted(db_ring *r) {
        return *r->sq_tail - __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    }

    /* Wait, submitting what is left over (the GIL released around it), at
       most ``timeout_ns`` when that is not negative. */
    static int db_ring_wait(int fd, unsigned to_submit, unsigned min_complete,
                            long long timeout_ns) {
        long n;
        if (timeout_ns < 0) {
            n = syscall(__NR_io_uring_enter, fd, to_submit, min_complete,
                        IORING_ENTER_GETEVENTS, 0, 0);
        } else {
            struct __kernel_timespec ts;
            struct io_uring_getevents_arg arg;
            memset(&arg, 0, sizeof arg);
            ts.tv_sec = timeout_ns / 1000000000LL;
            ts.tv_nsec = timeout_ns % 1000000000LL;
            arg.ts = (__u64)(unsigned long)&ts;
            n = syscall(__NR_io_uring_enter, fd, to_submit, min_complete,
                        IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, &arg, sizeof arg);
        }
        if (n < 0 && errno != EINTR && errno != ETIME)
            return -errno;
        return 0;
    }

    static unsigned db_ring_ready(db_ring *r) {
        return __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE) - *r->cq_head;
    }

    static struct io_uring_cqe *db_ring_cqe(db_ring *r, unsigned i) {
        return &r->cqes[(*r->cq_head + i) & *r->cq_mask];
    }

    static void db_ring_seen(db_ring *r, unsigned n) {
        __atomic_store_n(r->cq_head, *r->cq_head + n, __ATOMIC_RELEASE);
    }
    """
    ctypedef unsigned long long u64 "__u64"
    struct io_uring_sqe:
        unsigned char opcode
        unsigned char flags
        int fd
        u64 off
        u64 addr
        unsigned len
        unsigned rw_flags
        unsigned fsync_flags
        u64 user_data
    struct io_uring_cqe:
        u64 user_data
        int32_t res
        uint32_t flags
    struct iovec:
        void *iov_base
        size_t iov_len
    ctypedef struct db_ring:
        int fd
        unsigned entries
        unsigned laid
        iovec *iovs
    int DB_MAX_IOV
    int IORING_OP_READ, IORING_OP_WRITE, IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_FSYNC
    int IORING_FSYNC_DATASYNC, IOSQE_IO_LINK
    int db_ring_setup(db_ring *r, unsigned entries)
    void db_ring_close(db_ring *r)
    unsigned db_ring_space(db_ring *r)
    io_uring_sqe *db_ring_next(db_ring *r, unsigned *slot)
    int db_ring_enter(db_ring *r, unsigned min_complete)
    unsigned db_ring_unsubmitted(db_ring *r)
    int db_ring_wait(int fd, unsigned to_submit, unsigned min_complete,
                     long long timeout_ns) nogil
    unsigned db_ring_ready(db_ring *r)
    io_uring_cqe *db_ring_cqe(db_ring *r, unsigned i)
    void db_ring_seen(db_ring *r, unsigned n)

MAX_IOV = DB_MAX_IOV

cdef _oserror(int err, str what):
    import os
    return OSError(err, f"io_uring: {what}: {os.strerror(err)}")


def address(obj):
    """The address of a buffer's first byte (the caller keeps it alive)."""
    cdef Py_buffer view
    PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE)
    cdef size_t at = <size_t>view.buf
    PyBuffer_Release(&view)
    return at


cdef class Ring:
    """An io_uring of ``entries`` submission slots (the kernel rounds up to a
    power of two).  Raises OSError with the kernel's errno when the kernel
    has none (ENOSYS) or refuses one (EPERM under a seccomp filter or
    io_uring_disabled)."""

    cdef db_ring r

    def __cinit__(self, unsigned entries=256):
        cdef int rc = db_ring_setup(&self.r, entries)
        if rc < 0:
            raise _oserror(-rc, "setup")

    def __dealloc__(self):
        db_ring_close(&self.r)

    @property
    def entries(self):
        return self.r.entries

    @property
    def fd(self):
        return self.r.fd

    @property
    def laid(self):
        """Entries laid and not yet handed to the kernel by ``submit``."""
        return self.r.laid

    def space(self):
        """Free submission slots."""
        self._check()
        return db_ring_space(&self.r)

    cdef int _check(self) except -1:
        if self.r.fd < 0:
            raise ValueError("io_uring: the ring is closed")
        return 0

    cdef io_uring_sqe *_next(self, unsigned *slot) except NULL:
        self._check()
        cdef io_uring_sqe *sqe = db_ring_next(&self.r, slot)
        if sqe == NULL:
            raise BlockingIOError("io_uring: the submission ring is full")
        return sqe

    def readv(self, int fd, views, unsigned long long offset, unsigned long long tag,
              bint link=False):
        """Lay a read of ``offset`` into the writable buffers ``views`` (a
        preadv; at most MAX_IOV of them).  The caller keeps them alive until
        the completion."""
        return self._rw(fd, views, offset, tag, link, IORING_OP_READV, PyBUF_WRITABLE)

    def writev(self, int fd, views, unsigned long long offset, unsigned long long tag,
               bint link=False):
        """Lay a write (a pwritev) of the buffers ``views`` at ``offset``."""
        return self._rw(fd, views, offset, tag, link, IORING_OP_WRITEV, PyBUF_SIMPLE)

    cdef _rw(self, int fd, views, unsigned long long offset, unsigned long long tag,
             bint link, int op, int flags):
        cdef Py_ssize_t n = len(views), i
        if n < 1 or n > DB_MAX_IOV:
            raise ValueError(f"io_uring: {n} buffers for one entry (1 to {DB_MAX_IOV})")
        cdef unsigned slot
        cdef io_uring_sqe *sqe = self._next(&slot)
        cdef iovec *iov = self.r.iovs + <size_t>slot * DB_MAX_IOV
        cdef Py_buffer view
        for i in range(n):
            PyObject_GetBuffer(views[i], &view, flags)
            iov[i].iov_base = view.buf
            iov[i].iov_len = <size_t>view.len
            PyBuffer_Release(&view)
        sqe.opcode = op
        sqe.fd = fd
        sqe.off = offset
        sqe.addr = <u64><size_t>iov
        sqe.len = <unsigned>n
        sqe.user_data = tag
        if link:
            sqe.flags = IOSQE_IO_LINK
        self.r.laid += 1

    def nop(self, unsigned long long tag):
        """Lay an operation that does nothing (it completes at once: a way
        to wake a thread waiting on the ring)."""
        cdef unsigned slot
        cdef io_uring_sqe *sqe = self._next(&slot)
        sqe.user_data = tag
        self.r.laid += 1

    def fdatasync(self, int fd, unsigned long long tag, bint link=False):
        """Lay an fdatasync of ``fd``.  After entries laid with ``link`` it
        starts only once they have completed (and fails if one failed)."""
        cdef unsigned slot
        cdef io_uring_sqe *sqe = self._next(&slot)
        sqe.opcode = IORING_OP_FSYNC
        sqe.fd = fd
        sqe.fsync_flags = IORING_FSYNC_DATASYNC
        sqe.user_data = tag
        if link:
            sqe.flags = IOSQE_IO_LINK
        self.r.laid += 1

    def submit(self, unsigned wait=0):
        """Hand every laid entry to the kernel in one io_uring_enter (and,
        with ``wait``, wait for that many completions in it: the GIL stays
        held, so only for completions known to be quick).  Returns the
        number submitted.  With the kernel short of resources (EAGAIN,
        EBUSY) the entries stay published and ``wait`` submits them."""
        self._check()
        cdef int n = db_ring_enter(&self.r, wait)
        if n == -EAGAIN or n == -EBUSY:
            return 0
        if n < 0:
            raise _oserror(-n, "enter")
        return n

    def wait(self, unsigned min_complete=1, timeout=None):
        """Sleep, without the GIL, until ``min_complete`` completions are
        waiting or ``timeout`` seconds have passed (a signal may end it
        sooner).  Entries a ``submit`` left with the kernel busy (EAGAIN,
        EBUSY) are submitted first."""
        self._check()
        cdef int fd = self.r.fd
        cdef unsigned pending = db_ring_unsubmitted(&self.r)
        cdef long long ns = -1 if timeout is None else max(0, <long long>(timeout * 1e9))
        cdef int rc
        with nogil:
            rc = db_ring_wait(fd, pending, min_complete, ns)
        if rc < 0:
            raise _oserror(-rc, "wait")

    def reap(self):
        """Every completion waiting, as a list of ``(tag, result)``; result
        is a byte count or minus an errno."""
        self._check()
        cdef unsigned n = db_ring_ready(&self.r), i
        cdef io_uring_cqe *cqe
        out = []
        for i in range(n):
            cqe = db_ring_cqe(&self.r, i)
            out.append((cqe.user_data, cqe.res))
        db_ring_seen(&self.r, n)
        return out

    def close(self):
        db_ring_close(&self.r)

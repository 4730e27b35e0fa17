# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled versions of drivebay.block.bitmap (same names, same signatures).

Loops only: the meaning of each function is documented in the reference
module.  The GIL is released around every loop that touches no Python
object.
"""

from libc.string cimport memcmp
from libc.stdint cimport uint8_t, uint32_t


cdef bint _zero(const uint8_t[::1] mv, Py_ssize_t start, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i = 0
    # Compare word-sized strides first; the tail byte by byte.
    while i + 8 <= n:
        if (<const unsigned long long *>&mv[start + i])[0] != 0:
            return False
        i += 8
    while i < n:
        if mv[start + i]:
            return False
        i += 1
    return True


cdef const uint8_t[::1] _bytes_view(buf):
    return memoryview(buf).cast("B")


def is_zero(buf):
    cdef const uint8_t[::1] mv = _bytes_view(buf)
    cdef Py_ssize_t n = mv.shape[0]
    cdef bint result
    if n == 0:
        return True
    with nogil:
        result = _zero(mv, 0, n)
    return result


def zero_blocks(buf, Py_ssize_t block_size):
    if block_size <= 0:
        raise ValueError("block_size must be positive")
    cdef const uint8_t[::1] mv = _bytes_view(buf)
    cdef Py_ssize_t n = mv.shape[0], i, length
    out = []
    i = 0
    while i < n:
        length = block_size if i + block_size <= n else n - i
        out.append(bool(_zero(mv, i, length)))
        i += block_size
    return out


cdef inline int _kind(uint32_t e, uint32_t a, uint32_t b) noexcept nogil:
    return 0 if e == a else (1 if e == b else 2)


def count_allocated(entries, uint32_t sentinel_a, uint32_t sentinel_b):
    cdef const uint32_t[::1] mv = memoryview(entries).cast("B").cast("I")
    cdef Py_ssize_t i, n = mv.shape[0], total = 0
    with nogil:
        for i in range(n):
            if mv[i] != sentinel_a and mv[i] != sentinel_b:
                total += 1
    return total


def block_runs(entries, Py_ssize_t first, Py_ssize_t count, uint32_t sentinel_a, uint32_t sentinel_b):
    cdef const uint32_t[::1] mv = memoryview(entries).cast("B").cast("I")
    if first < 0 or count < 0 or first + count > mv.shape[0]:
        raise IndexError("block range outside the block map")
    cdef Py_ssize_t i = first, j, end = first + count
    cdef uint32_t e, f
    cdef int kind, k
    runs = []
    while i < end:
        e = mv[i]
        kind = _kind(e, sentinel_a, sentinel_b)
        j = i + 1
        while j < end:
            f = mv[j]
            k = _kind(f, sentinel_a, sentinel_b)
            if k != kind or (kind == 2 and f != e + <uint32_t>(j - i)):
                break
            j += 1
        runs.append((i, j - i, kind))
        i = j
    return runs


cdef inline int _bit(const uint8_t[::1] bm, Py_ssize_t n, bint msb_first) noexcept nogil:
    if msb_first:
        return (bm[n >> 3] >> (7 - (n & 7))) & 1
    return (bm[n >> 3] >> (n & 7)) & 1


def bit_runs(bitmap, Py_ssize_t first, Py_ssize_t count, bint msb_first):
    cdef const uint8_t[::1] bm = _bytes_view(bitmap)
    if first < 0 or count < 0 or first + count > bm.shape[0] * 8:
        raise IndexError("bit range outside the bitmap")
    cdef Py_ssize_t i = first, j, end = first + count
    cdef int v
    runs = []
    while i < end:
        v = _bit(bm, i, msb_first)
        j = i + 1
        # Skip whole bytes of the same value when aligned.
        while j < end:
            if (j & 7) == 0 and j + 8 <= end and bm[j >> 3] == (0xFF if v else 0):
                j += 8
                continue
            if _bit(bm, j, msb_first) != v:
                break
            j += 1
        runs.append((i, j - i, v))
        i = j
    return runs


def set_bits(bitmap, Py_ssize_t first, Py_ssize_t count, bint value, bint msb_first):
    cdef uint8_t[::1] bm = memoryview(bitmap).cast("B")
    if first < 0 or count < 0 or first + count > bm.shape[0] * 8:
        raise IndexError("bit range outside the bitmap")
    cdef Py_ssize_t n
    cdef int shift
    with nogil:
        for n in range(first, first + count):
            shift = (7 - (n & 7)) if msb_first else (n & 7)
            if value:
                bm[n >> 3] |= <uint8_t>(1 << shift)
            else:
                bm[n >> 3] &= <uint8_t>~(1 << shift)


def count_bits(bitmap, Py_ssize_t first, Py_ssize_t count, bint msb_first):
    cdef const uint8_t[::1] bm = _bytes_view(bitmap)
    if first < 0 or count < 0 or first + count > bm.shape[0] * 8:
        raise IndexError("bit range outside the bitmap")
    cdef Py_ssize_t n, total = 0
    with nogil:
        for n in range(first, first + count):
            total += _bit(bm, n, msb_first)
    return total

"""Allocation bitmaps and block maps: the loops every image format runs.

Pure-Python reference implementations.  ``block/_bitmap.pyx`` compiles the
same functions with the same signatures; the public names exported by
``drivebay.block.bitmap_impl`` bind the compiled versions when they are
built (they always are in a normal install), and both stay importable:
``drivebay.block.bitmap`` (this module) and ``drivebay.block._bitmap``.

Conventions shared by the formats:

* a *block map* is a sequence of unsigned 32-bit entries, one per block
  (VDI's block map, VHD's BAT, Parallels' BAT); entries equal to one of the
  caller's sentinels are "not allocated";
* a *bitmap* is bytes with one bit per unit; ``msb_first`` selects the bit
  order inside each byte (VHD's sector bitmaps are MSB first, QEMU's and
  ours are LSB first).
"""


def is_zero(buf):
    """True when every byte of ``buf`` is zero."""
    mv = memoryview(buf).cast("B")
    return not any(mv)


def zero_blocks(buf, block_size):
    """One flag per ``block_size`` chunk of ``buf``: True where it is all zeros.

    A last partial chunk gets its own flag."""
    mv = memoryview(buf).cast("B")
    return [not any(mv[i:i + block_size]) for i in range(0, len(mv), block_size)]


def count_allocated(entries, sentinel_a, sentinel_b):
    """Number of block-map entries that are neither sentinel."""
    return sum(1 for e in entries if e != sentinel_a and e != sentinel_b)


def block_runs(entries, first, count, sentinel_a, sentinel_b):
    """Split ``count`` blocks from ``first`` into runs of the same kind.

    Returns a list of ``(start_block, length, kind)`` where ``kind`` is 0 for
    an entry equal to ``sentinel_a``, 1 for ``sentinel_b`` and 2 for an
    allocated block; consecutive allocated blocks form one run only when
    their entries are consecutive too (so a run maps to one host extent).
    """
    runs = []
    i, end = first, first + count
    while i < end:
        e = entries[i]
        kind = 0 if e == sentinel_a else 1 if e == sentinel_b else 2
        j = i + 1
        while j < end:
            f = entries[j]
            k = 0 if f == sentinel_a else 1 if f == sentinel_b else 2
            if k != kind or (kind == 2 and f != e + (j - i)):
                break
            j += 1
        runs.append((i, j - i, kind))
        i = j
    return runs


def _bit(bitmap, n, msb_first):
    byte = bitmap[n >> 3]
    return (byte >> (7 - (n & 7) if msb_first else (n & 7))) & 1


def bit_runs(bitmap, first, count, msb_first):
    """Runs of equal bits: a list of ``(start_bit, length, value)``."""
    runs = []
    i, end = first, first + count
    while i < end:
        v = _bit(bitmap, i, msb_first)
        j = i + 1
        while j < end and _bit(bitmap, j, msb_first) == v:
            j += 1
        runs.append((i, j - i, v))
        i = j
    return runs


def set_bits(bitmap, first, count, value, msb_first):
    """Set or clear ``count`` bits from ``first`` in the writable ``bitmap``."""
    for n in range(first, first + count):
        shift = 7 - (n & 7) if msb_first else (n & 7)
        if value:
            bitmap[n >> 3] |= 1 << shift
        else:
            bitmap[n >> 3] &= ~(1 << shift) & 0xFF


def count_bits(bitmap, first, count, msb_first):
    """Number of set bits among ``count`` from ``first``."""
    return sum(_bit(bitmap, n, msb_first) for n in range(first, first + count))

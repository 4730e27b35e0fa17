import array

import pytest

UNALLOC = 0xFFFFFFFF
ZERO = 0xFFFFFFFE


def test_is_zero(bitmap_backend):
    assert bitmap_backend.is_zero(b"")
    assert bitmap_backend.is_zero(bytes(4096))
    for pos in (0, 7, 8, 4095):
        buf = bytearray(4096)
        buf[pos] = 1
        assert not bitmap_backend.is_zero(buf)


def test_zero_blocks_partial_tail(bitmap_backend):
    buf = bytes(8) + b"\x00\x00\x01" + bytes(5)
    assert bitmap_backend.zero_blocks(buf, 8) == [True, False]
    assert bitmap_backend.zero_blocks(bytes(10), 4) == [True, True, True]


def test_block_runs_split_on_discontiguous_extents(bitmap_backend):
    entries = array.array("I", [10, 11, 12, 20, UNALLOC, UNALLOC, ZERO, 13])
    assert bitmap_backend.block_runs(entries, 0, 8, UNALLOC, ZERO) == [
        (0, 3, 2), (3, 1, 2), (4, 2, 0), (6, 1, 1), (7, 1, 2)]
    assert bitmap_backend.block_runs(entries, 1, 2, UNALLOC, ZERO) == [(1, 2, 2)]
    assert bitmap_backend.count_allocated(entries, UNALLOC, ZERO) == 5


def test_bit_order(bitmap_backend):
    # VHD sector bitmaps: bit 7 of byte 0 is sector 0 (MSB first).
    assert bitmap_backend.bit_runs(b"\x80", 0, 8, True) == [(0, 1, 1), (1, 7, 0)]
    assert bitmap_backend.bit_runs(b"\x80", 0, 8, False) == [(0, 7, 0), (7, 1, 1)]


def test_set_and_count_bits(bitmap_backend):
    bm = bytearray(4)
    bitmap_backend.set_bits(bm, 3, 10, True, True)
    assert bytes(bm) == b"\x1f\xf8\x00\x00"
    assert bitmap_backend.count_bits(bm, 0, 32, True) == 10
    bitmap_backend.set_bits(bm, 4, 2, False, True)
    assert bitmap_backend.count_bits(bm, 0, 32, True) == 8


def test_compiled_range_checks():
    from drivebay.block import _bitmap
    with pytest.raises(IndexError):
        _bitmap.bit_runs(b"\x00", 0, 9, True)
    with pytest.raises(IndexError):
        _bitmap.block_runs(array.array("I", [1]), 0, 2, UNALLOC, ZERO)

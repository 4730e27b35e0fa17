"""The compiled hot loops agree with their pure-Python reference."""

import array

from hypothesis import given, strategies as st

from drivebay.block import _bitmap as cy
from drivebay.block import bitmap as py

UNALLOC, ZERO = 0xFFFFFFFF, 0xFFFFFFFE
entry = st.one_of(st.just(UNALLOC), st.just(ZERO), st.integers(0, 40))


@given(st.binary(max_size=300), st.integers(1, 64))
def test_zero_detection(data, block):
    assert cy.is_zero(data) == py.is_zero(data)
    assert cy.zero_blocks(data, block) == py.zero_blocks(data, block)


@given(st.lists(entry, min_size=1, max_size=64), st.data())
def test_block_runs(entries, data):
    arr = array.array("I", entries)
    first = data.draw(st.integers(0, len(arr) - 1))
    count = data.draw(st.integers(0, len(arr) - first))
    assert cy.block_runs(arr, first, count, UNALLOC, ZERO) == py.block_runs(arr, first, count, UNALLOC, ZERO)
    assert cy.count_allocated(arr, UNALLOC, ZERO) == py.count_allocated(arr, UNALLOC, ZERO)


@given(st.binary(min_size=1, max_size=40), st.booleans(), st.data())
def test_bits(bitmap, msb, data):
    nbits = len(bitmap) * 8
    first = data.draw(st.integers(0, nbits - 1))
    count = data.draw(st.integers(0, nbits - first))
    assert cy.bit_runs(bitmap, first, count, msb) == py.bit_runs(bitmap, first, count, msb)
    assert cy.count_bits(bitmap, first, count, msb) == py.count_bits(bitmap, first, count, msb)
    a, b = bytearray(bitmap), bytearray(bitmap)
    value = data.draw(st.booleans())
    cy.set_bits(a, first, count, value, msb)
    py.set_bits(b, first, count, value, msb)
    assert a == b

"""VMDK against a bytearray model: random writes (zero ones too, unaligned), zero
writes, discards, reads, resizes and reopens, for monolithic sparse, flat,
split and stream-optimized images, and for a sparse child over a parent.

After every step the image must read as the model and ``check`` must find no
error (a stream may report superseded grains as leaks; compacting it must
then leave it clean and reading the same).
"""

import os
import tempfile

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from drivebay.block.chain import open_chain
from drivebay.block.driver import State
from drivebay.block.vmdk import VmdkDriver

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
OFFSET = st.integers(0, 1 << 18)          # taken modulo the disk size
LENGTH = st.one_of(st.integers(1, 600), st.integers(4000, 70000))

ops = st.lists(st.one_of(
    st.tuples(st.just("write"), OFFSET, LENGTH, st.sampled_from([0, 0, 1, 0x5A, 0xFF])),
    st.tuples(st.just("zeroes"), OFFSET, LENGTH),
    st.tuples(st.just("discard"), OFFSET, LENGTH),
    st.tuples(st.just("read"), OFFSET, LENGTH),
    st.tuples(st.just("resize"), st.integers(1, 300)),          # sectors to add
    st.tuples(st.just("reopen")),
), min_size=3, max_size=25)


def clip(size, offset, length):
    offset %= size
    return offset, min(length, size - offset)


def discarded(image, offset, length):
    """Byte ranges a discard turns into zeros: whole allocated grains of sparse
    extents that are not stream-optimized."""
    out = []
    for ext in image.extents:
        if not ext.sparse or ext.compressed:
            continue
        lo, hi = max(offset, ext.start), min(offset + length, ext.start + ext.length)
        g = ext.grain
        first, end = -(-(lo - ext.start) // g), (hi - ext.start) // g
        if hi == ext.start + ext.length:
            end = -(-(hi - ext.start) // g)
        for k in range(first, end):
            a, z = ext.start + k * g, min(ext.start + (k + 1) * g, ext.start + ext.length)
            if any(e.state is State.DATA for e in image.block_status(a, z - a)):
                out.append((a, z))
    return out


def apply(target, image, model, op, reopen):
    kind = op[0]
    if kind == "write":
        offset, n = clip(len(model), op[1], op[2])
        data = bytes([op[3]]) * n
        target.write(offset, data)
        model[offset:offset + n] = data
    elif kind == "zeroes":
        offset, n = clip(len(model), op[1], op[2])
        target.write_zeroes(offset, n)
        model[offset:offset + n] = bytes(n)
    elif kind == "discard":
        offset, n = clip(len(model), op[1], op[2])
        gone = discarded(image, offset, n)
        target.discard(offset, n)
        for a, z in gone:
            model[a:z] = bytes(z - a)
    elif kind == "read":
        offset, n = clip(len(model), op[1], op[2])
        assert target.read(offset, n) == model[offset:offset + n]
    elif kind == "resize":
        new = len(model) + op[1] * 512
        image.resize(new)
        model.extend(bytes(new - len(model)))
    elif kind == "reopen":
        return reopen()
    return target


def assert_sound(image):
    report = image.check()
    assert not report.errors, report
    if report.leaks:
        assert all("superseded" in leak for leak in report.leaks), report


@SETTINGS
@example(variant="stream", grain=4096, sectors=17,
         steps=[("write", 0, 1, 1), ("reopen",), ("write", 0, 8704, 1), ("write", 10, 1, 2)])
@given(variant=st.sampled_from(["dynamic", "fixed", "split2g", "stream"]),
       grain=st.sampled_from([4096, 65536]), sectors=st.integers(1, 1000), steps=ops)
def test_image_matches_model(variant, grain, sectors, steps):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "disk.vmdk")
        size = sectors * 512
        VmdkDriver.create(path, size, variant, grain_size=grain)
        model = bytearray(size)
        image = VmdkDriver.open(path, writable=True)

        def reopen():
            nonlocal image
            image.close()
            image = VmdkDriver.open(path, writable=True)
            return image
        try:
            for op in steps:
                apply(image, image, model, op, reopen)
                assert image.read(0, image.size) == model
            assert_sound(image)
            reopen()
            assert image.size == len(model) and image.read(0, image.size) == model
            assert_sound(image)
            if variant == "stream":
                image.compact()
                assert image.check().clean
                reopen()
                assert image.read(0, image.size) == model
        finally:
            image.close()


@SETTINGS
@example(grain=4096, zeroed=False, sectors=64, parent_steps=[(0, 20000, 0x11)],
         steps=[("zeroes", 4096, 9000), ("write", 0, 4096, 0), ("discard", 0, 8192)])
@given(grain=st.sampled_from([4096, 65536]), zeroed=st.booleans(), sectors=st.integers(1, 1000),
       parent_steps=st.lists(st.tuples(OFFSET, LENGTH, st.sampled_from([0x11, 0xA5])),
                             min_size=1, max_size=6),
       steps=ops)
def test_differencing_child_matches_model(grain, zeroed, sectors, parent_steps, steps):
    with tempfile.TemporaryDirectory() as d:
        base, child = os.path.join(d, "base.vmdk"), os.path.join(d, "child.vmdk")
        size = sectors * 512
        VmdkDriver.create(base, size, grain_size=grain)
        model = bytearray(size)
        with VmdkDriver.open(base, writable=True) as parent:
            for offset, n, byte in parent_steps:
                offset, n = clip(size, offset, n)
                parent.write(offset, bytes([byte]) * n)
                model[offset:offset + n] = bytes([byte]) * n
        with VmdkDriver.open(base) as parent:
            VmdkDriver.create(child, None, parent=parent, grain_size=grain, zeroed_grain=zeroed)
        parent_content = bytes(model)
        chain = open_chain(child, writable=True)

        def reopen():
            nonlocal chain
            chain.close()
            chain = open_chain(child, writable=True)
            return chain
        try:
            for op in steps:
                chain = apply(chain, chain.top, model, op, reopen)
                assert chain.read(0, chain.size) == model
            assert_sound(chain.top)
            reopen()
            assert chain.read(0, chain.size) == model
            with VmdkDriver.open(base) as parent:
                assert parent.read(0, size) == parent_content
        finally:
            chain.close()

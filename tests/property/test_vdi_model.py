"""VDI against a bytearray model: random writes (zero ones too, unaligned),
reads, discards, zero writes, resizes, compacts and reopens, on base images
and on a differencing child over a parent.

After every step the image must read as the model, and its metadata must
keep the driver's invariants: check() clean, allocated blocks packed into
the first slots, the file ending right after the last one.
"""

import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivebay.block.chain import Chain, open_chain
from drivebay.block.driver import State
from drivebay.block.vdi import VdiDriver

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

ops = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 1 << 20), st.integers(1, 9000),
              st.sampled_from([0, 0, 1, 0x5A, 0xFF])),
    st.tuples(st.just("zeroes"), st.integers(0, 1 << 20), st.integers(1, 9000)),
    st.tuples(st.just("discard"), st.integers(0, 1 << 20), st.integers(1, 9000)),
    st.tuples(st.just("read"), st.integers(0, 1 << 20), st.integers(1, 9000)),
    st.tuples(st.just("resize"), st.integers(1, 300)),          # sectors to add
    st.tuples(st.just("compact")),
    st.tuples(st.just("reopen")),
), min_size=3, max_size=30)


def clip(size, offset, length):
    offset %= size
    return offset, min(length, size - offset)


def whole_blocks(image, offset, length):
    """Blocks entirely inside [offset, offset+length) (the last one may end at the disk's end)."""
    bs = image.block_size
    first = -(-offset // bs)
    end = offset + length
    last = end // bs if end < image.size else -(-image.size // bs)
    return range(first, last)


def assert_sound(image):
    report = image.check()
    assert report.clean, report
    s = image.state
    if not image.is_fixed:
        assert os.path.getsize(image.path) == s.slot_offset(report.allocated_blocks)
    assert s.header.cBlocksAllocated == report.allocated_blocks


def apply(target, image, model, op, reopen, fixed=False):
    """One step on ``target`` (an image or a chain whose top is ``image``) and the model."""
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
        held = {b for e in image.block_status(0, image.size) if e.state is State.DATA
                for b in range(e.offset // image.block_size,
                               -(-(e.offset + e.length) // image.block_size))}
        gone = [b for b in whole_blocks(image, offset, n) if b in held and not fixed]
        target.discard(offset, n)
        bs = image.block_size
        for b in gone:
            model[b * bs:min((b + 1) * bs, len(model))] = bytes(min(bs, len(model) - b * bs))
    elif kind == "read":
        offset, n = clip(len(model), op[1], op[2])
        assert target.read(offset, n) == model[offset:offset + n]
    elif kind == "resize":
        new = len(model) + op[1] * 512
        image.resize(new)
        model.extend(bytes(new - len(model)))
    elif kind == "compact":
        if not fixed:
            image.compact()
    elif kind == "reopen":
        return reopen()
    return target


@SETTINGS
@given(variant=st.sampled_from(["dynamic", "fixed"]), block_size=st.sampled_from([512, 4096]),
       align=st.sampled_from([512, 1 << 20]), sectors=st.integers(1, 40), steps=ops)
def test_base_image_matches_model(variant, block_size, align, sectors, steps):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "disk.vdi")
        size = sectors * 512
        VdiDriver.create(path, size, variant, block_size=block_size, align=align)
        model = bytearray(size)
        image = VdiDriver.open(path, writable=True)

        def reopen():
            nonlocal image
            image.close()
            image = VdiDriver.open(path, writable=True)
            return image
        try:
            for op in steps:
                apply(image, image, model, op, reopen, fixed=variant == "fixed")
                assert image.read(0, image.size) == model
                assert_sound(image)
            reopen()
            assert image.size == len(model) and image.read(0, image.size) == model
        finally:
            image.close()


def attach_backing(chain):
    below = Chain(chain.images[1:])

    def backing_read(offset, view):
        n = max(0, min(len(view), below.size - offset))
        if n:
            below.readinto(offset, view[:n])
        view[n:] = bytes(len(view) - n)
    chain.top.backing_read = backing_read
    return chain


@SETTINGS
@given(block_size=st.sampled_from([512, 4096]), sectors=st.integers(1, 40),
       parent_steps=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 9000),
                                       st.sampled_from([0, 0x11, 0xA5])), max_size=6),
       steps=ops)
def test_differencing_child_matches_model(block_size, sectors, parent_steps, steps):
    with tempfile.TemporaryDirectory() as d:
        base, child = os.path.join(d, "base.vdi"), os.path.join(d, "child.vdi")
        size = sectors * 512
        VdiDriver.create(base, size, block_size=block_size)
        model = bytearray(size)
        with VdiDriver.open(base, writable=True) as parent:
            for offset, n, byte in parent_steps:
                offset, n = clip(size, offset, n)
                parent.write(offset, bytes([byte]) * n)
                model[offset:offset + n] = bytes([byte]) * n
            VdiDriver.create(child, None, parent=parent, block_size=block_size)
            parent_uuid = parent.uuid
        parent_content = bytes(model)

        def resolver(uuid, locator, child_path):
            return base if uuid == parent_uuid else None

        chain = attach_backing(open_chain(child, writable=True, resolver=resolver))

        def reopen():
            nonlocal chain
            chain.close()
            chain = attach_backing(open_chain(child, writable=True, resolver=resolver))
            return chain
        try:
            for op in steps:
                chain = apply(chain, chain.top, model, op, reopen)
                assert chain.read(0, chain.size) == model
                assert_sound(chain.top)
            reopen()
            assert chain.read(0, chain.size) == model
            with VdiDriver.open(base) as parent:
                assert parent.read(0, size) == parent_content
        finally:
            chain.close()

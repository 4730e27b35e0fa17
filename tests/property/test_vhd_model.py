"""VHD images against a bytearray model: random writes (zero, unaligned,
across blocks), discards, reads, growing resizes and reopens; fixed and
dynamic images alone, and a differencing child over a dynamic parent."""

import os
import random
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from drivebay.block.chain import open_chain
from drivebay.block.drivers import open_image
from drivebay.block.vhd import VhdDriver

SECTOR = 512
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

op = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 1 << 24), st.integers(1, 70000),
              st.integers(0, 1 << 30), st.booleans()),
    st.tuples(st.just("zero"), st.integers(0, 1 << 24), st.integers(1, 70000), st.booleans()),
    st.tuples(st.just("discard"), st.integers(0, 1 << 24), st.integers(1, 70000)),
    st.tuples(st.just("read"), st.integers(0, 1 << 24), st.integers(1, 70000)),
    st.tuples(st.just("resize"), st.integers(0, 4096)),
    st.tuples(st.just("reopen")),
)
ops = st.lists(op, max_size=25)
sizes = st.integers(1, 2048).map(lambda n: n * SECTOR)
block_sizes = st.sampled_from([4096, 65536, 2 << 20])


def _span(size, pos, length, aligned=False):
    pos %= size
    length = min(length, size - pos)
    if aligned:
        pos -= pos % SECTOR
        length = max(SECTOR, length - length % SECTOR)
        length = min(length, size - pos)
    return pos, length


class Disk:
    """The image (or chain) under test and its model."""

    def __init__(self, path, chain):
        self.path, self.chain = path, chain
        self.image = self._open()

    def _open(self):
        if self.chain:
            return open_chain(self.path, writable=True)
        return open_image(self.path, writable=True)

    def reopen(self):
        self.image.close()
        self.image = self._open()

    @property
    def top(self):
        return self.image.top if self.chain else self.image


def run(disk, model, ops, owned=None):
    """Apply ``ops``; ``owned`` (differencing) marks the sectors the child holds."""
    for o in ops:
        kind = o[0]
        size = len(model)
        if kind == "write":
            pos, n = _span(size, o[1], o[2], aligned=o[4])
            data = random.Random(o[3]).randbytes(n)
            disk.image.write(pos, data)
            model[pos:pos + n] = data
        elif kind == "zero":
            pos, n = _span(size, o[1], o[2])
            if o[3]:
                disk.image.write_zeroes(pos, n)
            else:
                disk.image.write(pos, bytes(n))
            model[pos:pos + n] = bytes(n)
        elif kind == "discard":
            pos, n = _span(size, o[1], o[2])
            disk.image.discard(pos, n)
            for at in range(pos, pos + n):
                if owned is None or owned[at // SECTOR]:
                    model[at] = 0
            continue
        elif kind == "read":
            pos, n = _span(size, o[1], o[2])
            assert disk.image.read(pos, n) == model[pos:pos + n], o
            continue
        elif kind == "resize":
            new = size + o[1] * SECTOR
            disk.top.resize(new)
            model.extend(bytes(new - size))
            if owned is not None:
                owned.extend([False] * (new // SECTOR - len(owned)))
            continue
        else:
            disk.reopen()
            continue
        if owned is not None:
            for s in range(pos // SECTOR, -(-(pos + n) // SECTOR)):
                owned[s] = True
    assert disk.image.read(0, len(model)) == model
    report = disk.top.check()
    assert report.clean, report
    disk.reopen()
    assert disk.image.size == len(model)
    assert disk.image.read(0, len(model)) == model


@SETTINGS
@given(variant=st.sampled_from(["dynamic", "fixed"]), size=sizes, block=block_sizes, ops=ops)
def test_base_image_matches_model(variant, size, block, ops):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "disk.vhd")
        VhdDriver.create(path, size, variant=variant, block_size=block)
        disk = Disk(path, chain=False)
        try:
            run(disk, bytearray(size), ops)
        finally:
            disk.image.close()


@SETTINGS
@given(size=sizes, parent_block=block_sizes, block=block_sizes,
       parent_ops=st.lists(st.tuples(st.integers(0, 1 << 24), st.integers(1, 70000),
                                     st.integers(0, 1 << 30)), max_size=6),
       ops=ops)
def test_differencing_child_matches_model(size, parent_block, block, parent_ops, ops):
    with tempfile.TemporaryDirectory() as tmp:
        base, child = os.path.join(tmp, "base.vhd"), os.path.join(tmp, "child.vhd")
        VhdDriver.create(base, size, block_size=parent_block)
        model = bytearray(size)
        with open_image(base, writable=True) as parent:
            for pos, n, seed in parent_ops:
                pos, n = _span(size, pos, n)
                data = random.Random(seed).randbytes(n)
                parent.write(pos, data)
                model[pos:pos + n] = data
        with open_image(base) as parent:
            VhdDriver.create(child, None, parent=parent, block_size=block)
        disk = Disk(child, chain=True)
        try:
            run(disk, model, ops, owned=[False] * (size // SECTOR))
        finally:
            disk.image.close()
        with open_image(base) as parent:      # the child never writes into its parent
            assert parent.check().clean

"""Parallels against a bytearray model: random writes (zero ones too,
unaligned), reads, zero writes, discards, resizes and reopens, for both
signatures and several cluster sizes.

After every step the image must read as the model and keep the driver's
invariants: check() clean, the file ending right after the last cluster,
every BAT entry in the unit of its signature, and the in-use marker set
exactly while the image is open read-write.
"""

import os
import struct
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivebay.block.parallels import ParallelsDriver

SETTINGS = settings(max_examples=250, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
IN_USE = 0x746F6E59

ops = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, 1 << 20), st.integers(1, 9000),
              st.sampled_from([0, 0, 1, 0x5A, 0xFF])),
    st.tuples(st.just("zeroes"), st.integers(0, 1 << 20), st.integers(1, 9000)),
    st.tuples(st.just("discard"), st.integers(0, 1 << 20), st.integers(1, 9000)),
    st.tuples(st.just("read"), st.integers(0, 1 << 20), st.integers(1, 9000)),
    st.tuples(st.just("resize"), st.integers(1, 300)),          # sectors to add
    st.tuples(st.just("reopen")),
), min_size=3, max_size=30)


def clip(size, offset, length):
    offset %= size
    return offset, min(length, size - offset)


def header(path):
    with open(path, "rb") as f:
        raw = f.read(64)
    magic = raw[:16]
    tracks, entries = struct.unpack_from("<II", raw, 28)
    in_use, data_off = struct.unpack_from("<II", raw, 44)
    return magic, tracks, entries, in_use, data_off


def assert_sound(image):
    """check() clean; the file ends right after the last cluster the BAT
    (read from the file here) points at; every cluster is in the data area."""
    report = image.check()
    assert report.clean, report
    magic, tracks, entries, in_use, data_off = header(image.path)
    assert in_use == IN_USE
    cs = tracks * 512
    unit = cs if magic == b"WithouFreSpacExt" else 512
    with open(image.path, "rb") as f:
        f.seek(64)
        bat = struct.unpack(f"<{entries}I", f.read(4 * entries))
    hosts = [e * unit for e in bat if e]
    assert all(h >= data_off * 512 for h in hosts)
    assert os.path.getsize(image.path) == max([data_off * 512] + [h + cs for h in hosts])
    assert len(set(hosts)) == len(hosts)


def apply(image, model, op, reopen):
    kind = op[0]
    cs = image.cluster_size
    if kind == "write":
        offset, n = clip(len(model), op[1], op[2])
        data = bytes([op[3]]) * n
        image.write(offset, data)
        model[offset:offset + n] = data
    elif kind == "zeroes":
        offset, n = clip(len(model), op[1], op[2])
        image.write_zeroes(offset, n)
        model[offset:offset + n] = bytes(n)
    elif kind == "discard":
        offset, n = clip(len(model), op[1], op[2])
        image.discard(offset, n)
        # whole clusters inside the range read zeros (the disk's last one ends at its end)
        first, end = -(-offset // cs), offset + n
        for c in range(first, -(-len(model) // cs)):
            lo, hi = c * cs, min((c + 1) * cs, len(model))
            if hi > end:
                break
            model[lo:hi] = bytes(hi - lo)
    elif kind == "read":
        offset, n = clip(len(model), op[1], op[2])
        assert image.read(offset, n) == model[offset:offset + n]
    elif kind == "resize":
        new = len(model) + op[1] * 512
        image.resize(new)
        model.extend(bytes(new - len(model)))
    elif kind == "reopen":
        return reopen()
    return image


@SETTINGS
@given(variant=st.sampled_from(["dynamic", "ext"]),
       cluster_size=st.sampled_from([512, 1536, 4096, 32256]),
       sectors=st.integers(1, 80), steps=ops)
def test_image_matches_model(variant, cluster_size, sectors, steps):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "disk.hdd")
        size = sectors * 512
        ParallelsDriver.create(path, size, variant, cluster_size=cluster_size)
        model = bytearray(size)
        image = ParallelsDriver.open(path, writable=True)

        def reopen():
            nonlocal image
            image.close()
            assert header(path)[3] == 0
            image = ParallelsDriver.open(path, writable=True)
            return image
        try:
            for op in steps:
                image = apply(image, model, op, reopen)
                assert image.read(0, image.size) == model
                assert_sound(image)
        finally:
            image.close()
        assert header(path)[3] == 0
        with ParallelsDriver.open(path) as image:
            assert image.size == len(model) and image.read(0, image.size) == model
            assert image.check().clean

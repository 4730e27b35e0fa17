"""VDI against qemu-img, in both directions.

Recorded with qemu-img 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18).  qemu-img
reads and writes only base VDIs with 1 MiB blocks (it refuses an image with
a non-null uuidLinkage), so differencing images are not compared here.

* drivebay writes, qemu-img checks (`check -f vdi`, exit 0) and compares
  (`compare -f vdi -F raw`) against a raw file given the same operations;
* qemu-img writes (`create`, `-o static=on`, `qemu-io`, `convert -O vdi`),
  drivebay reads byte for byte, with qemu-img info's virtual size and
  qemu-img map's data ranges;
* drivebay changes qemu-img's images (whose block map leaves no room to
  grow, so resize moves blocks) and qemu-img checks them again.
"""

import json
import os
import random

import pytest

from drivebay.block.driver import State
from drivebay.block.raw import RawDriver
from drivebay.block.vdi import VdiDriver

from qemu_tools import qemu_info as _qemu_info, run

MiB = 1 << 20


def qemu_info(path):
    return _qemu_info(path, "vdi")


def assert_qemu_agrees(vdi, raw):
    run("qemu-img", "check", "-f", "vdi", vdi)
    run("qemu-img", "compare", "-f", "vdi", "-F", "raw", vdi, raw)
    assert qemu_info(vdi)["virtual-size"] == os.path.getsize(raw)


def apply_both(vdi, raw, op):
    """One operation on the VDI and its raw twin (discard: what VDI makes of it)."""
    kind, *args = op
    if kind == "write":
        offset, data = args
        vdi.write(offset, data)
        raw.write(offset, data)
    elif kind == "zeroes":
        vdi.write_zeroes(*args)
        raw.write(args[0], bytes(args[1]))
    elif kind == "discard":
        offset, length = args
        bs = vdi.block_size
        gone = [] if vdi.is_fixed else \
            [e for e in vdi.block_status(offset, length) if e.state is State.DATA]
        vdi.discard(offset, length)
        for e in gone:                      # whole allocated blocks now read as zeros
            first, end = -(-e.offset // bs) * bs, (e.offset + e.length) // bs * bs
            if end > first:
                raw.write(first, bytes(end - first))
    elif kind == "resize":
        vdi.resize(args[0])
        raw.resize(args[0])
    elif kind == "compact":
        vdi.compact()


def pattern(n, seed):
    return random.Random(seed).randbytes(n)


SCENARIOS = {
    "dynamic": dict(size=8 * MiB, ops=[
        ("write", 12345, pattern(70000, 1)), ("write", 3 * MiB - 7, pattern(MiB + 20, 2)),
        ("write", 6 * MiB, bytes(MiB)), ("zeroes", 3 * MiB, MiB), ("zeroes", 100, 1000),
        ("write", 7 * MiB + 512, pattern(4096, 3)), ("discard", 0, 2 * MiB)]),
    "fixed": dict(size=4 * MiB, variant="fixed", ops=[
        ("write", 1, pattern(3 * MiB, 4)), ("zeroes", MiB, MiB), ("discard", 0, 4 * MiB)]),
    "grow": dict(size=4 * MiB, ops=[
        ("write", MiB + 3, pattern(5000, 5)), ("resize", 64 * MiB),
        ("write", 60 * MiB, pattern(MiB, 6))]),
    "grow-moving-blocks": dict(size=3 * MiB, align=512, ops=[
        ("write", 0, pattern(3 * MiB, 7)), ("resize", 160 * MiB),
        ("write", 150 * MiB, pattern(10, 8)), ("write", MiB, b"again")]),
    "compact": dict(size=6 * MiB, ops=[
        ("write", 0, pattern(6 * MiB, 9)), ("write", MiB, bytes(MiB)),
        ("write", 4 * MiB, bytes(MiB)), ("compact",), ("write", 5 * MiB, b"tail")]),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_drivebay_images_pass_qemu_img(tmp_path, name):
    scenario = dict(SCENARIOS[name])
    ops = scenario.pop("ops")
    size = scenario.pop("size")
    vdi_path, raw_path = tmp_path / "d.vdi", tmp_path / "d.raw"
    VdiDriver.create(vdi_path, size, **scenario)
    RawDriver.create(raw_path, size)
    with VdiDriver.open(vdi_path, writable=True) as vdi, \
            RawDriver.open(raw_path, writable=True) as raw:
        for op in ops:
            apply_both(vdi, raw, op)
        assert vdi.check().clean
    assert_qemu_agrees(vdi_path, raw_path)


# -- images qemu-img made, read here -------------------------------------------------------------

def qemu_data_ranges(path):
    ranges = json.loads(run("qemu-img", "map", "-f", "vdi", "--output=json", path).stdout)
    return [(r["start"], r["length"]) for r in ranges if r["data"]]


def our_data_ranges(image):
    out = []
    for e in image.block_status(0, image.size):
        if e.state is State.DATA:
            if out and out[-1][0] + out[-1][1] == e.offset:
                out[-1] = (out[-1][0], out[-1][1] + e.length)
            else:
                out.append((e.offset, e.length))
    return out


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_qemu_io_written_image_reads_here(tmp_path, static):
    path = tmp_path / "q.vdi"
    run("qemu-img", "create", "-q", "-f", "vdi", *(["-o", "static=on"] if static else []),
        path, "8M")
    run("qemu-io", "-f", "vdi", "-c", "write -P 0x5a 1M 64k", path)
    expected = bytearray(8 * MiB)
    expected[MiB:MiB + 65536] = b"\x5a" * 65536
    with VdiDriver.open(path) as img:
        assert img.size == qemu_info(path)["virtual-size"] == 8 * MiB
        assert img.variant == ("fixed" if static else "dynamic")
        assert img.info()["cbHeader"] == 384
        assert img.read(0, img.size) == expected
        if not static:      # qemu-img map shows a static image's host-file holes as "no data"
            assert our_data_ranges(img) == qemu_data_ranges(path)
        assert img.check().clean


@pytest.mark.parametrize("size", [6 * MiB + 1536, 1000 * 1024], ids=["6M+3s", "1000k"])
def test_qemu_converted_image_reads_here(tmp_path, size):
    raw = bytearray(pattern(size, size))
    if size > 3 * MiB:
        raw[2 * MiB:3 * MiB] = bytes(MiB)            # a zero block convert leaves unallocated
    raw_path, vdi_path = tmp_path / "src.raw", tmp_path / "q.vdi"
    raw_path.write_bytes(raw)
    run("qemu-img", "convert", "-f", "raw", "-O", "vdi", raw_path, vdi_path)
    with VdiDriver.open(vdi_path) as img:
        assert img.size == qemu_info(vdi_path)["virtual-size"] == size
        assert img.read(0, size) == raw
        assert our_data_ranges(img) == qemu_data_ranges(vdi_path)


def test_drivebay_changes_to_qemu_images_pass_qemu_img(tmp_path):
    """QEMU packs the block map at 0x200 and the data at 0x400: growing the
    disk moves blocks; the 384-byte header stays 384 bytes."""
    raw_path, vdi_path = tmp_path / "src.raw", tmp_path / "q.vdi"
    raw_path.write_bytes(pattern(5 * MiB, 10))
    run("qemu-img", "convert", "-f", "raw", "-O", "vdi", raw_path, vdi_path)
    header_tail = vdi_path.read_bytes()[0x1C8:0x200]
    with VdiDriver.open(vdi_path, writable=True) as vdi, \
            RawDriver.open(raw_path, writable=True) as raw:
        for op in [("write", MiB + 100, pattern(3 * MiB, 11)), ("zeroes", 0, MiB),
                   ("discard", 3 * MiB, MiB), ("resize", 300 * MiB),
                   ("write", 299 * MiB, pattern(MiB, 12)), ("write", 2 * MiB, bytes(MiB)),
                   ("compact",)]:
            apply_both(vdi, raw, op)
        assert vdi.info()["offData"] > 0x400 and vdi.info()["cbHeader"] == 384
    assert vdi_path.read_bytes()[0x1C8:0x200] == header_tail
    assert_qemu_agrees(vdi_path, raw_path)
    run("qemu-io", "-f", "vdi", "-c", "write -P 0x33 10M 64k", vdi_path)
    with VdiDriver.open(vdi_path) as vdi:
        assert vdi.read(10 * MiB, 65536) == b"\x33" * 65536 and vdi.check().clean

"""Parallels against qemu-img and qemu-io, in both directions.

Recorded with qemu-img 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18).  qemu-img
creates only "WithouFreSpacExt" images (1 MiB clusters by default) and reads
both signatures; it refuses a read-write open of an image whose in_use
field says "open" and counts that as a corruption in `check`.

* drivebay writes (both signatures, several cluster sizes, growing the
  BAT), qemu-img checks (`check -f parallels`, exit 0) and compares
  (`compare -f parallels -F raw`) against a raw file given the same
  operations;
* qemu-img writes (`create`, `qemu-io`, `convert -O parallels`), drivebay
  reads byte for byte, with qemu-img info's size and qemu-img map's ranges;
* drivebay changes qemu-img's images and converts them to v2, and qemu-img
  checks and compares the result;
* the in-use marker works both ways between the two programs.
"""

import json
import random
import struct

import pytest

from drivebay.block.convert import convert
from drivebay.block.driver import State
from drivebay.block.parallels import ParallelsDriver
from drivebay.block.raw import RawDriver
from drivebay.errors import CorruptImageError

from qemu_tools import qemu_info as _qemu_info, run

KiB, MiB = 1024, 1 << 20


def qemu_info(path):
    return _qemu_info(path, "parallels")


def assert_qemu_agrees(image, raw):
    run("qemu-img", "check", "-f", "parallels", image)
    run("qemu-img", "compare", "-f", "parallels", "-F", "raw", image, raw)
    assert qemu_info(image)["virtual-size"] == raw.stat().st_size


def pattern(n, seed):
    return random.Random(seed).randbytes(n)


def apply_both(image, raw, op):
    """One operation on the image and its raw twin (discard: what the driver makes of it)."""
    kind, *args = op
    if kind == "write":
        image.write(*args)
        raw.write(*args)
    elif kind == "zeroes":
        image.write_zeroes(*args)
        raw.write(args[0], bytes(args[1]))
    elif kind == "discard":
        offset, length = args
        cs = image.cluster_size
        image.discard(offset, length)
        first, end = -(-offset // cs) * cs, min((offset + length) // cs * cs, image.size)
        if offset + length == image.size:
            end = image.size
        if end > first:
            raw.write(first, bytes(end - first))
    elif kind == "resize":
        image.resize(args[0])
        raw.resize(args[0])


SCENARIOS = {
    "v2-1M": dict(size=8 * MiB, ops=[
        ("write", 12345, pattern(70000, 1)), ("write", 3 * MiB - 7, pattern(MiB + 20, 2)),
        ("write", 6 * MiB, bytes(MiB)), ("zeroes", 3 * MiB, MiB), ("zeroes", 100, 1000),
        ("write", 7 * MiB + 512, pattern(4096, 3)), ("discard", 0, 2 * MiB)]),
    "ext-64k": dict(size=5 * MiB + 1536, variant="ext", cluster_size=64 * KiB, ops=[
        ("write", 1, pattern(3 * MiB, 4)), ("zeroes", MiB, 100 * KiB),
        ("write", 5 * MiB + 1000, b"tail"), ("discard", 2 * MiB, MiB)]),
    "v2-4k-grow": dict(size=256 * KiB, cluster_size=4 * KiB, ops=[
        ("write", 0, pattern(256 * KiB, 5)), ("resize", 64 * MiB),
        ("write", 60 * MiB, pattern(MiB, 6)), ("write", 4 * KiB, b"again")]),
    "v2-63-sectors": dict(size=3 * MiB, cluster_size=63 * 512, ops=[
        ("write", 777, pattern(200 * KiB, 7)), ("resize", 20 * MiB),
        ("write", 19 * MiB, pattern(100, 8))]),
    "ext-grow": dict(size=MiB, variant="ext", cluster_size=512, ops=[
        ("write", 0, pattern(MiB, 9)), ("resize", 8 * MiB), ("write", 7 * MiB, b"x" * 999)]),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_drivebay_images_pass_qemu_img(tmp_path, name):
    scenario = dict(SCENARIOS[name])
    ops = scenario.pop("ops")
    size = scenario.pop("size")
    path, raw_path = tmp_path / "d.hdd", tmp_path / "d.raw"
    ParallelsDriver.create(path, size, **scenario)
    RawDriver.create(raw_path, size)
    with ParallelsDriver.open(path, writable=True) as image, \
            RawDriver.open(raw_path, writable=True) as raw:
        for op in ops:
            apply_both(image, raw, op)
        assert image.check().clean
    assert_qemu_agrees(path, raw_path)
    magic = b"WithouFreSpacExt" if scenario.get("variant") == "ext" else b"WithoutFreeSpace"
    assert path.read_bytes()[:16] == magic


# -- images qemu-img made, read here -------------------------------------------------------------

def qemu_data_ranges(path):
    ranges = json.loads(run("qemu-img", "map", "-f", "parallels", "--output=json", path).stdout)
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


@pytest.mark.parametrize("options", [[], ["-o", "cluster_size=64k"]], ids=["1M", "64k"])
def test_qemu_io_written_image_reads_here(tmp_path, options):
    path = tmp_path / "q.hdd"
    run("qemu-img", "create", "-q", "-f", "parallels", *options, path, "20M")
    writes = [(0x5A, 3 * MiB + 512, 64 * KiB), (0x11, 0, 4096), (0xC3, 19 * MiB, MiB),
              (0x77, 7 * MiB - 100, 200)]
    run("qemu-io", "-f", "parallels",
        *[a for p, o, n in writes for a in ("-c", f"write -P {p:#x} {o} {n}")], path)
    expected = bytearray(20 * MiB)
    for p, o, n in writes:
        expected[o:o + n] = bytes([p]) * n
    with ParallelsDriver.open(path) as image:
        assert image.size == qemu_info(path)["virtual-size"] == 20 * MiB
        assert image.info()["version"] == "parallels v2 (WithouFreSpacExt)"
        assert image.variant == "ext"
        assert image.read(0, image.size) == expected
        assert our_data_ranges(image) == qemu_data_ranges(path)
        assert image.check().clean


def test_qemu_converted_image_reads_here(tmp_path):
    size = 6 * MiB + 1536
    raw = bytearray(pattern(size, 10))
    raw[2 * MiB:3 * MiB] = bytes(MiB)                  # a zero cluster convert leaves out
    raw_path, path = tmp_path / "src.raw", tmp_path / "q.hdd"
    raw_path.write_bytes(raw)
    run("qemu-img", "convert", "-f", "raw", "-O", "parallels", raw_path, path)
    with ParallelsDriver.open(path) as image:
        assert image.size == qemu_info(path)["virtual-size"] == size
        assert image.read(0, size) == raw
        assert our_data_ranges(image) == qemu_data_ranges(path)


def test_drivebay_changes_to_qemu_images_pass_qemu_img(tmp_path):
    raw_path, path = tmp_path / "src.raw", tmp_path / "q.hdd"
    raw_path.write_bytes(pattern(5 * MiB, 11))
    run("qemu-img", "convert", "-f", "raw", "-O", "parallels", "-o", "cluster_size=64k",
        raw_path, path)
    with ParallelsDriver.open(path, writable=True) as image, \
            RawDriver.open(raw_path, writable=True) as raw:
        for op in [("write", MiB + 100, pattern(3 * MiB, 12)), ("zeroes", 0, MiB),
                   ("discard", 3 * MiB, MiB), ("resize", 300 * MiB),
                   ("write", 299 * MiB, pattern(MiB, 13)), ("write", 2 * MiB, bytes(MiB))]:
            apply_both(image, raw, op)
    assert_qemu_agrees(path, raw_path)
    run("qemu-io", "-f", "parallels", "-c", "write -P 0x33 10M 64k", path)
    with ParallelsDriver.open(path) as image:
        assert image.read(10 * MiB, 65536) == b"\x33" * 65536 and image.check().clean


def test_qemu_image_converts_to_v2(tmp_path):
    path, v2 = tmp_path / "q.hdd", tmp_path / "v2.hdd"
    run("qemu-img", "create", "-q", "-f", "parallels", path, "12M")
    run("qemu-io", "-f", "parallels", "-c", "write -P 0xab 1M 3M", "-c", "write -P 0x1 11M 1k",
        path)
    with ParallelsDriver.open(path) as image:
        convert(image, v2, "parallels")
    assert v2.read_bytes()[:16] == b"WithoutFreeSpace"
    run("qemu-img", "check", "-f", "parallels", v2)
    run("qemu-img", "compare", "-f", "parallels", "-F", "parallels", path, v2)
    with ParallelsDriver.open(v2) as image:
        assert image.info()["version"] == "parallels v2 (WithoutFreeSpace)"


def test_virtualbox_layout_reads_the_same_in_qemu(tmp_path):
    """A v2 image laid out as VirtualBox's backend makes it (63-sector
    clusters, data_off 0, the first cluster a sector past the BAT's end):
    qemu-img follows the BAT as drivebay does."""
    path, raw_path = tmp_path / "vbox.hdd", tmp_path / "vbox.raw"
    entries, cs = 112, 63 * 512
    data_start = 64 + 4 * entries + 512
    bat = [0] * entries
    bat[3], bat[0] = data_start // 512, (data_start + cs) // 512
    body = pattern(cs, 14) + pattern(cs, 15)
    path.write_bytes(b"WithoutFreeSpace" + struct.pack("<IIIIII", 2, 16, 2, 63, entries,
                                                        entries * 63)
                     + bytes(24) + struct.pack(f"<{entries}I", *bat) + bytes(512) + body)
    expected = bytearray(entries * cs)
    expected[3 * cs:4 * cs], expected[0:cs] = body[:cs], body[cs:]
    raw_path.write_bytes(expected)
    run("qemu-img", "compare", "-f", "parallels", "-F", "raw", path, raw_path)
    with ParallelsDriver.open(path) as image:
        assert image.read(0, image.size) == expected


def test_in_use_marker_between_drivebay_and_qemu(tmp_path):
    path = tmp_path / "q.hdd"
    run("qemu-img", "create", "-q", "-f", "parallels", path, "4M")
    image = ParallelsDriver.open(path, writable=True)
    try:
        r = run("qemu-io", "-f", "parallels", "-c", "read 0 512", path, ok=(1,))
        assert "not closed correctly" in r.stderr
        run("qemu-img", "check", "-f", "parallels", path, ok=(2,))
        run("qemu-io", "-r", "-f", "parallels", "-c", "read 0 512", path)   # read-only: fine
    finally:
        image.close()
    run("qemu-io", "-f", "parallels", "-c", "write -P 7 0 512", path)
    # as if qemu had died with the image open: drivebay refuses, qemu-img repairs
    with open(path, "r+b") as f:
        f.seek(44)
        f.write(struct.pack("<I", 0x746F6E59))
    with pytest.raises(CorruptImageError, match="not closed correctly"):
        ParallelsDriver.open(path, writable=True)
    run("qemu-img", "check", "-r", "all", "-f", "parallels", path)
    with ParallelsDriver.open(path, writable=True) as image:
        assert image.read(0, 512) == b"\x07" * 512

"""Chosen kill points: a writer killed between two specific metadata writes.

The random trials (test_crash.py) found these; each is reproduced here
deterministically, with the verdict of ``drivebay img check`` and, where it
reads the format the same way, of ``qemu-img check``.
"""

import shutil
import subprocess

import pytest

import crashlib
from drivebay.block.parallels import ParallelsDriver
from drivebay.block.vmdk import VmdkDriver

KiB, MiB = 1 << 10, 1 << 20
SECTOR = 512
GRAIN = 16 * KiB


def qemu_img_check(path, fmt):
    tool = shutil.which("qemu-img")
    assert tool, "qemu-img is not installed: the crash tests need qemu-utils"
    r = subprocess.run([tool, "check", "-f", fmt, str(path)], capture_output=True, text=True,
                       timeout=60)
    return r.returncode, r.stdout + r.stderr


def read_all(path):
    with VmdkDriver.open(path) as im:
        return im.read(0, im.size)


def extent_layout(path):
    """(gdOffset, rgdOffset, primary GT 0 sector, redundant GT 0 sector) in bytes."""
    with VmdkDriver.open(path) as im:
        ext = im.extents[0]
        return (ext.hdr.gdOffset * SECTOR, ext.hdr.rgdOffset * SECTOR,
                ext.gd[0] * SECTOR, ext.rgd[0] * SECTOR)


def test_vmdk_kill_between_the_grain_table_entry_and_its_redundant_copy(tmp_path):
    """A new grain's entry goes to the primary GT, then to the redundant one;
    killed in between, the redundant table lags: a leak, not corruption."""
    path = tmp_path / "disk.vmdk"
    VmdkDriver.create(path, 4 * MiB, grain_size=GRAIN)
    _, _, _, rgt = extent_layout(path)
    data = bytes(range(256)) * 64
    killed = crashlib.kill_before_write(
        path, lambda im: im.write(5 * GRAIN, data),
        lambda offset, _: rgt <= offset < rgt + 2048)
    assert killed
    code, output = crashlib.img_check(str(path))
    assert code == 3, output
    assert "redundant grain table 0 lags the primary in 1 entries" in output
    assert read_all(path)[5 * GRAIN:6 * GRAIN] == data      # the primary holds the grain
    assert qemu_img_check(path, "vmdk")[0] == 0             # qemu reads the primary only
    code, output = crashlib.img_check(str(path), repair=True)
    assert code == 0 and "copied grain table 0 over its redundant copy" in output
    assert crashlib.img_check(str(path))[0] == 0
    assert read_all(path)[5 * GRAIN:6 * GRAIN] == data


def test_vmdk_a_redundant_copy_differing_otherwise_is_an_error(tmp_path):
    """Only a redundant entry that is behind (unallocated) is a leak: one
    naming another grain is corruption."""
    path = tmp_path / "disk.vmdk"
    VmdkDriver.create(path, 4 * MiB, grain_size=GRAIN)
    with VmdkDriver.open(path, writable=True) as im:
        im.write(0, b"a" * GRAIN)
        im.write(GRAIN, b"b" * GRAIN)
    _, _, gt, rgt = extent_layout(path)
    with open(path, "r+b") as f:
        f.seek(gt)
        first_two = f.read(8)
        f.seek(rgt)
        f.write(first_two[4:] + first_two[:4])             # entries 0 and 1 swapped
    code, output = crashlib.img_check(str(path))
    assert code == 2 and "redundant grain table 0 differs from the primary (entry 0" in output


@pytest.mark.parametrize("second", [False, True], ids=["before-rgd-entry", "before-gd-entry"])
def test_vmdk_kill_while_adding_a_grain_table(tmp_path, second):
    """A new GT pair is zeroed, then the redundant GD entry, then the GD entry
    is written.  Killed before either entry, the tables are unused space;
    killed between them, the redundant entry points at an empty table the GD
    lacks.  Both are leaks, and the image takes writes again afterwards.
    (Writing the GD entry first left a GT without a redundant copy: an error.)"""
    path = tmp_path / "disk.vmdk"
    VmdkDriver.create(path, 4 * MiB, grain_size=4 * KiB)   # a GT per 2 MiB
    crashlib.drop_grain_tables(path)
    gd, rgd, _, _ = extent_layout(path)
    target = gd if second else rgd
    killed = crashlib.kill_before_write(
        path, lambda im: im.write(2 * MiB + 4 * KiB, b"x" * 4096),      # GT 1
        lambda offset, data: offset == target + 4 and len(data) == 4)
    assert killed
    code, output = crashlib.img_check(str(path))
    assert code == 3, output
    if second:
        assert "redundant grain directory entry 1 points at an empty grain table" in output
    assert qemu_img_check(path, "vmdk")[0] == 0
    assert read_all(path) == bytes(4 * MiB)
    with VmdkDriver.open(path, writable=True) as im:       # a VM restarted on the image
        im.write(2 * MiB + 4 * KiB, b"y" * 4096)            # a new GT pair past the dead one
    assert read_all(path)[2 * MiB + 4 * KiB:2 * MiB + 8 * KiB] == b"y" * 4096
    assert qemu_img_check(path, "vmdk")[0] == 0
    inside = "Leaked: 4096 bytes inside"                     # the dead pair: grains never move
    code, output = crashlib.img_check(str(path))
    assert code == 3 and output.startswith(inside), output
    code, output = crashlib.img_check(str(path), repair=True)
    assert code == 3 and output.startswith(inside), output  # said, not called clean


def test_parallels_kill_while_open_leaves_only_a_leak(tmp_path):
    """Killed between a new cluster's data and its BAT entry, a Parallels
    image keeps its in_use marker and an unreferenced cluster: leaks for
    drivebay (exit 3; qemu-img 7.2 counts the marker as an error, exit 2);
    ``check -r all`` clears both and qemu-img then agrees."""
    path = tmp_path / "disk.hdd"
    ParallelsDriver.create(path, 4 * MiB, cluster_size=64 * KiB)
    with ParallelsDriver.open(path, writable=True) as im:
        im.write(0, b"k" * 512)
    killed = crashlib.kill_before_write(
        path, lambda im: (im.write(0, b"m" * 512), im.write(MiB, b"n" * 512)),
        lambda offset, _: offset == 64 + 4 * 16)          # cluster 16's BAT entry
    assert killed
    code, output = crashlib.img_check(str(path))
    assert code == 3, output
    assert "not closed correctly" in output and "belong to no cluster" in output
    assert qemu_img_check(path, "parallels")[0] == 2
    with ParallelsDriver.open(path) as im:
        assert im.read(0, 512) == b"m" * 512 and im.read(MiB, 512) == bytes(512)
    assert crashlib.img_check(str(path), repair=True)[0] == 0
    assert crashlib.img_check(str(path))[0] == 0
    assert qemu_img_check(path, "parallels")[0] == 0
    with ParallelsDriver.open(path, writable=True) as im:
        assert im.read(0, 512) == b"m" * 512
        im.write(MiB, b"n" * 512)
    assert crashlib.img_check(str(path))[0] == 0


def test_vmdk_stream_killed_after_a_flush_keeps_the_flushed_grains_for_repair(tmp_path):
    """streamOptimized is not crash-safe as the sparse variants are (and is not
    in crashlib.FORMATS): the first grain written after a flush goes over the
    old tables and footer, and the new ones are only written at the next
    flush.  Killed in between, the image has no footer: ``check`` says so
    (exit 2) and ``check -r all`` rebuilds the tables from the grain markers,
    flushed grains included."""
    path = tmp_path / "disk.vmdk"
    VmdkDriver.create(path, 4 * MiB, variant="stream")
    first, second = crashlib.op_data(("write", 0, 64 * KiB, 1)), \
        crashlib.op_data(("write", 0, 64 * KiB, 2))         # incompressible grains
    tails = []

    def tail_write(offset, data):
        if data[8:16] == bytes(4) + b"\1\0\0\0":              # a GT marker starts the tail
            tails.append(offset)
        return len(tails) == 2

    def act(im):
        im.write(0, first)
        im.flush()
        im.write(3 * 64 * KiB, second)
        im.flush()
    assert crashlib.kill_before_write(path, act, tail_write)
    code, output = crashlib.img_check(str(path))
    assert code == 2 and "no footer marker" in output, output
    code, output = crashlib.img_check(str(path), repair=True)
    assert code == 0 and "rebuilt the grain tables" in output, output
    data = read_all(path)
    assert data[:64 * KiB] == first and data[3 * 64 * KiB:4 * 64 * KiB] in (second,
                                                                             bytes(64 * KiB))

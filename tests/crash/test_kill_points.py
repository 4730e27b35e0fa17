"""Chosen kill points: a writer killed between two specific metadata writes.

The random trials (test_crash.py) found these; each is reproduced here
deterministically, with the verdict of ``drivebay img check`` and, where it
reads the format the same way, of ``qemu-img check``.
"""

import os
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


def apply(image, op):
    if op[0] == "write":
        image.write(op[1], crashlib.op_data(op))
    elif op[0] == "zeroes":
        image.write_zeroes(op[1], op[2])
    else:
        image.flush()


def writes_after_each_op(path, ops):
    """Run ``ops`` on ``path`` here, recording the pwrite calls: (the count after each
    op, the first 16 bytes of each write)."""
    counts, heads, real = [], [], os.pwrite

    def counted(fd, data, offset):
        heads.append(bytes(data[:16]))
        return real(fd, data, offset)
    os.pwrite = counted
    try:
        with VmdkDriver.open(path, writable=True) as im:
            for op in ops:
                apply(im, op)
                counts.append(len(heads))
    finally:
        os.pwrite = real
    return counts, heads


def nth_write(k):
    seen = [0]

    def target(offset, data):
        seen[0] += 1
        return seen[0] == k
    return target


STREAM_OPS = [("write", 0, 64 * KiB, 1), ("flush",),
              ("write", 192 * KiB, 64 * KiB, 2), ("write", 100, 64 * KiB, 3), ("flush",),
              ("zeroes", 0, 4 * KiB), ("write", MiB, MiB + 640 * KiB, 4), ("flush",),
              ("write", 8 * MiB, 100, 5)]


@pytest.mark.parametrize("start", ["new", "crashed"])
def test_vmdk_stream_killed_before_each_write(tmp_path, start):
    """A stream-optimized extent killed before each of its writes in turn (new
    grain records go over the tables the file ends with, once a copy of them
    lies further on; 1.6 MiB of incompressible grains outrun the first copy):
    every time ``check`` passes, qemu-img too, and the flushed data is there.
    "crashed": the same on an image a writer left with records past its
    tables and a copy of them ending the file.  Of the run of grain records
    only every 12th and those next to a copy of the tables are kill points
    (each costs a run)."""
    template, work = tmp_path / "template.vmdk", tmp_path / "disk.vmdk"
    VmdkDriver.create(template, 16 * MiB, variant="stream")
    if start == "crashed":                 # killed with the third flush's tables unwritten
        shutil.copyfile(template, work)
        counts, _ = writes_after_each_op(work, STREAM_OPS)
        big = STREAM_OPS.index(("write", MiB, MiB + 640 * KiB, 4))
        assert crashlib.kill_before_write(
            template, lambda im: [apply(im, op) for op in STREAM_OPS], nth_write(counts[big] + 1))
        assert crashlib.img_check(str(template))[0] == 3
    initial = read_all(template)
    shutil.copyfile(template, work)
    counts, heads = writes_after_each_op(work, STREAM_OPS)
    record = [int.from_bytes(h[8:12], "little") != 0 for h in heads]   # a grain marker's size
    points = [k for k in range(1, len(heads) + 1)
              if not record[k - 1] or k % 12 == 0 or not all(record[max(0, k - 2):k + 1])]
    big = STREAM_OPS.index(("write", MiB, MiB + 640 * KiB, 4))
    assert sum(not r for r in record[counts[big - 1]:counts[big]]) == 2   # the copy, again
    assert len(points) < 40
    for k in points:
        shutil.copyfile(template, work)
        assert crashlib.kill_before_write(work, lambda im: [apply(im, op) for op in STREAM_OPS],
                                          nth_write(k))
        last_flush = max((i for i, op in enumerate(STREAM_OPS)
                          if op[0] == "flush" and counts[i] < k), default=-1)
        code, output = crashlib.img_check(str(work))
        assert code in (0, 3), f"killed before write {k}: {output}"
        assert qemu_img_check(work, "vmdk")[0] == 0, f"killed before write {k}"
        problem = crashlib.verify_data(read_all(work), initial, STREAM_OPS, last_flush)
        assert problem is None, f"killed before write {k}: {problem}"


def is_record(offset, data):
    """A stream's grain record: past the header and descriptor (64 KiB), a grain
    marker with a non-zero size (metadata markers have size 0)."""
    return offset >= 64 * KiB and data[8:12] != bytes(4)


def test_vmdk_stream_copy_of_the_tables_never_lands_inside_the_last_one(tmp_path):
    """A writer killed right after copying the tables past the grains leaves that
    copy ending the file.  The next writer's first record may be a little
    shorter than the one the dead writer was about to write, which puts its
    own copy a little before the old one: written there it would overwrite
    the start of the tables the file's footer points at.  It goes at the end
    of the file instead."""
    path = tmp_path / "disk.vmdk"
    VmdkDriver.create(path, 16 * MiB, variant="stream")
    grain = crashlib.op_data(("write", 0, 64 * KiB, 1))

    def first(im):
        im.write(0, grain)
        im.flush()
        im.write(3 * 64 * KiB, grain)
    records = []

    def second_record(offset, data):
        if is_record(offset, data):
            records.append(offset)
        return len(records) == 2
    assert crashlib.kill_before_write(path, first, second_record)
    size = os.path.getsize(path)
    assert crashlib.img_check(str(path))[0] in (0, 3)
    shorter = grain[:60 * KiB] + bytes(4 * KiB)         # compresses 4 KiB better
    assert crashlib.kill_before_write(path, lambda im: im.write(3 * 64 * KiB, shorter),
                                      is_record)
    assert os.path.getsize(path) > size                 # the new copy ends the file
    code, output = crashlib.img_check(str(path))
    assert code in (0, 3), output
    assert qemu_img_check(path, "vmdk")[0] == 0
    assert read_all(path)[:64 * KiB] == grain


def test_vmdk_stream_flush_with_no_new_record_copies_the_tables_first(tmp_path):
    """A flush whose only change is a grain zeroed (its entry cleared, no record
    written) writes the new tables where the old ones end the file, and here
    they are shorter (no GT has entries left): the old ones are copied further
    on first, so a kill before the truncation that drops the rest of them
    leaves a footer that points at whole tables."""
    path = tmp_path / "disk.vmdk"
    VmdkDriver.create(path, 16 * MiB, variant="stream")
    grain = crashlib.op_data(("write", 0, 64 * KiB, 1))
    with VmdkDriver.open(path, writable=True) as im:
        im.write(0, grain)

    def zero_it(im):
        im.write(0, bytes(64 * KiB))
        im.flush()
    assert crashlib.kill_before_write(path, zero_it, lambda offset, data: False,
                                      truncate_target=lambda size: True)
    code, output = crashlib.img_check(str(path))
    assert code in (0, 3), output
    assert qemu_img_check(path, "vmdk")[0] == 0
    assert read_all(path)[:64 * KiB] in (grain, bytes(64 * KiB))


def test_vmdk_stream_space_a_killed_writer_left_is_a_leak_repair_removes(tmp_path):
    """Killed with its copy of the tables ending the file, a stream writer leaves
    space between its grain records and that copy, where a consumer reading
    the markers in sequence stops: a leak, which ``check -r all`` removes by
    rewriting the stream."""
    path = tmp_path / "disk.vmdk"
    VmdkDriver.create(path, 16 * MiB, variant="stream")
    grain = crashlib.op_data(("write", 0, 64 * KiB, 1))
    with VmdkDriver.open(path, writable=True) as im:
        im.write(0, grain)
    assert crashlib.kill_before_write(path, lambda im: im.write(64 * KiB, grain), is_record)
    size = os.path.getsize(path)
    code, output = crashlib.img_check(str(path))
    assert code == 3 and "between the grain records and the tables" in output, output
    code, output = crashlib.img_check(str(path), repair=True)
    assert code == 0 and "rewrote" in output, output
    assert os.path.getsize(path) < size - MiB
    assert read_all(path)[:128 * KiB] == grain + bytes(64 * KiB)
    assert qemu_img_check(path, "vmdk")[0] == 0

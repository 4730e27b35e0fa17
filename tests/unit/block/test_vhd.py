"""VHD driver: on-disk layout byte for byte, data path, chains, resize, check, bad input.

Offsets and constants are stated here from the spec ("Virtual Hard Disk
Image Format Specification" 1.0: Hard Disk Footer Format, Dynamic Disk
Header Format), not taken from block/vhd.py, so a wrong layout cannot
confirm itself.
"""

import os
import random
import struct
import time
import uuid as uuidlib

import pytest

from drivebay.block import vhd
from drivebay.block.chain import open_chain
from drivebay.block.driver import ImageFile, State
from drivebay.block.drivers import open_image, probe
from drivebay.block.vhd import VhdDriver
from drivebay.errors import (ChainError, CorruptImageError, FormatError, ImageError,
                             UnsupportedFeatureError, UnsupportedOperation)

MiB = 1 << 20
# Hard Disk Footer Format
F_COOKIE, F_FEATURES, F_VERSION, F_DATA_OFFSET, F_TIMESTAMP = 0, 8, 12, 16, 24
F_CREATOR_APP, F_CREATOR_VER, F_CREATOR_OS = 28, 32, 36
F_ORIGINAL_SIZE, F_CURRENT_SIZE, F_GEOMETRY, F_DISK_TYPE = 40, 48, 56, 60
F_CHECKSUM, F_UNIQUE_ID = 64, 68
# Dynamic Disk Header Format
H_COOKIE, H_DATA_OFFSET, H_TABLE_OFFSET, H_VERSION, H_MAX_ENTRIES, H_BLOCK_SIZE, H_CHECKSUM = \
    0, 8, 16, 24, 28, 32, 36
H_PARENT_UUID, H_PARENT_TIME, H_PARENT_NAME, H_LOCATORS = 40, 56, 64, 576
VHD_EPOCH = 946684800           # 2000-01-01T00:00:00Z


def be32(buf, at):
    return struct.unpack_from(">I", buf, at)[0]


def be64(buf, at):
    return struct.unpack_from(">Q", buf, at)[0]


def ones_complement(buf, at):
    return ~(sum(buf) - sum(buf[at:at + 4])) & 0xFFFFFFFF


def raw(path):
    with open(path, "rb") as f:
        return f.read()


def poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def fix_footer(path, footer_at, also_copy=True):
    """Recompute the footer's Checksum (and copy it to offset 0)."""
    buf = bytearray(raw(path)[footer_at:footer_at + 512])
    struct.pack_into(">I", buf, F_CHECKSUM, ones_complement(buf, F_CHECKSUM))
    poke(path, footer_at, buf)
    if also_copy:
        poke(path, 0, buf)


def poke_footer(path, field_at, data):
    size = os.path.getsize(path)
    poke(path, size - 512 + field_at, data)
    poke(path, field_at, data)
    fix_footer(path, size - 512)


def poke_header(path, field_at, data, fix=True):
    poke(path, 512 + field_at, data)
    if fix:
        buf = bytearray(raw(path)[512:1536])
        struct.pack_into(">I", buf, H_CHECKSUM, ones_complement(buf, H_CHECKSUM))
        poke(path, 512, buf)


def bat_entry(path, i):
    data = raw(path)
    return be32(data, be64(data, 512 + H_TABLE_OFFSET) + 4 * i)


def set_bat_entry(path, i, value):
    poke(path, be64(raw(path), 512 + H_TABLE_OFFSET) + 4 * i, struct.pack(">I", value))


@pytest.fixture
def dynamic(tmp_path):
    path = str(tmp_path / "d.vhd")
    VhdDriver.create(path, 8 * MiB, block_size=MiB)
    return path


def pattern(n, seed=1):
    return random.Random(seed).randbytes(n)


# -- layout ----------------------------------------------------------------------------

def test_fixed_footer_byte_exact(tmp_path):
    path = str(tmp_path / "f.vhd")
    uid = uuidlib.UUID("12345678-9abc-def0-1234-56789abcdef0")
    before = int(time.time()) - VHD_EPOCH
    VhdDriver.create(path, 10 * MiB, variant="fixed", uuid=uid)
    data = raw(path)
    assert len(data) == 10 * MiB + 512
    ft = data[-512:]
    assert ft[F_COOKIE:F_COOKIE + 8] == b"conectix"
    assert be32(ft, F_FEATURES) == 2                       # the reserved bit, always set
    assert be32(ft, F_VERSION) == 0x00010000
    assert be64(ft, F_DATA_OFFSET) == 0xFFFFFFFFFFFFFFFF
    assert before <= be32(ft, F_TIMESTAMP) <= int(time.time()) - VHD_EPOCH
    assert ft[F_CREATOR_APP:F_CREATOR_APP + 4] == b"win "
    assert be32(ft, F_CREATOR_VER) == 0x00000001
    assert ft[F_CREATOR_OS:F_CREATOR_OS + 4] == b"Wi2k"
    assert be64(ft, F_ORIGINAL_SIZE) == be64(ft, F_CURRENT_SIZE) == 10 * MiB
    # 20480 sectors: 17 sectors/track, 4 heads, 301 cylinders ("CHS Calculation").
    assert be32(ft, F_GEOMETRY) == 301 << 16 | 4 << 8 | 17
    assert be32(ft, F_DISK_TYPE) == 2
    assert be32(ft, F_CHECKSUM) == ones_complement(ft, F_CHECKSUM)
    assert ft[F_UNIQUE_ID:F_UNIQUE_ID + 16] == uid.bytes
    assert ft[84:] == bytes(428)                            # SavedState 0, Reserved zero
    with open_image(path) as image:
        assert (image.uuid, image.size, image.variant) == (uid, 10 * MiB, "fixed")


def test_dynamic_footer_header_and_bat_byte_exact(tmp_path):
    path = str(tmp_path / "d.vhd")
    size = 5 * MiB + 512 * 3                                 # not a CHS size: kept as asked
    VhdDriver.create(path, size)
    data = raw(path)
    entries = 3                                              # ceil(size / 2 MiB)
    assert len(data) == 512 + 1024 + 512 + 512               # copy, header, BAT sector, footer
    ft = data[-512:]
    assert data[:512] == ft
    assert be64(ft, F_DATA_OFFSET) == 512
    assert be64(ft, F_CURRENT_SIZE) == size
    assert be32(ft, F_DISK_TYPE) == 3
    assert be32(ft, F_CHECKSUM) == ones_complement(ft, F_CHECKSUM)
    hd = data[512:1536]
    assert hd[H_COOKIE:H_COOKIE + 8] == b"cxsparse"
    assert be64(hd, H_DATA_OFFSET) == 0xFFFFFFFFFFFFFFFF
    assert be64(hd, H_TABLE_OFFSET) == 1536
    assert be32(hd, H_VERSION) == 0x00010000
    assert be32(hd, H_MAX_ENTRIES) == entries
    assert be32(hd, H_BLOCK_SIZE) == 2 * MiB
    assert be32(hd, H_CHECKSUM) == ones_complement(hd, H_CHECKSUM)
    assert hd[H_PARENT_UUID:] == bytes(1024 - H_PARENT_UUID)
    assert data[1536:2048] == b"\xff" * 512                  # BAT, padded to a sector with 0xFF
    with open_image(path) as image:
        assert image.size == size and image.variant == "dynamic" and not image.has_parent


def test_differencing_header_fields_and_locators(tmp_path):
    base = str(tmp_path / "base.vhd")
    VhdDriver.create(base, 4 * MiB)
    (tmp_path / "kids").mkdir()
    child = str(tmp_path / "kids" / "child.vhd")
    with open_image(base) as parent:
        VhdDriver.create(child, None, parent=parent)
        parent_uuid = parent.uuid
    data = raw(child)
    ft, hd = data[-512:], data[512:1536]
    assert be32(ft, F_DISK_TYPE) == 4 and data[:512] == ft
    assert be64(ft, F_CURRENT_SIZE) == 4 * MiB
    assert hd[H_PARENT_UUID:H_PARENT_UUID + 16] == parent_uuid.bytes
    assert abs(be32(hd, H_PARENT_TIME) - (int(os.stat(base).st_mtime) - VHD_EPOCH)) <= 1
    assert hd[H_PARENT_NAME:H_PARENT_NAME + 512].decode("utf-16-be").rstrip("\0") == "base.vhd"
    found = {}
    for i in range(8):
        at = H_LOCATORS + 24 * i
        code, space, length = hd[at:at + 4], be32(hd, at + 4), be32(hd, at + 8)
        offset = be64(hd, at + 16)
        if code == bytes(4):
            continue
        assert space >= length and offset % 512 == 0
        found[code] = data[offset:offset + length].decode("utf-16-le")
    assert found == {b"W2ru": "../base.vhd", b"W2ku": os.path.abspath(base)}
    with open_chain(child) as chain:
        assert chain.top.parent_uuid == parent_uuid
        assert chain.top.parent_locator == "../base.vhd"
        assert chain.images[1].path == os.path.join(str(tmp_path / "kids"), "../base.vhd")
        assert chain.top.info()["parent_name"] == "base.vhd"


def test_differencing_locators_from_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir("kids")
    VhdDriver.create("base.vhd", MiB)
    with open_image("base.vhd") as parent:
        VhdDriver.create(os.path.join("kids", "child.vhd"), None, parent=parent)
    with open_chain(os.path.join("kids", "child.vhd")) as chain:
        assert chain.top.parent_locator == "../base.vhd" and len(chain.images) == 2
        assert chain.top.info()["parent_locators"]["W2ku"] == str(tmp_path / "base.vhd")


@pytest.mark.parametrize("size,chs", [
    (10 * MiB, (301, 4, 17)),
    (1 << 30, (2080, 16, 63)),              # qemu-img rounds this up to 2081 cylinders
    ((65535 * 16 * 63 - 1) * 512, (65534, 16, 63)),
    (65535 * 16 * 63 * 512, (16191, 16, 255)),   # from here on 255 sectors per track
    (200 << 30, (65535, 16, 255)),           # above the CHS maximum
])
def test_chs_geometry(size, chs):
    assert vhd.chs_geometry(size) == chs


def test_uuid_given_and_new(tmp_path):
    a, b = str(tmp_path / "a.vhd"), str(tmp_path / "b.vhd")
    VhdDriver.create(a, MiB)
    VhdDriver.create(b, MiB)
    with open_image(a) as x, open_image(b) as y:
        assert x.uuid.version == 4 and x.uuid != y.uuid


# -- data path -------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["dynamic", "fixed"])
def test_write_read_reopen(tmp_path, variant):
    path = str(tmp_path / "x.vhd")
    VhdDriver.create(path, 6 * MiB, variant=variant, block_size=MiB)
    model = bytearray(6 * MiB)
    writes = [(0, 512), (777, 3000), (MiB - 100, 300), (3 * MiB, 2 * MiB), (6 * MiB - 1, 1)]
    with open_image(path, writable=True) as image:
        for i, (off, n) in enumerate(writes):
            data = pattern(n, seed=i)
            image.write(off, data)
            model[off:off + n] = data
        assert image.read(0, 6 * MiB) == model
    with open_image(path) as image:
        assert image.read(0, 6 * MiB) == model
        assert image.check().clean


def test_partial_block_in_dynamic_image_sets_only_its_bits(dynamic):
    with open_image(dynamic, writable=True) as image:
        image.write(MiB + 5 * 512, b"\x11" * 512)
        assert image.block_status(MiB, MiB) == [
            (MiB, 5 * 512, State.UNALLOCATED, None),
            (MiB + 5 * 512, 512, State.DATA, image.block_status(MiB + 5 * 512, 1)[0].host_offset),
            (MiB + 6 * 512, MiB - 6 * 512, State.UNALLOCATED, None)]
        assert image.read(MiB, MiB) == bytes(5 * 512) + b"\x11" * 512 + bytes(MiB - 6 * 512)
    entry = bat_entry(dynamic, 1)
    data = raw(dynamic)
    bitmap = data[entry * 512:entry * 512 + 512]             # 2048 sectors: 256 bytes, padded
    assert bitmap == b"\x04" + bytes(511)                    # sector 5, most significant bit first
    assert data[entry * 512 + 512:entry * 512 + 512 + 5 * 512] == bytes(5 * 512)


def test_new_block_goes_where_the_footer_was(dynamic):
    footer_at = os.path.getsize(dynamic) - 512
    with open_image(dynamic, writable=True) as image:
        image.write(3 * MiB, b"x")
    assert bat_entry(dynamic, 3) * 512 == footer_at
    data = raw(dynamic)
    assert len(data) == footer_at + 512 + MiB + 512
    assert data[-512:] == data[:512] and data[-512:][:8] == b"conectix"


def test_dynamic_bitmap_is_honoured(dynamic):
    """A 0 bit reads zeros even when the data area is not zero (spec, VirtualBox, libvhdi)."""
    with open_image(dynamic, writable=True) as image:
        image.write(0, b"\x22" * 1024)
    entry = bat_entry(dynamic, 0)
    poke(dynamic, entry * 512 + 512 + 1024, b"\x99" * 512)      # sector 2: bit 0
    with open_image(dynamic) as image:
        assert image.read(0, 1536) == b"\x22" * 1024 + bytes(512)


class CrashAfter(Exception):
    pass


@pytest.mark.parametrize("kind", ["dynamic", "differencing-zero"])
def test_crash_at_every_write_of_an_allocation(tmp_path, monkeypatch, kind):
    """Stop the process after each write of a block allocation: the image
    still opens and reads either the old or the new content."""
    base = str(tmp_path / "base.vhd")
    VhdDriver.create(base, 4 * MiB, block_size=MiB)
    with open_image(base, writable=True) as image:
        image.write(0, b"\xaa" * (4 * MiB))
    target, new = base, b"\x5b" * 4096
    if kind == "differencing-zero":
        target, new = str(tmp_path / "child.vhd"), bytes(4096)
        with open_image(base) as parent:
            VhdDriver.create(target, None, parent=parent, block_size=MiB)
    else:
        VhdDriver.create(target := str(tmp_path / "d.vhd"), 4 * MiB, block_size=MiB)
    old = raw(target)
    real = ImageFile.pwrite
    for crash_at in range(10):
        with open(target, "wb") as f:
            f.write(old)
        calls = []

        def pwrite(self, offset, data, what="data"):
            if len(calls) == crash_at:
                raise CrashAfter()
            calls.append(what)
            return real(self, offset, data, what)
        monkeypatch.setattr(ImageFile, "pwrite", pwrite)
        with open_chain(target, writable=True) as chain:
            try:
                if kind == "differencing-zero":
                    chain.write_zeroes(2 * MiB + 8192, 4096)
                else:
                    chain.write(2 * MiB + 8192, new)
                finished = True
            except CrashAfter:
                finished = False
        monkeypatch.setattr(ImageFile, "pwrite", real)
        with open_chain(target) as chain:
            got = chain.read(2 * MiB + 8192, 4096)
            before = b"\xaa" * 4096 if kind == "differencing-zero" else bytes(4096)
            assert got in (before, new), (crash_at, calls)
            assert not chain.top.check().errors, (crash_at, calls)
        if finished:
            assert got == new and crash_at >= 3       # footer, bitmap[, data], BAT entry
            break
    else:
        pytest.fail("the allocation never finished")


# -- differencing ----------------------------------------------------------------------

@pytest.fixture
def family(tmp_path):
    """A dynamic parent full of a pattern and an empty differencing child."""
    base, child = str(tmp_path / "base.vhd"), str(tmp_path / "child.vhd")
    VhdDriver.create(base, 4 * MiB, block_size=MiB)
    with open_image(base, writable=True) as parent:
        parent.write(0, pattern(4 * MiB))
    with open_image(base) as parent:
        VhdDriver.create(child, None, parent=parent, block_size=MiB)
    return base, child


@pytest.mark.parametrize("how", ["write_zeroes", "zero data"])
def test_zero_write_in_child_reads_zero_after_reopen(family, how):
    base, child = family
    with open_chain(child, writable=True) as chain:
        if how == "write_zeroes":
            chain.write_zeroes(MiB + 512, 3 * 512)
        else:
            chain.write(MiB + 512, bytes(3 * 512))
        assert chain.read(MiB + 512, 3 * 512) == bytes(3 * 512)
    with open_chain(child) as chain:
        expect = bytearray(pattern(4 * MiB))
        expect[MiB + 512:MiB + 4 * 512] = bytes(3 * 512)
        assert chain.read(0, 4 * MiB) == expect
        assert (MiB + 512, 3 * 512, State.DATA, 0) in chain.block_status(0, 4 * MiB)


def test_partial_writes_in_child_read_parent_around_them(family):
    base, child = family
    expect = bytearray(pattern(4 * MiB))
    with open_chain(child, writable=True) as chain:
        for sector in (0, 2, 4, 9, 2047, 2048, 4095):
            chain.write(sector * 512, b"\xc3" * 512)
            expect[sector * 512:sector * 512 + 512] = b"\xc3" * 512
    with open_chain(child) as chain:
        assert chain.read(0, 4 * MiB) == expect
        depths = {(o, n): d for o, n, s, d in chain.block_status(0, 3 * 512)}
        assert depths == {(0, 512): 0, (512, 512): 1, (1024, 512): 0}


def test_subsector_write_in_child_takes_the_parent_bytes_around_it(family):
    base, child = family
    with open_image(child, writable=True) as alone:               # no chain: no parent data
        with pytest.raises(ChainError, match="backing_read"):
            alone.write(1000, b"abc" * 1000)
        assert alone.block_status(0, 4 * MiB)[0].state is State.UNALLOCATED   # nothing written
        alone.write(1024, b"\x01" * 512)                        # whole sectors need no parent
    with open_chain(child, writable=True) as chain:
        chain.write(1000, b"abc")
        chain.write(4 * MiB - 700, b"xyz" * 200)
    expect = bytearray(pattern(4 * MiB))
    expect[1024:1536] = b"\x01" * 512
    expect[1000:1003] = b"abc"
    expect[4 * MiB - 700:4 * MiB - 100] = b"xyz" * 200
    with open_chain(child) as chain:
        assert chain.read(0, 4 * MiB) == expect


def test_discard_in_child_never_shows_the_parent(family):
    base, child = family
    with open_chain(child, writable=True) as chain:
        chain.write(0, b"\x01" * 4096)
        chain.discard(0, 8192)
        assert chain.read(0, 8192) == bytes(4096) + pattern(8192)[4096:]


def test_set_parent_rebase_and_detach(family, tmp_path):
    base, child = family
    # A locator longer than the space reserved at creation (4096 bytes of UTF-16).
    deep = os.path.join(*["d" * 200] * 11)
    os.makedirs(tmp_path / deep)
    other = str(tmp_path / deep / "other.vhd")
    VhdDriver.create(other, 4 * MiB)
    with open_image(other) as o:
        other_uuid = o.uuid
    with open_image(child, writable=True) as image:
        image.set_parent(other_uuid, os.path.join(deep, "other.vhd"))
        assert image.check().clean
    with open_chain(child) as chain:
        assert chain.top.parent_uuid == other_uuid
        assert chain.top.parent_locator == os.path.join(deep, "other.vhd")
        assert chain.images[1].uuid == other_uuid
        assert chain.read(0, 4096) == bytes(4096)
    with open_image(child, writable=True) as image:
        image.set_parent(None, None)
    with open_image(child) as image:
        assert image.variant == "dynamic" and not image.has_parent
        assert raw(child)[60:64] == b"\x00\x00\x00\x03"
        assert image.check().clean


# -- resize ----------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["dynamic", "fixed"])
def test_resize_grows_and_keeps_data(tmp_path, variant):
    path = str(tmp_path / "r.vhd")
    VhdDriver.create(path, 2 * MiB, variant=variant, block_size=4096)
    with open_image(path, writable=True) as image:
        image.write(2 * MiB - 4096, b"\x77" * 4096)
        image.resize(2 * MiB + 512)                    # inside the BAT's padding / one sector
        image.resize(8 * MiB)                          # the BAT must grow into data: blocks move
        image.write(8 * MiB - 512, b"\x88" * 512)
    with open_image(path) as image:
        assert image.size == 8 * MiB
        data = image.read(0, 8 * MiB)
        assert data[2 * MiB - 4096:2 * MiB] == b"\x77" * 4096
        assert data[2 * MiB:8 * MiB - 512] == bytes(6 * MiB - 512)
        assert data[-512:] == b"\x88" * 512
        assert be64(raw(path)[-512:], F_CURRENT_SIZE) == 8 * MiB
        report = image.check()
        assert report.clean, report


def test_resize_refuses_shrink_and_bad_sizes(dynamic):
    with open_image(dynamic, writable=True) as image:
        with pytest.raises(UnsupportedOperation, match="shrinking"):
            image.resize(MiB)
        with pytest.raises(ImageError, match="512-byte sectors"):
            image.resize(9 * MiB + 1)


# -- check -----------------------------------------------------------------------------

def _with_blocks(path):
    with open_image(path, writable=True) as image:
        for blk in range(3):
            image.write(blk * MiB, b"\x42" * 4096)


def plant_end_footer_checksum(path):
    poke(path, os.path.getsize(path) - 512 + F_CHECKSUM, b"\x00\x00\x00\x01")


def plant_copy_checksum(path):
    poke(path, F_CHECKSUM, b"\x00\x00\x00\x01")


def plant_copy_mismatch(path):
    poke(path, F_UNIQUE_ID, b"\x01" * 16)
    fix_footer(path, 0, also_copy=False)


def plant_overlapping_blocks(path):
    set_bat_entry(path, 5, bat_entry(path, 1))


def plant_block_over_bat(path):
    set_bat_entry(path, 6, 3)                         # sector 3 = byte 1536: the BAT


def plant_leak(path):
    set_bat_entry(path, 2, 0xFFFFFFFF)                # the last block: nothing refers to it


@pytest.mark.parametrize("plant,found,repairable", [
    (plant_end_footer_checksum, "Checksum", True),
    (plant_copy_checksum, "footer copy at offset 0: field Checksum", True),
    (plant_copy_mismatch, "differs from the footer at the end in UniqueId", True),
    (plant_overlapping_blocks, "BAT entries 1 and 5", False),
    (plant_block_over_bat, "overlaps the BAT", False),
])
def test_check_finds_planted_corruption(dynamic, plant, found, repairable):
    _with_blocks(dynamic)
    plant(dynamic)
    with open_image(dynamic, writable=True) as image:
        report = image.check()
        assert report.exit_code == 2 and any(found in e for e in report.errors), report
        report = image.check(repair=True)
        assert bool(report.repaired) == repairable, report
    if repairable:
        with open_image(dynamic) as image:
            assert image.check().clean
            assert image.read(MiB, 4096) == b"\x42" * 4096


def test_check_finds_and_repairs_a_leak(dynamic):
    _with_blocks(dynamic)
    size = os.path.getsize(dynamic)
    plant_leak(dynamic)
    with open_image(dynamic, writable=True) as image:
        report = image.check()
        assert (report.exit_code, len(report.leaks)) == (3, 1), report
        assert image.check(repair=True).repaired
    assert os.path.getsize(dynamic) == size - (MiB + 512)
    with open_image(dynamic, writable=True) as image:
        assert image.check().clean
        image.write(7 * MiB, b"z")                     # allocation after the repair
        assert image.read(MiB, 4096) == b"\x42" * 4096
        assert image.check().clean


def test_check_finds_blocks_past_the_end_of_a_file_truncated_while_open(dynamic):
    _with_blocks(dynamic)
    with open_image(dynamic) as image:
        os.truncate(dynamic, os.path.getsize(dynamic) - MiB)
        report = image.check()
        assert any("BAT entry 2" in e and "past the end" in e for e in report.errors), report


def test_dynamic_image_with_bad_end_footer_opens_from_the_copy(dynamic):
    _with_blocks(dynamic)
    poke(dynamic, os.path.getsize(dynamic) - 512, b"garbage!")
    with open_image(dynamic) as image:
        assert image.read(0, 4096) == b"\x42" * 4096
        assert any("Cookie" in e for e in image.check().errors)


# -- bad input -------------------------------------------------------------------------

def _fixed(tmp_path):
    path = str(tmp_path / "f.vhd")
    VhdDriver.create(path, MiB, variant="fixed")
    return path


@pytest.mark.parametrize("damage,error,words", [
    (lambda p: os.truncate(p, 300), FormatError, ["too small"]),
    (lambda p: poke(p, os.path.getsize(p) - 512, b"conectiX"), FormatError, ["Cookie", "conectix"]),
    (lambda p: poke(p, os.path.getsize(p) - 512 + F_CURRENT_SIZE + 7, b"\x01"), CorruptImageError,
     ["Checksum", "expected"]),
    (lambda p: poke_footer(p, F_DISK_TYPE, struct.pack(">I", 5)), UnsupportedFeatureError,
     ["DiskType is 5", "2 (fixed)"]),
    (lambda p: poke_footer(p, F_VERSION, struct.pack(">I", 0x00020000)), UnsupportedFeatureError,
     ["FileFormatVersion", "0x00010000"]),
    (lambda p: poke_footer(p, F_CURRENT_SIZE, struct.pack(">Q", 2 * MiB)), CorruptImageError,
     ["CurrentSize is 2097152", "truncated"]),
    (lambda p: poke_footer(p, F_CURRENT_SIZE, struct.pack(">Q", 3 << 40)), UnsupportedFeatureError,
     ["CurrentSize", "2 TiB"]),
], ids=["truncated", "cookie", "checksum", "disk-type", "version", "size-past-eof", "size-huge"])
def test_bad_fixed_footer_refused(tmp_path, damage, error, words):
    path = _fixed(tmp_path)
    damage(path)
    with pytest.raises(error) as e:
        VhdDriver.open(path)
    assert path in str(e.value) and all(w in str(e.value) for w in words), e.value


@pytest.mark.parametrize("damage,error,words", [
    (lambda p: os.truncate(p, 1000), CorruptImageError, ["DataOffset", "dynamic disk header"]),
    (lambda p: poke_footer(p, F_DATA_OFFSET, struct.pack(">Q", 1 << 40)), CorruptImageError,
     ["DataOffset"]),
    (lambda p: poke_header(p, H_COOKIE, b"cxsparsX"), FormatError, ["Cookie", "cxsparse"]),
    (lambda p: poke_header(p, H_MAX_ENTRIES + 3, b"\x07", fix=False), CorruptImageError,
     ["Checksum", "dynamic disk header"]),
    (lambda p: poke_header(p, H_VERSION, struct.pack(">I", 0x00020000)), UnsupportedFeatureError,
     ["HeaderVersion"]),
    (lambda p: poke_header(p, H_BLOCK_SIZE, struct.pack(">I", 3 * MiB)), CorruptImageError,
     ["BlockSize is 3145728", "power of two"]),
    (lambda p: poke_header(p, H_BLOCK_SIZE, struct.pack(">I", 256)), CorruptImageError,
     ["BlockSize is 256"]),
    (lambda p: poke_header(p, H_MAX_ENTRIES, struct.pack(">I", 0xFFFFFFF0)), CorruptImageError,
     ["MaxTableEntries", "inside the file"]),
    (lambda p: poke_header(p, H_MAX_ENTRIES, struct.pack(">I", 3)), CorruptImageError,
     ["MaxTableEntries is 3", "at least 8"]),
    (lambda p: poke_header(p, H_TABLE_OFFSET, struct.pack(">Q", 1 << 33)), CorruptImageError,
     ["TableOffset"]),
    (lambda p: set_bat_entry(p, 4, 0x00100000), CorruptImageError,
     ["BAT entry 4", "past the end"]),
], ids=["truncated", "data-offset", "header-cookie", "header-bitflip", "header-version",
        "block-size-not-pow2", "block-size-small", "huge-max-table-entries",
        "too-few-table-entries", "table-offset", "bat-past-eof"])
def test_bad_dynamic_header_refused(dynamic, damage, error, words):
    damage(dynamic)
    with pytest.raises(error) as e:
        VhdDriver.open(dynamic)
    assert dynamic in str(e.value) and all(w in str(e.value) for w in words), e.value


@pytest.mark.parametrize("field_at,value,words", [
    (16, 1 << 40, ["PlatformDataOffset"]),                   # PlatformDataOffset past the file
    (8, 1 << 20, ["PlatformDataLength is 1048576", "65536"]),  # PlatformDataLength unbounded
])
def test_bad_parent_locator_refused(family, field_at, value, words):
    base, child = family
    fmt = ">Q" if field_at == 16 else ">I"
    poke_header(child, H_LOCATORS + field_at, struct.pack(fmt, value))
    with pytest.raises(CorruptImageError) as e:
        VhdDriver.open(child)
    assert all(w in str(e.value) for w in words), e.value


def test_resize_child_moves_locators_out_of_the_bats_way(family):
    base, child = family
    with open_image(child, writable=True) as image:
        image.write(0, b"\x10" * 4096)
        locators_before = dict(image.info()["parent_locators"])
        image.resize(4 * MiB + 700 * MiB)        # 704 BAT entries: past the first sector
        assert image.check().clean
    with open_chain(child) as chain:
        assert chain.top.info()["parent_locators"] == locators_before
        assert len(chain.images) == 2 and chain.size == 704 * MiB
        assert chain.read(0, 8192) == b"\x10" * 4096 + pattern(8192)[4096:]
        assert chain.read(4 * MiB, 4096) == bytes(4096)


def test_write_zeroes_in_fixed_image(tmp_path):
    path = _fixed(tmp_path)
    with open_image(path, writable=True) as image:
        image.write(0, b"\xee" * 8192)
        image.write_zeroes(100, 5000)
        assert image.read(0, 8192) == b"\xee" * 100 + bytes(5000) + b"\xee" * 3092
    assert os.path.getsize(path) == MiB + 512


def test_create_refuses_bad_arguments(tmp_path):
    path = str(tmp_path / "x.vhd")
    with pytest.raises(ImageError, match="512-byte sectors"):
        VhdDriver.create(path, MiB + 1)
    with pytest.raises(ImageError, match="2040 GiB"):
        VhdDriver.create(path, (2040 << 30) + 512)
    with pytest.raises(ImageError, match="block_size 3000"):
        VhdDriver.create(path, MiB, block_size=3000)
    with pytest.raises(ImageError, match="variant"):
        VhdDriver.create(path, MiB, variant="sparse")
    with pytest.raises(ImageError, match="BAT entries"):
        VhdDriver.create(path, 64 << 30, block_size=512)
    VhdDriver.create(str(tmp_path / "p.vhd"), MiB)
    with open_image(str(tmp_path / "p.vhd")) as parent:
        with pytest.raises(ImageError, match="differencing VHD is dynamic"):
            VhdDriver.create(path, None, variant="fixed", parent=parent)
    assert not os.path.exists(path)


# -- probing and odd files -------------------------------------------------------------

def test_probe_fixed_dynamic_and_truncated_copy(tmp_path, dynamic):
    fixed = _fixed(tmp_path)
    assert probe(fixed) is VhdDriver and probe(dynamic) is VhdDriver
    os.truncate(dynamic, os.path.getsize(dynamic) - 512)       # the footer at the end is gone
    assert probe(dynamic) is VhdDriver
    with open_image(dynamic) as image:
        assert image.size == 8 * MiB


def test_old_511_byte_footer(tmp_path):
    path = _fixed(tmp_path)
    os.truncate(path, os.path.getsize(path) - 1)                # Virtual PC before 2004
    assert probe(path) is VhdDriver
    with open_image(path) as image:
        assert image.size == MiB


def test_info(family):
    base, child = family
    with open_image(child) as image:
        info = image.info()
    assert info["disk_type"] == "differencing" and info["block_size"] == MiB
    assert info["geometry"] == "120/4/17" and info["allocated_blocks"] == 0
    assert info["parent_locators"]["W2ru"] == "base.vhd"

"""VMDK driver: on-disk layout byte for byte, every subformat, chains, raw disks, bad input.

Offsets and constants are stated here from VMware's "Virtual Disk Format 5.0"
technical note (SparseExtentHeader, Marker, GrainMarker, the descriptor),
the UEFI spec (GPT) and the MBR layout, not taken from block/vmdk.py, so a
wrong layout cannot confirm itself.
"""

import os
import random
import re
import struct
import uuid as uuidlib
import zlib

import pytest

from drivebay.block.chain import open_chain
from drivebay.block.driver import State
from drivebay.block.drivers import open_image, probe
from drivebay.block.merge import merge_parent_into_child
from drivebay.block.vmdk import VmdkDriver, create_raw_disk
from drivebay.errors import (ChainError, CorruptImageError, FormatError, ImageError,
                             UnsupportedFeatureError, UnsupportedOperation)

MiB = 1 << 20
S = 512
GRAIN = 64 * 1024
# SparseExtentHeader ("Hosted Sparse Extent Header"), little-endian, packed
H_MAGIC, H_VERSION, H_FLAGS, H_CAPACITY, H_GRAIN, H_DESC_OFF, H_DESC_SIZE = 0, 4, 8, 12, 20, 28, 36
H_GTES, H_RGD, H_GD, H_OVERHEAD, H_UNCLEAN, H_EOL, H_COMPRESS = 44, 48, 56, 64, 72, 73, 77
KDMV = b"KDMV"
GD_AT_END = 0xFFFFFFFFFFFFFFFF
# Marker {u64 val; u32 size; u32 type}: types EOS 0, GT 1, GD 2, FOOTER 3
MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER = 0, 1, 2, 3


def u32(buf, at):
    return struct.unpack_from("<I", buf, at)[0]


def u64(buf, at):
    return struct.unpack_from("<Q", buf, at)[0]


def raw(path):
    with open(path, "rb") as f:
        return f.read()


def poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def descriptor_text(path):
    data = raw(path)
    if data[:4] == KDMV:
        data = data[u64(data, H_DESC_OFF) * S:][:u64(data, H_DESC_SIZE) * S]
    return data.split(b"\0", 1)[0].decode()


def fields(text):
    return dict(re.findall(r'^([A-Za-z.]+)\s*=\s*"?([^"\n]*)"?$', text, re.M))


def extent_lines(text):
    return re.findall(r'^(RW|RDONLY|NOACCESS) (\d+) (\w+)(?: "([^"]*)")?(?: (\d+))?$', text, re.M)


def pattern(n, seed=1):
    return bytes((i * 13 + seed) & 0xFF for i in range(n))


def create(tmp_path, variant="dynamic", size=8 * MiB, name="disk.vmdk", **kw):
    path = tmp_path / name
    VmdkDriver.create(path, size, variant=variant, **kw)
    return path


# -- on-disk layout of what drivebay creates -----------------------------------------------

def test_monolithic_sparse_header_is_the_spec_layout(tmp_path):
    path = create(tmp_path)
    data = raw(path)
    assert data[H_MAGIC:4] == KDMV
    assert u32(data, H_VERSION) == 1
    assert u32(data, H_FLAGS) == 0x3                 # valid new-line test | redundant GT
    assert u64(data, H_CAPACITY) == 8 * MiB // S
    assert u64(data, H_GRAIN) == 128
    assert (u64(data, H_DESC_OFF), u64(data, H_DESC_SIZE)) == (1, 20)
    assert u32(data, H_GTES) == 512
    # 8 MiB = 1 GT of 512 x 64 KiB: RGD at 21, its GT at 22..25, GD at 26, GT at 27..30
    assert (u64(data, H_RGD), u64(data, H_GD)) == (21, 26)
    assert u64(data, H_OVERHEAD) == 128              # rounded up to a grain
    assert data[H_UNCLEAN] == 0
    assert data[H_EOL:H_EOL + 4] == b"\n \r\n"
    assert struct.unpack_from("<H", data, H_COMPRESS)[0] == 0
    assert data[79:512] == bytes(433)
    assert u32(data, 21 * S) == 22 and u32(data, 26 * S) == 27
    assert len(data) == 128 * S


def test_embedded_descriptor_fields(tmp_path):
    path = create(tmp_path, adapter_type="lsilogic", uuid="12345678-1234-5678-9abc-def012345678")
    text = descriptor_text(path)
    assert text.startswith("# Disk DescriptorFile\nversion=1\n")
    f = fields(text)
    assert re.fullmatch(r"[0-9a-f]{8}", f["CID"])
    assert f["parentCID"] == "ffffffff"
    assert f["createType"] == "monolithicSparse"
    assert extent_lines(text) == [("RW", "16384", "SPARSE", "disk.vmdk", "")]
    assert f["ddb.adapterType"] == "lsilogic"
    assert (f["ddb.geometry.heads"], f["ddb.geometry.sectors"]) == ("255", "63")
    assert f["ddb.virtualHWVersion"] == "4"
    assert f["ddb.uuid.image"] == "12345678-1234-5678-9abc-def012345678"
    assert f["ddb.uuid.parent"] == str(uuidlib.UUID(int=0))
    with open_image(path) as im:
        assert im.uuid == uuidlib.UUID("12345678-1234-5678-9abc-def012345678")
        assert im.parent_uuid is None and not im.has_parent
        assert str(im.modification_uuid) == f["ddb.uuid.modification"]
        assert im.info()["geometry"] == (int(f["ddb.geometry.cylinders"]), 255, 63)


def test_first_write_goes_to_a_grain_at_the_end(tmp_path):
    path = create(tmp_path)
    with open_image(path, writable=True) as im:
        im.write(GRAIN + 100, b"hello")
    data = raw(path)
    gt, rgt = 27 * S, 22 * S
    assert u32(data, gt + 4) == 128 and u32(data, rgt + 4) == 128     # GTE of grain 1
    assert u32(data, gt) == 0
    assert data[128 * S + 100:128 * S + 105] == b"hello"
    assert data[128 * S:128 * S + 100] == bytes(100)
    assert len(data) == 128 * S + GRAIN


@pytest.mark.parametrize("variant,files", [
    ("dynamic", ["disk.vmdk"]),
    ("fixed", ["disk.vmdk", "disk-flat.vmdk"]),
    ("split2g", ["disk.vmdk", "disk-s001.vmdk"]),
    ("split2g-fixed", ["disk.vmdk", "disk-f001.vmdk"]),
    ("stream", ["disk.vmdk"]),
])
def test_each_subformat_writes_reads_and_reopens(tmp_path, variant, files):
    path = create(tmp_path, variant)
    assert sorted(os.listdir(tmp_path)) == sorted(files)
    rnd = random.Random(variant)
    model = bytearray(8 * MiB)
    with open_image(path, writable=True) as im:
        assert probe(path) is VmdkDriver
        for _ in range(40):
            off = rnd.randrange(8 * MiB)
            n = min(rnd.choice([1, 511, 4096, GRAIN, 100_000]), 8 * MiB - off)
            data = rnd.randbytes(n) if rnd.random() < 0.7 else bytes(n)
            if rnd.random() < 0.2:
                im.write_zeroes(off, n)
                data = bytes(n)
            else:
                im.write(off, data)
            model[off:off + n] = data
        assert im.read(0, 8 * MiB) == model
    with open_image(path) as im:
        assert im.variant == {"dynamic": "monolithicSparse", "fixed": "monolithicFlat",
                              "split2g": "twoGbMaxExtentSparse",
                              "split2g-fixed": "twoGbMaxExtentFlat",
                              "stream": "streamOptimized"}[variant]
        assert im.read(0, 8 * MiB) == model
        assert not im.check().errors


def test_flat_descriptor_and_extent(tmp_path):
    path = create(tmp_path, "fixed", 3 * MiB)
    text = descriptor_text(path)
    assert fields(text)["createType"] == "monolithicFlat"
    assert extent_lines(text) == [("RW", "6144", "FLAT", "disk-flat.vmdk", "0")]
    assert os.path.getsize(tmp_path / "disk-flat.vmdk") == 3 * MiB
    with open_image(path, writable=True) as im:
        im.write(1000, b"flat")
    assert raw(tmp_path / "disk-flat.vmdk")[1000:1004] == b"flat"


def test_split_extents_are_2047_mib(tmp_path):
    size = 5 << 30
    path = create(tmp_path, "split2g", size)
    lines = extent_lines(descriptor_text(path))
    assert [(a, n, t, f) for a, n, t, f, _ in lines] == [
        ("RW", "4192256", "SPARSE", "disk-s001.vmdk"),
        ("RW", "4192256", "SPARSE", "disk-s002.vmdk"),
        ("RW", str(size // S - 2 * 4192256), "SPARSE", "disk-s003.vmdk")]
    s2 = raw(tmp_path / "disk-s002.vmdk")
    assert s2[:4] == KDMV and u64(s2, H_CAPACITY) == 4192256
    boundary = 4192256 * S
    with open_image(path, writable=True) as im:
        im.write(boundary - 3, b"across")
    with open_image(path) as im:
        assert im.read(boundary - 3, 6) == b"across"
        kinds = [(e.offset, e.state) for e in im.block_status(boundary - GRAIN, 2 * GRAIN)]
        assert kinds == [(boundary - GRAIN, State.DATA), (boundary, State.DATA)]
    assert raw(tmp_path / "disk-s002.vmdk")[u64(s2, H_OVERHEAD) * S:][:3] == b"oss"


# -- streamOptimized -----------------------------------------------------------------------

def markers(path):
    """Walk a stream: ('grain', sector, lba, payload) and ('meta', sector, type, val)."""
    data = raw(path)
    at, out = u64(data, H_OVERHEAD) * S, []
    while at < len(data):
        val, size = u64(data, at), u32(data, at + 8)
        if size:
            out.append(("grain", at // S, val, data[at + 12:at + 12 + size]))
            at += -(-(12 + size) // S) * S
        else:
            kind = u32(data, at + 12)
            out.append(("meta", at // S, kind, val))
            at += S * (1 + (val if kind in (MARKER_GT, MARKER_GD, MARKER_FOOTER) else 0))
            if kind == MARKER_EOS:
                break
    return out


def test_stream_layout_header_grains_tables_footer(tmp_path):
    path = create(tmp_path, "stream", 4 * MiB)
    data = raw(path)
    assert u32(data, H_VERSION) == 3
    assert u32(data, H_FLAGS) == 0x30001           # new-line test | compressed | markers
    assert u64(data, H_GD) == GD_AT_END
    assert struct.unpack_from("<H", data, H_COMPRESS)[0] == 1          # deflate
    with open_image(path, writable=True) as im:
        im.write(0, pattern(GRAIN))
        im.write(3 * GRAIN, pattern(GRAIN, 7))
    data = raw(path)
    found = markers(path)
    grains = [m for m in found if m[0] == "grain"]
    assert [(lba, zlib.decompress(payload)) for _, _, lba, payload in grains] == \
        [(0, pattern(GRAIN)), (3 * 128, pattern(GRAIN, 7))]
    meta = [(kind, val) for tag, _, kind, val in found if tag == "meta"]
    assert meta == [(MARKER_GT, 4), (MARKER_GD, 1), (MARKER_FOOTER, 1), (MARKER_EOS, 0)]
    footer = data[-2 * S:-S]
    assert footer[:4] == KDMV and u32(footer, H_VERSION) == 3
    gd = u64(footer, H_GD)
    gt = u32(data, gd * S)
    assert u32(data, (gd - 1) * S + 12) == MARKER_GD
    assert u32(data, (gt - 1) * S + 12) == MARKER_GT
    assert u32(data, gt * S) == grains[0][1] and u32(data, gt * S + 12) == grains[1][1]
    assert data[-S:] == bytes(S)                                        # end of stream
    assert u64(data, H_GD) == GD_AT_END


def test_stream_partial_writes_gather_into_one_grain(tmp_path):
    path = create(tmp_path, "stream", 2 * MiB)
    with open_image(path, writable=True) as im:
        for at in range(0, 2 * MiB, 4096):
            im.write(at, pattern(4096, at // 4096))
    grains = [m for m in markers(path) if m[0] == "grain"]
    assert len(grains) == 32                       # every grain once, in order
    assert [lba for _, _, lba, _ in grains] == list(range(0, 4096, 128))
    with open_image(path) as im:
        assert not im.check().leaks


def test_stream_overwrite_appends_and_compact_drops_the_old_copy(tmp_path):
    path = create(tmp_path, "stream", 2 * MiB)
    with open_image(path, writable=True) as im:
        im.write(0, pattern(GRAIN, 1))
        im.write(GRAIN, pattern(GRAIN, 2))
        im.flush()
        im.write(0, pattern(GRAIN, 3))             # grain 0 is not the last record: appended
    with open_image(path) as im:
        assert im.read(0, 2 * GRAIN) == pattern(GRAIN, 3) + pattern(GRAIN, 2)
        report = im.check()
        assert not report.errors and report.exit_code == 3
        assert "superseded" in report.leaks[0]
    with open_image(path, writable=True) as im:
        im.compact()
        assert im.read(0, 2 * GRAIN) == pattern(GRAIN, 3) + pattern(GRAIN, 2)
    assert [lba for tag, _, lba, _ in markers(path) if tag == "grain"] == [0, 128]
    with open_image(path) as im:
        assert im.check().clean


def test_stream_rewrite_of_the_last_grain_reuses_its_place(tmp_path):
    path = create(tmp_path, "stream", 2 * MiB)
    with open_image(path, writable=True) as im:
        im.write(0, pattern(GRAIN, 1))
        im.flush()
        im.write(0, pattern(GRAIN, 2))
    assert len([m for m in markers(path) if m[0] == "grain"]) == 1
    with open_image(path) as im:
        assert im.check().clean and im.read(0, GRAIN) == pattern(GRAIN, 2)


def test_stream_without_footer_is_refused_and_rebuilt_by_repair(tmp_path):
    path = create(tmp_path, "stream", 2 * MiB)
    with open_image(path, writable=True) as im:
        im.write(0, pattern(3 * GRAIN))
    data = raw(path)
    gd = u64(data[-2 * S:], H_GD)
    with open(path, "r+b") as f:                  # a crash: the tables were never written
        f.truncate(grain_end := (min(gd, u32(data, gd * S)) - 1) * S)
    with pytest.raises(CorruptImageError, match="check -r all"):
        open_image(path)
    with VmdkDriver.open(path, writable=True, for_check=True) as im:
        report = im.check()
        assert report.errors and "footer" in report.errors[0]
        with pytest.raises(CorruptImageError):
            im.write(0, b"x")
        assert im.check(repair=True).repaired
    with open_image(path) as im:
        assert im.read(0, 3 * GRAIN) == pattern(3 * GRAIN)
        assert im.check().clean
    assert os.path.getsize(path) > grain_end


def test_stream_grain_that_does_not_inflate(tmp_path):
    path = create(tmp_path, "stream", 2 * MiB)
    with open_image(path, writable=True) as im:
        im.write(GRAIN, pattern(GRAIN))
    (_, sector, _, payload), = [m for m in markers(path) if m[0] == "grain"]
    poke(path, sector * S + 12 + 10, bytes(20))
    with open_image(path) as im:
        assert im.read(0, 100) == bytes(100)
        with pytest.raises(CorruptImageError, match=r"compressed grain 1 .*(inflate|truncated)"):
            im.read(GRAIN, 100)
    poke(path, sector * S, struct.pack("<Q", 999))             # a marker for another lba
    with open_image(path) as im, pytest.raises(CorruptImageError, match="lba 999"):
        im.read(GRAIN, 1)


# -- sparse details ------------------------------------------------------------------------

def test_zero_write_in_a_child_shadows_the_parent(tmp_path):
    """A zero write in a child must read zeros, never the parent (VirtualBox 7.2's bug)."""
    base, child = tmp_path / "base.vmdk", tmp_path / "child.vmdk"
    VmdkDriver.create(base, 4 * MiB)
    with open_image(base, writable=True) as im:
        im.write(0, b"P" * (4 * MiB))
    with open_image(base) as p:
        VmdkDriver.create(child, None, parent=p)
    with open_chain(child, writable=True) as ch:
        ch.write_zeroes(0, GRAIN)                  # a whole grain: a hole grain, not GTE 0
        ch.write(GRAIN, bytes(GRAIN))
        ch.write_zeroes(3 * GRAIN + 5, 10)         # part of a grain: copied up
    with open_chain(child) as ch:
        assert ch.read(0, 2 * GRAIN) == bytes(2 * GRAIN)
        assert ch.read(3 * GRAIN, GRAIN) == b"P" * 5 + bytes(10) + b"P" * (GRAIN - 15)
        assert ch.read(2 * GRAIN, GRAIN) == b"P" * GRAIN
    data = raw(child)
    gt = u32(data, u64(data, H_GD) * S)
    assert u32(data, gt * S) >= u64(data, H_OVERHEAD)     # grain 0 is allocated, not 0


def test_zeroed_grain_feature(tmp_path):
    base, child = tmp_path / "base.vmdk", tmp_path / "child.vmdk"
    VmdkDriver.create(base, 2 * MiB)
    with open_image(base, writable=True) as im:
        im.write(0, b"P" * (2 * MiB))
    with open_image(base) as p:
        VmdkDriver.create(child, None, parent=p, zeroed_grain=True)
    data = raw(child)
    assert u32(data, H_VERSION) == 2 and u32(data, H_FLAGS) == 0x7
    with open_chain(child, writable=True) as ch:
        ch.write_zeroes(GRAIN, GRAIN)
        assert [e.state for e in ch.top.block_status(GRAIN, GRAIN)] == [State.ZERO]
    data = raw(child)
    gt = u32(data, u64(data, H_GD) * S)
    assert u32(data, gt * S + 4) == 1                      # the zeroed-grain GTE
    assert os.path.getsize(child) == u64(data, H_OVERHEAD) * S   # no grain allocated
    with open_chain(child) as ch:
        assert ch.read(0, 3 * GRAIN) == b"P" * GRAIN + bytes(GRAIN) + b"P" * GRAIN


def test_block_status_and_discard(tmp_path):
    path = create(tmp_path)
    with open_image(path, writable=True) as im:
        im.write(2 * GRAIN, pattern(2 * GRAIN))
        st = im.block_status(0, 8 * MiB)
        assert [(e.offset, e.length, e.state) for e in st] == [
            (0, 2 * GRAIN, State.UNALLOCATED), (2 * GRAIN, 2 * GRAIN, State.DATA),
            (4 * GRAIN, 8 * MiB - 4 * GRAIN, State.UNALLOCATED)]
        assert st[1].host_offset == 128 * S
        im.discard(2 * GRAIN + 1, 2 * GRAIN)       # only the whole grain 3 goes
        assert im.read(2 * GRAIN, 2 * GRAIN) == pattern(2 * GRAIN)[:GRAIN] + bytes(GRAIN)


def test_cid_and_modification_uuid_change_once_per_open(tmp_path):
    path = create(tmp_path)
    before = fields(descriptor_text(path))
    with open_image(path, writable=True) as im:
        im.read(0, 10)
        assert fields(descriptor_text(path))["CID"] == before["CID"]
        im.write(0, b"a")
        first = fields(descriptor_text(path))
        assert first["CID"] != before["CID"]
        assert first["ddb.uuid.modification"] != before["ddb.uuid.modification"]
        assert str(im.modification_uuid) == first["ddb.uuid.modification"]
        im.write(1, b"b")
        assert fields(descriptor_text(path)) == first
    with open_image(path, writable=True) as im:
        im.write(2, b"c")
    assert fields(descriptor_text(path))["CID"] != first["CID"]


# -- differencing --------------------------------------------------------------------------

def test_child_records_parent_cid_path_and_uuids(tmp_path):
    (tmp_path / "snap").mkdir()
    base, child = tmp_path / "base.vmdk", tmp_path / "snap" / "child.vmdk"
    VmdkDriver.create(base, 4 * MiB, variant="split2g")
    with open_image(base, writable=True) as im:
        im.write(0, b"B" * (3 * MiB))
    with open_image(base) as p:
        VmdkDriver.create(child, None, parent=p)
        parent_uuid, parent_mod = p.uuid, p.modification_uuid
    f, pf = fields(descriptor_text(child)), fields(descriptor_text(base))
    assert f["parentCID"] == pf["CID"]
    assert f["parentFileNameHint"] == "../base.vmdk"
    assert f["ddb.uuid.parent"] == str(parent_uuid)
    assert f["ddb.uuid.parentmodification"] == str(parent_mod)
    with open_chain(child, writable=True) as ch:
        assert len(ch.images) == 2
        ch.write(MiB - 2, b"CCCC")
    with open_chain(child) as ch:
        assert ch.read(MiB - 4, 8) == b"BBCCCCBB"
        assert ch.read(3 * MiB, 4) == bytes(4)
    with open_image(child) as im:
        assert im.check().clean


def test_parent_changed_after_child_is_reported_and_repaired(tmp_path):
    base, child = tmp_path / "base.vmdk", tmp_path / "child.vmdk"
    VmdkDriver.create(base, MiB)
    with open_image(base) as p:
        VmdkDriver.create(child, None, parent=p)
    with open_image(base, writable=True) as im:
        im.write(0, b"changed")                    # the parent's CID changes
    with open_image(child) as im:
        report = im.check()
        assert report.exit_code == 2 and "parentCID" in report.errors[0]
    with open_image(child, writable=True) as im:
        assert im.check(repair=True).repaired
    assert fields(descriptor_text(child))["parentCID"] == fields(descriptor_text(base))["CID"]


def test_partial_write_without_the_chain_is_refused(tmp_path):
    base, child = tmp_path / "base.vmdk", tmp_path / "child.vmdk"
    VmdkDriver.create(base, MiB)
    with open_image(base) as p:
        VmdkDriver.create(child, None, parent=p)
    before = raw(child)
    with open_image(child, writable=True) as im:
        with pytest.raises(ChainError, match="backing_read"):
            im.write(10, b"x")
        im.write(GRAIN, pattern(GRAIN))            # a whole grain needs no parent
    assert raw(child)[:512] == before[:512]


def test_merge_into_child_makes_a_base(tmp_path):
    base, child = tmp_path / "base.vmdk", tmp_path / "child.vmdk"
    VmdkDriver.create(base, MiB)
    with open_image(base, writable=True) as im:
        im.write(0, b"base")
    with open_image(base) as p:
        VmdkDriver.create(child, None, parent=p)
    merge_parent_into_child(child)
    f = fields(descriptor_text(child))
    assert f["parentCID"] == "ffffffff" and "parentFileNameHint" not in f
    assert f["ddb.uuid.parent"] == str(uuidlib.UUID(int=0))
    os.unlink(base)
    with open_chain(child) as ch:
        assert len(ch.images) == 1 and ch.read(0, 4) == b"base"


def test_flat_and_stream_children_are_refused(tmp_path):
    base = create(tmp_path, name="base.vmdk")
    with open_image(base) as p:
        for variant in ("fixed", "stream"):
            with pytest.raises(ImageError, match="sparse"):
                VmdkDriver.create(tmp_path / f"{variant}.vmdk", None, variant=variant, parent=p)


# -- resize --------------------------------------------------------------------------------

def test_resize_sparse_within_the_grain_directory(tmp_path):
    path = create(tmp_path, size=MiB + 3 * S)       # a partly used last grain
    with open_image(path, writable=True) as im:
        im.write(MiB, b"e" * (3 * S))
        im.resize(100 * MiB)
        im.write(99 * MiB, b"tail")
    with open_image(path) as im:
        assert im.size == 100 * MiB
        assert im.read(MiB, 3 * S + 10) == b"e" * (3 * S) + bytes(10)
        assert im.read(99 * MiB, 4) == b"tail"
        assert im.check().clean
    assert extent_lines(descriptor_text(path))[0][1] == str(100 * MiB // S)
    assert u64(raw(path), H_CAPACITY) == 100 * MiB // S


def test_resize_past_the_grain_directory_is_refused(tmp_path):
    path = create(tmp_path)                         # GD of one sector: 128 GTs, 4 GiB
    with open_image(path, writable=True) as im:
        with pytest.raises(UnsupportedOperation, match="grain directory has room"):
            im.resize(5 << 30)
        assert im.size == 8 * MiB


def test_resize_split_adds_extent_files(tmp_path):
    path = create(tmp_path, "split2g", 2047 * MiB - 4 * MiB)
    with open_image(path, writable=True) as im:
        im.write(2040 * MiB, b"x")
        im.resize(2047 * MiB + 10 * MiB)
        im.write(2050 * MiB, b"y")
    lines = extent_lines(descriptor_text(path))
    assert [(n, f) for _, n, _, f, _ in lines] == [("4192256", "disk-s001.vmdk"),
                                                    ("20480", "disk-s002.vmdk")]
    with open_image(path) as im:
        assert im.read(2040 * MiB, 1) == b"x" and im.read(2050 * MiB, 1) == b"y"


def test_resize_shrink_and_raw_disks_are_refused(tmp_path):
    path = create(tmp_path, "fixed")
    with open_image(path, writable=True) as im:
        with pytest.raises(UnsupportedOperation):
            im.resize(4 * MiB)


# -- raw host disks ------------------------------------------------------------------------

def mbr_entry(kind, start, sectors):
    # status, CHS first, type, CHS last, LBA of first sector, number of sectors
    return struct.pack("<B3sB3sII", 0, bytes(3), kind, bytes(3), start, sectors)


def mbr_disk(path):
    """8 MiB: primary 1 at 2048 (2048 sectors), extended 2 at 4096..16383 holding
    logical 5 (EBR 4096, data 6144) and logical 6 (EBR 10240, data 10340)."""
    disk = bytearray(8 * MiB)
    table = [(0, mbr_entry(0x83, 2048, 2048) + mbr_entry(0x05, 4096, 12288))]
    table.append((4096, mbr_entry(0x83, 2048, 2048) + mbr_entry(0x05, 6144, 4096)))
    table.append((10240, mbr_entry(0x07, 100, 1000)))
    for sector, entries in table:
        disk[sector * S + 446:sector * S + 446 + len(entries)] = entries
        disk[sector * S + 510:sector * S + 512] = b"\x55\xAA"
    for n, (start, count) in {1: (2048, 2048), 5: (6144, 2048), 6: (10340, 1000)}.items():
        disk[start * S:(start + count) * S] = bytes([n]) * (count * S)
    path.write_bytes(disk)
    return bytes(disk)


def gpt_disk(path):
    """4 MiB, 8192 sectors: protective MBR, GPT header at 1, 128 entries at 2..33,
    partitions 1 (2048..4095) and 2 (5000..6999), backup at the end."""
    sectors = 8192
    disk = bytearray(sectors * S)
    disk[446:462] = mbr_entry(0xEE, 1, sectors - 1)
    disk[510:512] = b"\x55\xAA"
    entries = bytearray(128 * 128)
    kind = uuidlib.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4").bytes_le
    for i, (first, last) in enumerate([(2048, 4095), (5000, 6999)]):
        entries[i * 128:i * 128 + 56] = kind + uuidlib.uuid4().bytes_le + \
            struct.pack("<QQQ", first, last, 0)
        disk[first * S:(last + 1) * S] = bytes([0xA0 + i]) * ((last - first + 1) * S)
    header = bytearray(struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0, 1,
                                   sectors - 1, 34, sectors - 34, uuidlib.uuid4().bytes_le, 2,
                                   128, 128, zlib.crc32(entries)))
    struct.pack_into("<I", header, 16, zlib.crc32(header))
    disk[S:S + 92] = header
    disk[2 * S:2 * S + len(entries)] = entries
    disk[(sectors - 33) * S:(sectors - 1) * S] = entries
    path.write_bytes(disk)
    return bytes(disk)


def test_full_device_descriptor(tmp_path):
    disk = mbr_disk(tmp_path / "disk.img")
    path = create_raw_disk(tmp_path / "raw.vmdk", tmp_path / "disk.img")
    text = descriptor_text(path)
    assert fields(text)["createType"] == "fullDevice"
    assert extent_lines(text) == [("RW", "16384", "FLAT", str(tmp_path / "disk.img"), "0")]
    with open_image(path, writable=True) as im:
        assert im.read(0, im.size) == disk
        im.write(2048 * S, b"guest")
    assert raw(tmp_path / "disk.img")[2048 * S:2048 * S + 5] == b"guest"


def test_partitioned_device_mbr(tmp_path):
    disk = mbr_disk(tmp_path / "disk.img")
    path = create_raw_disk(tmp_path / "raw.vmdk", tmp_path / "disk.img", partitions=[1, 6])
    text = descriptor_text(path)
    assert fields(text)["createType"] == "partitionedDevice"
    dev = str(tmp_path / "disk.img")
    assert extent_lines(text) == [
        ("RW", "1", "FLAT", "raw-pt.vmdk", "0"), ("RW", "2047", "ZERO", "", ""),
        ("RW", "2048", "FLAT", dev, "2048"), ("RW", "1", "FLAT", "raw-pt.vmdk", "1"),
        ("RW", "6143", "ZERO", "", ""), ("RW", "1", "FLAT", "raw-pt.vmdk", "2"),
        ("RW", "99", "ZERO", "", ""), ("RW", "1000", "FLAT", dev, "10340"),
        ("RW", "5044", "ZERO", "", "")]
    assert raw(tmp_path / "raw-pt.vmdk") == disk[:S] + disk[4096 * S:4097 * S] + \
        disk[10240 * S:10241 * S]
    expect = bytearray(len(disk))
    for a, b in [(0, 1), (2048, 4096), (4096, 4097), (10240, 10241), (10340, 11340)]:
        expect[a * S:b * S] = disk[a * S:b * S]
    with open_image(path, writable=True) as im:
        assert im.read(0, im.size) == expect                  # partition 5 reads zeros
        with pytest.raises(ImageError, match=r"extent 2 \(RW 2047 ZERO\)"):
            im.write(2040 * S, bytes(16 * S))                  # spans a ZERO extent: refused
        im.write(0, b"\xEE" * S)                               # the guest's own MBR copy
        im.write(10340 * S, b"six")
    host = raw(tmp_path / "disk.img")
    assert host[:S] == disk[:S] and host[2040 * S:2056 * S] == disk[2040 * S:2056 * S]
    assert host[10340 * S:10340 * S + 3] == b"six"
    with open_image(path) as im:
        assert im.read(0, 4) == b"\xEE" * 4


def test_partitioned_device_gpt(tmp_path):
    disk = gpt_disk(tmp_path / "disk.img")
    path = create_raw_disk(tmp_path / "raw.vmdk", tmp_path / "disk.img", partitions=[2])
    lines = [(n, t, o) for _, n, t, _, o in extent_lines(descriptor_text(path))]
    assert lines == [("34", "FLAT", "0"), ("4966", "ZERO", ""), ("2000", "FLAT", "5000"),
                     ("1159", "ZERO", ""), ("33", "FLAT", "34")]
    with open_image(path) as im:
        got = im.read(0, im.size)
    assert got[:34 * S] == disk[:34 * S] and got[-33 * S:] == disk[-33 * S:]
    assert got[5000 * S:7000 * S] == disk[5000 * S:7000 * S]
    assert got[2048 * S:4096 * S] == bytes(2048 * S)
    with pytest.raises(ImageError, match="no partition 3"):
        create_raw_disk(tmp_path / "other.vmdk", tmp_path / "disk.img", partitions=[3])


def test_raw_disk_tables_that_are_wrong(tmp_path):
    dev = tmp_path / "disk.img"
    dev.write_bytes(bytes(MiB))
    with pytest.raises(FormatError, match="55 AA"):
        create_raw_disk(tmp_path / "a.vmdk", dev, partitions=[1])
    disk = bytearray(mbr_disk(dev))
    disk[4096 * S + 462:4096 * S + 478] = mbr_entry(0x05, 0, 1)   # EBR links to itself
    dev.write_bytes(disk)
    with pytest.raises(CorruptImageError, match="loops"):
        create_raw_disk(tmp_path / "b.vmdk", dev, partitions=[1])
    disk = bytearray(gpt_disk(dev))
    disk[2 * S] ^= 0xFF                                            # entry array CRC
    dev.write_bytes(disk)
    with pytest.raises(CorruptImageError, match="CRC32"):
        create_raw_disk(tmp_path / "c.vmdk", dev, partitions=[1])
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".vmdk")]


def handwritten(tmp_path, extents, create_type="monolithicFlat", name="hand.vmdk", extra=""):
    path = tmp_path / name
    path.write_text(f'# Disk DescriptorFile\nversion=1\nCID=1234abcd\nparentCID=ffffffff\n'
                    f'createType="{create_type}"\n{extra}\n# Extent description\n'
                    f'{extents}\n\n#DDB\nddb.adapterType = "ide"\n')
    return path


def test_rdonly_and_noaccess_extents(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"A" * 4096)
    (tmp_path / "b.bin").write_bytes(b"B" * 4096)
    path = handwritten(tmp_path, 'RDONLY 8 FLAT "a.bin" 0\nNOACCESS 8 FLAT "b.bin" 0\n'
                                 'RW 8 ZERO', "custom")
    with open_image(path, writable=True) as im:
        assert im.size == 12 * 1024
        assert im.read(0, 12 * 1024) == b"A" * 4096 + bytes(8192)
        for offset, n in [(0, 1), (4096, 1), (8192, 1)]:
            with pytest.raises(ImageError, match=f"extent {offset // 4096 + 1}"):
                im.write(offset, b"x")
    assert (tmp_path / "a.bin").read_bytes() == b"A" * 4096


def test_descriptor_round_trip_keeps_what_it_does_not_know(tmp_path):
    (tmp_path / "v-flat.vmdk").write_bytes(bytes(MiB))
    path = tmp_path / "v.vmdk"
    path.write_bytes(
        b'# Disk DescriptorFile\r\nversion=1\r\nencoding="windows-1252"\r\nCID=3c2a1\r\n'
        b'parentCID=ffffffff\r\nisNativeSnapshot="no"\r\ncreateType="vmfs"\r\n\r\n'
        b'# Extent description\r\nRW 2048 VMFS "v-flat.vmdk"\r\n\r\n'
        b'# Change Tracking File\r\nchangeTrackPath="v-ctk.vmdk"\r\n\r\n#DDB\r\n'
        b'ddb.toolsVersion = "10304"\r\nddb.uuid = "60 00 C2 9b 69 2f 6e 4a"\r\n'
        b'ddb.comment = "caf\xe9"\r\n')
    with open_image(path, writable=True) as im:
        assert im.descriptor.cid == 0x3c2a1 and im.uuid is None
        im.write(0, b"x")
    text = path.read_bytes().decode("windows-1252")
    f = fields(text)
    assert f["CID"] != "0003c2a1" and re.fullmatch(r"[0-9a-f]{8}", f["CID"])
    assert 'isNativeSnapshot="no"' in text and 'changeTrackPath="v-ctk.vmdk"' in text
    assert 'encoding="windows-1252"' in text and f["ddb.comment"] == "caf\xe9"
    assert f["ddb.toolsVersion"] == "10304" and f["ddb.uuid"] == "60 00 C2 9b 69 2f 6e 4a"
    assert extent_lines(text) == [("RW", "2048", "VMFS", "v-flat.vmdk", "")]
    assert (tmp_path / "v-flat.vmdk").read_bytes()[:1] == b"x"


def test_an_extent_file_opens_on_its_own(tmp_path):
    path = create(tmp_path, "split2g", 2 * MiB)
    with open_image(path, writable=True) as im:
        im.write(5, b"inside")
    extent = tmp_path / "disk-s001.vmdk"
    before = descriptor_text(path)
    with open_image(extent, writable=True) as im:
        assert im.size == 2 * MiB and im.read(5, 6) == b"inside"
        im.write(100, b"more")
    assert descriptor_text(path) == before
    with open_image(path) as im:
        assert im.read(100, 4) == b"more"


# -- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("extents,create_type,error,match", [
    ('RW 8 FLAT "../../etc/passwd" 0', "monolithicFlat", ImageError, "climbs out"),
    ('RW 8 FLAT "/etc/passwd" 0', "monolithicFlat", ImageError, "absolute path"),
    ('RW 8 FLAT "C:\\\\Windows\\\\x" 0', "monolithicFlat", ImageError, "absolute path"),
    ('RW 99999999999999999999 FLAT "a.bin" 0', "monolithicFlat", CorruptImageError,
     "extent line .* size"),
    ('RW 0 FLAT "a.bin" 0', "monolithicFlat", CorruptImageError, "size"),
    ('RW 8 FLAT "a.bin" 0', "monolithicTurbo", UnsupportedFeatureError, "createType"),
    ('RW 8 VMFSSPARSE "a.bin"', "vmfsSparse", UnsupportedFeatureError, "VMFSSPARSE"),
    ('RW 8 QUANTUM "a.bin"', "monolithicFlat", UnsupportedFeatureError, "type"),
    ('RW 8 ZERO "a.bin"', "monolithicFlat", CorruptImageError, "ZERO extent naming"),
    ('RW 8 FLAT', "monolithicFlat", CorruptImageError, "without a file name"),
    ('this is not an extent', "monolithicFlat", CorruptImageError, "line 8"),
    ('', "monolithicFlat", CorruptImageError, "no extent lines"),
    ('RW 8 FLAT "missing.bin" 0', "monolithicFlat", ImageError, "missing.bin"),
])
def test_bad_descriptors(tmp_path, extents, create_type, error, match):
    (tmp_path / "a.bin").write_bytes(bytes(4096))
    path = handwritten(tmp_path, extents, create_type)
    with pytest.raises(error, match=match) as e:
        open_image(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("header,match", [
    ("CID=xyz", "CID"), ("version=9", "version"), ('encoding="klingon"', "encoding")])
def test_bad_descriptor_fields(tmp_path, header, match):
    (tmp_path / "a.bin").write_bytes(bytes(4096))
    path = tmp_path / "d.vmdk"
    path.write_text(f'# Disk DescriptorFile\nCID=1\n{header}\ncreateType="monolithicFlat"\n'
                    f'RW 8 FLAT "a.bin" 0\n')
    with pytest.raises(ImageError, match=match):
        open_image(path)


def test_descriptor_size_and_extent_count_limits(tmp_path):
    path = tmp_path / "big.vmdk"
    path.write_bytes(b"# Disk DescriptorFile\n" + b"#" * (2 * MiB))
    with pytest.raises(FormatError, match="more than a descriptor"):
        VmdkDriver.open(path)
    (tmp_path / "a.bin").write_bytes(bytes(S))
    many = "\n".join(['RW 1 FLAT "a.bin" 0'] * 5000)
    with pytest.raises(UnsupportedFeatureError, match="extent count"):
        open_image(handwritten(tmp_path, many))


def test_raw_disk_paths_only_in_raw_descriptors(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"D" * 4096)
    path = handwritten(tmp_path, f'RW 8 FLAT "{tmp_path / "a.bin"}" 0', "fullDevice")
    with open_image(path) as im:
        assert im.read(0, 4) == b"DDDD"


@pytest.mark.parametrize("offset,value,error,match", [
    (H_VERSION, struct.pack("<I", 4), UnsupportedFeatureError, "version"),
    (H_FLAGS, struct.pack("<I", 0x3 | 1 << 9), UnsupportedFeatureError, "flags"),
    (H_GTES, struct.pack("<I", 0xFFFFFFFF), UnsupportedFeatureError, "numGTEsPerGT"),
    (H_GRAIN, struct.pack("<Q", 100), CorruptImageError, "grainSize"),
    (H_GRAIN, struct.pack("<Q", 0), CorruptImageError, "grainSize"),
    (H_GRAIN, struct.pack("<Q", 1 << 40), UnsupportedFeatureError, "grainSize"),
    (H_CAPACITY, struct.pack("<Q", 1 << 60), CorruptImageError, "capacity"),
    (H_GD, struct.pack("<Q", 1 << 40), CorruptImageError, "gdOffset"),
    (H_DESC_SIZE, struct.pack("<Q", 1 << 50), UnsupportedFeatureError, "descriptorSize"),
    (H_EOL, b"\n \n\n", CorruptImageError, "text-mode"),
    (H_COMPRESS, struct.pack("<H", 7), UnsupportedFeatureError, "compressAlgorithm"),
    (H_COMPRESS, struct.pack("<H", 1), UnsupportedFeatureError, "markers"),
])
def test_bad_sparse_headers(tmp_path, offset, value, error, match):
    path = create(tmp_path)
    poke(path, offset, value)
    with pytest.raises(error, match=match) as e:
        open_image(path)
    assert str(path) in str(e.value)


def test_capacity_past_the_table_limit_is_refused_before_allocating(tmp_path):
    path = create(tmp_path)
    poke(path, H_GRAIN, struct.pack("<Q", 8))
    poke(path, H_CAPACITY, struct.pack("<Q", 1 << 32))        # 2 TiB in 4 KiB grains
    with pytest.raises(UnsupportedFeatureError, match="in memory"):
        open_image(path)


def test_cowd_is_named(tmp_path):
    path = tmp_path / "esx.vmdk"
    path.write_bytes(b"COWD" + bytes(2044))
    assert probe(path) is VmdkDriver
    with pytest.raises(UnsupportedFeatureError, match="COWD"):
        open_image(path)


def test_grain_table_past_eof(tmp_path):
    path = create(tmp_path)
    poke(path, 26 * S, struct.pack("<I", 10_000))             # GD entry 0 -> sector 10000
    with pytest.raises(CorruptImageError, match="grain directory entry 0 .* past the end"):
        open_image(path)
    with VmdkDriver.open(path, for_check=True) as im:
        report = im.check()
        assert report.exit_code == 2
        assert any("grain directory entry 0" in e for e in report.errors)


def test_grain_table_entry_past_eof_and_overlaps(tmp_path):
    path = create(tmp_path)
    with open_image(path, writable=True) as im:
        im.write(0, pattern(2 * GRAIN))
    poke(path, 27 * S + 8, struct.pack("<I", 50_000))         # grain 2 past the end
    with open_image(path) as im:
        with pytest.raises(CorruptImageError, match="grain table 0 entry 2"):
            im.read(0, 1)
    with VmdkDriver.open(path, for_check=True) as im:
        assert any("entry 2" in e and "past the end" in e for e in im.check().errors)
    poke(path, 27 * S + 8, struct.pack("<I", 128))            # grain 2 = grain 0's sectors
    poke(path, 22 * S + 8, struct.pack("<I", 128))
    with VmdkDriver.open(path, writable=True, for_check=True) as im:
        report = im.check(repair=True)
        assert any("overlaps" in e for e in report.errors)
        assert any("not repaired" in e for e in report.errors)


def test_redundant_grain_table_mismatch_is_repaired(tmp_path):
    path = create(tmp_path)
    with open_image(path, writable=True) as im:
        im.write(0, pattern(GRAIN))
    poke(path, 22 * S, struct.pack("<I", 4096))               # the redundant GT: another grain
    with open_image(path) as im:
        report = im.check()
        assert report.exit_code == 2 and "redundant grain table 0" in report.errors[0]
    poke(path, 22 * S, struct.pack("<I", 0))                  # the redundant GT forgets grain 0
    with open_image(path) as im:                              # as a crash between the two
        report = im.check()                                   # entry writes leaves it
        assert report.exit_code == 3 and "redundant grain table 0 lags" in report.leaks[0]
    with open_image(path, writable=True) as im:
        assert im.check(repair=True).repaired
    with open_image(path) as im:
        assert im.check().clean and im.read(0, GRAIN) == pattern(GRAIN)
    assert u32(raw(path), 22 * S) == 128


def test_leaked_tail_is_truncated(tmp_path):
    path = create(tmp_path)
    with open_image(path, writable=True) as im:
        im.write(0, pattern(GRAIN))
    with open(path, "ab") as f:
        f.write(bytes(GRAIN))                                  # a grain written, never linked
    with open_image(path) as im:
        assert im.check().exit_code == 3
    with open_image(path, writable=True) as im:
        im.check(repair=True)
    assert os.path.getsize(path) == 128 * S + GRAIN


def test_probe_scores(tmp_path):
    sparse = create(tmp_path, name="s.vmdk")
    flat = create(tmp_path, "fixed", name="f.vmdk")
    assert VmdkDriver.probe(raw(sparse)[:4096], b"", 0) == 100
    assert VmdkDriver.probe(raw(flat), b"", os.path.getsize(flat)) == 100
    assert VmdkDriver.probe(b"\0" * 4096, b"", 4096) == 0
    assert probe(tmp_path / "f-flat.vmdk").format_name == "raw"


def test_create_refuses_bad_options_and_cleans_up(tmp_path):
    with pytest.raises(ImageError, match="variant"):
        VmdkDriver.create(tmp_path / "a.vmdk", MiB, variant="turbo")
    with pytest.raises(ImageError, match="multiple of 512"):
        VmdkDriver.create(tmp_path / "a.vmdk", 1000)
    with pytest.raises(ImageError, match="adapter type"):
        VmdkDriver.create(tmp_path / "a.vmdk", MiB, adapter_type="scsi2000")
    (tmp_path / "b-s002.vmdk").write_bytes(b"")               # in the way of the 2nd extent
    with pytest.raises(ImageError, match="b-s002.vmdk"):
        VmdkDriver.create(tmp_path / "b.vmdk", 2048 * MiB, variant="split2g")
    assert sorted(os.listdir(tmp_path)) == ["b-s002.vmdk"]
    VmdkDriver.create(tmp_path / "c.vmdk", MiB, variant="streamOptimized")   # VMware's name
    assert fields(descriptor_text(tmp_path / "c.vmdk"))["createType"] == "streamOptimized"


def test_info(tmp_path):
    path = create(tmp_path, "stream")
    with open_image(path) as im:
        info = im.info()
    assert info["create_type"] == "streamOptimized" and info["compressed"]
    assert info["grain_size"] == GRAIN and info["sparse_version"] == 3
    assert info["extents"] == [{"access": "RW", "sectors": 16384, "type": "SPARSE",
                                "file": "disk.vmdk", "offset": 0}]

"""Parallels driver: header bytes, both signatures, the in-use marker,
maintenance (resize, check/repair) and bad input.

Offsets are stated here from the spec (QEMU docs/interop/parallels.txt and
formats.md), not taken from block/parallels.py, so a wrong layout
declaration cannot confirm itself.
"""

import os
import struct

import pytest

from drivebay.block import drivers
from drivebay.block.convert import compare, convert
from drivebay.block.driver import State
from drivebay.block.parallels import ParallelsDriver
from drivebay.errors import (CorruptImageError, FormatError, ImageError, UnsupportedFeatureError,
                             UnsupportedOperation)

KiB, MiB = 1024, 1 << 20
V2, EXT = b"WithoutFreeSpace", b"WithouFreSpacExt"
IN_USE = 0x746F6E59
# header field offsets (parallels.txt "Bytes:")
MAGIC, VERSION, HEADS, CYLINDERS, TRACKS, BAT_ENTRIES = 0, 16, 20, 24, 28, 32
NB_SECTORS, INUSE, DATA_OFF, FLAGS, EXT_OFF, BAT = 36, 44, 48, 52, 56, 64


# -- helpers ---------------------------------------------------------------------------

def u32(path, offset):
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack("<I", f.read(4))[0]


def u64(path, offset):
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack("<Q", f.read(8))[0]


def raw_bytes(path, offset, length):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def put_u32(path, offset, value):
    poke(path, offset, struct.pack("<I", value))


def put_u64(path, offset, value):
    poke(path, offset, struct.pack("<Q", value))


def entry(path, cluster):
    return u32(path, BAT + 4 * cluster)


def make(tmp_path, name="disk.hdd", size=4 * MiB, **kw):
    path = tmp_path / name
    ParallelsDriver.create(path, size, **kw)
    return path


def filled(tmp_path, variant="dynamic", cluster_size=64 * KiB, size=MiB, writes=((0, b"A"),)):
    """An image with whole clusters written: ``writes`` is (cluster, byte) pairs."""
    path = make(tmp_path, size=size, variant=variant, cluster_size=cluster_size)
    with ParallelsDriver.open(path, writable=True) as im:
        for c, byte in writes:
            im.write(c * cluster_size, byte * cluster_size)
    return path


# -- creation: header bytes ---------------------------------------------------------------

def test_v2_header_fields_byte_exact(tmp_path):
    path = make(tmp_path, size=3 * MiB)
    assert raw_bytes(path, MAGIC, 16) == V2
    assert u32(path, VERSION) == 2
    assert u32(path, HEADS) == 16
    assert u32(path, CYLINDERS) == 3 * MiB // 512 // (16 * 63)
    assert u32(path, TRACKS) == 2048                  # 1 MiB clusters
    assert u32(path, BAT_ENTRIES) == 3
    assert u64(path, NB_SECTORS) == 3 * MiB // 512
    assert u32(path, INUSE) == 0
    assert u32(path, DATA_OFF) == 2048                # 1 MiB, cluster-aligned, in sectors
    assert u32(path, FLAGS) == 0
    assert u64(path, EXT_OFF) == 0
    assert raw_bytes(path, BAT, 12) == bytes(12)
    assert os.path.getsize(path) == MiB
    with ParallelsDriver.open(path) as im:
        assert im.size == 3 * MiB and im.cluster_size == MiB and im.variant == "dynamic"
        assert im.uuid is None and im.parent_uuid is None and not im.has_parent
        assert im.info()["version"] == "parallels v2 (WithoutFreeSpace)"


def test_ext_header_and_bat_in_clusters(tmp_path):
    path = make(tmp_path, size=MiB, variant="ext", cluster_size=64 * KiB)
    assert raw_bytes(path, MAGIC, 16) == EXT
    assert u32(path, TRACKS) == 128
    assert u32(path, BAT_ENTRIES) == 16
    assert u32(path, DATA_OFF) == 128                 # 64 KiB: past the 128-byte BAT, aligned
    with ParallelsDriver.open(path, writable=True) as im:
        im.write(5 * 64 * KiB + 7, b"x")
        im.write(2 * 64 * KiB, b"y" * 100)
        assert im.info()["version"] == "parallels v2 (WithouFreSpacExt)"
        assert im.variant == "ext"
    # clusters go to the end of the data area, entries count clusters from 0
    assert entry(path, 5) == 1 and entry(path, 2) == 2
    assert raw_bytes(path, 64 * KiB + 7, 1) == b"x"
    assert raw_bytes(path, 128 * KiB, 100) == b"y" * 100
    assert os.path.getsize(path) == 3 * 64 * KiB


def test_v2_bat_entries_are_sectors(tmp_path):
    path = make(tmp_path, size=MiB, cluster_size=4 * KiB)
    data_off = u32(path, DATA_OFF)
    assert data_off == 8                              # 64 + 4*256 bytes, aligned to 4 KiB
    with ParallelsDriver.open(path, writable=True) as im:
        im.write(10 * 4 * KiB, b"1" * 4 * KiB)
        im.write(3 * 4 * KiB + 100, b"2")
    assert entry(path, 10) == data_off and entry(path, 3) == data_off + 8
    assert raw_bytes(path, (data_off + 8) * 512 + 100, 1) == b"2"


def test_in_use_marker_set_while_open_and_cleared_on_close(tmp_path):
    path = make(tmp_path)
    with ParallelsDriver.open(path):
        assert u32(path, INUSE) == 0                  # read-only opens never mark
    im = ParallelsDriver.open(path, writable=True)
    assert u32(path, INUSE) == IN_USE
    im.write(0, b"z")
    im.close()
    assert u32(path, INUSE) == 0


def test_unclean_image_refuses_read_write_until_repaired(tmp_path):
    path = make(tmp_path)
    with ParallelsDriver.open(path, writable=True) as im:
        im.write(MiB, b"data")
    put_u32(path, INUSE, IN_USE)                      # as after a crash
    with pytest.raises(CorruptImageError, match="not closed correctly.*in_use"):
        ParallelsDriver.open(path, writable=True)
    assert u32(path, INUSE) == IN_USE
    with ParallelsDriver.open(path) as im:            # reading is fine
        assert im.read(MiB, 4) == b"data"
        assert "not closed correctly" in im.info()["in_use"]
    with ParallelsDriver.open(path, for_check=True) as im:
        report = im.check()
        # a leak (exit 3), as an interrupted allocation leaves no more; qemu-img says 2
        assert report.exit_code == 3 and not report.errors
        assert "not closed correctly" in report.leaks[0]
    with ParallelsDriver.open(path, writable=True, for_check=True):
        pass                                          # no repair: still unclean afterwards
    assert u32(path, INUSE) == IN_USE
    with ParallelsDriver.open(path, writable=True, for_check=True) as im:
        report = im.check(repair=True)
        assert report.clean and report.repaired
    assert u32(path, INUSE) == 0
    with ParallelsDriver.open(path, writable=True) as im:
        assert im.read(MiB, 4) == b"data"


@pytest.mark.parametrize("value", [0, 0x312E3276])
def test_closed_in_use_values_are_accepted(tmp_path, value):
    path = make(tmp_path)
    put_u32(path, INUSE, value)
    with ParallelsDriver.open(path, writable=True) as im:
        assert im.check().clean


def test_unknown_in_use_value_blocks_writing_only(tmp_path):
    path = make(tmp_path)
    put_u32(path, INUSE, 0x12345678)
    with ParallelsDriver.open(path) as im:
        assert im.check().errors == [
            "header field in_use is 0x12345678; expected 0, 0x312e3276 (closed) or "
            "0x746f6e59 (open)"]
    with pytest.raises(CorruptImageError, match="in_use is 0x12345678"):
        ParallelsDriver.open(path, writable=True)


# -- data path ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["dynamic", "ext"])
def test_read_write_reopen_block_status(tmp_path, variant):
    path = make(tmp_path, size=MiB + 512, variant=variant, cluster_size=64 * KiB)
    data = bytes(range(256)) * 700
    with ParallelsDriver.open(path, writable=True) as im:
        im.write(1000, data)
        im.write(MiB + 500, b"!!")                    # the last, partial cluster
        im.write(512 * KiB, bytes(64 * KiB))          # zeros into a free cluster: no allocation
        status = im.block_status(0, im.size)
        assert [(e.offset, e.length, e.state) for e in status] == [
            (0, 3 * 64 * KiB, State.DATA),            # three clusters adjacent in the file
            (3 * 64 * KiB, MiB - 3 * 64 * KiB, State.UNALLOCATED),
            (MiB, 512, State.DATA)]
        assert status[0].host_offset == 64 * KiB
    assert os.path.getsize(path) == 5 * 64 * KiB
    with ParallelsDriver.open(path) as im:
        assert im.read(1000, len(data)) == data
        assert im.read(0, 1000) == bytes(1000)
        assert im.read(MiB + 500, 12) == b"!!" + bytes(10)
        with pytest.raises(UnsupportedOperation):
            im.write(0, b"x")
    with ParallelsDriver.open(path, writable=True) as im:
        with pytest.raises(ImageError, match="outside"):
            im.write(MiB + 511, b"ab")


def test_write_zeroes_and_discard_keep_clusters_and_read_zeros(tmp_path):
    path = filled(tmp_path, writes=[(0, b"A"), (1, b"B"), (2, b"C")])
    cs = 64 * KiB
    with ParallelsDriver.open(path, writable=True) as im:
        im.write_zeroes(100, 50)
        im.write_zeroes(cs, cs)                        # a whole cluster: punched
        im.discard(2 * cs + 10, cs - 10)               # partial: unchanged
        assert im.read(0, 100) == b"A" * 100 and im.read(100, 50) == bytes(50)
        assert im.read(cs, cs) == bytes(cs)
        assert im.read(2 * cs, cs) == b"C" * cs
        im.discard(2 * cs, cs)
        assert im.read(2 * cs, cs) == bytes(cs)
        assert im.check().clean
        assert im.info()["allocated_clusters"] == 3


def test_convert_ext_to_v2_and_back(tmp_path):
    src = filled(tmp_path, variant="ext", writes=[(1, b"q"), (9, b"w")])
    v2 = tmp_path / "v2.hdd"
    with ParallelsDriver.open(src) as im:
        convert(im, v2, "parallels")                   # create makes v2 unless asked
    assert raw_bytes(v2, 0, 16) == V2
    back = tmp_path / "ext.hdd"
    with ParallelsDriver.open(v2) as im:
        convert(im, back, "parallels", variant="ext")
    assert raw_bytes(back, 0, 16) == EXT
    with ParallelsDriver.open(src) as a, ParallelsDriver.open(v2) as b, \
            ParallelsDriver.open(back) as c:
        assert compare(a, b) is None and compare(a, c) is None


def test_probe(tmp_path):
    for variant in ("dynamic", "ext"):
        path = make(tmp_path, name=f"{variant}.img", variant=variant)
        assert drivers.probe(path) is ParallelsDriver
    head = bytearray(V2 + bytes(48))
    head[VERSION] = 3
    assert ParallelsDriver.probe(bytes(head), b"", 64) == 100   # open says what is wrong
    assert ParallelsDriver.probe(b"WithoutFreeSpacE" + bytes(48), b"", 64) == 0


# -- creation errors -------------------------------------------------------------------------

@pytest.mark.parametrize("kw,match", [
    (dict(variant="fixed"), "raw image"),
    (dict(variant="stream"), "variant 'stream' unknown"),
    (dict(size=1000), "multiple of 512"),
    (dict(size=0), "positive multiple"),
    (dict(cluster_size=1000), "cluster size 1000"),
    (dict(cluster_size=512 << 20), "cluster size"),
    (dict(size=(1 << 32) * 512), "too large.*variant ext"),
    (dict(size=1 << 50, cluster_size=512, variant="ext"), "BAT entries"),
    (dict(comment="x"), "unknown Parallels creation options: comment"),
])
def test_create_refuses(tmp_path, kw, match):
    args = dict(size=MiB) | kw
    with pytest.raises(ImageError, match=match):
        ParallelsDriver.create(tmp_path / "x.hdd", **args)
    assert not os.path.exists(tmp_path / "x.hdd")


def test_create_refuses_a_parent(tmp_path):
    parent = make(tmp_path, name="p.hdd")
    with ParallelsDriver.open(parent) as p:
        with pytest.raises(ImageError, match="cannot have a parent"):
            ParallelsDriver.create(tmp_path / "c.hdd", MiB, parent=p)


def test_v2_up_to_its_sector_limit_and_ext_beyond(tmp_path):
    big = ((1 << 32) - 1) * 512                        # nb_sectors is a u32 in v2
    path = make(tmp_path, size=big // MiB * MiB)
    with ParallelsDriver.open(path, writable=True) as im:
        with pytest.raises(ImageError, match="convert it to --variant ext"):
            im.resize(big + 512)
    ext = make(tmp_path, name="e.hdd", size=3 << 40, variant="ext")
    assert u64(ext, NB_SECTORS) == (3 << 40) // 512
    with ParallelsDriver.open(ext) as im:
        assert im.size == 3 << 40


# -- resize -------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["dynamic", "ext"])
def test_resize_moves_clusters_out_of_the_growing_bat(tmp_path, variant):
    cs = 4 * KiB
    path = make(tmp_path, size=64 * KiB, variant=variant, cluster_size=cs)
    assert u32(path, DATA_OFF) * 512 == cs
    with ParallelsDriver.open(path, writable=True) as im:
        for c in range(16):
            im.write(c * cs, bytes([c + 1]) * cs)
        im.resize(8 * MiB)                             # 2048 entries: the BAT needs 3 clusters
        im.write(8 * MiB - 1, b"e")
        assert im.check().clean
    assert u32(path, BAT_ENTRIES) == 2048 and u64(path, NB_SECTORS) == 8 * MiB // 512
    assert u32(path, DATA_OFF) * 512 == 3 * cs
    with ParallelsDriver.open(path) as im:
        for c in range(16):
            assert im.read(c * cs, cs) == bytes([c + 1]) * cs
        assert im.read(64 * KiB, 4096) == bytes(4096)
        assert im.read(8 * MiB - 1, 1) == b"e"
        assert all(e.host_offset >= 3 * cs for e in im.block_status(0, im.size)
                   if e.state is State.DATA)


def test_resize_zeroes_the_tail_of_the_last_cluster(tmp_path):
    path = make(tmp_path, size=MiB, cluster_size=64 * KiB)
    with ParallelsDriver.open(path, writable=True) as im:
        im.write(MiB - 512, b"x" * 512)
    host = entry(path, 15) * 512
    poke(path, host + 64 * KiB - 512, b"garbage")       # past the old disk end: never data
    put_u64(path, NB_SECTORS, (MiB - 64 * KiB + 512) // 512)
    with ParallelsDriver.open(path, writable=True) as im:
        assert im.size == MiB - 64 * KiB + 512
        im.resize(MiB)
        assert im.read(MiB - 64 * KiB + 512, 64 * KiB - 512) == bytes(64 * KiB - 512)


def test_shrink_is_refused(tmp_path):
    path = make(tmp_path)
    with ParallelsDriver.open(path, writable=True) as im:
        with pytest.raises(UnsupportedOperation, match="shrinking"):
            im.resize(MiB)
        with pytest.raises(ImageError, match="multiple of 512"):
            im.resize(5 * MiB + 1)


# -- VirtualBox's layout ------------------------------------------------------------------------

def virtualbox_image(path, clusters):
    """A v2 image laid out as VirtualBox's Parallels backend creates and grows
    one: 63-sector clusters, data_off and in_use zero (its header calls those
    bytes padding), data from the end of the BAT rounded up to the next
    sector (a whole sector later when the BAT ends on a boundary)."""
    entries = 112                                      # 64 + 4*112 = 512: the quirky case
    cs = 63 * 512
    header = V2 + struct.pack("<IIIIII", 2, 16, 2, 63, entries, entries * 63) + bytes(24)
    data_start = 64 + 4 * entries + 512
    bat = [0] * entries
    body = bytearray()
    for i, (cluster, byte) in enumerate(clusters):
        bat[cluster] = (data_start + i * cs) // 512
        body += byte * cs
    with open(path, "wb") as f:
        f.write(header + struct.pack(f"<{entries}I", *bat) + bytes(512) + body)
    return cs


def test_reads_and_writes_virtualbox_layout(tmp_path):
    path = tmp_path / "vbox.hdd"
    cs = virtualbox_image(path, [(3, b"a"), (0, b"b")])
    with ParallelsDriver.open(path, writable=True) as im:
        assert im.cluster_size == cs and im.size == 112 * cs
        assert im.read(3 * cs, cs) == b"a" * cs and im.read(0, cs) == b"b" * cs
        assert im.check().clean                          # the 512-byte gap is padding
        im.write(50 * cs + 1, b"new")
    assert u32(path, DATA_OFF) == 0                      # VirtualBox's zero is kept
    assert entry(path, 50) == (64 + 448 + 512 + 2 * cs) // 512
    with ParallelsDriver.open(path, writable=True) as im:
        im.resize(200 * cs)                              # BAT grows past its first sector
        assert im.read(3 * cs, cs) == b"a" * cs and im.read(50 * cs + 1, 3) == b"new"
        assert im.check().clean
    assert u32(path, DATA_OFF) == 0 and u32(path, BAT_ENTRIES) == 200


# -- check and repair ------------------------------------------------------------------------

def test_entry_past_end_of_file_is_refused_then_repaired(tmp_path):
    path = filled(tmp_path, writes=[(0, b"A"), (1, b"B")])
    put_u32(path, BAT + 4 * 5, 0x00100000)               # sector 1 Mi: far past the end
    with pytest.raises(CorruptImageError, match="cluster 5 is 1048576.*past the end of the"):
        ParallelsDriver.open(path)
    with ParallelsDriver.open(path, for_check=True) as im:
        report = im.check()
        assert report.exit_code == 2 and "past the end" in report.errors[0]
        with pytest.raises(UnsupportedOperation):
            im.write(0, b"x")
    with ParallelsDriver.open(path, writable=True, for_check=True) as im:
        with pytest.raises(CorruptImageError, match="refusing to write"):
            im.write(0, b"x")
        report = im.check(repair=True)
        assert report.clean and "cleared 1 BAT entries" in report.repaired[0]
    assert entry(path, 5) == 0
    with ParallelsDriver.open(path) as im:
        assert im.read(0, 64 * KiB) == b"A" * 64 * KiB
        assert im.read(5 * 64 * KiB, 64 * KiB) == bytes(64 * KiB)


def test_entry_inside_the_header_is_refused(tmp_path):
    path = filled(tmp_path)
    put_u32(path, BAT + 4 * 2, 0)                        # fine: unallocated
    put_u32(path, BAT + 4 * 3, 1)                        # sector 1: the BAT itself
    with pytest.raises(CorruptImageError, match="cluster 3 is 1: offset 512 lies before the "
                                                "data area"):
        ParallelsDriver.open(path)


def test_duplicate_entries_are_refused_then_repaired(tmp_path):
    path = filled(tmp_path, writes=[(0, b"A"), (1, b"B")])
    put_u32(path, BAT + 4 * 7, entry(path, 1))           # cluster 7 shares cluster 1's space
    with pytest.raises(CorruptImageError, match="shares file space"):
        ParallelsDriver.open(path)
    with ParallelsDriver.open(path, writable=True, for_check=True) as im:
        assert im.read(7 * 64 * KiB, 64 * KiB) == b"B" * 64 * KiB
        report = im.check(repair=True)
        assert report.clean, report
    assert entry(path, 7) != entry(path, 1)
    with ParallelsDriver.open(path, writable=True) as im:
        assert im.check().clean
        im.write(7 * 64 * KiB, b"C")                     # now independent
        assert im.read(64 * KiB, 1) == b"B" and im.read(7 * 64 * KiB, 2) == b"CB"


def test_leaks_are_reported_and_repaired(tmp_path):
    path = filled(tmp_path, writes=[(0, b"A"), (1, b"B"), (2, b"C")])
    cs = 64 * KiB
    with open(path, "ab") as f:
        f.write(b"\xee" * (cs + 100))                    # an interrupted allocation's leftovers
    with ParallelsDriver.open(path, for_check=True) as im:
        report = im.check()
        assert report.exit_code == 3 and "belong to no cluster" in report.leaks[0]
    put_u32(path, BAT + 4 * 1, 0)                        # a gap in the middle too
    with ParallelsDriver.open(path, writable=True, for_check=True) as im:
        report = im.check()
        assert len(report.leaks) == 2
        report = im.check(repair=True)
        assert report.clean
    assert os.path.getsize(path) == 3 * cs               # data offset + two clusters
    with ParallelsDriver.open(path) as im:
        assert im.read(0, cs) == b"A" * cs and im.read(2 * cs, cs) == b"C" * cs
        assert im.read(cs, cs) == bytes(cs)


def test_a_write_after_a_leak_reuses_it(tmp_path):
    path = filled(tmp_path)
    with open(path, "ab") as f:
        f.write(b"\xee" * 1000)
    with ParallelsDriver.open(path, writable=True) as im:
        im.write(3 * 64 * KiB + 10, b"k")
        assert im.read(3 * 64 * KiB, 64 * KiB) == bytes(10) + b"k" + bytes(64 * KiB - 11)
        assert im.check().clean


def test_entry_beyond_what_a_u32_says_is_refused(tmp_path):
    path = make(tmp_path, size=4 * MiB)
    last = 0xFFFFFFFF - 2048 + 1                         # the last cluster a u32 sector can hold
    put_u32(path, BAT, last)
    os.truncate(path, (last + 2048) * 512)               # sparse, 2 TiB
    with ParallelsDriver.open(path, writable=True) as im:
        with pytest.raises(ImageError, match="cannot be recorded: BAT entries are u32 sectors"):
            im.write(MiB, b"x")
        assert im.read(MiB, 1) == b"\0"
    assert entry(path, 1) == 0


# -- flags and extensions ---------------------------------------------------------------------

def test_empty_image_flag_reads_zeros_and_is_read_only(tmp_path):
    path = filled(tmp_path)
    put_u32(path, FLAGS, 1)
    with ParallelsDriver.open(path) as im:
        assert im.read(0, 64 * KiB) == bytes(64 * KiB)
    with pytest.raises(UnsupportedFeatureError, match="Empty Image"):
        ParallelsDriver.open(path, writable=True)
    assert u32(path, INUSE) == 0


def test_format_extension_is_read_only(tmp_path):
    path = filled(tmp_path, variant="ext", writes=[(0, b"A"), (1, b"B")])
    put_u32(path, BAT + 4, 0)                            # cluster 1's space becomes the extension
    put_u64(path, EXT_OFF, 2 * 128)
    with ParallelsDriver.open(path) as im:
        assert im.read(0, 10) == b"A" * 10 and im.info()["ext_off"] == 256
        assert im.check().clean
    with pytest.raises(UnsupportedFeatureError, match="Format Extension.*ext_off is 256"):
        ParallelsDriver.open(path, writable=True)


def test_v2_high_nb_sectors_bytes_are_ignored_and_repaired(tmp_path):
    path = make(tmp_path)
    put_u64(path, NB_SECTORS, (1 << 40) | (4 * MiB // 512))
    with ParallelsDriver.open(path) as im:
        assert im.size == 4 * MiB                        # VirtualBox and QEMU read the low half
        assert "high 4 bytes" in im.check().errors[0]
    with ParallelsDriver.open(path, writable=True, for_check=True) as im:
        assert im.check(repair=True).clean
    assert u64(path, NB_SECTORS) == 4 * MiB // 512


# -- bad headers --------------------------------------------------------------------------------

def header_of(tmp_path, variant="dynamic"):
    path = make(tmp_path, size=MiB, variant=variant, cluster_size=64 * KiB)
    return path


@pytest.mark.parametrize("variant,offset,value,error,match", [
    ("dynamic", VERSION, 3, UnsupportedFeatureError, "field version is 3; expected 2"),
    ("ext", VERSION, 4, UnsupportedFeatureError, "field version is 4; expected 2"),
    ("dynamic", VERSION, 1, UnsupportedFeatureError, "field version is 1"),
    ("dynamic", TRACKS, 0, CorruptImageError, "field tracks is 0"),
    ("dynamic", TRACKS, 1 << 20, UnsupportedFeatureError, "field tracks is 1048576"),
    ("dynamic", TRACKS, 0xFFFFFFFF, UnsupportedFeatureError, "field tracks"),
    ("dynamic", BAT_ENTRIES, 0xFFFFFFFF, UnsupportedFeatureError, "nb_bat_entries is 4294967295"),
    ("dynamic", BAT_ENTRIES, 40000, CorruptImageError, "nb_bat_entries is 40000.*inside the"),
    ("dynamic", BAT_ENTRIES, 1, CorruptImageError, "field nb_sectors is 2048; expected at most"),
    ("dynamic", NB_SECTORS, 0xFFFFFFFF, CorruptImageError, "field nb_sectors is 4294967295"),
    ("dynamic", DATA_OFF, 0x10000, CorruptImageError, "data_off is 65536.*inside the"),
    ("ext", DATA_OFF, 0, CorruptImageError, "data_off is 0; expected a non-zero multiple"),
    ("ext", DATA_OFF, 129, CorruptImageError, "data_off is 129"),
    ("dynamic", EXT_OFF, 1, CorruptImageError, "field ext_off is 1"),
    ("dynamic", EXT_OFF, 1 << 40, CorruptImageError, "field ext_off"),
])
def test_bad_header_field_is_a_clear_error(tmp_path, variant, offset, value, error, match):
    path = header_of(tmp_path, variant)
    width = 8 if offset in (NB_SECTORS, EXT_OFF) else 4
    poke(path, offset, value.to_bytes(width, "little"))
    with pytest.raises(error, match=match) as exc:
        ParallelsDriver.open(path, for_check=True)
    assert str(path) in str(exc.value)


def test_data_off_inside_the_bat(tmp_path):
    path = make(tmp_path, size=MiB, cluster_size=4 * KiB)          # the BAT ends at byte 1088
    put_u32(path, DATA_OFF, 2)
    with pytest.raises(CorruptImageError, match="data_off is 2; expected at least 3 sectors"):
        ParallelsDriver.open(path)


def test_ext_nb_sectors_absurd(tmp_path):
    path = header_of(tmp_path, "ext")
    put_u64(path, NB_SECTORS, 1 << 62)
    with pytest.raises(CorruptImageError, match="nb_sectors is 4611686018427387904"):
        ParallelsDriver.open(path)


@pytest.mark.parametrize("data,error,match", [
    (b"", FormatError, "0 bytes, shorter than the 64-byte"),
    (V2 + bytes(20), FormatError, "36 bytes, shorter"),
    (b"X" * 64, FormatError, "field magic is b'XXXXXXXXXXXXXXXX'.*not a Parallels image"),
])
def test_truncated_or_foreign_files(tmp_path, data, error, match):
    path = tmp_path / "bad.hdd"
    path.write_bytes(data)
    with pytest.raises(error, match=match):
        ParallelsDriver.open(path)


def test_truncated_bat(tmp_path):
    path = make(tmp_path, size=64 * MiB, cluster_size=4 * KiB)     # 16384 entries
    os.truncate(path, 64 + 4 * 1000)
    with pytest.raises(CorruptImageError, match="nb_bat_entries is 16384.*end at 65600"):
        ParallelsDriver.open(path)


def test_every_single_bit_flip_of_the_header_opens_or_fails_cleanly(tmp_path):
    """No bit of the header makes open do anything but work or raise ImageError."""
    path = filled(tmp_path, variant="ext", writes=[(0, b"A"), (3, b"D")])
    good = path.read_bytes()
    outcomes = set()
    for bit in range(64 * 8):
        flipped = bytearray(good)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(flipped)
        try:
            with ParallelsDriver.open(path) as im:
                im.read(0, min(im.size, 4 * 64 * KiB))
                im.check()
            outcomes.add("opened")
        except ImageError as e:
            assert str(path) in str(e)
            outcomes.add(type(e).__name__)
    assert outcomes >= {"opened", "FormatError", "CorruptImageError", "UnsupportedFeatureError"}

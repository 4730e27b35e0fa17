"""VDI driver: header bytes, data path, differencing, maintenance, bad input.

Offsets are stated here from the VDI layout (VDICore.h, formats.md), not
taken from block/vdi.py, so a wrong layout declaration cannot confirm itself.
"""

import os
import struct
import uuid

import pytest

from drivebay.block import drivers
from drivebay.block.chain import Chain, open_chain
from drivebay.block.driver import State
from drivebay.block.raw import RawDriver
from drivebay.block.vdi import VdiDriver
from drivebay.errors import (ChainError, CorruptImageError, FormatError, ImageError,
                             UnsupportedFeatureError, UnsupportedOperation)

KiB, MiB = 1024, 1 << 20
FREE, ZERO = 0xFFFFFFFF, 0xFFFFFFFE
BANNER = b"<<< Oracle VM VirtualBox Disk Image >>>\n"


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


def entry(path, block):
    return u32(path, u32(path, 0x154) + 4 * block)


def make(tmp_path, name="disk.vdi", size=4 * MiB, **kw):
    path = tmp_path / name
    VdiDriver.create(path, size, **kw)
    return path


def attach_backing(chain):
    """What block.chain has to do for a differencing VDI at the top: give it
    the content of the images below (zeros past their end)."""
    below = Chain(chain.images[1:])

    def backing_read(offset, view):
        n = max(0, min(len(view), below.size - offset))
        if n:
            below.readinto(offset, view[:n])
        view[n:] = bytes(len(view) - n)
    chain.top.backing_read = backing_read
    return chain


def resolver_for(*paths):
    table = {}
    for p in paths:
        with VdiDriver.open(p) as img:
            table[img.uuid] = p
    return lambda parent_uuid, locator, child: table.get(parent_uuid)


# -- creation: header bytes ---------------------------------------------------------------

def test_dynamic_header_fields_byte_exact(tmp_path):
    image_uuid = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")
    path = make(tmp_path, size=3 * MiB, uuid=image_uuid)
    assert raw_bytes(path, 0, len(BANNER)) == BANNER
    assert u32(path, 0x40) == 0xBEDA107F
    assert u32(path, 0x44) == 0x00010001
    assert u32(path, 0x48) == 400                    # cbHeader of VDIHEADER1PLUS
    assert u32(path, 0x4C) == 1                      # dynamic
    assert u32(path, 0x50) == 0                      # fFlags
    assert u32(path, 0x154) == MiB                   # offBlocks, 1 MiB aligned
    assert u32(path, 0x158) == 2 * MiB               # offData, 1 MiB aligned
    assert u32(path, 0x15C + 12) == 512              # LegacyGeometry.cbSector
    assert u64(path, 0x170) == 3 * MiB               # cbDisk
    assert u32(path, 0x178) == MiB                   # cbBlock
    assert u32(path, 0x17C) == 0                     # cbBlockExtra
    assert u32(path, 0x180) == 3                     # cBlocks
    assert u32(path, 0x184) == 0                     # cBlocksAllocated
    assert raw_bytes(path, 0x188, 16) == image_uuid.bytes_le     # RTUUID layout
    assert raw_bytes(path, 0x198, 16) != bytes(16)               # uuidModify
    assert raw_bytes(path, 0x1A8, 32) == bytes(32)               # no parent
    assert u32(path, 0x1C8 + 12) == 512              # LCHSGeometry.cbSector
    assert raw_bytes(path, MiB, 12) == b"\xff" * 12  # three FREE entries
    assert os.path.getsize(path) == 2 * MiB
    with VdiDriver.open(path) as img:
        assert img.uuid == image_uuid and img.size == 3 * MiB
        assert img.parent_uuid is None and img.parent_locator is None and not img.has_parent
        assert img.variant == "dynamic"


def test_fixed_image_maps_every_block_in_order(tmp_path):
    path = make(tmp_path, size=3 * MiB, variant="fixed")
    assert u32(path, 0x4C) == 2
    assert u32(path, 0x184) == 3
    assert [entry(path, b) for b in range(3)] == [0, 1, 2]
    assert os.path.getsize(path) == 2 * MiB + 3 * MiB
    with VdiDriver.open(path) as img:
        assert [e.state for e in img.block_status(0, 3 * MiB)] == [State.DATA]
        assert img.read(0, 3 * MiB) == bytes(3 * MiB)


def test_differencing_header_links_to_parent(tmp_path):
    base = make(tmp_path, "base.vdi", size=5 * MiB)
    with VdiDriver.open(base) as parent:
        child = tmp_path / "child.vdi"
        VdiDriver.create(child, None, parent=parent)
        assert u32(child, 0x4C) == 4
        assert u64(child, 0x170) == 5 * MiB
        assert raw_bytes(child, 0x1A8, 16) == parent.uuid.bytes_le
        assert raw_bytes(child, 0x1B8, 16) == parent.modification_uuid.bytes_le
    with VdiDriver.open(child) as img:
        assert img.parent_uuid == parent.uuid and img.has_parent
        assert img.parent_modification_uuid == parent.modification_uuid
        assert img.variant == "differencing"


@pytest.mark.parametrize("kwargs,needle", [
    (dict(size=1000), "multiple of 512"),
    (dict(size=0), "positive"),
    (dict(size=MiB, block_size=3000), "power of two"),
    (dict(size=MiB, variant="sparse"), "variant"),
    (dict(size=MiB, align=1 << 40), "alignment"),
    (dict(size=MiB, colour="red"), "colour"),
])
def test_create_refuses_bad_arguments(tmp_path, kwargs, needle):
    with pytest.raises(ImageError, match=needle):
        VdiDriver.create(tmp_path / "x.vdi", **kwargs)
    assert not (tmp_path / "x.vdi").exists()


def test_probe_and_registry(tmp_path):
    path = make(tmp_path)
    assert drivers.probe(path) is VdiDriver
    assert drivers.driver_for("vdi") is VdiDriver
    plain = tmp_path / "plain.img"
    plain.write_bytes(bytes(4096))
    assert drivers.probe(plain) is RawDriver
    assert VdiDriver.probe(b"\0" * 0x40 + b"\x7f\x10\xda\xbe", b"", 0x44) == 100


# -- data path -----------------------------------------------------------------------------

def test_read_write_across_blocks_and_reopen(tmp_path):
    path = make(tmp_path, size=4 * MiB, block_size=64 * KiB)
    model = bytearray(4 * MiB)
    with VdiDriver.open(path, writable=True) as img:
        for offset, data in [(100, b"a" * 70000), (64 * KiB - 3, b"xyz123"),
                             (4 * MiB - 700, b"end" * 200), (2 * MiB, b"\x01" * 128 * KiB)]:
            img.write(offset, data)
            model[offset:offset + len(data)] = data
        assert img.read(0, 4 * MiB) == model
    with VdiDriver.open(path) as img:
        assert img.read(0, 4 * MiB) == model
        assert img.check().clean


def test_allocation_appends_data_then_count_then_entry(tmp_path):
    path = make(tmp_path, size=4 * MiB, block_size=64 * KiB)
    with VdiDriver.open(path, writable=True) as img:
        img.write(2 * 64 * KiB + 5, b"B")            # block 2 -> slot 0
        img.write(0, b"A")                           # block 0 -> slot 1
        off_data = u32(path, 0x158)
        assert entry(path, 2) == 0 and entry(path, 0) == 1 and entry(path, 1) == FREE
        assert u32(path, 0x184) == 2
        assert os.path.getsize(path) == off_data + 2 * 64 * KiB
        assert raw_bytes(path, off_data + 5, 1) == b"B"
        assert raw_bytes(path, off_data + 64 * KiB, 2) == b"A\0"   # rest of the block zeroed


def test_block_status_extents(tmp_path):
    path = make(tmp_path, size=8 * MiB)
    with VdiDriver.open(path, writable=True) as img:
        img.write(0, b"\x11" * (2 * MiB))            # blocks 0, 1 -> slots 0, 1: one host extent
        img.write(3 * MiB, bytes(MiB))               # an all-zero block: marked ZERO
        img.write(5 * MiB + 10, b"\x22")             # block 5 -> slot 2
        off_data = u32(path, 0x158)
        assert img.block_status(0, 8 * MiB) == [
            (0, 2 * MiB, State.DATA, off_data),
            (2 * MiB, MiB, State.UNALLOCATED, None),
            (3 * MiB, MiB, State.ZERO, None),
            (4 * MiB, MiB, State.UNALLOCATED, None),
            (5 * MiB, MiB, State.DATA, off_data + 2 * MiB),
            (6 * MiB, 2 * MiB, State.UNALLOCATED, None)]
        assert img.block_status(MiB + 5, 10) == [(MiB + 5, 10, State.DATA, off_data + MiB + 5)]
        assert entry(path, 3) == ZERO


def test_modification_uuid_changes_on_first_write_only(tmp_path):
    path = make(tmp_path)
    before = raw_bytes(path, 0x198, 16)
    with VdiDriver.open(path) as img:
        img.read(0, 4096)
    assert raw_bytes(path, 0x198, 16) == before
    with VdiDriver.open(path, writable=True) as img:
        img.write(0, b"x")
        first = raw_bytes(path, 0x198, 16)
        assert first != before and img.modification_uuid.bytes_le == first
        img.write(MiB, b"y")
        assert raw_bytes(path, 0x198, 16) == first


def test_read_only_image_refuses_writes(tmp_path):
    path = make(tmp_path)
    with VdiDriver.open(path) as img:
        with pytest.raises(UnsupportedOperation):
            img.write(0, b"x")
        with pytest.raises(ImageError):
            img.read(4 * MiB - 1, 2)


# -- zeros and discard ----------------------------------------------------------------------

def test_write_zeroes_frees_whole_blocks_and_keeps_slots_dense(tmp_path):
    path = make(tmp_path, size=4 * MiB)
    with VdiDriver.open(path, writable=True) as img:
        for b in range(4):
            img.write(b * MiB, bytes([b + 1]) * MiB)
        off_data = u32(path, 0x158)
        img.write_zeroes(MiB, MiB)                   # block 1 freed, block 3 moves into slot 1
        assert entry(path, 1) == ZERO and entry(path, 3) == 1
        assert u32(path, 0x184) == 3
        assert os.path.getsize(path) == off_data + 3 * MiB
        img.write_zeroes(2 * MiB + 10, 20)           # partial: zeros in place
        assert entry(path, 2) == 2
        model = b"\x01" * MiB + bytes(MiB) + b"\x03" * 10 + bytes(20) + \
            b"\x03" * (MiB - 30) + b"\x04" * MiB
        assert img.read(0, 4 * MiB) == model
        assert img.check().clean
    with VdiDriver.open(path) as img:
        assert img.read(0, 4 * MiB) == model


def test_zero_writes_into_unallocated_blocks_allocate_nothing(tmp_path):
    path = make(tmp_path, size=4 * MiB)
    with VdiDriver.open(path, writable=True) as img:
        size = os.path.getsize(path)
        img.write(0, bytes(MiB))
        img.write_zeroes(MiB, 2 * MiB)
        img.write(3 * MiB + 7, bytes(100))
        assert [entry(path, b) for b in range(4)] == [ZERO] * 4
        assert os.path.getsize(path) == size and u32(path, 0x184) == 0


def test_discard(tmp_path):
    path = make(tmp_path, size=4 * MiB)
    with VdiDriver.open(path, writable=True) as img:
        img.write(0, b"\x09" * (3 * MiB))
        img.discard(MiB // 2, MiB)                   # covers no whole block: unchanged
        assert img.read(0, 3 * MiB) == b"\x09" * (3 * MiB)
        img.discard(MiB // 2, 2 * MiB)               # covers block 1
        assert entry(path, 1) == ZERO
        assert img.read(0, 3 * MiB) == b"\x09" * MiB + bytes(MiB) + b"\x09" * MiB
        assert img.check().clean and u32(path, 0x184) == 2


def test_fixed_image_keeps_its_blocks(tmp_path):
    path = make(tmp_path, size=2 * MiB, variant="fixed")
    with VdiDriver.open(path, writable=True) as img:
        img.write(0, b"\x05" * (2 * MiB))
        img.discard(0, 2 * MiB)
        assert img.read(0, 2 * MiB) == b"\x05" * (2 * MiB)
        img.write_zeroes(0, MiB)
        assert [entry(path, b) for b in range(2)] == [0, 1]
        assert img.read(0, 2 * MiB) == bytes(MiB) + b"\x05" * MiB
        with pytest.raises(UnsupportedOperation, match="compact"):
            img.compact()


# -- differencing images through block.chain -------------------------------------------------

@pytest.fixture
def family(tmp_path):
    """A parent whose four 64 KiB blocks hold 0xA0..0xA3 and an empty child over it."""
    base = make(tmp_path, "base.vdi", size=256 * KiB, block_size=64 * KiB)
    with VdiDriver.open(base, writable=True) as img:
        for b in range(4):
            img.write(b * 64 * KiB, bytes([0xA0 + b]) * (64 * KiB))
    child = tmp_path / "child.vdi"
    with VdiDriver.open(base) as parent:
        VdiDriver.create(child, None, parent=parent, block_size=64 * KiB)
    parent_content = bytes(b"".join(bytes([0xA0 + b]) * (64 * KiB) for b in range(4)))
    return base, child, resolver_for(base), parent_content


def test_chain_reads_through_to_parent(family):
    base, child, resolver, content = family
    with open_chain(child, resolver=resolver) as chain:
        assert [type(i) for i in chain.images] == [VdiDriver, VdiDriver]
        assert chain.read(0, len(content)) == content
    # VDI stores no parent path: without a resolver the parent is found by
    # UUID among the images beside the child, and a missing one is refused.
    with open_chain(child) as chain:
        assert chain.images[1].path == str(base)
    os.rename(base, base.parent.parent / "elsewhere.vdi")
    with pytest.raises(ChainError, match="parent image not found"):
        open_chain(child)


def test_zero_write_in_child_never_falls_back_to_parent(family):
    """VirtualBox 7.2 lost data here: a zero write over a block the parent
    holds read back right until the next power cycle, then showed the parent."""
    base, child, resolver, content = family
    blk = 64 * KiB
    with attach_backing(open_chain(child, writable=True, resolver=resolver)) as chain:
        chain.write_zeroes(1 * blk, blk)             # whole block, write_zeroes
        chain.write(2 * blk, bytes(blk))             # whole block, all-zero write()
        chain.write_zeroes(3 * blk + 100, 50)        # part of a block: copy-up + zeros
        assert entry(child, 1) == ZERO and entry(child, 2) == ZERO
    expected = bytearray(content)
    expected[blk:3 * blk] = bytes(2 * blk)
    expected[3 * blk + 100:3 * blk + 150] = bytes(50)
    with open_chain(child, resolver=resolver) as chain:   # "after the power cycle"
        assert chain.read(0, len(content)) == expected
        assert chain.top.check().clean
    with VdiDriver.open(base) as parent:
        assert parent.read(0, len(content)) == content


def test_partial_write_copies_up_the_rest_of_the_block(family):
    base, child, resolver, content = family
    with attach_backing(open_chain(child, writable=True, resolver=resolver)) as chain:
        chain.write(64 * KiB + 10, b"new")
        assert entry(child, 1) == 0
    expected = bytearray(content)
    expected[64 * KiB + 10:64 * KiB + 13] = b"new"
    with open_chain(child, resolver=resolver) as chain:
        assert chain.read(0, len(content)) == expected
        # the child's own block holds the parent's bytes around the write
        assert chain.top.read(64 * KiB, 64 * KiB) == expected[64 * KiB:128 * KiB]


def test_partial_write_without_backing_is_refused_before_any_change(family):
    # Opened on its own (not through a chain), a child cannot copy up the
    # parent's part of a block: it refuses rather than guess.
    base, child, resolver, content = family
    before = child.read_bytes()
    with VdiDriver.open(child, writable=True) as image:
        with pytest.raises(ChainError, match="backing_read"):
            image.write(64 * KiB + 10, b"new")
        with pytest.raises(ChainError, match="backing_read"):
            image.write_zeroes(10, 10)
        assert child.read_bytes() == before          # not even uuidModify changed
        image.write(0, b"\x77" * (64 * KiB))          # whole blocks need no parent data
    with open_chain(child, resolver=resolver) as chain:
        assert chain.read(0, 128 * KiB) == b"\x77" * (64 * KiB) + content[64 * KiB:128 * KiB]


def test_chain_copies_up_the_rest_of_a_block(family):
    base, child, resolver, content = family
    with open_chain(child, writable=True, resolver=resolver) as chain:
        chain.write(64 * KiB + 10, b"new")
    with open_chain(child, resolver=resolver) as chain:
        expect = bytearray(content[:256 * KiB])
        expect[64 * KiB + 10:64 * KiB + 13] = b"new"
        assert chain.read(0, 256 * KiB) == bytes(expect)


def test_discard_and_compact_in_child_keep_shadowing_the_parent(family):
    base, child, resolver, content = family
    blk = 64 * KiB
    with attach_backing(open_chain(child, writable=True, resolver=resolver)) as chain:
        chain.write(0, b"\x01" * (3 * blk))           # child holds blocks 0..2
        chain.discard(0, blk)                        # freed -> zeros, not the parent's 0xA0
        chain.write(blk, bytes(blk))                 # allocated block overwritten with zeros
        chain.top.compact()                          # -> ZERO, not FREE
        assert entry(child, 0) == ZERO and entry(child, 1) == ZERO and entry(child, 3) == FREE
    with open_chain(child, resolver=resolver) as chain:
        assert chain.read(0, 4 * blk) == bytes(2 * blk) + b"\x01" * blk + content[3 * blk:]
        assert chain.top.check().clean


def test_set_parent_rewrites_the_links(tmp_path):
    path = make(tmp_path)
    new_parent, new_modify = uuid.uuid4(), uuid.uuid4()
    with VdiDriver.open(path, writable=True) as img:
        img.set_parent(new_parent, "ignored.vdi", new_modify)
        assert img.parent_uuid == new_parent and img.parent_locator is None
    assert u32(path, 0x4C) == 4
    assert raw_bytes(path, 0x1A8, 16) == new_parent.bytes_le
    assert raw_bytes(path, 0x1B8, 16) == new_modify.bytes_le
    with VdiDriver.open(path, writable=True) as img:
        assert img.parent_uuid == new_parent
        img.set_parent(None, None)
    assert u32(path, 0x4C) == 1 and raw_bytes(path, 0x1A8, 32) == bytes(32)


# -- resize and compact --------------------------------------------------------------------

def test_resize_within_the_map_padding(tmp_path):
    path = make(tmp_path, size=4 * MiB)
    with VdiDriver.open(path, writable=True) as img:
        img.write(MiB, b"\x42" * 1000)
        img.resize(64 * MiB)
        assert img.read(MiB, 1000) == b"\x42" * 1000
        assert img.read(4 * MiB, MiB) == bytes(MiB)
        img.write(63 * MiB, b"top")
    assert u64(path, 0x170) == 64 * MiB and u32(path, 0x180) == 64
    assert u32(path, 0x158) == 2 * MiB
    with VdiDriver.open(path) as img:
        assert img.size == 64 * MiB and img.read(63 * MiB, 3) == b"top"
        assert img.check().clean


def test_resize_moves_blocks_out_of_the_growing_map(tmp_path):
    path = make(tmp_path, size=MiB, block_size=64 * KiB, align=512)
    assert (u32(path, 0x154), u32(path, 0x158)) == (0x200, 0x400)
    model = bytearray(64 * MiB)
    with VdiDriver.open(path, writable=True) as img:
        for b in (3, 0, 7, 1, 15):
            data = bytes([b + 1]) * (64 * KiB - b)
            img.write(b * 64 * KiB, data)
            model[b * 64 * KiB:b * 64 * KiB + len(data)] = data
        img.resize(64 * MiB)                         # map: 64 bytes -> 4 KiB
        assert img.read(0, len(model)) == model
        img.write(40 * MiB, b"after")
        model[40 * MiB:40 * MiB + 5] = b"after"
    off_data = u32(path, 0x158)
    assert off_data >= 0x200 + 4 * 1024 and (off_data - 0x400) % (64 * KiB) == 0
    assert u32(path, 0x180) == 1024
    with VdiDriver.open(path) as img:
        assert img.read(0, len(model)) == model
        assert img.check().clean


def test_resize_zeroes_the_old_last_block_tail(tmp_path):
    path = make(tmp_path, size=64 * KiB + 512, block_size=64 * KiB)
    with VdiDriver.open(path, writable=True) as img:
        img.write(64 * KiB, b"\x33" * 512)           # block 1: only its first sector is disk
    off_data = u32(path, 0x158)
    poke(path, off_data + 512, b"\xee" * 100)        # junk past the end of the disk
    with VdiDriver.open(path, writable=True) as img:
        img.resize(128 * KiB)
        assert img.read(64 * KiB, 64 * KiB) == b"\x33" * 512 + bytes(64 * KiB - 512)


def test_resize_refuses_to_shrink_and_grows_fixed_images(tmp_path):
    path = make(tmp_path, size=2 * MiB, variant="fixed")
    with VdiDriver.open(path, writable=True) as img:
        with pytest.raises(UnsupportedOperation, match="shrinking"):
            img.resize(MiB)
        img.write(0, b"\x01" * MiB)
        img.resize(5 * MiB)
        assert img.info()["allocated_blocks"] == 5
        assert img.read(0, 5 * MiB) == b"\x01" * MiB + bytes(4 * MiB)
        assert img.check().clean
    assert [entry(path, b) for b in range(5)] == [0, 1, 2, 3, 4]


def test_compact_drops_zero_blocks_and_packs_the_file(tmp_path):
    path = make(tmp_path, size=6 * MiB)
    calls = []
    with VdiDriver.open(path, writable=True) as img:
        for b in range(6):
            img.write(b * MiB, bytes([b + 1]) * MiB)
        img.write(MiB, bytes(MiB))                   # in place: still allocated
        img.write(4 * MiB, bytes(MiB))
        assert u32(path, 0x184) == 6
        img.compact(progress=lambda done, total: calls.append((done, total)))
        assert calls[-1] == (6, 6) and all(t == 6 for _, t in calls)
        assert entry(path, 1) == ZERO and entry(path, 4) == ZERO
        assert u32(path, 0x184) == 4
        assert os.path.getsize(path) == u32(path, 0x158) + 4 * MiB
        expected = b"".join(bytes([b + 1]) * MiB if b not in (1, 4) else bytes(MiB)
                            for b in range(6))
        assert img.read(0, 6 * MiB) == expected
        assert img.check().clean


# -- check ---------------------------------------------------------------------------------

def three_blocks(tmp_path):
    path = make(tmp_path, size=4 * MiB, block_size=64 * KiB)
    with VdiDriver.open(path, writable=True) as img:
        for b in range(3):
            img.write(b * 64 * KiB, bytes([b + 1]) * (64 * KiB))
    return path


def test_check_count_mismatch_is_repaired(tmp_path):
    path = three_blocks(tmp_path)
    put_u32(path, 0x184, 1)
    with VdiDriver.open(path, writable=True) as img:
        report = img.check()
        assert report.exit_code == 2 and "cBlocksAllocated" in report.errors[0]
        report = img.check(repair=True)
        assert report.clean and report.repaired
    assert u32(path, 0x184) == 3
    with VdiDriver.open(path) as img:
        assert img.check().clean


def test_check_leak_at_the_end_is_truncated(tmp_path):
    path = three_blocks(tmp_path)
    size = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(b"\x55" * (64 * KiB + 100))
    with VdiDriver.open(path, writable=True) as img:
        report = img.check()
        assert report.exit_code == 3 and len(report.leaks) == 2
        assert "1 slot" in report.leaks[0] and "100 bytes" in report.leaks[1]
        assert img.check(repair=True).clean
    assert os.path.getsize(path) == size


def test_check_hole_in_the_data_area_is_packed(tmp_path):
    path = three_blocks(tmp_path)
    put_u32(path, u32(path, 0x154) + 4, FREE)        # block 1's slot now belongs to nobody
    with VdiDriver.open(path, writable=True) as img:
        report = img.check()
        assert report.exit_code == 3 and not report.errors     # nothing live can be overwritten
        assert any("cBlocksAllocated is 3, above the 2 blocks" in m for m in report.leaks)
        assert img.check(repair=True).clean
        assert img.read(0, 3 * 64 * KiB) == b"\x01" * (64 * KiB) + bytes(64 * KiB) + \
            b"\x03" * (64 * KiB)
    assert entry(path, 2) == 1 and u32(path, 0x184) == 2


def test_check_count_below_a_slot_in_use_is_an_error(tmp_path):
    """The next allocation would land on block 2's slot: corruption, not a leak."""
    path = three_blocks(tmp_path)
    put_u32(path, 0x184, 2)
    with VdiDriver.open(path) as img:
        report = img.check()
    assert report.exit_code == 2
    assert any("cBlocksAllocated is 2 but the block map has 3" in e for e in report.errors)


def test_check_count_above_the_map_is_a_leak(tmp_path):
    """A kill between an allocation's count update and its map entry."""
    path = three_blocks(tmp_path)
    with open(path, "ab") as f:
        f.write(b"\x55" * (64 * KiB))                 # the new block's data
    put_u32(path, 0x184, 4)                            # count written, map entry not
    with VdiDriver.open(path, writable=True) as img:
        report = img.check()
        assert report.exit_code == 3 and not report.errors
        assert img.check(repair=True).clean
    assert u32(path, 0x184) == 3


@pytest.mark.parametrize("block,value,needle", [
    (1, 50, "past the end of the"),
    (1, 0, "both point at slot 0"),
    (2, 64, "beyond the 64 blocks"),
])
def test_bad_map_entries_refused_at_open_and_reported_by_check(tmp_path, block, value, needle):
    path = three_blocks(tmp_path)
    put_u32(path, u32(path, 0x154) + 4 * block, value)
    with pytest.raises(CorruptImageError, match=needle) as e:
        VdiDriver.open(path)
    assert str(path) in str(e.value) and "block map entr" in str(e.value)
    with VdiDriver.open(path, writable=True, for_check=True) as img:
        report = img.check()
        assert report.exit_code == 2 and any(needle in err for err in report.errors)
        report = img.check(repair=True)
        assert not report.clean and any("not repaired" in err for err in report.errors)
        with pytest.raises(CorruptImageError):
            img.write(0, b"x")


# -- bad headers ---------------------------------------------------------------------------

@pytest.fixture
def small(tmp_path):
    """4 MiB, 1 MiB blocks, map at 0x200, data at 0x400, block 0 allocated."""
    path = make(tmp_path, size=4 * MiB, align=512)
    with VdiDriver.open(path, writable=True) as img:
        img.write(0, b"\x01" * 512)
    return path


BAD_FIELDS = [
    # name, offset, struct format, value, error, text the message must hold
    ("signature", 0x40, "<I", 0xBEDA107E, FormatError, "u32Signature"),
    ("version 1.0", 0x44, "<I", 0x00010000, UnsupportedFeatureError, "u32Version"),
    ("version 0.1", 0x44, "<I", 0x00000001, UnsupportedFeatureError, "u32Version"),
    ("cbHeader small", 0x48, "<I", 0x100, CorruptImageError, "cbHeader"),
    ("cbHeader unknown", 0x48, "<I", 0x200, UnsupportedFeatureError, "cbHeader"),
    ("undo", 0x4C, "<I", 3, UnsupportedFeatureError, "undo"),
    ("type", 0x4C, "<I", 7, CorruptImageError, "u32Type"),
    ("flags", 0x50, "<I", 0x10, UnsupportedFeatureError, "fFlags"),
    ("offBlocks in header", 0x154, "<I", 0x100, CorruptImageError, "offBlocks"),
    ("offBlocks past EOF", 0x154, "<I", 0x7FFF0000, CorruptImageError, "offBlocks"),
    ("offData in map", 0x158, "<I", 0x204, CorruptImageError, "offData"),
    ("offData past EOF", 0x158, "<I", 0x7FFF0000, CorruptImageError, "offData"),
    ("legacy sector", 0x168, "<I", 4096, CorruptImageError, "LegacyGeometry.cbSector"),
    ("cbDisk", 0x170, "<Q", 1 << 40, CorruptImageError, "cbDisk"),
    ("cbBlock 0", 0x178, "<I", 0, CorruptImageError, "cbBlock"),
    ("cbBlock odd", 0x178, "<I", 3 << 19, CorruptImageError, "cbBlock"),
    ("cbBlock huge", 0x178, "<I", 1 << 30, UnsupportedFeatureError, "cbBlock"),
    ("cbBlock tiny", 0x178, "<I", 256, UnsupportedFeatureError, "cbBlock"),
    ("cbBlockExtra", 0x17C, "<I", 3, CorruptImageError, "cbBlockExtra"),
    ("cBlocks max", 0x180, "<I", 0xFFFFFFFF, CorruptImageError, "cBlocks"),
    ("cBlocks 4 GiB map", 0x180, "<I", 0x3FFFFFFF, UnsupportedFeatureError, "cBlocks"),
    ("cBlocks map past EOF", 0x180, "<I", 0x100000, CorruptImageError, "cBlocks"),
    ("cBlocks too few", 0x180, "<I", 2, CorruptImageError, "cbDisk"),
    ("cBlocksAllocated", 0x184, "<I", 5, CorruptImageError, "cBlocksAllocated"),
    ("uuidCreate", 0x188, "16s", bytes(16), CorruptImageError, "uuidCreate"),
    ("uuidModify", 0x198, "16s", bytes(16), CorruptImageError, "uuidModify"),
    ("lchs sector", 0x1D4, "<I", 0, CorruptImageError, "LCHSGeometry.cbSector"),
]


@pytest.mark.parametrize("name,offset,fmt,value,error,needle", BAD_FIELDS,
                         ids=[f[0] for f in BAD_FIELDS])
def test_bad_header_field_refused(small, name, offset, fmt, value, error, needle):
    poke(small, offset, struct.pack(fmt, value))
    with pytest.raises(error, match=needle) as e:
        VdiDriver.open(small)
    assert str(small) in str(e.value)


def test_differencing_image_without_linkage_refused(small):
    put_u32(small, 0x4C, 4)
    with pytest.raises(CorruptImageError, match="uuidLinkage"):
        VdiDriver.open(small)


# The top bit of each key field flipped: every one must be refused, by name.
FLIPS = [("u32Signature", 0x40, 4), ("u32Version", 0x44, 4), ("cbHeader", 0x48, 4),
         ("u32Type", 0x4C, 4), ("fFlags", 0x50, 4), ("offBlocks", 0x154, 4),
         ("offData", 0x158, 4), ("cbDisk", 0x170, 8), ("cbBlock", 0x178, 4),
         ("cbBlockExtra", 0x17C, 4), ("cBlocks", 0x180, 4), ("cBlocksAllocated", 0x184, 4)]


@pytest.mark.parametrize("field,offset,width", FLIPS, ids=[f[0] for f in FLIPS])
def test_bit_flip_in_key_field_refused(small, field, offset, width):
    raw = bytearray(raw_bytes(small, offset, width))
    raw[-1] ^= 0x80
    poke(small, offset, bytes(raw))
    with pytest.raises(ImageError, match=field):
        VdiDriver.open(small)


@pytest.mark.parametrize("length,error,needle", [
    (0x30, FormatError, "pre-header"),
    (0x46, FormatError, "pre-header"),
    (0x100, CorruptImageError, "truncated"),
    (0x202, CorruptImageError, "block map"),
    (0x300, CorruptImageError, "offData"),
])
def test_truncated_file_refused(small, length, error, needle):
    os.truncate(small, length)
    with pytest.raises(error, match=needle) as e:
        VdiDriver.open(small)
    assert str(small) in str(e.value)


def test_block_data_past_eof_refused(small):
    os.truncate(small, 0x400 + 512)                  # block 0's slot cut short
    with pytest.raises(CorruptImageError, match="block map entry for block 0"):
        VdiDriver.open(small)


def test_odd_disk_size_rounds_up_to_a_sector(small):
    poke(small, 0x170, struct.pack("<Q", 4 * MiB - 100))
    with VdiDriver.open(small) as img:
        assert img.size == 4 * MiB


# -- layouts VirtualBox can write and drivebay does not create ----------------------------------

def test_block_extra_bytes_are_skipped(tmp_path):
    """cbBlockExtra: each slot starts with that many bytes before the block's data."""
    path = tmp_path / "extra.vdi"
    bs, extra = 4096, 512
    img = bytearray(0x400 + 2 * (bs + extra))
    img[0:len(BANNER)] = BANNER
    struct.pack_into("<III", img, 0x40, 0xBEDA107F, 0x00010001, 384)
    struct.pack_into("<I", img, 0x4C, 1)
    struct.pack_into("<II", img, 0x154, 0x200, 0x400)
    struct.pack_into("<I", img, 0x168, 512)
    struct.pack_into("<QIIII", img, 0x170, 3 * bs, bs, extra, 3, 2)
    img[0x188:0x198] = uuid.uuid4().bytes_le
    img[0x198:0x1A8] = uuid.uuid4().bytes_le
    struct.pack_into("<III", img, 0x200, 1, FREE, 0)        # block 0 -> slot 1, block 2 -> slot 0
    img[0x400:0x400 + extra] = b"E" * extra
    img[0x400 + extra:0x400 + extra + bs] = b"C" * bs
    img[0x400 + bs + extra:0x400 + bs + 2 * extra] = b"e" * extra
    img[0x400 + bs + 2 * extra:] = b"A" * bs
    path.write_bytes(img)
    with VdiDriver.open(path, writable=True) as vdi:
        assert vdi.read(0, 3 * bs) == b"A" * bs + bytes(bs) + b"C" * bs
        assert [e.host_offset for e in vdi.block_status(0, 3 * bs)] == \
            [0x400 + bs + 2 * extra, None, 0x400 + extra]
        vdi.write(bs + 1, b"B")
        assert vdi.check().clean
    assert os.path.getsize(path) == 0x400 + 3 * (bs + extra)
    with VdiDriver.open(path) as vdi:
        assert vdi.read(bs, 2) == b"\0B" and vdi.read(0, 1) == b"A"


def test_info(tmp_path):
    path = make(tmp_path, size=3 * MiB, comment="a test disk")
    with VdiDriver.open(path, writable=True) as img:
        img.write(0, b"x")
        info = img.info()
    assert info["header_version"] == "1.1" and info["type"] == "dynamic"
    assert info["block_size"] == MiB and info["blocks"] == 3 and info["allocated_blocks"] == 1
    assert info["comment"] == "a test disk" and info["lchs_geometry"] == (0, 0, 0)
    assert info["uuid"] == str(img.uuid) and info["parent_uuid"] is None

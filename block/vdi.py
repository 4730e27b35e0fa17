"""VirtualBox Disk Image (VDI), header version 1.1: dynamic, fixed and differencing.

Spec: the VDI layout of VirtualBox 7.x (VBox/Storage/VDICore.h: VDIPREHEADER,
VDIHEADER1, VDIHEADER1PLUS), with the facts in shared/reference/formats.md.

    0x000       VDIPREHEADER: szFileInfo banner, u32Signature, u32Version 1.1
    0x048       VDIHEADER1 (cbHeader 384, QEMU writes it) or VDIHEADER1PLUS
                (cbHeader 400, adds LCHSGeometry; VirtualBox writes it)
    offBlocks   the block map: cBlocks little-endian u32 entries
    offData     the data area: slot n at offData + n * (cbBlockExtra + cbBlock),
                the block's data after its cbBlockExtra bytes

A block-map entry is a slot number, VDI_IMAGE_BLOCK_FREE (not in this image:
the parent's data in a differencing image, zeros in a base image) or
VDI_IMAGE_BLOCK_ZERO (reads as zeros, in every image type).

Rules this driver keeps, and why:

* Allocated blocks fill slots 0 .. cBlocksAllocated-1, each once: VirtualBox
  and QEMU put a new block at slot cBlocksAllocated, so a hole below it would
  be handed out twice.  Freeing a block (discard, write_zeroes over a whole
  block, compact) moves the last block into the freed slot and truncates the
  file, as VirtualBox's discard does.
* Allocation writes the block's data, then cBlocksAllocated, then the map
  entry.  A process dying between two steps leaves at worst an unreferenced
  slot past the last one in use (a leak check repairs): no entry points at
  unwritten data and no count is low enough for VirtualBox to allocate over
  a live block.  No flush separates the steps: flush() is the barrier.
* A zero write or a freed block becomes VDI_IMAGE_BLOCK_ZERO, never
  VDI_IMAGE_BLOCK_FREE ("ask the parent"): VirtualBox 7.2 lost data that way.
* uuidModify changes on the first change of content after each open, as
  VirtualBox's VD layer does.

Copy-on-write: writing part of a block a differencing image does not hold
needs the rest of the block from below.  The chain sets ``image.backing_read``
to a callable ``backing_read(offset, view)`` filling ``view`` with what the
images below hold at virtual ``offset`` (zeros past their end).  Without it
such a write raises ChainError before anything changes.

Parents: VDI records the parent's creation and modification UUIDs and no
path, so ``parent_locator`` is None and open_chain's ``resolver`` finds it.

Opening checks every header field against its limit before allocating, then
the block map for entries outside the file or the data area and for shared
slots.  ``open(..., for_check=True)`` records map problems for ``check``
instead of refusing (qemu-img's BDRV_O_CHECK); such an image refuses writes.

Not supported: header versions other than 1.1 (the 0.x layout of early
VirtualBox releases has no offBlocks/offData), undo images (type 3),
shrinking, repairing entries that point outside the file or share a slot
(check reports them), fFlags bits other than zero-expand.
"""

import array
import os
import sys
import uuid as uuidlib
from dataclasses import dataclass, field

from drivebay.block.bitmap_impl import block_runs, count_allocated, is_zero
from drivebay.block.driver import (NULL_UUID, SECTOR_SIZE, BlockDriver, CheckReport, Extent,
                                   ImageFile, State, parse_uuid)
from drivebay.errors import (ChainError, CorruptImageError, FormatError, ImageError,
                             UnsupportedFeatureError, UnsupportedOperation)
from drivebay.layout import Layout, Record, align_up, field_error

# -- constants ----------------------------------------------------------------------

VDI_IMAGE_FILE_INFO = b"<<< Oracle VM VirtualBox Disk Image >>>\n"   # "for eyes only"
VDI_IMAGE_SIGNATURE = 0xBEDA107F
VDI_IMAGE_VERSION = 0x00010001           # major 1 (high 16 bits), minor 1 (low 16 bits)

VDI_PREHEADER_SIZE = 0x48                # szFileInfo[64], u32Signature, u32Version
VDI_HEADER1_SIZE = 384                   # cbHeader of VDIHEADER1 (what QEMU writes)
VDI_HEADER1PLUS_SIZE = 400               # cbHeader of VDIHEADER1PLUS (what VirtualBox writes)
VDI_COMMENT_SIZE = 256                   # szComment, UTF-8, NUL-terminated

# u32Type
VDI_IMAGE_TYPE_NORMAL = 1                # dynamically growing base image
VDI_IMAGE_TYPE_FIXED = 2                 # preallocated base image
VDI_IMAGE_TYPE_UNDO = 3                  # undo/commit image of VirtualBox 1.x: unsupported
VDI_IMAGE_TYPE_DIFF = 4                  # differencing image
TYPE_NAMES = {VDI_IMAGE_TYPE_NORMAL: "dynamic", VDI_IMAGE_TYPE_FIXED: "fixed",
              VDI_IMAGE_TYPE_UNDO: "undo", VDI_IMAGE_TYPE_DIFF: "differencing"}

# fFlags: VirtualBox defines one VDI flag (VD_VDI_IMAGE_FLAGS_ZERO_EXPAND, stored
# shifted right by 8): new blocks are zero-filled, which this driver always does.
VDI_IMAGE_FLAGS_ZERO_EXPAND = 0x01
VDI_IMAGE_FLAGS_MASK = VDI_IMAGE_FLAGS_ZERO_EXPAND

# block-map entries
VDI_IMAGE_BLOCK_FREE = 0xFFFFFFFF        # not allocated: the parent's data (zeros in a base)
VDI_IMAGE_BLOCK_ZERO = 0xFFFFFFFE        # not allocated, reads as zeros
RUN_FREE, RUN_ZERO, RUN_DATA = 0, 1, 2   # kinds block_runs returns for (FREE, ZERO) sentinels

VDI_GEOMETRY_SECTOR_SIZE = 512           # the only cbSector VirtualBox and QEMU accept
VDI_DATA_ALIGN = 1 << 20                 # VirtualBox aligns offBlocks and offData to 1 MiB
VDI_IMAGE_DEFAULT_BLOCK_SIZE = 1 << 20   # VirtualBox's and QEMU's cbBlock (QEMU reads no other)

# Limits.  A block holds whole sectors; drivebay buffers a whole block for
# copy-on-write and moves, so it caps cbBlock at 256 MiB (256 times the 1 MiB
# every known writer uses).
VDI_BLOCK_SIZE_MIN = VDI_GEOMETRY_SECTOR_SIZE
VDI_BLOCK_SIZE_MAX = 256 << 20
# offData is a u32 and follows the map (4 bytes a block), so no valid image has
# more blocks than this; QEMU uses the same bound (VDI_BLOCKS_IN_IMAGE_MAX).
VDI_BLOCKS_MAX = 0x3FFFFFFF
# drivebay keeps the map in memory: 256 MiB of map is 64 Mi blocks, 64 TiB
# at 1 MiB blocks.  A header asking for more is refused before allocating.
VDI_MAP_BYTES_MAX = 256 << 20
MAX_REPORTED_PROBLEMS = 100              # a hostile map could yield millions of messages
MAP_WRITE_GAP = 128                      # rewrite up to a sector of unchanged entries, not seek
COPY_CHUNK = 1 << 20

assert array.array("I").itemsize == 4
_BIG_ENDIAN_HOST = sys.byteorder == "big"

# -- on-disk layout -------------------------------------------------------------------

VDIDISKGEOMETRY = Layout("VDIDISKGEOMETRY", "<", [
    ("cCylinders", "I"), ("cHeads", "I"), ("cSectors", "I"), ("cbSector", "I")], size=16)

VDI_HEADER = Layout("VDI header 1.1 (VDIPREHEADER + VDIHEADER1PLUS)", "<", [
    ("szFileInfo", "64s"),
    ("u32Signature", "I"),
    ("u32Version", "I"),
    ("cbHeader", "I"),
    ("u32Type", "I"),
    ("fFlags", "I"),
    ("szComment", f"{VDI_COMMENT_SIZE}s"),
    ("offBlocks", "I"),
    ("offData", "I"),
    ("LegacyGeometry", "16s"),          # VDIDISKGEOMETRY
    ("u32Dummy", "I"),                  # was the BIOS translation mode; unused
    ("cbDisk", "Q"),
    ("cbBlock", "I"),
    ("cbBlockExtra", "I"),
    ("cBlocks", "I"),
    ("cBlocksAllocated", "I"),
    ("uuidCreate", "16s"),              # RTUUID: first three fields little-endian
    ("uuidModify", "16s"),
    ("uuidLinkage", "16s"),             # the parent's uuidCreate
    ("uuidParentModify", "16s"),        # the parent's uuidModify when linked
    ("LCHSGeometry", "16s"),            # VDIHEADER1PLUS only
], size=VDI_PREHEADER_SIZE + VDI_HEADER1PLUS_SIZE)

VDI_HEADER.assert_offsets({"u32Signature": 0x40, "u32Version": 0x44, "cbHeader": 0x48,
                       "u32Type": 0x4C, "fFlags": 0x50, "szComment": 0x54, "offBlocks": 0x154,
                       "offData": 0x158, "LegacyGeometry": 0x15C, "cbDisk": 0x170,
                       "cbBlock": 0x178, "cbBlockExtra": 0x17C, "cBlocks": 0x180,
                       "cBlocksAllocated": 0x184, "uuidCreate": 0x188, "uuidModify": 0x198,
                       "uuidLinkage": 0x1A8, "uuidParentModify": 0x1B8,
                       "LCHSGeometry": 0x1C8})


def _bad(exc, path, name, value, expected):
    return field_error(exc, path, "VDI header", name, value, expected)


def read_header(f):
    """The header of the VDI file ``f``, every field checked against its limit."""
    path, size = f.path, f.size()
    if size < VDI_PREHEADER_SIZE:
        raise FormatError(f"{path}: not a VDI image: {size} bytes, shorter than the "
                          f"{VDI_PREHEADER_SIZE}-byte VDI pre-header")
    pre = f.pread(0, VDI_PREHEADER_SIZE, "VDI pre-header")
    signature = int.from_bytes(pre[0x40:0x44], "little")
    if signature != VDI_IMAGE_SIGNATURE:
        raise _bad(FormatError, path, "u32Signature", f"{signature:#010x}",
                   f"{VDI_IMAGE_SIGNATURE:#010x} (not a VDI image)")
    version = int.from_bytes(pre[0x44:0x48], "little")
    if version != VDI_IMAGE_VERSION:
        raise _bad(UnsupportedFeatureError, path, "u32Version",
                   f"{version:#010x} (header version {version >> 16}.{version & 0xFFFF})",
                   f"{VDI_IMAGE_VERSION:#010x} (1.1, the only version drivebay reads)")
    if size < VDI_PREHEADER_SIZE + 4:
        raise CorruptImageError(f"{path}: VDI header truncated: the file ends at {size} "
                                f"bytes, before cbHeader at {VDI_PREHEADER_SIZE:#x}")
    cb_header = int.from_bytes(f.pread(VDI_PREHEADER_SIZE, 4, "VDI cbHeader"), "little")
    if cb_header < VDI_HEADER1_SIZE:
        raise _bad(CorruptImageError, path, "cbHeader", cb_header,
                   f"{VDI_HEADER1_SIZE} or {VDI_HEADER1PLUS_SIZE} (the size of a 1.1 header)")
    if cb_header not in (VDI_HEADER1_SIZE, VDI_HEADER1PLUS_SIZE):
        raise _bad(UnsupportedFeatureError, path, "cbHeader", cb_header,
                   f"{VDI_HEADER1_SIZE} or {VDI_HEADER1PLUS_SIZE}")
    end = VDI_PREHEADER_SIZE + cb_header
    if size < end:
        raise CorruptImageError(f"{path}: VDI header truncated: cbHeader {cb_header} needs "
                                f"{end} bytes but the file has {size}")
    raw = f.pread(0, end, "VDI header") + bytes(VDI_HEADER.size - end)
    hdr = VDI_HEADER.unpack(raw)
    validate_header(path, hdr, size)
    return hdr


def validate_header(path, hdr, file_size):
    """Refuse a header whose fields break the format's rules or drivebay's limits."""
    kind = hdr.u32Type
    if kind == VDI_IMAGE_TYPE_UNDO:
        raise _bad(UnsupportedFeatureError, path, "u32Type", "3 (undo image)",
                   "1 (dynamic), 2 (fixed) or 4 (differencing): undo images are not supported")
    if kind not in TYPE_NAMES:
        raise _bad(CorruptImageError, path, "u32Type", kind,
                   "1 (dynamic), 2 (fixed) or 4 (differencing)")
    if hdr.fFlags & ~VDI_IMAGE_FLAGS_MASK:
        raise _bad(UnsupportedFeatureError, path, "fFlags", f"{hdr.fFlags:#x}",
                   f"only bit 0 (zero-expand) set, the one flag VirtualBox defines")
    for name in ("LegacyGeometry", "LCHSGeometry"):
        if name == "LCHSGeometry" and hdr.cbHeader < VDI_HEADER1PLUS_SIZE:
            continue
        cb_sector = VDIDISKGEOMETRY.unpack(hdr[name]).cbSector
        if cb_sector != VDI_GEOMETRY_SECTOR_SIZE:
            raise _bad(CorruptImageError, path, f"{name}.cbSector", cb_sector,
                       f"{VDI_GEOMETRY_SECTOR_SIZE}")
    cb_block = hdr.cbBlock
    if cb_block == 0 or cb_block & (cb_block - 1):
        raise _bad(CorruptImageError, path, "cbBlock", cb_block, "a power of two")
    if not VDI_BLOCK_SIZE_MIN <= cb_block <= VDI_BLOCK_SIZE_MAX:
        raise _bad(UnsupportedFeatureError, path, "cbBlock", cb_block,
                   f"{VDI_BLOCK_SIZE_MIN} to {VDI_BLOCK_SIZE_MAX} bytes")
    extra = hdr.cbBlockExtra
    if extra and (extra & (extra - 1) or extra > VDI_BLOCK_SIZE_MAX):
        raise _bad(CorruptImageError, path, "cbBlockExtra", extra,
                   f"0 or a power of two up to {VDI_BLOCK_SIZE_MAX}")
    if hdr.cBlocks > VDI_BLOCKS_MAX:
        raise _bad(CorruptImageError, path, "cBlocks", hdr.cBlocks,
                   f"at most {VDI_BLOCKS_MAX:#x} (offData, a u32, follows the block map)")
    virtual = align_up(hdr.cbDisk, SECTOR_SIZE)
    if hdr.cBlocks * cb_block < virtual:
        raise _bad(CorruptImageError, path, "cbDisk", hdr.cbDisk,
                   f"at most cBlocks {hdr.cBlocks} x cbBlock {cb_block} = "
                   f"{hdr.cBlocks * cb_block} bytes")
    if hdr.cBlocksAllocated > hdr.cBlocks:
        raise _bad(CorruptImageError, path, "cBlocksAllocated", hdr.cBlocksAllocated,
                   f"at most cBlocks ({hdr.cBlocks})")
    header_end = VDI_PREHEADER_SIZE + hdr.cbHeader
    if hdr.offBlocks < header_end:
        raise _bad(CorruptImageError, path, "offBlocks", f"{hdr.offBlocks:#x}",
                   f"at least {header_end:#x} (past the header)")
    map_bytes = 4 * hdr.cBlocks
    if map_bytes > VDI_MAP_BYTES_MAX:
        raise _bad(UnsupportedFeatureError, path, "cBlocks", hdr.cBlocks,
                   f"at most {VDI_MAP_BYTES_MAX // 4} (drivebay keeps the "
                   f"{map_bytes}-byte block map in memory)")
    map_end = hdr.offBlocks + map_bytes
    if map_end > file_size:
        raise _bad(CorruptImageError, path, "offBlocks", f"{hdr.offBlocks:#x}",
                   f"a block map (cBlocks {hdr.cBlocks} x 4 bytes) inside the "
                   f"{file_size}-byte file; it would end at {map_end}")
    if hdr.offData < map_end:
        raise _bad(CorruptImageError, path, "offData", f"{hdr.offData:#x}",
                   f"at least {map_end:#x}, the end of the block map "
                   f"(offBlocks {hdr.offBlocks:#x} + cBlocks {hdr.cBlocks} x 4)")
    if hdr.offData > file_size:
        raise _bad(CorruptImageError, path, "offData", f"{hdr.offData:#x}",
                   f"inside the {file_size}-byte file")
    for name in ("uuidCreate", "uuidModify") + \
            (("uuidLinkage",) if kind == VDI_IMAGE_TYPE_DIFF else ()):
        if hdr[name] == bytes(16):
            raise _bad(CorruptImageError, path, name, "the null UUID",
                       "a UUID" + (" (u32Type 4 names its parent by it)"
                                   if name == "uuidLinkage" else ""))


# -- per-image state ---------------------------------------------------------------

@dataclass
class VdiState:
    """An open VDI image: its header as stored and its block map, in memory."""
    path: str
    header: Record
    blocks: array.array                  # one u32 entry per block
    next_slot: int = 0                   # first slot past every allocated block
    modified: bool = False               # uuidModify replaced since open
    problems: list = field(default_factory=list)   # block-map corruption (check-mode open)

    @property
    def stride(self):
        return self.header.cbBlockExtra + self.header.cbBlock

    def slot_offset(self, slot):
        return self.header.offData + slot * self.stride

    def data_offset(self, entry):
        return self.slot_offset(entry) + self.header.cbBlockExtra


@dataclass
class MapSurvey:
    """What the block map says about the data area (see ``survey``)."""
    problems: list                       # entries outside the file/data area, shared slots
    allocated: int                       # entries that are neither FREE nor ZERO
    slots_in_file: int                   # whole slots between offData and the end of file
    tail_bytes: int                      # bytes past the last whole slot
    used: bytearray                      # 1 per referenced slot below min(slots_in_file, cBlocks)
    next_slot: int                       # one past the highest referenced slot


# -- operations --------------------------------------------------------------------

def load_block_map(f, hdr):
    blocks = array.array("I")
    blocks.frombytes(f.pread(hdr.offBlocks, 4 * hdr.cBlocks, "VDI block map"))
    if _BIG_ENDIAN_HOST:
        blocks.byteswap()
    return blocks


def survey(st, file_size):
    """Check every allocated entry against the file and the data area.

    Runs of consecutive entries are checked as intervals (block_runs merges
    them), so a well-formed map costs a handful of comparisons."""
    hdr, blocks = st.header, st.blocks
    data_bytes = max(0, file_size - hdr.offData)
    slots_in_file, tail = divmod(data_bytes, st.stride)
    used = bytearray(min(slots_in_file, hdr.cBlocks))
    problems, intervals = [], []
    for start, count, kind in block_runs(blocks, 0, len(blocks),
                                         VDI_IMAGE_BLOCK_FREE, VDI_IMAGE_BLOCK_ZERO):
        if kind == RUN_DATA:
            intervals.append((blocks[start], start, count))
    intervals.sort()
    next_slot, prev = 0, None           # prev: (end, first, start), the interval reaching furthest
    for first, start, count in intervals:
        end = first + count
        if end > hdr.cBlocks:
            b = start + max(0, hdr.cBlocks - first)
            problems.append(f"block map entry for block {b} is {blocks[b]}, beyond the "
                            f"{hdr.cBlocks} blocks of the data area (cBlocks)")
        elif end > slots_in_file:
            b = start + max(0, slots_in_file - first)
            problems.append(f"block map entry for block {b} is {blocks[b]}: slot at offset "
                            f"{st.slot_offset(blocks[b])} lies past the end of the "
                            f"{file_size}-byte file")
        if prev is not None and first < prev[0]:
            problems.append(f"block map entries for blocks {prev[2] + first - prev[1]} and "
                            f"{start} both point at slot {first}")
        if prev is None or end > prev[0]:
            prev = (end, first, start)
        lo, hi = first, min(end, len(used))
        if lo < hi:
            used[lo:hi] = b"\x01" * (hi - lo)
        next_slot = max(next_slot, end)
    if len(problems) > MAX_REPORTED_PROBLEMS:
        more = len(problems) - MAX_REPORTED_PROBLEMS
        problems = problems[:MAX_REPORTED_PROBLEMS] + [f"... and {more} more block map problems"]
    allocated = count_allocated(blocks, VDI_IMAGE_BLOCK_FREE, VDI_IMAGE_BLOCK_ZERO)
    return MapSurvey(problems, allocated, slots_in_file, tail, used, next_slot)


def write_header(f, st):
    """Write the header as stored (cbHeader bytes), cBlocksAllocated = next_slot."""
    st.header.cBlocksAllocated = st.next_slot
    raw = VDI_HEADER.pack(st.header)[:VDI_PREHEADER_SIZE + st.header.cbHeader]
    f.pwrite(0, raw, "VDI header")


def write_map_range(f, st, lo, hi):
    part = st.blocks[lo:hi]
    if _BIG_ENDIAN_HOST:
        part.byteswap()
    f.pwrite(st.header.offBlocks + 4 * lo, part.tobytes(), "VDI block map")


def write_map_entries(f, st, changed):
    """Write the entries of the blocks in ``changed``, nearby ones in one write."""
    if not changed:
        return
    order = sorted(set(changed))
    lo = prev = order[0]
    for b in order[1:]:
        if b - prev > MAP_WRITE_GAP:
            write_map_range(f, st, lo, prev + 1)
            lo = b
        prev = b
    write_map_range(f, st, lo, prev + 1)


def copy_slot(f, st, src, dst):
    a, b = st.slot_offset(src), st.slot_offset(dst)
    for at in range(0, st.stride, COPY_CHUNK):
        n = min(COPY_CHUNK, st.stride - at)
        f.pwrite(b + at, f.pread(a + at, n, "VDI block"), "VDI block")


def append_blocks(f, st, new):
    """Give each ``(block, data)`` of ``new`` the next free slot.

    ``data`` is exactly cbBlock bytes.  Data first, then cBlocksAllocated,
    then the map entries (see the module docstring)."""
    if not new:
        return
    first = st.next_slot
    extra = bytes(st.header.cbBlockExtra)
    at = st.slot_offset(first)
    for _, data in new:
        if extra:
            f.pwrite(at, extra, "VDI block extra data")
        f.pwrite(at + len(extra), data, "VDI block")
        at += st.stride
    st.next_slot += len(new)
    write_header(f, st)
    for i, (block, _) in enumerate(new):
        st.blocks[block] = first + i
    write_map_entries(f, st, [block for block, _ in new])


def pack_slots(f, st):
    """Move the last blocks into unreferenced slots until the allocated blocks
    fill slots 0..n-1, then set cBlocksAllocated = n and truncate the file.

    Each move writes into a slot nothing refers to before its entry is
    switched, so every intermediate state holds only leaks.  Returns the
    number of blocks moved.  The map must be free of problems."""
    assert not st.problems
    blocks = st.blocks
    n = count_allocated(blocks, VDI_IMAGE_BLOCK_FREE, VDI_IMAGE_BLOCK_ZERO)
    used, movers = bytearray(n), []
    for start, count, kind in block_runs(blocks, 0, len(blocks),
                                         VDI_IMAGE_BLOCK_FREE, VDI_IMAGE_BLOCK_ZERO):
        if kind != RUN_DATA:
            continue
        first = blocks[start]
        if first < n:
            hi = min(first + count, n)
            used[first:hi] = b"\x01" * (hi - first)
        movers.extend((first + i, start + i) for i in range(max(0, n - first), count))
    movers.sort()
    hole = used.find(0)
    for slot, block in movers:
        assert hole >= 0
        copy_slot(f, st, slot, hole)
        blocks[block] = hole
        write_map_entries(f, st, [block])
        hole = used.find(0, hole + 1)
    st.next_slot = n
    write_header(f, st)
    f.truncate(st.slot_offset(n))
    return len(movers)


def release_blocks(f, st, released):
    """Make the allocated ``released`` blocks read as zeros and give their slots back."""
    if not released:
        return
    for b in released:
        st.blocks[b] = VDI_IMAGE_BLOCK_ZERO
    write_map_entries(f, st, released)
    pack_slots(f, st)


def relocate_for_map(f, st, map_end):
    """Make room for a block map ending at ``map_end`` by moving the blocks of
    the first slots to the end and starting the data area that many slots later.

    Moving the blocks is safe at every step; the final map and header writes
    are not atomic together (VirtualBox's resize has the same window)."""
    hdr, blocks = st.header, st.blocks
    shift = -(-(map_end - hdr.offData) // st.stride)
    owners = []
    for start, count, kind in block_runs(blocks, 0, len(blocks),
                                         VDI_IMAGE_BLOCK_FREE, VDI_IMAGE_BLOCK_ZERO):
        if kind == RUN_DATA and blocks[start] < shift:
            first = blocks[start]
            owners.extend((first + i, start + i) for i in range(min(count, shift - first)))
    target = max(st.next_slot, shift)
    for i, (slot, _) in enumerate(sorted(owners)):
        copy_slot(f, st, slot, target + i)
    st.next_slot = target + len(owners)
    write_header(f, st)
    for i, (_, block) in enumerate(sorted(owners)):
        blocks[block] = target + i
    write_map_entries(f, st, [block for _, block in owners])
    # Slots below `shift` are now unreferenced: the data area starts there.
    for b, e in enumerate(blocks):
        if e < VDI_IMAGE_BLOCK_ZERO:
            blocks[b] = e - shift
    hdr.offData += shift * st.stride
    st.next_slot -= shift


def new_header(size, kind, block_size, cblocks, offblocks, offdata, uuid_create,
               uuid_linkage=NULL_UUID, uuid_parent_modify=NULL_UUID, comment=b""):
    # C/H/S 0: VirtualBox's Main stores "auto-detect" and computes a geometry
    # when the disk is attached; the geometry a guest sees is not the image's job.
    geometry = VDIDISKGEOMETRY.pack(VDIDISKGEOMETRY.defaults(cbSector=VDI_GEOMETRY_SECTOR_SIZE))
    return VDI_HEADER.defaults(
        szFileInfo=VDI_IMAGE_FILE_INFO, u32Signature=VDI_IMAGE_SIGNATURE,
        u32Version=VDI_IMAGE_VERSION, cbHeader=VDI_HEADER1PLUS_SIZE, u32Type=kind,
        szComment=comment, offBlocks=offblocks, offData=offdata, LegacyGeometry=geometry,
        cbDisk=size, cbBlock=block_size, cBlocks=cblocks,
        cBlocksAllocated=cblocks if kind == VDI_IMAGE_TYPE_FIXED else 0,
        uuidCreate=uuid_create.bytes_le, uuidModify=uuidlib.uuid4().bytes_le,
        uuidLinkage=uuid_linkage.bytes_le, uuidParentModify=uuid_parent_modify.bytes_le,
        LCHSGeometry=geometry)


def _as_uuid(value):
    return value if isinstance(value, uuidlib.UUID) else uuidlib.UUID(str(value))


# -- the driver ----------------------------------------------------------------------

class VdiDriver(BlockDriver):
    format_name = "vdi"
    description = "VirtualBox Disk Image (VDI 1.1)"
    create_variants = ("dynamic", "fixed")
    supports_backing = True
    resizable = True

    def __init__(self, file, writable):
        super().__init__(file, writable)
        self.state = None
        self.for_check = False
        self.backing_read = None        # set by the chain: backing_read(offset, view)

    # -- class level --------------------------------------------------------------

    @classmethod
    def probe(cls, head, tail, file_size):
        if len(head) >= 0x44 and int.from_bytes(head[0x40:0x44], "little") == VDI_IMAGE_SIGNATURE:
            return 100
        return 0

    @classmethod
    def create(cls, path, size=None, variant=None, uuid=None, parent=None,
               block_size=VDI_IMAGE_DEFAULT_BLOCK_SIZE, align=VDI_DATA_ALIGN, comment="",
               **options):
        """Create a VDI 1.1 image as VirtualBox does.

        ``parent``: an open image; the new image is differencing (type 4),
        links to ``parent.uuid`` and takes its size unless ``size`` is given.
        ``align``: where offBlocks and offData are aligned (VirtualBox: 1 MiB;
        512 gives a layout as compact as QEMU's)."""
        path = os.fspath(path)
        if options:
            raise ImageError(f"{path}: unknown VDI creation options: {', '.join(sorted(options))}")
        variant = variant or "dynamic"
        if variant not in cls.create_variants:
            raise ImageError(f"{path}: VDI variant {variant!r} unknown "
                             f"(known: {', '.join(cls.create_variants)})")
        kind = VDI_IMAGE_TYPE_FIXED if variant == "fixed" else VDI_IMAGE_TYPE_NORMAL
        link = parent_modify = NULL_UUID
        if parent is not None:
            if variant != "dynamic":
                raise ImageError(f"{path}: a differencing VDI image is dynamic, not {variant}")
            if parent.uuid in (None, NULL_UUID):
                raise ImageError(f"{path}: parent {parent.path} has no UUID; a VDI image "
                                 f"names its parent by UUID")
            kind, link = VDI_IMAGE_TYPE_DIFF, parent.uuid
            parent_modify = parent.modification_uuid or NULL_UUID
            if size is None:
                size = parent.size
        if size is None or size <= 0 or size % SECTOR_SIZE:
            raise ImageError(f"{path}: VDI disk size {size} must be a positive multiple of "
                             f"{SECTOR_SIZE} bytes")
        if block_size & (block_size - 1) or \
                not VDI_BLOCK_SIZE_MIN <= block_size <= VDI_BLOCK_SIZE_MAX:
            raise ImageError(f"{path}: VDI block size {block_size} must be a power of two "
                             f"from {VDI_BLOCK_SIZE_MIN} to {VDI_BLOCK_SIZE_MAX}")
        if align & (align - 1) or not SECTOR_SIZE <= align <= VDI_DATA_ALIGN:
            raise ImageError(f"{path}: alignment {align} must be a power of two from "
                             f"{SECTOR_SIZE} to {VDI_DATA_ALIGN}")
        cblocks = -(-size // block_size)
        if 4 * cblocks > VDI_MAP_BYTES_MAX:
            raise ImageError(f"{path}: {size} bytes in {block_size}-byte blocks needs "
                             f"{cblocks} blocks; at most {VDI_MAP_BYTES_MAX // 4} are supported")
        text = comment.encode("utf-8")
        if len(text) >= VDI_COMMENT_SIZE:
            raise ImageError(f"{path}: comment of {len(text)} bytes; szComment holds "
                             f"{VDI_COMMENT_SIZE - 1} and a NUL")
        offblocks = align_up(VDI_HEADER.size, align)
        offdata = align_up(offblocks + 4 * cblocks, align)
        hdr = new_header(size, kind, block_size, cblocks, offblocks, offdata,
                         _as_uuid(uuid) if uuid is not None else uuidlib.uuid4(),
                         link, parent_modify, text)
        if kind == VDI_IMAGE_TYPE_FIXED:
            blocks = array.array("I", range(cblocks))
        else:
            blocks = array.array("I", [VDI_IMAGE_BLOCK_FREE]) * cblocks
        st = VdiState(path, hdr, blocks, next_slot=hdr.cBlocksAllocated)
        f = ImageFile(path, writable=True, create=True)
        try:
            write_map_range(f, st, 0, cblocks)
            if kind == VDI_IMAGE_TYPE_FIXED:
                f.allocate(offdata, cblocks * block_size)
            else:
                f.truncate(offdata)
            write_header(f, st)       # last: a half-made file is no valid image
        except BaseException:
            f.close()
            os.unlink(path)
            raise
        f.close()

    # -- open, metadata -------------------------------------------------------------

    def _open(self):
        f = self.file
        hdr = read_header(f)
        st = VdiState(self.path, hdr, load_block_map(f, hdr))
        found = survey(st, f.size())
        if found.problems and not self.for_check:
            more = f" (and {len(found.problems) - 1} more)" if len(found.problems) > 1 else ""
            raise CorruptImageError(f"{self.path}: {found.problems[0]}{more}")
        st.problems = found.problems
        st.next_slot = found.next_slot
        self.state = st
        # "some VirtualBox tools write odd disk sizes": round up to a sector, as QEMU does.
        self.size = align_up(hdr.cbDisk, SECTOR_SIZE)
        self.cluster_size = hdr.cbBlock
        self._load_uuids()

    def _load_uuids(self):
        hdr = self.state.header
        self.variant = TYPE_NAMES[hdr.u32Type]
        self.uuid = parse_uuid(hdr.uuidCreate, self.path, "uuidCreate", True)
        self.modification_uuid = parse_uuid(hdr.uuidModify, self.path, "uuidModify", True)
        if hdr.u32Type == VDI_IMAGE_TYPE_DIFF:
            self.parent_uuid = parse_uuid(hdr.uuidLinkage, self.path, "uuidLinkage", True)
            self.parent_modification_uuid = parse_uuid(hdr.uuidParentModify, self.path,
                                                       "uuidParentModify", True)
        else:
            self.parent_uuid = self.parent_modification_uuid = None
        self.parent_locator = None    # VDI stores no parent path: open_chain's resolver finds it

    @property
    def block_size(self):
        return self.state.header.cbBlock

    @property
    def is_differencing(self):
        return self.state.header.u32Type == VDI_IMAGE_TYPE_DIFF

    @property
    def is_fixed(self):
        return self.state.header.u32Type == VDI_IMAGE_TYPE_FIXED

    def _require_sound(self):
        if self.state.problems:
            raise CorruptImageError(f"{self.path}: refusing to write: {self.state.problems[0]}")

    def _modifying(self):
        """The first change of content after open gets a new uuidModify."""
        st = self.state
        if not st.modified:
            st.header.uuidModify = uuidlib.uuid4().bytes_le
            st.modified = True
            write_header(self.file, st)
            self.modification_uuid = uuidlib.UUID(bytes_le=st.header.uuidModify)

    def _prepare_write(self, offset, length):
        """Checks before a write or zero write changes anything; False: nothing to do."""
        self._require_writable()
        self.check_range(offset, length)
        self._require_sound()
        if not length:
            return False
        self._check_backing(offset, length)
        self._modifying()
        return True

    # -- data path ------------------------------------------------------------------

    def _runs(self, offset, length):
        """``(lo, hi, start_block, count, kind)`` for the blocks under a byte range."""
        bs, end = self.block_size, offset + length
        b0 = offset // bs
        for start, count, kind in block_runs(self.state.blocks, b0, (end - 1) // bs - b0 + 1,
                                             VDI_IMAGE_BLOCK_FREE, VDI_IMAGE_BLOCK_ZERO):
            yield max(offset, start * bs), min(end, (start + count) * bs), start, count, kind

    def _whole(self, block, lo, hi):
        bs = self.block_size
        return lo == block * bs and hi == min((block + 1) * bs, self.size)

    def _falls_through(self, kind):
        return kind == RUN_FREE and self.is_differencing

    def _fresh_block(self, block, kind):
        """A new block's initial content: the parent's data or zeros."""
        bs = self.block_size
        buf = bytearray(bs)
        if self._falls_through(kind):
            n = min(bs, self.size - block * bs)
            self.backing_read(block * bs, memoryview(buf)[:n])
        return buf

    def _check_backing(self, offset, length):
        """Refuse, before writing anything, a partial write into a block only the parent holds."""
        if not self.is_differencing or self.backing_read is not None:
            return
        bs = self.block_size
        for b in {offset // bs, (offset + length - 1) // bs}:
            lo, hi = max(offset, b * bs), min(offset + length, (b + 1) * bs)
            if self.state.blocks[b] == VDI_IMAGE_BLOCK_FREE and not self._whole(b, lo, hi):
                raise ChainError(f"{self.path}: writing {hi - lo} bytes into block {b}, which "
                                 f"only the parent holds, needs the parent's data: open the "
                                 f"image through its chain (which sets backing_read)")

    def _per_block_data(self, lo, hi, start, count):
        """DATA extents of allocated blocks: one per run, or per block with cbBlockExtra."""
        st, bs = self.state, self.block_size
        step = count if not st.header.cbBlockExtra else 1
        for b in range(start, start + count, step):
            a, z = max(lo, b * bs), min(hi, (b + step) * bs)
            yield a, z, st.data_offset(st.blocks[b]) + a - b * bs

    def block_status(self, offset, length):
        self.check_range(offset, length)
        if not length:
            return []
        out = []
        for lo, hi, start, count, kind in self._runs(offset, length):
            if kind == RUN_FREE:
                out.append(Extent(lo, hi - lo, State.UNALLOCATED))
            elif kind == RUN_ZERO:
                out.append(Extent(lo, hi - lo, State.ZERO))
            else:
                out.extend(Extent(a, z - a, State.DATA, host)
                           for a, z, host in self._per_block_data(lo, hi, start, count))
        return out

    def write(self, offset, data):
        view = memoryview(data).cast("B")
        if not self._prepare_write(offset, len(view)):
            return
        f, st, bs = self.file, self.state, self.block_size
        new, zeroed = [], []
        for lo, hi, start, count, kind in self._runs(offset, len(view)):
            if kind == RUN_DATA:
                for a, z, host in self._per_block_data(lo, hi, start, count):
                    f.pwrite(host, view[a - offset:z - offset])
                continue
            for b in range(start, start + count):
                a, z = max(lo, b * bs), min(hi, (b + 1) * bs)
                part = view[a - offset:z - offset]
                whole = self._whole(b, a, z)
                if is_zero(part) and (whole or not self._falls_through(kind)):
                    if kind != RUN_ZERO:
                        st.blocks[b] = VDI_IMAGE_BLOCK_ZERO
                        zeroed.append(b)
                    continue
                if len(part) == bs:
                    new.append((b, part))
                    continue
                buf = self._fresh_block(b, RUN_ZERO if whole else kind)
                buf[a - b * bs:z - b * bs] = part
                new.append((b, buf))
        append_blocks(f, st, new)
        write_map_entries(f, st, zeroed)

    def write_zeroes(self, offset, length):
        """Make the range read as zeros in this image, never "ask the parent".

        Whole allocated blocks are freed (VDI_IMAGE_BLOCK_ZERO, the last block
        moves into their slot) except in fixed images, which keep every block."""
        if not self._prepare_write(offset, length):
            return
        f, st, bs = self.file, self.state, self.block_size
        new, zeroed, released = [], [], []
        for lo, hi, start, count, kind in self._runs(offset, length):
            if kind == RUN_ZERO:
                continue
            for b in range(start, start + count):
                a, z = max(lo, b * bs), min(hi, (b + 1) * bs)
                whole = self._whole(b, a, z)
                if kind == RUN_DATA and whole and not self.is_fixed:
                    released.append(b)
                elif kind == RUN_DATA:
                    host = st.data_offset(st.blocks[b]) + a - b * bs
                    for at in range(0, z - a, COPY_CHUNK):
                        f.pwrite(host + at, bytes(min(COPY_CHUNK, z - a - at)))
                elif whole or not self._falls_through(kind):
                    st.blocks[b] = VDI_IMAGE_BLOCK_ZERO
                    zeroed.append(b)
                else:
                    buf = self._fresh_block(b, kind)
                    buf[a - b * bs:z - b * bs] = bytes(z - a)
                    new.append((b, buf))
        append_blocks(f, st, new)
        write_map_entries(f, st, zeroed)
        release_blocks(f, st, released)

    def discard(self, offset, length):
        """Whole allocated blocks in the range read as zeros afterwards and their
        space is returned at once; partial blocks and fixed images are unchanged."""
        self._require_writable()
        self.check_range(offset, length)
        self._require_sound()
        if not length or self.is_fixed:
            return
        bs = self.block_size
        released = [b for lo, hi, start, count, kind in self._runs(offset, length)
                    if kind == RUN_DATA
                    for b in range(start, start + count)
                    if self._whole(b, max(lo, b * bs), min(hi, (b + 1) * bs))]
        if released:
            self._modifying()
            release_blocks(self.file, self.state, released)

    # -- image maintenance --------------------------------------------------------------

    def resize(self, new_size):
        """Grow the disk to ``new_size`` bytes (a multiple of 512); shrinking is refused.

        When the larger block map would reach into the data area, the blocks
        in its way move to the end of the file."""
        self._require_writable()
        self._require_sound()
        if new_size < self.size:
            raise UnsupportedOperation(f"{self.path}: shrinking a VDI image ({self.size} to "
                                       f"{new_size} bytes) is not supported")
        if new_size % SECTOR_SIZE:
            raise ImageError(f"{self.path}: new size {new_size} is not a multiple of "
                             f"{SECTOR_SIZE} bytes")
        if new_size == self.size:
            return
        f, st, bs = self.file, self.state, self.block_size
        hdr = st.header
        old_cblocks = hdr.cBlocks
        cblocks = max(old_cblocks, -(-new_size // bs))
        if 4 * cblocks > VDI_MAP_BYTES_MAX:
            raise ImageError(f"{self.path}: {new_size} bytes needs {cblocks} blocks; at most "
                             f"{VDI_MAP_BYTES_MAX // 4} are supported")
        self._modifying()
        last = (self.size - 1) // bs if self.size else None
        if last is not None and self.size % bs and st.blocks[last] < VDI_IMAGE_BLOCK_ZERO:
            # Bytes past the old end were never part of the disk: make them zeros.
            z = min(new_size, (last + 1) * bs)
            f.pwrite(st.data_offset(st.blocks[last]) + self.size - last * bs,
                     bytes(z - self.size))
        map_end = hdr.offBlocks + 4 * cblocks
        relocated = map_end > hdr.offData
        if relocated:
            relocate_for_map(f, st, map_end)
        st.blocks.extend(array.array("I", [VDI_IMAGE_BLOCK_FREE]) * (cblocks - old_cblocks))
        if self.is_fixed and cblocks > old_cblocks:
            k = cblocks - old_cblocks
            f.allocate(st.slot_offset(st.next_slot), k * st.stride)
            for i in range(k):
                st.blocks[old_cblocks + i] = st.next_slot + i
            st.next_slot += k
        if relocated:
            write_map_range(f, st, 0, cblocks)
            f.punch_hole(map_end, hdr.offData - map_end)
            if f.size() < st.slot_offset(st.next_slot):      # no block was left to move
                f.truncate(st.slot_offset(st.next_slot))
        else:
            write_map_range(f, st, old_cblocks, cblocks)
        hdr.cBlocks, hdr.cbDisk = cblocks, new_size
        write_header(f, st)
        self.size = new_size

    def compact(self, progress=None):
        """Free every allocated block that holds only zeros (it becomes
        VDI_IMAGE_BLOCK_ZERO, in a differencing image too, so it keeps
        shadowing the parent), move later blocks into the holes and truncate.

        ``progress(done, total)``: total is the number of allocated blocks,
        done the blocks examined; (total, total) comes when the file is packed."""
        self._require_writable()
        self._require_sound()
        if self.is_fixed:
            raise UnsupportedOperation(f"{self.path}: a fixed VDI image keeps every block; "
                                       f"compacting it is not supported")
        f, st, bs = self.file, self.state, self.block_size
        allocated = [b for start, count, kind in block_runs(st.blocks, 0, len(st.blocks),
                                                              VDI_IMAGE_BLOCK_FREE,
                                                              VDI_IMAGE_BLOCK_ZERO)
                     if kind == RUN_DATA for b in range(start, start + count)]
        total = len(allocated)
        buf = bytearray(bs)
        zero = []
        for i, b in enumerate(allocated):
            f.preadinto(st.data_offset(st.blocks[b]), buf, "VDI block")
            if is_zero(memoryview(buf)[:min(bs, self.size - b * bs)]):
                zero.append(b)
            if progress and i + 1 < total:
                progress(i + 1, total)
        for b in zero:
            st.blocks[b] = VDI_IMAGE_BLOCK_ZERO
        write_map_entries(f, st, zero)
        pack_slots(f, st)
        if progress:
            progress(total, total)

    def check(self, repair=False):
        """Block map against the file: entries past the end of the file or the
        data area, shared slots, cBlocksAllocated, unreferenced slots (leaks).

        ``repair`` moves blocks into leaked slots, truncates and corrects
        cBlocksAllocated; entries outside the file or sharing a slot are
        reported, never guessed at."""
        if repair:
            self._require_writable()
        f, st = self.file, self.state
        hdr = st.header
        found = survey(st, f.size())
        report = CheckReport(self.path, allocated_blocks=found.allocated,
                             total_blocks=hdr.cBlocks)
        report.errors.extend(found.problems)
        count_error = None
        if hdr.cBlocksAllocated < found.next_slot or (
                hdr.cBlocksAllocated != found.allocated and found.problems):
            # A count below a slot in use would let the next allocation
            # overwrite a live block: corruption.
            count_error = (f"header field cBlocksAllocated is {hdr.cBlocksAllocated} but "
                           f"the block map has {found.allocated} allocated blocks")
            report.errors.append(count_error)
        elif hdr.cBlocksAllocated > found.allocated:
            # Above every slot in use: what a kill between an allocation's
            # count update and its map entry leaves.  Nothing live can be
            # allocated over, so it is a leak, which repair corrects.
            count_error = ""
            report.leaks.append(f"header field cBlocksAllocated is {hdr.cBlocksAllocated}, "
                                f"above the {found.allocated} blocks the block map refers to")
        leaked = found.used.count(0) + max(0, found.slots_in_file - len(found.used))
        if leaked:
            report.leaks.append(f"{leaked} slot(s) of {st.stride} bytes in the data area "
                                f"belong to no block")
        if found.tail_bytes:
            report.leaks.append(f"{found.tail_bytes} bytes past the last whole slot at the "
                                f"end of the file")
        if not repair or report.clean:
            return report
        if found.problems:
            report.errors.append("not repaired: entries outside the file or sharing a slot "
                                 "need a decision drivebay does not guess")
            return report
        moved = pack_slots(f, st)
        report.repaired.append(f"packed the data area ({moved} block(s) moved into leaked "
                               f"slots), truncated the file after slot {st.next_slot}, "
                               f"cBlocksAllocated = {st.next_slot}")
        if count_error:
            report.errors.remove(count_error)
        report.leaks = []
        return report

    def set_parent(self, parent_uuid, parent_locator, parent_modification_uuid=None):
        """Rebase: link to another parent (type 4), or to none (type 1).

        VDI stores no locator; ``parent_locator`` is not recorded."""
        self._require_writable()
        self._require_sound()
        if self.is_fixed:
            raise UnsupportedOperation(f"{self.path}: a fixed VDI image cannot have a parent")
        hdr = self.state.header
        if parent_uuid in (None, NULL_UUID):
            hdr.u32Type = VDI_IMAGE_TYPE_NORMAL
            hdr.uuidLinkage = hdr.uuidParentModify = NULL_UUID.bytes_le
        else:
            hdr.u32Type = VDI_IMAGE_TYPE_DIFF
            hdr.uuidLinkage = _as_uuid(parent_uuid).bytes_le
            hdr.uuidParentModify = _as_uuid(parent_modification_uuid or NULL_UUID).bytes_le
        write_header(self.file, self.state)
        self._load_uuids()

    def info(self):
        st = self.state
        hdr = st.header

        def chs(raw):
            g = VDIDISKGEOMETRY.unpack(raw)
            return (g.cCylinders, g.cHeads, g.cSectors)
        return {
            "header_version": f"{hdr.u32Version >> 16}.{hdr.u32Version & 0xFFFF}",
            "cbHeader": hdr.cbHeader,
            "type": TYPE_NAMES[hdr.u32Type],
            "flags": hdr.fFlags,
            "comment": hdr.szComment.split(b"\0", 1)[0].decode("utf-8", "replace"),
            "block_size": hdr.cbBlock,
            "block_extra": hdr.cbBlockExtra,
            "blocks": hdr.cBlocks,
            "allocated_blocks": count_allocated(st.blocks, VDI_IMAGE_BLOCK_FREE,
                                                VDI_IMAGE_BLOCK_ZERO),
            "offBlocks": hdr.offBlocks,
            "offData": hdr.offData,
            "legacy_geometry": chs(hdr.LegacyGeometry),
            "lchs_geometry": chs(hdr.LCHSGeometry) if hdr.cbHeader >= VDI_HEADER1PLUS_SIZE
            else None,
            "uuid": str(self.uuid),
            "modification_uuid": str(self.modification_uuid),
            "parent_uuid": str(self.parent_uuid) if self.parent_uuid else None,
            "parent_modification_uuid": str(self.parent_modification_uuid)
            if self.parent_modification_uuid else None,
        }

"""Microsoft Virtual Hard Disk (VHD) images: fixed, dynamic and differencing.

Spec: Microsoft "Virtual Hard Disk Image Format Specification", version 1.0
(October 11, 2006, re-issued 2012).  Section and field names are the spec's.
The format is called "vhd" here (QEMU says "vpc").

* A *fixed* disk (DiskType 2) is the virtual disk byte for byte followed by
  the 512-byte hard disk footer.  A *dynamic* disk (3) has a copy of the
  footer at offset 0, the dynamic disk header ("cxsparse"), the Block
  Allocation Table (BAT: big-endian u32 sector offsets, 0xFFFFFFFF unused)
  and data blocks, each a sector bitmap padded to 512 bytes and BlockSize
  bytes of data; the footer ends the file.  A *differencing* disk (4) is a
  dynamic disk whose header names its parent (ParentUniqueId,
  ParentTimeStamp, ParentUnicodeName, parent locators).
* Sector bitmaps ("Block Allocation Table and Data Blocks": 1 = the sector
  holds valid data, 0 = never modified; in a differencing disk 0 = the
  parent's sector) are honoured for dynamic disks too, as the spec,
  VirtualBox and libvhdi do: a 0 sector is UNALLOCATED (a base image reads
  zeros).  QEMU ignores the bitmap of a dynamic disk and reads the data
  area; the two readings agree on every image written here, because the
  data area of a 0 sector is kept zero (new blocks are holes or zeroed, and
  a partial sector is completed with zeros before its bit becomes 1).
* Size: the disk is CurrentSize bytes, as VirtualBox, Hyper-V and libvhdi
  read it.  qemu-img derives the size from the CHS geometry for creators it
  does not know; on every image qemu-img writes the two agree.  Images
  created here keep the size asked (no CHS rounding) and carry a creator
  qemu-img reads CurrentSize for (see CREATOR_APPLICATION).
* Allocating a block: the footer first at the new end of file, then bitmap
  and data where the old footer was, a write barrier, then the BAT entry
  (``_allocate``): a crash never leaves the file without a footer at its
  end, nor a BAT entry pointing at space not yet written.

Not supported: shrinking, compaction, split files (".v01"...), the Mac
alias and deprecated Wi2r/Wi2k parent locators (ignored when read); the
Temporary feature and SavedState are only reported by info().  A write of
part of a sector that a differencing disk leaves to its parent needs the
parent's bytes: the chain sets ``backing_read(offset, view)`` for that;
without it such a write raises ChainError before anything changes.
"""

import array
import os
import struct
import sys
import time
import urllib.parse
import uuid as uuidlib
from dataclasses import dataclass, field

from drivebay.block import bitmap_impl
from drivebay.block.driver import (NULL_UUID, SECTOR_SIZE, BlockDriver, CheckReport, Extent,
                                   ImageFile, State, parse_uuid)
from drivebay.errors import (ChainError, CorruptImageError, FormatError, ImageError,
                             UnsupportedFeatureError, UnsupportedOperation)
from drivebay.layout import Layout, Record

# -- constants --------------------------------------------------------------------------

FOOTER_SIZE = 512
OLD_FOOTER_SIZE = 511          # "Hard Disk Footer Format": Virtual PC before 2004 wrote 511 bytes
HEADER_SIZE = 1024
FOOTER_COOKIE = b"conectix"
HEADER_COOKIE = b"cxsparse"

FEATURE_TEMPORARY = 0x1        # Features: "candidate for deletion on shutdown"
FEATURE_RESERVED = 0x2         # Features: "This bit must always be set to 1"
FILE_FORMAT_VERSION = 0x00010000
HEADER_VERSION = 0x00010000
NO_OFFSET = 0xFFFFFFFFFFFFFFFF  # footer DataOffset of a fixed disk; the header's unused DataOffset

DISK_TYPE_FIXED = 2
DISK_TYPE_DYNAMIC = 3
DISK_TYPE_DIFFERENCING = 4
DISK_TYPE_NAMES = {DISK_TYPE_FIXED: "fixed", DISK_TYPE_DYNAMIC: "dynamic",
                   DISK_TYPE_DIFFERENCING: "differencing"}

BAT_UNUSED = 0xFFFFFFFF        # "Block Allocation Table": an unused entry
VHD_EPOCH = 946684800          # TimeStamp counts seconds from 2000-01-01 00:00:00 UTC

# qemu-img takes the size from the CHS geometry unless the creator is one it
# knows to use CurrentSize ("win " Hyper-V, "qem2", "d2v ", "CTXS", "tap");
# a name of our own would make qemu-img cut every non-CHS size short.  So
# images made here carry Hyper-V's creator and host OS, and drivebay's own
# version (0.1) in CreatorVersion, where Hyper-V writes 6.x or 10.0.
CREATOR_APPLICATION = b"win "
CREATOR_VERSION = 0x00000001   # major << 16 | minor
CREATOR_HOST_OS_WINDOWS = 0x5769326B   # "Wi2k" (the other value the spec names is "Mac ")

PLATFORM_NONE = 0
PLATFORM_WI2R = 0x57693272     # deprecated
PLATFORM_WI2K = 0x5769326B     # deprecated
PLATFORM_W2RU = 0x57327275     # relative path, UTF-16LE
PLATFORM_W2KU = 0x57326B75     # absolute path, UTF-16LE
PLATFORM_MAC = 0x4D616320      # Mac OS alias blob
PLATFORM_MACX = 0x4D616358     # file URL, UTF-8 (RFC 2396)
PLATFORM_NAMES = {PLATFORM_WI2R: "Wi2r", PLATFORM_WI2K: "Wi2k", PLATFORM_W2RU: "W2ru",
                  PLATFORM_W2KU: "W2ku", PLATFORM_MAC: "Mac", PLATFORM_MACX: "MacX"}

DEFAULT_BLOCK_SIZE = 2 << 20   # "By default, the size of a block is 4096 512-byte sectors (2 MB)"
MIN_BLOCK_SIZE = SECTOR_SIZE   # "a power-of-two multiple of sectors"
MAX_BLOCK_SIZE = 1 << 31       # the largest power of two the u32 BlockSize field holds
MAX_CREATE_SIZE = 2040 << 30   # QEMU's limit (VirtualBox allows 2 TiB): both can open what we make
MAX_OPEN_SIZE = 2 << 40        # VirtualBox's limit; a larger CurrentSize is refused
MAX_TABLE_ENTRIES = 1 << 24    # the BAT stays in memory (64 MiB); 2 TiB in 2 MiB blocks is 1 Mi
MAX_LOCATOR_LENGTH = 65536     # a Windows path is at most 32 767 UTF-16 units
LOCATOR_SPACE = 4096           # bytes reserved per locator at creation: room for a rebase
BITMAP_CACHE_BLOCKS = 1024     # sector bitmaps kept in memory (512 KiB at 2 MiB blocks)
CHS_MAX_SECTORS = 65535 * 16 * 255   # Appendix "CHS Calculation": the largest geometry

# -- on-disk layouts ----------------------------------------------------------------------

FOOTER = Layout("VHD hard disk footer", ">", [
    ("Cookie", "8s"), ("Features", "I"), ("FileFormatVersion", "I"), ("DataOffset", "Q"),
    ("TimeStamp", "I"), ("CreatorApplication", "4s"), ("CreatorVersion", "I"),
    ("CreatorHostOS", "I"), ("OriginalSize", "Q"), ("CurrentSize", "Q"),
    ("DiskGeometry", "I"),     # Cylinder (u16), Heads (u8), SectorsPerTrack (u8)
    ("DiskType", "I"), ("Checksum", "I"), ("UniqueId", "16s"), ("SavedState", "B"),
    ("Reserved", "427s")], size=FOOTER_SIZE)

PARENT_LOCATOR_ENTRY = Layout("VHD parent locator entry", ">", [
    ("PlatformCode", "I"), ("PlatformDataSpace", "I"), ("PlatformDataLength", "I"),
    ("Reserved", "I"), ("PlatformDataOffset", "Q")], size=24)
LOCATOR_ENTRIES = 8

DYNAMIC_HEADER = Layout("VHD dynamic disk header", ">", [
    ("Cookie", "8s"), ("DataOffset", "Q"), ("TableOffset", "Q"), ("HeaderVersion", "I"),
    ("MaxTableEntries", "I"), ("BlockSize", "I"), ("Checksum", "I"), ("ParentUniqueId", "16s"),
    ("ParentTimeStamp", "I"), ("Reserved1", "I"), ("ParentUnicodeName", "512s"),
    ("ParentLocatorEntries", f"{LOCATOR_ENTRIES * PARENT_LOCATOR_ENTRY.size}s"),
    ("Reserved2", "256s")], size=HEADER_SIZE)


def checksum(buf, at):
    """The spec's Checksum: one's complement of the sum of all bytes, the
    4-byte field at ``at`` counted as zero."""
    return ~(sum(buf) - sum(buf[at:at + 4])) & 0xFFFFFFFF


def chs_geometry(size):
    """(cylinders, heads, sectors per track) by the spec's "CHS Calculation"."""
    total = min(size // SECTOR_SIZE, CHS_MAX_SECTORS)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def _geometry_field(size):
    c, h, s = chs_geometry(size)
    return c << 16 | h << 8 | s


def _pack(layout, rec):
    """``rec`` packed with its Checksum field computed."""
    rec = Record(rec)
    rec.Checksum = 0
    buf = bytearray(layout.pack(rec))
    at = layout.offsets["Checksum"]
    struct.pack_into(">I", buf, at, checksum(buf, at))
    return bytes(buf)


def _round_up(n, unit=SECTOR_SIZE):
    return -(-n // unit) * unit


def _bitmap_bytes(block_size):
    return _round_up(block_size // SECTOR_SIZE // 8)   # "padded to a 512-byte sector boundary"


def _vhd_time(unix_seconds):
    return max(0, min(int(unix_seconds) - VHD_EPOCH, 0xFFFFFFFF))


def _utf16_field(text, size, encoding):
    """``text`` encoded, cut to ``size`` bytes at a character boundary, zero-padded."""
    while len(text.encode(encoding)) > size:
        text = text[:-1]
    return text.encode(encoding).ljust(size, b"\0")


# -- per-image state -----------------------------------------------------------------------

@dataclass
class VhdState:
    footer: Record
    footer_offset: int | None      # the valid footer ending the file; None: only the copy at 0 was
    problems: list = field(default_factory=list)   # found at open; info() shows them
    header_offset: int = 0
    header: Record | None = None
    locators: list = field(default_factory=list)   # LOCATOR_ENTRIES Records
    locator_paths: dict = field(default_factory=dict)   # platform name -> decoded path
    block_size: int = 0
    bitmap_size: int = 0
    bat: array.array | None = None   # host byte order
    data_end: int = 0                # past every structure and block: where the next one goes
    bitmaps: dict = field(default_factory=dict)

    @property
    def disk_type(self):
        return self.footer.DiskType


# -- operations ----------------------------------------------------------------------------

def _bad(error, path, where, field_name, found, expected):
    """An error naming the file, the structure, the field, what was found and what was expected."""
    return error(f"{path}: {where}: field {field_name} is {found}, expected {expected}")


def _parse_footer(raw, path, where):
    if raw[:8] != FOOTER_COOKIE:
        raise _bad(FormatError, path, where, "Cookie", repr(bytes(raw[:8])),
                   f"{FOOTER_COOKIE!r}: not a VHD image")
    rec = FOOTER.unpack(bytes(raw).ljust(FOOTER_SIZE, b"\0"))
    want = checksum(raw, FOOTER.offsets["Checksum"])
    if rec.Checksum != want:
        raise _bad(CorruptImageError, path, where, "Checksum", f"{rec.Checksum:#010x}",
                   f"{want:#010x} (one's complement of the byte sum)")
    if rec.FileFormatVersion >> 16 != FILE_FORMAT_VERSION >> 16:
        raise _bad(UnsupportedFeatureError, path, where, "FileFormatVersion",
                   f"{rec.FileFormatVersion:#010x}", f"{FILE_FORMAT_VERSION:#010x}")
    if rec.DiskType not in DISK_TYPE_NAMES:
        raise _bad(UnsupportedFeatureError, path, where, "DiskType", rec.DiskType,
                   "2 (fixed), 3 (dynamic) or 4 (differencing)")
    if rec.CurrentSize > MAX_OPEN_SIZE:
        raise _bad(UnsupportedFeatureError, path, where, "CurrentSize", rec.CurrentSize,
                   f"at most {MAX_OPEN_SIZE} (2 TiB, VirtualBox's limit)")
    return rec


def _read_footer(f):
    """The footer ending the file, or the copy at 0 of a dynamic disk whose
    end footer is damaged (VirtualBox does the same).

    Returns ``(record, offset, raw, problems)``; offset is None when the copy is used."""
    size = f.size()
    if size < OLD_FOOTER_SIZE:
        raise FormatError(f"{f.path}: {size} bytes is too small for a VHD footer "
                          f"({FOOTER_SIZE} bytes)")
    tail = f.pread(size - min(size, FOOTER_SIZE), min(size, FOOTER_SIZE), "footer")
    if tail[:8] != FOOTER_COOKIE and tail[1:9] == FOOTER_COOKIE:
        tail, offset = tail[1:], size - OLD_FOOTER_SIZE
    else:
        offset = size - len(tail)
    try:
        return _parse_footer(tail, f.path, f"footer at offset {offset}"), offset, tail, []
    except ImageError as tail_error:
        if size >= FOOTER_SIZE:
            head = f.pread(0, FOOTER_SIZE, "footer copy")
            try:
                rec = _parse_footer(head, f.path, "footer copy at offset 0")
            except ImageError:
                raise tail_error from None
            if rec.DiskType != DISK_TYPE_FIXED:
                return rec, None, head, [str(tail_error).removeprefix(f"{f.path}: ") +
                                         "; the copy at offset 0 is used"]
        raise


def _check_span(path, what, start, length, limit, field_name, expected="inside the file"):
    if start < 0 or start + length > limit:
        raise CorruptImageError(f"{path}: field {field_name} places the {what} at bytes "
                                f"{start}..{start + length}, expected {expected} "
                                f"(first {limit} bytes)")


def _load(f):
    """Read and validate every structure; nothing is allocated before the
    field that sizes it has been checked against its limit."""
    footer, footer_offset, raw, problems = _read_footer(f)
    st = VhdState(footer=footer, footer_offset=footer_offset, problems=problems)
    size = f.size()
    limit = footer_offset if footer_offset is not None else size
    path = f.path
    if footer.DiskType == DISK_TYPE_FIXED:
        if footer.CurrentSize > limit:
            raise _bad(CorruptImageError, path, "footer", "CurrentSize", footer.CurrentSize,
                       f"at most the {limit} bytes before the footer (truncated image?)")
        st.data_end = limit
        return st
    if footer_offset is not None:
        problem = _copy_problem(f, raw)
        if problem:
            problems.append(problem)
    _check_span(path, "dynamic disk header", footer.DataOffset, HEADER_SIZE, limit, "DataOffset")
    st.header_offset = footer.DataOffset
    raw = f.pread(footer.DataOffset, HEADER_SIZE, "dynamic disk header")
    hdr = DYNAMIC_HEADER.unpack(raw)
    where = f"dynamic disk header at offset {footer.DataOffset}"
    if hdr.Cookie != HEADER_COOKIE:
        raise _bad(FormatError, path, where, "Cookie", repr(hdr.Cookie), repr(HEADER_COOKIE))
    want = checksum(raw, DYNAMIC_HEADER.offsets["Checksum"])
    if hdr.Checksum != want:
        raise _bad(CorruptImageError, path, where, "Checksum", f"{hdr.Checksum:#010x}",
                   f"{want:#010x} (one's complement of the byte sum)")
    if hdr.HeaderVersion >> 16 != HEADER_VERSION >> 16:
        raise _bad(UnsupportedFeatureError, path, where, "HeaderVersion",
                   f"{hdr.HeaderVersion:#010x}", f"{HEADER_VERSION:#010x}")
    bs = hdr.BlockSize
    if bs & (bs - 1) or not MIN_BLOCK_SIZE <= bs <= MAX_BLOCK_SIZE:
        raise _bad(CorruptImageError, path, where, "BlockSize", bs,
                   f"a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}")
    needed = -(-footer.CurrentSize // bs)
    if hdr.MaxTableEntries < needed:
        raise _bad(CorruptImageError, path, where, "MaxTableEntries", hdr.MaxTableEntries,
                   f"at least {needed} (CurrentSize {footer.CurrentSize} / BlockSize {bs})")
    _check_span(path, f"BAT of {hdr.MaxTableEntries} entries", hdr.TableOffset,
                4 * hdr.MaxTableEntries, limit, "TableOffset/MaxTableEntries")
    if hdr.MaxTableEntries > MAX_TABLE_ENTRIES:
        raise _bad(UnsupportedFeatureError, path, where, "MaxTableEntries", hdr.MaxTableEntries,
                   f"at most {MAX_TABLE_ENTRIES}")
    st.header, st.block_size, st.bitmap_size = hdr, bs, _bitmap_bytes(bs)
    ends = [FOOTER_SIZE, footer.DataOffset + HEADER_SIZE, hdr.TableOffset + 4 * hdr.MaxTableEntries]
    st.locators = [PARENT_LOCATOR_ENTRY.unpack(hdr.ParentLocatorEntries, i * 24)
                   for i in range(LOCATOR_ENTRIES)]
    if footer.DiskType == DISK_TYPE_DIFFERENCING:
        for i, loc in enumerate(st.locators):
            if loc.PlatformCode == PLATFORM_NONE:
                continue
            name = f"ParentLocatorEntries[{i}]"
            if loc.PlatformDataLength > MAX_LOCATOR_LENGTH:
                raise _bad(CorruptImageError, path, where, f"{name}.PlatformDataLength",
                           loc.PlatformDataLength, f"at most {MAX_LOCATOR_LENGTH}")
            _check_span(path, "parent locator", loc.PlatformDataOffset, loc.PlatformDataLength,
                        limit, f"{name}.PlatformDataOffset")
            ends.append(loc.PlatformDataOffset + max(_locator_space(loc), loc.PlatformDataLength))
            data = f.pread(loc.PlatformDataOffset, loc.PlatformDataLength, "parent locator")
            text = _decode_locator(loc.PlatformCode, data)
            if text:
                st.locator_paths.setdefault(PLATFORM_NAMES.get(loc.PlatformCode, "?"), text)
    raw_bat = f.pread(hdr.TableOffset, 4 * hdr.MaxTableEntries, "BAT")
    st.bat = array.array("I")
    assert st.bat.itemsize == 4
    st.bat.frombytes(raw_bat)
    if sys.byteorder == "little":
        st.bat.byteswap()
    total = st.bitmap_size + bs
    last = max((e for e in st.bat if e != BAT_UNUSED), default=None)
    if last is not None:
        if last * SECTOR_SIZE + total > limit:
            i = next(i for i, e in enumerate(st.bat)
                     if e != BAT_UNUSED and e * SECTOR_SIZE + total > limit)
            start = st.bat[i] * SECTOR_SIZE
            raise CorruptImageError(f"{path}: BAT entry {i} is sector {st.bat[i]}: its block at "
                                    f"bytes {start}..{start + total} lies past the end of the "
                                    f"data (footer at {limit}, file {size} bytes)")
        ends.append(last * SECTOR_SIZE + total)
    st.data_end = _round_up(max(ends))
    return st


def _copy_problem(f, raw):
    """What is wrong with the footer copy at 0 of a dynamic disk, or None."""
    copy = f.pread(0, FOOTER_SIZE, "footer copy")
    if copy[:OLD_FOOTER_SIZE] == raw[:OLD_FOOTER_SIZE]:
        return None
    try:
        rec = _parse_footer(copy, f.path, "footer copy at offset 0")
    except ImageError as e:
        return str(e).removeprefix(f"{f.path}: ")
    end = FOOTER.unpack(bytes(raw).ljust(FOOTER_SIZE, b"\0"))
    fields = [k for k in FOOTER.fields if rec[k] != end[k] and k != "Checksum"]
    return f"footer copy at offset 0 differs from the footer at the end in {', '.join(fields)}"


def _parent_name(hdr):
    return hdr.ParentUnicodeName.decode("utf-16-be", errors="replace").split("\0", 1)[0]


def _locator_space(loc):
    """PlatformDataSpace in bytes.  The spec says sectors, but Virtual PC and
    Hyper-V write bytes; like VirtualBox, a value below 512 counts as sectors."""
    space = loc.PlatformDataSpace
    return space if space >= SECTOR_SIZE else space * SECTOR_SIZE


def _decode_locator(code, data):
    if code in (PLATFORM_W2RU, PLATFORM_W2KU):
        text = data.decode("utf-16-le", errors="replace").split("\0", 1)[0]
        return text.replace("\\", "/")          # Windows separators, read on a POSIX host
    if code == PLATFORM_MACX:
        text = data.decode("utf-8", errors="replace").split("\0", 1)[0]
        return urllib.parse.unquote(text.removeprefix("file://"))
    return None


def _write_footer(f, st, at):
    raw = _pack(FOOTER, st.footer)
    f.pwrite(at, raw, "footer")
    return raw


def _write_footers(f, st):
    """Rewrite the footer ending the file, then (dynamic disks) its copy at 0."""
    at = st.footer_offset if st.footer_offset is not None else st.data_end
    raw = _write_footer(f, st, at)
    if f.size() > at + FOOTER_SIZE:
        f.truncate(at + FOOTER_SIZE)
    st.footer_offset = at
    if st.disk_type != DISK_TYPE_FIXED:
        f.pwrite(0, raw, "footer copy")


def _write_header(f, st):
    entries = b"".join(PARENT_LOCATOR_ENTRY.pack(loc) for loc in st.locators)
    st.header.ParentLocatorEntries = entries
    f.pwrite(st.header_offset, _pack(DYNAMIC_HEADER, st.header), "dynamic disk header")


def _bitmap(f, st, blk, new=None):
    """Block ``blk``'s sector bitmap, cached (``new``: a fresh one to cache)."""
    bm = st.bitmaps.get(blk) if new is None else None
    if bm is None:
        if len(st.bitmaps) >= BITMAP_CACHE_BLOCKS:
            del st.bitmaps[next(iter(st.bitmaps))]
        bm = new if new is not None else bytearray(
            f.pread(st.bat[blk] * SECTOR_SIZE, st.bitmap_size, f"sector bitmap of block {blk}"))
        st.bitmaps[blk] = bm
    return bm


def _grow_file(f, st, length):
    """Reserve ``length`` bytes past the data for a new structure; returns
    its offset.  The footer goes first, past the new space, so the file ends
    in a valid footer at every moment.  The space may hold leftovers of an
    interrupted allocation: the caller overwrites or zeroes all of it."""
    off = st.data_end
    new_end = off + length
    if new_end // SECTOR_SIZE >= BAT_UNUSED:
        raise ImageError(f"{f.path}: the image file would exceed the 2 TiB a BAT entry can address")
    if st.footer_offset is None or st.footer_offset < new_end:
        at = new_end if st.footer_offset is not None else max(new_end, f.size() - FOOTER_SIZE)
        _write_footer(f, st, at)
        st.footer_offset = at
    st.data_end = new_end
    return off


def _allocate(f, st, blk, first, count, payload, barrier):
    """Give block ``blk`` space, holding ``payload`` (None: zeros) at sectors
    first..first+count.

    Order: (1) the footer at the new end of file, (2) the bitmap over the
    old footer and the data, (3) a barrier, (4) the BAT entry.  The entry is
    the commit point: before it the block is unreferenced space (a leak
    check reports and the next allocation reuses), after it the block is
    complete.  The bitmap is the per-sector commit: a 0 bit never exposes
    what the data area holds."""
    old_size = f.size()
    off = _grow_file(f, st, st.bitmap_size + st.block_size)
    data = off + st.bitmap_size
    stale_end = min(off + st.bitmap_size + st.block_size, old_size)
    if stale_end > data:
        f.punch_hole(data, stale_end - data)
    bm = bytearray(st.bitmap_size)
    bitmap_impl.set_bits(bm, first, count, True, True)
    f.pwrite(off, bm, "sector bitmap")
    if payload is not None:
        f.pwrite(data + first * SECTOR_SIZE, payload)
    barrier()
    _set_bat_entry(f, st, blk, off)
    _bitmap(f, st, blk, new=bm)


def _set_bat_entry(f, st, blk, offset):
    f.pwrite(st.header.TableOffset + 4 * blk, struct.pack(">I", offset // SECTOR_SIZE),
             f"BAT entry {blk}")
    st.bat[blk] = offset // SECTOR_SIZE


def _set_bitmap_bits(f, st, blk, first, count, value):
    """Set sectors' bits and write back only the bitmap sectors that changed."""
    bm = _bitmap(f, st, blk)
    if bitmap_impl.count_bits(bm, first, count, True) == (count if value else 0):
        return
    bitmap_impl.set_bits(bm, first, count, value, True)
    a = first // 8 // SECTOR_SIZE * SECTOR_SIZE
    b = _round_up((first + count + 7) // 8)
    f.pwrite(st.bat[blk] * SECTOR_SIZE + a, bm[a:b], f"sector bitmap of block {blk}")


def _link_parent(f, st, child_path, parent_uuid, parent_locator, parent_timestamp=None):
    """Fill the header's parent fields and write the W2ru (relative) and W2ku
    (absolute) locators, in their old space when it is large enough, else
    past the data.  A relative ``parent_locator`` is relative to the child's
    folder.  The caller writes the header after a barrier."""
    hdr = st.header
    old = {loc.PlatformCode: loc for loc in st.locators if loc.PlatformCode != PLATFORM_NONE}
    st.locators = [PARENT_LOCATOR_ENTRY.defaults() for _ in range(LOCATOR_ENTRIES)]
    st.locator_paths = {}
    hdr.ParentUniqueId = (parent_uuid or NULL_UUID).bytes
    hdr.ParentUnicodeName = bytes(512)
    if parent_locator:
        folder = os.path.dirname(os.path.abspath(child_path))
        absolute = os.path.normpath(os.path.join(folder, parent_locator))
        if parent_timestamp is None and os.path.exists(absolute):
            parent_timestamp = _vhd_time(os.stat(absolute).st_mtime)
        hdr.ParentUnicodeName = _utf16_field(os.path.basename(absolute), 512, "utf-16-be")
        pairs = ((PLATFORM_W2RU, os.path.relpath(absolute, folder)), (PLATFORM_W2KU, absolute))
        for i, (code, text) in enumerate(pairs):
            data = text.encode("utf-16-le")
            prev = old.get(code)
            if prev is not None and _locator_space(prev) >= len(data):
                at, space = prev.PlatformDataOffset, _locator_space(prev)
            else:
                space = _round_up(max(len(data), LOCATOR_SPACE))
                at = _grow_file(f, st, space)
            f.pwrite(at, data.ljust(space, b"\0"), "parent locator")
            st.locators[i] = PARENT_LOCATOR_ENTRY.defaults(
                PlatformCode=code, PlatformDataSpace=space, PlatformDataLength=len(data),
                PlatformDataOffset=at)
            st.locator_paths[PLATFORM_NAMES[code]] = text
    hdr.ParentTimeStamp = parent_timestamp or 0


# -- the driver ----------------------------------------------------------------------------

class VhdDriver(BlockDriver):
    format_name = "vhd"
    description = "Microsoft Virtual Hard Disk (VHD)"
    create_variants = ("dynamic", "fixed")
    supports_backing = True
    resizable = True

    @classmethod
    def probe(cls, head, tail, file_size):
        if tail[-FOOTER_SIZE:-FOOTER_SIZE + 8] == FOOTER_COOKIE or \
                tail[-OLD_FOOTER_SIZE:-OLD_FOOTER_SIZE + 8] == FOOTER_COOKIE:
            return 100
        return 100 if head[:8] == FOOTER_COOKIE else 0

    @classmethod
    def create(cls, path, size, variant=None, uuid=None, parent=None,
               block_size=DEFAULT_BLOCK_SIZE, **options):
        if options:
            raise ImageError(f"{path}: unknown VHD options {', '.join(sorted(options))} "
                             f"(known: block_size)")
        if parent is not None:
            if variant not in (None, "dynamic", "differencing"):
                raise ImageError(f"{path}: a differencing VHD is dynamic, not {variant!r}")
            if size is not None and size != parent.size:
                raise ImageError(f"{path}: a differencing VHD has its parent's size "
                                 f"({parent.size} bytes), not {size}")
            size, disk_type = parent.size, DISK_TYPE_DIFFERENCING
        elif variant in (None, "dynamic", "fixed"):
            disk_type = DISK_TYPE_FIXED if variant == "fixed" else DISK_TYPE_DYNAMIC
        else:
            raise ImageError(f"{path}: VHD variant {variant!r} unknown (dynamic or fixed)")
        if size is None or size < 0 or size % SECTOR_SIZE:
            raise ImageError(f"{path}: a VHD disk is whole 512-byte sectors; {size} bytes is not")
        if size > MAX_CREATE_SIZE:
            raise ImageError(f"{path}: {size} bytes is larger than the largest VHD "
                             f"({MAX_CREATE_SIZE} bytes = 2040 GiB, QEMU's limit; "
                             f"VirtualBox's is 2 TiB)")
        if block_size & (block_size - 1) or not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
            raise ImageError(f"{path}: block_size {block_size} is not a power of two from "
                             f"{MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}")
        if -(-size // block_size) > MAX_TABLE_ENTRIES:
            raise ImageError(f"{path}: {size} bytes in blocks of {block_size} needs more than "
                             f"{MAX_TABLE_ENTRIES} BAT entries: use larger blocks")
        footer = FOOTER.defaults(
            Cookie=FOOTER_COOKIE, Features=FEATURE_RESERVED, FileFormatVersion=FILE_FORMAT_VERSION,
            DataOffset=NO_OFFSET if disk_type == DISK_TYPE_FIXED else FOOTER_SIZE,
            TimeStamp=_vhd_time(time.time()), CreatorApplication=CREATOR_APPLICATION,
            CreatorVersion=CREATOR_VERSION, CreatorHostOS=CREATOR_HOST_OS_WINDOWS,
            OriginalSize=size, CurrentSize=size, DiskGeometry=_geometry_field(size),
            DiskType=disk_type, UniqueId=(uuid or uuidlib.uuid4()).bytes)
        f = ImageFile(path, writable=True, create=True)
        done = False
        try:
            if disk_type == DISK_TYPE_FIXED:
                if size:
                    f.allocate(0, size)
                f.pwrite(size, _pack(FOOTER, footer), "footer")
                done = True
                return
            entries = -(-size // block_size)
            st = VhdState(footer=footer, footer_offset=None, header_offset=FOOTER_SIZE,
                          block_size=block_size, bitmap_size=_bitmap_bytes(block_size))
            st.header = DYNAMIC_HEADER.defaults(
                Cookie=HEADER_COOKIE, DataOffset=NO_OFFSET, HeaderVersion=HEADER_VERSION,
                MaxTableEntries=entries, BlockSize=block_size)
            st.locators = [PARENT_LOCATOR_ENTRY.defaults() for _ in range(LOCATOR_ENTRIES)]
            st.header.TableOffset = FOOTER_SIZE + HEADER_SIZE
            bat_bytes = _round_up(4 * entries)
            f.pwrite(st.header.TableOffset, b"\xff" * bat_bytes, "BAT")
            st.data_end = st.header.TableOffset + bat_bytes
            if parent is not None:
                _link_parent(f, st, path, parent.uuid, os.path.abspath(parent.path),
                             _vhd_time(os.stat(parent.path).st_mtime))
            _write_header(f, st)
            _write_footers(f, st)
            done = True
        finally:
            f.close()
            if not done:
                os.unlink(path)

    def __init__(self, file, writable):
        super().__init__(file, writable)
        self.st = None
        self.backing_read = None     # set by the chain: backing_read(offset, view) reads below

    def _open(self):
        st = self.st = _load(self.file)
        self.size = st.footer.CurrentSize
        self.uuid = parse_uuid(st.footer.UniqueId, self.path, "UniqueId")
        self.variant = DISK_TYPE_NAMES[st.disk_type]
        self.cluster_size = st.block_size or SECTOR_SIZE
        self._refresh_parent()

    def _refresh_parent(self):
        st = self.st
        self.parent_uuid = self.parent_locator = None
        if st.disk_type != DISK_TYPE_DIFFERENCING:
            return
        self.parent_uuid = parse_uuid(st.header.ParentUniqueId, self.path, "ParentUniqueId")
        name = _parent_name(st.header)
        paths = st.locator_paths
        folder = os.path.dirname(os.path.abspath(self.path))
        order = [paths[k] for k in ("W2ru", "W2ku", "MacX") if k in paths]   # relative first:
        for locator in order:                                                 # it survives a move
            if os.path.exists(os.path.join(folder, locator)):
                self.parent_locator = locator
                return
        self.parent_locator = (order or [name])[0] or None

    def _barrier(self):
        """Make earlier writes durable before a write that points at them."""
        self.file.sync()

    # -- reading

    def block_status(self, offset, length):
        self.check_range(offset, length)
        st, end = self.st, offset + length
        if not length:
            return []
        if st.disk_type == DISK_TYPE_FIXED:
            return [Extent(offset, length, State.DATA, offset)]
        out = []
        bs = st.block_size
        first = offset // bs
        for start, n, kind in bitmap_impl.block_runs(st.bat, first, (end - 1) // bs - first + 1,
                                                     BAT_UNUSED, BAT_UNUSED):
            if kind == 0:
                a, b = max(offset, start * bs), min(end, (start + n) * bs)
                self._add(out, a, b - a, State.UNALLOCATED, None)
                continue
            for blk in range(start, start + n):
                base = blk * bs
                a, b = max(offset, base), min(end, base + bs)
                data = st.bat[blk] * SECTOR_SIZE + st.bitmap_size - base
                s0 = (a - base) // SECTOR_SIZE
                s1 = -(-(b - base) // SECTOR_SIZE)
                bm = _bitmap(self.file, st, blk)
                for s, cnt, bit in bitmap_impl.bit_runs(bm, s0, s1 - s0, True):
                    ea = max(a, base + s * SECTOR_SIZE)
                    eb = min(b, base + (s + cnt) * SECTOR_SIZE)
                    self._add(out, ea, eb - ea, State.DATA if bit else State.UNALLOCATED,
                              data + ea if bit else None)
        return out

    @staticmethod
    def _add(out, offset, length, state, host):
        if out:
            last = out[-1]
            if last.state is state and last.offset + last.length == offset and \
                    (host is None or last.host_offset + last.length == host):
                out[-1] = last._replace(length=last.length + length)
                return
        out.append(Extent(offset, length, state, host))

    def readinto(self, offset, buf):
        if self.st.disk_type != DISK_TYPE_FIXED:
            return super().readinto(offset, buf)
        view = memoryview(buf).cast("B")
        self.check_range(offset, len(view))
        self.file.preadinto(offset, view)

    # -- writing

    def write(self, offset, data):
        self._require_writable()
        view = memoryview(data).cast("B")
        self.check_range(offset, len(view))
        if self.st.disk_type == DISK_TYPE_FIXED:
            self.file.pwrite(offset, view)
        else:
            self._check_backing(offset, len(view))
            self._write_range(offset, len(view), view)

    def write_zeroes(self, offset, length):
        self._require_writable()
        self.check_range(offset, length)
        if self.st.disk_type == DISK_TYPE_FIXED:
            super().write_zeroes(offset, length)     # written: a fixed disk stays preallocated
        else:
            self._check_backing(offset, length)
            self._write_range(offset, length, None)

    def discard(self, offset, length):
        """Allocated ranges become zeros (never the parent's data)."""
        self._require_writable()
        for ext in self.block_status(offset, length):
            if ext.state is State.DATA:
                self.file.punch_hole(ext.host_offset, ext.length)

    def _check_backing(self, offset, length):
        """Refuse, before writing anything, a partial sector only the parent holds."""
        if self.st.disk_type != DISK_TYPE_DIFFERENCING or self.backing_read is not None:
            return
        end = offset + length
        partial = [at - at % SECTOR_SIZE for at in (offset, end) if at % SECTOR_SIZE]
        for sector in partial:
            if self.block_status(sector, 1)[0].state is State.UNALLOCATED:
                raise ChainError(f"{self.path}: writing part of the sector at {sector}, which only "
                                 f"the parent holds, needs the parent's data: open the image "
                                 f"through its chain (which sets backing_read)")

    def _write_range(self, offset, length, view):
        bs, at, end = self.st.block_size, offset, offset + length
        while at < end:
            blk = at // bs
            n = min(end, (blk + 1) * bs) - at
            part = None if view is None else view[at - offset:at - offset + n]
            self._write_in_block(blk, at - blk * bs, n, part)
            at += n

    def _write_in_block(self, blk, boff, n, data):
        """Write ``data`` (None: zeros) at ``boff`` inside block ``blk``.

        In a differencing disk a zero write allocates and sets bits like any
        other: the child then says zero and never falls back to its parent.
        Data goes before bits, so a crash in between leaves the old content;
        only a power loss before the guest's flush could reorder the two (a
        barrier per write would cost a sync per sector run)."""
        st, f = self.st, self.file
        allocated = st.bat[blk] != BAT_UNUSED
        if data is None and not allocated and st.disk_type == DISK_TYPE_DYNAMIC:
            return                                   # already reads zeros
        s0, s1 = boff // SECTOR_SIZE, -(-(boff + n) // SECTOR_SIZE)
        head, tail = boff - s0 * SECTOR_SIZE, s1 * SECTOR_SIZE - boff - n
        bm = _bitmap(f, st, blk) if allocated else None
        payload = data
        if head or tail:
            # A partly written sector must be whole before its bit says "mine":
            # its other bytes come from this image, the parent, or are zeros.
            payload = bytearray((s1 - s0) * SECTOR_SIZE)
            if head:
                payload[:SECTOR_SIZE] = self._sector(blk, s0, bm)
            if tail and (s1 - 1 > s0 or not head):
                payload[-SECTOR_SIZE:] = self._sector(blk, s1 - 1, bm)
            payload[head:head + n] = bytes(n) if data is None else data
        if not allocated:
            _allocate(f, st, blk, s0, s1 - s0, payload, self._barrier)
            return
        host = st.bat[blk] * SECTOR_SIZE + st.bitmap_size + s0 * SECTOR_SIZE
        if payload is None:
            f.punch_hole(host, (s1 - s0) * SECTOR_SIZE)
        else:
            f.pwrite(host, payload)
        _set_bitmap_bits(f, st, blk, s0, s1 - s0, True)

    def _sector(self, blk, s, bm):
        """The current content of sector ``s`` of block ``blk``."""
        st = self.st
        if bm is not None and bitmap_impl.count_bits(bm, s, 1, True):
            return self.file.pread(st.bat[blk] * SECTOR_SIZE + st.bitmap_size + s * SECTOR_SIZE,
                                   SECTOR_SIZE, f"sector {s} of block {blk}")
        if st.disk_type == DISK_TYPE_DYNAMIC:
            return bytes(SECTOR_SIZE)
        buf = bytearray(SECTOR_SIZE)
        self.backing_read(blk * st.block_size + s * SECTOR_SIZE, memoryview(buf))
        return bytes(buf)

    # -- resize

    def resize(self, new_size):
        self._require_writable()
        st, f, old = self.st, self.file, self.size
        if new_size < old:
            raise UnsupportedOperation(f"{self.path}: shrinking a VHD from {old} to {new_size} "
                                       f"bytes would discard data; only growing is supported")
        if new_size % SECTOR_SIZE or new_size > MAX_CREATE_SIZE:
            raise ImageError(f"{self.path}: new size {new_size} must be whole 512-byte sectors "
                             f"and at most {MAX_CREATE_SIZE} bytes (2040 GiB)")
        if st.disk_type != DISK_TYPE_FIXED and -(-new_size // st.block_size) > MAX_TABLE_ENTRIES:
            raise UnsupportedOperation(f"{self.path}: {new_size} bytes in blocks of "
                                       f"{st.block_size} needs more than {MAX_TABLE_ENTRIES} "
                                       f"BAT entries")
        if new_size == old:
            return
        if st.disk_type == DISK_TYPE_FIXED:
            # The new footer first, then the space before it, the old footer zeroed.
            file_size = f.size()
            st.footer.CurrentSize, st.footer.DiskGeometry = new_size, _geometry_field(new_size)
            _write_footer(f, st, new_size)
            self._barrier()
            f.allocate(old, new_size - old)
            if min(new_size, file_size) > old:
                f.pwrite(old, bytes(min(new_size, file_size) - old), "old footer")
            if f.size() > new_size + FOOTER_SIZE:
                f.truncate(new_size + FOOTER_SIZE)
            st.footer_offset = st.data_end = new_size
        else:
            # The BAT grows first; the footer then makes the new size official.
            self._clear_tail(old)
            self._grow_bat(-(-new_size // st.block_size))
            st.footer.CurrentSize, st.footer.DiskGeometry = new_size, _geometry_field(new_size)
            _write_footers(f, st)
        self.size = new_size

    def _clear_tail(self, old):
        """Past the old end, the last block keeps no data: zero it and clear its bits."""
        st = self.st
        blk, boff = divmod(old, st.block_size)
        if boff and st.bat[blk] != BAT_UNUSED:
            s0 = boff // SECTOR_SIZE
            count = st.block_size // SECTOR_SIZE - s0
            data = st.bat[blk] * SECTOR_SIZE + st.bitmap_size
            self.file.punch_hole(data + boff, st.block_size - boff)
            _set_bitmap_bits(self.file, st, blk, s0, count, False)

    def _grow_bat(self, needed):
        """Room for ``needed`` BAT entries where the BAT is, as VirtualBox
        does: blocks and locators in the way are copied to the end of the
        data first (each committed by its own BAT entry or header), then the
        BAT grows over the space they left."""
        st, f, hdr = self.st, self.file, self.st.header
        have = hdr.MaxTableEntries
        if needed <= have:
            return
        grow_from, grow_to = hdr.TableOffset + 4 * have, _round_up(hdr.TableOffset + 4 * needed)
        if st.header_offset < grow_to and grow_from < st.header_offset + HEADER_SIZE:
            raise UnsupportedOperation(f"{self.path}: the BAT at {hdr.TableOffset} cannot grow to "
                                       f"{needed} entries: the dynamic disk header follows it")
        total = st.bitmap_size + st.block_size
        for blk, e in enumerate(st.bat):
            start = e * SECTOR_SIZE
            if e != BAT_UNUSED and start < grow_to and grow_from < start + total:
                self._move_block(blk)
        for loc in st.locators:
            start, space = loc.PlatformDataOffset, _locator_space(loc)
            if loc.PlatformCode != PLATFORM_NONE and start < grow_to and grow_from < start + space:
                data = f.pread(start, loc.PlatformDataLength, "parent locator")
                loc.PlatformDataOffset = _grow_file(f, st, space)
                f.pwrite(loc.PlatformDataOffset, data.ljust(space, b"\0"), "parent locator")
                self._barrier()
                _write_header(f, st)
        if grow_to > st.data_end:
            _grow_file(f, st, grow_to - st.data_end)
        self._barrier()
        f.pwrite(grow_from, b"\xff" * (grow_to - grow_from), "BAT")
        self._barrier()
        hdr.MaxTableEntries = needed
        st.bat.extend(array.array("I", [BAT_UNUSED]) * (needed - have))
        _write_header(f, st)
        self._barrier()

    def _move_block(self, blk):
        """Copy block ``blk`` to the end of the data; its BAT entry commits the move."""
        st, f = self.st, self.file
        total = st.bitmap_size + st.block_size
        src, dst = st.bat[blk] * SECTOR_SIZE, _grow_file(f, st, total)
        for at in range(0, total, 1 << 20):
            n = min(1 << 20, total - at)
            f.pwrite(dst + at, f.pread(src + at, n, f"block {blk}"))
        self._barrier()
        _set_bat_entry(f, st, blk, dst)

    # -- parent

    def set_parent(self, parent_uuid, parent_locator, parent_modification_uuid=None,
                   parent_timestamp=None):
        """Link to another parent (rebase), or with both None make a base
        (dynamic) disk.  VHD records no parent modification UUID: that
        argument is accepted and ignored; ``parent_timestamp`` defaults to the
        parent file's modification time."""
        self._require_writable()
        st, f = self.st, self.file
        if st.disk_type == DISK_TYPE_FIXED:
            raise UnsupportedOperation(f"{self.path}: a fixed VHD cannot have a parent")
        new_type = DISK_TYPE_DYNAMIC if parent_uuid is None and not parent_locator \
            else DISK_TYPE_DIFFERENCING
        _link_parent(f, st, self.path, parent_uuid, parent_locator, parent_timestamp)
        self._barrier()
        _write_header(f, st)
        if new_type != st.disk_type:
            self._barrier()
            st.footer.DiskType = new_type
            _write_footers(f, st)
            self.variant = DISK_TYPE_NAMES[new_type]
        self._refresh_parent()

    # -- check

    def check(self, repair=False):
        """Re-read every structure from the file and report what is wrong.

        Repair rewrites what the validated in-memory copy makes safe to
        rewrite: the footer at the end and its copy at 0, a header checksum,
        and a leak between the last block and the footer (the footer moves
        back).  Overlapping or out-of-file blocks are reported, not touched."""
        if repair:
            self._require_writable()
        st, f = self.st, self.file
        report = CheckReport(self.path)
        try:
            _, end_at, raw, problems = _read_footer(f)
        except ImageError as e:
            end_at, problems = None, [str(e).removeprefix(f"{self.path}: ")]
        else:
            if end_at is not None and st.disk_type != DISK_TYPE_FIXED:
                problems += [p for p in [_copy_problem(f, raw)] if p]
        report.errors += problems
        tail_leak = st.disk_type != DISK_TYPE_FIXED and \
            self._check_blocks(report, end_at if end_at is not None else f.size(), repair)
        if repair and (problems or tail_leak):
            if st.disk_type != DISK_TYPE_FIXED:
                st.footer_offset = st.data_end          # past it nothing is referenced
            _write_footers(f, st)
            self.flush()
            st.problems = []
            report.repaired.append(f"footer (and its copy) rewritten, ending the file at "
                                   f"{st.footer_offset + FOOTER_SIZE}")
        return report

    def _check_blocks(self, report, limit, repair):
        """Header, BAT, overlaps and leaks; True when the only leak can be
        dropped by moving the footer back to the end of the data."""
        st, f = self.st, self.file
        hdr = st.header
        report.total_blocks = hdr.MaxTableEntries
        raw = f.pread(st.header_offset, HEADER_SIZE, "dynamic disk header")
        want = checksum(raw, DYNAMIC_HEADER.offsets["Checksum"])
        found = DYNAMIC_HEADER.unpack(raw)
        if found.Checksum != want:
            report.errors.append(f"dynamic disk header: field Checksum is {found.Checksum:#010x}, "
                                 f"expected {want:#010x}")
            same = all(found[k] == hdr[k] for k in DYNAMIC_HEADER.fields if k != "Checksum")
            if repair and same:
                _write_header(f, st)
                report.repaired.append("dynamic disk header checksum rewritten")
        if f.size() < hdr.TableOffset + 4 * hdr.MaxTableEntries:
            report.errors.append(f"BAT at {hdr.TableOffset} ({hdr.MaxTableEntries} entries) "
                                 f"lies past the end of the file")
            return False
        bat = array.array("I", f.pread(hdr.TableOffset, 4 * hdr.MaxTableEntries, "BAT"))
        if sys.byteorder == "little":
            bat.byteswap()
        total = st.bitmap_size + st.block_size
        meta = [(0, FOOTER_SIZE, "footer copy"),
                (st.header_offset, HEADER_SIZE, "dynamic disk header"),
                (hdr.TableOffset, 4 * hdr.MaxTableEntries, "BAT")]
        meta += [(loc.PlatformDataOffset, max(_locator_space(loc), loc.PlatformDataLength),
                  f"parent locator {PLATFORM_NAMES.get(loc.PlatformCode, hex(loc.PlatformCode))}")
                 for loc in st.locators if loc.PlatformCode != PLATFORM_NONE]
        blocks = sorted((e * SECTOR_SIZE, i) for i, e in enumerate(bat) if e != BAT_UNUSED)
        report.allocated_blocks = len(blocks)
        for start, i in blocks:
            if start + total > limit:
                report.errors.append(f"BAT entry {i}: block at bytes {start}..{start + total} "
                                     f"lies past the end of the data ({limit} bytes)")
            for m_start, m_len, what in meta:
                if start < m_start + m_len and m_start < start + total:
                    report.errors.append(f"BAT entry {i}: block at bytes {start}..{start + total}"
                                         f" overlaps the {what} at bytes "
                                         f"{m_start}..{m_start + m_len}")
        for (a, i), (b, j) in zip(blocks, blocks[1:]):
            if b < a + total:
                report.errors.append(f"BAT entries {i} and {j}: blocks at bytes {a} and {b} "
                                     f"overlap")
        # Unused space of at least one block is a leak (an interrupted
        # allocation leaves exactly that); smaller gaps are alignment.
        used = sorted([(s, s + n) for s, n, _ in meta] + [(s, s + total) for s, _ in blocks])
        at, tail_leak = 0, False
        for s, e in used + [(limit, limit)]:
            gap_start = _round_up(at)
            if s - gap_start >= total:
                report.leaks.append(f"bytes {gap_start}..{s} are used by no structure or block")
                tail_leak = s == limit
            at = max(at, e)
        return tail_leak and len(report.leaks) == 1 and not report.errors

    # -- info

    def info(self):
        st = self.st
        ft = st.footer
        c, h, s = ft.DiskGeometry >> 16, ft.DiskGeometry >> 8 & 0xFF, ft.DiskGeometry & 0xFF
        host_os = ft.CreatorHostOS.to_bytes(4, "big").decode("latin-1")
        out = {
            "disk_type": DISK_TYPE_NAMES[st.disk_type],
            "creator": f"{ft.CreatorApplication.decode('latin-1')!r} "
                       f"{ft.CreatorVersion >> 16}.{ft.CreatorVersion & 0xFFFF} ({host_os})",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(VHD_EPOCH + ft.TimeStamp)),
            "geometry": f"{c}/{h}/{s}",
            "original_size": ft.OriginalSize,
            "temporary": bool(ft.Features & FEATURE_TEMPORARY),
            "saved_state": bool(ft.SavedState),
        }
        if st.header is not None:
            out["block_size"] = st.block_size
            out["allocated_blocks"] = bitmap_impl.count_allocated(st.bat, BAT_UNUSED, BAT_UNUSED)
            out["total_blocks"] = st.header.MaxTableEntries
        if st.disk_type == DISK_TYPE_DIFFERENCING:
            out["parent_name"] = _parent_name(st.header)
            out["parent_timestamp"] = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(VHD_EPOCH + st.header.ParentTimeStamp))
            out["parent_locators"] = dict(st.locator_paths)
        if st.problems:
            out["problems"] = list(st.problems)
        return out

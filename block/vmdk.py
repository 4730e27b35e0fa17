"""VMware Virtual Disk (VMDK): hosted sparse, flat, split, stream-optimized and raw disk.

Spec: VMware "Virtual Disk Format 5.0" technical note ("Hosted Sparse
Extents", "Stream-Optimized Compressed Sparse Extents"; field names are the
spec's), with VirtualBox's descriptor UUIDs and raw-disk descriptors.  The
text descriptor lives in block/vmdk_descriptor.py; this module holds the
binary extents and the driver.

A VMDK image is a descriptor and extents, each covering a run of virtual
sectors: FLAT/VMFS (the data as is in a file or device, from a sector
offset), ZERO (no storage: reads zeros) and SPARSE (a "KDMV" file: header,
grain directory (GD) of grain tables (GTs) of u32 sector offsets of grains).
The descriptor is its own file, or embedded in a monolithic sparse file.

    variant           createType             files
    dynamic           monolithicSparse       name.vmdk (descriptor embedded)
    fixed             monolithicFlat         name.vmdk + name-flat.vmdk
    split2g           twoGbMaxExtentSparse   name.vmdk + name-s001.vmdk, ...
    split2g-fixed     twoGbMaxExtentFlat     name.vmdk + name-f001.vmdk, ...
    stream            streamOptimized        name.vmdk (deflate grains, markers)
    (create_raw_disk) fullDevice / partitionedDevice: name.vmdk (+ name-pt.vmdk)

Split extents hold at most 4192256 sectors (2047 MiB) each, VMware's size,
so every file stays below 2 GiB.

Grain table entries: 0 = not allocated here (the parent's data in a
differencing disk, zeros in a base disk); 1 = a zeroed grain when flags bit
2 is set (version 2, "zeroed-grain GTE"); otherwise the grain's sector.
Rules this driver keeps, and why:

* Every GT is allocated when a sparse extent is created (and both copies
  when the redundant GD is used), as VMware and QEMU do: QEMU cannot add a
  GT to an image.  New grains are appended at the end of the file: data
  first, then the GT entry (primary, then redundant), so a crash leaves at
  worst an unreferenced grain (a leak check reports), never an entry
  pointing at unwritten data.  flush() is the only barrier.
* A zero write in a differencing disk never sets an entry to 0 ("ask the
  parent"; VirtualBox 7.2 lost data that way): it sets the zeroed-grain
  entry when the image has that feature, else allocates a grain that is a
  hole in the host file.  Images are created without the feature (version
  1) unless ``zeroed_grain=True``: it needs version 2, which readers made
  for version 1 refuse, and libvmdk 20260714 reads the entry as sector 1.
* The CID changes on the first change of content after each open, as
  VMware and VirtualBox do, and so does ddb.uuid.modification when present.
  A child records its parent's CID (parentCID); when the parent changes
  later, VMware and QEMU refuse the child.  drivebay reads such a chain
  (it links by UUID and parentFileNameHint), and ``check`` reports the
  stale parentCID and repairs it.

streamOptimized: grains are zlib-compressed, each behind a grain marker
{lba, size}; the GTs, the GD, a footer (a copy of the header with the real
gdOffset) and an end-of-stream marker end the file, and the header says
gdOffset = GD_AT_END.  Images QEMU makes keep the GD in the header area
instead; both are read.  Writing (drivebay's decision; QEMU refuses any
write into an allocated grain with EIO, VirtualBox only appends new
grains): any write is accepted.  A grain changed after it was written is
compressed again and appended; the GT then points at the new copy and
the old one is dead space that ``check`` reports as a leak and
``check(repair=True)`` or ``compact()`` removes by rewriting the stream in
LBA order.  Readers that follow the GD and GTs (QEMU and libvmdk are
tested) read the latest data after every flush; until compacted, a consumer
reading the markers strictly in sequence would see the older copy first.  Partial
grain writes are gathered in memory (up to STREAM_PENDING_BYTES) so a
sequential writer appends each grain once.  The tail metadata is rewritten
at flush() and close(): a crash between the first write after open and the
next flush leaves no footer; ``check(repair=True)`` rebuilds the tables
from the grain markers, which is what they are for.

Raw host disks (``create_raw_disk``, made by block/vmdk_descriptor.py and
exported here): FLAT extents naming a device by absolute path (refused in
every other descriptor); in a partitionedDevice descriptor, writes into
ZERO, RDONLY and NOACCESS extents are refused with an error naming the
extent, before anything is written.  NOACCESS extents read as zeros (their
file is not even opened).  Opening a raw-disk descriptor gives the guest
that host device: open only descriptors you made.

Opening checks every header field against its limit before allocating,
and every GD entry against the file; a GT is checked when first loaded.
``open(..., for_check=True)`` records GD and footer problems for
``check`` instead of refusing; such an image refuses writes.

Not supported: ESXi sparse extents (VMFSSPARSE "COWD", SESPARSE), compressed
grains without markers, encrypted disks, change tracking files (kept in
the descriptor, not updated), shrinking, resizing raw-disk descriptors and
sparse extents whose GD has no room left (refused with the reason).
"""

import array
import errno
import os
import sys
import uuid as uuidlib
import zlib

from drivebay.block import vmdk_descriptor as vd
from drivebay.block.vmdk_descriptor import create_raw_disk  # noqa: F401 (part of the API)
from drivebay.block.bitmap_impl import block_runs, is_zero
from drivebay.block.driver import (NULL_UUID, SECTOR_SIZE, BlockDriver, CheckReport, Extent,
                                   ImageFile, State)
from drivebay.errors import (ChainError, CorruptImageError, DrivebayError, FormatError,
                             ImageError, UnsupportedFeatureError, UnsupportedOperation)
from drivebay.layout import Layout

# -- constants -----------------------------------------------------------------------------

SPARSE_MAGICNUMBER = 0x564D444B          # "KDMV" in the file: 'V' 'M' 'D' 'K' little-endian
COWD_MAGICNUMBER = 0x44574F43            # "COWD": ESXi sparse extent (VMFSSPARSE), unsupported
SPARSE_VERSIONS = (1, 2, 3)              # 2: zeroed-grain GTE; 3: stream-optimized / >2 GiB

# SparseExtentHeader.flags
FLAG_VALID_NEW_LINE_DETECTION = 1 << 0   # the four end-of-line test characters are valid
FLAG_REDUNDANT_GRAIN_TABLE = 1 << 1      # "redundant grain table will be used"
FLAG_ZEROED_GRAIN_GTE = 1 << 2           # GTE 1 means a zeroed grain (version 2)
FLAG_COMPRESSED_GRAINS = 1 << 16
FLAG_MARKERS = 1 << 17                   # grains and metadata carry markers (stream-optimized)
KNOWN_FLAGS = (FLAG_VALID_NEW_LINE_DETECTION | FLAG_REDUNDANT_GRAIN_TABLE |
               FLAG_ZEROED_GRAIN_GTE | FLAG_COMPRESSED_GRAINS | FLAG_MARKERS)
NEW_LINE_CHARS = (b"\n", b" ", b"\r", b"\n")   # single, non, double 1, double 2

COMPRESSION_NONE = 0
COMPRESSION_DEFLATE = 1                  # RFC 1951 in a zlib stream, as VMware and QEMU write
GD_AT_END = 0xFFFFFFFFFFFFFFFF           # header gdOffset: the GD is found through the footer

MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER = 0, 1, 2, 3
GTE_UNALLOCATED = 0
GTE_ZEROED = 1

DEFAULT_GRAIN_SECTORS = 128              # 64 KiB, VMware's, VirtualBox's and QEMU's grain
DEFAULT_GTES_PER_GT = 512                # "numGTEsPerGT ... is 512"
EMBEDDED_DESCRIPTOR_SECTORS = 20         # what VMware and QEMU reserve in a sparse file
SPLIT_EXTENT_SECTORS = 4192256           # 2047 MiB: VMware's twoGbMaxExtent extents
SPARSE_CAPACITY_MAX = 1 << 32            # sectors: GTEs are u32 sector numbers (2 TiB)
DEFAULT_HW_VERSION = vd.DEFAULT_HW_VERSION
DEFAULT_COMPRESSION_LEVEL = 6            # zlib's default, as QEMU's deflate

# Limits.  "grainSize ... must be a power of 2 and must be greater than 8 (4KB)";
# drivebay buffers whole grains for copy-on-write, so it caps them at 16 MiB
# (256 times the 64 KiB every known writer uses).
GRAIN_SECTORS_MIN = 8
GRAIN_SECTORS_MAX = 32768
GTES_PER_GT_MAX = 512                    # the spec's value; QEMU refuses larger tables too
TABLE_BYTES_MAX = 256 << 20              # all GTs of an extent, kept in memory once loaded
DESCRIPTOR_SECTORS_MAX = vd.MAX_DESCRIPTOR_BYTES // SECTOR_SIZE
STREAM_PENDING_BYTES = 4 << 20           # partial grains gathered before compressing
STREAM_CACHE_GRAINS = 16                 # inflated grains kept for reads
MAX_REPORTED_PROBLEMS = 100
COPY_CHUNK = 1 << 20

assert array.array("I").itemsize == 4
_BIG_ENDIAN_HOST = sys.byteorder == "big"

# -- on-disk layout ------------------------------------------------------------------------

SPARSE_EXTENT_HEADER = Layout("VMDK SparseExtentHeader", "<", [
    ("magicNumber", "I"),
    ("version", "I"),
    ("flags", "I"),
    ("capacity", "Q"),                   # sectors
    ("grainSize", "Q"),                  # sectors
    ("descriptorOffset", "Q"),           # sector of the embedded descriptor, 0: none
    ("descriptorSize", "Q"),             # sectors
    ("numGTEsPerGT", "I"),
    ("rgdOffset", "Q"),                  # sector of the redundant GD
    ("gdOffset", "Q"),                   # sector of the GD, or GD_AT_END
    ("overHead", "Q"),                   # sectors of metadata before the first grain
    ("uncleanShutdown", "B"),
    ("singleEndLineChar", "c"),
    ("nonEndLineChar", "c"),
    ("doubleEndLineChar1", "c"),
    ("doubleEndLineChar2", "c"),
    ("compressAlgorithm", "H"),
    ("pad", "433s"),
], size=SECTOR_SIZE)

for _name, _offset in {"version": 4, "flags": 8, "capacity": 12, "grainSize": 20,
                       "descriptorOffset": 28, "descriptorSize": 36, "numGTEsPerGT": 44,
                       "rgdOffset": 48, "gdOffset": 56, "overHead": 64, "uncleanShutdown": 72,
                       "singleEndLineChar": 73, "nonEndLineChar": 74,
                       "doubleEndLineChar1": 75, "doubleEndLineChar2": 76,
                       "compressAlgorithm": 77, "pad": 79}.items():
    assert SPARSE_EXTENT_HEADER.offsets[_name] == _offset, _name
del _name, _offset

# A metadata marker fills a sector; a grain marker is {lba, size} then the data.
MARKER = Layout("VMDK Marker", "<", [
    ("val", "Q"), ("size", "I"), ("type", "I"), ("pad", "496s")], size=SECTOR_SIZE)
GRAIN_MARKER = Layout("VMDK GrainMarker", "<", [("lba", "Q"), ("size", "I")], size=12)

VARIANTS = {"dynamic": "monolithicSparse", "fixed": "monolithicFlat",
            "split2g": "twoGbMaxExtentSparse", "split2g-fixed": "twoGbMaxExtentFlat",
            "stream": "streamOptimized"}


def _sectors(nbytes):
    return -(-nbytes // SECTOR_SIZE)


def _align(value, alignment):
    return -(-value // alignment) * alignment


def _table(raw):
    t = array.array("I")
    t.frombytes(raw)
    if _BIG_ENDIAN_HOST:
        t.byteswap()
    return t


def _table_bytes(t):
    if _BIG_ENDIAN_HOST:
        t = array.array("I", t)
        t.byteswap()
    return t.tobytes()


def _bad(exc, path, name, value, expected, where="header"):
    return exc(f"{path}: VMDK sparse extent {where} field {name} is {value}; expected {expected}")


# -- the sparse extent header --------------------------------------------------------------

def validate_header(path, hdr, file_size, where="header"):
    """Refuse a SparseExtentHeader whose fields break the spec or drivebay's limits."""
    if hdr.magicNumber != SPARSE_MAGICNUMBER:
        raise _bad(FormatError, path, "magicNumber", f"{hdr.magicNumber:#010x}",
                   f"{SPARSE_MAGICNUMBER:#010x} ('KDMV')", where)
    if hdr.version not in SPARSE_VERSIONS:
        raise _bad(UnsupportedFeatureError, path, "version", hdr.version, "1, 2 or 3", where)
    if hdr.flags & ~KNOWN_FLAGS:
        raise _bad(UnsupportedFeatureError, path, "flags", f"{hdr.flags:#x}",
                   f"only bits of {KNOWN_FLAGS:#x}", where)
    chars = (hdr.singleEndLineChar, hdr.nonEndLineChar, hdr.doubleEndLineChar1,
             hdr.doubleEndLineChar2)
    if hdr.flags & FLAG_VALID_NEW_LINE_DETECTION and chars != NEW_LINE_CHARS:
        raise CorruptImageError(f"{path}: VMDK sparse extent {where}: the end-of-line test "
                                f"characters are {b''.join(chars)!r}, not '\\n \\r\\n': the "
                                f"file was altered by a text-mode transfer")
    if hdr.compressAlgorithm not in (COMPRESSION_NONE, COMPRESSION_DEFLATE):
        raise _bad(UnsupportedFeatureError, path, "compressAlgorithm", hdr.compressAlgorithm,
                   "0 (none) or 1 (deflate)", where)
    compressed = hdr.compressAlgorithm == COMPRESSION_DEFLATE
    if compressed != bool(hdr.flags & FLAG_MARKERS):
        raise _bad(UnsupportedFeatureError, path, "flags", f"{hdr.flags:#x}",
                   "compressed grains together with markers (streamOptimized), or neither",
                   where)
    gs = hdr.grainSize
    if gs & (gs - 1) or not GRAIN_SECTORS_MIN <= gs <= GRAIN_SECTORS_MAX:
        raise _bad(CorruptImageError if gs & (gs - 1) or gs < GRAIN_SECTORS_MIN
                   else UnsupportedFeatureError, path, "grainSize", gs,
                   f"a power of two from {GRAIN_SECTORS_MIN} to {GRAIN_SECTORS_MAX} sectors",
                   where)
    if not 1 <= hdr.numGTEsPerGT <= GTES_PER_GT_MAX:
        raise _bad(UnsupportedFeatureError, path, "numGTEsPerGT", hdr.numGTEsPerGT,
                   f"1 to {GTES_PER_GT_MAX} (the spec's value is 512)", where)
    if not 0 < hdr.capacity <= SPARSE_CAPACITY_MAX:
        raise _bad(CorruptImageError, path, "capacity", hdr.capacity,
                   f"1 to {SPARSE_CAPACITY_MAX} sectors (GTEs are 32-bit sector numbers)",
                   where)
    grains = -(-hdr.capacity // gs)
    gdes = -(-grains // hdr.numGTEsPerGT)
    if 4 * gdes * hdr.numGTEsPerGT > TABLE_BYTES_MAX:
        raise _bad(UnsupportedFeatureError, path, "capacity", hdr.capacity,
                   f"at most {TABLE_BYTES_MAX // 4 * gs} sectors at grainSize {gs} (drivebay "
                   f"keeps the grain tables in memory, up to {TABLE_BYTES_MAX >> 20} MiB)", where)
    sectors = _sectors(file_size)
    if hdr.descriptorOffset:
        if hdr.descriptorSize > DESCRIPTOR_SECTORS_MAX:
            raise _bad(UnsupportedFeatureError, path, "descriptorSize", hdr.descriptorSize,
                       f"at most {DESCRIPTOR_SECTORS_MAX} sectors", where)
        if hdr.descriptorOffset + hdr.descriptorSize > sectors:
            raise _bad(CorruptImageError, path, "descriptorOffset", hdr.descriptorOffset,
                       f"a descriptor inside the {sectors}-sector file", where)
    gd_sectors = _sectors(4 * gdes)
    if hdr.gdOffset == GD_AT_END:
        if not hdr.flags & FLAG_MARKERS or where != "header":
            raise _bad(CorruptImageError, path, "gdOffset", "GD_AT_END",
                       "a sector number (GD_AT_END needs markers and a footer)", where)
        return
    for name in ("gdOffset",) + (("rgdOffset",) if hdr.flags & FLAG_REDUNDANT_GRAIN_TABLE
                                 else ()):
        at = hdr[name]
        if gdes and (at == 0 or at + gd_sectors > sectors):
            raise _bad(CorruptImageError, path, name, at,
                       f"a {gd_sectors}-sector grain directory inside the {sectors}-sector file",
                       where)


def read_header(f, path):
    """The header of the sparse extent in ``f``; the footer's when gdOffset is
    GD_AT_END.  Returns (header, footer_problem or None)."""
    size = f.size()
    if size < SECTOR_SIZE:
        raise CorruptImageError(f"{path}: VMDK sparse extent of {size} bytes is shorter than "
                                f"its {SECTOR_SIZE}-byte header")
    hdr = SPARSE_EXTENT_HEADER.unpack(f.pread(0, SECTOR_SIZE, "VMDK sparse extent header"))
    validate_header(path, hdr, size)
    if hdr.gdOffset != GD_AT_END:
        return hdr, None
    problem = None
    if size < 4 * SECTOR_SIZE:
        problem = f"the {size}-byte file is too short for a footer (gdOffset is GD_AT_END)"
    else:
        tail = f.pread(size - 3 * SECTOR_SIZE, 3 * SECTOR_SIZE, "VMDK stream footer")
        marker, eos = MARKER.unpack(tail), MARKER.unpack(tail, 2 * SECTOR_SIZE)
        footer = SPARSE_EXTENT_HEADER.unpack(tail, SECTOR_SIZE)
        if marker.size or marker.type != MARKER_FOOTER or eos.val or eos.size or \
                eos.type != MARKER_EOS or footer.magicNumber != SPARSE_MAGICNUMBER:
            problem = ("no footer marker, footer and end-of-stream marker end the file "
                       "(gdOffset is GD_AT_END): the stream is truncated or was not closed")
        else:
            validate_header(path, footer, size, "footer")
            if footer.gdOffset == GD_AT_END:
                raise _bad(CorruptImageError, path, "gdOffset", "GD_AT_END",
                           "the grain directory's sector", "footer")
            return footer, None
    return hdr, problem


def new_header(capacity, grain_sectors, desc_offset, desc_sectors, rgd, gd, overhead,
               flags, version, compress=COMPRESSION_NONE):
    return SPARSE_EXTENT_HEADER.defaults(
        magicNumber=SPARSE_MAGICNUMBER, version=version, flags=flags, capacity=capacity,
        grainSize=grain_sectors, descriptorOffset=desc_offset, descriptorSize=desc_sectors,
        numGTEsPerGT=DEFAULT_GTES_PER_GT, rgdOffset=rgd, gdOffset=gd, overHead=overhead,
        singleEndLineChar=b"\n", nonEndLineChar=b" ", doubleEndLineChar1=b"\r",
        doubleEndLineChar2=b"\n", compressAlgorithm=compress)


def inflate(data, limit, path, what):
    """The grain a compressed grain holds: zlib (as VMware and QEMU write) or raw deflate."""
    zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
    d = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit)
    except zlib.error as e:
        raise CorruptImageError(f"{path}: {what} does not inflate: {e}") from None
    if d.unconsumed_tail:
        raise CorruptImageError(f"{path}: {what} inflates to more than the "
                                f"{limit}-byte grain")
    if not d.eof:
        raise CorruptImageError(f"{path}: {what} is truncated: its deflate stream does "
                                f"not end")
    return out


# -- per-extent state ----------------------------------------------------------------------

class FlatExtent:
    """FLAT/VMFS: the extent's sectors lie in order in a file or device from ``base``."""
    sparse = False

    def __init__(self, line, start, f, base):
        self.line, self.start, self.length = line, start, line.sectors * SECTOR_SIZE
        self.file, self.base = f, base

    def status(self, lo, hi):
        """(start, end, state, host) runs of extent-relative bytes; holes of a
        regular file read as zeros and are reported as ZERO."""
        out, at, fd = [], lo, self.file.fd
        while at < hi:
            try:
                data = os.lseek(fd, self.base + at, os.SEEK_DATA) - self.base
                hole = os.lseek(fd, self.base + data, os.SEEK_HOLE) - self.base \
                    if data < hi else hi
            except OSError as e:
                if e.errno != errno.ENXIO:             # a file system without SEEK_DATA
                    return out + [(at, hi, State.DATA, self.base + at)]
                data = hole = hi                       # no data after `at`
            if hole <= data:
                hole = hi                              # never loop: the rest is data
            if data > at:
                out.append((at, min(data, hi), State.ZERO, None))
            if data < hi:
                out.append((data, min(hole, hi), State.DATA, self.base + data))
            at = min(max(hole, data), hi)
        return out

    def read(self, lo, view):
        self.file.preadinto(self.base + lo, view, "VMDK flat extent")

    def write(self, lo, view, below, differencing):
        self.file.pwrite(self.base + lo, view, "VMDK flat extent")

    def write_zeroes(self, lo, n, below, differencing):
        for at in range(0, n, COPY_CHUNK):     # a fixed disk keeps its space allocated
            self.file.pwrite(self.base + lo + at, bytes(min(COPY_CHUNK, n - at)))

    def discard(self, lo, n):
        """A fixed extent keeps its data (the hint is allowed to do nothing)."""

    def needs_backing(self, lo, hi, differencing):
        return False

    def check_growth(self, room, path):
        pass

    def grow(self, room):
        end = self.base + self.length
        self.file.truncate(max(end + room * SECTOR_SIZE, self.file.size()))
        self.file.allocate(end, room * SECTOR_SIZE)


class ZeroExtent:
    """ZERO extents, and NOACCESS ones: no storage, read as zeros."""
    sparse = False
    file = None

    def __init__(self, line, start):
        self.line, self.start, self.length = line, start, line.sectors * SECTOR_SIZE

    def status(self, lo, hi):
        return [(lo, hi, State.ZERO, None)]

    def read(self, lo, view):
        view[:] = bytes(len(view))

    def needs_backing(self, lo, hi, differencing):
        return False

    def discard(self, lo, n):
        pass


class SparseExtent:
    """A hosted sparse extent: header, grain directory, grain tables, grains."""
    sparse = True
    compressed = False

    def __init__(self, line, start, f, hdr, path, for_check, problem=None):
        self.line, self.start = line, start
        self.length = line.sectors * SECTOR_SIZE
        self.file, self.hdr, self.path = f, hdr, path
        self.gs = hdr.grainSize
        self.grain = hdr.grainSize * SECTOR_SIZE
        self.gtes = hdr.numGTEsPerGT
        self.gt_sectors = _sectors(4 * self.gtes)
        self.grains = -(-hdr.capacity // hdr.grainSize)
        self.gdes = -(-self.grains // self.gtes)
        self.gd_sectors = _sectors(4 * self.gdes)
        self.zeroed = bool(hdr.flags & FLAG_ZEROED_GRAIN_GTE)
        self.file_end = f.size()
        self.problems = [problem] if problem else []
        self.rebuildable = problem is not None and bool(hdr.flags & FLAG_MARKERS)
        self.gts = {}                    # GD index -> array of entries, loaded on first use
        self.gd = self.rgd = None
        if problem is None:
            self.gd = self._load_gd(hdr.gdOffset, "grain directory", for_check)
            if hdr.flags & FLAG_REDUNDANT_GRAIN_TABLE and hdr.rgdOffset and \
                    hdr.gdOffset != GD_AT_END:
                self.rgd = self._load_gd(hdr.rgdOffset, "redundant grain directory", for_check)
        else:
            self.gd = array.array("I", bytes(4 * self.gdes))
        if line.sectors > hdr.capacity:
            raise CorruptImageError(f"{path}: the descriptor's extent line gives "
                                    f"{line.sectors} sectors but the sparse extent's capacity "
                                    f"is {hdr.capacity}")

    def _load_gd(self, sector, what, for_check):
        gd = _table(self.file.pread(sector * SECTOR_SIZE, 4 * self.gdes, f"VMDK {what}"))
        limit = _sectors(self.file_end)
        for i, e in enumerate(gd):
            if e and e + self.gt_sectors > limit:
                msg = (f"{what} entry {i} points at a grain table at sector {e}, past the end "
                       f"of the {limit}-sector file")
                if not for_check:
                    raise CorruptImageError(f"{self.path}: {msg}")
                self.problems.append(msg)
                gd[i] = 0
        return gd

    # -- grain tables ----------------------------------------------------------------------

    def _read_gt(self, sector, i):
        return _table(self.file.pread(sector * SECTOR_SIZE, 4 * self.gtes,
                                      f"VMDK grain table {i}"))

    def gt(self, i, create=False):
        """Grain table ``i`` (entries checked against the file), or None when the
        GD has none; ``create`` allocates an empty one."""
        gt = self.gts.get(i)
        if gt is not None:
            return gt
        if self.gd[i] == 0:
            if not create:
                return None
            gt = self._allocate_gt(i)
        else:
            gt = self._read_gt(self.gd[i], i)
            bad = self._bad_entry(gt)
            if bad is not None:
                raise CorruptImageError(f"{self.path}: grain table {i} entry {bad} "
                                        f"({gt[bad]}): {self._entry_problem(gt[bad])}")
        self.gts[i] = gt
        return gt

    def _entry_problem(self, e):
        if e == GTE_ZEROED and not self.zeroed:
            return "the zeroed-grain entry, but flags bit 2 (zeroed-grain GTE) is clear"
        sectors = _sectors(self.file_end)
        return f"grain at sector {e} lies past the end of the {sectors}-sector file"

    def _bad_entry(self, gt):
        """Index of the first entry that cannot be right, or None."""
        floor = 2 if self.zeroed else 1
        limit = _sectors(self.file_end) - (1 if self.compressed else self.gs)
        if max(gt, default=0) <= limit and (self.zeroed or GTE_ZEROED not in gt):
            return None
        for j, e in enumerate(gt):
            if e >= floor and e > limit or e == GTE_ZEROED and not self.zeroed:
                return j
        return None

    def _allocate_gt(self, i):
        """A new empty GT (and its redundant copy) at the end of the file; the
        tables are written before the GD entries that point at them."""
        size = self.gt_sectors * SECTOR_SIZE
        at = _align(self.file_end, SECTOR_SIZE)
        copies = 2 if self.rgd is not None else 1
        self.file.truncate(at + copies * size)
        self.file.pwrite(at, bytes(copies * size), "VMDK grain table")
        self.file_end = at + copies * size
        self.gd[i] = at // SECTOR_SIZE
        self._write_gd_entry(self.hdr.gdOffset, i, self.gd)
        if self.rgd is not None:
            self.rgd[i] = at // SECTOR_SIZE + self.gt_sectors
            self._write_gd_entry(self.hdr.rgdOffset, i, self.rgd)
        return array.array("I", bytes(4 * self.gtes))

    def _write_gd_entry(self, sector, i, gd):
        self.file.pwrite(sector * SECTOR_SIZE + 4 * i, _table_bytes(gd[i:i + 1]),
                         "VMDK grain directory")

    def _write_gt_entries(self, i, lo, hi):
        gt = self.gts[i]
        raw = _table_bytes(gt[lo:hi])
        self.file.pwrite(self.gd[i] * SECTOR_SIZE + 4 * lo, raw, "VMDK grain table")
        if self.rgd is not None and self.rgd[i]:
            self.file.pwrite(self.rgd[i] * SECTOR_SIZE + 4 * lo, raw,
                             "VMDK redundant grain table")

    def gte(self, g):
        gt = self.gt(g // self.gtes)
        return gt[g % self.gtes] if gt is not None else GTE_UNALLOCATED

    def set_gte(self, changed):
        """Write new entries ``{grain: entry}``: GTs must be loaded."""
        by_gt = {}
        for g, e in changed.items():
            i, j = divmod(g, self.gtes)
            self.gts[i][j] = e
            by_gt.setdefault(i, []).append(j)
        for i, js in sorted(by_gt.items()):
            self._write_gt_entries(i, min(js), max(js) + 1)

    def allocated(self, e):
        return e > GTE_ZEROED or e == GTE_ZEROED and not self.zeroed

    # -- data path -------------------------------------------------------------------------

    def _grains(self, lo, hi):
        """(grain, a, z) for the grains under extent-relative bytes [lo, hi)."""
        G = self.grain
        for g in range(lo // G, (hi - 1) // G + 1):
            yield g, max(lo, g * G), min(hi, (g + 1) * G)

    def _whole(self, g, a, z):
        return a == g * self.grain and z == min((g + 1) * self.grain, self.length)

    def status(self, lo, hi):
        G, out = self.grain, []
        g, gend = lo // G, (hi - 1) // G + 1
        while g < gend:
            i, first = divmod(g, self.gtes)
            count = min(self.gtes - first, gend - g)
            gt = self.gt(i)
            runs = [(first, count, 0)] if gt is None else \
                block_runs(gt, first, count, GTE_UNALLOCATED, GTE_ZEROED)
            for s, c, kind in runs:
                base = i * self.gtes
                a, z = max(lo, (base + s) * G), min(hi, (base + s + c) * G)
                if kind == 0:
                    out.append((a, z, State.UNALLOCATED, None))
                elif kind == 1:
                    out.append((a, z, State.ZERO, None))
                else:
                    for k in range(base + s, base + s + c):
                        ga, gz = max(a, k * G), min(z, (k + 1) * G)
                        out.append((ga, gz, State.DATA, self._host(gt[k - base], k, ga)))
            g += count
        return _merge(out)

    def _host(self, e, g, a):
        return e * SECTOR_SIZE + a - g * self.grain

    def read(self, lo, view):
        for a, z, state, host in self.status(lo, lo + len(view)):
            part = view[a - lo:z - lo]
            if state is State.DATA:
                self.file.preadinto(host, part, "VMDK grain")
            else:
                part[:] = bytes(z - a)

    def needs_backing(self, lo, hi, differencing):
        """True when a write of [lo, hi) must copy grains up from the parent."""
        if not differencing:
            return False
        return any(self.gte(g) == GTE_UNALLOCATED and not self._whole(g, a, z)
                   for g, a, z in self._grains(lo, hi) if g in (lo // self.grain,
                                                                 (hi - 1) // self.grain))

    def _fresh(self, g, e, below):
        """A new grain's initial content: the parent's data or zeros."""
        buf = bytearray(self.grain)
        if e == GTE_UNALLOCATED and below is not None:
            below(g * self.grain, memoryview(buf)[:min(self.grain, self.length - g * self.grain)])
        return buf

    def write(self, lo, view, below, differencing):
        new, direct = [], []
        for g, a, z in self._grains(lo, lo + len(view)):
            part = view[a - lo:z - lo]
            e = self.gte(g)
            if self.allocated(e):
                direct.append((self._host(e, g, a), part))
                continue
            zero = is_zero(part)
            if zero and (e == GTE_ZEROED or not differencing):
                continue                     # reads zeros already
            if zero and self._whole(g, a, z):
                new.append((g, None))
                continue
            buf = part if len(part) == self.grain else self._fresh(g, e, below)
            if buf is not part:
                buf[a - g * self.grain:z - g * self.grain] = part
            new.append((g, buf))
        for host, part in direct:
            self.file.pwrite(host, part, "VMDK grain")
        self._allocate(new)

    def _to_zero(self, lo, hi, differencing):
        """Runs of [lo, hi) a zero write changes: not those reading zeros already."""
        return [(a, z) for a, z, state, _ in self.status(lo, hi)
                if state is State.DATA or state is State.UNALLOCATED and differencing]

    def write_zeroes(self, lo, n, below, differencing):
        new = []
        for g, a, z in (k for ra, rz in self._to_zero(lo, lo + n, differencing)
                        for k in self._grains(ra, rz)):
            e = self.gte(g)
            whole = self._whole(g, a, z)
            if self.allocated(e):
                if whole:
                    self.file.punch_hole(self._host(e, g, a), z - a)
                else:
                    self.file.pwrite(self._host(e, g, a), bytes(z - a), "VMDK grain")
            elif e == GTE_ZEROED or not differencing:
                continue
            elif whole:
                new.append((g, None))
            else:
                buf = self._fresh(g, e, below)
                buf[a - g * self.grain:z - g * self.grain] = bytes(z - a)
                new.append((g, buf))
        self._allocate(new)

    def discard(self, lo, n):
        for ra, rz in self._to_zero(lo, lo + n, False):
            for g, a, z in self._grains(ra, rz):
                e = self.gte(g)
                if self.allocated(e) and self._whole(g, a, z):
                    self.file.punch_hole(self._host(e, g, a), z - a)

    def _allocate(self, new):
        """Give each ``(grain, data)`` of ``new`` a grain at the end of the file
        (data None: an all-zero grain).  Data first, then the GT entries."""
        if not new:
            return
        for i in sorted({g // self.gtes for g, _ in new}):
            self.gt(i, create=True)
        entries, writes = {}, []
        at = _align(self.file_end, SECTOR_SIZE)
        for g, data in new:
            if data is None and self.zeroed:
                entries[g] = GTE_ZEROED
                continue
            entries[g] = at // SECTOR_SIZE
            if data is not None:
                writes.append((at, data))
            at += self.grain
        if at > self.file_end:
            self.file.truncate(at)          # zero grains stay holes
            self.file_end = at
        for offset, data in writes:
            self.file.pwrite(offset, data, "VMDK grain")
        self.set_gte(entries)

    def flush(self):
        pass

    def check_growth(self, room, path):
        capacity = self.hdr.capacity + room
        if capacity > SPARSE_CAPACITY_MAX:
            raise ImageError(f"{path}: a sparse extent holds at most "
                             f"{SPARSE_CAPACITY_MAX * SECTOR_SIZE} bytes")
        gdes = -(-(-(-capacity // self.gs)) // self.gtes)
        if 4 * gdes * self.gtes > TABLE_BYTES_MAX or \
                not self.compressed and _sectors(4 * gdes) > self.gd_sectors:
            room_for = self.gd_sectors * SECTOR_SIZE // 4
            raise UnsupportedOperation(
                f"{self.path}: growing to {capacity} sectors needs {gdes} grain directory "
                f"entries; its grain directory has room for {room_for} "
                f"({room_for * self.gtes * self.grain} bytes): convert the image instead")

    def _grow_tables(self, room):
        self.hdr.capacity += room
        self.grains = -(-self.hdr.capacity // self.gs)
        old, self.gdes = self.gdes, -(-self.grains // self.gtes)
        self.gd.extend(array.array("I", bytes(4 * (self.gdes - old))))
        return old

    def grow(self, room):
        """More capacity: bytes past the old end of a partly used last grain are
        zeroed (they were never part of the disk), new GTs are allocated as
        create allocates them, the header is written last."""
        tail = self.length % self.grain
        if tail:
            g = self.length // self.grain
            e = self.gte(g)
            if self.allocated(e) and e != GTE_ZEROED:
                self.file.pwrite(self._host(e, g, self.length), bytes(self.grain - tail))
        old = self._grow_tables(room)
        if self.rgd is not None:
            self.rgd.extend(array.array("I", bytes(4 * (self.gdes - old))))
        for i in range(old, self.gdes):
            self.gt(i, create=True)
        self.file.pwrite(0, SPARSE_EXTENT_HEADER.pack(self.hdr), "VMDK sparse extent header")

    # -- check -----------------------------------------------------------------------------

    def survey(self, report):
        """Add this extent's problems to ``report``.  Returns (repairs it can
        make, number of errors no repair fixes)."""
        hdr, sectors = self.hdr, _sectors(self.file.size())
        hard, soft, fixes = [] if self.rebuildable else list(self.problems), [], []
        if self.rebuildable:
            soft += self.problems
        regions = [(0, 1, "header")]
        if hdr.descriptorOffset:
            regions.append((hdr.descriptorOffset, hdr.descriptorSize, "embedded descriptor"))
        if not self.rebuildable:
            regions.append((hdr.gdOffset, self.gd_sectors, "grain directory"))
        if self.rgd is not None:
            regions.append((hdr.rgdOffset, self.gd_sectors, "redundant grain directory"))
        allocated = 0
        for i in range(self.gdes):
            if self.rgd is not None and bool(self.gd[i]) != bool(self.rgd[i]):
                hard.append(f"grain directory entry {i} is {self.gd[i]} but the redundant "
                            f"grain directory's is {self.rgd[i]}")
            if not self.gd[i]:
                continue
            regions.append((self.gd[i], self.gt_sectors, f"grain table {i}"))
            gt = self.gts.get(i) or self._read_gt(self.gd[i], i)
            if self.rgd is not None and self.rgd[i]:
                regions.append((self.rgd[i], self.gt_sectors, f"redundant grain table {i}"))
                rgt = self._read_gt(self.rgd[i], i) if \
                    self.rgd[i] + self.gt_sectors <= sectors else gt
                if rgt != gt:
                    j = next(j for j in range(self.gtes) if rgt[j] != gt[j])
                    soft.append(f"redundant grain table {i} differs from the primary "
                                f"(entry {j}: {rgt[j]}, primary {gt[j]})")
                    fixes.append(("rgt", i))
            for j, e in enumerate(gt):
                if e == GTE_ZEROED and not self.zeroed:
                    hard.append(f"grain table {i} entry {j}: {self._entry_problem(e)}")
                if not self.allocated(e) or e == GTE_ZEROED:
                    continue
                allocated += 1
                length = self._record_sectors(e, i, j, hard)
                if length is None:
                    continue
                if e + length > sectors:
                    hard.append(f"grain table {i} entry {j}: grain at sector {e} lies past "
                                f"the end of the {sectors}-sector file")
                    continue
                regions.append((e, length, f"grain {i * self.gtes + j}"))
        regions.sort()
        end = leaked = 0
        floor = max(hdr.overHead, 1)
        for start, length, what in regions:
            if start < end:
                hard.append(f"{what} at sector {start} overlaps {last_what} "
                            f"(sectors {last_start}..{end - 1})")
            elif start > max(end, floor):
                leaked += start - max(end, floor)
            if start + length > end:
                end, last_start, last_what = start + length, start, what
        errors = hard + soft
        report.errors.extend(errors[:MAX_REPORTED_PROBLEMS])
        if len(errors) > MAX_REPORTED_PROBLEMS:
            report.errors.append(f"... and {len(errors) - MAX_REPORTED_PROBLEMS} more")
        report.allocated_blocks += allocated
        report.total_blocks += self.grains
        self._survey_leaks(report, regions, sectors, max(end, floor), leaked, fixes)
        return fixes, len(hard)

    def _record_sectors(self, e, i, j, errors):
        return self.gs

    def _survey_leaks(self, report, regions, sectors, end, leaked, fixes):
        if leaked:
            report.leaks.append(f"{leaked * SECTOR_SIZE} bytes inside {self.file.path} "
                                f"belong to no grain or table")
        if sectors > end:
            report.leaks.append(f"{(sectors - end) * SECTOR_SIZE} bytes at the end of "
                                f"{self.file.path} belong to no grain")
            fixes.append(("truncate", end * SECTOR_SIZE))

    def repair(self, fixes, report):
        for fix in fixes:
            if fix[0] == "rgt":
                i = fix[1]
                raw = self.file.pread(self.gd[i] * SECTOR_SIZE, 4 * self.gtes, "grain table")
                self.file.pwrite(self.rgd[i] * SECTOR_SIZE, raw, "redundant grain table")
                report.repaired.append(f"copied grain table {i} over its redundant copy")
            elif fix[0] == "truncate":
                self.file.truncate(fix[1])
                self.file_end = fix[1]
                report.repaired.append(f"truncated {self.file.path} to {fix[1]} bytes")


def _merge(runs):
    """Join adjacent runs of one state (DATA only when the host bytes follow on)."""
    out = []
    for a, z, state, host in runs:
        if out:
            pa, pz, ps, ph = out[-1]
            if ps is state and pz == a and (state is not State.DATA or
                                            (ph is None and host is None) or
                                            (ph is not None and host == ph + (pz - pa))):
                out[-1] = (pa, z, ps, ph)
                continue
        out.append((a, z, state, host))
    return out


class StreamExtent(SparseExtent):
    """A stream-optimized extent: compressed grains behind markers, tables at the end."""
    compressed = True

    def __init__(self, *args, level=DEFAULT_COMPRESSION_LEVEL, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending = {}                # grain -> bytearray: written, not yet compressed
        self.cache = {}                  # grain -> inflated bytes, for reads
        self.level = level
        self.data_end = None             # where the next grain record goes (set on first write)
        self.meta_dirty = False

    def _record(self, e, g=None):
        """(lba, size) of the grain marker at sector ``e``, checked."""
        at = e * SECTOR_SIZE
        m = GRAIN_MARKER.unpack(self.file.pread(at, GRAIN_MARKER.size, "VMDK grain marker"))
        lba, size = m.lba, m.size
        what = f"grain marker at offset {at}"
        if g is not None and lba != g * self.gs:
            raise CorruptImageError(f"{self.path}: {what} (grain {g}) gives lba {lba}; "
                                    f"expected {g * self.gs}")
        if not 0 < size <= 2 * self.grain + 1024:
            raise CorruptImageError(f"{self.path}: {what} gives a compressed size of {size} "
                                    f"bytes; expected 1 to {2 * self.grain + 1024}")
        return lba, size

    def _record_sectors(self, e, i, j, errors):
        try:
            _, size = self._record(e, i * self.gtes + j)
        except ImageError as err:
            errors.append(str(err).split(": ", 1)[1])
            return None
        return _sectors(GRAIN_MARKER.size + size)

    def content(self, g):
        """Grain ``g`` inflated (self.grain bytes), or None when it holds no data."""
        if g in self.pending:
            return self.pending[g]
        if g in self.cache:
            return self.cache[g]
        e = self.gte(g)
        if not self.allocated(e):
            return None
        _, size = self._record(e, g)
        at = e * SECTOR_SIZE + GRAIN_MARKER.size
        data = inflate(self.file.pread(at, size, f"VMDK compressed grain {g}"), self.grain,
                       self.path, f"compressed grain {g} (lba {g * self.gs}, at offset "
                       f"{e * SECTOR_SIZE})")
        if len(data) < self.grain:
            data += bytes(self.grain - len(data))
        if len(self.cache) >= STREAM_CACHE_GRAINS:
            del self.cache[next(iter(self.cache))]
        self.cache[g] = data
        return data

    def status(self, lo, hi):
        out = [(a, z, s, None) for a, z, s, _ in super().status(lo, hi)]
        if not any(lo // self.grain <= g <= (hi - 1) // self.grain for g in self.pending):
            return _merge(out)
        split = []
        for a, z, s, _ in out:
            for g, ga, gz in self._grains(a, z):
                split.append((ga, gz, State.DATA if g in self.pending else s, None))
        return _merge(split)

    def read(self, lo, view):
        for g, a, z in self._grains(lo, lo + len(view)):
            data = self.content(g)
            part = view[a - lo:z - lo]
            if data is None:
                part[:] = bytes(z - a)
            else:
                part[:] = memoryview(data)[a - g * self.grain:z - g * self.grain]

    def _prepare(self):
        """Before the first change: every GT in memory (the tables at the end of
        the file are about to be overwritten) and where grain records end."""
        if self.data_end is not None:
            return
        last = 0
        for i in range(self.gdes):
            gt = self.gt(i)
            if gt is not None:
                last = max(last, max(gt))
        hdr = self.hdr
        end = max(hdr.overHead, hdr.descriptorOffset + hdr.descriptorSize, 1) * SECTOR_SIZE
        if self.allocated(last):
            _, size = self._record(last)
            end = max(end, _align(last * SECTOR_SIZE + GRAIN_MARKER.size + size, SECTOR_SIZE))
        self.data_end = end

    def write(self, lo, view, below, differencing):
        self._prepare()
        for g, a, z in self._grains(lo, lo + len(view)):
            part = view[a - lo:z - lo]
            if self._whole(g, a, z):
                self.pending.pop(g, None)
                self._put(g, part, differencing)
                continue
            buf = self.pending.get(g)
            if buf is None:
                data = self.content(g)
                buf = bytearray(data) if data is not None else \
                    self._fresh(g, self.gte(g), below)
                self.pending[g] = buf
            buf[a - g * self.grain:z - g * self.grain] = part
            self.cache.pop(g, None)
        while len(self.pending) * self.grain > STREAM_PENDING_BYTES:
            g = next(iter(self.pending))
            self._put(g, self.pending.pop(g), differencing)

    def write_zeroes(self, lo, n, below, differencing):
        zeros = bytes(min(n, COPY_CHUNK))
        for a, z in self._to_zero(lo, lo + n, differencing):
            for at in range(a, z, COPY_CHUNK):
                m = min(COPY_CHUNK, z - at)
                self.write(at, memoryview(zeros)[:m], below, differencing)

    def discard(self, lo, n):
        """Grain records cannot be freed in place: the hint does nothing."""

    def _put(self, g, data, differencing):
        """Compress grain ``g`` and append its record (or reuse the last record's
        place when it is this grain's old copy)."""
        self.cache.pop(g, None)
        visible = min(self.grain, self.length - g * self.grain)
        old = self.gte(g)
        if is_zero(data) and not differencing:
            if old != GTE_UNALLOCATED:
                self.set_gte_memory(g, GTE_UNALLOCATED)
            return
        packed = zlib.compress(bytes(memoryview(data)[:visible]), self.level)
        record = bytearray(GRAIN_MARKER.pack({"lba": g * self.gs, "size": len(packed)}))
        record += packed
        record += bytes(_align(len(record), SECTOR_SIZE) - len(record))
        at = self.data_end
        if self.allocated(old):
            _, size = self._record(old)
            if _align(old * SECTOR_SIZE + GRAIN_MARKER.size + size, SECTOR_SIZE) == at:
                at = old * SECTOR_SIZE
        self.file.pwrite(at, record, "VMDK compressed grain")
        self.data_end = at + len(record)
        self.file_end = max(self.file_end, self.data_end)
        self.set_gte_memory(g, at // SECTOR_SIZE)

    def grow(self, room):
        """Only the capacity and the GD change; the tail is rewritten at flush."""
        self._prepare()
        self._grow_tables(room)
        self.meta_dirty = True

    def set_gte_memory(self, g, e):
        """Stream GTs are written with the footer: only memory changes now."""
        i, j = divmod(g, self.gtes)
        gt = self.gts.get(i)
        if gt is None:
            gt = self.gts[i] = array.array("I", bytes(4 * self.gtes))
        gt[j] = e
        self.meta_dirty = True

    def flush(self):
        """Compress pending grains, then write GTs, GD, footer and end-of-stream."""
        self.flush_pending()
        if self.meta_dirty:
            self._installed(*self.write_tail(self.file, self.data_end, self.gts))

    def flush_pending(self):
        if self.pending:
            self._prepare()
            for g in list(self.pending):
                self._put(g, self.pending.pop(g), self._differencing)

    _differencing = False                # set by the image (a stream child copies up)

    def write_tail(self, f, at, gts):
        """At byte ``at`` of ``f`` (where grain records end): the tables, the
        footer and the end-of-stream marker; then the header at sector 0 says
        GD_AT_END.  Returns what ``_installed`` takes."""
        tail, gd, footer = stream_tail(self.hdr, gts, self.gdes, at)
        f.pwrite(at, tail, "VMDK stream tables and footer")
        f.truncate(at + len(tail))
        f.pwrite(0, SPARSE_EXTENT_HEADER.pack(dict(footer, gdOffset=GD_AT_END)),
                 "VMDK sparse extent header")
        return gts, gd, footer, at, at + len(tail)

    def _installed(self, gts, gd, footer, data_end, file_end):
        """The tables just written are the extent's from now on."""
        self.gts, self.gd, self.rgd = gts, gd, None
        self.hdr.update(footer)
        self.data_end, self.file_end = data_end, file_end
        self.meta_dirty, self.problems = False, []

    # -- check and rewrite -----------------------------------------------------------------

    def scan(self):
        """Grain records found by walking the markers: [(sector, lba, sectors)]."""
        records = []
        sector = max(self.hdr.overHead, 1)
        limit = _sectors(self.file.size())
        while sector < limit:
            m = MARKER.unpack(self.file.pread(sector * SECTOR_SIZE, SECTOR_SIZE, "VMDK marker"))
            if m.size:
                n = _sectors(GRAIN_MARKER.size + m.size)
                if sector + n > limit or m.size > 2 * self.grain + 1024:
                    break                                # a torn last record
                records.append((sector, m.val, n))
                sector += n
            elif m.type in (MARKER_GT, MARKER_GD, MARKER_FOOTER) and m.val < limit:
                sector += 1 + m.val
            else:
                break                                    # end of stream (or zero padding)
        return records

    def _survey_leaks(self, report, regions, sectors, end, leaked, fixes):
        if self.problems:
            fixes.append(("rebuild",))
            return
        live = {s for s, _, what in regions if what.startswith("grain ")}
        dead = [(s, n) for s, _, n in self.scan() if s not in live]
        if dead:
            report.leaks.append(f"{len(dead)} superseded grain record(s), "
                                f"{sum(n for _, n in dead) * SECTOR_SIZE} bytes, in "
                                f"{self.file.path} (compact rewrites the stream)")
            fixes.append(("rewrite",))

    def repair(self, fixes, report):
        for fix in fixes:
            if fix[0] == "rebuild":
                found = {}
                for sector, lba, _ in self.scan():
                    if lba % self.gs == 0 and lba // self.gs < self.grains:
                        found[lba // self.gs] = sector          # the later copy wins
                gts = {}
                for g, sector in found.items():
                    i, j = divmod(g, self.gtes)
                    gts.setdefault(i, array.array("I", bytes(4 * self.gtes)))[j] = sector
                self.rewrite(gts)
                report.repaired.append(f"rebuilt the grain tables of {self.file.path} from "
                                       f"{len(found)} grain markers and rewrote the stream")
            elif fix[0] == "rewrite":
                self.rewrite()
                report.repaired.append(f"rewrote {self.file.path} without superseded grains")

    def rewrite(self, gts=None):
        """Copy the live grain records in LBA order into a new file, add the
        tables, and rename it over the old one: the old file stays whole until
        the new one is complete.  Returns the old ImageFile (closed): the image
        holding it takes ``self.file`` instead."""
        self.flush_pending()
        if gts is None:
            gts = {i: self.gts.get(i) or self.gt(i) for i in range(self.gdes) if
                   i in self.gts or self.gd[i]}
        f, tmp = self.file, self.file.path + ".drivebay-rewrite"
        out = ImageFile(tmp, writable=True, create=True)
        try:
            at = max(self.hdr.overHead, 1) * SECTOR_SIZE
            out.pwrite(0, f.pread(0, at, "VMDK header and descriptor"))
            moved = {}
            for i, gt in sorted(gts.items()):
                moved[i] = new = array.array("I", gt)
                for j, e in enumerate(gt):
                    if not self.allocated(e):
                        continue
                    _, size = self._record(e, i * self.gtes + j)
                    record = f.pread(e * SECTOR_SIZE, GRAIN_MARKER.size + size, "VMDK grain")
                    n = _align(len(record), SECTOR_SIZE)
                    out.pwrite(at, record + bytes(n - len(record)), "VMDK grain")
                    new[j] = at // SECTOR_SIZE
                    at += n
            done = self.write_tail(out, at, moved)
            out.sync()
        except BaseException:
            out.close()
            os.unlink(tmp)
            raise
        out.close()
        try:
            os.replace(tmp, f.path)
        except OSError as e:
            os.unlink(tmp)
            raise ImageError(f"{f.path}: replacing the file with its rewrite: "
                             f"{e.strerror}") from None
        self.file = ImageFile(f.path, writable=True)   # locks the new file like the old
        if getattr(f, "direct", None) is not None:      # the host cache was off (O_DIRECT)
            self.file.set_host_cache(False)
        f.close()
        self._installed(*done)
        self.cache.clear()
        return f


# -- creation ------------------------------------------------------------------------------

def _sparse_layout(capacity, grain_sectors, desc_sectors):
    """Sector layout of a new hosted sparse extent, as VMware and QEMU lay it out:
    header, descriptor, redundant GD and GTs, GD and GTs, grains from overHead."""
    grains = -(-capacity // grain_sectors)
    gdes = -(-grains // DEFAULT_GTES_PER_GT)
    gd_sectors = _sectors(4 * gdes)
    gt_sectors = _sectors(4 * DEFAULT_GTES_PER_GT)
    rgd = 1 + desc_sectors
    gd = rgd + gd_sectors + gdes * gt_sectors
    end = gd + gd_sectors + gdes * gt_sectors
    return gdes, gd_sectors, gt_sectors, rgd, gd, _align(end, grain_sectors)


def write_sparse_extent(f, capacity, grain_sectors, descriptor_text=None, zeroed_grain=False):
    """A new, empty monolithic or split sparse extent in the empty file ``f``."""
    desc_sectors = EMBEDDED_DESCRIPTOR_SECTORS
    gdes, gd_sectors, gt_sectors, rgd, gd, overhead = \
        _sparse_layout(capacity, grain_sectors, desc_sectors)
    flags = FLAG_VALID_NEW_LINE_DETECTION | FLAG_REDUNDANT_GRAIN_TABLE
    if zeroed_grain:
        flags |= FLAG_ZEROED_GRAIN_GTE
    hdr = new_header(capacity, grain_sectors, 1, desc_sectors, rgd, gd, overhead, flags,
                     2 if zeroed_grain else 1)
    f.truncate(overhead * SECTOR_SIZE)
    for directory in (rgd, gd):
        first_gt = directory + gd_sectors
        table = array.array("I", range(first_gt, first_gt + gdes * gt_sectors, gt_sectors))
        f.pwrite(directory * SECTOR_SIZE, _table_bytes(table), "VMDK grain directory")
    if descriptor_text is not None:
        _write_embedded(f, f.path, 1, desc_sectors, descriptor_text)
    f.pwrite(0, SPARSE_EXTENT_HEADER.pack(hdr), "VMDK sparse extent header")


def _write_embedded(f, path, sector, sectors, text):
    if len(text) > sectors * SECTOR_SIZE:
        raise ImageError(f"{path}: the {len(text)}-byte descriptor does not fit the "
                         f"{sectors * SECTOR_SIZE}-byte descriptor area of the sparse extent")
    f.pwrite(sector * SECTOR_SIZE, text + bytes(sectors * SECTOR_SIZE - len(text)),
             "VMDK embedded descriptor")


def stream_tail(hdr, gts, gdes, at):
    """The end of a stream written at byte ``at``: a GT marker and GT for every
    table with an entry, the GD marker and GD, the footer marker and footer,
    the end-of-stream marker.  Returns (bytes, GD, footer)."""
    gtes = hdr.numGTEsPerGT
    gt_sectors, gd_sectors = _sectors(4 * gtes), _sectors(4 * gdes)
    tail = bytearray()
    gd = array.array("I", bytes(4 * gdes))
    for i in range(gdes):
        gt = gts.get(i)
        if gt is None or not any(gt):
            continue
        tail += MARKER.pack(MARKER.defaults(val=gt_sectors, type=MARKER_GT))
        gd[i] = (at + len(tail)) // SECTOR_SIZE
        tail += _table_bytes(gt) + bytes(gt_sectors * SECTOR_SIZE - 4 * gtes)
    tail += MARKER.pack(MARKER.defaults(val=gd_sectors, type=MARKER_GD))
    footer = dict(hdr, gdOffset=(at + len(tail)) // SECTOR_SIZE, rgdOffset=0,
                  flags=hdr.flags & ~FLAG_REDUNDANT_GRAIN_TABLE)
    tail += _table_bytes(gd) + bytes(gd_sectors * SECTOR_SIZE - 4 * gdes)
    tail += MARKER.pack(MARKER.defaults(val=1, type=MARKER_FOOTER))
    tail += SPARSE_EXTENT_HEADER.pack(footer)
    tail += MARKER.pack(MARKER.defaults(val=0, type=MARKER_EOS))
    return tail, gd, footer


def write_stream_extent(f, capacity, grain_sectors, descriptor_text):
    """A new, empty stream-optimized extent: header, descriptor, GD, footer, EOS."""
    desc_sectors = EMBEDDED_DESCRIPTOR_SECTORS
    overhead = _align(1 + desc_sectors, grain_sectors)
    hdr = new_header(capacity, grain_sectors, 1, desc_sectors, 0, GD_AT_END, overhead,
                     FLAG_VALID_NEW_LINE_DETECTION | FLAG_COMPRESSED_GRAINS | FLAG_MARKERS, 3,
                     COMPRESSION_DEFLATE)
    _write_embedded(f, f.path, 1, desc_sectors, descriptor_text)
    gdes = -(-(-(-capacity // grain_sectors)) // DEFAULT_GTES_PER_GT)
    tail, _, _ = stream_tail(hdr, {}, gdes, overhead * SECTOR_SIZE)
    f.pwrite(overhead * SECTOR_SIZE, tail, "VMDK stream tables and footer")
    f.pwrite(0, SPARSE_EXTENT_HEADER.pack(hdr), "VMDK sparse extent header")


def _as_uuid(value):
    return value if isinstance(value, uuidlib.UUID) else uuidlib.UUID(str(value))


def _split_sizes(sectors, limit):
    sizes = []
    while sectors > 0:
        sizes.append(min(limit, sectors))
        sectors -= sizes[-1]
    return sizes


class _Files:
    """Files made by a create: all removed if the create fails."""

    def __init__(self):
        self.made = []

    def new(self, path):
        f = ImageFile(path, writable=True, create=True)
        self.made.append(path)
        return f

    def undo(self):
        for path in reversed(self.made):
            try:
                os.unlink(path)
            except OSError:
                pass


# -- the driver ----------------------------------------------------------------------------

class VmdkDriver(BlockDriver):
    format_name = "vmdk"
    description = "VMware Virtual Disk (sparse, flat, split, stream-optimized, raw disk)"
    create_variants = tuple(VARIANTS)
    supports_backing = True
    resizable = True

    def __init__(self, file, writable):
        super().__init__(file, writable)
        self.descriptor = None
        self.extents = []
        self.embedded = None             # (sector, sectors) of an embedded descriptor
        self.descriptor_file = False     # the descriptor is a file of its own
        self._owned = []                 # extent files other than self.file
        self._modified = False
        self._starts = []

    # -- class level -----------------------------------------------------------------------

    @classmethod
    def probe(cls, head, tail, file_size):
        magic = int.from_bytes(head[:4], "little") if len(head) >= 4 else None
        if magic in (SPARSE_MAGICNUMBER, COWD_MAGICNUMBER):
            return 100
        if vd.DESCRIPTOR_SIGNATURE.encode() in head[:1024]:
            return 100
        if b"createType" in head and b"\0" not in head and file_size <= vd.MAX_DESCRIPTOR_BYTES:
            return 90
        return 0

    @classmethod
    def create(cls, path, size=None, variant=None, uuid=None, parent=None, adapter_type="ide",
               hw_version=DEFAULT_HW_VERSION, zeroed_grain=False,
               grain_size=DEFAULT_GRAIN_SECTORS * SECTOR_SIZE, **options):
        """Create a VMDK.  ``variant``: dynamic (monolithicSparse, the default),
        fixed (monolithicFlat), split2g (twoGbMaxExtentSparse), split2g-fixed
        (twoGbMaxExtentFlat) or stream (streamOptimized); VMware's names are
        accepted too.  ``parent``: an open VMDK; the new image is a sparse child
        recording the parent's CID, UUIDs and relative path, of the parent's
        size unless ``size`` is given.  ``zeroed_grain``: version-2 extents
        with the zeroed-grain GTE (QEMU reads it; libvmdk 20260714 does not)."""
        path = os.fspath(path)
        if options:
            raise ImageError(f"{path}: unknown VMDK creation options: "
                             f"{', '.join(sorted(options))}")
        variant = variant or "dynamic"
        by_type = {v: k for k, v in VARIANTS.items()}
        variant = by_type.get(variant, variant)
        if variant not in VARIANTS:
            raise ImageError(f"{path}: VMDK variant {variant!r} unknown (known: "
                             f"{', '.join(VARIANTS)}, or their createType names)")
        if adapter_type not in vd.ADAPTER_TYPES:
            raise ImageError(f"{path}: adapter type {adapter_type!r} unknown (known: "
                             f"{', '.join(vd.ADAPTER_TYPES)})")
        vd.check_quotable(path, "hardware version", str(hw_version))
        gs = grain_size // SECTOR_SIZE
        if grain_size % SECTOR_SIZE or gs & (gs - 1) or \
                not GRAIN_SECTORS_MIN <= gs <= GRAIN_SECTORS_MAX:
            raise ImageError(f"{path}: grain size {grain_size} must be a power of two from "
                             f"{GRAIN_SECTORS_MIN * SECTOR_SIZE} to "
                             f"{GRAIN_SECTORS_MAX * SECTOR_SIZE} bytes")
        hint = None
        if parent is not None:
            if variant not in ("dynamic", "split2g"):
                raise ImageError(f"{path}: a differencing VMDK is sparse (dynamic or "
                                 f"split2g), not {variant}")
            if parent.format_name != cls.format_name:
                raise ImageError(f"{path}: the parent {parent.path} is {parent.format_name}; "
                                 f"a VMDK's parent is a VMDK (it records the parent's CID)")
            hint = os.path.relpath(os.path.abspath(parent.path),
                                   os.path.dirname(os.path.abspath(path)))
            vd.check_quotable(path, "parent path", hint)
            size = parent.size if size is None else size
        if size is None or size <= 0 or size % SECTOR_SIZE:
            raise ImageError(f"{path}: VMDK disk size {size} must be a positive multiple of "
                             f"{SECTOR_SIZE} bytes")
        sectors = size // SECTOR_SIZE
        limit = SPARSE_CAPACITY_MAX if variant in ("dynamic", "stream") else vd.MAX_DISK_SECTORS
        if sectors > limit:
            raise ImageError(f"{path}: {size} bytes is more than a {VARIANTS[variant]} VMDK "
                             f"holds ({limit * SECTOR_SIZE} bytes)")
        stem = vd.stem(path)
        create_type = VARIANTS[variant]
        desc = vd.Descriptor(create_type, [], vd.new_cid())
        if parent is not None:
            desc.parent_cid, desc.parent_hint = parent.descriptor.cid, hint
        desc.ddb = vd.new_ddb(sectors, adapter_type, str(hw_version),
                              _as_uuid(uuid) if uuid is not None else uuidlib.uuid4(),
                              parent and parent.uuid, parent and parent.modification_uuid)
        files = _Files()
        try:
            if variant in ("dynamic", "stream"):
                desc.extents = [vd.ExtentLine("RW", sectors, "SPARSE", os.path.basename(path))]
                f = files.new(path)
                try:
                    text = desc.render().encode("utf-8")
                    if variant == "stream":
                        write_stream_extent(f, sectors, gs, text)
                    else:
                        write_sparse_extent(f, sectors, gs, text, zeroed_grain)
                    f.sync()
                finally:
                    f.close()
                return
            if variant == "fixed":
                names = [(os.path.basename(stem) + "-flat.vmdk", sectors)]
            else:
                letter = "f" if variant == "split2g-fixed" else "s"
                names = [(f"{os.path.basename(stem)}-{letter}{n:03d}.vmdk", count)
                         for n, count in enumerate(_split_sizes(sectors, SPLIT_EXTENT_SECTORS), 1)]
            folder = os.path.dirname(stem)
            for name, count in names:
                f = files.new(os.path.join(folder, name))
                try:
                    cls._new_extent_file(f, variant, count, gs, zeroed_grain)
                finally:
                    f.close()
                desc.extents.append(vd.ExtentLine(
                    "RW", count, "SPARSE" if variant == "split2g" else "FLAT", name))
            f = files.new(path)
            try:
                f.pwrite(0, desc.render().encode("utf-8"), "VMDK descriptor")
                f.sync()
            finally:
                f.close()
        except BaseException:
            files.undo()
            raise

    @staticmethod
    def _new_extent_file(f, variant, count, gs, zeroed_grain):
        if variant == "split2g":
            write_sparse_extent(f, count, gs, None, zeroed_grain)
        else:
            f.truncate(count * SECTOR_SIZE)
            f.allocate(0, count * SECTOR_SIZE)
        f.sync()

    # -- open ------------------------------------------------------------------------------

    def _open(self):
        f = self.file
        size = f.size()
        head = f.pread(0, min(size, SECTOR_SIZE), "VMDK file head") if size else b""
        magic = int.from_bytes(head[:4], "little") if len(head) >= 4 else None
        hdr = problem = None
        if magic == COWD_MAGICNUMBER:
            raise UnsupportedFeatureError(f"{self.path}: an ESXi sparse extent ('COWD', "
                                          f"VMFSSPARSE); drivebay reads hosted sparse extents "
                                          f"('KDMV') only")
        if magic == SPARSE_MAGICNUMBER:
            hdr, problem = read_header(f, self.path)
            if problem and not self.for_check:
                raise CorruptImageError(f"{self.path}: {problem}; `drivebay img check -r all` "
                                        f"rebuilds the tables from the grain markers")
            desc = None
            if hdr.descriptorOffset and hdr.descriptorSize:
                raw = f.pread(hdr.descriptorOffset * SECTOR_SIZE,
                              hdr.descriptorSize * SECTOR_SIZE, "VMDK embedded descriptor")
                if raw.strip(b"\0 \n"):
                    desc = vd.parse(raw, self.path)
                    self.embedded = (hdr.descriptorOffset, hdr.descriptorSize)
            if desc is None:
                # An extent of a split image, or a descriptor-less sparse file: it
                # describes itself (no CID to update).
                desc = vd.Descriptor("monolithicSparse", [vd.ExtentLine(
                    "RW", hdr.capacity, "SPARSE", os.path.basename(self.path))], vd.NO_PARENT_CID)
        else:
            if size > vd.MAX_DESCRIPTOR_BYTES:
                raise FormatError(f"{self.path}: not a VMDK: no sparse extent header and "
                                  f"{size} bytes, more than a descriptor "
                                  f"({vd.MAX_DESCRIPTOR_BYTES} bytes at most)")
            raw = f.pread(0, size, "VMDK descriptor")
            if vd.DESCRIPTOR_SIGNATURE.encode() not in raw[:1024] and b"createType" not in raw:
                raise FormatError(f"{self.path}: not a VMDK: neither a sparse extent ('KDMV') "
                                  f"nor a descriptor")
            desc = vd.parse(raw, self.path)
            self.descriptor_file = True
        self.descriptor = desc
        try:
            self._open_extents(hdr, problem)
        except BaseException:
            self._close_extents()
            raise
        self.size = desc.sectors * SECTOR_SIZE
        self._load_ids()

    def _open_extents(self, own_header, own_problem):
        desc = self.descriptor
        folder = os.path.dirname(os.path.abspath(self.path))
        start, opened, sparse_files = 0, {}, []
        # One handle per file (a raw disk's extents share one), writable when an
        # RW extent uses it: a second handle of one file would conflict with
        # its own lock (block/locking.py).
        where_of = {n: vd.resolve_extent_path(folder, line.filename, desc.is_raw, self.path)
                    for n, line in enumerate(desc.extents, 1)
                    if line.type != "ZERO" and line.access != "NOACCESS"}
        rw = {os.path.realpath(where_of[n]) for n, line in enumerate(desc.extents, 1)
              if n in where_of and line.access == "RW" and self.writable}
        for n, line in enumerate(desc.extents, 1):
            if line.type in ("VMFSSPARSE", "SESPARSE"):
                raise UnsupportedFeatureError(f"{self.path}: extent {n} is {line.type}, an "
                                              f"ESXi sparse format drivebay does not read")
            if line.type == "ZERO" or line.access == "NOACCESS":
                ext = ZeroExtent(line, start)
            else:
                where = where_of[n]
                key = os.path.realpath(where)
                f = self.file if self._same_file(where) else opened.get(key)
                if f is None:
                    try:
                        f = opened[key] = ImageFile(where, key in rw)
                    except ImageError as e:
                        raise ImageError(f"{self.path}: extent {n} ({line.type} "
                                         f"{line.filename!r}): {e}") from None
                    self._owned.append(f)
                if line.type in vd.FLAT_TYPES:
                    ext = FlatExtent(line, start, f, line.offset * SECTOR_SIZE)
                else:
                    if f in sparse_files:
                        raise CorruptImageError(f"{self.path}: extent {n} names {line.filename!r}"
                                                f", a sparse extent file already in use")
                    sparse_files.append(f)
                    if f is self.file and own_header is not None:
                        hdr, problem = own_header, own_problem
                    else:
                        hdr, problem = read_header(f, f.path)
                        if problem and not self.for_check:
                            raise CorruptImageError(f"{f.path}: {problem}")
                    kind = StreamExtent if hdr.flags & FLAG_MARKERS else SparseExtent
                    ext = kind(line, start, f, hdr, f.path, self.for_check, problem)
            self.extents.append(ext)
            self._starts.append(start)
            start += ext.length
        grains = [e.grain for e in self.extents if e.sparse]
        self.cluster_size = grains[0] if grains else SECTOR_SIZE

    def _same_file(self, where):
        try:
            return os.path.samefile(where, self.path)
        except OSError:
            return False

    def _load_ids(self):
        desc = self.descriptor
        self.uuid = desc.uuid(vd.DDB_UUID_IMAGE, self.path)
        self.modification_uuid = desc.uuid(vd.DDB_UUID_MODIFICATION, self.path)
        parent = desc.uuid(vd.DDB_UUID_PARENT, self.path)
        self.parent_uuid = parent if parent not in (None, NULL_UUID) else None
        pmod = desc.uuid(vd.DDB_UUID_PARENT_MODIFICATION, self.path)
        self.parent_modification_uuid = pmod if self.parent_uuid is not None else None
        self.parent_locator = desc.parent_hint
        self.variant = desc.create_type
        for ext in self.extents:
            if isinstance(ext, StreamExtent):
                ext._differencing = self.has_parent

    @property
    def problems(self):
        return [p for e in self.extents if e.sparse for p in e.problems]

    # -- helpers ---------------------------------------------------------------------------

    def _pieces(self, offset, length):
        """(extent, lo, hi, virtual offset) for the extents under a byte range."""
        end = offset + length
        i = max(0, _bisect(self._starts, offset))
        while offset < end and i < len(self.extents):
            ext = self.extents[i]
            lo = offset - ext.start
            hi = min(ext.length, end - ext.start)
            if hi > lo:
                yield ext, lo, hi, offset
                offset = ext.start + hi
            i += 1

    def _require_sound(self):
        if self.problems:
            raise CorruptImageError(f"{self.path}: refusing to write: {self.problems[0]}")

    def _writable_pieces(self, offset, length):
        self._require_writable()
        self.check_range(offset, length)
        self._require_sound()
        pieces = list(self._pieces(offset, length))
        for ext, lo, hi, _ in pieces:
            line = ext.line
            if line.type == "ZERO" or line.access != "RW":
                n = self.extents.index(ext) + 1
                raise ImageError(f"{self.path}: writing {hi - lo} bytes at {ext.start + lo} "
                                 f"into extent {n} ({line.access} {line.sectors} {line.type}"
                                 f"{' ' + repr(line.filename) if line.filename else ''}), which "
                                 f"does not take writes")
        diff = self.has_parent
        if diff and self.backing_read is None:
            for ext, lo, hi, _ in pieces:
                if ext.needs_backing(lo, hi, diff):
                    raise ChainError(f"{self.path}: writing part of a grain only the parent "
                                     f"holds needs the parent's data: open the image through "
                                     f"its chain (which sets backing_read)")
        return pieces

    def _below(self, ext):
        if not self.has_parent or self.backing_read is None:
            return None
        return lambda rel, view: self.backing_read(ext.start + rel, view)

    def _modifying(self):
        """The first change of content after open gets a new CID (and a new
        ddb.uuid.modification when the descriptor has one)."""
        if self._modified:
            return
        self._modified = True
        desc = self.descriptor
        if not (self.embedded or self.descriptor_file):
            return
        desc.cid = vd.new_cid(avoid={desc.cid})
        if vd.DDB_UUID_MODIFICATION in desc.ddb:
            self.modification_uuid = uuidlib.uuid4()
            desc.ddb[vd.DDB_UUID_MODIFICATION] = str(self.modification_uuid)
        self._write_descriptor()

    def _write_descriptor(self):
        desc = self.descriptor
        text = desc.render().encode(desc.encoding or "utf-8")
        if self.embedded:
            sector, sectors = self.embedded
            _write_embedded(self.file, self.path, sector, sectors, text)
        elif self.descriptor_file:
            # In place, as VirtualBox and QEMU write it (a renamed copy would not
            # carry the file's locks): a CID update is one write under a page.
            self.file.pwrite(0, text, "VMDK descriptor")
            if self.file.size() > len(text):
                self.file.truncate(len(text))

    # -- data path -------------------------------------------------------------------------

    def block_status(self, offset, length):
        self.check_range(offset, length)
        out = []
        for ext, lo, hi, _ in self._pieces(offset, length):
            for a, z, state, host in ext.status(lo, hi):
                out.append(Extent(ext.start + a, z - a, state, host))
        return out

    def readinto(self, offset, buf):
        """Fill ``buf``; what this image does not hold reads as zeros."""
        view = memoryview(buf).cast("B")
        self.check_range(offset, len(view))
        self._read(offset, view)

    def _read(self, offset, view):
        for ext, lo, hi, at in self._pieces(offset, len(view)):
            ext.read(lo, view[at - offset:at - offset + hi - lo])

    def read_allocated_into(self, ext, view):
        self._read(ext.offset, view)

    def write(self, offset, data):
        view = memoryview(data).cast("B")
        pieces = self._writable_pieces(offset, len(view))
        if not pieces:
            return
        self._modifying()
        for ext, lo, hi, at in pieces:
            ext.write(lo, view[at - offset:at - offset + hi - lo], self._below(ext),
                      self.has_parent)

    def write_zeroes(self, offset, length):
        """Make the range read as zeros here, never "ask the parent"."""
        pieces = self._writable_pieces(offset, length)
        if not pieces:
            return
        self._modifying()
        for ext, lo, hi, _ in pieces:
            ext.write_zeroes(lo, hi - lo, self._below(ext), self.has_parent)

    def discard(self, offset, length):
        """Whole allocated grains of sparse extents read as zeros afterwards and
        their host space is punched out; flat and stream extents are unchanged."""
        pieces = self._writable_pieces(offset, length)
        if pieces:
            self._modifying()
        for ext, lo, hi, _ in pieces:
            ext.discard(lo, hi - lo)

    def flush(self):
        if not self.writable:
            return
        for ext in self.extents:
            if ext.sparse:
                ext.flush()
        for f in [self.file] + self._owned:
            if f.writable:
                f.sync()

    def close(self):
        try:
            if self.writable and not self.problems:
                for ext in self.extents:
                    if ext.sparse:
                        ext.flush()
        finally:
            self._close_extents()
            super().close()

    def _close_extents(self):
        for f in self._owned:
            f.close()
        self._owned = []

    # -- image maintenance -----------------------------------------------------------------

    def resize(self, new_size):
        """Grow the disk.  A sparse extent grows within the room its grain
        directory has; split images grow their last extent up to 2047 MiB and
        add extent files; raw-disk and ZERO-extent descriptors cannot grow."""
        self._require_writable()
        self._require_sound()
        if new_size < self.size:
            raise UnsupportedOperation(f"{self.path}: shrinking a VMDK ({self.size} to "
                                       f"{new_size} bytes) is not supported")
        if new_size % SECTOR_SIZE:
            raise ImageError(f"{self.path}: new size {new_size} is not a multiple of "
                             f"{SECTOR_SIZE} bytes")
        if new_size == self.size:
            return
        desc = self.descriptor
        if desc.is_raw or any(not isinstance(e, (FlatExtent, SparseExtent))
                              for e in self.extents) or not self.extents:
            raise UnsupportedOperation(f"{self.path}: a {desc.create_type} VMDK with these "
                                       f"extents cannot be resized")
        if not (self.embedded or self.descriptor_file):
            raise UnsupportedOperation(f"{self.path}: a sparse extent without a descriptor "
                                       f"cannot be resized; resize its descriptor")
        split = desc.create_type.startswith("twoGb")
        extra = (new_size - self.size) // SECTOR_SIZE
        last = self.extents[-1]
        room = extra if not split else max(0, min(extra, SPLIT_EXTENT_SECTORS - last.line.sectors))
        plan = _split_sizes(extra - room, SPLIT_EXTENT_SECTORS)
        last.check_growth(room, self.path)
        self._modifying()
        folder = os.path.dirname(os.path.abspath(self.path))
        base = os.path.basename(vd.stem(self.path))
        sparse = isinstance(last, SparseExtent)
        made, new_lines = _Files(), []
        try:
            for number, count in enumerate(plan, len(desc.extents) + 1):
                name = f"{base}-{'s' if sparse else 'f'}{number:03d}.vmdk"
                f = made.new(os.path.join(folder, name))
                try:
                    self._new_extent_file(f, "split2g" if sparse else "split2g-fixed", count,
                                          last.gs if sparse else 0, sparse and last.zeroed)
                finally:
                    f.close()
                new_lines.append(vd.ExtentLine("RW", count, last.line.type, name))
            if room:
                last.grow(room)
                last.line.sectors += room
                last.length = last.line.sectors * SECTOR_SIZE
        except BaseException:
            made.undo()
            raise
        desc.extents.extend(new_lines)
        if "ddb.geometry.cylinders" in desc.ddb:
            desc.ddb["ddb.geometry.cylinders"] = str(vd.chs_geometry(
                new_size // SECTOR_SIZE, desc.ddb.get("ddb.adapterType", "ide"))[0])
        self._write_descriptor()
        start = last.start + last.length
        for line in new_lines:
            where = os.path.join(folder, line.filename)
            f = ImageFile(where, True)
            self._owned.append(f)
            if line.type == "SPARSE":
                hdr, _ = read_header(f, where)
                ext = SparseExtent(line, start, f, hdr, where, False)
            else:
                ext = FlatExtent(line, start, f, 0)
            self.extents.append(ext)
            self._starts.append(start)
            start += ext.length
        self.size = new_size

    def check(self, repair=False):
        """Grain directories and tables against their files: tables and grains
        past the end of the file, grains overlapping each other or metadata,
        redundant tables differing from the primary ones, the parent's CID, and
        leaks (space no grain uses; superseded stream grains).  ``repair``
        copies primary tables over redundant ones, truncates leaked tails,
        rebuilds or rewrites streams and sets parentCID to the parent's CID;
        entries past the end of the file and overlaps are only reported."""
        if repair:
            self._require_writable()
        if self.writable and not self.problems:
            self.flush()                 # a stream's tables on disk must match memory
        report = CheckReport(self.path)
        surveys = [(ext, *ext.survey(report)) for ext in self.extents if ext.sparse]
        link = self._parent_link()
        stale = link is not None and link[1] != self.descriptor.parent_cid
        if stale:
            report.errors.append(f"parentCID is {self.descriptor.parent_cid:08x} but the parent "
                                 f"{link[0]} has CID {link[1]:08x}: the parent changed after "
                                 f"this image was made (VMware and QEMU refuse the chain)")
        if not repair or report.clean:
            return report
        if any(hard for _, _, hard in surveys):
            report.errors.append("not repaired: entries past the end of the file or "
                                 "overlapping grains need a decision drivebay does not guess")
            return report
        for ext, fixes, _ in surveys:
            before = ext.file
            ext.repair(fixes, report)
            if ext.file is not before:
                self._rebind(before, ext.file)
        if stale:
            self.descriptor.parent_cid = link[1]
            self._write_descriptor()
            report.repaired.append(f"parentCID set to the parent's CID {link[1]:08x}")
        report.errors, report.leaks = [], []
        return report

    def compact(self, progress=None):
        """Rewrite stream-optimized extents without superseded grains; other
        extents are left as they are."""
        self._require_writable()
        self._require_sound()
        streams = [e for e in self.extents if isinstance(e, StreamExtent)]
        if not streams:
            raise UnsupportedOperation(f"{self.path}: only stream-optimized VMDKs are "
                                       f"compacted (their superseded grains are dropped)")
        for i, ext in enumerate(streams):
            self._rebind(ext.rewrite(), ext.file)
            if progress:
                progress(i + 1, len(streams))

    def _rebind(self, old, new):
        """A rewritten stream extent's file replaced ``old``."""
        if self.file is old:
            self.file = new
        self._owned = [new if f is old else f for f in self._owned]

    def _parent_link(self):
        """(path, CID) of the parent found through parentFileNameHint, or None."""
        hint = self.descriptor.parent_hint
        if not hint:
            return None
        where = hint if os.path.isabs(hint) else \
            os.path.join(os.path.dirname(os.path.abspath(self.path)), hint)
        try:
            with VmdkDriver.open(where) as parent:
                if parent.embedded or parent.descriptor_file:
                    return where, parent.descriptor.cid
        except (DrivebayError, OSError):
            return None
        return None

    def set_parent(self, parent_uuid, parent_locator, parent_modification_uuid=None):
        """Link to another parent (its CID is read from the file ``parent_locator``
        names, relative to this image's folder), or to none."""
        self._require_writable()
        self._require_sound()
        desc = self.descriptor
        if any(not e.sparse for e in self.extents):
            raise UnsupportedOperation(f"{self.path}: only sparse VMDKs can have a parent")
        if not (self.embedded or self.descriptor_file):
            raise UnsupportedOperation(f"{self.path}: a sparse extent without a descriptor "
                                       f"cannot record a parent")
        if parent_locator is None and parent_uuid in (None, NULL_UUID):
            desc.parent_cid, desc.parent_hint = vd.NO_PARENT_CID, None
            parent_uuid = parent_modification_uuid = NULL_UUID
        else:
            if not parent_locator:
                raise ChainError(f"{self.path}: a VMDK names its parent by path "
                                 f"(parentFileNameHint); none was given")
            vd.check_quotable(self.path, "parent path", parent_locator)
            desc.parent_hint = parent_locator
            link = self._parent_link()
            if link is None:
                raise ChainError(f"{self.path}: parent {parent_locator!r} is not a VMDK "
                                 f"drivebay can read the CID of")
            desc.parent_cid = link[1]
        if vd.DDB_UUID_IMAGE in desc.ddb:
            desc.ddb[vd.DDB_UUID_PARENT] = str(_as_uuid(parent_uuid or NULL_UUID))
            desc.ddb[vd.DDB_UUID_PARENT_MODIFICATION] = \
                str(_as_uuid(parent_modification_uuid or NULL_UUID))
        self._write_descriptor()
        self._load_ids()

    def info(self):
        desc = self.descriptor
        out = {
            "create_type": desc.create_type,
            "descriptor_version": desc.version,
            "cid": f"{desc.cid:08x}",
            "parent_cid": f"{desc.parent_cid:08x}",
            "adapter_type": desc.ddb.get("ddb.adapterType"),
            "hw_version": desc.ddb.get("ddb.virtualHWVersion"),
            "geometry": desc.geometry(self.path),
            "extents": [{"access": e.line.access, "sectors": e.line.sectors,
                         "type": e.line.type, "file": e.line.filename,
                         "offset": e.line.offset} for e in self.extents],
        }
        sparse = [e for e in self.extents if e.sparse]
        if sparse:
            hdr = sparse[0].hdr
            out.update({"sparse_version": hdr.version, "flags": f"{hdr.flags:#x}",
                        "grain_size": sparse[0].grain, "compressed": sparse[0].compressed,
                        "zeroed_grain_gte": sparse[0].zeroed,
                        "unclean_shutdown": bool(hdr.uncleanShutdown)})
        return out


def _bisect(starts, offset):
    lo, hi = 0, len(starts)
    while lo < hi:
        mid = (lo + hi) // 2
        if starts[mid] <= offset:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1

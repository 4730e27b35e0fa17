"""VMDK hosted sparse extents: the SparseExtentHeader, grain directory and grain tables.

Spec: VMware "Virtual Disk Format 5.0" technical note ("Hosted Sparse
Extents"; field names are the spec's).  The driver (block/vmdk.py) opens a
SparseExtent for each SPARSE extent of a descriptor; block/vmdk_stream.py
builds the stream-optimized extent on it.

Grain table entries: 0 = not allocated here (the parent's data in a
differencing disk, zeros in a base disk); 1 = a zeroed grain when flags bit
2 is set (version 2, "zeroed-grain GTE"); otherwise the grain's sector.
Rules this driver keeps, and why:

* Every GT is allocated when a sparse extent is created (and both copies
  when the redundant GD is used), as VMware and QEMU do: QEMU cannot add a
  GT to an image.  New grains are appended at the end of the file: data
  first, then the GT entry (primary, then redundant), so a crash leaves at
  worst an unreferenced grain or a redundant entry lagging the primary
  (leaks ``check`` reports and repair removes), never an entry pointing at
  unwritten data.  A GT added later (after a resize, or in an image made
  without all its GTs) is written before the redundant GD entry, and that
  before the GD entry.  flush() is the only barrier.
* A zero write in a differencing disk never sets an entry to 0 ("ask the
  parent"; VirtualBox 7.2 lost data that way): it sets the zeroed-grain
  entry when the image has that feature, else allocates a grain that is a
  hole in the host file.  Images are created without the feature (version
  1) unless ``zeroed_grain=True``: it needs version 2, which readers made
  for version 1 refuse, and libvmdk 20260714 reads the entry as sector 1.
"""

import array
import sys

from drivebay.block.bitmap_impl import block_runs, is_zero
from drivebay.block import vmdk_descriptor as vd
from drivebay.block.driver import SECTOR_SIZE, State
from drivebay.errors import (CorruptImageError, FormatError, ImageError, UnsupportedFeatureError,
                             UnsupportedOperation)
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
SPARSE_CAPACITY_MAX = 1 << 32            # sectors: GTEs are u32 sector numbers (2 TiB)

# Limits.  "grainSize ... must be a power of 2 and must be greater than 8 (4KB)";
# drivebay buffers whole grains for copy-on-write, so it caps them at 16 MiB
# (256 times the 64 KiB every known writer uses).
GRAIN_SECTORS_MIN = 8
GRAIN_SECTORS_MAX = 32768
GTES_PER_GT_MAX = 512                    # the spec's value; QEMU refuses larger tables too
TABLE_BYTES_MAX = 256 << 20              # all GTs of an extent, kept in memory once loaded
DESCRIPTOR_SECTORS_MAX = vd.MAX_DESCRIPTOR_BYTES // SECTOR_SIZE
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


# -- per-extent state ----------------------------------------------------------------------

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
        """A new empty GT (and its redundant copy) at the end of the file.  The
        tables are written first, then the redundant GD entry, then the GD
        entry: a crash in between leaves a redundant entry pointing at an empty
        table the GD does not have, which ``check`` reports as a leak (the
        other order would leave a primary table without a redundant copy)."""
        size = self.gt_sectors * SECTOR_SIZE
        at = _align(self.file_end, SECTOR_SIZE)
        copies = 2 if self.rgd is not None else 1
        self.file.truncate(at + copies * size)
        self.file.pwrite(at, bytes(copies * size), "VMDK grain table")
        self.file_end = at + copies * size
        if self.rgd is not None:
            self.rgd[i] = at // SECTOR_SIZE + self.gt_sectors
            self._write_gd_entry(self.hdr.rgdOffset, i, self.rgd)
        self.gd[i] = at // SECTOR_SIZE
        self._write_gd_entry(self.hdr.gdOffset, i, self.gd)
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
        allocated, lagging = 0, []
        for i in range(self.gdes):
            if self.rgd is not None and bool(self.gd[i]) != bool(self.rgd[i]):
                if not self.gd[i] and self._empty_table(self.rgd[i], sectors):
                    lagging.append(f"redundant grain directory entry {i} points at an empty "
                                   f"grain table at sector {self.rgd[i]} the grain directory "
                                   f"does not have (an interrupted table allocation)")
                    fixes.append(("rgd", i))
                else:
                    hard.append(f"grain directory entry {i} is {self.gd[i]} but the redundant "
                                f"grain directory's is {self.rgd[i]}")
            if not self.gd[i]:
                continue
            regions.append((self.gd[i], self.gt_sectors, f"grain table {i}"))
            gt = self.gts.get(i) or self._read_gt(self.gd[i], i)
            if self.rgd is not None and self.rgd[i]:
                regions.append((self.rgd[i], self.gt_sectors, f"redundant grain table {i}"))
                self._survey_redundant(i, gt, sectors, soft, lagging, fixes)
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
        report.leaks.extend(lagging[:MAX_REPORTED_PROBLEMS])
        report.allocated_blocks += allocated
        report.total_blocks += self.grains
        self._survey_leaks(report, regions, sectors, max(end, floor), leaked, fixes)
        return fixes, len(hard)

    def _behind(self, e):
        """True for an entry an allocation may still change (unallocated, or zeroed)."""
        return e == GTE_UNALLOCATED or e == GTE_ZEROED and self.zeroed

    def _empty_table(self, sector, sectors):
        return sector + self.gt_sectors <= sectors and \
            not any(self._read_gt(sector, "(redundant)"))

    def _survey_redundant(self, i, gt, sectors, errors, lagging, fixes):
        """The redundant copy of grain table ``i`` against the primary: entries the
        redundant copy has not got yet are what a crash between the two entry
        writes leaves (the primary is written first): a leak; other differences
        are errors.  Either way repair copies the primary over it."""
        rgt = self._read_gt(self.rgd[i], i) if self.rgd[i] + self.gt_sectors <= sectors else gt
        if rgt == gt:
            return
        differ = [j for j in range(self.gtes) if rgt[j] != gt[j]]
        if all(self._behind(rgt[j]) for j in differ):
            lagging.append(f"redundant grain table {i} lags the primary in {len(differ)} "
                           f"entries (entry {differ[0]}: {rgt[differ[0]]}, primary "
                           f"{gt[differ[0]]}): an interrupted grain allocation")
        else:
            j = next(j for j in differ if not self._behind(rgt[j]))
            errors.append(f"redundant grain table {i} differs from the primary "
                          f"(entry {j}: {rgt[j]}, primary {gt[j]})")
        fixes.append(("rgt", i))

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
            elif fix[0] == "rgd":
                i = fix[1]
                self.rgd[i] = 0
                self._write_gd_entry(self.hdr.rgdOffset, i, self.rgd)
                report.repaired.append(f"cleared redundant grain directory entry {i}")
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



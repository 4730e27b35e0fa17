"""Parallels expandable disk images ("WithoutFreeSpace" v2 and "WithouFreSpacExt").

Spec: "Parallels Expandable Image File Format" (QEMU docs/interop/parallels.txt,
2015), with VirtualBox 7.x behaviour from shared/reference/formats.md.

    0           header, 64 bytes, little-endian (PARALLELS_HEADER)
    64          BAT: nb_bat_entries little-endian u32, one per cluster
    data offset the data area: clusters of ``tracks`` sectors

The two signatures differ in the unit of a BAT entry: sectors for
"WithoutFreeSpace" (the version-2 format VirtualBox reads and creates) and
clusters for "WithouFreSpacExt" (what qemu-img creates; VirtualBox refuses
it).  A zero entry is an unallocated cluster, read as zeros.  Both
signatures are read and written; ``create`` makes "WithoutFreeSpace" unless
``variant="ext"`` is asked for, so ``convert`` turns a QEMU image into one
VirtualBox opens.

What drivebay writes, and why:

* New images get 1 MiB clusters (the spec's "currently, the default size")
  and a data_off aligned to a cluster ("recommended ... for newly created
  images"; required for "WithouFreSpacExt").  VirtualBox ignores data_off
  (its header declares those bytes padding) and follows the BAT entries,
  which is all an image needs to be read.  VirtualBox also takes heads,
  cylinders and tracks for the disk's CHS geometry, which 2048-sector
  "tracks" are not; ``cluster_size=32256`` gives VirtualBox's own layout
  (63-sector clusters).
* A fixed (preallocated) Parallels image is not made: VirtualBox refuses
  too ("cannot create fixed image ... Create a raw image"), so create a raw
  image (``-f raw --variant fixed``) instead.
* in_use: 0x746F6E59 is written when an image is opened read-write, 0 on
  close.  The spec's "closed" value 0x312E3276 is left to software that
  supports the Format Extension; zero says "opened by software without it",
  which is true of drivebay, and is what QEMU writes on close.  A read-write
  open of an image still marked in use is refused (it was not closed
  correctly, as qemu-img says), except by ``check`` (``for_check``), whose
  repair clears the marker.  ``check`` reports the marker as a leak (exit
  3), not as corruption as qemu-img 7.2 does: with the write order below,
  a writer killed at any point leaves at most unused clusters.
* A new cluster goes at the end of the data area: its data is written, then
  its BAT entry.  A process dying in between leaves an unreferenced cluster
  at the end of the file (a leak ``check`` repairs), never an entry pointing
  at unwritten data.  No flush separates the steps: flush() is the barrier.
* Clusters are never freed: write_zeroes and discard punch holes in the
  host file under whole allocated clusters, which then read as zeros.

Rules for reading, from the spec: a BAT entry must point at or past the data
offset and inside the file, and no two clusters may share file space.  An
image breaking them is refused unless opened ``for_check``.  A
"WithoutFreeSpace" data offset of zero means "the end of the BAT, rounded up
to a sector"; clusters there need not be cluster-aligned (VirtualBox starts
them one sector later when the BAT ends on a sector boundary).

Not supported: header versions other than 2; writing an image with a Format
Extension (ext_off non-zero: its dirty bitmaps would go stale), which is
read-only here; the Empty Image flag (bit 0 of flags) is honoured by reading
zeros (QEMU 7.2 ignores it), and such an image is read-only; differencing
images; UUIDs (the format has none); shrinking.
"""

import array
import os
import sys
from dataclasses import dataclass, field

from drivebay.block.bitmap_impl import block_runs, count_allocated, is_zero
from drivebay.block.driver import (SECTOR_SIZE, BlockDriver, CheckReport, Extent, ImageFile,
                                   State)
from drivebay.errors import (CorruptImageError, FormatError, ImageError, UnsupportedFeatureError,
                             UnsupportedOperation)
from drivebay.layout import Layout, Record, align_up, field_error

# -- constants ----------------------------------------------------------------------

MAGIC_V2 = b"WithoutFreeSpace"         # BAT entries in sectors; VirtualBox's format
MAGIC_EXT = b"WithouFreSpacExt"        # BAT entries in clusters; QEMU's, Format Extension capable
MAGIC_NAMES = {MAGIC_V2: "WithoutFreeSpace", MAGIC_EXT: "WithouFreSpacExt"}
HEADER_VERSION = 2                     # "version: Must be 2."

IN_USE_OPEN = 0x746F6E59               # "set ... when the image is opened by software in R/W mode"
IN_USE_CLOSED = 0x312E3276             # "set to 0x312e3276 when the image is closed"
IN_USE_OLD = 0                         # "opened by an old version ... without Format Extension"
IN_USE_VALUES = (IN_USE_OLD, IN_USE_CLOSED, IN_USE_OPEN)   # "Other values are not allowed."
UNCLEAN = (f'image was not closed correctly (header field in_use is {IN_USE_OPEN:#010x}, '
           f'"opened in R/W mode")')

FLAG_EMPTY_IMAGE = 0x1                 # flags bit 0: "the image should be considered clear"

BAT_OFFSET = 64                        # "BAT is placed immediately after the image header"
BAT_FREE = 0                           # "If a BAT entry is zero, the corresponding cluster
                                       # is not allocated and should be considered as filled
                                       # with zeroes"
BAT_ENTRY_MAX = 0xFFFFFFFF             # entries are u32
V2_SECTORS_MAX = 0xFFFFFFFF            # "WithoutFreeSpace": only the low 4 bytes of nb_sectors

DEFAULT_CLUSTER_SIZE = 1 << 20         # the spec's current default (QEMU's too)
# drivebay buffers a whole cluster when it moves one; 256 MiB is 256 times
# the default.  (QEMU refuses tracks above INT32_MAX / 513, about 2 GiB.)
CLUSTER_SIZE_MAX = 256 << 20
# drivebay keeps the BAT in memory: 256 MiB of BAT is 64 Mi clusters, 64 TiB
# at 1 MiB clusters.  (VirtualBox refuses more than 2^30 entries.)
BAT_BYTES_MAX = 256 << 20
GEOMETRY_HEADS, GEOMETRY_SECTORS = 16, 63   # the "heads"/"cylinders" VirtualBox writes
MAX_REPORTED_PROBLEMS = 100            # a hostile BAT could yield millions of messages
BAT_WRITE_GAP = 128                    # rewrite up to a sector of unchanged entries, not seek
COPY_CHUNK = 1 << 20
RUN_FREE, RUN_DATA = 0, 2              # kinds block_runs returns (both sentinels are BAT_FREE)

assert array.array("I").itemsize == 4
_BIG_ENDIAN_HOST = sys.byteorder == "big"

# -- on-disk layout -------------------------------------------------------------------

PARALLELS_HEADER = Layout("Parallels header", "<", [
    ("magic", "16s"),
    ("version", "I"),
    ("heads", "I"),                    # guest geometry, unused at image level
    ("cylinders", "I"),
    ("tracks", "I"),                   # cluster size, in sectors
    ("nb_bat_entries", "I"),           # disk size in clusters (BAT size)
    ("nb_sectors", "Q"),               # disk size in sectors (v2: low 4 bytes only)
    ("in_use", "I"),
    ("data_off", "I"),                 # sectors; 0 in v2: end of the BAT, sector-aligned
    ("flags", "I"),
    ("ext_off", "Q"),                  # sectors; the Format Extension cluster, 0 if none
], size=BAT_OFFSET)

PARALLELS_HEADER.assert_offsets({"version": 16, "heads": 20, "cylinders": 24, "tracks": 28,
                       "nb_bat_entries": 32, "nb_sectors": 36, "in_use": 44, "data_off": 48,
                       "flags": 52, "ext_off": 56})


def _bad(exc, path, name, value, expected):
    return field_error(exc, path, "Parallels header", name, value, expected)


def read_header(f):
    """The header of the Parallels file ``f``, every field checked against its limit
    before the BAT is read."""
    path, size = f.path, f.size()
    if size < PARALLELS_HEADER.size:
        raise FormatError(f"{path}: not a Parallels image: {size} bytes, shorter than the "
                          f"{PARALLELS_HEADER.size}-byte Parallels header")
    hdr = PARALLELS_HEADER.unpack(f.pread(0, PARALLELS_HEADER.size, "Parallels header"))
    if hdr.magic not in MAGIC_NAMES:
        raise _bad(FormatError, path, "magic", repr(hdr.magic),
                   '"WithoutFreeSpace" or "WithouFreSpacExt" (not a Parallels image)')
    if hdr.version != HEADER_VERSION:
        raise _bad(UnsupportedFeatureError, path, "version", hdr.version,
                   f"{HEADER_VERSION}, the only version of the Parallels expandable format "
                   f"drivebay reads")
    if hdr.tracks == 0:
        raise _bad(CorruptImageError, path, "tracks", 0,
                   "the cluster size in sectors, at least 1")
    cluster = hdr.tracks * SECTOR_SIZE
    if cluster > CLUSTER_SIZE_MAX:
        raise _bad(UnsupportedFeatureError, path, "tracks", hdr.tracks,
                   f"at most {CLUSTER_SIZE_MAX // SECTOR_SIZE} sectors ({CLUSTER_SIZE_MAX}-byte "
                   f"clusters, drivebay's limit)")
    n = hdr.nb_bat_entries
    if 4 * n > BAT_BYTES_MAX:
        raise _bad(UnsupportedFeatureError, path, "nb_bat_entries", n,
                   f"at most {BAT_BYTES_MAX // 4} (drivebay keeps the {4 * n}-byte BAT in memory)")
    bat_end = BAT_OFFSET + 4 * n
    if bat_end > size:
        raise _bad(CorruptImageError, path, "nb_bat_entries", n,
                   f"a BAT inside the {size}-byte file; {n} entries end at {bat_end}")
    sectors = disk_sectors(hdr)
    if sectors > n * hdr.tracks:
        raise _bad(CorruptImageError, path, "nb_sectors", sectors,
                   f"at most nb_bat_entries {n} x tracks {hdr.tracks} = {n * hdr.tracks} "
                   f"(the sectors the BAT maps)")
    ext = hdr.magic == MAGIC_EXT
    if ext and (hdr.data_off == 0 or hdr.data_off % hdr.tracks):
        raise _bad(CorruptImageError, path, "data_off", hdr.data_off,
                   f'a non-zero multiple of tracks ({hdr.tracks}): "WithouFreSpacExt" '
                   f'images align the data area to a cluster')
    if hdr.data_off:
        if hdr.data_off * SECTOR_SIZE < bat_end:
            raise _bad(CorruptImageError, path, "data_off", hdr.data_off,
                       f"at least {-(-bat_end // SECTOR_SIZE)} sectors (past the BAT, which "
                       f"ends at byte {bat_end})")
        if hdr.data_off * SECTOR_SIZE > size:
            raise _bad(CorruptImageError, path, "data_off", hdr.data_off,
                       f"a sector inside the {size}-byte file")
    if hdr.ext_off:
        start = data_start(hdr)
        where = hdr.ext_off * SECTOR_SIZE
        if where < start or where >= size or ext and hdr.ext_off % hdr.tracks:
            raise _bad(CorruptImageError, path, "ext_off", hdr.ext_off,
                       f"a cluster of the data area (sector {start // SECTOR_SIZE} up to the "
                       f"end of the {size}-byte file" + (", cluster-aligned)" if ext else ")"))
    return hdr


def disk_sectors(hdr):
    """The disk size in sectors: "WithoutFreeSpace" uses only the low 4 bytes
    of nb_sectors (VirtualBox reads a u32 there, QEMU masks)."""
    return hdr.nb_sectors & V2_SECTORS_MAX if hdr.magic == MAGIC_V2 else hdr.nb_sectors


def data_start(hdr):
    """Byte offset of the data area: data_off, or in a v2 image with data_off 0
    "the end of BAT table plus some padding to ensure sector size alignment"."""
    if hdr.data_off:
        return hdr.data_off * SECTOR_SIZE
    return align_up(BAT_OFFSET + 4 * hdr.nb_bat_entries, SECTOR_SIZE)


def _cylinders(sectors):
    return min(sectors // (GEOMETRY_HEADS * GEOMETRY_SECTORS), 0xFFFFFFFF)


# -- per-image state ---------------------------------------------------------------

@dataclass
class ParallelsState:
    """An open Parallels image: its header as stored and its BAT, in memory."""
    path: str
    header: Record
    bat: array.array                     # one u32 entry per cluster
    data_end: int = 0                    # first byte past every referenced cluster
    problems: list = field(default_factory=list)     # BAT corruption (check-mode open)
    header_notes: list = field(default_factory=list)  # header faults that do not stop reads
    in_use_at_open: int = 0              # the in_use field as found
    unclean: bool = False                # in_use said "open" (or an unknown value) at open
    unclean_note: str | None = None      # in_use said "open": reported by check as a leak
    marked: bool = False                 # this open wrote IN_USE_OPEN

    @property
    def cluster_size(self):
        return self.header.tracks * SECTOR_SIZE

    @property
    def unit(self):
        """Bytes per BAT unit: a sector in v2, a cluster in "WithouFreSpacExt"."""
        return self.cluster_size if self.header.magic == MAGIC_EXT else SECTOR_SIZE

    @property
    def data_start(self):
        return data_start(self.header)

    def host(self, cluster):
        return self.bat[cluster] * self.unit


@dataclass
class BatSurvey:
    """What the BAT says about the file (see ``survey``)."""
    problems: list                       # messages
    outside: list                        # clusters whose entry points outside the data area/file
    shared: list                         # clusters sharing file space with an earlier cluster
    data_end: int
    leaks: list                          # (start, end) byte ranges no cluster uses


# -- operations --------------------------------------------------------------------

def load_bat(f, hdr):
    bat = array.array("I")
    bat.frombytes(f.pread(BAT_OFFSET, 4 * hdr.nb_bat_entries, "Parallels BAT"))
    if _BIG_ENDIAN_HOST:
        bat.byteswap()
    return bat


def _clusters(st):
    """``(host_start, first_cluster, count)`` for each run of clusters adjacent
    in the file (per cluster where entries are in sectors)."""
    bat, cs, unit = st.bat, st.cluster_size, st.unit
    for start, count, kind in block_runs(bat, 0, len(bat), BAT_FREE, BAT_FREE):
        if kind != RUN_DATA:
            continue
        if unit == cs:
            yield bat[start] * unit, start, count
        else:
            for c in range(start, start + count):
                yield bat[c] * unit, c, 1


def survey(st, file_size):
    """Every allocated cluster against the data area, the file and each other.

    Runs of clusters adjacent in the file are checked as intervals, so a
    well-formed BAT costs a handful of comparisons per run."""
    hdr, cs = st.header, st.cluster_size
    start = st.data_start
    problems, outside, shared = [], [], []
    spans = []                           # (host, end, first cluster or None for ext_off)
    for host, first, count in _clusters(st):
        end = host + count * cs
        if host < start:
            bad = range(first, first + min(count, -(-(start - host) // cs)))
            outside.extend(bad)
            problems.append(f"BAT entry for cluster {first} is {st.bat[first]}: offset {host} "
                            f"lies before the data area (which starts at {start})")
        if end > file_size and host + (count - 1) * cs >= file_size:
            k = max(0, -(-(file_size - host) // cs))
            outside.extend(range(first + k, first + count))
            problems.append(f"BAT entry for cluster {first + k} is {st.bat[first + k]}: offset "
                            f"{host + k * cs} lies past the end of the {file_size}-byte file")
        spans.append((host, end, first))
    if hdr.ext_off:
        e = hdr.ext_off * SECTOR_SIZE
        spans.append((e, e + cs, None))
    spans.sort(key=lambda s: (s[0], s[1]))
    reach, owner, leaks = start, None, []
    for host, end, first in spans:
        if host < reach and owner is not None:
            what = "the Format Extension cluster (ext_off)" if first is None \
                else f"cluster {first}"
            problems.append(f"{what} at offset {host} shares file space with "
                            f"{owner} (which ends at {reach})")
            if first is not None:
                shared.extend(range(first, first + -(-(min(end, reach) - host) // cs)))
        elif host - reach >= cs:
            # Gaps of at least a cluster are leaks (an interrupted allocation
            # leaves one); smaller ones are alignment padding.
            leaks.append((reach, host))
        if end > reach:
            reach = end
            owner = "the Format Extension cluster" if first is None else \
                f"cluster {first + (end - host) // cs - 1}"
    if file_size > reach:
        leaks.append((reach, file_size))
    if len(problems) > MAX_REPORTED_PROBLEMS:
        more = len(problems) - MAX_REPORTED_PROBLEMS
        problems = problems[:MAX_REPORTED_PROBLEMS] + [f"... and {more} more BAT problems"]
    return BatSurvey(problems, sorted(set(outside)), sorted(set(shared) - set(outside)),
                     max(start, reach), leaks)


def unclean_note(hdr):
    """What ``check`` says of an image left marked open read-write, or None.

    drivebay writes a new cluster's data before its BAT entry and moves
    nothing in place, so a writer that died with the image open left at most
    unused clusters at the end of the file: a leak (exit 3), not corruption.
    (qemu-img 7.2 counts the marker as an error; both refuse a read-write
    open until a repair clears it.)"""
    if hdr.in_use != IN_USE_OPEN:
        return None
    return f"{UNCLEAN}: an interrupted allocation leaves at most unused clusters at the end " \
           f"of the file"



def header_notes(hdr):
    """Header faults that leave the data readable: errors ``check`` reports."""
    notes = []
    if hdr.in_use not in IN_USE_VALUES:
        notes.append(f"header field in_use is {hdr.in_use:#010x}; expected 0, "
                     f"{IN_USE_CLOSED:#010x} (closed) or {IN_USE_OPEN:#010x} (open)")
    if hdr.magic == MAGIC_V2 and hdr.nb_sectors > V2_SECTORS_MAX:
        notes.append(f"header field nb_sectors is {hdr.nb_sectors:#x}: a \"WithoutFreeSpace\" "
                     f"image must clear its high 4 bytes (the low ones are used)")
    return notes


def write_header(f, st):
    f.pwrite(0, PARALLELS_HEADER.pack(st.header), "Parallels header")


def write_bat_range(f, st, lo, hi):
    part = st.bat[lo:hi]
    if _BIG_ENDIAN_HOST:
        part.byteswap()
    f.pwrite(BAT_OFFSET + 4 * lo, part.tobytes(), "Parallels BAT")


def write_bat_entries(f, st, changed):
    """Write the entries of the clusters in ``changed``, nearby ones in one write."""
    if not changed:
        return
    order = sorted(set(changed))
    lo = prev = order[0]
    for c in order[1:]:
        if c - prev > BAT_WRITE_GAP:
            write_bat_range(f, st, lo, prev + 1)
            lo = c
        prev = c
    write_bat_range(f, st, lo, prev + 1)


def _entry_for(st, host):
    """The BAT entry for a cluster at byte ``host``, or an error when a u32 cannot say it."""
    entry = host // st.unit
    if entry > BAT_ENTRY_MAX:
        unit = "sectors" if st.unit == SECTOR_SIZE else "clusters"
        raise ImageError(f"{st.path}: a cluster at file offset {host} cannot be recorded: "
                         f"BAT entries are u32 {unit} (the file is full)")
    return entry


def reserve_clusters(f, st, count):
    """Room for ``count`` new zero clusters at the end of the data area; returns
    its offset.  Bytes past ``data_end`` belong to no cluster (a leak) and
    are dropped first, so the new clusters read as zeros."""
    at = st.data_end
    _entry_for(st, at + (count - 1) * st.cluster_size)
    if f.size() > at:
        f.truncate(at)
    f.truncate(at + count * st.cluster_size)
    return at


def append_clusters(f, st, new):
    """Allocate a cluster for each ``(cluster, offset_in_cluster, data)`` of ``new``.

    Data first, then the BAT entries (see the module docstring)."""
    if not new:
        return
    cs = st.cluster_size
    at = reserve_clusters(f, st, len(new))
    for i, (_, inside, data) in enumerate(new):
        f.pwrite(at + i * cs + inside, data, "Parallels cluster")
    st.data_end = at + len(new) * cs
    for i, (cluster, _, _) in enumerate(new):
        st.bat[cluster] = _entry_for(st, at + i * cs)
    write_bat_entries(f, st, [c for c, _, _ in new])


def copy_cluster(f, st, src, dst):
    cs = st.cluster_size
    for at in range(0, cs, COPY_CHUNK):
        n = min(COPY_CHUNK, cs - at)
        buf = bytearray(n)
        f.preadinto(src + at, buf, "Parallels cluster")
        f.pwrite(dst + at, buf, "Parallels cluster")


def move_clusters(f, st, clusters):
    """Give each cluster of ``clusters`` a copy of its data in a new cluster at
    the end of the data area; each entry is switched after its copy is written."""
    if not clusters:
        return
    cs = st.cluster_size
    at = reserve_clusters(f, st, len(clusters))
    for i, c in enumerate(clusters):
        copy_cluster(f, st, st.host(c), at + i * cs)
    st.data_end = at + len(clusters) * cs
    for i, c in enumerate(clusters):
        st.bat[c] = _entry_for(st, at + i * cs)
    write_bat_entries(f, st, clusters)


def pack_clusters(f, st):
    """Move the last clusters into gaps of at least a cluster below them, then
    truncate the file after the last cluster.  Each copy goes to space no
    cluster uses before its entry is switched.  Returns the clusters moved."""
    cs, start = st.cluster_size, st.data_start
    order = sorted((st.host(c), c) for c in range(len(st.bat)) if st.bat[c] != BAT_FREE)
    slots, pos = [], start
    for host, _ in order:
        while host - pos >= cs:
            slots.append(pos)
            pos += cs
        pos = max(pos, host + cs)
    moved = 0
    for host, c in reversed(order):
        if moved == len(slots) or slots[moved] >= host:
            break
        copy_cluster(f, st, host, slots[moved])
        st.bat[c] = _entry_for(st, slots[moved])
        write_bat_entries(f, st, [c])
        moved += 1
    ends = [st.host(c) + cs for c in range(len(st.bat)) if st.bat[c] != BAT_FREE]
    st.data_end = max([start] + ends)
    f.truncate(st.data_end)
    return moved


def new_header(magic, size, cluster_size, entries, data_off_sectors):
    sectors = size // SECTOR_SIZE
    return PARALLELS_HEADER.defaults(
        magic=magic, version=HEADER_VERSION, heads=GEOMETRY_HEADS,
        cylinders=_cylinders(sectors), tracks=cluster_size // SECTOR_SIZE,
        nb_bat_entries=entries, nb_sectors=sectors, in_use=IN_USE_OLD,
        data_off=data_off_sectors, flags=0, ext_off=0)


# -- the driver ----------------------------------------------------------------------

class ParallelsDriver(BlockDriver):
    format_name = "parallels"
    description = 'Parallels expandable disk (v2 "WithoutFreeSpace"; "WithouFreSpacExt" too)'
    create_variants = ("dynamic", "ext")
    resizable = True

    def __init__(self, file, writable):
        super().__init__(file, writable)
        self.state = None

    # -- class level --------------------------------------------------------------

    @classmethod
    def probe(cls, head, tail, file_size):
        # The signature alone decides: an image with another version is still
        # Parallels, and open says which version it cannot read.
        return 100 if head[:16] in MAGIC_NAMES else 0

    @classmethod
    def create(cls, path, size=None, variant=None, uuid=None, parent=None,
               cluster_size=DEFAULT_CLUSTER_SIZE, **options):
        """Create an expanding image: "WithoutFreeSpace" (``variant`` "dynamic",
        the default) or "WithouFreSpacExt" (``variant`` "ext").

        There is no fixed variant: VirtualBox refuses one too and asks for a
        raw image, which is what a preallocated disk without metadata is.
        ``uuid`` is ignored: Parallels images store none."""
        path = os.fspath(path)
        if options:
            raise ImageError(f"{path}: unknown Parallels creation options: "
                             f"{', '.join(sorted(options))} (known: cluster_size)")
        variant = variant or "dynamic"
        if variant == "fixed":
            raise ImageError(f"{path}: Parallels images are expanding only; for a fixed "
                             f"(preallocated) disk create a raw image (-f raw --variant fixed), "
                             f"as VirtualBox asks")
        if variant not in cls.create_variants:
            raise ImageError(f"{path}: Parallels variant {variant!r} unknown (known: dynamic "
                             f'= v2 "WithoutFreeSpace", ext = "WithouFreSpacExt")')
        if parent is not None:
            raise ImageError(f"{path}: Parallels images cannot have a parent")
        if size is None or size <= 0 or size % SECTOR_SIZE:
            raise ImageError(f"{path}: Parallels disk size {size} must be a positive multiple "
                             f"of {SECTOR_SIZE} bytes")
        if cluster_size % SECTOR_SIZE or not SECTOR_SIZE <= cluster_size <= CLUSTER_SIZE_MAX:
            raise ImageError(f"{path}: Parallels cluster size {cluster_size} must be a multiple "
                             f"of {SECTOR_SIZE} from {SECTOR_SIZE} to {CLUSTER_SIZE_MAX}")
        magic = MAGIC_EXT if variant == "ext" else MAGIC_V2
        if magic == MAGIC_V2 and size // SECTOR_SIZE > V2_SECTORS_MAX:
            raise ImageError(f'{path}: {size} bytes is too large for a "WithoutFreeSpace" '
                             f"image (nb_sectors holds {V2_SECTORS_MAX} sectors): use --variant "
                             f"ext")
        entries = -(-size // cluster_size)
        if 4 * entries > BAT_BYTES_MAX:
            raise ImageError(f"{path}: {size} bytes in {cluster_size}-byte clusters needs "
                             f"{entries} BAT entries; at most {BAT_BYTES_MAX // 4} are supported")
        data_off = align_up(BAT_OFFSET + 4 * entries, cluster_size)
        hdr = new_header(magic, size, cluster_size, entries, data_off // SECTOR_SIZE)
        f = ImageFile(path, writable=True, create=True)
        try:
            f.truncate(data_off)                       # an all-zero BAT
            f.pwrite(0, PARALLELS_HEADER.pack(hdr), "Parallels header")   # last
        except BaseException:
            f.close()
            os.unlink(path)
            raise
        f.close()

    # -- open, metadata -------------------------------------------------------------

    def _open(self):
        f = self.file
        hdr = read_header(f)
        st = ParallelsState(self.path, hdr, load_bat(f, hdr))
        if hdr.flags & FLAG_EMPTY_IMAGE:
            st.bat = array.array("I", bytes(4 * hdr.nb_bat_entries))
        found = survey(st, f.size())
        if found.problems and not self.for_check:
            more = f" (and {len(found.problems) - 1} more)" if len(found.problems) > 1 else ""
            raise CorruptImageError(f"{self.path}: {found.problems[0]}{more}; "
                                    f"'drivebay img check -r all' can repair it")
        st.problems = found.problems
        st.data_end = found.data_end
        st.header_notes = header_notes(hdr)
        st.unclean_note = unclean_note(hdr)
        st.in_use_at_open = hdr.in_use
        st.unclean = hdr.in_use not in (IN_USE_OLD, IN_USE_CLOSED)
        self.state = st
        self.size = disk_sectors(hdr) * SECTOR_SIZE
        self.cluster_size = st.cluster_size
        self.variant = "ext" if hdr.magic == MAGIC_EXT else "dynamic"
        if self.writable:
            self._mark_in_use()

    def _mark_in_use(self):
        st, hdr = self.state, self.state.header
        if hdr.ext_off:
            raise UnsupportedFeatureError(
                f"{self.path}: the image has a Format Extension (header field ext_off is "
                f"{hdr.ext_off}) whose dirty bitmaps drivebay does not update: open it "
                f"read-only or convert it")
        if hdr.flags & FLAG_EMPTY_IMAGE:
            raise UnsupportedFeatureError(
                f"{self.path}: header field flags has bit 0 (Empty Image) set: the image reads "
                f"as zeros and drivebay opens it read-only")
        if st.unclean and not self.for_check:
            note = UNCLEAN if st.unclean_note else st.header_notes[0]
            raise CorruptImageError(f"{self.path}: {note}; it cannot be opened "
                                    f"read/write until 'drivebay img check -r all' repairs it")
        hdr.in_use = IN_USE_OPEN
        write_header(self.file, st)
        st.marked = True

    def close(self):
        st = self.state
        try:
            if st is not None and st.marked and self.file.fd >= 0:
                # An unclean image stays so until check repairs it (for_check opens).
                st.header.in_use = st.in_use_at_open if st.unclean else IN_USE_OLD
                write_header(self.file, st)
                st.marked = False
        finally:
            super().close()

    @property
    def is_ext(self):
        return self.state.header.magic == MAGIC_EXT

    def _require_sound(self):
        if self.state.problems:
            raise CorruptImageError(f"{self.path}: refusing to write: {self.state.problems[0]}")

    def _prepare_write(self, offset, length):
        self._require_writable()
        self.check_range(offset, length)
        self._require_sound()
        return length > 0

    # -- data path ------------------------------------------------------------------

    def _runs(self, offset, length):
        """``(lo, hi, first_cluster, count, kind)`` for the clusters under a byte range."""
        cs, end = self.cluster_size, offset + length
        c0 = offset // cs
        for start, count, kind in block_runs(self.state.bat, c0, (end - 1) // cs - c0 + 1,
                                             BAT_FREE, BAT_FREE):
            yield max(offset, start * cs), min(end, (start + count) * cs), start, count, kind

    def _pieces(self, lo, hi, start, count):
        """``(a, z, host)`` of the allocated clusters ``start..start+count`` under
        [lo, hi), one piece per stretch adjacent in the file."""
        st, cs = self.state, self.cluster_size
        step = count if st.unit == cs else 1
        out = []
        for c in range(start, start + count, step):
            a, z = max(lo, c * cs), min(hi, (c + step) * cs)
            host = st.host(c) + a - c * cs
            if out and out[-1][1] == a and out[-1][2] + (a - out[-1][0]) == host:
                out[-1] = (out[-1][0], z, out[-1][2])
            else:
                out.append((a, z, host))
        return out

    def block_status(self, offset, length):
        self.check_range(offset, length)
        if not length:
            return []
        out = []
        for lo, hi, start, count, kind in self._runs(offset, length):
            if kind == RUN_FREE:
                out.append(Extent(lo, hi - lo, State.UNALLOCATED))
                continue
            for a, z, host in self._pieces(lo, hi, start, count):
                last = out[-1] if out else None
                if last and last.state is State.DATA and \
                        last.host_offset + last.length == host:    # v2 runs are per cluster
                    out[-1] = last._replace(length=last.length + z - a)
                else:
                    out.append(Extent(a, z - a, State.DATA, host))
        return out

    def write(self, offset, data):
        view = memoryview(data).cast("B")
        if not self._prepare_write(offset, len(view)):
            return
        f, cs = self.file, self.cluster_size
        new = []
        for lo, hi, start, count, kind in self._runs(offset, len(view)):
            if kind == RUN_DATA:
                for a, z, host in self._pieces(lo, hi, start, count):
                    f.pwrite(host, view[a - offset:z - offset], "Parallels cluster")
                continue
            for c in range(start, start + count):
                a, z = max(lo, c * cs), min(hi, (c + 1) * cs)
                part = view[a - offset:z - offset]
                if not is_zero(part):            # an unallocated cluster already reads zeros
                    new.append((c, a - c * cs, part))
        append_clusters(f, self.state, new)

    def _zero_allocated(self, offset, length, partial):
        """Zero the allocated parts of a range: holes punched under whole
        clusters (the disk's last cluster counts as whole up to the disk's
        end), and zeros written over partial ones when ``partial``."""
        f, cs = self.file, self.cluster_size
        for lo, hi, start, count, kind in self._runs(offset, length):
            if kind != RUN_DATA:
                continue
            for a, z, host in self._pieces(lo, hi, start, count):
                first = align_up(a, cs)
                last = z if z == self.size else z // cs * cs
                if first < last:
                    f.punch_hole(host + first - a, last - first)
                    rest = ((a, first), (last, z))
                else:
                    rest = ((a, z),)
                if not partial:
                    continue
                for p, q in rest:
                    for at in range(p, q, COPY_CHUNK):
                        n = min(COPY_CHUNK, q - at)
                        f.pwrite(host + at - a, bytes(n), "Parallels cluster")

    def write_zeroes(self, offset, length):
        """Make the range read as zeros; unallocated clusters already do."""
        if self._prepare_write(offset, length):
            self._zero_allocated(offset, length, partial=True)

    def discard(self, offset, length):
        """Whole allocated clusters in the range read as zeros afterwards (their
        host space is punched out); partial clusters are unchanged."""
        if self._prepare_write(offset, length):
            self._zero_allocated(offset, length, partial=False)

    # -- image maintenance --------------------------------------------------------------

    def resize(self, new_size):
        """Grow the disk to ``new_size`` bytes (a multiple of 512); shrinking is refused.

        When the larger BAT would reach into the data area, the clusters in
        its way move to the end of the file first; the header, written last,
        switches to the new BAT and data offset."""
        self._require_writable()
        self._require_sound()
        if new_size < self.size:
            raise UnsupportedOperation(f"{self.path}: shrinking a Parallels image ({self.size} "
                                       f"to {new_size} bytes) is not supported")
        if new_size % SECTOR_SIZE:
            raise ImageError(f"{self.path}: new size {new_size} is not a multiple of "
                             f"{SECTOR_SIZE} bytes")
        if new_size == self.size:
            return
        f, st, cs = self.file, self.state, self.cluster_size
        hdr = st.header
        if not self.is_ext and new_size // SECTOR_SIZE > V2_SECTORS_MAX:
            raise ImageError(f'{self.path}: {new_size} bytes is too large for a '
                             f'"WithoutFreeSpace" image (at most {V2_SECTORS_MAX} sectors): '
                             f'convert it to --variant ext first')
        old_n = hdr.nb_bat_entries
        n = max(old_n, -(-new_size // cs))
        if 4 * n > BAT_BYTES_MAX:
            raise ImageError(f"{self.path}: {new_size} bytes needs {n} clusters; at most "
                             f"{BAT_BYTES_MAX // 4} are supported")
        last = (self.size - 1) // cs
        if self.size % cs and st.bat[last] != BAT_FREE:
            # Bytes past the old end were never part of the disk: make them zeros.
            z = min(new_size, (last + 1) * cs)
            f.pwrite(st.host(last) + self.size - last * cs, bytes(z - self.size),
                     "Parallels cluster")
        if n > old_n:
            bat_end = BAT_OFFSET + 4 * n
            aligned = self.is_ext or hdr.data_off
            start = align_up(bat_end, cs if aligned else SECTOR_SIZE)
            st.data_end = max(st.data_end, start)
            move_clusters(f, st, [c for c in range(old_n)
                                  if st.bat[c] != BAT_FREE and st.host(c) < start])
            f.pwrite(BAT_OFFSET + 4 * old_n, bytes(4 * (n - old_n)), "Parallels BAT")
            if f.size() < start:
                f.truncate(start)
            st.bat.extend(array.array("I", bytes(4 * (n - old_n))))
            hdr.nb_bat_entries = n
            if hdr.data_off:
                hdr.data_off = start // SECTOR_SIZE
        hdr.nb_sectors = new_size // SECTOR_SIZE
        hdr.cylinders = _cylinders(hdr.nb_sectors)
        write_header(f, st)
        self.size = new_size

    def check(self, repair=False):
        """The BAT against the file: entries before the data area or past the
        end of the file, clusters sharing file space, unused space (leaks), and
        the header's in_use marker.

        ``repair`` clears entries pointing outside the data area (past the end
        of the file they read zeros already; before the data area they read
        the header and BAT, never a guest's data), gives each cluster sharing
        space its own copy of the data it reads now, clears the marker and
        the high bytes of a v2 nb_sectors, moves the last clusters into gaps
        and truncates the file after the last cluster."""
        if repair:
            self._require_writable()
        f, st = self.file, self.state
        hdr = st.header
        found = survey(st, f.size())
        report = CheckReport(self.path, total_blocks=hdr.nb_bat_entries,
                             allocated_blocks=count_allocated(st.bat, BAT_FREE, BAT_FREE))
        report.errors.extend(found.problems)
        report.errors.extend(st.header_notes)
        if st.unclean_note:
            report.leaks.append(st.unclean_note)
        if not hdr.ext_off:
            for a, z in found.leaks:
                report.leaks.append(f"bytes {a}..{z} of the file belong to no cluster")
        elif found.leaks:
            report.leaks.append(f"not examined: space past the clusters may hold the "
                                f"Format Extension's bitmaps (ext_off {hdr.ext_off})")
        if not repair or report.clean:
            return report
        if hdr.ext_off:
            report.errors.append("not repaired: images with a Format Extension are read-only here")
            return report
        if found.outside:
            for c in found.outside:
                st.bat[c] = BAT_FREE
            write_bat_entries(f, st, found.outside)
            report.repaired.append(f"cleared {len(found.outside)} BAT entries pointing outside "
                                   f"the data area or the file")
            st.data_end = survey(st, f.size()).data_end
        if found.shared:
            move_clusters(f, st, found.shared)
            report.repaired.append(f"gave {len(found.shared)} clusters sharing file space a "
                                   f"copy of their data of their own")
        if st.header_notes or st.unclean_note:
            hdr.nb_sectors = disk_sectors(hdr)
            hdr.in_use = IN_USE_OPEN             # this open's marker; close writes 0
            write_header(f, st)
            report.repaired.append("header fields in_use and nb_sectors rewritten")
        moved = pack_clusters(f, st)
        report.repaired.append(f"moved {moved} clusters into unused space and truncated the "
                               f"file at {st.data_end}")
        st.problems, st.header_notes, st.unclean, st.unclean_note = [], [], False, None
        report.errors, report.leaks = [], []
        return report

    def info(self):
        st = self.state
        hdr = st.header
        name = MAGIC_NAMES[hdr.magic]
        out = {
            "version": f"parallels v{hdr.version} ({name})",
            "signature": name,
            "bat_unit": "sectors" if hdr.magic == MAGIC_V2 else "clusters",
            "cluster_size": st.cluster_size,
            "bat_entries": hdr.nb_bat_entries,
            "allocated_clusters": count_allocated(st.bat, BAT_FREE, BAT_FREE),
            "data_off": hdr.data_off,
            "data_start": st.data_start,
            "geometry": f"{hdr.cylinders}/{hdr.heads}/{hdr.tracks}",
            "in_use": f"{st.in_use_at_open:#010x}" + (" (not closed correctly)" if st.unclean
                                                       else ""),
            "flags": hdr.flags,
            "ext_off": hdr.ext_off,
        }
        notes = list(st.problems) + list(st.header_notes) + \
            ([st.unclean_note] if st.unclean_note else [])
        if notes:
            out["problems"] = notes
        return out

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

Rules this driver keeps, and why:

* The CID changes on the first change of content after each open, as
  VMware and VirtualBox do, and so does ddb.uuid.modification when present.
  A child records its parent's CID (parentCID); when the parent changes
  later, VMware and QEMU refuse the child.  drivebay reads such a chain
  (it links by UUID and parentFileNameHint), and ``check`` reports the
  stale parentCID and repairs it.

The hosted sparse extent (header, grain directory and tables) is
block/vmdk_sparse.py; the stream-optimized extent is block/vmdk_stream.py.

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

import errno
import os
import uuid as uuidlib

from drivebay.block import vmdk_descriptor as vd
from drivebay.block.vmdk_descriptor import create_raw_disk  # noqa: F401 (part of the API)
from drivebay.block.driver import (NULL_UUID, SECTOR_SIZE, BlockDriver, CheckReport, Extent,
                                   ImageFile, State)
from drivebay.block.vmdk_sparse import (
    COPY_CHUNK, COWD_MAGICNUMBER, DEFAULT_GRAIN_SECTORS, FLAG_MARKERS, GRAIN_SECTORS_MAX,
    GRAIN_SECTORS_MIN, SPARSE_CAPACITY_MAX, SPARSE_MAGICNUMBER, SparseExtent, _write_embedded,
    read_header, write_sparse_extent)
from drivebay.block.vmdk_stream import StreamExtent, write_stream_extent
from drivebay.errors import (ChainError, CorruptImageError, DrivebayError, FormatError,
                             ImageError, UnsupportedFeatureError, UnsupportedOperation)

# -- constants -----------------------------------------------------------------------------

SPLIT_EXTENT_SECTORS = 4192256           # 2047 MiB: VMware's twoGbMaxExtent extents
DEFAULT_HW_VERSION = vd.DEFAULT_HW_VERSION

VARIANTS = {"dynamic": "monolithicSparse", "fixed": "monolithicFlat",
            "split2g": "twoGbMaxExtentSparse", "split2g-fixed": "twoGbMaxExtentFlat",
            "stream": "streamOptimized"}


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
        entries past the end of the file and overlaps are only reported, and
        unused space inside a file stays a leak."""
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
        # What is left: space inside a file no grain uses stays a leak (grains
        # are not moved), so the image is surveyed again rather than called clean.
        after = self.check()
        after.repaired = report.repaired
        return after

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

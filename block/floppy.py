"""Floppy disk images: raw sectors in the standard PC diskette sizes.

A floppy image is the diskette's sectors in order (cylinder, head, sector),
512 bytes each, with no metadata: the raw driver's data path with the size
rules of a diskette.  The PC diskette formats (their geometry and the BPB
values MS-DOS FORMAT writes on them) are the rows of FLOPPY_FORMATS;
``geometry`` gives the floppy controller a disk's cylinders, heads and
sectors per track.

* Creation makes one of the standard sizes, blank (zeros: an unformatted
  diskette) or formatted FAT12 (block/fat12.py), and refuses other sizes.
* Opening accepts any whole number of sectors up to 4 030 464 bytes, the
  largest floppy image VirtualBox accepts (shared/reference/formats.md), so
  images of other formats (DMF, 1.72M) are served too; their geometry comes
  from the table or, failing that, from a FAT BPB in sector 0 whose
  geometry multiplies out to the image's size, else it is None.
* Probing: a file exactly one of the five standard sizes scores 10, above
  raw (1) and below every format with a signature (ISO 80, the hard-disk
  formats 100).  Any other size scores 0: a raw image that happens to be
  small is not taken for a diskette.  Open those with format "floppy".
* A diskette has a fixed size: ``resize`` is refused.

Creation variants are "blank" and "fat12"; ``fixed_sizes`` lists the only
sizes a diskette can be created in (generic tests that create images of
arbitrary sizes leave such formats out).
"""

import os
from typing import NamedTuple

from drivebay.block import fat12
from drivebay.block.driver import SECTOR_SIZE, ImageFile
from drivebay.block.raw import RawDriver
from drivebay.errors import FormatError, ImageError, UnsupportedOperation

# The largest floppy image VirtualBox accepts (2.88M media with 82 cylinders
# of 48 sectors on 2 heads); anything larger is not a diskette.
MAX_FLOPPY_IMAGE_SIZE = 4_030_464
PROBE_SCORE = 10


class FloppyGeometry(NamedTuple):
    cylinders: int
    heads: int
    sectors: int                       # per track


class FloppyFormat(NamedTuple):
    """A PC diskette format: its geometry and the BPB FORMAT gives it."""
    name: str
    geometry: FloppyGeometry
    media: int                         # BPB_Media (the media descriptor byte)
    sectors_per_cluster: int           # BPB_SecPerClus
    root_entries: int                  # BPB_RootEntCnt

    @property
    def size(self):
        c, h, s = self.geometry
        return c * h * s * SECTOR_SIZE


FLOPPY_FORMATS = (
    FloppyFormat("360K", FloppyGeometry(40, 2, 9), 0xFD, 2, 112),    # 5.25" DD
    FloppyFormat("720K", FloppyGeometry(80, 2, 9), 0xF9, 2, 112),    # 3.5" DD
    FloppyFormat("1.2M", FloppyGeometry(80, 2, 15), 0xF9, 1, 224),   # 5.25" HD
    FloppyFormat("1.44M", FloppyGeometry(80, 2, 18), 0xF0, 1, 224),  # 3.5" HD
    FloppyFormat("2.88M", FloppyGeometry(80, 2, 36), 0xF0, 2, 240),  # 3.5" ED
)
STANDARD_SIZES = {f.size: f for f in FLOPPY_FORMATS}
assert sorted(STANDARD_SIZES) == [368640, 737280, 1228800, 1474560, 2949120]
assert max(STANDARD_SIZES) <= MAX_FLOPPY_IMAGE_SIZE

# Sizes that are not made here but are served with a known geometry.
OTHER_GEOMETRIES = {
    163840: FloppyGeometry(40, 1, 8),       # 160K, 5.25" single sided (DOS 1.0)
    184320: FloppyGeometry(40, 1, 9),       # 180K, 5.25" single sided
    327680: FloppyGeometry(40, 2, 8),       # 320K, 5.25" double sided (DOS 1.1)
    1720320: FloppyGeometry(80, 2, 21),     # 1.68M DMF (Microsoft's distribution format)
    1763328: FloppyGeometry(82, 2, 21),     # 1.72M, 82 cylinders of 21 sectors
}


def _standard_list():
    return ", ".join(f"{f.name} ({f.size})" for f in FLOPPY_FORMATS)


def format_for(path, size):
    """The standard format of ``size`` bytes, or an error listing them."""
    try:
        return STANDARD_SIZES[size]
    except (KeyError, TypeError):
        raise ImageError(f"{path}: {size} bytes is not a standard floppy size; drivebay "
                         f"creates {_standard_list()} bytes") from None


def _bpb_geometry(sector0, size):
    """Geometry from a FAT BPB in the boot sector, when it fits the image's size."""
    if len(sector0) < fat12.BOOT_SECTOR.size:
        return None
    bpb = fat12.BOOT_SECTOR.unpack(sector0)
    total = bpb.BPB_TotSec16 or bpb.BPB_TotSec32
    h, s = bpb.BPB_NumHeads, bpb.BPB_SecPerTrk
    if bpb.BPB_BytsPerSec != SECTOR_SIZE or not 1 <= h <= 2 or not 1 <= s <= 63 or \
            total * SECTOR_SIZE != size or total % (h * s):
        return None
    return FloppyGeometry(total // (h * s), h, s)


class FloppyDriver(RawDriver):
    format_name = "floppy"
    description = "floppy disk image (raw; 360K, 720K, 1.2M, 1.44M, 2.88M)"
    create_variants = ("blank", "fat12")
    fixed_sizes = STANDARD_SIZES
    resizable = False

    @classmethod
    def probe(cls, head, tail, file_size):
        return PROBE_SCORE if file_size in STANDARD_SIZES else 0

    @classmethod
    def create(cls, path, size, variant=None, uuid=None, parent=None, label=None,
               volume_id=None, timestamp=None, **options):
        """Create a diskette image of a standard ``size``: ``variant`` "blank"
        (zeros, the default) or "fat12" (an empty FAT12 file system with the
        volume ``label``; ``volume_id`` and ``timestamp`` default to random
        and now).  ``uuid`` is ignored: floppy images store none."""
        path = os.fspath(path)
        if options:
            raise ImageError(f"{path}: unknown floppy creation options: "
                             f"{', '.join(sorted(options))} (known: label, volume_id, timestamp)")
        if parent is not None:
            raise ImageError(f"{path}: floppy images cannot have a parent")
        variant = variant or "blank"
        if variant not in cls.create_variants:
            raise ImageError(f"{path}: floppy variant {variant!r} unknown (known: "
                             f"{', '.join(cls.create_variants)})")
        fmt = format_for(path, size)
        if variant == "blank" and (label or volume_id is not None):
            raise ImageError(f"{path}: a volume label or ID needs a file system: "
                             f"use variant fat12")
        system = b""
        if variant == "fat12":
            c, h, s = fmt.geometry
            try:
                system = fat12.system_area(c * h * s, s, h, fmt.media, fmt.sectors_per_cluster,
                                           fmt.root_entries, label, volume_id, timestamp)
            except ValueError as e:
                raise ImageError(f"{path}: {e}") from None
        f = ImageFile(path, writable=True, create=True)
        try:
            f.truncate(fmt.size)
            if system:
                f.pwrite(0, system, "FAT12 system area")
        except BaseException:
            f.close()
            os.unlink(path)
            raise
        f.close()

    def _open(self):
        size = self.file.size()
        if size == 0 or size % SECTOR_SIZE or size > MAX_FLOPPY_IMAGE_SIZE:
            raise FormatError(f"{self.path}: {size} bytes is not a floppy image: one holds "
                              f"whole {SECTOR_SIZE}-byte sectors, at most "
                              f"{MAX_FLOPPY_IMAGE_SIZE} bytes (standard: {_standard_list()})")
        self.size = size
        fmt = STANDARD_SIZES.get(size)
        self.variant = fmt.name if fmt else "non-standard"
        if fmt:
            self._geometry = fmt.geometry
        else:
            self._geometry = OTHER_GEOMETRIES.get(size) or \
                _bpb_geometry(self.file.pread(0, SECTOR_SIZE, "boot sector"), size)

    @property
    def geometry(self):
        """``FloppyGeometry(cylinders, heads, sectors)`` or None when unknown."""
        return self._geometry

    def resize(self, new_size):
        raise UnsupportedOperation(f"{self.path}: a floppy image has the fixed size of its "
                                   f"diskette ({self.size} bytes)")

    def info(self):
        g = self._geometry
        out = {"floppy_format": self.variant,
               "geometry": f"{g.cylinders}/{g.heads}/{g.sectors}" if g else None}
        bpb = fat12.BOOT_SECTOR.unpack(self.file.pread(0, SECTOR_SIZE, "boot sector"))
        if bpb.BS_BootSig == fat12.EXTENDED_BOOT_SIGNATURE and \
                bpb.BPB_BytsPerSec == SECTOR_SIZE:
            out["fat_label"] = bpb.BS_VolLab.decode("ascii", "replace").rstrip()
            out["fat_volume_id"] = f"{bpb.BS_VolID >> 16:04X}-{bpb.BS_VolID & 0xFFFF:04X}"
            out["fat_type"] = bpb.BS_FilSysType.decode("ascii", "replace").rstrip()
        return out

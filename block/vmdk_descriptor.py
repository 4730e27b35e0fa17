"""The VMDK text descriptor, and the partition tables raw-disk descriptors are built from.

Spec: VMware "Virtual Disk Format 5.0" technical note, "The Descriptor
File" (header, extent descriptions, disk database), with VirtualBox's
additions (ddb.uuid.image/modification/parent/parentmodification) and its
raw host disk descriptors (createType fullDevice and partitionedDevice).
block/vmdk.py owns the binary sparse extents and the driver; this module
owns the text and its rules:

* A descriptor is ``key=value`` header lines (version, CID, parentCID,
  createType, parentFileNameHint, ...), extent lines
  ``ACCESS SECTORS TYPE ["FILE" [OFFSET]]`` and disk database lines
  ``ddb.key = "value"``; ``#`` starts a comment.  Unknown header and ddb
  keys are kept and written back.
* CID and parentCID are 32-bit hexadecimal; parentCID ffffffff means "no
  parent" ("The Descriptor File": "If the virtual disk has no parent, it
  is ffffffff").  QEMU writes CIDs without leading zeros; both are read.
* Extent file names are relative to the descriptor's folder.  A name that
  is absolute or climbs out of that folder ("../../etc/passwd") is refused,
  except in raw-disk descriptors, whose FLAT extents name a host device.

Raw host disk descriptors (``partition_layout``): the partition table of a
device or disk image file is read (MBR with extended/logical partitions,
or GPT, 512-byte sectors), and the virtual disk becomes: the sectors that
hold partition tables (MBR, EBRs, GPT headers and entry arrays) copied to
a private file, the chosen partitions FLAT on the device at their offsets,
everything else ZERO (reads zeros, writes refused).  That is the layout
VirtualBox's "VBoxManage createmedium --variant RawDisk" writes, with its
"-pt.vmdk" copy of the tables, so a guest writing its partition table never
changes the host's.

Not supported: descriptor encodings Python does not know, GPT on disks with
sectors other than 512 bytes, hybrid MBR/GPT beyond the protective entry.
"""

import codecs
import os
import re
import uuid as uuidlib
import zlib
from dataclasses import dataclass, field

from drivebay.block.driver import NULL_UUID, ImageFile
from drivebay.errors import CorruptImageError, FormatError, ImageError, UnsupportedFeatureError
from drivebay.layout import Layout

SECTOR_SIZE = 512

# -- descriptor constants ------------------------------------------------------------------

DESCRIPTOR_SIGNATURE = "# Disk DescriptorFile"
NO_PARENT_CID = 0xFFFFFFFF              # parentCID of a base disk
DESCRIPTOR_VERSIONS = (1, 2, 3)         # 3 adds changeTrackPath (changed block tracking)

# Limits.  A descriptor of 1024 extents with 200-byte names is 250 KiB; VMware's
# and QEMU's are under 1 KiB.  Anything past 1 MiB is not a descriptor.
MAX_DESCRIPTOR_BYTES = 1 << 20
MAX_EXTENTS = 4096                      # every extent file is opened: this bounds the fds
# 64 TiB: 32 times what a sparse extent holds (2 TiB); room for flat and raw disks.
MAX_DISK_SECTORS = (64 << 40) // SECTOR_SIZE
MAX_NAME_LENGTH = 4096                  # PATH_MAX

CREATE_TYPES = {
    # hosted products (VMware Workstation/Fusion, VirtualBox, QEMU)
    "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
    "streamOptimized", "custom",
    # raw host disks (VirtualBox, VMware hosted)
    "fullDevice", "partitionedDevice",
    # ESXi flat disks: a FLAT/VMFS extent, readable like monolithicFlat
    "vmfs", "vmfsPreallocated", "vmfsEagerZeroedThick", "vmfsThin",
    "vmfsRaw", "vmfsRDM", "vmfsRawDeviceMap", "vmfsRDMP", "vmfsPassthroughRawDeviceMap",
    # ESXi sparse formats: the descriptor is read, their extents are refused
    "vmfsSparse", "seSparse",
}
# Descriptors whose extents name a host device by absolute path.
RAW_CREATE_TYPES = {"fullDevice", "partitionedDevice", "vmfsRaw", "vmfsRDM",
                    "vmfsRawDeviceMap", "vmfsRDMP", "vmfsPassthroughRawDeviceMap"}

ACCESS_MODES = ("RW", "RDONLY", "NOACCESS")
FLAT_TYPES = ("FLAT", "VMFS", "VMFSRAW", "VMFSRDM")     # the data lies as is in the file
EXTENT_TYPES = FLAT_TYPES + ("SPARSE", "ZERO", "VMFSSPARSE", "SESPARSE")

_EXTENT_RE = re.compile(rf'^({"|".join(ACCESS_MODES)})\s+(\d+)\s+([A-Z]+)'
                        r'(?:\s+"([^"]*)"(?:\s+(\d+))?)?(?:\s+(.*))?$')
_KEY_RE = re.compile(r'^([A-Za-z0-9_.]+)\s*=\s*(.*)$')
_HEX_RE = re.compile(r'^[0-9a-fA-F]{1,8}$')

DDB_UUID_IMAGE = "ddb.uuid.image"
DDB_UUID_MODIFICATION = "ddb.uuid.modification"
DDB_UUID_PARENT = "ddb.uuid.parent"
DDB_UUID_PARENT_MODIFICATION = "ddb.uuid.parentmodification"
ADAPTER_TYPES = ("ide", "buslogic", "lsilogic", "legacyESX")
DEFAULT_HW_VERSION = "4"                # ddb.virtualHWVersion VirtualBox and QEMU write


@dataclass
class ExtentLine:
    access: str                          # RW, RDONLY or NOACCESS
    sectors: int
    type: str                            # FLAT, SPARSE, ZERO, VMFS...
    filename: str | None = None          # None for ZERO
    offset: int = 0                      # FLAT: first sector of the extent in its file
    extra: str = ""                      # VMware's partition UUID / device identifier, kept

    def render(self):
        if self.type == "ZERO":
            return f"{self.access} {self.sectors} ZERO"
        text = f'{self.access} {self.sectors} {self.type} "{self.filename}"'
        # VMware writes VMFS-family lines without an offset, and QEMU refuses
        # a VMFS line that has one; FLAT lines always carry theirs.
        if self.type == "FLAT" or (self.type in FLAT_TYPES and self.offset):
            text += f" {self.offset}"
        return text + (f" {self.extra}" if self.extra else "")


@dataclass
class Descriptor:
    create_type: str
    extents: list
    cid: int
    parent_cid: int = NO_PARENT_CID
    version: int = 1
    parent_hint: str | None = None       # parentFileNameHint
    encoding: str | None = None
    header: dict = field(default_factory=dict)   # other header keys, value as stored (quoted)
    ddb: dict = field(default_factory=dict)      # "ddb.key" -> value, in file order

    @property
    def sectors(self):
        return sum(e.sectors for e in self.extents)

    @property
    def is_raw(self):
        return self.create_type in RAW_CREATE_TYPES

    def uuid(self, key, path):
        """The UUID stored under a ddb.uuid.* key, or None when absent."""
        text = self.ddb.get(key)
        if text is None:
            return None
        try:
            return uuidlib.UUID(text.strip())
        except ValueError:
            raise CorruptImageError(f"{path}: VMDK descriptor field {key} is {text!r}; "
                                    f"expected a UUID") from None

    def geometry(self, path, prefix="ddb.geometry."):
        """(cylinders, heads, sectors) from the disk database, or None."""
        keys = [prefix + k for k in ("cylinders", "heads", "sectors")]
        if not all(k in self.ddb for k in keys):
            return None
        values = []
        for k in keys:
            try:
                values.append(int(self.ddb[k]))
            except ValueError:
                raise CorruptImageError(f"{path}: VMDK descriptor field {k} is "
                                        f"{self.ddb[k]!r}; expected a number") from None
        return tuple(values)

    def render(self):
        lines = [DESCRIPTOR_SIGNATURE, f"version={self.version}"]
        if self.encoding:
            lines.append(f'encoding="{self.encoding}"')
        lines += [f"CID={self.cid:08x}", f"parentCID={self.parent_cid:08x}"]
        lines += [f"{k}={v}" for k, v in self.header.items()]
        lines.append(f'createType="{self.create_type}"')
        if self.parent_hint:
            lines.append(f'parentFileNameHint="{self.parent_hint}"')
        lines += ["", "# Extent description"] + [e.render() for e in self.extents]
        lines += ["", "# The Disk Data Base", "#DDB", ""]
        lines += [f'{k} = "{v}"' for k, v in self.ddb.items()]
        return "\n".join(lines) + "\n"


def _bad(path, what, value, expected, exc=CorruptImageError):
    return exc(f"{path}: VMDK descriptor {what} is {value}; expected {expected}")


def _decode(raw, path):
    """Text of a descriptor: UTF-8 unless an ``encoding`` line names another."""
    m = re.search(rb'^\s*encoding\s*=\s*"?([A-Za-z0-9_.:-]+)"?\s*$', raw, re.M)
    name = m.group(1).decode("ascii") if m else "UTF-8"
    try:
        codecs.lookup(name)
    except LookupError:
        raise _bad(path, "field encoding", repr(name), "an encoding drivebay knows (UTF-8, "
                   "windows-1252, ...)", UnsupportedFeatureError) from None
    try:
        return raw.decode(name), (name if m else None)
    except UnicodeDecodeError as e:
        raise CorruptImageError(f"{path}: VMDK descriptor is not valid {name} text "
                                f"(byte {e.start})") from None


def _hex32(path, name, value):
    if not _HEX_RE.match(value):
        raise _bad(path, f"field {name}", repr(value), "a 32-bit hexadecimal number")
    return int(value, 16)


def parse(raw, path):
    """A Descriptor from the bytes of a descriptor (a file or an embedded one)."""
    if len(raw) > MAX_DESCRIPTOR_BYTES:
        raise _bad(path, "size", f"{len(raw)} bytes", f"at most {MAX_DESCRIPTOR_BYTES}")
    raw = raw.split(b"\0", 1)[0]
    text, encoding = _decode(raw, path)
    header, ddb, extents = {}, {}, []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _EXTENT_RE.match(line)
        if m:
            if len(extents) >= MAX_EXTENTS:
                raise _bad(path, "extent count", f"over {MAX_EXTENTS}", f"at most {MAX_EXTENTS}",
                           UnsupportedFeatureError)
            extents.append(_extent(path, number, m))
            continue
        m = _KEY_RE.match(line)
        if not m:
            shown = line if len(line) <= 80 else line[:77] + "..."
            raise CorruptImageError(f"{path}: VMDK descriptor line {number} is neither "
                                    f"key=value nor an extent: {shown!r}")
        key, stored = m.group(1), m.group(2).strip()
        value = stored[1:-1] if len(stored) >= 2 and stored[0] == stored[-1] == '"' else stored
        if key.startswith("ddb."):
            ddb[key] = value
        else:
            header[key] = (value, stored)
    if "createType" not in header:
        raise FormatError(f"{path}: not a VMDK descriptor: no createType line")
    create_type = header.pop("createType")[0]
    if create_type not in CREATE_TYPES:
        raise _bad(path, "field createType", repr(create_type),
                   "one of " + ", ".join(sorted(CREATE_TYPES)), UnsupportedFeatureError)
    version_text = header.pop("version", ("1",))[0]
    if not version_text.isdigit() or int(version_text) not in DESCRIPTOR_VERSIONS:
        raise _bad(path, "field version", repr(version_text), "1, 2 or 3",
                   UnsupportedFeatureError)
    if "CID" not in header:
        raise CorruptImageError(f"{path}: VMDK descriptor has no CID line")
    cid = _hex32(path, "CID", header.pop("CID")[0])
    parent_cid = _hex32(path, "parentCID", header.pop("parentCID", ("ffffffff",))[0])
    header.pop("encoding", None)
    hint = header.pop("parentFileNameHint", ("",))[0] or None
    if not extents:
        raise CorruptImageError(f"{path}: VMDK descriptor has no extent lines")
    desc = Descriptor(create_type, extents, cid, parent_cid, int(version_text), hint, encoding,
                      {k: stored for k, (_, stored) in header.items()}, ddb)
    if desc.sectors > MAX_DISK_SECTORS:
        raise _bad(path, "extents", f"{desc.sectors} sectors in all",
                   f"at most {MAX_DISK_SECTORS} ({MAX_DISK_SECTORS * SECTOR_SIZE >> 40} TiB)",
                   UnsupportedFeatureError)
    return desc


def _extent(path, number, m):
    access, sectors, kind, name, offset, extra = m.groups()
    what = f"extent line {number}"
    if kind not in EXTENT_TYPES:
        raise _bad(path, f"{what} type", repr(kind), "one of " + ", ".join(EXTENT_TYPES),
                   UnsupportedFeatureError)
    sectors = int(sectors)
    if not 0 < sectors <= MAX_DISK_SECTORS:
        raise _bad(path, f"{what} size", f"{sectors} sectors",
                   f"1 to {MAX_DISK_SECTORS} sectors")
    if kind == "ZERO":
        if name is not None:
            raise _bad(path, what, f"a ZERO extent naming file {name!r}", "no file name")
        return ExtentLine(access, sectors, kind)
    if not name:
        raise _bad(path, what, f"a {kind} extent without a file name", 'a "file name"')
    if len(name) > MAX_NAME_LENGTH or "\0" in name:
        raise _bad(path, f"{what} file name", f"{len(name)} characters long",
                   f"a path of at most {MAX_NAME_LENGTH}")
    offset = int(offset or 0)
    if offset and kind not in FLAT_TYPES:
        raise _bad(path, what, f"offset {offset} on a {kind} extent", "an offset only on FLAT")
    if offset > MAX_DISK_SECTORS:
        raise _bad(path, f"{what} offset", offset, f"at most {MAX_DISK_SECTORS} sectors")
    return ExtentLine(access, sectors, kind, name, offset, (extra or "").strip())


def resolve_extent_path(folder, name, allow_absolute, path):
    """Where extent file ``name`` of the descriptor at ``path`` lies.

    Relative names are relative to the descriptor's folder and may not climb
    out of it; absolute names are allowed only for raw-disk descriptors."""
    if os.path.isabs(name) or re.match(r"^[A-Za-z]:[\\/]", name) or name.startswith("\\\\"):
        if allow_absolute and os.path.isabs(name):
            return name
        raise ImageError(f"{path}: extent file {name!r} is an absolute path; only raw-disk "
                         f"descriptors (createType fullDevice, partitionedDevice) may name "
                         f"files outside the descriptor's folder")
    parts = re.split(r"[\\/]", name)
    if ".." in parts:
        raise ImageError(f"{path}: extent file {name!r} climbs out of the descriptor's folder; "
                         f"refused (it could expose any host file to the guest)")
    return os.path.join(folder, *[p for p in parts if p not in ("", ".")])


def new_cid(avoid=()):
    """A random content ID: never ffffffff (no parent) nor fffffffe."""
    while True:
        cid = int.from_bytes(os.urandom(4), "little")
        if cid < 0xFFFFFFFE and cid not in avoid:
            return cid


def check_quotable(path, what, text):
    """Descriptor values are written in double quotes on one line."""
    if any(c in text for c in '"\n\r\0'):
        raise ImageError(f"{path}: {what} {text!r} cannot be stored in a VMDK descriptor "
                         f"(it holds a quote, a line break or a NUL)")


def chs_geometry(sectors, adapter_type):
    """ddb.geometry.* for a new disk: 16 heads for IDE, 255 for SCSI adapters, 63
    sectors per track; cylinders as many as fit, capped at 16383 (IDE) or 65535."""
    heads = 16 if adapter_type == "ide" else 255
    cylinders = min(sectors // (heads * 63), 16383 if adapter_type == "ide" else 65535)
    return max(cylinders, 1), heads, 63


def new_ddb(sectors, adapter_type, hw_version, uuid, parent_uuid=None,
            parent_modification_uuid=None):
    """The disk database of a new disk, as VirtualBox writes it (with its UUIDs)."""
    cylinders, heads, per_track = chs_geometry(sectors, adapter_type)
    return {"ddb.virtualHWVersion": hw_version, "ddb.adapterType": adapter_type,
            "ddb.geometry.cylinders": str(cylinders), "ddb.geometry.heads": str(heads),
            "ddb.geometry.sectors": str(per_track), DDB_UUID_IMAGE: str(uuid),
            DDB_UUID_PARENT: str(parent_uuid or NULL_UUID),
            DDB_UUID_MODIFICATION: str(uuidlib.uuid4()),
            DDB_UUID_PARENT_MODIFICATION: str(parent_modification_uuid or NULL_UUID)}


def stem(path):
    """A descriptor's path without ".vmdk": extent files are named after it."""
    return path[:-5] if path.lower().endswith(".vmdk") else path


# -- partition tables (raw-disk descriptors) -----------------------------------------------

MBR_SIGNATURE = b"\x55\xAA"            # bytes 510-511 of an MBR or EBR
MBR_PARTITION_TABLE = 446              # four 16-byte entries
MBR_TYPE_GPT_PROTECTIVE = 0xEE
MBR_TYPES_EXTENDED = (0x05, 0x0F, 0x85)
MAX_LOGICAL_PARTITIONS = 128           # an EBR chain longer than this is a loop or hostile

MBR_PARTITION_ENTRY = Layout("MBR partition entry", "<", [
    ("BootIndicator", "B"), ("StartingCHS", "3s"), ("OSType", "B"), ("EndingCHS", "3s"),
    ("StartingLBA", "I"), ("SizeInLBA", "I")], size=16)

# UEFI 2.x, "GPT Header" and "GPT Partition Entry Array" (names as in the spec)
GPT_SIGNATURE = b"EFI PART"
GPT_HEADER = Layout("GPT header", "<", [
    ("Signature", "8s"), ("Revision", "I"), ("HeaderSize", "I"), ("HeaderCRC32", "I"),
    ("Reserved", "I"), ("MyLBA", "Q"), ("AlternateLBA", "Q"), ("FirstUsableLBA", "Q"),
    ("LastUsableLBA", "Q"), ("DiskGUID", "16s"), ("PartitionEntryLBA", "Q"),
    ("NumberOfPartitionEntries", "I"), ("SizeOfPartitionEntry", "I"),
    ("PartitionEntryArrayCRC32", "I")], size=92)
GPT_ENTRY = Layout("GPT partition entry", "<", [
    ("PartitionTypeGUID", "16s"), ("UniquePartitionGUID", "16s"), ("StartingLBA", "Q"),
    ("EndingLBA", "Q"), ("Attributes", "Q"), ("PartitionName", "72s")], size=128)
GPT_MAX_ENTRIES = 1024                 # the spec's minimum array is 128; 1024 is generous
GPT_ENTRY_SIZE_MAX = 4096


@dataclass(frozen=True)
class Partition:
    number: int                        # 1-4 primary, 5+ logical (MBR); 1.. (GPT)
    start: int                         # first sector
    sectors: int
    type: str                          # MBR type byte in hex, or the GPT type GUID


@dataclass
class PartitionTable:
    scheme: str                        # "mbr" or "gpt"
    partitions: list
    table_sectors: list                # (first sector, count) runs holding partition tables


def read_partition_table(read, disk_sectors, path):
    """The partitions of a disk whose sectors ``read(first, count)`` returns."""
    mbr = read(0, 1)
    if mbr[510:512] != MBR_SIGNATURE:
        raise FormatError(f"{path}: no partition table (sector 0 does not end in 55 AA)")
    entries = [MBR_PARTITION_ENTRY.unpack(mbr, MBR_PARTITION_TABLE + 16 * i) for i in range(4)]
    if any(e.OSType == MBR_TYPE_GPT_PROTECTIVE for e in entries):
        return _read_gpt(read, disk_sectors, path)
    parts, tables = [], [(0, 1)]
    for i, e in enumerate(entries):
        if e.OSType == 0 or e.SizeInLBA == 0:
            continue
        _check_span(path, f"MBR partition {i + 1}", e.StartingLBA, e.SizeInLBA, disk_sectors)
        if e.OSType in MBR_TYPES_EXTENDED:
            _read_ebr_chain(read, e.StartingLBA, e.SizeInLBA, disk_sectors, path, parts, tables)
        else:
            parts.append(Partition(i + 1, e.StartingLBA, e.SizeInLBA, f"{e.OSType:02x}"))
    parts.sort(key=lambda p: p.number)
    return PartitionTable("mbr", parts, sorted(tables))


def _check_span(path, what, start, count, disk_sectors):
    if start + count > disk_sectors or start == 0:
        raise CorruptImageError(f"{path}: {what} covers sectors {start}..{start + count - 1}, "
                                f"outside the disk's sectors 1..{disk_sectors - 1}")


def _read_ebr_chain(read, ext_start, ext_sectors, disk_sectors, path, parts, tables):
    """Logical partitions: each EBR holds one partition (relative to the EBR) and
    a link to the next EBR (relative to the extended partition)."""
    ebr_at, seen = ext_start, set()
    for n in range(5, 5 + MAX_LOGICAL_PARTITIONS):
        if ebr_at in seen:
            raise CorruptImageError(f"{path}: the EBR chain loops back to sector {ebr_at}")
        seen.add(ebr_at)
        ebr = read(ebr_at, 1)
        if ebr[510:512] != MBR_SIGNATURE:
            raise CorruptImageError(f"{path}: EBR at sector {ebr_at} does not end in 55 AA")
        tables.append((ebr_at, 1))
        this = MBR_PARTITION_ENTRY.unpack(ebr, MBR_PARTITION_TABLE)
        link = MBR_PARTITION_ENTRY.unpack(ebr, MBR_PARTITION_TABLE + 16)
        if this.OSType and this.SizeInLBA:
            start = ebr_at + this.StartingLBA
            _check_span(path, f"logical partition {n}", start, this.SizeInLBA,
                        min(disk_sectors, ext_start + ext_sectors))
            parts.append(Partition(n, start, this.SizeInLBA, f"{this.OSType:02x}"))
        if link.OSType not in MBR_TYPES_EXTENDED:
            return                     # the last EBR: its second entry is empty
        ebr_at = ext_start + link.StartingLBA
        if ebr_at >= ext_start + ext_sectors:
            raise CorruptImageError(f"{path}: EBR link to sector {ebr_at} leaves the extended "
                                    f"partition")
    raise CorruptImageError(f"{path}: more than {MAX_LOGICAL_PARTITIONS} logical partitions")


def _read_gpt(read, disk_sectors, path):
    raw = read(1, 1)
    hdr = GPT_HEADER.unpack(raw)
    if hdr.Signature != GPT_SIGNATURE:
        raise CorruptImageError(f"{path}: protective MBR but no GPT header at sector 1")
    if not GPT_HEADER.size <= hdr.HeaderSize <= SECTOR_SIZE:
        raise CorruptImageError(f"{path}: GPT HeaderSize {hdr.HeaderSize}; expected 92 to 512")
    check = bytearray(raw[:hdr.HeaderSize])
    check[16:20] = bytes(4)
    if zlib.crc32(check) != hdr.HeaderCRC32:
        raise CorruptImageError(f"{path}: GPT header CRC32 does not match")
    n, size = hdr.NumberOfPartitionEntries, hdr.SizeOfPartitionEntry
    if not 0 < n <= GPT_MAX_ENTRIES or size < GPT_ENTRY.size or size % 8 or \
            size > GPT_ENTRY_SIZE_MAX:
        raise UnsupportedFeatureError(f"{path}: GPT has {n} entries of {size} bytes; drivebay "
                                      f"reads up to {GPT_MAX_ENTRIES} entries of 128 to "
                                      f"{GPT_ENTRY_SIZE_MAX} bytes")
    first, last = hdr.FirstUsableLBA, hdr.LastUsableLBA
    if not 2 <= first <= last < disk_sectors:
        raise CorruptImageError(f"{path}: GPT usable sectors {first}..{last} are not inside "
                                f"the {disk_sectors}-sector disk")
    array_sectors = -(-n * size // SECTOR_SIZE)
    if hdr.PartitionEntryLBA < 2 or hdr.PartitionEntryLBA + array_sectors > first:
        raise CorruptImageError(f"{path}: GPT PartitionEntryLBA {hdr.PartitionEntryLBA} "
                                f"overlaps the usable sectors from {first}")
    array = read(hdr.PartitionEntryLBA, array_sectors)[:n * size]
    if zlib.crc32(array) != hdr.PartitionEntryArrayCRC32:
        raise CorruptImageError(f"{path}: GPT partition entry array CRC32 does not match")
    parts = []
    for i in range(n):
        e = GPT_ENTRY.unpack(array, i * size)
        if e.PartitionTypeGUID == bytes(16):
            continue
        if not first <= e.StartingLBA <= e.EndingLBA <= last:
            raise CorruptImageError(f"{path}: GPT partition {i + 1} covers sectors "
                                    f"{e.StartingLBA}..{e.EndingLBA}, outside the usable "
                                    f"{first}..{last}")
        parts.append(Partition(i + 1, e.StartingLBA, e.EndingLBA - e.StartingLBA + 1,
                               str(uuidlib.UUID(bytes_le=e.PartitionTypeGUID))))
    tables = [(0, first)]
    if last + 1 < disk_sectors:
        tables.append((last + 1, disk_sectors - last - 1))   # backup entries and header
    return PartitionTable("gpt", parts, tables)


def partition_layout(table, chosen, disk_sectors, path):
    """Extent plan of a partitionedDevice descriptor: ``(first, count, kind)`` runs
    covering the disk, kind "table" (copied), "device" (a chosen partition) or "zero"."""
    by_number = {p.number: p for p in table.partitions}
    missing = [n for n in chosen if n not in by_number]
    if missing:
        raise ImageError(f"{path}: no partition {', '.join(map(str, missing))} (the "
                         f"{table.scheme.upper()} table has "
                         f"{', '.join(str(p.number) for p in table.partitions) or 'none'})")
    marks = [(first, count, "table") for first, count in table.table_sectors]
    marks += [(by_number[n].start, by_number[n].sectors, "device") for n in sorted(set(chosen))]
    marks.sort()
    runs, at = [], 0
    for first, count, kind in marks:
        if first < at:
            raise CorruptImageError(f"{path}: partition-table sectors and partitions overlap "
                                    f"at sector {first}")
        if first > at:
            runs.append((at, first - at, "zero"))
        runs.append((first, count, kind))
        at = first + count
    if at < disk_sectors:
        runs.append((at, disk_sectors - at, "zero"))
    return runs


def create_raw_disk(path, device, partitions=None, adapter_type="ide"):
    """A descriptor giving a guest the host disk ``device`` (a block device or a
    file holding a disk image): all of it (fullDevice), or only ``partitions``
    (numbers as the host names them: MBR 1-4 primary, 5+ logical; GPT 1..)
    in a partitionedDevice descriptor whose partition tables are a private copy
    (``<name>-pt.vmdk``).  Returns ``path``."""
    path, device = os.fspath(path), os.path.abspath(os.fspath(device))
    check_quotable(path, "device path", device)
    if adapter_type not in ADAPTER_TYPES:
        raise ImageError(f"{path}: adapter type {adapter_type!r} unknown (known: "
                         f"{', '.join(ADAPTER_TYPES)})")
    made, src = [], ImageFile(device)
    try:
        try:
            disk_sectors = os.lseek(src.fd, 0, os.SEEK_END) // SECTOR_SIZE
        except OSError as e:
            raise ImageError(f"{device}: finding the disk's size: {e.strerror}") from None
        if disk_sectors == 0:
            raise ImageError(f"{device}: the disk holds no whole sector")

        def read(first, count):
            return src.pread(first * SECTOR_SIZE, count * SECTOR_SIZE, "partition table")
        if partitions is None:
            desc = Descriptor("fullDevice", [ExtentLine("RW", disk_sectors, "FLAT", device)],
                              new_cid())
        else:
            table = read_partition_table(read, disk_sectors, device)
            runs = partition_layout(table, list(partitions), disk_sectors, device)
            pt_name = os.path.basename(stem(path)) + "-pt.vmdk"
            copies = b"".join(read(first, n) for first, n, kind in runs if kind == "table")
            extents, copied = [], 0
            for first, count, kind in runs:
                if kind == "zero":
                    extents.append(ExtentLine("RW", count, "ZERO"))
                elif kind == "device":
                    extents.append(ExtentLine("RW", count, "FLAT", device, first))
                else:
                    extents.append(ExtentLine("RW", count, "FLAT", pt_name, copied))
                    copied += count
            _write_new(os.path.join(os.path.dirname(path), pt_name), copies, made)
            desc = Descriptor("partitionedDevice", extents, new_cid())
        desc.ddb = new_ddb(disk_sectors, adapter_type, DEFAULT_HW_VERSION, uuidlib.uuid4())
        _write_new(path, desc.render().encode("utf-8"), made)
    except BaseException:
        for p in made:
            try:
                os.unlink(p)
            except OSError:
                pass
        raise
    finally:
        src.close()
    return path


def _write_new(path, data, made):
    f = ImageFile(path, writable=True, create=True)
    made.append(path)
    try:
        f.pwrite(0, data, "VMDK raw-disk file")
        f.sync()
    finally:
        f.close()

"""ISO 9660 CD/DVD images: read-only, 2048-byte sectors.

Spec: ECMA-119 2nd edition (1987) = ISO 9660:1988, section 8 (volume
descriptors), and the El Torito Bootable CD-ROM Format Specification 1.0
(boot record volume descriptor, boot catalog validation and initial entries).

    0x0000      System Area: 16 logical sectors, ignored here (a hybrid image
                keeps an MBR there)
    0x8000      the volume descriptor set, one 2048-byte sector each: boot
                records (type 0), the primary volume descriptor (type 1),
                supplementary ones (type 2; Joliet's carry escape sequences
                "%/@", "%/C" or "%/E"), partition descriptors (type 3), ended
                by a terminator (type 255)

The image is served as it is: the disk is the file, byte for byte, in
2048-byte sectors (``sector_size``).  Its size is the file size rounded up
to a whole sector (the rest of a partial last sector reads as zeros), not
the primary volume descriptor's Volume Space Size: VirtualBox and QEMU both
serve the whole file, and hybrid or appended images hold data past the ISO
9660 volume.  A file shorter than the volume it declares is reported by
``check`` (it would read zeros where the volume has data).

Opening walks the descriptor set (bounded by MAX_VOLUME_DESCRIPTORS) and
requires a primary volume descriptor and a terminator: a file without them
is not an ISO 9660 image.  ``info`` reports the primary descriptor's
identifiers, sizes and dates, Joliet, and the El Torito boot catalog's
validation and initial entries.

Not supported: writing (``read_only_format``); Rock Ridge, UDF and the
directory hierarchy (a guest reads those; the image needs none of them);
UDF-only discs without ISO 9660 descriptors (open them as raw).
"""

from drivebay.block.driver import BlockDriver, CheckReport, Extent, State
from drivebay.errors import CorruptImageError, FormatError, UnsupportedFeatureError
from drivebay.layout import Layout

# -- constants ----------------------------------------------------------------------

ISO_SECTOR_SIZE = 2048                 # 6.1.2: a logical sector is 2048 bytes on CD-ROM
SYSTEM_AREA_SECTORS = 16               # 6.2.1: "Logical Sectors 0 to 15"
VOLUME_DESCRIPTOR_SET_START = SYSTEM_AREA_SECTORS * ISO_SECTOR_SIZE
STANDARD_IDENTIFIER = b"CD001"         # 8.1.2
VOLUME_DESCRIPTOR_VERSION = 1          # 8.4.3: "shall be 1" in a primary volume descriptor
# The descriptor set has one primary, a few supplementary, boot and partition
# descriptors and a terminator; a real image has fewer than ten.  The bound
# keeps a file of "CD001" sectors from being walked to its end.
MAX_VOLUME_DESCRIPTORS = 64

# 8.1.1 Volume Descriptor Type
VD_BOOT_RECORD = 0
VD_PRIMARY = 1
VD_SUPPLEMENTARY = 2
VD_PARTITION = 3
VD_TERMINATOR = 255
VD_NAMES = {VD_BOOT_RECORD: "boot record", VD_PRIMARY: "primary",
            VD_SUPPLEMENTARY: "supplementary", VD_PARTITION: "volume partition",
            VD_TERMINATOR: "terminator"}

# 6.2.2 / 8.4.12: a Logical Block is 2^(n+9) bytes, at most the logical sector
LOGICAL_BLOCK_SIZES = (512, 1024, 2048)

# Joliet: the escape sequences of UCS-2 levels 1, 2 and 3 in a supplementary descriptor
JOLIET_ESCAPES = {b"%/@": 1, b"%/C": 2, b"%/E": 3}

# El Torito 1.0
EL_TORITO_SYSTEM_ID = b"EL TORITO SPECIFICATION"   # Boot System Identifier, zero padded
VALIDATION_HEADER_ID = 0x01
VALIDATION_KEY = b"\x55\xAA"
BOOT_INDICATOR_BOOTABLE = 0x88
BOOT_INDICATOR_NOT_BOOTABLE = 0x00
PLATFORMS = {0x00: "80x86", 0x01: "PowerPC", 0x02: "Mac", 0xEF: "EFI"}
BOOT_MEDIA = {0: "no emulation", 1: "1.2M diskette", 2: "1.44M diskette",
              3: "2.88M diskette", 4: "hard disk"}
DEFAULT_LOAD_SEGMENT = 0x07C0          # "If this field is cleared to zero, the default value"

# Probe score: below the formats whose magic sits at byte 0 (100), far above
# floppy (10, a size match) and raw (1).  A hard disk format's data area
# cannot put "CD001" at file offset 0x8001 unless its own header is absent.
PROBE_SCORE = 80

# -- on-disk layout -------------------------------------------------------------------

VOLUME_DESCRIPTOR = Layout("ISO 9660 volume descriptor header (8.1)", "<", [
    ("volume_descriptor_type", "B"),
    ("standard_identifier", "5s"),
    ("volume_descriptor_version", "B"),
], size=7)

# 8.4: the primary volume descriptor.  Both-byte-order fields (7.2.3, 7.3.3)
# are a little-endian value followed by the same value big-endian (_msb).
# A supplementary descriptor (8.5) has the same layout, with volume_flags in
# the first unused byte and escape_sequences in the third unused field.
PRIMARY_VOLUME_DESCRIPTOR = Layout("ISO 9660 primary volume descriptor (8.4)", "<", [
    ("volume_descriptor_type", "B"),
    ("standard_identifier", "5s"),
    ("volume_descriptor_version", "B"),
    ("volume_flags", "B"),                          # 8.5.3; unused (0) in the primary
    ("system_identifier", "32s"),
    ("volume_identifier", "32s"),
    ("unused_2", "8s"),
    ("volume_space_size", "I"),
    ("volume_space_size_msb", "4s"),
    ("escape_sequences", "32s"),                    # 8.5.6; unused (0) in the primary
    ("volume_set_size", "H"),
    ("volume_set_size_msb", "2s"),
    ("volume_sequence_number", "H"),
    ("volume_sequence_number_msb", "2s"),
    ("logical_block_size", "H"),
    ("logical_block_size_msb", "2s"),
    ("path_table_size", "I"),
    ("path_table_size_msb", "4s"),
    ("type_l_path_table", "I"),
    ("optional_type_l_path_table", "I"),
    ("type_m_path_table", "4s"),                    # big-endian (7.3.2)
    ("optional_type_m_path_table", "4s"),
    ("root_directory_record", "34s"),
    ("volume_set_identifier", "128s"),
    ("publisher_identifier", "128s"),
    ("data_preparer_identifier", "128s"),
    ("application_identifier", "128s"),
    ("copyright_file_identifier", "37s"),
    ("abstract_file_identifier", "37s"),
    ("bibliographic_file_identifier", "37s"),
    ("volume_creation_date_and_time", "17s"),
    ("volume_modification_date_and_time", "17s"),
    ("volume_expiration_date_and_time", "17s"),
    ("volume_effective_date_and_time", "17s"),
    ("file_structure_version", "B"),
    ("reserved_1", "B"),
    ("application_use", "512s"),
    ("reserved_2", "653s"),
], size=ISO_SECTOR_SIZE)

# ECMA-119 8.4 gives byte positions counting from 1; these are those minus one.
for _name, _offset in {"system_identifier": 8, "volume_identifier": 40,
                       "volume_space_size": 80, "escape_sequences": 88, "volume_set_size": 120,
                       "logical_block_size": 128, "path_table_size": 132,
                       "root_directory_record": 156, "volume_set_identifier": 190,
                       "publisher_identifier": 318, "application_identifier": 574,
                       "volume_creation_date_and_time": 813, "file_structure_version": 881,
                       "application_use": 883}.items():
    assert PRIMARY_VOLUME_DESCRIPTOR.offsets[_name] == _offset, _name
del _name, _offset

BOOT_RECORD = Layout("El Torito boot record volume descriptor", "<", [
    ("volume_descriptor_type", "B"),
    ("standard_identifier", "5s"),
    ("volume_descriptor_version", "B"),
    ("boot_system_identifier", "32s"),
    ("boot_identifier", "32s"),
    ("boot_catalog", "I"),                          # absolute sector of the boot catalog
], size=0x4B)

VALIDATION_ENTRY = Layout("El Torito validation entry", "<", [
    ("header_id", "B"),
    ("platform_id", "B"),
    ("reserved", "H"),
    ("id_string", "24s"),
    ("checksum", "H"),
    ("key", "2s"),
], size=32)

INITIAL_ENTRY = Layout("El Torito initial/default entry", "<", [
    ("boot_indicator", "B"),
    ("boot_media_type", "B"),
    ("load_segment", "H"),
    ("system_type", "B"),
    ("unused_1", "B"),
    ("sector_count", "H"),                          # 512-byte virtual sectors to load
    ("load_rba", "I"),                              # the image's first 2048-byte sector
    ("unused_2", "20s"),
], size=32)


def _text(raw, encoding="ascii"):
    """An identifier with its padding (spaces or NULs) removed."""
    return raw.decode(encoding, "replace").rstrip(" \0")


def _date(raw):
    """8.4.26.1: "YYYYMMDDhhmmsscc" digits and an offset from GMT in 15-minute
    steps; all digits zero means "not specified"."""
    digits = raw[:16]
    if digits in (b"0" * 16, bytes(16)) or not digits.isdigit():
        return None
    d = digits.decode()
    offset = int.from_bytes(raw[16:17], "little", signed=True) * 15
    sign = "-" if offset < 0 else "+"
    return (f"{d[0:4]}-{d[4:6]}-{d[6:8]}T{d[8:10]}:{d[10:12]}:{d[12:14]}.{d[14:16]}"
            f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}")


def _both(rec, name, problems):
    """A both-byte-order field: the little-endian half, with a note when the
    big-endian half disagrees (Linux and most readers use the little one)."""
    value = rec[name]
    msb = int.from_bytes(rec[name + "_msb"], "big")
    if msb != value:
        problems.append(f"field {name} is {value} little-endian but {msb} big-endian")
    return value


def read_descriptors(f):
    """``(primary, others)``: the primary volume descriptor's Record and the
    raw sectors of the other descriptors, walked up to the terminator."""
    path, size = f.path, f.size()
    if size < VOLUME_DESCRIPTOR_SET_START + ISO_SECTOR_SIZE:
        raise FormatError(f"{path}: not an ISO 9660 image: {size} bytes, too short for a "
                          f"volume descriptor at {VOLUME_DESCRIPTOR_SET_START:#x}")
    primary, others = None, []
    for n in range(MAX_VOLUME_DESCRIPTORS):
        at = VOLUME_DESCRIPTOR_SET_START + n * ISO_SECTOR_SIZE
        if at + ISO_SECTOR_SIZE > size:
            raise CorruptImageError(f"{path}: the volume descriptor set has no terminator "
                                    f"before the end of the file (sector {at // ISO_SECTOR_SIZE})")
        raw = f.pread(at, ISO_SECTOR_SIZE, "ISO 9660 volume descriptor")
        vd = VOLUME_DESCRIPTOR.unpack(raw)
        if vd.standard_identifier != STANDARD_IDENTIFIER:
            if n == 0:
                raise FormatError(f"{path}: not an ISO 9660 image: standard_identifier at "
                                  f"{at + 1:#x} is {vd.standard_identifier!r}; expected "
                                  f"{STANDARD_IDENTIFIER!r}")
            raise CorruptImageError(f"{path}: volume descriptor in sector {at // ISO_SECTOR_SIZE}"
                                    f" has standard_identifier {vd.standard_identifier!r}; "
                                    f"expected {STANDARD_IDENTIFIER!r} up to the terminator")
        kind = vd.volume_descriptor_type
        if kind == VD_TERMINATOR:
            break
        if kind == VD_PRIMARY and primary is None:
            primary = PRIMARY_VOLUME_DESCRIPTOR.unpack(raw)
            if primary.volume_descriptor_version != VOLUME_DESCRIPTOR_VERSION:
                raise UnsupportedFeatureError(
                    f"{path}: primary volume descriptor field volume_descriptor_version is "
                    f"{primary.volume_descriptor_version}; expected {VOLUME_DESCRIPTOR_VERSION}")
        else:
            others.append(raw)
    else:
        raise CorruptImageError(f"{path}: no volume descriptor set terminator in the first "
                                f"{MAX_VOLUME_DESCRIPTORS} descriptors")
    if primary is None:
        raise FormatError(f"{path}: the volume descriptor set has no primary volume "
                          f"descriptor (type {VD_PRIMARY})")
    return primary, others


def read_boot_catalog(f, sector, problems):
    """The El Torito validation and initial entries at ``sector``, or None."""
    at = sector * ISO_SECTOR_SIZE
    if at + 64 > f.size():
        problems.append(f"El Torito boot catalog at sector {sector} lies past the end of the file")
        return None
    raw = f.pread(at, 64, "El Torito boot catalog")
    val = VALIDATION_ENTRY.unpack(raw)
    words = sum(int.from_bytes(raw[i:i + 2], "little") for i in range(0, 32, 2)) & 0xFFFF
    if val.header_id != VALIDATION_HEADER_ID or val.key != VALIDATION_KEY or words:
        problems.append(f"El Torito boot catalog at sector {sector}: the validation entry is "
                        f"invalid (header_id {val.header_id:#x}, key {val.key.hex()}, "
                        f"word sum {words:#06x}; expected 0x1, 55aa, 0)")
        return None
    ini = INITIAL_ENTRY.unpack(raw, 32)
    return {
        "boot_catalog": sector,
        "valid": True,
        "platform": PLATFORMS.get(val.platform_id, f"{val.platform_id:#x}"),
        "id_string": _text(val.id_string),
        "bootable": ini.boot_indicator == BOOT_INDICATOR_BOOTABLE,
        "media": BOOT_MEDIA.get(ini.boot_media_type & 0x0F, f"{ini.boot_media_type:#x}"),
        "load_segment": ini.load_segment or DEFAULT_LOAD_SEGMENT,
        "sector_count": ini.sector_count,
        "load_rba": ini.load_rba,
    }


class IsoDriver(BlockDriver):
    format_name = "iso"
    description = "ISO 9660 CD/DVD image (read-only)"
    read_only_format = True
    sector_size = ISO_SECTOR_SIZE            # what backend.OPTICAL_SECTOR serves it in

    def __init__(self, file, writable):
        super().__init__(file, writable)
        self.primary = None
        self.facts = {}
        self.problems = []

    @classmethod
    def probe(cls, head, tail, file_size):
        at = VOLUME_DESCRIPTOR_SET_START + 1
        return PROBE_SCORE if head[at:at + 5] == STANDARD_IDENTIFIER else 0

    def _open(self):
        f = self.file
        pvd, others = read_descriptors(f)
        problems = []
        block = _both(pvd, "logical_block_size", problems)
        if block not in LOGICAL_BLOCK_SIZES:
            raise CorruptImageError(f"{self.path}: primary volume descriptor field "
                                    f"logical_block_size is {block}; expected 512, 1024 or 2048")
        blocks = _both(pvd, "volume_space_size", problems)
        file_size = f.size()
        self.size = -(-file_size // ISO_SECTOR_SIZE) * ISO_SECTOR_SIZE
        self.cluster_size = ISO_SECTOR_SIZE
        self.variant = "iso9660"
        self.primary = pvd
        facts = {
            "system_id": _text(pvd.system_identifier),
            "volume_id": _text(pvd.volume_identifier),
            "volume_set_id": _text(pvd.volume_set_identifier),
            "publisher_id": _text(pvd.publisher_identifier),
            "preparer_id": _text(pvd.data_preparer_identifier),
            "application_id": _text(pvd.application_identifier),
            "volume_space_size": blocks,
            "logical_block_size": block,
            "volume_bytes": blocks * block,
            "volume_set_size": _both(pvd, "volume_set_size", problems),
            "volume_sequence_number": _both(pvd, "volume_sequence_number", problems),
            "created": _date(pvd.volume_creation_date_and_time),
            "modified": _date(pvd.volume_modification_date_and_time),
            "descriptors": ["primary"],
            "joliet": None,
            "el_torito": None,
        }
        for raw in others:
            kind = raw[0]
            facts["descriptors"].append(VD_NAMES.get(kind, f"type {kind}"))
            if kind == VD_SUPPLEMENTARY:
                svd = PRIMARY_VOLUME_DESCRIPTOR.unpack(raw)
                level = JOLIET_ESCAPES.get(svd.escape_sequences[:3])
                if level and facts["joliet"] is None:
                    facts["joliet"] = {"level": level,
                                       "volume_id": _text(svd.volume_identifier, "utf-16-be")}
            elif kind == VD_BOOT_RECORD:
                br = BOOT_RECORD.unpack(raw)
                if br.boot_system_identifier.rstrip(b"\0") == EL_TORITO_SYSTEM_ID and \
                        facts["el_torito"] is None:
                    facts["el_torito"] = read_boot_catalog(f, br.boot_catalog, problems) or \
                        {"boot_catalog": br.boot_catalog, "valid": False}
        if blocks * block > file_size:
            problems.append(f"the volume ({blocks} blocks of {block} bytes = {blocks * block} "
                            f"bytes, volume_space_size) is longer than the {file_size}-byte "
                            f"file: the image is truncated")
        self.facts, self.problems = facts, problems

    def block_status(self, offset, length):
        self.check_range(offset, length)
        inside = max(0, min(length, self.file.size() - offset))
        out = [Extent(offset, inside, State.DATA, offset)] if inside else []
        if inside < length:
            out.append(Extent(offset + inside, length - inside, State.ZERO))
        return out

    def readinto(self, offset, buf):
        view = memoryview(buf).cast("B")
        self.check_range(offset, len(view))
        self.file.preadinto(offset, view, "ISO 9660 data")

    def check(self, repair=False):
        """Reports a truncated volume and inconsistent descriptor fields; an ISO
        image is read-only, so nothing is repaired."""
        report = CheckReport(self.path, total_blocks=self.size // ISO_SECTOR_SIZE,
                             allocated_blocks=-(-self.file.size() // ISO_SECTOR_SIZE))
        report.errors.extend(self.problems)
        return report

    def info(self):
        out = dict(self.facts)
        if self.problems:
            out["problems"] = list(self.problems)
        return out

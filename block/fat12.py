"""An empty FAT12 file system for a floppy image (what FORMAT writes).

Spec: Microsoft "FAT: General Overview of On-Disk Format" 1.03 (fatgen103):
boot sector and BPB, FAT type determination, volume initialisation, the
directory entry.  Only the system area is made: boot sector, the FATs and
an empty root directory (with a volume label entry when a label is given);
the data area stays zeros.  Files are the guest's business, or another
tool's: tests read and write the result with pyfatfs, an independent reader.

The boot sector's code is a non-system-disk stub (as FORMAT's): it prints
a message through the BIOS, waits for a key and asks the BIOS for the next
boot device (INT 19h).  The 55AA signature is written only because the
stub is real x86 code.
"""

import os
import time

from drivebay.layout import Layout

BYTES_PER_SECTOR = 512                 # BPB_BytsPerSec: floppies have 512-byte sectors
RESERVED_SECTORS = 1                   # BPB_RsvdSecCnt: FAT12/16 "should not be anything
                                       # other than 1"
NUMBER_OF_FATS = 2                     # BPB_NumFATs: "always contain the value 2" for compatibility
DIR_ENTRY_SIZE = 32
FAT12_MAX_CLUSTERS = 4084              # FAT type determination: "< 4085" clusters is FAT12
FAT12_EOC = 0xFFF                      # FAT[1]: end-of-clusterchain mark
EXTENDED_BOOT_SIGNATURE = 0x29         # BS_BootSig: the next three fields are present
DRIVE_NUMBER_FLOPPY = 0x00             # BS_DrvNum: "0x00 for floppy disks"
OEM_NAME = b"MSWIN4.1"                 # BS_OEMName: the value the spec recommends for compatibility
NO_LABEL = b"NO NAME    "              # BS_VolLab when the volume has no label
FILE_SYSTEM_TYPE = b"FAT12   "         # BS_FilSysType (informational only)
ATTR_VOLUME_ID = 0x08
SIGNATURE = b"\x55\xAA"                # bytes 510 and 511 of the boot sector
LABEL_LENGTH = 11
# Short-name characters the spec forbids (besides controls below 0x20 and the
# lowercase letters, which FORMAT turns into uppercase).
ILLEGAL_LABEL_CHARS = set(b'"*+,./:;<=>?[\\]|\x7f')

BOOT_SECTOR = Layout("FAT12 boot sector and BPB", "<", [
    ("BS_jmpBoot", "3s"),
    ("BS_OEMName", "8s"),
    ("BPB_BytsPerSec", "H"),
    ("BPB_SecPerClus", "B"),
    ("BPB_RsvdSecCnt", "H"),
    ("BPB_NumFATs", "B"),
    ("BPB_RootEntCnt", "H"),
    ("BPB_TotSec16", "H"),
    ("BPB_Media", "B"),
    ("BPB_FATSz16", "H"),
    ("BPB_SecPerTrk", "H"),
    ("BPB_NumHeads", "H"),
    ("BPB_HiddSec", "I"),
    ("BPB_TotSec32", "I"),
    ("BS_DrvNum", "B"),
    ("BS_Reserved1", "B"),
    ("BS_BootSig", "B"),
    ("BS_VolID", "I"),
    ("BS_VolLab", "11s"),
    ("BS_FilSysType", "8s"),
], size=62)

for _name, _offset in {"BPB_BytsPerSec": 11, "BPB_SecPerClus": 13, "BPB_RsvdSecCnt": 14,
                       "BPB_NumFATs": 16, "BPB_RootEntCnt": 17, "BPB_TotSec16": 19,
                       "BPB_Media": 21, "BPB_FATSz16": 22, "BPB_SecPerTrk": 24,
                       "BPB_NumHeads": 26, "BPB_HiddSec": 28, "BPB_TotSec32": 32,
                       "BS_DrvNum": 36, "BS_BootSig": 38, "BS_VolID": 39, "BS_VolLab": 43,
                       "BS_FilSysType": 54}.items():
    assert BOOT_SECTOR.offsets[_name] == _offset, _name
del _name, _offset

DIR_ENTRY = Layout("FAT directory entry", "<", [
    ("DIR_Name", "11s"),
    ("DIR_Attr", "B"),
    ("DIR_NTRes", "B"),
    ("DIR_CrtTimeTenth", "B"),
    ("DIR_CrtTime", "H"),
    ("DIR_CrtDate", "H"),
    ("DIR_LstAccDate", "H"),
    ("DIR_FstClusHI", "H"),
    ("DIR_WrtTime", "H"),
    ("DIR_WrtDate", "H"),
    ("DIR_FstClusLO", "H"),
    ("DIR_FileSize", "I"),
], size=DIR_ENTRY_SIZE)

# The boot code, loaded at 0000:7C00 and entered at BS_jmpBoot's target 0x3E.
BOOT_CODE_OFFSET = 0x3E
_MESSAGE = b"\r\nNon-system disk. Press a key to try the next boot device.\r\n\0"
_MESSAGE_OFFSET = 0x5A
BOOT_CODE = bytes([
    0x31, 0xC0,                         # 3E  xor ax, ax
    0x8E, 0xD8,                         # 40  mov ds, ax
    0xBE, 0x5A, 0x7C,                   # 42  mov si, 0x7C00 + _MESSAGE_OFFSET
    0xFC,                               # 45  cld
    0xAC,                               # 46  lodsb                (.print)
    0x84, 0xC0,                         # 47  test al, al
    0x74, 0x09,                         # 49  jz .wait (0x54)
    0xB4, 0x0E,                         # 4B  mov ah, 0x0E         teletype output
    0xBB, 0x07, 0x00,                   # 4D  mov bx, 0x0007       page 0, grey
    0xCD, 0x10,                         # 50  int 0x10
    0xEB, 0xF2,                         # 52  jmp .print (0x46)
    0x31, 0xC0,                         # 54  xor ax, ax           (.wait) read a key
    0xCD, 0x16,                         # 56  int 0x16
    0xCD, 0x19,                         # 58  int 0x19             next boot device
]) + _MESSAGE
JMP_BOOT = bytes([0xEB, BOOT_CODE_OFFSET - 2, 0x90])   # jmp short 0x3E; nop
assert BOOT_CODE_OFFSET + len(BOOT_CODE) <= 510
assert BOOT_CODE_OFFSET + BOOT_CODE.index(_MESSAGE) == _MESSAGE_OFFSET


def label_field(label):
    """The 11-byte label for BS_VolLab and the volume ID entry, or None.

    The label follows the short-name rules: ASCII, no forbidden characters,
    not starting with a space; lowercase letters become uppercase."""
    if label is None or label == "":
        return None
    text = label.upper()
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"volume label {label!r}: only ASCII characters are allowed") from None
    if len(raw) > LABEL_LENGTH:
        raise ValueError(f"volume label {label!r} is {len(raw)} characters; at most "
                         f"{LABEL_LENGTH}")
    bad = sorted({chr(c) for c in raw if c < 0x20 or c in ILLEGAL_LABEL_CHARS})
    if bad:
        raise ValueError(f"volume label {label!r} contains characters a FAT short name "
                         f"cannot hold: {' '.join(repr(c) for c in bad)}")
    if raw[0] == 0x20:
        raise ValueError(f"volume label {label!r} starts with a space")
    return raw.ljust(LABEL_LENGTH, b" ")


def fat_sectors(total_sectors, sectors_per_cluster, root_entries):
    """The smallest FAT (in sectors) that maps every cluster of the volume.

    fatgen103's FATSz formula is for FAT16/32 only; for FAT12 this counts:
    a FAT of n sectors leaves (total - reserved - 2n - root) / SecPerClus
    clusters, which need 1.5 bytes each, plus two reserved entries."""
    root = -(-root_entries * DIR_ENTRY_SIZE // BYTES_PER_SECTOR)
    n = 1
    while True:
        clusters = (total_sectors - RESERVED_SECTORS - NUMBER_OF_FATS * n - root) \
            // sectors_per_cluster
        if (clusters + 2) * 3 // 2 + ((clusters + 2) & 1) <= n * BYTES_PER_SECTOR:
            return n
        n += 1


def _dos_datetime(t):
    lt = time.localtime(t)
    date = (max(lt.tm_year, 1980) - 1980) << 9 | lt.tm_mon << 5 | lt.tm_mday
    clock = lt.tm_hour << 11 | lt.tm_min << 5 | lt.tm_sec // 2
    return date, clock


def system_area(total_sectors, sectors_per_track, heads, media, sectors_per_cluster,
                root_entries, label=None, volume_id=None, timestamp=None):
    """The bytes of an empty FAT12 volume's system area: boot sector, two FATs
    and the root directory.  Everything after it (the data area) is zeros."""
    lab = label_field(label)
    fatsz = fat_sectors(total_sectors, sectors_per_cluster, root_entries)
    root_sectors = -(-root_entries * DIR_ENTRY_SIZE // BYTES_PER_SECTOR)
    data_sectors = total_sectors - RESERVED_SECTORS - NUMBER_OF_FATS * fatsz - root_sectors
    clusters = data_sectors // sectors_per_cluster
    assert clusters <= FAT12_MAX_CLUSTERS, "not a FAT12 volume"
    if volume_id is None:
        volume_id = int.from_bytes(os.urandom(4), "little")
    boot = bytearray(BYTES_PER_SECTOR)
    BOOT_SECTOR.pack_into(boot, 0, BOOT_SECTOR.defaults(
        BS_jmpBoot=JMP_BOOT, BS_OEMName=OEM_NAME, BPB_BytsPerSec=BYTES_PER_SECTOR,
        BPB_SecPerClus=sectors_per_cluster, BPB_RsvdSecCnt=RESERVED_SECTORS,
        BPB_NumFATs=NUMBER_OF_FATS, BPB_RootEntCnt=root_entries, BPB_TotSec16=total_sectors,
        BPB_Media=media, BPB_FATSz16=fatsz, BPB_SecPerTrk=sectors_per_track,
        BPB_NumHeads=heads, BPB_HiddSec=0, BPB_TotSec32=0, BS_DrvNum=DRIVE_NUMBER_FLOPPY,
        BS_BootSig=EXTENDED_BOOT_SIGNATURE, BS_VolID=volume_id, BS_VolLab=lab or NO_LABEL,
        BS_FilSysType=FILE_SYSTEM_TYPE))
    boot[BOOT_CODE_OFFSET:BOOT_CODE_OFFSET + len(BOOT_CODE)] = BOOT_CODE
    boot[510:512] = SIGNATURE
    # FAT[0] holds BPB_Media in its low 8 bits, all other bits set; FAT[1] the
    # end-of-chain mark.  Two 12-bit entries pack into three bytes.
    fat = bytearray(fatsz * BYTES_PER_SECTOR)
    entry0, entry1 = 0xF00 | media, FAT12_EOC
    fat[0:3] = (entry0 | entry1 << 12).to_bytes(3, "little")
    root = bytearray(root_sectors * BYTES_PER_SECTOR)
    if lab is not None:
        date, clock = _dos_datetime(time.time() if timestamp is None else timestamp)
        DIR_ENTRY.pack_into(root, 0, DIR_ENTRY.defaults(
            DIR_Name=lab, DIR_Attr=ATTR_VOLUME_ID, DIR_WrtTime=clock, DIR_WrtDate=date))
    return bytes(boot) + bytes(fat) * NUMBER_OF_FATS + bytes(root)

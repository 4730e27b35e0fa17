"""IDENTIFY DEVICE and IDENTIFY PACKET DEVICE data (ACS-3 §7.12, §7.13; Table 45).

256 words, built from the device's state and the command table: the
command-set words 82-87 and 169 are computed from the rows of
hw/ata/commands.py (a command the table lacks is never advertised), the
strings from hw/identity.py.  Word numbers and bit positions below are the
spec's.

Values that are choices rather than facts:

* word 47: up to 128 sectors per DRQ block for READ/WRITE MULTIPLE
  (VirtualBox; QEMU offers 16).
* word 80: major versions ATA/ATAPI-4 through ACS-3 (bits 4-10); word 81:
  0 ("minor version not reported").
* word 88: UDMA 0-6 supported (VirtualBox; QEMU stops at 5).
* word 48 is 0: ACS-3 gives bit 0 to the Trusted Computing feature set; the
  "can do doubleword I/O" meaning QEMU and VirtualBox still set there is
  ATA-1's and would claim TCG support to a modern guest.
* word 105: at most 8 blocks of 512 bytes of LBA range entries per DATA SET
  MANAGEMENT command.
"""

from drivebay.hw import identity
from drivebay.hw.ata import commands as cmds
from drivebay.hw.ata.commands import DeviceKind, TransferKind

WORDS = 256
SECTOR_SIZE = 512
MAX_MULTIPLE = 128                 # word 47 bits 7:0 (VirtualBox's ATA_MAX_MULT_SECTORS)
MAX_DSM_BLOCKS = 8                 # word 105
MAJOR_VERSIONS = 0x07F0            # word 80: bits 4..10 = ATA/ATAPI-4 .. ACS-3
CYCLE_TIME_NS = 120                # words 65-68: PIO mode 4 / MWDMA mode 2 cycle time
INTEGRITY_SIGNATURE = 0xA5         # word 255 bits 7:0

# Word 0 (ACS-3 §7.12.7.2 / §7.13.6.2)
GENERAL_CONFIG_ATA = 0x0040        # bit 15 = 0: ATA device; bit 6: (obsolete) fixed device
# PACKET device: bits 15:14 = 10b ATAPI, 12:8 = 05h CD-ROM, bit 7 removable,
# 6:5 = 10b "DRQ within 50 us" of PACKET, 1:0 = 00b 12-byte command packets.
GENERAL_CONFIG_CDROM = 0x8000 | 0x05 << 8 | 0x0080 | 0b10 << 5
# Word 49 capabilities: bit 11 IORDY supported, bit 10 IORDY may be disabled,
# bit 9 LBA supported, bit 8 DMA supported.
CAPABILITIES = 1 << 11 | 1 << 10 | 1 << 9 | 1 << 8
# Word 53: bit 2 word 88 valid, bit 1 words 64-70 valid, bit 0 words 54-58 valid.
FIELD_VALIDITY_ATA = 0x0007
FIELD_VALIDITY_PACKET = 0x0006
# Words 60-61: "total number of user addressable logical sectors" for 28-bit
# commands, at most 0FFFFFFFh (ACS-3 §7.12.7.21).
MAX_LBA28_CAPACITY = 0x0FFFFFFF
SHALL_BE_ONE = 1 << 14             # words 50, 83, 84, 87, 93, 106: "shall be set to one"


def _put_string(words, first, count, text):
    raw = identity.ata_string(text, 2 * count)
    for i in range(count):
        words[first + i] = int.from_bytes(raw[2 * i:2 * i + 2], "little")


def _put_u32(words, first, value):
    words[first] = value & 0xFFFF
    words[first + 1] = value >> 16 & 0xFFFF


def _command_set_words(device, words):
    """Words 82-87 and 169 from the command and SET FEATURES tables."""
    for row in (*cmds.COMMANDS, *cmds.SET_FEATURES):
        if device.kind not in row.kinds:
            continue
        if getattr(row, "condition", None) and not getattr(device, row.condition):
            continue
        setting = getattr(row, "setting", None)
        for word, bit in row.supported:
            words[word] |= 1 << bit
            if 82 <= word <= 84 and (setting is None or getattr(device, setting)):
                words[word + 3] |= 1 << bit
    words[83] |= SHALL_BE_ONE
    words[84] |= SHALL_BE_ONE
    words[87] |= SHALL_BE_ONE


def _transfer_mode_words(device, words):
    kind, mode = device.dma_mode
    # Word 63: bits 2:0 MWDMA modes supported, bits 10:8 the selected one.
    words[63] = (1 << cmds.MAX_MWDMA_MODE + 1) - 1
    # Word 64: PIO modes 3 and 4 supported (bits 1:0); modes 0-2 are implied.
    words[64] = 0x0003
    words[65] = words[66] = words[67] = words[68] = CYCLE_TIME_NS
    # Word 88: bits 6:0 UDMA modes supported, bits 14:8 the selected one.
    words[88] = (1 << cmds.MAX_UDMA_MODE + 1) - 1
    if kind is TransferKind.MWDMA:
        words[63] |= 1 << (8 + mode)
    elif kind is TransferKind.UDMA:
        words[88] |= 1 << (8 + mode)


def _reset_result(device):
    """Word 93 (ACS-3 Table 45): hardware reset results.  Bit 14 shall be one,
    bit 13 CBLID- above ViH (an 80-conductor cable, so UDMA > 2 is usable),
    bits 7:0 for device 0 and 12:8 for device 1; in each, 01b in the
    "determined by" field means a jumper, and device 0 reports that it
    passed diagnostics (bit 3) and, with a device 1 present, saw PDIAG-
    (bit 4) and DASP- (bit 5)."""
    value = SHALL_BE_ONE | 1 << 13
    if device.unit == 0:
        value |= 1 | 0b01 << 1 | 1 << 3
        if device.peer_present:
            value |= 1 << 4 | 1 << 5
    else:
        value |= 1 << 8 | 0b01 << 9
    return value


def _finish(device, words):
    device.transport.identify_words(device, words)
    words[255] = INTEGRITY_SIGNATURE
    data = bytearray(b"".join(w.to_bytes(2, "little") for w in words))
    # Word 255 bits 15:8: the two's complement of the sum of bytes 0..510.
    data[511] = -sum(data[:511]) & 0xFF
    return bytes(data)


def identify_device(device):
    """The 512 bytes of IDENTIFY DEVICE for a disk."""
    assert device.kind is DeviceKind.DISK
    words = [0] * WORDS
    sectors = device.sectors
    default, current = device.default_chs, device.chs
    words[0] = GENERAL_CONFIG_ATA
    words[1], words[3], words[6] = default.cylinders, default.heads, default.sectors
    _put_string(words, 10, 10, device.serial)
    _put_string(words, 23, 4, identity.FIRMWARE_REVISION)
    _put_string(words, 27, 20, device.model)
    words[47] = 0x8000 | MAX_MULTIPLE          # bits 15:8 shall be 80h
    words[49] = CAPABILITIES
    words[50] = SHALL_BE_ONE
    words[51] = words[52] = 0x0200             # obsolete PIO/DMA timing modes (mode 2)
    words[53] = FIELD_VALIDITY_ATA
    if current is not None:
        words[54], words[55], words[56] = current.cylinders, current.heads, current.sectors
        _put_u32(words, 57, min(current.capacity, sectors))
    # Word 59: bit 8 "multiple sector setting is valid", bits 7:0 the setting.
    words[59] = 0x0100 | device.multiple_count
    _put_u32(words, 60, min(sectors, MAX_LBA28_CAPACITY))
    _transfer_mode_words(device, words)
    words[80] = MAJOR_VERSIONS
    words[81] = 0
    _command_set_words(device, words)
    words[93] = _reset_result(device)
    for i in range(4):                         # words 100-103: 48-bit capacity
        words[100 + i] = sectors >> (16 * i) & 0xFFFF
    if device.discard_enabled:
        words[105] = MAX_DSM_BLOCKS
    words[106] = SHALL_BE_ONE                  # one 512-byte logical sector per physical sector
    if device.non_rotational:
        words[217] = 0x0001                    # "non-rotating media (e.g., solid state device)"
    return _finish(device, words)


def identify_packet_device(device):
    """The 512 bytes of IDENTIFY PACKET DEVICE for the CD/DVD drive."""
    assert device.kind is DeviceKind.PACKET
    words = [0] * WORDS
    words[0] = GENERAL_CONFIG_CDROM
    _put_string(words, 10, 10, device.serial)
    _put_string(words, 23, 4, identity.FIRMWARE_REVISION)
    _put_string(words, 27, 20, device.model)
    words[49] = CAPABILITIES
    words[50] = SHALL_BE_ONE
    words[53] = FIELD_VALIDITY_PACKET
    _transfer_mode_words(device, words)
    # Words 71-72: typical time (us) from PACKET to bus release / to clearing
    # BSY after SERVICE; only meaningful with overlap, reported as QEMU does.
    words[71] = words[72] = 30
    words[80] = MAJOR_VERSIONS
    _command_set_words(device, words)
    words[93] = _reset_result(device)
    return _finish(device, words)

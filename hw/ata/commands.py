"""The ATA command set as data: opcode -> handler, device kinds, protocol.

One row per opcode (ACS-3 §7 and the command code table, Annex B; the
obsolete aliases from ATA/ATAPI-6 Table E.2 that older guests still issue
are separate rows).  The same rows feed

* dispatch in AtaDevice.execute (kind check, busy check, protocol);
* IDENTIFY's command-set words 82-87 and 169 (``supported``: the (word,
  bit) a row sets; the matching "enabled" word 85-87 is word + 3, except for
  rows with a ``setting`` that can be switched off);
* trace names (``name`` is the spec's, spaces as underscores).

SET FEATURES subcommands are a second table of the same shape.

A controller never looks at this table; the device does.  Handlers are
AtaDevice method names, checked when hw/ata/device.py is imported.
"""

import enum
from dataclasses import dataclass


class DeviceKind(enum.Enum):
    DISK = "disk"            # ATA device (general feature set)
    PACKET = "packet"        # ATAPI device (PACKET feature set)


class Protocol(enum.Enum):
    """ATA/ATAPI-6 §9 command protocols."""

    NON_DATA = "non-data"
    PIO_IN = "pio-in"
    PIO_OUT = "pio-out"
    DMA = "dma"
    PACKET = "packet"
    DEVICE_RESET = "device-reset"
    DIAGNOSTIC = "execute-device-diagnostic"
    NCQ = "ncq"                  # First-party DMA queued (SATA NCQ; ACS-3 §7.21, §7.61)


class DataDirection(enum.Enum):
    NONE = "none"
    IN = "in"                # device to host
    OUT = "out"              # host to device


DISK = frozenset({DeviceKind.DISK})
PACKET = frozenset({DeviceKind.PACKET})
BOTH = frozenset({DeviceKind.DISK, DeviceKind.PACKET})


@dataclass(frozen=True)
class AtaCommand:
    opcode: int
    name: str
    handler: str
    kinds: frozenset
    protocol: Protocol
    direction: DataDirection = DataDirection.NONE
    lba48: bool = False                 # 48-bit command: HOB registers are inputs
    multiple: bool = False              # DRQ blocks of the SET MULTIPLE MODE size
    busy_ok: bool = False               # accepted while BSY or DRQ (DEVICE RESET only)
    packet_signature: bool = False      # a PACKET device aborts it with its signature in the task file
    supported: tuple = ()               # IDENTIFY (word, bit) pairs this command makes true
    condition: str = None               # device attribute that must be true for the command to exist


_IN, _OUT = DataDirection.IN, DataDirection.OUT
NON, PIN, POUT, DMA = Protocol.NON_DATA, Protocol.PIO_IN, Protocol.PIO_OUT, Protocol.DMA

# Feature-set bits of IDENTIFY (ACS-3 Table 45): word 82 bit 14 NOP, bit 9
# DEVICE RESET, bit 4 PACKET feature set, bit 3 Power Management feature set;
# word 83 bit 13 FLUSH CACHE EXT, bit 12 FLUSH CACHE, bit 10 48-bit Address
# feature set; word 169 bit 0 TRIM bit of DATA SET MANAGEMENT.
_NOP = ((82, 14),)
_DEVICE_RESET = ((82, 9),)
_PACKET = ((82, 4),)
_PM = ((82, 3),)
_FLUSH = ((83, 12),)
_FLUSH_EXT = ((83, 13),)
_LBA48 = ((83, 10),)
_TRIM = ((169, 0),)
_GPL = ((84, 5),)                # word 84 bit 5: General Purpose Logging feature set (87 bit 5: copy)

COMMANDS = (
    AtaCommand(0x00, "NOP", "cmd_nop", BOTH, NON, supported=_NOP),
    AtaCommand(0x06, "DATA_SET_MANAGEMENT", "cmd_data_set_management", DISK, DMA, _OUT, lba48=True,
               supported=_TRIM, condition="discard_enabled"),
    AtaCommand(0x08, "DEVICE_RESET", "cmd_device_reset", PACKET, Protocol.DEVICE_RESET, busy_ok=True,
               supported=_DEVICE_RESET),
    AtaCommand(0x10, "RECALIBRATE", "cmd_recalibrate", DISK, NON),
    AtaCommand(0x20, "READ_SECTORS", "cmd_read_write", DISK, PIN, _IN, packet_signature=True),
    AtaCommand(0x21, "READ_SECTORS_WITHOUT_RETRY", "cmd_read_write", DISK, PIN, _IN, packet_signature=True),
    AtaCommand(0x24, "READ_SECTORS_EXT", "cmd_read_write", DISK, PIN, _IN, lba48=True, supported=_LBA48),
    AtaCommand(0x25, "READ_DMA_EXT", "cmd_read_write", DISK, DMA, _IN, lba48=True),
    AtaCommand(0x27, "READ_NATIVE_MAX_ADDRESS_EXT", "cmd_read_native_max", DISK, NON, lba48=True),
    AtaCommand(0x29, "READ_MULTIPLE_EXT", "cmd_read_write", DISK, PIN, _IN, lba48=True, multiple=True),
    AtaCommand(0x2F, "READ_LOG_EXT", "cmd_read_log_ext", DISK, PIN, _IN, lba48=True, supported=_GPL),
    AtaCommand(0x30, "WRITE_SECTORS", "cmd_read_write", DISK, POUT, _OUT),
    AtaCommand(0x31, "WRITE_SECTORS_WITHOUT_RETRY", "cmd_read_write", DISK, POUT, _OUT),
    AtaCommand(0x34, "WRITE_SECTORS_EXT", "cmd_read_write", DISK, POUT, _OUT, lba48=True),
    AtaCommand(0x35, "WRITE_DMA_EXT", "cmd_read_write", DISK, DMA, _OUT, lba48=True),
    AtaCommand(0x39, "WRITE_MULTIPLE_EXT", "cmd_read_write", DISK, POUT, _OUT, lba48=True, multiple=True),
    AtaCommand(0x40, "READ_VERIFY_SECTORS", "cmd_read_verify", DISK, NON),
    AtaCommand(0x41, "READ_VERIFY_SECTORS_WITHOUT_RETRY", "cmd_read_verify", DISK, NON),
    AtaCommand(0x42, "READ_VERIFY_SECTORS_EXT", "cmd_read_verify", DISK, NON, lba48=True),
    # NCQ exists only where the transport carries queued commands (SATA):
    # IDENTIFY word 76 bit 8 is the transport's (AtaTransport.identify_words).
    AtaCommand(0x60, "READ_FPDMA_QUEUED", "cmd_fpdma_queued", DISK, Protocol.NCQ, _IN, lba48=True,
               condition="ncq_supported"),
    AtaCommand(0x61, "WRITE_FPDMA_QUEUED", "cmd_fpdma_queued", DISK, Protocol.NCQ, _OUT, lba48=True,
               condition="ncq_supported"),
    AtaCommand(0x90, "EXECUTE_DEVICE_DIAGNOSTIC", "cmd_execute_device_diagnostic", BOTH, Protocol.DIAGNOSTIC),
    AtaCommand(0x91, "INITIALIZE_DEVICE_PARAMETERS", "cmd_initialize_device_parameters", DISK, NON),
    AtaCommand(0xA0, "PACKET", "cmd_packet", PACKET, Protocol.PACKET, supported=_PACKET),
    AtaCommand(0xA1, "IDENTIFY_PACKET_DEVICE", "cmd_identify", PACKET, PIN, _IN),
    AtaCommand(0xC4, "READ_MULTIPLE", "cmd_read_write", DISK, PIN, _IN, multiple=True),
    AtaCommand(0xC5, "WRITE_MULTIPLE", "cmd_read_write", DISK, POUT, _OUT, multiple=True),
    AtaCommand(0xC6, "SET_MULTIPLE_MODE", "cmd_set_multiple_mode", DISK, NON),
    AtaCommand(0xC8, "READ_DMA", "cmd_read_write", DISK, DMA, _IN),
    AtaCommand(0xC9, "READ_DMA_WITHOUT_RETRY", "cmd_read_write", DISK, DMA, _IN),
    AtaCommand(0xCA, "WRITE_DMA", "cmd_read_write", DISK, DMA, _OUT),
    AtaCommand(0xCB, "WRITE_DMA_WITHOUT_RETRY", "cmd_read_write", DISK, DMA, _OUT),
    AtaCommand(0xE0, "STANDBY_IMMEDIATE", "cmd_power", BOTH, NON, supported=_PM),
    AtaCommand(0xE1, "IDLE_IMMEDIATE", "cmd_power", BOTH, NON, supported=_PM),
    AtaCommand(0xE2, "STANDBY", "cmd_power", BOTH, NON, supported=_PM),
    AtaCommand(0xE3, "IDLE", "cmd_power", BOTH, NON, supported=_PM),
    AtaCommand(0xE5, "CHECK_POWER_MODE", "cmd_check_power_mode", BOTH, NON, supported=_PM),
    AtaCommand(0xE7, "FLUSH_CACHE", "cmd_flush_cache", DISK, NON, supported=_FLUSH),
    AtaCommand(0xEA, "FLUSH_CACHE_EXT", "cmd_flush_cache", DISK, NON, lba48=True, supported=_FLUSH_EXT),
    AtaCommand(0xEC, "IDENTIFY_DEVICE", "cmd_identify", DISK, PIN, _IN, packet_signature=True),
    AtaCommand(0xEF, "SET_FEATURES", "cmd_set_features", BOTH, NON),
    AtaCommand(0xF8, "READ_NATIVE_MAX_ADDRESS", "cmd_read_native_max", DISK, NON),
)

BY_OPCODE = {c.opcode: c for c in COMMANDS}
assert len(BY_OPCODE) == len(COMMANDS), "an opcode is declared twice"


def command_name(opcode):
    row = BY_OPCODE.get(opcode)
    return row.name if row else f"UNKNOWN_{opcode:02X}h"


# -- SET FEATURES subcommands (ACS-3 §7.45 Table 137) ----------------------------------


@dataclass(frozen=True)
class SetFeature:
    code: int
    name: str
    handler: str
    kinds: frozenset
    supported: tuple = ()       # (word, bit) in 82-84
    setting: str = None         # device attribute reported in the "enabled" word (85-87)


SET_FEATURES = (
    SetFeature(0x02, "ENABLE_VOLATILE_WRITE_CACHE", "feature_write_cache", DISK,
               supported=((82, 5),), setting="write_cache"),
    SetFeature(0x03, "SET_TRANSFER_MODE", "feature_transfer_mode", BOTH),
    # Enable/disable a SATA feature (ACS-3 §7.45, subcommands 10h/90h; the
    # Count field selects it): only those the transport offers
    # (AtaTransport.sata_features), so IDE aborts them.
    SetFeature(0x10, "ENABLE_SATA_FEATURE", "feature_sata", BOTH),
    SetFeature(0x55, "DISABLE_READ_LOOK_AHEAD", "feature_look_ahead", DISK,
               supported=((82, 6),), setting="look_ahead"),
    SetFeature(0x66, "DISABLE_REVERTING_TO_POWER_ON_DEFAULTS", "feature_revert", BOTH),
    SetFeature(0x82, "DISABLE_VOLATILE_WRITE_CACHE", "feature_write_cache", DISK),
    SetFeature(0x90, "DISABLE_SATA_FEATURE", "feature_sata", BOTH),
    SetFeature(0xAA, "ENABLE_READ_LOOK_AHEAD", "feature_look_ahead", DISK),
    SetFeature(0xCC, "ENABLE_REVERTING_TO_POWER_ON_DEFAULTS", "feature_revert", BOTH),
)
FEATURE_BY_CODE = {f.code: f for f in SET_FEATURES}
assert len(FEATURE_BY_CODE) == len(SET_FEATURES)


# -- Transfer modes (ACS-3 §7.45.6, Table 138: the Count field of subcommand 03h) ------


class TransferKind(enum.Enum):
    PIO = "PIO"
    MWDMA = "MWDMA"
    UDMA = "UDMA"


# Count bits 7:3 select the kind, bits 2:0 the mode.
TRANSFER_PIO_DEFAULT = 0x00             # PIO default mode
TRANSFER_PIO_DEFAULT_NO_IORDY = 0x01    # PIO default mode, disable IORDY
TRANSFER_PIO_FLOW_CONTROL = 0x08        # 00001b: PIO flow control transfer mode x
TRANSFER_MWDMA = 0x20                   # 00100b: multiword DMA mode x
TRANSFER_UDMA = 0x40                    # 01000b: Ultra DMA mode x

# SET FEATURES 10h/90h Count values (ACS-3 §7.45, "SATA feature" table):
SATA_FEATURE_ASYNC_NOTIFICATION = 0x05  # asynchronous notification (ATAPI media events)

# What the device supports (IDENTIFY words 63, 64, 88).  VirtualBox: PIO 0-4,
# MWDMA 0-2, UDMA 0-6.
MAX_PIO_MODE = 4
MAX_MWDMA_MODE = 2
MAX_UDMA_MODE = 6


def decode_transfer_mode(count):
    """(TransferKind, mode) for a SET TRANSFER MODE Count value, or None if
    the device does not support it (the command then aborts)."""
    if count in (TRANSFER_PIO_DEFAULT, TRANSFER_PIO_DEFAULT_NO_IORDY):
        return TransferKind.PIO, 0
    kind, mode = count & 0xF8, count & 0x07
    if kind == TRANSFER_PIO_FLOW_CONTROL and mode <= MAX_PIO_MODE:
        return TransferKind.PIO, mode
    if kind == TRANSFER_MWDMA and mode <= MAX_MWDMA_MODE:
        return TransferKind.MWDMA, mode
    if kind == TRANSFER_UDMA and mode <= MAX_UDMA_MODE:
        return TransferKind.UDMA, mode
    return None

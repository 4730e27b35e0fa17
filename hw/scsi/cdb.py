"""Command descriptor blocks: lengths, field decoding and the command tables.

SAM-5 5.2 / SPC-4 4.2 define the CDB: byte 0 is the OPERATION CODE, whose
top three bits (the GROUP CODE) give the CDB length for the standard groups
(SPC-4 4.2.5.1, table 9): group 0 six bytes, groups 1 and 2 ten bytes, group
4 sixteen bytes, group 5 twelve bytes; group 3 is reserved (7Fh: variable
length) and groups 6 and 7 are vendor specific.  The last byte of every
fixed-length CDB is CONTROL (SAM-5 5.2, SPC-4 4.2.5.7): NACA in bit 2 and
the obsolete LINK in bit 0.  Multi-byte fields are big-endian (SPC-4 4.3.1).

Each command set (spc.py, sbc.py, mmc.py, passthrough.py) declares its
commands once as ``Command`` rows: opcode, spec mnemonic, the parse and
execute functions, data direction, the peripheral device types it serves
and flags.  A device's dispatch table is built from those rows; the same
rows feed REPORT SUPPORTED OPERATION CODES and the names in trace lines.

Row functions (written by each command set):

* ``parse(lun, req)`` runs when the CDB arrives: decode and check fields,
  store what ``execute`` needs in ``req.args`` (also shown in traces) and
  set ``req.xfer_length`` (and ``req.direction`` when it depends on the
  CDB).  It raises ``sense.CheckCondition`` for a guest mistake, so the
  data phase is skipped.
* ``execute(lun, req, data_out)`` does the work and returns the data-in
  bytes (anything bytes-like; the dispatcher truncates it to
  ``req.xfer_length``) or None.  It raises ``CheckCondition`` too.
"""

import enum
from dataclasses import dataclass
from typing import Callable


class Direction(enum.Enum):
    """Data phase direction of a command, seen from the initiator."""
    NONE = 0
    IN = 1          # device to initiator (data-in buffer)
    OUT = 2         # initiator to device (data-out buffer)


class PeripheralDeviceType(enum.IntEnum):
    """PERIPHERAL DEVICE TYPE of the standard INQUIRY data (SPC-4 6.4.2, table 141)."""
    DIRECT_ACCESS = 0x00        # SBC-3 disk
    CD_DVD = 0x05               # MMC-6 CD/DVD device
    UNKNOWN = 0x1F              # unknown or no device type


DISK = PeripheralDeviceType.DIRECT_ACCESS
CDROM = PeripheralDeviceType.CD_DVD
BOTH = frozenset({DISK, CDROM})


class Flag(enum.IntFlag):
    NONE = 0
    # Executes while a unit attention is pending, without reporting or
    # clearing it: INQUIRY, REPORT LUNS, REQUEST SENSE (SAM-5 5.14), and for
    # MMC also GET CONFIGURATION and GET EVENT STATUS NOTIFICATION.
    ALLOW_UA = enum.auto()
    # Accesses the medium: NOT READY (MEDIUM NOT PRESENT) while there is none.
    NEEDS_MEDIUM = enum.auto()
    # Changes the medium: refused on write-protected media and by passthrough.
    WRITES = enum.auto()


# SPC-4 4.2.5.1, table 9: CDB length by GROUP CODE (None: reserved/vendor specific).
GROUP_CDB_LENGTH = (6, 10, 10, None, 16, 12, None, None)

CONTROL_NACA = 0x04
CONTROL_LINK = 0x01


def cdb_length(opcode):
    """The CDB length the GROUP CODE of ``opcode`` implies, or None."""
    return GROUP_CDB_LENGTH[opcode >> 5]


def u16(cdb, offset):
    return int.from_bytes(cdb[offset:offset + 2], "big")


def u24(cdb, offset):
    return int.from_bytes(cdb[offset:offset + 3], "big")


def u32(cdb, offset):
    return int.from_bytes(cdb[offset:offset + 4], "big")


def u64(cdb, offset):
    return int.from_bytes(cdb[offset:offset + 8], "big")


def lba6(cdb):
    """The 21-bit LOGICAL BLOCK ADDRESS of READ(6)/WRITE(6) (SBC-3 5.8, 5.31)."""
    return ((cdb[1] & 0x1F) << 16) | (cdb[2] << 8) | cdb[3]


def lba_and_blocks(cdb):
    """LOGICAL BLOCK ADDRESS and TRANSFER LENGTH of a READ/WRITE/VERIFY-shaped
    CDB of any size.

    6-byte: LBA bytes 1-3 (21 bits), length byte 4 (0 means 256, SBC-3 5.8);
    10-byte: LBA bytes 2-5, length bytes 7-8; 12-byte: LBA bytes 2-5, length
    bytes 6-9; 16-byte: LBA bytes 2-9, length bytes 10-13.
    """
    size = cdb_length(cdb[0])
    if size == 6:
        return lba6(cdb), cdb[4] or 256
    if size == 10:
        return u32(cdb, 2), u16(cdb, 7)
    if size == 12:
        return u32(cdb, 2), u32(cdb, 6)
    assert size == 16, f"no LBA layout for opcode {cdb[0]:02X}h"
    return u64(cdb, 2), u32(cdb, 10)


def allocation_length(cdb):
    """ALLOCATION LENGTH where SPC-4 puts it for the common shapes: byte 4 of
    6-byte CDBs, bytes 7-8 of 10-byte CDBs, bytes 6-9 of 12-byte CDBs,
    bytes 10-13 of 16-byte CDBs."""
    size = cdb_length(cdb[0])
    if size == 6:
        return cdb[4]
    if size == 10:
        return u16(cdb, 7)
    if size == 12:
        return u32(cdb, 6)
    assert size == 16
    return u32(cdb, 10)


@dataclass(frozen=True)
class Command:
    opcode: int
    name: str                       # spec mnemonic, verbatim: READ_10, INQUIRY
    parse: Callable | None          # parse(lun, req): decode + check; None: nothing to check
    execute: Callable | None        # execute(lun, req, data_out) -> data-in | None
    direction: Direction            # default direction; parse may override
    devices: frozenset = BOTH
    flags: Flag = Flag.NONE
    service_action: int | None = None      # for opcodes with a SERVICE ACTION in byte 1 bits 4:0
    # available(lun) -> bool: the command exists only while this holds
    # (e.g. UNMAP only with discard enabled); None: always.
    available: Callable | None = None

    @property
    def cdb_length(self):
        return cdb_length(self.opcode)


def command_table(device_type, *rows):
    """A dispatch table for one device type from command-set rows:
    opcode -> Command, or opcode -> {service action -> Command}."""
    table = {}
    for row in rows:
        if device_type not in row.devices:
            continue
        if row.service_action is None:
            assert row.opcode not in table, f"opcode {row.opcode:02X}h declared twice"
            table[row.opcode] = row
        else:
            actions = table.setdefault(row.opcode, {})
            assert isinstance(actions, dict) and row.service_action not in actions, \
                f"opcode {row.opcode:02X}h/{row.service_action:02X}h declared twice"
            actions[row.service_action] = row
    return table


def table_rows(table):
    """Every Command in a dispatch table, by opcode then service action."""
    for opcode in sorted(table):
        entry = table[opcode]
        if isinstance(entry, dict):
            for action in sorted(entry):
                yield entry[action]
        else:
            yield entry


# SAM-5 4.7: single-level LUNs up to 255 use peripheral device addressing,
# up to 16383 flat space addressing.
MAX_LUN = 16383
PERIPHERAL_ADDRESSING_MAX = 255


def encode_lun(number):
    """The 8-byte LUN field of REPORT LUNS (SAM-5 4.7): peripheral device
    addressing below 256, flat space addressing (01b) up to 16383."""
    assert 0 <= number <= MAX_LUN
    if number <= PERIPHERAL_ADDRESSING_MAX:
        return bytes([0, number]) + bytes(6)
    return bytes([0x40 | (number >> 8), number & 0xFF]) + bytes(6)


def decode_lun(field):
    """A single-level LUN number from an 8-byte LUN field, or None when it
    uses another addressing method or more than one level."""
    field = bytes(field)
    if len(field) != 8 or any(field[2:]):
        return None
    method = field[0] >> 6
    if method == 0 and field[0] == 0:
        return field[1]
    if method == 1:
        return ((field[0] & 0x3F) << 8) | field[1]
    return None

"""FISes and the in-memory structures of AHCI, declared once.

Sources: Serial ATA AHCI 1.3.1 §4.2.1 "Received FIS Structure", §4.2.2
"Command List Structure" (command header), §4.2.3 "Command Table" (CFIS,
ACMD, PRDT); the FIS layouts of Serial ATA Revision 2.6 §10.3 ("Register -
Host to Device", "Register - Device to Host", "Set Device Bits - Device to
Host", "DMA Setup - Device to Host or Host to Device", "PIO Setup - Device
to Host").  Little-endian throughout; sizes checked at import.
"""

import collections
import struct

from drivebay.hw.ata.taskfile import Register as TF
from drivebay.layout import Layout

# FIS types (SATA 2.6 §10.3.1).
FIS_TYPE_REG_H2D = 0x27
FIS_TYPE_REG_D2H = 0x34
FIS_TYPE_DMA_ACTIVATE = 0x39
FIS_TYPE_DMA_SETUP = 0x41
FIS_TYPE_DATA = 0x46
FIS_TYPE_BIST = 0x58
FIS_TYPE_PIO_SETUP = 0x5F
FIS_TYPE_SET_DEVICE_BITS = 0xA1

# Flag bits of byte 1.
H2D_C = 0x80                 # 1: the Command register is updated (else Device Control)
FLAG_D = 0x20                # PIO/DMA Setup: 1 = data from device to host
FLAG_I = 0x40                # interrupt
FLAG_A = 0x80                # DMA Setup: auto-activate
SDB_N = 0x80                 # Set Device Bits: notification (asynchronous notification)
PM_PORT = 0x0F

REG_H2D = Layout("Register H2D FIS", "<", [
    ("FIS_TYPE", "B"), ("PM_C", "B"), ("COMMAND", "B"), ("FEATURES", "B"),
    ("LBA_LOW", "B"), ("LBA_MID", "B"), ("LBA_HIGH", "B"), ("DEVICE", "B"),
    ("LBA_LOW_EXP", "B"), ("LBA_MID_EXP", "B"), ("LBA_HIGH_EXP", "B"), ("FEATURES_EXP", "B"),
    ("COUNT", "B"), ("COUNT_EXP", "B"), ("ICC", "B"), ("CONTROL", "B"),
    ("AUXILIARY", "I"),
], size=20)

REG_D2H = Layout("Register D2H FIS", "<", [
    ("FIS_TYPE", "B"), ("PM_I", "B"), ("STATUS", "B"), ("ERROR", "B"),
    ("LBA_LOW", "B"), ("LBA_MID", "B"), ("LBA_HIGH", "B"), ("DEVICE", "B"),
    ("LBA_LOW_EXP", "B"), ("LBA_MID_EXP", "B"), ("LBA_HIGH_EXP", "B"), ("reserved11", "B"),
    ("COUNT", "B"), ("COUNT_EXP", "B"), ("reserved14", "6s"),
], size=20)

PIO_SETUP = Layout("PIO Setup FIS", "<", [
    ("FIS_TYPE", "B"), ("FLAGS", "B"), ("STATUS", "B"), ("ERROR", "B"),
    ("LBA_LOW", "B"), ("LBA_MID", "B"), ("LBA_HIGH", "B"), ("DEVICE", "B"),
    ("LBA_LOW_EXP", "B"), ("LBA_MID_EXP", "B"), ("LBA_HIGH_EXP", "B"), ("reserved11", "B"),
    ("COUNT", "B"), ("COUNT_EXP", "B"), ("reserved14", "B"), ("E_STATUS", "B"),
    ("TRANSFER_COUNT", "H"), ("reserved18", "2s"),
], size=20)

DMA_SETUP = Layout("DMA Setup FIS", "<", [
    ("FIS_TYPE", "B"), ("FLAGS", "B"), ("reserved2", "2s"),
    ("DMA_BUFFER_IDENTIFIER", "Q"),      # NCQ: bits 4:0 the tag (SATA 2.6 §13.6.4.2)
    ("reserved12", "I"), ("DMA_BUFFER_OFFSET", "I"), ("DMA_TRANSFER_COUNT", "I"),
    ("reserved24", "I"),
], size=28)

SET_DEVICE_BITS = Layout("Set Device Bits FIS", "<", [
    ("FIS_TYPE", "B"), ("FLAGS", "B"),
    ("STATUS", "B"),                     # bits 6:4 Status-Hi, 2:0 Status-Lo
    ("ERROR", "B"),
    ("SACTIVE", "I"),                    # NCQ: the tags completed (SATA 2.6 §13.6.4.3)
], size=8)
# "Status-Hi" and "Status-Lo": the Status bits an SDB FIS can change (not BSY, not DRQ).
SDB_STATUS_MASK = 0x77

# -- Received FIS area (§4.2.1): 256 bytes at PxFB ------------------------------------------
RX_FIS_SIZE = 0x100
RX_DSFIS = 0x00              # DMA Setup FIS
RX_PSFIS = 0x20              # PIO Setup FIS
RX_RFIS = 0x40               # D2H Register FIS
RX_SDBFIS = 0x58             # Set Device Bits FIS
RX_UFIS = 0x60               # unknown FIS (up to 64 bytes)
RX_FIS_ALIGN = 0x100         # PxFB bits 7:0 are reserved

# -- Command list (§4.2.2): 32 headers of 32 bytes at PxCLB --------------------------------
COMMAND_HEADER = Layout("command header", "<", [
    ("DW0", "H"),            # CFL 4:0, A 5, W 6, P 7, R 8, B 9, C 10, PMP 15:12
    ("PRDTL", "H"),
    ("PRDBC", "I"),
    ("CTBA", "I"),           # bits 6:0 reserved: 128-byte aligned
    ("CTBAU", "I"),
    ("reserved16", "16s"),
], size=32)
COMMAND_LIST_SLOTS = 32
COMMAND_LIST_ALIGN = 0x400   # PxCLB bits 9:0 are reserved
HEADER_PRDBC = COMMAND_HEADER.offsets["PRDBC"]
CH_CFL = 0x001F              # command FIS length in dwords, 2..16 legal
CH_A = 0x0020                # ATAPI
CH_W = 0x0040                # write (host to device)
CH_P = 0x0080                # prefetchable
CH_R = 0x0100                # reset
CH_B = 0x0200                # BIST
CH_C = 0x0400                # clear busy upon R_OK
CH_PMP_SHIFT = 12
CFL_MIN, CFL_MAX = 2, 16     # §4.2.2: "a value of 0h or 1h is illegal"; the CFIS area is 64 bytes
CTBA_MASK = 0xFFFFFF80

# -- Command table (§4.2.3) --------------------------------------------------------------------
CT_CFIS = 0x00               # command FIS, up to 64 bytes
CT_ACMD = 0x40               # ATAPI command, 12 or 16 bytes
CT_ACMD_SIZE = 16
CT_PRDT = 0x80
PRD = Layout("physical region descriptor", "<", [
    ("DBA", "I"),            # bit 0 reserved: word aligned
    ("DBAU", "I"),
    ("reserved8", "I"),
    ("DW3", "I"),            # DBC 21:0 (byte count - 1, bit 0 always 1), I bit 31
], size=16)
PRD_DBA_MASK = 0xFFFFFFFE
PRD_DBC_MASK = 0x003FFFFF    # §4.2.3.3: at most 4 MiB per entry
PRD_I = 0x80000000

# The task file registers a Register FIS carries, FIS field names -> TaskFile
# register, current (7:0) and previous ("exp", 15:8) contents.
TASKFILE_FIELDS = (
    (TF.FEATURES, "FEATURES", "FEATURES_EXP"),
    (TF.COUNT, "COUNT", "COUNT_EXP"),
    (TF.LBA_LOW, "LBA_LOW", "LBA_LOW_EXP"),
    (TF.LBA_MID, "LBA_MID", "LBA_MID_EXP"),
    (TF.LBA_HIGH, "LBA_HIGH", "LBA_HIGH_EXP"),
)


# -- Per-command decoding -----------------------------------------------------------------
# The command path runs for every command a guest issues, so it decodes the
# command header and PRDs with plain structs into tuples (no Record per
# structure) and addresses FIS bytes by the offsets of the Layouts above.
# Each struct is checked against its Layout at import.
CommandHeader = collections.namedtuple("CommandHeader", "DW0 PRDTL PRDBC CTBA CTBAU")
HEADER_WORDS = struct.Struct("<HHIII")
PRD_WORDS = struct.Struct("<IIII")             # DBA, DBAU, reserved, DW3


def _check_prefix(words, layout, fields):
    """``words`` decodes ``fields``, the first fields of ``layout``, in order."""
    at = 0
    for field, code in zip(fields, words.format.lstrip("<")):
        if layout.offsets[field] != at:
            raise AssertionError(f"{layout.name}: {field} at {layout.offsets[field]}, decoder has {at}")
        at += struct.calcsize("<" + code)


_check_prefix(HEADER_WORDS, COMMAND_HEADER, CommandHeader._fields)
_check_prefix(PRD_WORDS, PRD, PRD.fields)
assert PRD_WORDS.size == PRD.size


def byte_offsets(layout, names):
    """Offsets of one-byte fields ``names`` of ``layout`` (for indexing raw FIS bytes)."""
    return tuple(layout.offsets[name] for name in names)


# (register, offset of its current byte, offset of its previous byte) in each
# FIS; a D2H FIS carries no Features.
H2D_TASKFILE = tuple((reg,) + byte_offsets(REG_H2D, (cur, prev)) for reg, cur, prev in TASKFILE_FIELDS)
D2H_TASKFILE = tuple((reg,) + byte_offsets(REG_D2H, (cur, prev)) for reg, cur, prev in TASKFILE_FIELDS[1:])
H2D_TYPE, H2D_PM_C, H2D_COMMAND, H2D_DEVICE, H2D_CONTROL = byte_offsets(
    REG_H2D, ("FIS_TYPE", "PM_C", "COMMAND", "DEVICE", "CONTROL"))
D2H_PM_I, D2H_STATUS, D2H_ERROR, D2H_DEVICE = byte_offsets(REG_D2H, ("PM_I", "STATUS", "ERROR", "DEVICE"))

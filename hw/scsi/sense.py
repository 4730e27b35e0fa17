"""Sense data: the named conditions and their two wire formats.

SPC-4 4.5 defines sense data: a SENSE KEY (table 27) with an ADDITIONAL
SENSE CODE and QUALIFIER (ASC/ASCQ, Annex D table D.1), returned either in
fixed format (response code 70h, 4.5.3) or in descriptor format (72h,
4.5.2).  The format is chosen by REQUEST SENSE's DESC bit and, for sense
returned with CHECK CONDITION, by the D_SENSE bit of the Control mode page
(SPC-4 7.5.8).

``CheckCondition`` is how the command sets (spc, sbc, mmc) end a command
with CHECK CONDITION: bus.py catches it and turns it into a status; it never
leaves this package.
"""

import enum
from dataclasses import dataclass


class SenseKey(enum.IntEnum):
    """SPC-4 4.5.6, table 27."""
    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    BLANK_CHECK = 0x8
    VENDOR_SPECIFIC = 0x9
    COPY_ABORTED = 0xA
    ABORTED_COMMAND = 0xB
    VOLUME_OVERFLOW = 0xD
    MISCOMPARE = 0xE
    COMPLETED = 0xF


@dataclass(frozen=True)
class Sense:
    """A sense key with its ASC/ASCQ and the Annex D description."""
    key: SenseKey
    asc: int
    ascq: int
    text: str

    def __str__(self):
        return f"{self.key.name.replace('_', ' ')} {self.text}"


K = SenseKey
NO_SENSE = Sense(K.NO_SENSE, 0x00, 0x00, "NO ADDITIONAL SENSE INFORMATION")
# NOT READY
NOT_READY_BECOMING_READY = Sense(K.NOT_READY, 0x04, 0x01,
                                 "LOGICAL UNIT IS IN PROCESS OF BECOMING READY")
MEDIUM_NOT_PRESENT = Sense(K.NOT_READY, 0x3A, 0x00, "MEDIUM NOT PRESENT")
MEDIUM_NOT_PRESENT_TRAY_CLOSED = Sense(K.NOT_READY, 0x3A, 0x01, "MEDIUM NOT PRESENT - TRAY CLOSED")
MEDIUM_NOT_PRESENT_TRAY_OPEN = Sense(K.NOT_READY, 0x3A, 0x02, "MEDIUM NOT PRESENT - TRAY OPEN")
# MEDIUM ERROR: host I/O failures (ImageError) of reads and of writes/flushes
UNRECOVERED_READ_ERROR = Sense(K.MEDIUM_ERROR, 0x11, 0x00, "UNRECOVERED READ ERROR")
WRITE_ERROR = Sense(K.MEDIUM_ERROR, 0x0C, 0x00, "WRITE ERROR")
# ILLEGAL REQUEST
PARAMETER_LIST_LENGTH_ERROR = Sense(K.ILLEGAL_REQUEST, 0x1A, 0x00, "PARAMETER LIST LENGTH ERROR")
INVALID_COMMAND_OPERATION_CODE = Sense(K.ILLEGAL_REQUEST, 0x20, 0x00,
                                       "INVALID COMMAND OPERATION CODE")
LBA_OUT_OF_RANGE = Sense(K.ILLEGAL_REQUEST, 0x21, 0x00, "LOGICAL BLOCK ADDRESS OUT OF RANGE")
INVALID_FIELD_IN_CDB = Sense(K.ILLEGAL_REQUEST, 0x24, 0x00, "INVALID FIELD IN CDB")
LOGICAL_UNIT_NOT_SUPPORTED = Sense(K.ILLEGAL_REQUEST, 0x25, 0x00, "LOGICAL UNIT NOT SUPPORTED")
INVALID_FIELD_IN_PARAMETER_LIST = Sense(K.ILLEGAL_REQUEST, 0x26, 0x00,
                                        "INVALID FIELD IN PARAMETER LIST")
INCOMPATIBLE_MEDIUM = Sense(K.ILLEGAL_REQUEST, 0x30, 0x00, "INCOMPATIBLE MEDIUM INSTALLED")
CANNOT_READ_MEDIUM_INCOMPATIBLE_FORMAT = Sense(K.ILLEGAL_REQUEST, 0x30, 0x02,
                                               "CANNOT READ MEDIUM - INCOMPATIBLE FORMAT")
SAVING_PARAMETERS_NOT_SUPPORTED = Sense(K.ILLEGAL_REQUEST, 0x39, 0x00,
                                        "SAVING PARAMETERS NOT SUPPORTED")
MEDIUM_REMOVAL_PREVENTED = Sense(K.ILLEGAL_REQUEST, 0x53, 0x02, "MEDIUM REMOVAL PREVENTED")
ILLEGAL_MODE_FOR_THIS_TRACK = Sense(K.ILLEGAL_REQUEST, 0x64, 0x00, "ILLEGAL MODE FOR THIS TRACK")
# UNIT ATTENTION
MEDIUM_MAY_HAVE_CHANGED = Sense(K.UNIT_ATTENTION, 0x28, 0x00,
                                "NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED")
POWER_ON_RESET = Sense(K.UNIT_ATTENTION, 0x29, 0x00,
                       "POWER ON, RESET, OR BUS DEVICE RESET OCCURRED")
# DATA PROTECT
WRITE_PROTECTED = Sense(K.DATA_PROTECT, 0x27, 0x00, "WRITE PROTECTED")
# ABORTED COMMAND: the transport delivered less data-out than the CDB announced
DATA_PHASE_ERROR = Sense(K.ABORTED_COMMAND, 0x4B, 0x00, "DATA PHASE ERROR")
# MISCOMPARE: VERIFY with BYTCHK (SBC-3 5.33)
MISCOMPARE_DURING_VERIFY = Sense(K.MISCOMPARE, 0x1D, 0x00, "MISCOMPARE DURING VERIFY OPERATION")
del K

KNOWN = {(s.key, s.asc, s.ascq): s for s in (
    NO_SENSE, NOT_READY_BECOMING_READY, MEDIUM_NOT_PRESENT, MEDIUM_NOT_PRESENT_TRAY_CLOSED,
    MEDIUM_NOT_PRESENT_TRAY_OPEN, UNRECOVERED_READ_ERROR, WRITE_ERROR,
    PARAMETER_LIST_LENGTH_ERROR, INVALID_COMMAND_OPERATION_CODE, LBA_OUT_OF_RANGE,
    INVALID_FIELD_IN_CDB, LOGICAL_UNIT_NOT_SUPPORTED, INVALID_FIELD_IN_PARAMETER_LIST,
    INCOMPATIBLE_MEDIUM, CANNOT_READ_MEDIUM_INCOMPATIBLE_FORMAT,
    SAVING_PARAMETERS_NOT_SUPPORTED, MEDIUM_REMOVAL_PREVENTED, ILLEGAL_MODE_FOR_THIS_TRACK,
    MEDIUM_MAY_HAVE_CHANGED, POWER_ON_RESET, WRITE_PROTECTED, DATA_PHASE_ERROR,
    MISCOMPARE_DURING_VERIFY)}


def lookup(key, asc, ascq):
    """The named Sense for a triple, or an anonymous one (host sense data)."""
    key = SenseKey(key & 0xF)
    return KNOWN.get((key, asc, ascq)) or Sense(key, asc, ascq, f"ASC {asc:02X}h ASCQ {ascq:02X}h")


# Sizes (SPC-4 4.5.3: fixed format has ADDITIONAL SENSE LENGTH 10 -> 18 bytes).
FIXED_LENGTH = 18
DESCRIPTOR_HEADER_LENGTH = 8
RESPONSE_FIXED_CURRENT = 0x70
RESPONSE_DESCRIPTOR_CURRENT = 0x72
FIXED_VALID = 0x80
SKSV = 0x80                     # sense-key specific valid (byte 15 / descriptor byte 4)
SKS_CD = 0x40                   # field pointer: 1 = error in the CDB, 0 = in the parameter list
SKS_BPV = 0x08                  # bit pointer valid
DESC_INFORMATION = 0x00         # SPC-4 4.5.2.2
DESC_SENSE_KEY_SPECIFIC = 0x02  # SPC-4 4.5.2.4


@dataclass(frozen=True)
class SenseData:
    """One sense report: the condition, the INFORMATION field (an LBA for
    medium errors, when known) and a field pointer for ILLEGAL REQUEST
    (SPC-4 4.5.2.4.2: byte offset, bit, and whether it points into the CDB
    or the parameter list)."""
    sense: Sense
    information: int | None = None
    field: int | None = None
    bit: int | None = None
    in_cdb: bool = True

    def _sense_key_specific(self):
        if self.field is None:
            return None
        byte0 = SKSV | (SKS_CD if self.in_cdb else 0)
        if self.bit is not None:
            byte0 |= SKS_BPV | (self.bit & 7)
        return bytes([byte0]) + (self.field & 0xFFFF).to_bytes(2, "big")

    def fixed(self):
        """Fixed-format sense data (SPC-4 4.5.3, table 26), 18 bytes."""
        out = bytearray(FIXED_LENGTH)
        out[0] = RESPONSE_FIXED_CURRENT
        if self.information is not None and self.information <= 0xFFFFFFFF:
            out[0] |= FIXED_VALID
            out[3:7] = self.information.to_bytes(4, "big")
        out[2] = self.sense.key
        out[7] = FIXED_LENGTH - 8
        out[12], out[13] = self.sense.asc, self.sense.ascq
        sks = self._sense_key_specific()
        if sks:
            out[15:18] = sks
        return bytes(out)

    def descriptor(self):
        """Descriptor-format sense data (SPC-4 4.5.2, table 20) with an
        Information descriptor and a Sense key specific descriptor as needed."""
        descriptors = bytearray()
        if self.information is not None:
            descriptors += bytes([DESC_INFORMATION, 0x0A, FIXED_VALID, 0])
            descriptors += self.information.to_bytes(8, "big")
        sks = self._sense_key_specific()
        if sks:
            descriptors += bytes([DESC_SENSE_KEY_SPECIFIC, 0x06, 0, 0]) + sks + b"\0"
        header = bytes([RESPONSE_DESCRIPTOR_CURRENT, self.sense.key, self.sense.asc,
                        self.sense.ascq, 0, 0, 0, len(descriptors)])
        return header + bytes(descriptors)

    def encode(self, descriptor_format):
        return self.descriptor() if descriptor_format else self.fixed()

    def __str__(self):
        return str(self.sense)


def parse_sense(data):
    """SenseData from sense bytes in either format (e.g. a host drive's), or
    None when they do not hold a sense key (empty, unknown response code)."""
    data = bytes(data)
    if not data:
        return None
    code = data[0] & 0x7F
    if code in (0x70, 0x71) and len(data) >= 3:
        asc = data[12] if len(data) > 12 else 0
        ascq = data[13] if len(data) > 13 else 0
        info = int.from_bytes(data[3:7], "big") if data[0] & FIXED_VALID else None
        return SenseData(lookup(data[2], asc, ascq), information=info)
    if code in (0x72, 0x73) and len(data) >= 4:
        return SenseData(lookup(data[1], data[2], data[3]))
    return None


class CheckCondition(Exception):
    """Ends a command with CHECK CONDITION and the given sense (internal to hw/scsi)."""

    def __init__(self, sense, *, information=None, field=None, bit=None, in_cdb=True):
        super().__init__(str(sense))
        self.data = SenseData(sense, information, field, bit, in_cdb)

    @classmethod
    def reporting(cls, data):
        """CHECK CONDITION with ready-made SenseData (e.g. a host drive's)."""
        failure = cls(data.sense)
        failure.data = data
        return failure


def invalid_cdb(field, bit=None):
    """CHECK CONDITION, ILLEGAL REQUEST, INVALID FIELD IN CDB pointing at byte ``field``."""
    return CheckCondition(INVALID_FIELD_IN_CDB, field=field, bit=bit)


def invalid_parameter(field, bit=None):
    """INVALID FIELD IN PARAMETER LIST pointing at byte ``field`` of the parameter list."""
    return CheckCondition(INVALID_FIELD_IN_PARAMETER_LIST, field=field, bit=bit, in_cdb=False)

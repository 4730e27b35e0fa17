"""SPC-4 commands every logical unit answers, and the mode parameter machinery.

Modelled from SPC-4 (T10/1731-D): INQUIRY (6.4) with the standard data
(6.4.2) and the VPD pages Supported VPD Pages (7.8.14), Unit Serial Number
(7.8.15) and Device Identification (7.8.6); REQUEST SENSE (6.29); REPORT
LUNS (6.33); REPORT SUPPORTED OPERATION CODES (6.35, disks only: MMC uses
opcode A3h for SEND KEY); TEST UNIT READY (6.37); MODE SENSE(6)/(10) and
MODE SELECT(6)/(10) (6.9-6.12) with the mode parameter header and block
descriptors (7.5.4-7.5.5) and the pages Read-Write Error Recovery (SBC-3
6.4.7; MMC-6 7.3), Caching (SBC-3 6.4.5), Control (SPC-4 7.5.8) and Power
Condition (SPC-4 7.5.13).  PREVENT ALLOW MEDIUM REMOVAL and START STOP UNIT
live in SBC-3 (5.13, 5.25) and in MMC-6, with the same layout;
they are here because both device types share them.

The standard INQUIRY data claims SPC-3 (VERSION 05h) with RESPONSE DATA
FORMAT 2 and 36 bytes, like VirtualBox's and QEMU's targets.

Not supported: saved mode pages (PC 11b gives SAVING PARAMETERS NOT
SUPPORTED, MODE SELECT with SP=1 INVALID FIELD IN CDB), subpages, the
persistent prevent state (PREVENT 10b/11b are accepted and ignored), power
conditions (START STOP UNIT with a POWER CONDITION is accepted and ignored),
version descriptors in INQUIRY, and exact CDB usage bitmaps in REPORT
SUPPORTED OPERATION CODES (every bit but CONTROL is reported as used).
"""

import dataclasses
from dataclasses import dataclass
from typing import Callable

from drivebay.hw.identity import scsi_string
from drivebay.hw.scsi import sense as S
from drivebay.hw.scsi.cdb import (BOTH, DISK, Command, Direction, Flag, PeripheralDeviceType,
                                  encode_lun, table_rows, u16, u24, u32)
from drivebay.hw.scsi.sense import CheckCondition, SenseData, invalid_cdb, invalid_parameter

VERSION_SPC3 = 0x05                 # SPC-4 6.4.2, table 142: 05h = SPC-3
RESPONSE_DATA_FORMAT = 0x02         # SPC-4 6.4.2: "shall be set to 2h"
STANDARD_INQUIRY_LENGTH = 36        # bytes 0-35: up to PRODUCT REVISION LEVEL
INQUIRY_RMB = 0x80                  # byte 1
INQUIRY_CMDQUE = 0x02               # byte 7
# SPC-4 6.4.2, table 140: 011b = the device server cannot support a device on this LUN.
QUALIFIER_NOT_CAPABLE = 0x60

# VPD page codes (SPC-4 7.8.1, table 581; SBC-3 6.6).
VPD_SUPPORTED_PAGES = 0x00
VPD_UNIT_SERIAL_NUMBER = 0x80
VPD_DEVICE_IDENTIFICATION = 0x83
VPD_BLOCK_LIMITS = 0xB0
VPD_BLOCK_DEVICE_CHARACTERISTICS = 0xB1
VPD_LOGICAL_BLOCK_PROVISIONING = 0xB2

# Designation descriptor fields (SPC-4 7.8.6.1, tables 588-592).
CODE_SET_BINARY = 0x1
CODE_SET_ASCII = 0x2
ASSOCIATION_LU = 0x00
DESIGNATOR_T10_VENDOR_ID = 0x1
DESIGNATOR_NAA = 0x3
NAA_LOCALLY_ASSIGNED = 0x3          # SPC-4 7.8.6.6.3: NAA 3h, 60-bit locally administered value

REPORT_LUNS_MIN_ALLOCATION = 16     # SPC-4 6.33: "less than 16 ... INVALID FIELD IN CDB"

# Mode parameters.
PC_CURRENT, PC_CHANGEABLE, PC_DEFAULT, PC_SAVED = range(4)
ALL_PAGES = 0x3F
ALL_SUBPAGES = 0xFF
MODE_HEADER_6 = 4                   # SPC-4 7.5.4, table 453
MODE_HEADER_10 = 8                  # SPC-4 7.5.4, table 454
SHORT_BLOCK_DESCRIPTOR = 8          # SBC-3 6.4.2.2
LONG_BLOCK_DESCRIPTOR = 16          # SBC-3 6.4.2.3
DEVICE_SPECIFIC_WP = 0x80           # SBC-3 6.4.1, table 99
DEVICE_SPECIFIC_DPOFUA = 0x10
MODE_SELECT_SP = 0x01
MODE_SENSE_DBD = 0x08
MODE_SENSE_LLBAA = 0x10
PAGE_PS = 0x80
PAGE_SPF = 0x40
CACHING_WCE = 0x04                  # Caching page byte 2 (SBC-3 6.4.5)
CONTROL_D_SENSE = 0x04              # Control page byte 2 (SPC-4 7.5.8)

# REPORT SUPPORTED OPERATION CODES (SPC-4 6.35).
RSOC_ALL, RSOC_ONE, RSOC_ONE_SA, RSOC_ONE_EITHER = range(4)
RSOC_RCTD = 0x80
SUPPORT_NOT_SUPPORTED = 0x1
SUPPORT_STANDARD = 0x3
TIMEOUTS_DESCRIPTOR = bytes([0x00, 0x0A]) + bytes(10)   # SPC-4 6.35.4: no timeouts known


def peripheral_byte(lun):
    """Byte 0 of INQUIRY data and of every VPD page."""
    if lun.device_type == PeripheralDeviceType.UNKNOWN:
        return QUALIFIER_NOT_CAPABLE | PeripheralDeviceType.UNKNOWN
    return int(lun.device_type)


# -- INQUIRY (SPC-4 6.4) -----------------------------------------------------------------

def parse_inquiry(lun, req):
    cdb = req.cdb
    if cdb[1] & 0x02:                   # CMDDT: obsolete (SPC-4 6.4.1)
        raise invalid_cdb(1, 1)
    evpd, page = cdb[1] & 0x01, cdb[2]
    if not evpd and page:               # "PAGE CODE ... shall be zero" without EVPD
        raise invalid_cdb(2)
    if evpd and page not in lun.vpd_pages:
        raise invalid_cdb(2)
    req.args.update(evpd=evpd, page=page)
    req.xfer_length = u16(cdb, 3)


def standard_inquiry(lun):
    """Standard INQUIRY data, SPC-4 6.4.2, table 139."""
    out = bytearray(STANDARD_INQUIRY_LENGTH)
    out[0] = peripheral_byte(lun)
    out[1] = INQUIRY_RMB if lun.removable else 0
    out[2] = VERSION_SPC3
    out[3] = RESPONSE_DATA_FORMAT
    out[4] = STANDARD_INQUIRY_LENGTH - 5     # ADDITIONAL LENGTH (n - 4)
    out[7] = INQUIRY_CMDQUE if lun.cmdque else 0
    out[8:16] = scsi_string(lun.vendor, 8)
    out[16:32] = scsi_string(lun.product, 16)
    out[32:36] = scsi_string(lun.revision, 4)
    return out


def inquiry(lun, req, data_out):
    if not req.args["evpd"]:
        return standard_inquiry(lun)
    page = req.args["page"]
    body = lun.vpd_pages[page](lun)
    return bytes([peripheral_byte(lun), page]) + len(body).to_bytes(2, "big") + body


def vpd_supported_pages(lun):
    """Supported VPD Pages (SPC-4 7.8.14): the page codes in ascending order."""
    return bytes(sorted(lun.vpd_pages))


def vpd_unit_serial_number(lun):
    """Unit Serial Number (SPC-4 7.8.15): PRODUCT SERIAL NUMBER, ASCII."""
    return lun.serial.encode("ascii")


def naa_locally_assigned(uuid):
    """An NAA 3h designator (SPC-4 7.8.6.6.3): NAA in bits 63:60, the top 60
    bits of the medium UUID as the locally administered value."""
    value = (NAA_LOCALLY_ASSIGNED << 60) | (uuid.int >> 68)
    return value.to_bytes(8, "big")


def _designator(code_set, designator_type, value):
    """One designation descriptor (SPC-4 7.8.6.1, table 588), associated
    with the logical unit, PIV 0."""
    return bytes([code_set, ASSOCIATION_LU | designator_type, 0, len(value)]) + value


def vpd_device_identification(lun):
    """Device Identification (SPC-4 7.8.6): a T10 vendor ID designator (vendor,
    product and serial, 7.8.6.4) and an NAA designator from the UUID."""
    t10 = scsi_string(lun.vendor, 8) + scsi_string(lun.product, 16) + lun.serial.encode("ascii")
    out = _designator(CODE_SET_ASCII, DESIGNATOR_T10_VENDOR_ID, t10)
    if lun.identity_uuid is not None:
        out += _designator(CODE_SET_BINARY, DESIGNATOR_NAA, naa_locally_assigned(lun.identity_uuid))
    return out


COMMON_VPD_PAGES = {
    VPD_SUPPORTED_PAGES: vpd_supported_pages,
    VPD_UNIT_SERIAL_NUMBER: vpd_unit_serial_number,
    VPD_DEVICE_IDENTIFICATION: vpd_device_identification,
}


# -- TEST UNIT READY, REQUEST SENSE (SPC-4 6.37, 6.29) -------------------------------

def parse_request_sense(lun, req):
    req.args["desc"] = req.cdb[1] & 0x01
    req.xfer_length = req.cdb[4]


def request_sense(lun, req, data_out):
    """The retained sense of the last CHECK CONDITION, else the oldest unit
    attention (reported and cleared, SAM-5 5.14), else the condition a TEST
    UNIT READY would report (SPC-4 5.11.2 pollable sense data), else NO SENSE."""
    if lun.sense_data is not None:
        data, lun.sense_data = lun.sense_data, None
    elif lun.unit_attentions:
        data = SenseData(lun.unit_attentions.pop(0))
    else:
        data = SenseData(lun.idle_sense() or S.NO_SENSE)
    return data.encode(req.args["desc"])


# -- REPORT LUNS (SPC-4 6.33) ---------------------------------------------------------

REPORT_LUNS_SELECT = {0x00: "all", 0x01: "well known", 0x02: "all"}


def parse_report_luns(lun, req):
    select = req.cdb[2]
    if select not in REPORT_LUNS_SELECT:
        raise invalid_cdb(2)
    alloc = u32(req.cdb, 6)
    if alloc < REPORT_LUNS_MIN_ALLOCATION:
        raise invalid_cdb(6)
    req.args.update(select=select, alloc=alloc)
    req.xfer_length = alloc


def report_luns(lun, req, data_out):
    numbers = [] if req.args["select"] == 0x01 else lun.report_luns()   # no well-known LUNs
    body = b"".join(encode_lun(n) for n in numbers)
    return len(body).to_bytes(4, "big") + bytes(4) + body


# -- mode parameters (SPC-4 7.5) -------------------------------------------------------

@dataclass(frozen=True)
class ModePage:
    """One mode page: ``build(lun, default)`` returns the whole page (bytes 0
    and 1 included, so offsets are the spec's), ``changeable`` maps byte
    offsets to the bits MODE SELECT may change, ``select(lun, page)``
    applies them."""
    code: int
    name: str
    length: int                                 # PAGE LENGTH (bytes after byte 1)
    build: Callable
    changeable: dict = dataclasses.field(default_factory=dict)
    select: Callable | None = None

    def blank(self):
        page = bytearray(2 + self.length)
        page[0], page[1] = self.code, self.length
        return page

    def mask(self):
        page = self.blank()
        for offset, bits in self.changeable.items():
            page[offset] = bits
        return page

    def values(self, lun, pc):
        if pc == PC_CHANGEABLE:
            return self.mask()
        page = self.build(lun, pc == PC_DEFAULT)
        assert len(page) == 2 + self.length and page[0] == self.code
        return page


def _zero_page(code, length):
    def build(lun, default):
        page = bytearray(2 + length)
        page[0], page[1] = code, length
        return page
    return build


def _caching(lun, default):
    """Caching mode page (SBC-3 6.4.5, table 113): WCE (byte 2 bit 2) is the
    write-back cache switch; writes flush when it is clear."""
    page = CACHING.blank()
    if lun.default_wce if default else lun.wce:
        page[2] |= CACHING_WCE
    return page


def _select_caching(lun, page):
    wce = bool(page[2] & CACHING_WCE)
    if lun.wce and not wce:
        lun.flush_cache()               # what the cache held is now written through
    lun.wce = wce


def _control(lun, default):
    """Control mode page (SPC-4 7.5.8, table 467): D_SENSE (byte 2 bit 2)
    selects descriptor-format sense for CHECK CONDITION."""
    page = CONTROL.blank()
    if not default and lun.d_sense:
        page[2] |= CONTROL_D_SENSE
    return page


def _select_control(lun, page):
    lun.d_sense = bool(page[2] & CONTROL_D_SENSE)


READ_WRITE_ERROR_RECOVERY = ModePage(0x01, "read-write error recovery", 0x0A, _zero_page(0x01, 0x0A))
CACHING = ModePage(0x08, "caching", 0x12, _caching, {2: CACHING_WCE}, _select_caching)
CONTROL = ModePage(0x0A, "control", 0x0A, _control, {2: CONTROL_D_SENSE}, _select_control)
# SPC-4 7.5.13, table 475: PAGE LENGTH 26h; no idle/standby timers enabled.
POWER_CONDITION = ModePage(0x1A, "power condition", 0x26, _zero_page(0x1A, 0x26))
COMMON_MODE_PAGES = (READ_WRITE_ERROR_RECOVERY, CACHING, CONTROL, POWER_CONDITION)


def parse_mode_sense(lun, req):
    cdb = req.cdb
    ten = cdb[0] == MODE_SENSE_10.opcode
    pc, code, subpage = cdb[2] >> 6, cdb[2] & 0x3F, cdb[3]
    if pc == PC_SAVED:
        raise CheckCondition(S.SAVING_PARAMETERS_NOT_SUPPORTED, field=2, bit=7)
    if subpage not in (0x00, ALL_SUBPAGES):     # no page has subpages
        raise invalid_cdb(3)
    if code != ALL_PAGES and not any(p.code == code for p in lun.mode_pages):
        raise invalid_cdb(2, 5)
    req.args.update(page=code, pc=pc)
    req.args["_dbd"] = bool(cdb[1] & MODE_SENSE_DBD)
    req.args["_llbaa"] = ten and bool(cdb[1] & MODE_SENSE_LLBAA)
    req.args["_ten"] = ten
    req.xfer_length = u16(cdb, 7) if ten else cdb[4]


def mode_sense(lun, req, data_out):
    """MODE SENSE(6)/(10): header (SPC-4 7.5.4), block descriptor (SBC-3
    6.4.2; none for MMC devices, MMC-6 7.2), then the pages."""
    args = req.args
    code, pc = args["page"], args["pc"]
    pages = b"".join(bytes(p.values(lun, pc)) for p in lun.mode_pages
                     if code in (ALL_PAGES, p.code))
    descriptor = b"" if args["_dbd"] else lun.block_descriptor(args["_llbaa"])
    specific = lun.device_specific_parameter()
    if args["_ten"]:
        header = bytearray(MODE_HEADER_10)
        header[3] = specific
        header[4] = 0x01 if len(descriptor) == LONG_BLOCK_DESCRIPTOR else 0     # LONGLBA
        header[6:8] = len(descriptor).to_bytes(2, "big")
        total = len(header) + len(descriptor) + len(pages)
        header[0:2] = (total - 2).to_bytes(2, "big")
    else:
        header = bytearray(MODE_HEADER_6)
        header[2] = specific
        header[3] = len(descriptor)
        total = len(header) + len(descriptor) + len(pages)
        assert total - 1 <= 0xFF, "mode pages outgrew MODE SENSE(6)"
        header[0] = total - 1
    return bytes(header) + descriptor + pages


def parse_mode_select(lun, req):
    cdb = req.cdb
    ten = cdb[0] == MODE_SELECT_10.opcode
    if cdb[1] & MODE_SELECT_SP:         # SPC-4 6.9: SP=1 without saved pages
        raise invalid_cdb(1, 0)
    length = u16(cdb, 7) if ten else cdb[4]
    header = MODE_HEADER_10 if ten else MODE_HEADER_6
    if 0 < length < header:             # the header itself would be truncated
        raise CheckCondition(S.PARAMETER_LIST_LENGTH_ERROR)
    req.args["length"] = length
    req.args["_ten"] = ten
    req.xfer_length = length


def mode_select(lun, req, data_out):
    """MODE SELECT(6)/(10) (SPC-4 6.9, 6.10): every page is checked before
    any is applied; a field that is not changeable must keep its current
    value (INVALID FIELD IN PARAMETER LIST), a truncated structure is a
    PARAMETER LIST LENGTH ERROR."""
    if data_out is None:                # PARAMETER LIST LENGTH 0: nothing to change
        return None
    data = bytes(data_out)
    ten = req.args["_ten"]
    if ten:
        header, bd_length, long_lba = MODE_HEADER_10, u16(data, 6), data[4] & 0x01
    else:
        header, bd_length, long_lba = MODE_HEADER_6, data[3], 0
    size = LONG_BLOCK_DESCRIPTOR if long_lba else SHORT_BLOCK_DESCRIPTOR
    if bd_length % size:
        raise invalid_parameter(6 if ten else 3)
    if header + bd_length > len(data):
        raise CheckCondition(S.PARAMETER_LIST_LENGTH_ERROR)
    for pos in range(header, header + bd_length, size):
        # Only the current LOGICAL BLOCK LENGTH is accepted; NUMBER OF
        # LOGICAL BLOCKS is ignored (no FORMAT UNIT to apply it).
        at = pos + 12 if long_lba else pos + 5
        block_length = u32(data, at) if long_lba else u24(data, at)
        if block_length != lun.block_size:
            raise invalid_parameter(at)
    pos = header + bd_length
    changes = []
    while pos < len(data):
        if len(data) - pos < 2:
            raise CheckCondition(S.PARAMETER_LIST_LENGTH_ERROR)
        if data[pos] & PAGE_SPF:
            raise invalid_parameter(pos, 6)
        page = next((p for p in lun.mode_pages if p.code == data[pos] & 0x3F), None)
        if page is None:
            raise invalid_parameter(pos, 5)
        if data[pos + 1] != page.length:
            raise invalid_parameter(pos + 1)
        end = pos + 2 + page.length
        if end > len(data):
            raise CheckCondition(S.PARAMETER_LIST_LENGTH_ERROR)
        new, current, mask = data[pos:end], page.values(lun, PC_CURRENT), page.mask()
        for i in range(2, len(new)):
            if (new[i] ^ current[i]) & ~mask[i] & 0xFF:
                raise invalid_parameter(pos + i)
        changes.append((page, new))
        pos = end
    for page, new in changes:
        if page.select is not None:
            page.select(lun, new)
    return None


# -- PREVENT ALLOW MEDIUM REMOVAL, START STOP UNIT (SBC-3 5.13, 5.25; MMC-6) --------

def parse_prevent_allow(lun, req):
    req.args["prevent"] = req.cdb[4] & 0x03


def prevent_allow(lun, req, data_out):
    """PREVENT 00b allows, 01b prevents removal; the persistent variants
    (1xb, MMC-6) are accepted and leave the prevent state as it is."""
    prevent = req.args["prevent"]
    if prevent < 2:
        lun.locked = bool(prevent)


def parse_start_stop(lun, req):
    cdb = req.cdb
    req.args.update(start=cdb[4] & 0x01, loej=(cdb[4] >> 1) & 1, power=cdb[4] >> 4)
    req.args["_no_flush"] = bool(cdb[4] & 0x04)


def start_stop_unit(lun, req, data_out):
    """LOEJ=1 START=0 unloads (refused while removal is prevented: ILLEGAL
    REQUEST, MEDIUM REMOVAL PREVENTED, SBC-3 5.25 / MMC-6), LOEJ=1 START=1
    loads; START=0 without NO_FLUSH writes the cache back first."""
    args = req.args
    if args["power"]:                   # a POWER CONDITION: LOEJ and START are ignored
        return None
    if args["loej"] and not args["start"] and lun.locked:
        raise CheckCondition(S.MEDIUM_REMOVAL_PREVENTED)
    if not args["start"] and not args["_no_flush"]:
        lun.flush_cache()
    if args["loej"]:
        lun.load_eject(bool(args["start"]))
    return None


# -- REPORT SUPPORTED OPERATION CODES (SPC-4 6.35) ----------------------------------

def parse_report_opcodes(lun, req):
    cdb = req.cdb
    options = cdb[2] & 0x07
    if options > RSOC_ONE_EITHER:
        raise invalid_cdb(2, 2)
    req.args.update(options=options, alloc=u32(cdb, 6))
    req.args["_rctd"] = bool(cdb[2] & RSOC_RCTD)
    req.args["_opcode"], req.args["_action"] = cdb[3], u16(cdb, 4)
    req.xfer_length = req.args["alloc"]


def _usage_data(row):
    usage = bytearray([row.opcode]) + b"\xff" * (row.cdb_length - 2) + b"\x00"
    if row.service_action is not None:
        usage[1] = row.service_action
    return bytes(usage)


def _available(lun, row):
    return row is not None and (row.available is None or row.available(lun))


def report_opcodes(lun, req, data_out):
    args = req.args
    rctd = args["_rctd"]
    if args["options"] == RSOC_ALL:
        out = bytearray()
        for row in table_rows(lun.commands):
            if not _available(lun, row):
                continue
            sa = row.service_action
            out += bytes([row.opcode, 0]) + (sa or 0).to_bytes(2, "big")
            out += bytes([0, (0x02 if rctd else 0) | (0x01 if sa is not None else 0)])
            out += row.cdb_length.to_bytes(2, "big")
            if rctd:
                out += TIMEOUTS_DESCRIPTOR
        return len(out).to_bytes(4, "big") + bytes(out)
    entry = lun.commands.get(args["_opcode"])
    options = args["options"]
    if isinstance(entry, dict):
        if options == RSOC_ONE:
            raise invalid_cdb(2, 2)
        row = entry.get(args["_action"])
    else:
        if options == RSOC_ONE_SA and entry is not None:
            raise invalid_cdb(2, 2)
        row = entry
    if not _available(lun, row):
        return bytes([0, SUPPORT_NOT_SUPPORTED, 0, 0])
    usage = _usage_data(row)
    out = bytes([0, (0x80 if rctd else 0) | SUPPORT_STANDARD]) + len(usage).to_bytes(2, "big")
    return out + usage + (TIMEOUTS_DESCRIPTOR if rctd else b"")


# -- the SPC rows -------------------------------------------------------------------

IN, OUT, NONE = Direction.IN, Direction.OUT, Direction.NONE

TEST_UNIT_READY = Command(0x00, "TEST_UNIT_READY", None, None, NONE, BOTH, Flag.NEEDS_MEDIUM)
REQUEST_SENSE = Command(0x03, "REQUEST_SENSE", parse_request_sense, request_sense, IN, BOTH,
                        Flag.ALLOW_UA)
INQUIRY = Command(0x12, "INQUIRY", parse_inquiry, inquiry, IN, BOTH, Flag.ALLOW_UA)
MODE_SELECT_6 = Command(0x15, "MODE_SELECT_6", parse_mode_select, mode_select, OUT, BOTH)
MODE_SENSE_6 = Command(0x1A, "MODE_SENSE_6", parse_mode_sense, mode_sense, IN, BOTH)
START_STOP_UNIT = Command(0x1B, "START_STOP_UNIT", parse_start_stop, start_stop_unit, NONE, BOTH)
PREVENT_ALLOW_MEDIUM_REMOVAL = Command(0x1E, "PREVENT_ALLOW_MEDIUM_REMOVAL", parse_prevent_allow,
                                       prevent_allow, NONE, BOTH)
MODE_SELECT_10 = Command(0x55, "MODE_SELECT_10", parse_mode_select, mode_select, OUT, BOTH)
MODE_SENSE_10 = Command(0x5A, "MODE_SENSE_10", parse_mode_sense, mode_sense, IN, BOTH)
REPORT_LUNS = Command(0xA0, "REPORT_LUNS", parse_report_luns, report_luns, IN, BOTH, Flag.ALLOW_UA)
REPORT_SUPPORTED_OPERATION_CODES = Command(
    0xA3, "REPORT_SUPPORTED_OPERATION_CODES", parse_report_opcodes, report_opcodes, IN,
    frozenset({DISK}), service_action=0x0C)

SPC_COMMANDS = (TEST_UNIT_READY, REQUEST_SENSE, INQUIRY, MODE_SELECT_6, MODE_SENSE_6,
                START_STOP_UNIT, PREVENT_ALLOW_MEDIUM_REMOVAL, MODE_SELECT_10, MODE_SENSE_10,
                REPORT_LUNS, REPORT_SUPPORTED_OPERATION_CODES)

# What a target answers for a LUN it does not have (bus.AbsentLun).
_ABSENT = frozenset({PeripheralDeviceType.UNKNOWN})
ABSENT_LUN_COMMANDS = tuple(dataclasses.replace(row, devices=_ABSENT)
                            for row in (INQUIRY, REQUEST_SENSE, REPORT_LUNS))

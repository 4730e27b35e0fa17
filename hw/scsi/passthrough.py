"""Host optical drive passthrough: guest CD/DVD commands forwarded to a real drive.

VirtualBox's "passthrough" attachment lets a guest send MMC commands to a
host optical drive (to play audio CDs, read DVDs with CSS authentication,
see the drive's own TOC).  Like VirtualBox's ATAPI passthrough, forwarding
goes through an allow-list: a table of the commands that only read or
control the drive, each with the rule that computes its transfer length
from the CDB.  Everything else (WRITE, WRITE AND VERIFY, WRITE BUFFER and
firmware download, BLANK, FORMAT UNIT, CLOSE TRACK/SESSION, SEND CUE SHEET,
RESERVE TRACK, MODE SELECT, SEND DISC STRUCTURE, SET STREAMING, vendor
commands) gets ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE and never
reaches the host.  READ CD is forwarded only for the sector formats whose
size is unambiguous (user data, whole raw sectors, with or without a
sub-channel); the Mode 2 formless and Form 2 sectors of Video CDs are
refused the same way.

INQUIRY and REPORT LUNS are answered here: the guest sees "VBOX CD-ROM",
never the host drive's identity.  REQUEST SENSE reports the sense of the
last forwarded CHECK CONDITION (kept as for every LUN, bus.py) and is
forwarded only when nothing is pending.  A host status other than GOOD or
CHECK CONDITION (BUSY, TASK SET FULL ...) reaches the guest as NOT READY,
LOGICAL UNIT IS IN PROCESS OF BECOMING READY, which makes it retry.

``HostDrive`` is what the host side implements (a Linux SG_IO device, a
Windows SPTI handle); ``SimulatedDrive`` implements it over an image for
tests and demos.
"""

from typing import Protocol

from drivebay.hw import identity
from drivebay.hw.scsi import sbc, spc
from drivebay.hw.scsi import sense as S
from drivebay.hw.scsi.bus import ScsiLun, Status
from drivebay.hw.scsi.cdb import (CDROM, Command, Direction, Flag, PeripheralDeviceType,
                                  command_table, u16, u24, u32)
from drivebay.hw.scsi.mmc import OPTICAL_SECTOR, ScsiCdrom
from drivebay.hw.scsi.sense import CheckCondition, SenseData, parse_sense


class HostDrive(Protocol):
    def execute(self, cdb: bytes, direction: Direction, xfer_length: int,
                data_out: bytes | memoryview | None) -> tuple[int, bytes, bytes]:
        """Run one CDB on the host drive: (SAM status, data-in, sense bytes)."""


# -- forwarding -----------------------------------------------------------------------

def forward(lun, req, data_out):
    status, data, sense = lun.host.execute(req.cdb, req.direction, req.xfer_length, data_out)
    if status == Status.GOOD:
        return data
    if status == Status.CHECK_CONDITION:
        parsed = parse_sense(sense) or SenseData(S.lookup(S.SenseKey.ABORTED_COMMAND, 0, 0))
        raise CheckCondition.reporting(parsed)
    raise CheckCondition(S.NOT_READY_BECOMING_READY)


def _xfer(rule):
    """A parse function setting xfer_length from ``rule(cdb)``, bounded like
    every other transfer (sbc.MAX_TRANSFER_BYTES)."""
    def parse(lun, req):
        length = rule(req.cdb)
        if length is None:              # a form the allow-list refuses
            req.command = None
            raise CheckCondition(S.INVALID_COMMAND_OPERATION_CODE)
        if length > sbc.MAX_TRANSFER_BYTES:
            raise CheckCondition(S.INVALID_FIELD_IN_CDB)
        req.xfer_length = length
    return parse


def _none(cdb):
    return 0


def _byte(offset):
    return lambda cdb: cdb[offset]


def _word(offset):
    return lambda cdb: u16(cdb, offset)


def _fixed(length):
    return lambda cdb: length


def _read_10(cdb):
    return u16(cdb, 7) * OPTICAL_SECTOR


def _read_12(cdb):
    return u32(cdb, 6) * OPTICAL_SECTOR


# READ CD (MMC-6 6.19): bytes per sector by main channel selection (byte 9
# bits 7:3) and sub-channel selection (byte 10 bits 2:0).
READ_CD_MAIN = {0x00: 0, 0x10: 2048, 0xF8: 2352}        # none, user data, whole sector
READ_CD_CDDA_MAIN = {0x00: 0, 0x10: 2352, 0xF8: 2352}   # an audio sector is all user data
READ_CD_SUBCHANNEL = {0: 0, 1: 96, 2: 16, 4: 96}        # none, raw P-W, Q, R-W
# EXPECTED SECTOR TYPE (byte 1 bits 4:2): 011b Mode 2 formless and 101b Mode 2
# Form 2 are the Video CD formats, refused.
READ_CD_ALLOWED_TYPES = {0: READ_CD_MAIN, 1: READ_CD_CDDA_MAIN, 2: READ_CD_MAIN, 4: READ_CD_MAIN}


def _read_cd_sector(cdb, sector_type):
    main = READ_CD_ALLOWED_TYPES.get(sector_type)
    if main is None:
        return None
    user, sub = main.get(cdb[9] & 0xF8), READ_CD_SUBCHANNEL.get(cdb[10] & 0x07)
    if user is None or sub is None:
        return None
    return user + sub if user else 0


def _read_cd(cdb):
    size = _read_cd_sector(cdb, (cdb[1] >> 2) & 0x7)
    return None if size is None else u24(cdb, 6) * size


def _read_cd_msf(cdb):
    start = (cdb[3] * 60 + cdb[4]) * 75 + cdb[5]
    end = (cdb[6] * 60 + cdb[7]) * 75 + cdb[8]
    size = _read_cd_sector(cdb, (cdb[1] >> 2) & 0x7)
    return None if size is None else max(end - start, 0) * size


# -- the answers given here -------------------------------------------------------------

def request_sense(lun, req, data_out):
    if lun.sense_data is not None or lun.unit_attentions:
        return spc.request_sense(lun, req, data_out)
    return forward(lun, req, data_out)


def prevent_allow(lun, req, data_out):
    forward(lun, req, data_out)
    spc.prevent_allow(lun, req, data_out)


# -- the allow-list -------------------------------------------------------------------

IN, OUT, NONE = Direction.IN, Direction.OUT, Direction.NONE
C = frozenset({CDROM})
UA = Flag.ALLOW_UA


def _pass(opcode, name, direction, rule, flags=Flag.NONE):
    return Command(opcode, name, _xfer(rule), forward, direction, C, flags)


PASSTHROUGH_COMMANDS = (
    _pass(0x00, "TEST_UNIT_READY", NONE, _none),
    Command(0x03, "REQUEST_SENSE", spc.parse_request_sense, request_sense, IN, C, UA),
    spc.INQUIRY,
    _pass(0x1A, "MODE_SENSE_6", IN, _byte(4)),
    _pass(0x1B, "START_STOP_UNIT", NONE, _none),
    Command(0x1E, "PREVENT_ALLOW_MEDIUM_REMOVAL", spc.parse_prevent_allow, prevent_allow, NONE, C),
    _pass(0x23, "READ_FORMAT_CAPACITIES", IN, _word(7)),
    _pass(0x25, "READ_CAPACITY", IN, _fixed(8)),
    _pass(0x28, "READ_10", IN, _read_10),
    _pass(0x2B, "SEEK_10", NONE, _none),
    _pass(0x42, "READ_SUB_CHANNEL", IN, _word(7)),
    _pass(0x43, "READ_TOC_PMA_ATIP", IN, _word(7)),
    _pass(0x45, "PLAY_AUDIO_10", NONE, _none),
    _pass(0x46, "GET_CONFIGURATION", IN, _word(7), UA),
    _pass(0x47, "PLAY_AUDIO_MSF", NONE, _none),
    _pass(0x4A, "GET_EVENT_STATUS_NOTIFICATION", IN, _word(7), UA),
    _pass(0x4B, "PAUSE_RESUME", NONE, _none),
    _pass(0x4E, "STOP_PLAY_SCAN", NONE, _none),
    _pass(0x51, "READ_DISC_INFORMATION", IN, _word(7)),
    _pass(0x52, "READ_TRACK_INFORMATION", IN, _word(7)),
    _pass(0x5A, "MODE_SENSE_10", IN, _word(7)),
    _pass(0x5C, "READ_BUFFER_CAPACITY", IN, _word(7)),
    spc.REPORT_LUNS,
    _pass(0xA3, "SEND_KEY", OUT, _word(8)),           # CSS authentication, not the medium
    _pass(0xA4, "REPORT_KEY", IN, _word(8)),
    _pass(0xA8, "READ_12", IN, _read_12),
    _pass(0xAD, "READ_DISC_STRUCTURE", IN, _word(8)),
    _pass(0xB9, "READ_CD_MSF", IN, _read_cd_msf),
    _pass(0xBA, "SCAN", NONE, _none),
    _pass(0xBB, "SET_CD_SPEED", NONE, _none),
    _pass(0xBD, "MECHANISM_STATUS", IN, _word(8)),
    _pass(0xBE, "READ_CD", IN, _read_cd),
)


class PassthroughCdrom(ScsiLun):
    """A guest-visible "VBOX CD-ROM" whose medium commands go to a HostDrive."""

    kind = "passthrough"
    device_type = PeripheralDeviceType.CD_DVD
    commands = command_table(CDROM, *PASSTHROUGH_COMMANDS)
    vpd_pages = dict(spc.COMMON_VPD_PAGES)

    def __init__(self, host_drive, *, vendor=identity.VENDOR, product=identity.CDROM_MODEL,
                 revision=identity.SCSI_REVISION, serial=None, name="passthrough"):
        if serial is None:
            serial = identity.serial_number(None, name)
        super().__init__(vendor=vendor, product=product, revision=revision, serial=serial,
                         removable=True, identity_uuid=identity.medium_uuid(None, name))
        self.host = host_drive

    @property
    def block_size(self):
        return OPTICAL_SECTOR

    def eject(self, force=False):
        """Host-side eject: refused while the guest prevents removal unless
        ``force``; otherwise the host drive is told to open its tray."""
        if self.locked and not force:
            return False
        status, _, _ = self.host.execute(bytes([0x1B, 0, 0, 0, 0x02, 0]), Direction.NONE, 0, None)
        return status == Status.GOOD


class SimulatedDrive:
    """A HostDrive over an image: a ScsiCdrom with a host drive's own identity,
    already past its power-on unit attention, logging every CDB it gets."""

    def __init__(self, medium=None, *, vendor="HL-DT-ST", product="DVDRAM GH24NSD1",
                 revision="1.00"):
        self.drive = ScsiCdrom(medium, vendor=vendor, product=product, revision=revision)
        self.drive.unit_attentions.clear()
        self.received = []

    def execute(self, cdb, direction, xfer_length, data_out):
        self.received.append(bytes(cdb))
        req = self.drive.request(cdb)
        result = req.execute(data_out if req.direction is Direction.OUT else None)
        return int(result.status), bytes(result.data), bytes(result.sense)

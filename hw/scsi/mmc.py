"""The CD/DVD-ROM drive: MMC-6 commands over an optional 2048-byte medium.

Modelled from MMC-6 (T10/1836-D): READ(10)/(12) (SBC-3 layout), READ CD
(6.19, 2048-byte user data of a data disc only), READ CAPACITY (6.21), SEEK(10),
READ TOC/PMA/ATIP formats 0000b TOC, 0001b session information and 0010b
full TOC (6.26), READ DISC INFORMATION (6.22, standard data type), READ
TRACK INFORMATION (6.27), GET CONFIGURATION (6.6) with the Profile List,
Core, Morphing, Removable Medium, Random Readable, CD Read and DVD Read
features (5.3), GET EVENT STATUS NOTIFICATION (6.7, polled, media class),
MECHANISM STATUS (6.11), SET CD SPEED (6.37), READ DISC STRUCTURE (6.23,
the older READ DVD STRUCTURE: formats 00h physical, 01h copyright, FFh
list, for DVD media), and the CD Capabilities and Mechanical Status mode
page 2Ah (MMC-3 6.3.11, the 20-byte MMC-2 form; MMC-5 dropped it from the
standard but guests still read it for the lock state), plus the SPC-4
commands of spc.py.

The disc is modelled as a finalized single-session disc with one Mode 1
data track starting at LBA 0.  A medium larger than an 80-minute CD
(737280000 bytes) is a DVD-ROM (profile 0010h), anything else a CD-ROM
(profile 0008h).

Tray and medium, as the guest sees them:

* no medium: MEDIUM NOT PRESENT - TRAY CLOSED (3Ah/01h) for media access
  commands; tray opened by START STOP UNIT: MEDIUM NOT PRESENT - TRAY OPEN
  (3Ah/02h) until LOEJ+START closes it (with a medium inside, that is a
  NEW_MEDIA event and a NOT READY TO READY CHANGE unit attention).
* the host inserts a medium (``insert``): the tray closes, unit attention
  28h/00h and a NEW_MEDIA event (preceded by MEDIA_REMOVAL when a medium
  was swapped).  Both are needed: some guests poll with TEST UNIT READY,
  others with GET EVENT STATUS NOTIFICATION.
* the host ejects (``eject``): refused while the guest prevents removal,
  which then gets an EJECT_REQUEST event (the eject button) unless
  ``force`` (VirtualBox's emergency eject) removes it anyway.

Not supported: audio (PLAY, READ SUB-CHANNEL), raw and Mode 2 sectors in
READ CD, READ CD MSF, multi-session and dual-layer layouts, asynchronous
event notification, event classes other than media, writing of any kind
(write commands are not in the table: ILLEGAL REQUEST, INVALID COMMAND
OPERATION CODE, as on a CD-ROM drive).
"""

import enum

from drivebay.errors import ConfigError
from drivebay.hw import identity
from drivebay.hw.scsi import sbc, spc
from drivebay.hw.scsi import sense as S
from drivebay.hw.scsi.bus import ScsiLun
from drivebay.hw.scsi.cdb import (CDROM, Command, Direction, Flag, PeripheralDeviceType,
                                  command_table, u16, u24, u32)
from drivebay.hw.scsi.sense import CheckCondition, invalid_cdb

OPTICAL_SECTOR = 2048
CD_MAX_BYTES = 737280000                # 80-minute CD: 360000 sectors of 2048 bytes
MSF_OFFSET = 150                        # LBA 0 is at 00:02:00 (MMC-6 4.2.3.4)
FRAMES_PER_SECOND = 75
SECONDS_PER_MINUTE = 60
LEAD_OUT = 0xAA
ADR_CONTROL_DATA = 0x14                 # ADR 1 (Q mode 1), CONTROL 4 (data track, uninterrupted)

PROFILE_NONE = 0x0000
PROFILE_CD_ROM = 0x0008
PROFILE_DVD_ROM = 0x0010

# Core feature PHYSICAL INTERFACE STANDARD (MMC-6 5.3.2, table 95).
INTERFACE_SCSI = 0x00000001
INTERFACE_ATAPI = 0x00000002
INTERFACE_SERIAL_ATAPI = 0x00000007
INTERFACE_USB = 0x00000008

# GET EVENT STATUS NOTIFICATION (MMC-6 6.7).
NOTIFICATION_CLASS_MEDIA = 4
CLASS_MEDIA_BIT = 1 << NOTIFICATION_CLASS_MEDIA
GESN_NEA = 0x80
GESN_POLLED = 0x01
MEDIA_STATUS_PRESENT = 0x02
MEDIA_STATUS_DOOR_OPEN = 0x01
GESN_MEDIA_LENGTH = 8                   # header 4 + media event descriptor 4
MAX_MEDIA_EVENTS = 4


class MediaEvent(enum.IntEnum):
    """Media event codes (MMC-6 6.7.2.5, table 170)."""
    NO_CHANGE = 0x0
    EJECT_REQUEST = 0x1
    NEW_MEDIA = 0x2
    MEDIA_REMOVAL = 0x3
    MEDIA_CHANGED = 0x4


# -- addresses ----------------------------------------------------------------------

def lba_to_msf(lba):
    frames = lba + MSF_OFFSET
    minutes = min(frames // (FRAMES_PER_SECOND * SECONDS_PER_MINUTE), 0xFF)
    seconds = (frames // FRAMES_PER_SECOND) % SECONDS_PER_MINUTE
    return minutes, seconds, frames % FRAMES_PER_SECOND


def _address(lba, msf):
    """A 4-byte TOC address: LBA, or 0/M/S/F (MMC-6 6.26.2.4)."""
    if msf:
        return bytes([0, *lba_to_msf(lba)])
    return lba.to_bytes(4, "big")


# -- READ CD, SEEK -----------------------------------------------------------------

SECTOR_TYPE_ANY, SECTOR_TYPE_CDDA, SECTOR_TYPE_MODE1 = 0, 1, 2
MAIN_CHANNEL_NONE = 0x00
MAIN_CHANNEL_USER_DATA = 0x10


def parse_read_cd(lun, req):
    """READ CD (MMC-6 6.19): EXPECTED SECTOR TYPE byte 1 bits 4:2, LBA bytes
    2-5, TRANSFER LENGTH bytes 6-8, main channel selection byte 9,
    sub-channel selection byte 10 bits 2:0."""
    cdb = req.cdb
    sector_type = (cdb[1] >> 2) & 0x7
    lba, blocks = u32(cdb, 2), u24(cdb, 6)
    req.args.update(lba=lba, blocks=blocks)
    if sector_type > 5:
        raise invalid_cdb(1, 4)
    if sector_type not in (SECTOR_TYPE_ANY, SECTOR_TYPE_MODE1):
        # The track is Mode 1: a CD-DA or Mode 2 request does not match it.
        raise CheckCondition(S.ILLEGAL_MODE_FOR_THIS_TRACK)
    if cdb[9] not in (MAIN_CHANNEL_NONE, MAIN_CHANNEL_USER_DATA):
        raise invalid_cdb(9)
    if cdb[10] & 0x07:
        raise invalid_cdb(10, 2)
    if lba + blocks > lun.capacity:
        raise CheckCondition(S.LBA_OUT_OF_RANGE, information=lba)
    if blocks * OPTICAL_SECTOR > sbc.MAX_TRANSFER_BYTES:
        raise invalid_cdb(6)
    if cdb[9] == MAIN_CHANNEL_USER_DATA:        # zero: "no data transferred, not an error"
        req.xfer_length = blocks * OPTICAL_SECTOR


def parse_seek(lun, req):
    lba = u32(req.cdb, 2)
    req.args["lba"] = lba
    if lba >= lun.capacity:
        raise CheckCondition(S.LBA_OUT_OF_RANGE, information=lba)


# -- READ TOC/PMA/ATIP (MMC-6 6.26) ----------------------------------------------------

TOC_FORMATTED, TOC_SESSION_INFO, TOC_FULL = 0, 1, 2


def parse_read_toc(lun, req):
    cdb = req.cdb
    msf = (cdb[1] >> 1) & 1
    fmt = cdb[2] & 0x0F
    if fmt == 0 and cdb[9] >> 6:
        fmt = cdb[9] >> 6               # SFF-8020's FORMAT in the CONTROL byte's vendor bits
    track = cdb[6]
    if fmt not in (TOC_FORMATTED, TOC_SESSION_INFO, TOC_FULL):
        raise invalid_cdb(2, 3)
    if fmt == TOC_FULL and lun.is_dvd:  # the full TOC is the Q sub-channel of a CD
        raise invalid_cdb(2, 3)
    if fmt == TOC_FORMATTED and track > 1 and track != LEAD_OUT:
        raise invalid_cdb(6)
    req.args.update(format=fmt, msf=msf, track=track)
    req.xfer_length = u16(cdb, 7)


def read_toc(lun, req, data_out):
    fmt, msf, track = req.args["format"], req.args["msf"], req.args["track"]
    if fmt == TOC_FORMATTED:
        body = b""
        if track <= 1:
            body += bytes([0, ADR_CONTROL_DATA, 1, 0]) + _address(0, msf)
        body += bytes([0, ADR_CONTROL_DATA, LEAD_OUT, 0]) + _address(lun.capacity, msf)
        first, last = 1, 1
    elif fmt == TOC_SESSION_INFO:
        body = bytes([0, ADR_CONTROL_DATA, 1, 0]) + _address(0, msf)
        first, last = 1, 1                  # first and last complete session
    else:
        def point(number, pmsf):
            return bytes([1, ADR_CONTROL_DATA, 0, number, 0, 0, 0, 0, *pmsf])
        body = (point(0xA0, (1, 0x00, 0))   # first track 1, disc type 00h (CD-DA or CD-ROM)
                + point(0xA1, (1, 0, 0))    # last track 1
                + point(0xA2, lba_to_msf(lun.capacity))     # lead-out start
                + point(0x01, lba_to_msf(0)))
        first, last = 1, 1
    return (len(body) + 2).to_bytes(2, "big") + bytes([first, last]) + body


# -- READ DISC INFORMATION, READ TRACK INFORMATION (MMC-6 6.22, 6.27) -----------------

DISC_INFORMATION_LENGTH = 34
DISC_STATUS_COMPLETE = 0x02             # byte 2 bits 1:0
LAST_SESSION_COMPLETE = 0x0C            # byte 2 bits 3:2
TRACK_INFORMATION_LENGTH = 48
TRACK_MODE_DATA = 0x04
DATA_MODE_1 = 0x01
ADDRESS_LBA, ADDRESS_TRACK, ADDRESS_SESSION = 0, 1, 2


def parse_read_disc_information(lun, req):
    if req.cdb[1] & 0x07:               # only DATA TYPE 000b, standard disc information
        raise invalid_cdb(1, 2)
    req.xfer_length = u16(req.cdb, 7)


def read_disc_information(lun, req, data_out):
    out = bytearray(DISC_INFORMATION_LENGTH)
    out[0:2] = (DISC_INFORMATION_LENGTH - 2).to_bytes(2, "big")
    out[2] = LAST_SESSION_COMPLETE | DISC_STATUS_COMPLETE
    out[3] = 1                          # number of first track on disc
    out[4] = 1                          # number of sessions (LSB)
    out[5] = 1                          # first track number in last session (LSB)
    out[6] = 1                          # last track number in last session (LSB)
    out[16:20] = b"\xff" * 4            # last session lead-in start: none, the disc is complete
    out[20:24] = b"\xff" * 4            # last possible lead-out start: none
    return out


def parse_read_track_information(lun, req):
    cdb = req.cdb
    kind, number = cdb[1] & 0x03, u32(cdb, 2)
    req.args.update(type=kind, number=number)
    if kind == ADDRESS_LBA:
        if number >= lun.capacity:
            raise CheckCondition(S.LBA_OUT_OF_RANGE, information=number)
    elif kind not in (ADDRESS_TRACK, ADDRESS_SESSION) or number != 1:
        # one track in one session; no invisible or lead-in track on a complete disc
        raise invalid_cdb(2 if kind != 3 else 1)
    req.xfer_length = u16(cdb, 7)


def read_track_information(lun, req, data_out):
    out = bytearray(TRACK_INFORMATION_LENGTH)
    out[0:2] = (TRACK_INFORMATION_LENGTH - 2).to_bytes(2, "big")
    out[2] = 1                          # track number (LSB)
    out[3] = 1                          # session number (LSB)
    out[5] = TRACK_MODE_DATA
    out[6] = DATA_MODE_1
    # bytes 8-11 track start address 0; 20-23 fixed packet size / blocking factor
    out[20:24] = (16 if lun.is_dvd else 0).to_bytes(4, "big")
    out[24:28] = lun.capacity.to_bytes(4, "big")                # track size
    return out


# -- GET CONFIGURATION (MMC-6 6.6, features 5.3) --------------------------------------

RT_ALL, RT_CURRENT, RT_ONE = 0, 1, 2
FEATURE_HEADER_LENGTH = 8


def _feature(code, version, persistent, current, data=b""):
    """A feature descriptor (MMC-6 5.3.1, table 86)."""
    flags = (version << 2) | (0x02 if persistent else 0) | (0x01 if current else 0)
    return code.to_bytes(2, "big") + bytes([flags, len(data)]) + data


def _profile_list(lun):
    present = lun.medium_sense() is None
    profiles = b""
    for profile, is_current in ((PROFILE_DVD_ROM, present and lun.is_dvd),
                                (PROFILE_CD_ROM, present and not lun.is_dvd)):
        profiles += profile.to_bytes(2, "big") + bytes([0x01 if is_current else 0, 0])
    return _feature(0x0000, 0, True, True, profiles)


def _core(lun):
    return _feature(0x0001, 2, True, True, lun.physical_interface.to_bytes(4, "big") + bytes(4))


def _morphing(lun):
    return _feature(0x0002, 1, True, True, bytes(4))     # ASYNC 0: polling only; OCEvent 0


# Removable Medium byte 4: LOADING MECHANISM TYPE 001b (tray), Eject, Pvnt Jmpr, Lock.
REMOVABLE_TRAY = 0x20
REMOVABLE_EJECT = 0x08
REMOVABLE_PVNT_JMPR = 0x04
REMOVABLE_LOCK = 0x01


def _removable_medium(lun):
    mechanism = REMOVABLE_TRAY | REMOVABLE_EJECT | REMOVABLE_PVNT_JMPR | REMOVABLE_LOCK
    return _feature(0x0003, 0, True, True, bytes([mechanism, 0, 0, 0]))


def _random_readable(lun):
    present = lun.medium_sense() is None
    blocking = 16 if lun.is_dvd else 1      # ECC block of a DVD holds 16 sectors
    data = OPTICAL_SECTOR.to_bytes(4, "big") + blocking.to_bytes(2, "big") + bytes(2)
    return _feature(0x0010, 0, False, present, data)


def _cd_read(lun):
    return _feature(0x001E, 2, False, lun.medium_sense() is None and not lun.is_dvd, bytes(4))


def _dvd_read(lun):
    return _feature(0x001F, 1, False, lun.medium_sense() is None and lun.is_dvd, bytes(4))


FEATURES = ((0x0000, _profile_list), (0x0001, _core), (0x0002, _morphing),
            (0x0003, _removable_medium), (0x0010, _random_readable), (0x001E, _cd_read),
            (0x001F, _dvd_read))


def parse_get_configuration(lun, req):
    cdb = req.cdb
    rt = cdb[1] & 0x03
    if rt == 3:
        raise invalid_cdb(1, 1)
    req.args.update(rt=rt, start=u16(cdb, 2))
    req.xfer_length = u16(cdb, 7)


def get_configuration(lun, req, data_out):
    rt, start = req.args["rt"], req.args["start"]
    body = b""
    for code, build in FEATURES:
        if code < start or (rt == RT_ONE and code != start):
            continue
        descriptor = build(lun)
        if rt == RT_CURRENT and not descriptor[2] & 0x01:
            continue
        body += descriptor
    header = (len(body) + FEATURE_HEADER_LENGTH - 4).to_bytes(4, "big") + bytes(2)
    return header + lun.current_profile.to_bytes(2, "big") + body


# -- GET EVENT STATUS NOTIFICATION (MMC-6 6.7) ---------------------------------------

def parse_get_event_status(lun, req):
    cdb = req.cdb
    if not cdb[1] & GESN_POLLED:        # asynchronous notification is not supported
        raise invalid_cdb(1, 0)
    req.args["classes"] = cdb[4]
    req.xfer_length = u16(cdb, 7)


def get_event_status(lun, req, data_out):
    """Event header (EVENT DESCRIPTOR LENGTH counts the bytes after itself)
    and, when the media class is requested, one media event descriptor.
    An event is consumed only when the whole descriptor fits the allocation."""
    if not req.args["classes"] & CLASS_MEDIA_BIT:
        return bytes([0, 2, GESN_NEA, CLASS_MEDIA_BIT])
    event = MediaEvent.NO_CHANGE
    if lun.media_events and req.xfer_length >= GESN_MEDIA_LENGTH:
        event = lun.media_events.pop(0)
    status = (MEDIA_STATUS_PRESENT if lun.medium_sense() is None else 0) | \
             (MEDIA_STATUS_DOOR_OPEN if lun.tray_open else 0)
    return bytes([0, 6, NOTIFICATION_CLASS_MEDIA, CLASS_MEDIA_BIT, event, status, 0, 0])


# -- READ DISC STRUCTURE (MMC-6 6.23; READ DVD STRUCTURE before MMC-5) -----------------

STRUCTURE_PHYSICAL, STRUCTURE_COPYRIGHT, STRUCTURE_LIST = 0x00, 0x01, 0xFF
LAYER_DESCRIPTOR_LENGTH = 2048
DVD_DATA_START_PSN = 0x030000           # first physical sector of a DVD-ROM's data zone
STRUCTURE_RDS = 0x40                    # list descriptor: readable with READ DISC STRUCTURE


def parse_read_disc_structure(lun, req):
    cdb = req.cdb
    if cdb[1] & 0x0F:                   # MEDIA TYPE 0000b (DVD) only; 0001b is BD
        raise invalid_cdb(1, 3)
    fmt, layer = cdb[7], cdb[6]
    req.args.update(format=fmt, layer=layer)
    if fmt not in (STRUCTURE_PHYSICAL, STRUCTURE_COPYRIGHT, STRUCTURE_LIST):
        raise invalid_cdb(7)
    if fmt != STRUCTURE_LIST:
        if not lun.is_dvd:
            raise CheckCondition(S.CANNOT_READ_MEDIUM_INCOMPATIBLE_FORMAT)
        if layer:                       # single-layer discs only
            raise invalid_cdb(6)
    req.xfer_length = u16(cdb, 8)


def _layer_descriptor(lun):
    """DVD layer descriptor (MMC-6 6.23.3.2.1; ECMA-267 3.3.2): DVD-ROM part
    version 1, 120 mm, rate not specified, one layer, embossed data."""
    out = bytearray(LAYER_DESCRIPTOR_LENGTH)
    out[0] = 0x01                       # DISK CATEGORY 0 (DVD-ROM), PART VERSION 1
    out[1] = 0x0F                       # DISC SIZE 0 (120 mm), MAXIMUM RATE Fh (not specified)
    out[2] = 0x01                       # one layer, PTP, LAYER TYPE 1 (embossed)
    out[4:8] = DVD_DATA_START_PSN.to_bytes(4, "big")
    out[8:12] = (DVD_DATA_START_PSN + lun.capacity - 1).to_bytes(4, "big")
    return out


def read_disc_structure(lun, req, data_out):
    fmt = req.args["format"]
    if fmt == STRUCTURE_PHYSICAL:
        body = _layer_descriptor(lun)
    elif fmt == STRUCTURE_COPYRIGHT:
        body = bytes(4)                 # CPST 0: no copy protection; all regions
    else:
        body = b"".join(bytes([code, STRUCTURE_RDS]) + length.to_bytes(2, "big")
                        for code, length in ((STRUCTURE_PHYSICAL, LAYER_DESCRIPTOR_LENGTH + 4),
                                             (STRUCTURE_COPYRIGHT, 8), (STRUCTURE_LIST, 16)))
    return (len(body) + 2).to_bytes(2, "big") + bytes(2) + bytes(body)


# -- MECHANISM STATUS, SET CD SPEED (MMC-6 6.11, 6.37) ----------------------------------

MECHANISM_STATUS_HEADER = 8
MECHANISM_DOOR_OPEN = 0x10              # byte 1 bit 4


def parse_mechanism_status(lun, req):
    req.xfer_length = u16(req.cdb, 8)


def mechanism_status(lun, req, data_out):
    out = bytearray(MECHANISM_STATUS_HEADER)    # no changer: no slot tables
    if lun.tray_open:
        out[1] = MECHANISM_DOOR_OPEN
    return out


# -- CD Capabilities and Mechanical Status mode page (MMC-3 6.3.11) ---------------------

CAP_READ_CD_R, CAP_READ_CD_RW, CAP_READ_DVD_ROM = 0x01, 0x02, 0x08      # byte 2
CAP_LOCK, CAP_LOCK_STATE, CAP_PREVENT_JUMPER, CAP_EJECT = 0x01, 0x02, 0x04, 0x08   # byte 6
CAP_TRAY = 0x20                         # byte 6 LOADING MECHANISM TYPE 001b
READ_SPEED_KBPS = 7056                  # 40x (1x = 176.4 kB/s)


def _capabilities(lun, default):
    page = CAPABILITIES.blank()
    page[2] = CAP_READ_CD_R | CAP_READ_CD_RW | CAP_READ_DVD_ROM
    page[6] = CAP_TRAY | CAP_EJECT | CAP_PREVENT_JUMPER | CAP_LOCK
    if lun.locked and not default:
        page[6] |= CAP_LOCK_STATE
    page[8:10] = READ_SPEED_KBPS.to_bytes(2, "big")        # maximum read speed (obsolete)
    page[14:16] = READ_SPEED_KBPS.to_bytes(2, "big")       # current read speed (obsolete)
    return page


CAPABILITIES = spc.ModePage(0x2A, "CD capabilities and mechanical status", 0x14, _capabilities)


# -- the MMC rows ---------------------------------------------------------------

IN, OUT, NONE = Direction.IN, Direction.OUT, Direction.NONE
C = frozenset({CDROM})
MEDIUM = Flag.NEEDS_MEDIUM
UA = Flag.ALLOW_UA

READ_CAPACITY = Command(0x25, "READ_CAPACITY", sbc.parse_read_capacity_10, sbc.read_capacity_10,
                        IN, C, MEDIUM)
READ_10 = Command(0x28, "READ_10", sbc.parse_read, sbc.read, IN, C, MEDIUM)
SEEK_10 = Command(0x2B, "SEEK_10", parse_seek, None, NONE, C, MEDIUM)
READ_TOC_PMA_ATIP = Command(0x43, "READ_TOC_PMA_ATIP", parse_read_toc, read_toc, IN, C, MEDIUM)
GET_CONFIGURATION = Command(0x46, "GET_CONFIGURATION", parse_get_configuration, get_configuration,
                            IN, C, UA)
GET_EVENT_STATUS_NOTIFICATION = Command(0x4A, "GET_EVENT_STATUS_NOTIFICATION",
                                        parse_get_event_status, get_event_status, IN, C, UA)
READ_DISC_INFORMATION = Command(0x51, "READ_DISC_INFORMATION", parse_read_disc_information,
                                read_disc_information, IN, C, MEDIUM)
READ_TRACK_INFORMATION = Command(0x52, "READ_TRACK_INFORMATION", parse_read_track_information,
                                 read_track_information, IN, C, MEDIUM)
READ_12 = Command(0xA8, "READ_12", sbc.parse_read, sbc.read, IN, C, MEDIUM)
READ_DISC_STRUCTURE = Command(0xAD, "READ_DISC_STRUCTURE", parse_read_disc_structure,
                              read_disc_structure, IN, C, MEDIUM)
SET_CD_SPEED = Command(0xBB, "SET_CD_SPEED", None, None, NONE, C)
MECHANISM_STATUS = Command(0xBD, "MECHANISM_STATUS", parse_mechanism_status, mechanism_status,
                           IN, C)
READ_CD = Command(0xBE, "READ_CD", parse_read_cd, sbc.read, IN, C, MEDIUM)

MMC_COMMANDS = (READ_CAPACITY, READ_10, SEEK_10, READ_TOC_PMA_ATIP, GET_CONFIGURATION,
                GET_EVENT_STATUS_NOTIFICATION, READ_DISC_INFORMATION, READ_TRACK_INFORMATION,
                READ_12, READ_DISC_STRUCTURE, SET_CD_SPEED, MECHANISM_STATUS, READ_CD)


class ScsiCdrom(ScsiLun):
    """A CD/DVD-ROM drive (PERIPHERAL DEVICE TYPE 05h), RMB set, empty when
    ``backend`` is None.  Its identity (serial, NAA) comes from the medium
    present at construction, or from the product name for an empty drive,
    and does not change with the medium."""

    kind = "cdrom"
    device_type = PeripheralDeviceType.CD_DVD
    commands = command_table(CDROM, *spc.SPC_COMMANDS, *MMC_COMMANDS)
    mode_pages = spc.COMMON_MODE_PAGES + (CAPABILITIES,)
    vpd_pages = dict(spc.COMMON_VPD_PAGES)
    STATE_FIELDS = ScsiLun.STATE_FIELDS + ("backend", "tray_open", "media_events")

    def __init__(self, backend=None, *, vendor=identity.VENDOR, product=identity.CDROM_MODEL,
                 revision=identity.SCSI_REVISION, serial=None,
                 physical_interface=INTERFACE_SCSI, cmdque=False):
        uuid, name = (backend.uuid, backend.name) if backend is not None else (None, product)
        if serial is None:
            serial = identity.serial_number(uuid, name)
        super().__init__(vendor=vendor, product=product, revision=revision, serial=serial,
                         removable=True, identity_uuid=identity.medium_uuid(uuid, name),
                         cmdque=cmdque)
        if backend is not None:
            self._check_medium(backend)
        self.backend = backend
        self.physical_interface = physical_interface
        self.tray_open = False
        self.media_events = []

    # -- the medium as commands see it ------------------------------------------------

    @property
    def medium(self):
        return self.backend

    @property
    def block_size(self):
        return OPTICAL_SECTOR

    @property
    def capacity(self):
        if self.medium_sense() is not None:
            return 0
        return self.backend.size // OPTICAL_SECTOR

    @property
    def is_dvd(self):
        return self.backend is not None and self.backend.size > CD_MAX_BYTES

    @property
    def current_profile(self):
        if self.medium_sense() is not None:
            return PROFILE_NONE
        return PROFILE_DVD_ROM if self.is_dvd else PROFILE_CD_ROM

    def medium_sense(self):
        if self.tray_open:
            return S.MEDIUM_NOT_PRESENT_TRAY_OPEN
        if self.backend is None:
            return S.MEDIUM_NOT_PRESENT_TRAY_CLOSED
        return None

    def block_descriptor(self, long_lba):
        return b""                      # MMC-6 7.2: MMC drives return no block descriptors

    # -- events -----------------------------------------------------------------------

    def _queue_event(self, event):
        self.media_events.append(MediaEvent(event))
        del self.media_events[:-MAX_MEDIA_EVENTS]

    def pending_events(self):
        """Media events GET EVENT STATUS NOTIFICATION has yet to report, oldest first."""
        return tuple(self.media_events)

    @property
    def media_event_pending(self):
        """True while a media event waits for the guest (AHCI: reason for SNTF)."""
        return bool(self.media_events)

    # -- host side --------------------------------------------------------------------

    @staticmethod
    def _check_medium(medium):
        if medium.sector_size != OPTICAL_SECTOR:
            raise ConfigError(f"{medium.name}: an optical medium has {OPTICAL_SECTOR}-byte "
                              f"sectors, not {medium.sector_size}")

    def insert(self, medium):
        """The host puts a medium in (closing the tray)."""
        self._check_medium(medium)
        if self.backend is not None:
            self._queue_event(MediaEvent.MEDIA_REMOVAL)
        self.backend = medium
        self.tray_open = False
        self._queue_event(MediaEvent.NEW_MEDIA)
        self.queue_unit_attention(S.MEDIUM_MAY_HAVE_CHANGED)

    def eject(self, force=False):
        """The host takes the medium out.  While the guest prevents removal
        this is refused (False) and the guest sees an EJECT_REQUEST event,
        unless ``force``."""
        if self.locked and not force:
            self._queue_event(MediaEvent.EJECT_REQUEST)
            return False
        if self.backend is not None:
            self.backend = None
            self._queue_event(MediaEvent.MEDIA_REMOVAL)
        return True

    def load_eject(self, load):
        """START STOP UNIT LOEJ from the guest: open or close the tray."""
        if not load:
            self.tray_open = True
        elif self.tray_open:
            self.tray_open = False
            if self.backend is not None:
                self._queue_event(MediaEvent.NEW_MEDIA)
                self.queue_unit_attention(S.MEDIUM_MAY_HAVE_CHANGED)

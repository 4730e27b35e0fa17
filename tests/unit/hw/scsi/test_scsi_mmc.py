"""MMC-6 CD/DVD drive: media access, READ CD, READ TOC formats, GET
CONFIGURATION profiles, GET EVENT STATUS NOTIFICATION, tray and lock,
medium change sequencing, READ DISC STRUCTURE, mode page 2Ah."""

import pytest

from drivebay.block.backend import MemoryBackend
from drivebay.errors import ConfigError
from drivebay.hw.scsi import Direction, MediaEvent, ScsiCdrom
from drivebay.hw.scsi.mmc import INTERFACE_ATAPI

from scsi_host import (ILLEGAL_MODE_FOR_TRACK, INCOMPATIBLE_FORMAT, INVALID_FIELD_IN_CDB,
                       INVALID_OPCODE, LBA_OUT_OF_RANGE, MEDIUM_REMOVAL_PREVENTED,
                       NOT_READY_TRAY_CLOSED, NOT_READY_TRAY_OPEN, TEST_UNIT_READY,
                       UA_MEDIUM_CHANGED, UA_POWER_ON_RESET, HugeBackend, be, check, good,
                       mode_select10, mode_sense10, request_sense, run, rw_cdb, sense_triple,
                       settle)

SECTORS = 300
CD_LIMIT = 737280000                     # 80-minute CD: 360000 x 2048 bytes


def iso(sectors=SECTORS):
    data = bytearray(sectors * 2048)
    for n in range(sectors):
        data[n * 2048:n * 2048 + 4] = n.to_bytes(4, "big")
    return MemoryBackend(data, sector_size=2048, name="test.iso")


def dvd(size=CD_LIMIT + 2048):
    return HugeBackend(size, sector_size=2048, name="dvd.iso")


def drive(medium):
    lun = ScsiCdrom(medium)
    settle(lun)
    return lun


@pytest.fixture
def cd():
    return drive(iso())


@pytest.fixture
def empty():
    return drive(None)


def read_toc(fmt=0, msf=0, track=0, alloc=0xFFFF, control=0):
    return bytes([0x43, msf << 1, fmt, 0, 0, 0, track]) + be(alloc, 2) + bytes([control])


def get_configuration(rt=0, start=0, alloc=0xFFFF):
    return bytes([0x46, rt]) + be(start, 2) + bytes(3) + be(alloc, 2) + b"\0"


def gesn(classes=0x10, alloc=8, polled=1):
    return bytes([0x4A, polled, 0, 0, classes, 0, 0]) + be(alloc, 2) + b"\0"


def start_stop(start, loej):
    return bytes([0x1B, 0, 0, 0, (loej << 1) | start, 0])


def prevent(value):
    return bytes([0x1E, 0, 0, 0, value, 0])


def read_cd(lba, blocks, byte1=0, byte9=0x10, byte10=0):
    return bytes([0xBE, byte1]) + be(lba, 4) + be(blocks, 3) + bytes([byte9, byte10, 0])


def read_disc_structure(fmt, layer=0, alloc=0xFFFF, media=0):
    return bytes([0xAD, media, 0, 0, 0, 0, layer, fmt]) + be(alloc, 2) + b"\0\0"


# -- media access ---------------------------------------------------------------------

@pytest.mark.parametrize("cdb", [
    TEST_UNIT_READY, rw_cdb(0x28, 0, 1), rw_cdb(0xA8, 0, 1), bytes([0x25] + [0] * 9),
    read_toc(), read_cd(0, 1), bytes([0x51] + [0] * 6 + [0, 34, 0]),
    bytes([0x52, 1, 0, 0, 0, 1, 0, 0, 48, 0]), read_disc_structure(0),
    bytes([0x2B] + [0] * 9)])
def test_empty_drive_is_not_ready(empty, cdb):
    check(run(empty, cdb), NOT_READY_TRAY_CLOSED)


@pytest.mark.parametrize("cdb", [
    get_configuration(), gesn(), mode_sense10(0x2A), bytes([0xBD] + [0] * 7 + [0, 8, 0, 0]),
    bytes([0xBB] + [0] * 11), prevent(0), bytes([0x12, 0, 0, 0, 36, 0])])
def test_empty_drive_answers_drive_commands(empty, cdb):
    good(run(empty, cdb))


@pytest.mark.parametrize("opcode", [0x28, 0xA8])
def test_read(cd, opcode):
    result = run(cd, rw_cdb(opcode, 7, 2))
    data = bytes(result.data)
    assert len(data) == 4096 and data[:4] == be(7, 4) and data[2048:2052] == be(8, 4)
    check(run(cd, rw_cdb(opcode, SECTORS - 1, 2)), LBA_OUT_OF_RANGE)


def test_read_capacity(cd):
    assert good(run(cd, bytes([0x25] + [0] * 9))) == be(SECTORS - 1, 4) + be(2048, 4)


@pytest.mark.parametrize("opcode", [0x2A, 0xAA, 0x2E, 0x0A, 0x35, 0x04, 0x3B])
def test_write_commands_are_not_cd_rom_commands(cd, opcode):
    cdb = bytes([opcode]) + bytes(9 if opcode >> 5 else 5) + (b"\0\0" if opcode >> 5 == 5 else b"")
    req = cd.request(cdb)
    assert req.direction is Direction.NONE
    check(req.execute(), INVALID_OPCODE)


def test_seek(cd):
    good(run(cd, bytes([0x2B, 0]) + be(SECTORS - 1, 4) + bytes(4)))
    check(run(cd, bytes([0x2B, 0]) + be(SECTORS, 4) + bytes(4)), LBA_OUT_OF_RANGE)


# -- READ CD (MMC-6 6.19) ----------------------------------------------------------

def test_read_cd_user_data(cd):
    for sector_type in (0, 2):          # any type, Mode 1
        data = good(run(cd, read_cd(3, 2, byte1=sector_type << 2)))
        assert len(data) == 4096 and data[:4] == be(3, 4)
    req = cd.request(read_cd(3, 2, byte9=0x00))       # nothing selected: no data, GOOD
    assert req.direction is Direction.NONE
    good(req.execute())


@pytest.mark.parametrize("cdb,expected", [
    (read_cd(0, 1, byte1=1 << 2), ILLEGAL_MODE_FOR_TRACK),    # CD-DA
    (read_cd(0, 1, byte1=5 << 2), ILLEGAL_MODE_FOR_TRACK),    # Mode 2 Form 2
    (read_cd(0, 1, byte1=7 << 2), INVALID_FIELD_IN_CDB),      # reserved type
    (read_cd(0, 1, byte9=0xF8), INVALID_FIELD_IN_CDB),        # raw sector
    (read_cd(0, 1, byte10=0x02), INVALID_FIELD_IN_CDB),       # Q sub-channel
    (read_cd(SECTORS - 1, 2), LBA_OUT_OF_RANGE),
])
def test_read_cd_errors(cd, cdb, expected):
    check(run(cd, cdb), expected)


# -- READ TOC/PMA/ATIP (MMC-6 6.26) --------------------------------------------------

def test_read_toc_format_0_lba(cd):
    assert good(run(cd, read_toc())) == bytes([0, 18, 1, 1,
                                               0, 0x14, 1, 0, 0, 0, 0, 0,
                                               0, 0x14, 0xAA, 0]) + be(SECTORS, 4)


def test_read_toc_format_0_msf(cd):
    # LBA 0 is 00:02:00; the lead-out at LBA 300 is 450 frames = 00:06:00.
    assert good(run(cd, read_toc(msf=1))) == bytes([0, 18, 1, 1,
                                                    0, 0x14, 1, 0, 0, 0, 2, 0,
                                                    0, 0x14, 0xAA, 0, 0, 0, 6, 0])


def test_read_toc_lead_out_only_and_bad_track(cd):
    assert good(run(cd, read_toc(track=0xAA))) == bytes([0, 10, 1, 1, 0, 0x14, 0xAA, 0]) + \
        be(SECTORS, 4)
    check(run(cd, read_toc(track=2)), INVALID_FIELD_IN_CDB)


def test_read_toc_format_1_session_info(cd):
    expected = bytes([0, 10, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0])
    assert good(run(cd, read_toc(fmt=1))) == expected
    assert good(run(cd, read_toc(control=0x40))) == expected     # SFF-8020 format field


def test_read_toc_format_2_full_toc(cd):
    def descriptor(point, pmin, psec, pframe):
        return bytes([1, 0x14, 0, point, 0, 0, 0, 0, pmin, psec, pframe])
    assert good(run(cd, read_toc(fmt=2))) == (bytes([0, 46, 1, 1])
                                              + descriptor(0xA0, 1, 0x00, 0)
                                              + descriptor(0xA1, 1, 0, 0)
                                              + descriptor(0xA2, 0, 6, 0)
                                              + descriptor(0x01, 0, 2, 0))


def test_read_toc_unsupported_format_and_truncation(cd):
    check(run(cd, read_toc(fmt=4)), INVALID_FIELD_IN_CDB)
    result = run(cd, read_toc(alloc=4))
    assert bytes(result.data) == bytes([0, 18, 1, 1])


# -- GET CONFIGURATION (MMC-6 6.6) ----------------------------------------------------

PROFILE_LIST_CD = bytes([0, 0, 0x03, 8, 0x00, 0x10, 0, 0, 0x00, 0x08, 1, 0])
CORE_SCSI = bytes([0, 1, 0x0B, 8, 0, 0, 0, 1, 0, 0, 0, 0])
MORPHING = bytes([0, 2, 0x07, 4, 0, 0, 0, 0])
REMOVABLE = bytes([0, 3, 0x03, 4, 0x2D, 0, 0, 0])     # tray, eject, prevent jumper, lock


def test_get_configuration_cd():
    data = good(run(drive(iso()), get_configuration()))
    features = (PROFILE_LIST_CD + CORE_SCSI + MORPHING + REMOVABLE
                + bytes([0, 0x10, 0x01, 8, 0, 0, 8, 0, 0, 1, 0, 0])     # 2048 bytes, blocking 1
                + bytes([0, 0x1E, 0x09, 4, 0, 0, 0, 0])                 # CD Read, current
                + bytes([0, 0x1F, 0x04, 4, 0, 0, 0, 0]))                # DVD Read, not current
    assert data == be(len(features) + 4, 4) + bytes([0, 0, 0x00, 0x08]) + features


def test_get_configuration_dvd():
    data = good(run(drive(dvd()), get_configuration()))
    assert data[6:8] == bytes([0x00, 0x10])
    assert data[8:20] == bytes([0, 0, 0x03, 8, 0x00, 0x10, 1, 0, 0x00, 0x08, 0, 0])
    assert data[48:60] == bytes([0, 0x10, 0x01, 8, 0, 0, 8, 0, 0, 16, 0, 0])   # blocking 16
    assert data[60:68] == bytes([0, 0x1E, 0x08, 4, 0, 0, 0, 0])
    assert data[68:76] == bytes([0, 0x1F, 0x05, 4, 0, 0, 0, 0])


def test_the_cd_dvd_boundary_is_80_minutes():
    assert good(run(drive(dvd(CD_LIMIT)), get_configuration()))[6:8] == bytes([0, 0x08])
    assert good(run(drive(dvd(CD_LIMIT + 2048)), get_configuration()))[6:8] == bytes([0, 0x10])


def test_get_configuration_empty(empty):
    data = good(run(empty, get_configuration(rt=1)))
    assert data[6:8] == bytes(2)                         # no current profile
    assert data[8:] == bytes([0, 0, 0x03, 8, 0x00, 0x10, 0, 0, 0x00, 0x08, 0, 0]) + \
        CORE_SCSI + MORPHING + REMOVABLE
    assert int.from_bytes(data[:4], "big") == len(data) - 4


def test_get_configuration_rt_and_start(cd):
    assert good(run(cd, get_configuration(rt=2, start=0x1E)))[8:] == \
        bytes([0, 0x1E, 0x09, 4, 0, 0, 0, 0])
    assert good(run(cd, get_configuration(rt=2, start=0x1D)))[8:] == b""
    assert good(run(cd, get_configuration(rt=0, start=0x10)))[8:10] == bytes([0, 0x10])
    check(run(cd, get_configuration(rt=3)), INVALID_FIELD_IN_CDB)


def test_core_feature_names_the_transport():
    lun = ScsiCdrom(None, physical_interface=INTERFACE_ATAPI)
    assert good(run(lun, get_configuration(rt=2, start=1)))[8:] == \
        bytes([0, 1, 0x0B, 8, 0, 0, 0, 2, 0, 0, 0, 0])


# -- medium change: unit attention and events ---------------------------------------

def test_insert_reports_unit_attention_and_new_media(empty):
    empty.insert(iso())
    assert empty.pending_events() == (MediaEvent.NEW_MEDIA,) and empty.media_event_pending
    # GESN and GET CONFIGURATION are not blocked by, and do not clear, the UA.
    assert good(run(empty, gesn())) == bytes([0, 6, 0x04, 0x10, 0x02, 0x02, 0, 0])
    assert good(run(empty, get_configuration()))[6:8] == bytes([0, 8])
    assert not empty.media_event_pending
    assert good(run(empty, gesn())) == bytes([0, 6, 0x04, 0x10, 0x00, 0x02, 0, 0])
    check(run(empty, TEST_UNIT_READY), UA_MEDIUM_CHANGED)
    good(run(empty, TEST_UNIT_READY))


def test_unit_attention_after_reset_and_medium_change_in_order():
    lun = ScsiCdrom(None)
    lun.insert(iso())
    check(run(lun, rw_cdb(0x28, 0, 1)), UA_POWER_ON_RESET)
    check(run(lun, rw_cdb(0x28, 0, 1)), UA_MEDIUM_CHANGED)
    good(run(lun, rw_cdb(0x28, 0, 1)))
    lun.insert(iso())
    lun.reset()                                          # reset replaces pending conditions
    check(run(lun, TEST_UNIT_READY), UA_POWER_ON_RESET)
    good(run(lun, TEST_UNIT_READY))


def test_swapping_media_reports_removal_then_new_media(cd):
    cd.insert(iso(10))
    assert cd.pending_events() == (MediaEvent.MEDIA_REMOVAL, MediaEvent.NEW_MEDIA)
    assert good(run(cd, gesn()))[4] == 0x03
    assert good(run(cd, gesn()))[4] == 0x02
    check(run(cd, TEST_UNIT_READY), UA_MEDIUM_CHANGED)
    assert good(run(cd, bytes([0x25] + [0] * 9)))[:4] == be(9, 4)


def test_host_eject(cd):
    assert cd.eject()
    assert good(run(cd, gesn())) == bytes([0, 6, 0x04, 0x10, 0x03, 0x00, 0, 0])
    check(run(cd, TEST_UNIT_READY), NOT_READY_TRAY_CLOSED)
    assert sense_triple(good(run(cd, request_sense()))) == NOT_READY_TRAY_CLOSED


def test_locked_eject_is_refused_and_forced_eject_works(cd):
    good(run(cd, prevent(1)))
    assert cd.locked
    assert cd.eject() is False
    good(run(cd, TEST_UNIT_READY))                      # still loaded
    assert good(run(cd, gesn()))[4:6] == bytes([0x01, 0x02])     # EJECT_REQUEST, present
    assert cd.eject(force=True) is True
    check(run(cd, TEST_UNIT_READY), NOT_READY_TRAY_CLOSED)
    assert good(run(cd, gesn()))[4] == 0x03


def test_gesn_fields(cd):
    assert good(run(cd, gesn(classes=0x02))) == bytes([0, 2, 0x80, 0x10])    # NEA
    check(run(cd, gesn(polled=0)), INVALID_FIELD_IN_CDB)
    cd.insert(iso())
    assert good(run(cd, gesn(alloc=4))) == bytes([0, 6, 0x04, 0x10])
    assert cd.media_event_pending                       # not consumed: it did not fit


# -- tray and lock from the guest ----------------------------------------------------

def test_guest_eject_and_load(cd):
    good(run(cd, prevent(1)))
    check(run(cd, start_stop(0, 1)), MEDIUM_REMOVAL_PREVENTED)
    good(run(cd, TEST_UNIT_READY))
    good(run(cd, prevent(0)))
    good(run(cd, start_stop(0, 1)))
    assert cd.tray_open
    check(run(cd, TEST_UNIT_READY), NOT_READY_TRAY_OPEN)
    assert good(run(cd, gesn()))[5] == 0x01             # door open, no media present
    assert good(run(cd, bytes([0xBD] + [0] * 7 + [0, 8, 0, 0]))) == bytes([0, 0x10, 0, 0, 0, 0, 0, 0])
    assert good(run(cd, get_configuration()))[6:8] == bytes(2)
    good(run(cd, start_stop(1, 1)))
    assert not cd.tray_open
    check(run(cd, TEST_UNIT_READY), UA_MEDIUM_CHANGED)
    assert good(run(cd, gesn()))[4:6] == bytes([0x02, 0x02])


def test_host_insert_closes_an_open_tray(cd):
    good(run(cd, start_stop(0, 1)))
    cd.insert(iso())
    assert not cd.tray_open
    check(run(cd, TEST_UNIT_READY), UA_MEDIUM_CHANGED)
    good(run(cd, TEST_UNIT_READY))


def test_insert_requires_optical_sectors(empty):
    with pytest.raises(ConfigError):
        empty.insert(MemoryBackend(bytearray(4096)))


def test_capabilities_page_shows_the_lock(cd):
    page = bytes([0x2A, 0x14, 0x0B, 0x00, 0x00, 0x00, 0x2D, 0x00, 0x1B, 0x90,
                  0, 0, 0, 0, 0x1B, 0x90, 0, 0, 0, 0, 0, 0])
    data = good(run(cd, mode_sense10(0x2A)))
    assert data == bytes([0, 6 + 22, 0, 0, 0, 0, 0, 0]) + page     # no block descriptor
    good(run(cd, prevent(1)))
    assert good(run(cd, mode_sense10(0x2A)))[8 + 6] == 0x2F       # Lock State
    assert good(run(cd, mode_sense10(0x2A, pc=2)))[8 + 6] == 0x2D
    assert good(run(cd, mode_sense10(0x3F)))[1] == 6 + 12 + 20 + 12 + 40 + 22


def test_mode_select_on_cd_accepts_an_unchanged_page(cd):
    params = bytes(8) + bytes([0x2A, 0x14, 0x0B, 0, 0, 0, 0x2D, 0, 0x1B, 0x90,
                               0, 0, 0, 0, 0x1B, 0x90, 0, 0, 0, 0, 0, 0])
    good(run(cd, mode_select10(len(params)), params))


# -- READ DISC STRUCTURE, READ DISC/TRACK INFORMATION, MECHANISM STATUS ---------------

def test_read_disc_structure_physical_format():
    lun = drive(dvd())
    data = good(run(lun, read_disc_structure(0)))
    sectors = (CD_LIMIT + 2048) // 2048
    assert data[:4] == bytes([0x08, 0x02, 0, 0]) and len(data) == 2052
    assert data[4:21] == (bytes([0x01, 0x0F, 0x01, 0x00]) + be(0x030000, 4)
                          + be(0x030000 + sectors - 1, 4) + bytes(4) + b"\0")
    assert good(run(lun, read_disc_structure(1))) == bytes([0, 6, 0, 0, 0, 0, 0, 0])
    check(run(lun, read_disc_structure(0, layer=1)), INVALID_FIELD_IN_CDB)
    check(run(lun, read_disc_structure(0x05)), INVALID_FIELD_IN_CDB)
    check(run(lun, read_disc_structure(0, media=1)), INVALID_FIELD_IN_CDB)   # BD


def test_read_disc_structure_on_a_cd(cd):
    check(run(cd, read_disc_structure(0)), INCOMPATIBLE_FORMAT)
    data = good(run(cd, read_disc_structure(0xFF)))
    assert data == bytes([0, 14, 0, 0, 0x00, 0x40, 0x08, 0x04, 0x01, 0x40, 0, 8, 0xFF, 0x40, 0, 16])


def test_read_toc_full_is_cd_only():
    check(run(drive(dvd()), read_toc(fmt=2)), INVALID_FIELD_IN_CDB)


def test_read_disc_information(cd):
    cdb = bytes([0x51, 0, 0, 0, 0, 0, 0, 0, 34, 0])
    assert good(run(cd, cdb)) == (bytes([0, 32, 0x0E, 1, 1, 1, 1, 0, 0, 0, 0, 0]) + bytes(4)
                                  + b"\xff" * 8 + bytes(10))
    check(run(cd, bytes([0x51, 1, 0, 0, 0, 0, 0, 0, 34, 0])), INVALID_FIELD_IN_CDB)


def read_track_information(kind, number, alloc=48):
    return bytes([0x52, kind]) + be(number, 4) + b"\0" + be(alloc, 2) + b"\0"


def test_read_track_information(cd):
    expected = (bytes([0, 46, 1, 1, 0, 0x04, 0x01, 0]) + bytes(16) + be(SECTORS, 4)
                + bytes(20))
    assert good(run(cd, read_track_information(1, 1))) == expected
    assert good(run(cd, read_track_information(0, SECTORS - 1))) == expected
    assert good(run(cd, read_track_information(2, 1))) == expected
    check(run(cd, read_track_information(1, 2)), INVALID_FIELD_IN_CDB)
    check(run(cd, read_track_information(1, 0xFF)), INVALID_FIELD_IN_CDB)
    check(run(cd, read_track_information(3, 1)), INVALID_FIELD_IN_CDB)
    check(run(cd, read_track_information(0, SECTORS)), LBA_OUT_OF_RANGE)


def test_mechanism_status_and_set_cd_speed(cd):
    assert good(run(cd, bytes([0xBD] + [0] * 7 + [0, 8, 0, 0]))) == bytes(8)
    good(run(cd, bytes([0xBB, 0, 0xFF, 0xFF, 0xFF, 0xFF] + [0] * 6)))


def test_cdrom_identity_survives_medium_changes(cd):
    before = good(run(cd, bytes([0x12, 1, 0x80, 0, 64, 0])))
    cd.insert(iso(5))
    assert good(run(cd, bytes([0x12, 1, 0x80, 0, 64, 0]))) == before

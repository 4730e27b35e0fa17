"""SPC-4 commands and the rules bus.py applies to every LUN: INQUIRY and VPD
pages byte for byte, REQUEST SENSE, unit attention, REPORT LUNS, absent LUNs,
MODE SENSE/SELECT, PREVENT ALLOW, START STOP, REPORT SUPPORTED OPERATION CODES."""

import io
import uuid

import pytest

from drivebay import trace
from drivebay.block.backend import MemoryBackend
from drivebay.hw.scsi import Direction, ScsiCdrom, ScsiDisk, ScsiTarget, Status

from scsi_host import (DATA_PHASE_ERROR, INVALID_FIELD_IN_CDB, INVALID_FIELD_IN_PARAMETER_LIST,
                       INVALID_OPCODE, LUN_NOT_SUPPORTED, MEDIUM_REMOVAL_PREVENTED, NO_SENSE,
                       NOT_READY_TRAY_CLOSED, PARAMETER_LIST_LENGTH_ERROR,
                       SAVING_PARAMETERS_NOT_SUPPORTED, TEST_UNIT_READY, UA_POWER_ON_RESET, be,
                       check, good, inquiry, mode_select6, mode_select10, mode_sense6,
                       mode_sense10, request_sense, run, rw_cdb, sense_triple, settle)

UUID = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")
SERIAL = b"VB01234567-efcdab89"          # "VB" + RTUUID words 0 and 3 (hw/identity.py)
NAA = bytes([0x30, 0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE])    # NAA 3h + top 60 bits
BLOCKS = 2048


@pytest.fixture
def backend():
    return MemoryBackend(bytearray(BLOCKS * 512), uuid=UUID, name="disk.img")


@pytest.fixture
def disk(backend):
    lun = ScsiDisk(backend)
    settle(lun)
    return lun


@pytest.fixture
def cdrom():
    lun = ScsiCdrom(MemoryBackend(bytearray(2048 * 16), sector_size=2048, uuid=UUID, name="a.iso"))
    settle(lun)
    return lun


# -- INQUIRY (SPC-4 6.4) ---------------------------------------------------------------

def test_standard_inquiry_disk():
    data = good(run(ScsiDisk(MemoryBackend(bytearray(512))), inquiry()))
    assert data == (bytes([0x00, 0x00, 0x05, 0x02, 31, 0, 0, 0]) + b"VBOX    "
                    + b"VBOX HARDDISK   " + b"1.0 ")


def test_standard_inquiry_cdrom_and_removable_disk():
    data = good(run(ScsiCdrom(None), inquiry()))
    assert data[:8] == bytes([0x05, 0x80, 0x05, 0x02, 31, 0, 0, 0])
    assert data[8:36] == b"VBOX    VBOX CD-ROM     1.0 "
    usb = ScsiDisk(MemoryBackend(bytearray(512)), removable=True, product="USB DISK", cmdque=True)
    data = good(run(usb, inquiry()))
    assert data[1] == 0x80 and data[7] == 0x02 and data[16:32] == b"USB DISK        "


def test_inquiry_allocation_length_truncates_with_residual():
    result = run(ScsiDisk(MemoryBackend(bytearray(512))), inquiry(alloc=5))
    assert bytes(result.data) == bytes([0, 0, 5, 2, 31]) and result.residual == 0
    result = run(ScsiDisk(MemoryBackend(bytearray(512))), inquiry(alloc=100))
    assert len(result.data) == 36 and result.residual == 64
    req = ScsiDisk(MemoryBackend(bytearray(512))).request(inquiry(alloc=0))
    assert req.direction is Direction.NONE and req.xfer_length == 0


def test_vpd_supported_pages(disk, cdrom):
    assert good(run(disk, inquiry(1, 0x00))) == bytes([0x00, 0x00, 0, 6,
                                                       0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2])
    assert good(run(cdrom, inquiry(1, 0x00))) == bytes([0x05, 0x00, 0, 3, 0x00, 0x80, 0x83])


def test_vpd_unit_serial_number(disk):
    assert good(run(disk, inquiry(1, 0x80))) == bytes([0x00, 0x80, 0, len(SERIAL)]) + SERIAL


def test_vpd_device_identification(disk):
    t10 = b"VBOX    " + b"VBOX HARDDISK   " + SERIAL
    expected = (bytes([0x00, 0x83, 0, 4 + len(t10) + 4 + 8])
                # code set 2 (ASCII), association 0 (LU), type 1 (T10 vendor ID)
                + bytes([0x02, 0x01, 0x00, len(t10)]) + t10
                # code set 1 (binary), association 0, type 3 (NAA)
                + bytes([0x01, 0x03, 0x00, 0x08]) + NAA)
    assert good(run(disk, inquiry(1, 0x83))) == expected


@pytest.mark.parametrize("cdb", [
    inquiry(0, 0x80),             # PAGE CODE without EVPD
    inquiry(1, 0x99),             # unsupported VPD page
    inquiry(byte1=0x02),          # CMDDT
])
def test_inquiry_invalid_fields(disk, cdb):
    check(run(disk, cdb), INVALID_FIELD_IN_CDB)


def test_cdrom_has_no_block_vpd_pages(cdrom):
    check(run(cdrom, inquiry(1, 0xB0)), INVALID_FIELD_IN_CDB)


# -- dispatch rules (bus.py) -------------------------------------------------------

def test_unknown_opcode(disk):
    check(run(disk, bytes([0xC5, 0, 0, 0, 0, 0])), INVALID_OPCODE)
    check(run(disk, bytes([0x04, 0, 0, 0, 0, 0])), INVALID_OPCODE)   # FORMAT UNIT
    check(run(disk, b""), INVALID_OPCODE)


def test_unknown_service_action_points_at_byte_1(disk):
    sense = check(run(disk, bytes([0x9E, 0x11] + [0] * 14)), INVALID_FIELD_IN_CDB)
    assert sense[15:18] == bytes([0xC8 | 4, 0, 1])


@pytest.mark.parametrize("control,bit", [(0x04, 2), (0x01, 0)])
def test_naca_and_link_are_refused(disk, control, bit):
    sense = check(run(disk, bytes([0, 0, 0, 0, 0, control])), INVALID_FIELD_IN_CDB)
    assert sense[15:18] == bytes([0xC8 | bit, 0, 5])


def test_short_cdb(disk):
    check(run(disk, bytes([0x28, 0, 0, 0])), INVALID_FIELD_IN_CDB)


def test_longer_cdb_buffer_is_cut_to_the_group_length(disk):
    req = disk.request(rw_cdb(0x28, 0, 1) + bytes(6))     # an ATAPI/virtio 16-byte buffer
    assert len(req.cdb) == 10 and req.xfer_length == 512
    assert good(req.execute()) == bytes(512)


def test_short_data_out_is_a_data_phase_error_and_writes_nothing(disk, backend):
    req = disk.request(rw_cdb(0x2A, 0, 2))
    check(req.execute(b"\xff" * 600), DATA_PHASE_ERROR)
    assert not any(backend.data[:1024])


def test_request_executes_once(disk):
    req = disk.request(TEST_UNIT_READY)
    req.execute()
    with pytest.raises(AssertionError):
        req.execute()


# -- unit attention (SAM-5 5.14) and REQUEST SENSE (SPC-4 6.29) ---------------------

def test_power_on_unit_attention_is_reported_once():
    lun = ScsiDisk(MemoryBackend(bytearray(4096)))
    good(run(lun, inquiry()))                     # INQUIRY neither reports nor clears it
    good(run(lun, bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0])))     # nor REPORT LUNS
    check(run(lun, TEST_UNIT_READY), UA_POWER_ON_RESET)
    good(run(lun, TEST_UNIT_READY))


def test_unit_attention_is_reported_before_an_invalid_opcode():
    lun = ScsiDisk(MemoryBackend(bytearray(4096)))
    check(run(lun, bytes([0xC5, 0, 0, 0, 0, 0])), UA_POWER_ON_RESET)
    check(run(lun, bytes([0xC5, 0, 0, 0, 0, 0])), INVALID_OPCODE)


def test_request_sense_reports_and_clears_the_unit_attention():
    lun = ScsiDisk(MemoryBackend(bytearray(4096)))
    assert sense_triple(good(run(lun, request_sense()))) == UA_POWER_ON_RESET
    assert sense_triple(good(run(lun, request_sense()))) == NO_SENSE
    good(run(lun, TEST_UNIT_READY))


def test_reset_sets_unit_attention_and_clears_state(disk):
    disk.locked = True
    disk.wce = False
    disk.reset()
    assert not disk.locked and disk.wce
    check(run(disk, rw_cdb(0x28, 0, 1)), UA_POWER_ON_RESET)
    good(run(disk, rw_cdb(0x28, 0, 1)))


def test_target_reset_reaches_every_lun():
    luns = {0: ScsiDisk(MemoryBackend(bytearray(512))), 1: ScsiCdrom(None)}
    target = ScsiTarget(luns)
    for lun in luns.values():
        settle(lun)
    target.reset()
    check(run(luns[0], TEST_UNIT_READY), UA_POWER_ON_RESET)
    check(run(luns[1], TEST_UNIT_READY), UA_POWER_ON_RESET)


def test_request_sense_returns_the_last_check_condition_once(disk):
    check(run(disk, rw_cdb(0x28, BLOCKS, 1)), (0x5, 0x21, 0x00))
    good(run(disk, inquiry()))                    # an ALLOW_UA command keeps it
    sense = good(run(disk, request_sense()))
    assert sense_triple(sense) == (0x5, 0x21, 0x00)
    assert sense[0] == 0xF0 and sense[3:7] == be(BLOCKS, 4)     # VALID, INFORMATION = LBA
    assert sense_triple(good(run(disk, request_sense()))) == NO_SENSE


def test_a_successful_command_drops_the_retained_sense(disk):
    check(run(disk, rw_cdb(0x28, BLOCKS, 1)), (0x5, 0x21, 0x00))
    good(run(disk, TEST_UNIT_READY))
    assert sense_triple(good(run(disk, request_sense()))) == NO_SENSE


def test_request_sense_desc_bit_and_allocation(disk):
    check(run(disk, bytes([0xC5, 0, 0, 0, 0, 0])), INVALID_OPCODE)
    assert good(run(disk, request_sense(desc=1))) == bytes([0x72, 0x05, 0x20, 0, 0, 0, 0, 0])
    assert good(run(disk, request_sense(alloc=8))) == bytes([0x70, 0, 0, 0, 0, 0, 0, 10])


def test_request_sense_polls_not_ready_of_an_empty_drive():
    lun = ScsiCdrom(None)
    settle(lun)
    assert sense_triple(good(run(lun, request_sense()))) == NOT_READY_TRAY_CLOSED


# -- REPORT LUNS (SPC-4 6.33) and absent LUNs ----------------------------------------

def report_luns(alloc=0x100, select=0):
    return bytes([0xA0, 0, select, 0, 0, 0]) + be(alloc, 4) + b"\0\0"


def test_report_luns_lists_the_target():
    target = ScsiTarget({0: ScsiDisk(MemoryBackend(bytearray(512))), 1: ScsiCdrom(None),
                         300: ScsiDisk(MemoryBackend(bytearray(512)))})
    expected = (be(24, 4) + bytes(4) + bytes(8) + bytes([0, 1]) + bytes(6)
                + bytes([0x41, 0x2C]) + bytes(6))
    for lun in (0, 1, 7):               # any LUN answers, absent ones too
        assert good(run_target(target, lun, report_luns())) == expected
    assert good(run_target(target, 0, report_luns(select=1))) == bytes(8)


def test_report_luns_of_a_lone_lun_and_its_errors(disk):
    assert good(run(disk, report_luns())) == be(8, 4) + bytes(4) + bytes(8)
    check(run(disk, report_luns(alloc=15)), INVALID_FIELD_IN_CDB)
    check(run(disk, report_luns(select=3)), INVALID_FIELD_IN_CDB)


def run_target(target, lun, cdb, data_out=None):
    req = target.request(lun, cdb)
    return req.execute(data_out)


def test_absent_lun():
    target = ScsiTarget({0: ScsiDisk(MemoryBackend(bytearray(512)))})
    data = good(run_target(target, 5, inquiry()))
    assert data[0] == 0x7F and len(data) == 36      # qualifier 011b, type 1Fh
    check(run_target(target, 5, TEST_UNIT_READY), LUN_NOT_SUPPORTED)
    check(run_target(target, 5, rw_cdb(0x28, 0, 1)), LUN_NOT_SUPPORTED)
    result = run_target(target, 5, request_sense())
    assert result.status == Status.GOOD and sense_triple(result.data) == LUN_NOT_SUPPORTED


def test_target_rejects_bad_lun_numbers():
    from drivebay.errors import ConfigError
    with pytest.raises(ConfigError):
        ScsiTarget({16384: ScsiCdrom(None)})
    lun = ScsiCdrom(None)
    ScsiTarget({0: lun})
    with pytest.raises(ConfigError):
        ScsiTarget({1: lun})


# -- MODE SENSE (SPC-4 6.11, 6.12) --------------------------------------------------

HEADER_6 = bytes([95, 0x00, 0x10, 8])                 # length, medium type, DPOFUA, BD length
BLOCK_DESCRIPTOR = be(BLOCKS, 4) + bytes([0]) + be(512, 3)
PAGE_01 = bytes([0x01, 0x0A]) + bytes(10)
PAGE_08 = bytes([0x08, 0x12, 0x04]) + bytes(17)       # WCE
PAGE_0A = bytes([0x0A, 0x0A]) + bytes(10)
PAGE_1A = bytes([0x1A, 0x26]) + bytes(38)


def test_mode_sense6_all_pages(disk):
    assert good(run(disk, mode_sense6(0x3F))) == (HEADER_6 + BLOCK_DESCRIPTOR + PAGE_01 + PAGE_08
                                                 + PAGE_0A + PAGE_1A)


def test_mode_sense10_one_page_and_dbd(disk):
    data = good(run(disk, mode_sense10(0x08)))
    assert data == bytes([0, 6 + 8 + 20, 0, 0x10, 0, 0, 0, 8]) + BLOCK_DESCRIPTOR + PAGE_08
    data = good(run(disk, mode_sense10(0x08, dbd=1)))
    assert data == bytes([0, 6 + 20, 0, 0x10, 0, 0, 0, 0]) + PAGE_08
    assert good(run(disk, mode_sense6(0x0A, dbd=1))) == bytes([15, 0, 0x10, 0]) + PAGE_0A


def test_mode_sense10_long_lba_descriptor(disk):
    data = good(run(disk, mode_sense10(0x01, llbaa=1)))
    assert data[:8] == bytes([0, 6 + 16 + 12, 0, 0x10, 0x01, 0, 0, 16])    # LONGLBA
    assert data[8:24] == be(BLOCKS, 8) + bytes(4) + be(512, 4)


def test_mode_sense_page_control(disk):
    assert good(run(disk, mode_sense6(0x08, pc=1, dbd=1)))[4:] == \
        bytes([0x08, 0x12, 0x04]) + bytes(17)      # changeable: WCE only
    assert good(run(disk, mode_sense6(0x0A, pc=1, dbd=1)))[4:] == \
        bytes([0x0A, 0x0A, 0x04]) + bytes(9)       # changeable: D_SENSE only
    disk.wce = False
    assert good(run(disk, mode_sense6(0x08, pc=0, dbd=1)))[6] == 0x00
    assert good(run(disk, mode_sense6(0x08, pc=2, dbd=1)))[6] == 0x04    # default
    sense = check(run(disk, mode_sense6(0x08, pc=3)), SAVING_PARAMETERS_NOT_SUPPORTED)
    assert sense[15:18] == bytes([0xCF, 0, 2])


def test_mode_sense_write_protect_bit():
    lun = ScsiDisk(MemoryBackend(bytearray(512), read_only=True))
    settle(lun)
    assert good(run(lun, mode_sense6(0x08)))[2] == 0x90          # WP | DPOFUA


@pytest.mark.parametrize("cdb", [mode_sense6(0x05), mode_sense6(0x2A), mode_sense6(0x08, subpage=1)])
def test_mode_sense_unsupported_page(disk, cdb):
    check(run(disk, cdb), INVALID_FIELD_IN_CDB)


def test_mode_sense_all_subpages_is_all_pages(disk):
    assert good(run(disk, mode_sense6(0x3F, subpage=0xFF))) == good(run(disk, mode_sense6(0x3F)))


def test_mode_sense_allocation_truncates(disk):
    result = run(disk, mode_sense6(0x3F, alloc=4))
    assert bytes(result.data) == HEADER_6 and result.residual == 0


# -- MODE SELECT (SPC-4 6.9, 6.10) -----------------------------------------------------

def caching_page(wce):
    return bytes([0x08, 0x12, 0x04 if wce else 0]) + bytes(17)


def test_mode_select_clears_wce_and_writes_flush(disk, backend):
    params = bytes(4) + caching_page(False)
    good(run(disk, mode_select6(len(params)), params))
    assert not disk.wce and backend.flushes == 1           # the cache is written back
    assert good(run(disk, mode_sense6(0x08, dbd=1)))[6] == 0x00
    good(run(disk, rw_cdb(0x2A, 0, 1), bytes(512)))
    assert backend.flushes == 2                             # write-through
    params = bytes(8) + caching_page(True)
    good(run(disk, mode_select10(len(params)), params))
    assert disk.wce
    good(run(disk, rw_cdb(0x2A, 0, 1), bytes(512)))
    assert backend.flushes == 2


def test_mode_select_with_block_descriptor(disk):
    params = bytes([0, 0, 0, 8]) + BLOCK_DESCRIPTOR + caching_page(False)
    good(run(disk, mode_select6(len(params)), params))
    bad = bytes([0, 0, 0, 8]) + be(BLOCKS, 4) + bytes([0]) + be(4096, 3)
    sense = check(run(disk, mode_select6(len(bad)), bad), INVALID_FIELD_IN_PARAMETER_LIST)
    assert sense[15:18] == bytes([0x80, 0, 4 + 5])           # C/D 0: byte 9 of the list


def test_mode_select_d_sense_switches_to_descriptor_sense(disk):
    params = bytes(4) + bytes([0x0A, 0x0A, 0x04]) + bytes(9)
    good(run(disk, mode_select6(len(params)), params))
    result = run(disk, rw_cdb(0x28, BLOCKS, 1))
    assert result.sense[0] == 0x72 and sense_triple(result.sense) == (0x5, 0x21, 0x00)
    disk.reset()
    assert run(disk, TEST_UNIT_READY).sense[0] == 0x70        # reset restores the default


@pytest.mark.parametrize("params,expected", [
    (bytes(4) + bytes([0x08, 0x12, 0x84]) + bytes(17), INVALID_FIELD_IN_PARAMETER_LIST),  # IC
    (bytes(4) + bytes([0x08, 0x11]) + bytes(17), INVALID_FIELD_IN_PARAMETER_LIST),    # length
    (bytes(4) + bytes([0x05, 0x0A]) + bytes(10), INVALID_FIELD_IN_PARAMETER_LIST),    # page
    (bytes(4) + bytes([0x48, 0x12]) + bytes(18), INVALID_FIELD_IN_PARAMETER_LIST),    # SPF
    (bytes(4) + bytes([0x08, 0x12]) + bytes(10), PARAMETER_LIST_LENGTH_ERROR),        # cut page
    (bytes(4) + bytes([0x08]), PARAMETER_LIST_LENGTH_ERROR),
    (bytes([0, 0, 0, 8]) + bytes(4), PARAMETER_LIST_LENGTH_ERROR),                    # cut BD
    (bytes([0, 0, 0, 5]) + bytes(5), INVALID_FIELD_IN_PARAMETER_LIST),                # BD size
])
def test_mode_select_parameter_list_errors(disk, params, expected):
    check(run(disk, mode_select6(len(params)), params), expected)
    assert disk.wce


def test_mode_select_checks_every_page_before_applying_any(disk):
    params = bytes(4) + caching_page(False) + bytes([0x0A, 0x0A, 0x80]) + bytes(9)
    check(run(disk, mode_select6(len(params)), params), INVALID_FIELD_IN_PARAMETER_LIST)
    assert disk.wce


def test_mode_select_cdb_errors(disk):
    check(run(disk, mode_select6(24, sp=1)), INVALID_FIELD_IN_CDB)
    check(run(disk, mode_select6(3)), PARAMETER_LIST_LENGTH_ERROR)
    check(run(disk, mode_select10(7)), PARAMETER_LIST_LENGTH_ERROR)
    good(run(disk, mode_select6(0)))


# -- PREVENT ALLOW MEDIUM REMOVAL, START STOP UNIT ----------------------------------

def prevent(value):
    return bytes([0x1E, 0, 0, 0, value, 0])


def start_stop(start, loej, power=0, no_flush=0):
    return bytes([0x1B, 0, 0, 0, (power << 4) | (no_flush << 2) | (loej << 1) | start, 0])


def test_prevent_allow(disk):
    good(run(disk, prevent(1)))
    assert disk.locked
    good(run(disk, prevent(3)))           # persistent prevent: accepted, state unchanged
    assert disk.locked
    good(run(disk, prevent(0)))
    assert not disk.locked


def test_start_stop_flushes_and_honours_the_lock(disk, backend):
    good(run(disk, start_stop(0, 0)))
    assert backend.flushes == 1
    good(run(disk, start_stop(0, 0, no_flush=1)))
    assert backend.flushes == 1
    good(run(disk, prevent(1)))
    check(run(disk, start_stop(0, 1)), MEDIUM_REMOVAL_PREVENTED)
    good(run(disk, start_stop(0, 1, power=3)))      # a power condition ignores LOEJ
    good(run(disk, start_stop(1, 0)))


# -- REPORT SUPPORTED OPERATION CODES (SPC-4 6.35) ----------------------------------

def rsoc(options, opcode=0, action=0, alloc=4096, rctd=0):
    return bytes([0xA3, 0x0C, (0x80 if rctd else 0) | options, opcode]) + be(action, 2) + \
        be(alloc, 4) + b"\0\0"


def test_rsoc_all_commands(disk):
    data = good(run(disk, rsoc(0)))
    length = int.from_bytes(data[:4], "big")
    assert length == len(data) - 4 and length % 8 == 0
    entries = {(data[i], int.from_bytes(data[i + 2:i + 4], "big"), data[i + 5] & 1):
               int.from_bytes(data[i + 6:i + 8], "big") for i in range(4, len(data), 8)}
    assert entries[(0x28, 0, 0)] == 10 and entries[(0x88, 0, 0)] == 16
    assert entries[(0x9E, 0x10, 1)] == 16 and entries[(0xA3, 0x0C, 1)] == 12
    assert (0x42, 0, 0) not in entries                     # UNMAP needs discard


def test_rsoc_one_command(disk):
    assert good(run(disk, rsoc(1, 0x28))) == bytes([0, 0x03, 0, 10, 0x28]) + b"\xff" * 8 + b"\0"
    assert good(run(disk, rsoc(1, 0x42))) == bytes([0, 0x01, 0, 0])
    data = good(run(disk, rsoc(2, 0x9E, 0x10)))
    assert data[:5] == bytes([0, 0x03, 0, 16, 0x9E]) and data[5] == 0x10
    check(run(disk, rsoc(1, 0x9E)), INVALID_FIELD_IN_CDB)     # has service actions
    check(run(disk, rsoc(2, 0x28)), INVALID_FIELD_IN_CDB)     # has none
    check(run(disk, rsoc(5)), INVALID_FIELD_IN_CDB)
    data = good(run(disk, rsoc(1, 0x00, rctd=1)))
    assert data[1] == 0x83 and data[4 + 6:] == bytes([0, 0x0A]) + bytes(10)


def test_rsoc_is_not_an_mmc_command(cdrom):
    check(run(cdrom, rsoc(0)), INVALID_OPCODE)


# -- traces ---------------------------------------------------------------------

def test_trace_lines(disk, monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(trace, "_out", out)
    monkeypatch.setattr(trace.on, "dev", True)
    monkeypatch.setattr(trace.on, "guest_error", True)
    run(disk, rw_cdb(0x28, 16, 1))
    run(disk, inquiry(0, 0x80))
    lines = out.getvalue().splitlines()
    assert lines[0] == "[dev] scsi disk READ_10 lba=16 blocks=1 -> GOOD"
    assert lines[1] == ("[dev] scsi disk INQUIRY -> CHECK CONDITION ILLEGAL REQUEST "
                        "INVALID FIELD IN CDB")
    assert lines[2].startswith("[guest_error] scsi disk: INQUIRY")

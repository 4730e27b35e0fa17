"""Host drive passthrough: its own INQUIRY, the allow-list (forwarded vs
refused before reaching the host), host sense, lock tracking and eject."""

import pytest

from drivebay.block.backend import MemoryBackend
from drivebay.hw.scsi import Direction, PassthroughCdrom, SimulatedDrive

from scsi_host import (INVALID_OPCODE, LBA_OUT_OF_RANGE, NOT_READY_TRAY_CLOSED, TEST_UNIT_READY,
                       UA_POWER_ON_RESET, be, check, good, inquiry, request_sense, run, rw_cdb,
                       sense_triple, settle)

SECTORS = 40


def image():
    data = bytearray(SECTORS * 2048)
    for n in range(SECTORS):
        data[n * 2048:n * 2048 + 4] = n.to_bytes(4, "big")
    return MemoryBackend(data, sector_size=2048, name="host.iso")


@pytest.fixture
def host():
    return SimulatedDrive(image())


@pytest.fixture
def lun(host):
    lun = PassthroughCdrom(host)
    settle(lun)
    host.received.clear()
    return lun


def test_inquiry_is_vbox_not_the_host(lun, host):
    data = good(run(lun, inquiry()))
    assert data[:8] == bytes([0x05, 0x80, 0x05, 0x02, 31, 0, 0, 0])
    assert data[8:36] == b"VBOX    VBOX CD-ROM     1.0 "
    assert good(run(lun, inquiry(1, 0x00))) == bytes([0x05, 0x00, 0, 3, 0x00, 0x80, 0x83])
    assert host.received == []
    assert good(run(host.drive, inquiry()))[8:16] == b"HL-DT-ST"


def test_own_unit_attention_after_reset(lun, host):
    lun.reset()
    check(run(lun, TEST_UNIT_READY), UA_POWER_ON_RESET)
    assert host.received == []
    good(run(lun, TEST_UNIT_READY))
    assert host.received == [TEST_UNIT_READY]


@pytest.mark.parametrize("cdb,length", [
    (rw_cdb(0x28, 2, 3), 3 * 2048),
    (rw_cdb(0xA8, 2, 1), 2048),
    (bytes([0x25] + [0] * 9), 8),
    (bytes([0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0]), 100),
    (bytes([0x46, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0]), 256),
    (bytes([0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8, 0]), 8),
    (bytes([0x5A, 0, 0x2A, 0, 0, 0, 0, 0, 64, 0]), 64),
    (bytes([0xBD, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0]), 8),
    (bytes([0xBE, 0, 0, 0, 0, 1, 0, 0, 2, 0x10, 0, 0]), 2 * 2048),         # user data
    (bytes([0xBE, 1 << 2, 0, 0, 0, 1, 0, 0, 1, 0x10, 0, 0]), 2352),        # CD-DA
    (bytes([0xBE, 0, 0, 0, 0, 1, 0, 0, 1, 0xF8, 0x02, 0]), 2352 + 16),     # raw + Q
    (bytes([0xB9, 0, 0, 0, 0, 2, 0, 0, 7, 0x10, 0, 0]), 5 * 2048),         # READ CD MSF
    (bytes([0xA4, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0]), 8),                   # REPORT KEY
])
def test_allowed_commands_are_forwarded_with_their_length(lun, host, cdb, length):
    req = lun.request(cdb)
    assert req.xfer_length == length and req.direction is Direction.IN
    req.execute()
    assert host.received == [cdb[:len(req.cdb)]]


def test_forwarded_data_reaches_the_guest(lun):
    data = good(run(lun, rw_cdb(0x28, 5, 2)))
    assert data[:4] == be(5, 4) and data[2048:2052] == be(6, 4)
    assert good(run(lun, bytes([0x25] + [0] * 9))) == be(SECTORS - 1, 4) + be(2048, 4)


@pytest.mark.parametrize("cdb", [
    rw_cdb(0x2A, 0, 1),                                     # WRITE(10)
    bytes([0xAA] + [0] * 11),                               # WRITE(12)
    bytes([0x2E] + [0] * 9),                                # WRITE AND VERIFY(10)
    bytes([0x3B, 0x05] + [0] * 8),                          # WRITE BUFFER: download microcode
    bytes([0x04] + [0] * 5),                                # FORMAT UNIT
    bytes([0xA1] + [0] * 11),                               # BLANK
    bytes([0x5B] + [0] * 9),                                # CLOSE TRACK/SESSION
    bytes([0x5D] + [0] * 9),                                # SEND CUE SHEET
    bytes([0x55, 0x10, 0, 0, 0, 0, 0, 0, 24, 0]),           # MODE SELECT(10)
    bytes([0x35] + [0] * 9),                                # SYNCHRONIZE CACHE
    bytes([0xBF] + [0] * 11),                               # SEND DISC STRUCTURE
    bytes([0xE8] + [0] * 9),                                # vendor specific
    bytes([0xBE, 5 << 2, 0, 0, 0, 0, 0, 0, 1, 0x10, 0, 0]),     # READ CD Mode 2 Form 2 (VCD)
    bytes([0xBE, 3 << 2, 0, 0, 0, 0, 0, 0, 1, 0x10, 0, 0]),     # READ CD Mode 2 formless
    bytes([0xBE, 0, 0, 0, 0, 0, 0, 0, 1, 0x58, 0, 0]),          # READ CD odd field mix
])
def test_refused_commands_never_reach_the_host(lun, host, cdb):
    req = lun.request(cdb)
    assert req.direction is Direction.NONE
    check(req.execute(), INVALID_OPCODE)
    assert host.received == []


def test_host_sense_is_returned_and_kept_for_request_sense(lun, host):
    sense = check(run(lun, rw_cdb(0x28, SECTORS, 1)), LBA_OUT_OF_RANGE)
    assert sense[3:7] == be(SECTORS, 4)
    assert sense_triple(good(run(lun, request_sense()))) == LBA_OUT_OF_RANGE
    host.received.clear()
    good(run(lun, request_sense()))                      # nothing kept: the host answers
    assert host.received == [request_sense()]


def test_host_without_medium(host):
    host.drive.eject()
    lun = PassthroughCdrom(host)
    settle(lun)
    check(run(lun, TEST_UNIT_READY), NOT_READY_TRAY_CLOSED)


def test_prevent_is_forwarded_and_tracked(lun, host):
    good(run(lun, bytes([0x1E, 0, 0, 0, 1, 0])))
    assert lun.locked and host.drive.locked
    assert lun.eject() is False
    assert host.drive.medium is not None
    assert lun.eject(force=True) is False                # the host drive itself refuses
    good(run(lun, bytes([0x1E, 0, 0, 0, 0, 0])))
    assert not lun.locked
    assert lun.eject() is True and host.drive.tray_open


def test_busy_host_reaches_the_guest_as_becoming_ready(lun):
    class Busy:
        def execute(self, cdb, direction, xfer_length, data_out):
            return 0x08, b"", b""
    lun.host = Busy()
    check(run(lun, TEST_UNIT_READY), (0x2, 0x04, 0x01))

"""SBC-3 disk commands: READ/WRITE of every size, READ CAPACITY, SYNCHRONIZE
CACHE, VERIFY, WRITE SAME, UNMAP, the block VPD pages, host I/O errors."""

import pytest

from drivebay.block.backend import MemoryBackend
from drivebay.hw.scsi import Direction, ScsiDisk
from drivebay.hw.scsi.sbc import MAX_TRANSFER_BYTES, MAX_WRITE_SAME_BYTES

from scsi_host import (INVALID_FIELD_IN_CDB, INVALID_FIELD_IN_PARAMETER_LIST, INVALID_OPCODE,
                       LBA_OUT_OF_RANGE, MISCOMPARE, PARAMETER_LIST_LENGTH_ERROR,
                       UNRECOVERED_READ_ERROR, WRITE_ERROR, WRITE_PROTECTED, FailingBackend,
                       HugeBackend, be, check, good, inquiry, run, rw_cdb, settle)

BLOCKS = 64
READS = {6: 0x08, 10: 0x28, 12: 0xA8, 16: 0x88}
WRITES = {6: 0x0A, 10: 0x2A, 12: 0xAA, 16: 0x8A}


def pattern(blocks, seed=1, bs=512):
    return bytes((seed * 7 + i * 13) & 0xFF for i in range(blocks * bs))


def make(blocks=BLOCKS, **options):
    backend = MemoryBackend(bytearray(blocks * options.get("sector_size", 512)), **options)
    lun = ScsiDisk(backend)
    settle(lun)
    return lun, backend


@pytest.fixture
def disk():
    return make()


@pytest.mark.parametrize("size", [6, 10, 12, 16])
def test_write_then_read(disk, size):
    lun, backend = disk
    data = pattern(3, size)
    req = lun.request(rw_cdb(WRITES[size], 5, 3))
    assert req.direction is Direction.OUT and req.xfer_length == 1536
    good(req.execute(data))
    assert backend.data[5 * 512:8 * 512] == data
    result = run(lun, rw_cdb(READS[size], 5, 3))
    assert bytes(result.data) == data and result.residual == 0


def test_read6_length_zero_is_256_blocks():
    lun, backend = make(blocks=300)
    req = lun.request(bytes([0x08, 0, 0, 1, 0, 0]))
    assert req.xfer_length == 256 * 512
    lun, _ = make(blocks=200)
    check(run(lun, bytes([0x08, 0, 0, 0, 0, 0])), LBA_OUT_OF_RANGE)


@pytest.mark.parametrize("opcode", [0x28, 0xA8, 0x88, 0x2A, 0xAA, 0x8A])
def test_zero_length_transfer_is_good(disk, opcode):
    lun, _ = disk
    req = lun.request(rw_cdb(opcode, BLOCKS, 0))      # just past the end is still fine
    assert req.direction is Direction.NONE
    good(req.execute())
    check(run(lun, rw_cdb(opcode, BLOCKS + 1, 0)), LBA_OUT_OF_RANGE)


@pytest.mark.parametrize("size", [6, 10, 12, 16])
@pytest.mark.parametrize("lba,blocks", [(BLOCKS - 1, 2), (BLOCKS, 1)])
def test_out_of_range(disk, size, lba, blocks):
    lun, backend = disk
    sense = check(run(lun, rw_cdb(READS[size], lba, blocks)), LBA_OUT_OF_RANGE)
    assert sense[3:7] == be(lba, 4)
    req = lun.request(rw_cdb(WRITES[size], lba, blocks))
    assert req.direction is Direction.NONE           # no data phase for a refused write
    check(req.execute(), LBA_OUT_OF_RANGE)


def test_lba_beyond_64_bits_of_blocks(disk):
    lun, _ = disk
    check(run(lun, rw_cdb(0x88, (1 << 64) - 1, 1)), LBA_OUT_OF_RANGE)


def test_transfer_longer_than_the_maximum():
    lun, _ = make(blocks=MAX_TRANSFER_BYTES // 512 + 8)
    sense = check(run(lun, rw_cdb(0xA8, 0, MAX_TRANSFER_BYTES // 512 + 1)), INVALID_FIELD_IN_CDB)
    assert sense[15:18] == bytes([0xC0, 0, 6])


@pytest.mark.parametrize("opcode", [0x28, 0x2A, 0x88, 0x8A, 0x2F])
def test_protect_field_is_refused(disk, opcode):
    lun, _ = disk
    check(run(lun, rw_cdb(opcode, 0, 1, byte1=0x20)), INVALID_FIELD_IN_CDB)


@pytest.mark.parametrize("cdb", [
    rw_cdb(0x2A, 0, 1), rw_cdb(0x0A, 0, 1), rw_cdb(0x8A, 0, 1),
    bytes([0x41, 0, 0, 0, 0, 0, 0, 0, 1, 0]),                     # WRITE SAME(10)
    bytes([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]),                    # UNMAP
])
def test_write_protected(cdb):
    lun, _ = make(read_only=True, discard=True)
    req = lun.request(cdb)
    assert req.direction is Direction.NONE
    check(req.execute(), WRITE_PROTECTED)


def test_write_protect_comes_after_the_range_check():
    lun, _ = make(read_only=True)
    check(run(lun, rw_cdb(0x2A, BLOCKS, 1)), LBA_OUT_OF_RANGE)


def test_fua_flushes(disk):
    lun, backend = disk
    good(run(lun, rw_cdb(0x2A, 0, 1), bytes(512)))
    assert backend.flushes == 0
    good(run(lun, rw_cdb(0x2A, 0, 1, byte1=0x08), bytes(512)))
    assert backend.flushes == 1


def test_4k_sectors():
    lun, backend = make(blocks=8, sector_size=4096)
    good(run(lun, rw_cdb(0x2A, 7, 1), b"\x5a" * 4096))
    assert good(run(lun, bytes([0x25] + [0] * 9))) == be(7, 4) + be(4096, 4)


# -- READ CAPACITY (SBC-3 5.15, 5.16) ---------------------------------------------

def rc16(alloc=32):
    return bytes([0x9E, 0x10]) + bytes(8) + be(alloc, 4) + b"\0\0"


def test_read_capacity_10(disk):
    lun, _ = disk
    assert good(run(lun, bytes([0x25] + [0] * 9))) == be(BLOCKS - 1, 4) + be(512, 4)
    check(run(lun, bytes([0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0])), INVALID_FIELD_IN_CDB)  # LBA, PMI 0


def test_read_capacity_10_saturates_and_16_reports_the_truth():
    lun = ScsiDisk(HugeBackend((1 << 32) * 512 + 1024))
    settle(lun)
    assert good(run(lun, bytes([0x25] + [0] * 9))) == b"\xff\xff\xff\xff" + be(512, 4)
    data = good(run(lun, rc16()))
    assert data[:12] == be((1 << 32) + 1, 8) + be(512, 4)


def test_read_capacity_16(disk):
    lun, _ = disk
    assert good(run(lun, rc16())) == be(BLOCKS - 1, 8) + be(512, 4) + bytes(20)
    lun, _ = make(discard=True)
    data = good(run(lun, rc16()))
    assert data[14] == 0x80                              # LBPME, LBPRZ 0
    result = run(lun, rc16(alloc=12))
    assert len(result.data) == 12


# -- SYNCHRONIZE CACHE (SBC-3 5.22, 5.23) -----------------------------------------

def test_synchronize_cache(disk):
    lun, backend = disk
    good(run(lun, bytes([0x35] + [0] * 9)))
    good(run(lun, bytes([0x91]) + bytes(15)))
    assert backend.flushes == 2
    check(run(lun, bytes([0x35, 0]) + be(BLOCKS - 1, 4) + bytes([0, 0, 2, 0])), LBA_OUT_OF_RANGE)


def test_synchronize_cache_failure_is_a_write_error():
    lun = ScsiDisk(FailingBackend(bytearray(4096), fail={"flush"}))
    settle(lun)
    check(run(lun, bytes([0x35] + [0] * 9)), WRITE_ERROR)


# -- VERIFY (SBC-3 5.33, 5.35) ---------------------------------------------------------

def test_verify_range_only(disk):
    lun, _ = disk
    req = lun.request(rw_cdb(0x2F, 0, 4))
    assert req.direction is Direction.NONE
    good(req.execute())
    check(run(lun, rw_cdb(0x8F, BLOCKS - 1, 2)), LBA_OUT_OF_RANGE)
    check(run(lun, rw_cdb(0x2F, 0, 1, byte1=0x04)), INVALID_FIELD_IN_CDB)     # BYTCHK 10b


def test_verify_byte_check(disk):
    lun, backend = disk
    backend.data[512:1024] = b"\x11" * 512
    req = lun.request(rw_cdb(0x2F, 1, 1, byte1=0x02))                         # BYTCHK 01b
    assert req.direction is Direction.OUT and req.xfer_length == 512
    good(req.execute(b"\x11" * 512))
    sense = check(run(lun, rw_cdb(0x2F, 0, 2, byte1=0x02), bytes(1000) + b"\x01" * 24),
                  MISCOMPARE)
    assert sense[3:7] == be(512, 4)                      # offset of the first difference
    backend.data[0:1024] = b"\x22" * 1024
    req = lun.request(rw_cdb(0x8F, 0, 2, byte1=0x06))   # BYTCHK 11b: one block for all
    assert req.xfer_length == 512
    good(req.execute(b"\x22" * 512))


# -- WRITE SAME (SBC-3 5.42, 5.43) -------------------------------------------------

def write_same10(lba, blocks, byte1=0):
    return bytes([0x41, byte1]) + be(lba, 4) + b"\0" + be(blocks, 2) + b"\0"


def write_same16(lba, blocks, byte1=0):
    return bytes([0x93, byte1]) + be(lba, 8) + be(blocks, 4) + b"\0\0"


def test_write_same_pattern(disk):
    lun, backend = disk
    block = pattern(1, 9)
    req = lun.request(write_same10(2, 5))
    assert req.direction is Direction.OUT and req.xfer_length == 512
    good(req.execute(block))
    assert backend.data[1024:1024 + 5 * 512] == block * 5
    assert not any(backend.data[:1024]) and not any(backend.data[7 * 512:])


def test_write_same_zero_and_ndob(disk):
    lun, backend = disk
    backend.data[:] = b"\xee" * len(backend.data)
    good(run(lun, write_same16(1, 2), bytes(512)))
    assert backend.data[512:1536] == bytes(1024)
    req = lun.request(write_same16(10, 3, byte1=0x01))               # NDOB
    assert req.direction is Direction.NONE
    good(req.execute())
    assert backend.data[5120:5120 + 1536] == bytes(1536)
    assert backend.data[5120 - 1] == 0xEE and backend.data[5120 + 1536] == 0xEE


class DiscardRecorder(MemoryBackend):
    def __init__(self, *args, **options):
        super().__init__(*args, **options)
        self.discards = []

    def discard(self, offset, length):
        self.discards.append((offset, length))
        super().discard(offset, length)


def test_write_same_unmap_discards_when_enabled():
    backend = DiscardRecorder(bytearray(BLOCKS * 512), discard=True)
    lun = ScsiDisk(backend)
    settle(lun)
    backend.data[:] = b"\xee" * len(backend.data)
    good(run(lun, write_same16(4, 4, byte1=0x08), bytes(512)))
    assert backend.discards == [(2048, 2048)] and backend.data[2048:4096] == bytes(2048)
    good(run(lun, write_same10(0, 1, byte1=0x08), b"\x01" * 512))    # data: written, not unmapped
    assert backend.discards == [(2048, 2048)] and backend.data[:512] == b"\x01" * 512


def test_write_same_unmap_without_discard_writes_zeroes(disk):
    lun, backend = disk
    backend.data[:] = b"\xee" * len(backend.data)
    good(run(lun, write_same16(0, 2, byte1=0x08), bytes(512)))
    assert backend.data[:1024] == bytes(1024)


@pytest.mark.parametrize("cdb,expected", [
    (write_same10(0, 0), INVALID_FIELD_IN_CDB),               # WSNZ
    (write_same16(0, 1, byte1=0x10), INVALID_FIELD_IN_CDB),   # ANCHOR
    (write_same16(0, 1, byte1=0x02), INVALID_FIELD_IN_CDB),   # LBDATA
    (write_same10(0, 1, byte1=0x01), INVALID_FIELD_IN_CDB),   # NDOB is WRITE SAME(16) only
    (write_same16(0, 1, byte1=0x20), INVALID_FIELD_IN_CDB),   # WRPROTECT
    (write_same16(BLOCKS - 1, 2), LBA_OUT_OF_RANGE),
])
def test_write_same_errors(disk, cdb, expected):
    lun, _ = disk
    check(run(lun, cdb, bytes(512)), expected)


def test_write_same_length_limit():
    blocks = MAX_WRITE_SAME_BYTES // 512 + 1
    lun = ScsiDisk(HugeBackend(blocks * 512))
    settle(lun)
    check(run(lun, write_same16(0, blocks)), INVALID_FIELD_IN_CDB)


# -- UNMAP (SBC-3 5.28) ------------------------------------------------------------

def unmap_cdb(length, anchor=0):
    return bytes([0x42, anchor, 0, 0, 0, 0, 0]) + be(length, 2) + b"\0"


def unmap_list(*ranges, data_length=None, descriptors_length=None):
    body = b"".join(be(lba, 8) + be(blocks, 4) + bytes(4) for lba, blocks in ranges)
    dl = len(body) + 6 if data_length is None else data_length
    bdl = len(body) if descriptors_length is None else descriptors_length
    return be(dl, 2) + be(bdl, 2) + bytes(4) + body


@pytest.fixture
def thin():
    backend = DiscardRecorder(bytearray(BLOCKS * 512), discard=True)
    lun = ScsiDisk(backend)
    settle(lun)
    backend.data[:] = b"\xee" * len(backend.data)
    return lun, backend


def test_unmap(thin):
    lun, backend = thin
    params = unmap_list((1, 2), (10, 0), (60, 4))
    good(run(lun, unmap_cdb(len(params)), params))
    assert backend.discards == [(512, 1024), (60 * 512, 2048)]
    assert backend.data[512:1536] == bytes(1024) and backend.data[:512] == b"\xee" * 512
    good(run(lun, unmap_cdb(0)))
    good(run(lun, unmap_cdb(8), unmap_list()))


@pytest.mark.parametrize("params,expected", [
    (unmap_list((63, 2)), LBA_OUT_OF_RANGE),
    (unmap_list((1, 1), (64, 1)), LBA_OUT_OF_RANGE),                          # all or nothing
    (unmap_list((1, 1), data_length=100), PARAMETER_LIST_LENGTH_ERROR),
    (unmap_list((1, 1), descriptors_length=32), PARAMETER_LIST_LENGTH_ERROR),
    (unmap_list((1, 1), descriptors_length=12), INVALID_FIELD_IN_PARAMETER_LIST),
])
def test_unmap_parameter_errors(thin, params, expected):
    lun, backend = thin
    check(run(lun, unmap_cdb(len(params)), params), expected)
    assert backend.discards == []


def test_unmap_cdb_errors(thin):
    lun, backend = thin
    check(run(lun, unmap_cdb(7)), PARAMETER_LIST_LENGTH_ERROR)
    check(run(lun, unmap_cdb(24, anchor=1)), INVALID_FIELD_IN_CDB)


def test_unmap_needs_discard(disk):
    lun, _ = disk
    check(run(lun, unmap_cdb(24), unmap_list((0, 1))), INVALID_OPCODE)


# -- block VPD pages (SBC-3 6.6) ---------------------------------------------------

def test_vpd_block_limits():
    lun, _ = make(discard=True)
    data = good(run(lun, inquiry(1, 0xB0)))
    assert data[:4] == bytes([0x00, 0xB0, 0x00, 0x3C]) and len(data) == 64
    assert data[4] == 0x01                                          # WSNZ
    assert data[8:12] == be(MAX_TRANSFER_BYTES // 512, 4)          # MAXIMUM TRANSFER LENGTH
    assert data[20:24] == be(MAX_WRITE_SAME_BYTES // 512, 4)       # MAXIMUM UNMAP LBA COUNT
    assert data[24:28] == be(4095, 4)                               # ... BLOCK DESCRIPTOR COUNT
    assert data[28:32] == be(1, 4)                                  # OPTIMAL UNMAP GRANULARITY
    assert data[36:44] == be(MAX_WRITE_SAME_BYTES // 512, 8)       # MAXIMUM WRITE SAME LENGTH
    lun, _ = make()
    assert good(run(lun, inquiry(1, 0xB0)))[20:28] == bytes(8)


def test_vpd_block_device_characteristics():
    lun, _ = make(non_rotational=True)
    data = good(run(lun, inquiry(1, 0xB1)))
    assert data == bytes([0x00, 0xB1, 0x00, 0x3C, 0x00, 0x01]) + bytes(58)
    lun, _ = make()
    assert good(run(lun, inquiry(1, 0xB1)))[4:6] == bytes(2)


def test_vpd_logical_block_provisioning():
    lun, _ = make(discard=True)
    assert good(run(lun, inquiry(1, 0xB2))) == bytes([0x00, 0xB2, 0x00, 0x04,
                                                      0x00, 0xE0, 0x02, 0x00])   # LBPU|LBPWS|LBPWS10, thin
    lun, _ = make()
    assert good(run(lun, inquiry(1, 0xB2))) == bytes([0x00, 0xB2, 0x00, 0x04, 0, 0, 0, 0])


# -- host I/O errors ------------------------------------------------------------------

def test_image_errors_become_medium_errors():
    lun = ScsiDisk(FailingBackend(bytearray(4096)))
    settle(lun)
    sense = check(run(lun, rw_cdb(0x28, 3, 1)), UNRECOVERED_READ_ERROR)
    assert sense[0] == 0xF0 and sense[3:7] == be(3, 4)
    check(run(lun, rw_cdb(0x2A, 2, 1), bytes(512)), WRITE_ERROR)
    check(run(lun, write_same10(0, 2), b"\x01" * 512), WRITE_ERROR)
    lun = ScsiDisk(FailingBackend(bytearray(4096), fail={"flush"}))
    settle(lun)
    check(run(lun, rw_cdb(0x2A, 2, 1, byte1=0x08), bytes(512)), WRITE_ERROR)   # FUA flush

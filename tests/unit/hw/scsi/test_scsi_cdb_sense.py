"""CDB decoding (SPC-4 4.2, SBC-3 5.x), sense data formats (SPC-4 4.5) and
LUN addressing (SAM-5 4.7)."""

import pytest

from drivebay.hw.scsi import cdb as C
from drivebay.hw.scsi import sense as S
from drivebay.hw.scsi.bus import decode_lun, encode_lun

from scsi_host import rw_cdb


@pytest.mark.parametrize("opcode,length", [
    (0x00, 6), (0x1F, 6), (0x20, 10), (0x5F, 10), (0x60, None), (0x7F, None),
    (0x80, 16), (0x9F, 16), (0xA0, 12), (0xBF, 12), (0xC0, None), (0xFF, None)])
def test_cdb_length_by_group_code(opcode, length):
    assert C.cdb_length(opcode) == length


@pytest.mark.parametrize("opcode,lba,blocks", [
    (0x08, 0x1FFFFF, 255), (0x28, 0xFFFFFFFF, 0xFFFF), (0xA8, 0x12345678, 0x9ABCDEF0),
    (0x88, 0x123456789ABCDEF0, 0xFFFFFFFF)])
def test_lba_and_transfer_length(opcode, lba, blocks):
    assert C.lba_and_blocks(rw_cdb(opcode, lba, blocks)) == (lba, blocks)


def test_read6_length_zero_means_256_and_lba_is_21_bits():
    assert C.lba_and_blocks(bytes([0x08, 0xFF, 0x12, 0x34, 0, 0])) == (0x1F1234, 256)


def test_allocation_length_positions():
    assert C.allocation_length(bytes([0x12, 0, 0, 0, 0x24, 0])) == 0x24
    assert C.allocation_length(bytes([0x5A, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0])) == 0x1234
    assert C.allocation_length(bytes([0xA0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 0, 0])) == 0x01020304
    assert C.allocation_length(bytes([0x9E, 0x10] + [0] * 8 + [0, 0, 0, 32, 0, 0])) == 32


def test_command_table_rejects_duplicates():
    row = C.Command(0x00, "X", None, None, C.Direction.NONE)
    with pytest.raises(AssertionError):
        C.command_table(C.DISK, row, row)


def test_fixed_sense_layout():
    # SPC-4 4.5.3, table 26: byte 0 VALID|70h, byte 2 key, 3-6 INFORMATION,
    # byte 7 additional length 10, 12 ASC, 13 ASCQ, 15-17 sense-key specific.
    data = S.SenseData(S.INVALID_FIELD_IN_CDB, information=0x01020304, field=0x0102, bit=5).fixed()
    assert data == bytes([0xF0, 0, 0x05, 1, 2, 3, 4, 10, 0, 0, 0, 0, 0x24, 0x00, 0,
                          0x80 | 0x40 | 0x08 | 5, 0x01, 0x02])


def test_fixed_sense_parameter_list_pointer_and_no_information():
    data = S.SenseData(S.INVALID_FIELD_IN_PARAMETER_LIST, field=9, in_cdb=False).fixed()
    assert data[0] == 0x70 and data[3:7] == bytes(4)
    assert data[15:18] == bytes([0x80, 0x00, 0x09])


def test_fixed_sense_information_too_wide_is_not_valid():
    assert S.SenseData(S.LBA_OUT_OF_RANGE, information=1 << 40).fixed()[0] == 0x70


def test_descriptor_sense_layout():
    # SPC-4 4.5.2: 72h, key, ASC, ASCQ, 3 reserved, additional length; then
    # an Information descriptor (00h, 0Ah, VALID, 0, 8-byte value) and a
    # Sense key specific descriptor (02h, 06h, 0, 0, 3 bytes, 0).
    data = S.SenseData(S.LBA_OUT_OF_RANGE, information=0x1122334455, field=2).descriptor()
    assert data == bytes([0x72, 0x05, 0x21, 0x00, 0, 0, 0, 20,
                          0x00, 0x0A, 0x80, 0x00, 0, 0, 0, 0x11, 0x22, 0x33, 0x44, 0x55,
                          0x02, 0x06, 0, 0, 0xC0, 0x00, 0x02, 0])
    assert S.SenseData(S.NO_SENSE).descriptor() == bytes([0x72, 0, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize("name,triple", [
    ("NO_SENSE", (0x0, 0x00, 0x00)), ("NOT_READY_BECOMING_READY", (0x2, 0x04, 0x01)),
    ("MEDIUM_NOT_PRESENT", (0x2, 0x3A, 0x00)), ("MEDIUM_NOT_PRESENT_TRAY_CLOSED", (0x2, 0x3A, 0x01)),
    ("MEDIUM_NOT_PRESENT_TRAY_OPEN", (0x2, 0x3A, 0x02)),
    ("MEDIUM_MAY_HAVE_CHANGED", (0x6, 0x28, 0x00)), ("POWER_ON_RESET", (0x6, 0x29, 0x00)),
    ("INVALID_COMMAND_OPERATION_CODE", (0x5, 0x20, 0x00)), ("LBA_OUT_OF_RANGE", (0x5, 0x21, 0x00)),
    ("INVALID_FIELD_IN_CDB", (0x5, 0x24, 0x00)), ("LOGICAL_UNIT_NOT_SUPPORTED", (0x5, 0x25, 0x00)),
    ("INVALID_FIELD_IN_PARAMETER_LIST", (0x5, 0x26, 0x00)),
    ("PARAMETER_LIST_LENGTH_ERROR", (0x5, 0x1A, 0x00)),
    ("SAVING_PARAMETERS_NOT_SUPPORTED", (0x5, 0x39, 0x00)),
    ("MEDIUM_REMOVAL_PREVENTED", (0x5, 0x53, 0x02)), ("WRITE_PROTECTED", (0x7, 0x27, 0x00)),
    ("UNRECOVERED_READ_ERROR", (0x3, 0x11, 0x00)), ("WRITE_ERROR", (0x3, 0x0C, 0x00)),
    ("INCOMPATIBLE_MEDIUM", (0x5, 0x30, 0x00)),
    ("CANNOT_READ_MEDIUM_INCOMPATIBLE_FORMAT", (0x5, 0x30, 0x02))])
def test_named_sense_values(name, triple):
    sense = getattr(S, name)
    assert (sense.key, sense.asc, sense.ascq) == triple


def test_parse_sense_both_formats():
    data = S.SenseData(S.UNRECOVERED_READ_ERROR, information=77)
    assert S.parse_sense(data.fixed()) == data
    assert S.parse_sense(data.descriptor()).sense is S.UNRECOVERED_READ_ERROR
    odd = S.parse_sense(bytes([0x70, 0, 0x04, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x44, 0x00, 0, 0, 0, 0]))
    assert (odd.sense.key, odd.sense.asc, odd.sense.ascq) == (0x4, 0x44, 0x00)
    assert S.parse_sense(b"") is None and S.parse_sense(b"\x01\x02\x03") is None


def test_str_names_key_and_condition():
    assert str(S.INVALID_FIELD_IN_CDB) == "ILLEGAL REQUEST INVALID FIELD IN CDB"


@pytest.mark.parametrize("number,field", [
    (0, bytes(8)), (5, bytes([0, 5, 0, 0, 0, 0, 0, 0])),
    (255, bytes([0, 0xFF]) + bytes(6)), (256, bytes([0x41, 0x00]) + bytes(6)),
    (16383, bytes([0x7F, 0xFF]) + bytes(6))])
def test_lun_encoding(number, field):
    assert encode_lun(number) == field
    assert decode_lun(field) == number


def test_decode_lun_rejects_multi_level_and_other_methods():
    assert decode_lun(bytes([0, 1, 0, 2, 0, 0, 0, 0])) is None
    assert decode_lun(bytes([0x80, 1]) + bytes(6)) is None
    assert decode_lun(bytes(7)) is None

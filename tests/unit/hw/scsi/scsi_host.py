"""Host-side helpers for driving a SCSI LUN the way an HBA driver does.

Layered like QEMU's libqos: CDB builders (offsets written here from the
specs, not taken from drivebay) -> one-call command execution with the
invariants every transport relies on -> sense decoding and assertions.
"""

from drivebay.errors import ImageError
from drivebay.block.backend import MemoryBackend
from drivebay.hw.scsi.bus import Direction, Status

GOOD = 0x00
CHECK_CONDITION = 0x02

# Sense triples, from SPC-4 Annex D, written out independently of sense.py.
NO_SENSE = (0x0, 0x00, 0x00)
UA_POWER_ON_RESET = (0x6, 0x29, 0x00)
UA_MEDIUM_CHANGED = (0x6, 0x28, 0x00)
NOT_READY_NO_MEDIUM = (0x2, 0x3A, 0x00)
NOT_READY_TRAY_CLOSED = (0x2, 0x3A, 0x01)
NOT_READY_TRAY_OPEN = (0x2, 0x3A, 0x02)
INVALID_OPCODE = (0x5, 0x20, 0x00)
LBA_OUT_OF_RANGE = (0x5, 0x21, 0x00)
INVALID_FIELD_IN_CDB = (0x5, 0x24, 0x00)
LUN_NOT_SUPPORTED = (0x5, 0x25, 0x00)
INVALID_FIELD_IN_PARAMETER_LIST = (0x5, 0x26, 0x00)
PARAMETER_LIST_LENGTH_ERROR = (0x5, 0x1A, 0x00)
SAVING_PARAMETERS_NOT_SUPPORTED = (0x5, 0x39, 0x00)
MEDIUM_REMOVAL_PREVENTED = (0x5, 0x53, 0x02)
INCOMPATIBLE_FORMAT = (0x5, 0x30, 0x02)
ILLEGAL_MODE_FOR_TRACK = (0x5, 0x64, 0x00)
WRITE_PROTECTED = (0x7, 0x27, 0x00)
UNRECOVERED_READ_ERROR = (0x3, 0x11, 0x00)
WRITE_ERROR = (0x3, 0x0C, 0x00)
MISCOMPARE = (0xE, 0x1D, 0x00)
DATA_PHASE_ERROR = (0xB, 0x4B, 0x00)


def be(value, size):
    return value.to_bytes(size, "big")


def rw_cdb(opcode, lba, blocks, byte1=0):
    """READ/WRITE/VERIFY-shaped CDB of the size the opcode's group gives
    (SBC-3 5.8-5.11: 6-byte LBA in bytes 1-3, length byte 4; 10-byte LBA
    2-5, length 7-8; 12-byte LBA 2-5, length 6-9; 16-byte LBA 2-9, length 10-13)."""
    group = opcode >> 5
    if group == 0:
        return bytes([opcode, (lba >> 16) & 0x1F, (lba >> 8) & 0xFF, lba & 0xFF, blocks & 0xFF, 0])
    if group in (1, 2):
        return bytes([opcode, byte1]) + be(lba, 4) + b"\0" + be(blocks, 2) + b"\0"
    if group == 5:
        return bytes([opcode, byte1]) + be(lba, 4) + be(blocks, 4) + b"\0\0"
    return bytes([opcode, byte1]) + be(lba, 8) + be(blocks, 4) + b"\0\0"


def inquiry(evpd=0, page=0, alloc=255, byte1=None):
    return bytes([0x12, evpd if byte1 is None else byte1, page]) + be(alloc, 2) + b"\0"


def request_sense(alloc=252, desc=0):
    return bytes([0x03, desc, 0, 0, alloc, 0])


TEST_UNIT_READY = bytes(6)


def mode_sense6(page, pc=0, alloc=255, dbd=0, subpage=0):
    return bytes([0x1A, 0x08 if dbd else 0, (pc << 6) | page, subpage, alloc, 0])


def mode_sense10(page, pc=0, alloc=0xFFFF, dbd=0, llbaa=0, subpage=0):
    return bytes([0x5A, (0x08 if dbd else 0) | (0x10 if llbaa else 0), (pc << 6) | page,
                  subpage, 0, 0, 0]) + be(alloc, 2) + b"\0"


def mode_select6(length, sp=0):
    return bytes([0x15, 0x10 | sp, 0, 0, length, 0])


def mode_select10(length, sp=0):
    return bytes([0x55, 0x10 | sp, 0, 0, 0, 0, 0]) + be(length, 2) + b"\0"


def run(lun, cdb, data_out=None):
    """request + execute, checking what every transport relies on."""
    req = lun.request(bytes(cdb))
    assert (req.direction is Direction.NONE) == (req.xfer_length == 0)
    if req.direction is not Direction.OUT:
        data_out = None
    result = req.execute(data_out)
    assert result.status in (Status.GOOD, Status.CHECK_CONDITION)
    assert 0 <= result.residual <= req.xfer_length
    assert len(result.data) <= req.xfer_length
    if result.status == GOOD:
        assert result.sense == b""
        if req.direction is Direction.IN:
            assert result.residual == req.xfer_length - len(result.data)
    else:
        assert result.data == b"" and len(result.sense) >= 8
    return result


def sense_triple(sense):
    """(key, ASC, ASCQ) of fixed (70h: byte 2, 12, 13) or descriptor (72h:
    bytes 1, 2, 3) sense data."""
    sense = bytes(sense)
    if sense[0] & 0x7F == 0x72:
        return sense[1] & 0xF, sense[2], sense[3]
    assert sense[0] & 0x7F == 0x70 and len(sense) == 18 and sense[7] == 10
    return sense[2] & 0xF, sense[12], sense[13]


def check(result, triple):
    assert result.status == CHECK_CONDITION, f"expected CHECK CONDITION {triple}, got GOOD"
    assert sense_triple(result.sense) == triple
    return result.sense


def good(result):
    assert result.status == GOOD, f"CHECK CONDITION {sense_triple(result.sense)}"
    return bytes(result.data)


def settle(lun):
    """Consume the pending unit attentions through REQUEST SENSE, as an HBA driver's scan does."""
    for _ in range(8):
        if sense_triple(good(run(lun, request_sense())))[0] != 0x6:
            return
    raise AssertionError("unit attentions never drained")


class FailingBackend(MemoryBackend):
    """A medium whose host I/O fails (the blkdebug idea, on MemoryBackend)."""

    def __init__(self, data, fail=("read", "write", "flush"), **options):
        super().__init__(data, **options)
        self.fail = set(fail)

    def readinto(self, offset, view):
        if "read" in self.fail:
            raise ImageError(f"{self.name}: injected read error at {offset}")
        super().readinto(offset, view)

    def write(self, offset, data):
        if "write" in self.fail:
            raise ImageError(f"{self.name}: injected write error at {offset}")
        super().write(offset, data)

    def flush(self):
        if "flush" in self.fail:
            raise ImageError(f"{self.name}: injected flush error")
        super().flush()


class HugeBackend(MemoryBackend):
    """A medium that claims a size without holding its bytes (capacity tests)."""

    def __init__(self, size, **options):
        super().__init__(bytearray(0), **options)
        self._size = size

    size = property(lambda self: self._size)

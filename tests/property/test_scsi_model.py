"""A ScsiDisk against a bytearray model: random sequences of READ(6/10/16),
WRITE(6/10/16), WRITE SAME(10/16), UNMAP and SYNCHRONIZE CACHE(10/16),
in and out of range, on writable and write-protected media.  Status, sense
and data must match what SBC-3 prescribes, and so must the medium.

Then random guest CDBs and parameter lists on every kind of LUN: each ends
in GOOD or CHECK CONDITION with sense, never in an exception."""

from hypothesis import HealthCheck, given, settings, strategies as st

from drivebay.block.backend import MemoryBackend
from drivebay.hw.scsi import (Direction, PassthroughCdrom, ScsiCdrom, ScsiDisk, ScsiTarget,
                              SimulatedDrive)
from drivebay.hw.scsi.cdb import table_rows

BS = 512
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

GOOD, CHECK = 0x00, 0x02
UA_RESET = (0x6, 0x29, 0x00)
LBA_OUT_OF_RANGE = (0x5, 0x21, 0x00)
INVALID_FIELD = (0x5, 0x24, 0x00)
WRITE_PROTECTED = (0x7, 0x27, 0x00)


def be(value, size):
    return value.to_bytes(size, "big")


def rw(opcode, lba, blocks, byte1=0):
    """SBC-3 READ/WRITE CDBs: (6) LBA bytes 1-3, length byte 4; (10) LBA 2-5,
    length 7-8; (16) LBA 2-9, length 10-13."""
    if opcode >> 5 == 0:
        return bytes([opcode, (lba >> 16) & 0x1F, (lba >> 8) & 0xFF, lba & 0xFF, blocks, 0])
    if opcode >> 5 in (1, 2):
        return bytes([opcode, byte1]) + be(lba, 4) + b"\0" + be(blocks, 2) + b"\0"
    return bytes([opcode, byte1]) + be(lba, 8) + be(blocks, 4) + b"\0\0"


def block(seed):
    return bytes((seed + i * 31) & 0xFF for i in range(BS))


READ = {6: 0x08, 10: 0x28, 16: 0x88}
WRITE = {6: 0x0A, 10: 0x2A, 16: 0x8A}
WRITE_SAME = {10: 0x41, 16: 0x93}
SYNC = {10: 0x35, 16: 0x91}

lbas = st.integers(0, 70)
counts = st.integers(0, 9)
op = st.one_of(
    st.tuples(st.just("read"), st.sampled_from([6, 10, 16]), lbas, counts),
    st.tuples(st.just("write"), st.sampled_from([6, 10, 16]), lbas, counts, st.integers(0, 255),
              st.booleans()),
    st.tuples(st.just("write_same"), st.sampled_from([10, 16]), lbas, counts,
              st.sampled_from(["zero", "data", "ndob"]), st.integers(1, 255), st.booleans()),
    st.tuples(st.just("unmap"), st.lists(st.tuples(lbas, counts), max_size=4)),
    st.tuples(st.just("sync"), st.sampled_from([10, 16]), lbas, counts),
)


class Model:
    def __init__(self, blocks, read_only):
        self.data = bytearray(blocks * BS)
        self.blocks = blocks
        self.read_only = read_only
        self.unit_attention = True          # a new LUN reports power-on first

    def fits(self, lba, count):
        return lba + count <= self.blocks

    def expect(self, operation):
        """(status, sense triple, data-in) and the effect on self.data."""
        if self.unit_attention:
            self.unit_attention = False
            return CHECK, UA_RESET, None
        kind = operation[0]
        if kind == "read":
            _, size, lba, count = operation
            count = count or (256 if size == 6 else 0)
            if not self.fits(lba, count):
                return CHECK, LBA_OUT_OF_RANGE, None
            return GOOD, None, bytes(self.data[lba * BS:(lba + count) * BS])
        if kind == "write":
            _, size, lba, count, seed, fua = operation
            count = count or (256 if size == 6 else 0)
            if not self.fits(lba, count):
                return CHECK, LBA_OUT_OF_RANGE, None
            if self.read_only:
                return CHECK, WRITE_PROTECTED, None
            self.data[lba * BS:(lba + count) * BS] = b"".join(block(seed + i) for i in range(count))
            return GOOD, None, None
        if kind == "write_same":
            _, size, lba, count, fill, seed, unmap = operation
            if count == 0:                  # WSNZ
                return CHECK, INVALID_FIELD, None
            if not self.fits(lba, count):
                return CHECK, LBA_OUT_OF_RANGE, None
            if self.read_only:
                return CHECK, WRITE_PROTECTED, None
            pattern = block(seed) if fill == "data" else bytes(BS)
            self.data[lba * BS:(lba + count) * BS] = pattern * count
            return GOOD, None, None
        if kind == "unmap":
            if self.read_only:
                return CHECK, WRITE_PROTECTED, None
            ranges = operation[1]
            if not all(self.fits(lba, count) for lba, count in ranges):
                return CHECK, LBA_OUT_OF_RANGE, None
            for lba, count in ranges:       # the backend's discard reads back as zeros
                self.data[lba * BS:(lba + count) * BS] = bytes(count * BS)
            return GOOD, None, None
        _, size, lba, count = operation
        return (GOOD, None, None) if self.fits(lba, count) else (CHECK, LBA_OUT_OF_RANGE, None)


def command(operation):
    """(CDB, data-out) for an operation."""
    kind = operation[0]
    if kind == "read":
        _, size, lba, count = operation
        return rw(READ[size], lba, count), None
    if kind == "write":
        _, size, lba, count, seed, fua = operation
        real = count or (256 if size == 6 else 0)
        data = b"".join(block(seed + i) for i in range(real))
        return rw(WRITE[size], lba, count, 0x08 if fua and size != 6 else 0), data
    if kind == "write_same":
        _, size, lba, count, fill, seed, unmap = operation
        byte1 = (0x08 if unmap else 0) | (0x01 if fill == "ndob" and size == 16 else 0)
        data = block(seed) if fill == "data" else bytes(BS)
        return rw(WRITE_SAME[size], lba, count, byte1), data
    if kind == "unmap":
        body = b"".join(be(lba, 8) + be(count, 4) + bytes(4) for lba, count in operation[1])
        params = be(len(body) + 6, 2) + be(len(body), 2) + bytes(4) + body
        return bytes([0x42, 0, 0, 0, 0, 0, 0]) + be(len(params), 2) + b"\0", params
    _, size, lba, count = operation
    return rw(SYNC[size], lba, count), None


def sense_triple(sense):
    return sense[2] & 0xF, sense[12], sense[13]


@SETTINGS
@given(blocks=st.integers(1, 64), read_only=st.booleans(), operations=st.lists(op, max_size=30))
def test_disk_matches_model(blocks, read_only, operations):
    backend = MemoryBackend(bytearray(blocks * BS), read_only=read_only, discard=True)
    lun = ScsiDisk(backend)
    model = Model(blocks, read_only)
    for operation in operations:
        if operation[0] == "write_same" and operation[4] == "ndob" and operation[1] == 10:
            operation = operation[:4] + ("zero",) + operation[5:]
        status, sense, data_in = model.expect(operation)
        cdb, data_out = command(operation)
        req = lun.request(cdb)
        result = req.execute(data_out if req.direction.name == "OUT" else None)
        assert result.status == status, (operation, result)
        if status == CHECK:
            assert sense_triple(result.sense) == sense, operation
            assert result.data == b""
        else:
            assert result.sense == b"" and result.residual == 0
            if data_in is not None:
                assert bytes(result.data) == data_in, operation
        assert backend.data == model.data, operation


# -- guest fuzz ---------------------------------------------------------------------

FUZZ_SETTINGS = settings(max_examples=400, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow])
MAX_FUZZ_DATA_OUT = 1 << 16


def make_luns():
    disk = ScsiDisk(MemoryBackend(bytearray(64 * BS), discard=True, non_rotational=True))
    disk_ro = ScsiDisk(MemoryBackend(bytearray(8 * BS), read_only=True))
    cd = ScsiCdrom(MemoryBackend(bytearray(32 * 2048), sector_size=2048))
    empty = ScsiCdrom(None)
    passthrough = PassthroughCdrom(SimulatedDrive(MemoryBackend(bytearray(16 * 2048),
                                                                sector_size=2048)))
    return ScsiTarget({0: disk, 1: disk_ro, 2: cd, 3: empty, 4: passthrough})


KNOWN_OPCODES = sorted({row.opcode for lun in make_luns().luns.values()
                        for row in table_rows(lun.commands)})
cdbs = st.tuples(st.one_of(st.sampled_from(KNOWN_OPCODES), st.integers(0, 255)),
                 st.binary(min_size=0, max_size=15)).map(lambda t: bytes([t[0]]) + t[1])
fuzz_op = st.tuples(st.integers(0, 5), cdbs, st.binary(max_size=64), st.booleans())


@FUZZ_SETTINGS
@given(operations=st.lists(fuzz_op, min_size=1, max_size=20))
def test_guest_cdbs_never_raise(operations):
    target = make_luns()
    for lun, cdb, params, short in operations:
        req = target.request(lun, cdb)
        data_out = None
        if req.direction is Direction.OUT:
            if req.xfer_length <= MAX_FUZZ_DATA_OUT:
                data_out = (params * (req.xfer_length // max(len(params), 1) + 1))[:req.xfer_length]
            if short:
                data_out = (data_out or b"")[:req.xfer_length // 2]
        result = req.execute(data_out)
        assert result.status in (GOOD, CHECK)
        assert len(result.data) <= req.xfer_length and 0 <= result.residual <= req.xfer_length
        assert (result.sense == b"") == (result.status == GOOD)

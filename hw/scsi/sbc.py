"""The SCSI disk: SBC-3 block commands over a BlockBackend.

Modelled from SBC-3 (T10/1799-D): READ(6/10/12/16) and WRITE(6/10/12/16)
(5.8-5.11, 5.31-5.34), READ CAPACITY(10) and (16) (5.15, 5.16; the latter
through SERVICE ACTION IN(16)), SYNCHRONIZE CACHE(10)/(16) (5.22, 5.23),
VERIFY(10)/(16) (BYTCHK 00b: range check only; 01b and 11b: compare),
WRITE SAME(10)/(16) (5.42, 5.43, UNMAP and NDOB bits), UNMAP (5.28), the
Block Limits, Block Device Characteristics and Logical Block Provisioning
VPD pages (6.6.3, 6.6.2, 6.6.4), plus SPC-4's common commands (spc.py).

Rules that apply to every medium-access command here:

* LBA + number of blocks beyond the capacity: ILLEGAL REQUEST, LOGICAL
  BLOCK ADDRESS OUT OF RANGE ("shall not be considered an error" only for
  a zero length at an LBA inside the medium or just past its end).
* A transfer longer than MAXIMUM TRANSFER LENGTH (Block Limits VPD, here
  ``MAX_TRANSFER_BYTES``): ILLEGAL REQUEST, INVALID FIELD IN CDB (SBC-3, READ(10)).
* RDPROTECT/WRPROTECT/VRPROTECT other than 000b: INVALID FIELD IN CDB (no
  protection information, SBC-3 4.22).
* Writing a read-only medium: DATA PROTECT, WRITE PROTECTED, after the CDB
  checks.
* FUA, or a write with the Caching page's WCE clear, flushes the backend
  before GOOD status.

Not supported: protection information, COMPARE AND WRITE, GET LBA STATUS,
anchored unmaps (ANC_SUP 0), FORMAT UNIT, PRE-FETCH, XDREAD family, ORWRITE.
Unmapped blocks read as the backend's discard leaves them, so LBPRZ is 0.
"""

from drivebay import trace
from drivebay.errors import ImageError
from drivebay.hw import identity
from drivebay.hw.scsi import sense as S
from drivebay.hw.scsi import spc
from drivebay.hw.scsi.bus import ScsiLun
from drivebay.hw.scsi.cdb import (DISK, Command, Direction, Flag, PeripheralDeviceType,
                                  command_table, lba_and_blocks, u16, u32, u64)
from drivebay.hw.scsi.sense import CheckCondition, invalid_cdb, invalid_parameter

# Limits reported in the Block Limits VPD page and enforced on every command.
# READ(10)/WRITE(10) move at most 65535 blocks; 128 MiB covers that for
# 2048-byte blocks and bounds the buffer a guest can make us allocate.
MAX_TRANSFER_BYTES = 128 << 20
# WRITE SAME with a nonzero pattern is written in chunks, never allocated
# whole; the limit bounds the time one command takes.
MAX_WRITE_SAME_BYTES = 1 << 30
WRITE_SAME_CHUNK = 1 << 20
# UNMAP: 4095 descriptors fill the largest parameter list (65535 bytes: an
# 8-byte header + 16 bytes each); the LBA count per command follows the
# write-same limit.
MAX_UNMAP_DESCRIPTORS = 4095
UNMAP_HEADER = 8
UNMAP_DESCRIPTOR = 16

READ_CAPACITY_10_LENGTH = 8             # SBC-3 5.15, table 64
READ_CAPACITY_16_LENGTH = 32            # SBC-3 5.16, table 66
LBPME = 0x80                            # READ CAPACITY(16) byte 14
WSNZ = 0x01                             # Block Limits byte 4
LBPU, LBPWS, LBPWS10 = 0x80, 0x40, 0x20     # Logical Block Provisioning byte 5
PROVISIONING_THIN = 0x02                # byte 6 PROVISIONING TYPE (SBC-3 6.6.4, table 205)
ROTATION_NON_ROTATING = 0x0001          # Block Device Characteristics bytes 4-5

# CDB bits.
PROTECT_MASK = 0xE0                     # RDPROTECT/WRPROTECT/VRPROTECT, byte 1 bits 7:5
FUA = 0x08                              # byte 1 bit 3
WS_ANCHOR, WS_UNMAP, WS_PBDATA, WS_LBDATA, WS_NDOB = 0x10, 0x08, 0x04, 0x02, 0x01
BYTCHK_SHIFT = 1                        # VERIFY byte 1 bits 2:1
UNMAP_ANCHOR = 0x01


# -- shared checks ------------------------------------------------------------------

def _range(lun, lba, blocks, length_field):
    if lba + blocks > lun.capacity:
        raise CheckCondition(S.LBA_OUT_OF_RANGE, information=lba)
    if blocks * lun.block_size > MAX_TRANSFER_BYTES:
        raise invalid_cdb(length_field)


def _writable(lun):
    if lun.read_only:
        raise CheckCondition(S.WRITE_PROTECTED)


def _length_field(cdb):
    return {6: 4, 10: 7, 12: 6, 16: 10}[len(cdb)]


# -- READ / WRITE (SBC-3 5.8-5.11, 5.31-5.34) -------------------------------------

def parse_read(lun, req):
    cdb = req.cdb
    if len(cdb) > 6 and cdb[1] & PROTECT_MASK:
        raise invalid_cdb(1, 7)
    lba, blocks = lba_and_blocks(cdb)
    req.args.update(lba=lba, blocks=blocks)
    _range(lun, lba, blocks, _length_field(cdb))
    req.xfer_length = blocks * lun.block_size


def read(lun, req, data_out):
    buf = bytearray(req.xfer_length)
    lun.backend.readinto(req.args["lba"] * lun.block_size, memoryview(buf))
    return buf


def parse_write(lun, req):
    cdb = req.cdb
    if len(cdb) > 6 and cdb[1] & PROTECT_MASK:
        raise invalid_cdb(1, 7)
    lba, blocks = lba_and_blocks(cdb)
    req.args.update(lba=lba, blocks=blocks)
    if len(cdb) > 6 and cdb[1] & FUA:
        req.args["fua"] = 1
    _range(lun, lba, blocks, _length_field(cdb))
    _writable(lun)
    req.xfer_length = blocks * lun.block_size


def write(lun, req, data_out):
    if data_out is None:                # TRANSFER LENGTH 0: nothing moves
        return
    lun.backend.write(req.args["lba"] * lun.block_size, data_out)
    if req.args.get("fua") or not lun.wce:
        lun.backend.flush()


# -- VERIFY (SBC-3 5.33, 5.35) ------------------------------------------------------

def parse_verify(lun, req):
    cdb = req.cdb
    if cdb[1] & PROTECT_MASK:
        raise invalid_cdb(1, 7)
    bytchk = (cdb[1] >> BYTCHK_SHIFT) & 0x3
    if bytchk == 0b10:                  # reserved
        raise invalid_cdb(1, 2)
    lba, blocks = lba_and_blocks(cdb)
    req.args.update(lba=lba, blocks=blocks, bytchk=bytchk)
    _range(lun, lba, blocks, _length_field(cdb))
    # BYTCHK 01b: the data-out buffer holds every block; 11b: one block that
    # each block is compared with.
    if bytchk == 0b01:
        req.xfer_length = blocks * lun.block_size
    elif bytchk == 0b11 and blocks:
        req.xfer_length = lun.block_size
    req.direction = Direction.OUT


def verify(lun, req, data_out):
    bytchk, lba, blocks = req.args["bytchk"], req.args["lba"], req.args["blocks"]
    if not bytchk or not blocks:
        return None
    bs = lun.block_size
    medium = bytearray(blocks * bs)
    lun.backend.readinto(lba * bs, memoryview(medium))
    expected = bytes(data_out) if bytchk == 0b01 else bytes(data_out) * blocks
    if medium != expected:
        first = next(i for i in range(len(medium)) if medium[i] != expected[i])
        # SBC-3: INFORMATION holds the offset of the first miscompare.
        raise CheckCondition(S.MISCOMPARE_DURING_VERIFY, information=first)
    return None


# -- READ CAPACITY (SBC-3 5.15, 5.16) ---------------------------------------------

def parse_read_capacity_10(lun, req):
    cdb = req.cdb
    # PMI (byte 8 bit 0) is obsolete; with it clear the LBA must be zero.
    if not cdb[8] & 0x01 and u32(cdb, 2):
        raise invalid_cdb(2)
    req.xfer_length = READ_CAPACITY_10_LENGTH


def _last_lba(lun):
    return max(lun.capacity - 1, 0)


def read_capacity_10(lun, req, data_out):
    """RETURNED LOGICAL BLOCK ADDRESS is FFFFFFFFh when the last LBA does not
    fit: the guest then uses READ CAPACITY(16)."""
    last = min(_last_lba(lun), 0xFFFFFFFF)
    return last.to_bytes(4, "big") + lun.block_size.to_bytes(4, "big")


def parse_read_capacity_16(lun, req):
    cdb = req.cdb
    if not cdb[14] & 0x01 and u64(cdb, 2):
        raise invalid_cdb(2)
    req.args["alloc"] = u32(cdb, 10)
    req.xfer_length = req.args["alloc"]


def read_capacity_16(lun, req, data_out):
    out = bytearray(READ_CAPACITY_16_LENGTH)
    out[0:8] = _last_lba(lun).to_bytes(8, "big")
    out[8:12] = lun.block_size.to_bytes(4, "big")
    if lun.backend.discard_enabled:
        out[14] = LBPME
    return out


# -- SYNCHRONIZE CACHE (SBC-3 5.22, 5.23) -----------------------------------------

def parse_synchronize_cache(lun, req):
    cdb = req.cdb
    if len(cdb) == 10:
        lba, blocks = u32(cdb, 2), u16(cdb, 7)
    else:
        lba, blocks = u64(cdb, 2), u32(cdb, 10)
    req.args.update(lba=lba, blocks=blocks)
    # NUMBER OF LOGICAL BLOCKS 0 means "to the last block"; the range is
    # still checked.
    if lba + blocks > lun.capacity:
        raise CheckCondition(S.LBA_OUT_OF_RANGE, information=lba)


def synchronize_cache(lun, req, data_out):
    lun.flush_cache()


# -- WRITE SAME (SBC-3 5.42, 5.43) ------------------------------------------------

def parse_write_same(lun, req):
    cdb = req.cdb
    sixteen = len(cdb) == 16
    if cdb[1] & PROTECT_MASK:
        raise invalid_cdb(1, 7)
    if cdb[1] & WS_ANCHOR:              # ANC_SUP is 0
        raise invalid_cdb(1, 4)
    if cdb[1] & (WS_PBDATA | WS_LBDATA):    # obsolete in SBC-3, not supported
        raise invalid_cdb(1, 2 if cdb[1] & WS_PBDATA else 1)
    if not sixteen and cdb[1] & WS_NDOB:    # reserved in WRITE SAME(10)
        raise invalid_cdb(1, 0)
    lba, blocks = lba_and_blocks(cdb)
    unmap, ndob = bool(cdb[1] & WS_UNMAP), sixteen and bool(cdb[1] & WS_NDOB)
    req.args.update(lba=lba, blocks=blocks)
    if unmap:
        req.args["unmap"] = 1
    if ndob:
        req.args["ndob"] = 1
    length_field = 10 if sixteen else 7
    if blocks == 0:                     # WSNZ=1: zero blocks is not "to the end"
        raise invalid_cdb(length_field)
    if lba + blocks > lun.capacity:
        raise CheckCondition(S.LBA_OUT_OF_RANGE, information=lba)
    if blocks * lun.block_size > MAX_WRITE_SAME_BYTES:
        raise invalid_cdb(length_field)
    _writable(lun)
    req.xfer_length = 0 if ndob else lun.block_size


def write_same(lun, req, data_out):
    """The block in the data-out buffer (zeros with NDOB) is written to each
    LBA.  With UNMAP set, discard enabled and a zero block, the range is
    unmapped instead (SBC-3 4.7.3.4: the device server may unmap when the
    data matches what an unmapped block returns)."""
    bs = lun.block_size
    offset, length = req.args["lba"] * bs, req.args["blocks"] * bs
    backend = lun.backend
    pattern = bytes(data_out) if data_out is not None else bytes(bs)
    if not any(pattern):
        if req.args.get("unmap") and backend.discard_enabled:
            backend.discard(offset, length)
        else:
            backend.write_zeroes(offset, length)
    else:
        chunk = pattern * (min(length, WRITE_SAME_CHUNK) // bs)
        end = offset + length
        while offset < end:
            piece = min(len(chunk), end - offset)
            backend.write(offset, chunk[:piece])
            offset += piece
    if not lun.wce:
        backend.flush()


# -- UNMAP (SBC-3 5.28) ---------------------------------------------------------

def _discard_enabled(lun):
    return lun.backend.discard_enabled


def parse_unmap(lun, req):
    cdb = req.cdb
    if cdb[1] & UNMAP_ANCHOR:
        raise invalid_cdb(1, 0)
    length = u16(cdb, 7)
    req.args["length"] = length
    # "If the PARAMETER LIST LENGTH field is greater than zero and less than
    # eight": the header would be truncated.
    if 0 < length < UNMAP_HEADER:
        raise CheckCondition(S.PARAMETER_LIST_LENGTH_ERROR)
    _writable(lun)
    req.xfer_length = length


def unmap(lun, req, data_out):
    """Every length and descriptor is checked before anything is discarded:
    UNMAP DATA LENGTH and UNMAP BLOCK DESCRIPTOR DATA LENGTH must fit the
    parameter list (PARAMETER LIST LENGTH ERROR), descriptors must be whole
    16-byte units and within the VPD limits (INVALID FIELD IN PARAMETER
    LIST), and every range on the medium (LBA OUT OF RANGE)."""
    if data_out is None:                # PARAMETER LIST LENGTH 0: "not an error"
        return None
    data = bytes(data_out)
    data_length, descriptors_length = u16(data, 0), u16(data, 2)
    if data_length + 2 > len(data) or descriptors_length + UNMAP_HEADER > len(data):
        raise CheckCondition(S.PARAMETER_LIST_LENGTH_ERROR)
    if descriptors_length % UNMAP_DESCRIPTOR:
        raise invalid_parameter(2)
    count = descriptors_length // UNMAP_DESCRIPTOR
    if count > MAX_UNMAP_DESCRIPTORS:
        raise invalid_parameter(2)
    ranges, total = [], 0
    for i in range(count):
        pos = UNMAP_HEADER + i * UNMAP_DESCRIPTOR
        lba, blocks = u64(data, pos), u32(data, pos + 8)
        if lba + blocks > lun.capacity:
            raise CheckCondition(S.LBA_OUT_OF_RANGE, information=lba)
        total += blocks
        if total > max_unmap_blocks(lun):
            raise invalid_parameter(pos + 8)
        if blocks:
            ranges.append((lba, blocks))
    bs = lun.block_size
    for lba, blocks in ranges:
        lun.backend.discard(lba * bs, blocks * bs)


def max_unmap_blocks(lun):
    return MAX_WRITE_SAME_BYTES // lun.block_size


# -- SBC VPD pages (SBC-3 6.6) ----------------------------------------------------

def vpd_block_limits(lun):
    """Block Limits (SBC-3 6.6.3, table 202), PAGE LENGTH 003Ch."""
    out = bytearray(0x3C)
    out[0] = WSNZ                                               # byte 4
    out[4:8] = (MAX_TRANSFER_BYTES // lun.block_size).to_bytes(4, "big")    # bytes 8-11
    if lun.backend.discard_enabled:
        out[16:20] = max_unmap_blocks(lun).to_bytes(4, "big")              # bytes 20-23
        out[20:24] = MAX_UNMAP_DESCRIPTORS.to_bytes(4, "big")              # bytes 24-27
        out[24:28] = (1).to_bytes(4, "big")     # bytes 28-31 OPTIMAL UNMAP GRANULARITY
    out[32:40] = (MAX_WRITE_SAME_BYTES // lun.block_size).to_bytes(8, "big")  # bytes 36-43
    return bytes(out)


def vpd_block_device_characteristics(lun):
    """Block Device Characteristics (SBC-3 6.6.2, table 201): MEDIUM ROTATION
    RATE 0001h for non-rotating media, 0000h (not reported) otherwise."""
    out = bytearray(0x3C)
    if lun.backend.non_rotational:
        out[0:2] = ROTATION_NON_ROTATING.to_bytes(2, "big")    # bytes 4-5
    return bytes(out)


def vpd_logical_block_provisioning(lun):
    """Logical Block Provisioning (SBC-3 6.6.4, table 204): LBPU, LBPWS and
    LBPWS10 when discard is enabled (thin provisioned), else full."""
    out = bytearray(4)
    if lun.backend.discard_enabled:
        out[1] = LBPU | LBPWS | LBPWS10                         # byte 5
        out[2] = PROVISIONING_THIN                              # byte 6
    return bytes(out)


# -- the SBC rows ---------------------------------------------------------------

IN, OUT, NONE = Direction.IN, Direction.OUT, Direction.NONE
D = frozenset({DISK})
MEDIUM = Flag.NEEDS_MEDIUM
WRITES = Flag.NEEDS_MEDIUM | Flag.WRITES

READ_6 = Command(0x08, "READ_6", parse_read, read, IN, D, MEDIUM)
WRITE_6 = Command(0x0A, "WRITE_6", parse_write, write, OUT, D, WRITES)
READ_CAPACITY_10 = Command(0x25, "READ_CAPACITY_10", parse_read_capacity_10, read_capacity_10,
                           IN, D, MEDIUM)
READ_10 = Command(0x28, "READ_10", parse_read, read, IN, D, MEDIUM)
WRITE_10 = Command(0x2A, "WRITE_10", parse_write, write, OUT, D, WRITES)
VERIFY_10 = Command(0x2F, "VERIFY_10", parse_verify, verify, OUT, D, MEDIUM)
SYNCHRONIZE_CACHE_10 = Command(0x35, "SYNCHRONIZE_CACHE_10", parse_synchronize_cache,
                               synchronize_cache, NONE, D, MEDIUM)
WRITE_SAME_10 = Command(0x41, "WRITE_SAME_10", parse_write_same, write_same, OUT, D, WRITES)
UNMAP = Command(0x42, "UNMAP", parse_unmap, unmap, OUT, D, WRITES, available=_discard_enabled)
READ_16 = Command(0x88, "READ_16", parse_read, read, IN, D, MEDIUM)
WRITE_16 = Command(0x8A, "WRITE_16", parse_write, write, OUT, D, WRITES)
VERIFY_16 = Command(0x8F, "VERIFY_16", parse_verify, verify, OUT, D, MEDIUM)
SYNCHRONIZE_CACHE_16 = Command(0x91, "SYNCHRONIZE_CACHE_16", parse_synchronize_cache,
                               synchronize_cache, NONE, D, MEDIUM)
WRITE_SAME_16 = Command(0x93, "WRITE_SAME_16", parse_write_same, write_same, OUT, D, WRITES)
READ_CAPACITY_16 = Command(0x9E, "READ_CAPACITY_16", parse_read_capacity_16, read_capacity_16,
                           IN, D, MEDIUM, service_action=0x10)   # SERVICE ACTION IN(16)
READ_12 = Command(0xA8, "READ_12", parse_read, read, IN, D, MEDIUM)
WRITE_12 = Command(0xAA, "WRITE_12", parse_write, write, OUT, D, WRITES)

SBC_COMMANDS = (READ_6, WRITE_6, READ_CAPACITY_10, READ_10, WRITE_10, VERIFY_10,
                SYNCHRONIZE_CACHE_10, WRITE_SAME_10, UNMAP, READ_16, WRITE_16, VERIFY_16,
                SYNCHRONIZE_CACHE_16, WRITE_SAME_16, READ_CAPACITY_16, READ_12, WRITE_12)


class ScsiDisk(ScsiLun):
    """A direct-access block device (PERIPHERAL DEVICE TYPE 00h) over a BlockBackend.

    START STOP UNIT changes no state (a virtual disk is always spinning) but
    writes the cache back on a stop; PREVENT ALLOW MEDIUM REMOVAL sets
    ``locked`` (meaningful for ``removable`` disks such as USB sticks).
    """

    kind = "disk"
    device_type = PeripheralDeviceType.DIRECT_ACCESS
    commands = command_table(DISK, *spc.SPC_COMMANDS, *SBC_COMMANDS)
    mode_pages = spc.COMMON_MODE_PAGES
    vpd_pages = {**spc.COMMON_VPD_PAGES,
                 spc.VPD_BLOCK_LIMITS: vpd_block_limits,
                 spc.VPD_BLOCK_DEVICE_CHARACTERISTICS: vpd_block_device_characteristics,
                 spc.VPD_LOGICAL_BLOCK_PROVISIONING: vpd_logical_block_provisioning}

    def __init__(self, backend, *, vendor=identity.VENDOR, product=identity.DISK_MODEL,
                 revision=identity.SCSI_REVISION, serial=None, removable=False, cmdque=False):
        uuid = identity.medium_uuid(backend.uuid, backend.name)
        if serial is None:
            serial = identity.serial_number(backend.uuid, backend.name)
        super().__init__(vendor=vendor, product=product, revision=revision, serial=serial,
                         removable=removable, identity_uuid=uuid, cmdque=cmdque)
        self.backend = backend

    @property
    def block_size(self):
        return self.backend.sector_size

    @property
    def capacity(self):
        return self.backend.size // self.backend.sector_size

    @property
    def read_only(self):
        return self.backend.read_only

    def flush_cache(self):
        """Flush the backend; a host failure is a WRITE ERROR whichever command asked."""
        try:
            self.backend.flush()
        except ImageError as failure:
            if trace.on.dev:
                trace.emit("dev", f"scsi {self.kind} flush: host I/O error: {failure}")
            raise CheckCondition(S.WRITE_ERROR) from None

    def device_specific_parameter(self):
        """SBC-3 6.4.1, table 99: WP when read-only; DPOFUA (DPO and FUA honoured)."""
        return (spc.DEVICE_SPECIFIC_WP if self.read_only else 0) | spc.DEVICE_SPECIFIC_DPOFUA

"""The iSCSI driver's SCSI error handling, on a scripted LUN (no target):
CHECK CONDITION to errno and message, UNIT ATTENTION and BUSY retried,
residuals, write protection, a LUN that is not a disk."""

import errno
import struct

import pytest

from drivebay.block.iscsi import IscsiDriver, IscsiUrl
from drivebay.block.iscsi_session import ScsiResult
from drivebay.errors import ImageError, UnsupportedOperation

BLOCKS = 2048


def fixed_sense(key, asc, ascq):
    sense = bytearray(18)
    sense[0], sense[2], sense[7], sense[12], sense[13] = 0x70, key, 10, asc, ascq
    return bytes(sense)


class ScriptedLun:
    """Stands in for IscsiConnection: answers INQUIRY, READ CAPACITY and
    MODE SENSE as a 1 MiB disk; ``script[opcode]`` lists results to give
    (before the normal answer) for that opcode."""

    def __init__(self, kind=0, wp=False, script=None):
        self.url = IscsiUrl("iscsi://lun.test/iqn.2026-01.test:x/0")
        self.path = self.url.masked
        self.writable = True
        self.direct = None
        self.kind, self.wp = kind, wp
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.seen = []

    def execute(self, cdb, read_into=None, write=None):
        op = cdb[0]
        self.seen.append(op)
        if self.script.get(op):
            status, sense, residual = self.script[op].pop(0)
            return ScsiResult(status, sense, residual)
        view = memoryview(read_into) if read_into is not None else None
        if op == 0x12 and not cdb[1] & 1:
            data = bytes([self.kind]) + bytes(7) + b"FAKE    LUN             0001"
        elif op == 0x12:
            data = bytes(4)                                   # no VPD pages
        elif op == 0x25:
            data = struct.pack(">II", BLOCKS - 1, 512)
        elif op == 0x1A:
            data = bytes([3, 0, 0x80 if self.wp else 0, 0])
        else:
            data = bytes(len(view)) if view is not None else b""
        if view is not None:
            n = min(len(view), len(data))
            view[:n] = data[:n]
        return ScsiResult(0, b"", 0)

    def close(self):
        pass


def opened(lun, writable=True):
    image = IscsiDriver(lun, writable)
    image._open()
    return image


@pytest.mark.parametrize("key, asc, ascq, code, name", [
    (0x3, 0x11, 0x00, errno.EIO, "MEDIUM ERROR (0x3), ASC/ASCQ 11/00"),
    (0x4, 0x44, 0x00, errno.EIO, "HARDWARE ERROR"),
    (0x7, 0x27, 0x00, errno.EROFS, "DATA PROTECT (0x7), ASC/ASCQ 27/00"),
    (0x7, 0x27, 0x07, errno.ENOSPC, "DATA PROTECT (0x7), ASC/ASCQ 27/07"),
    (0x5, 0x21, 0x00, errno.EINVAL, "ILLEGAL REQUEST"),
])
def test_check_condition_becomes_an_errno(key, asc, ascq, code, name):
    image = opened(ScriptedLun(script={0x8A: [(2, fixed_sense(key, asc, ascq), 0)]}))
    with pytest.raises(ImageError) as e:
        image.write(4096, b"x" * 512)
    assert e.value.errno == code
    assert f"WRITE(16) at LBA 8 failed: CHECK CONDITION, sense key {name}" in str(e.value)


def test_unit_attention_and_busy_are_retried():
    ua = (2, fixed_sense(0x6, 0x29, 0x00), 0)
    lun = ScriptedLun(script={0x88: [ua, (0x08, b"", 0), ua]})
    image = opened(lun)
    assert image.read(0, 512) == bytes(512)
    assert lun.seen.count(0x88) == 4


def test_a_short_transfer_is_an_error():
    image = opened(ScriptedLun(script={0x88: [(0, b"", 512)]}))
    with pytest.raises(ImageError, match="transferred less than asked") as e:
        image.read(0, 1024)
    assert e.value.errno == errno.EIO


def test_write_protected_lun_and_other_device_types():
    with pytest.raises(ImageError, match="write-protected") as e:
        opened(ScriptedLun(wp=True))
    assert e.value.errno == errno.EROFS
    image = opened(ScriptedLun(wp=True), writable=False)
    assert image.write_protected and image.size == BLOCKS * 512
    with pytest.raises(UnsupportedOperation, match="peripheral type 0x05"):
        opened(ScriptedLun(kind=0x05))                       # a CD/DVD LUN
    with pytest.raises(ImageError, match="no LUN 0"):
        opened(ScriptedLun(kind=0x7F))                       # qualifier 3: no such LUN


def test_short_capacity_data_is_refused():
    with pytest.raises(ImageError, match="READ CAPACITY\\(10\\) returned 4 bytes"):
        opened(ScriptedLun(script={0x25: [(0, b"", 4)]}))


def test_discard_without_unmap_support_changes_nothing():
    lun = ScriptedLun()
    image = opened(lun)
    image.discard(0, 65536)
    assert 0x42 not in lun.seen

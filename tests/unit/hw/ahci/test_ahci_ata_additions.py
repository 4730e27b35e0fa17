"""The ATA command-set additions AHCI needs, seen from a transport without
SATA (the AtaTransport defaults, as on IDE): NCQ and SATA features abort,
READ LOG EXT serves the log directory without the NCQ log."""

from drivebay.block.backend import MemoryBackend
from drivebay.hw.ata.commands import DeviceKind
from drivebay.hw.ata.device import AtaDevice
from drivebay.hw.ata.taskfile import Register

ABRT, ERR = 0x04, 0x01


def pata_disk():
    return AtaDevice(DeviceKind.DISK, backend=MemoryBackend(bytearray(64 * 512)))


def test_ncq_commands_abort_without_a_queue():
    device = pata_disk()
    device.taskfile.load(Register.COUNT, 3 << 3, 0)
    device.taskfile.load(Register.FEATURES, 1, 0)
    device.execute(0x60)
    assert device.taskfile.status & ERR and device.taskfile.error == ABRT


def test_sata_feature_aborts_on_parallel_ata():
    device = pata_disk()
    device.taskfile.load(Register.FEATURES, 0x10, 0)
    device.taskfile.load(Register.COUNT, 0x05, 0)
    device.execute(0xEF)
    assert device.taskfile.error == ABRT


def test_read_log_ext_directory_without_ncq():
    device = pata_disk()
    device.taskfile.load(Register.LBA_LOW, 0x00, 0)
    device.taskfile.load(Register.COUNT, 1, 0)
    device.execute(0x2F)
    page = device.pio_read(512)
    assert page[0:2] == b"\x01\x00" and page[0x20:0x22] == b"\x00\x00"
    device.taskfile.load(Register.LBA_LOW, 0x10, 0)
    device.taskfile.load(Register.COUNT, 1, 0)
    device.execute(0x2F)
    assert device.taskfile.error == ABRT

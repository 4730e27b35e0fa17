"""The ATA core without IDE: task file, geometry, the command table, and a
device driven through a one-device transport shaped like an AHCI port
(PIO blocks and DMA moved at once, completion reported per command)."""

import pytest

from drivebay.block.backend import MemoryBackend
from drivebay.hw.ata import commands as cmds
from drivebay.hw.ata import geometry
from drivebay.hw.ata.commands import DeviceKind, TransferKind
from drivebay.hw.ata.device import AtaDevice, Phase
from drivebay.hw.ata.taskfile import Register, TaskFile
from drivebay.hw.ata.transport import AtaTransport
from drivebay.hw.dma import GuestMemory
from drivebay.hw.scsi.mmc import ScsiCdrom

# -- task file ----------------------------------------------------------------------


def test_taskfile_fifo_and_decoders():
    tf = TaskFile()
    for reg, hob, cur in ((Register.COUNT, 0x01, 0x02), (Register.LBA_LOW, 0x44, 0x11),
                          (Register.LBA_MID, 0x55, 0x22), (Register.LBA_HIGH, 0x66, 0x33)):
        tf.write(reg, hob)
        tf.write(reg, cur)
    tf.write(Register.DEVICE, 0xE7)
    assert tf.lba48() == 0x665544332211
    assert tf.count48() == 0x0102
    assert tf.lba28() == 0x7332211
    assert tf.count28() == 2
    assert tf.read(Register.LBA_MID, hob=True) == 0x55
    tf.write(Register.COUNT, 0)
    tf.write(Register.COUNT, 0)
    assert tf.count48() == 65536 and tf.count28() == 256


def test_taskfile_signature_keeps_dev():
    tf = TaskFile()
    tf.write(Register.DEVICE, 0xF5)
    tf.set_signature((1, 1, 0x14, 0xEB))
    assert tf.device == 0xB0
    assert tf.read(Register.LBA_HIGH) == 0xEB


# -- geometry -----------------------------------------------------------------------


@pytest.mark.parametrize("sectors,chs", [
    (2048, (2, 16, 63)),
    (16 * 63, (1, 16, 63)),
    (100, (1, 16, 63)),
    (16383 * 16 * 63, (16383, 16, 63)),
    (1 << 30, (16383, 16, 63)),
    (204800, (203, 16, 63)),          # 100 MiB: 204800 // 1008
])
def test_default_geometry_virtualbox_formula(sectors, chs):
    g = geometry.default_geometry(sectors)
    assert (g.cylinders, g.heads, g.sectors) == chs


def test_chs_translation_round_trip():
    g = geometry.translation(100000, 4, 17)
    assert (g.cylinders, g.heads, g.sectors) == (100000 // 68, 4, 17)
    for lba in (0, 16, 17, 67, 68, 5000):
        assert g.to_lba(*g.from_lba(lba)) == lba
    assert g.to_lba(0, 0, 0) is None and g.to_lba(0, 4, 1) is None
    assert geometry.translation(1000, 17, 1) is None and geometry.translation(1000, 1, 0) is None
    assert geometry.translation(1 << 40, 16, 255).cylinders == 65535


# -- the command table ----------------------------------------------------------------


def test_command_table_is_consistent():
    assert len({c.opcode for c in cmds.COMMANDS}) == len(cmds.COMMANDS)
    for row in cmds.COMMANDS:
        assert callable(getattr(AtaDevice, row.handler))
        assert row.name == row.name.upper() and " " not in row.name
    assert cmds.command_name(0xC8) == "READ_DMA" and cmds.command_name(0x99) == "UNKNOWN_99h"


@pytest.mark.parametrize("count,mode", [
    (0x00, (TransferKind.PIO, 0)), (0x01, (TransferKind.PIO, 0)), (0x0C, (TransferKind.PIO, 4)),
    (0x0D, None), (0x22, (TransferKind.MWDMA, 2)), (0x23, None), (0x46, (TransferKind.UDMA, 6)),
    (0x47, None), (0x10, None), (0x60, None),
])
def test_transfer_mode_values(count, mode):
    assert cmds.decode_transfer_mode(count) == mode


# -- a one-device transport ---------------------------------------------------------------


class PortTransport(AtaTransport):
    """What an AHCI port does: PIO blocks through one buffer, DMA through a
    PRDT (a list of (address, length)), a record of every completion."""

    def __init__(self, memory, prdt=(), dma_now=True):
        self.memory = memory
        self.prdt = list(prdt)
        self.dma_now = dma_now
        self.pio_in = bytearray()
        self.pio_out = bytearray()
        self.done = []
        self.irqs = 0
        self.patched = False

    def intrq_changed(self, device):
        if device.intrq:
            self.irqs += 1

    def pio_ready(self, device):
        # The interrupt travels in the PIO Setup FIS; the port acknowledges it.
        device.read_status()
        n = device.pio_remaining
        if device.phase is Phase.PIO_IN:
            self.pio_in += device.pio_read(n)
        else:
            device.pio_write(bytes(self.pio_out[:n]))
            del self.pio_out[:n]

    def dma_ready(self, device):
        if self.dma_now:
            device.dma_run()

    def dma_map(self, device, nbytes):
        views = []
        while self.prdt and nbytes:
            address, length = self.prdt[0]
            n = min(length, nbytes)
            views.append(self.memory.view(address, n))
            if n == length:
                self.prdt.pop(0)
            else:
                self.prdt[0] = (address + n, length - n)
            nbytes -= n
        return views

    def command_done(self, device):
        self.done.append((device.taskfile.status, device.taskfile.error))

    def identify_words(self, device, words):
        words[76] = 0x0006          # e.g. SATA Gen1/Gen2
        self.patched = True


def port_disk(sectors=64, **kwargs):
    data = bytearray(bytes(range(256)) * 2 * sectors)
    ram = GuestMemory(bytearray(1 << 16))
    transport = PortTransport(ram, **kwargs)
    device = AtaDevice(DeviceKind.DISK, backend=MemoryBackend(data), transport=transport)
    return device, transport, ram, data


def load(device, lba, count, lba48=True):
    tf = device.taskfile
    tf.load(Register.COUNT, count & 0xFF, count >> 8)
    tf.load(Register.LBA_LOW, lba & 0xFF, lba >> 24 & 0xFF)
    tf.load(Register.LBA_MID, lba >> 8 & 0xFF, lba >> 32 & 0xFF)
    tf.load(Register.LBA_HIGH, lba >> 16 & 0xFF, lba >> 40 & 0xFF)
    tf.device = 0x40


def test_pio_read_through_a_port_transport():
    device, t, _, data = port_disk()
    load(device, 3, 2)
    device.execute(0x24)
    assert t.pio_in == data[3 * 512:5 * 512]
    assert device.phase is Phase.IDLE and t.done == [(0x50, 0)]


def test_pio_write_through_a_port_transport():
    device, t, _, data = port_disk()
    t.pio_out += bytes([0xEE]) * 1024
    load(device, 10, 2)
    device.execute(0x34)
    assert data[10 * 512:12 * 512] == bytes([0xEE]) * 1024
    assert t.done == [(0x50, 0)] and t.irqs == 2


def test_dma_through_a_prdt():
    device, t, ram, data = port_disk(prdt=[(0x1000, 700), (0x4000, 324)])
    load(device, 1, 2)
    device.execute(0x25)
    assert bytes(ram.view(0x1000, 700)) + bytes(ram.view(0x4000, 324)) == data[512:1536]
    assert t.done == [(0x50, 0)] and device.phase is Phase.STATUS


def test_dma_short_prdt_waits_then_resumes():
    device, t, ram, data = port_disk(prdt=[(0x1000, 512)])
    load(device, 0, 2)
    device.execute(0x25)
    assert device.phase is Phase.DMA and device.dma_remaining == 512 and not t.done
    t.prdt.append((0x2000, 512))
    device.dma_run()
    assert bytes(ram.view(0x2000, 512)) == data[512:1024] and t.done


def test_identify_hook_and_checksum():
    device, t, _, _ = port_disk()
    device.execute(0xEC)
    words = [int.from_bytes(t.pio_in[2 * i:2 * i + 2], "little") for i in range(256)]
    assert t.patched and words[76] == 0x0006
    assert sum(t.pio_in) % 256 == 0


def test_snapshot_lists_declared_fields():
    device, _, _, _ = port_disk()
    snap = device.snapshot()
    assert set(AtaDevice.SNAPSHOT_FIELDS) <= set(snap)
    assert snap["phase"] is Phase.IDLE


def test_packet_device_through_a_port_transport():
    ram = GuestMemory(bytearray(1 << 16))
    t = PortTransport(ram)
    device = AtaDevice(DeviceKind.PACKET, lun=ScsiCdrom(None), transport=t)
    # INQUIRY: the port supplies the 12-byte packet as a PIO block (AHCI ACMD).
    t.pio_out += bytes([0x12, 0, 0, 0, 36, 0]) + bytes(6)
    device.taskfile.load(Register.LBA_MID, 0x00, 0)
    device.taskfile.load(Register.LBA_HIGH, 0x08, 0)
    device.execute(0xA0)
    assert t.pio_in[8:12] == b"VBOX" and len(t.pio_in) == 36
    assert t.done[-1] == (0x40, 0)
    assert device.taskfile.read(Register.COUNT) == 0x03

"""Test bench for the IDE controllers, driven the way a guest driver does.

``IdeBench`` builds a PCI bus over fresh address spaces and 1 MiB of guest
RAM, plugs the PIIX3 ISA bridge at 00:01.0 and an IDE function at 00:01.1
(QEMU's ``pc`` layout), programs BMIBA and PCICMD through configuration
mechanism #1, and records ISA IRQ 14/15 as IrqLines.

Every port, offset and bit below is written out from the specs (ATA/ATAPI-6
Table 18, SFF-8038i §2, PCI 3.0 §6.1), not imported from hw/ide/regs.py, so
a wrong register table cannot confirm itself.  Layered as libqos does:
register access -> command issue -> one-call I/O.
"""

import functools

from drivebay.block.backend import MemoryBackend
from drivebay.hw import devices
from drivebay.hw.clock import VirtualClock
from drivebay.hw.dma import GuestMemory
from drivebay.hw.irq import IrqLine
from drivebay.hw.memory import IoSpace, MmioSpace
from drivebay.hw.pci.bus import PciBus
from drivebay.hw.pci.piix3 import Piix3

RAM_SIZE = 1 << 20
BMIBA = 0xC000

# ATA/ATAPI-6 Table 18 / PCI IDE 1.0 §2.1: legacy port bases.
PRIMARY, PRIMARY_CTL = 0x1F0, 0x3F6
SECONDARY, SECONDARY_CTL = 0x170, 0x376
DATA, ERROR, FEATURES, COUNT, LBA_LOW, LBA_MID, LBA_HIGH, DEVICE, STATUS, COMMAND = (
    0, 1, 1, 2, 3, 4, 5, 6, 7, 7)

# Status / error / device control bits (ATA/ATAPI-6 §7).
BSY, DRDY, DF, DSC, DRQ, ERR = 0x80, 0x40, 0x20, 0x10, 0x08, 0x01
UNC, IDNF, ABRT = 0x40, 0x10, 0x04
NIEN, SRST, HOB = 0x02, 0x04, 0x80

# SFF-8038i: BMIC at +0, BMIS at +2, BMIDTP at +4; secondary +8.
BMIC, BMIS, BMIDTP = 0, 2, 4
BM_START, BM_WRITE_MEMORY = 0x01, 0x08
BM_ACTIVE, BM_ERROR, BM_INTERRUPT = 0x01, 0x02, 0x04

SECTOR = 512


@functools.lru_cache(maxsize=64)
def pattern(sectors, seed=0):
    """Distinct, recognisable bytes per sector (cached: benches build many disks)."""
    out = bytearray()
    for s in range(sectors):
        tag = ((s + seed) & 0xFFFFFFFF).to_bytes(4, "little")
        out += bytes((tag[i % 4] + i) & 0xFF for i in range(SECTOR))
    return bytes(out)


def disk(sectors=2048, **kwargs):
    return MemoryBackend(bytearray(pattern(sectors)), **kwargs)


class IdeBench:
    def __init__(self, variant="piix3-ide", drives=None, bus_master=True):
        self.io = IoSpace()
        self.mmio = MmioSpace()
        self.ram = bytearray(RAM_SIZE)
        self.memory = GuestMemory(self.ram)
        self.bus = PciBus(self.io, self.mmio, memory=self.memory)
        self.irqs = {}
        ctx = devices.DeviceContext(isa_irq=self._isa_irq, clock=VirtualClock(), io=self.io,
                                    mmio=self.mmio)
        self.bus.plug(Piix3(), 1, 0)
        self.ide = devices.create(variant, ctx, drives=drives, function=1)
        self.bus.plug(self.ide, 1, 1)
        self.cfg_write(0x20, 4, BMIBA | 1)                    # BMIBA (BAR4)
        self.cfg_write(0x04, 2, 0x0005 if bus_master else 0x0001)   # PCICMD: IOSE (+ BME)

    def _isa_irq(self, irq, name):
        line = IrqLine(name=name)
        self.irqs[irq] = line
        return line

    # -- configuration mechanism #1 -------------------------------------------------------

    def cfg_read(self, register, size=4, slot=1, function=1):
        self.io.write(0xCF8, 4, 0x80000000 | slot << 11 | function << 8 | register & 0xFC)
        return self.io.read(0xCFC + (register & 3), size)

    def cfg_write(self, register, size, value, slot=1, function=1):
        self.io.write(0xCF8, 4, 0x80000000 | slot << 11 | function << 8 | register & 0xFC)
        self.io.write(0xCFC + (register & 3), size, value)

    # -- ports ------------------------------------------------------------------------------

    def inb(self, port):
        return self.io.read(port, 1)

    def inw(self, port):
        return self.io.read(port, 2)

    def inl(self, port):
        return self.io.read(port, 4)

    def outb(self, port, value):
        self.io.write(port, 1, value)

    def outw(self, port, value):
        self.io.write(port, 2, value)

    def outl(self, port, value):
        self.io.write(port, 4, value)

    # -- ATA command issue -----------------------------------------------------------------------

    def issue(self, command, lba=0, count=1, features=0, unit=0, lba48=False, lba_bit=True,
              base=PRIMARY, chs=None):
        dev = 0xA0 | unit << 4 | (0x40 if lba_bit or lba48 else 0)
        if lba48:
            for reg, hi, lo in ((FEATURES, features >> 8, features), (COUNT, count >> 8, count),
                                (LBA_LOW, lba >> 24, lba), (LBA_MID, lba >> 32, lba >> 8),
                                (LBA_HIGH, lba >> 40, lba >> 16)):
                self.outb(base + reg, hi & 0xFF)
                self.outb(base + reg, lo & 0xFF)
        elif chs is not None:
            cylinder, head, sector = chs
            dev = 0xA0 | unit << 4 | head
            self.outb(base + FEATURES, features)
            self.outb(base + COUNT, count & 0xFF)
            self.outb(base + LBA_LOW, sector)
            self.outb(base + LBA_MID, cylinder & 0xFF)
            self.outb(base + LBA_HIGH, cylinder >> 8)
        else:
            self.outb(base + FEATURES, features)
            self.outb(base + COUNT, count & 0xFF)
            self.outb(base + LBA_LOW, lba & 0xFF)
            self.outb(base + LBA_MID, lba >> 8 & 0xFF)
            self.outb(base + LBA_HIGH, lba >> 16 & 0xFF)
            dev |= lba >> 24 & 0x0F
        self.outb(base + DEVICE, dev)
        self.outb(base + COMMAND, command)

    def read_words(self, nbytes, base=PRIMARY):
        out = bytearray()
        for _ in range(nbytes // 2):
            out += self.inw(base + DATA).to_bytes(2, "little")
        return bytes(out)

    def read_dwords(self, nbytes, base=PRIMARY):
        out = bytearray()
        for _ in range(nbytes // 4):
            out += self.inl(base + DATA).to_bytes(4, "little")
        return bytes(out)

    def write_words(self, data, base=PRIMARY):
        for i in range(0, len(data), 2):
            self.outw(base + DATA, int.from_bytes(data[i:i + 2], "little"))

    def write_dwords(self, data, base=PRIMARY):
        for i in range(0, len(data), 4):
            self.outl(base + DATA, int.from_bytes(data[i:i + 4], "little"))

    def identify(self, unit=0, command=0xEC, base=PRIMARY):
        self.issue(command, unit=unit, base=base)
        assert self.inb(base + STATUS) & DRQ
        data = self.read_words(512, base)
        return [int.from_bytes(data[2 * i:2 * i + 2], "little") for i in range(256)], data

    # -- bus-master DMA ----------------------------------------------------------------------------

    def prd_table(self, address, entries):
        """entries: (base, byte count (0x10000 written as 0), eot)."""
        for i, (base, count, eot) in enumerate(entries):
            self.memory.write_u32(address + 8 * i, base)
            self.memory.write_u32(address + 8 * i + 4, (count & 0xFFFF) | (0x80000000 if eot else 0))

    def bm_setup(self, table, channel=0):
        b = BMIBA + 8 * channel
        self.outb(b + BMIS, BM_ERROR | BM_INTERRUPT)      # clear (write 1 to clear)
        self.outl(b + BMIDTP, table)

    def bm_start(self, to_memory, channel=0):
        self.outb(BMIBA + 8 * channel + BMIC, BM_START | (BM_WRITE_MEMORY if to_memory else 0))

    def bm_stop(self, channel=0):
        self.outb(BMIBA + 8 * channel + BMIC, 0)

    def bm_status(self, channel=0):
        return self.inb(BMIBA + 8 * channel + BMIS)

    def dma(self, command, lba, count, buffers, to_memory, lba48=False, unit=0, table=0x1000):
        """One READ/WRITE DMA: PRDs over ``buffers`` [(address, bytes)], last one EOT."""
        self.prd_table(table, [(a, n, i == len(buffers) - 1) for i, (a, n) in enumerate(buffers)])
        self.bm_setup(table)
        self.issue(command, lba=lba, count=count, lba48=lba48, unit=unit)
        self.bm_start(to_memory)
        bm = self.bm_status()
        self.bm_stop()
        return bm



class SparseDisk:
    """A BlockBackend of any size: unwritten sectors read as ``pattern``,
    written ones are kept in a dict (for LBAs past 28 and 32 bits)."""

    sector_size = SECTOR
    read_only = False
    discard_enabled = False
    non_rotational = False
    uuid = None
    name = "sparse"

    def __init__(self, sectors):
        self.size = sectors * SECTOR
        self.written = {}
        self.flushes = 0

    def readinto(self, offset, view):
        assert offset % SECTOR == 0 and len(view) % SECTOR == 0
        for i in range(len(view) // SECTOR):
            s = offset // SECTOR + i
            view[i * SECTOR:(i + 1) * SECTOR] = self.written.get(s) or pattern(1, seed=s)

    def write(self, offset, data):
        for i in range(len(data) // SECTOR):
            self.written[offset // SECTOR + i] = bytes(data[i * SECTOR:(i + 1) * SECTOR])

    def flush(self):
        self.flushes += 1

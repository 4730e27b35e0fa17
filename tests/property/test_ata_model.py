"""Random PIO/DMA reads and writes against a bytearray model disk (hypothesis).

Each example plugs a PIIX3 IDE function with one disk, then runs a random
sequence of commands — READ/WRITE SECTORS (EXT), READ/WRITE MULTIPLE (EXT),
READ/WRITE DMA (EXT) with random PRD splits, addresses that run past the
end — and random garbage written to the task file.  After every command the
device must end in a status (no exception out of the port accesses), data
read must match the model, and an out-of-range request must report IDNF
and change nothing.  Ports and bits are written out from ATA/ATAPI-6 Table
18 and SFF-8038i, as in tests/unit/hw/ide.
"""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivebay.block.backend import MemoryBackend
from drivebay.hw import devices
from drivebay.hw.dma import GuestMemory
from drivebay.hw.irq import IrqLine
from drivebay.hw.memory import IoSpace, MmioSpace
from drivebay.hw.pci.bus import PciBus

SECTORS = 96
SECTOR = 512
RAM = 1 << 18
BMIBA = 0xC000
BASE, CTL = 0x1F0, 0x3F6
BSY, DRDY, DRQ, ERR = 0x80, 0x40, 0x08, 0x01
IDNF, ABRT = 0x10, 0x04
PRD_TABLE, BUFFER = 0x1000, 0x10000

PIO_READ = {0x20: False, 0x24: True, 0xC4: False, 0x29: True}
PIO_WRITE = {0x30: False, 0x34: True, 0xC5: False, 0x39: True}
DMA_READ = {0xC8: False, 0x25: True}
DMA_WRITE = {0xCA: False, 0x35: True}
MULTIPLE = {0xC4, 0x29, 0xC5, 0x39}


class Guest:
    def __init__(self, initial):
        self.io, mmio = IoSpace(), MmioSpace()
        self.ram = bytearray(RAM)
        self.memory = GuestMemory(self.ram)
        bus = PciBus(self.io, mmio, memory=self.memory)
        self.backend = MemoryBackend(bytearray(initial))
        ctx = devices.DeviceContext(isa_irq=lambda irq, name: IrqLine(name=name), clock=None,
                                    io=self.io, mmio=mmio)
        self.ide = devices.create("piix3-ide", ctx, drives={(0, 0): {"backend": self.backend}})
        bus.plug(self.ide, 2)
        for reg, size, value in ((0x20, 4, BMIBA | 1), (0x04, 2, 0x0005)):
            self.io.write(0xCF8, 4, 0x80000000 | 2 << 11 | reg)
            self.io.write(0xCFC, size, value)

    def out(self, port, value, size=1):
        self.io.write(port, size, value)

    def inb(self, port):
        return self.io.read(port, 1)

    def issue(self, command, lba, count, lba48):
        if lba48:
            for reg, value in ((2, count), (3, lba), (4, lba >> 8), (5, lba >> 16)):
                self.out(BASE + reg, value >> 8 if reg == 2 else (lba >> (24 + 8 * (reg - 3))) & 0xFF)
                self.out(BASE + reg, value & 0xFF)
            self.out(BASE + 6, 0xE0)
        else:
            self.out(BASE + 2, count & 0xFF)
            self.out(BASE + 3, lba & 0xFF)
            self.out(BASE + 4, lba >> 8 & 0xFF)
            self.out(BASE + 5, lba >> 16 & 0xFF)
            self.out(BASE + 6, 0xE0 | (lba >> 24 & 0x0F))
        self.out(BASE + 7, command)

    def settle(self):
        """Whatever happened, the device shows a status the guest can act on."""
        status = self.inb(BASE + 7)
        assert not status & BSY
        return status


def in_range(lba, count):
    return lba + count <= SECTORS


ops = st.one_of(
    st.tuples(st.just("pio_read"), st.sampled_from(sorted(PIO_READ)), st.integers(0, SECTORS + 4),
              st.integers(1, 9)),
    st.tuples(st.just("pio_write"), st.sampled_from(sorted(PIO_WRITE)), st.integers(0, SECTORS + 4),
              st.integers(1, 9), st.integers(0, 255), st.booleans()),
    st.tuples(st.just("dma_read"), st.sampled_from(sorted(DMA_READ)), st.integers(0, SECTORS + 4),
              st.integers(1, 9), st.lists(st.integers(1, 16), min_size=1, max_size=4)),
    st.tuples(st.just("dma_write"), st.sampled_from(sorted(DMA_WRITE)), st.integers(0, SECTORS + 4),
              st.integers(1, 9), st.integers(0, 255), st.lists(st.integers(1, 16), min_size=1, max_size=4)),
    st.tuples(st.just("multiple"), st.sampled_from([0, 1, 2, 4, 8, 3])),
    # Garbage goes to every task-file register but the command register: a
    # random command (SET MULTIPLE MODE, INITIALIZE DEVICE PARAMETERS...) changes
    # device state the model does not follow, and commands are the other ops' job.
    st.tuples(st.just("garbage"), st.lists(st.tuples(st.integers(1, 6), st.integers(0, 255)),
                                           min_size=1, max_size=6)),
)


def prd_split(total, parts):
    """PRD entries (even byte counts, last EOT) covering exactly ``total`` bytes."""
    weights = [p * 2 for p in parts]
    sizes, left = [], total
    for i, w in enumerate(weights):
        n = left if i == len(weights) - 1 else min(left, max(2, total * w // (sum(weights) or 1)) & ~1)
        sizes.append(n)
        left -= n
    sizes = [n for n in sizes if n] or [total]
    entries, address = [], BUFFER
    for i, n in enumerate(sizes):
        entries.append((address, n, i == len(sizes) - 1))
        address += n + 0x100
    return entries


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.lists(ops, max_size=12))
def test_random_commands_against_a_model(seed, sequence):
    initial = random.Random(seed).randbytes(SECTORS * SECTOR)
    g = Guest(initial)
    model = bytearray(initial)
    multiple = 128
    for op in sequence:
        kind = op[0]
        if kind == "multiple":
            g.out(BASE + 2, op[1])
            g.out(BASE + 7, 0xC6)
            status = g.settle()
            if op[1] & (op[1] - 1):
                assert status & ERR and g.inb(BASE + 1) == ABRT
            else:
                assert not status & ERR
                multiple = op[1]
            continue
        if kind == "garbage":
            # Random register writes, then a soft reset: the device recovers.
            for reg, value in op[1]:
                g.out(BASE + reg, value)
                g.out(BASE + 0, value * 257, size=2)
            g.out(CTL, 0x04)
            g.out(CTL, 0x00)
            g.out(BASE + 6, 0xA0)          # the reset keeps DEV; select device 0 again
            assert g.settle() == DRDY | 0x10
            continue
        command, lba, count = op[1], op[2], op[3]
        lba48 = {**PIO_READ, **PIO_WRITE, **DMA_READ, **DMA_WRITE}[command]
        before = bytes(g.backend.data)
        nbytes = count * SECTOR
        if command in MULTIPLE and multiple == 0:
            g.issue(command, lba, count, lba48)
            status = g.settle()
            assert status & ERR and g.inb(BASE + 1) == ABRT
            continue
        if kind in ("dma_read", "dma_write"):
            parts = op[4] if kind == "dma_read" else op[5]
            entries = prd_split(nbytes, parts)
            for i, (address, n, eot) in enumerate(entries):
                g.memory.write_u32(PRD_TABLE + 8 * i, address)
                g.memory.write_u32(PRD_TABLE + 8 * i + 4, n | (0x80000000 if eot else 0))
                if kind == "dma_write":
                    g.ram[address:address + n] = bytes([op[4]]) * n
            g.out(BMIBA + 2, 0x06)
            g.out(BMIBA + 4, PRD_TABLE, size=4)
            g.issue(command, lba, count, lba48)
            g.out(BMIBA, 0x09 if kind == "dma_read" else 0x01)
            bm = g.inb(BMIBA + 2)
            g.out(BMIBA, 0x00)
            status = g.settle()
            if not in_range(lba, count):
                assert status & ERR and g.inb(BASE + 1) == IDNF
                assert bytes(g.backend.data) == before
                continue
            assert status == DRDY | 0x10 and bm == 0x04
            if kind == "dma_read":
                got = b"".join(bytes(g.ram[a:a + n]) for a, n, _ in entries)
                assert got == model[lba * SECTOR:lba * SECTOR + nbytes]
            else:
                model[lba * SECTOR:lba * SECTOR + nbytes] = bytes([op[4]]) * nbytes
            continue
        g.issue(command, lba, count, lba48)
        if not in_range(lba, count):
            status = g.settle()
            assert status & ERR and g.inb(BASE + 1) == IDNF
            assert bytes(g.backend.data) == before
            continue
        if kind == "pio_read":
            got = bytearray()
            while g.inb(CTL) & DRQ:
                got += g.io.read(BASE, 2).to_bytes(2, "little")
            assert got == model[lba * SECTOR:lba * SECTOR + nbytes]
        else:
            data = bytes([op[4]]) * nbytes
            width = 4 if op[5] else 2
            pos = 0
            while g.inb(CTL) & DRQ:
                g.out(BASE, int.from_bytes(data[pos:pos + width], "little"), size=width)
                pos += width
            assert pos == nbytes
            model[lba * SECTOR:lba * SECTOR + nbytes] = data
        assert g.settle() == DRDY | 0x10
    assert bytes(g.backend.data) == bytes(model)

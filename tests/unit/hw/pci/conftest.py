"""Test bench for the PCI plumbing.

``pci`` builds a bus on fresh address spaces and 1 MiB of guest RAM,
records MSI writes and reset requests, and offers configuration accesses
through the real ports (mechanism #1: CONFIG_ADDRESS at 0xCF8, CONFIG_DATA
at 0xCFC).  ``Probe`` is a tiny PCI function that records what reaches it.
Offsets and values in the tests are the spec's, written out as numbers.
"""

import pytest

from drivebay.hw.dma import GuestMemory
from drivebay.hw.memory import IoSpace, MmioSpace
from drivebay.hw.pci.bus import PciBus
from drivebay.hw.pci.device import BarKind, PciBar, PciDevice, PciIdentity

RAM_SIZE = 1 << 20

PROBE_ID = PciIdentity(vendor_id=0x1234, device_id=0x5678, class_code=0x010601, revision=0x07,
                       subsystem_vendor_id=0xABCD, subsystem_id=0xEF01, interrupt_pin=1)
PROBE_BARS = (
    PciBar(0, 0x40, BarKind.IO),
    PciBar(1, 0x1000, BarKind.MEM32),
    PciBar(2, 0x4000, BarKind.MEM64, prefetchable=True),
    PciBar(5, 0x100000, BarKind.MEM32, prefetchable=True),
)


class Probe(PciDevice):
    """Answers BAR reads with ``0xB0000000 | bar << 16 | offset`` and records everything."""

    def __init__(self, identity=PROBE_ID, bars=PROBE_BARS, name="probe", **kwargs):
        super().__init__(identity, bars, name=name, **kwargs)
        self.accesses = []
        self.config_writes = []
        self.resets = 0

    def bar_read(self, bar, offset, size):
        self.accesses.append(("read", bar, offset, size))
        return (0xB0000000 | bar << 16 | offset) & ((1 << (8 * size)) - 1)

    def bar_write(self, bar, offset, size, value):
        self.accesses.append(("write", bar, offset, size, value))

    def config_written(self, offset, size, old, new):
        self.config_writes.append((offset, size, old, new))

    def reset(self):
        self.resets += 1


class Bench:
    def __init__(self):
        self.io = IoSpace()
        self.mmio = MmioSpace()
        self.ram = bytearray(RAM_SIZE)
        self.memory = GuestMemory(self.ram)
        self.msis = []
        self.resets = []
        self.mmio_events = []
        self.mmio.listeners.append(lambda event, region: self.mmio_events.append((event, region.base, region.size)))
        self.bus = PciBus(self.io, self.mmio, msi_sink=lambda a, d: self.msis.append((a, d)),
                          reset_request=self.resets.append, memory=self.memory)

    # Configuration mechanism #1 through the ports.
    @staticmethod
    def address(slot, function, register, bus=0):
        return 0x80000000 | bus << 16 | slot << 11 | function << 8 | (register & 0xFC)

    def cfg_read(self, slot, function, register, size=4):
        self.io.write(0xCF8, 4, self.address(slot, function, register))
        return self.io.read(0xCFC + (register & 3), size)

    def cfg_write(self, slot, function, register, size, value):
        self.io.write(0xCF8, 4, self.address(slot, function, register))
        self.io.write(0xCFC + (register & 3), size, value)

    def plug_probe(self, slot=3, function=0, **kwargs):
        return self.bus.plug(Probe(**kwargs), slot, function)


@pytest.fixture
def pci():
    return Bench()

"""Address spaces: where port I/O and MMIO accesses are routed.

A Region is a window of ``size`` bytes owned by one device, with read/write
callables taking the offset inside the window.  ``IoSpace`` covers the 64 KiB
x86 port space; ``MmioSpace`` covers physical addresses outside RAM (PCI
BARs, the local APIC, ROMs are mapped by the machine).  The machine listens
to MmioSpace changes to map windows into its CPU; PCI BAR moves add and
remove regions here.

Accesses to nothing read all ones and drop writes, as on a PC bus.  Each
region may name its registers (``names``: offset -> name, or a callable
``(offset, size) -> str``) so the trace shows ``ahci.PxCMD`` rather than a
number.
"""

from drivebay import trace

IO_SPACE_SIZE = 0x10000


class Region:
    """A device's window.  ``read_repeat``/``write_repeat`` (optional) serve a
    REP INS/OUTS in one call: ``read_repeat(offset, size, count) -> bytes``
    returns what up to ``count`` consecutive single reads would (fewer when
    the device runs out of data), ``write_repeat(offset, size, data) ->
    units`` takes what up to len(data)/size single writes would and says how
    many it took.  A data port moving a sector a word at a time is the case
    they exist for."""

    __slots__ = ("name", "base", "size", "read", "write", "names", "read_repeat", "write_repeat")

    def __init__(self, name, base, size, read, write, names=None, read_repeat=None,
                 write_repeat=None):
        self.name = name
        self.base = base
        self.size = size
        self.read = read
        self.write = write
        self.names = names
        self.read_repeat = read_repeat
        self.write_repeat = write_repeat

    def describe(self, offset, size):
        names = self.names
        if names is None:
            return f"{self.name}+{offset:#x}"
        if callable(names):
            label = names(offset, size)
        else:
            label = names.get(offset)
        return f"{self.name}.{label}" if label else f"{self.name}+{offset:#x}"

    def overlaps(self, base, size):
        return base < self.base + self.size and self.base < base + size

    def __repr__(self):
        return f"Region({self.name!r}, {self.base:#x}, {self.size:#x})"


def _ones(size):
    return (1 << (8 * size)) - 1


class IoSpace:
    """The x86 I/O port space; lookup is one list index per access."""

    def __init__(self):
        self._by_port = [None] * IO_SPACE_SIZE
        self.regions = []

    def add(self, name, base, size, read, write, names=None, read_repeat=None, write_repeat=None):
        if base < 0 or size <= 0 or base + size > IO_SPACE_SIZE:
            raise ValueError(f"I/O region {name} {base:#x}+{size:#x} outside port space")
        for r in self.regions:
            if r.overlaps(base, size):
                raise ValueError(f"I/O region {name} at {base:#x} overlaps {r.name} at {r.base:#x}")
        region = Region(name, base, size, read, write, names, read_repeat, write_repeat)
        self.regions.append(region)
        for port in range(base, base + size):
            self._by_port[port] = region
        return region

    def remove(self, region):
        self.regions.remove(region)
        for port in range(region.base, region.base + region.size):
            self._by_port[port] = None

    def find(self, port):
        return self._by_port[port & 0xFFFF]

    def read(self, port, size):
        region = self._by_port[port & 0xFFFF]
        if region is None:
            value = _ones(size)
            if trace.on.pio:
                trace.emit("pio", f"in{'bwl'[size >> 1]}  {port:#06x} (unassigned) -> {value:#x}")
            return value
        value = region.read(port - region.base, size) & _ones(size)
        if trace.on.pio:
            trace.emit("pio", f"in{'bwl'[size >> 1]}  {port:#06x} {region.describe(port - region.base, size)} -> {value:#x}")
        return value

    def read_repeat(self, region, port, size, count):
        """A REP INS served by the region in one call (see Region)."""
        data = region.read_repeat(port - region.base, size, count)
        if trace.on.pio:
            trace.emit("pio", f"rep in{'bwl'[size >> 1]} {port:#06x} "
                              f"{region.describe(port - region.base, size)} x{len(data) // size}")
        return data

    def write_repeat(self, region, port, size, data):
        """A REP OUTS served by the region in one call (see Region)."""
        units = region.write_repeat(port - region.base, size, data)
        if trace.on.pio:
            trace.emit("pio", f"rep out{'bwl'[size >> 1]} {port:#06x} "
                              f"{region.describe(port - region.base, size)} x{units}")
        return units

    def write(self, port, size, value):
        region = self._by_port[port & 0xFFFF]
        if trace.on.pio:
            where = region.describe(port - region.base, size) if region else "(unassigned)"
            trace.emit("pio", f"out{'bwl'[size >> 1]} {port:#06x} {where} <- {value:#x}")
        if region is not None:
            region.write(port - region.base, size, value & _ones(size))


class MmioSpace:
    """Physical-address windows served by devices.

    Listeners are called as ``listener(event, region)`` with event ``"add"``
    or ``"remove"`` so the CPU side can map or unmap the window.
    """

    def __init__(self):
        self.regions = []
        self.listeners = []

    def add(self, name, base, size, read, write, names=None):
        if base < 0 or size <= 0 or base + size > 1 << 32:
            raise ValueError(f"MMIO region {name} {base:#x}+{size:#x} outside 4 GiB")
        for r in self.regions:
            if r.overlaps(base, size):
                raise ValueError(f"MMIO region {name} at {base:#x} overlaps {r.name} at {r.base:#x}")
        region = Region(name, base, size, read, write, names)
        self.regions.append(region)
        for listener in self.listeners:
            listener("add", region)
        return region

    def remove(self, region):
        self.regions.remove(region)
        for listener in self.listeners:
            listener("remove", region)

    def find(self, address):
        for r in self.regions:
            if r.base <= address < r.base + r.size:
                return r
        return None

    def read(self, address, size):
        region = self.find(address)
        if region is None:
            return _ones(size)
        value = region.read(address - region.base, size) & _ones(size)
        if trace.on.mmio:
            trace.emit("mmio", f"read{size * 8}  {address:#010x} {region.describe(address - region.base, size)} -> {value:#x}")
        return value

    def write(self, address, size, value):
        region = self.find(address)
        if trace.on.mmio:
            where = region.describe(address - region.base, size) if region else "(unassigned)"
            trace.emit("mmio", f"write{size * 8} {address:#010x} {where} <- {value:#x}")
        if region is not None:
            region.write(address - region.base, size, value & _ones(size))

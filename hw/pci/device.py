"""A PCI function: identity, BARs, INTx, bus mastering, MSI and MSI-X.

Modelled (PCI Local Bus Specification 3.0):

* identity declared as data (§6.2.1): ``PciIdentity`` rows, one per chip
  variant; BARs declared as data (§6.2.5.1): ``PciBar(index, size, kind,
  prefetchable)``.  Writing all ones to a BAR reads back the size mask with
  the type bits, as firmware sizing expects.
* BAR decoding: a BAR is mapped into the bus's IoSpace or MmioSpace while
  COMMAND enables its space (§6.2.2: I/O Space bit 0, Memory Space bit 1)
  and its address is usable; moving it or toggling the enable remaps.  A
  BAR at 0, an all-ones value being sized, a memory BAR above 4 GiB or in
  guest RAM, or a window that collides with an existing region is left
  unmapped and traced — never an exception out of a config write.
* the Expansion ROM BAR at 0x30 (§6.2.5.2) when a ROM image is declared.
* INTx (§6.2.2 Interrupt Disable bit 10, §6.2.3 Interrupt Status bit 3;
  §2.2.6 INTx# are level-sensitive, shared, wired-OR on the board).
* bus mastering: ``self.dma`` is guest memory seen through COMMAND.BUS_MASTER
  (bit 2); a master abort (nothing claims the address) sets STATUS.RECEIVED
  _MASTER_ABORT (bit 13).
* MSI (§6.8.1, msi.py) and MSI-X (§6.8.2, msix.py); while either is enabled
  the function does not drive INTx (§6.8.1.3, §6.8.2.3).

A controller subclasses PciDevice and implements ``bar_read``/``bar_write``
and, if it needs them, ``config_written``, ``reset`` and ``plugged``.

Not modelled: type-1 headers, PCIe capabilities and FLR, power management
states, I/O BARs above 64 KiB or memory BARs above 4 GiB being reachable.
"""

import enum
from dataclasses import dataclass
from functools import partial

from drivebay import trace
from drivebay.hw.dma import DmaError
from drivebay.hw.memory import IO_SPACE_SIZE
from drivebay.hw.pci import config as cfgmod
from drivebay.hw.pci.config import (
    BAR_REGISTERS, CMD_BUS_MASTER, CMD_INTERRUPT_DISABLE, CMD_IO_SPACE, CMD_MEMORY_SPACE, COMMAND,
    HEADER_MULTI_FUNCTION, ROM_ADDRESS, ROM_BASE_MASK, ROM_ENABLE, STATUS, STS_INTERRUPT_STATUS,
    STS_RECEIVED_MASTER_ABORT, ConfigSpace,
)
from drivebay.hw.pci.msi import MsiCapability
from drivebay.hw.pci.msix import MsixCapability

# MmioSpace covers the 32-bit physical address space.
MMIO_LIMIT = 1 << 32
# §6.2.5.2: the Expansion ROM BAR decodes address bits 31:11, so 2 KiB is the
# smallest ROM window.
MIN_ROM_SIZE = 0x800
ROM_SLOT = 6                     # index of the ROM window in the mapping arrays
BAR_NAMES = ("BAR0", "BAR1", "BAR2", "BAR3", "BAR4", "BAR5", "ROM")
_BARS_START = BAR_REGISTERS[0].offset
_BARS_LENGTH = BAR_REGISTERS[-1].offset + BAR_REGISTERS[-1].width - _BARS_START
assert STS_INTERRUPT_STATUS < 0x100, "set_irq writes STATUS's low byte"


class BarKind(enum.Enum):
    IO = "io"
    MEM32 = "mem32"
    MEM64 = "mem64"


@dataclass(frozen=True)
class PciBar:
    """One Base Address Register as the chip implements it (§6.2.5.1).

    ``size`` is a power of two: at least 4 bytes for I/O, 16 bytes for
    memory (the low bits hold the type).  A 64-bit BAR uses slots
    ``index`` and ``index + 1``.
    """

    index: int
    size: int
    kind: BarKind
    prefetchable: bool = False

    def __post_init__(self):
        last = 4 if self.kind is BarKind.MEM64 else 5
        if not 0 <= self.index <= last:
            raise ValueError(f"BAR index {self.index} out of range for {self.kind.value}")
        if self.size <= 0 or self.size & (self.size - 1):
            raise ValueError(f"BAR{self.index} size {self.size:#x} is not a power of two")
        minimum = 4 if self.kind is BarKind.IO else 16
        maximum = IO_SPACE_SIZE if self.kind is BarKind.IO else (
            1 << 31 if self.kind is BarKind.MEM32 else 1 << 63)
        if not minimum <= self.size <= maximum:
            raise ValueError(f"BAR{self.index} size {self.size:#x} outside {minimum:#x}..{maximum:#x}")
        if self.kind is BarKind.IO and self.prefetchable:
            raise ValueError(f"BAR{self.index}: an I/O BAR cannot be prefetchable")

    @property
    def is_io(self):
        return self.kind is BarKind.IO

    @property
    def type_bits(self):
        """The read-only low bits: §6.2.5.1, Figures 6-5 (I/O) and 6-4 (memory)."""
        if self.kind is BarKind.IO:
            return 0x1                                  # bit 0: I/O space indicator
        bits = 0x4 if self.kind is BarKind.MEM64 else 0x0   # bits 2:1: 10b = 64-bit
        return bits | (0x8 if self.prefetchable else 0)     # bit 3: prefetchable

    @property
    def low_bits(self):
        return 0x3 if self.kind is BarKind.IO else 0xF

    @property
    def width(self):
        return 8 if self.kind is BarKind.MEM64 else 4

    @property
    def address_mask(self):
        """Writable address bits of the (4- or 8-byte) BAR."""
        return ~(self.size - 1) & ((1 << (8 * self.width)) - 1) & ~self.low_bits


@dataclass(frozen=True)
class PciIdentity:
    """What a function tells enumeration (§6.2.1); one row per chip variant.

    ``class_code`` is the 24-bit Class Code: base class << 16 | sub-class << 8
    | programming interface.  ``interrupt_pin`` is the Interrupt Pin register:
    0 none, 1..4 INTA#..INTD#.
    """

    vendor_id: int
    device_id: int
    class_code: int
    revision: int = 0
    subsystem_vendor_id: int = 0
    subsystem_id: int = 0
    multifunction: bool = False
    interrupt_pin: int = 0

    def __post_init__(self):
        for name, bits in (("vendor_id", 16), ("device_id", 16), ("class_code", 24), ("revision", 8),
                           ("subsystem_vendor_id", 16), ("subsystem_id", 16)):
            value = getattr(self, name)
            if not 0 <= value < 1 << bits:
                raise ValueError(f"{name} {value:#x} does not fit {bits} bits")
        # §6.2.1: vendor ID FFFFh is what an absent function reads as.
        if self.vendor_id == 0xFFFF:
            raise ValueError("vendor_id 0xffff is reserved for 'no function'")
        if not 0 <= self.interrupt_pin <= 4:
            raise ValueError(f"interrupt_pin {self.interrupt_pin} outside 0..4")


class BusMasterDisabledError(DmaError):
    """The function tried to master the bus with COMMAND.BUS_MASTER clear."""

    def __init__(self, device, address, length):
        Exception.__init__(self, f"{device}: DMA of {length} bytes at {address:#x} "
                                 f"with bus mastering disabled (COMMAND bit 2)")
        self.address = address
        self.length = length


class BusMasterDma:
    """Guest memory as one function sees it when it masters the bus.

    The GuestMemory interface, gated by COMMAND.BUS_MASTER: with it clear
    every access raises BusMasterDisabledError (a DmaError), so a controller
    answers with the status its hardware reports for a failed transfer.  An
    access outside RAM is a master abort: STATUS.RECEIVED_MASTER_ABORT is set
    and the DmaError propagates.
    """

    __slots__ = ("_device",)

    def __init__(self, device):
        self._device = device

    def _memory(self, address, length):
        device = self._device
        # COMMAND's low byte, read straight from config space: this runs on
        # every DMA access, and the bit lives in the byte (CMD_BUS_MASTER = 4).
        if not device.config.data[COMMAND.offset] & CMD_BUS_MASTER:
            trace.guest_error(device.label, f"DMA {length} bytes at {address:#x} with bus mastering off")
            raise BusMasterDisabledError(device.label, address, length)
        memory = device.bus.memory if device.bus is not None else None
        if memory is None:
            device.master_abort()
            raise DmaError(address, length)
        return memory

    def _do(self, method, address, length, *args):
        memory = self._memory(address, length)
        try:
            return getattr(memory, method)(*args)
        except DmaError:
            self._device.master_abort()
            raise

    @property
    def size(self):
        bus = self._device.bus
        return bus.memory.size if bus is not None and bus.memory is not None else 0

    def view(self, address, length):
        return self._do("view", address, length, address, length)

    def read(self, address, length):
        return self._do("read", address, length, address, length)

    def write(self, address, data):
        return self._do("write", address, len(data), address, data)

    def read_u8(self, address):
        return self._do("read_u8", address, 1, address)

    def read_u16(self, address):
        return self._do("read_u16", address, 2, address)

    def read_u32(self, address):
        return self._do("read_u32", address, 4, address)

    def read_u64(self, address):
        return self._do("read_u64", address, 8, address)

    def write_u16(self, address, value):
        return self._do("write_u16", address, 2, address, value)

    def write_u32(self, address, value):
        return self._do("write_u32", address, 4, address, value)

    def write_u64(self, address, value):
        return self._do("write_u64", address, 8, address, value)

    def sg_views(self, segments):
        segments = list(segments)
        first = segments[0][0] if segments else 0
        total = sum(n for _, n in segments)
        return self._do("sg_views", first, total, segments)


def _overlaps(offset, size, start, length):
    return offset < start + length and start < offset + size


def _next_power_of_two(n):
    return 1 << max(0, (n - 1).bit_length())


class PciDevice:
    """One PCI function.  Subclasses implement the hooks at the bottom."""

    def __init__(self, identity, bars=(), name=None, rom=None):
        self.identity = identity
        self.name = name or f"pci-{identity.vendor_id:04x}-{identity.device_id:04x}"
        self.bars = {}                      # index -> PciBar (a 64-bit BAR also uses index + 1)
        used = {}
        for bar in bars:
            slots = (bar.index, bar.index + 1) if bar.kind is BarKind.MEM64 else (bar.index,)
            for s in slots:
                if s in used:
                    raise ValueError(f"{self.name}: BAR{bar.index} overlaps BAR{used[s]}")
                used[s] = bar.index
            self.bars[bar.index] = bar
        self.rom = bytes(rom) if rom else None
        self.rom_size = max(MIN_ROM_SIZE, _next_power_of_two(len(self.rom))) if self.rom else 0

        self.config = ConfigSpace()
        self._init_header()

        self.bus = None
        self.slot = None
        self.function = None
        self.msi = None
        self.msix = None
        self.dma = BusMasterDma(self)
        self._regions = [None] * 7          # mapped Region per BAR slot (6 = ROM)
        self._unmapped_why = [None] * 7     # last reason a wanted window was not mapped
        self._intx_level = False            # what the device asks for (STATUS bit 3)
        self._intx_out = False              # what it drives on its INTx# pin

    def _init_header(self):
        c, ident = self.config, self.identity
        c.init(cfgmod.VENDOR_ID.offset, 2, ident.vendor_id)
        c.init(cfgmod.DEVICE_ID.offset, 2, ident.device_id)
        c.init(cfgmod.REVISION_ID.offset, 1, ident.revision)
        c.init(cfgmod.PROG_IF.offset, 3, ident.class_code)
        c.init(cfgmod.HEADER_TYPE.offset, 1, HEADER_MULTI_FUNCTION if ident.multifunction else 0)
        c.init(cfgmod.SUBSYSTEM_VENDOR_ID.offset, 2, ident.subsystem_vendor_id)
        c.init(cfgmod.SUBSYSTEM_ID.offset, 2, ident.subsystem_id)
        c.init(cfgmod.INTERRUPT_PIN.offset, 1, ident.interrupt_pin)
        for bar in self.bars.values():
            reg = BAR_REGISTERS[bar.index]
            c.init(reg.offset, bar.width, bar.type_bits)
            c.init_masks(reg.offset, bar.width, bar.address_mask)
        if self.rom:
            c.init_masks(ROM_ADDRESS.offset, 4, (ROM_BASE_MASK & ~(self.rom_size - 1)) | ROM_ENABLE)

    # -- identity and state -------------------------------------------------------

    @property
    def bdf(self):
        if self.bus is None:
            return "--:--.-"
        return f"00:{self.slot:02x}.{self.function}"

    @property
    def label(self):
        return f"{self.bdf} {self.name}"

    @property
    def command(self):
        return self.config.get(COMMAND.offset, 2)

    @property
    def bus_master_enabled(self):
        return bool(self.command & CMD_BUS_MASTER)

    def bar_address(self, index):
        """Where BAR ``index`` (6 = ROM) is mapped now, or None."""
        region = self._regions[index]
        return region.base if region is not None else None

    # -- configuration space ------------------------------------------------------

    def config_read(self, offset, size):
        value = self.config.read(offset, size)
        if trace.on.pci:
            trace.emit("pci", f"{self.label} {self.config.describe(offset, size)} -> {value:#0{2 + 2 * size}x}")
        return value

    def config_write(self, offset, size, value):
        c = self.config
        lo, hi = c.span(offset, size)
        before = bytes(c.data[lo:hi])
        c.guest_write(offset, size, value)
        after = bytes(c.data[lo:hi])
        if trace.on.pci:
            trace.emit("pci", f"{self.label} {c.describe(offset, size)} <- {value:#0{2 + 2 * size}x} "
                              f"({c.describe_change(lo, before, after)})")
        self._config_changed(offset, size)
        i = offset - lo
        old = int.from_bytes(before[i:i + size], "little")
        new = int.from_bytes(after[i:i + size], "little")
        self.config_written(offset, size, old, new)

    def _config_changed(self, offset, size):
        touches_command = _overlaps(offset, size, COMMAND.offset, COMMAND.width)
        if (touches_command or _overlaps(offset, size, _BARS_START, _BARS_LENGTH)
                or _overlaps(offset, size, ROM_ADDRESS.offset, ROM_ADDRESS.width)):
            self.update_mappings()
        touches_messages = False
        for cap in (self.msi, self.msix):
            if cap is not None and _overlaps(offset, size, cap.offset, cap.size):
                cap.config_written()
                touches_messages = True
        if touches_command or touches_messages:
            self._update_intx()

    # -- BAR decoding -------------------------------------------------------------

    def _bar_target(self, index):
        """(address, None) if window ``index`` should be decoded now, else (None, reason)."""
        c = self.config
        command = self.command
        if index == ROM_SLOT:
            if not self.rom:
                return None, None
            raw = c.get(ROM_ADDRESS.offset, 4)
            if not raw & ROM_ENABLE:
                return None, "ROM decoding off"
            if not command & CMD_MEMORY_SPACE:
                return None, "memory decoding off"
            address, size, limit = raw & ROM_BASE_MASK & ~(self.rom_size - 1), self.rom_size, MMIO_LIMIT
        else:
            bar = self.bars.get(index)
            if bar is None:
                return None, None
            reg = BAR_REGISTERS[index]
            raw = c.get(reg.offset, bar.width)
            address, size = raw & bar.address_mask, bar.size
            if bar.is_io:
                if not command & CMD_IO_SPACE:
                    return None, "I/O decoding off"
                limit = IO_SPACE_SIZE
            else:
                if not command & CMD_MEMORY_SPACE:
                    return None, "memory decoding off"
                limit = MMIO_LIMIT
        if address == 0:
            return None, "address 0 (unassigned)"
        if address + size > limit:
            where = "beyond the 64 KiB I/O space" if limit == IO_SPACE_SIZE else "above 4 GiB"
            return None, f"{address:#x}+{size:#x} {where}"
        if limit == MMIO_LIMIT:
            if address + size == MMIO_LIMIT:
                # The last window below 4 GiB is where a BAR written with all
                # ones lands while being sized; the BIOS ROM lives there too.
                return None, f"{address:#x}+{size:#x} ends at 4 GiB (all ones: being sized)"
            memory = self.bus.memory if self.bus is not None else None
            if memory is not None and address < memory.size:
                # i440FX: addresses below the top of DRAM go to DRAM, never to PCI.
                return None, f"{address:#x} is inside guest RAM ({memory.size:#x} bytes)"
        return address, None

    def update_mappings(self):
        """Bring every BAR window in line with COMMAND and the BAR values.

        Returns True if a window was removed (the bus then lets other
        functions retry a window that collided with it).
        """
        if self.bus is None:
            return False
        removed = False
        for index in range(7):
            address, why = self._bar_target(index)
            region = self._regions[index]
            if region is not None and region.base != address:
                self._space(index).remove(region)
                self._regions[index] = None
                removed = True
                if trace.on.pci:
                    trace.emit("pci", f"{self.label} {BAR_NAMES[index]} unmapped from {region.base:#x}")
            if address is not None and self._regions[index] is None:
                why = self._map(index, address)
                if why is not None and why != self._unmapped_why[index]:
                    trace.guest_error(self.label, f"{BAR_NAMES[index]} not mapped: {why}")
            if why != self._unmapped_why[index]:
                self._unmapped_why[index] = why
                if why is not None and trace.on.pci:
                    trace.emit("pci", f"{self.label} {BAR_NAMES[index]} not mapped: {why}")
        if removed:
            self.bus.retry_mappings(self)
        return removed

    def _space(self, index):
        return self.bus.io if index != ROM_SLOT and self.bars[index].is_io else self.bus.mmio

    def _map(self, index, address):
        """Add window ``index`` at ``address``; None on success, else why not."""
        if index == ROM_SLOT:
            size, kind = self.rom_size, "mem"
            read, write = self._rom_read, self._rom_write
        else:
            bar = self.bars[index]
            size, kind = bar.size, "io" if bar.is_io else "mem"
            read, write = partial(self._bar_region_read, index), partial(self._bar_region_write, index)
        try:
            region = self._space(index).add(f"{self.name}.{BAR_NAMES[index]}", address, size, read, write,
                                            names=self.bar_register_names(index))
        except ValueError as e:
            return str(e)
        self._regions[index] = region
        if trace.on.pci:
            trace.emit("pci", f"{self.label} {BAR_NAMES[index]} mapped at {kind} {address:#x}+{size:#x}")
        return None

    def _unmap_all(self):
        for index, region in enumerate(self._regions):
            if region is not None:
                self._space(index).remove(region)
                self._regions[index] = None
        self._unmapped_why = [None] * 7

    def _bar_region_read(self, index, offset, size):
        if self.msix is not None:
            value = self.msix.bar_read(index, offset, size)
            if value is not None:
                return value
        return self.bar_read(index, offset, size)

    def _bar_region_write(self, index, offset, size, value):
        if self.msix is not None and self.msix.bar_write(index, offset, size, value):
            return
        self.bar_write(index, offset, size, value)

    def _rom_read(self, offset, size):
        chunk = self.rom[offset:offset + size]
        return int.from_bytes(chunk.ljust(size, b"\0"), "little")

    def _rom_write(self, offset, size, value):
        trace.guest_error(self.label, f"write {value:#x} to expansion ROM +{offset:#x} ignored")

    # -- interrupts -------------------------------------------------------------------

    def _messages_enabled(self):
        return ((self.msi is not None and self.msi.enabled)
                or (self.msix is not None and self.msix.enabled))

    def set_irq(self, level):
        """Drive the function's interrupt request (INTx# semantics: a level).

        STATUS.INTERRUPT_STATUS follows the request; the pin is asserted only
        while COMMAND.INTERRUPT_DISABLE is clear (§6.2.2: "Setting the
        Interrupt Disable bit to 1 has no effect on the state of the
        Interrupt Status bit") and neither MSI nor MSI-X is enabled.
        """
        assert self.identity.interrupt_pin, f"{self.name} declares no INTx pin"
        level = bool(level)
        # STATUS.INTERRUPT_STATUS lives in STATUS's low byte.
        data = self.config.data
        status = data[STATUS.offset]
        if level:
            data[STATUS.offset] = status | STS_INTERRUPT_STATUS
        else:
            data[STATUS.offset] = status & ~STS_INTERRUPT_STATUS
        if level == self._intx_level:
            # The pin follows COMMAND and the message capabilities through
            # _config_changed; with the request unchanged nothing else can move it.
            return
        self._intx_level = level
        self._update_intx()

    def _update_intx(self):
        out = (self._intx_level and not self.command & CMD_INTERRUPT_DISABLE
               and not self._messages_enabled())
        if out == self._intx_out:
            return
        self._intx_out = out
        if trace.on.irq:
            pin = "ABCD"[self.identity.interrupt_pin - 1]
            trace.emit("irq", f"{self.label} INT{pin}# {'asserted' if out else 'deasserted'}")
        if self.bus is not None:
            self.bus.intx_changed(self, out)

    @property
    def intx_asserted(self):
        return self._intx_out

    def add_capability(self, cap_id, size, offset=None, registers=(), name=None):
        return self.config.add_capability(cap_id, size, offset, registers, name)

    def add_msi(self, vectors=1, is64=True, per_vector_mask=False, offset=None):
        assert self.msi is None, "one MSI capability per function"
        self.msi = MsiCapability(self, vectors, is64, per_vector_mask, offset)
        return self.msi.offset

    def add_msix(self, entries, table_bar, table_offset, pba_bar, pba_offset, offset=None):
        assert self.msix is None, "one MSI-X capability per function"
        self.msix = MsixCapability(self, entries, table_bar, table_offset, pba_bar, pba_offset, offset)
        return self.msix.offset

    def msi_notify(self, vector=0):
        """Signal interrupt ``vector``: an MSI message if the guest enabled
        MSI, otherwise assert INTx (the device deasserts it with
        ``set_irq(False)`` when the guest acknowledges the cause)."""
        if self.msi is not None and self.msi.enabled:
            self.msi.notify(vector)
        elif self.identity.interrupt_pin:
            self.set_irq(True)
        elif trace.on.irq:
            trace.emit("irq", f"{self.label} vector {vector} dropped: MSI disabled and no INTx pin")

    def msix_notify(self, vector=0):
        """Signal interrupt ``vector``: through MSI-X if enabled, else as
        ``msi_notify`` (MSI, then INTx)."""
        if self.msix is not None and self.msix.enabled:
            self.msix.notify(vector)
        else:
            self.msi_notify(vector)

    def send_msi(self, address, data):
        """Issue one message write (called by the MSI/MSI-X capability)."""
        # An MSI is a memory write by the function: no bus mastering, no message.
        if not self.command & CMD_BUS_MASTER:
            trace.guest_error(self.label, f"MSI {address:#x} <- {data:#x} dropped: bus mastering off")
            return
        if trace.on.irq:
            trace.emit("irq", f"{self.label} MSI {address:#x} <- {data:#x}")
        if self.bus is not None:
            self.bus.deliver_msi(self, address, data)

    def master_abort(self):
        """Record a master abort on a DMA this function started (§6.2.3 bit 13)."""
        self.config.set_bits(STATUS, STS_RECEIVED_MASTER_ABORT, True)
        trace.guest_error(self.label, "DMA master abort (address not claimed)")

    # -- plugging and reset --------------------------------------------------------------

    def attach(self, bus, slot, function):
        """Called by PciBus.plug."""
        assert self.bus is None, f"{self.name} is already plugged"
        self.bus, self.slot, self.function = bus, slot, function
        self.plugged()

    def bus_reset(self):
        """PCI RST#: configuration space to power-on values, windows unmapped,
        INTx deasserted, MSI-X table reset, then the subclass's ``reset``."""
        if self.bus is not None:
            self._unmap_all()
        self.config.reset()
        if self.msix is not None:
            self.msix.reset()
        self._intx_level = False
        self._update_intx()
        self.reset()

    # -- hooks for controllers ----------------------------------------------------------

    def bar_read(self, bar, offset, size):
        """A read of ``size`` bytes at ``offset`` inside BAR ``bar``."""
        return (1 << (8 * size)) - 1

    def bar_write(self, bar, offset, size, value):
        """A write of ``size`` bytes at ``offset`` inside BAR ``bar``."""

    def bar_register_names(self, bar):
        """Names for the trace of BAR ``bar``: a dict offset -> name, a
        callable (offset, size) -> name, or None."""
        return None

    def config_written(self, offset, size, old, new):
        """After a guest configuration write (masks applied, BARs remapped);
        ``old``/``new`` are the accessed bytes before and after."""

    def reset(self):
        """Device-specific part of a reset (config space is already reset)."""

    def plugged(self):
        """Called once the function has a bus, slot and function number."""


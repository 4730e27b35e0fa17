"""PCI bus 0 of a PC: configuration mechanism #1, INTx wiring, MSI delivery.

Modelled:

* Configuration Mechanism #1 (PCI Local Bus 3.0 §3.2.2.3.2): CONFIG_ADDRESS
  at 0xCF8, latched only by a dword write ("anything other than a DWORD
  access to CONFIG_ADDRESS is passed through as a normal I/O transaction"),
  enable bit 31, bus/device/function/register fields; CONFIG_DATA at
  0xCFC-0xCFF in byte, word or dword accesses, the low port bits selecting
  the byte.  An absent function reads all ones and ignores writes (a master
  abort on a configuration read returns FFFFFFFFh, §6.1).  Only bus 0 exists.
* the PIIX3 Reset Control register RC at 0xCF9 (82371SB datasheet, "RC—Reset
  Control Register"): a byte access there is not configuration space.
  Writing RCPU (bit 2) requests a reset, hard when SRST (bit 1) is set.
* INTx wiring of the i440FX/PIIX3 board that SeaBIOS and QEMU assume
  (SeaBIOS src/fw/pciinit.c piix_pci_slot_get_irq, QEMU pci_slot_get_pirq):
  pin P (1 = INTA#) of the device in slot S drives PIRQ[(S - 1 + P - 1) mod 4],
  so slot 1 INTA# is PIRQA and slot 0 INTA# is PIRQD.  PIRQ lines are
  wired-OR (§2.2.6: "INTx# ... open drain ... shared"): a count of asserting
  functions per line, so one device lowering its pin does not lower another's.
  The PIRQ router (the PIIX3) registers itself with ``set_pirq_router``.
* MSI delivery: message writes go to ``msi_sink(address, data)``.

The machine wires the bus with its IoSpace and MmioSpace, guest RAM (what
bus masters see), the MSI sink (the local APIC) and ``reset_request(hard)``.
"""

from drivebay import trace
from drivebay.errors import ConfigError
from drivebay.hw.pci.config import Access, Field, Register

CONFIG_ADDRESS_PORT = 0xCF8
CONFIG_DATA_PORT = 0xCFC
MAX_SLOTS = 32          # §3.2.2.3.2: Device Number is 5 bits
MAX_FUNCTIONS = 8       # Function Number is 3 bits
PIRQ_COUNT = 4          # PIRQA#..PIRQD#

# §3.2.2.3.2, Figure 3-1.  Bits 30:24 are reserved and bits 1:0 read as 0.
CONFIG_ADDRESS = Register(0x0, 4, "CONFIG_ADDRESS", fields=(
    Field("REGISTER", 2, 6, Access.RW),
    Field("FUNCTION", 8, 3, Access.RW),
    Field("DEVICE", 11, 5, Access.RW),
    Field("BUS", 16, 8, Access.RW),
    Field("ENABLE", 31, 1, Access.RW),
))
# 82371SB datasheet, Reset Control register at I/O 0CF9h (reset value 00h).
RESET_CONTROL = Register(0x1, 1, "RC", fields=(
    Field("SRST", 1, 1, Access.RW),     # System Reset: 1 = hard reset, 0 = soft (INIT)
    Field("RCPU", 2, 1, Access.RW),     # Reset CPU: writing 1 starts the reset
))
CONFIG_DATA = Register(0x0, 4, "CONFIG_DATA", Access.RW)

ENABLE = CONFIG_ADDRESS.field("ENABLE")
BUS = CONFIG_ADDRESS.field("BUS")
DEVICE = CONFIG_ADDRESS.field("DEVICE")
FUNCTION = CONFIG_ADDRESS.field("FUNCTION")
REGISTER = CONFIG_ADDRESS.field("REGISTER")
RC_SRST = RESET_CONTROL.mask("SRST")
RC_RCPU = RESET_CONTROL.mask("RCPU")


def pirq_of(slot, pin):
    """The PIRQ (0 = PIRQA#) that pin ``pin`` (1 = INTA#) of slot ``slot`` drives."""
    return (slot - 1 + pin - 1) % PIRQ_COUNT


def _ones(size):
    return (1 << (8 * size)) - 1


class PciBus:
    def __init__(self, io, mmio, msi_sink=None, reset_request=None, memory=None):
        self.io = io
        self.mmio = mmio
        self.msi_sink = msi_sink
        self.reset_request = reset_request
        self.memory = memory
        self.functions = {}                       # (slot, function) -> PciDevice
        self.config_address = 0
        self.reset_control = 0
        self._pirq_count = [0] * PIRQ_COUNT
        self._pirq_router = None
        io.add("pci", CONFIG_ADDRESS_PORT, 4, self._address_read, self._address_write,
               names=self._address_name)
        io.add("pci", CONFIG_DATA_PORT, 4, self._data_read, self._data_write,
               names=self._data_name)

    # -- topology -----------------------------------------------------------------

    def plug(self, device, slot, function=0):
        """Put ``device`` at 00:slot.function."""
        if not (0 <= slot < MAX_SLOTS and 0 <= function < MAX_FUNCTIONS):
            raise ConfigError(f"PCI address 00:{slot:02x}.{function} is out of range")
        if (slot, function) in self.functions:
            raise ConfigError(f"PCI slot 00:{slot:02x}.{function} is taken by "
                              f"{self.functions[slot, function].name}")
        # §6.2.1 Header Type bit 7: only a multi-function device may have
        # functions other than 0, and enumeration looks past function 0 only
        # when function 0 says so.
        if function != 0:
            f0 = self.functions.get((slot, 0))
            if f0 is not None and not f0.identity.multifunction:
                raise ConfigError(f"{device.name} at 00:{slot:02x}.{function}: function 0 "
                                  f"({f0.name}) is not multi-function")
        elif not device.identity.multifunction and any(s == slot for s, _ in self.functions):
            raise ConfigError(f"{device.name} at 00:{slot:02x}.0 is single-function but the slot "
                              f"already has other functions")
        self.functions[slot, function] = device
        device.attach(self, slot, function)
        if trace.on.pci:
            trace.emit("pci", f"{device.label} plugged: {device.identity.vendor_id:04x}:"
                              f"{device.identity.device_id:04x} class {device.identity.class_code:06x}")
        return device

    def device_at(self, slot, function=0):
        return self.functions.get((slot, function))

    # -- configuration access ----------------------------------------------------------

    def config_read(self, slot, function, offset, size):
        device = self.functions.get((slot, function))
        if device is None:
            return _ones(size)
        return device.config_read(offset, size)

    def config_write(self, slot, function, offset, size, value):
        device = self.functions.get((slot, function))
        if device is not None:
            device.config_write(offset, size, value)

    def _address_name(self, offset, size):
        if offset == 0 and size == 4:
            return CONFIG_ADDRESS.name
        if offset == RESET_CONTROL.offset and size == 1:
            return RESET_CONTROL.name
        return None

    def _address_read(self, offset, size):
        if offset == 0 and size == 4:
            return self.config_address
        if offset == RESET_CONTROL.offset and size == 1:
            return self.reset_control
        return _ones(size)

    def _address_write(self, offset, size, value):
        if offset == 0 and size == 4:
            self.config_address = value & CONFIG_ADDRESS.wmask
        elif offset == RESET_CONTROL.offset and size == 1:
            self._reset_control_write(value)

    def _data_name(self, offset, size):
        """``CONFIG_DATA[00:03.0 COMMAND]``: the port and the register it reaches."""
        target = self._target()
        device = self.functions.get(target[:2]) if target else None
        if device is None:
            return f"{CONFIG_DATA.name}+{offset}" if offset else CONFIG_DATA.name
        register = target[2] + offset
        return f"{CONFIG_DATA.name}[{device.bdf} {device.config.describe(register, min(size, 4 - offset))}]"

    def _target(self):
        """(slot, function, register) addressed by CONFIG_ADDRESS, or None."""
        a = self.config_address
        if not a & ENABLE.mask or BUS.get(a) != 0:
            # Enable clear: CONFIG_DATA is a plain I/O port nobody claims.
            # Other bus numbers: no bridge forwards type-1 cycles, master abort.
            return None
        return DEVICE.get(a), FUNCTION.get(a), REGISTER.get(a) << 2

    def _data_read(self, offset, size):
        target = self._target()
        if target is None:
            return _ones(size)
        slot, function, register = target
        # An access running past 0xCFF only reaches config space for its
        # bytes inside the data port.
        inside = min(size, 4 - offset)
        value = self.config_read(slot, function, register + offset, inside)
        if inside < size:
            value |= _ones(size - inside) << (8 * inside)
        return value

    def _data_write(self, offset, size, value):
        target = self._target()
        if target is None:
            return
        slot, function, register = target
        inside = min(size, 4 - offset)
        self.config_write(slot, function, register + offset, inside, value & _ones(inside))

    # -- reset ---------------------------------------------------------------------------

    def _reset_control_write(self, value):
        # RCPU is not kept: the reset it starts returns RC to 00h, so only the
        # reset type (SRST) is ever read back.
        self.reset_control = value & RC_SRST
        if value & RC_RCPU:
            hard = bool(value & RC_SRST)
            if trace.on.pci:
                trace.emit("pci", f"RC <- {value:#04x}: {'hard' if hard else 'soft'} reset requested")
            if self.reset_request is not None:
                self.reset_request(hard)

    def reset(self):
        """PCI RST# to every function (the machine calls this on a reset)."""
        self.config_address = 0
        self.reset_control = 0
        for device in list(self.functions.values()):
            device.bus_reset()
        self.retry_mappings(None)

    # -- windows ---------------------------------------------------------------------------

    def retry_mappings(self, source):
        """A window went away: functions whose window collided may now map."""
        for device in list(self.functions.values()):
            if device is not source:
                device.update_mappings()

    # -- interrupts ------------------------------------------------------------------------

    def intx_changed(self, device, asserted):
        """A function's INTx# pin changed (called by PciDevice only on a change)."""
        pirq = pirq_of(device.slot, device.identity.interrupt_pin)
        before = self._pirq_count[pirq]
        after = before + (1 if asserted else -1)
        assert after >= 0, f"PIRQ{'ABCD'[pirq]} count went negative"
        self._pirq_count[pirq] = after
        if (before > 0) != (after > 0):
            if trace.on.irq:
                trace.emit("irq", f"PIRQ{'ABCD'[pirq]}# {'asserted' if after else 'deasserted'}")
            if self._pirq_router is not None:
                self._pirq_router(pirq, after > 0)

    def pirq_level(self, pirq):
        return self._pirq_count[pirq] > 0

    def set_pirq_router(self, router):
        """``router(pirq, level)`` receives every PIRQ line change; the current
        levels are replayed to it."""
        self._pirq_router = router
        for pirq in range(PIRQ_COUNT):
            if self._pirq_count[pirq]:
                router(pirq, True)

    def deliver_msi(self, device, address, data):
        if self.msi_sink is None:
            trace.guest_error(device.label, f"MSI {address:#x} <- {data:#x} dropped: no MSI sink")
            return
        self.msi_sink(address, data)

"""PCI configuration space of one type-0 function: bytes, write masks, names.

Modelled: the 256-byte configuration space of the PCI Local Bus
Specification, Revision 3.0 — the predefined type-0 header (§6.1
"Configuration Space Organization", §6.2 "Configuration Space Functions"),
device-specific registers (offsets 0x40-0xFF) and the capability list
(§6.7 "Capabilities List").

As in QEMU's PCIDevice (the config/wmask/w1cmask arrays of
include/hw/pci/pci_device.h) every byte carries a write mask and a
write-1-to-clear mask, applied generically on every guest write; device code
only reacts to the result.  The register tables are the one declaration of
each register's offset, width, name, reset value and access: the masks are
derived from them and the trace decoder reads them, so there is no second
list of names or masks anywhere.

Not modelled: the PCI Express extended space (0x100-0xFFF), type-1
(PCI-to-PCI bridge) and type-2 (CardBus) headers.
"""

import enum
from dataclasses import dataclass, replace

# PCI 3.0 §6.1: "each function ... 256 bytes of configuration space".
CONFIG_SPACE_SIZE = 0x100
# §6.1: the first 64 bytes are the predefined header; the rest is device specific.
HEADER_SIZE = 0x40
# §6.7: "the bottom two bits [of a capability pointer] are Reserved and must be
# set to 00b"; capabilities therefore start on dword boundaries.
CAPABILITY_ALIGN = 4


class Access(enum.Enum):
    RO = "ro"     # read-only (reserved bits are RO zero)
    RW = "rw"     # read/write
    W1C = "w1c"   # status bit, cleared by writing 1 (§6.2.3 "writes can only reset bits")


@dataclass(frozen=True)
class Field:
    """Bits ``lsb .. lsb + width - 1`` of a register."""

    name: str
    lsb: int
    width: int = 1
    access: Access = Access.RO

    @property
    def mask(self):
        return ((1 << self.width) - 1) << self.lsb

    def get(self, value):
        return (value & self.mask) >> self.lsb


@dataclass(frozen=True)
class Register:
    """One register: spec mnemonic, offset, width in bytes, reset value, access.

    A register with ``fields`` takes its masks from them; one without takes
    ``access`` for all its bits.
    """

    offset: int
    width: int
    name: str
    access: Access = Access.RO
    reset: int = 0
    fields: tuple = ()

    def _mask_of(self, access):
        if self.fields:
            mask = 0
            for f in self.fields:
                if f.access is access:
                    mask |= f.mask
            return mask
        return (1 << (8 * self.width)) - 1 if self.access is access else 0

    @property
    def wmask(self):
        return self._mask_of(Access.RW)

    @property
    def w1cmask(self):
        return self._mask_of(Access.W1C)

    def field(self, name):
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name}")

    def mask(self, name):
        return self.field(name).mask

    def variant(self, reset=None, rw=None):
        """A copy with another reset value and/or another set of RW fields.

        ``rw`` names the fields that are read/write in this chip; every other
        RO/RW field becomes read-only (W1C fields are kept).  Chips that
        implement fewer COMMAND bits than the generic header use this.
        """
        fields = self.fields
        if rw is not None:
            unknown = set(rw) - {f.name for f in fields}
            assert not unknown, f"{self.name} has no fields {unknown}"
            fields = tuple(
                f if f.access is Access.W1C
                else replace(f, access=Access.RW if f.name in rw else Access.RO)
                for f in fields)
        return replace(self, reset=self.reset if reset is None else reset, fields=fields)


def _bit(name, lsb, access=Access.RO, width=1):
    return Field(name, lsb, width, access)


RW, RO, W1C = Access.RW, Access.RO, Access.W1C

# PCI 3.0 §6.2.2, Figure 6-2 "Command Register Layout".  The RW set is what a
# simple target/master implements (QEMU's pci_init_wmask does the same);
# Special Cycles, MWI, VGA Palette Snoop and Fast Back-to-Back are optional
# and hardwired to 0 here.
COMMAND_FIELDS = (
    _bit("IO_SPACE", 0, RW),
    _bit("MEMORY_SPACE", 1, RW),
    _bit("BUS_MASTER", 2, RW),
    _bit("SPECIAL_CYCLES", 3),
    _bit("MWI_ENABLE", 4),
    _bit("VGA_PALETTE_SNOOP", 5),
    _bit("PARITY_ERROR_RESPONSE", 6, RW),
    _bit("SERR_ENABLE", 8, RW),
    _bit("FAST_B2B_ENABLE", 9),
    _bit("INTERRUPT_DISABLE", 10, RW),
)

# PCI 3.0 §6.2.3, Figure 6-3 "Status Register Layout".  Bit 3 (Interrupt
# Status) is driven by the device, bit 4 (Capabilities List) by the
# capability allocator; the error bits are "write 1 to clear".
STATUS_FIELDS = (
    _bit("INTERRUPT_STATUS", 3),
    _bit("CAPABILITIES_LIST", 4),
    _bit("CAPABLE_66MHZ", 5),
    _bit("FAST_B2B_CAPABLE", 7),
    _bit("MASTER_DATA_PARITY_ERROR", 8, W1C),
    _bit("DEVSEL_TIMING", 9, width=2),
    _bit("SIGNALED_TARGET_ABORT", 11, W1C),
    _bit("RECEIVED_TARGET_ABORT", 12, W1C),
    _bit("RECEIVED_MASTER_ABORT", 13, W1C),
    _bit("SIGNALED_SYSTEM_ERROR", 14, W1C),
    _bit("DETECTED_PARITY_ERROR", 15, W1C),
)

# The type-0 header, PCI 3.0 Figure 6-1.  BARs and the Expansion ROM BAR are
# read-only zero here ("unimplemented"); PciDevice gives the declared ones
# their masks.  Cache Line Size, Latency Timer and Interrupt Line are plain
# read/write storage (§6.2.4: "Interrupt Line ... read/write register used
# to communicate interrupt line routing information").
HEADER = (
    Register(0x00, 2, "VENDOR_ID"),
    Register(0x02, 2, "DEVICE_ID"),
    Register(0x04, 2, "COMMAND", fields=COMMAND_FIELDS),
    Register(0x06, 2, "STATUS", fields=STATUS_FIELDS),
    Register(0x08, 1, "REVISION_ID"),
    Register(0x09, 1, "PROG_IF"),
    Register(0x0A, 1, "SUBCLASS"),
    Register(0x0B, 1, "BASE_CLASS"),
    Register(0x0C, 1, "CACHE_LINE_SIZE", RW),
    Register(0x0D, 1, "LATENCY_TIMER", RW),
    Register(0x0E, 1, "HEADER_TYPE", fields=(_bit("LAYOUT", 0, width=7), _bit("MULTI_FUNCTION", 7))),
    Register(0x0F, 1, "BIST"),
    Register(0x10, 4, "BAR0"),
    Register(0x14, 4, "BAR1"),
    Register(0x18, 4, "BAR2"),
    Register(0x1C, 4, "BAR3"),
    Register(0x20, 4, "BAR4"),
    Register(0x24, 4, "BAR5"),
    Register(0x28, 4, "CARDBUS_CIS"),
    Register(0x2C, 2, "SUBSYSTEM_VENDOR_ID"),
    Register(0x2E, 2, "SUBSYSTEM_ID"),
    Register(0x30, 4, "ROM_ADDRESS", fields=(_bit("ROM_ENABLE", 0), _bit("ROM_BASE", 11, width=21))),
    Register(0x34, 1, "CAPABILITIES_POINTER"),
    Register(0x3C, 1, "INTERRUPT_LINE", RW),
    Register(0x3D, 1, "INTERRUPT_PIN"),
    Register(0x3E, 1, "MIN_GNT"),
    Register(0x3F, 1, "MAX_LAT"),
)
HEADER_BY_NAME = {r.name: r for r in HEADER}

VENDOR_ID = HEADER_BY_NAME["VENDOR_ID"]
DEVICE_ID = HEADER_BY_NAME["DEVICE_ID"]
COMMAND = HEADER_BY_NAME["COMMAND"]
STATUS = HEADER_BY_NAME["STATUS"]
REVISION_ID = HEADER_BY_NAME["REVISION_ID"]
PROG_IF = HEADER_BY_NAME["PROG_IF"]
HEADER_TYPE = HEADER_BY_NAME["HEADER_TYPE"]
SUBSYSTEM_VENDOR_ID = HEADER_BY_NAME["SUBSYSTEM_VENDOR_ID"]
SUBSYSTEM_ID = HEADER_BY_NAME["SUBSYSTEM_ID"]
ROM_ADDRESS = HEADER_BY_NAME["ROM_ADDRESS"]
CAPABILITIES_POINTER = HEADER_BY_NAME["CAPABILITIES_POINTER"]
INTERRUPT_LINE = HEADER_BY_NAME["INTERRUPT_LINE"]
INTERRUPT_PIN = HEADER_BY_NAME["INTERRUPT_PIN"]
BAR_REGISTERS = tuple(HEADER_BY_NAME[f"BAR{i}"] for i in range(6))

CMD_IO_SPACE = COMMAND.mask("IO_SPACE")
CMD_MEMORY_SPACE = COMMAND.mask("MEMORY_SPACE")
CMD_BUS_MASTER = COMMAND.mask("BUS_MASTER")
CMD_INTERRUPT_DISABLE = COMMAND.mask("INTERRUPT_DISABLE")
STS_INTERRUPT_STATUS = STATUS.mask("INTERRUPT_STATUS")
STS_CAPABILITIES_LIST = STATUS.mask("CAPABILITIES_LIST")
STS_RECEIVED_MASTER_ABORT = STATUS.mask("RECEIVED_MASTER_ABORT")
HEADER_MULTI_FUNCTION = HEADER_TYPE.mask("MULTI_FUNCTION")
ROM_ENABLE = ROM_ADDRESS.mask("ROM_ENABLE")
ROM_BASE_MASK = ROM_ADDRESS.mask("ROM_BASE")

# Every capability starts with these two bytes (§6.7, Figure 6-10).
CAP_HEADER = (
    Register(0x00, 1, "CAP_ID"),
    Register(0x01, 1, "NEXT_POINTER"),
)

# Capability IDs (PCI Code and ID Assignment Specification 1.x, §2): the
# names are the trace prefixes of each capability's registers.
CAP_NAMES = {
    0x01: "PM",
    0x05: "MSI",
    0x09: "VNDR",
    0x10: "EXP",
    0x11: "MSIX",
    0x12: "SATA",
    0x13: "AF",
}


@dataclass(frozen=True)
class Capability:
    cap_id: int
    offset: int
    size: int
    name: str


class ConfigSpace:
    """256 bytes with per-byte write and write-1-to-clear masks.

    ``data`` is what the guest reads.  Everything set up while the device is
    built (``declare``, ``init``, ``init_masks``, ``add_capability``) also
    goes into the power-on image that ``reset`` restores, masks included, so
    a chip that changes a mask at run time (a lock bit) gets it back on reset.
    """

    def __init__(self):
        self.data = bytearray(CONFIG_SPACE_SIZE)
        self.wmask = bytearray(CONFIG_SPACE_SIZE)
        self.w1cmask = bytearray(CONFIG_SPACE_SIZE)
        self._reset_data = bytearray(CONFIG_SPACE_SIZE)
        self._reset_wmask = bytearray(CONFIG_SPACE_SIZE)
        self._reset_w1cmask = bytearray(CONFIG_SPACE_SIZE)
        self._reg_at = [None] * CONFIG_SPACE_SIZE      # byte -> Register (absolute offset)
        self._claimed = bytearray(CONFIG_SPACE_SIZE)   # bytes owned by a register or capability
        self.capabilities = []
        self.declare(HEADER)

    # -- building (power-on image) ------------------------------------------

    def declare(self, registers, base=0, prefix=""):
        """Declare registers at ``base``: names, reset values and masks.

        Redeclaring a register at the same offset and width replaces it (a
        chip narrowing COMMAND); any other overlap is a bug.
        """
        for reg in registers:
            reg = replace(reg, offset=base + reg.offset, name=prefix + reg.name)
            start, end = reg.offset, reg.offset + reg.width
            assert 0 <= start and end <= CONFIG_SPACE_SIZE, f"{reg.name} outside config space"
            for a in range(start, end):
                old = self._reg_at[a]
                if old is not None and not (old.offset == start and old.width == reg.width):
                    raise ValueError(f"{reg.name} at {start:#04x} overlaps {old.name} at {old.offset:#04x}")
            for a in range(start, end):
                self._reg_at[a] = reg
                self._claimed[a] = 1
            self.init(start, reg.width, reg.reset)
            self.init_masks(start, reg.width, reg.wmask, reg.w1cmask)

    def init(self, offset, width, value):
        """Set a power-on value (live and in the reset image)."""
        raw = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        self.data[offset:offset + width] = raw
        self._reset_data[offset:offset + width] = raw

    def init_masks(self, offset, width, wmask, w1cmask=0):
        w = wmask.to_bytes(width, "little")
        c = w1cmask.to_bytes(width, "little")
        self.wmask[offset:offset + width] = w
        self._reset_wmask[offset:offset + width] = w
        self.w1cmask[offset:offset + width] = c
        self._reset_w1cmask[offset:offset + width] = c

    def add_capability(self, cap_id, size, offset=None, registers=(), name=None):
        """Allocate ``size`` bytes for a capability and link it into the list.

        The capability is appended to the list that starts at
        CAPABILITIES_POINTER (0x34) and STATUS.CAPABILITIES_LIST (bit 4) is
        set.  ``offset`` pins it where a chip has it; otherwise the first free
        dword-aligned space at or above 0x40 is used.  ``registers`` (offsets
        relative to the capability) are declared with the prefix ``NAME.``.
        Returns the offset.
        """
        if not 2 <= size <= CONFIG_SPACE_SIZE - HEADER_SIZE:
            raise ValueError(f"capability size {size} outside 2..{CONFIG_SPACE_SIZE - HEADER_SIZE}")
        if offset is None:
            offset = self._find_free(size)
            if offset is None:
                raise ValueError(f"no room for a {size}-byte capability {cap_id:#04x}")
        elif offset % CAPABILITY_ALIGN or offset < HEADER_SIZE or offset + size > CONFIG_SPACE_SIZE:
            raise ValueError(f"capability offset {offset:#04x} must be dword aligned in 0x40-0xff")
        elif any(self._claimed[offset:offset + size]):
            raise ValueError(f"capability at {offset:#04x}+{size} overlaps a declared register")
        name = name or CAP_NAMES.get(cap_id, f"CAP{cap_id:02X}")
        prefix = f"{name}."
        self.declare(CAP_HEADER, base=offset, prefix=prefix)
        self.declare(registers, base=offset, prefix=prefix)
        self._claimed[offset:offset + size] = b"\x01" * size
        self.init(offset, 1, cap_id)
        if self.capabilities:
            self.init(self.capabilities[-1].offset + 1, 1, offset)
        else:
            self.init(CAPABILITIES_POINTER.offset, 1, offset)
            status = self.get(STATUS.offset, 2) | STS_CAPABILITIES_LIST
            self.init(STATUS.offset, 2, status)
        cap = Capability(cap_id, offset, size, name)
        self.capabilities.append(cap)
        return offset

    def _find_free(self, size):
        for start in range(HEADER_SIZE, CONFIG_SPACE_SIZE - size + 1, CAPABILITY_ALIGN):
            if not any(self._claimed[start:start + size]):
                return start
        return None

    def find_capability(self, cap_id):
        for cap in self.capabilities:
            if cap.cap_id == cap_id:
                return cap.offset
        return None

    # -- run time -------------------------------------------------------------

    def read(self, offset, size):
        assert 0 <= offset and offset + size <= CONFIG_SPACE_SIZE
        return int.from_bytes(self.data[offset:offset + size], "little")

    get = read

    def set(self, offset, width, value):
        """Device-side update of live bytes (no masks, not the reset image)."""
        self.data[offset:offset + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")

    def set_bits(self, register, mask, on):
        value = self.get(register.offset, register.width)
        value = value | mask if on else value & ~mask
        self.set(register.offset, register.width, value)

    def guest_write(self, offset, size, value):
        """A configuration write: per byte, RW bits take the value, W1C bits
        written as 1 clear, everything else keeps its value."""
        assert 0 <= offset and offset + size <= CONFIG_SPACE_SIZE
        data, wmask, w1c = self.data, self.wmask, self.w1cmask
        for i in range(size):
            a = offset + i
            byte = (value >> (8 * i)) & 0xFF
            data[a] = ((data[a] & ~wmask[a]) | (byte & wmask[a])) & ~(byte & w1c[a]) & 0xFF

    def reset(self):
        self.data[:] = self._reset_data
        self.wmask[:] = self._reset_wmask
        self.w1cmask[:] = self._reset_w1cmask

    # -- trace decoding -------------------------------------------------------

    def registers_in(self, offset, size):
        regs = []
        for a in range(offset, offset + size):
            r = self._reg_at[a]
            if r is not None and (not regs or regs[-1] is not r):
                regs.append(r)
        return regs

    def span(self, offset, size):
        """The byte range covering the access and every register it touches."""
        lo, hi = offset, offset + size
        for r in self.registers_in(offset, size):
            lo = min(lo, r.offset)
            hi = max(hi, r.offset + r.width)
        return lo, hi

    def describe(self, offset, size):
        """``COMMAND``, ``COMMAND/STATUS``, ``BAR0+2`` or ``0x41`` for an access."""
        labels = []
        for r in self.registers_in(offset, size):
            covered = offset <= r.offset and r.offset + r.width <= offset + size
            labels.append(r.name if covered else f"{r.name}+{max(offset, r.offset) - r.offset}")
        return "/".join(labels) if labels else f"{offset:#04x}"

    def describe_change(self, lo, before, after):
        """``NAME old -> new +FIELD -FIELD`` for each register whose value changed."""
        parts = []
        seen = set()
        for a in range(lo, lo + len(before)):
            r = self._reg_at[a]
            if r is None or r.offset in seen:
                continue
            seen.add(r.offset)
            i = r.offset - lo
            old = int.from_bytes(before[i:i + r.width], "little")
            new = int.from_bytes(after[i:i + r.width], "little")
            if old != new:
                digits = 2 * r.width
                parts.append(f"{r.name} {old:#0{digits + 2}x} -> {new:#0{digits + 2}x}"
                             f"{_field_changes(r, old, new)}")
        return "; ".join(parts) if parts else "unchanged"


def _field_changes(reg, old, new):
    out = []
    for f in reg.fields:
        o, n = f.get(old), f.get(new)
        if o == n:
            continue
        if f.width == 1:
            out.append(f"{'+' if n else '-'}{f.name}")
        else:
            out.append(f"{f.name}={o:#x}->{n:#x}")
    return (" " + " ".join(out)) if out else ""

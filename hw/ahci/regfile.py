"""A block of 32-bit registers with the access masks of their declarations.

Like the wmask/w1cmask arrays beside PCI configuration space (hw/pci/
config.py), the masks come from the Register/Field declarations of
hw/ahci/regs.py and are applied on every guest write: RW bits take the
written value, RWC bits written as one clear, RW1 bits written as one set,
RO bits keep their value.  Accesses of 1, 2 or 4 bytes touch only their
bytes.  The device sets values directly (``set``/``bits``) and reacts to
what a guest write changed (``write`` returns the changes); the trace line
of a write names the register and the fields that changed, from the same
declarations.
"""

from drivebay import trace

_BYTE_ENABLES = {1: 0xFF, 2: 0xFFFF, 3: 0xFFFFFF, 4: 0xFFFFFFFF}


class RegisterFile:
    """Values of ``registers`` (a tuple of regs.Register), keyed by offset."""

    def __init__(self, registers, label):
        self.label = label
        self.registers = {r.offset: r for r in registers}
        self.values = {r.offset: r.reset for r in registers}

    def reset(self, overrides=None):
        for offset, reg in self.registers.items():
            self.values[offset] = reg.reset
        for reg, value in (overrides or {}).items():
            self.values[reg.offset] = value

    # -- device side ----------------------------------------------------------------

    def __getitem__(self, reg):
        return self.values[reg.offset]

    def __setitem__(self, reg, value):
        self.values[reg.offset] = value & 0xFFFFFFFF

    def bits(self, reg, mask, on):
        """Set (``on``) or clear the bits of ``mask``."""
        value = self.values[reg.offset]
        self.values[reg.offset] = (value | mask) if on else (value & ~mask)

    def set_field(self, reg, field, value):
        old = self.values[reg.offset]
        self.values[reg.offset] = (old & ~field.mask) | (value << field.lsb & field.mask)

    # -- guest side -------------------------------------------------------------------

    def read(self, offset, size):
        """``size`` bytes at ``offset`` (within one dword; reserved dwords read 0)."""
        base = offset & ~3
        value = self.values.get(base, 0)
        return value >> (8 * (offset - base)) & _BYTE_ENABLES[size]

    def write(self, offset, size, value):
        """A guest write, masks applied.  Returns (register, old, new, written)
        for the register written (written: the value as a 32-bit lane, with
        the byte-enable mask ``enables``), or None for a reserved dword."""
        base = offset & ~3
        reg = self.registers.get(base)
        if reg is None:
            return None
        shift = 8 * (offset - base)
        enables = _BYTE_ENABLES[min(size, 4 - (offset - base))] << shift
        written = (value << shift) & enables
        old = self.values[base]
        new = (old & ~(reg.wmask & enables)) | (written & reg.wmask)
        new &= ~(written & reg.rwcmask)
        new |= written & reg.rw1mask
        self.values[base] = new
        if trace.on.mmio:
            trace.emit("mmio", f"{self.label}.{reg.name} {old:#010x} -> {new:#010x}"
                               f"{describe_change(reg, old, new)}")
        return reg, old, new, written


def describe_change(reg, old, new):
    """`` (+ST +FRE -CLO)``: the fields of ``reg`` that differ."""
    changes = []
    for f in reg.fields:
        if f.get(old) == f.get(new):
            continue
        if f.width == 1:
            changes.append(("+" if f.get(new) else "-") + f.name)
        else:
            changes.append(f.describe(new))
    return f" ({' '.join(changes)})" if changes else ""


def describe(reg, value):
    """Every set field of ``value``: ``ST FRE CCS=0x3``."""
    parts = [p for p in (f.describe(value) for f in reg.fields if f.get(value)) if p]
    return " ".join(parts) or "0"

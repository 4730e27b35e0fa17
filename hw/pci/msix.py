"""The MSI-X capability, PCI Local Bus 3.0 §6.8.2.

Modelled: the 12-byte capability (Message Control with Table Size, Function
Mask and MSI-X Enable; Table and PBA offset/BIR), the vector table (16 bytes
per entry: Message Address, Message Upper Address, Message Data, Vector
Control) and the Pending Bit Array, both served from memory BARs of the
function.  A vector signalled while it or the whole function is masked sets
its pending bit and is sent when unmasked (§6.8.2.9 "Vector Control ... Mask
Bit", §6.8.2.10 "Pending Bits").

The device never sees table/PBA accesses: PciDevice routes a BAR access that
falls inside them here before calling ``bar_read``/``bar_write``.
"""

from drivebay import trace
from drivebay.hw.pci.config import Access, Field, Register

MSIX_CAP_ID = 0x11
MAX_ENTRIES = 2048      # §6.8.2.3: Table Size is 11 bits, encoded as N-1
ENTRY_SIZE = 16         # §6.8.2.6-9: four dwords per table entry
CAP_SIZE = 12

MESSAGE_CONTROL = Register(0x02, 2, "MESSAGE_CONTROL", fields=(
    Field("TABLE_SIZE", 0, 11),
    Field("FUNCTION_MASK", 14, 1, Access.RW),
    Field("MSIX_ENABLE", 15, 1, Access.RW),
))
# §6.8.2.4/5: the BIR (BAR Indicator) is in bits 2:0, the QWORD-aligned offset
# in bits 31:3.
TABLE_OFFSET_BIR = Register(0x04, 4, "TABLE_OFFSET_BIR", fields=(
    Field("TABLE_BIR", 0, 3), Field("TABLE_OFFSET", 3, 29)))
PBA_OFFSET_BIR = Register(0x08, 4, "PBA_OFFSET_BIR", fields=(
    Field("PBA_BIR", 0, 3), Field("PBA_OFFSET", 3, 29)))

TABLE_SIZE = MESSAGE_CONTROL.field("TABLE_SIZE")
FUNCTION_MASK = MESSAGE_CONTROL.field("FUNCTION_MASK")
MSIX_ENABLE = MESSAGE_CONTROL.field("MSIX_ENABLE")

# One table entry.  §6.8.2.9: Vector Control bits 31:1 are reserved; only the
# Mask Bit (bit 0) is implemented, and it is set after reset.
TABLE_ENTRY = (
    Register(0x0, 4, "MESSAGE_ADDRESS", Access.RW),
    Register(0x4, 4, "MESSAGE_UPPER_ADDRESS", Access.RW),
    Register(0x8, 4, "MESSAGE_DATA", Access.RW),
    Register(0xC, 4, "VECTOR_CONTROL", reset=1, fields=(Field("MASK_BIT", 0, 1, Access.RW),)),
)
MASK_BIT = TABLE_ENTRY[3].field("MASK_BIT")
VECTOR_CONTROL_OFFSET = TABLE_ENTRY[3].offset


def _entry_bytes(attr):
    out = bytearray()
    for reg in TABLE_ENTRY:
        out += getattr(reg, attr).to_bytes(reg.width, "little")
    assert len(out) == ENTRY_SIZE
    return bytes(out)


_ENTRY_RESET = _entry_bytes("reset")
_ENTRY_WMASK = _entry_bytes("wmask")


class MsixCapability:
    """MSI-X state of one function: capability bytes in config space, the
    table and PBA here."""

    def __init__(self, device, entries, table_bar, table_offset, pba_bar, pba_offset, offset=None):
        if not 1 <= entries <= MAX_ENTRIES:
            raise ValueError(f"MSI-X table size {entries} outside 1..{MAX_ENTRIES}")
        self.device = device
        self.entries = entries
        self.table_bar = table_bar
        self.table_offset = table_offset
        self.pba_bar = pba_bar
        self.pba_offset = pba_offset
        self.table_size = entries * ENTRY_SIZE
        # §6.8.2.10: the PBA is an array of QWORDs, one bit per vector.
        self.pba_size = (entries + 63) // 64 * 8
        for what, bar, off, size in (("table", table_bar, table_offset, self.table_size),
                                     ("PBA", pba_bar, pba_offset, self.pba_size)):
            decl = device.bars.get(bar)
            if decl is None or decl.is_io:
                raise ValueError(f"MSI-X {what} must be in a declared memory BAR (§6.8.2.4), not BAR{bar}")
            if off % 8:
                raise ValueError(f"MSI-X {what} offset {off:#x} is not QWORD aligned")
            if off + size > decl.size:
                raise ValueError(f"MSI-X {what} {off:#x}+{size:#x} does not fit BAR{bar} of {decl.size:#x}")
        if table_bar == pba_bar and (table_offset < pba_offset + self.pba_size
                                     and pba_offset < table_offset + self.table_size):
            raise ValueError("MSI-X table and PBA overlap")
        regs = (MESSAGE_CONTROL.variant(reset=entries - 1),
                TABLE_OFFSET_BIR.variant(reset=table_offset | table_bar),
                PBA_OFFSET_BIR.variant(reset=pba_offset | pba_bar))
        self.size = CAP_SIZE
        self.offset = device.config.add_capability(MSIX_CAP_ID, CAP_SIZE, offset, regs)
        self._control = self.offset + MESSAGE_CONTROL.offset
        self.table = bytearray(self.table_size)
        self.pba = bytearray(self.pba_size)
        self.reset()

    def reset(self):
        self.table[:] = _ENTRY_RESET * self.entries
        self.pba[:] = bytes(self.pba_size)

    # -- state -----------------------------------------------------------------

    @property
    def control(self):
        return self.device.config.get(self._control, 2)

    @property
    def enabled(self):
        return bool(self.control & MSIX_ENABLE.mask)

    @property
    def function_masked(self):
        return bool(self.control & FUNCTION_MASK.mask)

    def vector_masked(self, vector):
        at = vector * ENTRY_SIZE + VECTOR_CONTROL_OFFSET
        return bool(self.table[at] & MASK_BIT.mask)

    def masked(self, vector):
        return self.function_masked or self.vector_masked(vector)

    def pending(self, vector):
        return bool(self.pba[vector >> 3] >> (vector & 7) & 1)

    def _set_pending(self, vector, on):
        if on:
            self.pba[vector >> 3] |= 1 << (vector & 7)
        else:
            self.pba[vector >> 3] &= ~(1 << (vector & 7)) & 0xFF

    def clear_pending(self, vector):
        """§6.8.2.10: when the event behind a masked, pending vector goes away
        the function clears the pending bit (device-specific decision)."""
        self._set_pending(vector, False)

    def message(self, vector):
        e = vector * ENTRY_SIZE
        t = self.table
        address = int.from_bytes(t[e:e + 8], "little")
        data = int.from_bytes(t[e + 8:e + 12], "little")
        return address, data

    # -- signalling ------------------------------------------------------------

    def notify(self, vector):
        """Signal ``vector`` (MSI-X must be enabled): send, or set its pending bit."""
        assert 0 <= vector < self.entries, f"MSI-X vector {vector} of {self.entries}"
        if self.masked(vector):
            self._set_pending(vector, True)
            if trace.on.irq:
                trace.emit("irq", f"{self.device.label} MSI-X vector {vector} masked: pending")
            return
        self.device.send_msi(*self.message(vector))

    def _flush_pending(self):
        """Send every pending vector that is no longer masked."""
        if not self.enabled or self.function_masked:
            return
        for i, byte in enumerate(self.pba):
            if not byte:
                continue
            for bit in range(8):
                vector = i * 8 + bit
                if byte >> bit & 1 and vector < self.entries and not self.vector_masked(vector):
                    self._set_pending(vector, False)
                    self.device.send_msi(*self.message(vector))

    def config_written(self):
        self._flush_pending()

    # -- BAR accesses (routed by PciDevice) -------------------------------------

    def _window(self, bar, offset, size):
        if bar == self.table_bar and self.table_offset <= offset and offset + size <= self.table_offset + self.table_size:
            return "table", offset - self.table_offset
        if bar == self.pba_bar and self.pba_offset <= offset and offset + size <= self.pba_offset + self.pba_size:
            return "pba", offset - self.pba_offset
        return None, 0

    def bar_read(self, bar, offset, size):
        """The value if the access is inside the table or PBA, else None."""
        where, rel = self._window(bar, offset, size)
        if where is None:
            return None
        array = self.table if where == "table" else self.pba
        value = int.from_bytes(array[rel:rel + size], "little")
        if trace.on.pci:
            trace.emit("pci", f"{self.device.label} {self._describe(where, rel)} -> {value:#x}")
        return value

    def bar_write(self, bar, offset, size, value):
        """Apply a write inside the table (PBA writes are ignored); False if outside both."""
        where, rel = self._window(bar, offset, size)
        if where is None:
            return False
        if trace.on.pci:
            trace.emit("pci", f"{self.device.label} {self._describe(where, rel)} <- {value:#x}")
        if where == "pba":
            # §6.8.2.10: "Software should never write ... Pending Bits"; the
            # array is read-only here.
            trace.guest_error(self.device.label, f"write to MSI-X PBA +{rel:#x} ignored")
            return True
        table = self.table
        for i in range(size):
            a = rel + i
            m = _ENTRY_WMASK[a % ENTRY_SIZE]
            table[a] = (table[a] & ~m) | ((value >> (8 * i)) & m)
        self._flush_pending()
        return True

    def _describe(self, where, rel):
        if where == "pba":
            return f"MSIX.PBA+{rel:#x}"
        vector, within = divmod(rel, ENTRY_SIZE)
        for reg in TABLE_ENTRY:
            if reg.offset <= within < reg.offset + reg.width:
                return f"MSIX.table[{vector}].{reg.name}"
        raise AssertionError(within)

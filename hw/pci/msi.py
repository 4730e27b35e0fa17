"""The MSI capability (Message Signaled Interrupts), PCI Local Bus 3.0 §6.8.1.

Modelled: 32- and 64-bit message address, 1-32 vectors (Multiple Message
Capable/Enable with the low Message Data bits carrying the vector number,
§6.8.3.4 "Multiple Message Enable ... the function is permitted to modify the
low order bits of the Message Data"), optional per-vector masking with
pending bits (§6.8.1.7-8).  A message is a memory write of the 16-bit data
(upper 16 bits zero) to the address, which the bus hands to its MSI sink;
like every bus-master write it needs COMMAND.BUS_MASTER.

Not modelled: extended message data (PCIe 4.0+).
"""

from drivebay import trace
from drivebay.hw.pci.config import Access, Field, Register

MSI_CAP_ID = 0x05
MAX_VECTORS = 32   # §6.8.1.3: Multiple Message Capable encodes 1..32 vectors

MESSAGE_CONTROL = Register(0x02, 2, "MESSAGE_CONTROL", fields=(
    Field("MSI_ENABLE", 0, 1, Access.RW),
    Field("MULTIPLE_MESSAGE_CAPABLE", 1, 3),
    Field("MULTIPLE_MESSAGE_ENABLE", 4, 3, Access.RW),
    Field("ADDRESS_64_CAPABLE", 7),
    Field("PER_VECTOR_MASKING_CAPABLE", 8),
))
# §6.8.1.4: bits 1:0 of Message Address are reserved (dword aligned writes).
MESSAGE_ADDRESS = Register(0x04, 4, "MESSAGE_ADDRESS", fields=(Field("ADDRESS", 2, 30, Access.RW),))

MSI_ENABLE = MESSAGE_CONTROL.field("MSI_ENABLE")
MMC = MESSAGE_CONTROL.field("MULTIPLE_MESSAGE_CAPABLE")
MME = MESSAGE_CONTROL.field("MULTIPLE_MESSAGE_ENABLE")


def msi_layout(vectors, is64, per_vector_mask):
    """The capability's registers (offsets relative to the capability) and size.

    §6.8.1, Figure 6-9: the 64-bit form inserts Message Upper Address at 0x08
    and moves Message Data to 0x0C; Mask Bits and Pending Bits follow the
    data's reserved upper half.
    """
    regs = [MESSAGE_CONTROL.variant(reset=(
        ((vectors.bit_length() - 1) << MMC.lsb)
        | ((1 << 7) if is64 else 0)
        | ((1 << 8) if per_vector_mask else 0))), MESSAGE_ADDRESS]
    if is64:
        regs.append(Register(0x08, 4, "MESSAGE_UPPER_ADDRESS", Access.RW))
        data_at = 0x0C
    else:
        data_at = 0x08
    regs.append(Register(data_at, 2, "MESSAGE_DATA", Access.RW))
    size = data_at + 2
    if per_vector_mask:
        # §6.8.1.7: mask bits of unimplemented vectors are reserved (RO 0).
        regs.append(Register(data_at + 4, 4, "MASK_BITS", fields=(Field("MASK", 0, vectors, Access.RW),)))
        regs.append(Register(data_at + 8, 4, "PENDING_BITS"))
        size = data_at + 12
    return tuple(regs), size


class MsiCapability:
    """MSI state of one function; the bytes live in the function's config space."""

    def __init__(self, device, vectors=1, is64=True, per_vector_mask=False, offset=None):
        if vectors not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"MSI vectors must be a power of two up to {MAX_VECTORS}, not {vectors}")
        self.device = device
        self.vectors = vectors
        self.is64 = is64
        self.per_vector_mask = per_vector_mask
        regs, self.size = msi_layout(vectors, is64, per_vector_mask)
        self.offset = device.config.add_capability(MSI_CAP_ID, self.size, offset, regs)
        base = self.offset
        data_at = 0x0C if is64 else 0x08
        self._control = base + MESSAGE_CONTROL.offset
        self._address = base + MESSAGE_ADDRESS.offset
        self._upper = base + 0x08 if is64 else None
        self._data = base + data_at
        self._mask = base + data_at + 4 if per_vector_mask else None
        self._pending = base + data_at + 8 if per_vector_mask else None

    @property
    def enabled(self):
        return bool(self.device.config.get(self._control, 2) & MSI_ENABLE.mask)

    @property
    def allocated(self):
        """Vectors the guest granted: 2**MME (§6.8.1.3)."""
        return 1 << MME.get(self.device.config.get(self._control, 2))

    def message(self, vector):
        """(address, data) of ``vector`` as programmed now."""
        cfg = self.device.config
        address = cfg.get(self._address, 4)
        if self._upper is not None:
            address |= cfg.get(self._upper, 4) << 32
        n = self.allocated
        # §6.8.1.3: with n vectors allocated the function modifies only the
        # low log2(n) bits of Message Data; a vector beyond the allocation is
        # folded into it rather than writing bits the system did not give us.
        data = (cfg.get(self._data, 2) & ~(n - 1)) | (vector & (n - 1))
        return address, data

    def masked(self, vector):
        return self._mask is not None and bool(self.device.config.get(self._mask, 4) >> vector & 1)

    def pending(self, vector):
        return self._pending is not None and bool(self.device.config.get(self._pending, 4) >> vector & 1)

    def _set_pending(self, vector, on):
        cfg = self.device.config
        bits = cfg.get(self._pending, 4)
        cfg.set(self._pending, 4, bits | (1 << vector) if on else bits & ~(1 << vector))

    def notify(self, vector):
        """Signal ``vector`` (MSI must be enabled): send, or latch as pending if masked."""
        assert vector >= 0
        # A function with more interrupt sources than granted vectors (an
        # MSI-X device falling back to MSI) shares the granted ones.
        vector &= self.allocated - 1
        if self.masked(vector):
            # §6.8.1.8: "while a vector is masked, the function ... sets the
            # associated Pending bit" and sends the message when unmasked.
            self._set_pending(vector, True)
            if trace.on.irq:
                trace.emit("irq", f"{self.device.label} MSI vector {vector} masked: pending")
            return
        self.device.send_msi(*self.message(vector))

    def config_written(self):
        """After a guest write to the capability: clamp MME, flush unmasked pending vectors."""
        cfg = self.device.config
        control = cfg.get(self._control, 2)
        granted, capable = MME.get(control), MMC.get(control)
        if granted > capable:
            # §6.8.1.3: software must not grant more than requested; the
            # function then uses what it can (QEMU clamps the same way).
            control = (control & ~MME.mask) | (capable << MME.lsb)
            cfg.set(self._control, 2, control)
        if self._pending is None:
            return
        n = self.allocated
        pending = cfg.get(self._pending, 4) & ((1 << n) - 1)
        cfg.set(self._pending, 4, pending)
        if not self.enabled or not pending:
            return
        for vector in range(n):
            if pending >> vector & 1 and not self.masked(vector):
                self._set_pending(vector, False)
                self.device.send_msi(*self.message(vector))

"""Bus-master IDE DMA: the 16-byte BMIBA window and its PRD engine.

Modelled (SFF-8038i rev 1.0 §2-3; PIIX4 datasheet §5.2 and "Bus Master
IDE Operation"; ICH6 datasheet §5.16.2): per channel the BMIC command
(start/stop, read/write control), BMIS status (active, error, interrupt,
drive DMA-capable flags) and BMIDTP descriptor table pointer registers,
accessible as bytes, words or dwords; physical region descriptor tables
walked entry by entry as the device moves data.

BMIS.BMIDEA and BMIS.IDEINTS after a transfer follow the datasheets'
"Interrupt/Active Bit Interaction" table (PIIX4 Table 15, ICH6 Table 5-42):

=========  ======  ===================================================
Interrupt  Active  meaning
=========  ======  ===================================================
0          1       transfer in progress (or waiting: bus mastering off)
1          0       done; the PRDs were exactly as long as the transfer
1          1       done; the PRDs were longer than the transfer
0          0       error: with BMIS.ERROR a master abort (a PRD or its
                   table outside RAM); without it, the PRDs were shorter
                   than the transfer
=========  ======  ===================================================

A PRD table that ends before the transfer does leaves the device in its
DMA phase, still asking for data, with Active and Interrupt clear, as the
table says; the guest times out and resets, or points BMIDTP at the rest of
the buffer and starts the engine again, which resumes the transfer.

"Bus master operation does not actually start unless the Bus Master Enable
bit ... is also set" (ICH6 BMIC.START): with PCI COMMAND bit 2 clear the
engine shows Active and waits; setting the bit lets it run.
"""

from drivebay import trace
from drivebay.hw.dma import DmaError
from drivebay.hw.ide import regs

_REGISTER_AT = {}
for _ch in range(2):
    for _reg in regs.BMDMA_CHANNEL_REGISTERS:
        for _i in range(_reg.width):
            _REGISTER_AT[_ch * regs.BMDMA_CHANNEL_STRIDE + _reg.offset + _i] = (_ch, _reg, _i)


def _byte_masks(register, shift):
    return (register.wmask >> shift) & 0xFF, (register.w1cmask >> shift) & 0xFF


class BmdmaChannel:
    """One channel's registers and PRD cursor."""

    SNAPSHOT_FIELDS = ("command", "status", "prd_table", "next_prd", "region_address",
                       "region_left", "eot", "entries")

    def __init__(self, controller, index):
        self.controller = controller
        self.index = index
        self.label = f"{controller.name}.bmdma{index}"
        self.reset()

    def reset(self):
        self.command = 0
        self.status = 0
        self.prd_table = 0
        self._rewind()

    def _rewind(self):
        self.next_prd = self.prd_table
        self.region_address = 0
        self.region_left = 0
        self.eot = False
        self.entries = 0

    @property
    def started(self):
        return bool(self.command & regs.BMIC_SSBM)

    @property
    def writes_memory(self):
        return bool(self.command & regs.BMIC_RWCON)

    # -- register bytes -------------------------------------------------------------

    def _get(self, register):
        # By identity: hashing a Register (a dataclass) costs more than the access.
        if register is regs.BMIC:
            return self.command
        if register is regs.BMIS:
            return self.status
        if register is regs.BMIDTP:
            return self.prd_table
        raise KeyError(register.name)

    def read_byte(self, register, index):
        return self._get(register) >> (8 * index) & 0xFF

    def write_byte(self, register, index, byte):
        shift = 8 * index
        wmask, w1c = _byte_masks(register, shift)
        old = self._get(register)
        old_byte = old >> shift & 0xFF
        new_byte = ((old_byte & ~wmask) | (byte & wmask)) & ~(byte & w1c) & 0xFF
        new = (old & ~(0xFF << shift)) | new_byte << shift
        if register is regs.BMIC:
            self._command_written(old, new)
        elif register is regs.BMIS:
            self.status = new
        else:
            self.prd_table = new

    def _command_written(self, old, new):
        if old & regs.BMIC_SSBM and new & regs.BMIC_SSBM and (old ^ new) & regs.BMIC_RWCON:
            # PIIX4 BMICX.RWCON: "must NOT be changed when the bus master
            # function is active"; it reads only while a transfer runs.
            trace.guest_error(self.label, "BMIC.RWCON changed while started: ignored")
            new = (new & ~regs.BMIC_RWCON) | (old & regs.BMIC_RWCON)
        self.command = new
        if new & regs.BMIC_SSBM and not old & regs.BMIC_SSBM:
            # "PIIX4 sets this bit [BMIDEA] to 1 when bit 0 in the BMICx
            # Register is set to 1"; the first PRD is fetched from BMIDTP.
            self.status |= regs.BMIS_ACTIVE
            self._rewind()
            if not self.prd_table:
                # Not an error to the chip: it fetches descriptors from 0.
                trace.guest_error(self.label, "bus master started with BMIDTP 0: PRDs read from address 0")
            if trace.on.dev:
                trace.emit("dev", f"{self.label} start: PRD table at {self.prd_table:#x}, "
                                  f"{'device to memory' if self.writes_memory else 'memory to device'}")
            self.controller.bmdma_started(self.index)
        elif old & regs.BMIC_SSBM and not new & regs.BMIC_SSBM:
            # "This results in all state information being lost (i.e.,
            # master mode operation cannot be stopped and then resumed)."
            self.status &= ~regs.BMIS_ACTIVE
            self._rewind()
            if trace.on.dev:
                trace.emit("dev", f"{self.label} stop")

    # -- the engine ------------------------------------------------------------------

    def interrupt_raised(self):
        """The channel's INTRQ was asserted (BMIS.IDEINTS follows every
        assertion edge, DMA command or not)."""
        self.status |= regs.BMIS_INTERRUPT

    def _bus_error(self, what):
        trace.guest_error(self.label, f"{what}: master abort, BMIS.ERROR set")
        self.status = (self.status | regs.BMIS_ERROR) & ~regs.BMIS_ACTIVE
        return None

    def map(self, memory, nbytes):
        """Guest-memory views for the next at most ``nbytes`` of the transfer
        (see AtaTransport.dma_map): [] when the table is exhausted, None on a
        master abort."""
        views, total = [], 0
        while total < nbytes:
            if not self.region_left:
                if self.eot:
                    break
                if self.entries >= regs.MAX_PRD_ENTRIES:
                    trace.guest_error(self.label, f"{regs.MAX_PRD_ENTRIES} PRDs without EOT: table ends")
                    self.eot = True
                    self.status &= ~regs.BMIS_ACTIVE
                    break
                try:
                    raw = memory.read(self.next_prd, regs.PRD_SIZE)
                except DmaError:
                    return self._bus_error(f"PRD fetch at {self.next_prd:#x}")
                base = int.from_bytes(raw[0:4], "little") & regs.PRD_ADDRESS_MASK
                control = int.from_bytes(raw[4:8], "little")
                count = (control & regs.PRD_COUNT_MASK) or regs.PRD_COUNT_ZERO
                self.next_prd = (self.next_prd + regs.PRD_SIZE) & 0xFFFFFFFF
                self.entries += 1
                self.region_address, self.region_left = base, count
                self.eot = bool(control & regs.PRD_EOT)
                if trace.on.dev:
                    trace.emit("dev", f"{self.label} PRD {base:#x}+{count:#x}{' EOT' if self.eot else ''}")
            n = min(self.region_left, nbytes - total)
            try:
                views.append(memory.view(self.region_address, n))
            except DmaError:
                return self._bus_error(f"PRD region {self.region_address:#x}+{n:#x}")
            self.region_address += n
            self.region_left -= n
            total += n
            if not self.region_left and self.eot:
                # "PIIX4 sets this bit to 0 when the last transfer for a
                # region is performed, where EOT for that region is set."
                self.status &= ~regs.BMIS_ACTIVE
        return views

    def snapshot(self):
        return {name: getattr(self, name) for name in self.SNAPSHOT_FIELDS}


class BusMasterIde:
    """The 16-byte BMIBA window: two channels' registers, byte-addressed."""

    def __init__(self, controller):
        self.channels = (BmdmaChannel(controller, 0), BmdmaChannel(controller, 1))

    def reset(self):
        for channel in self.channels:
            channel.reset()

    def read(self, offset, size):
        value = 0
        for i in range(size):
            where = _REGISTER_AT.get(offset + i)
            if where is not None:
                ch, register, index = where
                value |= self.channels[ch].read_byte(register, index) << (8 * i)
        return value

    def write(self, offset, size, value):
        # Byte lanes in address order; a dword write to BMIC also writes
        # BMIS (offset 2), as a PCI dword write would.
        for i in range(size):
            where = _REGISTER_AT.get(offset + i)
            if where is not None:
                ch, register, index = where
                self.channels[ch].write_byte(register, index, value >> (8 * i) & 0xFF)

    @staticmethod
    def register_name(offset, size):
        where = _REGISTER_AT.get(offset)
        if where is None:
            return None
        ch, register, index = where
        suffix = "PS"[ch]
        return f"{register.name}{suffix}" + (f"+{index}" if index else "")

"""One IDE channel: a cable with up to two ATA devices behind one task file.

Modelled (ATA/ATAPI-6 §5-7 and §9; PCI IDE Controller Specification 1.0):

* the Command Block (data, error/features, count, LBA low/mid/high, device,
  status/command) and the Control Block (alternate status/device control).
  Writes reach both devices, each latching its own copy (§7.1); reads come
  from the device the DEV bit selects.  The data port moves 16 or 32 bits
  per access (a PIIX turns a 32-bit access into two 16-bit cycles); an 8-bit
  data access moves one 16-bit cycle and keeps its low byte.
* absent devices.  Nothing on the cable: the host's pull-down on DD7 (ATA/
  ATAPI-6 §5.2.2, "DD7 ... 10 kohm pull-down") makes every register read 7Fh,
  so BSY reads clear and the signature check fails.  Device 1 absent while
  selected: device 0 answers for it, Status and Alternate Status as 00h
  (§9.16 "device 0 shall respond ... Status register ... 00h"), the other
  registers from its own latches; commands to it are not executed.
* INTRQ: driven by the selected device only, masked by its nIEN; reading
  Status acknowledges it, Alternate Status does not.  Every assertion edge
  sets BMIS.IDEINTS.
* the channel is the devices' AtaTransport: PIO blocks move through the data
  port; DMA runs through the channel's bus-master engine (hw/ide/bmdma.py).
"""

from drivebay import trace
from drivebay.hw.ata.commands import DataDirection
from drivebay.hw.ata.device import Phase
from drivebay.hw.ata.transport import AtaTransport
from drivebay.hw.ide import regs

EXECUTE_DEVICE_DIAGNOSTIC = 0x90
FLOATING = 0x7F              # DD7 pulled down, DD6:0 floating high
ABSENT_STATUS = 0x00
DEVICE_DEV = 0x10


class IdeChannel(AtaTransport):
    SNAPSHOT_FIELDS = ("selected", "irq_level")

    def __init__(self, controller, index, bmdma):
        self.controller = controller
        self.index = index
        self.name = f"ide{index}"
        self.bmdma = bmdma
        self.devices = [None, None]
        self.selected = 0
        self.irq_level = False
        self.irq_out = None           # callable(level), set by the controller per mode

    def attach(self, unit, device):
        assert self.devices[unit] is None, f"{self.name}.{unit} is taken"
        device.transport = self
        device.unit = unit
        device.label = f"{self.name}.{unit}"
        self.devices[unit] = device
        for d in self.present:
            d.peer_present = len(self.present) == 2
        # ATA-6 §9.1 power-on: the device's identity depends on its unit.
        device.power_on_reset()

    @property
    def present(self):
        return [d for d in self.devices if d is not None]

    def reset(self):
        """Hardware reset (PCI RST# drives the cable's RESET-)."""
        self.selected = 0
        for device in self.present:
            device.power_on_reset()
        self._update_irq()

    # -- interrupts ---------------------------------------------------------------------

    def _update_irq(self):
        device = self.devices[self.selected]
        level = device is not None and device.intrq_asserted
        if level == self.irq_level:
            return
        self.irq_level = level
        if level:
            self.bmdma.interrupt_raised()
        if trace.on.irq:
            trace.emit("irq", f"{self.controller.name}.{self.name} INTRQ {'asserted' if level else 'released'}")
        if self.irq_out is not None:
            self.irq_out(level)

    # -- AtaTransport -------------------------------------------------------------------------

    def intrq_changed(self, device):
        self._update_irq()

    def dma_ready(self, device):
        self.run_dma()

    def run_dma(self):
        """Let the selected device move data if the engine may run."""
        device = self.devices[self.selected]
        if device is None or device.phase is not Phase.DMA:
            return
        if not self.bmdma.started:
            return
        if not self.controller.bus_master_enabled:
            trace.guest_error(f"{self.controller.name}.{self.name}",
                              "bus master started with PCI COMMAND.BUS_MASTER clear: DMA waits")
            return
        if (device.dma_direction is DataDirection.IN) != self.bmdma.writes_memory:
            trace.guest_error(f"{self.controller.name}.{self.name}",
                              f"BMIC.RWCON={int(self.bmdma.writes_memory)} disagrees with a "
                              f"{device.dma_direction.value} transfer: the command's direction is used")
        device.dma_run()

    def dma_map(self, device, nbytes):
        return self.bmdma.map(self.controller.dma, nbytes)

    # -- Command Block -------------------------------------------------------------------------

    def _responder(self):
        """The device that drives the bus for reads: the selected one, or the
        other one answering for an absent device 1 (or 0)."""
        device = self.devices[self.selected]
        if device is not None:
            return device, True
        other = self.devices[1 - self.selected]
        return other, False

    def command_read(self, offset, size):
        if offset == 0:
            return self._data_read(size)
        value = 0
        for i in range(size):
            if offset + i < regs.COMMAND_BLOCK_SIZE:
                value |= self._register_read(offset + i) << (8 * i)
        return value

    def _register_read(self, offset):
        device, selected = self._responder()
        if device is None:
            return FLOATING
        port = regs.COMMAND_BLOCK[offset]
        if port is regs.STATUS_COMMAND:
            return device.read_status() if selected else ABSENT_STATUS
        return device.read_register(port.register)

    def _data_read(self, size):
        device = self.devices[self.selected]
        if device is None:
            return FLOATING * 0x01010101 & ((1 << (8 * size)) - 1)
        if size == 1:
            return device.pio_read(2)[0]
        return int.from_bytes(device.pio_read(size), "little")

    def command_write(self, offset, size, value):
        if offset == 0:
            self._data_write(size, value)
            return
        for i in range(size):
            if offset + i < regs.COMMAND_BLOCK_SIZE:
                self._register_write(offset + i, value >> (8 * i) & 0xFF)

    def _register_write(self, offset, value):
        port = regs.COMMAND_BLOCK[offset]
        if port is regs.STATUS_COMMAND:
            self._command(value)
            return
        for device in self.present:
            device.write_register(port.register, value)
        if port is regs.DEVICE:
            self.selected = 1 if value & DEVICE_DEV else 0
            self._update_irq()

    def _command(self, opcode):
        if opcode == EXECUTE_DEVICE_DIAGNOSTIC:
            # ATA/ATAPI-6 §8.11: "executed by both devices regardless of DEV".
            for device in reversed(self.present):
                device.execute(opcode)
            return
        device = self.devices[self.selected]
        if device is None:
            if trace.on.dev:
                trace.emit("dev", f"{self.controller.name}.{self.name}.{self.selected} "
                                  f"command {opcode:#04x} to an absent device: ignored")
            return
        device.execute(opcode)

    def command_read_repeat(self, offset, size, count):
        """REP INSW/INSD on the data register: what ``count`` single reads
        would return, block after block while the device keeps DRQ up."""
        device = self.devices[self.selected]
        if offset != 0 or size == 1 or device is None:
            return b""
        out = bytearray()
        want = count * size
        while len(out) < want and device.phase is Phase.PIO_IN:
            n = min(want - len(out), device.end - device.pos)
            n -= n % size
            if n <= 0:
                break
            out += device.pio_read(n)
        return bytes(out)

    def command_write_repeat(self, offset, size, data):
        """REP OUTSW/OUTSD on the data register; returns the units taken."""
        device = self.devices[self.selected]
        if offset != 0 or size == 1 or device is None:
            return 0
        taken = 0
        while taken < len(data) and device.phase in (Phase.PIO_OUT, Phase.PACKET):
            n = min(len(data) - taken, device.end - device.pos)
            n -= n % size
            if n <= 0:
                break
            device.pio_write(data[taken:taken + n])
            taken += n
        return taken // size

    def _data_write(self, size, value):
        device = self.devices[self.selected]
        if device is None:
            return
        if size == 1:
            device.pio_write(bytes((value & 0xFF, 0)))
        else:
            device.pio_write(value.to_bytes(size, "little"))

    # -- Control Block ---------------------------------------------------------------------------

    def alt_status(self):
        device, selected = self._responder()
        if device is None:
            return FLOATING
        return device.read_status(acknowledge=False) if selected else ABSENT_STATUS

    def device_control(self, value):
        for device in self.present:
            device.set_device_control(value)
        self._update_irq()

    # -- host side --------------------------------------------------------------------------------

    def snapshot(self):
        state = {name: getattr(self, name) for name in self.SNAPSHOT_FIELDS}
        state["devices"] = [d.snapshot() if d is not None else None for d in self.devices]
        return state


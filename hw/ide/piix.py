"""The PCI IDE functions of the Intel PIIX3, PIIX4 and ICH6, and their factory.

Modelled (82371FB/SB PIIX/PIIX3 and 82371AB PIIX4 datasheets, function 1
"IDE Interface"; ICH6 datasheet §11 "IDE Controller Registers (D31:F1)";
PCI IDE Controller Specification 1.0):

* identity as rows of ``VARIANTS``: the three chips differ in device ID,
  programming interface, timing registers and whether the channels can run
  in native mode — data, not subclasses.
* two IDE channels (hw/ide/channel.py) with two devices each.
* legacy ("compatibility") mode: command blocks at 1F0h/170h, control
  registers at 3F6h/376h, INTRQ on ISA IRQ 14/15.  The ports are decoded
  whatever IDETIM.IDE and PCICMD.IOSE say, as on QEMU and VirtualBox (real
  PIIXs wait for the firmware to set IDETIM bit 15; SeaBIOS does, guest
  programs that run on QEMU do not).
* native mode, ICH6 only (PI bits 0 and 2 are read/write there, read-only 0
  on the PIIXs): the channel's command and control blocks move to BAR0/1
  (primary) and BAR2/3 (secondary), its interrupt to PCI INTA#.
* bus-master IDE at BAR4 (BMIBA, 16 bytes of I/O; hw/ide/bmdma.py).
* the IDE timing registers (IDETIM, SIDETIM, UDMACTL, UDMATIM, IDE_CONFIG)
  stored so firmware and drivers can program them; timing has no effect.

Programming interface: 80h on PIIX3/PIIX4 as their datasheets give it
(legacy only; QEMU agrees); 8Ah on ICH6 (both channels programmable).
VirtualBox reports 8Ah on all three, which tells a driver the PIIX mode is
programmable when its mode bits do not stick.

Placement: in QEMU's ``pc`` machine the PIIX3 IDE function is 00:01.1,
beside the ISA bridge at 01.0 (ICH6's is D31:F1).  The factory takes
``function`` (the function number the machine will plug it at) and sets the
multi-function header bit when it is not 0, as PciBus.plug requires of the
functions sharing a slot; the machine decides the slot.
"""

from dataclasses import dataclass, replace
from functools import partial

from drivebay import trace
from drivebay.errors import ConfigError
from drivebay.hw.ata.commands import DeviceKind
from drivebay.hw.ata.device import AtaDevice
from drivebay.hw.ide import regs
from drivebay.hw.ide.bmdma import BusMasterIde
from drivebay.hw.ide.channel import IdeChannel
from drivebay.hw.irq import IrqLine
from drivebay.hw.pci.config import COMMAND, PROG_IF, STATUS
from drivebay.hw.pci.device import BarKind, PciBar, PciDevice, PciIdentity


@dataclass(frozen=True)
class IdeVariant:
    device_name: str                  # the hw/devices.py name
    description: str
    identity: PciIdentity
    config_registers: tuple
    command_rw: tuple                 # PCICMD bits the chip implements
    native_capable: bool


# QEMU's default subsystem 1AF4:1100 (the real parts have none), as for the
# PIIX3 ISA bridge (hw/pci/piix3.py): the same guest sees the same function
# on drivebay and QEMU.
_SUBSYSTEM = dict(subsystem_vendor_id=0x1AF4, subsystem_id=0x1100)

VARIANTS = (
    IdeVariant("piix3-ide", "Intel 82371SB PIIX3 IDE controller (8086:7010)",
               PciIdentity(0x8086, 0x7010, 0x010180, **_SUBSYSTEM),
               regs.PIIX3_IDE_REGISTERS, ("IO_SPACE", "BUS_MASTER"), native_capable=False),
    IdeVariant("piix4-ide", "Intel 82371AB PIIX4 IDE controller (8086:7111)",
               PciIdentity(0x8086, 0x7111, 0x010180, **_SUBSYSTEM),
               regs.PIIX4_IDE_REGISTERS, ("IO_SPACE", "BUS_MASTER"), native_capable=False),
    IdeVariant("ich6-ide", "Intel 82801FB ICH6 IDE controller (8086:269E)",
               PciIdentity(0x8086, 0x269E, 0x01018A, interrupt_pin=1, **_SUBSYSTEM),
               regs.ICH6_IDE_REGISTERS,
               ("IO_SPACE", "BUS_MASTER", "SERR_ENABLE", "INTERRUPT_DISABLE"), native_capable=True),
)
VARIANT_BY_NAME = {v.device_name: v for v in VARIANTS}

BMDMA_BAR = 4
# PCI IDE Controller Specification 1.0 §2: native-mode BARs, per channel a
# command block (8 bytes) and a control block (4 bytes, register at offset 2).
NATIVE_BARS = ((0, 1), (2, 3))


class PciIdeController(PciDevice):
    """An IDE function: two channels, bus-master DMA, legacy or native mode."""

    SNAPSHOT_FIELDS = ("native",)

    def __init__(self, variant, io, isa_irq=None, function=0, name=None):
        identity = variant.identity
        if function != 0:
            identity = replace(identity, multifunction=True)
        bars = [PciBar(BMDMA_BAR, regs.BMDMA_SIZE, BarKind.IO)]
        if variant.native_capable:
            for command_bar, control_bar in NATIVE_BARS:
                bars.append(PciBar(command_bar, regs.COMMAND_BLOCK_SIZE, BarKind.IO))
                bars.append(PciBar(control_bar, regs.CONTROL_BLOCK_SIZE, BarKind.IO))
        super().__init__(identity, bars, name=name or variant.device_name)
        self.variant = variant
        self.pci_function = function
        self.io = io
        # PIIX4 PCICMD reset 0000h, PCISTS 0280h (fast back-to-back capable,
        # medium DEVSEL#); the ICH6 matches.
        self.config.declare((COMMAND.variant(reset=0x0000, rw=variant.command_rw),
                             STATUS.variant(reset=0x0280)))
        if variant.native_capable:
            self.config.declare((replace(regs.PROG_IF_PROGRAMMABLE, reset=identity.class_code & 0xFF),))
        self.config.declare(variant.config_registers)
        self.bmdma = BusMasterIde(self)
        self.channels = tuple(IdeChannel(self, i, self.bmdma.channels[i]) for i in range(2))
        self._isa_lines = tuple(
            isa_irq(irq, f"{self.name}.ide{i}") if isa_irq is not None else IrqLine(name=f"{self.name}.ide{i}")
            for i, (_, _, irq) in enumerate(regs.LEGACY))
        self._legacy_regions = [None, None]
        self._native_levels = [False, False]
        self.native = [None, None]
        self._apply_mode()

    # -- modes -----------------------------------------------------------------------

    def channel_is_native(self, index):
        if not self.variant.native_capable:
            return False
        bit = regs.PI_PRIMARY_NATIVE if index == 0 else regs.PI_SECONDARY_NATIVE
        return bool(self.config.get(PROG_IF.offset, 1) & bit)

    def _apply_mode(self):
        for index, channel in enumerate(self.channels):
            native = self.channel_is_native(index)
            if native == self.native[index]:
                continue
            if channel.irq_out is not None:
                channel.irq_out(False)
            self.native[index] = native
            if native:
                self._unmap_legacy(index)
                channel.irq_out = partial(self._native_irq, index)
            else:
                self._map_legacy(index)
                channel.irq_out = self._isa_lines[index].set_level
            channel.irq_out(channel.irq_level)
            if trace.on.dev:
                trace.emit("dev", f"{self.name}.ide{index} {'native' if native else 'legacy'} mode")

    def _map_legacy(self, index):
        base, control, _ = regs.LEGACY[index]
        channel = self.channels[index]
        try:
            command_region = self.io.add(f"{self.name}.ide{index}", base, regs.COMMAND_BLOCK_SIZE,
                                         channel.command_read, channel.command_write,
                                         names=regs.command_block_name,
                                         read_repeat=channel.command_read_repeat,
                                         write_repeat=channel.command_write_repeat)
        except ValueError as e:
            trace.guest_error(self.name, f"legacy ports of ide{index} not decoded: {e}")
            return
        try:
            control_region = self.io.add(f"{self.name}.ide{index}", control, 1,
                                         lambda offset, size: self._control_read(index, size),
                                         lambda offset, size, value: channel.device_control(value & 0xFF),
                                         names={0: regs.ALT_STATUS_DEVICE_CONTROL})
        except ValueError as e:
            self.io.remove(command_region)
            trace.guest_error(self.name, f"legacy ports of ide{index} not decoded: {e}")
            return
        self._legacy_regions[index] = (command_region, control_region)

    def _unmap_legacy(self, index):
        regions = self._legacy_regions[index]
        if regions is not None:
            for region in regions:
                self.io.remove(region)
            self._legacy_regions[index] = None

    def _control_read(self, index, size):
        status = self.channels[index].alt_status()
        return status * 0x01010101 & ((1 << (8 * size)) - 1)

    def _native_irq(self, index, level):
        self._native_levels[index] = level
        self.set_irq(any(self._native_levels))

    # -- BARs ----------------------------------------------------------------------------

    def _native_channel(self, bar):
        index = bar // 2
        return self.channels[index] if self.native[index] else None

    def bar_read(self, bar, offset, size):
        if bar == BMDMA_BAR:
            return self.bmdma.read(offset, size)
        channel = self._native_channel(bar)
        if channel is not None:
            if bar % 2 == 0:
                return channel.command_read(offset, size)
            if offset == regs.CONTROL_OFFSET:
                return channel.alt_status()
        return (1 << (8 * size)) - 1

    def bar_write(self, bar, offset, size, value):
        if bar == BMDMA_BAR:
            self.bmdma.write(offset, size, value)
            return
        channel = self._native_channel(bar)
        if channel is None:
            return
        if bar % 2 == 0:
            channel.command_write(offset, size, value)
        elif offset == regs.CONTROL_OFFSET:
            channel.device_control(value & 0xFF)

    def bar_register_names(self, bar):
        if bar == BMDMA_BAR:
            return self.bmdma.register_name
        if bar % 2 == 0:
            return regs.command_block_name
        return {regs.CONTROL_OFFSET: regs.ALT_STATUS_DEVICE_CONTROL}

    # -- hooks -------------------------------------------------------------------------------

    def bmdma_started(self, index):
        self.channels[index].run_dma()

    def config_written(self, offset, size, old, new):
        if offset <= COMMAND.offset < offset + size and self.bus_master_enabled:
            for channel in self.channels:
                channel.run_dma()
        if offset <= PROG_IF.offset < offset + size:
            self._apply_mode()

    def reset(self):
        self.bmdma.reset()
        for channel in self.channels:
            channel.reset()
        self._apply_mode()

    # -- host side: attachments and media ---------------------------------------------------------

    def attach_drive(self, channel, unit, device):
        """Attach an AtaDevice at ``channel`` (0 primary, 1 secondary), ``unit`` (0 master, 1 slave)."""
        self.channels[channel].attach(unit, device)

    def device(self, channel, unit):
        return self.channels[channel].devices[unit]

    def _packet_device(self, channel, unit):
        device = self.device(channel, unit)
        if device is None or device.kind is not DeviceKind.PACKET:
            raise ConfigError(f"{self.name}: no CD/DVD drive at channel {channel} unit {unit}")
        return device

    def insert(self, channel, unit, backend):
        """Put a medium in the CD/DVD drive; the guest sees a unit attention."""
        self._packet_device(channel, unit).lun.insert(backend)

    def eject(self, channel, unit, force=False):
        """Take the medium out; refused (False) while the guest has locked the
        tray, unless ``force`` (the emergency eject)."""
        return self._packet_device(channel, unit).lun.eject(force=force)

    def snapshot(self):
        return {"native": list(self.native), "config": bytes(self.config.data),
                "bmdma": [c.snapshot() for c in self.bmdma.channels],
                "channels": [c.snapshot() for c in self.channels]}


# -- the factory ---------------------------------------------------------------------------------

DRIVE_TYPES = ("hdd", "dvddrive")
DRIVE_OPTIONS = {"type", "path", "backend", "lun", "format", "read_only", "non_rotational",
                 "discard", "model", "serial"}


def _slot_key(key):
    if isinstance(key, str):
        parts = key.replace(",", ":").split(":")
        try:
            key = tuple(int(p) for p in parts)
        except ValueError:
            raise ConfigError(f"IDE drive position {key!r}: expected 'channel:unit'") from None
    if not (isinstance(key, tuple) and len(key) == 2 and all(k in (0, 1) for k in key)):
        raise ConfigError(f"IDE drive position {key!r}: channel and unit are 0 or 1")
    return key


def _open_unowned(path, **options):
    """Without a machine to own it (unit tests), the caller closes the backend."""
    from drivebay.block.backend import BlockBackend
    return BlockBackend.open(path, **options)


def _make_drive(spec, where, open_medium):
    unknown = set(spec) - DRIVE_OPTIONS
    if unknown:
        raise ConfigError(f"IDE drive {where}: unknown options {', '.join(sorted(unknown))}")
    kind = spec.get("type", "hdd")
    if kind not in DRIVE_TYPES:
        raise ConfigError(f"IDE drive {where}: type {kind!r} (IDE takes {', '.join(DRIVE_TYPES)})")
    names = {k: spec[k] for k in ("model", "serial") if k in spec}
    if kind == "hdd":
        backend = spec.get("backend")
        if backend is None:
            if "path" not in spec:
                raise ConfigError(f"IDE drive {where}: a hard disk needs a path or a backend")
            backend = open_medium(spec["path"], format=spec.get("format"),
                                  read_only=bool(spec.get("read_only", False)),
                                  discard=bool(spec.get("discard", False)),
                                  non_rotational=bool(spec.get("non_rotational", False)))
        return AtaDevice(DeviceKind.DISK, backend=backend, non_rotational=spec.get("non_rotational"),
                         discard=spec.get("discard"), **names)
    lun = spec.get("lun")
    if lun is None:
        backend = spec.get("backend")
        if backend is None and spec.get("path"):
            from drivebay.block.backend import OPTICAL_SECTOR
            backend = open_medium(spec["path"], format=spec.get("format"), read_only=True,
                                  sector_size=OPTICAL_SECTOR)
        try:
            from drivebay.hw.scsi.mmc import ScsiCdrom
        except ImportError as e:
            raise ConfigError(f"IDE drive {where}: the CD/DVD drive needs the SCSI/MMC target "
                              f"(drivebay.hw.scsi.mmc): {e}") from None
        lun = ScsiCdrom(backend)
    return AtaDevice(DeviceKind.PACKET, lun=lun, **names)


def create(device_name, ctx, drives=None, function=1, name=None):
    """Build the IDE function ``device_name`` (a VARIANTS row).

    ``drives`` maps (channel, unit) — or "channel:unit" — to a drive:
    ``{"type": "hdd" | "dvddrive", "path": ..., "backend": BlockBackend,
    "format", "read_only", "non_rotational", "discard", "model", "serial"}``;
    a "dvddrive" with neither path nor backend is an empty drive.
    ``function`` is the PCI function number the machine will use: 1 by
    default, the IDE function of the south bridge at 00:01.1 as on
    VirtualBox's and QEMU's PC.
    """
    variant = VARIANT_BY_NAME[device_name]
    if not 0 <= function < 8:
        raise ConfigError(f"{device_name}: PCI function {function} out of range")
    built = []
    for key, spec in (drives or {}).items():
        channel, unit = _slot_key(key)
        built.append((channel, unit, _make_drive(dict(spec), f"{channel}:{unit}",
                                                 ctx.open_medium or _open_unowned)))
    controller = PciIdeController(variant, ctx.io, ctx.isa_irq, function=function, name=name)
    if None in controller._legacy_regions:
        # Another device holds 1F0h/170h or 3F6h/376h (a second IDE
        # controller: one per VM is the VM file's rule).
        for index in range(2):
            controller._unmap_legacy(index)
        raise ConfigError(f"{device_name}: the legacy IDE ports are already taken")
    for channel, unit, device in built:
        controller.attach_drive(channel, unit, device)
    return controller

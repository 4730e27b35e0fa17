"""The AHCI host bus adapter: VirtualBox's SATA controller, up to 30 ports.

Modelled (Serial ATA AHCI 1.3.1; PCI identity of VirtualBox's "IntelAhci"
controller, the ICH8-M SATA function):

* PCI 8086:2829 rev 02, class 010601 (mass storage, SATA, AHCI 1.0
  programming interface), INTA#, MSI with one vector (32-bit address) at
  capability offset 80h.  BARs 0-3 are the legacy IDE windows VirtualBox
  keeps for old drivers (decoded, nothing behind them: reads float high,
  writes are dropped); BAR4 (16 bytes of I/O) carries the index/data pair
  at offsets 8 and 12 (an ABAR offset, then the register); BAR5 is the
  ABAR: 100h + 30 * 80h = 4352 bytes of registers, rounded up to 8 KiB.
* generic host control (§3.1): CAP, GHC (HR, IE, AE), IS, PI, VS, CCC_CTL
  and CCC_PORTS (command completion coalescing, §11), EM_LOC/EM_CTL (0: no
  enclosure management), CAP2 (0) and BOHC (reserved without CAP2.BOH).
* ports (hw/ahci/port.py), 1-30 of them (VBoxManage --portcount): PI has a
  bit per port; ports without a drive report no device (PxSSTS.DET = 0).
* interrupts (§3.1.3 IS, §3.3.5 PxIS): IS.IPS[x] is set while (PxIS & PxIE) of port x
  is non-zero, and stays set until software writes it with the port's
  cause cleared; INTA# follows (IS != 0 and GHC.IE); with MSI enabled every
  new enabled port event sends the message.  With CCC enabled, completions
  of the ports in CCC_PORTS raise no port interrupt; after CCC_CTL.CC of
  them, or CCC_CTL.TV ms after the first, IS bit CCC_CTL.INT is set.
* HBA reset (GHC.HR, §10.4.3): GHC.IE, IS and the port registers other than
  PxCLB/PxCLBU/PxFB/PxFBU return to their reset values, devices are reset,
  HR reads 0 again at once.

Capabilities (CAP = E9249F80h | NP): 64-bit addressing (S64A), NCQ (SNCQ),
SNotification (SSNTF, for ATAPI media events), staggered spin-up (SSS; so
PxCMD.SUD is read/write and 0 after reset: software spins each port up),
command list override (SCLO), Gen 2 (ISS = 2), AHCI only (SAM: GHC.AE reads
1), PIO multiple DRQ blocks (PMD), 32 command slots (NCS = 31), command
completion coalescing (CCCS).  Not offered: aggressive link power
management and the partial/slumber states (SALP, PSC, SSC), activity LED
(SAL), mechanical presence switches (SMPS), port multipliers (SPM, FBSS),
enclosure management (EMS), external ports (SXS).  VS reads 00010300h:
AHCI 1.3 (the register set this model implements; 1.3.1's DEVSLP is not).

Completion events from the block layer: NCQ requests go to the drive's
BlockBackend with submit(); their completions run when someone calls
poll_completions().  In a machine, the CPU loop does, between slices and
while the CPU halts (``machine_io``: DeviceContext.block_io, the executor it
polls; a drive whose backend has another executor is polled by the HBA).
The HBA also polls the backends with requests in flight before every
register read, so a guest polling PxCI/PxSACT sees a completion as soon as
the host has it; standing alone (device tests) it polls from a virtual-clock
timer every POLL_INTERVAL_NS while requests are outstanding.

Host side: ``attach_drive``/``detach_drive`` hot-plug a drive on a port (refused with
ConfigError unless the attachment is hot-pluggable), ``insert``/``eject``
change the medium of a CD/DVD drive (with asynchronous notification).
"""

from drivebay import trace
from drivebay.errors import ConfigError
from drivebay.hw.ahci import regs as R
from drivebay.hw.ahci import trace as T
from drivebay.hw.ahci.port import ISS, QUEUE_DEPTH, AhciPort
from drivebay.hw.ahci.regfile import RegisterFile
from drivebay.hw.ata.commands import DeviceKind
from drivebay.hw.ata.device import AtaDevice
from drivebay.hw.pci.device import BarKind, PciBar, PciDevice, PciIdentity

DEVICE_NAME = "ahci"
DESCRIPTION = "Intel ICH8-M AHCI SATA controller (8086:2829), up to 30 ports, NCQ, hot-plug"
IDENTITY = PciIdentity(0x8086, 0x2829, 0x010601, revision=0x02, interrupt_pin=1)
MAX_PORTS = 30                   # VirtualBox's SATA controller: --portcount 1..30
MSI_OFFSET = 0x80
ABAR = 5
IDP_BAR = 4
IDP_INDEX, IDP_DATA = 0x8, 0xC  # VirtualBox's index/data pair offsets in BAR4
LEGACY_BARS = ((0, 8), (1, 4), (2, 8), (3, 4), (4, 16))   # (BAR, bytes)
VERSION = 0x00010300             # VS: AHCI 1.3
POLL_INTERVAL_NS = 20_000        # virtual time between polls of in-flight NCQ requests
NS_PER_MS = 1_000_000
# RegisterFile.values keys of the registers read on every interrupt update.
_IS, _GHC, _CCC_CTL, _CCC_PORTS = R.IS.offset, R.GHC.offset, R.CCC_CTL.offset, R.CCC_PORTS.offset
_PxIS, _PxIE = R.PxIS.offset, R.PxIE.offset


def capabilities(ports):
    """CAP for ``ports`` ports (§3.1.1; the choices are in the module docstring)."""
    cap = 0
    for name in ("S64A", "SNCQ", "SSNTF", "SSS", "SCLO", "SAM", "PMD", "CCCS"):
        cap |= R.CAP.mask(name)
    cap |= ISS << R.CAP.field("ISS").lsb
    cap |= (QUEUE_DEPTH - 1) << R.CAP.field("NCS").lsb
    return cap | (ports - 1)


class AhciHba(PciDevice):
    SNAPSHOT_FIELDS = ("ccc_count", "irq_level")

    def __init__(self, ports=1, clock=None, name=DEVICE_NAME, machine_io=None):
        if not 1 <= ports <= MAX_PORTS:
            raise ConfigError(f"{name}: {ports} ports (AHCI here takes 1 to {MAX_PORTS})")
        bars = [PciBar(index, size, BarKind.IO) for index, size in LEGACY_BARS]
        bars.append(PciBar(ABAR, R.ABAR_SIZE, BarKind.MEM32))
        super().__init__(IDENTITY, bars, name=name)
        self.add_msi(vectors=1, is64=False, offset=MSI_OFFSET)
        self.clock = clock
        self.machine_io = machine_io
        self.regs = RegisterFile(R.GENERIC, name)
        self.ports = [AhciPort(self, i) for i in range(ports)]
        self.implemented = (1 << ports) - 1
        self.ccc_count = 0
        self.irq_level = False
        self.idp_index = 0
        self._ccc_timer = clock.timer(self._ccc_timeout, f"{name}.ccc") if clock is not None else None
        self._io_timer = clock.timer(self._io_tick, f"{name}.io") if clock is not None else None
        self._power_on()

    def _generic_resets(self):
        return {R.CAP: capabilities(len(self.ports)), R.GHC: R.GHC_AE, R.PI: self.implemented,
                R.VS: VERSION,
                R.CCC_CTL: 1 << R.CCC_TV.lsb | 1 << R.CCC_CC.lsb | len(self.ports) << R.CCC_INT.lsb}

    # -- interrupts ----------------------------------------------------------------------------

    def _ccc_port(self, port):
        return (self.regs[R.CCC_CTL] & R.CCC_EN) and self.regs[R.CCC_PORTS] >> port.index & 1

    def _pending_ports(self):
        # Runs on every interrupt update: register values read by offset.
        values = self.regs.values
        coalesced = values[_CCC_PORTS] if values[_CCC_CTL] & R.CCC_EN else 0
        pending = 0
        for port in self.ports:
            port_values = port.regs.values
            cause = port_values[_PxIS] & port_values[_PxIE]
            if cause and coalesced >> port.index & 1:
                # §11: completions of a coalesced port raise no port interrupt.
                cause &= ~R.IS_COMPLETIONS
            if cause:
                pending |= 1 << port.index
        return pending

    def port_interrupt(self, port, bits):
        """``port`` set PxIS ``bits``."""
        self.update_irq(new_event=bool(bits & port.regs.values[_PxIE]))

    def update_irq(self, new_event=False):
        """IS from the ports' causes; INTA#/MSI from IS and GHC.IE."""
        values = self.regs.values
        is_ = values[_IS] = values[_IS] | self._pending_ports()
        level = bool(is_) and bool(values[_GHC] & R.GHC_IE)
        if level and (new_event or not self.irq_level) and self.msi.enabled:
            self.msi_notify(0)
        if level != self.irq_level and trace.on.irq:
            T.event("ahci_hba_irq", hba=self.label, level="raised" if level else "cleared", is_=is_)
        self.irq_level = level
        self.set_irq(level)

    def commands_completed(self, port, count):
        """Command completion coalescing (§11): count ``port``'s completions."""
        if not self._ccc_port(port):
            return
        ctl = self.regs[R.CCC_CTL]
        if self.ccc_count == 0 and R.CCC_TV.get(ctl) and self._ccc_timer is not None:
            self._ccc_timer.mod(self.clock.now_ns() + R.CCC_TV.get(ctl) * NS_PER_MS)
        self.ccc_count += count
        threshold = R.CCC_CC.get(ctl)
        if threshold and self.ccc_count >= threshold:
            self._ccc_fire()

    def _ccc_fire(self):
        self.ccc_count = 0
        if self._ccc_timer is not None:
            self._ccc_timer.cancel()
        self.regs.bits(R.IS, 1 << R.CCC_INT.get(self.regs[R.CCC_CTL]), True)
        self.update_irq(new_event=True)

    def _ccc_timeout(self):
        if self.ccc_count and self.regs[R.CCC_CTL] & R.CCC_EN:
            self._ccc_fire()

    # -- block completions ------------------------------------------------------------------------

    def io_started(self, executor=None):
        """A port submitted a queued request to a backend served by
        ``executor``: poll until it completes, unless the machine does."""
        if executor is not None and executor is self.machine_io:
            return
        if self._io_timer is not None and not self._io_timer.pending:
            self._io_timer.mod(self.clock.now_ns() + POLL_INTERVAL_NS)

    def poll_io(self):
        """Deliver the completions of the drives' in-flight requests (the seam
        for the machine's own polling of the I/O executor)."""
        for port in self.ports:
            if port.inflight():
                break
        else:
            return False                  # the common case, before every register read
        busy = [p for p in self.ports if p.inflight()]
        polled = set()
        for port in busy:
            device = port.device
            executor = getattr(device.backend, "io", device.backend)
            if id(executor) not in polled:
                polled.add(id(executor))
                device.backend.poll_completions()
        for port in self.ports:
            port._refresh()
        return any(p.inflight() for p in self.ports)

    def _io_tick(self):
        if self.poll_io():
            self._io_timer.mod(self.clock.now_ns() + POLL_INTERVAL_NS)

    # -- register access (ABAR) ----------------------------------------------------------------------

    def _port_at(self, offset):
        """(port, offset in its registers) for an ABAR offset at or above PORT_BASE."""
        index, rel = divmod(offset - R.PORT_BASE, R.PORT_STRIDE)
        if index >= len(self.ports):
            return None, 0
        return self.ports[index], rel

    def abar_read(self, offset, size):
        if size == 8:
            return self.abar_read(offset, 4) | self.abar_read(offset + 4, 4) << 32
        self.poll_io()
        if offset < R.PORT_BASE:
            return self.regs.read(offset, size)
        port, rel = self._port_at(offset)
        return port.read(rel, size) if port is not None else 0

    def abar_write(self, offset, size, value):
        if size == 8:
            self.abar_write(offset, 4, value & 0xFFFFFFFF)
            self.abar_write(offset + 4, 4, value >> 32)
            return
        if offset < R.PORT_BASE:
            self._generic_write(offset, size, value)
            return
        port, rel = self._port_at(offset)
        if port is not None:
            port.write(rel, size, value)

    def _generic_write(self, offset, size, value):
        result = self.regs.write(offset, size, value)
        if result is None:
            return
        reg, old, new, written = result
        if reg is R.GHC:
            if new & R.GHC_HR:
                self.hba_reset()
                return
            self.update_irq()
        elif reg is R.IS:
            # Bits of unimplemented ports are reserved; a port whose cause is
            # still pending sets its bit again (update_irq).
            self.update_irq()
        elif reg is R.CCC_PORTS:
            self.regs[R.CCC_PORTS] = new & self.implemented
        elif reg is R.CCC_CTL and (old ^ new) & R.CCC_EN:
            self.ccc_count = 0
            if self._ccc_timer is not None:
                self._ccc_timer.cancel()

    def bar_read(self, bar, offset, size):
        if bar == ABAR:
            return self.abar_read(offset, size)
        if bar == IDP_BAR:
            if offset == IDP_INDEX:
                return self.idp_index
            if offset == IDP_DATA:
                return self.abar_read(self.idp_index & (R.ABAR_SIZE - 4), 4)
        return (1 << (8 * size)) - 1

    def bar_write(self, bar, offset, size, value):
        if bar == ABAR:
            self.abar_write(offset, size, value)
        elif bar == IDP_BAR and offset == IDP_INDEX:
            self.idp_index = value & (R.ABAR_SIZE - 4)
        elif bar == IDP_BAR and offset == IDP_DATA:
            self.abar_write(self.idp_index, 4, value)
        else:
            T.event("ahci_hba_legacy_write", hba=self.label, bar=bar, offset=offset, value=value)

    def bar_register_names(self, bar):
        if bar == ABAR:
            return R.register_name
        if bar == IDP_BAR:
            return {IDP_INDEX: "IDP_INDEX", IDP_DATA: "IDP_DATA"}
        return None

    # -- resets ---------------------------------------------------------------------------------------

    def hba_reset(self):
        """GHC.HR (§3.1.2, §10.4.3)."""
        T.event("ahci_hba_reset", hba=self.label)
        ccc = {reg: self.regs[reg] for reg in (R.CCC_CTL, R.CCC_PORTS)}
        self.regs.reset(self._generic_resets())
        for reg, value in ccc.items():
            self.regs[reg] = value
        for port in self.ports:
            port.reset(keep_bases=True)
        self.update_irq()

    def _power_on(self):
        self.regs.reset(self._generic_resets())
        self.ccc_count = 0
        self.idp_index = 0
        for timer in (self._ccc_timer, self._io_timer):
            if timer is not None:
                timer.cancel()
        for port in self.ports:
            port.reset(keep_bases=False)
        self.irq_level = False

    def reset(self):
        """PCI reset: everything to power-on values."""
        self._power_on()

    # -- host side: drives, hot-plug, media -------------------------------------------------------------

    def port(self, index):
        if not 0 <= index < len(self.ports):
            raise ConfigError(f"{self.name}: no port {index} (ports 0-{len(self.ports) - 1})")
        return self.ports[index]

    def attach_drive(self, index, device, hotpluggable=False, running=True):
        """Attach an AtaDevice to port ``index``.  While the guest runs only a
        hot-pluggable attachment is accepted; the guest sees the connect."""
        port = self.port(index)
        if running and not hotpluggable:
            raise ConfigError(f"{port.label}: attaching while the VM runs needs a hot-pluggable drive")
        port.attach(device, hotpluggable)

    def detach_drive(self, index):
        """Remove the drive of port ``index`` (hot-pluggable ones only)."""
        return self.port(index).detach()

    def _packet_device(self, index):
        device = self.port(index).device
        if device is None or device.kind is not DeviceKind.PACKET:
            raise ConfigError(f"{self.name}: no CD/DVD drive at port {index}")
        return device

    def insert(self, index, backend):
        """Put a medium in the CD/DVD drive of port ``index``."""
        self._packet_device(index).lun.insert(backend)
        self.ports[index].notify_media()

    def eject(self, index, force=False):
        """Take the medium out (False while the guest locks the tray, unless ``force``)."""
        done = self._packet_device(index).lun.eject(force=force)
        self.ports[index].notify_media()
        return done

    def snapshot(self):
        state = {name: getattr(self, name) for name in self.SNAPSHOT_FIELDS}
        state["registers"] = {reg.name: self.regs[reg] for reg in R.GENERIC}
        state["config"] = bytes(self.config.data)
        state["ports"] = [p.snapshot() for p in self.ports]
        return state


# -- the factory -------------------------------------------------------------------------------------------

DRIVE_TYPES = ("hdd", "dvddrive")
DRIVE_OPTIONS = {"type", "path", "backend", "lun", "format", "read_only", "non_rotational",
                 "discard", "model", "serial", "hotpluggable"}


def _port_key(key, ports):
    try:
        index = int(key)
    except (TypeError, ValueError):
        raise ConfigError(f"AHCI drive position {key!r}: expected a port number") from None
    if not 0 <= index < ports:
        raise ConfigError(f"AHCI drive position {key!r}: the controller has ports 0-{ports - 1}")
    return index


def make_drive(spec, where, open_medium=None):
    """An AtaDevice from a drive spec (see ``create``).  ``open_medium``
    (DeviceContext.open_medium) opens a path so that the machine owns and
    closes the backend; without it the drive opens the image itself."""
    if open_medium is None:
        from drivebay.block.backend import BlockBackend
        open_medium = BlockBackend.open
    unknown = set(spec) - DRIVE_OPTIONS
    if unknown:
        raise ConfigError(f"AHCI drive {where}: unknown options {', '.join(sorted(unknown))}")
    kind = spec.get("type", "hdd")
    if kind not in DRIVE_TYPES:
        raise ConfigError(f"AHCI drive {where}: type {kind!r} (SATA takes {', '.join(DRIVE_TYPES)})")
    names = {k: spec[k] for k in ("model", "serial") if k in spec}
    if kind == "hdd":
        backend = spec.get("backend")
        if backend is None:
            if "path" not in spec:
                raise ConfigError(f"AHCI drive {where}: a hard disk needs a path or a backend")
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
        from drivebay.hw.scsi.mmc import ScsiCdrom
        lun = ScsiCdrom(backend)
    return AtaDevice(DeviceKind.PACKET, lun=lun, **names)


def create(ctx, ports=1, drives=None, name=None):
    """Build an AHCI HBA with ``ports`` ports (1-30, VBoxManage's --portcount).

    ``drives`` maps a port number to ``{"type": "hdd" | "dvddrive", "path"
    or "backend" (a BlockBackend; for a dvddrive also "lun", a ScsiCdrom),
    "format", "read_only", "non_rotational", "discard", "model", "serial",
    "hotpluggable": bool}``; a "dvddrive" with neither path nor backend is an
    empty drive.
    """
    if isinstance(ports, bool) or not isinstance(ports, int) or not 1 <= ports <= MAX_PORTS:
        raise ConfigError(f"ahci: ports={ports!r}: a port count from 1 to {MAX_PORTS}")
    built = []
    for key, spec in (drives or {}).items():
        index = _port_key(key, ports)
        spec = dict(spec)
        built.append((index, make_drive(spec, str(index), getattr(ctx, "open_medium", None)),
                      bool(spec.get("hotpluggable", False))))
    hba = AhciHba(ports, clock=getattr(ctx, "clock", None), name=name or DEVICE_NAME,
                  machine_io=getattr(ctx, "block_io", None))
    for index, device, hotpluggable in built:
        hba.attach_drive(index, device, hotpluggable=hotpluggable, running=False)
    return hba


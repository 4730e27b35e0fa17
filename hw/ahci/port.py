"""One AHCI port: an ATA bus with one device, driven through FISes and the PRDT.

Modelled (Serial ATA AHCI 1.3.1; FIS semantics from Serial ATA 2.6):

* the port registers of §3.3 (masks from hw/ahci/regs.py) and their side
  effects: PxCMD.ST/FRE/CLO/SUD, PxSCTL.DET (COMRESET, offline), PxCI and
  PxSACT (accepted only while ST is set), PxIS/PxSERR write-1-to-clear with
  PxIS.PCS/PRCS/UFS mirroring PxSERR.DIAG.X/N/F.
* the command list (§4.2.2) and command tables (§4.2.3): the HBA takes the
  set PxCI bits in slot order from the slot after the last one issued (from
  0 after ST is set, §3.3.7), reads the command header and the Register H2D
  FIS, loads the device's task file and lets the ATA core (hw/ata) run the
  command.  A FIS with C clear is a Device Control update (software reset).
  The ATAPI command comes from ACMD when the device asks for its packet.
* data through the PRDT (DBA word aligned, DBC + 1 bytes with bit 0 of DBC
  taken as one, §4.2.3.3), PRDBC written back, PxIS.DPS for entries with I.
* the received-FIS area (§4.2.1): DMA Setup, PIO Setup, D2H Register and
  Set Device Bits FISes written while PxCMD.FRE is set, with PxIS.DSS/PSS/
  DHRS/SDBS for those with the I bit; PxTFD (and, after a reset, PxSIG)
  follow every FIS whether FRE is set or not.
* NCQ (Serial ATA 2.6 §13.6; READ/WRITE FPDMA QUEUED): the device accepts a queued
  command with BSY clear (PxCI cleared), maps the PRDT of slot = tag
  (DMA Setup FIS) and submits the media access to the BlockBackend; each
  completion, in whatever order the backend delivers them, arrives as a Set
  Device Bits FIS clearing its PxSACT bit.
* errors (§6.1): a D2H or SDB FIS with ERR sets PxIS.TFES; a command list,
  command table, PRD or FIS area outside RAM (or bus mastering off) sets
  PxIS.HBFS; a PRDT shorter than the transfer sets PxIS.OFS; a malformed
  command FIS sets PxIS.IFS with PxSERR.ERR.P.  Each stops the port: no
  command is fetched, and the failed command keeps its PxCI bit, until
  software clears PxCMD.ST (§6.2.2), which also clears PxCI and PxSACT.
* COMRESET (PxSCTL.DET = 1 then 0, or PxCMD.SUD 0 -> 1 with staggered
  spin-up): the device's hardware reset, PhyRdy, PxSERR.DIAG.X/N (COMINIT
  received, PhyRdy changed), the signature FIS to PxTFD/PxSIG.
* hot-plug: attach/detach change PxSSTS.DET with PxSERR.DIAG.X and N (a
  change in device presence, a PhyRdy change), and so PxIS.PCS and PRCS.
* asynchronous notification: a CD/DVD drive with the SATA AN feature
  enabled reports media events in a Set Device Bits FIS with N set
  (PxSNTF.PMN bit 0, PxIS.SDBS).

Choices where the spec leaves the behaviour undefined (guest mistakes): ST
set without FRE runs commands but posts no FIS; PxCI/PxSACT writes while ST
is clear are dropped; commands wait in PxCI while the link is down or
PxTFD shows BSY or DRQ; moving PxCLB/PxFB while running is accepted; a
COMRESET while ST is set stops the port until ST is cleared; the W bit
disagreeing with the command's direction is traced and the command's
direction used.  Each is traced as a guest error.

Not modelled: port multipliers and FIS-based switching, link power states
(partial, slumber, DEVSLP), BIST, cold presence detection, enclosure
management.
"""

import enum

from drivebay import trace
from drivebay.errors import ConfigError
from drivebay.hw.ahci import fis as F
from drivebay.hw.ahci import regs as R
from drivebay.hw.ahci import trace as T
from drivebay.hw.ahci.regfile import RegisterFile, describe
from drivebay.hw.ata.commands import SATA_FEATURE_ASYNC_NOTIFICATION, DataDirection, DeviceKind
from drivebay.hw.ata.device import Phase
from drivebay.hw.ata.taskfile import (
    DEVCTL_SRST, SIGNATURE_ATA, SIGNATURE_PACKET, STATUS_BSY, STATUS_DRQ, STATUS_ERR,
    Register as TF,
)
from drivebay.hw.ata.transport import AtaTransport
from drivebay.hw.dma import DmaError

QUEUE_DEPTH = 32                 # CAP.NCS + 1 command slots, and so NCQ tags
ISS = 2                          # CAP.ISS: Gen 2 (3 Gbps), as VirtualBox
TFD_RESET = 0x7F                 # §3.3.8 PxTFD reset value
SIG_RESET = 0xFFFFFFFF
MAX_PRDTL = 0xFFFF               # PRDTL is 16 bits: the walk is bounded by it
# IDENTIFY words 75-79 (ACS-3 Table 45 "Serial ATA capabilities"/"features").
SATA_GEN1, SATA_GEN2, SATA_NCQ = 1 << 1, 1 << 2, 1 << 8
SATA_FEATURE_AN_BIT = 1 << 5     # words 78/79 bit 5: asynchronous notification
# A D2H Register FIS with only its type set: each FIS posted starts from a copy.
_TFD = R.PxTFD.offset            # RegisterFile.values keys of the registers the command path uses
assert R.TFD_STS.lsb == 0 and R.TFD_STS.mask == 0xFF
_D2H_BLANK = F.REG_D2H.pack(F.REG_D2H.defaults(FIS_TYPE=F.FIS_TYPE_REG_D2H))


class PortPhase(enum.Enum):
    STOPPED = "stopped"          # PxCMD.ST clear, nothing in flight (CR clear)
    IDLE = "idle"                # ST set, no command with the device
    COMMAND = "command"          # a command FIS is with the device, not yet ended
    HALTED = "halted"            # a fatal error: nothing fetched until ST is cleared (§6.1.2)
    DRAINING = "draining"        # ST cleared, queued requests still in flight: CR stays set

    # Members are singletons: hash by identity.  Enum's own __hash__ hashes
    # the name in Python, and these members key dicts and sets on every command.
    __hash__ = object.__hash__


_ALL = frozenset(PortPhase)
TRANSITIONS = {
    PortPhase.STOPPED: frozenset({PortPhase.STOPPED, PortPhase.IDLE}),
    PortPhase.IDLE: _ALL,
    PortPhase.COMMAND: _ALL,
    PortPhase.HALTED: frozenset({PortPhase.HALTED, PortPhase.STOPPED, PortPhase.DRAINING}),
    PortPhase.DRAINING: frozenset({PortPhase.DRAINING, PortPhase.STOPPED, PortPhase.IDLE}),
}


def _signature_value(signature):
    count, low, mid, high = signature
    return high << 24 | mid << 16 | low << 8 | count


class _PrdError(Exception):
    """The PRDT walk failed; ``bits`` are the PxIS error bits to report."""

    def __init__(self, bits, why):
        super().__init__(why)
        self.bits = bits


class PrdtCursor:
    """A position in one command's PRDT, handing out guest-memory views."""

    __slots__ = ("memory", "table", "entries", "index", "offset", "moved", "interrupt", "region")

    def __init__(self, memory, table, entries):
        self.memory = memory
        self.table = table           # address of the first PRD
        self.entries = entries       # PRDTL
        self.index = 0
        self.offset = 0              # bytes used of entry ``index``
        self.moved = 0               # bytes transferred (PRDBC)
        self.interrupt = False       # an entry with the I bit was completed
        self.region = None           # (address, length, I) of entry ``index``

    def views(self, nbytes, partial=False):
        """Views covering ``nbytes`` (raises _PrdError); with ``partial``, a
        table that ends first gives what it has, and raises on the next call."""
        out, left = [], nbytes
        while left:
            if self.region is None:
                if self.index >= self.entries:
                    if partial and out:
                        return out
                    raise _PrdError(R.IS_OFS, f"PRDT of {self.entries} entries ends "
                                              f"{left} bytes before the transfer does")
                try:
                    raw = self.memory.read(self.table + F.PRD.size * self.index, F.PRD.size)
                except DmaError as e:
                    raise _PrdError(R.IS_HBFS, f"PRD {self.index} fetch: {e}") from None
                dba, dbau, _, dw3 = F.PRD_WORDS.unpack(raw)
                address = dbau << 32 | dba & F.PRD_DBA_MASK
                # §4.2.3.3: DBC bit 0 "must always be 1": the count is even.
                length = (dw3 & F.PRD_DBC_MASK | 1) + 1
                self.region = (address, length, bool(dw3 & F.PRD_I))
            address, length, irq = self.region
            n = min(left, length - self.offset)
            try:
                out.append(self.memory.view(address + self.offset, n))
            except DmaError as e:
                raise _PrdError(R.IS_HBFS, f"PRD {self.index} region: {e}") from None
            self.offset += n
            self.moved += n
            left -= n
            if self.offset == length:
                self.interrupt |= irq
                self.index += 1
                self.offset = 0
                self.region = None
        return out


class AhciPort(AtaTransport):
    """Port ``index`` of ``hba``; the transport of its one AtaDevice."""

    queue_depth = QUEUE_DEPTH
    SNAPSHOT_FIELDS = ("phase", "slot", "next_slot", "link_up", "hotpluggable", "sig_pending",
                       "an_sent", "command_ended", "command_failed", "pio_in")

    def __init__(self, hba, index):
        self.hba = hba
        self.index = index
        self.label = f"{hba.name}.p{index}"
        self.regs = RegisterFile(R.PORT, f"{hba.name}.P{index}")
        self.device = None
        self.hotpluggable = True      # an empty port takes a hot-plugged drive
        self.phase = PortPhase.STOPPED
        self.slot = None              # the slot whose command is with the device
        self.next_slot = 0
        self.link_up = False
        self.sig_pending = False
        self.an_sent = False
        self.cursor = None
        self.header = None
        self.command_ended = False
        self.command_failed = False
        self.pio_in = False
        self._pio_pending = False
        self._dma_pending = False
        self._ncq_interrupts = 0      # tags whose PRDT had an entry with the I bit

    # -- state ----------------------------------------------------------------------------

    def _enter(self, phase):
        assert phase in TRANSITIONS[self.phase], f"{self.label}: {self.phase} -> {phase}"
        if phase is not self.phase and trace.on.dev:
            T.event("ahci_port_phase", port=self.label, old=self.phase.value, new=phase.value)
        self.phase = phase

    @property
    def memory(self):
        return self.hba.dma

    def _cmd(self, mask):
        return bool(self.regs[R.PxCMD] & mask)

    def reset_values(self):
        hpcp = R.CMD_HPCP if self.hotpluggable else 0
        return {R.PxCMD: R.PxCMD.reset | hpcp}

    # -- interrupts (§3.3.5; the HBA side is hba.py) -------------------------------------------

    def _raise(self, bits):
        """Set PxIS ``bits`` and let the HBA update IS and its interrupt."""
        self.regs.bits(R.PxIS, bits, True)
        if trace.on.irq:
            T.event("ahci_port_irq", port=self.label, bits=describe(R.PxIS, bits))
        self.hba.port_interrupt(self, bits)

    def _sync_serr(self):
        """PxIS.PCS, PRCS and UFS reflect PxSERR.DIAG.X, N and F (§3.3.5)."""
        serr = self.regs[R.PxSERR]
        old = self.regs[R.PxIS]
        mirrored = ((R.IS_PCS if serr & R.SERR_DIAG_X else 0)
                    | (R.IS_PRCS if serr & R.SERR_DIAG_N else 0)
                    | (R.IS_UFS if serr & R.SERR_DIAG_F else 0))
        new = (old & ~(R.IS_PCS | R.IS_PRCS | R.IS_UFS)) | mirrored
        self.regs[R.PxIS] = new
        if new & ~old:
            self._raise(new & ~old)
        else:
            self.hba.update_irq()

    def _serror(self, bits):
        self.regs.bits(R.PxSERR, bits, True)
        self._sync_serr()

    def _fatal(self, bits, why):
        """A host-side error (§6.1.2): report ``bits`` and stop the port."""
        trace.guest_error(self.label, f"{why}: PxIS +{describe(R.PxIS, bits)}, port stopped")
        self.command_failed = True
        if self.phase in (PortPhase.IDLE, PortPhase.COMMAND):
            self._enter(PortPhase.HALTED)
        self._raise(bits)

    # -- guest memory --------------------------------------------------------------------------

    def _clb(self):
        return self.regs[R.PxCLBU] << 32 | self.regs[R.PxCLB]

    def _fb(self):
        return self.regs[R.PxFBU] << 32 | self.regs[R.PxFB]

    def _post_fis(self, offset, data, irq_bit, irq):
        """Write a received FIS when PxCMD.FRE is set; its PxIS bit with I."""
        if not self._cmd(R.CMD_FRE):
            return
        try:
            self.memory.write(self._fb() + offset, data)
        except DmaError as e:
            self._fatal(R.IS_HBFS, f"received FIS area at {self._fb() + offset:#x}: {e}")
            return
        if irq:
            self._raise(irq_bit)

    def _set_tfd(self, status, error):
        self.regs[R.PxTFD] = (error & 0xFF) << 8 | status & 0xFF
        if status & STATUS_ERR:
            self._raise(R.IS_TFES)

    def _post_d2h(self, irq):
        tf = self.device.taskfile
        fis = bytearray(_D2H_BLANK)
        fis[F.D2H_PM_I] = F.FLAG_I if irq else 0
        fis[F.D2H_STATUS] = tf.status
        fis[F.D2H_ERROR] = tf.error
        fis[F.D2H_DEVICE] = tf.device
        cur, prev = tf.cur, tf.prev
        for register, cur_at, prev_at in F.D2H_TASKFILE:
            fis[cur_at] = cur[register]
            fis[prev_at] = prev[register]
        if self.sig_pending:
            # §3.3.9: PxSIG holds the signature of the first D2H Register FIS
            # after a reset (Count, LBA Low, LBA Mid, LBA High).
            self.sig_pending = False
            self.regs[R.PxSIG] = (tf.cur[TF.LBA_HIGH] << 24 | tf.cur[TF.LBA_MID] << 16
                                  | tf.cur[TF.LBA_LOW] << 8 | tf.cur[TF.COUNT])
        if trace.on.dev:
            T.event("ahci_fis_d2h", port=self.label, status=tf.status, error=tf.error,
                    irq=" I" if irq else "")
        self._post_fis(F.RX_RFIS, fis, R.IS_DHRS, irq)
        self._set_tfd(tf.status, tf.error)

    def _post_pio_setup(self, to_host, irq, status, e_status, count):
        tf = self.device.taskfile
        record = F.PIO_SETUP.defaults(
            FIS_TYPE=F.FIS_TYPE_PIO_SETUP, FLAGS=(F.FLAG_D if to_host else 0) | (F.FLAG_I if irq else 0),
            STATUS=status, ERROR=tf.error, DEVICE=tf.device, E_STATUS=e_status,
            TRANSFER_COUNT=count & 0xFFFF)
        for register, cur, prev in F.TASKFILE_FIELDS[1:]:
            record[cur] = tf.cur[register]
            record[prev] = tf.prev[register]
        self._post_fis(F.RX_PSFIS, F.PIO_SETUP.pack(record), R.IS_PSS, irq)
        # PxTFD takes E_Status once the block's data has moved.
        self._set_tfd(e_status, tf.error)

    def _post_dma_setup(self, tag, to_host, nbytes):
        record = F.DMA_SETUP.defaults(FIS_TYPE=F.FIS_TYPE_DMA_SETUP,
                                      FLAGS=(F.FLAG_D if to_host else 0) | F.FLAG_A,
                                      DMA_BUFFER_IDENTIFIER=tag, DMA_TRANSFER_COUNT=nbytes)
        self._post_fis(F.RX_DSFIS, F.DMA_SETUP.pack(record), R.IS_DSS, False)

    def _post_sdb(self, status, error, sactive, notification=False):
        record = F.SET_DEVICE_BITS.defaults(
            FIS_TYPE=F.FIS_TYPE_SET_DEVICE_BITS, FLAGS=F.FLAG_I | (F.SDB_N if notification else 0),
            STATUS=status & F.SDB_STATUS_MASK, ERROR=error, SACTIVE=sactive)
        self._post_fis(F.RX_SDBFIS, F.SET_DEVICE_BITS.pack(record), R.IS_SDBS, True)

    # -- the link: COMRESET, spin-up, hot-plug --------------------------------------------------

    def _link_down(self, det=R.DET_NONE):
        was_up = self.link_up
        self.link_up = False
        self.regs[R.PxSSTS] = det
        self.regs[R.PxTFD] = TFD_RESET
        return was_up

    def _link_ready(self):
        """May the link come up now (spun up, interface not held in reset/offline)?"""
        return self._cmd(R.CMD_SUD) and R.SCTL_DET.get(self.regs[R.PxSCTL]) == R.SCTL_DET_NONE

    def _establish(self):
        """The device answered COMINIT: Phy ready, then its signature FIS."""
        if self.device is None or self.link_up or not self._link_ready():
            return
        limit = R.SCTL_SPD.get(self.regs[R.PxSCTL])
        speed = min(ISS, limit) if limit else ISS
        self.link_up = True
        self.regs[R.PxSSTS] = R.IPM_ACTIVE << R.SSTS_IPM.lsb | speed << R.SSTS_SPD.lsb | R.DET_ESTABLISHED
        self.regs[R.PxSIG] = SIG_RESET
        self.sig_pending = True
        T.event("ahci_link_up", port=self.label, speed=speed)
        # SError DIAG.X: "COMINIT ... received"; DIAG.N: PhyRdy changed.
        self._serror(R.SERR_DIAG_X | R.SERR_DIAG_N)
        # ATA/ATAPI-6 §9.1/§9.12: after a hardware reset the device sends its
        # signature with BSY clear and no interrupt.
        self._post_d2h(False)
        self._process()

    def comreset(self):
        """COMRESET: the device's hardware reset; the link comes up when allowed."""
        was_up = self._link_down()
        if was_up:
            self._serror(R.SERR_DIAG_N)
        if self.device is not None:
            self.device.power_on_reset()
        self.an_sent = False
        self._abandon_command()
        self._establish()

    def attach(self, device, hotpluggable):
        if self.device is not None:
            raise ConfigError(f"{self.label}: port already has a drive")
        device.transport = self
        device.unit = 0
        device.label = self.label
        device.peer_present = False
        self.device = device
        self.hotpluggable = bool(hotpluggable)
        self.regs.bits(R.PxCMD, R.CMD_HPCP, self.hotpluggable)
        device.power_on_reset()
        self._establish()

    def detach(self):
        device = self.device
        if device is None:
            raise ConfigError(f"{self.label}: no drive to remove")
        if not self.hotpluggable:
            raise ConfigError(f"{self.label}: the drive is not hot-pluggable")
        device.power_on_reset()           # aborts its queued commands: their completions go stale
        device.transport = AtaTransport()
        self.device = None
        self._abandon_command()
        was_up = self._link_down()
        self.regs.bits(R.PxCMD, R.CMD_HPCP, True)
        T.event("ahci_drive_removed", port=self.label)
        if was_up:
            self._serror(R.SERR_DIAG_X | R.SERR_DIAG_N)
        return device

    def _abandon_command(self):
        if self.phase is PortPhase.COMMAND:
            self._enter(PortPhase.IDLE)
        self.slot = None
        self.cursor = None
        self._pio_pending = self._dma_pending = False

    # -- asynchronous notification ---------------------------------------------------------------

    def notify_media(self):
        """Send the SDB FIS with N for a pending media event (SATA AN), once
        per batch of events the guest has not yet fetched."""
        device = self.device
        if device is None or device.kind is not DeviceKind.PACKET:
            return
        if not device.lun.media_event_pending:
            self.an_sent = False
            return
        if (self.an_sent or not self.link_up
                or SATA_FEATURE_ASYNC_NOTIFICATION not in device.sata_enabled):
            return
        self.an_sent = True
        T.event("ahci_fis_sdb_notification", port=self.label)
        # §3.3.15: PMN bit of the PM port the FIS came from (0 without a port multiplier).
        self.regs.bits(R.PxSNTF, 1, True)
        self._post_sdb(0, 0, 0, notification=True)

    # -- AtaTransport -------------------------------------------------------------------------------

    def pio_ready(self, device):
        self._pio_pending = True

    def dma_ready(self, device):
        self._dma_pending = True

    def dma_map(self, device, nbytes):
        if self.cursor is None:
            return None
        try:
            return self.cursor.views(nbytes, partial=True)
        except _PrdError as e:
            self._fatal(e.bits, str(e))
            return None

    def command_done(self, device):
        self.command_ended = True

    def sata_features(self, device):
        if device.kind is DeviceKind.PACKET:
            return frozenset({SATA_FEATURE_ASYNC_NOTIFICATION})
        return frozenset()

    def identify_words(self, device, words):
        """Words 75-79 (ACS-3 Table 45): queue depth, SATA capabilities,
        current speed (word 77 bits 3:1), features supported and enabled."""
        words[76] = SATA_GEN1 | SATA_GEN2
        words[77] = ISS << 1
        if device.kind is DeviceKind.DISK:
            words[75] = QUEUE_DEPTH - 1
            words[76] |= SATA_NCQ
        else:
            words[78] = SATA_FEATURE_AN_BIT
            if SATA_FEATURE_ASYNC_NOTIFICATION in device.sata_enabled:
                words[79] = SATA_FEATURE_AN_BIT

    def ncq_map(self, device, tag, nbytes):
        """The PRDT of command slot ``tag``: software puts a queued command in
        the slot whose number is its NCQ tag, and the DMA Setup FIS's buffer
        identifier (the tag) selects that slot's PRDT."""
        try:
            header = self._read_header(tag)
            table = header.CTBAU << 32 | header.CTBA & F.CTBA_MASK
            cursor = PrdtCursor(self.memory, table + F.CT_PRDT, header.PRDTL)
            views = cursor.views(nbytes)
        except _PrdError as e:
            self._fatal(e.bits, f"NCQ tag {tag}: {e}")
            return None
        to_host = device.ncq_queue[tag].direction is DataDirection.IN
        self._post_dma_setup(tag, to_host, nbytes)
        if cursor.interrupt:
            self._ncq_interrupts |= 1 << tag
        self.hba.io_started(getattr(device.backend, "io", None))
        return views

    def ncq_complete(self, device, tags, status, error):
        if device is not self.device or self.phase in (PortPhase.STOPPED, PortPhase.DRAINING):
            self._refresh()
            return
        self.regs.bits(R.PxSACT, tags, False)
        if trace.on.dev:
            T.event("ahci_fis_sdb", port=self.label, tags=tags, status=status, error=error,
                    sact=self.regs[R.PxSACT])
        dps, self._ncq_interrupts = self._ncq_interrupts & tags, self._ncq_interrupts & ~tags
        self._post_sdb(status, error, tags)
        # PxTFD.STS bits 6:4 and 2:0 (Status-Hi/Lo) and PxTFD.ERR come from the SDB FIS.
        sts = (R.TFD_STS.get(self.regs[R.PxTFD]) & ~F.SDB_STATUS_MASK) | status & F.SDB_STATUS_MASK
        self._set_tfd(sts, error)
        if dps:
            self._raise(R.IS_DPS)
        if tags:
            self.hba.commands_completed(self, bin(tags).count("1"))
        if status & STATUS_ERR:
            trace.guest_error(self.label, "NCQ command error: port stopped until PxCMD.ST is cleared")
            if self.phase in (PortPhase.IDLE, PortPhase.COMMAND):
                self._enter(PortPhase.HALTED)

    # -- the command list engine --------------------------------------------------------------------

    def _read_header(self, slot):
        address = self._clb() + F.COMMAND_HEADER.size * slot
        try:
            raw = self.memory.read(address, F.COMMAND_HEADER.size)
        except DmaError as e:
            raise _PrdError(R.IS_HBFS, f"command header {slot} at {address:#x}: {e}") from None
        return F.CommandHeader._make(F.HEADER_WORDS.unpack_from(raw))

    def _can_issue(self):
        if self.phase is not PortPhase.IDLE or not self.link_up or self.device is None:
            return False
        # §5.3 (P:Idle): no command FIS is sent while PxTFD.STS.BSY or DRQ is set.
        return not self.regs.values[_TFD] & (STATUS_BSY | STATUS_DRQ)    # TFD_STS: bits 7:0

    def _process(self):
        """Issue the commands waiting in PxCI, one at a time."""
        while self._can_issue():
            pending = self.regs[R.PxCI]
            if not pending:
                return
            rotated = (pending >> self.next_slot | pending << (QUEUE_DEPTH - self.next_slot)) & 0xFFFFFFFF
            slot = (self.next_slot + (rotated & -rotated).bit_length() - 1) % QUEUE_DEPTH
            self.next_slot = (slot + 1) % QUEUE_DEPTH
            self._issue(slot)

    def _issue(self, slot):
        self.regs.set_field(R.PxCMD, R.CMD_CCS, slot)
        self.slot = slot
        self.command_ended = self.command_failed = self.pio_in = False
        self._enter(PortPhase.COMMAND)
        try:
            header = self._read_header(slot)
            table = header.CTBAU << 32 | header.CTBA & F.CTBA_MASK
            raw = self.memory.read(table + F.CT_CFIS, F.REG_H2D.size)
            self.memory.write_u32(self._clb() + F.COMMAND_HEADER.size * slot + F.HEADER_PRDBC, 0)
        except _PrdError as e:
            self._fatal(e.bits, str(e))
            return
        except DmaError as e:
            self._fatal(R.IS_HBFS, f"command table of slot {slot}: {e}")
            return
        self.header = header
        # The command FIS's bytes are read by their Layout offsets (fis.py).
        fis_type = raw[F.H2D_TYPE]
        cfl = header.DW0 & F.CH_CFL
        if fis_type != F.FIS_TYPE_REG_H2D or not F.REG_H2D.size // 4 <= cfl <= F.CFL_MAX:
            self._serror(R.SERR_ERR_P)
            self._fatal(R.IS_IFS, f"slot {slot}: command FIS type {fis_type:#04x} "
                                  f"length {cfl} dwords is not a Register H2D FIS")
            return
        self.cursor = PrdtCursor(self.memory, table + F.CT_PRDT, header.PRDTL)
        # The HBA sets BSY as it sends the command FIS.
        values = self.regs.values
        values[_TFD] |= STATUS_BSY
        if not raw[F.H2D_PM_C] & F.H2D_C:
            self._control(raw[F.H2D_CONTROL], header)
            return
        command = raw[F.H2D_COMMAND]
        if trace.on.dev:
            T.event("ahci_cmd_issue", port=self.label, slot=slot, command=command,
                    prdtl=header.PRDTL, flags=(" ATAPI" if header.DW0 & F.CH_A else "")
                    + (" W" if header.DW0 & F.CH_W else ""))
        device = self.device
        tf = device.taskfile
        cur, prev = tf.cur, tf.prev
        for register, cur_at, prev_at in F.H2D_TASKFILE:
            cur[register] = raw[cur_at]
            prev[register] = raw[prev_at]
        tf.write(TF.DEVICE, raw[F.H2D_DEVICE])
        device.execute(command)
        self._run_device()

    def _control(self, control, header):
        """A Register H2D FIS with C clear: ``control``, the Device Control register."""
        device = self.device
        was_reset = device.srst
        device.set_device_control(control)
        T.event("ahci_cmd_control", port=self.label, slot=self.slot, control=control,
                flags=" (clear busy on R_OK)" if header.DW0 & F.CH_C else "")
        if was_reset and not control & DEVCTL_SRST:
            # The device leaves its software reset with a D2H FIS: signature.
            self.sig_pending = True
            self._post_d2h(False)
        elif control & DEVCTL_SRST and not header.DW0 & F.CH_C:
            return                        # BSY and the PxCI bit stay: the device answers nothing
        else:
            # §4.2.2 C: "clear PxTFD.STS.BSY and PxCI.CI(pIssueSlot) after
            # transmitting this FIS and receiving R_OK"; a Device Control
            # update without reset needs no answer either.
            self.regs[R.PxTFD] = self.regs[R.PxTFD] & ~STATUS_BSY
        self._end_command(clear=True)

    def _run_device(self):
        """Move the device's data phases until the command ends or waits."""
        device = self.device
        while device is self.device and self.phase is PortPhase.COMMAND:
            if self._pio_pending:
                self._pio_pending = False
                self._pio_block()
            elif self._dma_pending:
                self._dma_pending = False
                self._check_direction(device.dma_direction)
                device.dma_run()
            else:
                break
        if self.command_ended and device is self.device and self.phase in (PortPhase.COMMAND,
                                                                           PortPhase.HALTED):
            self._complete()

    def _check_direction(self, direction):
        writes = bool(self.header.DW0 & F.CH_W)
        if writes != (direction is DataDirection.OUT):
            trace.guest_error(self.label, f"command header W={int(writes)} disagrees with a "
                                          f"{direction.value} transfer: the command's direction is used")

    def _pio_block(self):
        device = self.device
        n = device.pio_remaining
        if device.phase is Phase.PACKET:
            try:
                table = self.header.CTBAU << 32 | self.header.CTBA & F.CTBA_MASK
                acmd = self.memory.read(table + F.CT_ACMD, F.CT_ACMD_SIZE)
            except DmaError as e:
                self._fatal(R.IS_HBFS, f"ATAPI command of slot {self.slot}: {e}")
                acmd = bytes(F.CT_ACMD_SIZE)
            if not self.header.DW0 & F.CH_A:
                trace.guest_error(self.label, "PACKET command without the header's A bit: ACMD sent anyway")
            device.pio_write(acmd[:n])
            return
        status = device.taskfile.status
        irq = device.intrq_asserted
        # The FIS's I bit carries this block's INTRQ: acknowledge it, so the
        # device's request reflects only what comes after the block.
        device.read_status()
        to_host = device.phase is Phase.PIO_IN
        self._check_direction(DataDirection.IN if to_host else DataDirection.OUT)
        if to_host:
            self.pio_in = True
            data = device.pio_read(n)
            views = self._pio_views(n)
            at = 0
            for v in views:
                v[:] = data[at:at + len(v)]
                at += len(v)
        else:
            views = self._pio_views(n)
            device.pio_write(b"".join(views) if views else bytes(n))
        self._post_pio_setup(to_host, irq, status, device.taskfile.status, n)

    def _pio_views(self, n):
        """The PRDT views of one PIO block; [] after a PRD error (the data is
        dropped, zeros go out, and the port is stopped)."""
        if self.command_failed:
            return []
        try:
            return self.cursor.views(n)
        except _PrdError as e:
            self._fatal(e.bits, str(e))
            return []

    def _complete(self):
        """The device ended the command: FIS, PxTFD, PRDBC, PxCI."""
        device = self.device
        tf = device.taskfile
        irq = device.intrq_asserted
        if self.pio_in and not irq and not tf.status & STATUS_ERR:
            # A PIO data-in command ends with its last PIO Setup FIS (E_Status);
            # no D2H Register FIS follows.
            pass
        else:
            self._post_d2h(irq)
        device.read_status()
        if self.cursor is not None and self.slot is not None:
            try:
                self.memory.write_u32(self._clb() + F.COMMAND_HEADER.size * self.slot + F.HEADER_PRDBC,
                                      self.cursor.moved)
            except DmaError as e:
                self._fatal(R.IS_HBFS, f"PRDBC of slot {self.slot}: {e}")
            if self.cursor.interrupt:
                self._raise(R.IS_DPS)
        failed = self.command_failed or tf.status & STATUS_ERR
        self._end_command(clear=not failed)
        if device.kind is DeviceKind.PACKET:
            self.notify_media()

    def _end_command(self, clear):
        slot = self.slot
        self.slot = None
        self.cursor = None
        self.command_ended = False
        if clear:
            self.regs.bits(R.PxCI, 1 << slot, False)
            self.hba.commands_completed(self, 1)
            if self.phase is PortPhase.COMMAND:
                self._enter(PortPhase.IDLE)
        elif self.phase is PortPhase.COMMAND:
            # §6.2.2.1: the failed command keeps its PxCI bit; PxCMD.CCS names it.
            self._enter(PortPhase.HALTED)

    # -- register side effects -------------------------------------------------------------------

    def _refresh(self):
        """Bring the running bits up to date (queued requests may have drained)."""
        if self.phase is PortPhase.DRAINING and not (self.device and self.device.ncq_inflight):
            self._enter(PortPhase.STOPPED)
        running = self.phase is not PortPhase.STOPPED
        self.regs.bits(R.PxCMD, R.CMD_CR, running)
        self.regs.bits(R.PxCMD, R.CMD_FR, self._cmd(R.CMD_FRE))

    def inflight(self):
        return self.device is not None and self.device.ncq_inflight > 0

    def read(self, offset, size):
        if offset & ~3 == R.PxCMD.offset:
            self._refresh()
        return self.regs.read(offset, size)

    def write(self, offset, size, value):
        result = self.regs.write(offset, size, value)
        if result is None:
            return
        reg, old, new, written = result
        if reg is R.PxCMD:
            self._cmd_written(old, new)
        elif reg is R.PxCI or reg is R.PxSACT:
            if not self._cmd(R.CMD_ST):
                trace.guest_error(self.label, f"{reg.name} <- {written:#x} while PxCMD.ST is clear: dropped")
                self.regs[reg] = old
            elif reg is R.PxCI:
                self._process()
        elif reg is R.PxSCTL:
            self._sctl_written(old, new)
        elif reg is R.PxSERR:
            self._sync_serr()
        elif reg is R.PxIS or reg is R.PxIE:
            self.hba.update_irq()
        elif reg in (R.PxCLB, R.PxCLBU) and self.phase is not PortPhase.STOPPED:
            trace.guest_error(self.label, f"{reg.name} moved while the port runs")
        elif reg in (R.PxFB, R.PxFBU) and self._cmd(R.CMD_FRE):
            trace.guest_error(self.label, f"{reg.name} moved while PxCMD.FRE is set")

    def _cmd_written(self, old, new):
        if new & R.CMD_ICC:
            # ICC: the only state is active; the request completes at once and
            # the field reads 0 (idle, ready for the next request).
            self.regs.bits(R.PxCMD, R.CMD_ICC, False)
        if new & R.CMD_CLO:
            # §3.3.7 CLO: BSY and DRQ of PxTFD.STS are cleared, then CLO.
            self.regs[R.PxTFD] = self.regs[R.PxTFD] & ~(STATUS_BSY | STATUS_DRQ)
            self.regs.bits(R.PxCMD, R.CMD_CLO, False)
        if (new ^ old) & R.CMD_SUD:
            if new & R.CMD_SUD:
                T.event("ahci_link_comreset", port=self.label, why="spin-up")
                self.comreset()
            else:
                # SUD cleared: the port goes to listen mode, the link down.
                if self._link_down():
                    self._serror(R.SERR_DIAG_N)
        if (new ^ old) & R.CMD_ST:
            if new & R.CMD_ST:
                self._start()
            else:
                self._stop()
        self._refresh()
        if new & R.CMD_ST and not old & R.CMD_ST or new & R.CMD_CLO:
            self._process()

    def _start(self):
        if not self._cmd(R.CMD_FRE):
            trace.guest_error(self.label, "PxCMD.ST set without PxCMD.FRE: no FIS will be posted")
        if self.phase is PortPhase.DRAINING:
            trace.guest_error(self.label, "PxCMD.ST set before PxCMD.CR cleared")
        self.next_slot = 0
        self.slot = None
        self._enter(PortPhase.IDLE)

    def _stop(self):
        # §3.3.7 ST, §3.3.13, §3.3.14: PxCI and PxSACT clear, CCS returns to 0.
        self.regs[R.PxCI] = 0
        self.regs[R.PxSACT] = 0
        self.regs.set_field(R.PxCMD, R.CMD_CCS, 0)
        self.slot = None
        self.cursor = None
        self._ncq_interrupts = 0
        self._enter(PortPhase.DRAINING if self.inflight() else PortPhase.STOPPED)

    def _sctl_written(self, old, new):
        det_old, det = R.SCTL_DET.get(old), R.SCTL_DET.get(new)
        if det == det_old:
            return
        if det == R.SCTL_DET_COMRESET:
            if self._cmd(R.CMD_ST):
                trace.guest_error(self.label, "COMRESET with PxCMD.ST set: port stopped until ST clears")
                if self.phase in (PortPhase.IDLE, PortPhase.COMMAND):
                    self._enter(PortPhase.HALTED)
            T.event("ahci_link_comreset", port=self.label, why="PxSCTL.DET = 1")
            if self._link_down():
                self._serror(R.SERR_DIAG_N)
            if self.device is not None:
                self.device.power_on_reset()
            self._abandon_command()
        elif det == R.SCTL_DET_OFFLINE:
            if self._link_down(R.DET_OFFLINE):
                self._serror(R.SERR_DIAG_N)
        elif det == R.SCTL_DET_NONE:
            if det_old == R.SCTL_DET_OFFLINE and self.regs[R.PxSSTS] == R.DET_OFFLINE:
                self.regs[R.PxSSTS] = R.DET_NONE
            self._establish()

    # -- resets ---------------------------------------------------------------------------------------

    def reset(self, keep_bases):
        """HBA reset (``keep_bases``: GHC.HR keeps PxCLB/PxCLBU/PxFB/PxFBU,
        §3.1.2) or power-on.  With staggered spin-up PxCMD.SUD returns to 0,
        so the link stays down until software spins the device up."""
        bases = {reg: self.regs[reg] for reg in (R.PxCLB, R.PxCLBU, R.PxFB, R.PxFBU)}
        self.regs.reset(self.reset_values())
        if keep_bases:
            for reg, value in bases.items():
                self.regs[reg] = value
        if self.device is not None:
            self.device.power_on_reset()
        self.phase = PortPhase.STOPPED
        self.slot = None
        self.cursor = None
        self.next_slot = 0
        self.link_up = False
        self.sig_pending = False
        self.an_sent = False
        self.command_ended = self.command_failed = self.pio_in = False
        self._pio_pending = self._dma_pending = False
        self._ncq_interrupts = 0
        self._refresh()

    def snapshot(self):
        state = {name: getattr(self, name) for name in self.SNAPSHOT_FIELDS}
        state["phase"] = self.phase.value
        state["registers"] = {reg.name: self.regs[reg] for reg in R.PORT}
        state["device"] = self.device.snapshot() if self.device is not None else None
        return state


# The reset signatures PxSIG reports (§3.3.9, ATA/ATAPI-6 §9.12).
SIGNATURE_DISK = _signature_value(SIGNATURE_ATA)        # 00000101h
SIGNATURE_ATAPI = _signature_value(SIGNATURE_PACKET)    # EB140101h

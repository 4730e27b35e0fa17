"""One ATA device: a disk (ATA/ACS command set) or a CD/DVD drive (PACKET).

Modelled (ACS-3 for the commands, ATA/ATAPI-6 §9 for the protocols and
reset): the device's task file, its protocol phase as an explicit state
machine, and every command of hw/ata/commands.py — READ/WRITE SECTORS,
MULTIPLE and DMA in 28- and 48-bit forms with CHS when the LBA bit is
clear, READ VERIFY, FLUSH CACHE, DATA SET MANAGEMENT (TRIM), SET FEATURES,
SET MULTIPLE MODE, INITIALIZE DEVICE PARAMETERS, IDENTIFY (PACKET) DEVICE,
READ NATIVE MAX ADDRESS, power management, EXECUTE DEVICE DIAGNOSTIC,
DEVICE RESET, software reset, and PACKET as a transport into the SCSI/MMC
target of hw/scsi (the CD/DVD command set lives there and only there).
On a transport with NCQ (SATA): READ/WRITE FPDMA QUEUED, run asynchronously
through the BlockBackend's submit() and completed in the order the backend
delivers, with the NCQ Command Error log; READ LOG EXT (log directory, NCQ
Command Error log); SET FEATURES enable/disable SATA feature.

The device talks to its controller only through an AtaTransport
(hw/ata/transport.py); it never knows whether it sits on an IDE cable or an
AHCI port.  It runs synchronously: a command's media access happens inside
the register write (or DMA start) that makes it possible, as IDE does on
VirtualBox.  Queued (NCQ) commands are the exception: accepted at once, their
media access completes when the backend's completion event is delivered.

Error choices (ACS-3 §6.3 lists which error bits each command may set):

* an address outside the medium: ERR + IDNF, the first inaccessible LBA in
  the LBA registers; nothing is transferred.
* a host read failure (ImageError and the like): ERR + UNC with the failing
  LBA — "uncorrectable data error" is what a read of an unreadable sector
  reports.
* a host write or flush failure, a write to a read-only medium: ERR + ABRT.
  ACS-3 gives write commands no UNC; ABRT ("the device was unable to
  complete the command") is what QEMU reports too.
* a DMA bus error (transport reports it): ERR + ABRT, INTRQ, so the guest
  sees the controller's error status without waiting for a timeout.
* an opcode the table lacks, or a command the device kind does not
  implement: ERR + ABRT.  IDENTIFY DEVICE and READ SECTORS to a PACKET
  device also load the PACKET signature (ATA/ATAPI-6 §8.15, §8.27).
* a command written while BSY or DRQ is set: ignored (ATA/ATAPI-6 §7.4: "the
  host shall not write the Command register when BSY or DRQ is set"), except
  DEVICE RESET to a PACKET device, which is defined for that case.

NCQ errors (ACS-3 READ/WRITE FPDMA QUEUED "Error outputs", the NCQ Command
Error log; Serial ATA 2.6 §13.6.3 "Error handling"): a queued command that
fails (IDNF outside the medium, UNC on a host read failure, ABRT on a write
failure) is reported with ERR and the device aborts every other queued
command; until the host reads log 10h, queued commands are aborted.  A
queued command with a tag beyond the transport's depth or already in use,
or a non-queued command while queued ones are outstanding, is aborted
(ABRT) together with every queued command; the log then has NQ set.

Not modelled: overlapped commands and TCQ, SMART, security, HPA/SET MAX,
WRITE LOG, READ LOG DMA EXT, NCQ priority and streaming, 16-byte command
packets.
"""

import enum
from dataclasses import dataclass

from drivebay import trace
from drivebay.errors import DrivebayError
from drivebay.hw import identity
from drivebay.hw.ata import commands as cmds
from drivebay.hw.ata import geometry
from drivebay.hw.ata.commands import DataDirection, DeviceKind, Protocol, TransferKind
from drivebay.block.io import Op, Request
from drivebay.hw.ata.identify import MAX_DSM_BLOCKS, MAX_MULTIPLE, identify_device, identify_packet_device
from drivebay.hw.ata.logs import LOG_NCQ_COMMAND_ERROR, log_directory, ncq_command_error_log
from drivebay.hw.ata.taskfile import (
    DEVCTL_HOB, DEVCTL_NIEN, DEVCTL_SRST, DEVICE_LBA, DIAG_PASSED, ERROR_ABRT, ERROR_IDNF,
    ERROR_SENSE_KEY_SHIFT, ERROR_UNC, IREASON_COD, IREASON_IO, MAX_LBA28, PACKET_FEATURE_DMA,
    PACKET_FEATURE_OVL, SIGNATURE_ATA, SIGNATURE_PACKET, STATUS_BSY, STATUS_DRDY, STATUS_DRQ,
    STATUS_DSC, STATUS_ERR,
    Register, TaskFile, describe_error, describe_status,
)
from drivebay.hw.ata.transport import AtaTransport
from drivebay.hw.scsi.bus import Direction, Status
from drivebay.hw.scsi.sense import SenseKey, parse_sense

SECTOR = 512
PACKET_SIZE = 12                 # IDENTIFY PACKET DEVICE word 0 bits 1:0 = 00b
# ATA/ATAPI-6 §8.21: a byte count limit of FFFFh is taken as FFFEh, and a
# DRQ data block other than the last has an even byte count.
MAX_BYTE_COUNT = 0xFFFE
# DATA SET MANAGEMENT (ACS-3 §7.5.3.2): LBA Range Entries are 8 bytes, LBA in
# bits 47:0, range length in bits 63:48 (0 = entry not used).
DSM_ENTRY = 8
DSM_TRIM = 0x01                  # Features bit 0: TRIM

SENSE_ABORTED_COMMAND = SenseKey.ABORTED_COMMAND

# CHECK POWER MODE results (ACS-3 §7.8 Table 37, Count field).
POWER_STANDBY = 0x00
POWER_IDLE = 0x80
POWER_ACTIVE = 0xFF


class Phase(enum.Enum):
    """Where the device is in a command protocol (ATA/ATAPI-6 §9)."""

    IDLE = "idle"                # no command; last outputs acknowledged
    PIO_IN = "pio-in"            # DRQ: a data block for the host
    PIO_OUT = "pio-out"          # DRQ: room for a data block from the host
    PACKET = "packet"            # DRQ: waiting for the command packet (C/D = 1)
    DMA = "dma"                  # data moves through the transport's DMA engine
    STATUS = "status"            # command done, INTRQ raised, status not yet read
    RESET = "reset"              # SRST asserted: BSY

    # Members are singletons: hash by identity.  Enum's own __hash__ hashes
    # the name in Python, and these members key dicts and sets on every command.
    __hash__ = object.__hash__


# Legal transitions (the owner of the state machine is this module alone).
_ANY_START = frozenset({Phase.IDLE, Phase.PIO_IN, Phase.PIO_OUT, Phase.PACKET, Phase.DMA,
                        Phase.STATUS, Phase.RESET})
# Every phase may go to IDLE (DEVICE RESET, or PIO data-in ending without
# INTRQ) and to RESET (SRST).
TRANSITIONS = {
    Phase.IDLE: _ANY_START,
    Phase.STATUS: _ANY_START,
    Phase.PIO_IN: frozenset({Phase.PIO_IN, Phase.STATUS, Phase.IDLE, Phase.RESET}),
    Phase.PIO_OUT: frozenset({Phase.PIO_OUT, Phase.STATUS, Phase.IDLE, Phase.RESET}),
    Phase.PACKET: frozenset({Phase.PIO_IN, Phase.PIO_OUT, Phase.DMA, Phase.STATUS, Phase.IDLE,
                             Phase.RESET}),
    Phase.DMA: frozenset({Phase.STATUS, Phase.IDLE, Phase.RESET}),
    Phase.RESET: frozenset({Phase.RESET, Phase.IDLE}),
}


class Transfer(enum.Enum):
    """What the data of the current phase is."""

    NONE = "none"
    SECTORS = "sectors"          # medium sectors (READ/WRITE)
    BUFFER = "buffer"            # one device buffer (IDENTIFY, DSM ranges)
    CDB = "cdb"                  # the PACKET command packet
    PACKET_DATA = "packet-data"  # SCSI data of a PACKET command


@dataclass(frozen=True)
class NcqCommand:
    """One queued command the device holds (READ/WRITE FPDMA QUEUED)."""

    tag: int
    direction: DataDirection
    lba: int
    count: int
    fua: bool


# READ/WRITE FPDMA QUEUED inputs (ACS-3 §7.21.3, §7.61.3): NCQ TAG in Count
# bits 7:3, the sector count in Features (15:0), FUA in Device bit 7.
NCQ_TAG_SHIFT = 3
DEVICE_FUA = 0x80


class Addressing(enum.Enum):
    CHS = "chs"
    LBA28 = "lba28"
    LBA48 = "lba48"


class AtaDevice:
    """An ATA disk (``backend``) or ATAPI CD/DVD drive (``lun``, the SCSI/MMC
    logical unit of hw/scsi) on one transport."""

    SNAPSHOT_FIELDS = (
        "phase", "transfer", "intrq", "nien", "hob", "srst", "multiple_count", "pio_mode",
        "dma_mode", "write_cache", "look_ahead", "revert_on_reset", "power", "chs", "pos", "end",
        "lba", "sectors_left", "block_sectors", "block_bytes", "addressing", "dma_direction",
        "dma_remaining", "dma_offset", "dma_target", "packet_dma", "packet_pos",
        "ncq_generation", "ncq_inflight", "ncq_error", "ncq_error_log", "sata_enabled",
    )

    def __init__(self, kind, backend=None, lun=None, transport=None, unit=0, label="ata",
                 model=None, serial=None, non_rotational=None, discard=None):
        self.kind = kind
        # Attachment options (VirtualBox's --nonrotational/--discard); None: the medium's.
        self._non_rotational = non_rotational
        self._discard = discard
        self.backend = backend
        self.lun = lun
        self.transport = transport or AtaTransport()
        self.unit = unit
        self.label = label
        self.peer_present = False
        if kind is DeviceKind.DISK:
            assert backend is not None, "a disk needs a medium"
            self.model = model or identity.DISK_MODEL
            name = getattr(backend, "name", "") or ""
            self.serial = serial or identity.serial_number(getattr(backend, "uuid", None), name)
            self.default_chs = geometry.default_geometry(self.sectors)
        else:
            assert lun is not None, "a PACKET device needs its SCSI logical unit"
            self.model = model or identity.CDROM_MODEL
            # The drive keeps its serial whatever medium is inserted; it is the
            # logical unit's, so IDENTIFY PACKET DEVICE and INQUIRY VPD 80h agree.
            self.serial = serial or getattr(lun, "serial", None) or identity.serial_number(None, "cdrom")
            self.default_chs = None
        self.taskfile = TaskFile()
        self.buffer = bytearray()            # a whole transfer's data (IDENTIFY, DSM, SCSI data)
        self.block = bytearray()             # the current PIO DRQ block
        self.command = None
        self.scsi_request = None
        self.scsi_result = None
        self.ncq_queue = {}                  # tag -> NcqCommand, accepted and not yet completed
        self.ncq_generation = 0              # completions of older generations are stale
        self.ncq_inflight = 0                # backend requests not yet completed (any generation)
        self.power_on_reset()

    # -- medium facts used by IDENTIFY -------------------------------------------------

    @property
    def sectors(self):
        return self.backend.size // SECTOR if self.backend is not None else 0

    @property
    def discard_enabled(self):
        if self.backend is None or self.backend.read_only:
            return False
        if self._discard is not None:
            return bool(self._discard)
        return bool(getattr(self.backend, "discard_enabled", False))

    @property
    def non_rotational(self):
        if self.backend is None:
            return False
        if self._non_rotational is not None:
            return bool(self._non_rotational)
        return bool(getattr(self.backend, "non_rotational", False))

    @property
    def ncq_supported(self):
        return self.kind is DeviceKind.DISK and self.transport.queue_depth > 0

    @property
    def intrq_asserted(self):
        """INTRQ as driven on the cable: requested and not masked by nIEN."""
        return self.intrq and not self.nien

    # -- state machine --------------------------------------------------------------------

    def _enter(self, phase):
        assert phase in TRANSITIONS[self.phase], f"{self.label}: {self.phase} -> {phase}"
        self.phase = phase

    def _set_intrq(self, level):
        if self.intrq != level:
            self.intrq = level
            self.transport.intrq_changed(self)

    @property
    def status(self):
        return self.taskfile.status

    def _ready_status(self):
        # DSC (bit 4) is "seek complete" for a disk; for a PACKET device the
        # bit is SERV, meaningful only with overlap, so it stays clear.
        return STATUS_DRDY | STATUS_DSC if self.kind is DeviceKind.DISK else STATUS_DRDY

    # -- reset ------------------------------------------------------------------------------

    def power_on_reset(self):
        """Power-on or hardware reset (RESET-): everything to its defaults."""
        self.phase = Phase.IDLE
        self.transfer = Transfer.NONE
        self.intrq = False
        self.nien = False
        self.hob = False
        self.srst = False
        self._default_settings()
        self.revert_on_reset = False
        self.power = POWER_ACTIVE
        self.chs = self.default_chs
        self._clear_command()
        self._ncq_abort_all()
        self.ncq_error = False
        self.ncq_error_log = bytes(ncq_command_error_log())
        self.sata_enabled = frozenset()
        if self.lun is not None:
            self.lun.reset()
        self._post_reset()

    def _default_settings(self):
        """What SET FEATURES and SET MULTIPLE MODE change, at power-on."""
        # VirtualBox enables multiple mode at its maximum from power-on, as
        # QEMU does with its own maximum.
        self.multiple_count = MAX_MULTIPLE if self.kind is DeviceKind.DISK else 0
        self.pio_mode = cmds.MAX_PIO_MODE
        # Selected at power-on: UDMA mode 5 (QEMU's choice); the guest's SET
        # FEATURES decides from there.
        self.dma_mode = (TransferKind.UDMA, 5)
        self.write_cache = True
        self.look_ahead = True

    def _clear_command(self):
        self.command = None
        self.transfer = Transfer.NONE
        self.buffer = bytearray()
        self.block = bytearray()
        self.pos = self.end = 0
        self.lba = self.sectors_left = self.block_sectors = self.block_bytes = 0
        self.addressing = Addressing.LBA28
        self.dma_direction = DataDirection.NONE
        self.dma_remaining = self.dma_offset = 0
        self.dma_target = Transfer.NONE
        self.packet_dma = False
        self.packet_pos = 0
        self.scsi_request = None
        self.scsi_result = None

    def _post_reset(self):
        """Outputs after any reset (ATA/ATAPI-6 §9.12 and Table 39): the
        signature, diagnostic code 01h, and BSY clear — a PACKET device
        with DRDY clear too."""
        tf = self.taskfile
        tf.set_signature(SIGNATURE_PACKET if self.kind is DeviceKind.PACKET else SIGNATURE_ATA)
        tf.error = DIAG_PASSED
        tf.status = self._ready_status() if self.kind is DeviceKind.DISK else 0

    def _abandon_command(self):
        if self.phase is Phase.DMA:
            self.transport.dma_end(self, False)
        self._clear_command()

    def set_device_control(self, value):
        """A write of the Device Control register (ATA/ATAPI-6 §7.8)."""
        self.hob = bool(value & DEVCTL_HOB)
        nien = bool(value & DEVCTL_NIEN)
        if nien != self.nien:
            self.nien = nien
            self.transport.intrq_changed(self)
        srst = bool(value & DEVCTL_SRST)
        if srst and not self.srst:
            # §9.2: the device sets BSY "within 400 ns" of SRST and holds it
            # while SRST is one; the command in progress is abandoned.
            self.srst = True
            self._abandon_command()
            self._ncq_abort_all()
            self._enter(Phase.RESET)
            self.taskfile.status = STATUS_BSY
            self._set_intrq(False)
            if trace.on.dev:
                trace.emit("dev", f"{self.label} soft reset asserted")
        elif not srst and self.srst:
            self.srst = False
            # ACS-3 §7.45.13: settings revert at a software reset only if
            # the host enabled reverting (subcommand CCh).
            if self.revert_on_reset:
                self._default_settings()
            self.power = POWER_ACTIVE
            self._enter(Phase.IDLE)
            self._post_reset()
            if trace.on.dev:
                trace.emit("dev", f"{self.label} soft reset done: signature "
                                  f"{'PACKET' if self.kind is DeviceKind.PACKET else 'ATA'}")

    # -- register access (the transport's side) ------------------------------------------------

    def write_register(self, register, value):
        """A host write of a Command Block register other than Command."""
        self.taskfile.write(register, value)
        # §7.8: HOB "shall be cleared to zero by a write to any Command Block register".
        self.hob = False

    def read_register(self, register):
        """A host read of a Command Block register other than Status."""
        # ATA-1 §7.2.13, kept by every later revision's BSY definition: with
        # BSY set, the device owns the registers; reads return Status.
        if self.taskfile.status & STATUS_BSY:
            return self.taskfile.status
        if register is Register.FEATURES:
            # Features is write-only; its address reads the Error register
            # (the HOB bit does not apply to it).
            return self.taskfile.error
        return self.taskfile.read(register, self.hob)

    def read_status(self, acknowledge=True):
        """The Status register; reading it (not Alternate Status) acknowledges
        INTRQ (ATA/ATAPI-6 §5.2.9)."""
        status = self.taskfile.status
        if acknowledge and not status & STATUS_BSY:
            self._set_intrq(False)
            if self.phase is Phase.STATUS:
                self._enter(Phase.IDLE)
        return status

    # -- command dispatch -------------------------------------------------------------------------

    def execute(self, opcode):
        """The host wrote ``opcode`` to the Command register."""
        row = cmds.BY_OPCODE.get(opcode)
        busy = self.taskfile.status & (STATUS_BSY | STATUS_DRQ) or self.phase is Phase.RESET
        if busy and not (row is not None and row.busy_ok and self.kind in row.kinds
                         and self.phase is not Phase.RESET):
            trace.guest_error(self.label, f"command {cmds.command_name(opcode)} written while "
                                          f"{describe_status(self.taskfile.status)}: ignored")
            return
        if busy:
            self._abandon_command()
        if self.ncq_queue and (row is None or row.protocol is not Protocol.NCQ):
            # ACS-3 (NCQ feature set): a command other than an NCQ command while
            # NCQ commands are outstanding is aborted, and so is every one of them.
            trace.guest_error(self.label, f"{cmds.command_name(opcode)} while {len(self.ncq_queue)} "
                                          f"queued commands are outstanding: all aborted")
            self._ncq_abort_all()
            self._ncq_record_error(None, ERROR_ABRT)
            self.taskfile.command = opcode
            self._set_intrq(False)
            if self.phase is Phase.STATUS:
                self._enter(Phase.IDLE)
            self._finish(ERROR_ABRT)
            return
        self.taskfile.command = opcode
        # §5.2.9: INTRQ is negated when the host writes the Command register.
        self._set_intrq(False)
        if self.phase is Phase.STATUS:
            self._enter(Phase.IDLE)
        if row is None or self.kind not in row.kinds or (row.condition and not getattr(self, row.condition)):
            if trace.on.dev:
                trace.emit("dev", f"{self.label} {cmds.command_name(opcode)} not supported by this "
                                  f"{self.kind.value} device: ABRT")
            if row is not None and row.packet_signature and self.kind is DeviceKind.PACKET:
                self.taskfile.set_signature(SIGNATURE_PACKET)
            self._finish(ERROR_ABRT)
            return
        self.command = row
        if trace.on.dev:
            trace.emit("dev", f"{self.label} {row.name}{self._describe_inputs(row)}")
        getattr(self, row.handler)(row)

    def _describe_inputs(self, row):
        tf = self.taskfile
        if row.handler in ("cmd_read_write", "cmd_read_verify"):
            try:
                lba, count, addressing = self._address(row)
            except _AddressError:
                return " (bad CHS address)"
            return f" lba={lba} count={count}" + (" chs" if addressing is Addressing.CHS else "")
        if row.protocol is Protocol.PACKET:
            return f" features={tf.features:#04x} byte_count_limit={tf.byte_count_limit}"
        if row.protocol is Protocol.NCQ:
            return (f" tag={tf.count8 >> NCQ_TAG_SHIFT} lba={tf.lba48()} "
                    f"count={(tf.prev[Register.FEATURES] << 8 | tf.features) or 65536}")
        if row.opcode == 0xEF:
            sub = cmds.FEATURE_BY_CODE.get(tf.features)
            return f" {sub.name if sub else f'subcommand {tf.features:#04x}'} count={tf.count8:#04x}"
        return f" features={tf.features:#04x} count={tf.count8:#04x}"

    # -- completion ---------------------------------------------------------------------------------

    def _finish(self, error=0, interrupt=True):
        """End the command: outputs in the task file, INTRQ if the protocol
        raises one, then tell the transport."""
        tf = self.taskfile
        tf.error = error
        tf.status = self._ready_status() | (STATUS_ERR if error else 0)
        if self.kind is DeviceKind.PACKET and self.command is not None \
                and self.command.protocol is Protocol.PACKET:
            tf.set_count(IREASON_IO | IREASON_COD)
        self._clear_command()
        self._enter(Phase.STATUS if interrupt else Phase.IDLE)
        if trace.on.dev:
            trace.emit("dev", f"{self.label} done: status {describe_status(tf.status)}"
                              + (f" error {describe_error(error)}" if error else ""))
        if interrupt:
            self._set_intrq(True)
        self.transport.command_done(self)

    def _fail_at(self, error, lba):
        self._report(lba, self.sectors_left)
        self._finish(error)

    # -- addressing -----------------------------------------------------------------------------------

    def _address(self, row):
        """(lba, count, addressing) of a read/write command's inputs."""
        tf = self.taskfile
        if row.lba48:
            return tf.lba48(), tf.count48(), Addressing.LBA48
        count = tf.count28()
        if tf.lba_mode:
            return tf.lba28(), count, Addressing.LBA28
        cylinder, head, sector = tf.chs()
        lba = self.chs.to_lba(cylinder, head, sector) if self.chs is not None else None
        if lba is None:
            raise _AddressError
        return lba, count, Addressing.CHS

    def _report(self, lba, remaining):
        """Write an address (and the sectors not transferred) back in the
        form the command used."""
        tf = self.taskfile
        if self.addressing is Addressing.LBA48:
            tf.set_lba48(lba)
            tf.set_count(remaining & 0xFF, remaining >> 8)
        elif self.addressing is Addressing.LBA28:
            tf.set_lba28(lba & (MAX_LBA28 - 1))
            tf.set_count(remaining)
        else:
            tf.set_chs(*self.chs.from_lba(lba))
            tf.set_count(remaining)

    def _check_range(self, row):
        """Decode and bound a media command's address.  Returns (lba, count)
        or None after answering IDNF."""
        try:
            lba, count, self.addressing = self._address(row)
        except _AddressError:
            trace.guest_error(self.label, f"{row.name}: CHS {self.taskfile.chs()} outside the "
                                          f"current translation {self.chs}")
            self.addressing = Addressing.CHS
            self._finish(ERROR_IDNF)
            return None
        sectors = self.sectors
        if lba + count > sectors:
            # ACS-3 §6.3.5: IDNF "the address ... is outside the range of
            # user-accessible addresses"; the LBA field gives the first one.
            first_bad = max(lba, sectors)
            trace.guest_error(self.label, f"{row.name}: lba {lba}+{count} past the end "
                                          f"({sectors} sectors): IDNF")
            self.sectors_left = count
            self._fail_at(ERROR_IDNF, first_bad)
            return None
        self.power = POWER_ACTIVE
        return lba, count

    # -- PIO data path (transport side) ---------------------------------------------------------------

    @property
    def pio_remaining(self):
        if self.phase in (Phase.PIO_IN, Phase.PIO_OUT, Phase.PACKET):
            return self.end - self.pos
        return 0

    @property
    def pio_direction(self):
        return DataDirection.IN if self.phase is Phase.PIO_IN else DataDirection.OUT

    def pio_read(self, n):
        """The host reads ``n`` bytes of the current DRQ block (zeros past its end)."""
        if self.phase is not Phase.PIO_IN:
            trace.guest_error(self.label, f"data read of {n} bytes with no data for the host "
                                          f"(phase {self.phase.value})")
            return bytes(n)
        chunk = bytes(self.block[self.pos:self.pos + n])
        self.pos = min(self.end, self.pos + n)
        if self.pos >= self.end:
            self._pio_block_done()
        return chunk.ljust(n, b"\0")

    def pio_write(self, data):
        """The host writes ``data`` into the current DRQ block (bytes past its end are dropped)."""
        if self.phase not in (Phase.PIO_OUT, Phase.PACKET):
            trace.guest_error(self.label, f"data write of {len(data)} bytes with no data expected "
                                          f"(phase {self.phase.value})")
            return
        n = min(len(data), self.end - self.pos)
        self.block[self.pos:self.pos + n] = data[:n]
        self.pos += n
        if self.pos >= self.end:
            self._pio_block_done()

    def _start_pio(self, phase, data_or_size, interrupt):
        """Present a DRQ block: IN with ``data``, OUT with room for ``size`` bytes."""
        self.block = bytearray(data_or_size)
        self.pos, self.end = 0, len(self.block)
        self._enter(phase)
        self.taskfile.status = self._ready_status() | STATUS_DRQ
        self.taskfile.error = 0
        if interrupt:
            self._set_intrq(True)
        self.transport.pio_ready(self)

    def _pio_block_done(self):
        transfer = self.transfer
        if transfer is Transfer.SECTORS:
            if self.phase is Phase.PIO_IN:
                self._sectors_in_next()
            else:
                self._sectors_out_block()
        elif transfer is Transfer.BUFFER:
            self._finish(0, interrupt=False)
        elif transfer is Transfer.CDB:
            self._packet_cdb(bytes(self.block))
        else:
            assert transfer is Transfer.PACKET_DATA
            self._packet_pio_block_done()

    # -- DMA data path ---------------------------------------------------------------------------------

    def _start_dma(self, direction, target, nbytes, offset):
        self.dma_direction = direction
        self.dma_target = target
        self.dma_remaining = nbytes
        self.dma_offset = offset
        self._enter(Phase.DMA)
        # §9.7 DMA protocol: the device asserts DMARQ with DRQ set until the
        # data has moved.
        self.taskfile.status = self._ready_status() | STATUS_DRQ
        self.transport.dma_ready(self)

    def dma_run(self):
        """Move DMA data through the transport's scatter-gather list: as
        far as it reaches, or to the end of the transfer."""
        if self.phase is not Phase.DMA:
            return
        while self.dma_remaining:
            views = self.transport.dma_map(self, self.dma_remaining)
            if views is None:
                trace.guest_error(self.label, "DMA bus error: command aborted")
                self.transport.dma_end(self, False)
                self._dma_error(ERROR_ABRT)
                return
            if not views:
                if trace.on.dev:
                    trace.emit("dev", f"{self.label} DMA stalled: scatter-gather list ended with "
                                      f"{self.dma_remaining} bytes to go")
                return
            for view in views:
                n = len(view)
                assert 0 < n <= self.dma_remaining
                error = self._dma_move(view)
                if error:
                    self.transport.dma_end(self, False)
                    self._dma_error(error)
                    return
                self.dma_offset += n
                self.dma_remaining -= n
        self.transport.dma_end(self, True)
        self._dma_complete()

    def _dma_move(self, view):
        """Move one segment; returns an ATA error value or 0."""
        offset = self.dma_offset
        if self.dma_target is Transfer.SECTORS:
            try:
                if self.dma_direction is DataDirection.IN:
                    self.backend.readinto(offset, view)
                else:
                    self.backend.write(offset, view)
            except DrivebayError as e:
                trace.guest_error(self.label, f"host I/O error at byte {offset}: {e}")
                return ERROR_UNC if self.dma_direction is DataDirection.IN else ERROR_ABRT
            return 0
        n = len(view)
        if self.dma_direction is DataDirection.IN:
            view[:] = self.buffer[offset:offset + n]
        else:
            self.buffer[offset:offset + n] = view
        return 0

    def _dma_error(self, error):
        if self.dma_target is Transfer.SECTORS:
            # The failing segment starts at dma_offset.
            self.sectors_left = self.dma_remaining // SECTOR
            self._fail_at(error, self.dma_offset // SECTOR)
        elif self.kind is DeviceKind.PACKET and self.command is not None \
                and self.command.protocol is Protocol.PACKET:
            self._finish(ERROR_ABRT | SENSE_ABORTED_COMMAND << ERROR_SENSE_KEY_SHIFT)
        else:
            self._finish(error)

    def _dma_complete(self):
        if self.dma_target is Transfer.SECTORS:
            if self.dma_direction is DataDirection.OUT and not self.write_cache:
                if not self._flush():
                    return
            end = self.dma_offset // SECTOR
            self.sectors_left = 0
            self._report(end - 1, 0)
            self._finish(0)
        elif self.transfer is Transfer.PACKET_DATA:
            self._packet_data_done()
        else:
            self._dsm_ranges()

    # -- READ/WRITE SECTORS, MULTIPLE, DMA -----------------------------------------------------------------

    def cmd_read_write(self, row):
        if row.multiple and self.multiple_count == 0:
            # ACS-3 §7.26: READ MULTIPLE "shall return command aborted" when
            # multiple mode is not enabled.
            trace.guest_error(self.label, f"{row.name} with multiple mode disabled")
            self._finish(ERROR_ABRT)
            return
        if row.direction is DataDirection.OUT and self.backend.read_only:
            trace.guest_error(self.label, f"{row.name} to a read-only medium")
            self._finish(ERROR_ABRT)
            return
        bounds = self._check_range(row)
        if bounds is None:
            return
        lba, count = bounds
        self.lba, self.sectors_left = lba, count
        self.block_sectors = self.multiple_count if row.multiple else 1
        self.transfer = Transfer.SECTORS
        if row.protocol is Protocol.DMA:
            self._start_dma(row.direction, Transfer.SECTORS, count * SECTOR, lba * SECTOR)
        elif row.protocol is Protocol.PIO_IN:
            self._sectors_in_next(first=True)
        else:
            # §9.8 PIO data-out: the first block is requested without INTRQ.
            n = min(self.block_sectors, self.sectors_left)
            self._start_pio(Phase.PIO_OUT, n * SECTOR, interrupt=False)

    def _sectors_in_next(self, first=False):
        """Load the next DRQ block of a PIO read, or end the command."""
        if not first:
            n = self.end // SECTOR
            self.lba += n
            self.sectors_left -= n
            self._report(self.lba - 1, self.sectors_left)
            if not self.sectors_left:
                # §9.7 PIO data-in: no interrupt after the last block.
                self._finish(0, interrupt=False)
                return
        n = min(self.block_sectors, self.sectors_left)
        data = bytearray(n * SECTOR)
        try:
            self.backend.readinto(self.lba * SECTOR, memoryview(data))
        except DrivebayError as e:
            trace.guest_error(self.label, f"host read error at lba {self.lba}: {e}")
            self._fail_at(ERROR_UNC, self.lba)
            return
        # §9.7: INTRQ for every DRQ block of a PIO data-in command.
        self._start_pio(Phase.PIO_IN, data, interrupt=True)

    def _sectors_out_block(self):
        n = self.end // SECTOR
        try:
            self.backend.write(self.lba * SECTOR, bytes(self.block))
        except DrivebayError as e:
            trace.guest_error(self.label, f"host write error at lba {self.lba}: {e}")
            self._fail_at(ERROR_ABRT, self.lba)
            return
        self.lba += n
        self.sectors_left -= n
        self._report(self.lba - 1, self.sectors_left)
        if self.sectors_left:
            n = min(self.block_sectors, self.sectors_left)
            self._start_pio(Phase.PIO_OUT, n * SECTOR, interrupt=True)
            return
        if not self.write_cache and not self._flush():
            return
        self._finish(0)

    def _flush(self):
        try:
            self.backend.flush()
        except DrivebayError as e:
            trace.guest_error(self.label, f"host flush error: {e}")
            self._finish(ERROR_ABRT)
            return False
        return True

    def cmd_read_verify(self, row):
        # The medium is host storage: nothing to verify beyond the address.
        bounds = self._check_range(row)
        if bounds is None:
            return
        lba, count = bounds
        self._report(lba + count - 1, 0)
        self._finish(0)

    # -- other disk commands -------------------------------------------------------------------------------

    def cmd_flush_cache(self, row):
        if self._flush():
            self._finish(0)

    def cmd_data_set_management(self, row):
        tf = self.taskfile
        blocks = tf.count48()
        if not tf.features & DSM_TRIM or blocks > MAX_DSM_BLOCKS:
            # ACS-3 §7.5: TRIM is the only function; the Count may not
            # exceed IDENTIFY word 105.
            trace.guest_error(self.label, f"DATA SET MANAGEMENT features={tf.features:#04x} "
                                          f"blocks={blocks}: ABRT")
            self._finish(ERROR_ABRT)
            return
        self.buffer = bytearray(blocks * SECTOR)
        self._start_dma(DataDirection.OUT, Transfer.BUFFER, len(self.buffer), 0)

    def _dsm_ranges(self):
        ranges = []
        for i in range(0, len(self.buffer), DSM_ENTRY):
            entry = int.from_bytes(self.buffer[i:i + DSM_ENTRY], "little")
            lba, length = entry & ((1 << 48) - 1), entry >> 48
            if not length:
                continue
            if lba + length > self.sectors:
                trace.guest_error(self.label, f"TRIM range {lba}+{length} past the end "
                                              f"({self.sectors} sectors): ABRT")
                self._finish(ERROR_ABRT)
                return
            ranges.append((lba, length))
        if trace.on.dev:
            trace.emit("dev", f"{self.label} TRIM {len(ranges)} ranges: "
                              + ", ".join(f"{lba}+{n}" for lba, n in ranges[:8]))
        try:
            for lba, length in ranges:
                self.backend.discard(lba * SECTOR, length * SECTOR)
        except DrivebayError as e:
            trace.guest_error(self.label, f"host discard error: {e}")
            self._finish(ERROR_ABRT)
            return
        self._finish(0)

    def cmd_read_native_max(self, row):
        max_lba = self.sectors - 1
        if row.lba48:
            self.taskfile.set_lba48(max_lba)
        else:
            # ACS-3 §7.33: a device with more than 268,435,455 sectors returns 0FFFFFFFh.
            self.taskfile.set_lba28(min(max_lba, MAX_LBA28 - 1))
        self._finish(0)

    def cmd_set_multiple_mode(self, row):
        count = self.taskfile.count8
        # ACS-3 §7.47: a power of two no larger than IDENTIFY word 47; ATA/ATAPI-6
        # §8.39 also lets 0 disable multiple mode.
        if count and (count & (count - 1) or count > MAX_MULTIPLE):
            trace.guest_error(self.label, f"SET MULTIPLE MODE {count}: not a supported block size")
            self._finish(ERROR_ABRT)
            return
        self.multiple_count = count
        self._finish(0)

    def cmd_initialize_device_parameters(self, row):
        tf = self.taskfile
        heads, sectors = (tf.device & 0x0F) + 1, tf.count8
        chs = geometry.translation(self.sectors, heads, sectors)
        if chs is None:
            trace.guest_error(self.label, f"INITIALIZE DEVICE PARAMETERS {heads} heads, "
                                          f"{sectors} sectors: unsupported")
            self._finish(ERROR_ABRT)
            return
        self.chs = chs
        self._finish(0)

    def cmd_recalibrate(self, row):
        self._finish(0)

    def cmd_nop(self, row):
        # ACS-3 §7.17: NOP always completes with command aborted.
        self._finish(ERROR_ABRT)

    def cmd_identify(self, row):
        data = identify_device(self) if self.kind is DeviceKind.DISK else identify_packet_device(self)
        self.transfer = Transfer.BUFFER
        self._start_pio(Phase.PIO_IN, data, interrupt=True)

    def cmd_power(self, row):
        self.power = POWER_STANDBY if row.opcode in (0xE0, 0xE2) else POWER_IDLE
        self._finish(0)

    def cmd_check_power_mode(self, row):
        self.taskfile.set_count(self.power)
        self._finish(0)

    # -- NCQ: READ/WRITE FPDMA QUEUED ------------------------------------------------------------

    def cmd_fpdma_queued(self, row):
        tf = self.taskfile
        tag = tf.count8 >> NCQ_TAG_SHIFT
        count = (tf.prev[Register.FEATURES] << 8 | tf.features) or 65536
        lba = tf.lba48()
        if self.ncq_error or tag >= self.transport.queue_depth or tag in self.ncq_queue:
            why = ("the NCQ Command Error log has not been read" if self.ncq_error
                   else f"tag {tag} {'in use' if tag in self.ncq_queue else 'beyond the queue depth'}")
            trace.guest_error(self.label, f"{row.name}: {why}: ABRT, queued commands aborted")
            self._ncq_abort_all()
            if not self.ncq_error:
                self._ncq_record_error(None, ERROR_ABRT)
            self._finish(ERROR_ABRT)
            return
        command = NcqCommand(tag, row.direction, lba, count, bool(tf.device & DEVICE_FUA))
        self.ncq_queue[tag] = command
        # SATA: the device accepts the command by clearing BSY in a Register
        # D2H FIS without the I bit; the data phase and completion follow.
        self._finish(0, interrupt=False)
        self._ncq_start(command)

    def _ncq_start(self, command):
        nbytes = command.count * SECTOR
        views = self.transport.ncq_map(self, command.tag, nbytes)
        if views is None:
            trace.guest_error(self.label, f"NCQ tag {command.tag}: no data buffer (transport error): dropped")
            self.ncq_queue.pop(command.tag, None)
            return
        op = Op.READ if command.direction is DataDirection.IN else Op.WRITE
        request = Request(op, command.lba * SECTOR, tuple(views), fua=command.fua,
                          tag=(self.ncq_generation, command.tag))
        self.ncq_inflight += 1
        if trace.on.dev:
            trace.emit("dev", f"{self.label} NCQ tag {command.tag} submitted: {op.value} lba={command.lba} "
                              f"count={command.count}{' FUA' if command.fua else ''}")
        self.backend.submit(request, self.ncq_request_done)

    def ncq_request_done(self, done):
        """The backend's completion event of a queued command's request."""
        self.ncq_inflight -= 1
        generation, tag = done.request.tag
        command = self.ncq_queue.get(tag)
        if generation != self.ncq_generation or command is None:
            if trace.on.dev:
                trace.emit("dev", f"{self.label} NCQ tag {tag} completion of an aborted command dropped")
            return
        del self.ncq_queue[tag]
        if done.ok:
            if trace.on.dev:
                trace.emit("dev", f"{self.label} NCQ tag {tag} done")
            self.transport.ncq_complete(self, 1 << tag, self._ready_status(), 0)
            return
        if command.lba + command.count > self.sectors:
            error = ERROR_IDNF          # ACS-3 §6.3.5: outside the user-accessible range
        else:
            error = ERROR_UNC if command.direction is DataDirection.IN else ERROR_ABRT
        trace.guest_error(self.label, f"NCQ tag {tag} lba {command.lba}+{command.count} failed "
                                      f"({describe_error(error)}): {done.error}")
        self._ncq_abort_all()
        self._ncq_record_error(command, error)
        self.transport.ncq_complete(self, 0, self._ready_status() | STATUS_ERR, error)

    def _ncq_abort_all(self):
        """Forget every queued command; their completions become stale."""
        self.ncq_queue = {}
        self.ncq_generation += 1

    def _ncq_record_error(self, command, error):
        """Fill the NCQ Command Error log (``command`` None: NQ, the error was
        not a queued command's) and hold queued commands until it is read."""
        status = self._ready_status() | STATUS_ERR
        if command is None:
            log = ncq_command_error_log(nq=True, status=status, error=error)
        else:
            log = ncq_command_error_log(tag=command.tag, status=status, error=error,
                                        lba=command.lba, count=command.count,
                                        device=DEVICE_LBA)
        self.ncq_error_log = bytes(log)
        self.ncq_error = True

    # -- READ LOG EXT --------------------------------------------------------------------------------

    def _log(self, address):
        if address == 0x00:
            return log_directory(self)
        if address == LOG_NCQ_COMMAND_ERROR and self.ncq_supported:
            return self.ncq_error_log
        return None

    def cmd_read_log_ext(self, row):
        """ACS-3 §7.24: LOG ADDRESS in LBA 7:0, PAGE NUMBER in LBA 15:8 and
        39:32, PAGE COUNT in Count (0 is invalid); PIO data-in, one DRQ
        block per transfer."""
        tf = self.taskfile
        address = tf.cur[Register.LBA_LOW]
        page = tf.prev[Register.LBA_MID] << 8 | tf.cur[Register.LBA_MID]
        pages = tf.prev[Register.COUNT] << 8 | tf.cur[Register.COUNT]
        log = self._log(address)
        if log is None or pages == 0 or (page + pages) * SECTOR > len(log):
            trace.guest_error(self.label, f"READ LOG EXT log {address:#04x} page {page}+{pages}: "
                                          f"not supported: ABRT")
            self._finish(ERROR_ABRT)
            return
        if address == LOG_NCQ_COMMAND_ERROR:
            # Reading the NCQ Command Error log ends the error condition.
            self.ncq_error = False
        self.transfer = Transfer.BUFFER
        self._start_pio(Phase.PIO_IN, log[page * SECTOR:(page + pages) * SECTOR], interrupt=True)

    def cmd_set_features(self, row):
        code = self.taskfile.features
        sub = cmds.FEATURE_BY_CODE.get(code)
        if sub is None or self.kind not in sub.kinds:
            trace.guest_error(self.label, f"SET FEATURES subcommand {code:#04x} not supported")
            self._finish(ERROR_ABRT)
            return
        if getattr(self, sub.handler)(sub):
            self._finish(0)
        else:
            self._finish(ERROR_ABRT)

    def feature_write_cache(self, sub):
        self.write_cache = sub.code == 0x02
        if not self.write_cache and self.backend is not None and not self.backend.read_only:
            # Disabling the cache writes back what it holds.
            try:
                self.backend.flush()
            except DrivebayError:
                return False
        return True

    def feature_look_ahead(self, sub):
        self.look_ahead = sub.code == 0xAA
        return True

    def feature_sata(self, sub):
        code = self.taskfile.count8
        if code not in self.transport.sata_features(self):
            trace.guest_error(self.label, f"{sub.name} {code:#04x}: not supported on this link")
            return False
        if sub.code == 0x10:
            self.sata_enabled = self.sata_enabled | {code}
        else:
            self.sata_enabled = self.sata_enabled - {code}
        return True

    def feature_revert(self, sub):
        self.revert_on_reset = sub.code == 0xCC
        return True

    def feature_transfer_mode(self, sub):
        mode = cmds.decode_transfer_mode(self.taskfile.count8)
        if mode is None:
            trace.guest_error(self.label, f"SET TRANSFER MODE {self.taskfile.count8:#04x} not supported")
            return False
        # PIO and DMA modes are selected independently: a PIO mode leaves the
        # DMA mode that words 63/88 report.
        if mode[0] is TransferKind.PIO:
            self.pio_mode = mode[1]
        else:
            self.dma_mode = mode
        return True

    # -- EXECUTE DEVICE DIAGNOSTIC and DEVICE RESET ----------------------------------------------------

    def cmd_execute_device_diagnostic(self, row):
        """ATA/ATAPI-6 §8.11: both devices run it; device 0 reports for the
        pair and asserts INTRQ."""
        self._post_reset()
        self._clear_command()
        self._enter(Phase.STATUS if self.unit == 0 or not self.peer_present else Phase.IDLE)
        if self.phase is Phase.STATUS:
            self._set_intrq(True)
        self.transport.command_done(self)

    def cmd_device_reset(self, row):
        """ATA/ATAPI-6 §8.10: a PACKET device resets itself; no INTRQ."""
        self._clear_command()
        self._enter(Phase.IDLE)
        if self.lun is not None:
            self.lun.reset()
        self._post_reset()
        self.transport.command_done(self)

    # -- PACKET (ATAPI) --------------------------------------------------------------------------------

    def cmd_packet(self, row):
        tf = self.taskfile
        if tf.features & PACKET_FEATURE_OVL:
            trace.guest_error(self.label, "PACKET with OVL: overlap is not supported")
            self._finish(ERROR_ABRT)
            return
        self.packet_dma = bool(tf.features & PACKET_FEATURE_DMA)
        self.transfer = Transfer.CDB
        # §9.10 step 2: DRQ with C/D = 1, I/O = 0; with word 0 bits 6:5 =
        # 10b no INTRQ precedes the command packet.
        tf.set_count(IREASON_COD)
        self.block = bytearray(PACKET_SIZE)
        self.pos, self.end = 0, PACKET_SIZE
        self._enter(Phase.PACKET)
        tf.status = STATUS_DRDY | STATUS_DRQ
        tf.error = 0
        self.transport.pio_ready(self)

    def _packet_cdb(self, cdb):
        self.power = POWER_ACTIVE
        request = self.lun.request(cdb)
        self.scsi_request = request
        direction = request.direction
        length = request.xfer_length
        if trace.on.dev:
            trace.emit("dev", f"{self.label} PACKET {request.describe()} [{cdb.hex(' ')}] "
                              f"({direction.name} {length} bytes{', DMA' if self.packet_dma else ''})")
        self.transfer = Transfer.PACKET_DATA
        if direction is Direction.OUT and length:
            self.buffer = bytearray(length)
            self.packet_pos = 0
            if self.packet_dma:
                self._start_dma(DataDirection.OUT, Transfer.PACKET_DATA, length, 0)
            else:
                self._packet_pio_next(DataDirection.OUT)
            return
        result = request.execute()
        data = bytes(result.data)[:length] if direction is Direction.IN else b""
        self.scsi_result = result
        if not data:
            self._packet_status()
            return
        self.buffer = bytearray(data)
        self.packet_pos = 0
        if self.packet_dma:
            self._start_dma(DataDirection.IN, Transfer.PACKET_DATA, len(data), 0)
        else:
            self._packet_pio_next(DataDirection.IN)

    def _byte_count(self, remaining):
        """The size of the next PIO DRQ data block, limited by the host's
        byte count limit (ATA/ATAPI-6 §8.21: FFFFh acts as FFFEh; a block
        that is not the last has an even count)."""
        limit = min(self.taskfile.byte_count_limit, MAX_BYTE_COUNT)
        if remaining <= limit:
            return remaining
        return limit & ~1

    def _packet_pio_next(self, direction):
        remaining = len(self.buffer) - self.packet_pos
        n = self._byte_count(remaining)
        if n == 0:
            # A byte count limit of zero with data to move (IDENTIFY PACKET
            # DEVICE word 126 is 0): the command is aborted.
            trace.guest_error(self.label, "PACKET with byte count limit 0: ABRT")
            self._finish(ERROR_ABRT | SENSE_ABORTED_COMMAND << ERROR_SENSE_KEY_SHIFT)
            return
        tf = self.taskfile
        tf.set_byte_count(n)
        tf.set_count(IREASON_IO if direction is DataDirection.IN else 0)
        if direction is DataDirection.IN:
            block = self.buffer[self.packet_pos:self.packet_pos + n]
            # An odd last block is padded to a whole word on the 16-bit bus.
            phase_data = bytes(block) + (b"\0" if n & 1 else b"")
            self._start_packet_block(Phase.PIO_IN, phase_data, n)
        else:
            self._start_packet_block(Phase.PIO_OUT, bytes(n + (n & 1)), n)

    def _start_packet_block(self, phase, data, n):
        self.block_bytes = n            # real data in the block (without the pad byte)
        self.block = bytearray(data)
        self.pos, self.end = 0, len(data)
        self._enter(phase)
        self.taskfile.status = STATUS_DRDY | STATUS_DRQ
        # §9.10: INTRQ precedes every DRQ data block of a PACKET command.
        self._set_intrq(True)
        self.transport.pio_ready(self)

    def _packet_pio_block_done(self):
        n = self.block_bytes
        if self.phase is Phase.PIO_OUT:
            self.buffer[self.packet_pos:self.packet_pos + n] = self.block[:n]
        self.packet_pos += n
        if self.packet_pos < len(self.buffer):
            self._packet_pio_next(DataDirection.IN if self.phase is Phase.PIO_IN else DataDirection.OUT)
            return
        self._packet_data_done()

    def _packet_data_done(self):
        if self.scsi_result is None:
            self.scsi_result = self.scsi_request.execute(data_out=bytes(self.buffer))
        self._packet_status()

    def _packet_status(self):
        """§9.10 status phase: C/D = 1, I/O = 1, CHK and the sense key in
        Error bits 7:4 on CHECK CONDITION, INTRQ."""
        result = self.scsi_result
        error = 0
        if result.status != Status.GOOD:
            # Fixed or descriptor format (the guest may set D_SENSE).
            parsed = parse_sense(result.sense or b"")
            key = int(parsed.sense.key) if parsed is not None else SENSE_ABORTED_COMMAND
            error = key << ERROR_SENSE_KEY_SHIFT
            if result.status != Status.CHECK_CONDITION or not error:
                error |= ERROR_ABRT
            if trace.on.dev and parsed is not None:
                trace.emit("dev", f"{self.label} CHECK CONDITION sense key {key:#x} "
                                  f"ASC {parsed.sense.asc:#04x} ASCQ {parsed.sense.ascq:#04x}")
        self._finish(error)

    # -- snapshot -----------------------------------------------------------------------------------------

    def snapshot(self):
        state = {name: getattr(self, name) for name in self.SNAPSHOT_FIELDS}
        state["taskfile"] = self.taskfile.snapshot()
        state["buffer"] = bytes(self.buffer)
        state["block"] = bytes(self.block)
        state["ncq_queue"] = {tag: (c.direction.value, c.lba, c.count, c.fua)
                              for tag, c in sorted(self.ncq_queue.items())}
        return state


class _AddressError(Exception):
    """A CHS address outside the current translation (internal)."""


def _check_table():
    for row in cmds.COMMANDS:
        assert callable(getattr(AtaDevice, row.handler, None)), f"{row.name}: no handler {row.handler}"
    for sub in cmds.SET_FEATURES:
        assert callable(getattr(AtaDevice, sub.handler, None)), f"{sub.name}: no handler {sub.handler}"


_check_table()

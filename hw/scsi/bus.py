"""The SCSI target every SCSI-speaking transport plugs into.

A transport (ATAPI on IDE/AHCI, MPT, BusLogic, USB BOT, virtio-scsi) hands
a CDB to ``ScsiTarget.request(lun, cdb)`` (or to one ``ScsiLun`` directly,
as ATAPI does), reads the request's ``direction`` and ``xfer_length``,
moves the data-out buffer if there is one, and calls ``execute()``, which
returns a ``ScsiResult``: SAM status, data-in (already cut to the CDB's
allocation length), sense data and residual.  Everything is synchronous and
sans-I/O: the LUN reads and writes its BlockBackend inside ``execute()``.

Rules kept here, for every command set (SAM-5, SPC-4):

* Dispatch from the command tables (cdb.py rows from spc/sbc/mmc).  An
  unknown OPERATION CODE gets ILLEGAL REQUEST, INVALID COMMAND OPERATION
  CODE; an unknown SERVICE ACTION gets INVALID FIELD IN CDB (SPC-4 4.2.5.2).
  CONTROL with NACA or LINK set gets INVALID FIELD IN CDB (SAM-5 5.2: ACA
  and linked commands are not supported).
* Unit attention (SAM-5 5.14, UA_INTLCK_CTRL 00b): a pending condition is
  reported, once, by CHECK CONDITION to the next command that is not
  flagged ALLOW_UA (INQUIRY, REPORT LUNS, REQUEST SENSE; for MMC also GET
  CONFIGURATION and GET EVENT STATUS NOTIFICATION, which MMC-6 lets run
  with a unit attention pending, so event polling does not eat it).  A new
  LUN starts with POWER ON, RESET, OR BUS DEVICE RESET OCCURRED pending, as
  a drive does after power-on.
* Sense retention: the sense of the last CHECK CONDITION stays available to
  REQUEST SENSE (which reports and clears it) until another command
  completes; the ALLOW_UA commands (INQUIRY, GET EVENT STATUS NOTIFICATION
  polling ...) leave it alone when they succeed.  ATAPI, which has no
  autosense, relies on this; QEMU's scsi-bus keeps sense the same way.
  With autosense the same bytes also come back in ``ScsiResult.sense``.
  Sense is in fixed format unless the Control mode page's D_SENSE is set.
* Host I/O failures (drivebay.errors.ImageError) become MEDIUM ERROR,
  UNRECOVERED READ ERROR or WRITE ERROR with the starting LBA.
* A transport that delivers less data-out than ``xfer_length`` gets ABORTED
  COMMAND, DATA PHASE ERROR, and nothing is written.

A target (``ScsiTarget``) answers for LUNs it does not have (SPC-4 6.4.2,
6.29.1): INQUIRY with PERIPHERAL QUALIFIER 011b / device type 1Fh, REQUEST
SENSE with LOGICAL UNIT NOT SUPPORTED sense, REPORT LUNS normally, every
other command CHECK CONDITION, ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED.
"""

import enum
from dataclasses import dataclass

from drivebay import trace
from drivebay.errors import ConfigError, ImageError
from drivebay.hw import identity
from drivebay.hw.scsi import sense as S
from drivebay.hw.scsi import spc
from drivebay.hw.scsi.cdb import (CONTROL_LINK, CONTROL_NACA, MAX_LUN, Direction, Flag,
                                  PeripheralDeviceType, command_table, decode_lun, encode_lun)
from drivebay.hw.scsi.sense import CheckCondition, SenseData

__all__ = ["Direction", "Status", "ScsiResult", "ScsiRequest", "ScsiLun", "ScsiTarget",
           "encode_lun", "decode_lun"]

# SAM-5 5.14: several unit attention conditions may be queued; we keep a few
# distinct ones (power-on/reset, medium change) and drop the oldest beyond.
MAX_UNIT_ATTENTIONS = 4


class Status(enum.IntEnum):
    """SAM-5 5.3.1, table 32: status codes."""
    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


@dataclass
class ScsiResult:
    status: int                         # a Status (an int)
    data: bytes | memoryview            # data-in, cut to the allocation length; b"" otherwise
    sense: bytes                        # b"" when GOOD
    residual: int = 0                   # xfer_length - bytes actually transferred


class ScsiRequest:
    """One command on its way through a LUN: built by ``ScsiLun.request``,
    finished by ``execute``.  State is the plain attributes below."""

    def __init__(self, lun, cdb):
        self.lun = lun
        self.cdb = bytes(cdb)
        self.command = None             # the cdb.Command row, when the opcode is known
        self.direction = Direction.NONE
        self.xfer_length = 0
        self.args = {}                  # decoded CDB fields, for execute() and traces
        self.error = None               # SenseData when the command ends in CHECK CONDITION
        self.done = False

    @property
    def name(self):
        if self.command is not None:
            return self.command.name
        return f"opcode_{self.cdb[0]:02X}h" if self.cdb else "empty CDB"

    def describe(self):
        fields = " ".join(f"{k}={v}" for k, v in self.args.items() if not k.startswith("_"))
        return f"{self.name} {fields}" if fields else self.name

    def execute(self, data_out=None):
        return self.lun.execute(self, data_out)


class ScsiLun:
    """A logical unit: dispatch, unit attention, sense and mode parameters
    shared by ScsiDisk (sbc.py), ScsiCdrom (mmc.py) and PassthroughCdrom."""

    kind = "lun"                                    # in trace lines: "scsi <kind> ..."
    device_type = PeripheralDeviceType.UNKNOWN
    commands = {}                                   # dispatch table (cdb.command_table)
    mode_pages = ()                                 # spc.ModePage rows, ascending page code
    vpd_pages = {}                                  # page code -> builder(lun) -> page body
    unknown_opcode = S.INVALID_COMMAND_OPERATION_CODE
    default_wce = True

    # Plain state a snapshot has to keep (STYLE.md 5); subclasses extend it.
    STATE_FIELDS = ("unit_attentions", "sense_data", "locked", "wce", "d_sense")

    def __init__(self, *, vendor=identity.VENDOR, product="", revision=identity.SCSI_REVISION,
                 serial="", removable=False, identity_uuid=None, cmdque=False):
        self.vendor = vendor
        self.product = product
        self.revision = revision
        self.serial = serial
        self.removable = removable
        self.identity_uuid = identity_uuid          # the NAA designator of VPD page 83h comes from it
        self.cmdque = cmdque                        # INQUIRY CMDQUE: the transport queues commands
        self.target = None
        self.unit_attentions = [S.POWER_ON_RESET]
        self.sense_data = None
        self.locked = False
        self.wce = self.default_wce
        self.d_sense = False

    # -- what the command sets ask of a LUN -------------------------------------------

    @property
    def block_size(self):
        return 512

    @property
    def capacity(self):
        """Number of logical blocks of the medium (0 without one)."""
        return 0

    @property
    def read_only(self):
        return True

    def medium_sense(self):
        """The NOT READY condition media-access commands get, or None when ready."""
        return None

    def idle_sense(self):
        """What REQUEST SENSE reports with nothing pending (SPC-4 5.11.2)."""
        return self.medium_sense()

    def report_luns(self):
        return self.target.lun_numbers() if self.target is not None else [0]

    def flush_cache(self):
        """Write back what a write-back cache holds (START STOP, WCE 1 -> 0)."""

    def load_eject(self, load):
        """START STOP UNIT with LOEJ: load (True) or unload (False) the medium."""

    def device_specific_parameter(self):
        """DEVICE-SPECIFIC PARAMETER of the mode parameter header (SPC-4 7.5.4)."""
        return 0

    def block_descriptor(self, long_lba):
        """The mode parameter block descriptor (SBC-3 6.4.2): short (8 bytes:
        NUMBER OF LOGICAL BLOCKS, saturated at FFFFFFFFh, and LOGICAL BLOCK
        LENGTH) or long (16 bytes, MODE SENSE(10) with LLBAA)."""
        if long_lba:
            return self.capacity.to_bytes(8, "big") + bytes(4) + self.block_size.to_bytes(4, "big")
        blocks = min(self.capacity, 0xFFFFFFFF)
        return blocks.to_bytes(4, "big") + bytes(1) + self.block_size.to_bytes(3, "big")

    # -- host side ------------------------------------------------------------------------

    def reset(self):
        """Bus device / logical unit reset or power cycle (SAM-5 6.3, 5.14):
        POWER ON, RESET, OR BUS DEVICE RESET OCCURRED replaces every pending
        unit attention; the prevent state and mode parameters return to
        their defaults (SPC-4 7.5.2, SBC-3 5.13)."""
        self.unit_attentions = [S.POWER_ON_RESET]
        self.sense_data = None
        self.locked = False
        self.wce = self.default_wce
        self.d_sense = False

    def queue_unit_attention(self, sense):
        if sense in self.unit_attentions:
            return
        self.unit_attentions.append(sense)
        del self.unit_attentions[:-MAX_UNIT_ATTENTIONS]

    # -- dispatch -----------------------------------------------------------------------

    def request(self, cdb):
        """Parse a CDB.  Never raises for guest input: a bad CDB gives a
        request whose execute() returns CHECK CONDITION (direction NONE)."""
        req = ScsiRequest(self, cdb)
        try:
            self._decode(req)
        except CheckCondition as failure:
            req.error = failure.data
            req.direction = Direction.NONE
            req.xfer_length = 0
        return req

    def _lookup(self, cdb):
        entry = self.commands.get(cdb[0])
        if isinstance(entry, dict):
            if len(cdb) < 2:
                raise S.invalid_cdb(1, 4)
            # SPC-4 4.2.5.2: SERVICE ACTION is byte 1 bits 4:0 for these opcodes.
            row = entry.get(cdb[1] & 0x1F)
            if row is None:
                raise S.invalid_cdb(1, 4)
            return row
        if entry is None:
            raise CheckCondition(self.unknown_opcode)
        return entry

    def _decode(self, req):
        cdb = req.cdb
        if not cdb:
            raise CheckCondition(self.unknown_opcode)
        try:
            command, unknown = self._lookup(cdb), None
        except CheckCondition as failure:
            command, unknown = None, failure
        req.command = command
        if self.unit_attentions and not (command and command.flags & Flag.ALLOW_UA):
            raise CheckCondition(self.unit_attentions.pop(0))
        if unknown is not None:
            raise unknown
        if command.available is not None and not command.available(self):
            req.command = None
            raise CheckCondition(self.unknown_opcode)
        length = command.cdb_length
        if len(cdb) < length:
            raise S.invalid_cdb(len(cdb))
        req.cdb = cdb = cdb[:length]
        control = cdb[-1]
        if control & CONTROL_NACA:
            raise S.invalid_cdb(length - 1, 2)
        if control & CONTROL_LINK:
            raise S.invalid_cdb(length - 1, 0)
        if command.flags & Flag.NEEDS_MEDIUM:
            not_ready = self.medium_sense()
            if not_ready is not None:
                raise CheckCondition(not_ready)
        req.direction = command.direction
        if command.parse is not None:
            command.parse(self, req)
        assert req.xfer_length >= 0
        if req.xfer_length == 0:
            req.direction = Direction.NONE
        assert req.direction is Direction.NONE or req.xfer_length > 0

    def execute(self, req, data_out=None):
        assert req.lun is self and not req.done, "a request executes once, on its own LUN"
        req.done = True
        data = None
        transferred = 0
        if req.error is None:
            if req.direction is Direction.OUT:
                if data_out is None or len(data_out) < req.xfer_length:
                    req.error = SenseData(S.DATA_PHASE_ERROR)
                else:
                    data_out = memoryview(data_out)[:req.xfer_length]
                    transferred = req.xfer_length
            else:
                assert not data_out, "data-out given to a command without a data-out phase"
            if req.error is None:
                data = self._run(req, data_out)
        if req.error is not None:
            status, data, sense = Status.CHECK_CONDITION, b"", req.error.encode(self.d_sense)
        else:
            status, sense = Status.GOOD, b""
            if data is None:
                data = b""
            elif len(data) > req.xfer_length:
                data = memoryview(data)[:req.xfer_length] if isinstance(data, bytearray) \
                    else data[:req.xfer_length]
            elif isinstance(data, bytearray):
                data = memoryview(data)
        if req.direction is Direction.IN:
            transferred = len(data)
        if req.command is None or not req.command.flags & Flag.ALLOW_UA or req.error is not None:
            self.sense_data = req.error
        self._trace(req)
        return ScsiResult(status, data, sense, req.xfer_length - transferred)

    def _run(self, req, data_out):
        command = req.command
        if command.execute is None:
            return None
        try:
            return command.execute(self, req, data_out)
        except CheckCondition as failure:
            req.error = failure.data
        except ImageError as failure:
            writes = command.flags & Flag.WRITES or command.direction is Direction.OUT
            req.error = SenseData(S.WRITE_ERROR if writes else S.UNRECOVERED_READ_ERROR,
                                  information=req.args.get("lba"))
            if trace.on.dev:
                trace.emit("dev", f"scsi {self.kind} {req.name}: host I/O error: {failure}")
        return None

    def _trace(self, req):
        if req.error is None:
            outcome = "GOOD"
        else:
            outcome = f"CHECK CONDITION {req.error.sense}"
        if trace.on.dev:
            trace.emit("dev", f"scsi {self.kind} {req.describe()} -> {outcome}")
        if req.error is not None and req.error.sense.key == S.SenseKey.ILLEGAL_REQUEST:
            trace.guest_error(f"scsi {self.kind}", f"{req.describe()}: {req.error.sense}")


class AbsentLun(ScsiLun):
    """What a target answers for a LUN it does not have (SPC-4 6.4.2:
    PERIPHERAL QUALIFIER 011b, PERIPHERAL DEVICE TYPE 1Fh)."""

    kind = "lun"
    device_type = PeripheralDeviceType.UNKNOWN
    unknown_opcode = S.LOGICAL_UNIT_NOT_SUPPORTED
    commands = command_table(PeripheralDeviceType.UNKNOWN, *spc.ABSENT_LUN_COMMANDS)

    def __init__(self, target):
        super().__init__(product="")
        self.target = target
        self.unit_attentions = []

    def idle_sense(self):
        return S.LOGICAL_UNIT_NOT_SUPPORTED

    def reset(self):
        super().reset()
        self.unit_attentions = []


class ScsiTarget:
    """A SCSI target device with its logical units."""

    def __init__(self, luns):
        for number, lun in luns.items():
            if not 0 <= number <= MAX_LUN:
                raise ConfigError(f"SCSI LUN {number} out of range 0-{MAX_LUN}")
            if lun.target is not None and lun.target is not self:
                raise ConfigError(f"SCSI LUN {number} is already attached to another target")
        self.luns = dict(sorted(luns.items()))
        for lun in self.luns.values():
            lun.target = self
        self.absent = AbsentLun(self)

    def lun_numbers(self):
        return list(self.luns)

    def request(self, lun, cdb):
        return self.luns.get(lun, self.absent).request(cdb)

    def reset(self):
        """Target reset: every LUN gets the reset unit attention."""
        for lun in self.luns.values():
            lun.reset()

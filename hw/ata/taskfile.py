"""The ATA task file: the registers one ATA device holds, and their bits.

Modelled (ATA/ATAPI-6 §7 "I/O register descriptions", ACS-3 §6 "Normal and
error output field descriptions"): the Features, Count, LBA Low/Mid/High,
Device, Command, Status and Error registers of one device, each of the five
48-bit-capable registers as the two-deep FIFO of ATA/ATAPI-6 §7.1 ("the
most recently written content and the previous content"), read back through
the HOB bit of Device Control.  The names of fields and bits are the
spec's.  How a host reaches these registers (I/O ports, FISes) is the
transport's business; the IDE port layout is in hw/ide/regs.py.

Every device on an IDE cable latches every write to the Command Block
registers (ATA/ATAPI-6 §7.1: "both devices ... shall respond to writes"),
so each AtaDevice has its own TaskFile and the channel writes both.
"""

import enum

# -- Status (ATA/ATAPI-6 §7.15, ACS-3 §6.2) ------------------------------------
STATUS_ERR = 0x01        # ERR: an error occurred; CHK (check condition) for PACKET devices
STATUS_DRQ = 0x08        # DRQ: the device is ready to transfer data
STATUS_DSC = 0x10        # DSC (seek complete, obsolete in ACS; SERV for PACKET devices)
STATUS_DF = 0x20         # DF: device fault
STATUS_DRDY = 0x40       # DRDY: the device accepts commands
STATUS_BSY = 0x80        # BSY: the device owns the registers

# -- Error (ATA/ATAPI-6 §7.11) --------------------------------------------------
ERROR_AMNF = 0x01        # address mark not found (obsolete); ILI for PACKET devices
ERROR_EOM = 0x02         # end of medium (PACKET devices)
ERROR_ABRT = 0x04        # command aborted
ERROR_MCR = 0x08         # media change request
ERROR_IDNF = 0x10        # ID not found: address outside the accessible range
ERROR_MC = 0x20          # media changed
ERROR_UNC = 0x40         # uncorrectable data error
ERROR_ICRC = 0x80        # interface CRC error
ERROR_SENSE_KEY_SHIFT = 4    # PACKET devices: sense key in bits 7:4 (ATA/ATAPI-6 §9.10)

# EXECUTE DEVICE DIAGNOSTIC and reset results (ATA/ATAPI-6 §8.11 Table 10):
# 01h device 0 passed (device 1 passed or not present); 81h device 0 passed,
# device 1 failed.
DIAG_PASSED = 0x01

# -- Device register (ATA/ATAPI-6 §7.9) ------------------------------------------
DEVICE_HEAD = 0x0F       # head number (CHS) or LBA bits 27:24 (LBA28)
DEVICE_DEV = 0x10        # DEV: 0 selects device 0, 1 device 1
DEVICE_LBA = 0x40        # LBA: 1 = LBA addressing, 0 = CHS
DEVICE_OBSOLETE = 0xA0   # bits 7 and 5: obsolete, "set to one" by older hosts

# -- Device Control (ATA/ATAPI-6 §7.8) ---------------------------------------------
DEVCTL_NIEN = 0x02       # nIEN: 1 = INTRQ not driven
DEVCTL_SRST = 0x04       # SRST: software reset while 1
DEVCTL_HOB = 0x80        # HOB: reads return the previous content of the 48-bit registers

# -- PACKET: Interrupt Reason in the Count register (ATA/ATAPI-6 §9.10) -----------
IREASON_COD = 0x01       # C/D: 1 = command packet or status, 0 = user data
IREASON_IO = 0x02        # I/O: 1 = to the host
IREASON_REL = 0x04       # bus release (overlap), not used
# PACKET: Features (ATA/ATAPI-6 §8.21)
PACKET_FEATURE_DMA = 0x01
PACKET_FEATURE_OVL = 0x02

# -- Signatures (ATA/ATAPI-6 §9.12 Table 39: Count, LBA Low, LBA Mid, LBA High) ----
SIGNATURE_ATA = (0x01, 0x01, 0x00, 0x00)
SIGNATURE_PACKET = (0x01, 0x01, 0x14, 0xEB)

MAX_LBA28 = 1 << 28
MAX_LBA48 = 1 << 48


class Register(enum.Enum):
    """The registers a host writes (Command Block plus Device Control)."""

    FEATURES = "FEATURES"
    COUNT = "COUNT"
    LBA_LOW = "LBA_LOW"
    LBA_MID = "LBA_MID"
    LBA_HIGH = "LBA_HIGH"
    DEVICE = "DEVICE"

    # Members are singletons: hash by identity.  Enum's own __hash__ hashes
    # the name in Python, and these members key dicts and sets on every command.
    __hash__ = object.__hash__


# The five registers with a previous content (ATA/ATAPI-6 §7.1 "48-bit Address
# feature set": Features, Sector Count, LBA Low, LBA Mid, LBA High).
FIFO_REGISTERS = (Register.FEATURES, Register.COUNT, Register.LBA_LOW, Register.LBA_MID,
                  Register.LBA_HIGH)


class TaskFile:
    """One device's registers.  ``cur`` is the most recent content, ``prev``
    the one before (what a read returns with HOB set)."""

    SNAPSHOT_FIELDS = ("cur", "prev", "device", "status", "error", "command")

    def __init__(self):
        self.cur = {r: 0 for r in FIFO_REGISTERS}
        self.prev = {r: 0 for r in FIFO_REGISTERS}
        self.device = 0
        self.status = 0
        self.error = 0
        self.command = 0

    # -- host side --------------------------------------------------------------

    def write(self, register, value):
        """A host write: the FIFO registers shift (ATA/ATAPI-6 §7.1)."""
        value &= 0xFF
        if register is Register.DEVICE:
            self.device = value
            return
        self.prev[register] = self.cur[register]
        self.cur[register] = value

    def read(self, register, hob=False):
        if register is Register.DEVICE:
            return self.device
        return (self.prev if hob else self.cur)[register]

    def load(self, register, value, previous):
        """Set both contents at once (a Register H2D FIS carries both)."""
        self.cur[register] = value & 0xFF
        self.prev[register] = previous & 0xFF

    # -- inputs decoded ---------------------------------------------------------------

    @property
    def features(self):
        return self.cur[Register.FEATURES]

    @property
    def count8(self):
        return self.cur[Register.COUNT]

    @property
    def lba_mode(self):
        return bool(self.device & DEVICE_LBA)

    def count28(self):
        """Sector count of a 28-bit command: 0 means 256 (ATA/ATAPI-6 §8)."""
        return self.cur[Register.COUNT] or 256

    def count48(self):
        """Sector count of a 48-bit command: 0000h means 65,536."""
        return (self.prev[Register.COUNT] << 8 | self.cur[Register.COUNT]) or 65536

    def lba28(self):
        c = self.cur
        return ((self.device & DEVICE_HEAD) << 24 | c[Register.LBA_HIGH] << 16
                | c[Register.LBA_MID] << 8 | c[Register.LBA_LOW])

    def lba48(self):
        c, p = self.cur, self.prev
        return (p[Register.LBA_HIGH] << 40 | p[Register.LBA_MID] << 32 | p[Register.LBA_LOW] << 24
                | c[Register.LBA_HIGH] << 16 | c[Register.LBA_MID] << 8 | c[Register.LBA_LOW])

    def chs(self):
        """(cylinder, head, sector) of a CHS command."""
        c = self.cur
        return c[Register.LBA_HIGH] << 8 | c[Register.LBA_MID], self.device & DEVICE_HEAD, c[Register.LBA_LOW]

    @property
    def byte_count_limit(self):
        """PACKET: the Byte Count Limit in LBA Mid/High (ATA/ATAPI-6 §8.21)."""
        return self.cur[Register.LBA_HIGH] << 8 | self.cur[Register.LBA_MID]

    # -- outputs --------------------------------------------------------------------------

    def set_lba28(self, lba):
        c = self.cur
        c[Register.LBA_LOW], c[Register.LBA_MID], c[Register.LBA_HIGH] = (
            lba & 0xFF, lba >> 8 & 0xFF, lba >> 16 & 0xFF)
        self.device = (self.device & ~DEVICE_HEAD) | (lba >> 24 & DEVICE_HEAD)

    def set_lba48(self, lba):
        c, p = self.cur, self.prev
        c[Register.LBA_LOW], c[Register.LBA_MID], c[Register.LBA_HIGH] = (
            lba & 0xFF, lba >> 8 & 0xFF, lba >> 16 & 0xFF)
        p[Register.LBA_LOW], p[Register.LBA_MID], p[Register.LBA_HIGH] = (
            lba >> 24 & 0xFF, lba >> 32 & 0xFF, lba >> 40 & 0xFF)

    def set_chs(self, cylinder, head, sector):
        c = self.cur
        c[Register.LBA_LOW], c[Register.LBA_MID], c[Register.LBA_HIGH] = (
            sector & 0xFF, cylinder & 0xFF, cylinder >> 8 & 0xFF)
        self.device = (self.device & ~DEVICE_HEAD) | (head & DEVICE_HEAD)

    def set_count(self, count, previous=None):
        self.cur[Register.COUNT] = count & 0xFF
        if previous is not None:
            self.prev[Register.COUNT] = previous & 0xFF

    def set_byte_count(self, n):
        self.cur[Register.LBA_MID] = n & 0xFF
        self.cur[Register.LBA_HIGH] = n >> 8 & 0xFF

    def set_signature(self, signature):
        """The reset/diagnostic signature (ATA/ATAPI-6 §9.12).  The Device
        register keeps only DEV (and the obsolete bits), so the host's
        selection survives the reset as on QEMU and VirtualBox."""
        count, low, mid, high = signature
        for register, value in zip(FIFO_REGISTERS[1:], (count, low, mid, high)):
            self.cur[register] = value
            self.prev[register] = 0
        self.device &= DEVICE_DEV | DEVICE_OBSOLETE

    def snapshot(self):
        return {"cur": {r.value: v for r, v in self.cur.items()},
                "prev": {r.value: v for r, v in self.prev.items()},
                "device": self.device, "status": self.status, "error": self.error,
                "command": self.command}


def describe_status(status):
    """``DRDY|DSC|DRQ`` for a trace line."""
    names = ((STATUS_BSY, "BSY"), (STATUS_DRDY, "DRDY"), (STATUS_DF, "DF"), (STATUS_DSC, "DSC"),
             (STATUS_DRQ, "DRQ"), (STATUS_ERR, "ERR"))
    return "|".join(n for bit, n in names if status & bit) or "0"


def describe_error(error):
    names = ((ERROR_ICRC, "ICRC"), (ERROR_UNC, "UNC"), (ERROR_MC, "MC"), (ERROR_IDNF, "IDNF"),
             (ERROR_MCR, "MCR"), (ERROR_ABRT, "ABRT"), (ERROR_EOM, "EOM"), (ERROR_AMNF, "AMNF"))
    return "|".join(n for bit, n in names if error & bit) or "0"

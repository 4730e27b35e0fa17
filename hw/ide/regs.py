"""IDE register maps, declared once: task file ports, bus-master IDE, PCI config.

Sources: ATA/ATAPI-6 §7 (task file register addresses, Table 18 "I/O port
functions and selection addresses"); SFF-8038i rev 1.0 "Programming
Interface for Bus Master IDE Controller" §2 (BMIDE registers, PRD format);
82371FB/SB (PIIX/PIIX3) and 82371AB (PIIX4) datasheets "IDE Configuration
Registers" and "Bus Master IDE I/O Registers"; ICH6 datasheet §11
"IDE Controller Registers (D31:F1)".

Access rules live in the Register/Field declarations (RW, RO, W1C); the
controllers apply them generically and the trace decoder reads the names
from here.
"""

from dataclasses import dataclass

from drivebay.hw.ata.taskfile import Register as TF
from drivebay.hw.pci.config import Access, Field, Register

RW, RO, W1C = Access.RW, Access.RO, Access.W1C

# -- Task file ports (ATA/ATAPI-6 Table 18) ---------------------------------------------


@dataclass(frozen=True)
class Port:
    offset: int
    name: str                 # read name / write name, as the spec pairs them
    register: object = None   # the TaskFile register behind it (None: data, status/command)


DATA = Port(0, "DATA")
ERROR_FEATURES = Port(1, "ERROR/FEATURES", TF.FEATURES)
COUNT = Port(2, "SECTOR_COUNT", TF.COUNT)             # Interrupt Reason for PACKET devices
LBA_LOW = Port(3, "LBA_LOW", TF.LBA_LOW)              # Sector Number in CHS
LBA_MID = Port(4, "LBA_MID", TF.LBA_MID)              # Cylinder Low; Byte Count Low (PACKET)
LBA_HIGH = Port(5, "LBA_HIGH", TF.LBA_HIGH)           # Cylinder High; Byte Count High (PACKET)
DEVICE = Port(6, "DEVICE", TF.DEVICE)                 # Device/Head
STATUS_COMMAND = Port(7, "STATUS/COMMAND")
COMMAND_BLOCK = (DATA, ERROR_FEATURES, COUNT, LBA_LOW, LBA_MID, LBA_HIGH, DEVICE, STATUS_COMMAND)
COMMAND_BLOCK_SIZE = 8
# The Control Block: Alternate Status (read) / Device Control (write).  At
# 3F6h/376h in legacy mode; at offset 2 of the 4-byte control block BAR in
# native mode (PCI IDE Controller Specification 1.0 §2.0).
ALT_STATUS_DEVICE_CONTROL = "ALT_STATUS/DEVICE_CONTROL"
CONTROL_BLOCK_SIZE = 4
CONTROL_OFFSET = 2

# Legacy ("compatibility") resources: PCI IDE Controller Specification 1.0 §2.1.
LEGACY = (
    # (command block base, control register port, ISA IRQ)
    (0x1F0, 0x3F6, 14),
    (0x170, 0x376, 15),
)


def command_block_name(offset, size):
    if offset == 0:
        return f"DATA{8 * size}"
    if offset < COMMAND_BLOCK_SIZE:
        return COMMAND_BLOCK[offset].name
    return None


# -- Bus-master IDE (SFF-8038i §2; PIIX4 datasheet §5.2) ------------------------------------

BMDMA_SIZE = 16                # BMIBA/BAR4 decodes 16 bytes
BMDMA_CHANNEL_STRIDE = 8       # primary at +0, secondary at +8

BMIC = Register(0x0, 1, "BMIC", fields=(
    Field("SSBM", 0, 1, RW),           # Start/Stop Bus Master
    Field("RWCON", 3, 1, RW),          # 1: bus master writes memory (device -> host)
))
BMIS = Register(0x2, 1, "BMIS", fields=(
    Field("BMIDEA", 0, 1, RO),         # Bus Master IDE Active
    Field("ERROR", 1, 1, W1C),         # IDE DMA Error (target/master abort)
    Field("IDEINTS", 2, 1, W1C),       # IDE Interrupt Status
    Field("DMA0CAP", 5, 1, RW),        # drive 0 DMA capable (software flag)
    Field("DMA1CAP", 6, 1, RW),        # drive 1 DMA capable (software flag)
    Field("SIMPLEX", 7, 1, RO),        # SFF-8038i "Simplex only"; 0 on PIIX/ICH (both channels at once)
))
BMIDTP = Register(0x4, 4, "BMIDTP", fields=(
    Field("ADDRESS", 2, 30, RW),       # Descriptor Table Base Address [31:2]; bits 1:0 reserved
))
BMDMA_CHANNEL_REGISTERS = (BMIC, BMIS, BMIDTP)

BMIC_SSBM = BMIC.mask("SSBM")
BMIC_RWCON = BMIC.mask("RWCON")
BMIS_ACTIVE = BMIS.mask("BMIDEA")
BMIS_ERROR = BMIS.mask("ERROR")
BMIS_INTERRUPT = BMIS.mask("IDEINTS")

# Physical Region Descriptor (SFF-8038i §2.2, PIIX4 Figure 8): dword 0 the
# region's physical base address (bit 0 reads as 0), dword 1 bits 15:1 the
# byte count (bit 0 is 0; 0000h means 64 KiB), bit 31 EOT.
PRD_SIZE = 8
PRD_ADDRESS_MASK = 0xFFFFFFFE
PRD_COUNT_MASK = 0xFFFE
PRD_COUNT_ZERO = 0x10000
PRD_EOT = 0x80000000
# "The PRD Table must be DWord-aligned and must not cross a 64K byte
# boundary" (ICH6 §5.16.2.4): at most 65536 / 8 entries.
MAX_PRD_ENTRIES = 0x10000 // PRD_SIZE


# -- PCI configuration registers of the IDE functions ----------------------------------------

# IDETIM (PIIX4 §4.1.13; ICH6 IDE_TIM): one 16-bit register per channel.
_IDETIM_FIELDS = (
    Field("TIME0", 0, 1, RW), Field("IE0", 1, 1, RW), Field("PPE0", 2, 1, RW), Field("DTE0", 3, 1, RW),
    Field("TIME1", 4, 1, RW), Field("IE1", 5, 1, RW), Field("PPE1", 6, 1, RW), Field("DTE1", 7, 1, RW),
    Field("RTC", 8, 2, RW), Field("ISP", 12, 2, RW), Field("SITRE", 14, 1, RW),
    Field("IDE", 15, 1, RW),           # IDE decode enable (firmware sets it; see piix.py)
)
IDETIM_PRIMARY = Register(0x40, 2, "IDETIM_PRI", fields=_IDETIM_FIELDS)
IDETIM_SECONDARY = Register(0x42, 2, "IDETIM_SEC", fields=_IDETIM_FIELDS)
SIDETIM = Register(0x44, 1, "SIDETIM", RW)        # slave IDE timing
UDMACTL = Register(0x48, 1, "UDMACTL", fields=(   # PIIX4 Ultra DMA/33 control; ICH6 SDMA_CNT
    Field("PSDE0", 0, 1, RW), Field("PSDE1", 1, 1, RW), Field("SSDE0", 2, 1, RW), Field("SSDE1", 3, 1, RW),
))
UDMATIM = Register(0x4A, 2, "UDMATIM", RW)        # PIIX4 Ultra DMA/33 timing; ICH6 SDMA_TIM
IDE_CONFIG = Register(0x54, 4, "IDE_CONFIG", RW)  # ICH6 IDE I/O configuration

PIIX3_IDE_REGISTERS = (IDETIM_PRIMARY, IDETIM_SECONDARY, SIDETIM)
PIIX4_IDE_REGISTERS = PIIX3_IDE_REGISTERS + (UDMACTL, UDMATIM)
ICH6_IDE_REGISTERS = PIIX4_IDE_REGISTERS + (IDE_CONFIG,)

# Programming Interface (PCI IDE Controller Specification 1.0 §2 and ICH6 PI
# register): bit 0 primary native, bit 1 primary programmable, bit 2
# secondary native, bit 3 secondary programmable, bit 7 bus master capable.
PI_PRIMARY_NATIVE = 0x01
PI_SECONDARY_NATIVE = 0x04
PROG_IF_PROGRAMMABLE = Register(0x09, 1, "PROG_IF", fields=(
    Field("POP_MODE_SEL", 0, 1, RW), Field("POP_MODE_CAP", 1), Field("SOP_MODE_SEL", 2, 1, RW),
    Field("SOP_MODE_CAP", 3), Field("MSBE", 7),
))

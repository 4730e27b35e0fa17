"""The Intel 82441FX PCI and Memory Controller (PMC), host bridge at 00:00.0.

Modelled (Intel 440FX PCIset 82441FX/82442FX datasheet, §3 "Register
Description"): the identity 8086:1237 revision 02h, class 0600h (host
bridge), and the PMC's configuration registers as plain storage with their
reset values — PAM0-PAM6 (0x59-0x5F, shadow RAM attributes for
0xC0000-0xFFFFF) and SMRAM (0x72) among them.  SMRAM.D_LCK locks D_OPEN
and itself until reset, as the datasheet describes.

The subsystem ID is QEMU's 1AF4:1100: SeaBIOS checks the host bridge for it
and only then takes its QEMU path (fw_cfg, and its MPT/LSI/ESP SCSI drivers).

Not modelled: the effect of PAM and SMRAM on the memory map (guest RAM below
1 MiB is plain RAM; the BIOS copy at 0xE0000-0xFFFFF is put there by the
machine), DRAM row registers, error reporting.
"""

from drivebay.hw.pci.config import COMMAND, STATUS, Access, Field, Register
from drivebay.hw.pci.device import PciDevice, PciIdentity

I440FX = PciIdentity(
    vendor_id=0x8086, device_id=0x1237, revision=0x02,
    class_code=0x060000,                            # bridge, host bridge
    subsystem_vendor_id=0x1AF4, subsystem_id=0x1100,
)

# PAM0 (59h): bits 5:4 HIENABLE for 0F0000-0FFFFF, bits 3:0 reserved.
# PAM1-PAM6: bits 1:0 LOENABLE and 5:4 HIENABLE for two 16 KiB segments each.
_PAM0_FIELDS = (Field("HIENABLE", 4, 2, Access.RW),)
_PAM_FIELDS = (Field("LOENABLE", 0, 2, Access.RW), Field("HIENABLE", 4, 2, Access.RW))
PAM = (Register(0x59, 1, "PAM0", fields=_PAM0_FIELDS),
       *(Register(0x59 + i, 1, f"PAM{i}", fields=_PAM_FIELDS) for i in range(1, 7)))

# SMRAM (72h), reset 02h: bits 2:0 C_BASE_SEG hardwired to 010b (SMRAM at
# 0xA0000), bit 7 reserved.
SMRAM = Register(0x72, 1, "SMRAM", reset=0x02, fields=(
    Field("C_BASE_SEG", 0, 3),
    Field("G_SMRAME", 3, 1, Access.RW),
    Field("D_LCK", 4, 1, Access.RW),
    Field("D_CLS", 5, 1, Access.RW),
    Field("D_OPEN", 6, 1, Access.RW),
))
D_LCK = SMRAM.mask("D_LCK")
D_OPEN = SMRAM.mask("D_OPEN")

I440FX_REGISTERS = (
    # PCICMD reset 0006h: memory access and bus master are always on; only
    # parity error response and SERR# enable are writable.
    COMMAND.variant(reset=0x0006, rw=("PARITY_ERROR_RESPONSE", "SERR_ENABLE")),
    # PCISTS reset 0280h: fast back-to-back capable, DEVSEL# medium.
    STATUS.variant(reset=0x0280),
    Register(0x50, 2, "PMCCFG", Access.RW, reset=0x0100),
    Register(0x52, 1, "DETURBO", Access.RW),
    Register(0x53, 1, "DBC", Access.RW, reset=0x80),
    Register(0x54, 1, "AXC", Access.RW),
    Register(0x55, 2, "DRAMR", Access.RW),
    Register(0x57, 1, "DRAMC", Access.RW, reset=0x01),
    Register(0x58, 1, "DRAMT", Access.RW, reset=0x10),
    *PAM,
    SMRAM,
)


class I440fx(PciDevice):
    """The host bridge function; plug it at slot 0."""

    def __init__(self, name="i440fx"):
        super().__init__(I440FX, name=name)
        self.config.declare(I440FX_REGISTERS)

    def pam(self, index):
        """PAM register ``index`` (0-6) as last written."""
        return self.config.get(PAM[index].offset, 1)

    @property
    def smram(self):
        return self.config.get(SMRAM.offset, 1)

    def config_written(self, offset, size, old, new):
        if offset <= SMRAM.offset < offset + size and self.smram & D_LCK:
            # 82441FX SMRAM: "When D_LCK is set to 1, D_OPEN is reset to 0 and
            # D_LCK, D_OPEN become read only" until a power-on reset.
            self.config.set(SMRAM.offset, 1, self.smram & ~D_OPEN)
            self.config.wmask[SMRAM.offset] &= ~(D_LCK | D_OPEN) & 0xFF

"""AHCI register map, declared once: generic host control and port registers.

Source: Serial ATA AHCI 1.3.1 Specification, §3.1 "Generic Host Control"
and §3.3 "Port Registers (one set per port)"; access types as its §1.5
defines them: RO (read-only; also HwInit and reserved bits), RW, RWC
(write 1 to clear) and RW1 (write 1 to set, cleared by the HBA).

Each Register gives the spec mnemonic, offset, reset value, fields with
their access and (where the spec names them) value names, and its section.
hw/ahci/regfile.py applies the masks on every access and decodes trace
lines from the same declarations; hba.py and port.py react to results only.

Values that depend on the configuration (CAP.NP, PI, CCC_CTL.INT,
PxCMD.HPCP) are filled in by the HBA at reset; the choices behind the
others are in hw/ahci/hba.py's docstring.
"""

import enum
from dataclasses import dataclass
from functools import cached_property


class Access(enum.Enum):
    RO = "RO"
    RW = "RW"
    RWC = "RWC"      # "Read/Write 1 to Clear"
    RW1 = "RW1"      # "Read/Write 1 to Set": software sets, the HBA clears


RO, RW, RWC, RW1 = Access.RO, Access.RW, Access.RWC, Access.RW1


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int = 1
    access: Access = RO
    values: tuple = ()           # (value, meaning) pairs the spec names

    # Masks are derived once (the declarations are frozen): every guest
    # write applies them.
    @cached_property
    def mask(self):
        return ((1 << self.width) - 1) << self.lsb

    def get(self, value):
        return (value & self.mask) >> self.lsb

    def describe(self, value):
        v = self.get(value)
        if self.width == 1:
            return self.name if v else None
        meaning = dict(self.values).get(v)
        return f"{self.name}={v:#x}" + (f"({meaning})" if meaning else "")


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    reset: int = 0
    fields: tuple = ()
    section: str = ""
    width: int = 4

    def _mask_of(self, access):
        mask = 0
        for f in self.fields:
            if f.access is access:
                mask |= f.mask
        return mask

    @cached_property
    def wmask(self):
        return self._mask_of(RW)

    @cached_property
    def rwcmask(self):
        return self._mask_of(RWC)

    @cached_property
    def rw1mask(self):
        return self._mask_of(RW1)

    def field(self, name):
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name}")

    def mask(self, name):
        return self.field(name).mask


def _bits(names, access):
    """One-bit fields from {name: bit}."""
    return tuple(Field(name, bit, 1, access) for name, bit in names.items())


# -- §3.1 Generic Host Control -----------------------------------------------------------

CAP = Register("CAP", 0x00, section="3.1.1", fields=(
    Field("NP", 0, 5), Field("SXS", 5), Field("EMS", 6), Field("CCCS", 7), Field("NCS", 8, 5),
    Field("PSC", 13), Field("SSC", 14), Field("PMD", 15), Field("FBSS", 16), Field("SPM", 17),
    Field("SAM", 18),
    Field("ISS", 20, 4, values=((1, "Gen 1 (1.5 Gbps)"), (2, "Gen 2 (3 Gbps)"), (3, "Gen 3 (6 Gbps)"))),
    Field("SCLO", 24), Field("SAL", 25), Field("SALP", 26), Field("SSS", 27), Field("SMPS", 28),
    Field("SSNTF", 29), Field("SNCQ", 30), Field("S64A", 31),
))
GHC = Register("GHC", 0x04, section="3.1.2", fields=(
    Field("HR", 0, 1, RW1), Field("IE", 1, 1, RW), Field("MRSM", 2), Field("AE", 31),
))
IS = Register("IS", 0x08, section="3.1.3", fields=(Field("IPS", 0, 32, RWC),))
PI = Register("PI", 0x0C, section="3.1.4", fields=(Field("PI", 0, 32),))
VS = Register("VS", 0x10, section="3.1.5", fields=(Field("MNR", 0, 16), Field("MJR", 16, 16)))
CCC_CTL = Register("CCC_CTL", 0x14, section="3.1.6", fields=(
    Field("EN", 0, 1, RW), Field("INT", 3, 5), Field("CC", 8, 8, RW), Field("TV", 16, 16, RW),
))
CCC_PORTS = Register("CCC_PORTS", 0x18, section="3.1.7", fields=(Field("PRT", 0, 32, RW),))
EM_LOC = Register("EM_LOC", 0x1C, section="3.1.8", fields=(Field("SZ", 0, 16), Field("OFST", 16, 16)))
EM_CTL = Register("EM_CTL", 0x20, section="3.1.9", fields=(Field("STS_MR", 0),))
CAP2 = Register("CAP2", 0x24, section="3.1.10", fields=(
    Field("BOH", 0), Field("NVMP", 1), Field("APST", 2), Field("SDS", 3), Field("SADM", 4),
    Field("DESO", 5),
))
# BOHC is implemented only with CAP2.BOH; without it the dword is reserved (RO 0).
BOHC = Register("BOHC", 0x28, section="3.1.11", fields=(
    Field("BOS", 0), Field("OOS", 1), Field("SOOE", 2), Field("OOC", 3), Field("BB", 4),
))
GENERIC = (CAP, GHC, IS, PI, VS, CCC_CTL, CCC_PORTS, EM_LOC, EM_CTL, CAP2, BOHC)

# -- §3.3 Port registers -------------------------------------------------------------------

PORT_BASE = 0x100                # §3: port x at 100h + x * 80h
PORT_STRIDE = 0x80
MAX_PORTS = 32                   # CAP.NP is five bits

PxCLB = Register("PxCLB", 0x00, section="3.3.1", fields=(Field("CLB", 10, 22, RW),))
PxCLBU = Register("PxCLBU", 0x04, section="3.3.2", fields=(Field("CLBU", 0, 32, RW),))
PxFB = Register("PxFB", 0x08, section="3.3.3", fields=(Field("FB", 8, 24, RW),))
PxFBU = Register("PxFBU", 0x0C, section="3.3.4", fields=(Field("FBU", 0, 32, RW),))

# Bit positions shared by PxIS (status) and PxIE (enable).
_INTERRUPT_BITS = {
    "DHR": 0, "PS": 1, "DS": 2, "SDB": 3, "UF": 4, "DP": 5, "PC": 6, "DMP": 7, "PRC": 22,
    "IPM": 23, "OF": 24, "INF": 26, "IF": 27, "HBD": 28, "HBF": 29, "TFE": 30, "CPD": 31,
}
# PxIS.PRCS, PCS and UFS reflect PxSERR.DIAG.N, DIAG.X and DIAG.F: RO.  CPDS
# and DMPS need cold presence detect / mechanical presence switches: none here.
_IS_READ_ONLY = {"PRC", "PC", "UF", "CPD", "DMP"}
PxIS = Register("PxIS", 0x10, section="3.3.5", fields=tuple(
    Field(f"{name}S", bit, 1, RO if name in _IS_READ_ONLY else RWC)
    for name, bit in _INTERRUPT_BITS.items()))
# PxIE.CPDE is RW only with PxCMD.CPD, DMPE only with CAP.SMPS.
PxIE = Register("PxIE", 0x14, section="3.3.6", fields=tuple(
    Field(f"{name}E", bit, 1, RO if name in ("CPD", "DMP") else RW)
    for name, bit in _INTERRUPT_BITS.items()))

PxCMD = Register("PxCMD", 0x18, section="3.3.7", fields=(
    Field("ST", 0, 1, RW),
    Field("SUD", 1, 1, RW),      # RW because CAP.SSS = 1
    Field("POD", 2),             # RO 1: no cold presence detection
    Field("CLO", 3, 1, RW1),
    Field("FRE", 4, 1, RW),
    Field("CCS", 8, 5),
    Field("MPSS", 13), Field("FR", 14), Field("CR", 15), Field("CPS", 16),
    Field("PMA", 17),            # RO 0: CAP.SPM = 0
    Field("HPCP", 18), Field("MPSP", 19), Field("CPD", 20), Field("ESP", 21), Field("FBSCP", 22),
    Field("APSTE", 23),          # RO 0: CAP2.APST = 0
    Field("ATAPI", 24, 1, RW), Field("DLAE", 25, 1, RW),
    Field("ALPE", 26), Field("ASP", 27),     # RO 0: CAP.SALP = 0
    Field("ICC", 28, 4, RW, values=((0, "idle"), (1, "active"), (2, "partial"), (6, "slumber"))),
), reset=0x00000004)
PxTFD = Register("PxTFD", 0x20, section="3.3.8", fields=(
    Field("STS", 0, 8), Field("ERR", 8, 8),
), reset=0x0000007F)
PxSIG = Register("PxSIG", 0x24, section="3.3.9", fields=(Field("SIG", 0, 32),), reset=0xFFFFFFFF)

DET_NONE, DET_PRESENT, DET_ESTABLISHED, DET_OFFLINE = 0x0, 0x1, 0x3, 0x4
PxSSTS = Register("PxSSTS", 0x28, section="3.3.10", fields=(
    Field("DET", 0, 4, values=((0, "no device"), (1, "device, no Phy communication"),
                               (3, "device, Phy communication established"), (4, "offline"))),
    Field("SPD", 4, 4, values=((0, "no device"), (1, "Gen 1"), (2, "Gen 2"), (3, "Gen 3"))),
    Field("IPM", 8, 4, values=((0, "no device"), (1, "active"), (2, "partial"), (6, "slumber"))),
))
SCTL_DET_NONE, SCTL_DET_COMRESET, SCTL_DET_OFFLINE = 0x0, 0x1, 0x4
PxSCTL = Register("PxSCTL", 0x2C, section="3.3.11", fields=(
    Field("DET", 0, 4, RW, values=((0, "no action"), (1, "COMRESET"), (4, "disable interface"))),
    Field("SPD", 4, 4, RW, values=((0, "no restriction"), (1, "Gen 1"), (2, "Gen 2"), (3, "Gen 3"))),
    Field("IPM", 8, 4, RW),
    Field("SPM", 12, 4), Field("PMP", 16, 4),    # "not used by AHCI"
))
# DIAG (bits 26:16) and ERR (bits 11:0) of SError, every bit RWC.
PxSERR = Register("PxSERR", 0x30, section="3.3.12", fields=_bits({
    "ERR_I": 0, "ERR_M": 1, "ERR_T": 8, "ERR_C": 9, "ERR_P": 10, "ERR_E": 11,
    "DIAG_N": 16, "DIAG_I": 17, "DIAG_W": 18, "DIAG_B": 19, "DIAG_D": 20, "DIAG_C": 21,
    "DIAG_H": 22, "DIAG_S": 23, "DIAG_T": 24, "DIAG_F": 25, "DIAG_X": 26,
}, RWC))
PxSACT = Register("PxSACT", 0x34, section="3.3.13", fields=(Field("DS", 0, 32, RW1),))
PxCI = Register("PxCI", 0x38, section="3.3.14", fields=(Field("CI", 0, 32, RW1),))
PxSNTF = Register("PxSNTF", 0x3C, section="3.3.15", fields=(Field("PMN", 0, 16, RWC),))
PxFBS = Register("PxFBS", 0x40, section="3.3.16", fields=(   # RO 0: CAP.FBSS = 0
    Field("EN", 0), Field("DEC", 1), Field("SDE", 2), Field("DEV", 8, 4), Field("ADO", 12, 4),
    Field("DWE", 16, 4),
))
PORT = (PxCLB, PxCLBU, PxFB, PxFBU, PxIS, PxIE, PxCMD, PxTFD, PxSIG, PxSSTS, PxSCTL, PxSERR,
        PxSACT, PxCI, PxSNTF, PxFBS)


# Masks the device code uses, taken from the declarations.
GHC_HR, GHC_IE, GHC_AE = GHC.mask("HR"), GHC.mask("IE"), GHC.mask("AE")
CCC_EN = CCC_CTL.mask("EN")
CCC_CC, CCC_TV, CCC_INT = CCC_CTL.field("CC"), CCC_CTL.field("TV"), CCC_CTL.field("INT")

CMD_ST, CMD_SUD, CMD_CLO, CMD_FRE = (PxCMD.mask(n) for n in ("ST", "SUD", "CLO", "FRE"))
CMD_FR, CMD_CR, CMD_HPCP, CMD_ICC = (PxCMD.mask(n) for n in ("FR", "CR", "HPCP", "ICC"))
CMD_CCS = PxCMD.field("CCS")

IS_DHRS, IS_PSS, IS_DSS, IS_SDBS, IS_UFS, IS_DPS, IS_PCS = (
    PxIS.mask(n) for n in ("DHRS", "PSS", "DSS", "SDBS", "UFS", "DPS", "PCS"))
IS_PRCS, IS_OFS, IS_IFS, IS_HBFS, IS_TFES = (
    PxIS.mask(n) for n in ("PRCS", "OFS", "IFS", "HBFS", "TFES"))
# Interrupts counted as command completions by CCC (§11: "command
# completions" are the FISes that end a command).
IS_COMPLETIONS = IS_DHRS | IS_PSS | IS_DSS | IS_SDBS | IS_DPS

TFD_STS = PxTFD.field("STS")
SSTS_SPD, SSTS_IPM = PxSSTS.field("SPD"), PxSSTS.field("IPM")
SCTL_DET, SCTL_SPD = PxSCTL.field("DET"), PxSCTL.field("SPD")
SERR_DIAG_X, SERR_DIAG_N, SERR_DIAG_F = (PxSERR.mask(n) for n in ("DIAG_X", "DIAG_N", "DIAG_F"))
SERR_ERR_P = PxSERR.mask("ERR_P")
IPM_ACTIVE = 0x1

# -- HBA memory size ------------------------------------------------------------------------

# VirtualBox decodes 100h + 30 * 80h = 4352 bytes; a BAR is a power of two.
ABAR_SIZE = 0x2000


def port_register_at(offset):
    """(port, Register) for an ABAR offset inside a port's registers, or None."""
    if offset < PORT_BASE:
        return None
    port, rel = divmod(offset - PORT_BASE, PORT_STRIDE)
    return port, _PORT_AT.get(rel)


_PORT_AT = {r.offset: r for r in PORT}
_GENERIC_AT = {r.offset: r for r in GENERIC}


def register_name(offset, size=4):
    """``PxCMD`` style names for the trace (``P3CMD`` for port 3)."""
    base = offset & ~3
    if base < PORT_BASE:
        reg = _GENERIC_AT.get(base)
        name = reg.name if reg else None
    else:
        port, reg = port_register_at(base)
        name = f"P{port}{reg.name[2:]}" if reg else None
    if name is None:
        return None
    return name + (f"+{offset - base}" if offset != base else "")

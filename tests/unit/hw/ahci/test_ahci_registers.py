"""Register reset values and write masks (AHCI 1.3.1 §3.1, §3.3), PCI identity.

Every value below is written out from the spec and the controller's chosen
capabilities (hw/ahci/hba.py's docstring), not read from hw/ahci/regs.py.
"""

import pytest

from ahcibench import (
    ABAR, CAP, CAP2, BOHC, CCC_CTL, CCC_PORTS, CMD_CLO, CMD_CR, CMD_FR, CMD_FRE, CMD_HPCP, CMD_POD,
    CMD_ST, CMD_SUD, EM_CTL, EM_LOC, GHC, GHC_AE, GHC_HR, GHC_IE, IS, PI, VS, PxCI, PxCLB, PxCLBU,
    PxCMD, PxFB, PxFBS, PxFBU, PxIE, PxIS, PxSACT, PxSCTL, PxSERR, PxSIG, PxSNTF, PxSSTS, PxTFD,
    AhciBench, disk,
)

# CAP (§3.1.1): S64A | SNCQ | SSNTF | SSS | SCLO | ISS=2 | SAM | PMD | NCS=31 | CCCS | NP.
CAP_BITS = 1 << 31 | 1 << 30 | 1 << 29 | 1 << 27 | 1 << 24 | 2 << 20 | 1 << 18 | 1 << 15 | 31 << 8 | 1 << 7


def test_pci_identity_is_the_ich8m_ahci_function():
    b = AhciBench(ports=1)
    assert b.cfg_read(0x00) == 0x28298086
    assert b.cfg_read(0x08) == 0x01060102                # class 01h/06h/01h, revision 02h
    assert b.cfg_read(0x3D, 1) == 1                      # INTA#
    b.cfg_write(0x24, 4, 0xFFFFFFFF)
    assert b.cfg_read(0x24) == 0xFFFFE000                # BAR5: 8 KiB memory
    b.cfg_write(0x24, 4, ABAR)
    for bar, size in ((0, 8), (1, 4), (2, 8), (3, 4), (4, 16)):
        b.cfg_write(0x10 + 4 * bar, 4, 0xFFFFFFFF)
        assert b.cfg_read(0x10 + 4 * bar) == (~(size - 1) & 0xFFFFFFFF) | 1     # I/O BARs
    assert b.cfg_read(0x06, 2) & 0x10                    # capabilities list
    assert b.cfg_read(0x34, 1) == 0x80
    assert b.cfg_read(0x80, 1) == 0x05                   # MSI
    assert b.cfg_read(0x82, 2) & 0x80 == 0               # 32-bit message address, 1 vector
    assert b.cfg_read(0x82, 2) & 0x0E == 0


@pytest.mark.parametrize("ports", [1, 4, 6, 30])
def test_generic_reset_values(ports):
    b = AhciBench(ports=ports)
    assert b.hba_read(CAP) == CAP_BITS | (ports - 1)
    assert b.hba_read(GHC) == 0x80000000                 # AE reads 1 (CAP.SAM)
    assert b.hba_read(IS) == 0
    assert b.hba_read(PI) == (1 << ports) - 1
    assert b.hba_read(VS) == 0x00010300
    assert b.hba_read(CCC_CTL) == 0x00010100 | ports << 3    # TV=1, CC=1, INT = first unimplemented port
    for offset in (CCC_PORTS, EM_LOC, EM_CTL, CAP2, BOHC):
        assert b.hba_read(offset) == 0
    for offset in range(0x2C, 0x100, 4):                 # reserved and vendor specific
        assert b.hba_read(offset) == 0


def test_port_reset_values():
    b = AhciBench(ports=3, drives={0: {"backend": disk()}, 1: {"backend": disk(), "hotpluggable": True}})
    for port, cmd in ((0, CMD_POD), (1, CMD_POD | CMD_HPCP), (2, CMD_POD | CMD_HPCP)):
        values = {r: b.px_read(port, r) for r in (PxCLB, PxCLBU, PxFB, PxFBU, PxIS, PxIE, PxCMD, PxTFD,
                                                   PxSIG, PxSSTS, PxSCTL, PxSERR, PxSACT, PxCI, PxSNTF,
                                                   PxFBS)}
        assert values == {PxCLB: 0, PxCLBU: 0, PxFB: 0, PxFBU: 0, PxIS: 0, PxIE: 0, PxCMD: cmd,
                          PxTFD: 0x7F, PxSIG: 0xFFFFFFFF, PxSSTS: 0, PxSCTL: 0, PxSERR: 0, PxSACT: 0,
                          PxCI: 0, PxSNTF: 0, PxFBS: 0}
    assert b.px_read(3, PxCMD) == 0                      # beyond the ports: reserved
    b.px_write(3, PxCMD, 0xFFFFFFFF)
    assert b.px_read(3, PxCMD) == 0


def test_generic_write_masks():
    b = AhciBench(ports=4)
    for offset in (CAP, PI, VS, EM_LOC, EM_CTL, CAP2, BOHC):
        before = b.hba_read(offset)
        b.hba_write(offset, 0xFFFFFFFF)
        b.hba_write(offset, 0)
        assert b.hba_read(offset) == before
    b.hba_write(GHC, 0)
    assert b.hba_read(GHC) == GHC_AE                     # AE is RO 1
    b.hba_write(GHC, GHC_IE | 0x7FFFFFFC)
    assert b.hba_read(GHC) == GHC_AE | GHC_IE
    b.hba_write(CCC_PORTS, 0xFFFFFFFF)
    assert b.hba_read(CCC_PORTS) == 0xF                  # only implemented ports
    b.hba_write(CCC_CTL, 0xFFFFFFFF)
    assert b.hba_read(CCC_CTL) == 0xFFFFFF01 | 4 << 3    # INT is RO
    b.hba_write(IS, 0xFFFFFFFF)
    assert b.hba_read(IS) == 0


def test_port_write_masks():
    b = AhciBench(ports=1, drives={0: {"backend": disk()}})
    b.px_write(0, PxCLB, 0xFFFFFFFF)
    assert b.px_read(0, PxCLB) == 0xFFFFFC00             # 1 KiB aligned
    b.px_write(0, PxFB, 0xFFFFFFFF)
    assert b.px_read(0, PxFB) == 0xFFFFFF00              # 256-byte aligned
    b.px_write(0, PxCLBU, 0x12345678)                    # CAP.S64A: upper halves are RW
    b.px_write(0, PxFBU, 0x9ABCDEF0)
    assert (b.px_read(0, PxCLBU), b.px_read(0, PxFBU)) == (0x12345678, 0x9ABCDEF0)
    b.px_write(0, PxIE, 0xFFFFFFFF)
    assert b.px_read(0, PxIE) == 0x7DC0007F              # CPDE, DMPE and reserved bits RO 0
    for offset in (PxTFD, PxSIG, PxSSTS, PxFBS):
        before = b.px_read(0, offset)
        b.px_write(0, offset, 0xFFFFFFFF ^ before)
        assert b.px_read(0, offset) == before
    b.px_write(0, PxSCTL, 0xFFFFFFF0)
    assert b.px_read(0, PxSCTL) == 0x00000FF0            # IPM, SPD RW; SPM, PMP not used by AHCI
    b.px_write(0, PxSCTL, 0)
    b.px_write(0, PxSERR, 0xFFFFFFFF)                    # RWC: nothing to clear
    assert b.px_read(0, PxSERR) == 0
    b.px_write(0, PxSNTF, 0xFFFFFFFF)
    assert b.px_read(0, PxSNTF) == 0


def test_pxcmd_write_mask_and_running_bits():
    b = AhciBench(ports=1, drives={0: {"backend": disk()}})
    b.px_write(0, PxCMD, 0xFFFFFFFF & ~CMD_ST & ~CMD_CLO)
    # RW: ICC (cleared by the HBA at once), ATAPI, DLAE, FRE, SUD; FR follows FRE.
    assert b.px_read(0, PxCMD) == 0x03000000 | CMD_FR | CMD_FRE | CMD_POD | CMD_SUD
    b.px_write(0, PxCMD, CMD_FRE | CMD_SUD | CMD_ST)
    assert b.px_read(0, PxCMD) & (CMD_CR | CMD_FR | CMD_ST) == CMD_CR | CMD_FR | CMD_ST
    b.px_write(0, PxCMD, CMD_FRE | CMD_SUD | CMD_ST | CMD_CLO)
    assert not b.px_read(0, PxCMD) & CMD_CLO             # CLO clears itself
    b.px_write(0, PxCMD, CMD_SUD)
    assert b.px_read(0, PxCMD) & (CMD_CR | CMD_FR | CMD_ST | CMD_FRE) == 0


def test_sact_and_ci_need_st():
    b = AhciBench(ports=1, drives={0: {"backend": disk()}})
    b.hba_enable()
    b.port_start(0, start=False)
    b.px_write(0, PxSACT, 0xF)
    b.px_write(0, PxCI, 0x1)
    assert (b.px_read(0, PxSACT), b.px_read(0, PxCI)) == (0, 0)
    b.px_write(0, PxCMD, b.px_read(0, PxCMD) | CMD_ST)
    b.px_write(0, PxSACT, 0x6)
    b.px_write(0, PxSACT, 0x1)                           # RW1: bits accumulate
    assert b.px_read(0, PxSACT) == 0x7
    b.px_write(0, PxCMD, b.px_read(0, PxCMD) & ~CMD_ST)
    assert b.px_read(0, PxSACT) == 0                     # ST 1 -> 0 clears PxSACT and PxCI


def test_byte_word_and_qword_accesses():
    b = AhciBench(ports=1)
    b.px_write(0, PxCLB, 0xAB, size=1)                   # low byte: bits 9:0 reserved
    b.px_write(0, PxCLB + 1, 0xCD, size=1)
    assert b.px_read(0, PxCLB) == 0x0000CC00
    b.px_write(0, PxCLB + 2, 0x1234, size=2)
    assert b.px_read(0, PxCLB) == 0x1234CC00
    assert b.px_read(0, PxCLB + 2, size=2) == 0x1234
    assert b.hba_read(CAP, size=8) == b.hba_read(CAP) | b.hba_read(GHC) << 32
    b.hba_write(0x100, 0x0000_0007_0000_0400, size=8)   # P0CLB and P0CLBU at once
    assert (b.px_read(0, PxCLB), b.px_read(0, PxCLBU)) == (0x400, 7)


def test_index_data_pair_reaches_abar():
    b = AhciBench(ports=2)
    b.cfg_write(0x20, 4, 0xC040)                         # BAR4
    b.cfg_write(0x04, 2, 0x0007)
    b.io.write(0xC040 + 8, 4, 0x0C)                      # index: PI
    assert b.io.read(0xC040 + 0xC, 4) == 0x3
    b.io.write(0xC040 + 8, 4, 0x100 + PxCLB)
    b.io.write(0xC040 + 0xC, 4, 0x5000)
    assert b.px_read(0, PxCLB) == 0x5000
    b.cfg_write(0x10, 4, 0xC000)
    assert b.io.read(0xC000, 1) == 0xFF                  # legacy IDE windows: nothing behind


def test_hba_reset_restores_registers_but_keeps_bases():
    b = AhciBench(ports=2, drives={0: {"backend": disk()}}).bring_up(0)
    b.px_write(0, PxIE, 0x1)
    b.hba_write(CCC_PORTS, 0x1)
    clb, fb = b.px_read(0, PxCLB), b.px_read(0, PxFB)
    b.hba_write(GHC, GHC_HR | GHC_IE)
    assert b.hba_read(GHC) == GHC_AE                     # HR done at once, IE reset
    assert b.px_read(0, PxIE) == 0
    assert b.px_read(0, PxCMD) == CMD_POD                # SUD 0 (staggered spin-up): link down
    assert b.px_read(0, PxSSTS) == 0
    assert (b.px_read(0, PxCLB), b.px_read(0, PxFB)) == (clb, fb)
    assert b.hba_read(CCC_PORTS) == 0x1                  # not a port register: kept
    b.px_write(0, PxCMD, CMD_SUD)
    assert b.px_read(0, PxSSTS) == 0x123                 # spun up: link again


def test_pci_reset_clears_bases():
    b = AhciBench(ports=1, drives={0: {"backend": disk()}}).bring_up(0)
    b.hba.bus_reset()
    assert b.hba.ports[0].regs.values[PxCLB] == 0

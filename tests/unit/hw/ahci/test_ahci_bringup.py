"""Bring-up as a driver does it (AHCI 1.3.1 §10.1), links, resets, interrupts."""

from ahcibench import (
    CCC_CTL, CCC_PORTS, CMD_CR, CMD_FRE, CMD_ST, CMD_SUD, DRDY, DSC, GHC, GHC_AE, IS, IS_DHRS,
    IS_PCS, IS_PRCS, PxCI, PxCMD, PxIE, PxIS, PxSCTL, PxSERR, PxSIG, PxSSTS, PxTFD, READ_DMA_EXT,
    RX_RFIS, SERR_DIAG_N, SERR_DIAG_X, AhciBench, disk,
)

from drivebay.block.backend import MemoryBackend
from drivebay.hw.scsi.mmc import ScsiCdrom


def cdrom():
    return {"type": "dvddrive", "lun": ScsiCdrom(MemoryBackend(bytearray(16 * 2048), read_only=True,
                                                               sector_size=2048))}


def test_spin_up_brings_the_link_and_signatures():
    b = AhciBench(ports=3, drives={0: {"backend": disk()}, 1: cdrom()})
    b.hba_enable()
    for port in range(3):
        assert b.px_read(port, PxSSTS) == 0              # staggered spin-up: nothing before SUD
        b.port_start(port, start=False)
    assert b.px_read(0, PxSSTS) == 0x123                 # IPM active, Gen 2, DET 3
    assert b.px_read(0, PxSIG) == 0x00000101             # ATA device
    assert b.px_read(0, PxTFD) == 0x0150                 # DRDY|DSC, error 01h (diagnostics passed)
    assert b.px_read(1, PxSIG) == 0xEB140101             # ATAPI device
    assert b.px_read(1, PxTFD) & 0xFF == 0x00
    assert b.px_read(2, PxSSTS) == 0                     # no device
    assert b.px_read(2, PxSIG) == 0xFFFFFFFF
    assert b.px_read(2, PxTFD) == 0x7F
    # The signature FIS was posted (FRE was set before SUD) without the I bit.
    fis = b.rx_fis(0, RX_RFIS, 20)
    assert fis[0] == 0x34 and fis[1] & 0x40 == 0 and fis[2] == DRDY | DSC
    assert fis[12] == 1 and fis[4] == 1 and fis[5] == 0 and fis[6] == 0


def test_spin_up_reports_cominit_in_serr():
    b = AhciBench(ports=1, drives={0: {"backend": disk()}})
    b.hba_enable()
    b.px_write(0, PxCMD, CMD_SUD)
    assert b.px_read(0, PxSERR) == SERR_DIAG_X | SERR_DIAG_N
    assert b.px_read(0, PxIS) & (IS_PCS | IS_PRCS) == IS_PCS | IS_PRCS   # mirrored, read-only
    b.px_write(0, PxIS, IS_PCS | IS_PRCS)
    assert b.px_read(0, PxIS) & (IS_PCS | IS_PRCS) == IS_PCS | IS_PRCS   # cleared only via PxSERR
    b.px_write(0, PxSERR, SERR_DIAG_X | SERR_DIAG_N)
    assert b.px_read(0, PxIS) == 0


def test_comreset_through_sctl():
    b = AhciBench(ports=1, drives={0: {"backend": disk()}}).bring_up(0)
    b.px_write(0, PxCMD, b.px_read(0, PxCMD) & ~CMD_ST)
    b.px_write(0, PxSERR, 0xFFFFFFFF)
    b.px_write(0, PxSCTL, 0x301)                         # DET = 1: COMRESET, IPM 3
    assert b.px_read(0, PxSSTS) & 0xF == 0
    assert b.px_read(0, PxTFD) == 0x7F
    b.px_write(0, PxSCTL, 0x300)
    assert b.px_read(0, PxSSTS) == 0x123
    assert b.px_read(0, PxSIG) == 0x101
    assert b.px_read(0, PxSERR) & SERR_DIAG_X
    b.px_write(0, PxSCTL, 0x314)                         # SPD 1 and offline
    assert b.px_read(0, PxSSTS) == 0x4
    b.px_write(0, PxSCTL, 0x310)                         # Gen 1 only
    assert b.px_read(0, PxSSTS) == 0x113


def test_st_and_cr():
    b = AhciBench(ports=1, drives={0: {"backend": disk()}}).bring_up(0)
    cmd = b.px_read(0, PxCMD)
    assert cmd & (CMD_ST | CMD_CR) == CMD_ST | CMD_CR
    b.px_write(0, PxCMD, cmd & ~CMD_ST)
    assert b.px_read(0, PxCMD) & CMD_CR == 0
    b.px_write(0, PxCMD, cmd & ~(CMD_ST | CMD_FRE))
    assert b.px_read(0, PxCMD) & 0x4000 == 0             # FR


def test_interrupt_reaches_is_intx_and_clears():
    b = AhciBench(ports=2, drives={1: {"backend": disk()}}).bring_up(1)
    b.clear_irq(1)
    assert not b.intx
    b.read(1, 0, 1)
    assert b.px_read(1, PxIS) & IS_DHRS
    assert b.hba_read(IS) == 0b10
    assert b.intx
    b.hba_write(IS, 0b10)                                # cause still pending in PxIS: IS sets again
    assert b.hba_read(IS) == 0b10 and b.intx
    b.px_write(1, PxIS, IS_DHRS)
    b.hba_write(IS, 0b10)
    assert b.hba_read(IS) == 0 and not b.intx


def test_interrupt_masks():
    b = AhciBench(ports=1, drives={0: {"backend": disk()}}).bring_up(0)
    b.clear_irq(0)
    b.px_write(0, PxIE, 0)
    b.read(0, 0, 1)
    assert b.px_read(0, PxIS) & IS_DHRS and b.hba_read(IS) == 0 and not b.intx
    b.px_write(0, PxIE, IS_DHRS)                         # enabling a pending cause interrupts
    assert b.hba_read(IS) == 1 and b.intx
    b.hba_write(GHC, GHC_AE)                             # GHC.IE clear: no interrupt line
    assert b.hba_read(IS) == 1 and not b.intx


def test_msi_sends_a_message_per_event():
    b = AhciBench(ports=1, drives={0: {"backend": disk()}}).bring_up(0)
    b.clear_irq(0)
    b.cfg_write(0x84, 4, 0xFEE00000)
    b.cfg_write(0x88, 2, 0x0041)
    b.cfg_write(0x82, 2, 0x0001)                         # MSI enable
    b.read(0, 0, 1)
    assert b.msis == [(0xFEE00000, 0x41)]
    assert not b.intx                                    # MSI: no INTx
    b.read(0, 1, 1)
    assert len(b.msis) == 2


def test_command_completion_coalescing():
    b = AhciBench(ports=2, drives={0: {"backend": disk()}}).bring_up(0)
    b.clear_irq(0)
    b.hba_write(CCC_PORTS, 0x1)
    b.hba_write(CCC_CTL, 3 << 8 | 5 << 16 | 1)           # CC = 3 completions, TV = 5 ms, EN
    b.read(0, 0, 1)
    b.read(0, 1, 1)
    assert b.hba_read(IS) == 0 and not b.intx            # completions counted, not signalled
    b.read(0, 2, 1)
    assert b.hba_read(IS) == 1 << 2 and b.intx           # IS bit CCC_CTL.INT (2: first free port)
    b.hba_write(IS, 1 << 2)
    assert b.hba_read(IS) == 0
    b.read(0, 3, 1)                                      # one completion, then the timer
    assert b.hba_read(IS) == 0
    b.clock.advance_to(b.clock.now_ns() + 5_000_000)
    assert b.hba_read(IS) == 1 << 2


def test_command_waits_for_the_link_and_runs_after_spin_up():
    b = AhciBench(ports=1, drives={0: {"backend": disk()}})
    b.hba_enable()
    b.port_start(0, start=False)
    b.px_write(0, PxCMD, CMD_FRE | CMD_SUD)
    b.px_write(0, PxSCTL, 1)                             # hold the interface in COMRESET
    b.px_write(0, PxCMD, CMD_FRE | CMD_SUD | CMD_ST)
    cmd = b.command(0, 0, READ_DMA_EXT, lba=0, count=1, buffers=[(b.buffer(512), 512)])
    b.issue(cmd)
    assert b.px_read(0, PxCI) == 1                       # no link: the command waits
    b.px_write(0, PxSCTL, 0)
    assert b.px_read(0, PxCI) == 0

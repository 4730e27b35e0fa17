"""Task file registers, device selection, interrupts, resets, guest errors."""

import pytest

from drivebay.hw.scsi.mmc import ScsiCdrom

from idebench import (
    ABRT, BSY, COUNT, DEVICE, DRDY, DRQ, ERR, IDNF, LBA_HIGH, LBA_LOW, LBA_MID, NIEN, PRIMARY,
    PRIMARY_CTL, SECONDARY, SECONDARY_CTL, SECTOR, SRST, STATUS, IdeBench, disk,
)


def test_registers_read_back(bench):
    b = bench
    for reg, value in ((COUNT, 0x12), (LBA_LOW, 0x34), (LBA_MID, 0x56), (LBA_HIGH, 0x78)):
        b.outb(PRIMARY + reg, value)
        assert b.inb(PRIMARY + reg) == value
    b.outb(PRIMARY + DEVICE, 0xE5)
    assert b.inb(PRIMARY + DEVICE) == 0xE5
    # Offset 1 reads Error, not the Features just written.
    b.outb(PRIMARY + 1, 0xAA)
    assert b.inb(PRIMARY + 1) == 0x01


def test_power_on_signature_and_status(bench):
    b = bench
    assert b.inb(PRIMARY + STATUS) == DRDY | 0x10
    assert (b.inb(PRIMARY + COUNT), b.inb(PRIMARY + LBA_LOW), b.inb(PRIMARY + LBA_MID),
            b.inb(PRIMARY + LBA_HIGH)) == (1, 1, 0, 0)
    assert b.inb(PRIMARY + 1) == 0x01


def test_empty_channel_floats_to_7f(bench):
    b = bench
    for reg in range(1, 8):
        assert b.inb(SECONDARY + reg) == 0x7F
    assert b.inb(SECONDARY_CTL) == 0x7F
    b.outb(SECONDARY + COUNT, 0x55)
    assert b.inb(SECONDARY + COUNT) == 0x7F


def test_absent_slave_reads_status_zero(bench):
    b = bench
    b.outb(PRIMARY + COUNT, 0x55)
    b.outb(PRIMARY + DEVICE, 0xB0)                  # select device 1 (absent)
    assert b.inb(PRIMARY + STATUS) == 0x00
    assert b.inb(PRIMARY_CTL) == 0x00
    assert b.inb(PRIMARY + COUNT) == 0x55           # device 0's latch answers
    b.outb(PRIMARY + 7, 0xEC)                       # IDENTIFY to nobody: ignored
    assert b.inb(PRIMARY + STATUS) == 0x00
    assert not b.irqs[14].history
    b.outb(PRIMARY + DEVICE, 0xA0)
    assert b.inb(PRIMARY + STATUS) == DRDY | 0x10


def test_master_and_slave_selected_by_dev_bit():
    m, s = disk(64), disk(64)
    s.data[:] = bytes(len(s.data))
    b = IdeBench(drives={(0, 0): {"backend": m}, (0, 1): {"backend": s}})
    b.issue(0x20, lba=1, count=1, unit=1)
    assert b.read_words(SECTOR) == bytes(SECTOR)
    b.issue(0x20, lba=1, count=1, unit=0)
    assert b.read_words(SECTOR) == m.data[SECTOR:2 * SECTOR]


def test_status_read_clears_interrupt_alt_status_does_not(bench):
    b = bench
    b.issue(0xE7)
    assert b.irqs[14].level
    assert b.inb(PRIMARY_CTL) == DRDY | 0x10
    assert b.irqs[14].level
    assert b.inb(PRIMARY + STATUS) == DRDY | 0x10
    assert not b.irqs[14].level


def test_nien_masks_intrq_and_unmasking_restores_it(bench):
    b = bench
    b.outb(PRIMARY_CTL, NIEN)
    b.issue(0xE7)
    assert not b.irqs[14].level
    b.outb(PRIMARY_CTL, 0)
    assert b.irqs[14].level                         # still pending: driven again
    b.inb(PRIMARY + STATUS)
    assert not b.irqs[14].level


def test_writing_command_clears_pending_interrupt(bench):
    b = bench
    b.issue(0xE7)
    assert b.irqs[14].level
    b.issue(0x20, lba=0, count=1)                    # new command: INTRQ negated, then per block
    assert b.irqs[14].history[-2:] == [False, True]


def test_interrupt_follows_the_selected_device():
    b = IdeBench(drives={(0, 0): {"backend": disk(64)}, (0, 1): {"backend": disk(64)}})
    b.issue(0xE7, unit=0)
    assert b.irqs[14].level
    b.outb(PRIMARY + DEVICE, 0xB0)                    # device 1 selected: device 0 releases INTRQ
    assert not b.irqs[14].level
    b.outb(PRIMARY + DEVICE, 0xA0)
    assert b.irqs[14].level


def test_soft_reset_signature_and_busy(bench):
    b = bench
    b.outb(PRIMARY + LBA_MID, 0x99)
    b.outb(PRIMARY_CTL, SRST)
    assert b.inb(PRIMARY_CTL) & BSY
    assert b.inb(PRIMARY + LBA_MID) & BSY            # BSY: every register reads Status
    b.outb(PRIMARY + 7, 0xEC)                       # ignored while BSY
    b.outb(PRIMARY_CTL, 0)
    assert b.inb(PRIMARY + STATUS) == DRDY | 0x10
    assert (b.inb(PRIMARY + COUNT), b.inb(PRIMARY + LBA_LOW), b.inb(PRIMARY + LBA_MID),
            b.inb(PRIMARY + LBA_HIGH)) == (1, 1, 0, 0)
    assert b.inb(PRIMARY + 1) == 0x01
    assert not b.irqs[14].level                      # a reset raises no interrupt


def test_soft_reset_aborts_a_pio_command(bench):
    b = bench
    b.issue(0x20, lba=0, count=4)
    b.read_words(100)
    b.outb(PRIMARY_CTL, SRST)
    b.outb(PRIMARY_CTL, 0)
    assert not b.inb(PRIMARY + STATUS) & DRQ
    b.issue(0x20, lba=2, count=1)
    assert b.read_words(SECTOR) == bytes(b.ide.device(0, 0).backend.data[2 * SECTOR:3 * SECTOR])


def test_execute_device_diagnostic_on_both_devices():
    b = IdeBench(drives={(0, 0): {"backend": disk(64)}, (0, 1): {"type": "dvddrive", "lun": ScsiCdrom(None)}})
    b.outb(PRIMARY + LBA_MID, 0x77)
    b.outb(PRIMARY + DEVICE, 0xB0)
    b.outb(PRIMARY + 7, 0x90)                        # written with DEV=1: both devices run it
    assert not b.irqs[14].level                      # device 0 asserts INTRQ, but device 1 is selected
    assert (b.inb(PRIMARY + LBA_MID), b.inb(PRIMARY + LBA_HIGH)) == (0x14, 0xEB)
    b.outb(PRIMARY + DEVICE, 0xA0)
    assert b.irqs[14].level
    assert b.inb(PRIMARY + 1) == 0x01
    assert (b.inb(PRIMARY + COUNT), b.inb(PRIMARY + LBA_LOW), b.inb(PRIMARY + LBA_MID),
            b.inb(PRIMARY + LBA_HIGH)) == (1, 1, 0x00, 0x00)
    assert b.inb(PRIMARY + STATUS) == DRDY | 0x10


@pytest.mark.parametrize("opcode", [0x01, 0x50, 0xFF, 0xB0, 0xA0, 0xA1, 0x08])
def test_unknown_or_wrong_kind_opcode_aborts(bench, opcode):
    b = bench
    b.issue(opcode)
    assert b.inb(PRIMARY + STATUS) == DRDY | 0x10 | ERR
    assert b.inb(PRIMARY + 1) == ABRT


def test_nop_aborts(bench):
    bench.issue(0x00)
    assert bench.inb(PRIMARY + STATUS) & ERR and bench.inb(PRIMARY + 1) == ABRT


@pytest.mark.parametrize("command,lba,count,lba48", [
    (0x20, 2047, 2, False), (0x20, 5000, 1, False), (0x24, 1 << 40, 1, True), (0xC8, 2048, 1, False),
    (0x30, 2040, 9, False), (0x34, 2048, 65535, True),
])
def test_out_of_range_is_idnf(bench, command, lba, count, lba48):
    b = bench
    b.issue(command, lba=lba, count=count, lba48=lba48)
    assert b.irqs[14].level
    assert b.inb(PRIMARY + STATUS) == DRDY | 0x10 | ERR
    assert b.inb(PRIMARY + 1) == IDNF


def test_command_while_drq_is_ignored(bench):
    b = bench
    b.issue(0x20, lba=0, count=2)
    first = b.read_words(100)
    b.outb(PRIMARY + 7, 0xE7)                        # FLUSH while DRQ: ignored
    rest = b.read_words(2 * SECTOR - 100)
    assert first + rest == bytes(b.ide.device(0, 0).backend.data[:2 * SECTOR])


def test_data_port_without_drq_reads_zero_and_drops_writes(bench):
    b = bench
    assert b.inw(PRIMARY) == 0
    b.outw(PRIMARY, 0x1234)
    assert b.inb(PRIMARY + STATUS) == DRDY | 0x10


def test_write_to_read_only_medium_aborts():
    b = IdeBench(drives={(0, 0): {"backend": disk(64, read_only=True)}})
    b.issue(0x30, lba=0, count=1)
    assert b.inb(PRIMARY + STATUS) & ERR and b.inb(PRIMARY + 1) == ABRT


def test_byte_access_to_data_port_moves_a_word(bench):
    b = bench
    b.issue(0x20, lba=0, count=1)
    low = b.inb(PRIMARY)
    data = bytes(b.ide.device(0, 0).backend.data[:SECTOR])
    assert low == data[0]
    assert b.read_words(SECTOR - 2) == data[2:]

"""PIO data commands through the task file and data port, byte-exact.

Opcodes (ACS-3 Annex B): 20h READ SECTORS, 24h READ SECTORS EXT, 29h READ
MULTIPLE EXT, 30h WRITE SECTORS, 34h WRITE SECTORS EXT, 39h WRITE MULTIPLE
EXT, 40h/42h READ VERIFY (EXT), 91h INITIALIZE DEVICE PARAMETERS, C4h READ
MULTIPLE, C5h WRITE MULTIPLE, C6h SET MULTIPLE MODE, E7h/EAh FLUSH CACHE
(EXT), F8h/27h READ NATIVE MAX ADDRESS (EXT).
"""

import pytest

from idebench import (
    ABRT, COUNT, DEVICE, DRDY, DRQ, ERR, HOB, IDNF, LBA_HIGH, LBA_LOW, LBA_MID, PRIMARY,
    PRIMARY_CTL, SECTOR, STATUS, IdeBench, SparseDisk, disk, pattern,
)


def status(b):
    return b.inb(PRIMARY + STATUS)


@pytest.mark.parametrize("command,lba48", [(0x20, False), (0x24, True)])
@pytest.mark.parametrize("lba,count", [(0, 1), (5, 3), (2047, 1), (100, 17)])
def test_read_sectors(bench, command, lba48, lba, count):
    bench.issue(command, lba=lba, count=count, lba48=lba48)
    got = bytearray()
    for _ in range(count):
        assert status(bench) == DRDY | 0x10 | DRQ
        got += bench.read_words(SECTOR)
    assert status(bench) == DRDY | 0x10
    assert got == pattern(2048)[lba * SECTOR:(lba + count) * SECTOR]


def test_read_sectors_count_zero_means_256(bench):
    bench.issue(0x20, lba=10, count=0)
    got = b"".join(bench.read_words(SECTOR) for _ in range(256))
    assert got == pattern(2048)[10 * SECTOR:266 * SECTOR]
    assert not status(bench) & DRQ


def test_read_sectors_ext_past_28_bits_and_hob_readback():
    backend = SparseDisk(1 << 33)
    b = IdeBench(drives={(0, 0): {"backend": backend}})
    lba = 0x1_2345_6789
    b.issue(0x24, lba=lba, count=2, lba48=True)
    got = b.read_words(SECTOR) + b.read_words(SECTOR)
    assert got == pattern(1, seed=lba) + pattern(1, seed=lba + 1)
    # Outputs: the last sector transferred, current and previous contents.
    last = lba + 1
    assert [b.inb(PRIMARY + r) for r in (LBA_LOW, LBA_MID, LBA_HIGH)] == [0x8A, 0x67, 0x45]
    b.outb(PRIMARY_CTL, HOB)
    assert [b.inb(PRIMARY + r) for r in (LBA_LOW, LBA_MID, LBA_HIGH)] == [0x23, 0x01, 0x00]
    b.outb(PRIMARY_CTL, 0)
    assert b.inb(PRIMARY + LBA_LOW) == last & 0xFF


def test_write_sectors_ext_past_32_bits():
    backend = SparseDisk(1 << 34)
    b = IdeBench(drives={(0, 0): {"backend": backend}})
    lba = (1 << 33) + 5
    b.issue(0x34, lba=lba, count=1, lba48=True)
    b.write_words(bytes(range(256)) * 2)
    assert backend.written[lba] == bytes(range(256)) * 2


def test_hob_selects_previous_register_content(bench):
    b = bench
    b.outb(PRIMARY + COUNT, 0x12)
    b.outb(PRIMARY + COUNT, 0x34)
    assert b.inb(PRIMARY + COUNT) == 0x34
    b.outb(PRIMARY_CTL, HOB)
    assert b.inb(PRIMARY + COUNT) == 0x12
    b.outb(PRIMARY + LBA_LOW, 0x56)            # a register write clears HOB
    assert b.inb(PRIMARY + COUNT) == 0x34


@pytest.mark.parametrize("command,lba48", [(0x30, False), (0x34, True)])
def test_write_sectors(bench, command, lba48):
    backend = bench.ide.device(0, 0).backend
    data = bytes((i * 7 + 3) & 0xFF for i in range(3 * SECTOR))
    bench.issue(command, lba=40, count=3, lba48=lba48)
    assert status(bench) & DRQ
    assert not bench.irqs[14].history               # no INTRQ before the first block
    for i in range(3):
        bench.write_words(data[i * SECTOR:(i + 1) * SECTOR])
    assert status(bench) == DRDY | 0x10
    assert backend.data[40 * SECTOR:43 * SECTOR] == data
    assert backend.data[39 * SECTOR:40 * SECTOR] == pattern(2048)[39 * SECTOR:40 * SECTOR]


def test_write_sectors_by_dwords(bench):
    backend = bench.ide.device(0, 0).backend
    data = bytes(range(256)) * 4
    bench.issue(0x30, lba=7, count=2)
    bench.write_dwords(data)
    assert backend.data[7 * SECTOR:9 * SECTOR] == data


def test_read_multiple_blocks_and_interrupts(bench):
    b = bench
    b.issue(0xC6, count=4)                       # SET MULTIPLE MODE 4
    assert status(b) == DRDY | 0x10
    b.irqs[14].history.clear()
    b.issue(0xC4, lba=8, count=10)               # READ MULTIPLE: blocks of 4, 4, 2
    got = bytearray()
    for sectors in (4, 4, 2):
        assert b.irqs[14].level
        assert status(b) & DRQ                   # reading Status acknowledges INTRQ
        assert not b.irqs[14].level
        got += b.read_words(sectors * SECTOR)
    assert got == pattern(2048)[8 * SECTOR:18 * SECTOR]
    assert not status(b) & DRQ
    assert b.irqs[14].history.count(True) == 3


def test_write_multiple_ext(bench):
    b = bench
    backend = b.ide.device(0, 0).backend
    b.issue(0xC6, count=8)
    data = bytes((i * 13) & 0xFF for i in range(9 * SECTOR))
    b.issue(0x39, lba=100, count=9, lba48=True)
    b.write_words(data[:8 * SECTOR])
    assert status(b) & DRQ
    b.write_words(data[8 * SECTOR:])
    assert status(b) == DRDY | 0x10
    assert backend.data[100 * SECTOR:109 * SECTOR] == data


def test_read_multiple_without_multiple_mode_aborts(bench):
    bench.issue(0xC6, count=0)                   # disable multiple mode
    assert not status(bench) & ERR
    bench.issue(0xC4, lba=0, count=1)
    assert status(bench) & ERR and bench.inb(PRIMARY + 1) == ABRT


@pytest.mark.parametrize("count", [3, 6, 255])
def test_set_multiple_mode_invalid_sizes_abort(bench, count):
    bench.issue(0xC6, count=count)
    assert status(bench) & ERR and bench.inb(PRIMARY + 1) == ABRT


def test_chs_read_with_default_geometry(bench):
    # Default geometry 2 cylinders x 16 heads x 63 sectors: C=1 H=2 S=5 is
    # LBA (1 * 16 + 2) * 63 + 4 = 1138.
    bench.issue(0x20, count=1, chs=(1, 2, 5), lba_bit=False)
    assert bench.read_words(SECTOR) == pattern(2048)[1138 * SECTOR:1139 * SECTOR]
    # Outputs in CHS: the sector just read.
    assert bench.inb(PRIMARY + LBA_LOW) == 5
    assert bench.inb(PRIMARY + LBA_MID) == 1
    assert bench.inb(PRIMARY + DEVICE) & 0x0F == 2


def test_initialize_device_parameters_changes_translation(bench):
    b = bench
    # INITIALIZE DEVICE PARAMETERS: 4 heads (Device = heads - 1), 17 sectors/track.
    b.outb(PRIMARY + COUNT, 17)
    b.outb(PRIMARY + DEVICE, 0xA0 | 3)
    b.outb(PRIMARY + 7, 0x91)
    assert status(b) == DRDY | 0x10
    b.issue(0x20, count=1, chs=(3, 1, 2), lba_bit=False)      # (3*4+1)*17+1 = 222
    assert b.read_words(SECTOR) == pattern(2048)[222 * SECTOR:223 * SECTOR]
    w, _ = b.identify()
    assert (w[54], w[55], w[56]) == (2048 // 68, 4, 17)


@pytest.mark.parametrize("chs", [(0, 0, 0), (0, 0, 64), (2, 15, 63), (2, 0, 1)])
def test_chs_outside_translation_is_idnf(bench, chs):
    bench.issue(0x20, count=1, chs=chs, lba_bit=False)
    assert status(bench) & ERR and bench.inb(PRIMARY + 1) == IDNF


def test_initialize_device_parameters_zero_sectors_aborts(bench):
    bench.outb(PRIMARY + COUNT, 0)
    bench.outb(PRIMARY + DEVICE, 0xA0 | 15)
    bench.outb(PRIMARY + 7, 0x91)
    assert status(bench) & ERR and bench.inb(PRIMARY + 1) == ABRT


def test_read_verify(bench):
    bench.issue(0x40, lba=10, count=5)
    assert bench.irqs[14].level
    assert status(bench) == DRDY | 0x10
    bench.issue(0x42, lba=2047, count=2, lba48=True)
    assert status(bench) & ERR and bench.inb(PRIMARY + 1) == IDNF


def test_flush_cache(bench):
    backend = bench.ide.device(0, 0).backend
    bench.issue(0xE7)
    assert status(bench) == DRDY | 0x10
    bench.issue(0xEA)
    assert status(bench) == DRDY | 0x10
    assert backend.flushes == 2


def test_write_cache_disabled_flushes_every_write(bench):
    backend = bench.ide.device(0, 0).backend
    bench.issue(0xEF, features=0x82)
    flushes = backend.flushes
    bench.issue(0x30, lba=1, count=1)
    bench.write_words(bytes(SECTOR))
    assert backend.flushes == flushes + 1


def test_read_native_max_address(bench):
    bench.issue(0xF8)
    assert status(bench) == DRDY | 0x10
    assert (bench.inb(PRIMARY + LBA_LOW), bench.inb(PRIMARY + LBA_MID), bench.inb(PRIMARY + LBA_HIGH),
            bench.inb(PRIMARY + DEVICE) & 0x0F) == (0xFF, 0x07, 0, 0)
    bench.issue(0x27, lba48=True)
    assert bench.inb(PRIMARY + LBA_LOW) == 0xFF and bench.inb(PRIMARY + LBA_MID) == 0x07


def test_power_commands(bench):
    b = bench
    b.issue(0xE5)
    assert b.inb(PRIMARY + COUNT) == 0xFF              # active or idle
    b.issue(0xE0)                                      # STANDBY IMMEDIATE
    b.issue(0xE5)
    assert b.inb(PRIMARY + COUNT) == 0x00              # standby
    b.issue(0xE1)                                      # IDLE IMMEDIATE
    b.issue(0xE5)
    assert b.inb(PRIMARY + COUNT) == 0x80
    b.issue(0x20, lba=0, count=1)
    b.read_words(SECTOR)
    b.issue(0xE5)
    assert b.inb(PRIMARY + COUNT) == 0xFF


def test_secondary_channel_slave_disk():
    backend = disk(64)
    b = IdeBench(drives={(1, 1): {"backend": backend}})
    b.issue(0x20, lba=3, count=1, unit=1, base=0x170)
    assert b.irqs[15].level and not b.irqs[14].level
    assert b.read_words(SECTOR, base=0x170) == backend.data[3 * SECTOR:4 * SECTOR]

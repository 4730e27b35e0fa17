"""Bus-master DMA: PRD tables, BMIS outcomes, TRIM.

C8h READ DMA, CAh WRITE DMA, 25h READ DMA EXT, 35h WRITE DMA EXT, 06h DATA
SET MANAGEMENT.  BMIS outcomes are the datasheets' Interrupt/Active table
(PIIX4 Table 15, ICH6 Table 5-42).
"""

import pytest

from idebench import (
    ABRT, BM_ACTIVE, BM_ERROR, BM_INTERRUPT, BMIBA, BMIC, BMIS, DRDY, DRQ, ERR, PRIMARY, RAM_SIZE,
    SECTOR, STATUS, UNC, IdeBench, disk, pattern,
)

DISK = pattern(2048)


def status(b):
    return b.inb(PRIMARY + STATUS)


@pytest.mark.parametrize("command,lba48", [(0xC8, False), (0x25, True)])
def test_read_dma_single_prd(bench, command, lba48):
    bm = bench.dma(command, 16, 4, [(0x10000, 4 * SECTOR)], to_memory=True, lba48=lba48)
    assert bm == BM_INTERRUPT                    # exact length: Active clear, Interrupt set
    assert bench.ram[0x10000:0x10000 + 4 * SECTOR] == DISK[16 * SECTOR:20 * SECTOR]
    assert status(bench) == DRDY | 0x10


def test_read_dma_multi_prd_scatter(bench):
    buffers = [(0x20000, 512), (0x30000, 1024), (0x21000, 256), (0x40000, 256)]
    bm = bench.dma(0xC8, 100, 4, buffers, to_memory=True)
    assert bm == BM_INTERRUPT
    expected = DISK[100 * SECTOR:104 * SECTOR]
    got = b"".join(bytes(bench.ram[a:a + n]) for a, n in buffers)
    assert got == expected


@pytest.mark.parametrize("command,lba48", [(0xCA, False), (0x35, True)])
def test_write_dma_multi_prd(bench, command, lba48):
    backend = bench.ide.device(0, 0).backend
    data = bytes((i * 31 + 1) & 0xFF for i in range(3 * SECTOR))
    bench.ram[0x50000:0x50000 + 1000] = data[:1000]
    bench.ram[0x60000:0x60000 + 3 * SECTOR - 1000] = data[1000:]
    bm = bench.dma(command, 200, 3, [(0x50000, 1000), (0x60000, 3 * SECTOR - 1000)], to_memory=False,
                   lba48=lba48)
    assert bm == BM_INTERRUPT
    assert backend.data[200 * SECTOR:203 * SECTOR] == data


def test_prd_byte_count_zero_means_64k(bench):
    b = IdeBench(drives={(0, 0): {"backend": disk(256)}})
    bm = b.dma(0xC8, 0, 128, [(0x80000, 0)], to_memory=True)
    assert bm == BM_INTERRUPT
    assert b.ram[0x80000:0x90000] == pattern(256)[:128 * SECTOR]


def test_prd_longer_than_transfer_keeps_active(bench):
    # Interrupt 1, Active 1: "the size of the physical memory regions was
    # larger than the IDE device transfer size".
    bm = bench.dma(0xC8, 0, 1, [(0x10000, 4096)], to_memory=True)
    assert bm == BM_INTERRUPT | BM_ACTIVE
    assert bench.ram[0x10000:0x10200] == DISK[:SECTOR]


def test_prd_too_short_stops_without_interrupt(bench):
    # Interrupt 0, Active 0, Error 0: "the PRD's specified a smaller size
    # than the IDE transfer size".  The drive still wants its data.
    b = bench
    b.irqs[14].history.clear()
    b.prd_table(0x1000, [(0x10000, 512, True)])
    b.bm_setup(0x1000)
    b.issue(0xC8, lba=0, count=2)
    b.bm_start(True)
    assert b.bm_status() == 0
    assert not b.irqs[14].history
    assert b.inb(PRIMARY + 0x206) & DRQ            # alternate status: drive still in DMA
    assert b.ram[0x10000:0x10200] == DISK[:SECTOR]
    # The guest points the engine at the rest of its buffer: the transfer resumes.
    b.bm_stop()
    b.prd_table(0x1100, [(0x10200, 512, True)])
    b.bm_setup(0x1100)
    b.bm_start(True)
    assert b.bm_status() == BM_INTERRUPT
    assert b.ram[0x10200:0x10400] == DISK[SECTOR:2 * SECTOR]
    assert status(b) == DRDY | 0x10


def test_prd_outside_ram_sets_error(bench):
    b = bench
    bm = b.dma(0xC8, 0, 1, [(RAM_SIZE + 0x1000, 512)], to_memory=True)
    assert bm & BM_ERROR and not bm & BM_ACTIVE
    assert status(b) & ERR and b.inb(PRIMARY + 1) == ABRT
    # PCI STATUS bit 13: received master abort.
    assert b.cfg_read(0x06, 2) & 0x2000


def test_prd_table_outside_ram_sets_error(bench):
    b = bench
    b.bm_setup(RAM_SIZE - 4)
    b.issue(0xC8, lba=0, count=1)
    b.bm_start(True)
    assert b.bm_status() & BM_ERROR
    assert status(b) & ERR


def test_prd_straddling_end_of_ram_sets_error(bench):
    bm = bench.dma(0xC8, 0, 2, [(RAM_SIZE - 512, 1024)], to_memory=True)
    assert bm & BM_ERROR


def test_bus_mastering_disabled_waits_then_runs():
    b = IdeBench(drives={(0, 0): {"backend": disk(64)}}, bus_master=False)
    b.prd_table(0x1000, [(0x10000, 512, True)])
    b.bm_setup(0x1000)
    b.issue(0xC8, lba=3, count=1)
    b.bm_start(True)
    # "Bus master operation does not actually start unless the Bus Master
    # Enable bit ... is also set": Active, no data, no interrupt.
    assert b.bm_status() == BM_ACTIVE
    assert b.ram[0x10000:0x10200] == bytes(512)
    b.cfg_write(0x04, 2, 0x0005)
    assert b.bm_status() == BM_INTERRUPT
    assert b.ram[0x10000:0x10200] == pattern(64)[3 * SECTOR:4 * SECTOR]


def test_start_before_command(bench):
    b = bench
    b.prd_table(0x1000, [(0x10000, 1024, True)])
    b.bm_setup(0x1000)
    b.bm_start(True)
    assert b.bm_status() == BM_ACTIVE
    b.issue(0xC8, lba=7, count=2)
    assert b.bm_status() == BM_INTERRUPT
    assert b.ram[0x10000:0x10400] == DISK[7 * SECTOR:9 * SECTOR]


def test_stop_discards_the_transfer(bench):
    b = bench
    b.prd_table(0x1000, [(0x10000, 512, True)])
    b.bm_setup(0x1000)
    b.issue(0xC8, lba=0, count=4)
    b.bm_start(True)            # 512 of 2048 bytes: stalls
    b.bm_stop()
    assert not b.bm_status() & BM_ACTIVE


def test_bmdma_registers_byte_word_dword(bench):
    b = bench
    b.outl(BMIBA + 4, 0x12345677)                 # BMIDTP bits 1:0 are reserved
    assert b.inl(BMIBA + 4) == 0x12345674
    b.outw(BMIBA + 6, 0xABCD)
    assert b.inl(BMIBA + 4) == 0xABCD5674
    b.outb(BMIBA + BMIS, 0x60)                    # drive 0/1 DMA capable: read/write
    assert b.inb(BMIBA + BMIS) == 0x60
    b.outb(BMIBA + BMIS, 0x81)                    # bit 7 (simplex) and bit 0 (active) read-only
    assert b.inb(BMIBA + BMIS) == 0x00
    b.outb(BMIBA + BMIC, 0xF6)                    # only bits 0 and 3 exist
    assert b.inb(BMIBA + BMIC) == 0x00
    b.outl(BMIBA + 8 + 4, 0x2000)                 # secondary BMIDTP
    assert b.inl(BMIBA + 12) == 0x2000 and b.inl(BMIBA + 4) == 0xABCD5674


def test_bmis_interrupt_is_write_one_to_clear(bench):
    b = bench
    b.issue(0xE7)                                  # any interrupt sets BMIS.IDEINTS
    assert b.bm_status() & BM_INTERRUPT
    b.outb(BMIBA + BMIS, 0)
    assert b.bm_status() & BM_INTERRUPT
    b.outb(BMIBA + BMIS, BM_INTERRUPT)
    assert not b.bm_status() & BM_INTERRUPT


def test_dma_read_past_end_is_idnf_without_transfer(bench):
    b = bench
    bm = b.dma(0x25, 2046, 4, [(0x10000, 2048)], to_memory=True, lba48=True)
    assert status(b) & ERR and b.inb(PRIMARY + 1) == 0x10
    assert bm == BM_INTERRUPT | BM_ACTIVE
    assert b.ram[0x10000:0x10800] == bytes(2048)


class FailingDisk:
    sector_size = 512
    read_only = False
    discard_enabled = False
    non_rotational = False
    uuid = None
    name = "failing"
    size = 64 * 512

    def readinto(self, offset, view):
        from drivebay.errors import ImageError
        raise ImageError("injected read failure")

    def write(self, offset, data):
        from drivebay.errors import ImageError
        raise ImageError("injected write failure")

    def flush(self):
        pass


def test_host_read_error_is_unc_and_write_error_abrt():
    b = IdeBench(drives={(0, 0): {"backend": FailingDisk()}})
    b.dma(0xC8, 5, 1, [(0x10000, 512)], to_memory=True)
    assert status(b) & ERR and b.inb(PRIMARY + 1) == UNC
    assert b.inb(PRIMARY + 3) == 5                 # LBA of the failing sector
    b.issue(0x20, lba=6, count=1)
    assert status(b) & ERR and b.inb(PRIMARY + 1) == UNC
    b.issue(0x30, lba=6, count=1)
    b.write_words(bytes(512))
    assert status(b) & ERR and b.inb(PRIMARY + 1) == ABRT


def trim_entries(ranges):
    out = bytearray(512)
    for i, (lba, n) in enumerate(ranges):
        out[8 * i:8 * i + 8] = (lba | n << 48).to_bytes(8, "little")
    return bytes(out)


def test_trim_discards_ranges():
    backend = disk(256, discard=True)
    b = IdeBench(drives={(0, 0): {"backend": backend}})
    b.ram[0x10000:0x10200] = trim_entries([(10, 2), (100, 3)])
    b.prd_table(0x1000, [(0x10000, 512, True)])
    b.bm_setup(0x1000)
    b.issue(0x06, features=0x01, count=1, lba48=True)
    b.bm_start(False)
    assert b.bm_status() == BM_INTERRUPT
    assert status(b) == DRDY | 0x10
    assert backend.data[10 * SECTOR:12 * SECTOR] == bytes(2 * SECTOR)
    assert backend.data[100 * SECTOR:103 * SECTOR] == bytes(3 * SECTOR)
    assert backend.data[12 * SECTOR:13 * SECTOR] == pattern(256)[12 * SECTOR:13 * SECTOR]


def test_trim_range_past_end_aborts_and_discards_nothing():
    backend = disk(256, discard=True)
    b = IdeBench(drives={(0, 0): {"backend": backend}})
    b.ram[0x10000:0x10200] = trim_entries([(10, 2), (250, 7)])
    b.prd_table(0x1000, [(0x10000, 512, True)])
    b.bm_setup(0x1000)
    b.issue(0x06, features=0x01, count=1, lba48=True)
    b.bm_start(False)
    assert status(b) & ERR and b.inb(PRIMARY + 1) == ABRT
    assert backend.data == pattern(256)


@pytest.mark.parametrize("features,count", [(0x00, 1), (0x01, 9), (0x01, 0)])
def test_trim_bad_inputs_abort(features, count):
    b = IdeBench(drives={(0, 0): {"backend": disk(64, discard=True)}})
    b.issue(0x06, features=features, count=count, lba48=True)
    assert status(b) & ERR and b.inb(PRIMARY + 1) == ABRT


def test_trim_without_discard_aborts(bench):
    bench.issue(0x06, features=0x01, count=1, lba48=True)
    assert status(bench) & ERR and bench.inb(PRIMARY + 1) == ABRT

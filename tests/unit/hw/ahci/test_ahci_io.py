"""Non-queued commands: IDENTIFY through the PIO Setup FIS, DMA and PIO I/O."""

import pytest

from ahcibench import (
    CH_P, DRDY, DRQ, DSC, FIS_D2H, FIS_PIO_SETUP, IS_DHRS, IS_DPS, IS_PSS, READ_DMA, READ_DMA_EXT,
    READ_SECTORS, READ_SECTORS_EXT, RX_PSFIS, RX_RFIS, SECTOR, SET_FEATURES, WRITE_DMA, WRITE_DMA_EXT,
    WRITE_SECTORS, WRITE_SECTORS_EXT, PxCI, PxCMD, PxIS, AhciBench, disk, pattern,
)

from drivebay.block.backend import MemoryBackend

SECTORS = 2048


def test_identify_via_pio_setup_fis(bench):
    bench.clear_irq(0)
    words, pxis, cmd = bench.identify(0, slot=5)
    assert pxis == IS_PSS                                # PIO data-in: no D2H FIS after the block
    model = b"".join(w.to_bytes(2, "big") for w in words[27:47]).decode().strip()
    assert model == "VBOX HARDDISK"
    assert words[75] == 31                               # queue depth 32
    assert words[76] == 1 << 8 | 1 << 2 | 1 << 1         # NCQ, Gen 2, Gen 1
    assert words[77] == 2 << 1                           # current speed Gen 2
    assert words[84] & 1 << 5 and words[87] & 1 << 5     # General Purpose Logging
    assert cmd.prdbc == 512
    fis = bench.rx_fis(0, RX_PSFIS, 20)
    assert fis[0] == FIS_PIO_SETUP
    assert fis[1] == 0x60                                # D (to host) and I
    assert fis[2] == DRDY | DSC | DRQ                    # Status when the block was offered
    assert fis[15] == DRDY | DSC                         # E_Status: the command is done
    assert int.from_bytes(fis[16:18], "little") == 512
    assert bench.tfd(0) == (DRDY | DSC, 0)
    assert bench.px_read(0, PxCI) == 0
    assert bench.px_read(0, PxCMD) >> 8 & 0x1F == 5      # CCS: the slot issued


@pytest.mark.parametrize("command,lba48", [(READ_DMA, False), (READ_DMA_EXT, True)])
@pytest.mark.parametrize("count,pieces", [(1, 1), (8, 3), (300, 7), (128, 128)])
def test_dma_read_multi_prd(bench, command, lba48, count, pieces):
    if count > 256 and not lba48:
        count = 256
    lba = 1000 if lba48 else 77
    data, pxis, cmd = bench.read(0, lba, count, command=command, pieces=pieces)
    assert data == pattern(SECTORS)[lba * SECTOR:(lba + count) * SECTOR]
    assert pxis & IS_DHRS
    assert cmd.prdbc == count * SECTOR
    fis = bench.rx_fis(0, RX_RFIS, 20)
    assert fis[0] == FIS_D2H and fis[1] & 0x40 and fis[2] == DRDY | DSC and fis[3] == 0


@pytest.mark.parametrize("command,read_back", [(WRITE_DMA, READ_DMA), (WRITE_DMA_EXT, READ_DMA_EXT)])
@pytest.mark.parametrize("count,pieces", [(1, 1), (5, 2), (64, 9)])
def test_dma_write_then_read(command, read_back, count, pieces):
    backend = disk(SECTORS)
    b = AhciBench(ports=1, drives={0: {"backend": backend}}).bring_up(0)
    payload = bytes((i * 7 + count) & 0xFF for i in range(count * SECTOR))
    pxis, cmd = b.write(0, 33, payload, command=command, pieces=pieces)
    assert pxis & IS_DHRS and cmd.prdbc == len(payload)
    assert bytes(backend.data[33 * SECTOR:(33 + count) * SECTOR]) == payload
    assert bytes(backend.data[32 * SECTOR:33 * SECTOR]) == pattern(SECTORS)[32 * SECTOR:33 * SECTOR]
    data, _, _ = b.read(0, 33, count, command=read_back, pieces=3)
    assert data == payload


@pytest.mark.parametrize("command", [READ_SECTORS, READ_SECTORS_EXT])
def test_pio_read_blocks(bench, command):
    bench.clear_irq(0)
    data, pxis, cmd = bench.read(0, 9, 4, command=command, pieces=3)
    assert data == pattern(SECTORS)[9 * SECTOR:13 * SECTOR]
    assert pxis == IS_PSS and cmd.prdbc == 4 * SECTOR
    fis = bench.rx_fis(0, RX_PSFIS, 20)
    assert fis[15] == DRDY | DSC                         # the last block's E_Status


@pytest.mark.parametrize("command", [WRITE_SECTORS, WRITE_SECTORS_EXT])
def test_pio_write_blocks(command):
    backend = disk(SECTORS)
    b = AhciBench(ports=1, drives={0: {"backend": backend}}).bring_up(0)
    b.clear_irq(0)
    payload = bytes(range(256)) * 6
    pxis, cmd = b.write(0, 3, payload, command=command, pieces=2)
    assert pxis & IS_DHRS and pxis & IS_PSS               # PIO Setup per block, D2H at the end
    assert bytes(backend.data[3 * SECTOR:6 * SECTOR]) == payload
    assert cmd.prdbc == len(payload)


def test_prd_interrupt_bit_sets_dps(bench):
    bench.clear_irq(0)
    buf = bench.buffer(1024)
    cmd = bench.command(0, 0, READ_DMA_EXT, lba=0, count=2, buffers=[(buf, 512, True), (buf + 512, 512)])
    assert bench.run(cmd) & IS_DPS


def test_non_data_command_and_prefetch_flag(bench):
    bench.clear_irq(0)
    cmd = bench.command(0, 2, SET_FEATURES, features=0x02, header_flags=CH_P)
    assert bench.run(cmd) == IS_DHRS
    assert bench.px_read(0, PxIS) == IS_DHRS


def test_several_ports_at_once():
    backends = [disk(256) for _ in range(3)]
    for i, backend in enumerate(backends):
        backend.data[:SECTOR] = bytes([i]) * SECTOR
    b = AhciBench(ports=6, drives={1: {"backend": backends[0]}, 3: {"backend": backends[1]},
                                   5: {"backend": backends[2]}}).bring_up(1, 3, 5)
    for i, port in enumerate((1, 3, 5)):
        data, _, _ = b.read(port, 0, 1)
        assert data == bytes([i]) * SECTOR


def test_read_only_medium_refuses_writes():
    backend = MemoryBackend(bytearray(64 * SECTOR), read_only=True)
    b = AhciBench(ports=1, drives={0: {"backend": backend}}).bring_up(0)
    pxis, _ = b.write(0, 0, bytes(SECTOR))
    assert pxis & (1 << 30)                              # TFES
    assert b.tfd(0)[1] & 0x04                            # ABRT

"""Guest mistakes and faults get hardware answers (AHCI 1.3.1 §6), never exceptions."""

import pytest

from ahcibench import (
    BSY, CH_C, CH_R, CMD_CLO, CMD_CR, CMD_FRE, CMD_ST, CMD_SUD, DRDY, DSC, ERR, IDNF, IS_DHRS,
    IS_HBFS, IS_IFS, IS_OFS, IS_TFES, READ_DMA_EXT, READ_SECTORS, RX_RFIS, SECTOR, SERR_ERR_P,
    WRITE_DMA_EXT, AhciBench, PxCI, PxCLB, PxCMD, PxFB, PxIS, PxSERR, PxSIG, PxTFD, disk, pattern,
)

OUTSIDE = 0xF0000000                                    # no RAM there


def recover(b, port=0):
    """§6.2.2.1 as SeaBIOS does it: ST off, wait CR, clear SERR and IS, ST on."""
    b.px_write(port, PxCMD, b.px_read(port, PxCMD) & ~CMD_ST)
    assert not b.px_read(port, PxCMD) & CMD_CR
    assert b.px_read(port, PxCI) == 0
    b.px_write(port, PxSERR, b.px_read(port, PxSERR))
    b.clear_irq(port)
    b.px_write(port, PxCMD, b.px_read(port, PxCMD) | CMD_ST)


def test_task_file_error_stops_the_port_until_st_clears(bench):
    bench.clear_irq(0)
    data, pxis, cmd = bench.read(0, 2040, 16, slot=3)     # past the end of 2048 sectors
    assert pxis & IS_TFES and pxis & IS_DHRS
    sts, err = bench.tfd(0)
    assert sts == DRDY | DSC | ERR and err == IDNF
    assert bench.px_read(0, PxCI) == 1 << 3               # the failed command keeps its bit
    assert bench.px_read(0, PxCMD) >> 8 & 0x1F == 3       # CCS names it
    fis = bench.rx_fis(0, RX_RFIS, 20)
    assert fis[2] & ERR and fis[3] == IDNF
    later = bench.command(0, 4, READ_DMA_EXT, lba=0, count=1, buffers=[(bench.buffer(512), 512)])
    bench.issue(later)
    assert bench.px_read(0, PxCI) == 1 << 3 | 1 << 4      # not fetched while stopped
    recover(bench)
    data, pxis, _ = bench.read(0, 0, 1)
    assert data == pattern(2048)[:SECTOR] and not pxis & IS_TFES


@pytest.mark.parametrize("where", ["prd region", "prd table", "command list", "command table"])
def test_addresses_outside_ram_are_host_bus_fatal(bench, where):
    bench.clear_irq(0)
    buf = bench.buffer(512)
    cmd = bench.command(0, 0, READ_DMA_EXT, lba=0, count=1,
                        buffers=[(OUTSIDE if where == "prd region" else buf, 512)])
    header = bench.clb[0]
    if where == "prd table":
        bench.memory.write_u32(header + 8, OUTSIDE)       # CTBA
    elif where == "command table":
        bench.memory.write_u32(header + 12, 1)            # CTBAU: above 4 GiB
    elif where == "command list":
        bench.px_write(0, PxCLB, OUTSIDE)
    pxis = bench.run(cmd)
    assert pxis & IS_HBFS
    assert bench.px_read(0, PxCI) == 1
    if where == "command list":
        bench.px_write(0, PxCMD, bench.px_read(0, PxCMD) & ~CMD_ST)
        bench.px_write(0, PxCLB, bench.clb[0])
    recover(bench)
    data, pxis, _ = bench.read(0, 0, 1)
    assert data == pattern(2048)[:SECTOR]


def test_fis_area_outside_ram(bench):
    bench.clear_irq(0)
    bench.px_write(0, PxCMD, CMD_SUD | CMD_ST)            # FRE off before moving PxFB
    bench.px_write(0, PxFB, OUTSIDE)
    bench.px_write(0, PxCMD, CMD_SUD | CMD_FRE | CMD_ST)
    _, pxis, _ = bench.read(0, 0, 1)
    assert pxis & IS_HBFS


def test_bus_mastering_off_is_host_bus_fatal():
    b = AhciBench(ports=1, drives={0: {"backend": disk()}}, bus_master=False).bring_up(0)
    assert b.px_read(0, PxSIG) == 0x101                   # no FIS posted, the link still came up
    b.clear_irq(0)
    _, pxis, _ = b.read(0, 0, 1)
    assert pxis & IS_HBFS


def test_prdt_shorter_than_the_transfer_overflows(bench):
    bench.clear_irq(0)
    buf = bench.buffer(1024)
    cmd = bench.command(0, 0, READ_DMA_EXT, lba=0, count=4, buffers=[(buf, 1024)])
    pxis = bench.run(cmd)
    assert pxis & IS_OFS
    assert bench.memory.read(buf, 1024) == pattern(2048)[:1024]


def test_prdt_shorter_on_a_pio_read(bench):
    bench.clear_irq(0)
    cmd = bench.command(0, 0, READ_SECTORS, lba=0, count=2, buffers=[(bench.buffer(512), 512)])
    assert bench.run(cmd) & IS_OFS


def test_odd_byte_counts_are_taken_as_even(bench):
    buf = bench.buffer(1024)
    cmd = bench.command(0, 0, READ_DMA_EXT, lba=0, count=2, buffers=[(buf, 511), (buf + 512, 511)])
    pxis = bench.run(cmd)                                 # DBC 510: bit 0 reads as 1, 512 bytes
    assert not pxis & (IS_OFS | IS_TFES)
    assert bench.memory.read(buf, 1024) == pattern(2048)[:1024]


def test_huge_prdtl_is_bounded(bench):
    buf = bench.buffer(512)
    cmd = bench.command(0, 0, READ_DMA_EXT, lba=0, count=1, buffers=[(buf, 512)], prdtl=0xFFFF)
    assert not bench.run(cmd) & IS_TFES                   # only the entries needed are read


def test_malformed_command_fis_is_an_interface_error(bench):
    bench.clear_irq(0)
    cmd = bench.command(0, 0, READ_DMA_EXT, lba=0, count=1, buffers=[(bench.buffer(512), 512)])
    bench.memory.write(cmd.table, b"\x5a")                # not a Register H2D FIS
    pxis = bench.run(cmd)
    assert pxis & IS_IFS and bench.px_read(0, PxSERR) & SERR_ERR_P


def test_command_while_not_started(bench):
    bench.px_write(0, PxCMD, bench.px_read(0, PxCMD) & ~CMD_ST)
    cmd = bench.command(0, 0, READ_DMA_EXT, lba=0, count=1, buffers=[(bench.buffer(512), 512)])
    bench.issue(cmd)
    assert bench.px_read(0, PxCI) == 0                    # dropped: PxCI is valid only with ST


def test_start_without_fre_runs_but_posts_nothing():
    b = AhciBench(ports=1, drives={0: {"backend": disk()}})
    b.hba_enable()
    b.port_start(0, start=False)
    b.px_write(0, PxCMD, CMD_SUD | CMD_ST)                # FRE cleared
    b.memory.write(b.fb[0], bytes(256))
    b.clear_irq(0)
    data, pxis, _ = b.read(0, 0, 1)
    assert data == pattern(2048)[:SECTOR]
    assert pxis == 0 and b.rx_fis(0, 0, 256) == bytes(256)
    assert b.px_read(0, PxTFD) == 0x50


def test_clb_zero_reads_headers_from_address_zero():
    b = AhciBench(ports=1, drives={0: {"backend": disk()}}).bring_up(0)
    b.px_write(0, PxCMD, b.px_read(0, PxCMD) & ~CMD_ST)
    b.px_write(0, PxCLB, 0)
    b.px_write(0, PxCMD, b.px_read(0, PxCMD) | CMD_ST)
    b.px_write(0, PxCI, 1)                                # header 0 is all zeros: CFL 0
    assert b.px_read(0, PxIS) & IS_IFS


def test_linux_style_software_reset(bench):
    """Two Device Control FISes: SRST with R and C, then SRST clear (AHCI §10.4.1)."""
    bench.px_write(0, PxCMD, bench.px_read(0, PxCMD) | CMD_CLO)
    assert not bench.px_read(0, PxCMD) & CMD_CLO
    first = bench.command(0, 0, 0, control=0x04, header_flags=CH_R | CH_C)
    bench.run(first)
    assert bench.px_read(0, PxCI) == 0 and not bench.px_read(0, PxTFD) & BSY
    bench.px_write(0, PxSIG, 0)
    second = bench.command(0, 1, 0, control=0x00)
    bench.run(second)
    assert bench.px_read(0, PxCI) == 0
    assert bench.px_read(0, PxSIG) == 0x101
    assert bench.px_read(0, PxTFD) & 0xFF == DRDY | DSC


def test_srst_without_clear_busy_needs_clo(bench):
    cmd = bench.command(0, 0, 0, control=0x04)
    bench.issue(cmd)
    assert bench.px_read(0, PxCI) == 1 and bench.px_read(0, PxTFD) & BSY
    bench.px_write(0, PxCMD, bench.px_read(0, PxCMD) & ~CMD_ST)
    bench.px_write(0, PxCMD, bench.px_read(0, PxCMD) | CMD_CLO)
    bench.px_write(0, PxCMD, bench.px_read(0, PxCMD) | CMD_ST)
    release = bench.command(0, 1, 0, control=0x00)
    bench.run(release)
    assert bench.px_read(0, PxTFD) & 0xFF == DRDY | DSC


def test_seabios_probe_of_a_disk_with_identify_packet(bench):
    """SeaBIOS tries IDENTIFY PACKET DEVICE first; the disk aborts it."""
    bench.clear_irq(0)
    _, pxis, _ = bench.identify(0, command=0xA1)
    assert pxis & IS_TFES and bench.tfd(0)[1] == 0x04
    recover(bench)
    words, pxis, _ = bench.identify(0)
    assert not pxis & IS_TFES and words[0] == 0x0040


def test_write_dma_with_w_bit_clear_is_traced_not_refused(bench):
    buf = bench.buffer(512, bytes(range(256)) * 2)
    cmd = bench.command(0, 0, WRITE_DMA_EXT, lba=5, count=1, buffers=[(buf, 512)], write=False)
    assert not bench.run(cmd) & IS_TFES
    data, _, _ = bench.read(0, 5, 1, slot=1)
    assert data == bytes(range(256)) * 2


def test_start_without_a_device_leaves_commands_waiting():
    b = AhciBench(ports=2, drives={0: {"backend": disk()}})
    b.hba_enable()
    b.port_start(1)                                       # no drive: no link, ST set anyway
    assert b.px_read(1, PxCMD) & CMD_CR
    cmd = b.command(1, 0, READ_DMA_EXT, lba=0, count=1, buffers=[(b.buffer(512), 512)])
    b.issue(cmd)
    assert b.px_read(1, PxCI) == 1 and b.px_read(1, PxIS) == 0
    b.px_write(1, PxCMD, b.px_read(1, PxCMD) & ~CMD_ST)
    assert b.px_read(1, PxCI) == 0 and not b.px_read(1, PxCMD) & CMD_CR


def test_comreset_while_started_stops_the_port(bench):
    from ahcibench import PxSCTL
    bench.px_write(0, PxSCTL, 1)
    bench.px_write(0, PxSCTL, 0)
    cmd = bench.command(0, 0, READ_DMA_EXT, lba=0, count=1, buffers=[(bench.buffer(512), 512)])
    bench.issue(cmd)
    assert bench.px_read(0, PxCI) == 1                    # stopped until ST is cleared
    recover(bench)
    _, pxis, _ = bench.read(0, 0, 1, slot=1)
    assert not pxis & IS_TFES


def test_stop_with_queued_requests_in_flight_keeps_cr_until_they_drain():
    from drivebay.block.backend import MemoryBackend
    from drivebay.block.io import InlineIo
    b = AhciBench(ports=1, drives={0: {"backend": MemoryBackend(bytearray(pattern(2048)),
                                                                io=InlineIo())}}).bring_up(0)
    port = b.hba.ports[0]
    for tag in range(3):
        b.ncq(0, tag, tag, 1)
    b.hba_write(0x100 + PxCMD, port.regs.values[PxCMD] & ~CMD_ST)
    assert port.regs.values[PxCMD] & CMD_CR               # three requests in flight
    assert port.device.ncq_inflight == 3
    assert not b.px_read(0, PxCMD) & CMD_CR               # the read delivered them: drained
    assert b.px_read(0, 0x34) == 0                        # PxSACT: their completions were dropped

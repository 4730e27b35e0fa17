"""NCQ: READ/WRITE FPDMA QUEUED with out-of-order completion (SATA 2.6 §13.6,
AHCI 1.3.1 PxSACT/Set Device Bits FIS), errors and the NCQ Command Error log."""

import pytest

from ahcibench import (
    DRDY, DSC, ERR, FIS_DMA_SETUP, FIS_SDB, IDNF, IS_DHRS, IS_SDBS, IS_TFES, READ_DMA_EXT,
    READ_LOG_EXT, RX_DSFIS, RX_RFIS, RX_SDBFIS, SECTOR, CMD_ST, PxCI, PxCMD, PxIS, PxSACT, PxSERR,
    AhciBench, disk, pattern,
)

from drivebay.block.backend import MemoryBackend
from drivebay.block.io import IoThreads

SECTORS = 4096


def monitor_sdb(port, sink):
    """A monitor on the port's Set Device Bits FISes: ``sink(tags)`` for each."""
    original = port.ncq_complete

    def ncq_complete(device, tags, status, error):
        sink(tags)
        original(device, tags, status, error)

    port.ncq_complete = ncq_complete


class Scoreboard:
    """Expected completions that may arrive in any order, as long as no
    command is overtaken by more than ``depth`` later ones (cocotb-bus's
    scoreboard, reordering allowed up to the queue depth)."""

    def __init__(self, depth):
        self.depth = depth
        self.issued = []
        self.completed = []

    def expect(self, tag):
        self.issued.append(tag)

    def observe(self, tags):
        for tag in range(32):
            if tags >> tag & 1:
                assert tag in self.issued and tag not in self.completed, f"unexpected completion {tag}"
                self.completed.append(tag)

    def check(self):
        assert sorted(self.completed) == sorted(self.issued)
        for position, tag in enumerate(self.completed):
            assert abs(self.issued.index(tag) - position) <= self.depth
        return self.completed != self.issued          # True when the order was really shuffled


def test_queued_reads_complete_out_of_order():
    b = AhciBench(ports=1, drives={0: {"backend": disk(SECTORS, shuffle=7)}}).bring_up(0)
    board = Scoreboard(depth=32)
    monitor_sdb(b.hba.ports[0], board.observe)
    expected = {}
    for tag in range(0, 32, 3):
        lba = 100 + tag * 13
        cmd, buf = b.ncq(0, tag, lba, 1 + tag % 5, pieces=1 + tag % 3)
        board.expect(tag)
        expected[tag] = (buf, pattern(SECTORS)[lba * SECTOR:(lba + 1 + tag % 5) * SECTOR])
        # Accepted: PxCI clears at once (looked at without a register read,
        # which would deliver the completions).
        assert b.hba.ports[0].regs.values[PxCI] >> tag & 1 == 0
    sact = b.hba.ports[0].regs.values[PxSACT]
    assert sact == sum(1 << t for t in expected)
    assert b.px_read(0, PxSACT) == 0                      # the read delivers the completions
    assert board.check()
    for buf, data in expected.values():
        assert b.memory.read(buf, len(data)) == data
    assert b.px_read(0, PxIS) & IS_SDBS
    sdb = b.rx_fis(0, RX_SDBFIS, 8)
    assert sdb[0] == FIS_SDB and sdb[1] & 0x40 and sdb[2] == (DRDY | DSC) & 0x77


def test_each_completion_posts_one_sdb_in_delivery_order():
    backend = disk(SECTORS, shuffle=3)
    b = AhciBench(ports=1, drives={0: {"backend": backend}}).bring_up(0)
    seen = []
    monitor_sdb(b.hba.ports[0], seen.append)
    for tag in range(8):
        b.ncq(0, tag, tag * 8, 8)
    assert b.px_read(0, PxSACT) == 0
    assert sorted(seen) == [1 << t for t in range(8)] and seen != sorted(seen)


def test_queued_writes_then_reads_byte_exact():
    backend = disk(SECTORS, shuffle=11)
    b = AhciBench(ports=1, drives={0: {"backend": backend}}).bring_up(0)
    payloads = {tag: bytes((tag * 31 + i) & 0xFF for i in range(SECTOR * (tag + 1))) for tag in range(6)}
    for tag, data in payloads.items():
        b.ncq(0, tag, 500 + 10 * tag, tag + 1, write=True, data=data, pieces=2, fua=tag % 2 == 1)
    assert b.px_read(0, PxSACT) == 0
    for tag, data in payloads.items():
        assert bytes(backend.data[(500 + 10 * tag) * SECTOR:(500 + 10 * tag) * SECTOR + len(data)]) == data
    assert backend.flushes >= 3                          # FUA writes flush
    bufs = {tag: b.ncq(0, tag + 10, 500 + 10 * tag, tag + 1)[1] for tag in payloads}
    assert b.px_read(0, PxSACT) == 0
    for tag, data in payloads.items():
        assert b.memory.read(bufs[tag], len(data)) == data


def test_dma_setup_fis_names_the_tag():
    b = AhciBench(ports=1, drives={0: {"backend": disk(SECTORS)}}).bring_up(0)
    b.ncq(0, 9, 0, 4)
    fis = b.rx_fis(0, RX_DSFIS, 28)
    assert fis[0] == FIS_DMA_SETUP and fis[1] & 0x20       # D: device to host
    assert int.from_bytes(fis[4:12], "little") == 9
    assert int.from_bytes(fis[20:24], "little") == 4 * SECTOR
    d2h = b.rx_fis(0, RX_RFIS, 20)
    assert d2h[1] & 0x40 == 0                             # acceptance: no I bit
    assert not b.hba.ports[0].regs.values[PxIS] & IS_DHRS


def test_io_threads_complete_through_polling():
    io = IoThreads(threads=3)
    try:
        backend = MemoryBackend(bytearray(pattern(SECTORS)), io=io)
        b = AhciBench(ports=1, drives={0: {"backend": backend}}).bring_up(0)
        bufs = {tag: b.ncq(0, tag, tag * 20, 16)[1] for tag in range(16)}
        b.wait(0, 0xFFFF)
        for tag, buf in bufs.items():
            at = tag * 20 * SECTOR
            assert b.memory.read(buf, 16 * SECTOR) == pattern(SECTORS)[at:at + 16 * SECTOR]
    finally:
        io.close()


def read_log(b, slot=0, address=0x10):
    buf = b.buffer(512)
    cmd = b.command(0, slot, READ_LOG_EXT, lba=address, count=1, buffers=[(buf, 512)])
    pxis = b.run(cmd)
    return b.memory.read(buf, 512), pxis


def recover(b, port=0):
    """AHCI 1.3.1 §6.2.2: clear ST, wait for CR, clear errors, set ST."""
    b.px_write(port, PxCMD, b.px_read(port, PxCMD) & ~CMD_ST)
    assert not b.px_read(port, PxCMD) & 0x8000
    b.px_write(port, PxSERR, 0xFFFFFFFF)
    b.clear_irq(port)
    b.px_write(port, PxCMD, b.px_read(port, PxCMD) | CMD_ST)


def test_ncq_error_aborts_the_queue_and_is_logged():
    b = AhciBench(ports=1, drives={0: {"backend": disk(SECTORS)}}).bring_up(0)
    b.clear_irq(0)
    b.ncq(0, 4, SECTORS - 2, 8)                           # runs past the end: IDNF
    b.ncq(0, 5, 0, 1)
    sact = b.px_read(0, PxSACT)
    pxis = b.px_read(0, PxIS)
    assert pxis & IS_TFES and pxis & IS_SDBS
    sts, err = b.tfd(0)
    assert sts & ERR and err == IDNF
    sdb = b.rx_fis(0, RX_SDBFIS, 8)
    assert sdb[2] & ERR and sdb[3] == IDNF
    assert sact & (1 << 4)                                # the failed command stays active
    # The port is stopped: a new command waits.
    cmd = b.command(0, 7, READ_DMA_EXT, lba=0, count=1, buffers=[(b.buffer(512), 512)])
    b.issue(cmd)
    assert b.px_read(0, PxCI) == 1 << 7
    recover(b)
    assert b.px_read(0, PxSACT) == 0 and b.px_read(0, PxCI) == 0
    # Queued commands are refused until the log is read.
    b.ncq(0, 1, 0, 1)
    assert b.px_read(0, PxIS) & IS_TFES
    recover(b)
    log, pxis = read_log(b)
    assert log[0] == 4                                    # NQ clear, tag 4
    assert log[2] & ERR and log[3] == IDNF
    assert int.from_bytes(log[4:7] + log[8:11], "little") == SECTORS - 2
    assert sum(log) & 0xFF == 0                           # checksum
    cmd, buf = b.ncq(0, 2, 10, 1)
    assert b.px_read(0, PxSACT) == 0 and not b.px_read(0, PxIS) & IS_TFES
    assert b.memory.read(buf, SECTOR) == pattern(SECTORS)[10 * SECTOR:11 * SECTOR]


def test_log_directory_lists_the_ncq_log():
    b = AhciBench(ports=1, drives={0: {"backend": disk(SECTORS)}}).bring_up(0)
    log, _ = read_log(b, address=0x00)
    assert log[0:2] == b"\x01\x00" and log[0x20:0x22] == b"\x01\x00"
    log, _ = read_log(b, slot=1, address=0x11)            # no such log
    assert b.tfd(0)[1] == 0x04


@pytest.mark.parametrize("mistake", ["duplicate tag", "non-queued while queued"])
def test_acceptance_errors_abort_everything(mistake):
    backend = disk(SECTORS)
    b = AhciBench(ports=1, drives={0: {"backend": backend}}).bring_up(0)
    b.clear_irq(0)
    device = b.hba.ports[0].device
    b.ncq(0, 3, 0, 1)                                     # stays in flight: nobody reads yet
    if mistake == "duplicate tag":
        cmd = b.command(0, 4, 0x60, lba=0, count=1, ncq_tag=3, buffers=[(b.buffer(512), 512)])
        b.issue(cmd, ncq=True)
    else:
        cmd = b.command(0, 4, READ_DMA_EXT, lba=0, count=1, buffers=[(b.buffer(512), 512)])
        b.issue(cmd)
    assert device.ncq_queue == {}
    assert b.px_read(0, PxIS) & IS_TFES
    assert b.tfd(0)[1] == 0x04                            # ABRT
    assert b.px_read(0, PxCI) == 1 << 4                   # the failed command keeps its bit
    recover(b)
    log, _ = read_log(b)
    assert log[0] == 0x80                                 # NQ

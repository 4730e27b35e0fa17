"""ATAPI: the PACKET protocol into the SCSI/MMC logical unit.

ATA/ATAPI-6 §9.10 (PACKET protocol) and §8.21: the command packet goes out
by PIO with Interrupt Reason C/D=1 I/O=0 (Count register 01h); data-in
blocks have I/O=1 (02h) and their size in LBA Mid/High, limited by the byte
count limit; the status phase has C/D=1 I/O=1 (03h), CHK (status bit 0) and
the sense key in Error bits 7:4.  DMA when Features bit 0 is set.
"""

import pytest

from idebench import (
    ABRT, BM_INTERRUPT, COUNT, DRDY, DRQ, ERR, LBA_HIGH, LBA_MID, PRIMARY, PRIMARY_CTL, SRST, STATUS,
    IdeBench,
)

from drivebay.block.backend import MemoryBackend
from drivebay.hw.scsi.mmc import ScsiCdrom

CD_SECTOR = 2048


def iso(blocks=16):
    data = bytearray()
    for i in range(blocks):
        data += bytes([i & 0xFF, 0xCD]) * (CD_SECTOR // 2)
    return MemoryBackend(data, read_only=True, sector_size=CD_SECTOR, name="test.iso")


def cd_bench(backend="iso", unit=0):
    lun = ScsiCdrom(iso() if backend == "iso" else backend)
    return IdeBench(drives={(0, unit): {"type": "dvddrive", "lun": lun}}), lun


def send_packet(b, cdb, bcl=CD_SECTOR, dma=False, unit=0):
    b.outb(PRIMARY + 1, 0x01 if dma else 0x00)
    b.outb(PRIMARY + LBA_MID, bcl & 0xFF)
    b.outb(PRIMARY + LBA_HIGH, bcl >> 8)
    b.outb(PRIMARY + 6, 0xA0 | unit << 4)
    b.outb(PRIMARY + 7, 0xA0)
    st = b.inb(PRIMARY_CTL)
    assert st & DRQ and not st & 0x80
    assert b.inb(PRIMARY + COUNT) & 0x03 == 0x01          # C/D=1, I/O=0
    b.write_words(bytes(cdb).ljust(12, b"\0"))


def pio_data_in(b):
    """Read DRQ blocks until the status phase; returns (data, block sizes, irq count)."""
    data, sizes = bytearray(), []
    while True:
        irq = b.irqs[14].level
        st = b.inb(PRIMARY + STATUS)
        if not st & DRQ:
            return bytes(data), sizes, st
        assert irq, "INTRQ precedes every data block"
        assert b.inb(PRIMARY + COUNT) & 0x03 == 0x02      # I/O=1, C/D=0
        n = b.inb(PRIMARY + LBA_MID) | b.inb(PRIMARY + LBA_HIGH) << 8
        sizes.append(n)
        data += b.read_words(n + (n & 1))[:n]


def clear_unit_attention(b):
    """The first media command after power-on reports the reset unit attention."""
    send_packet(b, [0x00])
    st = b.inb(PRIMARY + STATUS)
    if st & ERR:
        assert b.inb(PRIMARY + 1) >> 4 == 0x6
        send_packet(b, [0x00])
        b.inb(PRIMARY + STATUS)


def read10(lba, blocks):
    return [0x28, 0, *lba.to_bytes(4, "big"), 0, *blocks.to_bytes(2, "big"), 0]


def test_identify_packet_device():
    b, _ = cd_bench()
    w, raw = b.identify(command=0xA1)
    assert w[0] == 0x85C0
    model = b"".join(x.to_bytes(2, "big") for x in w[27:47]).decode()
    assert model == "VBOX CD-ROM".ljust(40)
    assert w[49] & 0x0300 == 0x0300
    assert w[82] & (1 << 4) and w[82] & (1 << 9)
    assert w[255] & 0xFF == 0xA5 and sum(raw) % 256 == 0


def test_identify_device_to_packet_device_aborts_with_signature():
    b, _ = cd_bench()
    b.issue(0xEC)
    assert b.inb(PRIMARY + STATUS) & ERR
    assert b.inb(PRIMARY + 1) & ABRT
    assert (b.inb(PRIMARY + COUNT), b.inb(PRIMARY + 3), b.inb(PRIMARY + LBA_MID),
            b.inb(PRIMARY + LBA_HIGH)) == (0x01, 0x01, 0x14, 0xEB)


def test_packet_device_power_on_status_and_signature():
    b, _ = cd_bench()
    assert b.inb(PRIMARY + STATUS) == 0x00
    assert (b.inb(PRIMARY + LBA_MID), b.inb(PRIMARY + LBA_HIGH)) == (0x14, 0xEB)


def test_inquiry_by_pio():
    b, _ = cd_bench()
    send_packet(b, [0x12, 0, 0, 0, 36, 0])
    data, sizes, st = pio_data_in(b)
    assert sizes == [36]
    assert data[0] & 0x1F == 0x05 and data[8:12] == b"VBOX"
    assert st == DRDY
    assert b.inb(PRIMARY + COUNT) & 0x03 == 0x03          # status phase


def test_inquiry_odd_allocation_length_pads_the_last_word():
    b, _ = cd_bench()
    send_packet(b, [0x12, 0, 0, 0, 35, 0])
    data, sizes, _ = pio_data_in(b)
    assert sizes == [35] and len(data) == 35


@pytest.mark.parametrize("bcl,expected", [
    (2048, [2048, 2048, 2048]),
    (4096, [4096, 2048]),
    (1000, [1000] * 6 + [144]),
    (999, [998] * 6 + [156]),
    (0xFFFF, [6144]),
])
def test_read10_pio_byte_count_limit(bcl, expected):
    b, _ = cd_bench()
    clear_unit_attention(b)
    b.irqs[14].history.clear()
    send_packet(b, read10(2, 3), bcl=bcl)
    data, sizes, st = pio_data_in(b)
    assert sizes == expected
    assert data == b"".join(bytes([i, 0xCD]) * 1024 for i in (2, 3, 4))
    assert st == DRDY and b.inb(PRIMARY + COUNT) & 0x03 == 0x03


def test_byte_count_limit_fffe_for_large_reads():
    b, _ = cd_bench(backend=iso(64))
    clear_unit_attention(b)
    send_packet(b, read10(0, 40), bcl=0xFFFF)
    data, sizes, _ = pio_data_in(b)
    assert sizes == [0xFFFE, 40 * CD_SECTOR - 0xFFFE]
    assert len(data) == 40 * CD_SECTOR


def test_byte_count_limit_zero_aborts():
    b, _ = cd_bench()
    clear_unit_attention(b)
    send_packet(b, read10(0, 1), bcl=0)
    st = b.inb(PRIMARY + STATUS)
    assert st & ERR and not st & DRQ
    assert b.inb(PRIMARY + 1) & ABRT


def test_read10_by_dma():
    b, _ = cd_bench()
    clear_unit_attention(b)
    b.prd_table(0x1000, [(0x20000, 2 * CD_SECTOR, True)])
    b.bm_setup(0x1000)
    send_packet(b, read10(5, 2), dma=True)
    b.bm_start(True)
    assert b.bm_status() == BM_INTERRUPT
    assert b.ram[0x20000:0x21000] == bytes([5, 0xCD]) * 1024 + bytes([6, 0xCD]) * 1024
    assert b.inb(PRIMARY + STATUS) == DRDY
    assert b.inb(PRIMARY + COUNT) & 0x03 == 0x03


def test_test_unit_ready_empty_drive_not_ready():
    b, _ = cd_bench(backend=None)
    send_packet(b, [0x00])                                  # the power-on unit attention first
    assert b.inb(PRIMARY + STATUS) & ERR
    assert b.inb(PRIMARY + 1) >> 4 == 0x6
    send_packet(b, [0x00])
    assert b.irqs[14].level
    st = b.inb(PRIMARY + STATUS)
    assert st == DRDY | ERR                                 # CHK
    assert b.inb(PRIMARY + 1) >> 4 == 0x2                   # NOT READY
    assert b.inb(PRIMARY + COUNT) & 0x03 == 0x03
    send_packet(b, [0x03, 0, 0, 0, 18, 0])                  # REQUEST SENSE
    sense, _, _ = pio_data_in(b)
    assert sense[2] & 0x0F == 0x2 and sense[12] == 0x3A     # MEDIUM NOT PRESENT


def test_medium_change_is_a_unit_attention():
    b, lun = cd_bench(backend=None)
    clear_unit_attention(b)
    b.ide.insert(0, 0, iso())
    send_packet(b, [0x00])
    assert b.inb(PRIMARY + STATUS) & ERR
    assert b.inb(PRIMARY + 1) >> 4 == 0x6                   # UNIT ATTENTION
    send_packet(b, [0x00])
    assert b.inb(PRIMARY + STATUS) == DRDY
    send_packet(b, read10(1, 1))
    data, _, _ = pio_data_in(b)
    assert data[:2] == bytes([1, 0xCD])


def test_guest_lock_refuses_host_eject_unless_forced():
    b, lun = cd_bench()
    clear_unit_attention(b)
    send_packet(b, [0x1E, 0, 0, 0, 0x01, 0])                # PREVENT ALLOW MEDIUM REMOVAL: prevent
    assert b.inb(PRIMARY + STATUS) == DRDY
    assert b.ide.eject(0, 0) is False
    send_packet(b, [0x00])
    assert b.inb(PRIMARY + STATUS) == DRDY                  # medium still there
    assert b.ide.eject(0, 0, force=True) is True
    send_packet(b, [0x00])
    assert b.inb(PRIMARY + STATUS) & ERR
    assert b.inb(PRIMARY + 1) >> 4 == 0x2


@pytest.mark.parametrize("bcl,expected", [(4, [4, 4]), (6, [6, 2]), (8, [8])])
def test_mode_select_data_out_by_pio(bcl, expected):
    b, lun = cd_bench()
    clear_unit_attention(b)
    payload = bytes(8)                                      # mode parameter header(10), no pages
    send_packet(b, [0x55, 0x10, 0, 0, 0, 0, 0, 0, len(payload), 0], bcl=bcl)
    blocks = []
    while b.inb(PRIMARY_CTL) & DRQ:
        assert b.inb(PRIMARY + COUNT) & 0x03 == 0x00        # data to the device
        n = b.inb(PRIMARY + LBA_MID) | b.inb(PRIMARY + LBA_HIGH) << 8
        blocks.append(n)
        done = sum(blocks[:-1])
        b.write_words(payload[done:done + n])
    assert blocks == expected
    assert b.inb(PRIMARY + STATUS) == DRDY


def test_mode_select_short_parameter_list_is_check_condition():
    b, lun = cd_bench()
    clear_unit_attention(b)
    send_packet(b, [0x55, 0x10, 0, 0, 0, 0, 0, 0, 4, 0], bcl=4)   # 4 bytes: header truncated
    b.write_words(bytes(4))
    assert b.inb(PRIMARY + STATUS) & ERR
    assert b.inb(PRIMARY + 1) >> 4 == 0x5


def test_device_reset_while_drq():
    b, lun = cd_bench()
    send_packet(b, [0x12, 0, 0, 0, 36, 0])
    assert b.inb(PRIMARY_CTL) & DRQ
    b.outb(PRIMARY + 7, 0x08)                               # DEVICE RESET is accepted while DRQ
    assert b.inb(PRIMARY_CTL) == 0x00
    assert (b.inb(PRIMARY + LBA_MID), b.inb(PRIMARY + LBA_HIGH)) == (0x14, 0xEB)


def test_soft_reset_packet_signature():
    b, _ = cd_bench()
    b.outb(PRIMARY_CTL, SRST)
    b.outb(PRIMARY_CTL, 0)
    assert b.inb(PRIMARY + STATUS) == 0x00
    assert (b.inb(PRIMARY + COUNT), b.inb(PRIMARY + 3), b.inb(PRIMARY + LBA_MID),
            b.inb(PRIMARY + LBA_HIGH)) == (0x01, 0x01, 0x14, 0xEB)


def test_unknown_cdb_is_illegal_request():
    b, _ = cd_bench()
    clear_unit_attention(b)
    send_packet(b, [0xEE])
    assert b.inb(PRIMARY + STATUS) & ERR
    assert b.inb(PRIMARY + 1) >> 4 == 0x5


def test_ata_read_to_packet_device_aborts():
    b, _ = cd_bench()
    b.issue(0x20, lba=0, count=1)
    assert b.inb(PRIMARY + STATUS) & ERR and b.inb(PRIMARY + 1) & ABRT
    assert (b.inb(PRIMARY + LBA_MID), b.inb(PRIMARY + LBA_HIGH)) == (0x14, 0xEB)


def test_empty_dvddrive_from_the_factory():
    b = IdeBench(drives={(1, 0): {"type": "dvddrive"}})
    assert isinstance(b.ide.device(1, 0).lun, ScsiCdrom)
    w, _ = b.identify(command=0xA1, base=0x170)
    assert w[0] == 0x85C0


def test_dvd_read_by_dword_pio_and_medium_insert_by_backend():
    b = IdeBench(drives={(0, 1): {"type": "dvddrive", "backend": iso()}})
    clear_unit_attention_unit1(b)
    send_packet(b, read10(3, 1), unit=1)
    assert b.inb(PRIMARY + STATUS) & DRQ
    data = b.read_dwords(CD_SECTOR)
    assert data == bytes([3, 0xCD]) * 1024
    assert b.inb(PRIMARY + STATUS) == DRDY


def clear_unit_attention_unit1(b):
    send_packet(b, [0x00], unit=1)
    b.inb(PRIMARY + STATUS)
    send_packet(b, [0x00], unit=1)
    assert b.inb(PRIMARY + STATUS) == DRDY

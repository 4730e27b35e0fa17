"""ATAPI on an AHCI port: PACKET through ACMD into the SCSI/MMC target, and
media change reported by asynchronous notification (PxSNTF)."""

import pytest

from ahcibench import (
    CMD_ST, ERR, IDENTIFY_DEVICE, IDENTIFY_PACKET_DEVICE, IS_PSS, IS_SDBS, IS_TFES, SET_FEATURES,
    PxCMD, PxIS, PxSERR, PxSIG, PxSNTF, AhciBench,
)

from drivebay.block.backend import MemoryBackend
from drivebay.hw.scsi.mmc import ScsiCdrom

CD = 2048


def iso(blocks=32, seed=0):
    data = bytearray()
    for i in range(blocks):
        data += bytes([(i + seed) & 0xFF]) * CD
    return MemoryBackend(data, read_only=True, sector_size=CD)


def recover(b, port=0):
    b.px_write(port, PxCMD, b.px_read(port, PxCMD) & ~CMD_ST)
    b.px_write(port, PxSERR, 0xFFFFFFFF)
    b.clear_irq(port)
    b.px_write(port, PxCMD, b.px_read(port, PxCMD) | CMD_ST)


@pytest.fixture
def cd():
    b = AhciBench(ports=2, drives={1: {"type": "dvddrive", "lun": ScsiCdrom(iso())}}).bring_up(1)
    # The power-on unit attention: CHECK CONDITION, sense key 6 in Error 7:4.
    _, pxis, _ = b.atapi(1, bytes([0x00]), 0)
    assert pxis & IS_TFES and b.tfd(1)[1] >> 4 == 0x6
    recover(b, 1)
    return b


def test_signature_and_identify_packet_device(cd):
    assert cd.px_read(1, PxSIG) == 0xEB140101
    words, pxis, _ = cd.identify(1, command=IDENTIFY_PACKET_DEVICE)
    assert pxis & IS_PSS and words[0] >> 8 & 0x1F == 0x05
    assert words[76] == 0b110 and words[78] == 1 << 5 and words[79] == 0
    cd.clear_irq(1)
    _, pxis, _ = cd.identify(1, slot=1, command=IDENTIFY_DEVICE)     # SeaBIOS's probe order
    assert pxis & IS_TFES and cd.px_read(1, PxSIG) == 0xEB140101


@pytest.mark.parametrize("dma", [True, False])
def test_inquiry(cd, dma):
    data, pxis, cmd = cd.atapi(1, bytes([0x12, 0, 0, 0, 36, 0]), 36, dma=dma)
    assert not pxis & IS_TFES
    assert data[0] == 0x05 and data[8:16] == b"VBOX    " and b"CD-ROM" in data[16:32]
    assert cmd.prdbc == 36


@pytest.mark.parametrize("dma,byte_count", [(True, 0xFFFE), (False, 0xFFFE), (False, 4096)])
def test_read10(cd, dma, byte_count):
    cdb = bytes([0x28, 0, 0, 0, 0, 3, 0, 0, 4, 0])        # 4 blocks from LBA 3
    data, pxis, cmd = cd.atapi(1, cdb, 4 * CD, dma=dma, byte_count=byte_count)
    assert not pxis & IS_TFES
    assert data == b"".join(bytes([i]) * CD for i in range(3, 7))
    assert cmd.prdbc == 4 * CD


def test_medium_change_with_asynchronous_notification(cd):
    cmd = cd.command(1, 0, SET_FEATURES, features=0x10, count=0x05)   # enable SATA AN
    assert not cd.run(cmd) & IS_TFES
    words, _, _ = cd.identify(1, slot=1, command=IDENTIFY_PACKET_DEVICE)
    assert words[79] == 1 << 5
    cd.clear_irq(1)
    cd.hba.insert(1, iso(8, seed=0x40))
    assert cd.px_read(1, PxSNTF) == 1
    assert cd.px_read(1, PxIS) & IS_SDBS and cd.intx
    sdb = cd.rx_fis(1, 0x58, 8)
    assert sdb[0] == 0xA1 and sdb[1] & 0x80               # N: notification
    cd.px_write(1, PxSNTF, 1)
    assert cd.px_read(1, PxSNTF) == 0
    # GET EVENT STATUS NOTIFICATION (polled, media class): the old medium
    # went, the new one came.
    events = []
    for slot in range(2):
        data, pxis, _ = cd.atapi(1, bytes([0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8, 0]), 8, slot=slot)
        assert data[2] & 0x07 == 4
        events.append(data[4] & 0x0F)
    assert events == [0x03, 0x02]
    assert not cd.hba.ports[1].an_sent                  # all fetched: the next event notifies again
    _, pxis, _ = cd.atapi(1, bytes([0x00]), 0)           # unit attention: medium changed
    assert pxis & IS_TFES and cd.tfd(1)[0] & ERR and cd.tfd(1)[1] >> 4 == 0x6
    recover(cd, 1)
    data, pxis, _ = cd.atapi(1, bytes([0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0]), CD)
    assert data == bytes([0x41]) * CD


def test_no_notification_unless_enabled(cd):
    cd.clear_irq(1)
    cd.hba.insert(1, iso(4))
    assert cd.px_read(1, PxSNTF) == 0 and not cd.px_read(1, PxIS) & IS_SDBS


def test_sata_features_refused_on_a_disk():
    from ahcibench import disk
    b = AhciBench(ports=1, drives={0: {"backend": disk()}}).bring_up(0)
    cmd = b.command(0, 0, SET_FEATURES, features=0x10, count=0x05)
    assert b.run(cmd) & IS_TFES

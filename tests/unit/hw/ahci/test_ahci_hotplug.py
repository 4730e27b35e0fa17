"""Hot-plug: attach and remove drives while the guest runs (AHCI 1.3.1
PxSSTS.DET, PxSERR.DIAG.X/N, PxIS.PCS/PRCS; VirtualBox's hot-pluggable flag)."""

import pytest

from ahcibench import (
    CMD_HPCP, IS_PCS, IS_PRCS, SECTOR, PxCMD, PxIE, PxIS, PxSACT, PxSERR, PxSIG, PxSSTS, PxTFD,
    AhciBench, disk, pattern,
)

from drivebay.errors import ConfigError
from drivebay.hw.ahci.hba import make_drive


def test_hot_plug_in_and_out():
    b = AhciBench(ports=2, drives={0: {"backend": disk()}}).bring_up(0, 1)
    assert b.px_read(1, PxSSTS) == 0 and b.px_read(1, PxCMD) & CMD_HPCP
    b.clear_irq(1)
    b.px_write(1, PxSERR, 0xFFFFFFFF)
    b.hba.attach_drive(1, make_drive({"backend": disk(64)}, "1"), hotpluggable=True)
    assert b.px_read(1, PxSSTS) == 0x123
    assert b.px_read(1, PxSERR) == (1 << 26 | 1 << 16)    # DIAG.X and DIAG.N
    assert b.px_read(1, PxIS) & (IS_PCS | IS_PRCS) == IS_PCS | IS_PRCS
    assert b.hba_read(0x08) & 0b10 and b.intx
    assert b.px_read(1, PxSIG) == 0x101
    assert b.px_read(1, PxTFD) & 0xFF == 0x50
    data, _, _ = b.read(1, 2, 2)
    assert data == pattern(64)[2 * SECTOR:4 * SECTOR]
    b.px_write(1, PxSERR, 0xFFFFFFFF)
    b.clear_irq(1)
    removed = b.hba.detach_drive(1)
    assert removed.kind.value == "disk"
    assert b.px_read(1, PxSSTS) == 0 and b.px_read(1, PxTFD) == 0x7F
    assert b.px_read(1, PxSERR) == (1 << 26 | 1 << 16)
    assert b.px_read(1, PxIS) & IS_PRCS and b.intx


def test_fixed_drives_cannot_be_removed():
    b = AhciBench(ports=2, drives={0: {"backend": disk()}}).bring_up(0)
    assert not b.px_read(0, PxCMD) & CMD_HPCP
    with pytest.raises(ConfigError, match="not hot-pluggable"):
        b.hba.detach_drive(0)
    with pytest.raises(ConfigError, match="hot-pluggable"):
        b.hba.attach_drive(1, make_drive({"backend": disk()}, "1"), hotpluggable=False)
    with pytest.raises(ConfigError, match="already has a drive"):
        b.hba.attach_drive(0, make_drive({"backend": disk()}, "0"), hotpluggable=True)
    with pytest.raises(ConfigError, match="no port"):
        b.hba.attach_drive(7, make_drive({"backend": disk()}, "7"), hotpluggable=True)


def test_hot_pluggable_drive_from_the_factory_can_go():
    b = AhciBench(ports=1, drives={0: {"backend": disk(), "hotpluggable": True}}).bring_up(0)
    assert b.px_read(0, PxCMD) & CMD_HPCP
    b.hba.detach_drive(0)
    assert b.px_read(0, PxSSTS) == 0


def test_removal_with_queued_commands_in_flight():
    b = AhciBench(ports=1, drives={0: {"backend": disk(), "hotpluggable": True}}).bring_up(0)
    b.px_write(0, PxIE, 0)
    for tag in range(4):
        b.ncq(0, tag, tag, 1)
    b.hba.detach_drive(0)
    assert b.px_read(0, PxSACT) == 0xF                   # never completed: the guest EH cleans up
    b.px_write(0, PxCMD, b.px_read(0, PxCMD) & ~1)
    assert not b.px_read(0, PxCMD) & (1 << 15)           # CR clears: the stale requests drained


def test_attach_before_spin_up_waits_for_it():
    b = AhciBench(ports=1)
    b.hba_enable()
    b.hba.attach_drive(0, make_drive({"backend": disk()}, "0"), hotpluggable=True)
    assert b.px_read(0, PxSSTS) == 0
    b.port_start(0)
    assert b.px_read(0, PxSSTS) == 0x123

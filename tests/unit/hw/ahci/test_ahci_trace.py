"""Trace lines: register names and changed fields from the register table,
decoded FISes and commands, guest errors."""

import io

import pytest

from ahcibench import CMD_ST, PxCI, PxCMD, AhciBench, disk

from drivebay import trace
from drivebay.hw.ahci import trace as ahci_trace


@pytest.fixture
def traced(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(trace, "_out", out)
    for category in ("mmio", "dev", "guest_error", "irq"):
        monkeypatch.setattr(trace.on, category, True)
    return out


def test_trace_names_registers_fields_and_fises(traced):
    b = AhciBench(ports=2, drives={0: {"backend": disk(64)}}).bring_up(0)
    b.read(0, 1, 2, slot=6)
    b.px_write(0, PxCMD, b.px_read(0, PxCMD) & ~CMD_ST)
    b.px_write(0, PxCI, 1)
    text = traced.getvalue()
    assert "ahci.BAR5.P0CMD" in text                              # the access
    assert "ahci.P0.PxCMD 0x" in text and "+ST" in text and "-ST" in text
    assert "ahci.GHC" in text and "+HR" in text
    assert "ahci_cmd_issue ahci.p0 slot 6: command 0x25 PRDTL=1" in text
    assert "ahci.p0 READ_DMA_EXT lba=1 count=2" in text          # the ATA core names the command
    assert "ahci_fis_d2h ahci.p0 D2H FIS status=0x50 error=0x00 I" in text
    assert "ahci_link_up ahci.p0 link up (Gen 2)" in text
    assert "[guest_error] ahci.p0: PxCI <- 0x1 while PxCMD.ST is clear: dropped" in text


def test_every_event_format_has_its_fields():
    for name, (category, fmt) in ahci_trace.EVENTS.items():
        assert name.startswith("ahci_") and hasattr(trace.on, category)
        assert "{" in fmt or name in ("ahci_hba_reset",)

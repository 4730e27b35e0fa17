"""Trace lines: register names, decoded commands, guest errors."""

import io

import pytest

from idebench import PRIMARY, SECTOR, IdeBench, disk

from drivebay import trace
from drivebay.block.backend import MemoryBackend
from drivebay.hw.scsi.mmc import ScsiCdrom


@pytest.fixture
def traced(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(trace, "_out", out)
    for category in ("pio", "dev", "guest_error", "irq"):
        monkeypatch.setattr(trace.on, category, True)
    return out


def test_trace_names_registers_and_commands(traced):
    b = IdeBench(drives={(0, 0): {"backend": disk(64)}})
    b.dma(0x25, 8, 2, [(0x10000, 1024)], to_memory=True, lba48=True)
    b.issue(0x20, lba=1, count=1)
    b.read_words(SECTOR)
    b.issue(0x24, lba=1000, count=1, lba48=True)
    b.issue(0x77)
    text = traced.getvalue()
    assert "ide0.0 READ_DMA_EXT lba=8 count=2" in text
    assert "piix3-ide.ide0.STATUS/COMMAND" in text
    assert "piix3-ide.BAR4.BMICP" in text or "BMICP" in text
    assert "[guest_error] ide0.0: READ_SECTORS_EXT: lba 1000+1 past the end" in text
    assert "UNKNOWN_77h" in text
    assert "PRD 0x10000+0x400 EOT" in text


def test_trace_packet_commands(traced):
    iso = MemoryBackend(bytearray(8 * 2048), read_only=True, sector_size=2048)
    b = IdeBench(drives={(0, 0): {"type": "dvddrive", "lun": ScsiCdrom(iso)}})
    b.outb(PRIMARY + 4, 0x00)
    b.outb(PRIMARY + 5, 0x08)
    b.outb(PRIMARY + 6, 0xA0)
    b.outb(PRIMARY + 7, 0xA0)
    b.write_words(bytes([0x00]) + bytes(11))
    text = traced.getvalue()
    assert "ide0.0 PACKET" in text and "CHECK CONDITION sense key 0x6" in text

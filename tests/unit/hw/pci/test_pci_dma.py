"""Bus mastering: DMA through COMMAND.Bus Master (bit 2), master aborts (STATUS bit 13)."""

import pytest

from drivebay.hw.dma import DmaError


def test_dma_fails_while_bus_mastering_is_off(pci):
    probe = pci.plug_probe(slot=3)
    pci.ram[0x1000:0x1004] = b"\x11\x22\x33\x44"
    for attempt in (lambda: probe.dma.read(0x1000, 4),
                    lambda: probe.dma.write(0x1000, b"\0"),
                    lambda: probe.dma.view(0x1000, 4),
                    lambda: probe.dma.read_u32(0x1000),
                    lambda: probe.dma.sg_views([(0x1000, 4)])):
        with pytest.raises(DmaError):
            attempt()
    assert pci.ram[0x1000:0x1004] == b"\x11\x22\x33\x44"
    assert pci.cfg_read(3, 0, 0x06, 2) & 0x2000 == 0     # nothing was mastered


def test_dma_works_with_bus_mastering_on(pci):
    probe = pci.plug_probe(slot=3)
    pci.cfg_write(3, 0, 0x04, 2, 0x0004)
    pci.ram[0x1000:0x1004] = b"\x11\x22\x33\x44"
    assert probe.dma.read_u32(0x1000) == 0x44332211
    probe.dma.write_u16(0x2000, 0xBEEF)
    assert pci.ram[0x2000:0x2002] == b"\xEF\xBE"
    views = probe.dma.sg_views([(0x1000, 2), (0x2000, 2)])
    assert [bytes(v) for v in views] == [b"\x11\x22", b"\xEF\xBE"]
    pci.cfg_write(3, 0, 0x04, 2, 0x0000)
    with pytest.raises(DmaError):
        probe.dma.read_u32(0x1000)


def test_dma_outside_ram_is_a_master_abort(pci):
    probe = pci.plug_probe(slot=3)
    pci.cfg_write(3, 0, 0x04, 2, 0x0004)
    with pytest.raises(DmaError):
        probe.dma.read(0x000FFFFE, 4)                      # runs past the 1 MiB of RAM
    assert pci.cfg_read(3, 0, 0x06, 2) & 0x2000           # STATUS.Received Master Abort
    pci.cfg_write(3, 0, 0x06, 2, 0x2000)                  # write 1 to clear
    assert pci.cfg_read(3, 0, 0x06, 2) & 0x2000 == 0

"""BAR sizing and decoding (PCI 3.0 §6.2.5), the Expansion ROM BAR, windows in Io/MmioSpace.

The probe's BARs: BAR0 I/O 64 bytes, BAR1 32-bit memory 4 KiB, BAR2/3 64-bit
prefetchable memory 16 KiB, BAR5 32-bit prefetchable memory 1 MiB; BAR4 is
not implemented.
"""

import pytest

from drivebay.hw.pci.device import BarKind, PciBar

SLOT = 3


def size_bar(pci, register):
    old = pci.cfg_read(SLOT, 0, register)
    pci.cfg_write(SLOT, 0, register, 4, 0xFFFFFFFF)
    value = pci.cfg_read(SLOT, 0, register)
    pci.cfg_write(SLOT, 0, register, 4, old)
    return value


def enable(pci, command):
    pci.cfg_write(SLOT, 0, 0x04, 2, command)


@pytest.mark.parametrize("register, sized", [
    (0x10, 0xFFFFFFC1),     # I/O, 64 bytes: bit 0 = I/O space
    (0x14, 0xFFFFF000),     # 32-bit memory, 4 KiB, type 00b
    (0x18, 0xFFFFC00C),     # 64-bit (type 10b) prefetchable (bit 3), 16 KiB
    (0x1C, 0xFFFFFFFF),     # upper half of the 64-bit BAR
    (0x20, 0x00000000),     # not implemented
    (0x24, 0xFFF00008),     # 32-bit prefetchable, 1 MiB
])
def test_sizing_reads_back_size_mask_with_type_bits(pci, register, sized):
    pci.plug_probe(slot=SLOT)
    assert size_bar(pci, register) == sized


def test_type_bits_survive_any_write(pci):
    pci.plug_probe(slot=SLOT)
    pci.cfg_write(SLOT, 0, 0x10, 4, 0x0000C002)
    pci.cfg_write(SLOT, 0, 0x18, 4, 0xFEB00003)
    assert pci.cfg_read(SLOT, 0, 0x10) == 0x0000C001
    assert pci.cfg_read(SLOT, 0, 0x18) == 0xFEB0000C


def test_io_bar_maps_moves_and_unmaps(pci):
    probe = pci.plug_probe(slot=SLOT)
    pci.cfg_write(SLOT, 0, 0x10, 4, 0xC000)
    assert pci.io.find(0xC000) is None                 # COMMAND.IO still off
    enable(pci, 0x0001)
    assert pci.io.read(0xC004, 2) == 0x0004
    assert probe.accesses[-1] == ("read", 0, 4, 2)
    pci.io.write(0xC03F, 1, 0x5A)
    assert probe.accesses[-1] == ("write", 0, 0x3F, 1, 0x5A)
    pci.cfg_write(SLOT, 0, 0x10, 4, 0xC100)             # move while decoding
    assert pci.io.find(0xC000) is None
    assert pci.io.read(0xC000, 1) == 0xFF
    assert pci.io.read(0xC108, 4) == 0xB0000008
    assert probe.bar_address(0) == 0xC100
    enable(pci, 0x0000)
    assert pci.io.find(0xC100) is None
    assert probe.bar_address(0) is None


def test_memory_bar_maps_moves_and_unmaps(pci):
    probe = pci.plug_probe(slot=SLOT)
    pci.cfg_write(SLOT, 0, 0x14, 4, 0xFEBF0000)
    enable(pci, 0x0002)
    assert pci.mmio_events == [("add", 0xFEBF0000, 0x1000)]
    assert pci.mmio.read(0xFEBF0010, 4) == 0xB0010010
    assert probe.accesses[-1] == ("read", 1, 0x10, 4)
    pci.cfg_write(SLOT, 0, 0x14, 4, 0xFEBE0000)
    assert pci.mmio_events[1:] == [("remove", 0xFEBF0000, 0x1000), ("add", 0xFEBE0000, 0x1000)]
    enable(pci, 0x0001)                                # memory decoding off
    assert pci.mmio_events[-1] == ("remove", 0xFEBE0000, 0x1000)
    assert pci.mmio.find(0xFEBE0000) is None


def test_64bit_bar_below_4g_maps_and_above_4g_does_not(pci):
    probe = pci.plug_probe(slot=SLOT)
    pci.cfg_write(SLOT, 0, 0x18, 4, 0xE0004000)
    pci.cfg_write(SLOT, 0, 0x1C, 4, 0x00000000)
    enable(pci, 0x0002)
    assert probe.bar_address(2) == 0xE0004000
    assert pci.mmio.read(0xE0004008, 4) == 0xB0020008
    pci.cfg_write(SLOT, 0, 0x1C, 4, 0x00000001)         # now at 0x1_E0004000
    assert probe.bar_address(2) is None
    assert pci.mmio.find(0xE0004000) is None


@pytest.mark.parametrize("register, value", [
    (0x14, 0x00000000),     # unassigned
    (0x14, 0xFFFFFFFF),     # being sized with decoding on
    (0x14, 0x00010000),     # inside the 1 MiB of guest RAM
])
def test_unusable_memory_bar_is_not_mapped(pci, register, value):
    probe = pci.plug_probe(slot=SLOT)
    pci.cfg_write(SLOT, 0, register, 4, value)
    enable(pci, 0x0002)
    assert probe.bar_address(1) is None
    assert pci.mmio_events == []


def test_sizing_with_decoding_on_unmaps_then_restores(pci):
    probe = pci.plug_probe(slot=SLOT)
    pci.cfg_write(SLOT, 0, 0x14, 4, 0xFEBF0000)
    enable(pci, 0x0002)
    assert size_bar(pci, 0x14) == 0xFFFFF000
    assert probe.bar_address(1) == 0xFEBF0000
    assert [e[0] for e in pci.mmio_events] == ["add", "remove", "add"]


def test_io_bar_over_a_fixed_region_is_skipped_not_raised(pci):
    pci.io.add("fixed", 0xC010, 8, lambda o, s: 0x11, lambda o, s, v: None)
    probe = pci.plug_probe(slot=SLOT)
    pci.cfg_write(SLOT, 0, 0x10, 4, 0xC000)
    enable(pci, 0x0001)
    assert probe.bar_address(0) is None
    assert pci.io.read(0xC010, 1) == 0x11
    pci.cfg_write(SLOT, 0, 0x10, 4, 0xC040)
    assert probe.bar_address(0) == 0xC040


def test_io_bar_beyond_64k_is_not_mapped(pci):
    probe = pci.plug_probe(slot=SLOT)
    pci.cfg_write(SLOT, 0, 0x10, 4, 0x00010000)
    enable(pci, 0x0001)
    assert probe.bar_address(0) is None


def test_window_freed_by_one_device_is_taken_by_the_one_that_collided(pci):
    a = pci.plug_probe(slot=3)
    b = pci.plug_probe(slot=4)
    pci.cfg_write(3, 0, 0x10, 4, 0xC000)
    pci.cfg_write(3, 0, 0x04, 2, 0x0001)
    pci.cfg_write(4, 0, 0x10, 4, 0xC000)
    pci.cfg_write(4, 0, 0x04, 2, 0x0001)
    assert (a.bar_address(0), b.bar_address(0)) == (0xC000, None)
    pci.cfg_write(3, 0, 0x10, 4, 0xC080)
    assert (a.bar_address(0), b.bar_address(0)) == (0xC080, 0xC000)


def test_bus_reset_unmaps_every_window(pci):
    probe = pci.plug_probe(slot=SLOT)
    pci.cfg_write(SLOT, 0, 0x10, 4, 0xC000)
    pci.cfg_write(SLOT, 0, 0x14, 4, 0xFEBF0000)
    enable(pci, 0x0003)
    pci.bus.reset()
    assert pci.io.find(0xC000) is None
    assert pci.mmio.regions == []
    assert probe.bar_address(0) is None


def test_expansion_rom_reads_zero_unless_declared(pci):
    pci.plug_probe(slot=SLOT)
    pci.cfg_write(SLOT, 0, 0x30, 4, 0xFFFFFFFF)
    assert pci.cfg_read(SLOT, 0, 0x30) == 0


def test_declared_expansion_rom_sizes_and_maps(pci):
    image = b"\x55\xAA\x04" + bytes(3000 - 3)
    probe = pci.plug_probe(slot=SLOT, rom=image)
    # 3000 bytes round up to a 4 KiB window; bit 0 is ROM Address Enable.
    pci.cfg_write(SLOT, 0, 0x30, 4, 0xFFFFF800)
    assert pci.cfg_read(SLOT, 0, 0x30) == 0xFFFFF000
    pci.cfg_write(SLOT, 0, 0x30, 4, 0xFEB80001)
    assert probe.bar_address(6) is None                # COMMAND.MEM off
    enable(pci, 0x0002)
    assert probe.bar_address(6) == 0xFEB80000
    assert pci.mmio.read(0xFEB80000, 2) == 0xAA55
    assert pci.mmio.read(0xFEB80FFC, 4) == 0
    pci.cfg_write(SLOT, 0, 0x30, 4, 0xFEB80000)         # enable bit cleared
    assert probe.bar_address(6) is None


@pytest.mark.parametrize("bar", [
    dict(index=0, size=0x30, kind=BarKind.IO),          # not a power of two
    dict(index=0, size=2, kind=BarKind.IO),             # I/O minimum is 4 bytes
    dict(index=1, size=8, kind=BarKind.MEM32),          # memory minimum is 16 bytes
    dict(index=5, size=0x1000, kind=BarKind.MEM64),     # 64-bit BAR needs two slots
    dict(index=0, size=0x10, kind=BarKind.IO, prefetchable=True),
])
def test_bad_bar_declarations(bar):
    with pytest.raises(ValueError):
        PciBar(**bar)


def test_overlapping_bar_declarations(pci):
    with pytest.raises(ValueError):
        pci.plug_probe(bars=(PciBar(2, 0x1000, BarKind.MEM64), PciBar(3, 0x10, BarKind.IO)))

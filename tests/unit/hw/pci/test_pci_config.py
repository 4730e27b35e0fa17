"""Type-0 configuration space: write masks, W1C, capability list, trace decoding (PCI 3.0 §6)."""

import io

import pytest

from drivebay import trace
from drivebay.hw.pci.config import ConfigSpace, Register


def test_identity_registers_are_read_only(pci):
    pci.plug_probe(slot=3)
    for register in (0x00, 0x08, 0x2C):          # IDs, revision/class, subsystem IDs
        before = pci.cfg_read(3, 0, register)
        pci.cfg_write(3, 0, register, 4, 0xFFFFFFFF)
        pci.cfg_write(3, 0, register, 4, 0x00000000)
        assert pci.cfg_read(3, 0, register) == before
    assert pci.cfg_read(3, 0, 0x2C) == 0xEF01ABCD


def test_header_type_bist_and_pointers_are_read_only(pci):
    pci.plug_probe(slot=3)
    pci.cfg_write(3, 0, 0x0E, 2, 0xFFFF)          # HEADER_TYPE, BIST
    assert pci.cfg_read(3, 0, 0x0E, 2) == 0x0000
    pci.cfg_write(3, 0, 0x34, 4, 0xFFFFFFFF)      # capabilities pointer + reserved
    assert pci.cfg_read(3, 0, 0x34) == 0
    pci.cfg_write(3, 0, 0x28, 4, 0xFFFFFFFF)      # CardBus CIS pointer
    assert pci.cfg_read(3, 0, 0x28) == 0
    pci.cfg_write(3, 0, 0x40, 4, 0xFFFFFFFF)      # undeclared device-specific space
    assert pci.cfg_read(3, 0, 0x40) == 0


def test_interrupt_line_is_storage_and_pin_is_read_only(pci):
    pci.plug_probe(slot=3)
    pci.cfg_write(3, 0, 0x3C, 2, 0xFF0B)
    assert pci.cfg_read(3, 0, 0x3C, 1) == 0x0B
    assert pci.cfg_read(3, 0, 0x3D, 1) == 0x01    # INTA#


def test_cache_line_size_and_latency_timer_are_writable(pci):
    pci.plug_probe(slot=3)
    pci.cfg_write(3, 0, 0x0C, 2, 0x4010)
    assert pci.cfg_read(3, 0, 0x0C, 2) == 0x4010


def test_command_writable_bits(pci):
    pci.plug_probe(slot=3)
    pci.cfg_write(3, 0, 0x04, 2, 0xFFFF)
    # I/O, memory, bus master, parity error response, SERR#, interrupt disable
    assert pci.cfg_read(3, 0, 0x04, 2) == 0x0547
    pci.cfg_write(3, 0, 0x04, 2, 0x0000)
    assert pci.cfg_read(3, 0, 0x04, 2) == 0x0000


def test_status_error_bits_are_write_one_to_clear(pci):
    probe = pci.plug_probe(slot=3)
    probe.add_msi()                                # sets Capabilities List, bit 4
    probe.config.set(0x06, 2, probe.config.get(0x06, 2) | 0x2000 | 0x0800)   # RMA, STA
    assert pci.cfg_read(3, 0, 0x06, 2) == 0x2810
    pci.cfg_write(3, 0, 0x06, 2, 0x0000)          # writing 0 changes nothing
    assert pci.cfg_read(3, 0, 0x06, 2) == 0x2810
    pci.cfg_write(3, 0, 0x06, 2, 0x2000)          # clears RMA only
    assert pci.cfg_read(3, 0, 0x06, 2) == 0x0810
    pci.cfg_write(3, 0, 0x06, 2, 0xFFFF)          # clears every W1C bit, RO bits stay
    assert pci.cfg_read(3, 0, 0x06, 2) == 0x0010


def test_dword_write_to_command_clears_status_bits_written_as_one(pci):
    probe = pci.plug_probe(slot=3)
    probe.config.set(0x06, 2, 0x2000)
    pci.cfg_write(3, 0, 0x04, 4, 0x20000006)
    assert pci.cfg_read(3, 0, 0x04) == 0x00000006


def walk_capabilities(pci, slot):
    assert pci.cfg_read(slot, 0, 0x06, 2) & 0x0010, "STATUS.Capabilities List"
    found = []
    pointer = pci.cfg_read(slot, 0, 0x34, 1)
    while pointer:
        assert pointer % 4 == 0 and 0x40 <= pointer <= 0xFC
        assert len(found) < 48, "capability list loops"
        found.append((pci.cfg_read(slot, 0, pointer, 1), pointer))
        pointer = pci.cfg_read(slot, 0, pointer + 1, 1)
    return found


def test_capability_list_walk(pci):
    probe = pci.plug_probe(slot=3)
    assert pci.cfg_read(3, 0, 0x06, 2) & 0x0010 == 0
    vendor = probe.add_capability(0x09, 8)
    msi = probe.add_msi(vectors=4)
    msix = probe.add_msix(4, table_bar=1, table_offset=0x0, pba_bar=1, pba_offset=0x800)
    pinned = probe.add_capability(0x01, 8, offset=0xC0)
    caps = walk_capabilities(pci, 3)
    assert caps == [(0x09, vendor), (0x05, msi), (0x11, msix), (0x01, 0xC0)]
    assert pinned == 0xC0
    assert vendor == 0x40                          # first free dword after the header
    spans = sorted([(vendor, 8), (msi, 0x0E), (msix, 12), (0xC0, 8)])
    for (a, n), (b, _) in zip(spans, spans[1:]):
        assert a + n <= b, "capabilities overlap"
    # capability IDs and next pointers are read-only
    pci.cfg_write(3, 0, vendor, 2, 0x0000)
    assert walk_capabilities(pci, 3) == caps


def test_capability_placement_errors(pci):
    probe = pci.plug_probe(slot=3)
    probe.add_capability(0x09, 8, offset=0x80)
    with pytest.raises(ValueError):
        probe.add_capability(0x09, 8, offset=0x84)      # overlaps
    with pytest.raises(ValueError):
        probe.add_capability(0x09, 8, offset=0x92)      # not dword aligned
    with pytest.raises(ValueError):
        probe.add_capability(0x09, 8, offset=0x3C)      # inside the header
    with pytest.raises(ValueError):
        probe.add_capability(0x09, 0xC0)                # does not fit anywhere


def test_declared_registers_get_masks_and_reset_values():
    space = ConfigSpace()
    space.declare((Register(0x60, 2, "XREG", reset=0x1234),))
    assert space.read(0x60, 2) == 0x1234
    space.guest_write(0x60, 2, 0xFFFF)
    assert space.read(0x60, 2) == 0x1234               # read-only by default
    with pytest.raises(ValueError):
        space.declare((Register(0x61, 1, "CLASH"),))
    space.reset()
    assert space.read(0x60, 2) == 0x1234


def test_reset_restores_power_on_values(pci):
    probe = pci.plug_probe(slot=3)
    pci.cfg_write(3, 0, 0x04, 2, 0x0547)
    pci.cfg_write(3, 0, 0x10, 4, 0xC000)
    pci.cfg_write(3, 0, 0x3C, 1, 0x0A)
    probe.bus_reset()
    assert pci.cfg_read(3, 0, 0x04, 2) == 0
    assert pci.cfg_read(3, 0, 0x10) == 0x00000001      # I/O BAR type bit survives
    assert pci.cfg_read(3, 0, 0x3C, 1) == 0


def test_register_names_for_trace():
    space = ConfigSpace()
    assert space.describe(0x04, 2) == "COMMAND"
    assert space.describe(0x04, 4) == "COMMAND/STATUS"
    assert space.describe(0x08, 4) == "REVISION_ID/PROG_IF/SUBCLASS/BASE_CLASS"
    assert space.describe(0x12, 2) == "BAR0+2"
    assert space.describe(0x35, 1) == "0x35"


def test_trace_line_shows_register_and_changed_fields(pci, monkeypatch):
    pci.plug_probe(slot=3)
    out = io.StringIO()
    monkeypatch.setattr(trace, "_out", out)
    monkeypatch.setattr(trace.on, "pci", True)
    pci.cfg_write(3, 0, 0x04, 2, 0x0007)
    pci.cfg_read(3, 0, 0x00, 2)
    text = out.getvalue()
    assert "00:03.0 probe COMMAND <- 0x0007" in text
    assert "0x0000 -> 0x0007 +IO_SPACE +MEMORY_SPACE +BUS_MASTER" in text
    assert "00:03.0 probe VENDOR_ID -> 0x1234" in text

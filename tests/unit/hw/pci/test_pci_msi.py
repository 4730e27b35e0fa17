"""MSI (PCI 3.0 §6.8.1) and MSI-X (§6.8.2): capability layout, messages, masking, pending bits."""

import pytest

SLOT = 3
LAPIC = 0xFEE00000


def find_cap(pci, cap_id):
    pointer = pci.cfg_read(SLOT, 0, 0x34, 1)
    while pointer:
        if pci.cfg_read(SLOT, 0, pointer, 1) == cap_id:
            return pointer
        pointer = pci.cfg_read(SLOT, 0, pointer + 1, 1)
    raise AssertionError(f"capability {cap_id:#x} not in the list")


# -- MSI ---------------------------------------------------------------------------

def test_msi_capability_layout_64bit(pci):
    probe = pci.plug_probe(slot=SLOT)
    probe.add_msi(vectors=4, is64=True)
    cap = find_cap(pci, 0x05)
    # Message Control: MMC = log2(4) = 2 in bits 3:1, 64-bit capable bit 7
    assert pci.cfg_read(SLOT, 0, cap + 2, 2) == 0x0084
    pci.cfg_write(SLOT, 0, cap + 0x4, 4, 0xFEE00003)        # bits 1:0 reserved
    pci.cfg_write(SLOT, 0, cap + 0x8, 4, 0x00000001)
    pci.cfg_write(SLOT, 0, cap + 0xC, 2, 0x4041)
    assert pci.cfg_read(SLOT, 0, cap + 0x4) == 0xFEE00000
    assert pci.cfg_read(SLOT, 0, cap + 0x8) == 0x00000001
    assert pci.cfg_read(SLOT, 0, cap + 0xC, 2) == 0x4041


def test_msi_capability_layout_32bit_with_masking(pci):
    probe = pci.plug_probe(slot=SLOT)
    probe.add_msi(vectors=2, is64=False, per_vector_mask=True)
    cap = find_cap(pci, 0x05)
    # MMC = 1, no 64-bit, per-vector masking capable (bit 8)
    assert pci.cfg_read(SLOT, 0, cap + 2, 2) == 0x0102
    pci.cfg_write(SLOT, 0, cap + 0x08, 2, 0x4041)           # Message Data at +8
    pci.cfg_write(SLOT, 0, cap + 0x0C, 4, 0xFFFFFFFF)       # Mask Bits: 2 vectors implemented
    pci.cfg_write(SLOT, 0, cap + 0x10, 4, 0xFFFFFFFF)       # Pending Bits: read-only
    assert pci.cfg_read(SLOT, 0, cap + 0x08, 2) == 0x4041
    assert pci.cfg_read(SLOT, 0, cap + 0x0C) == 0x00000003
    assert pci.cfg_read(SLOT, 0, cap + 0x10) == 0x00000000


def program_msi(pci, cap, control, address=LAPIC, upper=0, data=0x4041):
    pci.cfg_write(SLOT, 0, cap + 0x4, 4, address)
    pci.cfg_write(SLOT, 0, cap + 0x8, 4, upper)
    pci.cfg_write(SLOT, 0, cap + 0xC, 2, data)
    pci.cfg_write(SLOT, 0, cap + 0x2, 2, control)


def test_msi_disabled_falls_back_to_intx(pci):
    probe = pci.plug_probe(slot=SLOT)
    probe.add_msi()
    pci.cfg_write(SLOT, 0, 0x04, 2, 0x0004)
    probe.msi_notify(0)
    assert pci.msis == []
    assert probe.intx_asserted and pci.bus.pirq_level(2)


def test_msi_message_and_intx_silence(pci):
    probe = pci.plug_probe(slot=SLOT)
    cap = probe.add_msi(is64=True)
    pci.cfg_write(SLOT, 0, 0x04, 2, 0x0004)                 # bus master
    probe.set_irq(True)
    assert probe.intx_asserted
    program_msi(pci, cap, 0x0001)
    assert not probe.intx_asserted                          # INTx# not used while MSI is on
    assert pci.cfg_read(SLOT, 0, 0x06, 2) & 0x0008          # the request itself is still there
    probe.set_irq(False)
    probe.msi_notify(0)
    assert pci.msis == [(0xFEE00000, 0x4041)]
    program_msi(pci, cap, 0x0001, upper=0x00000001, data=0x0031)
    probe.msi_notify(0)
    assert pci.msis[-1] == (0x1FEE00000, 0x0031)


def test_msi_multiple_vectors_use_low_data_bits(pci):
    probe = pci.plug_probe(slot=SLOT)
    cap = probe.add_msi(vectors=4)
    pci.cfg_write(SLOT, 0, 0x04, 2, 0x0004)
    program_msi(pci, cap, 0x0021, data=0x4040)              # enable, MME = 2 (4 vectors)
    probe.msi_notify(3)
    probe.msi_notify(1)
    assert pci.msis == [(LAPIC, 0x4043), (LAPIC, 0x4041)]
    program_msi(pci, cap, 0x0011, data=0x4040)              # only 2 vectors granted
    probe.msi_notify(3)
    assert pci.msis[-1] == (LAPIC, 0x4041)


def test_msi_mme_above_mmc_is_clamped(pci):
    probe = pci.plug_probe(slot=SLOT)
    cap = probe.add_msi(vectors=4)
    pci.cfg_write(SLOT, 0, cap + 2, 2, 0x0051)              # MME = 5 (32) requested by software
    assert pci.cfg_read(SLOT, 0, cap + 2, 2) == 0x00A5      # MME clamped to MMC = 2


def test_msi_per_vector_mask_and_pending(pci):
    probe = pci.plug_probe(slot=SLOT)
    cap = probe.add_msi(vectors=2, is64=True, per_vector_mask=True)
    pci.cfg_write(SLOT, 0, 0x04, 2, 0x0004)
    pci.cfg_write(SLOT, 0, cap + 0x10, 4, 0x00000002)       # mask vector 1 (Mask Bits at +0x10)
    program_msi(pci, cap, 0x0011, data=0x4040)
    probe.msi_notify(1)
    assert pci.msis == []
    assert pci.cfg_read(SLOT, 0, cap + 0x14) == 0x00000002  # Pending Bits at +0x14
    probe.msi_notify(0)
    assert pci.msis == [(LAPIC, 0x4040)]
    pci.cfg_write(SLOT, 0, cap + 0x10, 4, 0x00000000)       # unmask: the pending message goes out
    assert pci.msis == [(LAPIC, 0x4040), (LAPIC, 0x4041)]
    assert pci.cfg_read(SLOT, 0, cap + 0x14) == 0


def test_msi_needs_bus_mastering(pci):
    probe = pci.plug_probe(slot=SLOT)
    cap = probe.add_msi()
    program_msi(pci, cap, 0x0001)
    probe.msi_notify(0)
    assert pci.msis == []


def test_msi_without_sink_is_dropped_quietly(pci):
    pci.bus.msi_sink = None
    probe = pci.plug_probe(slot=SLOT)
    cap = probe.add_msi()
    pci.cfg_write(SLOT, 0, 0x04, 2, 0x0004)
    program_msi(pci, cap, 0x0001)
    probe.msi_notify(0)


# -- MSI-X ---------------------------------------------------------------------------
# The probe's BAR1 (4 KiB, 32-bit memory) holds the table at 0x000 and the
# PBA at 0x800; BAR1 is placed at 0xFEBF0000.

BAR1 = 0xFEBF0000
ENTRIES = 8


@pytest.fixture
def msix(pci):
    probe = pci.plug_probe(slot=SLOT)
    probe.add_msix(ENTRIES, table_bar=1, table_offset=0x000, pba_bar=1, pba_offset=0x800)
    pci.cfg_write(SLOT, 0, 0x14, 4, BAR1)
    pci.cfg_write(SLOT, 0, 0x04, 2, 0x0006)                 # memory + bus master
    pci.cap = find_cap(pci, 0x11)
    pci.probe = probe
    return pci


def write_entry(pci, vector, address, data, control):
    base = BAR1 + 16 * vector
    pci.mmio.write(base + 0x0, 4, address & 0xFFFFFFFF)
    pci.mmio.write(base + 0x4, 4, address >> 32)
    pci.mmio.write(base + 0x8, 4, data)
    pci.mmio.write(base + 0xC, 4, control)


def test_msix_capability_layout(msix):
    cap = msix.cap
    assert msix.cfg_read(SLOT, 0, cap + 2, 2) == ENTRIES - 1     # Table Size is N-1
    assert msix.cfg_read(SLOT, 0, cap + 4) == 0x00000001          # offset 0, BIR 1
    assert msix.cfg_read(SLOT, 0, cap + 8) == 0x00000801          # offset 0x800, BIR 1
    msix.cfg_write(SLOT, 0, cap + 2, 2, 0xFFFF)                   # only bits 15 and 14 are writable
    assert msix.cfg_read(SLOT, 0, cap + 2, 2) == 0xC000 | (ENTRIES - 1)


def test_msix_table_reset_state_and_access(msix):
    for vector in range(ENTRIES):
        assert msix.mmio.read(BAR1 + 16 * vector + 0xC, 4) == 0x00000001   # masked
    write_entry(msix, 2, 0x1FEE01000, 0x0000C031, 0xFFFFFFFE)
    assert msix.mmio.read(BAR1 + 0x20, 8) == 0x1FEE01000
    assert msix.mmio.read(BAR1 + 0x28, 4) == 0x0000C031
    assert msix.mmio.read(BAR1 + 0x2C, 4) == 0x00000000           # reserved bits read 0
    assert msix.probe.accesses == []                              # the device never saw these


def test_msix_message(msix):
    write_entry(msix, 5, LAPIC, 0x4045, 0)
    msix.cfg_write(SLOT, 0, msix.cap + 2, 2, 0x8000)              # MSI-X Enable
    msix.probe.msix_notify(5)
    assert msix.msis == [(LAPIC, 0x4045)]


def test_msix_masked_vector_sets_pending_then_fires_on_unmask(msix):
    write_entry(msix, 3, LAPIC, 0x4043, 1)
    msix.cfg_write(SLOT, 0, msix.cap + 2, 2, 0x8000)
    msix.probe.msix_notify(3)
    assert msix.msis == []
    assert msix.mmio.read(BAR1 + 0x800, 8) == 1 << 3
    msix.mmio.write(BAR1 + 0x800, 4, 0)                           # PBA is read-only
    assert msix.mmio.read(BAR1 + 0x800, 4) == 1 << 3
    msix.mmio.write(BAR1 + 16 * 3 + 0xC, 4, 0)                    # unmask
    assert msix.msis == [(LAPIC, 0x4043)]
    assert msix.mmio.read(BAR1 + 0x800, 8) == 0


def test_msix_function_mask(msix):
    write_entry(msix, 0, LAPIC, 0x4040, 0)
    msix.cfg_write(SLOT, 0, msix.cap + 2, 2, 0xC000)              # enable + function mask
    msix.probe.msix_notify(0)
    assert msix.msis == []
    assert msix.mmio.read(BAR1 + 0x800, 4) == 1
    msix.cfg_write(SLOT, 0, msix.cap + 2, 2, 0x8000)              # function mask off
    assert msix.msis == [(LAPIC, 0x4040)]
    assert msix.mmio.read(BAR1 + 0x800, 4) == 0


def test_msix_disabled_falls_back_to_intx(msix):
    write_entry(msix, 0, LAPIC, 0x4040, 0)
    msix.probe.msix_notify(0)
    assert msix.msis == []
    assert msix.probe.intx_asserted
    msix.cfg_write(SLOT, 0, msix.cap + 2, 2, 0x8000)              # enabling MSI-X silences INTx#
    assert not msix.probe.intx_asserted


def test_other_bar_offsets_reach_the_device(msix):
    assert msix.mmio.read(BAR1 + 0x900, 4) == 0xB0010900
    msix.mmio.write(BAR1 + 0x808, 4, 0x1234)                      # past the 8-byte PBA
    assert msix.probe.accesses == [("read", 1, 0x900, 4), ("write", 1, 0x808, 4, 0x1234)]


def test_msix_reset(msix):
    write_entry(msix, 1, LAPIC, 0x4041, 0)
    msix.cfg_write(SLOT, 0, msix.cap + 2, 2, 0x8000)
    msix.bus.reset()
    assert msix.cfg_read(SLOT, 0, msix.cap + 2, 2) == ENTRIES - 1
    assert msix.probe.msix.vector_masked(1)
    assert msix.probe.msix.message(1) == (0, 0)


@pytest.mark.parametrize("args", [
    dict(entries=4, table_bar=0, table_offset=0, pba_bar=1, pba_offset=0),      # I/O BAR
    dict(entries=4, table_bar=4, table_offset=0, pba_bar=1, pba_offset=0),      # no BAR4
    dict(entries=4, table_bar=1, table_offset=4, pba_bar=1, pba_offset=0x800),  # not QWORD aligned
    dict(entries=300, table_bar=1, table_offset=0, pba_bar=1, pba_offset=0xF00),  # table > 4 KiB
    dict(entries=4, table_bar=1, table_offset=0, pba_bar=1, pba_offset=0x20),   # overlap
    dict(entries=0, table_bar=1, table_offset=0, pba_bar=1, pba_offset=0x800),
])
def test_msix_bad_declarations(pci, args):
    probe = pci.plug_probe(slot=SLOT)
    with pytest.raises(ValueError):
        probe.add_msix(**args)


def test_msix_disabled_falls_back_to_msi_sharing_its_vectors(msix):
    cap = msix.probe.add_msi(vectors=1)
    program_msi(msix, cap, 0x0001, data=0x4050)
    msix.probe.msix_notify(5)                                     # only one MSI vector granted
    assert msix.msis == [(LAPIC, 0x4050)]
    assert not msix.probe.intx_asserted

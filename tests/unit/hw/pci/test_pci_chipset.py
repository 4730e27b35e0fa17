"""The i440FX host bridge (82441FX) and the PIIX3 ISA bridge (82371SB) as SeaBIOS finds them."""

import pytest

from drivebay.hw.pci.i440fx import I440fx
from drivebay.hw.pci.piix3 import Piix3


@pytest.fixture
def pc(pci):
    pci.bus.plug(I440fx(), 0)
    pci.bus.plug(Piix3(), 1)
    return pci


def test_host_bridge_identity(pc):
    assert pc.cfg_read(0, 0, 0x00) == 0x12378086
    assert pc.cfg_read(0, 0, 0x08) == 0x06000002          # class 060000, revision 02
    assert pc.cfg_read(0, 0, 0x0C) == 0x00000000          # header type 00: single function
    # QEMU's subsystem: SeaBIOS takes its QEMU path only when it sees it
    assert pc.cfg_read(0, 0, 0x2C) == 0x11001AF4


def test_host_bridge_command_and_status(pc):
    assert pc.cfg_read(0, 0, 0x04) == 0x02800006
    pc.cfg_write(0, 0, 0x04, 2, 0x0103)                   # what SeaBIOS writes: IO | MEM | SERR
    assert pc.cfg_read(0, 0, 0x04, 2) == 0x0106


def test_host_bridge_reset_values(pc):
    assert pc.cfg_read(0, 0, 0x50, 2) == 0x0100           # PMCCFG
    assert pc.cfg_read(0, 0, 0x53, 1) == 0x80             # DBC
    assert pc.cfg_read(0, 0, 0x57, 1) == 0x01             # DRAMC
    assert pc.cfg_read(0, 0, 0x58, 1) == 0x10             # DRAMT
    assert pc.cfg_read(0, 0, 0x58) == 0x00000010          # DRAMT, PAM0-2 all 0
    assert pc.cfg_read(0, 0, 0x5C) == 0x00000000          # PAM3-6
    assert pc.cfg_read(0, 0, 0x72, 1) == 0x02             # SMRAM


def test_pam_registers_store_with_reserved_bits_zero(pc):
    host = pc.bus.device_at(0)
    pc.cfg_write(0, 0, 0x59, 1, 0xFF)                     # PAM0: only HIENABLE (5:4)
    for register in range(0x5A, 0x60):
        pc.cfg_write(0, 0, register, 1, 0xFF)             # PAM1-6: HIENABLE and LOENABLE
    assert pc.cfg_read(0, 0, 0x59, 1) == 0x30
    assert [pc.cfg_read(0, 0, r, 1) for r in range(0x5A, 0x60)] == [0x33] * 6
    pc.cfg_write(0, 0, 0x5C, 4, 0x11223300)
    assert pc.cfg_read(0, 0, 0x5C) == 0x11223300
    assert host.pam(3) == 0x00 and host.pam(6) == 0x11
    pc.bus.reset()
    assert pc.cfg_read(0, 0, 0x5C) == 0


def test_smram_fields_and_lock(pc):
    pc.cfg_write(0, 0, 0x72, 1, 0x4F)                     # D_OPEN | G_SMRAME | try C_BASE_SEG
    assert pc.cfg_read(0, 0, 0x72, 1) == 0x4A             # C_BASE_SEG stays 010b
    pc.cfg_write(0, 0, 0x72, 1, 0x5A)                     # set D_LCK with D_OPEN
    assert pc.cfg_read(0, 0, 0x72, 1) == 0x1A             # D_LCK forces D_OPEN to 0
    pc.cfg_write(0, 0, 0x72, 1, 0x42)                     # cannot reopen nor unlock
    assert pc.cfg_read(0, 0, 0x72, 1) == 0x12             # G_SMRAME is still writable
    pc.bus.reset()
    assert pc.cfg_read(0, 0, 0x72, 1) == 0x02
    pc.cfg_write(0, 0, 0x72, 1, 0x4A)
    assert pc.cfg_read(0, 0, 0x72, 1) == 0x4A             # unlocked again after reset


def test_isa_bridge_identity(pc):
    assert pc.cfg_read(1, 0, 0x00) == 0x70008086
    assert pc.cfg_read(1, 0, 0x08) == 0x06010000          # class 060100, revision 00
    assert pc.cfg_read(1, 0, 0x0E, 1) == 0x80             # multi-function header
    assert pc.cfg_read(1, 0, 0x04) == 0x02800007


@pytest.mark.parametrize("register, size, value", [
    (0x4C, 1, 0x4D),        # IORT
    (0x4E, 2, 0x0003),      # XBCS
    (0x60, 4, 0x80808080),  # PIRQRC[A:D]: routing disabled
    (0x69, 1, 0x02),        # TOM
    (0x6A, 2, 0x0000),      # MSTAT
    (0x70, 2, 0x8080),      # MBIRQ0, MBIRQ1
    (0x76, 2, 0x0C0C),      # MBDMA0, MBDMA1
    (0x78, 2, 0x0002),      # PCSC
    (0x80, 1, 0x00),        # APICBASE
    (0xA0, 1, 0x08),        # SMICNTL
    (0xA4, 4, 0x00000000),  # SEE
    (0xA8, 1, 0x0F),        # FTMR
])
def test_isa_bridge_reset_values(pc, register, size, value):
    assert pc.cfg_read(1, 0, register, size) == value


def test_isa_bridge_storage_registers_are_writable(pc):
    pc.cfg_write(1, 0, 0x69, 1, 0x7E)                     # TOM
    pc.cfg_write(1, 0, 0x4E, 2, 0x0241)                   # XBCS
    assert pc.cfg_read(1, 0, 0x69, 1) == 0x7E
    assert pc.cfg_read(1, 0, 0x4E, 2) == 0x0241
    pc.bus.reset()
    assert pc.cfg_read(1, 0, 0x69, 1) == 0x02


def test_seabios_style_enumeration(pc):
    pc.plug_probe(slot=3)
    found = []
    slot_fn = 0
    while slot_fn < 256:
        slot, fn = slot_fn >> 3, slot_fn & 7
        ids = pc.cfg_read(slot, fn, 0x00)
        if ids != 0xFFFFFFFF:
            found.append((slot, fn, ids))
        # Like SeaBIOS pci_next: function 0 without bit 7 of HEADER_TYPE ends the slot.
        if fn == 0 and not pc.cfg_read(slot, 0, 0x0E, 1) & 0x80:
            slot_fn += 8
        else:
            slot_fn += 1
    assert found == [(0, 0, 0x12378086), (1, 0, 0x70008086), (3, 0, 0x56781234)]

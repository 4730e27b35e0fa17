"""Configuration mechanism #1 (PCI 3.0 §3.2.2.3.2), topology, reset control at 0xCF9."""

import pytest

from drivebay.errors import ConfigError
from drivebay.hw.pci.device import PciDevice, PciIdentity


def test_dword_read_of_vendor_and_device(pci):
    pci.plug_probe(slot=3)
    assert pci.cfg_read(3, 0, 0x00) == 0x56781234


def test_config_address_reads_back_without_reserved_bits(pci):
    pci.io.write(0xCF8, 4, 0xFFFFFFFF)
    # bits 30:24 reserved and bits 1:0 read as 0
    assert pci.io.read(0xCF8, 4) == 0x80FFFFFC


def test_config_address_latched_only_by_dword_writes(pci):
    pci.io.write(0xCF8, 4, 0x80001808)
    pci.io.write(0xCF8, 1, 0x00)
    pci.io.write(0xCFA, 2, 0x0000)
    assert pci.io.read(0xCF8, 4) == 0x80001808
    assert pci.io.read(0xCF8, 2) == 0xFFFF      # not CONFIG_ADDRESS: nothing answers


def test_enable_bit_clear_leaves_data_port_unclaimed(pci):
    probe = pci.plug_probe(slot=3)
    pci.io.write(0xCF8, 4, 0x00001800)              # slot 3, register 0, bit 31 clear
    assert pci.io.read(0xCFC, 4) == 0xFFFFFFFF
    pci.io.write(0xCF8, 4, 0x0000183C)
    pci.io.write(0xCFC, 1, 0x55)                     # INTERRUPT_LINE, but not enabled
    assert probe.config.read(0x3C, 1) == 0


def test_absent_functions_read_all_ones_and_drop_writes(pci):
    pci.plug_probe(slot=3)
    assert pci.cfg_read(4, 0, 0x00) == 0xFFFFFFFF        # empty slot
    assert pci.cfg_read(3, 1, 0x00) == 0xFFFFFFFF        # absent function
    assert pci.cfg_read(3, 0, 0x00, ) != 0xFFFFFFFF
    pci.io.write(0xCF8, 4, 0x80011800)                    # bus 1, slot 3: no bridge
    assert pci.io.read(0xCFC, 4) == 0xFFFFFFFF
    assert pci.cfg_read(3, 0, 0x08, 1) == 0x07
    pci.cfg_write(9, 0, 0x04, 2, 0x0007)                  # dropped, no exception
    assert pci.cfg_read(9, 0, 0x00, 2) == 0xFFFF


def test_byte_and_word_accesses_use_low_port_bits(pci):
    probe = pci.plug_probe(slot=3)
    # 0x08 revision 07, 0x09 prog-if 01, 0x0A subclass 06, 0x0B base class 01
    assert pci.cfg_read(3, 0, 0x08) == 0x01060107
    assert pci.cfg_read(3, 0, 0x08, 1) == 0x07
    assert pci.cfg_read(3, 0, 0x09, 1) == 0x01
    assert pci.cfg_read(3, 0, 0x0A, 2) == 0x0106
    assert pci.cfg_read(3, 0, 0x0B, 1) == 0x01
    assert pci.cfg_read(3, 0, 0x02, 2) == 0x5678
    pci.cfg_write(3, 0, 0x3C, 1, 0x0B)                    # INTERRUPT_LINE at 0xCFC
    pci.cfg_write(3, 0, 0x0D, 1, 0x40)                    # LATENCY_TIMER at 0xCFD
    assert probe.config.read(0x3C, 1) == 0x0B
    assert pci.cfg_read(3, 0, 0x0C) == 0x00004000


def test_access_running_past_the_data_port(pci):
    pci.plug_probe(slot=3)
    pci.io.write(0xCF8, 4, pci.address(3, 0, 0x00))
    # A dword at 0xCFE: bytes 2-3 of the register, the rest is outside the port.
    assert pci.io.read(0xCFE, 4) == 0xFFFF5678


def test_header_type_bit7_marks_multifunction(pci):
    mf = PciIdentity(vendor_id=0x8086, device_id=0x7000, class_code=0x060100, multifunction=True)
    pci.bus.plug(PciDevice(mf), 1, 0)
    pci.bus.plug(PciDevice(PciIdentity(vendor_id=0x8086, device_id=0x7010, class_code=0x010180)), 1, 1)
    assert pci.cfg_read(1, 0, 0x0E, 1) == 0x80
    assert pci.cfg_read(1, 1, 0x0E, 1) == 0x00
    assert pci.cfg_read(1, 1, 0x00) == 0x70108086


def test_plug_rules(pci):
    single = PciIdentity(vendor_id=0x1AF4, device_id=0x1001, class_code=0x010000)
    pci.bus.plug(PciDevice(single), 4, 0)
    with pytest.raises(ConfigError):
        pci.bus.plug(PciDevice(single), 4, 0)          # taken
    with pytest.raises(ConfigError):
        pci.bus.plug(PciDevice(single), 4, 2)          # function 0 is single-function
    pci.bus.plug(PciDevice(single), 5, 1)
    with pytest.raises(ConfigError):
        pci.bus.plug(PciDevice(single), 5, 0)          # slot has functions, 0 must be multi
    with pytest.raises(ConfigError):
        pci.bus.plug(PciDevice(single), 32, 0)


def test_reset_control_register_at_cf9(pci):
    pci.io.write(0xCF8, 4, 0x80001808)
    pci.io.write(0xCF9, 1, 0x02)                        # SRST only: selects hard, no reset yet
    assert pci.resets == []
    assert pci.io.read(0xCF9, 1) == 0x02
    assert pci.io.read(0xCF8, 4) == 0x80001808          # CONFIG_ADDRESS untouched
    pci.io.write(0xCF9, 1, 0x06)                        # RCPU with SRST: hard reset
    assert pci.resets == [True]
    pci.io.write(0xCF9, 1, 0x04)                        # RCPU alone: soft reset
    assert pci.resets == [True, False]
    assert pci.io.read(0xCF9, 1) == 0x00                # RCPU is not kept
    pci.io.write(0xCF9, 1, 0x02)
    pci.bus.reset()
    assert pci.io.read(0xCF9, 1) == 0x00
    assert pci.io.read(0xCF8, 4) == 0x00000000


def test_bus_reset_resets_functions(pci):
    probe = pci.plug_probe(slot=3)
    pci.cfg_write(3, 0, 0x04, 2, 0x0007)
    pci.cfg_write(3, 0, 0x3C, 1, 0x0B)
    pci.bus.reset()
    assert pci.cfg_read(3, 0, 0x04, 2) == 0x0000
    assert pci.cfg_read(3, 0, 0x3C, 1) == 0x00
    assert pci.cfg_read(3, 0, 0x00) == 0x56781234
    assert probe.resets == 1

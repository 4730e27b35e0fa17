"""QEMU fw_cfg, traditional interface: selector 0x510 (16-bit), data 0x511.

Keys and layouts from QEMU's docs/specs/fw_cfg.rst: 0x0000 signature
"QEMU", 0x0001 ID (bit 0 traditional, bit 1 DMA), 0x0003 RAM size (u64),
0x0005 CPU count (u16), 0x0019 file directory (BE u32 count, then 64-byte
entries: BE u32 size, BE u16 select, u16 reserved, char name[56]), files
from 0x0020.
"""

import pytest

from drivebay.errors import ConfigError
from drivebay.hw.pc.fw_cfg import FwCfg


@pytest.fixture
def fw(io):
    f = FwCfg(ram_size=256 << 20, cpus=1)
    f.register(io)
    return f


def read_item(ports, key, length):
    ports.outw(0x510, key)
    return bytes(ports.inb(0x511) for _ in range(length))


def test_signature_then_zeros(fw, ports):
    assert read_item(ports, 0x0000, 6) == b"QEMU\0\0"


def test_id_traditional_interface_only(fw, ports):
    assert read_item(ports, 0x0001, 4) == b"\x01\x00\x00\x00"


def test_numbered_items(fw, ports):
    assert read_item(ports, 0x0003, 8) == (256 << 20).to_bytes(8, "little")
    assert read_item(ports, 0x0005, 2) == b"\x01\x00"
    assert read_item(ports, 0x000F, 2) == b"\x01\x00"
    assert read_item(ports, 0x0002, 16) == bytes(16)
    assert read_item(ports, 0x000E, 2) == b"\x00\x00"


def test_select_rewinds(fw, ports):
    assert read_item(ports, 0x0000, 2) == b"QE"
    assert read_item(ports, 0x0000, 4) == b"QEMU"


def test_unknown_item_reads_zero(fw, ports):
    assert read_item(ports, 0x0012, 4) == bytes(4)


def test_file_directory_layout(fw, ports):
    fw.add_file_u32("etc/boot-fail-wait", 5000)
    fw.add_bootorder(["/pci@i0cf8/*@4"])
    fw.add_e820([(0, 0x9FC00, 1)])
    expected = (
        b"\x00\x00\x00\x03"
        + b"\x00\x00\x00\x0f" + b"\x00\x20" + b"\x00\x00" + b"bootorder".ljust(56, b"\0")
        + b"\x00\x00\x00\x04" + b"\x00\x21" + b"\x00\x00" + b"etc/boot-fail-wait".ljust(56, b"\0")
        + b"\x00\x00\x00\x14" + b"\x00\x22" + b"\x00\x00" + b"etc/e820".ljust(56, b"\0")
    )
    assert len(expected) == 4 + 3 * 64
    assert read_item(ports, 0x0019, len(expected) + 4) == expected + bytes(4)


def test_file_contents_by_selector(fw, ports):
    fw.add_e820([(0, 0x9FC00, 1), (0xFEFFC000, 0x4000, 2)])
    fw.add_file_u32("etc/boot-fail-wait", 5000)
    fw.add_bootorder(["/pci@i0cf8/*@4", "/pci@i0cf8/*@1,1/drive@0/disk@0"])
    assert read_item(ports, fw.selector_of("etc/e820"), 40) == (
        b"\x00\x00\x00\x00\x00\x00\x00\x00" b"\x00\xfc\x09\x00\x00\x00\x00\x00" b"\x01\x00\x00\x00"
        b"\x00\xc0\xff\xfe\x00\x00\x00\x00" b"\x00\x40\x00\x00\x00\x00\x00\x00" b"\x02\x00\x00\x00")
    assert read_item(ports, fw.selector_of("etc/boot-fail-wait"), 4) == b"\x88\x13\x00\x00"
    bootorder = b"/pci@i0cf8/*@4\n/pci@i0cf8/*@1,1/drive@0/disk@0\0"
    assert fw.selector_of("bootorder") == 0x0020
    assert read_item(ports, 0x0020, len(bootorder) + 1) == bootorder + b"\0"


def test_selectors_follow_name_order(fw):
    assert fw.add_file("zeta", b"z") == 0x20
    assert fw.add_file("alpha", b"a") == 0x20      # sorts first, takes 0x20...
    assert fw.selector_of("zeta") == 0x21          # ...and zeta moves up, as in QEMU


def test_arch_local_items_are_a_separate_namespace(fw, ports):
    fw.add_item(0x8002, b"\x01\x00\x00\x00")       # IRQ0 override
    assert read_item(ports, 0x8002, 4) == b"\x01\x00\x00\x00"
    assert read_item(ports, 0x0002, 4) == bytes(4)  # the UUID, not the override


def test_data_port_is_read_only(fw, ports):
    ports.outw(0x510, 0x0000)
    ports.outb(0x511, 0x41)
    assert ports.inb(0x511) == ord("Q")


def test_wide_data_reads_float(fw, ports):
    ports.outw(0x510, 0x0000)
    assert ports.inw(0x510) == 0xFFFF
    assert ports.inb(0x511) == ord("Q")


def test_host_side_errors(fw):
    fw.add_file("etc/x", b"")
    with pytest.raises(ConfigError):
        fw.add_file("etc/x", b"")
    with pytest.raises(ConfigError):
        fw.add_file("n" * 56, b"")
    with pytest.raises(ConfigError):
        fw.add_item(0x0020, b"")
    with pytest.raises(ConfigError):
        fw.add_bootorder(["bad\npath"])

import struct

import pytest

from drivebay.boot.loader import MBI_ADDRESS, load_multiboot, memory_map
from drivebay.boot.ram import GuestRam
from drivebay.errors import ConfigError, LoaderError
from minielf import build_elf32, multiboot_header

HLT = b"\xf4"


@pytest.fixture
def ram():
    return GuestRam(16 << 20)


def write(tmp_path, data, name="guest.elf"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_loads_segment_bss_and_multiboot_info(tmp_path, ram):
    ram.buffer[0x100000 + 12 + 1:0x100000 + 12 + 64] = b"\xaa" * 63   # stale bytes under .bss
    path = write(tmp_path, build_elf32(HLT, bss=64))
    prog = load_multiboot(ram, path, cmdline="n=5")
    assert prog.entry == 0x10000C
    assert bytes(ram.buffer[0x100000:0x10000D]) == multiboot_header() + HLT
    assert bytes(ram.buffer[0x10000D:0x10000D + 63]) == bytes(63)
    flags, mem_lower, mem_upper = struct.unpack_from("<III", ram.buffer, MBI_ADDRESS)
    assert flags & 0x45 == 0x45                 # mem, cmdline, mmap
    assert mem_lower == 639 and mem_upper == (16 << 20) // 1024 - 1024
    cmdline_at = struct.unpack_from("<I", ram.buffer, MBI_ADDRESS + 16)[0]
    assert bytes(ram.buffer[cmdline_at:cmdline_at + 4]) == b"n=5\0"
    length, addr = struct.unpack_from("<II", ram.buffer, MBI_ADDRESS + 44)
    entries = [struct.unpack_from("<IQQI", ram.buffer, addr + i) for i in range(0, length, 24)]
    assert [(b, n, t) for _, b, n, t in entries] == memory_map(16 << 20)
    assert (0x100000, (16 << 20) - 0x100000, 1) in [(b, n, t) for _, b, n, t in entries]


def test_not_elf(tmp_path, ram):
    with pytest.raises(LoaderError, match=r"guest\.txt: not an ELF file"):
        load_multiboot(ram, write(tmp_path, b"hello world", "guest.txt"))


def test_wrong_architecture(tmp_path, ram):
    with pytest.raises(LoaderError, match="EM_X86_64.*ELF32 for EM_386"):
        load_multiboot(ram, write(tmp_path, build_elf32(HLT, machine=62)))


def test_elf64_refused(tmp_path, ram):
    with pytest.raises(LoaderError, match="ELF class 64"):
        load_multiboot(ram, write(tmp_path, open("/bin/true", "rb").read()))


def test_missing_multiboot_header(tmp_path, ram):
    with pytest.raises(LoaderError, match="no multiboot v1 header"):
        load_multiboot(ram, write(tmp_path, build_elf32(HLT, multiboot=False)))


def test_bad_multiboot_checksum(tmp_path, ram):
    bad = multiboot_header(checksum=0x12345678)
    with pytest.raises(LoaderError, match="bad checksum 0x12345678"):
        load_multiboot(ram, write(tmp_path, build_elf32(HLT, mb_header=bad)))


def test_segment_outside_ram(tmp_path, ram):
    with pytest.raises(LoaderError, match="outside guest RAM"):
        load_multiboot(ram, write(tmp_path, build_elf32(HLT, load_address=0x2000000)))


def test_entry_outside_image(tmp_path, ram):
    with pytest.raises(LoaderError, match="entry point 0x500000"):
        load_multiboot(ram, write(tmp_path, build_elf32(HLT, entry=0x500000)))


def test_missing_file(tmp_path, ram):
    with pytest.raises(LoaderError, match="cannot read guest program"):
        load_multiboot(ram, tmp_path / "nope.elf")


def test_ram_size_limits():
    with pytest.raises(ConfigError, match="multiple of 4 KiB"):
        GuestRam(5 << 40)

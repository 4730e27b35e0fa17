"""Loading multiboot v1 guest programs (ELF32, i386) into guest RAM.

The guest programs of firmware/ are ELF files with a multiboot v1 header in
their first 8 KiB (Multiboot Specification 0.6.96, section 3.1).  The loader
copies each PT_LOAD segment to its physical address, zeroes the rest of the
segment (.bss), and writes the multiboot information structure the program
receives in EBX: memory sizes, the command line and an E820-style memory map.
The same file runs on ``qemu-system-x86_64 -kernel``.

Not supported: a.out kludge (header flag 16) images, modules, VBE info.
"""

import io
import struct
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from drivebay.errors import LoaderError

MULTIBOOT_HEADER_MAGIC = 0x1BADB002
MULTIBOOT_BOOTLOADER_MAGIC = 0x2BADB002
MULTIBOOT_SEARCH_BYTES = 8192          # spec 3.1.1: header within the first 8192 bytes
MB_FLAG_PAGE_ALIGN = 1 << 0
MB_FLAG_MEMORY_INFO = 1 << 1
MB_FLAG_VIDEO_MODE = 1 << 2
MB_FLAG_AOUT_KLUDGE = 1 << 16
MB_SUPPORTED_REQUIRED = MB_FLAG_PAGE_ALIGN | MB_FLAG_MEMORY_INFO | MB_FLAG_VIDEO_MODE

# multiboot_info flags (spec 3.3)
MBI_MEM = 1 << 0
MBI_CMDLINE = 1 << 2
MBI_MMAP = 1 << 6
MBI_LOADER_NAME = 1 << 9

E820_RAM = 1
E820_RESERVED = 2

# Where the loader puts what it hands over: below the program (loaded at 1 MiB),
# above the real-mode IVT/BDA and clear of the EBDA at 0x9FC00.
MBI_ADDRESS = 0x9000
MMAP_ADDRESS = 0x9100
CMDLINE_ADDRESS = 0x9800
CMDLINE_MAX = 0x800
LOADER_NAME = b"drivebay\0"
LOW_RAM_TOP = 0x9FC00                   # 639 KiB: the EBDA starts here on a PC
BIOS_AREA = (0xF0000, 0x10000)          # reserved like a PC BIOS would report it


@dataclass(frozen=True)
class LoadedProgram:
    path: str
    entry: int
    low: int      # lowest physical address written
    high: int     # one past the highest
    mbi_address: int


def memory_map(ram_size):
    """The E820 map a PC BIOS reports for ``ram_size`` bytes of RAM below 4 GiB."""
    return [
        (0, LOW_RAM_TOP, E820_RAM),
        (LOW_RAM_TOP, 0xA0000 - LOW_RAM_TOP, E820_RESERVED),
        (BIOS_AREA[0], BIOS_AREA[1], E820_RESERVED),
        (0x100000, ram_size - 0x100000, E820_RAM),
    ]


def _find_multiboot_header(path, head):
    for off in range(0, min(len(head), MULTIBOOT_SEARCH_BYTES) - 11, 4):
        magic, flags, checksum = struct.unpack_from("<III", head, off)
        if magic == MULTIBOOT_HEADER_MAGIC:
            if (magic + flags + checksum) & 0xFFFFFFFF:
                raise LoaderError(f"{path}: multiboot header at file offset {off:#x} has a bad "
                                  f"checksum {checksum:#010x} (magic+flags+checksum must be 0)")
            return off, flags
    raise LoaderError(f"{path}: no multiboot v1 header (magic {MULTIBOOT_HEADER_MAGIC:#010x}) "
                      f"in the first {MULTIBOOT_SEARCH_BYTES} bytes")


def load_multiboot(ram, path, cmdline=""):
    """Load the ELF at ``path`` into ``ram`` (a boot.ram.GuestRam); return a LoadedProgram."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise LoaderError(f"{path}: cannot read guest program: {e.strerror}") from None
    if data[:4] != b"\x7fELF":
        raise LoaderError(f"{path}: not an ELF file (first bytes {data[:4].hex()}, expected 7f454c46)")
    try:
        elf = ELFFile(io.BytesIO(data))
        if elf.elfclass != 32 or elf["e_machine"] != "EM_386":
            raise LoaderError(f"{path}: ELF class {elf.elfclass}, machine {elf['e_machine']}: "
                              f"a multiboot guest must be ELF32 for EM_386 (i386)")
        if elf["e_type"] != "ET_EXEC":
            raise LoaderError(f"{path}: ELF type {elf['e_type']}, expected ET_EXEC")
        _, mb_flags = _find_multiboot_header(path, data)
        unknown_required = mb_flags & 0xFFFF & ~MB_SUPPORTED_REQUIRED
        if unknown_required:
            raise LoaderError(f"{path}: multiboot header requires unsupported features "
                              f"(flags {unknown_required:#x})")
        segments = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        if not segments:
            raise LoaderError(f"{path}: ELF has no PT_LOAD segment")
        low, high = 1 << 32, 0
        for seg in segments:
            paddr, filesz, memsz = seg["p_paddr"], seg["p_filesz"], seg["p_memsz"]
            if filesz > memsz:
                raise LoaderError(f"{path}: segment at {paddr:#x}: p_filesz {filesz} > p_memsz {memsz}")
            if paddr < 0x100000 or paddr + memsz > ram.size:
                raise LoaderError(f"{path}: segment at {paddr:#x}+{memsz:#x} lies outside guest RAM "
                                  f"above 1 MiB (RAM is {ram.size >> 20} MiB)")
            ram.load(paddr, seg.data()[:filesz])
            ram.load(paddr + filesz, bytes(memsz - filesz))
            low, high = min(low, paddr), max(high, paddr + memsz)
        entry = elf["e_entry"]
    except ELFError as e:
        raise LoaderError(f"{path}: malformed ELF: {e}") from None
    if not low <= entry < high:
        raise LoaderError(f"{path}: entry point {entry:#x} is outside the loaded image "
                          f"{low:#x}-{high:#x}")
    _write_multiboot_info(ram, cmdline)
    return LoadedProgram(path, entry, low, high, MBI_ADDRESS)


def _write_multiboot_info(ram, cmdline):
    cmd = cmdline.encode() + b"\0"
    if len(cmd) > CMDLINE_MAX:
        raise LoaderError(f"command line of {len(cmd)} bytes exceeds {CMDLINE_MAX}")
    mmap_bytes = b"".join(struct.pack("<IQQI", 20, base, length, kind)
                          for base, length, kind in memory_map(ram.size))
    ram.load(MMAP_ADDRESS, mmap_bytes)
    ram.load(CMDLINE_ADDRESS, cmd)
    loader_name_at = CMDLINE_ADDRESS + len(cmd)
    ram.load(loader_name_at, LOADER_NAME)
    mbi = bytearray(116)
    struct.pack_into("<III", mbi, 0, MBI_MEM | MBI_CMDLINE | MBI_MMAP | MBI_LOADER_NAME,
                     LOW_RAM_TOP >> 10, (ram.size - 0x100000) >> 10)
    struct.pack_into("<I", mbi, 16, CMDLINE_ADDRESS)
    struct.pack_into("<II", mbi, 44, len(mmap_bytes), MMAP_ADDRESS)
    struct.pack_into("<I", mbi, 64, loader_name_at)
    ram.load(MBI_ADDRESS, bytes(mbi))

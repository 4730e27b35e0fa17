"""Build tiny ELF32 multiboot images in memory, for loader and CPU tests.

The layout is the minimum the ELF specification allows: the ELF header, one
program header, then the image (an optional multiboot header followed by
``code``) loaded at ``load_address``.  Real guest programs come from
firmware/; these exist to make broken and edge-case files on purpose.
"""

import struct

ELF_HEADER = struct.Struct("<16sHHIIIIIHHHHHH")
PROGRAM_HEADER = struct.Struct("<IIIIIIII")
MB_MAGIC = 0x1BADB002


def multiboot_header(flags=0x3, checksum=None):
    if checksum is None:
        checksum = (-(MB_MAGIC + flags)) & 0xFFFFFFFF
    return struct.pack("<III", MB_MAGIC, flags, checksum)


def build_elf32(code, load_address=0x100000, multiboot=True, machine=3, elf_class=1,
                bss=0, entry=None, mb_header=None):
    image = (mb_header if mb_header is not None else multiboot_header() if multiboot else b"") + code
    code_at = load_address + (len(image) - len(code))
    image_off = ELF_HEADER.size + PROGRAM_HEADER.size
    ident = b"\x7fELF" + bytes([elf_class, 1, 1]) + bytes(9)
    header = ELF_HEADER.pack(ident, 2, machine, 1, code_at if entry is None else entry,
                             ELF_HEADER.size, 0, 0, ELF_HEADER.size, PROGRAM_HEADER.size, 1, 40, 0, 0)
    ph = PROGRAM_HEADER.pack(1, image_off, load_address, load_address, len(image),
                             len(image) + bss, 7, 0x1000)
    return header + ph + image

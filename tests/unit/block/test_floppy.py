"""Floppy driver and the FAT12 formatter: sizes and geometry, boot sector
bytes at the Microsoft FAT specification's offsets, the FATs and the root
directory, the boot stub (run in unicorn), probing and bad input.

The values FORMAT gives each diskette (sectors per cluster, root entries,
media descriptor, FAT size) are written out here, not taken from
block/floppy.py, so a wrong table cannot confirm itself.  pyfatfs reads the
result in tests/differential/test_iso_floppy_readers.py.
"""

import struct

import pytest
from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_16, Uc
from unicorn.x86_const import UC_X86_REG_AH, UC_X86_REG_AL

from drivebay.block import drivers
from drivebay.block.fat12 import fat_sectors
from drivebay.block.floppy import FloppyDriver, FloppyGeometry
from drivebay.block.raw import RawDriver
from drivebay.errors import FormatError, ImageError, UnsupportedOperation

# size: (cylinders, heads, sectors per track, SecPerClus, RootEntCnt, Media, FATSz16)
STANDARD = {
    368640: (40, 2, 9, 2, 112, 0xFD, 2),             # 360K
    737280: (80, 2, 9, 2, 112, 0xF9, 3),             # 720K
    1228800: (80, 2, 15, 1, 224, 0xF9, 7),           # 1.2M
    1474560: (80, 2, 18, 1, 224, 0xF0, 9),           # 1.44M
    2949120: (80, 2, 36, 2, 240, 0xF0, 9),           # 2.88M
}
sizes = pytest.mark.parametrize("size", list(STANDARD), ids=lambda s: f"{s // 1024}K")


def field(raw, offset, fmt):
    return struct.unpack_from("<" + fmt, raw, offset)[0]


# -- creation ----------------------------------------------------------------------------------

@sizes
def test_blank_diskette(tmp_path, size):
    path = tmp_path / "blank.img"
    FloppyDriver.create(path, size)
    assert path.read_bytes() == bytes(size)
    c, h, s = STANDARD[size][:3]
    with FloppyDriver.open(path) as im:
        assert im.size == size and im.geometry == FloppyGeometry(c, h, s)
        assert im.info() == {"floppy_format": im.variant, "geometry": f"{c}/{h}/{s}"}
        assert im.uuid is None


@sizes
def test_fat12_boot_sector_byte_exact(tmp_path, size):
    path = tmp_path / "fat.img"
    FloppyDriver.create(path, size, "fat12", label="DrIvEbAy 1", volume_id=0x1234ABCD)
    raw = path.read_bytes()
    c, h, s, spc, root, media, fatsz = STANDARD[size]
    assert len(raw) == size
    assert raw[0:3] == b"\xEB\x3C\x90"              # BS_jmpBoot: jmp short 0x3E; nop
    assert raw[3:11] == b"MSWIN4.1"                 # BS_OEMName
    assert field(raw, 11, "H") == 512               # BPB_BytsPerSec
    assert raw[13] == spc                           # BPB_SecPerClus
    assert field(raw, 14, "H") == 1                 # BPB_RsvdSecCnt
    assert raw[16] == 2                             # BPB_NumFATs
    assert field(raw, 17, "H") == root              # BPB_RootEntCnt
    assert field(raw, 19, "H") == size // 512       # BPB_TotSec16
    assert raw[21] == media                         # BPB_Media
    assert field(raw, 22, "H") == fatsz             # BPB_FATSz16
    assert field(raw, 24, "H") == s                 # BPB_SecPerTrk
    assert field(raw, 26, "H") == h                 # BPB_NumHeads
    assert field(raw, 28, "I") == 0                 # BPB_HiddSec
    assert field(raw, 32, "I") == 0                 # BPB_TotSec32
    assert raw[36] == 0x00                          # BS_DrvNum: floppy
    assert raw[38] == 0x29                          # BS_BootSig
    assert field(raw, 39, "I") == 0x1234ABCD        # BS_VolID
    assert raw[43:54] == b"DRIVEBAY 1 "             # BS_VolLab, uppercased, space padded
    assert raw[54:62] == b"FAT12   "                # BS_FilSysType
    assert raw[510:512] == b"\x55\xAA"
    fat1, fat2 = raw[512:512 + fatsz * 512], raw[512 + fatsz * 512:512 + 2 * fatsz * 512]
    assert fat1 == fat2
    assert fat1[:3] == bytes([media, 0xFF, 0xFF])   # FAT[0] = 0xF00|media, FAT[1] = EOC
    assert fat1[3:] == bytes(len(fat1) - 3)
    root_at = 512 * (1 + 2 * fatsz)
    label = raw[root_at:root_at + 32]
    assert label[0:11] == b"DRIVEBAY 1 " and label[11] == 0x08     # ATTR_VOLUME_ID
    assert field(label, 26, "H") == 0 and field(label, 28, "I") == 0
    root_end = root_at + root * 32
    assert raw[root_at + 32:root_end] == bytes(root_end - root_at - 32)
    assert raw[root_end:] == bytes(size - root_end)  # the data area is untouched
    with FloppyDriver.open(path) as im:
        info = im.info()
    assert info["fat_label"] == "DRIVEBAY 1" and info["fat_volume_id"] == "1234-ABCD"
    assert info["fat_type"] == "FAT12"


def test_no_label_is_no_name_and_no_volume_entry(tmp_path):
    path = tmp_path / "fat.img"
    FloppyDriver.create(path, 1474560, "fat12", timestamp=0)
    raw = path.read_bytes()
    assert raw[43:54] == b"NO NAME    "
    assert raw[512 * 19:512 * 19 + 32] == bytes(32)      # root directory after 1 + 2 x 9


@pytest.mark.parametrize("size", list(STANDARD))
def test_fat_sizes_are_formats_values(size):
    c, h, s, spc, root, media, fatsz = STANDARD[size]
    assert fat_sectors(size // 512, spc, root) == fatsz


def test_label_timestamp_is_a_dos_date(tmp_path):
    import time
    path = tmp_path / "fat.img"
    when = time.mktime((2001, 9, 9, 1, 46, 40, 0, 0, -1))
    FloppyDriver.create(path, 737280, "fat12", label="x", timestamp=when)
    entry = path.read_bytes()[512 * 7:512 * 7 + 32]  # 1 + 2 FATs of 3 sectors
    assert field(entry, 24, "H") == (2001 - 1980) << 9 | 9 << 5 | 9      # DIR_WrtDate
    assert field(entry, 22, "H") == 1 << 11 | 46 << 5 | 40 // 2          # DIR_WrtTime


def test_boot_stub_prints_and_asks_for_the_next_device(tmp_path):
    path = tmp_path / "fat.img"
    FloppyDriver.create(path, 1474560, "fat12")
    cpu = Uc(UC_ARCH_X86, UC_MODE_16)
    cpu.mem_map(0, 1 << 20)
    cpu.mem_write(0x7C00, path.read_bytes()[:512])
    printed, calls = bytearray(), []

    def interrupt(uc, number, _):
        calls.append((number, uc.reg_read(UC_X86_REG_AH)))
        if number == 0x10:
            printed.append(uc.reg_read(UC_X86_REG_AL))
        if number == 0x19:
            uc.emu_stop()
    cpu.hook_add(UC_HOOK_INTR, interrupt)
    cpu.emu_start(0x7C00, 0x7E00, count=100_000)
    assert b"Non-system disk" in printed
    assert all(c == (0x10, 0x0E) for c in calls[:-2])
    assert calls[-2:] == [(0x16, 0x00), (0x19, 0x00)]


@pytest.mark.parametrize("size", [0, 512, 1474560 + 512, 1 << 20, 4030464])
def test_non_standard_sizes_are_refused(tmp_path, size):
    with pytest.raises(ImageError, match="not a standard floppy size.*360K \\(368640\\), 720K "
                                         "\\(737280\\), 1.2M \\(1228800\\), 1.44M \\(1474560\\)"
                                         ", 2.88M \\(2949120\\)"):
        FloppyDriver.create(tmp_path / "x.img", size)
    assert not (tmp_path / "x.img").exists()


@pytest.mark.parametrize("kw,match", [
    (dict(variant="dynamic"), "variant 'dynamic' unknown"),
    (dict(variant="blank", label="A"), "needs a file system"),
    (dict(variant="fat12", label="TWELVE CHARS"), "at most 11"),
    (dict(variant="fat12", label="A.B"), "cannot hold: '.'"),
    (dict(variant="fat12", label="Ä"), "only ASCII"),
    (dict(variant="fat12", label=" LEAD"), "starts with a space"),
    (dict(variant="fat12", serial=1), "unknown floppy creation options: serial"),
])
def test_creation_errors(tmp_path, kw, match):
    with pytest.raises(ImageError, match=match):
        FloppyDriver.create(tmp_path / "x.img", 1474560, **kw)
    assert not (tmp_path / "x.img").exists()


# -- open, probe, data path ---------------------------------------------------------------------

def test_read_write_and_fixed_size(tmp_path):
    path = tmp_path / "f.img"
    FloppyDriver.create(path, 737280, "fat12")
    with FloppyDriver.open(path, writable=True) as im:
        im.write(737280 - 3, b"end")
        with pytest.raises(ImageError):
            im.write(737280 - 1, b"ab")
        with pytest.raises(UnsupportedOperation, match="fixed size"):
            im.resize(1474560)
    with FloppyDriver.open(path) as im:
        assert im.read(737280 - 3, 3) == b"end"
    assert not FloppyDriver.resizable
    assert FloppyDriver.create_variants == ("blank", "fat12")
    assert sorted(FloppyDriver.fixed_sizes) == [368640, 737280, 1228800, 1474560, 2949120]


def test_probe_scores(tmp_path):
    for size in STANDARD:
        assert FloppyDriver.probe(b"", b"", size) == 10
    for size in (163840, 1720320, 1474560 + 512, 8 << 20):
        assert FloppyDriver.probe(b"", b"", size) == 0
    path = tmp_path / "f.img"
    FloppyDriver.create(path, 1228800)
    assert drivers.probe(path) is FloppyDriver
    other = tmp_path / "r.img"
    RawDriver.create(other, 1474560 + 512)
    assert drivers.probe(other) is RawDriver


def test_other_sizes_open_with_known_or_bpb_geometry(tmp_path):
    dmf = tmp_path / "dmf.img"
    dmf.write_bytes(bytes(1720320))
    with FloppyDriver.open(dmf) as im:
        assert im.geometry == FloppyGeometry(80, 2, 21) and im.variant == "non-standard"
    odd = tmp_path / "odd.img"                      # 81 cylinders of 18: from the BPB
    sector0 = bytearray(512)
    struct.pack_into("<HBHBHHBHHH", sector0, 11, 512, 1, 1, 2, 224, 81 * 2 * 18, 0xF0, 9, 18, 2)
    odd.write_bytes(sector0 + bytes(81 * 2 * 18 * 512 - 512))
    with FloppyDriver.open(odd) as im:
        assert im.geometry == FloppyGeometry(81, 2, 18)
    unknown = tmp_path / "unknown.img"
    unknown.write_bytes(bytes(512 * 7))
    with FloppyDriver.open(unknown) as im:
        assert im.geometry is None and im.info()["geometry"] is None


@pytest.mark.parametrize("size,match", [
    (0, "0 bytes is not a floppy image"),
    (1000, "whole 512-byte sectors"),
    (4030464 + 512, "at most 4030464 bytes"),
])
def test_open_refuses_what_no_diskette_holds(tmp_path, size, match):
    path = tmp_path / "x.img"
    path.write_bytes(bytes(size))
    with pytest.raises(FormatError, match=match):
        FloppyDriver.open(path)


def test_largest_virtualbox_floppy_opens(tmp_path):
    path = tmp_path / "big.img"
    path.write_bytes(bytes(4030464))
    with FloppyDriver.open(path) as im:
        assert im.size == 4030464

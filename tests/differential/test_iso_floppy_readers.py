"""ISO and floppy images against independent implementations.

Recorded with pycdlib 1.22.0 (LGPL-2.1; writes and reads ISO 9660, Joliet,
Rock Ridge and El Torito) and pyfatfs 1.1.0 (MIT; reads and writes FAT12/16/32,
case-sensitive 8.3 look-up), both test-only dependencies.

* pycdlib makes ISO images (files, directories, Joliet, Rock Ridge, El
  Torito with a no-emulation and a floppy-emulation boot image); drivebay
  reads them byte for byte, finds every file's data where pycdlib says it
  is, and reports the descriptor fields and boot catalog pycdlib wrote;
* drivebay formats FAT12 diskettes of every standard size; pyfatfs mounts
  them, finds them empty with every cluster free, writes files and a
  directory, and drivebay reads a file pyfatfs wrote back through the
  floppy driver (with the directory and FAT walked here from the spec).
"""

import io
import random
import struct

import pycdlib
import pytest
from pyfatfs import PyFATException
from pyfatfs.PyFatFS import PyFatFS

from drivebay.block import drivers
from drivebay.block.floppy import FloppyDriver
from drivebay.block.iso import IsoDriver

STANDARD_FLOPPIES = [368640, 737280, 1228800, 1474560, 2949120]


def pattern(n, seed):
    return random.Random(seed).randbytes(n)


# -- ISO 9660 made by pycdlib --------------------------------------------------------------------

FILES = {
    "/README.TXT;1": pattern(100, 1),
    "/DATA/BIG.BIN;1": pattern(300_000, 2),
    "/DATA/EMPTY.DAT;1": b"",
    "/BOOT/BOOT.IMG;1": pattern(4 * 2048, 3),
}


def make_iso(path, joliet=3, rock_ridge="1.09", boot=True, level=3):
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=level, sys_ident="DRIVEBAY-SYS", vol_ident="DRIVEBAY_VOL",
            pub_ident_str="DRIVEBAY PUBLISHER", preparer_ident_str="PREPARER",
            joliet=joliet, rock_ridge=rock_ridge)
    for d in ("/DATA", "/BOOT"):
        iso.add_directory(d, rr_name=d[1:].lower() if rock_ridge else None,
                          joliet_path=d.lower() if joliet else None)
    for name, data in FILES.items():
        plain = name.split(";")[0]
        iso.add_fp(io.BytesIO(data), len(data), name,
                   rr_name=plain.rsplit("/", 1)[1].lower() if rock_ridge else None,
                   joliet_path=plain.lower() if joliet else None)
    if boot:
        iso.add_eltorito("/BOOT/BOOT.IMG;1", "/BOOT/BOOT.CAT;1",
                         joliet_bootcatfile="/boot/boot.cat" if joliet else None,
                         rr_bootcatname="boot.cat" if rock_ridge else None,
                         media_name="noemul", boot_load_size=4)
    iso.write(str(path))
    iso.close()
    reference = pycdlib.PyCdlib()
    reference.open(str(path))
    return reference


def test_pycdlib_iso_reads_byte_for_byte(tmp_path):
    path = tmp_path / "disc.iso"
    ref = make_iso(path)
    try:
        content = path.read_bytes()
        assert drivers.probe(path) is IsoDriver
        with IsoDriver.open(path) as im:
            assert im.size == len(content) == ref.pvd.space_size * 2048
            assert im.read(0, im.size) == content
            for name, data in FILES.items():
                extents = ref.get_file_byte_extents(iso_path=name)
                got = b"".join(im.read(offset, length) for offset, length in extents)
                assert got == data, name
            info = im.info()
            assert im.check().clean
        bc = ref.eltorito_boot_catalog
        assert info["system_id"] == ref.pvd.system_identifier.decode().rstrip() == "DRIVEBAY-SYS"
        assert info["volume_id"] == ref.pvd.volume_identifier.decode().rstrip() == "DRIVEBAY_VOL"
        assert info["publisher_id"] == "DRIVEBAY PUBLISHER"
        assert info["preparer_id"] == "PREPARER"
        assert info["application_id"] == ref.pvd.application_identifier.text.decode().rstrip()
        assert info["volume_space_size"] == ref.pvd.space_size
        assert info["logical_block_size"] == ref.pvd.log_block_size == 2048
        assert info["joliet"]["level"] == 3 and info["joliet"]["volume_id"] == "DRIVEBAY_VOL"
        assert info["descriptors"] == ["primary", "boot record", "supplementary"]
        assert info["el_torito"] == {
            "boot_catalog": bc.extent_location(), "valid": True, "platform": "80x86",
            "id_string": bc.validation_entry.id_string.rstrip(b"\0").decode(),
            "bootable": bc.initial_entry.boot_indicator == 0x88, "media": "no emulation",
            "load_segment": 0x7C0, "sector_count": bc.initial_entry.sector_count,
            "load_rba": bc.initial_entry.load_rba}
        boot_extent = ref.get_file_byte_extents(iso_path="/BOOT/BOOT.IMG;1")[0][0]
        assert info["el_torito"]["load_rba"] * 2048 == boot_extent
        assert info["created"] is not None and info["created"][:2] in ("19", "20")
    finally:
        ref.close()


def test_plain_level_one_iso(tmp_path):
    path = tmp_path / "plain.iso"
    ref = make_iso(path, joliet=None, rock_ridge=None, boot=False, level=1)
    try:
        with IsoDriver.open(path) as im:
            info = im.info()
            assert im.read(0, im.size) == path.read_bytes()
        assert info["descriptors"] == ["primary"]
        assert info["joliet"] is None and info["el_torito"] is None
        assert info["volume_space_size"] == ref.pvd.space_size
    finally:
        ref.close()


def test_el_torito_floppy_emulation_with_a_drivebay_diskette(tmp_path):
    """A 1.44M FAT12 diskette formatted here is the ISO's boot image."""
    floppy = tmp_path / "boot.img"
    FloppyDriver.create(floppy, 1474560, "fat12", label="BOOTDISK")
    image = floppy.read_bytes()
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1)
    iso.add_fp(io.BytesIO(image), len(image), "/BOOT.IMG;1")
    iso.add_eltorito("/BOOT.IMG;1", "/BOOT.CAT;1", media_name="floppy")
    path = tmp_path / "floppyboot.iso"
    iso.write(str(path))
    iso.close()
    with IsoDriver.open(path) as im:
        el = im.info()["el_torito"]
        assert el["media"] == "1.44M diskette" and el["bootable"] and el["valid"]
        assert im.read(el["load_rba"] * 2048, len(image)) == image


# -- FAT12 diskettes read by pyfatfs --------------------------------------------------------------

def read_file_via_driver(image, name):
    """A root-directory file's content through the floppy driver, following the
    boot sector, root directory and FAT12 chain as the FAT specification lays
    them out."""
    boot = image.read(0, 512)
    bps, spc, rsvd, nfats, root_entries = struct.unpack_from("<HBHBH", boot, 11)
    fatsz = struct.unpack_from("<H", boot, 22)[0]
    fat = image.read(rsvd * bps, fatsz * bps)
    root_at = (rsvd + nfats * fatsz) * bps
    root = image.read(root_at, root_entries * 32)
    data_at = root_at + -(-root_entries * 32 // bps) * bps
    for i in range(0, len(root), 32):
        entry = root[i:i + 32]
        if entry[0] == 0:
            break
        if entry[0] == 0xE5 or entry[11] & 0x08 or entry[11] == 0x0F:
            continue
        if entry[:11] != name:
            continue
        cluster = struct.unpack_from("<H", entry, 26)[0]          # DIR_FstClusLO
        size = struct.unpack_from("<I", entry, 28)[0]             # DIR_FileSize
        out = bytearray()
        while 2 <= cluster < 0xFF8:
            out += image.read(data_at + (cluster - 2) * spc * bps, spc * bps)
            pair = struct.unpack_from("<H", fat, cluster * 3 // 2)[0]
            cluster = pair >> 4 if cluster & 1 else pair & 0xFFF
        return bytes(out[:size])
    raise AssertionError(f"{name!r} not in the root directory")


@pytest.mark.parametrize("size", STANDARD_FLOPPIES, ids=lambda s: f"{s // 1024}K")
def test_pyfatfs_mounts_a_drivebay_diskette(tmp_path, size):
    path = tmp_path / "fat.img"
    FloppyDriver.create(path, size, "fat12", label="Drivebay", volume_id=0xCAFE0001)
    fs = PyFatFS(str(path), read_only=True)
    try:
        pf = fs.fs
        assert pf.fat_type == pf.FAT_TYPE_FAT12
        assert fs.listdir("/") == []
        bpb = pf.bpb_header
        assert bpb["BPB_BytsPerSec"] == 512 and bpb["BPB_NumFATs"] == 2
        assert bpb["BPB_TotSec16"] * 512 == size
        clusters = pf.calc_num_clusters()
        assert clusters < 4085
        assert all(pf.fat[c] == 0 for c in range(2, clusters + 2))       # every cluster free
        labels = [e for e in pf.root_dir._get_entries_raw() if e.is_volume_id()]
        assert [bytes(e.name).rstrip() for e in labels] == [b"DRIVEBAY"]
    finally:
        fs.close()
    data = pattern(size // 3, size)
    fs = PyFatFS(str(path))
    try:
        with fs.openbin("/PAYLOAD.BIN", "w") as f:
            f.write(data)
        fs.makedir("/SUBDIR")
        with fs.openbin("/SUBDIR/NOTE.TXT", "w") as f:
            f.write(b"written by pyfatfs\r\n")
    finally:
        fs.close()
    fs = PyFatFS(str(path), read_only=True)
    try:
        assert sorted(fs.listdir("/")) == ["PAYLOAD.BIN", "SUBDIR"]
        assert fs.readbytes("/PAYLOAD.BIN") == data
        assert fs.readbytes("/SUBDIR/NOTE.TXT") == b"written by pyfatfs\r\n"
    finally:
        fs.close()
    with FloppyDriver.open(path) as image:
        assert read_file_via_driver(image, b"PAYLOAD BIN") == data
        assert image.info()["fat_label"] == "DRIVEBAY"


def test_pyfatfs_refuses_a_blank_diskette(tmp_path):
    path = tmp_path / "blank.img"
    FloppyDriver.create(path, 1474560, "blank")
    with pytest.raises(PyFATException, match="Is this a FAT partition"):
        PyFatFS(str(path), read_only=True)

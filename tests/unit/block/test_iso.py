"""ISO driver: descriptors built here byte by byte at ECMA-119's positions
(8.4, counted from 1 in the standard, from 0 here) and El Torito's, then
read through the driver; read-only behaviour; bad input.

pycdlib-made images are in tests/differential/test_iso_floppy_readers.py.
"""

import struct

import pytest

from drivebay.block import drivers
from drivebay.block.driver import State
from drivebay.block.iso import IsoDriver
from drivebay.errors import CorruptImageError, FormatError, UnsupportedFeatureError, \
    UnsupportedOperation

SECTOR = 2048


def both16(v):
    return struct.pack("<H", v) + struct.pack(">H", v)


def both32(v):
    return struct.pack("<I", v) + struct.pack(">I", v)


def descriptor(kind, version=1, ident=b"CD001"):
    d = bytearray(SECTOR)
    d[0] = kind
    d[1:6] = ident
    d[6] = version
    return d


def primary(blocks, system=b"LINUX", volume=b"MY_DISC", block_size=2048, created=None):
    d = descriptor(1)
    d[8:40] = system.ljust(32, b" ")                 # System Identifier, BP 9-40
    d[40:72] = volume.ljust(32, b" ")                # Volume Identifier, BP 41-72
    d[80:88] = both32(blocks)                        # Volume Space Size, BP 81-88
    d[120:124] = both16(1)                           # Volume Set Size
    d[124:128] = both16(1)                           # Volume Sequence Number
    d[128:132] = both16(block_size)                  # Logical Block Size, BP 129-132
    d[190:318] = b"SET".ljust(128, b" ")             # Volume Set Identifier
    d[318:446] = b"PUBLISHER".ljust(128, b" ")
    d[446:574] = b"PREPARER".ljust(128, b" ")
    d[574:702] = b"APP".ljust(128, b" ")
    d[813:830] = created or (b"0" * 16 + b"\0")      # Volume Creation Date and Time
    d[830:847] = b"0" * 16 + b"\0"
    d[881] = 1                                       # File Structure Version
    return d


def joliet(volume="Wide Name", level_escape=b"%/E"):
    d = descriptor(2)
    d[40:72] = volume.encode("utf-16-be").ljust(32, b"\0")
    d[88:91] = level_escape                          # Escape Sequences, BP 89-120
    return d


def boot_record(catalog_sector):
    d = descriptor(0)
    d[7:39] = b"EL TORITO SPECIFICATION".ljust(32, b"\0")
    d[71:75] = struct.pack("<I", catalog_sector)     # boot catalog pointer, offset 0x47
    return d


def catalog(platform=0, bootable=True, media=0, count=4, rba=40, checksum_ok=True):
    val = bytearray(32)
    val[0], val[1] = 1, platform
    val[4:28] = b"DRIVEBAY".ljust(24, b"\0")
    val[30:32] = b"\x55\xAA"
    words = sum(struct.unpack("<16H", bytes(val)))
    val[28:30] = struct.pack("<H", (-words) & 0xFFFF if checksum_ok else 1)
    ini = bytearray(32)
    ini[0] = 0x88 if bootable else 0
    ini[1] = media
    ini[6:8] = struct.pack("<H", count)
    ini[8:12] = struct.pack("<I", rba)
    return bytes(val + ini).ljust(SECTOR, b"\0")


def iso(tmp_path, *descs, blocks=None, extra=b"", name="disc.iso", sectors_after=4,
        terminator=True):
    body = bytearray(16 * SECTOR)                    # the System Area
    for d in descs:
        body += d
    if terminator:
        body += descriptor(255)
    body += bytes(sectors_after * SECTOR) + extra
    path = tmp_path / name
    path.write_bytes(body)
    return path


def simple(tmp_path, **kw):
    blocks = 16 + 2 + 4
    return iso(tmp_path, primary(blocks, **kw))


# -- reading ---------------------------------------------------------------------------------

def test_info_from_the_primary_volume_descriptor(tmp_path):
    created = b"2024033112345678" + bytes([8])       # +02:00 (8 x 15 minutes)
    path = iso(tmp_path, primary(22, created=created))
    with IsoDriver.open(path) as im:
        info = im.info()
        assert im.size == 22 * SECTOR and im.sector_size == 2048 and im.cluster_size == 2048
        assert im.uuid is None and im.variant == "iso9660"
    assert info["system_id"] == "LINUX" and info["volume_id"] == "MY_DISC"
    assert info["volume_set_id"] == "SET" and info["publisher_id"] == "PUBLISHER"
    assert info["preparer_id"] == "PREPARER" and info["application_id"] == "APP"
    assert info["volume_space_size"] == 22 and info["logical_block_size"] == 2048
    assert info["volume_bytes"] == 22 * 2048
    assert info["created"] == "2024-03-31T12:34:56.78+02:00" and info["modified"] is None
    assert info["descriptors"] == ["primary"]
    assert info["joliet"] is None and info["el_torito"] is None
    assert "problems" not in info


def test_joliet_and_el_torito(tmp_path):
    path = iso(tmp_path, primary(30), boot_record(25), joliet("Drive Bay"),
               sectors_after=12)
    with open(path, "r+b") as f:
        f.seek(25 * SECTOR)
        f.write(catalog(platform=0xEF, media=2, count=1, rba=26))
    with IsoDriver.open(path) as im:
        info = im.info()
    assert info["descriptors"] == ["primary", "boot record", "supplementary"]
    assert info["joliet"] == {"level": 3, "volume_id": "Drive Bay"}
    assert info["el_torito"] == {"boot_catalog": 25, "valid": True, "platform": "EFI",
                                 "id_string": "DRIVEBAY", "bootable": True,
                                 "media": "1.44M diskette", "load_segment": 0x7C0,
                                 "sector_count": 1, "load_rba": 26}


def test_a_bad_boot_catalog_is_reported(tmp_path):
    path = iso(tmp_path, primary(30), boot_record(25), sectors_after=12)
    with open(path, "r+b") as f:
        f.seek(25 * SECTOR)
        f.write(catalog(checksum_ok=False))
    with IsoDriver.open(path) as im:
        assert im.info()["el_torito"] == {"boot_catalog": 25, "valid": False}
        assert "validation entry is invalid" in im.info()["problems"][0]


def test_reads_the_file_byte_for_byte_and_pads_the_last_sector(tmp_path):
    path = iso(tmp_path, primary(22), extra=b"\x01" * 1000)
    content = path.read_bytes()
    with IsoDriver.open(path) as im:
        assert im.size == 23 * SECTOR                # 1000 bytes round up to a sector
        assert im.read(0, len(content)) == content
        assert im.read(22 * SECTOR, SECTOR) == b"\x01" * 1000 + bytes(SECTOR - 1000)
        assert im.block_status(0, im.size) == [(0, len(content), State.DATA, 0),
                                               (len(content), 23 * SECTOR - len(content),
                                                State.ZERO, None)]
        assert im.check().clean


def test_read_only(tmp_path):
    path = simple(tmp_path)
    with pytest.raises(UnsupportedOperation, match="read-only"):
        IsoDriver.open(path, writable=True)
    with IsoDriver.open(path) as im:
        with pytest.raises(UnsupportedOperation):
            im.write(0, b"x")
        with pytest.raises(UnsupportedOperation):
            im.resize(10 * SECTOR)
    with pytest.raises(UnsupportedOperation):
        IsoDriver.create(tmp_path / "new.iso", 10 * SECTOR)
    assert IsoDriver.read_only_format and not IsoDriver.create_variants


def test_probe(tmp_path):
    path = simple(tmp_path)
    assert IsoDriver.probe(path.read_bytes()[:65536], b"", path.stat().st_size) == 80
    assert drivers.probe(path) is IsoDriver
    assert IsoDriver.probe(bytes(65536), b"", 65536) == 0
    # an ISO exactly the size of a 1.44M diskette is still an ISO
    floppy_sized = iso(tmp_path, primary(720), name="f.iso",
                       sectors_after=720 - 18)
    assert floppy_sized.stat().st_size == 1474560
    assert drivers.probe(floppy_sized) is IsoDriver


# -- bad input -------------------------------------------------------------------------------

def test_truncated_volume_is_reported(tmp_path):
    path = iso(tmp_path, primary(1000))
    with IsoDriver.open(path) as im:
        report = im.check()
    assert report.exit_code == 2 and "is truncated" in report.errors[0]


def test_byte_order_mismatch_is_reported(tmp_path):
    d = primary(22)
    d[84:88] = struct.pack(">I", 23)
    with IsoDriver.open(iso(tmp_path, d)) as im:
        assert im.info()["volume_space_size"] == 22
        assert im.info()["problems"] == [
            "field volume_space_size is 22 little-endian but 23 big-endian"]


@pytest.mark.parametrize("make,error,match", [
    (lambda t: t / "empty.iso", FormatError, "0 bytes, too short for a volume descriptor"),
    (lambda t: iso(t, descriptor(1, ident=b"CD002")), FormatError,
     "standard_identifier at 0x8001 is b'CD002'"),
    (lambda t: iso(t, primary(22), terminator=False, sectors_after=0), CorruptImageError,
     "no terminator before the end of the file"),
    (lambda t: iso(t, primary(22), descriptor(1, ident=b"BEA01")), CorruptImageError,
     "sector 17 has standard_identifier b'BEA01'"),
    (lambda t: iso(t, joliet()), FormatError, "no primary volume descriptor"),
    (lambda t: iso(t, *[joliet()] * 70), CorruptImageError, "first 64 descriptors"),
    (lambda t: iso(t, descriptor(1, version=2)), UnsupportedFeatureError,
     "volume_descriptor_version is 2; expected 1"),
    (lambda t: iso(t, primary(22, block_size=4096)), CorruptImageError,
     "logical_block_size is 4096"),
    (lambda t: iso(t, primary(22, block_size=0)), CorruptImageError, "logical_block_size is 0"),
])
def test_bad_input_is_a_clear_error(tmp_path, make, error, match):
    path = make(tmp_path)
    if not path.exists():
        path.write_bytes(b"")
    with pytest.raises(error, match=match) as exc:
        IsoDriver.open(path)
    assert str(path) in str(exc.value)


def test_boot_catalog_past_the_end(tmp_path):
    path = iso(tmp_path, primary(22), boot_record(5000))
    with IsoDriver.open(path) as im:
        assert im.info()["el_torito"]["valid"] is False
        assert "past the end of the file" in im.info()["problems"][0]

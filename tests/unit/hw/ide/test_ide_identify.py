"""IDENTIFY DEVICE / IDENTIFY PACKET DEVICE through the primary channel's ports.

Word numbers and values are ACS-3 Table 45's, written out here.
"""

import uuid

import pytest

from idebench import ABRT, DRQ, ERR, PRIMARY, STATUS, IdeBench, disk

KNOWN_UUID = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")


def ata_text(words, first, count):
    raw = b"".join(w.to_bytes(2, "big") for w in words[first:first + count])
    return raw.decode("ascii")


def test_identify_device_words():
    b = IdeBench(drives={(0, 0): {"backend": disk(2048, uuid=KNOWN_UUID)}})
    w, raw = b.identify()
    assert w[0] == 0x0040
    # Default CHS (VirtualBox): 2048 // (16 * 63) = 2 cylinders, 16 heads, 63 sectors.
    assert (w[1], w[3], w[6]) == (2, 16, 63)
    # Serial: "VB" + RTUUID dwords 0 and 3; the first field is little-endian.
    assert ata_text(w, 10, 10) == "VB01234567-efcdab89 "
    assert w[10] == (ord("V") << 8 | ord("B"))
    assert ata_text(w, 23, 4) == "1.0     "
    assert ata_text(w, 27, 20) == "VBOX HARDDISK".ljust(40)
    assert w[47] == 0x8080                       # 80h, 128 sectors per DRQ block
    assert w[49] & 0x0300 == 0x0300              # LBA and DMA supported
    assert w[53] == 0x0007
    assert (w[54], w[55], w[56]) == (2, 16, 63)
    assert w[57] | w[58] << 16 == 2016
    assert w[59] == 0x0100 | 128
    assert w[60] | w[61] << 16 == 2048
    assert w[63] & 0x07 == 0x07                  # MWDMA 0-2
    assert w[64] == 0x0003                       # PIO 3-4
    assert w[65:69] == [120, 120, 120, 120]
    assert w[80] & 0x0070 == 0x0070              # ATA/ATAPI-4..6 at least
    assert w[82] & (1 << 14 | 1 << 5 | 1 << 3) == (1 << 14 | 1 << 5 | 1 << 3)
    assert w[82] & (1 << 4) == 0                 # not a PACKET device
    assert w[83] == 0x4000 | 1 << 13 | 1 << 12 | 1 << 10
    assert w[84] & 0xC000 == 0x4000
    assert w[85] & (1 << 5)                      # write cache enabled
    assert w[86] & (1 << 13 | 1 << 12 | 1 << 10) == (1 << 13 | 1 << 12 | 1 << 10)
    assert w[87] & 0xC000 == 0x4000
    assert w[88] == 0x007F | 1 << (8 + 5)        # UDMA 0-6, mode 5 selected
    assert w[93] & 0x6001 == 0x6001
    assert w[100] | w[101] << 16 | w[102] << 32 | w[103] << 48 == 2048
    assert w[106] == 0x4000
    assert w[169] == 0                           # no TRIM without discard
    assert w[217] == 0
    assert w[255] & 0xFF == 0xA5
    assert sum(raw) % 256 == 0


def test_identify_trim_and_non_rotational_words():
    b = IdeBench(drives={(0, 0): {"backend": disk(64, discard=True, non_rotational=True)}})
    w, raw = b.identify()
    assert w[169] & 1 == 1
    assert w[105] >= 1
    assert w[217] == 1
    assert sum(raw) % 256 == 0


def test_identify_drive_options_override_the_backend():
    b = IdeBench(drives={(0, 0): {"backend": disk(64), "discard": True, "non_rotational": True}})
    w, _ = b.identify()
    assert w[169] == 1 and w[217] == 1


def test_identify_serial_without_uuid_is_stable():
    a, _ = IdeBench(drives={(0, 0): {"backend": disk(64)}}).identify()
    b, _ = IdeBench(drives={(0, 0): {"backend": disk(64)}}).identify()
    assert a[10:20] == b[10:20]
    assert ata_text(a, 10, 10).startswith("VB")


class HugeMedium:
    """A 2 TiB medium IDENTIFY can describe without any data."""

    size = (1 << 32) * 512
    sector_size = 512
    read_only = False
    discard_enabled = False
    non_rotational = False
    uuid = KNOWN_UUID
    name = "huge"


def test_identify_large_disk_caps_lba28_and_chs():
    b = IdeBench(drives={(0, 0): {"backend": HugeMedium()}})
    w, _ = b.identify()
    assert w[60] | w[61] << 16 == 0x0FFFFFFF
    assert (w[1], w[3], w[6]) == (16383, 16, 63)
    assert w[100] | w[101] << 16 | w[102] << 32 | w[103] << 48 == 1 << 32


def test_identify_on_slave_reports_device_1_reset_result():
    b = IdeBench(drives={(0, 0): {"backend": disk(64)}, (0, 1): {"backend": disk(64)}})
    w0, _ = b.identify(unit=0)
    w1, _ = b.identify(unit=1)
    assert w0[93] & 0x00FF and not w0[93] & 0x1F00
    assert w1[93] & 0x0100 and not w1[93] & 0x00FF


def test_set_features_changes_identify(bench):
    b = bench
    b.issue(0xEF, features=0x82)               # disable volatile write cache
    assert not b.inb(PRIMARY + STATUS) & ERR
    b.issue(0xEF, features=0x03, count=0x22)   # MWDMA mode 2
    assert not b.inb(PRIMARY + STATUS) & ERR
    w, _ = b.identify()
    assert not w[85] & (1 << 5) and w[82] & (1 << 5)
    assert w[63] & 0x0700 == 0x0400
    assert w[88] & 0x7F00 == 0
    b.issue(0xEF, features=0x03, count=0x46)   # UDMA mode 6
    w, _ = b.identify()
    assert w[88] & 0x7F00 == 0x4000 and w[63] & 0x0700 == 0
    b.issue(0xEF, features=0x55)               # read look-ahead off
    w, _ = b.identify()
    assert not w[85] & (1 << 6)


@pytest.mark.parametrize("count", [0x47, 0x23, 0x0D, 0x10, 0x80])
def test_set_transfer_mode_unsupported_aborts(bench, count):
    bench.issue(0xEF, features=0x03, count=count)
    assert bench.inb(PRIMARY + STATUS) & ERR
    assert bench.inb(PRIMARY + 1) == ABRT


def test_set_features_unknown_subcommand_aborts(bench):
    bench.issue(0xEF, features=0x05)           # APM: not supported
    assert bench.inb(PRIMARY + STATUS) & ERR and bench.inb(PRIMARY + 1) == ABRT


def test_identify_by_dword_reads(bench):
    bench.issue(0xEC)
    data = bench.read_dwords(512)
    assert not bench.inb(PRIMARY + STATUS) & DRQ
    assert data[20:22] == b"BV"               # byte-swapped "VB"
    assert sum(data) % 256 == 0

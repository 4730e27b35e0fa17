"""The IDE guest programs (firmware/tests/ide.c, atapi.c) on drivebay and QEMU.

Each run gets its own images, made here with the pattern the programs check:
every sector holds its LBA as a little-endian u32, repeated (512-byte
sectors on the disk, 2048-byte ones on the CD).  The disk program also
writes: afterwards the image must hold exactly its writes (lib/ata.h's
ata_written_word, the LBA ranges of ide.c) and the pattern everywhere else;
the CD image must be unchanged.

Identity is the one thing allowed to differ: QEMU's drives are "QEMU
HARDDISK"/"QEMU DVD-ROM", drivebay's "VBOX HARDDISK"/"VBOX CD-ROM", so each
emulator's command line carries its own expected model and nothing else
differs.  The two outcomes must then agree test by test (harness.compare).

QEMU's reference is always the IDE of its pc board, a PIIX3 at 00:01.1: a
PIIX4 or ICH6 IDE added beside it would fight it for the legacy ports (and
QEMU adds a default CD drive there), which made that comparison flaky.
drivebay runs every IDE variant it models; the PCI ID is identity, reported
rather than compared.
"""

import struct

import pytest

from drivebay.boot.firmware import guest_program
from harness import compare, run_drivebay, run_qemu

DISK_SECTORS = 131072            # 64 MiB
DISK_SECTOR = 512
CD_SECTORS = 2000                # ~3.9 MiB
CD_SECTOR = 2048

MODELS = {
    "qemu": {"hdd": "QEMU_HARDDISK", "dvddrive": "QEMU_DVD-ROM"},
    "drivebay": {"hdd": "VBOX_HARDDISK", "dvddrive": "VBOX_CD-ROM"},
}
# drivebay's IDE variants, each compared with QEMU's board IDE.
CONTROLLERS = ["piix3-ide", "piix4-ide", "ich6-ide"]
QEMU_CONTROLLER = "piix3-ide"

# ide.c's writes: (first LBA, sectors, tag); written word i of sector lba is
# (tag << 24) ^ (i << 16) ^ lba.
DISK_WRITES = [(4096, 8, 0xA1), (4104, 8, 0xA2), (4200, 20, 0xA3), (4220, 12, 0xA4),
               (8192, 64, 0xA5), (12288, 32, 0xA6)]

RUNNERS = {"qemu": run_qemu, "drivebay": run_drivebay}
DRIVEBAY_TIMEOUT_S = 300.0


def pattern_sector(lba, size):
    return struct.pack("<I", lba) * (size // 4)


def written_sector(lba, tag, size=DISK_SECTOR):
    words = size // 4
    return struct.pack(f"<{words}I", *(((tag << 24) ^ (i << 16) ^ lba) for i in range(words)))


def make_image(path, sectors, size):
    with open(path, "wb") as f:
        for first in range(0, sectors, 4096):
            last = min(first + 4096, sectors)
            f.write(b"".join(pattern_sector(lba, size) for lba in range(first, last)))


def disk_after_run():
    """The bytes the disk image must hold once ide.c has run."""
    sectors = [pattern_sector(lba, DISK_SECTOR) for lba in range(DISK_SECTORS)]
    for first, count, tag in DISK_WRITES:
        for lba in range(first, first + count):
            sectors[lba] = written_sector(lba, tag)
    return b"".join(sectors)


def first_difference(path, expected, size):
    data = path.read_bytes()
    if len(data) != len(expected):
        return f"{path.name}: {len(data)} bytes, expected {len(expected)}"
    if data == expected:
        return None
    at = next(i for i in range(len(data)) if data[i] != expected[i])
    return (f"{path.name}: sector {at // size} offset {at % size}: "
            f"{data[at:at + 8].hex()} expected {expected[at:at + 8].hex()}")


def identity(outcome):
    """The diagnostic lines that name the hardware (reported, never compared)."""
    keys = ("ide controller", "model ", "inquiry:")
    return [line for line in outcome.output.splitlines()
            if line.startswith("# ") and any(k in line for k in keys)]


def run_on(emulator, program, controller, drives, model_kind, cmdline):
    """Run `program` on one emulator with the drives `drives(emulator)` makes,
    telling it that emulator's model."""
    line = f"{cmdline} model={MODELS[emulator][model_kind]}"
    if emulator == "qemu":
        controller = QEMU_CONTROLLER
    kwargs = {"timeout_s": DRIVEBAY_TIMEOUT_S} if emulator == "drivebay" else {}
    outcome = RUNNERS[emulator](guest_program(program), cmdline=line,
                                devices=[(controller, {"drives": drives(emulator)})], **kwargs)
    print(f"{emulator}: " + " | ".join(identity(outcome)))
    return outcome


@pytest.mark.parametrize("controller", CONTROLLERS)
def test_ide_disk_program(controller, tmp_path):
    def drives(emulator):
        path = tmp_path / f"{emulator}-disk.img"
        make_image(path, DISK_SECTORS, DISK_SECTOR)
        return {(0, 0): {"type": "hdd", "path": str(path)}}

    expected = disk_after_run()
    cmdline = f"sectors={DISK_SECTORS}"
    theirs = run_on("qemu", "ide", controller, drives, "hdd", cmdline)
    assert theirs.passed, f"QEMU:\n{theirs.output}"
    assert first_difference(tmp_path / "qemu-disk.img", expected, DISK_SECTOR) is None
    ours = run_on("drivebay", "ide", controller, drives, "hdd", cmdline)
    assert ours.passed, f"drivebay:\n{ours.output}"
    assert first_difference(tmp_path / "drivebay-disk.img", expected, DISK_SECTOR) is None
    assert compare(ours, theirs) == []


@pytest.mark.parametrize("controller", CONTROLLERS)
def test_atapi_cd_program(controller, tmp_path):
    def drives(emulator):
        path = tmp_path / f"{emulator}-cd.iso"
        make_image(path, CD_SECTORS, CD_SECTOR)
        return {(1, 0): {"type": "dvddrive", "path": str(path)}}

    expected = b"".join(pattern_sector(lba, CD_SECTOR) for lba in range(CD_SECTORS))
    cmdline = f"cdsectors={CD_SECTORS}"
    theirs = run_on("qemu", "atapi", controller, drives, "dvddrive", cmdline)
    assert theirs.passed, f"QEMU:\n{theirs.output}"
    assert first_difference(tmp_path / "qemu-cd.iso", expected, CD_SECTOR) is None
    ours = run_on("drivebay", "atapi", controller, drives, "dvddrive", cmdline)
    assert ours.passed, f"drivebay:\n{ours.output}"
    assert first_difference(tmp_path / "drivebay-cd.iso", expected, CD_SECTOR) is None
    assert compare(ours, theirs) == []


def test_image_pattern_matches_the_guest_library():
    # lib/ata.h: ata_written_word(lba, i, tag) = (tag << 24) ^ (i << 16) ^ lba
    sector = written_sector(4097, 0xA1)
    assert struct.unpack_from("<3I", sector) == (0xA1001001, 0xA1011001, 0xA1021001)
    assert pattern_sector(0x01020304, 512)[:8] == bytes([4, 3, 2, 1, 4, 3, 2, 1])

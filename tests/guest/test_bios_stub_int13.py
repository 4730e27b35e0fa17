"""INT 13h conformance: the same boot program (firmware/bios/tests/int13.c)
calls the disk services of drivebay's BIOS boot stub on drivebay and of
SeaBIOS on qemu-system-x86_64, from an IDE disk and from an AHCI disk, with
the same image; every check must pass on both, and the sectors it wrote
must be in both images afterwards.  The program also checks what else a
boot loader asks the BIOS: memory size (INT 12h), the memory map (INT 15h
E820h, E801h, 88h), waiting (INT 15h AH=86h) and time (INT 1Ah).
"""

import shutil
import struct
import subprocess

import pytest

from drivebay.boot.cpu import StopReason
from drivebay.boot.firmware import firmware_dir, stub
from drivebay.boot.machine import PcMachine
from harness import QEMU, QEMU_DEVICES, compare, parse_tap, qemu_available

DISK_SECTORS = 16384                  # int13.c: DISK_SECTORS, DATA_LBA
DATA_LBA = 64
WRITTEN = {DATA_LBA + 136: 3}         # int13.c's AH=43h write: LBA -> sectors


def disk_image(path):
    program = (firmware_dir() / "int13_test.bin").read_bytes()
    assert len(program) <= DATA_LBA * 512
    with open(path, "wb") as f:
        f.write(program + bytes(DATA_LBA * 512 - len(program)))
        for lba in range(DATA_LBA, DISK_SECTORS):
            f.write(struct.pack("<I", lba) * 128)
    return path


def written_word(lba, i):
    return 0xA5000000 ^ (i << 16) ^ lba


def check_written(path):
    data = path.read_bytes()
    for lba, count in WRITTEN.items():
        for s in range(lba, lba + count):
            words = struct.unpack_from("<128I", data, s * 512)
            assert words == tuple(written_word(s, i) for i in range(128)), f"{path}: LBA {s}"
    assert struct.unpack_from("<I", data, (DATA_LBA + 139) * 512)[0] == DATA_LBA + 139


CONTROLLERS = {
    "ide": ("piix3-ide", lambda path: {"drives": {(0, 0): {"type": "hdd", "path": str(path)}}}),
    "ahci": ("ahci", lambda path: {"drives": {0: {"type": "hdd", "path": str(path)}}}),
}


def run_stub(name, options, timeout_s=60):
    serial = bytearray()
    with PcMachine(memory_mb=64, serial_out=serial.extend) as machine:
        machine.add_device(name, **options)
        machine.load_bios(stub())
        result = machine.run(timeout_s=timeout_s)
    status = result.exit_code if result.reason == StopReason.EXIT else None
    return parse_tap("drivebay+stub", status, serial.decode("latin-1") + f"\n# run ended: {result}")


def run_seabios_on_qemu(name, options, timeout_s=120):
    # graphics=off: no VGA, so SeaBIOS sends its INT 10h output to the serial port.
    cmd = [QEMU, "-machine", "pc,graphics=off", "-nodefaults", "-m", "64", "-serial", "stdio",
           "-display", "none", "-monitor", "none", "-no-reboot", "-accel", "tcg",
           "-device", "isa-debug-exit,iobase=0x501,iosize=2", "-boot", "order=c"]
    cmd += QEMU_DEVICES[name](options)
    done = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
    status = done.returncode >> 1 if done.returncode & 1 else None
    return parse_tap("qemu+seabios", status, done.stdout.decode("latin-1"))


@pytest.mark.parametrize("controller", sorted(CONTROLLERS))
def test_int13_on_the_stub(tmp_path, controller):
    name, options = CONTROLLERS[controller]
    path = disk_image(tmp_path / "disk.img")
    outcome = run_stub(name, options(path))
    assert outcome.passed, outcome.output[-3000:]
    assert outcome.plan == 37
    check_written(path)


@pytest.mark.skipif(not qemu_available(), reason="qemu-system-x86_64 is not installed")
@pytest.mark.parametrize("controller", sorted(CONTROLLERS))
def test_int13_stub_and_seabios_agree(tmp_path, controller):
    name, options = CONTROLLERS[controller]
    ours = disk_image(tmp_path / "ours.img")
    theirs = tmp_path / "seabios.img"
    shutil.copy(ours, theirs)
    a = run_stub(name, options(ours))
    b = run_seabios_on_qemu(name, options(theirs))
    assert b.passed, b.output[-3000:]
    assert compare(a, b) == [], a.output[-3000:]
    check_written(ours)
    check_written(theirs)

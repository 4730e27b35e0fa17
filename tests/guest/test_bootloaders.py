"""Real boot loaders nobody here wrote boot on drivebay's controllers.

The images come from Debian's own tools (tests/guest/bootimages.py):
SYSLINUX on a FAT16 partition behind syslinux's MBR, and an ISOLINUX El
Torito CD made with xorriso.  Each must bring its loader up to the banner
and the ``boot:`` prompt on COM1:

- on drivebay, under each firmware that exists (Debian's unmodified
  SeaBIOS, and drivebay's own BIOS stub), from the IDE disk or CD drive of
  the PIIX3 and from a port of the AHCI HBA; the run stops as soon as the
  prompt is out;
- through the command line, a VM made with the ``vm`` commands and
  started with ``drivebay vm start VM --firmware F --timeout N``;
- on qemu-system-x86_64 with the same SeaBIOS, which must print the same
  banner line: the images themselves are good.
"""

import re
import shutil
import subprocess
import time

import pytest

import bootimages
from drivebay.boot import firmware
from drivebay.boot.cpu import StopReason
from drivebay.boot.machine import PcMachine
from drivebay.system.cli import main
from harness import QEMU, QEMU_DEVICES

# Virtual seconds a boot may take.  The loaders are up well within 12 s on
# every firmware and controller; virtual time follows the host's while the
# guest runs, so the margin is for a loaded CI machine.
BOOT_BUDGET_S = 120
QEMU_WALL_S = 60

# Every firmware that exists: drivebay's stub joins once boot/firmware.py has it.
FIRMWARES = [name for name in ("seabios", "stub") if hasattr(firmware, name)]

# (image kind, controller): where the drive goes on each controller.
PLACES = {
    ("syslinux", "piix3-ide"): (0, 0),       # primary master
    ("syslinux", "ahci"): 0,
    ("isolinux", "piix3-ide"): (1, 0),       # secondary master, as on a PC
    ("isolinux", "ahci"): 1,
}
MEDIA = {"syslinux": "hdd", "isolinux": "dvddrive"}
# The banner line a loader prints once its console is the serial port.
BANNER_LINE = re.compile(rb"(?:SYS|ISO)LINUX 6\.04 \d{8} +Copyright \(C\) [^\r\n]*")


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bootimages")
    return lambda kind: bootimages.BUILDERS[kind](folder)


def drives_for(kind, controller, path):
    return {PLACES[kind, controller]: {"type": MEDIA[kind], "path": str(path)}}


def boot_on_drivebay(kind, controller, fw, path):
    serial = bytearray()
    options = {"ports": 2} if controller == "ahci" else {}
    with PcMachine(memory_mb=64, serial_out=serial.extend) as machine:
        machine.add_device(controller, drives=drives_for(kind, controller, path), **options)
        machine.load_bios(getattr(firmware, fw)())
        result = machine.run(timeout_s=BOOT_BUDGET_S,
                             should_stop=lambda: bootimages.booted(kind, bytes(serial)))
    return result, bytes(serial)


def banner_lines(text):
    return {m.group(0).rstrip() for m in BANNER_LINE.finditer(text)}


@pytest.fixture(scope="session")
def qemu_banner(images):
    """The banner line each image prints on QEMU (its board IDE, same SeaBIOS)."""
    seen = {}

    def banner(kind):
        if kind not in seen:
            seen[kind] = boot_on_qemu(kind, "piix3-ide", images(kind))
        return seen[kind]
    return banner


def boot_on_qemu(kind, controller, path):
    args = [QEMU, "-nodefaults", "-display", "none", "-machine", "pc", "-m", "64",
            "-bios", str(firmware.seabios()), "-serial", "stdio", "-boot", "order=cd",
            *QEMU_DEVICES[controller]({"drives": drives_for(kind, controller, path)})]
    out = bytearray()
    with subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as qemu:
        try:
            deadline = time.monotonic() + QEMU_WALL_S
            while not bootimages.booted(kind, bytes(out)) and time.monotonic() < deadline:
                chunk = qemu.stdout.read1(4096)
                if not chunk:
                    break
                out.extend(chunk)
        finally:
            qemu.kill()
    assert bootimages.booted(kind, bytes(out)), \
        f"{kind} image does not boot on QEMU either:\n{out.decode('latin-1')[-2000:]}"
    lines = banner_lines(bytes(out))
    assert len(lines) == 1, lines
    return lines.pop()


@pytest.mark.parametrize("fw", FIRMWARES)
@pytest.mark.parametrize("kind,controller", sorted(PLACES))
def test_loader_reaches_its_prompt(images, qemu_banner, kind, controller, fw):
    result, serial = boot_on_drivebay(kind, controller, fw, images(kind))
    text = serial.decode("latin-1")
    assert result.reason == StopReason.STOPPED, (result, text[-2000:])
    assert bootimages.booted(kind, serial), text[-2000:]
    # The same loader as on QEMU: its banner line, byte for byte.
    assert qemu_banner(kind) in banner_lines(serial), text[-2000:]
    # The prompt comes after the banner and nothing went wrong on the way.
    assert serial.rindex(b"boot:") > serial.index(qemu_banner(kind))
    for failure in (b"Boot error", b"Missing operating system", b"Operating system load",
                    b"No bootable device", b"Could not find"):
        assert failure not in serial, text[-2000:]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIVEBAY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.parametrize("fw", FIRMWARES)
def test_vm_start_shows_the_syslinux_prompt(images, qemu_banner, home, tmp_path, capsysbinary, fw):
    # A VM with VirtualBox's defaults for Ubuntu: its SATA controller gets
    # the SYSLINUX disk on port 0.  SYSLINUX then waits at its prompt, so
    # the run ends by --timeout, which is a success for a test runner.
    disk = tmp_path / "syslinux.img"
    shutil.copyfile(images("syslinux"), disk)
    assert main(["vm", "create", "--name", "sys", "--ostype", "Ubuntu_64", "--no-disk"]) == 0
    assert main(["storageattach", "sys", "--storagectl", "SATA", "--port", "0", "--device", "0",
                 "--type", "hdd", "--medium", str(disk)]) == 0
    capsysbinary.readouterr()
    assert main(["vm", "start", "sys", "--firmware", fw, "--timeout", "30"]) == 0
    captured = capsysbinary.readouterr()
    assert bootimages.booted("syslinux", captured.out), captured.out[-2000:]
    assert qemu_banner("syslinux") in banner_lines(captured.out)
    assert b"still running after 30.0 s" in captured.err

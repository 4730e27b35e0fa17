"""Real boot loaders nobody here wrote boot on drivebay's controllers.

The images come from Debian's own tools (tests/guest/bootimages.py):
SYSLINUX on a FAT16 partition behind syslinux's MBR, an ISOLINUX El Torito
CD made with xorriso, and a GRUB rescue CD (grub-mkrescue) whose grub.cfg
talks on the serial port.  Each must bring its loader up to its banner (and
SYSLINUX's ``boot:`` prompt, GRUB's menu) on COM1:

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

import pytest

import bootimages
from drivebay.boot import firmware
from drivebay.boot.cpu import StopReason
from drivebay.system.cli import main

# Virtual seconds a boot may take.  The loaders are up well within 12 s on
# every firmware and controller; virtual time follows the host's while the
# guest runs, so the margin is for a loaded CI machine.
BOOT_BUDGET_S = 120
QEMU_WALL_S = 60

# Every firmware that exists: drivebay's stub joins once boot/firmware.py has it.
FIRMWARES = [name for name in ("seabios", "stub") if hasattr(firmware, name)]

# Every loader from every controller under every firmware.
CASES = [(kind, controller, fw) for kind, controller in sorted(bootimages.PLACES)
         for fw in FIRMWARES]
# The banner line a loader prints once its console is the serial port.
BANNER_LINE = {
    "syslinux": re.compile(rb"SYSLINUX 6\.04 \d{8} +Copyright \(C\) [^\r\n]*"),
    "isolinux": re.compile(rb"ISOLINUX 6\.04 \d{8} +Copyright \(C\) [^\r\n]*"),
    "grub": re.compile(rb"GNU GRUB  version [0-9][^\s\x1b]*"),
}
FAILURES = (b"Boot error", b"Missing operating system", b"Operating system load",
            b"No bootable device", b"Could not find", b"error: ")


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bootimages")
    return lambda kind: bootimages.BUILDERS[kind](folder)


def banner_lines(kind, text):
    return {m.group(0).rstrip() for m in BANNER_LINE[kind].finditer(text)}


@pytest.fixture(scope="session")
def qemu_banner(images):
    """The banner line each image prints on QEMU (its board IDE, same SeaBIOS)."""
    seen = {}

    def banner(kind):
        if kind not in seen:
            seen[kind] = qemu_banner_line(kind, "piix3-ide", images(kind))
        return seen[kind]
    return banner


def qemu_banner_line(kind, controller, path):
    out = bootimages.boot_on_qemu(kind, controller, path, QEMU_WALL_S)
    assert bootimages.booted(kind, out), \
        f"{kind} image does not boot on QEMU either:\n{out.decode('latin-1')[-2000:]}"
    lines = banner_lines(kind, out)
    assert len(lines) == 1, lines
    return lines.pop()


@pytest.mark.parametrize("kind,controller,fw", CASES)
def test_loader_reaches_its_prompt(images, qemu_banner, kind, controller, fw):
    result, serial = bootimages.boot_on_drivebay(kind, controller, getattr(firmware, fw)(),
                                                 images(kind), BOOT_BUDGET_S)
    text = serial.decode("latin-1")
    assert result.reason == StopReason.STOPPED, (result, text[-2000:])
    assert bootimages.booted(kind, serial), text[-2000:]
    # The same loader as on QEMU: its banner line, byte for byte.
    assert qemu_banner(kind) in banner_lines(kind, serial), text[-2000:]
    # The banners came in order (bootimages.BANNERS) and nothing went wrong on the way.
    for failure in FAILURES:
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
    assert qemu_banner("syslinux") in banner_lines("syslinux", captured.out)
    assert b"still running after 30.0 s" in captured.err

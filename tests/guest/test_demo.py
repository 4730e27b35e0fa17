"""``drivebay demo`` end to end, as a user runs it, and its disk on QEMU.

The CLI runs in a subprocess with a fresh DRIVEBAY_HOME, under drivebay's
boot stub (the default) and under SeaBIOS: the first run makes the demo VM
(SATA/AHCI disk, IDE CD drive) and boots it, the second reuses it, so the
boot program's counter goes 1 -> 2, and ``--fresh`` starts again at 1.
Every line the program prints about drives, controllers and memory is
compared exactly: the PC is drivebay's, the BIOS a known one.  Then the same
disk, converted to raw by qemu-img, boots on qemu-system-x86_64 behind
QEMU's AHCI; QEMU's devices and memory map differ, so there the report's
shape is checked, and its boot count, which carries on from drivebay's runs."""

import os
import re
import subprocess
import sys

import pytest

from drivebay.system import demo

DRIVEBAY = [sys.executable, "-m", "drivebay.system.cli"]
QEMU = "qemu-system-x86_64"
BANNER = "drivebay demo: a boot program reports what it finds"


def report(stdout):
    """The boot program's lines: from its banner on, without CRs."""
    text = stdout.replace("\r", "")
    assert BANNER in text, stdout[-2000:]
    return text[text.index(BANNER):].splitlines()


def drivebay_demo(home, *args):
    env = dict(os.environ, DRIVEBAY_HOME=str(home))
    done = subprocess.run(DRIVEBAY + ["demo", *args], capture_output=True, text=True,
                          timeout=180, env=env)
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    return report(done.stdout)


# What the program sees on drivebay's PC with the demo VM (64 MiB, PIIX4 IDE
# at 01.1 with the CD, ICH8-M AHCI at 02.0 with the 64 MiB disk).  The BIOSes
# differ in their memory maps and in the EDD 3.0 device paths they give.
REPORT = """\
drivebay demo: a boot program reports what it finds
console: INT 10h (the BIOS sends it to COM1)
booted from drive 80h
memory: 639 KiB conventional (INT 12h); E820 map (INT 15h):
{e820}
hard disks: 1 (INT 13h AH=08h)
  80h (boot drive): 64 MiB, 131072 sectors of 512 bytes
      CHS 129/16/63 (AH=08h), 130032 sectors (AH=15h), EDD 3.0 (AH=41h)
      {disk_path}
CD/DVD drives (INT 13h E0h-E3h):
  E0h: 2048-byte sectors, EDD 3.0, ISO 9660 volume "DRIVEBAY_DEMO"
      {cd_path}
PCI storage controllers (configuration space, ports CF8h/CFCh):
  00:01.1 8086:7111 IDE controller, prog-if 80h
  00:02.0 8086:2829 SATA controller (AHCI), prog-if 01h
  2 of 4 PCI functions
boot count {count} (sector 64 written and read back)
done: exit status 0 to port 501h"""

BIOS_VIEW = {
    "seabios": {
        "e820": """\
  0000000000-000009fbff usable
  000009fc00-000009ffff reserved
  00000f0000-00000fffff reserved
  0000100000-0003ffefff usable
  0003fff000-0003ffffff reserved
  00fffc0000-00ffffffff reserved
  usable RAM: 65147 KiB""",
        # SeaBIOS fills only the EDD 2.x part (no device path) for AHCI and ATAPI.
        "disk_path": "no EDD 3.0 device path (AH=48h filled 26 bytes)",
        "cd_path": "no EDD 3.0 device path (AH=48h filled 30 bytes)"},
    "stub": {
        "e820": """\
  0000000000-000009fbff usable
  000009fc00-000009ffff reserved
  00000e0000-00000fffff reserved
  0000100000-0003efffff usable
  0003f00000-0003ffffff reserved
  00fec00000-00fec00fff reserved
  00fee00000-00fee00fff reserved
  00fffe0000-00ffffffff reserved
  usable RAM: 64127 KiB""",
        "disk_path": "SATA on PCI 00:02.0 channel 0, port 0 (AH=48h)",
        "cd_path": "ATAPI on PCI 00:01.1 channel 1, master (AH=48h)"},
}


def expected(bios, count):
    return REPORT.format(count=count, **BIOS_VIEW[bios]).splitlines()


def firmwares():
    """Each BIOS drivebay has boots the demo: its own boot stub (the default)
    and Debian's SeaBIOS (installed for the tests)."""
    return ["stub", "seabios"]


@pytest.mark.parametrize("bios", firmwares())
def test_drivebay_demo_reports_and_counts_boots(tmp_path, bios):
    home = tmp_path / "home"
    args = [] if bios == "stub" else ["--firmware", bios]     # the stub is the default
    for count in (1, 2):
        lines = drivebay_demo(home, *args)
        assert lines == expected(bios, count)
    disk = home / "machines" / demo.VM_NAME / f"{demo.VM_NAME}.vdi"
    assert demo.boot_count(str(disk)) == 2
    # --fresh: a new VM and disk, so the count starts again.
    lines = drivebay_demo(home, *args, "--fresh")
    assert lines == expected(bios, 1)


def qemu_report(raw, iso):
    done = subprocess.run(
        [QEMU, "-machine", "pc", "-m", "64", "-no-reboot", "-monitor", "none",
         "-drive", f"file={raw},if=none,id=d,format=raw",
         "-device", "ahci,id=a", "-device", "ide-hd,drive=d,bus=a.0",
         "-drive", f"file={iso},if=none,id=cd,format=raw,media=cdrom,readonly=on",
         "-device", "ide-cd,drive=cd,bus=ide.1,unit=0",
         "-device", "isa-debug-exit,iobase=0x501,iosize=2",
         "-serial", "stdio", "-display", "none"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr + done.stdout[-2000:]      # (0 << 1) | 1
    return report(done.stdout)


def test_the_demo_disk_boots_on_qemu(tmp_path):
    home = tmp_path / "home"
    drivebay_demo(home)
    drivebay_demo(home)
    folder = home / "machines" / demo.VM_NAME
    raw = tmp_path / "demo.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vdi", "-O", "raw",
                    str(folder / f"{demo.VM_NAME}.vdi"), str(raw)], check=True)
    lines = qemu_report(raw, folder / f"{demo.VM_NAME}.iso")
    text = "\n".join(lines)
    # QEMU's SeaBIOS shows INT 10h on its VGA screen: the program writes COM1 itself.
    assert lines[1:3] == ["console: INT 10h, and COM1 written directly", "booted from drive 80h"]
    assert re.search(r"^memory: 6\d\d KiB conventional \(INT 12h\); E820 map \(INT 15h\):\n"
                     r"(  [0-9a-f]{10}-[0-9a-f]{10} (usable|reserved|ACPI data|ACPI NVS)\n)+"
                     r"  usable RAM: \d+ KiB$", text, re.M), text
    # The disk is the same disk: its size and the program's counter carry over.
    assert "hard disks: 1 (INT 13h AH=08h)\n" \
           "  80h (boot drive): 64 MiB, 131072 sectors of 512 bytes\n" in text
    assert re.search(r'^  E0h: 2048-byte sectors, EDD \d\.\d, ISO 9660 volume "DRIVEBAY_DEMO"$',
                     text, re.M), text
    assert re.search(r"^  00:[0-9a-f]{2}\.[0-7] 8086:[0-9a-f]{4} SATA controller \(AHCI\), "
                     r"prog-if 01h$", text, re.M), text
    assert re.search(r"^  00:01\.1 8086:[0-9a-f]{4} IDE controller, prog-if [0-9A-F]{2}h$",
                     text, re.M), text
    assert lines[-2:] == ["boot count 3 (sector 64 written and read back)",
                          "done: exit status 0 to port 501h"]

"""Boot images made with real boot loaders nobody here wrote.

Each builder runs Debian's own tools (syslinux-common, isolinux, xorriso,
mtools, dosfstools, grub-pc-bin) and returns the path of a raw image whose
loader prints a known banner and prompt on COM1 at 115200 baud:

- ``syslinux_disk``: a hard disk with syslinux's MBR (mbr.bin) and one
  active FAT16 partition from LBA 2048 on which ``syslinux --install`` put
  ldlinux.sys/ldlinux.c32; syslinux.cfg says SERIAL 0 115200, PROMPT 1,
  TIMEOUT 0 and a DEFAULT label, so SYSLINUX prints its banner
  ("SYSLINUX 6.04 ...") and then ``boot:`` and waits.
- ``isolinux_cd``: an El Torito no-emulation ISO 9660 image made with
  ``xorriso -as mkisofs`` from isolinux.bin; ISOLINUX prints "ISOLINUX
  6.04 ..." and ``boot:``.
- ``grub_cd``: ``grub-mkrescue`` (i386-pc) with an embedded grub.cfg
  that sends GRUB's terminal to the serial port and prints a marker.

``BANNERS`` holds, per image kind, the bytes the console must show (in
order) once the loader is up; ``booted(kind, text)`` tells whether they
have.  Builders write into a folder the caller gives (the tests use one
session-wide tmp folder, so each image is made once per run).

``boot_on_drivebay`` and ``boot_on_qemu`` run an image until its loader is
up (tests/guest/test_bootloaders.py, bench/boot_time.py): the drive goes
where ``PLACES`` says on the PIIX3 IDE or an AHCI HBA, QEMU gets the same
drives through harness.QEMU_DEVICES and the same SeaBIOS.
"""

import pathlib
import shutil
import struct
import subprocess
import time

from drivebay.boot import firmware
from drivebay.boot.machine import PcMachine
from harness import QEMU, QEMU_DEVICES

SYSLINUX_MBR = pathlib.Path("/usr/lib/syslinux/mbr/mbr.bin")
ISOLINUX_BIN = pathlib.Path("/usr/lib/ISOLINUX/isolinux.bin")
LDLINUX_C32 = pathlib.Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
GRUB_I386_PC = pathlib.Path("/usr/lib/grub/i386-pc")

SECTOR = 512
DISK_MIB = 16                      # room for a FAT16 partition (FAT16 wants > 4 MiB)
PARTITION_START = 2048             # the 1 MiB alignment fdisk and parted use
MBR_PARTITION_TABLE = 446          # four 16-byte entries, then 55AA at 510
FAT16_LBA = 0x0E                   # partition type: FAT16 addressed by LBA

# Prompt and timeout: PROMPT 1 shows "boot:"; TIMEOUT 0 waits there for ever.
LOADER_CFG = """SERIAL 0 115200
PROMPT 1
TIMEOUT 0
DEFAULT drivebay
LABEL drivebay
  KERNEL /nonexistent
"""

GRUB_MARKER = "drivebay-grub-config-read"
GRUB_CFG = f"""serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
echo {GRUB_MARKER}
set timeout=-1
menuentry "drivebay-grub-entry" {{
  true
}}
"""

# What a booted loader has printed on COM1, in this order.
BANNERS = {
    "syslinux": (b"SYSLINUX 6.04", b"boot:"),
    "isolinux": (b"ISOLINUX 6.04", b"boot:"),
    "grub": (GRUB_MARKER.encode(), b"GNU GRUB  version", b"drivebay-grub-entry"),
}


def booted(kind, text):
    """True once ``text`` (bytes from COM1) shows the banners of ``kind`` in order."""
    at = 0
    for banner in BANNERS[kind]:
        at = text.find(banner, at)
        if at < 0:
            return False
        at += len(banner)
    return True


def _run(*argv, **kw):
    subprocess.run([str(a) for a in argv], check=True, capture_output=True, **kw)


def _mbr_entry(active, part_type, first_lba, sectors):
    # CHS fields hold the "beyond 1024 cylinders" marker FE FF FF: every
    # loader here uses the LBA fields (mbr.bin reads through EDD, AH=42h).
    chs = b"\xfe\xff\xff"
    return struct.pack("<B3sB3sII", 0x80 if active else 0, chs, part_type, chs,
                       first_lba, sectors)


def syslinux_disk(folder):
    """A 16 MiB raw disk booting SYSLINUX from an active FAT16 partition."""
    path = pathlib.Path(folder) / "syslinux.img"
    if path.exists():
        return path
    part = path.with_suffix(".part")
    sectors = DISK_MIB * 2048 - PARTITION_START
    with open(part, "wb") as f:
        f.truncate(sectors * SECTOR)
    # -h: hidden sectors = the partition's first LBA, which the FAT boot
    # sector of ldlinux uses to find itself on the whole disk.
    _run("mkfs.fat", "-F", "16", "-n", "DRIVEBAY", "-h", PARTITION_START, part)
    (part.parent / "syslinux.cfg").write_text(LOADER_CFG)
    _run("mcopy", "-i", part, part.parent / "syslinux.cfg", "::syslinux.cfg")
    _run("syslinux", "--install", part)
    disk = bytearray(PARTITION_START * SECTOR)
    mbr = SYSLINUX_MBR.read_bytes()
    disk[:len(mbr)] = mbr
    disk[MBR_PARTITION_TABLE:MBR_PARTITION_TABLE + 16] = _mbr_entry(True, FAT16_LBA,
                                                                  PARTITION_START, sectors)
    disk[510:512] = b"\x55\xaa"
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out, open(part, "rb") as src:
        out.write(disk)
        shutil.copyfileobj(src, out)
    part.unlink()
    tmp.rename(path)
    return path


def isolinux_cd(folder):
    """An El Torito no-emulation ISO booting ISOLINUX."""
    path = pathlib.Path(folder) / "isolinux.iso"
    if path.exists():
        return path
    tree = pathlib.Path(folder) / "isolinux-tree"
    (tree / "isolinux").mkdir(parents=True, exist_ok=True)
    shutil.copy(ISOLINUX_BIN, tree / "isolinux" / "isolinux.bin")
    shutil.copy(LDLINUX_C32, tree / "isolinux" / "ldlinux.c32")
    (tree / "isolinux" / "isolinux.cfg").write_text(LOADER_CFG)
    tmp = path.with_suffix(".tmp")
    _run("xorriso", "-as", "mkisofs", "-quiet", "-o", tmp, "-V", "DRIVEBAY",
         "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
         "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", tree)
    tmp.rename(path)
    return path


def grub_cd(folder):
    """A grub-mkrescue (i386-pc, El Torito) ISO whose grub.cfg talks on COM1."""
    path = pathlib.Path(folder) / "grub.iso"
    if path.exists():
        return path
    tree = pathlib.Path(folder) / "grub-tree"
    (tree / "boot" / "grub").mkdir(parents=True, exist_ok=True)
    (tree / "boot" / "grub" / "grub.cfg").write_text(GRUB_CFG)
    tmp = path.with_suffix(".tmp.iso")
    _run("grub-mkrescue", "--directory", GRUB_I386_PC, "--compress=no",
         "--install-modules=biosdisk iso9660 serial terminal echo normal configfile test true "
         + " ".join(p.stem for p in sorted(GRUB_I386_PC.glob("part_*.mod"))),
         "--locales=", "--fonts=", "--themes=", "-o", tmp, tree)
    tmp.rename(path)
    return path


BUILDERS = {"syslinux": syslinux_disk, "isolinux": isolinux_cd, "grub": grub_cd}

# (image kind, controller): where the drive goes.
PLACES = {
    ("syslinux", "piix3-ide"): (0, 0),       # primary master
    ("syslinux", "ahci"): 0,
    ("isolinux", "piix3-ide"): (1, 0),       # secondary master, as on a PC
    ("isolinux", "ahci"): 1,
    ("grub", "piix3-ide"): (1, 0),
    ("grub", "ahci"): 1,
}
MEDIA = {"syslinux": "hdd", "isolinux": "dvddrive", "grub": "dvddrive"}
AHCI_PORTS = 2


def drives_for(kind, controller, path):
    return {PLACES[kind, controller]: {"type": MEDIA[kind], "path": str(path)}}


def boot_on_drivebay(kind, controller, bios, path, budget_s):
    """Power on with the BIOS image ``bios`` and run until the loader is up
    or ``budget_s`` virtual seconds pass: (RunResult, console bytes)."""
    serial = bytearray()
    options = {"ports": AHCI_PORTS} if controller == "ahci" else {}
    with PcMachine(memory_mb=64, serial_out=serial.extend) as machine:
        machine.add_device(controller, drives=drives_for(kind, controller, path), **options)
        machine.load_bios(bios)
        result = machine.run(timeout_s=budget_s, should_stop=lambda: booted(kind, bytes(serial)))
    return result, bytes(serial)


def boot_on_qemu(kind, controller, path, wall_s):
    """Run qemu-system-x86_64 (TCG, Debian's SeaBIOS) until the loader is up or
    ``wall_s`` seconds pass; the console bytes, then QEMU is killed."""
    args = [QEMU, "-nodefaults", "-display", "none", "-machine", "pc,accel=tcg", "-m", "64",
            "-bios", str(firmware.seabios()), "-serial", "stdio", "-boot", "order=cd",
            *QEMU_DEVICES[controller]({"drives": drives_for(kind, controller, path)})]
    out = bytearray()
    with subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL) as qemu:
        try:
            deadline = time.monotonic() + wall_s
            while not booted(kind, bytes(out)) and time.monotonic() < deadline:
                chunk = qemu.stdout.read1(4096)
                if not chunk:
                    break
                out.extend(chunk)
        finally:
            qemu.kill()
    return bytes(out)

"""drivebay's own BIOS boot stub (firmware/bios/) boots from our controllers:
an MBR from an IDE disk and from an AHCI port, an El Torito (no emulation)
image from the IDE CD drive, in the CMOS boot order; with nothing bootable
it says so on the console and halts.

The boot code is test_seabios_boot's: it reads a known sector through the
BIOS's INT 13h AH=42h and reports through the exit port, so the same images
boot under SeaBIOS there and under the stub here.
"""

import io

import pycdlib
import pytest

from asm import assemble
from drivebay.boot.cpu import StopReason
from drivebay.boot.firmware import stub
from drivebay.boot.machine import PcMachine
from test_seabios_boot import GOOD, boot_code, mbr_disk

# The end of the boot programs below: BL (GOOD or the failed check's number)
# to the exit port, then halt.
REPORT_BL = """9:  movb %bl, %al
    movw $0x501, %dx
    outb %al, %dx
2:  hlt
    jmp 2b
"""


def run_stub(devices, timeout_s=30, boot_order="cad", memory_mb=64):
    serial = bytearray()
    with PcMachine(memory_mb=memory_mb, serial_out=serial.extend, boot_order=boot_order) as machine:
        for name, options in devices:
            machine.add_device(name, **options)
        machine.load_bios(stub())
        result = machine.run(timeout_s=timeout_s)
    return result, serial.decode("latin-1")


def el_torito_iso(path, code=None):
    """A no-emulation El Torito ISO whose boot image is ``code`` (default:
    read the primary volume descriptor, LBA 16, and check its signature)."""
    code = code or boot_code(16, b"\x01CD001")
    image = code + bytes(2048 - len(code))
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1)
    iso.add_fp(io.BytesIO(image), len(image), "/BOOT.IMG;1")
    iso.add_eltorito("/BOOT.IMG;1", bootcatfile="/BOOT.CAT;1", media_name="noemul",
                     boot_load_size=4)
    iso.write(str(path))
    iso.close()
    return path


def ide(disk=None, cd=None):
    """The PIIX3 IDE with a disk on the primary master and/or a CD drive on
    the secondary master, as run_stub takes it."""
    drives = {}
    if disk is not None:
        drives[0, 0] = {"type": "hdd", "path": str(disk)}
    if cd is not None:
        drives[1, 0] = {"type": "dvddrive", "path": str(cd)}
    return ("piix3-ide", {"drives": drives})


def test_the_rom_has_the_pc_layout():
    rom = stub().read_bytes()
    assert len(rom) == 128 << 10
    assert rom[-16] == 0xEA                    # F000:FFF0: a far jump into the F segment
    assert rom[-15 + 2:-15 + 4] == b"\x00\xf0"
    assert rom[-11:-3] == b"11/27/26" and rom[-2] == 0xFC     # date, AT model byte


def test_stub_boots_an_mbr_from_the_ide_disk(tmp_path):
    disk = mbr_disk(tmp_path / "disk.img")
    result, log = run_stub([ide(disk=disk)])
    assert "drivebay BIOS boot stub" in log
    assert "ata0-0: VBOX HARDDISK, ATA, 8192 sectors, drive 80h" in log, log
    assert "Booting from Hard Disk 0..." in log
    assert (result.reason, result.exit_code) == (StopReason.EXIT, GOOD), log


def test_stub_boots_an_mbr_from_an_ahci_port(tmp_path):
    # Two disks on a 6-port HBA: the first port with a disk is drive 80h.
    data = tmp_path / "data.img"
    data.write_bytes(bytes(1 << 20))
    disk = mbr_disk(tmp_path / "boot.img")
    result, log = run_stub([("ahci", {"ports": 6, "drives": {
        2: {"type": "hdd", "path": str(disk)}, 4: {"type": "hdd", "path": str(data)}}})])
    assert "AHCI/2: VBOX HARDDISK, ATA, 8192 sectors, drive 80h" in log, log
    assert "AHCI/4: VBOX HARDDISK, ATA, 2048 sectors, drive 81h" in log, log
    assert (result.reason, result.exit_code) == (StopReason.EXIT, GOOD), log


def test_stub_boots_el_torito_from_the_ide_cd(tmp_path):
    iso = el_torito_iso(tmp_path / "boot.iso")
    result, log = run_stub([ide(cd=iso)])
    assert "ata1-0: VBOX CD-ROM, ATAPI" in log and "drive e0h" in log, log
    assert "Booting from DVD/CD..." in log
    assert (result.reason, result.exit_code) == (StopReason.EXIT, GOOD), log


@pytest.mark.parametrize("order,first", [("cd", "Hard Disk 0"), ("dc", "DVD/CD")])
def test_stub_follows_the_cmos_boot_order(tmp_path, order, first):
    # Both are bootable: the first device of the boot order wins.
    disk = mbr_disk(tmp_path / "disk.img")
    iso = el_torito_iso(tmp_path / "boot.iso")
    result, log = run_stub([ide(disk=disk, cd=iso)], boot_order=order)
    assert log.count("Booting from") == 1 and f"Booting from {first}..." in log, log
    assert (result.reason, result.exit_code) == (StopReason.EXIT, GOOD), log


def test_stub_falls_through_to_the_next_boot_device(tmp_path):
    # An empty disk first: "not a bootable disk", then the CD boots.
    empty = tmp_path / "empty.img"
    empty.write_bytes(bytes(1 << 20))
    iso = el_torito_iso(tmp_path / "boot.iso")
    result, log = run_stub([ide(disk=empty, cd=iso)], boot_order="cd")
    assert "Boot failed: not a bootable disk\r\nBooting from DVD/CD..." in log, log
    assert (result.reason, result.exit_code) == (StopReason.EXIT, GOOD), log


def test_stub_without_disks_says_no_bootable_device():
    result, log = run_stub([])
    assert log.rstrip().endswith("No bootable device."), log
    assert result.reason == StopReason.HALTED



def test_stub_boots_el_torito_from_an_ahci_cd(tmp_path):
    iso = el_torito_iso(tmp_path / "boot.iso")
    result, log = run_stub([("ahci", {"ports": 4, "drives": {1: {"type": "dvddrive", "path": str(iso)}}})])
    assert "AHCI/1: VBOX CD-ROM, ATAPI" in log and "drive e0h" in log, log
    assert (result.reason, result.exit_code) == (StopReason.EXIT, GOOD), log


def boot_disk_with(tmp_path, source):
    code = assemble(".code16\n    ljmp $0, $1f\n1:  cli\n    xorw %ax, %ax\n    movw %ax, %ds\n"
                    "    movw %ax, %ss\n    movw $0x7c00, %sp\n    sti\n" + source, 0x7C00)
    assert len(code) <= 446
    disk = bytearray(1 << 20)
    disk[:len(code)] = code
    disk[510:512] = b"\x55\xaa"
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(disk))
    return path


def test_stub_int18_boots_the_next_device(tmp_path):
    # The disk's boot sector gives up with INT 18h: the CD is next in line.
    disk = boot_disk_with(tmp_path, "    int $0x18\n2:  hlt\n    jmp 2b\n")
    iso = el_torito_iso(tmp_path / "boot.iso")
    result, log = run_stub([ide(disk=disk, cd=iso)], boot_order="cd")
    assert "Booting from Hard Disk 0...\r\nBooting from DVD/CD..." in log, log
    assert (result.reason, result.exit_code) == (StopReason.EXIT, GOOD), log


def test_stub_teletype_cursor_and_keyboard_from_the_serial_port(tmp_path):
    # INT 10h: set the cursor to row 5, column 10, write "AB" by teletype,
    # read the cursor back (column 12).  INT 16h AH=00h then waits for the
    # keys the host types on COM1: 'x' (scan code 2Dh), then Enter (1Ch).
    disk = boot_disk_with(tmp_path, f"""
    movw $0x0200, %ax
    xorw %bx, %bx
    movw $0x050A, %dx
    int $0x10
    movw $0x0E41, %ax
    int $0x10
    movw $0x0E42, %ax
    int $0x10
    movw $0x0300, %ax
    xorw %bx, %bx
    int $0x10
    movb $0x11, %bl
    cmpw $0x050C, %dx
    jne 9f
    xorw %ax, %ax
    int $0x16
    movb $0x12, %bl
    cmpw $0x2D78, %ax            /* 'x', key 2Dh */
    jne 9f
    xorw %ax, %ax
    int $0x16
    movb $0x13, %bl
    cmpw $0x1C0D, %ax
    jne 9f
    movb $0x01, %ah
    int $0x16
    movb $0x14, %bl
    jnz 9f                      /* ZF=1: no key left */
    movb ${GOOD}, %bl
{REPORT_BL}""")
    serial = bytearray()
    with PcMachine(memory_mb=64, serial_out=serial.extend) as machine:
        machine.add_device("piix3-ide", drives={(0, 0): {"type": "hdd", "path": str(disk)}})
        machine.load_bios(stub())
        result = machine.run(timeout_s=30, should_stop=lambda: serial.endswith(b"AB"))
        assert result.reason == StopReason.STOPPED, serial
        machine.uart.feed(b"x\r")
        result = machine.run(timeout_s=30)
    assert (result.reason, result.exit_code) == (StopReason.EXIT, GOOD), serial


def test_stub_reports_the_el_torito_boot_image(tmp_path):
    # INT 13h AX=4B01h after a no-emulation boot: the 13h-byte specification
    # packet (El Torito 1.0, 5.3) names the boot drive, media type 0, the
    # image's load segment and sector count.  AH=48h then describes the CD:
    # 2048-byte sectors.
    code = assemble(f"""
.code16
    ljmp $0, $1f
1:  xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %ss
    movw $0x7c00, %sp
    movw $0x8000, %si
    movw $0x4B01, %ax
    int $0x13
    movb $0x11, %bl
    jc 9f
    movb $0x12, %bl
    cmpw $0x0013, 0(%si)         /* size 13h, media 0 (no emulation) */
    jne 9f
    cmpb %dl, 2(%si)             /* the boot drive */
    jne 9f
    cmpb $0xE0, %dl
    jne 9f
    movb $0x13, %bl
    cmpw $0x07C0, 0x0C(%si)      /* load segment */
    jne 9f
    cmpw $4, 0x0E(%si)           /* 512-byte sectors loaded */
    jne 9f
    movw $0x1A, 0x100(%si)       /* INT 13h AH=48h on the CD: EDD 1.x table */
    addw $0x100, %si
    movb $0x48, %ah
    int $0x13
    movb $0x14, %bl
    jc 9f
    cmpw $2048, 0x18(%si)        /* bytes per sector */
    jne 9f
    cmpl $0, 0x10(%si)           /* sectors: the ISO's size */
    je 9f
    movb ${GOOD}, %bl
{REPORT_BL}""", 0x7C00)
    path = el_torito_iso(tmp_path / "boot.iso", code)
    result, log = run_stub([ide(cd=path)])
    assert (result.reason, result.exit_code) == (StopReason.EXIT, GOOD), log


def test_stub_services_preserve_the_callers_registers(tmp_path):
    # A BIOS call changes only the registers it returns results in.  The
    # upper halves count too: gcc -m16 code addresses its stack through ESP.
    checks = "".join(f"""
    movl ${value:#x}, %eax
    cmpl %eax, {reg}
    jne 9f
    incb %bl""" for reg, value in (("%esi", 0xA5A51234), ("%edi", 0x5A5A4321),
                                  ("%ebp", 0x11223344), ("%esp", 0x7BFC)))
    disk = boot_disk_with(tmp_path, f"""
    movl $0x7BFC, %esp
    movw $0x1234, %ax
    movw %ax, %fs
    movw $0x5678, %ax
    movw %ax, %gs
    movl $0xA5A51234, %esi
    movl $0x5A5A4321, %edi
    movl $0x11223344, %ebp
    movl $0xCAFE0080, %edx
    movw $0x4100, %ax
    movw $0x55AA, %bx
    int $0x13
    cmpw $0xAA55, %bx
    movb $0x10, %bl
    jne 9f
    cmpl $0xCAFE0080, %edx
    jne 9f
    movw %fs, %ax
    cmpw $0x1234, %ax
    jne 9f
    movw %gs, %ax
    cmpw $0x5678, %ax
    jne 9f
    movb $0x20, %bl{checks}
    movb ${GOOD}, %bl
{REPORT_BL}""")
    result, log = run_stub([ide(disk=disk)])
    assert (result.reason, result.exit_code) == (StopReason.EXIT, GOOD), log

"""Unmodified SeaBIOS boots from drivebay's IDE: an MBR from the disk and an
El Torito (no emulation) image from the CD drive.

The boot code is assembled here with binutils.  It runs where SeaBIOS puts
it (0x7C00), uses SeaBIOS's INT 13h extended read (AH=42h) through our IDE
controller to fetch a known sector, and reports through the exit port: 0x2A
when the data was right, anything else when not.
"""

import io

import pycdlib

from asm import BOOT_SECTOR_START, assemble
from drivebay.boot.cpu import StopReason
from drivebay.boot.firmware import seabios
from drivebay.boot.machine import PcMachine

GOOD, BAD_READ, BAD_DATA = 0x2A, 0x11, 0x12


def boot_code(lba, signature):
    """Real-mode code that reads ``lba`` with INT 13h AH=42h from the boot
    drive (DL) to 0x8000 and compares the first bytes with ``signature``."""
    sig = ", ".join(str(b) for b in signature)
    return assemble(BOOT_SECTOR_START + f"""
    movw $0x7e00, %si              /* disk address packet */
    movw $0x0010, 0(%si)           /* size 16, reserved 0 */
    movw $1, 2(%si)                /* one block */
    movw $0x8000, 4(%si)           /* offset */
    movw $0, 6(%si)                /* segment */
    movl ${lba}, 8(%si)
    movl $0, 12(%si)
    movb $0x42, %ah
    int $0x13
    jc read_failed
    movw $0x8000, %si
    movw $signature, %di
    movw ${len(signature)}, %cx
    cld
    repe cmpsb
    jne bad_data
    movb ${GOOD}, %al
    jmp done
read_failed:
    movb ${BAD_READ}, %al
    jmp done
bad_data:
    movb ${BAD_DATA}, %al
done:
    movw $0x501, %dx
    outb %al, %dx
1:  hlt
    jmp 1b
signature: .byte {sig}
""", 0x7C00)


def run_seabios(drives, timeout_s=60, controller="piix3-ide", **options):
    debug, serial = bytearray(), bytearray()
    with PcMachine(memory_mb=64, serial_out=serial.extend, debugcon_out=debug.extend) as machine:
        machine.add_device(controller, drives=drives, **options)
        machine.load_bios(seabios())
        result = machine.run(timeout_s=timeout_s)
    return result, debug.decode("latin-1")


def mbr_disk(path):
    signature = b"DRIVEBAY-SECTOR-ONE"
    code = boot_code(1, signature)
    assert len(code) <= 446
    disk = bytearray(4 << 20)
    disk[:len(code)] = code
    disk[510:512] = b"\x55\xaa"
    disk[512:512 + len(signature)] = signature
    path.write_bytes(bytes(disk))
    return path


def test_seabios_boots_an_mbr_from_the_ide_disk(tmp_path):
    path = mbr_disk(tmp_path / "disk.img")
    result, log = run_seabios({(0, 0): {"type": "hdd", "path": str(path)}})
    assert "ata0-0: VBOX HARDDISK ATA-" in log, log[-3000:]
    assert "Booting from Hard Disk..." in log
    assert (result.reason, result.exit_code) == (StopReason.EXIT, GOOD), log[-3000:]


def test_seabios_boots_an_mbr_from_an_ahci_port(tmp_path):
    # Two disks on a 6-port HBA; SeaBIOS boots the first one it registered.
    empty = tmp_path / "data.img"
    empty.write_bytes(bytes(1 << 20))
    path = mbr_disk(tmp_path / "boot.img")
    result, log = run_seabios({2: {"type": "hdd", "path": str(path)},
                               4: {"type": "hdd", "path": str(empty)}},
                              controller="ahci", ports=6)
    assert "AHCI/2: registering: \"AHCI/2: VBOX HARDDISK ATA-" in log, log[-3000:]
    assert "AHCI/4: registering" in log
    assert (result.reason, result.exit_code) == (StopReason.EXIT, GOOD), log[-3000:]


def test_seabios_boots_el_torito_from_the_ide_cd(tmp_path):
    signature = b"CD001"                        # the primary volume descriptor, LBA 16, byte 1
    code = boot_code(16, b"\x01" + signature)
    boot_image = code + bytes(2048 - len(code))
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1)
    iso.add_fp(io.BytesIO(boot_image), len(boot_image), "/BOOT.IMG;1")
    iso.add_eltorito("/BOOT.IMG;1", bootcatfile="/BOOT.CAT;1", media_name="noemul", boot_load_size=4)
    path = tmp_path / "boot.iso"
    iso.write(str(path))
    iso.close()
    result, log = run_seabios({(1, 0): {"type": "dvddrive", "path": str(path)}})
    assert "ata1-0: VBOX CD-ROM ATAPI-" in log, log[-3000:]
    assert "Booting from DVD/CD..." in log
    assert (result.reason, result.exit_code) == (StopReason.EXIT, GOOD), log[-3000:]

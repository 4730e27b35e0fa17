"""``drivebay demo``: boot a small disk whose boot program reports what it finds.

The demo is an ordinary VM in DRIVEBAY_HOME, named ``drivebay-demo``, made
the way ``drivebay vm create`` makes one with VirtualBox's defaults:

    IDE (PIIX4)   secondary master: CD/DVD drive with drivebay-demo.iso
    SATA (AHCI)   port 0: drivebay-demo.vdi, 64 MiB, dynamically allocated

The disk holds the demo boot program built from firmware/demo/ (``demo.bin``:
an MBR stage in sector 0 and the program after it), written through the
block layer's VDI driver, so the image stays small (one 1 MiB block is
allocated).  The program asks the BIOS about memory, hard disks and CD
drives, scans PCI for storage controllers, counts boots in sector
``COUNTER_LBA`` of its disk (written and read back, so the count goes up by
one each run) and ends the run through the exit port with status 0.

A second ``drivebay demo`` reuses the VM and its disk: the program sectors
are written again (a newer drivebay brings a newer program) and the
counter sector is kept.  ``fresh=True`` deletes the VM and its files first.
The firmware is the VM's setting (drivebay's boot stub unless changed with
``drivebay modifyvm drivebay-demo --firmware ...``) or the one given.
"""

import contextlib
import os

from drivebay.block import optical
from drivebay.block.backend import BlockBackend
from drivebay.boot import firmware as firmware_files
from drivebay.errors import ConfigError
from drivebay.system import vm as vmmod
from drivebay.system import vmstart

VM_NAME = "drivebay-demo"
DESCRIPTION = "drivebay demo: a boot program that reports what it finds (drivebay demo)"
OSTYPE = "Linux26_64"           # a current system: VirtualBox puts its disk on SATA
MEMORY_MB = 64
DISK_SIZE = 64 << 20
SECTOR = 512
COUNTER_LBA = 64                # firmware/demo/demo.ld: the program stays below it
COUNTER_MAGIC = b"DRIVEBAY-DEMO-N\x00"
ISO_VOLUME = "DRIVEBAY_DEMO"
ISO_README = """This CD belongs to drivebay's demo VM.  The demo boot program reads
its volume name from sector 16 through INT 13h (drive E0h) and prints it.
"""


def boot_program():
    """The demo boot program as built from firmware/demo/ (bytes)."""
    path = firmware_files.firmware_dir() / "demo.bin"
    if not path.is_file():
        raise ConfigError(f"the demo boot program is not built ({path} is missing)")
    return path.read_bytes()


def write_program(disk_path, program):
    """Write the boot program at the start of the disk, leaving the counter be."""
    if len(program) > COUNTER_LBA * SECTOR:
        raise ConfigError(f"the demo boot program ({len(program)} bytes) reaches the "
                          f"counter sector {COUNTER_LBA}")
    padded = program + bytes(-len(program) % SECTOR)
    with BlockBackend.open(disk_path, format="vdi") as disk:
        disk.write(0, padded)
        disk.flush()


def boot_count(disk_path):
    """The count the boot program keeps in sector COUNTER_LBA (0 before its first run)."""
    sector = bytearray(SECTOR)
    with BlockBackend.open(disk_path, format="vdi", read_only=True) as disk:
        disk.readinto(COUNTER_LBA * SECTOR, memoryview(sector))
    if sector[:16] != COUNTER_MAGIC:
        return 0
    return int.from_bytes(sector[16:20], "little")


def _create(home):
    vm = home.create_vm(VM_NAME, OSTYPE, description=DESCRIPTION)
    vm.config.memory_mb = MEMORY_MB
    disk = vmmod.apply_defaults(home, vm, disk=True, disk_size=DISK_SIZE)
    iso = os.path.join(vm.folder, f"{VM_NAME}.iso")
    readme = os.path.join(vm.folder, "README.TXT")
    with open(readme, "w") as f:
        f.write(ISO_README)
    optical.build_iso(iso, {"README.TXT": readme}, volume_id=ISO_VOLUME)
    os.unlink(readme)
    vmmod.attach(home, vm, "IDE", 1, 0, type="dvddrive", medium=iso)
    home.media.save()
    vm.save()
    return vm, disk


def _delete(home, vm):
    """unregistervm --delete, and the demo's own ISO too (VirtualBox deletes
    only hard disks: a CD image is usually the user's)."""
    vmmod.require_stopped(vm, "recreate the demo VM")
    isos = [home.media.get(a.medium) for a in vm.config.attachments
            if a.type == "dvddrive" and a.medium]
    vmmod.delete_vm(home, vm, delete_files=True)
    for iso in isos:
        if iso is not None and os.path.dirname(iso.location) == vm.folder:
            home.media.forget(iso.uuid)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(iso.location)
    home.media.save()
    with contextlib.suppress(OSError):
        os.rmdir(vm.folder)


def prepare(home, fresh=False):
    """The demo VM, made if missing (or again with ``fresh``), with the current
    boot program on its disk.  Returns (vm, disk Medium)."""
    with home.locked():
        try:
            vm = home.find_vm(VM_NAME)
        except ConfigError:
            vm = None
        if vm is not None and vm.description != DESCRIPTION:
            raise ConfigError(f"a VM named '{VM_NAME}' exists that 'drivebay demo' did not "
                              f"make ({vm.path}); rename or unregister it first")
        if vm is not None and fresh:
            _delete(home, vm)
            vm = None
        if vm is None:
            vm, disk = _create(home)
        else:
            att = vm.config.attachment_at("SATA", 0, 0)
            disk = home.media.get(att.medium) if att and att.medium else None
            if disk is None or not disk.accessible or disk.format != "vdi":
                raise ConfigError(f"the demo VM's disk (SATA port 0) is missing or not a "
                                  f"VDI image: run 'drivebay demo --fresh' to make it again")
        vmmod.require_stopped(vm, "write the demo boot program")
        write_program(disk.location, boot_program())
    return vm, disk


def run(home, firmware=None, timeout_s=None, serial_out=None, should_stop=None, fresh=False):
    """Prepare the demo VM and boot it; returns (vm, disk, RunResult)."""
    vm, disk = prepare(home, fresh)
    result = vmstart.start(home, vm.uuid, firmware=firmware, timeout_s=timeout_s,
                           serial_out=serial_out, should_stop=should_stop)
    return vm, disk, result

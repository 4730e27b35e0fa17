"""The demo VM (system/demo.py): what ``drivebay demo`` makes, reuses and remakes.

Booting it is in tests/guest/test_demo.py; here the VM file, the media and
the bytes on the disk are checked, read back through the block layer.
"""

import os

import pytest

from drivebay.block.backend import BlockBackend
from drivebay.errors import ConfigError
from drivebay.system import demo
from drivebay.system.vm import Home

SECTOR = 512
MBR_CODE_LIMIT = 446                 # the partition table starts here


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIVEBAY_HOME", str(tmp_path / "home"))
    return Home()


def disk_bytes(path, offset, length):
    data = bytearray(length)
    with BlockBackend.open(path, format="vdi", read_only=True) as disk:
        disk.readinto(offset, memoryview(data))
    return bytes(data)


def write_count(path, count):
    sector = demo.COUNTER_MAGIC + count.to_bytes(4, "little") + bytes(SECTOR - 20)
    with BlockBackend.open(path, format="vdi") as disk:
        disk.write(demo.COUNTER_LBA * SECTOR, sector)


def test_the_boot_program_is_an_mbr_and_fits_below_the_counter():
    program = demo.boot_program()
    assert program[510:512] == b"\x55\xaa"
    assert program[MBR_CODE_LIMIT:510] == bytes(510 - MBR_CODE_LIMIT)   # empty partition table
    assert 2 * SECTOR < len(program) <= demo.COUNTER_LBA * SECTOR
    assert b"drivebay demo: a boot program reports what it finds" in program


def test_the_mbr_stage_loads_the_whole_program():
    # Sector 0 reads the rest with one EDD disk address packet: size 16,
    # N sectors to 0000:7E00 from LBA 1.  N must cover every byte after sector 0.
    program = demo.boot_program()
    mbr = program[:SECTOR]
    packets = [i for i in range(0, MBR_CODE_LIMIT - 16, 2)
               if mbr[i:i + 2] == b"\x10\x00" and mbr[i + 4:i + 16] ==
               b"\x00\x7e\x00\x00" + (1).to_bytes(8, "little")]
    assert len(packets) == 1
    count = int.from_bytes(mbr[packets[0] + 2:packets[0] + 4], "little")
    assert count == -(-(len(program) - SECTOR) // SECTOR)


def test_prepare_makes_virtualbox_default_storage(home):
    vm, disk = demo.prepare(home)
    cfg = vm.config
    assert vm.name == demo.VM_NAME and cfg.memory_mb == demo.MEMORY_MB
    assert [(c.name, c.bus, c.controller) for c in cfg.controllers] == \
        [("IDE", "ide", "PIIX4"), ("SATA", "sata", "IntelAhci")]
    slots = {a.slot: a for a in cfg.attachments}
    assert sorted(slots) == [("IDE", 1, 0), ("SATA", 0, 0)]
    assert slots["SATA", 0, 0].type == "hdd" and slots["SATA", 0, 0].medium == disk.uuid
    assert slots["IDE", 1, 0].type == "dvddrive"
    with home.locked():
        iso = home.media.get(slots["IDE", 1, 0].medium)
        assert iso.device == "dvd"
    with open(iso.location, "rb") as f:
        image = f.read()
    pvd = image[16 * 2048:17 * 2048]               # ISO 9660's primary volume descriptor
    assert pvd[:6] == b"\x01CD001" and pvd[40:72].rstrip() == demo.ISO_VOLUME.encode()
    assert demo.ISO_README.encode() in image
    # A dynamic VDI of the stated size holding the program, small on the host.
    assert disk.format == "vdi" and disk.location.endswith("drivebay-demo.vdi")
    with BlockBackend.open(disk.location, format="vdi", read_only=True) as d:
        assert d.size == demo.DISK_SIZE
    assert os.path.getsize(disk.location) < 4 << 20
    program = demo.boot_program()
    assert disk_bytes(disk.location, 0, len(program)) == program
    assert demo.boot_count(disk.location) == 0


def test_prepare_again_reuses_the_disk_and_keeps_the_count(home):
    vm, disk = demo.prepare(home)
    write_count(disk.location, 41)
    with BlockBackend.open(disk.location, format="vdi") as d:
        d.write(0, bytes(SECTOR))                     # an old program: rewritten below
    vm2, disk2 = demo.prepare(home)
    assert (vm2.uuid, disk2.uuid) == (vm.uuid, disk.uuid)
    assert demo.boot_count(disk.location) == 41
    program = demo.boot_program()
    assert disk_bytes(disk.location, 0, len(program)) == program


def test_fresh_makes_a_new_vm_and_disk(home):
    vm, disk = demo.prepare(home)
    write_count(disk.location, 7)
    vm2, disk2 = demo.prepare(home, fresh=True)
    assert vm2.uuid != vm.uuid and disk2.uuid != disk.uuid
    assert demo.boot_count(disk2.location) == 0
    with home.locked():
        assert [v.name for v in home.all_vms()] == [demo.VM_NAME]
        assert home.media.get(disk.uuid) is None


def test_a_vm_of_the_same_name_that_the_demo_did_not_make_is_left_alone(home):
    with home.locked():
        home.create_vm(demo.VM_NAME)
    with pytest.raises(ConfigError, match="did not make"):
        demo.prepare(home)
    with pytest.raises(ConfigError, match="did not make"):
        demo.prepare(home, fresh=True)


def test_a_missing_disk_asks_for_fresh(home):
    vm, disk = demo.prepare(home)
    os.unlink(disk.location)
    with pytest.raises(ConfigError, match="--fresh"):
        demo.prepare(home)
    vm2, disk2 = demo.prepare(home, fresh=True)
    assert os.path.isfile(disk2.location)

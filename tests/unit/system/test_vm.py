"""VM files: schema, strict reading, atomic writes, controllers, slot limits,
attachments, bandwidth groups, new-VM defaults and the machine translation."""

import json
import os

import pytest

from drivebay.errors import ConfigError, MediaError
from drivebay.system import ostypes
from drivebay.system import vm as vmmod
from drivebay.system.vm import BUSES, Home, parse_limit

MiB = 1 << 20


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIVEBAY_HOME", str(tmp_path / "home"))
    return Home()


def new_vm(home, name="web", ostype="Ubuntu_64", defaults=True, disk_size=4 * MiB):
    with home.locked():
        vm = home.create_vm(name, ostype)
        if defaults:
            vmmod.apply_defaults(home, vm, disk_size=disk_size)
            home.media.save()
            vm.save()
    return vm


def disk_file(tmp_path, name="d.vdi", size=4 * MiB, variant="dynamic"):
    from drivebay.block.vdi import VdiDriver
    path = tmp_path / name
    VdiDriver.create(path, size, variant=variant)
    return str(path)


# -- file format -------------------------------------------------------------------------

def test_round_trip_and_schema_fields(home):
    vm = new_vm(home)
    data = json.loads(open(vm.path).read())
    assert data["schema"] == 1 and data["kind"] == "drivebay-vm"
    assert data["name"] == "web" and data["ostype"] == "Ubuntu_64"
    ctl = {c["name"]: c for c in data["config"]["storage_controllers"]}
    assert ctl["SATA"]["controller"] == "IntelAhci" and ctl["IDE"]["controller"] == "PIIX4"
    again = vmmod.Vm.load(vm.path)
    assert again.to_json() == vm.to_json()


@pytest.mark.parametrize("edit,field", [
    (lambda d: d.update(schema=2), "schema"),
    (lambda d: d.update(kind="something"), "kind"),
    (lambda d: d.pop("uuid"), "uuid"),
    (lambda d: d.update(uuid="not-a-uuid"), "uuid"),
    (lambda d: d.update(colour="blue"), "colour"),
    (lambda d: d.update(ostype="Plan9"), "ostype"),
    (lambda d: d["config"].update(memory_mb="lots"), "config.memory_mb"),
    (lambda d: d["config"]["storage_controllers"][0].update(controller="IntelAhci"),
     "config.storage_controllers[0].controller"),
    (lambda d: d["config"]["storage_controllers"][1].update(port_count=31),
     "storage_controllers[1].port_count"),
    (lambda d: d["config"]["attachments"][0].update(port="0"), "config.attachments[0].port"),
    (lambda d: d["config"]["attachments"][0].update(port=5), "attachments[0].port"),
    (lambda d: d["config"]["attachments"][0].update(type="tape"), "attachments[0].type"),
    (lambda d: d["config"]["attachments"][0].update(bandwidth_group="nope"),
     "attachments[0].bandwidth_group"),
    (lambda d: d["config"]["attachments"][1].update(non_rotational=True),
     "attachments[1].non_rotational"),
    (lambda d: d.update(current_snapshot="6f1c5b6a-0000-4000-8000-000000000000"),
     "current_snapshot"),
])
def test_hand_edited_file_is_refused_naming_file_and_field(home, edit, field):
    vm = new_vm(home)
    data = json.loads(open(vm.path).read())
    edit(data)
    text = json.dumps(data)
    with open(vm.path, "w") as f:
        f.write(text)
    with pytest.raises(ConfigError) as e:
        vmmod.Vm.load(vm.path)
    assert vm.path in str(e.value) and field in str(e.value)
    assert open(vm.path).read() == text          # nothing changed


def test_corrupt_json_is_refused_and_operations_change_nothing(home):
    vm = new_vm(home)
    with open(vm.path, "a") as f:
        f.write("{ garbage")
    before = open(vm.path).read()
    with pytest.raises(ConfigError, match="not valid JSON"):
        with home.locked():
            vmmod.bandwidth_add(home.find_vm("web"), "g", limit="10")
    assert open(vm.path).read() == before


def test_write_is_atomic(home, monkeypatch):
    vm = new_vm(home)
    before = open(vm.path).read()
    import drivebay.block.media as media

    def boom(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(media.json, "dump", boom)
    vm.config.memory_mb = 99
    with pytest.raises(OSError):
        vm.save()
    assert open(vm.path).read() == before
    assert [n for n in os.listdir(vm.folder) if n.endswith(".tmp")] == []


def test_vm_list_and_find(home):
    a = new_vm(home, "a", defaults=False)
    new_vm(home, "b", defaults=False)
    assert [e.name for e in home.entries()] == ["a", "b"]
    with home.locked():
        assert home.find_vm(a.uuid).name == "a"
        assert home.find_vm(a.path).name == "a"
        with pytest.raises(ConfigError, match="Could not find a registered machine"):
            home.find_vm("c")
        with pytest.raises(ConfigError, match="already"):
            home.create_vm("a")


# -- controllers and slot limits ----------------------------------------------------------

SLOTS = {"ide": 4, "sata": 30, "scsi": 15, "sas": 255, "usb": 8, "pcie": 255, "virtio": 256,
         "floppy": 2}


@pytest.mark.parametrize("bus", sorted(SLOTS))
def test_slot_limits(home, bus, tmp_path):
    b = BUSES[bus]
    assert b.slots == SLOTS[bus]
    vm = new_vm(home, defaults=False)
    with home.locked():
        vm = home.find_vm("web")
        vmmod.add_controller(vm, "C", bus, port_count=b.ports)
        kind = "fdd" if bus == "floppy" else "dvddrive" if "dvddrive" in b.device_types else None
        if kind:
            vmmod.attach(home, vm, "C", b.ports - 1, b.devices_per_port - 1, type=kind,
                         medium="emptydrive")
            with pytest.raises(ConfigError, match="out of range"):
                vmmod.attach(home, vm, "C", b.ports, 0, type=kind, medium="emptydrive")
            with pytest.raises(ConfigError, match="out of range"):
                vmmod.attach(home, vm, "C", 0, b.devices_per_port, type=kind,
                             medium="emptydrive")
        with pytest.raises(ConfigError, match="port count"):
            vmmod.modify_controller(vm, "C", port_count=b.ports + 1)


def test_one_ide_controller_and_at_most_eight_sata(home):
    vm = new_vm(home, defaults=False)
    with home.locked():
        vm = home.find_vm("web")
        vmmod.add_controller(vm, "IDE", "ide", "PIIX3")
        with pytest.raises(ConfigError, match="at most 1 ide controller"):
            vmmod.add_controller(vm, "IDE2", "ide", "ICH6")
        for i in range(8):
            vmmod.add_controller(vm, f"SATA{i}", "sata")
        with pytest.raises(ConfigError, match="at most 8 sata"):
            vmmod.add_controller(vm, "SATA8", "sata")
        with pytest.raises(ConfigError, match="already exists"):
            vmmod.add_controller(vm, "IDE", "scsi")
        with pytest.raises(ConfigError, match="not on the sata bus"):
            vmmod.add_controller(vm, "X", "sata", "LsiLogic")


def test_device_types_per_bus(home, tmp_path):
    vm = new_vm(home, defaults=False)
    with home.locked():
        vm = home.find_vm("web")
        vmmod.add_controller(vm, "NVMe", "pcie")
        vmmod.add_controller(vm, "FDC", "floppy")
        with pytest.raises(ConfigError, match="takes no dvddrive"):
            vmmod.attach(home, vm, "NVMe", 0, 0, type="dvddrive", medium="emptydrive")
        with pytest.raises(ConfigError, match="takes no hdd"):
            vmmod.attach(home, vm, "FDC", 0, 0, type="hdd", medium=disk_file(tmp_path))
        att, _ = vmmod.attach(home, vm, "FDC", 0, 1, type="fdd", medium="host:/dev/fd0")
        assert att.host_drive == "/dev/fd0"


def test_rename_and_remove_controller(home):
    vm = new_vm(home)
    with home.locked():
        vm = home.find_vm("web")
        vmmod.modify_controller(vm, "SATA", rename="AHCI", host_io_cache=True)
        assert {a.controller for a in vm.config.attachments} == {"AHCI", "IDE"}
        vmmod.remove_controller(home, vm, "AHCI")
        assert [a.controller for a in vm.config.attachments] == ["IDE"]
        vm.save()


def test_storageattach_grows_port_count_and_refuses_double_attach(home, tmp_path):
    vm = new_vm(home)
    with home.locked():
        vm = home.find_vm("web")
        disk = vm.config.attachments[0].medium
        att, _ = vmmod.attach(home, vm, "SATA", 5, 0, type="hdd", medium=disk_file(tmp_path),
                              non_rotational=True, discard=True)
        assert vm.config.controller("SATA").port_count == 6 and att.non_rotational
        with pytest.raises(ConfigError, match="already attached to this VM"):
            vmmod.attach(home, vm, "SATA", 6, 0, type="hdd", medium=disk)
        with pytest.raises(ConfigError, match="needs a medium"):
            vmmod.attach(home, vm, "SATA", 7, 0, type="hdd", medium="emptydrive")
        with pytest.raises(ConfigError, match="passthrough"):
            vmmod.attach(home, vm, "IDE", 1, 0, passthrough=True)
        with pytest.raises(ConfigError, match="register the LUN first"):
            vmmod.attach(home, vm, "SATA", 8, 0, type="hdd", medium="iscsi")
        with pytest.raises(MediaError, match="Could not find file"):
            vmmod.attach(home, vm, "SATA", 8, 0, type="hdd", medium=str(tmp_path / "no.vdi"))
        vmmod.attach(home, vm, "SATA", 5, 0, medium="none")
        assert vm.config.attachment_at("SATA", 5, 0) is None


# -- bandwidth groups ----------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [("0", 0), ("20", 20 << 20), ("20M", 20 << 20),
                                        ("512K", 512 << 10), ("1G", 1 << 30),
                                        ("8m", 1_000_000), ("8k", 1000), ("1g", 125_000_000)])
def test_limit_units(text, value):
    assert parse_limit(text) == value


@pytest.mark.parametrize("text", ["", "-1", "20 M", "20MB", "fast", "1.5M", "9" * 30 + "G"])
def test_bad_limits(text):
    with pytest.raises(ConfigError):
        parse_limit(text)


def test_bandwidth_group_in_use_cannot_be_removed(home):
    vm = new_vm(home)
    with home.locked():
        vm = home.find_vm("web")
        vmmod.bandwidth_add(vm, "Limit", limit="20M")
        with pytest.raises(ConfigError, match="already exists"):
            vmmod.bandwidth_add(vm, "Limit", limit="1")
        with pytest.raises(ConfigError, match="not supported"):
            vmmod.bandwidth_add(vm, "Net", type="network", limit="1")
        vmmod.attach(home, vm, "SATA", 0, 0, bandwidth_group="Limit")
        with pytest.raises(ConfigError, match="still in use"):
            vmmod.bandwidth_remove(vm, "Limit")
        vmmod.bandwidth_set(vm, "Limit", "100k")
        assert vm.config.group("Limit").bytes_per_second == 12500
        vmmod.attach(home, vm, "SATA", 0, 0, bandwidth_group="none")
        vmmod.bandwidth_remove(vm, "Limit")
        assert vm.config.bandwidth_groups == []
        with pytest.raises(ConfigError, match="Could not find a bandwidth group"):
            vmmod.attach(home, vm, "SATA", 0, 0, bandwidth_group="Limit")


# -- defaults and warnings -------------------------------------------------------------------

@pytest.mark.parametrize("ostype,disk_slot", [("Ubuntu_64", ("SATA", 0, 0)),
                                              ("Windows10_64", ("SATA", 0, 0)),
                                              ("WindowsXP", ("IDE", 0, 0)),
                                              ("DOS", ("IDE", 0, 0))])
def test_new_vm_defaults(home, ostype, disk_slot):
    vm = new_vm(home, ostype=ostype)
    slots = {a.slot: a.type for a in vm.config.attachments}
    assert slots == {disk_slot: "hdd", ("IDE", 1, 0): "dvddrive"}
    assert vm.config.memory_mb == ostypes.get(ostype).memory_mb
    buses = [c.bus for c in vm.config.controllers]
    assert ("sata" in buses) == (disk_slot[0] == "SATA")


@pytest.mark.parametrize("ostype,chip,warned", [
    ("WindowsXP", "IntelAhci", True), ("WindowsXP", "LsiLogicSas", True),
    ("WindowsVista", "IntelAhci", False), ("WindowsXP", "LsiLogic", True),
    ("WindowsXP", "BusLogic", True), ("Windows7_64", "LsiLogic", False),
    ("Windows7_64", "NVMe", True), ("Windows8", "NVMe", True), ("Windows81_64", "NVMe", False),
    ("Windows10_64", "VirtIO", True), ("Ubuntu_64", "VirtIO", False),
    ("Linux24", "NVMe", True), ("Ubuntu_64", "NVMe", False), ("WindowsXP", "PIIX4", False),
])
def test_driver_warnings(ostype, chip, warned):
    assert (ostypes.driver_warning(ostype, chip) is not None) == warned


def test_add_controller_returns_the_warning(home):
    vm = new_vm(home, ostype="WindowsXP", defaults=False)
    _ctl, warning = vmmod.add_controller(vm, "SATA", "sata")
    assert "Windows XP" in warning and "IntelAhci" in warning
    with pytest.raises(ConfigError, match="unknown guest OS type"):
        ostypes.get("Plan9")


# -- the machine ---------------------------------------------------------------------------

def test_machine_devices(home):
    vm = new_vm(home)
    with home.locked():
        vm = home.find_vm("web")
        vmmod.bandwidth_add(vm, "Slow", limit="1M")
        vmmod.attach(home, vm, "SATA", 0, 0, bandwidth_group="Slow", non_rotational=True)
        plans = {p.controller: p for p in vmmod.machine_devices(vm, home.media)}
    assert plans["IDE"].name == "piix4-ide" and plans["SATA"].name == "ahci"
    dvd = plans["IDE"].options["drives"][(1, 0)]
    assert dvd["type"] == "dvddrive" and dvd["path"] is None
    hdd = plans["SATA"].options["drives"][0]         # SATA: one device per port
    assert hdd["type"] == "hdd" and hdd["path"].endswith("web.vdi") and hdd["non_rotational"]
    extra = plans["SATA"].extras[0]
    assert extra["bandwidth_group"] == ("Slow", 1 << 20) and extra["chain"] == [hdd["path"]]
    from drivebay.hw.ide.piix import DRIVE_OPTIONS    # what the IDE factory accepts
    assert set(dvd) <= DRIVE_OPTIONS
    assert plans["SATA"].options["ports"] == 1 and hdd["hotpluggable"] is False
    # What the AHCI factory accepts: building the controller from the plan works.
    from drivebay.boot.machine import PcMachine
    with PcMachine() as machine:
        for plan in plans.values():
            machine.add_device(plan.name, **plan.options)


def test_delete_vm_with_files(home):
    vm = new_vm(home)
    with home.locked():
        vm = home.find_vm("web")
        disk = vm.config.attachments[0].location
        vmmod.delete_vm(home, vm, delete_files=True)
    assert not os.path.exists(disk) and not os.path.exists(vm.path)
    assert home.entries() == []
    with home.locked():
        assert home.media.media == {}


# -- firmware and boot order --------------------------------------------------------------------

def test_firmware_and_boot_order_defaults_and_round_trip(home, tmp_path):
    vm = new_vm(home)
    assert vm.config.firmware == "stub"
    assert vm.config.boot_order == ["floppy", "dvd", "disk", "none"]     # VirtualBox's
    assert vm.config.qemu_boot_order == "adc"
    bios = tmp_path / "my.rom"
    bios.write_bytes(b"\0" * 65536)
    with home.locked():
        vm = home.find_vm("web")
        vm.config.firmware = vmmod.firmware_named(str(bios))
        vm.config.boot_order = ["disk", "net", "none", "dvd"]
        vm.save()
    data = json.loads(open(vm.path).read())
    assert data["config"]["firmware"] == str(bios)
    assert data["config"]["boot_order"] == ["disk", "net", "none", "dvd"]
    again = vmmod.Vm.load(vm.path)
    assert again.config.firmware == str(bios) and again.config.qemu_boot_order == "cnd"


def test_vm_file_without_firmware_fields_reads_the_defaults(home):
    vm = new_vm(home)
    data = json.loads(open(vm.path).read())
    del data["config"]["firmware"], data["config"]["boot_order"]
    with open(vm.path, "w") as f:
        json.dump(data, f)
    again = vmmod.Vm.load(vm.path)
    assert again.config.firmware == "stub" and again.config.boot_order == list(
        vmmod.DEFAULT_BOOT_ORDER)


@pytest.mark.parametrize("edit,field", [
    (lambda c: c.update(firmware="bios.bin"), "config.firmware"),
    (lambda c: c.update(firmware=7), "config.firmware"),
    (lambda c: c.update(boot_order=["disk", "tape", "none", "none"]), "config.boot_order[1]"),
    (lambda c: c.update(boot_order=["disk", ["x"], "none", "none"]), "config.boot_order[1]"),
    (lambda c: c.update(boot_order=["disk", "dvd", "none"]), "config.boot_order"),
    (lambda c: c.update(boot_order="cad"), "config.boot_order"),
])
def test_bad_firmware_or_boot_order_names_file_and_field(home, edit, field):
    vm = new_vm(home)
    data = json.loads(open(vm.path).read())
    edit(data["config"])
    text = json.dumps(data)
    with open(vm.path, "w") as f:
        f.write(text)
    with pytest.raises(ConfigError) as e:
        vmmod.Vm.load(vm.path)
    assert vm.path in str(e.value) and f"field {field}" in str(e.value)
    assert open(vm.path).read() == text


@pytest.mark.parametrize("order,qemu", [
    (["floppy", "dvd", "disk", "none"], "adc"),
    (["disk", "none", "none", "none"], "c"),
    (["none", "none", "none", "none"], ""),
    (["net", "disk", "dvd", "floppy"], "ncd"),        # the CMOS holds three
    (["disk", "disk", "dvd", "none"], "cd"),           # a device twice counts once
])
def test_qemu_boot_order_programs_the_cmos(order, qemu):
    from drivebay.boot.machine import PcMachine
    assert vmmod.qemu_boot_order(order) == qemu
    nibble = {"a": 1, "c": 2, "d": 3, "n": 4}
    want = [nibble[c] for c in qemu] + [0, 0, 0]
    with PcMachine(memory_mb=4, boot_order=qemu, io_threads=0) as machine:
        cmos = machine.rtc.cmos
        assert cmos[0x3D] == want[1] << 4 | want[0]
        assert cmos[0x38] >> 4 == want[2]


def test_firmware_named():
    assert vmmod.firmware_named("SeaBIOS") == "seabios"
    assert vmmod.firmware_named("stub") == "stub"
    with pytest.raises(ConfigError, match="no BIOS image file"):
        vmmod.firmware_named("/nonexistent/bios.bin")
    with pytest.raises(ConfigError, match="empty"):
        vmmod.firmware_named("")


def test_power_on_session_carries_firmware_and_boot_order(home):
    from drivebay.system import snapshots
    new_vm(home)
    with home.locked():
        vm = home.find_vm("web")
        vm.config.firmware = "seabios"
        vm.config.boot_order = ["dvd", "disk", "none", "none"]
        vm.save()
    with snapshots.power_on(home, "web") as session:
        assert session.firmware == "seabios"
        assert session.boot_order == "dc"

"""The VBoxManage-shaped commands as a user types them (in process, through main())."""

import io
import json
import os
import sys

import pytest

from drivebay.block.drivers import open_image
from drivebay.block.vdi import VdiDriver
from drivebay.system.cli import main

MiB = 1 << 20


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIVEBAY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def ok(capsys, *args):
    code, out, err = run(capsys, *args)
    assert code == 0, err
    return out


def machinereadable(capsys, vm):
    out = ok(capsys, "vm", "show", vm, "--machinereadable")
    pairs = {}
    for line in out.splitlines():
        k, _, v = line.partition("=")
        pairs[k.strip('"')] = v.strip('"')
    return pairs


def test_vm_create_list_show_delete(home, capsys):
    out = ok(capsys, "vm", "create", "--name", "web", "--ostype", "Ubuntu_64", "--disk-size", 4)
    assert "Virtual machine 'web' is created and registered." in out
    assert ok(capsys, "vm", "list").startswith('"web" {')
    info = machinereadable(capsys, "web")
    assert info["ostype"] == "Ubuntu_64" and info["storagecontrollertype1"] == "IntelAhci"
    assert info["SATA-0-0"].endswith("web.vdi") and info["IDE-1-0"] == "emptydrive"
    out = ok(capsys, "vm", "show", "web")
    assert "Storage Controller: SATA (IntelAhci" in out
    code, _, err = run(capsys, "vm", "create", "--name", "web")
    assert code == 2 and "already" in err
    ok(capsys, "vm", "delete", "web", "--delete")
    assert ok(capsys, "vm", "list") == ""
    assert not (home / "machines" / "web" / "web.vdi").exists()


def test_storagectl_and_warning(home, capsys):
    ok(capsys, "vm", "create", "--name", "xp", "--ostype", "WindowsXP", "--no-disk")
    code, _, err = run(capsys, "storagectl", "xp", "--name", "SATA", "--add", "sata",
                       "--controller", "IntelAhci", "--portcount", 4, "--hostiocache", "on")
    assert code == 0 and "warning" in err and "Windows XP" in err
    code, _, err = run(capsys, "storagectl", "xp", "--name", "IDE2", "--add", "ide")
    assert code == 2 and "at most 1 ide controller" in err
    ok(capsys, "storagectl", "xp", "--name", "SATA", "--rename", "AHCI", "--bootable", "off")
    info = machinereadable(capsys, "xp")
    assert info["storagecontrollername1"] == "AHCI"
    assert info["storagecontrollerportcount1"] == "4"
    assert info["storagecontrollerbootable1"] == "off"
    assert info["storagecontrollerhostiocache1"] == "on"
    ok(capsys, "storagectl", "xp", "--name", "AHCI", "--remove")
    assert "storagecontrollername1" not in machinereadable(capsys, "xp")
    code, _, err = run(capsys, "storagectl", "xp", "--name", "S", "--add", "scsi",
                       "--controller", "IntelAhci")
    assert code == 2 and "not on the scsi bus" in err


def test_storageattach(home, tmp_path, capsys):
    ok(capsys, "vm", "create", "--name", "web", "--ostype", "Ubuntu_64", "--disk-size", 4)
    disk = tmp_path / "data.vdi"
    VdiDriver.create(disk, 2 * MiB)
    ok(capsys, "storageattach", "web", "--storagectl", "SATA", "--port", 3, "--device", 0,
       "--type", "hdd", "--medium", disk, "--nonrotational", "on", "--discard", "on",
       "--hotpluggable", "on", "--mtype", "writethrough", "--comment", "data disk")
    info = machinereadable(capsys, "web")
    assert info["SATA-3-0"] == str(disk)
    assert info["SATA-flags-3-0"] == "non_rotational,discard,hot_pluggable"
    assert info["storagecontrollerportcount1"] == "4"
    out = ok(capsys, "showmediuminfo", disk)
    assert "Type:           writethrough (base)" in out and "In use by VMs:  web" in out
    assert "Description:    data disk" in out
    ok(capsys, "storageattach", "web", "--storagectl", "IDE", "--port", 1, "--device", 0,
       "--type", "dvddrive", "--medium", "host:/dev/sr0", "--passthrough", "on",
       "--tempeject", "on")
    assert machinereadable(capsys, "web")["IDE-1-0"] == "host:/dev/sr0"
    code, _, err = run(capsys, "storageattach", "web", "--storagectl", "SATA", "--port", 30,
                       "--type", "hdd", "--medium", disk)
    assert code == 2 and "out of range" in err
    before = (home / "machines" / "web" / "web.vm").read_text()
    code, _, err = run(capsys, "storageattach", "web", "--storagectl", "SATA", "--port", 4,
                       "--type", "hdd", "--medium", "iscsi")
    assert code == 2 and "needs --server and --target" in err
    code, _, err = run(capsys, "storageattach", "web", "--storagectl", "SATA", "--port", 4,
                       "--type", "hdd", "--medium", disk, "--server", "10.0.0.1")
    assert code == 2 and "--server: only with --medium iscsi" in err
    assert (home / "machines" / "web" / "web.vm").read_text() == before
    ok(capsys, "storageattach", "web", "--storagectl", "SATA", "--port", 3, "--medium", "none")
    assert machinereadable(capsys, "web")["SATA-3-0"] == "none"


def test_bandwidthctl(home, capsys):
    ok(capsys, "vm", "create", "--name", "web", "--ostype", "Ubuntu_64", "--disk-size", 4)
    ok(capsys, "bandwidthctl", "web", "add", "Limit", "--type", "disk", "--limit", "20M")
    ok(capsys, "storageattach", "web", "--storagectl", "SATA", "--port", 0,
       "--bandwidthgroup", "Limit")
    code, _, err = run(capsys, "bandwidthctl", "web", "remove", "Limit")
    assert code == 2 and "still in use" in err
    code, _, err = run(capsys, "bandwidthctl", "web", "set", "Limit", "--limit", "20 bananas")
    assert code == 2 and "invalid bandwidth limit" in err
    ok(capsys, "bandwidthctl", "web", "set", "Limit", "--limit", "8m")
    out = ok(capsys, "bandwidthctl", "web", "list", "--machinereadable")
    assert 'name="Limit"' in out and "maxbytespersec=1000000" in out
    ok(capsys, "storageattach", "web", "--storagectl", "SATA", "--port", 0,
       "--bandwidthgroup", "none")
    ok(capsys, "bandwidthctl", "web", "remove", "Limit")
    assert ok(capsys, "bandwidthctl", "web", "list") == ""


def _write(home, vm, data):
    from drivebay.system.vm import Home
    h = Home()
    with h.locked():
        a = h.find_vm(vm).config.attachment_at("SATA", 0, 0)
        with h.media.open_chain(a.medium, writable=True) as c:
            c.write(0, data)


def _read(vm):
    from drivebay.system.vm import Home
    h = Home()
    with h.locked():
        a = h.find_vm(vm).config.attachment_at("SATA", 0, 0)
        with h.media.open_chain(a.medium) as c:
            return c.read(0, 4)


def test_snapshot_commands(home, capsys):
    ok(capsys, "vm", "create", "--name", "web", "--ostype", "Ubuntu_64", "--disk-size", 4)
    _write(home, "web", b"one!")
    assert "Snapshot taken" in ok(capsys, "snapshot", "web", "take", "first",
                                  "--description", "installed")
    _write(home, "web", b"two!")
    ok(capsys, "snapshot", "web", "take", "first", "--uniquename", "Number")
    out = ok(capsys, "snapshot", "web", "list", "--details")
    assert "Name: first (UUID:" in out and "Name: first 1 (UUID:" in out and "*" in out
    assert "Description: installed" in out
    mr = ok(capsys, "snapshot", "web", "list", "--machinereadable")
    assert 'SnapshotName="first"' in mr and 'CurrentSnapshotName="first 1"' in mr
    ok(capsys, "snapshot", "web", "restore", "first")
    assert _read("web") == b"one!"
    ok(capsys, "snapshot", "web", "restorecurrent")
    ok(capsys, "snapshot", "web", "edit", "first 1", "--name", "second")
    ok(capsys, "snapshot", "web", "edit", "--current", "--description", "now")
    out = ok(capsys, "snapshot", "web", "showvminfo", "first")
    assert "Description: now" in out
    ok(capsys, "snapshot", "web", "delete", "second")
    ok(capsys, "snapshot", "web", "delete", "first")
    assert "does not have any snapshots" in ok(capsys, "snapshot", "web", "list")
    assert _read("web") == b"one!"
    code, _, err = run(capsys, "snapshot", "web", "restore", "gone")
    assert code == 2 and "Could not find a snapshot" in err


def test_snapshot_take_live(home, capsys):
    """A VM another process runs without a control channel (its run lock
    held through the Python API) gets no snapshot from here, --live or not,
    and nothing changes; a stopped VM gets an offline one.  (A VM that
    ``vm start`` runs takes the snapshot itself: test_live_vm.py.)"""
    import subprocess
    ok(capsys, "vm", "create", "--name", "web", "--ostype", "Ubuntu_64", "--disk-size", 4)
    runner = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\n"
         "from drivebay.system import snapshots\n"
         "from drivebay.system.vm import Home\n"
         "with snapshots.power_on(Home(), 'web'):\n"
         "    print('running', flush=True)\n"
         "    sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert runner.stdout.readline() == "running\n"
        assert machinereadable(capsys, "web")["VMState"] == "running"
        vm_file = home / "machines" / "web" / "web.vm"
        before = vm_file.read_text()
        for extra in (["--live"], []):
            code, _, err = run(capsys, "snapshot", "web", "take", "hot", *extra)
            assert code == 2 and "does not answer on its control channel" in err
        assert vm_file.read_text() == before
        assert not (home / "machines" / "web" / "Snapshots").exists() or \
            os.listdir(home / "machines" / "web" / "Snapshots") == []
    finally:
        runner.communicate("")
    assert runner.returncode == 0
    code, out, err = run(capsys, "snapshot", "web", "take", "cold", "--live")
    assert code == 0 and "Snapshot taken" in out and "not running" in err
    assert "(online)" not in ok(capsys, "snapshot", "web", "list")


def test_clonevm(home, capsys):
    ok(capsys, "vm", "create", "--name", "web", "--ostype", "Ubuntu_64", "--disk-size", 4)
    _write(home, "web", b"data")
    ok(capsys, "snapshot", "web", "take", "s")
    out = ok(capsys, "clonevm", "web", "--name", "copy", "--register")
    assert 'cloned as "copy"' in out
    ok(capsys, "clonevm", "web", "--name", "linked", "--snapshot", "s", "--options", "link",
       "--register")
    assert _read("copy") == b"data" and _read("linked") == b"data"
    assert ok(capsys, "list", "vms").count("\n") == 3
    ok(capsys, "clonevm", "web", "--name", "tree", "--mode", "all", "--register")
    assert "Name: s (UUID:" in ok(capsys, "snapshot", "tree", "list")
    assert _read("tree") == b"data"
    code, _, err = run(capsys, "clonevm", "web", "--name", "bad", "--mode", "everything")
    assert code == 2 and "one of machine, machineandchildren, all" in err


def test_createmedium_and_friends(home, tmp_path, capsys):
    base = tmp_path / "base"
    out = ok(capsys, "createmedium", "disk", "--filename", base, "--size", 2)
    uuid = out.split("UUID: ")[1].strip()
    assert (tmp_path / "base.vdi").exists()
    ok(capsys, "createmedium", "--filename", tmp_path / "fixed.vhd", "--sizebyte", MiB,
       "--format", "VHD", "--variant", "Fixed")
    out = ok(capsys, "createmedium", "disk", "--filename", tmp_path / "child.vdi",
             "--diffparent", uuid)
    child = out.split("UUID: ")[1].strip()
    ok(capsys, "createmedium", "--filename", tmp_path / "split", "--size", 1,
       "--variant", "Split2G")
    assert (tmp_path / "split.vmdk").exists()
    code, _, err = run(capsys, "createmedium", "--filename", tmp_path / "x.vdi", "--size", 1,
                       "--format", "VDI", "--variant", "Stream")
    assert code == 2 and "VMDK" in err
    code, _, err = run(capsys, "createmedium", "--filename", tmp_path / "x", "--size", 1,
                       "--format", "QCOW2")
    assert code == 2 and "unknown image format 'qcow2'" in err
    code, _, err = run(capsys, "createmedium", "--filename", tmp_path / "x", "--size", 1,
                       "--variant", "ESX,Split2G")
    assert code == 2 and "preallocated VMFS disk" in err
    out = ok(capsys, "list", "hdds")
    assert sum(line.startswith("UUID:") for line in out.splitlines()) == 4
    assert f"Parent UUID:    {uuid}" in out
    ok(capsys, "modifymedium", "fixed.vhd", "--type", "shareable")
    code, _, err = run(capsys, "modifymedium", "disk", uuid, "--type", "shareable")
    assert code == 2 and "child media" in err
    ok(capsys, "modifymedium", child, "--description", "diff", "--property", "k=v")
    ok(capsys, "mediumproperty", "disk", "set", child, "colour", "blue")
    assert ok(capsys, "mediumproperty", "get", child, "colour").strip() == "colour=blue"
    ok(capsys, "mediumproperty", "delete", child, "colour")
    info = json.loads(ok(capsys, "showmediuminfo", child, "--json"))
    assert info["parent"] == uuid and info["properties"] == {"k": "v"}
    ok(capsys, "modifymedium", tmp_path / "fixed.vhd", "--resizebyte", 2 * MiB)
    assert json.loads(ok(capsys, "showmediuminfo", tmp_path / "fixed.vhd",
                         "--json"))["capacity"] == 2 * MiB
    ok(capsys, "modifymedium", child, "--compact")
    ok(capsys, "modifymedium", child, "--move", tmp_path / "moved")
    assert (tmp_path / "moved" / "child.vdi").exists()
    out = ok(capsys, "clonemedium", child, tmp_path / "flat.vdi")
    assert "Clone medium created in format 'VDI'" in out
    ok(capsys, "createmedium", "--filename", tmp_path / "target.vdi", "--size", 2)
    ok(capsys, "clonemedium", "disk", child, tmp_path / "target.vdi", "--existing")
    code, _, err = run(capsys, "closemedium", "disk", uuid)
    assert code == 2 and "child media" in err
    ok(capsys, "closemedium", "disk", child, "--delete")
    assert not (tmp_path / "moved" / "child.vdi").exists()
    ok(capsys, "closemedium", uuid)
    assert (tmp_path / "base.vdi").exists()


def test_duplicate_uuid_through_the_cli(home, tmp_path, capsys):
    ok(capsys, "createmedium", "--filename", tmp_path / "a.vdi", "--size", 1)
    (tmp_path / "b.vdi").write_bytes((tmp_path / "a.vdi").read_bytes())
    code, _, err = run(capsys, "media", "add", tmp_path / "b.vdi")
    assert code == 2 and "Cannot register the hard disk" in err and "clonemedium" in err


def test_dvd_and_floppy_media(home, tmp_path, capsys):
    src = tmp_path / "files"
    src.mkdir()
    (src / "hello.txt").write_text("hi")
    ok(capsys, "createmedium", "dvd", "--filename", tmp_path / "cd.iso", "--source", src,
       "--volume-id", "FILES")
    out = ok(capsys, "list", "dvds")
    assert "Storage format: ISO" in out and "readonly" in out
    ok(capsys, "createmedium", "dvd", "--filename", tmp_path / "cd.viso", "--source",
       f"/docs={src}")
    ok(capsys, "visotoiso", tmp_path / "cd.viso", tmp_path / "fromviso.iso")
    assert b"hi" in (tmp_path / "fromviso.iso").read_bytes()
    code, out, err = run(capsys, "createmedium", "floppy", "--filename", tmp_path / "f.img",
                         "--variant", "Formatted")
    try:
        import drivebay.block.floppy  # noqa: F401
        assert code == 0, err
    except ImportError:
        assert code == 2 and "not available yet" in err
    ok(capsys, "vm", "create", "--name", "web", "--ostype", "Ubuntu_64", "--no-disk")
    ok(capsys, "storageattach", "web", "--storagectl", "IDE", "--port", 1, "--device", 0,
       "--medium", tmp_path / "cd.iso")
    out = ok(capsys, "media", "list", "dvds")
    assert "[web]" in out
    os.unlink(tmp_path / "fromviso.iso")
    ok(capsys, "media", "release", tmp_path / "cd.iso")
    os.unlink(tmp_path / "cd.iso")
    out = ok(capsys, "media", "clear-inaccessible")
    assert "cd.iso" in out


def test_convertfromraw(home, tmp_path, capsys, monkeypatch):
    raw = tmp_path / "disk.raw"
    raw.write_bytes(b"\x00" * 4096 + b"boot" + b"\x00" * (MiB - 4100))
    out = ok(capsys, "convertfromraw", raw, tmp_path / "disk.vdi",
             "--uuid", "6f1c5b6a-0000-4000-8000-0000000000aa")
    assert "6f1c5b6a-0000-4000-8000-0000000000aa" in out
    with open_image(tmp_path / "disk.vdi") as im:
        assert im.read(4096, 4) == b"boot" and im.size == MiB
    fake = io.TextIOWrapper(io.BytesIO(raw.read_bytes()))
    monkeypatch.setattr(sys, "stdin", fake)
    ok(capsys, "convertfromraw", "stdin", tmp_path / "stdin.vhd", MiB, "--format", "VHD")
    with open_image(tmp_path / "stdin.vhd") as im:
        assert im.read(4096, 4) == b"boot"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"short")))
    code, _, err = run(capsys, "convertfromraw", "stdin", tmp_path / "short.vdi", MiB)
    assert code == 2 and "ended after" in err and not (tmp_path / "short.vdi").exists()


def test_media_manager_commands(home, tmp_path, capsys):
    ok(capsys, "media", "create", tmp_path / "m.vdi", "--size", "2M")
    ok(capsys, "media", "create", tmp_path / "f.vdi", "--size", "1M", "--fixed",
       "--type", "shareable")
    code, _, err = run(capsys, "media", "create", tmp_path / "d.vdi", "--size", "1M",
                       "--type", "shareable")
    assert code == 2 and "dynamic medium storage unit" in err and not (tmp_path / "d.vdi").exists()
    ok(capsys, "media", "copy", "m.vdi", tmp_path / "m.vhd", "--format", "vhd")
    tree = json.loads(ok(capsys, "media", "tree", "--json"))
    assert {os.path.basename(r["location"]) for r in tree} == {"m.vdi", "f.vdi", "m.vhd"}
    assert all(r["virtual_size"] for r in tree)
    assert "m.vdi" in ok(capsys, "media", "search", "m.v")
    code, _, _ = run(capsys, "media", "search", "nothing")
    assert code == 1
    ok(capsys, "media", "set", "m.vdi", "--type", "immutable", "--autoreset", "off",
       "--description", "template", "--size", "3M")
    props = json.loads(ok(capsys, "media", "properties", "m.vdi", "--json"))
    assert props["type"] == "immutable" and not props["autoreset"]
    assert props["capacity"] == 3 * MiB and props["description"] == "template"
    ok(capsys, "media", "move", "m.vhd", tmp_path / "sub" / "n.vhd")
    assert "3 of 3 media accessible" in ok(capsys, "media", "refresh")
    ok(capsys, "media", "remove", "n.vhd", "--delete")
    assert not (tmp_path / "sub" / "n.vhd").exists()
    assert ok(capsys, "list", "ostypes").count("ID:") > 40


def test_modifyvm_firmware_boot_order_memory(home, tmp_path, capsys):
    ok(capsys, "vm", "create", "--name", "web", "--disk-size", 4)
    info = machinereadable(capsys, "web")
    assert info["firmware"] == "stub"
    assert [info[f"boot{i}"] for i in range(1, 5)] == ["floppy", "dvd", "disk", "none"]
    ok(capsys, "modifyvm", "web", "--firmware", "seabios", "--boot1", "disk", "--boot2", "dvd",
       "--boot3", "none", "--memory", 96)
    info = machinereadable(capsys, "web")
    assert info["firmware"] == "seabios" and info["memory"] == "96"
    assert [info[f"boot{i}"] for i in range(1, 5)] == ["disk", "dvd", "none", "none"]
    out = ok(capsys, "vm", "show", "web")
    assert "Firmware:        seabios" in out and "Boot Device 1:   disk" in out
    rom = tmp_path / "bios.bin"
    rom.write_bytes(b"\xea" * 65536)
    ok(capsys, "vm", "modify", "web", "--firmware", rom)
    assert machinereadable(capsys, "web")["firmware"] == str(rom)
    before = (home / "machines" / "web" / "web.vm").read_text()
    code, _, err = run(capsys, "modifyvm", "web", "--firmware", tmp_path / "missing.rom")
    assert code == 2 and "no BIOS image file" in err
    assert (home / "machines" / "web" / "web.vm").read_text() == before
    with pytest.raises(SystemExit):
        main(["modifyvm", "web", "--boot1", "tape"])
    assert "invalid choice" in capsys.readouterr().err
    code, _, err = run(capsys, "modifyvm", "web", "--memory", 0)
    assert code == 2 and "memory_mb" in err
    assert (home / "machines" / "web" / "web.vm").read_text() == before


def test_createmedium_esx(home, tmp_path, capsys):
    import subprocess
    out = ok(capsys, "createmedium", "disk", "--filename", tmp_path / "esx", "--size", 4,
             "--format", "VMDK", "--variant", "ESX")
    uuid = out.split("UUID: ")[1].strip()
    text = (tmp_path / "esx.vmdk").read_text()
    assert 'createType="vmfs"' in text and 'RW 8192 VMFS "esx-flat.vmdk"\n' in text
    assert (tmp_path / "esx-flat.vmdk").stat().st_size == 4 * MiB
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", str(tmp_path / "esx.vmdk")],
        capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "vmdk" and info["virtual-size"] == 4 * MiB
    assert info["format-specific"]["data"]["create-type"] == "vmfs"
    info = json.loads(ok(capsys, "showmediuminfo", uuid, "--json"))
    assert info["variant"] == "vmfs" and info["format"] == "vmdk"
    with open_image(tmp_path / "esx.vmdk", writable=True) as image:
        image.write(MiB, b"on the datastore")
    with open(tmp_path / "esx-flat.vmdk", "rb") as f:
        f.seek(MiB)
        assert f.read(16) == b"on the datastore"
    # Written to by drivebay (the descriptor re-rendered): still QEMU's vmfs.
    assert 'RW 8192 VMFS "esx-flat.vmdk"\n' in (tmp_path / "esx.vmdk").read_text()
    subprocess.run(["qemu-img", "info", str(tmp_path / "esx.vmdk")], capture_output=True,
                   check=True)
    for variant, message in (("ESX,Stream", "preallocated VMFS disk"),
                             ("ESX", "already exists")):
        code, _, err = run(capsys, "createmedium", "--filename", tmp_path / "esx.vmdk",
                           "--size", 1, "--variant", variant)
        assert code == 2 and message in err, err
    code, _, err = run(capsys, "createmedium", "--filename", tmp_path / "d.vmdk",
                       "--diffparent", uuid, "--variant", "ESX")
    assert code == 2 and "has no parent" in err
    code, _, err = run(capsys, "clonemedium", uuid, tmp_path / "c.vmdk", "--variant", "ESX")
    assert code == 2 and "made by createmedium" in err


def _host_disk(path):
    """A 4 MiB disk with an MBR: partition 1 at 2048 (1 MiB), 2 at 4096 (1 MiB)."""
    data = bytearray(4 * MiB)
    for i, (first, count) in enumerate(((2048, 2048), (4096, 2048))):
        entry = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + first.to_bytes(4, "little") + \
            count.to_bytes(4, "little")
        data[446 + 16 * i:462 + 16 * i] = entry
        data[first * 512:(first + count) * 512] = bytes([0x11 * (i + 1)]) * (count * 512)
    data[510:512] = b"\x55\xaa"
    data[100:104] = b"boot"
    path.write_bytes(bytes(data))
    return bytes(data)


def test_createmedium_rawdisk(home, tmp_path, capsys):
    disk = _host_disk(tmp_path / "host.img")
    out = ok(capsys, "createmedium", "disk", "--filename", tmp_path / "full.vmdk", "--format",
             "VMDK", "--variant", "RawDisk", "--property", f"RawDrive={tmp_path / 'host.img'}")
    full = out.split("UUID: ")[1].strip()
    assert 'createType="fullDevice"' in (tmp_path / "full.vmdk").read_text()
    with home_locked() as h, h.media.open_chain(full) as c:
        assert c.read(0, c.size) == disk
    out = ok(capsys, "createmedium", "disk", "--filename", tmp_path / "part.vmdk", "--variant",
             "RawDisk", "--property", f"RawDrive={tmp_path / 'host.img'}",
             "--property", "Partitions=2")
    part = out.split("UUID: ")[1].strip()
    assert 'createType="partitionedDevice"' in (tmp_path / "part.vmdk").read_text()
    with home_locked() as h, h.media.open_chain(part) as c:
        seen = c.read(0, c.size)
    assert seen[:512] == disk[:512]                            # the private copy of the MBR
    assert seen[2048 * 512:4096 * 512] == bytes(MiB)           # partition 1 is not given
    assert seen[4096 * 512:6144 * 512] == disk[4096 * 512:6144 * 512]
    for extra, message in (([], "needs --property RawDrive"),
                           (["--property", f"RawDrive={tmp_path / 'none'}"], "no such device"),
                           (["--property", f"RawDrive={tmp_path / 'host.img'}",
                             "--property", "Partitions=x"], "partition numbers"),
                           (["--property", f"RawDrive={tmp_path / 'host.img'}",
                             "--size", 4], "do not apply"),
                           (["--property", "Colour=blue"], "unknown --property Colour")):
        code, _, err = run(capsys, "createmedium", "--filename", tmp_path / "bad.vmdk",
                           "--variant", "RawDisk", *extra)
        assert code == 2 and message in err, err
    code, _, err = run(capsys, "createmedium", "--filename", tmp_path / "x.vdi", "--size", 1,
                       "--property", "RawDrive=/dev/null")
    assert code == 2 and "only RawDisk takes properties" in err
    assert not (tmp_path / "bad.vmdk").exists()


def home_locked():
    from drivebay.system.vm import Home
    return Home().locked()

"""storageattach --setuuid / --setparentuuid: image headers rewritten, the media
registry and the VM files kept consistent, chains intact, data byte-exact."""

import os
import shutil
import subprocess
import uuid as uuidlib

import pytest

from drivebay.block.drivers import open_image
from drivebay.block.vdi import VdiDriver
from drivebay.block.vhd import VhdDriver
from drivebay.block.vmdk import VmdkDriver
from drivebay.errors import MediaError
from drivebay.system import medium_ids, snapshots
from drivebay.system import vm as vmmod
from drivebay.system.cli import main
from drivebay.system.vm import Home

MiB = 1 << 20
DRIVERS = {"vdi": VdiDriver, "vhd": VhdDriver, "vmdk": VmdkDriver}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIVEBAY_HOME", str(tmp_path / "home"))
    return Home()


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def pattern(n, seed):
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def make_disk(path, fmt="vdi", variant="dynamic", size=4 * MiB):
    DRIVERS[fmt].create(path, size, variant=variant)
    with open_image(path, writable=True) as image:
        image.write(0, pattern(64 * 1024, 1))
        image.write(3 * MiB, pattern(4096, 2))
    return str(path)


def file_uuid(path):
    with open_image(path) as image:
        return str(image.uuid)


def content(home, uuid):
    with home.locked(), home.media.open_chain(uuid) as c:
        return c.read(0, c.size)


def new_vm(home, disk, name="web"):
    with home.locked():
        vm = home.create_vm(name, "Ubuntu_64")
        vmmod.add_controller(vm, "SATA", "sata")
        vmmod.attach(home, vm, "SATA", 0, 0, type="hdd", medium=disk)
        home.media.save()
        vm.save()
    return vm


def qemu_img(*args):
    done = subprocess.run(["qemu-img", *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("fmt,variant", [("vdi", "dynamic"), ("vdi", "fixed"),
                                         ("vhd", "dynamic"), ("vhd", "fixed"),
                                         ("vmdk", "dynamic")])
def test_a_file_copy_attaches_with_setuuid_empty(home, tmp_path, capsys, fmt, variant):
    original = make_disk(tmp_path / f"a.{fmt}", fmt, variant)
    assert cli(capsys, "vm", "create", "--name", "web", "--ostype", "Ubuntu_64",
               "--no-disk")[0] == 0
    assert cli(capsys, "storageattach", "web", "--storagectl", "SATA", "--port", 0,
               "--type", "hdd", "--medium", original)[0] == 0
    copy = str(tmp_path / f"copy.{fmt}")
    shutil.copyfile(original, copy)
    code, _, err = cli(capsys, "storageattach", "web", "--storagectl", "SATA", "--port", 1,
                       "--type", "hdd", "--medium", copy)
    assert code == 2 and "already exists" in err and "clonemedium" in err
    code, _, err = cli(capsys, "storageattach", "web", "--storagectl", "SATA", "--port", 1,
                       "--type", "hdd", "--medium", copy, "--setuuid", "")
    assert code == 0, err
    new = file_uuid(copy)
    assert new != file_uuid(original)
    with home.locked():
        vm = home.find_vm("web")
        assert vm.config.attachment_at("SATA", 1, 0).medium == new
        assert home.media.get(new).location == copy
    assert content(home, new) == content(home, file_uuid(original))
    with open_image(copy) as image:
        assert image.variant == open_image(original).variant
    qfmt = {"vhd": "vpc"}.get(fmt, fmt)
    qemu_img("compare", "-f", qfmt, "-F", qfmt, original, copy)
    if fmt != "vhd":                # qemu-img has no check for VHD
        qemu_img("check", "-f", fmt, copy)


def test_setuuid_on_a_registered_disk_with_snapshots_follows_everywhere(home, tmp_path):
    disk = make_disk(tmp_path / "base.vdi")
    new_vm(home, disk)
    old = file_uuid(disk)
    snapshots.take(home, "web", "one")
    with home.locked():
        top = home.find_vm("web").config.attachments[0].medium
        with home.media.open_chain(top, writable=True) as c:
            c.write(MiB, b"after snapshot" * 100)
    before = content(home, top)
    given = "0f0e0d0c-0b0a-4908-8706-050403020100"
    with home.locked():
        assert medium_ids.set_uuid(home, disk, "hdd", given) == given
    assert file_uuid(disk) == given
    with home.locked():
        reg = home.media
        assert reg.get(old) is None and reg.get(given).location == disk
        child = reg.get(top)
        assert child.parent == given
        vm = home.find_vm("web")
        frozen = vm.snapshot("one").config.attachments[0].medium
        assert frozen == given                       # the snapshot names the new UUID
    with open_image(child.location) as image:
        assert str(image.parent_uuid) == given        # the child image was relinked
    assert content(home, top) == before
    again = Home()
    with again.locked():
        assert again.find_vm("web").snapshot("one").config.attachments[0].medium == given
    with snapshots.power_on(again, "web") as session:
        buf = bytearray(14)
        session.backends[("SATA", 0, 0)].readinto(MiB, buf)
        assert buf == b"after snapshot"
    snapshots.restore(again, "web", "one")
    assert content(again, current_medium(again)) == content(again, given)


def allocation(path):
    with open_image(path) as image:
        return [(e.offset, e.length, e.state) for e in image.block_status(0, image.size)]


def current_medium(home):
    with home.locked():
        return home.find_vm("web").config.attachments[0].medium


def test_setuuid_keeps_a_differencing_images_zeroed_ranges(home, tmp_path):
    """A range written with zeros in the child hides the parent's data: it must
    stay hidden after the rewrite (a plain copy would let the parent show)."""
    disk = make_disk(tmp_path / "base.vdi")
    new_vm(home, disk)
    snapshots.take(home, "web", "one")
    top = current_medium(home)
    with home.locked(), home.media.open_chain(top, writable=True) as c:
        c.write_zeroes(0, MiB)
        c.write(2 * MiB + 512, pattern(1024, 9))
    before = content(home, top)
    assert before[:MiB] == bytes(MiB)
    with home.locked():
        location = home.media.get(top).location
    states = allocation(location)
    with home.locked():
        new = medium_ids.set_uuid(home, top, "hdd", "")
        assert home.media.get(new).location == location
    assert content(home, new) == before
    assert current_medium(home) == new
    assert allocation(location) == states
    with open_image(location) as image:
        assert image.check().clean


def test_setuuid_refusals_change_nothing(home, tmp_path, capsys):
    a = make_disk(tmp_path / "a.vdi")
    b = make_disk(tmp_path / "b.vdi")
    new_vm(home, a)
    with home.locked():
        home.media.add(b)
    raw_before = open(a, "rb").read()
    with home.locked():
        with pytest.raises(MediaError, match="already has this UUID"):
            medium_ids.set_uuid(home, a, "hdd", file_uuid(b))
        with pytest.raises(MediaError, match="not a UUID"):
            medium_ids.set_uuid(home, a, "hdd", "banana")
    VmdkDriver.create(tmp_path / "split.vmdk", 4 * MiB, variant="split2g")
    with home.locked():
        with pytest.raises(MediaError, match="twoGbMaxExtentSparse.*clonemedium"):
            medium_ids.set_uuid(home, str(tmp_path / "split.vmdk"), "hdd", "")
    with snapshots.power_on(home, "web"):
        code, _, err = cli(capsys, "storageattach", "web", "--storagectl", "SATA", "--port", 0,
                           "--medium", a, "--setuuid", "")
        assert code == 2 and "running" in err
    code, _, err = cli(capsys, "storageattach", "web", "--storagectl", "SATA", "--port", 1,
                       "--type", "hdd", "--medium", "emptydrive", "--setuuid", "")
    assert code == 2 and "must name the image" in err
    assert open(a, "rb").read() == raw_before
    assert not [n for n in os.listdir(tmp_path) if "setuuid-tmp" in n]


def test_setuuid_on_an_image_without_a_uuid_changes_the_registry(home, tmp_path):
    raw = tmp_path / "disk.img"
    raw.write_bytes(pattern(MiB, 3))
    new_vm(home, str(raw))
    with home.locked():
        old = home.media.by_location(str(raw)).uuid
        new = medium_ids.set_uuid(home, str(raw), "hdd", "")
    assert new != old and raw.read_bytes() == pattern(MiB, 3)
    assert current_medium(home) == new


def test_setparentuuid_relinks_a_differencing_image(home, tmp_path, capsys):
    base = make_disk(tmp_path / "base.vdi")
    with home.locked():
        parent = home.media.add(base)
        child = home.media.create_diff(parent.uuid, str(tmp_path / "child.vdi"))
        with home.media.open_chain(child.uuid, writable=True) as c:
            c.write(512, b"child data")
        home.media.save()
    # A copy of the parent with a UUID of its own, then the child moved onto it.
    code, _, err = cli(capsys, "clonemedium", "disk", base, tmp_path / "base2.vdi")
    assert code == 0, err
    twin = file_uuid(tmp_path / "base2.vdi")
    before = content(home, child.uuid)
    assert cli(capsys, "vm", "create", "--name", "web", "--ostype", "Ubuntu_64",
               "--no-disk")[0] == 0
    code, _, err = cli(capsys, "storageattach", "web", "--storagectl", "SATA", "--port", 0,
                       "--type", "hdd", "--medium", child.uuid, "--setparentuuid", twin)
    assert code == 0, err
    with open_image(child.location) as image:
        assert str(image.parent_uuid) == twin
    with home.locked():
        assert home.media.get(child.uuid).parent == twin
        assert [m.uuid for m in home.media.children(parent.uuid)] == []
    assert content(home, child.uuid) == before
    for bad, message in (("", "random parent"), (str(uuidlib.uuid4()), "no registered"),
                         (child.uuid, "a loop")):
        code, _, err = cli(capsys, "storageattach", "web", "--storagectl", "SATA", "--port", 0,
                           "--medium", twin, "--setparentuuid", bad)
        assert code == 2 and message in err, err
    fixed = make_disk(tmp_path / "fixed.vdi", variant="fixed")
    with home.locked():
        with pytest.raises(MediaError, match="fixed VDI image cannot have a parent"):
            medium_ids.set_parent_uuid(home, fixed, "hdd", twin)
        assert home.media.by_location(fixed).parent is None

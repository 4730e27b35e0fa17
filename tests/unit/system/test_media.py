"""The Virtual Media Manager (block/media.py) with the VM files as its users."""

import json
import os
import shutil
import struct

import pytest

from drivebay.block import optical
from drivebay.block.drivers import open_image
from drivebay.block.media import MediaRegistry, home_lock
from drivebay.block.vdi import VdiDriver
from drivebay.block.vhd import VhdDriver
from drivebay.errors import ConfigError, FormatError, ImageError, MediaError
from drivebay.system import vm as vmmod
from drivebay.system.vm import Home

MiB = 1 << 20


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIVEBAY_HOME", str(tmp_path / "home"))
    return Home()


def vdi(tmp_path, name="d.vdi", size=2 * MiB, variant="dynamic"):
    path = tmp_path / name
    VdiDriver.create(path, size, variant=variant)
    return str(path)


def new_vm(home, name="web"):
    with home.locked():
        vm = home.create_vm(name, "Ubuntu_64")
        vmmod.add_controller(vm, "SATA", "sata")
        vm.save()
    return vm


def attach(home, name, port, medium, **kw):
    with home.locked():
        vm = home.find_vm(name)
        vmmod.attach(home, vm, "SATA", port, 0, type=kw.pop("type", "hdd"), medium=medium, **kw)
        home.media.save()
        vm.save()


# -- registering --------------------------------------------------------------------------

def test_add_is_idempotent_and_persisted(home, tmp_path):
    path = vdi(tmp_path)
    with home.locked():
        m = home.media.add(path)
        assert home.media.add(path) is m
    reg = MediaRegistry.load(home.path)
    again = reg.find(path)
    assert again.uuid == m.uuid and again.format == "vdi" and again.type == "normal"
    assert reg.find(m.uuid) is again and reg.find("d.vdi") is again
    data = json.loads(open(reg.path).read())
    assert data["schema"] == 1 and data["hard_disks"][0]["location"] == path


def test_duplicate_uuid_is_refused_pointing_to_clone(home, tmp_path):
    path = vdi(tmp_path)
    copy = str(tmp_path / "copy.vdi")
    shutil.copyfile(path, copy)
    with home.locked():
        m = home.media.add(path)
        with pytest.raises(MediaError) as e:
            home.media.add(copy)
    text = str(e.value)
    assert text.startswith(f"Cannot register the hard disk '{copy}' {{{m.uuid}}} because a "
                           f"hard disk '{path}' with UUID {{{m.uuid}}} already exists")
    assert "clonemedium" in text
    with home.locked():
        clone = home.media.copy(m.uuid, str(tmp_path / "clone.vdi"))
        assert clone.uuid != m.uuid


def test_differencing_image_registers_its_parent(home, tmp_path):
    base = vdi(tmp_path, "base.vdi")
    child = str(tmp_path / "child.vdi")
    with open_image(base) as parent:
        VdiDriver.create(child, None, parent=parent)
    with home.locked():
        c = home.media.add(child)
        p = home.media.find(base)
        assert c.parent == p.uuid
        assert [m.location for m, _ in home.media.tree()] == [base, child]
        with home.media.open_chain(c.uuid) as chain:
            assert len(chain.images) == 2


def test_removable_media(home, tmp_path):
    iso = tmp_path / "cd.iso"
    optical.build_iso(iso, [])
    big = tmp_path / "big.img"
    big.write_bytes(bytes(4_030_465))
    with home.locked():
        cd = home.media.add(iso, "dvd")
        assert cd.format == "iso" and cd.type == "readonly" and not cd.uuid_in_image
        with pytest.raises(MediaError, match="largest floppy"):
            home.media.add(big, "floppy")
        with pytest.raises(MediaError, match=r"to 'normal' \(allowed: readonly\)"):
            home.media.set_type(cd.uuid, "normal")


# -- write modes ------------------------------------------------------------------------

def test_shareable_needs_a_fixed_image(home, tmp_path):
    with home.locked():
        dyn = home.media.add(vdi(tmp_path, "dyn.vdi"))
        fixed = home.media.add(vdi(tmp_path, "fixed.vdi", variant="fixed"))
        with pytest.raises(MediaError, match="dynamic medium storage unit"):
            home.media.set_type(dyn.uuid, "shareable")
        assert dyn.type == "normal"
        home.media.set_type(fixed.uuid, "shareable")
        assert fixed.type == "shareable"


def test_type_changes_refused_for_differencing_and_parents(home, tmp_path):
    with home.locked():
        base = home.media.add(vdi(tmp_path))
        diff = home.media.create_diff(base.uuid)
        with pytest.raises(MediaError, match="is a differencing medium"):
            home.media.set_type(diff.uuid, "writethrough")
        with pytest.raises(MediaError, match="since it has 1 child media"):
            home.media.set_type(base.uuid, "immutable")
        with pytest.raises(MediaError, match="not allowed|Cannot change the type"):
            home.media.set_type(base.uuid, "readonly")
        with pytest.raises(MediaError, match="not immutable"):
            home.media.set_autoreset(base.uuid, False)


def test_type_change_refused_when_attached_to_two_vms(home, tmp_path):
    disk = vdi(tmp_path)
    new_vm(home, "a")
    new_vm(home, "b")
    attach(home, "a", 0, disk)
    attach(home, "b", 0, disk)
    with home.locked():
        with pytest.raises(MediaError, match="more than one virtual machine"):
            home.media.set_type(home.media.find(disk).uuid, "writethrough")
        home.media.set_type(home.media.find(disk).uuid, "multiattach")


# -- move, remove, release, search, properties ----------------------------------------------

def test_move_updates_every_vm_file(home, tmp_path):
    disk = vdi(tmp_path)
    new_vm(home, "a")
    new_vm(home, "b")
    attach(home, "a", 0, disk)
    attach(home, "b", 0, disk)
    dest = tmp_path / "elsewhere" / "moved.vdi"
    with home.locked():
        m = home.media.find(disk)
        home.media.move(m.uuid, str(dest))
    assert not os.path.exists(disk) and dest.exists()
    for name in ("a", "b"):
        data = json.loads(open(home.entries()[0 if name == "a" else 1].path).read())
        assert data["config"]["attachments"][0]["location"] == str(dest)
    assert MediaRegistry.load(home.path).get(m.uuid).location == str(dest)


def test_move_keeps_vhd_children_linked(home, tmp_path):
    base = tmp_path / "base.vhd"
    VhdDriver.create(base, 2 * MiB)
    with home.locked():
        b = home.media.add(base)
        c = home.media.create_diff(b.uuid, str(tmp_path / "child.vhd"))
        home.media.move(b.uuid, str(tmp_path / "sub" / "base.vhd"))
    from drivebay.block.chain import open_chain
    with open_chain(c.location) as chain:          # without the registry: the locator
        assert chain.images[1].path.endswith("sub/base.vhd")


def test_remove_refused_while_attached_or_parent(home, tmp_path):
    disk = vdi(tmp_path)
    new_vm(home)
    attach(home, "web", 0, disk)
    with home.locked():
        m = home.media.find(disk)
        with pytest.raises(MediaError, match="still attached to 1 virtual machines"):
            home.media.remove(m.uuid)
        assert home.media.release(m.uuid) == ["web"]
        d = home.media.create_diff(m.uuid)
        with pytest.raises(MediaError, match="1 child media"):
            home.media.remove(m.uuid)
        home.media.remove(d.uuid, delete=True)
        assert not os.path.exists(d.location)
        home.media.remove(m.uuid, delete=True)
    assert not os.path.exists(disk)
    assert MediaRegistry.load(home.path).media == {}


def test_release_empties_dvd_drives(home, tmp_path):
    iso = tmp_path / "cd.iso"
    optical.build_iso(iso, [])
    new_vm(home)
    attach(home, "web", 1, str(iso), type="dvddrive")
    with home.locked():
        home.media.release(home.media.find(str(iso)).uuid)
        a = home.find_vm("web").config.attachment_at("SATA", 1, 0)
        assert a.type == "dvddrive" and a.medium is None


def test_clear_inaccessible_only_removable(home, tmp_path):
    iso = tmp_path / "cd.iso"
    optical.build_iso(iso, [])
    disk = vdi(tmp_path)
    with home.locked():
        home.media.add(iso, "dvd")
        home.media.add(disk)
    os.unlink(iso)
    os.unlink(disk)
    with home.locked():
        gone = home.media.clear_inaccessible()
        assert [m.location for m in gone] == [str(iso)]
        assert home.media.find(disk).accessible is False
        assert home.media.info(home.media.find(disk).uuid)["state"] == "inaccessible"


def test_search_info_properties_refresh(home, tmp_path):
    disk = vdi(tmp_path, "system-disk.vdi")
    with home.locked():
        m = home.media.add(disk)
        assert home.media.search("system") == [m]
        assert home.media.search(m.uuid[:8]) == [m]
        home.media.set_description(m.uuid, "the OS")
        home.media.set_property(m.uuid, "AllocationBlockSize", "1048576")
        info = home.media.info(m.uuid)
        assert info["capacity"] == 2 * MiB and info["description"] == "the OS"
        assert info["properties"] == {"AllocationBlockSize": "1048576"}
        home.media.resize(m.uuid, 4 * MiB)
        assert home.media.info(m.uuid)["capacity"] == 4 * MiB
        with pytest.raises(MediaError, match="shrinking"):
            home.media.resize(m.uuid, MiB)
        assert home.media.refresh() == {}
    os.unlink(disk)
    vdi(tmp_path, "system-disk.vdi")            # another image at the same place
    with home.locked():
        problems = home.media.refresh()
        assert "UUID" in problems[m.uuid]


def test_copy_formats(home, tmp_path):
    with home.locked():
        m = home.media.add(vdi(tmp_path))
        with home.media.open_chain(m.uuid, writable=True) as c:
            c.write(4096, b"data")
        vhd = home.media.copy(m.uuid, str(tmp_path / "copy.vhd"), format="vhd")
        with home.media.open_chain(vhd.uuid) as c:
            assert c.read(4096, 4) == b"data"
        vmdk = home.media.copy(m.uuid, str(tmp_path / "copy.vmdk"), format="vmdk")
        with home.media.open_chain(vmdk.uuid) as c:
            assert c.read(4096, 4) == b"data"
        with pytest.raises(FormatError, match="unknown image format 'qcow2'"):
            home.media.copy(m.uuid, str(tmp_path / "copy.qcow2"), format="qcow2")


def test_copy_checks_free_space(home, tmp_path, monkeypatch):
    with home.locked():
        m = home.media.add(vdi(tmp_path))
        with home.media.open_chain(m.uuid, writable=True) as c:
            c.write(0, b"x" * 65536)
        monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 0))
        with pytest.raises(MediaError, match="nothing was changed"):
            home.media.copy(m.uuid, str(tmp_path / "copy.vdi"))
    assert not (tmp_path / "copy.vdi").exists()


# -- the registry file ---------------------------------------------------------------------

@pytest.mark.parametrize("edit,field", [
    (lambda d: d.update(schema=7), "schema"),
    (lambda d: d["hard_disks"][0].update(type="fast"), "hard_disks[0].type"),
    (lambda d: d["hard_disks"][0].update(location="relative.vdi"), "hard_disks[0].location"),
    (lambda d: d["hard_disks"][0].pop("uuid"), "hard_disks[0].uuid"),
    (lambda d: d["hard_disks"][0].update(extra=1), "hard_disks[0].extra"),
    (lambda d: d["hard_disks"].append(dict(d["hard_disks"][0])), "hard_disks[1]"),
    (lambda d: d["hard_disks"][0].update(parent="6f1c5b6a-0000-4000-8000-000000000000"),
     "parent"),
])
def test_corrupt_registry_is_refused_and_unchanged(home, tmp_path, edit, field):
    with home.locked():
        home.media.add(vdi(tmp_path))
    path = os.path.join(home.path, "media.json")
    data = json.loads(open(path).read())
    edit(data)
    text = json.dumps(data)
    open(path, "w").write(text)
    with pytest.raises(MediaError) as e:
        with home.locked():
            home.media.add(vdi(tmp_path, "other.vdi"))
    assert path in str(e.value) and field in str(e.value)
    assert open(path).read() == text


def test_lock_is_reentrant(home):
    with home_lock(home.path), home_lock(home.path):
        pass


def test_vm_file_of_other_vm_named_when_corrupt(home, tmp_path):
    disk = vdi(tmp_path)
    new_vm(home, "a")
    attach(home, "a", 0, disk)
    path = home.entries()[0].path
    open(path, "w").write("{}")
    with pytest.raises(ConfigError, match=path):
        with home.locked():
            home.media.remove(home.media.find(disk).uuid)


# -- ISO 9660 / Joliet / Rock Ridge writer ----------------------------------------------------

def _dir_records(data, extent, size):
    out, at = [], extent * 2048
    end = at + size
    while at < end:
        n = data[at]
        if n == 0:
            at = (at // 2048 + 1) * 2048
            continue
        rec = data[at:at + n]
        loc = struct.unpack_from("<I", rec, 2)[0]
        length = struct.unpack_from("<I", rec, 10)[0]
        flags, idlen = rec[25], rec[32]
        ident = rec[33:33 + idlen]
        su = rec[33 + idlen + (1 - idlen % 2):]
        out.append((ident, loc, length, flags, su))
        at += n
    return out


def _rr_name(su):
    at = 0
    while at + 4 <= len(su):
        sig, n = su[at:at + 2], su[at + 2]
        if n == 0:
            break
        if sig == b"NM":
            return su[at + 5:at + n].decode()
        at += n
    return None


def test_iso_has_primary_joliet_and_rock_ridge_names(tmp_path):
    src = tmp_path / "src"
    (src / "Sub Folder").mkdir(parents=True)
    (src / "readme.txt").write_bytes(b"hello")
    (src / "Sub Folder" / "A long name, with spaces.data").write_bytes(b"x" * 5000)
    iso = tmp_path / "cd.iso"
    size = optical.build_iso(iso, {"/": str(src)}, volume_id="test disc", now=1_700_000_000)
    data = iso.read_bytes()
    assert len(data) == size and size % 2048 == 0
    assert data[16 * 2048:16 * 2048 + 6] == b"\x01CD001"
    assert data[16 * 2048 + 40:16 * 2048 + 49] == b"TEST_DISC"
    assert data[17 * 2048:17 * 2048 + 6] == b"\x02CD001"
    assert data[17 * 2048 + 88:17 * 2048 + 91] == b"%/E"
    assert data[18 * 2048:18 * 2048 + 6] == b"\xffCD001"
    root = data[16 * 2048 + 156:16 * 2048 + 190]
    recs = _dir_records(data, *struct.unpack_from("<I", root, 2), struct.unpack_from("<I", root, 10)[0])
    assert recs[0][4][:2] == b"SP"                        # SUSP in the root's "." record
    names = {r[0]: r for r in recs[2:]}
    assert set(names) == {b"README.TXT;1", b"SUB_FOLD"}
    readme = names[b"README.TXT;1"]
    assert _rr_name(readme[4]) == "readme.txt"
    assert data[readme[1] * 2048:readme[1] * 2048 + readme[2]] == b"hello"
    sub = names[b"SUB_FOLD"]
    assert sub[3] & 2 and _rr_name(sub[4]) == "Sub Folder"
    inner = _dir_records(data, sub[1], sub[2])[2]
    assert _rr_name(inner[4]) == "A long name, with spaces.data" and inner[2] == 5000
    jroot = data[17 * 2048 + 156:17 * 2048 + 190]
    jrecs = _dir_records(data, struct.unpack_from("<I", jroot, 2)[0],
                         struct.unpack_from("<I", jroot, 10)[0])
    assert sorted(r[0].decode("utf-16-be") for r in jrecs[2:]) == ["Sub Folder", "readme.txt"]


def test_iso_long_rock_ridge_names_use_continuation_areas(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    long_name = "n" * 200 + ".txt"
    (src / long_name).write_bytes(b"long")
    iso = tmp_path / "cd.iso"
    optical.build_iso(iso, {"/": str(src)})
    data = iso.read_bytes()
    root = data[16 * 2048 + 156:16 * 2048 + 190]
    recs = _dir_records(data, struct.unpack_from("<I", root, 2)[0], 2048)
    su = recs[2][4]
    ce = su.index(b"CE")
    block, offset, length = (struct.unpack_from("<I", su, ce + 4)[0],
                             struct.unpack_from("<I", su, ce + 12)[0],
                             struct.unpack_from("<I", su, ce + 20)[0])
    area = data[block * 2048 + offset:block * 2048 + offset + length]
    assert _rr_name(area) == long_name


def test_iso_refusals_and_viso(tmp_path):
    deep = tmp_path / "deep"
    p = deep
    for i in range(9):
        p = p / f"d{i}"
    p.mkdir(parents=True)
    with pytest.raises(ImageError, match="levels deep"):
        optical.build_iso(tmp_path / "x.iso", [str(deep)])
    assert not (tmp_path / "x.iso").exists()
    f = tmp_path / "file.bin"
    f.write_bytes(b"abc")
    viso = tmp_path / "disc.viso"
    optical.write_viso(viso, {"/docs/file.bin": str(f)}, volume_id="DOCS")
    assert viso.read_text().startswith(optical.VISO_MARKER)
    volume, mapping = optical.read_viso(viso)
    assert volume == "DOCS" and mapping == {"/docs/file.bin": str(f)}
    optical.build_iso_from_viso(viso, tmp_path / "disc.iso")
    assert b"abc" in (tmp_path / "disc.iso").read_bytes()

"""Snapshots, write modes at power-on, and what survives an interrupted operation."""

import json
import os
import shutil

import pytest

from drivebay.block import merge as merge_mod
from drivebay.block.raw import RawDriver
from drivebay.block.vdi import VdiDriver
from drivebay.block.vhd import VhdDriver
from drivebay.errors import ConfigError, ImageError, MediaError
from drivebay.system import snapshots
from drivebay.system import vm as vmmod
from drivebay.system.vm import Home

MiB = 1 << 20


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIVEBAY_HOME", str(tmp_path / "home"))
    return Home()


def make_disk(tmp_path, name="disk.vdi", size=2 * MiB, variant="dynamic"):
    path = tmp_path / name
    {"vdi": VdiDriver, "vhd": VhdDriver, "raw": RawDriver}[name.rsplit(".", 1)[1]].create(
        path, size, variant=variant)
    return str(path)


def new_vm(home, name="web", disks=(), types=()):
    """A VM with a SATA controller and ``disks`` on ports 0, 1, ..."""
    with home.locked():
        vm = home.create_vm(name, "Ubuntu_64")
        vmmod.add_controller(vm, "SATA", "sata")
        for port, disk in enumerate(disks):
            mtype = types[port] if port < len(types) else None
            vmmod.attach(home, vm, "SATA", port, 0, type="hdd", medium=disk, mtype=mtype)
        home.media.save()
        vm.save()
    return vm


def current(home, name="web", port=0):
    with home.locked():
        return home.find_vm(name).config.attachment_at("SATA", port, 0).medium


def write(home, data, name="web", port=0, offset=0):
    with home.locked():
        with home.media.open_chain(current(home, name, port), writable=True) as c:
            c.write(offset, data)


def read(home, name="web", port=0, offset=0, n=4):
    with home.locked():
        with home.media.open_chain(current(home, name, port)) as c:
            return c.read(offset, n)


def read_snapshot(home, snap_name, name="web", port=0, n=4):
    with home.locked():
        vm = home.find_vm(name)
        medium = vm.snapshot(snap_name).config.attachment_at("SATA", port, 0).medium
        with home.media.open_chain(medium) as c:
            return c.read(0, n)


def snapshot_files(home, name="web"):
    folder = os.path.join(home.path, "machines", name, "Snapshots")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


# -- take, restore, delete -------------------------------------------------------------------

def test_take_restore_delete_chain(home, tmp_path):
    new_vm(home, disks=[make_disk(tmp_path)])
    write(home, b"AAAA")
    one = snapshots.take(home, "web", "one", "installed")
    write(home, b"BBBB")
    snapshots.take(home, "web", "two")
    write(home, b"CCCC")
    assert (read_snapshot(home, "one"), read_snapshot(home, "two")) == (b"AAAA", b"BBBB")
    snapshots.restore(home, "web", "one")
    assert read(home) == b"AAAA"
    write(home, b"DDDD")
    snapshots.restore(home, "web", "one")                 # the changes since are thrown away
    assert read(home) == b"AAAA"
    snapshots.restore(home, "web")                        # restorecurrent
    assert read(home) == b"AAAA"
    with home.locked():
        vm = home.find_vm("web")
        assert vm.current_snapshot == one.uuid and vm.snapshot("one").description == "installed"
    result = snapshots.delete(home, "web", "one")       # "one" has two branches now
    assert result.kept and not result.merged
    assert read_snapshot(home, "two") == b"BBBB" and read(home) == b"AAAA"
    snapshots.delete(home, "web", "two")
    assert read(home) == b"AAAA"
    with home.locked():
        vm = home.find_vm("web")
        assert vm.snapshots == [] and vm.current_snapshot is None
    assert len(snapshot_files(home)) == 1                 # the current state's image


def test_delete_merges_a_linear_chain_back_into_the_base(home, tmp_path):
    new_vm(home, disks=[make_disk(tmp_path)])
    for i in range(3):
        write(home, b"%04d" % i)
        snapshots.take(home, "web", f"s{i}")
    write(home, b"last")
    snapshots.delete(home, "web", "s1")
    assert [read_snapshot(home, n) for n in ("s0", "s2")] == [b"0000", b"0002"]
    result = snapshots.delete(home, "web", "s0")
    assert result.merged and result.removed
    snapshots.delete(home, "web", "s2")
    assert read(home) == b"last"
    with home.locked():
        assert [m.parent for m in home.media.media.values()] == [None]
        assert home.find_vm("web").config.attachments[0].location == str(tmp_path / "disk.vdi")
    assert snapshot_files(home) == []


def test_snapshot_copies_the_settings(home, tmp_path):
    new_vm(home, disks=[make_disk(tmp_path)])
    snapshots.take(home, "web", "before")
    with home.locked():
        vm = home.find_vm("web")
        vmmod.add_controller(vm, "SCSI", "scsi")
        vmmod.bandwidth_add(vm, "Limit", limit="10M")
        vm.save()
    snapshots.restore(home, "web", "before")
    with home.locked():
        vm = home.find_vm("web")
        assert [c.name for c in vm.config.controllers] == ["SATA"]
        assert vm.config.bandwidth_groups == []


def test_delete_with_branches_keeps_the_shared_parent(home, tmp_path):
    new_vm(home, disks=[make_disk(tmp_path)])
    write(home, b"base")
    snapshots.take(home, "web", "root")
    write(home, b"left")
    snapshots.take(home, "web", "left")
    snapshots.restore(home, "web", "root")
    write(home, b"righ")
    snapshots.take(home, "web", "right")
    result = snapshots.delete(home, "web", "root")
    assert result.kept and not result.merged
    assert (read_snapshot(home, "left"), read_snapshot(home, "right")) == (b"left", b"righ")
    with home.locked():
        vm = home.find_vm("web")
        assert {s.name: s.parent for s in vm.snapshots} == {"left": None, "right": None} or \
            all(s.parent is None for s in vm.snapshots)


def test_unique_names_edit_and_tree(home, tmp_path):
    new_vm(home, disks=[make_disk(tmp_path)])
    snapshots.take(home, "web", "s")
    snapshots.take(home, "web", "s", unique_name="Number")
    snapshots.take(home, "web", "s", unique_name="Number")
    snapshots.edit(home, "web", "s 2", name="third", description="d")
    with home.locked():
        vm = home.find_vm("web")
        assert [(s.name, d) for s, d in snapshots.tree(vm)] == [("s", 0), ("s 1", 1),
                                                               ("third", 2)]
        with pytest.raises(ConfigError, match="Could not find a snapshot"):
            vm.snapshot("nope")


# -- write modes -------------------------------------------------------------------------------

def test_writethrough_is_untouched_by_snapshots(home, tmp_path):
    new_vm(home, disks=[make_disk(tmp_path), make_disk(tmp_path, "wt.vdi")],
           types=[None, "writethrough"])
    wt = current(home, port=1)
    write(home, b"wt-1", port=1)
    snapshots.take(home, "web", "s")
    assert current(home, port=1) == wt                 # no differencing image
    write(home, b"wt-2", port=1)
    snapshots.restore(home, "web", "s")
    assert current(home, port=1) == wt and read(home, port=1) == b"wt-2"
    snapshots.delete(home, "web", "s")
    assert read(home, port=1) == b"wt-2"


def test_shareable_disks_run_in_two_vms_normal_in_one(home, tmp_path):
    shared = make_disk(tmp_path, "shared.vdi", variant="fixed")
    normal = make_disk(tmp_path, "normal.vdi")
    new_vm(home, "a", disks=[shared, normal], types=["shareable"])
    new_vm(home, "b", disks=[shared])
    new_vm(home, "c")
    with snapshots.power_on(home, "a") as sa, snapshots.power_on(home, "b") as sb:
        assert sa.running and sb.running
        with home.locked():
            vm = home.find_vm("c")
            with pytest.raises(MediaError, match="locked for writing by the running VM"):
                vmmod.attach(home, vm, "SATA", 0, 0, type="hdd", medium=normal)
    new_vm(home, "d", disks=[normal])
    with snapshots.power_on(home, "a"):
        with pytest.raises(MediaError, match="in use by another running VM"):
            snapshots.power_on(home, "d")
    snapshots.power_on(home, "d").close()
    with pytest.raises(MediaError, match="attached to VM"):
        snapshots.take(home, "a", "s")              # "d" would keep writing the frozen disk
    with home.locked():
        vmmod.attach(home, home.find_vm("d"), "SATA", 0, 0, medium="none")
        home.find_vm("d").save()
    snapshots.take(home, "a", "s")                  # the shareable disk is not frozen
    with home.locked():
        assert home.media.find(shared).uuid == current(home, "a", 0)


def test_dynamic_shareable_is_refused_at_attach(home, tmp_path):
    with pytest.raises(MediaError, match="dynamic medium storage unit"):
        new_vm(home, disks=[make_disk(tmp_path)], types=["shareable"])


def test_a_vm_runs_once(home, tmp_path):
    new_vm(home, disks=[make_disk(tmp_path)])
    with snapshots.power_on(home, "web"):
        with home.locked():
            assert vmmod.is_running(home.find_vm("web"))
        with pytest.raises(ConfigError, match="already running"):
            snapshots.power_on(home, "web")
        with pytest.raises(ConfigError, match="is running"):
            snapshots.restore(home, "web", None)
        with pytest.raises(ConfigError, match="its session takes the snapshot"):
            snapshots.take(home, "web", "x")
    with home.locked():
        assert not vmmod.is_running(home.find_vm("web"))


def test_immutable_reset_at_power_on(home, tmp_path):
    base = make_disk(tmp_path)
    new_vm(home, disks=[base], types=["immutable"])
    with snapshots.power_on(home, "web") as s:
        assert len(s.created) == 1 and s.reset == []
    diff = current(home)
    write(home, b"temp")
    assert read(home) == b"temp"
    with snapshots.power_on(home, "web") as s:
        assert s.reset == [s.devices[0].options["drives"][0]["path"]]
    assert current(home) == diff and read(home) == bytes(4)     # reset, same UUID
    with home.locked():
        home.media.set_autoreset(diff, False)                   # sets the base's flag
    write(home, b"kept")
    snapshots.power_on(home, "web").close()
    assert read(home) == b"kept"


def test_immutable_not_reset_with_an_online_current_snapshot(home, tmp_path):
    new_vm(home, disks=[make_disk(tmp_path)], types=["immutable"])
    with snapshots.power_on(home, "web") as s:
        write(home, b"one!")
        snap = s.take_snapshot("live")
        assert snap.online
        assert s.devices[0].extras[0]["uuid"] == current(home)
        write(home, b"two!")
    with snapshots.power_on(home, "web") as s:
        assert s.reset == []
    assert read(home) == b"two!"
    snapshots.take(home, "web", "offline")                      # now the current is offline
    with snapshots.power_on(home, "web") as s:
        assert s.reset
    assert read(home) == b"two!"                                # back to "offline"


def test_multiattach_gives_each_vm_its_own_diff_kept_across_power_on(home, tmp_path):
    base = make_disk(tmp_path)
    new_vm(home, "a", disks=[base], types=["multiattach"])
    new_vm(home, "b", disks=[base])
    with snapshots.power_on(home, "a") as sa, snapshots.power_on(home, "b") as sb:
        assert len(sa.created) == len(sb.created) == 1 and sa.created != sb.created
    da, db = current(home, "a"), current(home, "b")
    write(home, b"aaaa", "a")
    write(home, b"bbbb", "b")
    snapshots.power_on(home, "a").close()
    assert current(home, "a") == da and read(home, "a") == b"aaaa"
    assert read(home, "b") == b"bbbb"
    with home.locked():
        assert home.media.get(da).parent == home.media.get(db).parent == \
            home.media.find(base).uuid


def test_snapshot_refused_when_the_disk_is_also_attached_elsewhere(home, tmp_path):
    disk = make_disk(tmp_path)
    new_vm(home, "a", disks=[disk])
    new_vm(home, "b", disks=[disk])
    with pytest.raises(MediaError, match="attached to VM"):
        snapshots.take(home, "a", "s")
    with home.locked():
        assert home.find_vm("a").snapshots == []
        assert len(home.media.media) == 1


def test_attaching_a_frozen_image_is_refused(home, tmp_path):
    disk = make_disk(tmp_path)
    new_vm(home, "a", disks=[disk])
    snapshots.take(home, "a", "s")
    with pytest.raises(MediaError, match="differencing image"):
        new_vm(home, "b", disks=[disk])


@pytest.mark.parametrize("fmt", ["vhd", "raw"])
def test_snapshots_of_other_formats(home, tmp_path, fmt):
    new_vm(home, disks=[make_disk(tmp_path, f"disk.{fmt}")])
    write(home, b"one!")
    snapshots.take(home, "web", "a")
    write(home, b"two!")
    snapshots.take(home, "web", "b")
    write(home, b"3333")
    snapshots.delete(home, "web", "a")
    assert read_snapshot(home, "b") == b"two!" and read(home) == b"3333"
    snapshots.restore(home, "web", "b")
    assert read(home) == b"two!"
    snapshots.delete(home, "web", "b")
    assert read(home) == b"two!"


# -- failure safety ----------------------------------------------------------------------------

def test_delete_checks_free_space_first(home, tmp_path, monkeypatch):
    new_vm(home, disks=[make_disk(tmp_path)])
    snapshots.take(home, "web", "s")
    write(home, b"x" * 65536)
    before = open(home.entries()[0].path).read()
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 10))
    with pytest.raises(MediaError, match="nothing was changed"):
        snapshots.delete(home, "web", "s")
    assert open(home.entries()[0].path).read() == before


def test_interrupted_delete_leaves_a_usable_vm_and_finishes_later(home, tmp_path, monkeypatch):
    new_vm(home, disks=[make_disk(tmp_path)])
    write(home, b"old!")
    snapshots.take(home, "web", "s")
    write(home, b"new!" * 300_000)                         # more than one 1 MiB merge step
    real = merge_mod.merge_into_parent

    def dies_half_way(child, resolver=None, progress=None):
        def progress_then_die(done, total):
            raise ImageError("No space left on device (simulated)")
        return real(child, resolver=resolver, progress=progress_then_die)
    monkeypatch.setattr(merge_mod, "merge_into_parent", dies_half_way)
    with pytest.raises(ImageError, match="simulated"):
        snapshots.delete(home, "web", "s")
    assert read(home, n=8) == b"new!new!"                   # the current state reads right
    with home.locked():
        assert home.find_vm("web").snapshot("s").deleting
    with pytest.raises(ConfigError, match="run 'snapshot delete'"):
        snapshots.restore(home, "web", "s")
    with pytest.raises(ConfigError, match="interrupted"):
        snapshots.power_on(home, "web")
    monkeypatch.setattr(merge_mod, "merge_into_parent", real)
    snapshots.delete(home, "web", "s")
    assert read(home, n=8) == b"new!new!"
    assert snapshot_files(home) == []


def _merge_scenario(home, tmp_path):
    """A snapshot over 'old!' data, then 3 MiB of new data (three merge steps)
    and a zeroed range: returns what the current state and the snapshot show."""
    new_vm(home, disks=[make_disk(tmp_path, size=4 * MiB)])
    write(home, b"old!" * (MiB // 4))
    snapshots.take(home, "web", "s")
    write(home, bytes(range(256)) * (3 * MiB // 256), offset=MiB)
    with home.locked(), home.media.open_chain(current(home), writable=True) as c:
        c.write_zeroes(0, 4096)
    return read(home, n=4 * MiB)


def _usable_then_finished(home, want):
    """After an interrupted deletion: the images check clean (leaks allowed),
    the current state reads exactly, the VM refuses to start until the
    deletion is run again, which then finishes with the same content."""
    with home.locked():
        vm = home.find_vm("web")
        assert vm.snapshot("s").deleting
        base = home.media.chain(vm.config.attachments[0].medium)[-1]
        with open_image_for_check(base.location) as image:
            merged = [image.read(at, 256) == want[at:at + 256] for at in (MiB, 3 * MiB)]
        assert merged == [True, False]               # stopped half way indeed
        for m in home.media.chain(vm.config.attachments[0].medium):
            with open_image_for_check(m.location) as image:
                assert image.check().errors == [], m.location
    assert read(home, n=4 * MiB) == want
    with pytest.raises(ConfigError, match="interrupted"):
        snapshots.power_on(home, "web")
    snapshots.delete(home, "web", "s")
    assert read(home, n=4 * MiB) == want
    assert snapshot_files(home) == []
    with home.locked():
        base = home.find_vm("web").config.attachments[0].medium
        assert home.media.get(base).parent is None
        with open_image_for_check(home.media.get(base).location) as image:
            assert image.check().clean
    with snapshots.power_on(home, "web"):
        pass


def open_image_for_check(path):
    from drivebay.block.drivers import probe
    return probe(path).open(path, for_check=True)


def test_merge_failing_with_enospc_half_way(home, tmp_path, monkeypatch):
    """The frozen image's writes fail with ENOSPC (block/faulty.py) after two
    1 MiB merge steps got through: a real write error inside the merge."""
    import errno
    from drivebay.block.faulty import FaultRule, FaultyDriver
    want = _merge_scenario(home, tmp_path)
    real_open_chain = merge_mod.open_chain
    filters = []

    def full_disk(path, writable=False, format=None, resolver=None):
        chain = real_open_chain(path, writable=writable, format=format, resolver=resolver)
        if writable:
            top = FaultyDriver(chain.images[0], [FaultRule(op="write", after=2,
                                                           error=errno.ENOSPC)])
            filters.append(top)
            chain = type(chain)([top] + chain.images[1:])
        return chain
    monkeypatch.setattr(merge_mod, "open_chain", full_disk)
    with pytest.raises(ImageError) as e:
        snapshots.delete(home, "web", "s")
    assert e.value.errno == errno.ENOSPC
    assert [ev[3] for ev in filters[0].events if ev[0] == "write"].count("end") == 2
    monkeypatch.undo()
    _usable_then_finished(home, want)


def test_merge_killed_half_way(home, tmp_path):
    """A process killed with SIGKILL in the middle of the merge (after its
    first 1 MiB step): nothing of it runs after the kill."""
    import signal
    import subprocess
    import sys
    want = _merge_scenario(home, tmp_path)
    code = ("import os, signal\n"
            "from drivebay.system import snapshots\n"
            "from drivebay.system.vm import Home\n"
            "steps = []\n"
            "def progress(done, total):\n"
            "    steps.append(done)\n"
            "    if len(steps) == 2:\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "snapshots.delete(Home(), 'web', 's', progress=progress)\n")
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    _usable_then_finished(home, want)


def test_killed_take_leaves_only_an_unused_file(home, tmp_path, monkeypatch):
    new_vm(home, disks=[make_disk(tmp_path)])
    write(home, b"keep")
    before = open(home.entries()[0].path).read()

    def killed(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(vmmod.Vm, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        snapshots.take(home, "web", "s")
    monkeypatch.undo()
    assert open(home.entries()[0].path).read() == before
    assert read(home) == b"keep"
    write(home, b"more")
    assert read(home) == b"more"


def test_vm_file_is_written_last_on_take(home, tmp_path, monkeypatch):
    new_vm(home, disks=[make_disk(tmp_path)])
    order = []
    real_save = vmmod.Vm.save
    from drivebay.block.media import MediaRegistry
    real_reg_save = MediaRegistry.save
    monkeypatch.setattr(vmmod.Vm, "save", lambda self: (order.append("vm"), real_save(self)))
    monkeypatch.setattr(MediaRegistry, "save",
                        lambda self: (order.append("media"), real_reg_save(self)))
    snapshots.take(home, "web", "s")
    assert order[-1] == "vm" and "media" in order


# -- clones ------------------------------------------------------------------------------------

def test_full_and_linked_clones(home, tmp_path):
    new_vm(home, disks=[make_disk(tmp_path)])
    write(home, b"orig")
    snapshots.take(home, "web", "s")
    write(home, b"late")
    full = snapshots.clone_vm(home, "web", "full")
    assert read(home, "full") == b"late"
    linked = snapshots.clone_vm(home, "web", "linked", snapshot="s", link=True)
    assert read(home, "linked") == b"orig"
    write(home, b"mine", "linked")
    assert read_snapshot(home, "s") == b"orig"
    with home.locked():
        assert home.media.get(current(home, "full")).parent is None
        assert home.media.get(current(home, "linked")).parent is not None
        assert {e.name for e in home.entries()} == {"web", "full", "linked"}
    # The snapshot the linked clone hangs on keeps its image when deleted.
    snapshots.delete(home, "web", "s")
    assert read(home, "linked") == b"mine" and read(home) == b"late"
    with pytest.raises(ConfigError, match="needs --snapshot"):
        snapshots.clone_vm(home, "web", "x", link=True)
    with pytest.raises(ConfigError, match="one of machine, machineandchildren, all"):
        snapshots.clone_vm(home, "web", "x", mode="everything")
    with pytest.raises(ConfigError, match="linked clone hangs on one snapshot"):
        snapshots.clone_vm(home, "web", "x", mode="all", link=True)
    assert full.name == "full" and linked.name == "linked"


def _tree_vm(home, tmp_path):
    """s1 <- s2, s1 <- s3 <- current: a tree with a branch, zeroed ranges in a
    differencing image, and a second disk that is write-through."""
    new_vm(home, disks=[make_disk(tmp_path), make_disk(tmp_path, "wt.vdi")],
           types=[None, "writethrough"])
    write(home, b"AAAA" * 1024)
    write(home, b"wt-1", port=1)
    snapshots.take(home, "web", "s1")
    write(home, b"BBBB")
    with home.locked(), home.media.open_chain(current(home), writable=True) as c:
        c.write_zeroes(2048, 2048)          # hides s1's data in this layer
    snapshots.take(home, "web", "s2")
    write(home, b"CCCC")
    snapshots.restore(home, "web", "s1")
    write(home, b"DDDD")
    snapshots.take(home, "web", "s3")
    write(home, b"EEEE")


def _states(home, name, snaps, n=4096):
    out = {"current": read(home, name, n=n)}
    for s in snaps:
        out[s] = read_snapshot(home, s, name, n=n)
    return out


def _tree_shape(home, name):
    with home.locked():
        vm = home.find_vm(name)
        by_uuid = {s.uuid: s.name for s in vm.snapshots}
        current_name = by_uuid.get(vm.current_snapshot)
        return sorted((s.name, by_uuid.get(s.parent)) for s in vm.snapshots), current_name


def test_clone_all_keeps_the_tree_and_every_state(home, tmp_path):
    _tree_vm(home, tmp_path)
    before = _states(home, "web", ["s1", "s2", "s3"])
    assert before["s2"][:4] == b"BBBB" and before["s2"][2048:4096] == bytes(2048)
    assert before["s1"][2048:2052] == b"AAAA" and before["current"][:4] == b"EEEE"
    clone = snapshots.clone_vm(home, "web", "twin", mode="all")
    assert _tree_shape(home, "twin") == _tree_shape(home, "web") == \
        ([("s1", None), ("s2", "s1"), ("s3", "s1")], "s3")
    assert _states(home, "twin", ["s1", "s2", "s3"]) == before
    assert read(home, "twin", port=1) == b"wt-1"
    with home.locked():
        reg = home.media
        vm = home.find_vm("twin")
        src = home.find_vm("web")
        mine = {a.medium for _w, cfg in vm.configs() for a in cfg.attachments if a.medium}
        theirs = {a.medium for _w, cfg in src.configs() for a in cfg.attachments if a.medium}
        assert not mine & theirs                               # nothing shared
        frozen = {s.name: s.config.attachment_at("SATA", 0, 0).medium for s in vm.snapshots}
        # The clone's images form the same tree: s2's and s3's images hang on s1's.
        assert reg.get(frozen["s1"]).parent is None
        assert reg.get(frozen["s2"]).parent == frozen["s1"]
        assert reg.get(frozen["s3"]).parent == frozen["s1"]
        assert reg.get(vm.config.attachment_at("SATA", 0, 0).medium).parent == frozen["s3"]
        wt = vm.config.attachment_at("SATA", 1, 0).medium
        assert reg.get(wt).type == "writethrough" and reg.get(wt).parent is None
        assert all(os.path.dirname(reg.get(m).location).startswith(vm.folder) for m in mine)
    # The clone lives on its own: restore and delete there, the source keeps its states.
    snapshots.restore(home, "twin", "s2")
    assert read(home, "twin") == b"BBBB"
    snapshots.delete(home, "twin", "s1")
    assert read_snapshot(home, "s2", "twin", n=4096) == before["s2"]
    assert _states(home, "web", ["s1", "s2", "s3"]) == before
    assert clone.name == "twin"


def test_clone_machine_and_children(home, tmp_path):
    _tree_vm(home, tmp_path)
    before = _states(home, "web", ["s1", "s2", "s3"])
    # From the current snapshot (s3): s3 alone, and the current state below it.
    snapshots.clone_vm(home, "web", "cur", mode="machineandchildren")
    assert _tree_shape(home, "cur") == ([("s3", None)], "s3")
    assert _states(home, "cur", ["s3"]) == {k: before[k] for k in ("current", "s3")}
    # From s2, a branch the current state is not on: the clone's current
    # state is s2's, in a differencing image of its own.
    snapshots.clone_vm(home, "web", "branch", snapshot="s2", mode="machineandchildren")
    assert _tree_shape(home, "branch") == ([("s2", None)], "s2")
    assert read(home, "branch", n=4096) == before["s2"]
    write(home, b"XXXX", "branch")
    assert read_snapshot(home, "s2", "branch") == b"BBBB"
    with home.locked():
        reg = home.media
        vm = home.find_vm("branch")
        frozen = vm.snapshot("s2").config.attachment_at("SATA", 0, 0).medium
        assert reg.get(frozen).parent is None                  # flattened: s1 not cloned
        assert reg.get(vm.config.attachment_at("SATA", 0, 0).medium).parent == frozen
    # From s1: the whole tree.
    snapshots.clone_vm(home, "web", "root", snapshot="s1", mode="machineandchildren")
    assert _tree_shape(home, "root") == _tree_shape(home, "web")
    assert _states(home, "root", ["s1", "s2", "s3"]) == before
    new_vm(home, "plain", disks=[make_disk(tmp_path, "p.vdi")])
    with pytest.raises(ConfigError, match="has no snapshots"):
        snapshots.clone_vm(home, "plain", "x", mode="machineandchildren")


def test_clone_all_failing_half_way_leaves_nothing(home, tmp_path, monkeypatch):
    _tree_vm(home, tmp_path)
    with home.locked():
        media_before = set(home.media.media)
    calls = []

    def copy_fails_on_the_second_layer(src, dest, progress=None):
        calls.append(src.path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_copy(src, dest, progress)
    real_copy = snapshots.copy_layer
    monkeypatch.setattr(snapshots, "copy_layer", copy_fails_on_the_second_layer)
    with pytest.raises(OSError):
        snapshots.clone_vm(home, "web", "twin", mode="all")
    with home.locked():
        assert set(home.media.media) == media_before
        assert [e.name for e in home.entries()] == ["web"]
    folder = os.path.join(home.path, "machines", "twin")
    leftovers = [f for _d, _s, files in os.walk(folder) for f in files]
    assert leftovers == []


def test_snapshot_records_are_in_the_vm_file(home, tmp_path):
    new_vm(home, disks=[make_disk(tmp_path)])
    snap = snapshots.take(home, "web", "s", "desc")
    data = json.loads(open(home.entries()[0].path).read())
    assert data["current_snapshot"] == snap.uuid
    s = data["snapshots"][0]
    assert (s["name"], s["description"], s["online"], s["parent"]) == ("s", "desc", False, None)
    assert s["config"]["attachments"][0]["medium"] != data["config"]["attachments"][0]["medium"]


def test_power_on_devices_plug_into_the_machine(home, tmp_path):
    """The future ``vm start``: power_on, then add_device for every plan."""
    from drivebay.block import optical
    from drivebay.boot.machine import PcMachine
    iso = tmp_path / "cd.iso"
    optical.build_iso(iso, [])
    with home.locked():
        vm = home.create_vm("xp", "WindowsXP")
        vmmod.apply_defaults(home, vm, disk_size=2 * MiB)
        vmmod.attach(home, vm, "IDE", 1, 0, medium=str(iso))
        home.media.save()
        vm.save()
    snapshots.take(home, "xp", "s")                     # the disk is a chain now
    with snapshots.power_on(home, "xp") as s:
        (plan,) = s.devices
        assert plan.name == "piix4-ide"
        drives = plan.options["drives"]
        assert drives[(0, 0)]["backend"].chain.images[-1].path.endswith("xp.vdi")
        assert drives[(1, 0)]["read_only"] and drives[(1, 0)]["format"] == "iso"
        machine = PcMachine(memory_mb=16)
        assert machine.add_device(plan.name, **plan.options) is not None

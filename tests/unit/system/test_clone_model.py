"""Random snapshot trees against a model, for what rebuilds images: after any
sequence of writes, zeroed ranges, takes, restores and deletions,
``clonevm --mode all`` and ``machineandchildren`` clone every state exactly,
and ``--setuuid`` on any image of the tree changes no content anywhere."""

import os
import shutil
import tempfile

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import invariant, rule

from drivebay.block.vdi import VdiDriver
from drivebay.system import medium_ids, snapshots
from drivebay.system import vm as vmmod
from drivebay.system.vm import Home
from snapshot_rules import SnapshotRules

SIZE = 3 << 20                 # three VDI blocks
MAX_WRITE = 3 << 19
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class TreeMachine(SnapshotRules):
    MAX_SNAPSHOTS = 6

    def __init__(self):
        super().__init__()
        # In memory where there is a tmpfs: every step fsyncs VM files and images.
        self.tmp = tempfile.mkdtemp(prefix="clonemodel-", dir=SCRATCH)
        self.home = Home(os.path.join(self.tmp, "home"))
        disk = os.path.join(self.tmp, "disk.vdi")
        VdiDriver.create(disk, SIZE)
        with self.home.locked():
            vm = self.home.create_vm("m", "Ubuntu_64")
            vmmod.add_controller(vm, "SATA", "sata")
            vmmod.attach(self.home, vm, "SATA", 0, 0, type="hdd", medium=disk)
            self.home.media.save()
            vm.save()
        self.disk = bytearray(SIZE)
        self.snaps = {}            # snapshot uuid -> content when taken (in the order taken)
        self.names = 0
        self.clones = 0

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _read(self, vm_name, snap=None):
        with self.home.locked():
            vm = self.home.find_vm(vm_name)
            cfg = vm.snapshot(snap).config if snap else vm.config
            with self.home.media.open_chain(cfg.attachment_at("SATA", 0, 0).medium) as c:
                return c.read(0, SIZE)

    def _change(self, offset, data=None, zeroes=0):
        with self.home.locked():
            medium = self.home.find_vm("m").config.attachment_at("SATA", 0, 0).medium
            with self.home.media.open_chain(medium, writable=True) as c:
                if data is not None:
                    c.write(offset, data)
                else:
                    c.write_zeroes(offset, zeroes)

    # -- rules

    @rule(offset=st.integers(0, SIZE // 512 - 1), n=st.integers(1, MAX_WRITE), seed=st.integers(1, 255))
    def write(self, offset, n, seed):
        start = offset * 512
        n = min(n, SIZE - start)
        cycle = bytes(range(seed, 256)) + bytes(range(1, seed))      # never zero
        data = (cycle * (n // len(cycle) + 1))[:n]
        self._change(start, data)
        self.disk[start:start + len(data)] = data

    @rule(offset=st.integers(0, SIZE // 512 - 1), sectors=st.integers(1, 4096))
    def write_zeroes(self, offset, sectors):
        start = offset * 512
        n = min(sectors * 512, SIZE - start)
        self._change(start, zeroes=n)
        self.disk[start:start + n] = bytes(n)


    @rule(pick=st.data())
    def set_uuid(self, pick):
        with self.home.locked():
            vm = self.home.find_vm("m")
            # In a deterministic order (UUIDs are random): states, then chains.
            media = list(dict.fromkeys(m.uuid for _w, cfg in vm.configs()
                                       for a in cfg.attachments
                                       for m in self.home.media.chain(a.medium)))
        uuid = pick.draw(st.sampled_from(media))
        with self.home.locked():
            medium_ids.set_uuid(self.home, uuid, "hdd", "")

    @rule(pick=st.data())
    def clone(self, pick):
        modes = ["all"] + (["machineandchildren"] if self.snaps else [])
        mode = pick.draw(st.sampled_from(modes))
        root = pick.draw(st.sampled_from(list(self.snaps))) \
            if mode == "machineandchildren" else None
        self.clones += 1
        name = f"c{self.clones}"
        snapshots.clone_vm(self.home, "m", name, snapshot=root, mode=mode)
        with self.home.locked():
            src, new = self.home.find_vm("m"), self.home.find_vm(name)
            cloned = {s.uuid for s in new.snapshots}
            if root is None:
                assert cloned == set(self.snaps)
            else:
                assert cloned == set(snapshots._subtree(src, root))
        for uuid in cloned:
            assert self._read(name, uuid) == self.snaps[uuid]
        if root is None or src.current_snapshot in cloned:
            assert self._read(name) == self.disk
        else:
            assert self._read(name) == self.snaps[root]
        # The clone is independent: write to it, then delete it with its files.
        with self.home.locked():
            medium = self.home.find_vm(name).config.attachment_at("SATA", 0, 0).medium
            with self.home.media.open_chain(medium, writable=True) as c:
                c.write(pick.draw(st.integers(0, SIZE - 4)), b"mine")
        with self.home.locked():
            vmmod.delete_vm(self.home, self.home.find_vm(name), delete_files=True)

    # -- invariants

    @invariant()
    def contents(self):
        assert self._read("m") == self.disk
        for uuid, content in self.snaps.items():
            assert self._read("m", uuid) == content, uuid

    @invariant()
    def only_the_source_remains(self):
        with self.home.locked():
            assert [e.name for e in self.home.entries()] == ["m"]
            vm = self.home.find_vm("m")
            needed = {m.uuid for _w, cfg in vm.configs() for a in cfg.attachments
                      for m in self.home.media.chain(a.medium)}
            assert set(self.home.media.media) == needed
        machines = os.path.join(self.home.path, "machines")
        assert sorted(os.listdir(machines)) == ["m"]


TreeMachine.TestCase.settings = settings(
    max_examples=10, stateful_step_count=12, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TestTreeModel = TreeMachine.TestCase

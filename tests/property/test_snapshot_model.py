"""Random take/restore/delete/write sequences against a model: every snapshot's
disk content stays exact, the current state reads what was written since the
restored snapshot, a write-through disk ignores snapshots, and no image is
left behind that nothing refers to.  Interrupted deletions (a merge that dies
half way) leave a usable VM and finish when run again."""

import os
import shutil
import tempfile

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import invariant, precondition, rule

from drivebay.block import merge as merge_mod
from drivebay.block.vdi import VdiDriver
from drivebay.errors import ImageError
from drivebay.system import snapshots
from drivebay.system import vm as vmmod
from drivebay.system.vm import Home
from snapshot_rules import SnapshotRules

SIZE = 2 << 20                 # two VDI blocks: writes cross block boundaries
MAX_WRITE = 8192


class Interrupted(ImageError):
    pass


class SnapshotMachine(SnapshotRules):
    MAX_SNAPSHOTS = 8

    def __init__(self):
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="snapmodel-")
        self.home = Home(os.path.join(self.tmp, "home"))
        disk, wt = (os.path.join(self.tmp, n) for n in ("disk.vdi", "wt.vdi"))
        VdiDriver.create(disk, SIZE)
        VdiDriver.create(wt, SIZE)
        with self.home.locked():
            vm = self.home.create_vm("m", "Ubuntu_64")
            vmmod.add_controller(vm, "SATA", "sata")
            vmmod.attach(self.home, vm, "SATA", 0, 0, type="hdd", medium=disk)
            vmmod.attach(self.home, vm, "SATA", 1, 0, type="hdd", medium=wt,
                         mtype="writethrough")
            self.home.media.save()
            vm.save()
        self.disk = bytearray(SIZE)
        self.wt = bytearray(SIZE)
        self.snaps = {}            # uuid -> content of the normal disk when taken
        self.names = 0

    def teardown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers

    def _medium(self, port, snap=None):
        vm = self.home.find_vm("m")
        cfg = vm.snapshot(snap).config if snap else vm.config
        return cfg.attachment_at("SATA", port, 0).medium

    def _read(self, port, snap=None):
        with self.home.locked():
            with self.home.media.open_chain(self._medium(port, snap)) as c:
                return c.read(0, SIZE)

    # -- rules

    @rule(port=st.sampled_from([0, 1]), offset=st.integers(0, SIZE - 1),
          data=st.binary(min_size=1, max_size=MAX_WRITE) | st.builds(bytes, st.integers(1, MAX_WRITE)))
    def write(self, port, offset, data):
        data = data[:SIZE - offset]
        with self.home.locked():
            with self.home.media.open_chain(self._medium(port), writable=True) as c:
                c.write(offset, data)
        model = self.disk if port == 0 else self.wt
        model[offset:offset + len(data)] = data

    @rule(offset=st.integers(0, SIZE // 512 - 1), sectors=st.integers(1, 4096))
    def write_zeroes(self, offset, sectors):
        start = offset * 512
        n = min(sectors * 512, SIZE - start)
        with self.home.locked():
            with self.home.media.open_chain(self._medium(0), writable=True) as c:
                c.write_zeroes(start, n)
        self.disk[start:start + n] = bytes(n)


    @precondition(lambda self: self.snaps)
    @rule(pick=st.data())
    def delete_interrupted(self, pick):
        uuid = pick.draw(st.sampled_from(list(self.snaps)))
        real = merge_mod.merge_into_parent

        def dies(child, resolver=None, progress=None):
            def stop(done, total):
                raise Interrupted("simulated crash in the middle of a merge")
            return real(child, resolver=resolver, progress=stop)
        merge_mod.merge_into_parent = dies
        try:
            snapshots.delete(self.home, "m", uuid)
            interrupted = False
        except Interrupted:
            interrupted = True
        finally:
            merge_mod.merge_into_parent = real
        if interrupted:
            assert self._read(0) == self.disk          # the VM is usable as it is
            assert self._read(1) == self.wt
            for other, content in self.snaps.items():
                if other != uuid:
                    assert self._read(0, other) == content
            snapshots.delete(self.home, "m", uuid)     # finishing the deletion
        del self.snaps[uuid]

    @rule()
    def power_cycle(self):
        snapshots.power_on(self.home, "m").close()

    # -- invariants

    @invariant()
    def contents(self):
        assert self._read(0) == self.disk
        assert self._read(1) == self.wt
        for uuid, content in self.snaps.items():
            assert self._read(0, uuid) == content, uuid

    @invariant()
    def nothing_left_behind(self):
        with self.home.locked():
            vm = self.home.find_vm("m")
            media = self.home.media
            needed = set()
            for _where, cfg in vm.configs():
                for a in cfg.attachments:
                    needed.update(m.uuid for m in media.chain(a.medium))
            assert set(media.media) == needed
            on_disk = set(os.listdir(vm.snapshot_folder)) if os.path.isdir(vm.snapshot_folder) \
                else set()
            registered = {os.path.basename(m.location) for m in media.media.values()
                          if os.path.dirname(m.location) == vm.snapshot_folder}
            assert on_disk == registered
            assert vm.snapshots == [] or vm.current_snapshot is None or \
                any(s.uuid == vm.current_snapshot for s in vm.snapshots)
            assert {s.uuid for s in vm.snapshots} == set(self.snaps)


SnapshotMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=20, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TestSnapshotModel = SnapshotMachine.TestCase

"""Snapshots, per-VM differencing images, power-on preparation and clones.

What VirtualBox does (its manual, "Snapshots" and "Special Image Write
Modes"; Main's SessionMachine snapshot code), with drivebay's rules:

* **take** copies the VM's settings into the snapshot, freezes every
  attached hard disk that is not write-through or shareable, and puts a new
  differencing image on top of each (in the VM's ``Snapshots`` folder); the
  current state then writes there.  A snapshot of a running VM (a VM with a
  ``Session``) is *online*.
* **restore** puts the snapshot's settings back, throws the current state's
  differencing images away and makes fresh ones over the snapshot's images.
  Write-through and shareable disks are not touched.
* **delete** drops the snapshot and merges what it froze.  A frozen image
  with one differencing child is merged with it (the child's data goes down
  into the frozen image, which keeps its UUID and file name, and every
  reference to the child moves to it).  A frozen image with several
  children (the snapshot was restored and branched) stays as their shared
  parent: VirtualBox refuses this case ("more than one child hard disk"),
  keeping the parent is always correct.  Free space is checked first.
* **power_on** is the preparation ``vm start`` does before building the
  machine: immutable and multiattach base images get a per-VM differencing
  image; an immutable disk's differencing image is emptied (auto-reset)
  unless the current snapshot is an online one; every medium is opened as a
  BlockBackend, which locks its images (block/locking.py: exclusive where
  written, shared where only read, shared among shareable openers) so a
  second VM cannot write what this one uses.

Failure safety: images are created and written first, then the media
registry, then the VM file; files nobody refers to any more are removed
after the VM file no longer names them.  A snapshot deletion that merges
marks the snapshot ``deleting`` in the VM file before it writes into a
frozen image; if it is killed, the current state still reads right, the
marked snapshot cannot be restored, and running the deletion again
finishes it.
"""

import contextlib
import copy
import fcntl
import os
import uuid as uuidlib
from dataclasses import dataclass, field

from drivebay.block import merge as merge_mod
from drivebay.block.backend import DISK_SECTOR, OPTICAL_SECTOR, BlockBackend
from drivebay.block.convert import convert
from drivebay.block.drivers import driver_for, open_image
from drivebay.block.chain import open_chain
from drivebay.block.locking import ImageLockedError, image_locking
from drivebay.block.throttle import BandwidthGroup, Limits
from drivebay.errors import ConfigError, DrivebayError, MediaError
from drivebay.system.layer_copy import copy_layer
from drivebay.system.vm import (Snapshot, Vm, drop_diff, is_implicit_diff, is_running,
                                machine_devices, now_iso, require_stopped)

FROZEN_TYPES = ("normal", "immutable", "multiattach")      # write-through/shareable are not
PER_VM_DIFF_TYPES = ("immutable", "multiattach")
UNIQUE_NAME_MODES = ("number", "timestamp")


def _load(home, ref):
    return home.find_vm(ref.uuid if isinstance(ref, Vm) else ref)


def _snapshot_diff(home, vm, parent_uuid):
    """A differencing image for ``vm`` over ``parent_uuid`` in its Snapshots folder."""
    new = str(uuidlib.uuid4())
    parent = home.media.get(parent_uuid)
    fmt = parent.format if driver_for(parent.format).supports_backing else "vdi"
    path = os.path.join(vm.snapshot_folder, f"{{{new}}}.{fmt}")
    return home.media.create_diff(parent_uuid, path, format=fmt, uuid=new)


def _undo(home, created):
    for uuid in reversed(created):
        m = home.media.get(uuid)
        if m is not None:
            home.media.forget(uuid)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(m.location)


def ensure_diffs(home, vm):
    """Give every immutable or multiattach base image attached directly a
    differencing image of this VM's own; returns the new media's UUIDs (the
    caller saves the registry and then the VM)."""
    created = []
    try:
        for a in vm.config.attachments:
            if a.type != "hdd" or a.medium is None:
                continue
            m = home.media.get(a.medium)
            if m is None or m.parent is not None or m.type not in PER_VM_DIFF_TYPES:
                continue
            d = _snapshot_diff(home, vm, m.uuid)
            created.append(d.uuid)
            a.medium, a.location = d.uuid, d.location
    except BaseException:
        _undo(home, created)
        raise
    return created


def _unique_name(vm, name, mode):
    used = {s.name for s in vm.snapshots}
    if mode is None or name not in used:
        return name
    mode = mode.lower()
    if mode == "timestamp":
        return f"{name} {now_iso()}"
    if mode != "number":
        raise ConfigError(f"--uniquename {mode!r}: Number or Timestamp")
    n = 1
    while f"{name} {n}" in used:
        n += 1
    return f"{name} {n}"


# -- take -----------------------------------------------------------------------------------

def take(home, ref, name, description="", unique_name=None, _session=None):
    """Take a snapshot of the VM's current state; returns the Snapshot."""
    with home.locked():
        vm = _load(home, ref)
        online = is_running(vm)
        if online and _session is None:
            raise ConfigError(f"VM '{vm.name}' is running: its session takes the snapshot "
                              f"(Session.take_snapshot)")
        if not name:
            raise ConfigError("a snapshot needs a name")
        name = _unique_name(vm, name, unique_name)
        if any(s.deleting for s in vm.snapshots):
            bad = next(s for s in vm.snapshots if s.deleting)
            raise ConfigError(f"VM '{vm.name}': the deletion of snapshot '{bad.name}' was "
                              f"interrupted; run 'snapshot delete' on it again first")
        created = ensure_diffs(home, vm)
        try:
            snap = Snapshot(str(uuidlib.uuid4()), name, description, now_iso(), online,
                            vm.current_snapshot, copy.deepcopy(vm.config))
            for a in vm.config.attachments:
                if a.type != "hdd" or a.medium is None:
                    continue
                m = home.media.get(a.medium)
                if m is None:
                    raise MediaError(f"VM '{vm.name}': medium {a.medium} is not registered")
                if home.media.effective_type(m.uuid) not in FROZEN_TYPES:
                    continue
                others = [o.name for o in home.all_vms() if o.uuid != vm.uuid and
                          any(x.medium == m.uuid for x in o.config.attachments)]
                if others:
                    raise MediaError(f"Cannot take a snapshot of VM '{vm.name}': medium "
                                     f"'{m.location}' is attached to VM(s) "
                                     f"{', '.join(others)} too, which would keep writing to "
                                     f"it after it is frozen; detach it there first")
                d = _snapshot_diff(home, vm, m.uuid)
                created.append(d.uuid)
                a.medium, a.location = d.uuid, d.location
            vm.snapshots.append(snap)
            vm.current_snapshot = snap.uuid
            vm.validate()
            home.media.save()
        except BaseException:
            _undo(home, created)
            raise
        vm.save()
        return snap


# -- restore ---------------------------------------------------------------------------------

def restore(home, ref, snapshot_ref=None):
    """Restore a snapshot (the current one when ``snapshot_ref`` is None)."""
    with home.locked():
        vm = _load(home, ref)
        require_stopped(vm, "restore a snapshot")
        if snapshot_ref is None:
            if vm.current_snapshot is None:
                raise ConfigError(f"VM '{vm.name}' has no snapshots")
            snap = next(s for s in vm.snapshots if s.uuid == vm.current_snapshot)
        else:
            snap = vm.snapshot(snapshot_ref)
        if snap.deleting:
            raise ConfigError(f"Snapshot '{snap.name}' is being deleted (an earlier deletion "
                              f"was interrupted): run 'snapshot delete' on it again")
        old = [a.medium for a in vm.config.attachments
               if a.medium and is_implicit_diff(home, vm, a.medium)]
        config = copy.deepcopy(snap.config)
        created = []
        try:
            for a in config.attachments:
                if a.type != "hdd" or a.medium is None:
                    continue
                m = home.media.get(a.medium)
                if m is None:
                    raise MediaError(f"snapshot '{snap.name}': medium {a.medium} "
                                     f"({a.location}) is not registered")
                if not m.accessible:
                    raise MediaError(f"snapshot '{snap.name}': medium '{m.location}' is "
                                     f"missing")
                if home.media.effective_type(m.uuid) not in FROZEN_TYPES:
                    a.location = m.location
                    continue
                d = _snapshot_diff(home, vm, m.uuid)
                created.append(d.uuid)
                a.medium, a.location = d.uuid, d.location
            vm.config = config
            vm.current_snapshot = snap.uuid
            vm.validate()
            home.media.save()
        except BaseException:
            _undo(home, created)
            raise
        vm.save()
        for uuid in old:
            drop_diff(home, uuid)
        return snap


# -- delete ------------------------------------------------------------------------------

def _relink(child, parent):
    """Point ``child``'s image at ``parent`` (link only: the caller made the
    parent read what the old parent chain read).  The UUID is the
    registry's, so a parent whose format stores none (raw) still links."""
    with open_image(parent.open_location, format=parent.format) as p:
        modification = p.modification_uuid
    locator = os.path.relpath(parent.location, os.path.dirname(child.location))
    with open_image(child.location, writable=True, format=child.format) as c:
        c.set_parent(uuidlib.UUID(parent.uuid), locator, modification)
        c.flush()


def _allocated_bytes(path):
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


@dataclass
class DeleteResult:
    snapshot: Snapshot
    merged: list = field(default_factory=list)     # (frozen location, child location)
    removed: list = field(default_factory=list)    # locations of deleted images
    kept: list = field(default_factory=list)       # frozen images kept as shared parents


class _Consolidation:
    """Which images a snapshot deletion merges or removes.

    The candidates are the images the snapshot refers to and the images in
    the VM's Snapshots folder (never a base image the VM does not own, such
    as the template of a differencing disk made by hand).  A candidate that
    no configuration of any VM refers to any more is removed when it has no
    differencing child, merged with its child when it has exactly one (of
    this VM), and kept when it has several."""

    def __init__(self, home, vm, snap):
        self.home, self.vm, self.snap = home, vm, snap
        self.others = [o for o in home.all_vms() if o.uuid != vm.uuid]
        self.gone = set()
        self.candidates = {a.medium for a in snap.config.attachments
                           if a.type == "hdd" and a.medium and home.media.get(a.medium)}
        for m in home.media.media.values():
            if os.path.dirname(m.location) == vm.snapshot_folder:
                self.candidates.add(m.uuid)

    def referenced(self, uuid):
        for _where, cfg in self.vm.configs():
            if cfg is not self.snap.config and any(a.medium == uuid for a in cfg.attachments):
                return True
        return any(o.references(uuid) for o in self.others)

    def kids(self, uuid):
        return [c for c in self.home.media.children(uuid) if c.uuid not in self.gone]

    def next_step(self):
        """("remove", m) | ("merge", m, child) | None; kept images are collected."""
        media = self.home.media
        for uuid in sorted(self.candidates - self.gone):
            m = media.get(uuid)
            if m is None or media.effective_type(uuid) not in FROZEN_TYPES or \
                    self.referenced(uuid):
                continue
            if m.parent is None and m.type in PER_VM_DIFF_TYPES:
                continue
            kids = self.kids(uuid)
            if not kids:
                if m.parent is not None and os.path.dirname(m.location) == self.vm.snapshot_folder:
                    return ("remove", m)
                continue
            if len(kids) == 1 and not any(o.references(kids[0].uuid) for o in self.others) \
                    and not any(o.references(d.uuid) for o in self.others
                                for d in media.descendants(kids[0].uuid)):
                return ("merge", m, kids[0])
        return None

    def kept(self):
        media = self.home.media
        return [media.get(u) for u in sorted(self.candidates - self.gone)
                if media.get(u) is not None and not self.referenced(u) and
                len(self.kids(u)) > 1]

    def bytes_needed(self):
        """Upper bound of what the merges write, per folder (every child of a
        candidate merged once)."""
        need = {}
        for uuid in self.candidates:
            m = self.home.media.get(uuid)
            kids = self.kids(uuid) if m is not None else []
            if m is not None and len(kids) == 1 and not self.referenced(uuid):
                folder = os.path.dirname(m.location)
                need[folder] = need.get(folder, 0) + _allocated_bytes(kids[0].location)
        return need


def delete(home, ref, snapshot_ref, progress=None, _session=None):
    """Delete a snapshot, merging its images; ``progress(done, total)`` in bytes.
    A running VM's own session deletes its snapshots (Session.delete_snapshot)."""
    with home.locked():
        vm = _load(home, ref)
        if _session is None:
            require_stopped(vm, "delete a snapshot: its session deletes it (drivebay "
                                "snapshot VM delete asks the running VM)")
        snap = vm.snapshot(snapshot_ref)
        plan = _Consolidation(home, vm, snap)
        needed = plan.bytes_needed()
        for folder, n in needed.items():
            home.media.check_free_space(folder, n,
                                        f"deleting snapshot '{snap.name}' of VM '{vm.name}'")
        if needed and not snap.deleting:
            snap.deleting = True
            vm.save()
        result = DeleteResult(snap)
        total, done = max(1, sum(needed.values())), 0
        removals = []
        while True:
            step = plan.next_step()
            if step is None:
                break
            if step[0] == "remove":
                removals.append(step[1])
                plan.gone.add(step[1].uuid)
                continue
            _kind, frozen, child = step
            size = _allocated_bytes(child.location)

            def report(d, whole, base=done, size=size):
                if progress is not None and whole:
                    progress(min(total, base + d * size // whole), total)
            merge_mod.merge_into_parent(child.location, resolver=home.media.resolver,
                                        progress=report)
            for grandchild in home.media.children(child.uuid):
                _relink(grandchild, frozen)
                grandchild.parent = frozen.uuid
                home.media.dirty = True
                home.media.save()
            for _where, cfg in vm.configs():
                for x in cfg.attachments:
                    if x.medium == child.uuid:
                        x.medium, x.location = frozen.uuid, frozen.location
            done += size
            plan.gone.add(child.uuid)
            removals.append(child)
            result.merged.append((frozen.location, child.location))
        result.kept = [m.location for m in plan.kept()]
        if progress is not None:
            progress(total, total)
        for child in vm.children_of(snap.uuid):
            child.parent = snap.parent
        if vm.current_snapshot == snap.uuid:
            vm.current_snapshot = snap.parent
        vm.snapshots.remove(snap)
        vm.save()
        for m in removals:
            home.media.forget(m.uuid)
        home.media.save()
        for m in removals:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(m.location)
            result.removed.append(m.location)
        return result


def edit(home, ref, snapshot_ref, name=None, description=None):
    with home.locked():
        vm = _load(home, ref)
        snap = vm.snapshot(snapshot_ref)
        if name is not None:
            if not name:
                raise ConfigError("a snapshot needs a name")
            snap.name = name
        if description is not None:
            snap.description = description
        vm.save()
        return snap


def tree(vm):
    """``[(snapshot, depth)]``, parents before children, in the order taken."""
    out = []

    def walk(parent, depth):
        for s in vm.children_of(parent):
            out.append((s, depth))
            walk(s.uuid, depth + 1)
    walk(None, 0)
    return out


# -- power-on -------------------------------------------------------------------------

class Session:
    """A VM prepared to run: its open media and the devices to build.

    ``devices`` is a list of DevicePlan (system/vm.py): for each, ``vm start``
    calls ``machine.add_device(plan.name, **plan.options)``; every drive of
    ``plan.options["drives"]`` carries an open ``backend`` (a BlockBackend
    over the medium's whole chain, its parents found through the media
    registry).  Opening the backends locks the images (block/locking.py, the
    OFD locks QEMU also takes): read-write media exclusively, read-only ones
    shared, shareable disks shared among shareable openers; so a second VM,
    or qemu-img, cannot write what this one uses.  The VM's run lock (an
    flock on ``NAME.vm.lock``) marks it running.  ``close()`` (or the end of
    the process) powers it off and releases everything.

    ``firmware`` is the VM's setting (``stub``, ``seabios`` or a BIOS image
    path) and ``boot_order`` its boot slots as the QEMU-style string
    PcMachine(boot_order=...) takes ('a' floppy, 'c' disk, 'd' CD/DVD, 'n'
    network; '' when every slot is none)."""

    def __init__(self, home, vm, io=None, timer=None):
        self.home = home
        self.vm = vm
        self.firmware = vm.config.firmware
        self.boot_order = vm.config.qemu_boot_order
        self.io = io
        self.timer = timer
        self.devices = []
        self.backends = {}           # (controller, port, device) -> BlockBackend
        self.bandwidth_groups = {}   # name -> block.throttle.BandwidthGroup
        self.reset = []              # locations of immutable differencing images emptied
        self.created = []            # per-VM differencing images made
        self._run_fd = None

    def _lock_run(self):
        os.makedirs(self.vm.folder, exist_ok=True)
        fd = os.open(self.vm.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"The machine '{self.vm.name}' is already running "
                              f"(locked by another session)") from None
        self._run_fd = fd

    def _medium_of(self, a, media):
        """The registered medium attached at ``a``, and how to open it."""
        m = media.get(a.medium)
        if m is None:
            raise MediaError(f"VM '{self.vm.name}': medium {a.medium} at {a.controller} port "
                             f"{a.port} device {a.device} is not in the media registry")
        if m.format == "viso":
            raise MediaError(f"VM '{self.vm.name}': '{m.location}' is a VISO file, "
                             f"which drivebay cannot read yet; make an ISO of it "
                             f"with 'drivebay visotoiso'")
        base_type = media.effective_type(m.uuid)
        read_only = a.type == "dvddrive" or m.type == "readonly"
        return m, base_type, read_only

    def _locked_out(self, m, base_type, e):
        return MediaError(f"Cannot power on '{self.vm.name}': medium '{m.location}' "
                          f"({base_type}) is in use by another running VM or process: {e}")

    def _open_chain(self, a, media):
        """The chain of attachment ``a``'s medium, its images locked."""
        m, base_type, read_only = self._medium_of(a, media)
        try:
            with image_locking(shareable=base_type == "shareable"):
                chain = open_chain(m.open_location, writable=not read_only, format=m.format,
                                   resolver=media.resolver)
        except ImageLockedError as e:
            raise self._locked_out(m, base_type, e) from None
        return chain, read_only

    def open_backend(self, a, media=None):
        """A BlockBackend for the medium of attachment ``a`` (which locks its
        images), on the session's I/O executor and bandwidth groups.
        ``media``: the registry to find it in (default the home's)."""
        chain, read_only = self._open_chain(a, media or self.home.media)
        optical = a.type == "dvddrive"
        try:
            return BlockBackend(
                chain, read_only=read_only, discard=a.discard,
                non_rotational=a.non_rotational, name=f"{a.controller}-{a.port}-{a.device}",
                sector_size=OPTICAL_SECTOR if optical else DISK_SECTOR,
                host_cache=self.vm.config.controller(a.controller).host_io_cache or optical,
                bandwidth_group=self.bandwidth_groups.get(a.bandwidth_group), io=self.io)
        except BaseException:
            chain.close()
            raise

    def _open_media(self):
        """Open every attached medium as a BlockBackend (which locks it)."""
        cfg = self.vm.config
        self.bandwidth_groups = {
            g.name: BandwidthGroup(g.name, g.type, Limits(bps_total=g.bytes_per_second),
                                   timer=self.timer)
            for g in cfg.bandwidth_groups}
        try:
            for a in cfg.attachments:
                if a.medium is not None:
                    self.backends[a.slot] = self.open_backend(a)
        except BaseException:
            self._close_media()
            raise
        self.devices = machine_devices(self.vm, self.home.media, self.backends)

    def _reattach_media(self):
        """Give every open backend the chain its attachment names now (after a
        snapshot put differencing images on top)."""
        failures = []
        for a in self.vm.config.attachments:
            backend = self.backends.get(a.slot)
            if backend is None or backend.chain is not None:
                continue
            try:
                backend.attach_chain(self._open_chain(a, self.home.media)[0])
            except DrivebayError as e:
                failures.append(e)           # that disk answers EIO; the others go on
        if failures:
            raise failures[0]

    def _close_media(self):
        backends, self.backends = self.backends, {}
        for b in backends.values():
            with contextlib.suppress(Exception):
                b.close()
        self.devices = []

    @property
    def running(self):
        return self._run_fd is not None

    def set_bandwidth(self, name, bytes_per_second):
        """A bandwidth group's new limit, taken at once by the disks in it
        (``bandwidthctl set`` on a running VM)."""
        group = self.bandwidth_groups.get(name)
        if group is None:
            raise ConfigError(f"VM '{self.vm.name}' has no bandwidth group '{name}' "
                              f"(groups added while it runs take effect at its next start)")
        if not isinstance(bytes_per_second, int) or bytes_per_second < 0:
            raise ValueError(f"bandwidth group '{name}': bad limit {bytes_per_second!r}")
        group.set_limits(Limits(bps_total=bytes_per_second))
        return {"name": name, "bytes_per_second": bytes_per_second}

    def _with_media_detached(self, operation):
        """Run ``operation()`` with every disk drained, flushed and closed,
        then give the same backends the chains the VM file names now."""
        for backend in self.backends.values():
            if backend.chain is not None:
                backend.detach_chain()
        try:
            return operation()
        finally:
            with self.home.locked():
                self.vm = self.home.find_vm(self.vm.uuid)
                self._reattach_media()
                self.devices = machine_devices(self.vm, self.home.media, self.backends)

    def delete_snapshot(self, snapshot_ref, progress=None):
        """Delete a snapshot of the running VM: its merges run with the CPU
        stopped and the disks closed (the guest pauses for that long), and
        the disks then reopen whatever images the merges left on top."""
        return self._with_media_detached(
            lambda: delete(self.home, self.vm.uuid, snapshot_ref, progress, _session=self))

    def take_snapshot(self, name, description="", unique_name=None):
        """An online snapshot of the running VM.  Call it with the CPU
        stopped between two slices (system/control.py does): every disk's
        requests are drained and flushed and its images closed, the snapshot
        is taken, and the same backends, which the devices keep, open the
        new differencing images (or, if the snapshot failed, the old ones)."""
        return self._with_media_detached(
            lambda: take(self.home, self.vm.uuid, name, description, unique_name, _session=self))

    def close(self):
        self._close_media()
        if self._run_fd is not None:
            os.close(self._run_fd)
            self._run_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _current_is_online(vm):
    if vm.current_snapshot is None:
        return False
    return next(s for s in vm.snapshots if s.uuid == vm.current_snapshot).online


def power_on(home, ref, io=None, timer=None):
    """Prepare a VM to run (``vm start`` calls this, then builds
    ``session.devices`` with PcMachine.add_device); returns a Session.

    ``io``: the I/O executor every backend gets (block/io.py; default
    InlineIo); ``timer``: the bandwidth groups' timer (block/throttle.py)."""
    with home.locked():
        vm = _load(home, ref)
        session = Session(home, vm, io, timer)
        session._lock_run()
        try:
            if any(s.deleting for s in vm.snapshots):
                bad = next(s for s in vm.snapshots if s.deleting)
                raise ConfigError(f"VM '{vm.name}': the deletion of snapshot '{bad.name}' was "
                                  f"interrupted; run 'snapshot delete' on it again first")
            for a in vm.config.attachments:
                if a.medium is None:
                    continue
                m = home.media.get(a.medium)
                if m is None:
                    raise MediaError(f"VM '{vm.name}': medium {a.medium} ({a.location}) at "
                                     f"{a.controller} port {a.port} device {a.device} is not "
                                     f"in the media registry")
                for x in home.media.chain(m.uuid):
                    if not x.accessible:
                        raise MediaError(f"VM '{vm.name}': medium '{x.location}' is "
                                         f"inaccessible (the file is missing)")
            created = ensure_diffs(home, vm)
            try:
                if not _current_is_online(vm):
                    for a in vm.config.attachments:
                        if a.type != "hdd" or a.medium is None or a.medium in created:
                            continue
                        m = home.media.get(a.medium)
                        base = home.media.base_of(m.uuid)
                        if m.parent is not None and base.type == "immutable" and base.autoreset:
                            home.media.reset_diff(m.uuid)
                            session.reset.append(m.location)
                session._open_media()
            except BaseException:
                _undo(home, created)
                raise
            if created:
                home.media.save()
                vm.save()
            session.created = [home.media.get(u).location for u in created]
        except BaseException:
            session.close()
            raise
        return session


# -- clones ----------------------------------------------------------------------------------

CLONE_MODES = ("machine", "machineandchildren", "all")


def clone_vm(home, ref, name, basefolder=None, snapshot=None, mode="machine", link=False,
             register=True, progress=None):
    """clonevm: a new VM with the source's settings and copies of its hard disks.

    ``mode`` is VBoxManage's: ``machine`` clones one state (the current one,
    or ``snapshot``'s) without snapshots; ``machineandchildren`` clones
    ``snapshot`` (default: the current snapshot) and the snapshots below it,
    and ``all`` every snapshot, both keeping the tree (see ``_clone_tree``).

    In ``machine`` mode hard disks are copied in full, whole chain into one
    VDI with a new UUID (a write-through disk stays write-through, the
    others become normal); shareable disks and CD/DVD/floppy images are
    attached as they are.  ``link`` (needs ``snapshot``) makes the clone's
    disks differencing images over the snapshot's frozen images instead
    (write-through disks, never frozen, are still copied)."""
    if mode not in CLONE_MODES:
        raise ConfigError(f"clonevm --mode {mode}: one of {', '.join(CLONE_MODES)}")
    if mode != "machine":
        if link:
            raise ConfigError(f"clonevm --mode {mode}: a linked clone hangs on one snapshot; "
                              f"use --mode machine with --options link")
        return _clone_tree(home, ref, name, basefolder, snapshot, mode, register, progress)
    with home.locked():
        src = _load(home, ref)
        if link and snapshot is None:
            raise ConfigError("a linked clone needs --snapshot (its disks are differencing "
                              "images over that snapshot's images)")
        config = copy.deepcopy(src.snapshot(snapshot).config if snapshot else src.config)
        new = home.create_vm(name, src.ostype, basefolder, register=False,
                             description=src.description)
        new.config = config
        with _clone_being_made(home, new, register) as made:
            needed = sum(home.media.used_bytes(a.medium) for a in config.attachments
                         if a.type == "hdd" and a.medium and not link)
            home.media.check_free_space(new.folder, needed, f"cloning VM '{src.name}'")
            for a in config.attachments:
                if a.type != "hdd" or a.medium is None:
                    continue
                m = home.media.get(a.medium)
                base_type = home.media.effective_type(m.uuid)
                if base_type == "shareable":
                    continue
                if link and base_type != "writethrough":
                    d = _snapshot_diff(home, new, m.uuid)
                    made.append(d.uuid)
                    a.medium, a.location = d.uuid, d.location
                    continue
                c = _flat_copy(home, m, new, made, progress)
                a.medium, a.location = c.uuid, c.location
        return new


@contextlib.contextmanager
def _clone_being_made(home, new, register):
    """Yields the list of media made for the clone ``new`` (its VM file
    written, not registered); on success the clone is validated, then the
    registry, the VM file and the registration are written; on failure
    what was made and the VM file are removed."""
    made = []
    try:
        yield made
        new.validate()
        home.media.save()
    except BaseException:
        _undo(home, made)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(new.path)
        raise
    new.save()
    if register:
        home.register(new)


def _flat_copy(home, m, new, made, progress):
    """A base VDI in the clone's folder with what ``m``'s chain shows: the
    clone's first disk is NAME.vdi, the next NAME-disk2.vdi ...; a
    write-through disk stays write-through, other types become normal."""
    n = sum(1 for u in made if home.media.get(u).parent is None)
    path = os.path.join(new.folder, f"{new.name}{'' if n == 0 else f'-disk{n + 1}'}.vdi")
    with home.media.open_chain(m.uuid) as chain:
        convert(chain, path, "vdi", progress=progress)
    c = home.media.add(path, "hdd", format="vdi")
    made.append(c.uuid)
    if home.media.effective_type(m.uuid) == "writethrough":
        home.media.set_type(c.uuid, "writethrough")
    return c


def _subtree(vm, root_uuid):
    out, todo = [], [root_uuid]
    while todo:
        u = todo.pop()
        out.append(u)
        todo += [c.uuid for c in vm.children_of(u)]
    return out


def _clone_tree(home, ref, name, basefolder, snapshot, mode, register, progress):
    """clonevm --mode machineandchildren|all: the snapshots (all of them, or
    the subtree from ``snapshot``) with their settings, descriptions, times
    and UUIDs, and the disks as a tree of their own:

    * every hard disk image a cloned state refers to is cloned once; one
      whose parent is cloned too becomes a differencing image over the
      parent's clone holding the same layer (system/layer_copy.py: data,
      zeroed ranges and ranges left to the parent alike), so the clone's
      snapshots share their frozen images as the source's do;
    * one whose parent is not cloned (the top of a subtree, a per-VM image
      over an immutable disk) is flattened into a new base VDI, normal or
      write-through as in ``machine`` mode;
    * shareable disks and CD/DVD/floppy images are attached as they are.

    The current state comes along when it lies below the cloned snapshots;
    otherwise the clone's current state is the subtree's root, with fresh
    differencing images as after a restore.  Images are written first, then
    the registry, then the VM file; a failure removes what was made."""
    with home.locked():
        src = _load(home, ref)
        if mode == "all":
            keep = [s.uuid for s in src.snapshots]
            root = None
        else:
            root = src.snapshot(snapshot).uuid if snapshot else src.current_snapshot
            if root is None:
                raise ConfigError(f"clonevm --mode {mode}: VM '{src.name}' has no snapshots "
                                  f"(use --mode machine)")
            keep = _subtree(src, root)
        if any(s.deleting for s in src.snapshots if s.uuid in keep):
            raise ConfigError(f"VM '{src.name}': a snapshot deletion was interrupted; run "
                              f"'snapshot delete' on it again first")
        current_inside = root is None or src.current_snapshot in keep
        snaps = [copy.deepcopy(s) for s in src.snapshots if s.uuid in keep]
        for s in snaps:
            if s.uuid == root:
                s.parent = None
        config = copy.deepcopy(src.config) if current_inside else \
            copy.deepcopy(next(s.config for s in snaps if s.uuid == root))
        configs = [config] + [s.config for s in snaps]
        reg = home.media
        wanted = {}
        for cfg in configs:
            for a in cfg.attachments:
                if a.type == "hdd" and a.medium and reg.effective_type(a.medium) != "shareable":
                    wanted[a.medium] = reg.get(a.medium)
        order = sorted(wanted.values(), key=lambda m: len(reg.chain(m.uuid)))
        new = home.create_vm(name, src.ostype, basefolder, register=False,
                             description=src.description)
        mapping = {}
        with _clone_being_made(home, new, register) as made:
            reg.check_free_space(new.folder, sum(reg.used_bytes(u) for u in wanted),
                                 f"cloning VM '{src.name}'")
            for m in order:
                if m.parent in mapping:
                    d = _snapshot_diff(home, new, mapping[m.parent])
                    made.append(d.uuid)
                    with open_image(m.location, format=m.format) as layer, \
                            reg.open_chain(d.uuid, writable=True) as dest:
                        copy_layer(layer, dest, progress)
                    mapping[m.uuid] = d.uuid
                else:
                    mapping[m.uuid] = _flat_copy(home, m, new, made, progress).uuid
            for cfg in configs:
                for a in cfg.attachments:
                    if a.medium in mapping:
                        a.medium = mapping[a.medium]
                        a.location = reg.get(a.medium).location
            if not current_inside:
                # Like a restore of the root: the current state writes to
                # differencing images of its own over the root's frozen ones.
                for a in config.attachments:
                    if a.type == "hdd" and a.medium and \
                            reg.effective_type(a.medium) in FROZEN_TYPES:
                        d = _snapshot_diff(home, new, a.medium)
                        made.append(d.uuid)
                        a.medium, a.location = d.uuid, d.location
            new.config = config
            new.snapshots = snaps
            new.current_snapshot = src.current_snapshot if current_inside else root
        return new


__all__ = ["take", "restore", "delete", "edit", "tree", "power_on", "Session", "clone_vm",
           "ensure_diffs", "DeleteResult"]

"""What a running VM's process does when asked (system/control.py carries
the requests; each runs on the CPU thread between two slices).

* ``snapshot-take``: an online snapshot (Session.take_snapshot).
* ``snapshot-delete``: a snapshot deleted and its images merged, the guest
  paused meanwhile; progress reports go back to the client.
* ``bandwidth-set``: a bandwidth group's new limit, at once.
* ``storage-change``: ``storageattach`` on a running VM, as VirtualBox
  allows it: a CD/DVD drive's medium changed or ejected (refused while
  the guest locks the tray, unless forced: ``--forceunmount``), and a hard
  disk plugged into or pulled out of a hot-pluggable SATA port.  The
  command line holds the home lock meanwhile and saves the VM file only
  when the VM said yes, so the handler reads the media registry fresh from
  its file and never takes the lock.
"""

import contextlib

from drivebay.block.media import MediaRegistry
from drivebay.errors import ConfigError
from drivebay.hw.ahci.hba import make_drive as make_sata_drive
from drivebay.system.vm import Attachment


class LiveVm:
    """The handlers of one running VM: its Session and the controllers
    PcMachine built (``controllers``: the VM's controller name -> device)."""

    def __init__(self, session, controllers):
        self.session = session
        self.controllers = controllers

    def handlers(self):
        return {"snapshot-take": self.take_snapshot,
                "snapshot-delete": self.delete_snapshot,
                "bandwidth-set": self.session.set_bandwidth,
                "storage-change": self.change_storage}

    WITH_PROGRESS = ("snapshot-delete",)

    def take_snapshot(self, name, description="", uniquename=None):
        snap = self.session.take_snapshot(name, description, uniquename)
        return {"uuid": snap.uuid, "name": snap.name, "online": snap.online}

    def delete_snapshot(self, snapshot, progress=None):
        result = self.session.delete_snapshot(snapshot, progress)
        return {"name": result.snapshot.name, "uuid": result.snapshot.uuid,
                "merged": result.merged, "kept": result.kept}

    # -- storageattach -----------------------------------------------------------------

    def change_storage(self, old=None, new=None, force=False):
        """``old``/``new``: the attachment before and after (Attachment.to_json,
        None for none).  Returns what was done."""
        old = Attachment(**old) if old else None
        new = Attachment(**new) if new else None
        a = new or old
        if a is None:
            raise ValueError("storage-change needs the attachment before or after")
        device = self.controllers.get(a.controller)
        if device is None:
            raise ConfigError(f"no controller named '{a.controller}' in the running machine")
        if a.type == "dvddrive":
            return self._change_disc(device, old, new, force)
        if a.type == "hdd":
            return self._plug_disk(device, old, new)
        raise ConfigError(f"a {a.type} cannot change while the VM runs (drivebay has no "
                          f"floppy controller model yet)")

    def _change_disc(self, device, old, new, force):
        where = (old or new).slot
        if old is None or new is None:
            raise ConfigError("a CD/DVD drive cannot be added to or removed from a running VM; "
                              "use --medium emptydrive to take the disc out")
        if new.host_drive or old.host_drive:
            raise ConfigError("host drive passthrough cannot change while the VM runs")
        if old.medium == new.medium:
            return {"done": "nothing to change"}
        backend = self.session.open_backend(new, self._registry()) if new.medium else None
        try:
            if not self._eject(device, where, force):
                raise ConfigError("the guest has locked the medium in the drive (PREVENT "
                                  "MEDIUM REMOVAL); the guest was asked to release it (an "
                                  "eject request event); --forceunmount takes it out anyway")
            self._close_backend(where)
            if backend is not None:
                self._insert(device, where, backend)
                self.session.backends[where] = backend
                backend = None
        finally:
            if backend is not None:
                backend.close()
        return {"done": "inserted" if new.medium else "ejected"}

    def _plug_disk(self, device, old, new):
        where = (old or new).slot
        if self.session.vm.config.controller(where[0]).bus != "sata":
            raise ConfigError(f"controller '{where[0]}' has no hot-pluggable ports (drivebay "
                              f"hot-plugs disks on SATA)")
        if old is not None and new is not None and old.medium == new.medium:
            return {"done": "settings change at the next power-on"}
        for a in (old, new):
            if a is not None and not a.hot_pluggable:
                raise ConfigError(f"port {a.port} of '{a.controller}' is not hot-pluggable")
        port = where[1]
        backend = self.session.open_backend(new, self._registry()) if new is not None else None
        try:
            if old is not None:
                device.detach_drive(port)
                self._close_backend(where)
            if backend is not None:
                drive = make_sata_drive({"type": "hdd", "backend": backend,
                                         "non_rotational": new.non_rotational,
                                         "discard": new.discard}, str(port))
                device.attach_drive(port, drive, hotpluggable=True)
                self.session.backends[where] = backend
                backend = None
        finally:
            if backend is not None:
                backend.close()
        return {"done": "plugged" if new is not None else "unplugged"}

    # -- helpers -----------------------------------------------------------------------

    def _registry(self):
        return MediaRegistry.load(self.session.home.path)

    def _close_backend(self, where):
        backend = self.session.backends.pop(where, None)
        if backend is not None:
            with contextlib.suppress(Exception):
                backend.close()

    def _drive_at(self, where):
        """How the controller's host side names the drive: (channel, unit) on
        IDE, the port number elsewhere."""
        controller, port, unit = where
        return (port, unit) if self.session.vm.config.controller(controller).bus == "ide" \
            else (port,)

    def _eject(self, device, where, force):
        return device.eject(*self._drive_at(where), force=force)

    def _insert(self, device, where, backend):
        device.insert(*self._drive_at(where), backend)

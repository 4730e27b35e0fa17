"""A VM is a file: its storage controllers, attachments, bandwidth groups and snapshots.

VM files and the media registry live in one home folder, ``DRIVEBAY_HOME``
(default ``~/.drivebay``), as VirtualBox keeps ``VirtualBox.xml`` and its
machine folders:

    DRIVEBAY_HOME/
        media.json                    the media registry (block/media.py)
        vms.json                      the registered VMs: name, UUID, VM file
        machines/web/web.vm           a VM file (JSON, schema below)
        machines/web/web.vdi          its default disk
        machines/web/Snapshots/       differencing images made for it

A VM file (``schema`` 1) holds the current configuration, the snapshots
(flat, each naming its parent) and the current snapshot:

    {"schema": 1, "kind": "drivebay-vm", "uuid": "...", "name": "web",
     "ostype": "Ubuntu_64", "description": "", "current_snapshot": null,
     "config": {
       "memory_mb": 2048, "firmware": "stub", "boot_order": ["floppy", "dvd", "disk", "none"],
       "storage_controllers": [{"name": "SATA", "bus": "sata", "controller": "IntelAhci",
                                "port_count": 1, "host_io_cache": false, "bootable": true}],
       "attachments": [{"controller": "SATA", "port": 0, "device": 0, "type": "hdd",
                        "medium": "6f1c...", "location": "/.../web.vdi", "host_drive": null,
                        "passthrough": false, "temp_eject": false, "non_rotational": false,
                        "discard": false, "hot_pluggable": false, "bandwidth_group": null}],
       "bandwidth_groups": [{"name": "Limit", "type": "disk", "limit": "20M"}]},
     "snapshots": [{"uuid": "...", "name": "installed", "description": "",
                    "time": "2024-05-01T10:00:00+00:00", "online": false, "parent": null,
                    "deleting": false, "config": {...}}]}

``firmware`` is ``stub`` (drivebay's own BIOS), ``seabios`` (Debian's
bios-256k.bin) or an absolute path to a BIOS image; ``boot_order`` is
VirtualBox's four boot slots (``modifyvm --boot1..--boot4``: disk, dvd,
floppy, net or none), which ``MachineConfig.qemu_boot_order`` turns into
the QEMU-style string PcMachine(boot_order=...) takes.  Files written
before these two fields existed (same schema) read with the defaults.

Reading is strict (system errors are ConfigError naming the file and the
field); every write is atomic (temporary file + rename) and is the last step
of an operation, after the images and the media registry.

The rules of the configuration (``MachineConfig.validate``): slot limits per
controller type (IDE 4 = 2 ports x 2 devices, SATA 30, SCSI 15, SAS 255,
USB 8, NVMe 255, virtio-scsi 256, floppy 2), at most one IDE and one floppy
controller (VirtualBox's ISystemProperties::getMaxInstancesOfStorageBus:
8 of every other bus), the device types each bus takes, and bandwidth
groups that exist.  ``machine_devices`` translates a VM into the devices
PcMachine.add_device builds.
"""

import contextlib
import copy
import datetime
import fcntl
import os
import re
import uuid as uuidlib
from dataclasses import dataclass, field

from drivebay.block.media import (Fields, MediaRegistry, MediaUsers, canonical_uuid, default_home,
                                  home_lock, looks_like_uuid, read_json, write_json_atomic)
from drivebay.block import throttle
from drivebay.errors import ConfigError, MediaError
from drivebay.system import ostypes

SCHEMA = 1
VM_KIND = "drivebay-vm"
VM_LIST_KIND = "drivebay-vm-list"
VM_LIST_FILE = "vms.json"
MACHINES_FOLDER = "machines"
VM_SUFFIX = ".vm"
SNAPSHOTS_FOLDER = "Snapshots"
NAME_RE = re.compile(r"^[^/\\\x00-\x1f]{1,255}$")


# -- controllers -------------------------------------------------------------------------

@dataclass(frozen=True)
class Bus:
    name: str                  # storagectl --add name
    chips: tuple               # controller variants, the first is the default
    ports: int                 # the most ports (VirtualBox manual, "Hard Disk Controllers")
    devices_per_port: int
    default_ports: int
    min_ports: int
    max_instances: int         # ISystemProperties::getMaxInstancesOfStorageBus
    default_name: str
    device_types: tuple        # attachment types it takes
    hotplug: bool              # --hotpluggable allowed
    host_io_cache: bool        # default of --hostiocache

    @property
    def slots(self):
        return self.ports * self.devices_per_port


BUSES = {b.name: b for b in (
    Bus("ide", ("PIIX4", "PIIX3", "ICH6"), 2, 2, 2, 2, 1, "IDE", ("hdd", "dvddrive"), False, True),
    Bus("sata", ("IntelAhci",), 30, 1, 30, 1, 8, "SATA", ("hdd", "dvddrive"), True, False),
    Bus("scsi", ("LsiLogic", "BusLogic"), 15, 1, 15, 15, 8, "SCSI", ("hdd", "dvddrive"), False,
        False),
    Bus("sas", ("LsiLogicSas",), 255, 1, 8, 1, 8, "SAS", ("hdd", "dvddrive"), False, False),
    Bus("usb", ("USB",), 8, 1, 8, 8, 8, "USB", ("hdd", "dvddrive"), True, True),
    Bus("pcie", ("NVMe",), 255, 1, 1, 1, 8, "NVMe", ("hdd",), False, False),
    Bus("virtio", ("VirtIO",), 256, 1, 1, 1, 8, "VirtioSCSI", ("hdd", "dvddrive"), True, False),
    Bus("floppy", ("I82078",), 1, 2, 1, 1, 1, "Floppy", ("fdd",), False, True),
)}
CHIP_BUS = {chip: b.name for b in BUSES.values() for chip in b.chips}
# Device names in hw/devices.py (the IDE rows exist; the others are the
# names their controller issues register).
HW_DEVICE = {"PIIX3": "piix3-ide", "PIIX4": "piix4-ide", "ICH6": "ich6-ide",
             "IntelAhci": "ahci", "LsiLogic": "lsilogic", "BusLogic": "buslogic",
             "LsiLogicSas": "lsilogic-sas", "USB": "usb-storage", "NVMe": "nvme",
             "VirtIO": "virtio-scsi", "I82078": "floppy"}
ATTACHMENT_TYPES = ("hdd", "dvddrive", "fdd")
MEDIUM_DEVICE = {"hdd": "hdd", "dvddrive": "dvd", "fdd": "floppy"}


def bus_named(name):
    key = name.lower()
    if key in ("virtio-scsi", "virtioscsi"):
        key = "virtio"
    if key not in BUSES:
        raise ConfigError(f"unknown storage bus {name!r} ({', '.join(BUSES)})")
    return BUSES[key]


def chip_named(name):
    for chip in CHIP_BUS:
        if chip.lower() == name.lower():
            return chip
    raise ConfigError(f"unknown controller type {name!r} ({', '.join(CHIP_BUS)})")


# -- bandwidth limits ----------------------------------------------------------------

BANDWIDTH_TYPES = ("disk",)       # "network" groups shape network adapters: none here


def parse_limit(text):
    """Bytes per second of a bandwidth limit (0 switches shaping off): the
    units of VBoxManage bandwidthctl, as block/throttle.py reads them."""
    return throttle.parse_limit(str(text))


# -- the configuration ------------------------------------------------------------------

@dataclass
class Controller:
    name: str
    bus: str
    controller: str
    port_count: int
    host_io_cache: bool
    bootable: bool = True

    def to_json(self):
        return {"name": self.name, "bus": self.bus, "controller": self.controller,
                "port_count": self.port_count, "host_io_cache": self.host_io_cache,
                "bootable": self.bootable}


@dataclass
class Attachment:
    controller: str
    port: int
    device: int
    type: str
    medium: str | None = None          # UUID in the media registry; None: empty drive
    location: str | None = None        # where the medium was when last written (for readers)
    host_drive: str | None = None      # host:DRIVE attachments
    passthrough: bool = False
    temp_eject: bool = False
    non_rotational: bool = False
    discard: bool = False
    hot_pluggable: bool = False
    bandwidth_group: str | None = None

    @property
    def slot(self):
        return (self.controller, self.port, self.device)

    def to_json(self):
        return {"controller": self.controller, "port": self.port, "device": self.device,
                "type": self.type, "medium": self.medium, "location": self.location,
                "host_drive": self.host_drive, "passthrough": self.passthrough,
                "temp_eject": self.temp_eject, "non_rotational": self.non_rotational,
                "discard": self.discard, "hot_pluggable": self.hot_pluggable,
                "bandwidth_group": self.bandwidth_group}


@dataclass
class BandwidthGroup:
    name: str
    type: str = "disk"
    limit: str = "0"

    @property
    def bytes_per_second(self):
        return parse_limit(self.limit)

    def to_json(self):
        return {"name": self.name, "type": self.type, "limit": self.limit}


# -- firmware and boot order --------------------------------------------------------------

FIRMWARE_NAMES = ("stub", "seabios")       # else an absolute path to a BIOS image
DEFAULT_FIRMWARE = "stub"                  # drivebay's own BIOS boot stub (firmware/bios)
# VBoxManage modifyvm --boot1..--boot4 and the QEMU -boot letter of each
# (hw/pc/rtc.py puts up to three in the CMOS, as QEMU does for SeaBIOS).
BOOT_DEVICES = {"floppy": "a", "dvd": "d", "disk": "c", "net": "n", "none": ""}
BOOT_SLOTS = 4
DEFAULT_BOOT_ORDER = ("floppy", "dvd", "disk", "none")     # VirtualBox's
CMOS_BOOT_SLOTS = 3


def firmware_named(text, error=ConfigError):
    """A firmware setting: ``stub``, ``seabios`` or an existing BIOS image
    (stored as an absolute path)."""
    key = str(text).strip()
    if key.lower() in FIRMWARE_NAMES:
        return key.lower()
    if not key:
        raise error("firmware: empty (stub, seabios or a BIOS image path)")
    path = os.path.abspath(key)
    if not os.path.isfile(path):
        raise error(f"firmware {key!r}: not stub or seabios, and no BIOS image file "
                    f"'{path}' exists")
    return path


def qemu_boot_order(devices):
    """VirtualBox boot slots as QEMU's ``-boot order=`` string for
    PcMachine(boot_order=...): 'a' floppy, 'c' disk, 'd' CD/DVD, 'n' network;
    ``none`` slots are skipped, a device listed twice counts once, and only
    the first three fit the CMOS (hw/pc/rtc.py)."""
    out = ""
    for d in devices:
        letter = BOOT_DEVICES[d]
        if letter and letter not in out:
            out += letter
    return out[:CMOS_BOOT_SLOTS]


@dataclass
class MachineConfig:
    memory_mb: int = 64
    controllers: list = field(default_factory=list)
    attachments: list = field(default_factory=list)
    bandwidth_groups: list = field(default_factory=list)
    firmware: str = DEFAULT_FIRMWARE
    boot_order: list = field(default_factory=lambda: list(DEFAULT_BOOT_ORDER))

    @property
    def qemu_boot_order(self):
        return qemu_boot_order(self.boot_order)

    def to_json(self):
        return {"memory_mb": self.memory_mb, "firmware": self.firmware,
                "boot_order": list(self.boot_order),
                "storage_controllers": [c.to_json() for c in self.controllers],
                "attachments": [a.to_json() for a in self.attachments],
                "bandwidth_groups": [g.to_json() for g in self.bandwidth_groups]}

    @classmethod
    def from_json(cls, f):
        memory = f.take("memory_mb", int)
        # Both arrived after the first schema-1 files: absent means the default.
        firmware = f.take("firmware", str, default=DEFAULT_FIRMWARE)
        boot_order = f.take("boot_order", list, default=list(DEFAULT_BOOT_ORDER))
        for i, d in enumerate(boot_order):
            if not isinstance(d, str) or d not in BOOT_DEVICES:
                f.fail(f"boot_order[{i}]", f"{d!r} is not one of {', '.join(BOOT_DEVICES)}")
        controllers = []
        for where, item in f.items("storage_controllers"):
            c = Fields(item, f.file, where, ConfigError)
            bus = c.take("bus", str, choices=tuple(BUSES))
            ctl = Controller(c.take("name", str), bus,
                             c.take("controller", str, choices=BUSES[bus].chips),
                             c.take("port_count", int), c.take("host_io_cache", bool),
                             c.take("bootable", bool, default=True))
            c.done()
            controllers.append(ctl)
        attachments = []
        for where, item in f.items("attachments"):
            a = Fields(item, f.file, where, ConfigError)
            att = Attachment(a.take("controller", str), a.take("port", int),
                             a.take("device", int), a.take("type", str, choices=ATTACHMENT_TYPES))
            att.medium = a.uuid("medium", nullable=True) if "medium" in a.data else None
            att.location = a.take("location", str, default=None, nullable=True)
            att.host_drive = a.take("host_drive", str, default=None, nullable=True)
            for flag in ("passthrough", "temp_eject", "non_rotational", "discard",
                         "hot_pluggable"):
                setattr(att, flag, a.take(flag, bool, default=False))
            att.bandwidth_group = a.take("bandwidth_group", str, default=None, nullable=True)
            a.done()
            attachments.append(att)
        groups = []
        for where, item in f.items("bandwidth_groups", default=[]):
            g = Fields(item, f.file, where, ConfigError)
            grp = BandwidthGroup(g.take("name", str), g.take("type", str, default="disk",
                                                              choices=BANDWIDTH_TYPES),
                                 g.take("limit", str))
            try:
                parse_limit(grp.limit)
            except ConfigError as e:
                g.fail("limit", str(e))
            g.done()
            groups.append(grp)
        f.done()
        return cls(memory, controllers, attachments, groups, firmware, boot_order)

    # -- look-ups

    def controller(self, name):
        for c in self.controllers:
            if c.name == name:
                return c
        raise ConfigError(f"Could not find a storage controller named '{name}' "
                          f"(the VM has: {', '.join(c.name for c in self.controllers) or 'none'})")

    def attachment_at(self, controller, port, device):
        for a in self.attachments:
            if a.slot == (controller, port, device):
                return a
        return None

    def group(self, name):
        for g in self.bandwidth_groups:
            if g.name == name:
                return g
        return None

    def validate(self, where="config", error=ConfigError, file=None):
        """Every rule of the configuration; ``error`` names ``file`` and the field."""
        def fail(field_name, message):
            raise error(f"{file + ': ' if file else ''}field {where}.{field_name}: {message}")
        if not 1 <= self.memory_mb <= 65536:
            fail("memory_mb", f"{self.memory_mb} MB is outside 1..65536")
        if self.firmware not in FIRMWARE_NAMES and not os.path.isabs(self.firmware):
            fail("firmware", f"{self.firmware!r} is not stub, seabios or an absolute path "
                             f"to a BIOS image")
        if len(self.boot_order) != BOOT_SLOTS:
            fail("boot_order", f"{len(self.boot_order)} entries, not {BOOT_SLOTS} "
                               f"(--boot1..--boot{BOOT_SLOTS})")
        for i, d in enumerate(self.boot_order):
            if d not in BOOT_DEVICES:
                fail(f"boot_order[{i}]", f"{d!r} is not one of {', '.join(BOOT_DEVICES)}")
        names, per_bus = set(), {}
        for i, c in enumerate(self.controllers):
            here = f"storage_controllers[{i}]"
            bus = BUSES.get(c.bus)
            if bus is None:
                fail(f"{here}.bus", f"unknown bus {c.bus!r}")
            if c.controller not in bus.chips:
                fail(f"{here}.controller", f"{c.controller!r} is not a {bus.name} controller "
                                           f"({', '.join(bus.chips)})")
            if not c.name or c.name in names:
                fail(f"{here}.name", f"{c.name!r} is empty or used twice")
            names.add(c.name)
            if not bus.min_ports <= c.port_count <= bus.ports:
                fail(f"{here}.port_count", f"{c.port_count} is outside {bus.min_ports}.."
                                           f"{bus.ports} for a {bus.name} controller")
            per_bus[bus.name] = per_bus.get(bus.name, 0) + 1
            if per_bus[bus.name] > bus.max_instances:
                fail(f"{here}.bus", f"a VM has at most {bus.max_instances} {bus.name} "
                                    f"controller{'s' if bus.max_instances > 1 else ''}")
        slots = set()
        groups = {g.name for g in self.bandwidth_groups}
        if len(groups) != len(self.bandwidth_groups):
            fail("bandwidth_groups", "a group name is used twice")
        media = {}
        for i, a in enumerate(self.attachments):
            here = f"attachments[{i}]"
            ctl = next((c for c in self.controllers if c.name == a.controller), None)
            if ctl is None:
                fail(f"{here}.controller", f"no storage controller named {a.controller!r}")
            bus = BUSES[ctl.bus]
            if not 0 <= a.port < ctl.port_count:
                fail(f"{here}.port", f"{a.port} is outside 0..{ctl.port_count - 1} of "
                                     f"controller {ctl.name!r}")
            if not 0 <= a.device < bus.devices_per_port:
                fail(f"{here}.device", f"{a.device} is outside 0..{bus.devices_per_port - 1}")
            if a.slot in slots:
                fail(f"{here}.port", f"port {a.port} device {a.device} of {a.controller!r} "
                                     f"is used twice")
            slots.add(a.slot)
            if a.type not in bus.device_types:
                fail(f"{here}.type", f"a {bus.name} controller takes no {a.type} "
                                     f"({', '.join(bus.device_types)})")
            if a.type == "hdd" and a.medium is None:
                fail(f"{here}.medium", "a hard disk attachment needs a medium")
            if a.medium is not None and a.host_drive is not None:
                fail(f"{here}.host_drive", "an attachment has a medium or a host drive, not both")
            if a.host_drive is not None and a.type == "hdd":
                fail(f"{here}.host_drive", "host drives are CD/DVD or floppy drives")
            if a.passthrough and (a.type != "dvddrive" or a.host_drive is None):
                fail(f"{here}.passthrough", "passthrough is for a host CD/DVD drive")
            if a.temp_eject and a.type != "dvddrive":
                fail(f"{here}.temp_eject", "temporary eject is for CD/DVD drives")
            for flag in ("non_rotational", "discard"):
                if getattr(a, flag) and a.type != "hdd":
                    fail(f"{here}.{flag}", "only for hard disks")
            if a.hot_pluggable and not bus.hotplug:
                fail(f"{here}.hot_pluggable", f"{bus.name} controllers have no hot-plug")
            if a.bandwidth_group is not None and a.bandwidth_group not in groups:
                fail(f"{here}.bandwidth_group", f"no bandwidth group {a.bandwidth_group!r}")
            if a.bandwidth_group is not None and a.type != "hdd":
                fail(f"{here}.bandwidth_group", "bandwidth groups limit hard disks")
            if a.medium is not None:
                if a.medium in media:
                    fail(f"{here}.medium", f"medium {a.medium} is attached twice "
                                           f"(also at {media[a.medium]})")
                media[a.medium] = here


@dataclass
class Snapshot:
    uuid: str
    name: str
    description: str
    time: str
    online: bool
    parent: str | None
    config: MachineConfig
    deleting: bool = False

    def to_json(self):
        return {"uuid": self.uuid, "name": self.name, "description": self.description,
                "time": self.time, "online": self.online, "parent": self.parent,
                "deleting": self.deleting, "config": self.config.to_json()}


@dataclass
class Vm:
    uuid: str
    name: str
    ostype: str
    path: str
    config: MachineConfig
    description: str = ""
    snapshots: list = field(default_factory=list)
    current_snapshot: str | None = None

    @property
    def folder(self):
        return os.path.dirname(self.path)

    @property
    def snapshot_folder(self):
        return os.path.join(self.folder, SNAPSHOTS_FOLDER)

    @property
    def lock_path(self):
        return self.path + ".lock"

    def snapshot(self, ref):
        """A snapshot by name or UUID (a name used twice must be given by UUID)."""
        if looks_like_uuid(ref):
            u = canonical_uuid(ref)
            for s in self.snapshots:
                if s.uuid == u:
                    return s
        named = [s for s in self.snapshots if s.name == ref]
        if len(named) > 1:
            raise ConfigError(f"VM '{self.name}': {len(named)} snapshots are named '{ref}': "
                              f"give the UUID")
        if not named:
            raise ConfigError(f"Could not find a snapshot named '{ref}' in VM '{self.name}'")
        return named[0]

    def children_of(self, snapshot_uuid):
        return [s for s in self.snapshots if s.parent == snapshot_uuid]

    def configs(self):
        """``(where, config)`` for the current state and every snapshot."""
        yield "current state", self.config
        for s in self.snapshots:
            yield f"snapshot '{s.name}'", s.config

    def references(self, medium_uuid, include_current=True):
        """Where this VM refers to the medium (``where`` strings)."""
        out = []
        for where, cfg in self.configs():
            if not include_current and cfg is self.config:
                continue
            if any(a.medium == medium_uuid for a in cfg.attachments):
                out.append(where)
        return out

    def to_json(self):
        return {"schema": SCHEMA, "kind": VM_KIND, "uuid": self.uuid, "name": self.name,
                "ostype": self.ostype, "description": self.description,
                "current_snapshot": self.current_snapshot, "config": self.config.to_json(),
                "snapshots": [s.to_json() for s in self.snapshots]}

    def validate(self, error=ConfigError, file=None):
        file = file or self.path
        if not NAME_RE.match(self.name):
            raise error(f"{file}: field name: {self.name!r} is not a valid VM name")
        try:
            ostypes.get(self.ostype)
        except ConfigError as e:
            raise error(f"{file}: field ostype: {e}") from None
        self.config.validate("config", error, file)
        seen = {}
        for i, s in enumerate(self.snapshots):
            if s.uuid in seen:
                raise error(f"{file}: field snapshots[{i}].uuid: {s.uuid} is used twice")
            seen[s.uuid] = s
            s.config.validate(f"snapshots[{i}].config", error, file)
        for i, s in enumerate(self.snapshots):
            if s.parent is not None and s.parent not in seen:
                raise error(f"{file}: field snapshots[{i}].parent: no snapshot {s.parent}")
            at, hops = s, 0
            while at.parent is not None:
                at, hops = seen[at.parent], hops + 1
                if hops > len(self.snapshots):
                    raise error(f"{file}: field snapshots[{i}].parent: the parents form a loop")
        # Deleting a root snapshot with several children leaves several roots
        # (VirtualBox refuses that deletion; drivebay allows it), and deleting
        # the current root snapshot leaves no current one: both are valid.
        if self.current_snapshot is not None and self.current_snapshot not in seen:
            raise error(f"{file}: field current_snapshot: no snapshot {self.current_snapshot}")

    @classmethod
    def load(cls, path):
        path = os.path.abspath(path)
        top = read_json(path, ConfigError, VM_KIND)
        uuid = top.uuid("uuid")
        name = top.take("name", str)
        ostype = top.take("ostype", str)
        description = top.take("description", str, default="")
        current = top.uuid("current_snapshot", nullable=True) \
            if "current_snapshot" in top.data else None
        config = MachineConfig.from_json(top.sub("config"))
        snapshots = []
        for where, item in top.items("snapshots", default=[]):
            f = Fields(item, path, where, ConfigError)
            snap = Snapshot(f.uuid("uuid"), f.take("name", str),
                            f.take("description", str, default=""), f.take("time", str),
                            f.take("online", bool, default=False),
                            f.uuid("parent", nullable=True) if "parent" in f.data else None,
                            MachineConfig.from_json(f.sub("config")),
                            f.take("deleting", bool, default=False))
            f.done()
            snapshots.append(snap)
        top.done()
        vm = cls(uuid, name, ostype, path, config, description, snapshots, current)
        vm.validate()
        return vm

    def save(self):
        """Validate, then write atomically."""
        self.validate()
        write_json_atomic(self.path, self.to_json())


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# -- running VMs -------------------------------------------------------------------------

def is_running(vm):
    """A VM runs while some process holds its run lock (``Session``); a process
    that dies releases it, so a killed VM is simply powered off."""
    try:
        fd = os.open(vm.lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def require_stopped(vm, action):
    if is_running(vm):
        raise ConfigError(f"Cannot {action}: the VM '{vm.name}' is running (power it off first)")


# -- the home folder -------------------------------------------------------------------

@dataclass
class VmEntry:
    uuid: str
    name: str
    path: str


class VmUsers(MediaUsers):
    """The media manager's view of the VMs (block/media.py asks, VM files answer)."""

    def __init__(self, home):
        self.home = home

    def users(self, uuid):
        out = []
        for vm in self.home.all_vms():
            for where in vm.references(uuid):
                out.append((vm.name, vm.uuid, where))
        return out

    def running(self, uuid):
        return [vm.name for vm in self.home.all_vms() if vm.references(uuid) and is_running(vm)]

    def relocate(self, uuid, location):
        for vm in self.home.all_vms():
            changed = False
            for _where, cfg in vm.configs():
                for a in cfg.attachments:
                    if a.medium == uuid and a.location != location:
                        a.location, changed = location, True
            if changed:
                vm.save()

    def release(self, uuid):
        names = []
        for vm in self.home.all_vms():
            current = [a for a in vm.config.attachments if a.medium == uuid]
            if not current:
                continue
            require_stopped(vm, f"release the medium {uuid}")
            for a in current:
                if a.type == "hdd":
                    vm.config.attachments.remove(a)
                else:
                    a.medium = a.location = None
            vm.save()
            names.append(vm.name)
        return names


class Home:
    """One DRIVEBAY_HOME: the media registry and the registered VMs.

    Use it as ``with Home(path).locked() as home:`` for anything that
    changes files: the home lock is held, ``home.media`` is loaded, VMs
    loaded during the block are cached (so the media manager and the
    operation see the same objects), and the media registry is saved at the
    end when it changed and the block succeeded.  Operations that change VM
    files save the registry themselves first and the VM file last."""

    def __init__(self, path=None):
        self.path = os.path.abspath(path or default_home())
        self.list_path = os.path.join(self.path, VM_LIST_FILE)
        self._media = None
        self._vms = {}
        self._depth = 0

    @property
    def media(self):
        if self._media is None:
            self._media = MediaRegistry.load(self.path, users=VmUsers(self))
        return self._media

    @contextlib.contextmanager
    def locked(self):
        if self._depth:                    # nested: part of the outer block
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        with home_lock(self.path):
            self._media, self._vms, self._depth = None, {}, 1
            try:
                yield self
                if self._media is not None and self._media.dirty:
                    self._media.save()
            finally:
                self._media, self._vms, self._depth = None, {}, 0

    # -- the VM list

    def entries(self):
        if not os.path.exists(self.list_path):
            return []
        top = read_json(self.list_path, ConfigError, VM_LIST_KIND)
        out = []
        for where, item in top.items("machines", default=[]):
            f = Fields(item, self.list_path, where, ConfigError)
            e = VmEntry(f.uuid("uuid"), f.take("name", str), f.take("path", str))
            f.done()
            out.append(e)
        top.done()
        return out

    def _write_entries(self, entries):
        write_json_atomic(self.list_path, {
            "schema": SCHEMA, "kind": VM_LIST_KIND,
            "machines": [{"uuid": e.uuid, "name": e.name, "path": e.path} for e in entries]})

    def all_vms(self):
        return [self.load(e) for e in self.entries()]

    def load(self, entry):
        vm = self._vms.get(entry.uuid)
        if vm is None:
            vm = Vm.load(entry.path)
            if vm.uuid != entry.uuid:
                raise ConfigError(f"{entry.path}: field uuid: {vm.uuid}, but {self.list_path} "
                                  f"registers this file as {entry.uuid}")
            self._vms[entry.uuid] = vm
        return vm

    def find_vm(self, ref):
        """A registered VM by name, UUID or VM file path."""
        ref = str(ref)
        entries = self.entries()
        for e in entries:
            if e.name == ref or looks_like_uuid(ref) and e.uuid == canonical_uuid(ref) or \
                    os.path.abspath(ref) == e.path:
                return self.load(e)
        raise ConfigError(f"Could not find a registered machine named '{ref}' "
                          f"(in {self.list_path})")

    def create_vm(self, name, ostype=ostypes.DEFAULT_OSTYPE, basefolder=None, uuid=None,
                  register=True, description=""):
        """A new VM with no storage (VBoxManage createvm); see ``apply_defaults``."""
        if not NAME_RE.match(name):
            raise ConfigError(f"invalid VM name {name!r}")
        t = ostypes.get(ostype)
        entries = self.entries()
        if any(e.name == name for e in entries):
            raise ConfigError(f"Machine settings file for '{name}' already exists: a machine "
                              f"named '{name}' is registered")
        folder = os.path.join(os.path.abspath(basefolder) if basefolder
                              else os.path.join(self.path, MACHINES_FOLDER), name)
        path = os.path.join(folder, name + VM_SUFFIX)
        if os.path.exists(path):
            raise ConfigError(f"Machine settings file '{path}' already exists")
        vm = Vm(canonical_uuid(uuid) if uuid else str(uuidlib.uuid4()), name, t.id, path,
                MachineConfig(memory_mb=t.memory_mb), description)
        if any(e.uuid == vm.uuid for e in entries):
            raise ConfigError(f"a machine with UUID {vm.uuid} is already registered")
        vm.save()
        if register:
            self.register(vm)
        self._vms[vm.uuid] = vm
        return vm

    def register(self, vm):
        entries = self.entries()
        for e in entries:
            if e.uuid == vm.uuid or e.name == vm.name:
                raise ConfigError(f"Cannot register the machine '{vm.name}' ({vm.path}): a "
                                  f"machine '{e.name}' with UUID {e.uuid} is already registered")
        entries.append(VmEntry(vm.uuid, vm.name, vm.path))
        self._write_entries(entries)
        self._vms[vm.uuid] = vm

    def register_file(self, path):
        return self.register(Vm.load(path))

    def unregister(self, vm):
        self._write_entries([e for e in self.entries() if e.uuid != vm.uuid])
        self._vms.pop(vm.uuid, None)

    def rename_entry(self, vm):
        self._write_entries([VmEntry(e.uuid, vm.name, vm.path) if e.uuid == vm.uuid else e
                             for e in self.entries()])


# -- storage controllers -------------------------------------------------------------------

def add_controller(vm, name, bus, chip=None, port_count=None, host_io_cache=None,
                   bootable=True):
    """storagectl --add: returns the new Controller and a driver warning or None."""
    b = bus_named(bus)
    chip = chip_named(chip) if chip else b.chips[0]
    if CHIP_BUS[chip] != b.name:
        raise ConfigError(f"a {chip} controller is not on the {b.name} bus "
                          f"(use --add {CHIP_BUS[chip]})")
    cfg = vm.config
    if any(c.name == name for c in cfg.controllers):
        raise ConfigError(f"Storage controller named '{name}' already exists")
    count = sum(1 for c in cfg.controllers if c.bus == b.name)
    if count >= b.max_instances:
        raise ConfigError(f"Too many storage controllers of this type: a VM has at most "
                          f"{b.max_instances} {b.name} controller"
                          f"{'s' if b.max_instances > 1 else ''}")
    ctl = Controller(name, b.name, chip, b.default_ports if port_count is None else port_count,
                     b.host_io_cache if host_io_cache is None else host_io_cache, bootable)
    _check_port_count(b, ctl.port_count, cfg, name)
    cfg.controllers.append(ctl)
    return ctl, ostypes.driver_warning(vm.ostype, chip)


def _check_port_count(bus, count, cfg, name):
    if not bus.min_ports <= count <= bus.ports:
        raise ConfigError(f"port count {count} is out of range: a {bus.name} controller has "
                          f"{bus.min_ports}..{bus.ports} ports")
    used = [a.port for a in cfg.attachments if a.controller == name and a.port >= count]
    if used:
        raise ConfigError(f"port count {count}: port {max(used)} of '{name}' has a device "
                          f"attached")


def modify_controller(vm, name, chip=None, port_count=None, host_io_cache=None,
                      bootable=None, rename=None):
    cfg = vm.config
    ctl = cfg.controller(name)
    bus = BUSES[ctl.bus]
    warning = None
    if chip is not None:
        chip = chip_named(chip)
        if chip not in bus.chips:
            raise ConfigError(f"a {chip} controller cannot replace a {bus.name} controller "
                              f"({', '.join(bus.chips)})")
        ctl.controller = chip
        warning = ostypes.driver_warning(vm.ostype, chip)
    if port_count is not None:
        _check_port_count(bus, port_count, cfg, name)
        ctl.port_count = port_count
    if host_io_cache is not None:
        ctl.host_io_cache = host_io_cache
    if bootable is not None:
        ctl.bootable = bootable
    if rename is not None and rename != name:
        if any(c.name == rename for c in cfg.controllers):
            raise ConfigError(f"Storage controller named '{rename}' already exists")
        ctl.name = rename
        for a in cfg.attachments:
            if a.controller == name:
                a.controller = rename
    return ctl, warning


def remove_controller(home, vm, name):
    """storagectl --remove: its devices are detached first."""
    cfg = vm.config
    ctl = cfg.controller(name)
    for a in [a for a in cfg.attachments if a.controller == ctl.name]:
        detach(home, vm, a)
    cfg.controllers.remove(ctl)


# -- attachments ---------------------------------------------------------------------------

def is_implicit_diff(home, vm, uuid):
    """A differencing image drivebay made for this VM (in its Snapshots
    folder) that no snapshot and no other VM refers to: it goes when its
    attachment goes, as VirtualBox deletes implicit differencing images."""
    m = home.media.get(uuid)
    if m is None or m.parent is None:
        return False
    if os.path.dirname(m.location) != vm.snapshot_folder:
        return False
    if vm.references(uuid, include_current=False):
        return False
    if home.media.children(uuid):
        return False
    return not any(o.references(uuid) for o in home.all_vms() if o.uuid != vm.uuid)


def drop_diff(home, uuid):
    """Forget a differencing image and delete its file (registry saved first:
    a killed process leaves a file nobody refers to, never a reference to no file)."""
    m = home.media.get(uuid)
    if m is None:
        return
    home.media.forget(uuid)
    home.media.save()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(m.location)


def detach(home, vm, att):
    """Remove an attachment from the current state (the caller saves the VM)."""
    vm.config.attachments.remove(att)
    return att


def attach(home, vm, controller, port, device, type=None, medium=None, mtype=None,
           comment=None, passthrough=None, temp_eject=None, non_rotational=None, discard=None,
           hot_pluggable=None, bandwidth_group=None):
    """storageattach: returns ``(attachment or None, implicit diffs to delete)``.

    On a running VM this only checks and computes the change: the caller
    has the running VM carry it out (system/live.py; --forceunmount goes
    there) and saves the VM file only if it did.

    ``medium``: None (change only the flags), "none" (remove the attachment),
    "emptydrive", "host:DRIVE", a registered medium's UUID, location or
    name, or an image file (registered on the way).  The VM is saved by the
    caller, after the registry; the returned diffs are deleted after that."""
    cfg = vm.config
    ctl = cfg.controller(controller)
    bus = BUSES[ctl.bus]
    if port < 0 or device < 0:
        raise ConfigError("port and device are not negative")
    if port >= bus.ports:
        raise ConfigError(f"The port {port} is out of range: a {bus.name} controller has "
                          f"ports 0..{bus.ports - 1} ({bus.slots} slots)")
    if device >= bus.devices_per_port:
        raise ConfigError(f"The device {device} is out of range: a {bus.name} controller has "
                          f"devices 0..{bus.devices_per_port - 1} per port")
    existing = cfg.attachment_at(ctl.name, port, device)
    dropped = []
    if medium is not None and str(medium).lower() == "none":
        if existing is None:
            raise ConfigError(f"No storage device attached to device slot {device} on port "
                              f"{port} of controller '{ctl.name}'")
        if not (existing.type == "hdd" and existing.hot_pluggable):
            # A hot-pluggable disk is pulled out by the running VM itself
            # (system/live.py), before the caller saves the VM file.
            require_stopped(vm, "detach a device")
        detach(home, vm, existing)
        if existing.medium and is_implicit_diff(home, vm, existing.medium):
            dropped.append(existing.medium)
        return None, dropped
    if type is None:
        if existing is None:
            raise ConfigError("--type is required to attach a new device")
        type = existing.type
    if type not in ATTACHMENT_TYPES:
        raise ConfigError(f"invalid --type {type!r} ({', '.join(ATTACHMENT_TYPES)})")
    if type not in bus.device_types:
        raise ConfigError(f"a {bus.name} controller takes no {type} devices "
                          f"({', '.join(bus.device_types)})")
    if existing is not None and existing.type != type and medium is None:
        raise ConfigError(f"port {port} device {device} holds a {existing.type}, not a {type}")
    if medium is None and existing is None:
        raise ConfigError("--medium is required to attach a new device")
    running = is_running(vm)
    if running and type == "hdd" and medium is not None and \
            not (existing.hot_pluggable if existing is not None else hot_pluggable):
        raise ConfigError(f"Cannot attach a hard disk to the running VM '{vm.name}' on a port "
                          f"that is not hot-pluggable (--hotpluggable on)")
    att = copy.deepcopy(existing) if existing is not None and existing.type == type else \
        Attachment(ctl.name, port, device, type)
    if medium is not None:
        att.medium = att.location = att.host_drive = None
        text = str(medium)
        if text.lower() == "emptydrive":
            if type == "hdd":
                raise ConfigError("a hard disk attachment needs a medium ('emptydrive' is for "
                                  "CD/DVD and floppy drives)")
        elif text.lower().startswith("host:"):
            if type == "hdd":
                raise ConfigError("host drives are CD/DVD or floppy drives")
            att.host_drive = text[5:]
            if not att.host_drive:
                raise ConfigError("host:DRIVE needs a drive (host:/dev/sr0)")
        elif text.lower() == "iscsi":
            raise ConfigError("--medium iscsi: register the LUN first (the command line's "
                              "--server/--target options do; MediaRegistry.add_iscsi) and "
                              "attach its UUID")
        elif text.lower() == "additions":
            raise ConfigError("--medium additions: drivebay has no Guest Additions image")
        else:
            m = _medium_for(home, text, MEDIUM_DEVICE[type], mtype)
            if any(a.medium == m.uuid and a.slot != att.slot for a in cfg.attachments):
                raise ConfigError(f"Medium '{m.location}' is already attached to this VM")
            _check_attachable(home, vm, m)
            att.medium, att.location = m.uuid, m.location
            if comment is not None:
                home.media.set_description(m.uuid, comment)
    elif mtype is not None and att.medium:
        home.media.set_type(att.medium, mtype)
    for name, value in (("passthrough", passthrough), ("temp_eject", temp_eject),
                        ("non_rotational", non_rotational), ("discard", discard),
                        ("hot_pluggable", hot_pluggable)):
        if value is not None:
            setattr(att, name, value)
    if bandwidth_group is not None:
        if bandwidth_group.lower() == "none":
            att.bandwidth_group = None
        else:
            if cfg.group(bandwidth_group) is None:
                raise ConfigError(f"Could not find a bandwidth group named '{bandwidth_group}'")
            att.bandwidth_group = bandwidth_group
    if existing is not None:
        cfg.attachments[cfg.attachments.index(existing)] = att
        if existing.medium and existing.medium != att.medium and \
                is_implicit_diff(home, vm, existing.medium):
            dropped.append(existing.medium)
    else:
        cfg.attachments.append(att)
    if port >= ctl.port_count:
        # VBoxManage storageattach grows the port count to reach the port.
        ctl.port_count = port + 1
    try:
        cfg.validate("config")
    except ConfigError as e:
        raise ConfigError(f"storageattach: {e}".replace("field config.", "")) from None
    return att, dropped


def _medium_for(home, ref, device, mtype):
    reg = home.media
    try:
        m = reg.find(ref, device)
    except MediaError:
        if not os.path.isfile(ref):
            raise MediaError(f"Could not find file for the medium '{os.path.abspath(ref)}' "
                             f"(VERR_FILE_NOT_FOUND)") from None
        m = reg.add(ref, device)
    if mtype is not None:
        reg.set_type(m.uuid, mtype)
    if not m.accessible:
        raise MediaError(f"Medium '{m.location}' is not accessible (the file is missing)")
    return m


def _check_attachable(home, vm, m):
    """VirtualBox's rules for attaching a hard disk by its write mode."""
    reg = home.media
    if m.device != "hdd":
        return
    base_type = reg.effective_type(m.uuid)
    if m.parent is None and base_type in ("immutable", "multiattach"):
        return          # a differencing image is made per VM (snapshots.ensure_diffs)
    kids = reg.children(m.uuid)
    if kids:
        raise MediaError(
            f"Cannot attach medium '{m.location}': it has {len(kids)} differencing image(s) "
            f"(snapshots) and writing to it would change what they show; attach the newest "
            f"differencing image, or make the disk immutable or multiattach")
    others = [o for o in home.all_vms() if o.uuid != vm.uuid and
              any(a.medium == m.uuid for a in o.config.attachments)]
    if base_type == "shareable" or m.parent is not None and not others:
        return
    running = [o.name for o in others if is_running(o)]
    if running:
        raise MediaError(f"Medium '{m.location}' is locked for writing by the running VM(s) "
                         f"{', '.join(running)} (type {base_type}: one running VM at a time)")


# -- bandwidth groups ------------------------------------------------------------------------

def bandwidth_add(vm, name, type="disk", limit="0"):
    if type not in BANDWIDTH_TYPES:
        raise ConfigError(f"bandwidth group type {type!r} is not supported (disk)")
    if vm.config.group(name) is not None:
        raise ConfigError(f"Bandwidth group named '{name}' already exists")
    if not name:
        raise ConfigError("a bandwidth group needs a name")
    parse_limit(limit)
    g = BandwidthGroup(name, type, str(limit))
    vm.config.bandwidth_groups.append(g)
    return g


def bandwidth_set(vm, name, limit):
    g = vm.config.group(name)
    if g is None:
        raise ConfigError(f"Could not find a bandwidth group named '{name}'")
    parse_limit(limit)
    g.limit = str(limit)
    return g


def bandwidth_remove(vm, name):
    g = vm.config.group(name)
    if g is None:
        raise ConfigError(f"Could not find a bandwidth group named '{name}'")
    users = [f"{a.controller} port {a.port} device {a.device}"
             for a in vm.config.attachments if a.bandwidth_group == name]
    if users:
        raise ConfigError(f"The bandwidth group '{name}' is still in use by "
                          f"{len(users)} attachment(s) ({', '.join(users)}): detach them or "
                          f"set their --bandwidthgroup none first")
    vm.config.bandwidth_groups.remove(g)


# -- new-VM defaults ---------------------------------------------------------------------------

def apply_defaults(home, vm, disk=True, disk_size=None, disk_format="vdi"):
    """VirtualBox's defaults for the guest OS type: an IDE controller (PIIX4)
    with a CD/DVD drive on the secondary master; the new disk on SATA (AHCI)
    port 0 for current systems or on the IDE primary master for legacy ones.
    Returns the new disk's Medium or None."""
    t = ostypes.get(vm.ostype)
    add_controller(vm, "IDE", "ide", "PIIX4")
    m = None
    if t.disk_bus == "sata":
        add_controller(vm, "SATA", "sata", "IntelAhci", port_count=1)
    if disk:
        path = os.path.join(vm.folder, f"{vm.name}.{disk_format}")
        m = home.media.create_hdd(path, disk_size or t.disk_size, format=disk_format)
        where = ("SATA", 0, 0) if t.disk_bus == "sata" else ("IDE", 0, 0)
        vm.config.attachments.append(Attachment(*where, "hdd", m.uuid, m.location))
    vm.config.attachments.append(Attachment("IDE", 1, 0, "dvddrive"))
    vm.config.validate()
    return m


def delete_vm(home, vm, delete_files=False):
    """unregistervm [--delete]: with ``delete_files`` the VM's disks that no
    other VM uses, its differencing images and its folder go too."""
    require_stopped(vm, "delete the VM")
    doomed = []
    if delete_files:
        mine = set()
        for _where, cfg in vm.configs():
            mine.update(a.medium for a in cfg.attachments if a.medium and a.type == "hdd")
        for uuid in list(mine):
            m = home.media.get(uuid)
            if m is None:
                continue
            for anc in home.media.chain(uuid)[1:]:
                if os.path.dirname(anc.location) == vm.snapshot_folder:
                    mine.add(anc.uuid)
        others = [o for o in home.all_vms() if o.uuid != vm.uuid]
        for uuid in mine:
            m = home.media.get(uuid)
            if m is None or any(o.references(uuid) for o in others):
                continue
            if m.parent is None and m.type in ("immutable", "multiattach", "shareable"):
                continue
            doomed.append(m)
        # Children before parents, and never a medium some other image still needs.
        doomed_ids = {m.uuid for m in doomed}
        doomed = [m for m in doomed
                  if all(d.uuid in doomed_ids for d in home.media.descendants(m.uuid))]
    home.unregister(vm)
    for m in sorted(doomed, key=lambda m: -len(home.media.chain(m.uuid))):
        home.media.forget(m.uuid)
    home.media.save()
    for m in doomed:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(m.location)
    if delete_files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(vm.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(vm.lock_path)
        for folder in (vm.snapshot_folder, vm.folder):
            with contextlib.suppress(OSError):
                os.rmdir(folder)
    return doomed


# -- the machine a VM becomes ------------------------------------------------------------------

@dataclass
class DevicePlan:
    """One controller as PcMachine.add_device(name, **options) builds it."""
    name: str                  # hw/devices.py name ("piix4-ide", "ahci", ...)
    controller: str            # the VM's controller name
    options: dict              # {"drives": {key: drive}, "ports": n}: key (port, device) on IDE, port elsewhere
    port_count: int
    host_io_cache: bool
    bootable: bool
    extras: dict = field(default_factory=dict)   # drive key -> settings devices may use


def machine_devices(vm, media, backends=None):
    """The devices of the VM's current state (what ``vm start`` plugs in).

    A drive is what the controller factories take (hw/ide/piix.py's
    DRIVE_OPTIONS): ``{"type": "hdd"|"dvddrive"|"fdd", "path": top image or
    None (an empty drive), "format", "read_only", "non_rotational",
    "discard"}``, plus ``"backend"`` when ``backends`` (slot -> BlockBackend,
    what power_on opens) has one: without it a factory that opens ``path``
    itself cannot find parents that only the media registry knows.  The
    rest of an attachment goes to ``plan.extras[(port, device)]``: "uuid",
    "chain" (paths, top first), "host_drive", "passthrough", "temp_eject",
    "hot_pluggable", "bandwidth_group" ((name, bytes per second) or None),
    "host_io_cache"."""
    plans = []
    for ctl in vm.config.controllers:
        drives, extras = {}, {}
        for a in vm.config.attachments:
            if a.controller != ctl.name:
                continue
            drive = {"type": a.type, "path": None, "format": None,
                     "read_only": a.type == "dvddrive", "non_rotational": a.non_rotational,
                     "discard": a.discard}
            extra = {"uuid": a.medium, "chain": [], "host_drive": a.host_drive,
                     "passthrough": a.passthrough, "temp_eject": a.temp_eject,
                     "hot_pluggable": a.hot_pluggable, "host_io_cache": ctl.host_io_cache,
                     "bandwidth_group": None}
            if a.medium is not None:
                m = media.get(a.medium)
                if m is None:
                    raise MediaError(f"VM '{vm.name}': medium {a.medium} at {a.controller} "
                                     f"port {a.port} device {a.device} is not in the media "
                                     f"registry ({media.path})")
                drive.update(path=m.location, format=m.format,
                             read_only=drive["read_only"] or m.type == "readonly")
                extra["chain"] = [x.location for x in media.chain(m.uuid)]
                if backends and a.slot in backends:
                    drive["backend"] = backends[a.slot]
            if a.bandwidth_group:
                g = vm.config.group(a.bandwidth_group)
                extra["bandwidth_group"] = (g.name, g.bytes_per_second)
            if ctl.bus == "ide":
                key = (a.port, a.device)          # channel and master/slave
            else:
                key = a.port                      # one device per port (SATA and the rest)
                drive["hotpluggable"] = a.hot_pluggable
            drives[key] = drive
            extras[key] = extra
        options = {"drives": drives}
        if ctl.bus != "ide":
            options["ports"] = ctl.port_count
        plans.append(DevicePlan(HW_DEVICE[ctl.controller], ctl.name, options,
                                ctl.port_count, ctl.host_io_cache, ctl.bootable, extras))
    return plans


def copy_config(cfg):
    return copy.deepcopy(cfg)

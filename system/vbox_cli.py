"""VBoxManage-shaped commands for VMs: ``vm``, ``modifyvm``, ``storagectl``,
``storageattach``, ``bandwidthctl``, ``snapshot`` and ``clonevm``.

The options are VBoxManage's (``--storagectl``, ``--port``, ``--device``,
``--medium none|emptydrive|FILE|UUID|host:DRIVE``, ``--mtype`` ...) so
VirtualBox users feel at home; ``--machinereadable`` prints ``key="value"``
lines as ``VBoxManage showvminfo --machinereadable`` does.  Every command
works in ``DRIVEBAY_HOME`` (default ``~/.drivebay``).  The medium commands
(createmedium, modifymedium, ..., ``list`` and ``media``) are in
system/vbox_media_cli.py.
"""

import argparse
import sys

from drivebay.errors import ConfigError
from drivebay.system import control, medium_ids, ostypes, snapshots
from drivebay.system import vm as vmmod
from drivebay.system.progress import TerminalProgress
from drivebay.system.vm import BUSES, Home

ON_OFF = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False}


def on_off(text):
    try:
        return ON_OFF[text.lower()]
    except KeyError:
        raise ConfigError(f"expected on or off, not {text!r}") from None


def warn(message):
    print(f"drivebay: warning: {message}", file=sys.stderr)


def home_of(args):
    return Home()


def _q(value):
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- vm --------------------------------------------------------------------------------

def cmd_vm_create(args):
    home = home_of(args)
    with home.locked():
        vm = home.create_vm(args.name, args.ostype, args.basefolder, uuid=args.uuid,
                            register=not args.no_register)
        disk = None
        if not args.empty:
            size = args.disk_size << 20 if args.disk_size else None
            disk = vmmod.apply_defaults(home, vm, disk=not args.no_disk, disk_size=size)
            home.media.save()
            vm.save()
    print(f"Virtual machine '{vm.name}' is created{'' if args.no_register else ' and registered'}.")
    print(f"UUID: {vm.uuid}")
    print(f"Settings file: '{vm.path}'")
    if disk is not None:
        print(f"Disk: '{disk.location}' ({disk.uuid})")
    return 0


def vm_state(vm):
    """showvminfo's VMState: poweroff, running or paused (a running VM says
    which through its control channel)."""
    if not vmmod.is_running(vm):
        return "poweroff"
    try:
        return control.request(vm, "status", timeout_s=5)["state"]
    except ConfigError:
        return "running"             # starting up, or busy: running all the same


def cmd_vm_list(args):
    home = home_of(args)
    for e in home.entries():
        if args.long:
            try:
                vm = home.load(e)
                state = {"poweroff": "powered off"}.get(vm_state(vm), vm_state(vm))
                print(f'"{e.name}" {{{e.uuid}}} {vm.ostype} {state} {e.path}')
            except ConfigError as err:
                print(f'"{e.name}" {{{e.uuid}}} inaccessible: {err}')
        else:
            print(f'"{e.name}" {{{e.uuid}}}')
    return 0


def show_lines(home, vm):
    """``key="value"`` lines in the shape of showvminfo --machinereadable."""
    out = [f"name={_q(vm.name)}", f"UUID={_q(vm.uuid)}", f"ostype={_q(vm.ostype)}",
           f"CfgFile={_q(vm.path)}", f"SnapFldr={_q(vm.snapshot_folder)}",
           f"memory={vm.config.memory_mb}", f"firmware={_q(vm.config.firmware)}",
           *(f"boot{i + 1}={_q(d)}" for i, d in enumerate(vm.config.boot_order)),
           f"VMState={_q(vm_state(vm))}"]
    if vm.description:
        out.append(f"description={_q(vm.description)}")
    for i, c in enumerate(vm.config.controllers):
        bus = BUSES[c.bus]
        out += [f"storagecontrollername{i}={_q(c.name)}",
                f"storagecontrollertype{i}={_q(c.controller)}",
                f"storagecontrollerinstance{i}=\"0\"",
                f"storagecontrollermaxportcount{i}={_q(bus.ports)}",
                f"storagecontrollerportcount{i}={_q(c.port_count)}",
                f"storagecontrollerbootable{i}={_q('on' if c.bootable else 'off')}",
                f"storagecontrollerhostiocache{i}={_q('on' if c.host_io_cache else 'off')}"]
    for c in vm.config.controllers:
        bus = BUSES[c.bus]
        for port in range(c.port_count):
            for dev in range(bus.devices_per_port):
                a = vm.config.attachment_at(c.name, port, dev)
                key = f"{c.name}-{port}-{dev}"
                if a is None:
                    out.append(f"{_q(key)}=\"none\"")
                    continue
                if a.medium:
                    m = home.media.get(a.medium)
                    out.append(f"{_q(key)}={_q(m.location if m else a.location)}")
                    out.append(f"{_q(f'{c.name}-ImageUUID-{port}-{dev}')}={_q(a.medium)}")
                elif a.host_drive:
                    out.append(f"{_q(key)}={_q('host:' + a.host_drive)}")
                else:
                    out.append(f"{_q(key)}=\"emptydrive\"")
                flags = [f for f in ("passthrough", "temp_eject", "non_rotational", "discard",
                                     "hot_pluggable") if getattr(a, f)]
                out.append(f"{_q(f'{c.name}-type-{port}-{dev}')}={_q(a.type)}")
                if flags:
                    out.append(f"{_q(f'{c.name}-flags-{port}-{dev}')}={_q(','.join(flags))}")
                if a.bandwidth_group:
                    out.append(f"{_q(f'{c.name}-bwgroup-{port}-{dev}')}={_q(a.bandwidth_group)}")
    for i, g in enumerate(vm.config.bandwidth_groups):
        out.append(f"BandwidthGroup{i}={_q(f'{g.name},{g.type},{g.limit}')}")
    out += snapshot_lines(vm)
    return out


def cmd_vm_start(args):
    from drivebay.boot.cpu import StopReason
    from drivebay.system import console, vmstart
    home = home_of(args)

    interrupted = []

    def run(ctrl_c):
        def should_stop():
            if ctrl_c():
                interrupted.append(True)
                return True
            return False
        return vmstart.start(home, args.vm, firmware=args.firmware, timeout_s=args.timeout,
                             serial_out=console.output("stdout"),
                             debugcon_out=console.output(args.debugcon),
                             should_stop=should_stop)
    result = console.run_interruptible(run)
    if result.reason is StopReason.STOPPED and not interrupted:
        print("\ndrivebay: powered off (controlvm poweroff)", file=sys.stderr)
        return 0
    # A test runner's timeout is not a failure: the guest was still running.
    return console.exit_status(result, args.timeout, timeout_status=0)


def cmd_vm_show(args):
    home = home_of(args)
    with home.locked():
        vm = home.find_vm(args.vm)
        if args.machinereadable:
            print("\n".join(show_lines(home, vm)))
            return 0
        t = ostypes.get(vm.ostype)
        print(f"Name:            {vm.name}")
        print(f"UUID:            {vm.uuid}")
        print(f"Guest OS:        {t.description} ({t.id})")
        print(f"Config file:     {vm.path}")
        print(f"Memory size:     {vm.config.memory_mb}MB")
        print(f"Firmware:        {vm.config.firmware}")
        for i, d in enumerate(vm.config.boot_order):
            print(f"Boot Device {i + 1}:   {d}")
        state = vm_state(vm)
        print(f"State:           {'powered off' if state == 'poweroff' else state}")
        for c in vm.config.controllers:
            print(f"Storage Controller: {c.name} ({c.controller}, {c.bus}, {c.port_count} ports, "
                  f"host I/O cache {'on' if c.host_io_cache else 'off'}"
                  f"{', bootable' if c.bootable else ''})")
            w = ostypes.driver_warning(t, c.controller)
            if w:
                print(f"  warning: {w}")
            for a in sorted((a for a in vm.config.attachments if a.controller == c.name),
                            key=lambda a: (a.port, a.device)):
                if a.medium:
                    m = home.media.get(a.medium)
                    what = f"{m.location if m else a.location} (UUID: {a.medium})"
                elif a.host_drive:
                    what = f"host drive {a.host_drive}"
                else:
                    what = "Empty"
                extra = [f for f in ("passthrough", "temp_eject", "non_rotational", "discard",
                                     "hot_pluggable") if getattr(a, f)]
                if a.bandwidth_group:
                    extra.append(f"bandwidth group {a.bandwidth_group}")
                print(f"  {c.name} ({a.port}, {a.device}): {a.type}: {what}"
                      f"{' [' + ', '.join(extra) + ']' if extra else ''}")
        for g in vm.config.bandwidth_groups:
            print(f"Bandwidth group: {g.name} ({g.type}, limit {g.limit})")
        if vm.snapshots:
            print("Snapshots:")
            for line in snapshot_tree_lines(vm, details=False):
                print(line)
    return 0


def cmd_vm_delete(args):
    home = home_of(args)
    with home.locked():
        vm = home.find_vm(args.vm)
        removed = vmmod.delete_vm(home, vm, delete_files=args.delete)
    for m in removed:
        print(f"Deleted {m.location}")
    print(f"Machine '{vm.name}' {'deleted' if args.delete else 'unregistered'}.")
    return 0


def cmd_vm_register(args):
    home = home_of(args)
    with home.locked():
        vm = vmmod.Vm.load(args.file)
        home.register(vm)
    print(f"Machine '{vm.name}' registered ({vm.uuid}).")
    return 0


def cmd_vm_modify(args):
    home = home_of(args)
    with home.locked():
        vm = home.find_vm(args.vm)
        vmmod.require_stopped(vm, "change the settings")
        if args.ostype:
            vm.ostype = ostypes.get(args.ostype).id
            for c in vm.config.controllers:
                w = ostypes.driver_warning(vm.ostype, c.controller)
                if w:
                    warn(w)
        if args.memory is not None:
            vm.config.memory_mb = args.memory
        if args.firmware is not None:
            vm.config.firmware = vmmod.firmware_named(args.firmware)
        for i in range(vmmod.BOOT_SLOTS):
            device = getattr(args, f"boot{i + 1}")
            if device is not None:
                vm.config.boot_order[i] = device
        if args.description is not None:
            vm.description = args.description
        if args.name and args.name != vm.name:
            if any(e.name == args.name for e in home.entries()):
                raise ConfigError(f"a machine named '{args.name}' is already registered")
            vm.name = args.name
            vm.save()
            home.rename_entry(vm)
        vm.save()
    return 0


# -- storagectl ------------------------------------------------------------------------

def cmd_storagectl(args):
    home = home_of(args)
    with home.locked():
        vm = home.find_vm(args.vm)
        vmmod.require_stopped(vm, "change storage controllers")
        hostio = on_off(args.hostiocache) if args.hostiocache else None
        bootable = on_off(args.bootable) if args.bootable else None
        if args.remove:
            vmmod.remove_controller(home, vm, args.name)
            home.media.save()
            vm.save()
            return 0
        warning = None
        if args.add:
            _ctl, warning = vmmod.add_controller(vm, args.name, args.add, args.controller,
                                                 args.portcount, hostio,
                                                 True if bootable is None else bootable)
            if args.rename:
                vmmod.modify_controller(vm, args.name, rename=args.rename)
        else:
            _ctl, warning = vmmod.modify_controller(vm, args.name, args.controller,
                                                    args.portcount, hostio, bootable,
                                                    args.rename)
        vm.save()
    if warning:
        warn(warning)
    return 0


# -- storageattach ---------------------------------------------------------------------

def _set_ids(home, vm, args):
    """--setuuid/--setparentuuid change the IDs of the medium being attached
    (VirtualBox does it before attaching); returns what --medium names now."""
    medium = args.medium
    if medium is None or medium.lower() in ("none", "emptydrive", "iscsi", "additions") or \
            medium.lower().startswith("host:"):
        raise ConfigError("--setuuid/--setparentuuid: --medium must name the image (file or "
                          "UUID) whose IDs change")
    if args.type is None:
        existing = vm.config.attachment_at(args.storagectl, args.port, args.device)
        if existing is None:
            raise ConfigError("--type is required to attach a new device")
        args.type = existing.type
    device = vmmod.MEDIUM_DEVICE[args.type]
    if args.setuuid is not None:
        medium = medium_ids.set_uuid(home, medium, device, args.setuuid)
    if args.setparentuuid is not None:
        medium = medium_ids.set_parent_uuid(home, medium, device, args.setparentuuid)
    return medium


ISCSI_OPTIONS = ("server", "target", "tport", "lun", "encodedlun", "username", "password",
                 "passwordfile", "initiator", "intnet")


def _iscsi_medium(home, args):
    """--medium iscsi: register the LUN (VBoxManage's options) and return its UUID."""
    given = [f"--{o}" for o in ISCSI_OPTIONS if getattr(args, o) not in (None, False)]
    if (args.medium or "").lower() != "iscsi":
        raise ConfigError(f"{' '.join(given)}: only with --medium iscsi")
    if args.intnet:
        raise ConfigError("--intnet: drivebay reaches iSCSI targets through the host's network "
                          "stack; VirtualBox's internal networking is not emulated")
    if args.server is None or args.target is None:
        raise ConfigError("--medium iscsi needs --server and --target")
    if args.lun is not None and args.encodedlun is not None:
        raise ConfigError("--lun and --encodedlun: give one")
    lun = args.lun if args.lun is not None else 0
    if args.encodedlun is not None:
        lun = decode_lun(args.encodedlun)
    password = args.password
    if args.passwordfile is not None:
        if password is not None:
            raise ConfigError("--password and --passwordfile: give one")
        try:
            with open(args.passwordfile, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
        except OSError as e:
            raise ConfigError(f"--passwordfile {args.passwordfile}: {e.strerror}") from None
    if (args.type or "hdd") != "hdd":
        raise ConfigError("an iSCSI LUN is attached as a hard disk (--type hdd)")
    args.type = "hdd"
    m = home.media.add_iscsi(args.server, args.target, lun, port=args.tport,
                             username=args.username, password=password,
                             initiator=args.initiator)
    return m.uuid


def decode_lun(text):
    """An 8-byte SAM LUN (--encodedlun, hex) as a LUN number: peripheral
    device addressing with bus 0, or flat space addressing (SAM-5 4.7)."""
    try:
        value = int(text, 16)
    except ValueError:
        raise ConfigError(f"--encodedlun {text!r}: not a hexadecimal number") from None
    if not 0 <= value < 1 << 64:
        raise ConfigError(f"--encodedlun {text!r}: more than 8 bytes")
    method, bus = value >> 62, (value >> 56) & 0x3F
    if method not in (0, 1) or (method == 0 and bus) or value & ((1 << 48) - 1):
        raise ConfigError(f"--encodedlun {text!r}: only single-level peripheral (bus 0) and "
                          f"flat space LUNs are understood")
    return (value >> 48) & (0x3FFF if method == 1 else 0xFF)


def cmd_storageattach(args):
    home = home_of(args)
    flags = {}
    for name, value in (("passthrough", args.passthrough), ("temp_eject", args.tempeject),
                        ("non_rotational", args.nonrotational), ("discard", args.discard),
                        ("hot_pluggable", args.hotpluggable)):
        flags[name] = on_off(value) if value is not None else None
    with home.locked():
        vm = home.find_vm(args.vm)
        running = vmmod.is_running(vm)
        medium = args.medium
        if (medium or "").lower() == "iscsi" or \
                any(getattr(args, o) not in (None, False) for o in ISCSI_OPTIONS):
            medium = _iscsi_medium(home, args)
        if args.setuuid is not None or args.setparentuuid is not None:
            if running:
                raise ConfigError(f"--setuuid/--setparentuuid: the VM '{vm.name}' is running")
            medium = _set_ids(home, vm, args)
            vm = home.find_vm(args.vm)          # its file may name the medium's new UUID
        before = vm.config.attachment_at(args.storagectl, args.port, args.device)
        before = before.to_json() if before is not None else None
        att, dropped = vmmod.attach(home, vm, args.storagectl, args.port, args.device,
                                    type=args.type, medium=medium, mtype=args.mtype,
                                    comment=args.comment, bandwidth_group=args.bandwidthgroup,
                                    **flags)
        home.media.save()
        after = att.to_json() if att is not None else None
        if running and before != after:
            # The running VM changes its drive first; the VM file follows only
            # if it did.  It reads the registry saved just now.
            reply = control.request(vm, "storage-change", old=before, new=after,
                                    force=bool(args.forceunmount))
            if reply.get("done", "").startswith("settings"):
                warn(f"the VM '{vm.name}' is running: the drive's new settings apply from "
                     f"its next power-on")
        vm.save()
        for uuid in dropped:
            vmmod.drop_diff(home, uuid)
    return 0


# -- bandwidthctl ------------------------------------------------------------------------

def cmd_bandwidthctl(args):
    home = home_of(args)
    with home.locked():
        vm = home.find_vm(args.vm)
        if args.action == "list":
            for g in vm.config.bandwidth_groups:
                if args.machinereadable:
                    print(f"name={_q(g.name)}\ntype={_q(g.type)}\n"
                          f"maxbytespersec={g.bytes_per_second}")
                else:
                    print(f"Name: '{g.name}', Type: {g.type}, Limit: {g.limit} "
                          f"({g.bytes_per_second} bytes/sec)")
            return 0
        if not args.name:
            raise ConfigError(f"bandwidthctl {args.action}: a group name is required")
        if args.action == "add":
            if args.limit is None:
                raise ConfigError("bandwidthctl add: --limit is required")
            vmmod.bandwidth_add(vm, args.name, args.type or "disk", args.limit)
        elif args.action == "set":
            if args.limit is None:
                raise ConfigError("bandwidthctl set: --limit is required")
            vmmod.bandwidth_set(vm, args.name, args.limit)
        else:
            vmmod.bandwidth_remove(vm, args.name)
        vm.save()
        running = vmmod.is_running(vm)
    if args.action == "set" and running:
        # The running VM's disks take the new limit at once, as in VirtualBox.
        group = next(g for g in vm.config.bandwidth_groups if g.name == args.name)
        control.request(vm, "bandwidth-set", name=group.name,
                        bytes_per_second=group.bytes_per_second)
    return 0


# -- controlvm ----------------------------------------------------------------------------

def cmd_controlvm(args):
    home = home_of(args)
    with home.locked():
        vm = home.find_vm(args.vm)
    if not vmmod.is_running(vm):
        raise ConfigError(f"Machine '{vm.name}' is not currently running")
    reply = control.request(vm, args.action)
    if args.action == "status":
        print(f"VMState=\"{reply['state']}\"")
    return 0


# -- snapshot ------------------------------------------------------------------------------

def snapshot_tree_lines(vm, details):
    out = []
    for s, depth in snapshots.tree(vm):
        mark = " *" if s.uuid == vm.current_snapshot else ""
        flags = " (online)" if s.online else ""
        flags += " (deletion interrupted)" if s.deleting else ""
        out.append(f"{'   ' * (depth + 1)}Name: {s.name} (UUID: {s.uuid}){flags}{mark}")
        if details:
            out.append(f"{'   ' * (depth + 2)}Taken: {s.time}")
            if s.description:
                out.append(f"{'   ' * (depth + 2)}Description: {s.description}")
    return out


def snapshot_lines(vm):
    out = []
    for i, (s, _depth) in enumerate(snapshots.tree(vm)):
        suffix = "" if i == 0 else f"-{i}"
        out += [f"SnapshotName{suffix}={_q(s.name)}", f"SnapshotUUID{suffix}={_q(s.uuid)}"]
        if s.description:
            out.append(f"SnapshotDescription{suffix}={_q(s.description)}")
        if s.uuid == vm.current_snapshot:
            out += [f"CurrentSnapshotName={_q(s.name)}", f"CurrentSnapshotUUID={_q(s.uuid)}",
                    f"CurrentSnapshotNode={_q('SnapshotName' + suffix)}"]
    return out


def cmd_snapshot(args):
    home = home_of(args)
    action = args.action
    if action == "take":
        if not args.target:
            raise ConfigError("snapshot take: a name is required")
        with home.locked():
            vm = home.find_vm(args.vm)
            running = vmmod.is_running(vm)
        if running:
            # The running process holds the disks open and writes them: it
            # switches them to the new differencing images itself, between
            # two slices of guest execution (system/control.py).  The guest
            # pauses for that moment with or without --live.
            reply = control.request(vm, "snapshot-take", name=args.target,
                                    description=args.description or "",
                                    uniquename=args.uniquename)
            print(f"Snapshot taken. UUID: {reply['uuid']}")
            return 0
        if args.live:
            warn(f"--live: the VM '{vm.name}' is not running; taking an offline snapshot")
        snap = snapshots.take(home, args.vm, args.target, args.description or "",
                              args.uniquename)
        print(f"Snapshot taken. UUID: {snap.uuid}")
        return 0
    if action == "list":
        with home.locked():
            vm = home.find_vm(args.vm)
        if not vm.snapshots:
            print("This machine does not have any snapshots")
            return 0
        if args.machinereadable:
            print("\n".join(snapshot_lines(vm)))
        else:
            print("\n".join(snapshot_tree_lines(vm, args.details)))
        return 0
    if action == "restorecurrent":
        snap = snapshots.restore(home, args.vm)
        print(f"Restored the current snapshot '{snap.name}' (UUID: {snap.uuid})")
        return 0
    if action == "edit" and args.current:
        with home.locked():
            vm = home.find_vm(args.vm)
            if vm.current_snapshot is None:
                raise ConfigError(f"VM '{vm.name}' has no snapshots")
            target = vm.current_snapshot
    else:
        if not args.target:
            raise ConfigError(f"snapshot {action}: a snapshot name or UUID is required")
        target = args.target
    if action == "restore":
        snap = snapshots.restore(home, args.vm, target)
        print(f"Restoring snapshot '{snap.name}' ({snap.uuid})")
    elif action == "delete":
        progress = TerminalProgress("Deleting snapshot", force=args.progress)
        with home.locked():
            vm = home.find_vm(args.vm)
        if vmmod.is_running(vm):
            # The running VM merges with its disks closed, pausing the guest.
            reply = control.request(vm, "snapshot-delete", snapshot=target, progress=progress)
            name, uuid, merged, kept = reply["name"], reply["uuid"], reply["merged"], reply["kept"]
        else:
            result = snapshots.delete(home, args.vm, target, progress=progress)
            name, uuid = result.snapshot.name, result.snapshot.uuid
            merged, kept = result.merged, result.kept
        progress.finish()
        for frozen, child in merged:
            print(f"Merged {child} into {frozen}")
        for kept_one in kept:
            print(f"Kept {kept_one} (the parent of several differencing images)")
        print(f"Deleted snapshot '{name}' ({uuid})")
    elif action == "edit":
        snapshots.edit(home, args.vm, target, args.name, args.description)
    elif action == "showvminfo":
        with home.locked():
            vm = home.find_vm(args.vm)
            s = vm.snapshot(target)
            print(f"Name:        {s.name}\nUUID:        {s.uuid}\nTaken:       {s.time}\n"
                  f"Online:      {'yes' if s.online else 'no'}\nDescription: {s.description}")
            for a in s.config.attachments:
                what = a.location or a.host_drive or "Empty"
                print(f"  {a.controller} ({a.port}, {a.device}): {a.type}: {what}")
    return 0


# -- clonevm ----------------------------------------------------------------------------

def cmd_clonevm(args):
    home = home_of(args)
    options = {o.strip().lower() for o in (args.options or "").split(",") if o.strip()}
    unknown = options - {"link", "keepdisknames", "keepallmacs", "keepnatmacs"}
    if unknown:
        raise ConfigError(f"clonevm --options: unknown {', '.join(sorted(unknown))}")
    with home.locked():
        src = home.find_vm(args.vm)
        name = args.name or f"{src.name} Clone"
    progress = TerminalProgress("Cloning", force=args.progress)
    new = snapshots.clone_vm(home, args.vm, name, args.basefolder, args.snapshot,
                             args.mode.lower(), link="link" in options, register=args.register,
                             progress=progress)
    progress.finish()
    print(f"Machine has been successfully cloned as \"{new.name}\"")
    print(f"UUID: {new.uuid}\nSettings file: '{new.path}'")
    return 0


# -- parsers ----------------------------------------------------------------------------------

def _modifyvm_arguments(c):
    c.add_argument("vm")
    c.add_argument("--name")
    c.add_argument("--ostype")
    c.add_argument("--memory", type=int, metavar="MB")
    c.add_argument("--description")
    c.add_argument("--firmware", metavar="stub|seabios|PATH",
                   help="drivebay's BIOS stub, Debian's SeaBIOS or a BIOS image")
    for i in range(vmmod.BOOT_SLOTS):
        c.add_argument(f"--boot{i + 1}", choices=tuple(vmmod.BOOT_DEVICES),
                       help=f"boot slot {i + 1}" if i else "the first boot device")
    c.set_defaults(func=cmd_vm_modify)


def add_parsers(sub):
    p = sub.add_parser("vm", help="create, list, show, modify and delete VMs")
    verbs = p.add_subparsers(dest="verb", required=True)
    c = verbs.add_parser("create", help="create a VM (with VirtualBox's defaults for its OS type)")
    c.add_argument("--name", required=True)
    c.add_argument("--ostype", default=ostypes.DEFAULT_OSTYPE)
    c.add_argument("--basefolder", help="folder for the VM's folder (default DRIVEBAY_HOME/machines)")
    c.add_argument("--uuid")
    c.add_argument("--no-register", action="store_true")
    c.add_argument("--empty", action="store_true", help="no controllers, no disk (VBoxManage createvm)")
    c.add_argument("--no-disk", action="store_true", help="default controllers but no new disk")
    c.add_argument("--disk-size", type=int, metavar="MB", help="size of the new disk")
    c.set_defaults(func=cmd_vm_create)
    c = verbs.add_parser("list", help="list the registered VMs")
    c.add_argument("--long", "-l", action="store_true")
    c.set_defaults(func=cmd_vm_list)
    c = verbs.add_parser("start", help="power the VM on and stream its console")
    c.add_argument("vm")
    c.add_argument("--firmware", help="seabios (default), stub, or a BIOS image path")
    c.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="power the guest off after this much virtual time (exit status 0)")
    c.add_argument("--debugcon", metavar="DEST", help="0x402 debug console: stdout, stderr, FILE or none")
    c.set_defaults(func=cmd_vm_start)
    c = verbs.add_parser("show", help="show a VM's settings (showvminfo)")
    c.add_argument("vm")
    c.add_argument("--machinereadable", action="store_true")
    c.set_defaults(func=cmd_vm_show)
    c = verbs.add_parser("delete", help="unregister a VM (--delete: and delete its files)")
    c.add_argument("vm")
    c.add_argument("--delete", action="store_true",
                   help="delete the VM file, its differencing images and the disks no other VM uses")
    c.set_defaults(func=cmd_vm_delete)
    c = verbs.add_parser("register", help="register a VM file")
    c.add_argument("file")
    c.set_defaults(func=cmd_vm_register)
    c = verbs.add_parser("modify", help="change a VM's settings (as modifyvm)")
    _modifyvm_arguments(c)
    c = sub.add_parser("modifyvm", help="change a VM's name, OS type, memory, firmware, "
                                        "boot order, description")
    _modifyvm_arguments(c)

    p = sub.add_parser("storagectl", help="add, change or remove a storage controller")
    p.add_argument("vm")
    p.add_argument("--name", required=True)
    p.add_argument("--add", metavar="BUS",
                   help="ide, sata, scsi, sas, usb, pcie, virtio or floppy")
    p.add_argument("--controller", metavar="TYPE",
                   help="PIIX3, PIIX4, ICH6, IntelAhci, LSILogic, BusLogic, LSILogicSAS, USB, "
                        "NVMe, VirtIO, I82078")
    p.add_argument("--portcount", type=int)
    p.add_argument("--hostiocache", metavar="on|off")
    p.add_argument("--bootable", metavar="on|off")
    p.add_argument("--rename", metavar="NAME")
    p.add_argument("--remove", action="store_true")
    p.set_defaults(func=cmd_storagectl)

    p = sub.add_parser("storageattach", help="attach, change or detach a drive")
    p.add_argument("vm")
    p.add_argument("--storagectl", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--device", type=int, default=0)
    p.add_argument("--type", choices=["hdd", "dvddrive", "fdd"])
    p.add_argument("--medium", help="none, emptydrive, FILE, UUID, host:DRIVE")
    p.add_argument("--mtype", choices=["normal", "writethrough", "immutable", "shareable",
                                       "readonly", "multiattach"])
    p.add_argument("--comment")
    p.add_argument("--setuuid", metavar="UUID|\"\"",
                   help="give the medium this UUID (\"\": a new random one) before attaching")
    p.add_argument("--setparentuuid", metavar="UUID",
                   help="make the medium a differencing image of this registered disk")
    for flag in ("passthrough", "tempeject", "nonrotational", "discard", "hotpluggable"):
        p.add_argument(f"--{flag}", metavar="on|off")
    p.add_argument("--bandwidthgroup", metavar="NAME|none")
    p.add_argument("--forceunmount", action="store_true")
    p.add_argument("--server", help="iSCSI: the target's host[:port]")
    p.add_argument("--target", help="iSCSI: the target's IQN")
    p.add_argument("--tport", help="iSCSI: the target's TCP port (default 3260)")
    p.add_argument("--lun", type=int, help="iSCSI: the LUN (default 0)")
    p.add_argument("--encodedlun", help="iSCSI: the LUN as the 8-byte hex SAM LUN")
    p.add_argument("--username", help="iSCSI: the initiator's CHAP user name")
    p.add_argument("--password", help="iSCSI: the initiator's CHAP secret")
    p.add_argument("--passwordfile", help="iSCSI: a file holding the CHAP secret")
    p.add_argument("--initiator", help="iSCSI: the initiator's IQN")
    p.add_argument("--intnet", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_storageattach)

    p = sub.add_parser("bandwidthctl", help="bandwidth groups: add, set, remove, list")
    p.add_argument("vm")
    p.add_argument("action", choices=["add", "set", "remove", "list"])
    p.add_argument("name", nargs="?")
    p.add_argument("--type", choices=["disk"])
    p.add_argument("--limit", help="MB/s, or with k/m/g (bits) or K/M/G (bytes) per second")
    p.add_argument("--machinereadable", action="store_true")
    p.set_defaults(func=cmd_bandwidthctl)

    p = sub.add_parser("snapshot", help="take, restore, delete, edit and list snapshots")
    p.add_argument("vm")
    p.add_argument("action", choices=["take", "delete", "restore", "restorecurrent", "edit",
                                      "list", "showvminfo"])
    p.add_argument("target", nargs="?", help="the snapshot's name or UUID (take: the new name)")
    p.add_argument("--description")
    p.add_argument("--live", action="store_true")
    p.add_argument("--uniquename", metavar="Number|Timestamp")
    p.add_argument("--name", help="edit: the new name")
    p.add_argument("--current", action="store_true", help="edit: the current snapshot")
    p.add_argument("--details", action="store_true")
    p.add_argument("--machinereadable", action="store_true")
    p.add_argument("-p", "--progress", action="store_true")
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("controlvm", help="pause, resume or power off a running VM")
    p.add_argument("vm")
    p.add_argument("action", choices=["pause", "resume", "poweroff", "status"])
    p.set_defaults(func=cmd_controlvm)

    p = sub.add_parser("clonevm", help="clone a VM (full, with its snapshots, or linked to "
                                       "a snapshot)")
    p.add_argument("vm")
    p.add_argument("--name")
    p.add_argument("--basefolder")
    p.add_argument("--snapshot")
    p.add_argument("--mode", default="machine",
                   help="machine (one state), machineandchildren (--snapshot, default the "
                        "current one, and the snapshots below it) or all (every snapshot)")
    p.add_argument("--options", help="link")
    p.add_argument("--register", action="store_true")
    p.add_argument("-p", "--progress", action="store_true")
    p.set_defaults(func=cmd_clonevm)

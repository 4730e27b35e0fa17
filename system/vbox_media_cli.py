"""VBoxManage-shaped medium commands and the Virtual Media Manager (``drivebay media``).

``createmedium``, ``modifymedium``, ``clonemedium``, ``mediumproperty``,
``showmediuminfo``, ``closemedium``, ``convertfromraw`` and ``list
hdds|dvds|floppies|vms|ostypes`` take VBoxManage's options; ``drivebay
media VERB`` offers what VirtualBox's Virtual Media Manager window does:
list, tree, add, create, copy, move, remove, release, clear-inaccessible,
search, properties, set, refresh.  Everything works in ``DRIVEBAY_HOME``.
"""

import json
import os
import shutil
import sys
import uuid as uuidlib

from drivebay.block import optical
from drivebay.block.convert import convert
from drivebay.block.driver import State
from drivebay.block.drivers import driver_for, open_image
from drivebay.block.media import DEVICE_WORDS, canonical_uuid
from drivebay.block.vmdk import create_raw_disk
from drivebay.errors import ConfigError, ImageError, MediaError
from drivebay.system import ostypes, vmdk_esx
from drivebay.system.img import parse_size
from drivebay.system.progress import TerminalProgress
from drivebay.system.vbox_cli import home_of, on_off

DEVICE_ARG = {"disk": "hdd", "hdd": "hdd", "dvd": "dvd", "floppy": "floppy"}
LIST_DEVICE = {"hdds": "hdd", "dvds": "dvd", "floppies": "floppy"}
# VBoxManage --variant words.  Standard/Fixed pick dynamic or preallocated;
# Split2G and Stream are VMDK create types (block/vmdk.py VARIANTS);
# Formatted is a FAT12 floppy.
VARIANT_WORDS = ("standard", "fixed", "split2g", "stream", "esx", "formatted", "rawdisk",
                 "diff")
FLOPPY_DEFAULT_SIZE = 1_474_560          # 3.5" 1.44 MB
MB = 1 << 20


def parse_variant(text, creating=False):
    """``Standard,Fixed,Split2G,...`` -> (variant for the driver, format it needs or None).

    ``ESX`` and ``RawDisk`` (VMDK descriptors only ``createmedium`` makes:
    ``creating``) give the variants "esx" and "rawdisk"."""
    words = {w.strip().lower() for w in (text or "").split(",") if w.strip()}
    unknown = words - set(VARIANT_WORDS)
    if unknown:
        raise ConfigError(f"--variant: unknown {', '.join(sorted(unknown))} (Standard, Fixed, "
                          f"Split2G, Stream, ESX, Formatted, RawDisk)")
    special = words & {"esx", "rawdisk"}
    if special and not creating:
        raise ConfigError(f"--variant {text}: ESX and RawDisk VMDKs are made by createmedium "
                          f"(copies go into Standard, Fixed, Split2G or Stream images)")
    if "rawdisk" in words:
        if words != {"rawdisk"}:
            raise ConfigError("--variant RawDisk combines with no other variant (the disk is "
                              "the host drive)")
        return "rawdisk", "vmdk"
    if "esx" in words:
        # VirtualBox's ESX images are preallocated: one VMFS extent.
        if words - {"esx", "fixed", "standard"}:
            raise ConfigError("--variant ESX is a preallocated VMFS disk: it combines with "
                              "neither Split2G, Stream nor Formatted")
        return "esx", "vmdk"
    if "formatted" in words:
        return "formatted", "floppy"
    fixed = "fixed" in words
    if "stream" in words:
        if fixed or "split2g" in words:
            raise ConfigError("--variant Stream combines with neither Fixed nor Split2G")
        return "stream", "vmdk"
    if "split2g" in words:
        return ("split2g-fixed" if fixed else "split2g"), "vmdk"
    return ("fixed" if fixed else "dynamic"), None


def _format(text, default="vdi"):
    name = (text or default).lower()
    driver_for(name)            # FormatError naming the known formats
    return name


def _size(args):
    if getattr(args, "sizebyte", None) is not None:
        return args.sizebyte
    if getattr(args, "size", None) is not None:
        return args.size * MB
    return None


def resolve(home, ref, device=None, register=True):
    """A medium by UUID, location or name; an unregistered image file is registered."""
    try:
        return home.media.find(ref, device)
    except MediaError:
        if not register or not os.path.isfile(ref):
            raise
        return home.media.add(ref, device or "hdd")


# -- printing ------------------------------------------------------------------------

def medium_lines(info, long=True):
    m = info
    base = "base" if m["parent"] is None else m["parent"]
    kind = m["type"] if m["parent"] is None else f"{m['base_type']} (differencing)"
    if m["parent"] is None:
        kind += " (base)"
    out = [f"UUID:           {m['uuid']}"]
    if m["device"] == "hdd":
        out.append(f"Parent UUID:    {base}")
    out += [f"State:          {m['state']}", f"Type:           {kind}"]
    if m["device"] == "hdd" and m["base_type"] == "immutable":
        out.append(f"Auto-Reset:     {'on' if m['autoreset'] else 'off'}")
    out += [f"Location:       {m['location']}", f"Storage format: {m['format'].upper()}"]
    if "variant" in m:
        out.append(f"Format variant: {m['variant']}")
    if "capacity" in m:
        out.append(f"Capacity:       {m['capacity'] // MB} MBytes ({m['capacity']} bytes)")
    if long and "actual_size" in m:
        out.append(f"Size on disk:   {m['actual_size'] // MB} MBytes ({m['actual_size']} bytes)")
    out.append("Encryption:     disabled")
    if long:
        if m["description"]:
            out.append(f"Description:    {m['description']}")
        for k, v in sorted(m["properties"].items()):
            out.append(f"Property:       {k}={v}")
        if m["in_use_by"]:
            uses = {}
            for u in m["in_use_by"]:
                uses.setdefault((u["vm"], u["uuid"]), []).append(u["where"])
            for i, ((name, uuid), wheres) in enumerate(uses.items()):
                label = "In use by VMs:  " if i == 0 else "                "
                out.append(f"{label}{name} (UUID: {uuid}) [{', '.join(wheres)}]")
        for i, c in enumerate(m["children"]):
            label = "Child UUIDs:    " if i == 0 else "                "
            out.append(f"{label}{c}")
        if "error" in m:
            out.append(f"Access Error:   {m['error']}")
    return out


# -- createmedium ----------------------------------------------------------------------

def cmd_createmedium(args):
    device = DEVICE_ARG[args.kind]
    home = home_of(args)
    path = os.path.abspath(args.filename)
    if device == "dvd":
        return _create_dvd(home, args, path)
    if device == "floppy":
        return _create_floppy(home, args, path)
    variant, needs = parse_variant(args.variant, creating=True)
    fmt = _format(args.format, default=needs or "vdi")
    if needs == "floppy":
        raise ConfigError("--variant Formatted is for floppy images")
    if needs is not None and fmt != needs:
        raise ConfigError(f"--variant {args.variant}: a {needs.upper()} variant, not {fmt.upper()}")
    if not os.path.splitext(path)[1]:
        path += "." + fmt
    properties = _properties(args.property)
    if variant == "rawdisk":
        return _create_raw_disk(home, args, path, properties)
    if properties:
        raise ConfigError(f"createmedium: --property {', '.join(properties)}: only RawDisk "
                          f"takes properties (RawDrive, Partitions)")
    with home.locked():
        if args.diffparent and variant == "esx":
            raise ConfigError("--variant ESX: a VMFS flat disk has no parent (--diffparent)")
        if variant == "esx":
            size = _size(args)
            if not size:
                raise ConfigError("createmedium disk: --size (MB) or --sizebyte is required")
            if os.path.exists(path):
                raise MediaError(f"Could not create the medium storage unit '{path}': the file "
                                 f"already exists (VERR_ALREADY_EXISTS)")
            vmdk_esx.create_esx(path, size)
            m = home.media.add(path, "hdd", format="vmdk")
        elif args.diffparent:
            parent = resolve(home, args.diffparent, "hdd")
            m = home.media.create_diff(parent.uuid, path, format=fmt)
        else:
            size = _size(args)
            if not size:
                raise ConfigError("createmedium disk: --size (MB) or --sizebyte is required")
            m = home.media.create_hdd(path, size, format=fmt, variant=variant)
    print(f"Medium created. UUID: {m.uuid}")
    return 0


def _properties(items):
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--property {item!r}: KEY=VALUE")
        out[key] = value
    return out


def _create_raw_disk(home, args, path, properties):
    """--variant RawDisk --property RawDrive=DEVICE [--property Partitions=1,5]:
    a VMDK descriptor giving a guest a host drive, or some of its partitions
    (VirtualBox 7's replacement for internalcommands createrawvmdk)."""
    unknown = set(properties) - {"RawDrive", "Partitions"}
    if unknown:
        raise ConfigError(f"--variant RawDisk: unknown --property {', '.join(sorted(unknown))} "
                          f"(RawDrive, Partitions)")
    drive = properties.get("RawDrive")
    if not drive:
        raise ConfigError("--variant RawDisk needs --property RawDrive=DEVICE (a host disk, or "
                          "a file holding one)")
    if args.diffparent or _size(args) is not None:
        raise ConfigError("--variant RawDisk: the disk is the host drive; --size and "
                          "--diffparent do not apply")
    partitions = None
    if "Partitions" in properties:
        try:
            partitions = [int(p) for p in properties["Partitions"].split(",") if p.strip()]
        except ValueError:
            raise ConfigError(f"--property Partitions={properties['Partitions']}: partition "
                              f"numbers separated by commas (1,5)") from None
        if not partitions or min(partitions) < 1:
            raise ConfigError(f"--property Partitions={properties['Partitions']}: partition "
                              f"numbers from 1")
    if not os.path.exists(drive):
        raise ConfigError(f"--property RawDrive={drive}: no such device or file")
    with home.locked():
        if os.path.exists(path):
            raise MediaError(f"Could not create the medium storage unit '{path}': the file "
                             f"already exists (VERR_ALREADY_EXISTS)")
        create_raw_disk(path, drive, partitions)
        m = home.media.add(path, "hdd", format="vmdk")
    print(f"Medium created. UUID: {m.uuid}")
    return 0


def _create_dvd(home, args, path):
    if not args.source:
        raise ConfigError("createmedium dvd: give the files and folders to put on it with "
                          "--source PATH (repeatable)")
    for s in args.source:
        if not os.path.exists(s.split("=", 1)[-1]):
            raise ConfigError(f"--source {s}: no such file or folder")
    sources = {}
    for s in args.source:
        if "=" in s:
            iso_path, host = s.split("=", 1)
            sources[iso_path] = host
        else:
            sources[os.path.basename(os.path.normpath(s))] = s
    volume = args.volume_id or os.path.splitext(os.path.basename(path))[0]
    if args.viso or path.lower().endswith(".viso"):
        optical.write_viso(path, sources, volume)
        print(f"VISO written: {path} (VirtualBox builds the ISO from it; "
              f"'drivebay visotoiso' makes a real ISO)")
        return 0
    progress = TerminalProgress("ISO", force=args.progress)
    optical.build_iso(path, sources, volume_id=volume, joliet=not args.no_joliet,
                      rock_ridge=not args.no_rock_ridge, progress=progress)
    progress.finish()
    with home.locked():
        m = home.media.add(path, "dvd")
    print(f"Medium created. UUID: {m.uuid}")
    return 0


def _create_floppy(home, args, path):
    variant, needs = parse_variant(args.variant)
    if needs not in (None, "floppy") or variant == "fixed":
        raise ConfigError(f"--variant {args.variant}: a floppy image is Standard or Formatted")
    try:
        from drivebay.block.floppy import FloppyDriver
    except ImportError:
        raise ConfigError("createmedium floppy: not available yet (the floppy image creator, "
                          "block/floppy.py, is not in this drivebay)") from None
    size = _size(args) or FLOPPY_DEFAULT_SIZE
    FloppyDriver.create(path, size, variant="fat12" if variant == "formatted" else "blank")
    with home.locked():
        m = home.media.add(path, "floppy")
    print(f"Medium created. UUID: {m.uuid}")
    return 0


def cmd_iso_from_viso(args):
    optical.build_iso_from_viso(args.viso, args.iso)
    print(f"ISO written: {args.iso}")
    return 0


# -- modifymedium ------------------------------------------------------------------------

def cmd_modifymedium(args):
    home = home_of(args)
    device = DEVICE_ARG.get(args.kind) if args.kind else None
    with home.locked():
        m = resolve(home, args.medium, device)
        reg = home.media
        if args.type:
            reg.set_type(m.uuid, args.type)
        if args.autoreset is not None:
            reg.set_autoreset(m.uuid, on_off(args.autoreset))
        if args.description is not None:
            reg.set_description(m.uuid, args.description)
        for prop in args.property or []:
            name, _, value = prop.partition("=")
            reg.set_property(m.uuid, name, value)
        new_size = args.resizebyte if args.resizebyte is not None else \
            args.resize * MB if args.resize is not None else None
        reg.save()
        if new_size is not None:
            reg.resize(m.uuid, new_size)
        if args.compact:
            progress = TerminalProgress("Compacting", force=args.progress)
            reg.compact(m.uuid, progress)
            progress.finish()
        if args.setlocation:
            reg.set_location(m.uuid, args.setlocation)
        if args.move:
            reg.move(m.uuid, args.move)
            print(f"Move medium with UUID {m.uuid} finished")
    return 0


# -- clonemedium ---------------------------------------------------------------------------

def cmd_clonemedium(args):
    home = home_of(args)
    device = DEVICE_ARG.get(args.kind) if args.kind else None
    progress = TerminalProgress("Cloning", force=args.progress)
    with home.locked():
        src = resolve(home, args.source, device)
        if src.device != "hdd":
            dest = os.path.abspath(args.target)
            if os.path.exists(dest):
                raise MediaError(f"{dest}: already exists; refusing to overwrite it")
            shutil.copyfile(src.location, dest)
            m = home.media.add(dest, src.device)
            print(f"Clone medium created. UUID: {m.uuid}")
            return 0
        if args.existing:
            dst = resolve(home, args.target, "hdd")
            _copy_into(home, src, dst, progress)
            progress.finish()
            print(f"Clone medium copied into {dst.location} (UUID {dst.uuid} kept)")
            return 0
        variant, needs = parse_variant(args.variant)
        fmt = _format(args.format, default=needs or (src.format if src.format in
                                                     ("vdi", "vhd", "vmdk") else "vdi"))
        if needs == "floppy" or needs is not None and fmt != needs:
            raise ConfigError(f"--variant {args.variant} does not fit format {fmt.upper()}")
        m = home.media.copy(src.uuid, args.target, format=fmt, variant=variant,
                            progress=progress)
    progress.finish()
    print(f"Clone medium created in format '{fmt.upper()}'. UUID: {m.uuid}")
    return 0


def _copy_into(home, src, dst, progress):
    """clonemedium --existing: the source's disk content into an existing image."""
    if home.media.users.running(dst.uuid):
        raise MediaError(f"{dst.location}: in use by a running VM")
    with home.media.open_chain(src.uuid) as chain, \
            home.media.open_chain(dst.uuid, writable=True) as target:
        if target.size < chain.size:
            target.top.resize(chain.size)
        done, buf = 0, bytearray(MB)
        for offset, length, state, _depth in chain.block_status(0, chain.size):
            end = offset + length
            while offset < end:
                n = min(MB, end - offset)
                if state is State.DATA:
                    view = memoryview(buf)[:n]
                    chain.readinto(offset, view)
                    target.write(offset, view)
                else:
                    target.write_zeroes(offset, n)
                offset += n
                done += n
                progress(done, chain.size)
        target.flush()


# -- mediumproperty, showmediuminfo, closemedium -----------------------------------------

def cmd_mediumproperty(args):
    home = home_of(args)
    with home.locked():
        m = resolve(home, args.medium, DEVICE_ARG.get(args.kind) if args.kind else None)
        if args.action == "get":
            if args.name not in m.properties:
                raise MediaError(f"{m.location}: no property {args.name!r}")
            print(f"{args.name}={m.properties[args.name]}")
        elif args.action == "set":
            if args.value is None:
                raise ConfigError("mediumproperty set: a value is required")
            home.media.set_property(m.uuid, args.name, args.value)
        else:
            home.media.set_property(m.uuid, args.name, None)
    return 0


def cmd_showmediuminfo(args):
    home = home_of(args)
    with home.locked():
        m = resolve(home, args.medium, DEVICE_ARG.get(args.kind) if args.kind else None)
        info = home.media.info(m.uuid)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print("\n".join(medium_lines(info)))
    return 0


def cmd_closemedium(args):
    home = home_of(args)
    with home.locked():
        m = home.media.find(args.medium, DEVICE_ARG.get(args.kind) if args.kind else None)
        home.media.remove(m.uuid, delete=args.delete)
    if args.delete:
        print(f"Deleted {m.location}")
    return 0


# -- convertfromraw ---------------------------------------------------------------------------

def cmd_convertfromraw(args):
    variant, needs = parse_variant(args.variant)
    fmt = _format(args.format, default=needs or "vdi")
    if needs == "floppy" or needs is not None and fmt != needs:
        raise ConfigError(f"--variant {args.variant} does not fit format {fmt.upper()}")
    new_uuid = uuidlib.UUID(canonical_uuid(args.uuid)) if args.uuid else None
    progress = TerminalProgress("Converting", force=args.progress)
    if args.input == "stdin":
        if args.size is None:
            raise ConfigError("convertfromraw stdin OUTPUT SIZE: the size (bytes) is required")
        size = parse_size(args.size)
        _from_stream(sys.stdin.buffer, args.output, fmt, variant, new_uuid, size, progress)
    else:
        with open_image(args.input, format="raw") as image:
            if new_uuid is not None:
                image.uuid = new_uuid
            convert(image, args.output, fmt, variant=variant, keep_uuid=new_uuid is not None,
                    progress=progress)
    progress.finish()
    with open_image(args.output, format=fmt) as out:
        print(f"Converted from RAW to {fmt.upper()}: {args.output} ({out.size} bytes, "
              f"UUID {out.uuid})")
    return 0


def _from_stream(stream, path, fmt, variant, new_uuid, size, progress):
    cls = driver_for(fmt)
    if os.path.exists(path):
        raise ImageError(f"{path}: already exists; refusing to overwrite it")
    cls.create(path, size, variant=variant, uuid=new_uuid)
    try:
        with cls.open(path, writable=True) as image:
            done = 0
            while done < size:
                chunk = stream.read(min(MB, size - done))
                if not chunk:
                    raise ImageError(f"{path}: the input ended after {done} of {size} bytes")
                if chunk.count(0) != len(chunk):
                    image.write(done, chunk)
                done += len(chunk)
                progress(done, size)
            image.flush()
    except BaseException:
        os.unlink(path)
        raise


# -- list ----------------------------------------------------------------------------------

def cmd_list(args):
    home = home_of(args)
    if args.what == "vms":
        for e in home.entries():
            print(f'"{e.name}" {{{e.uuid}}}')
        return 0
    if args.what == "ostypes":
        for t in ostypes.OS_TYPES.values():
            print(f"ID:          {t.id}\nDescription: {t.description}\nFamily ID:   {t.family}\n"
                  f"64 bit:      {'true' if t.is_64bit else 'false'}\n")
        return 0
    device = LIST_DEVICE[args.what]
    with home.locked():
        for m, _depth in home.media.tree():
            if m.device == device:
                print("\n".join(medium_lines(home.media.info(m.uuid), long=args.long)))
                print()
    return 0


# -- drivebay media -------------------------------------------------------------------------

def cmd_media_list(args):
    home = home_of(args)
    with home.locked():
        rows = [home.media.info(m.uuid) for m, _ in home.media.tree()
                if args.what == "all" or m.device == LIST_DEVICE[args.what]]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        users = sorted({u["vm"] for u in r["in_use_by"]})
        print(f"{r['device']:<7}{r['uuid']}  {r['type']:<12}{r['state']:<13}{r['location']}"
              f"{'  [' + ', '.join(users) + ']' if users else ''}")
    return 0


def cmd_media_tree(args):
    home = home_of(args)
    with home.locked():
        rows = []
        for m, depth in home.media.tree():
            if m.device != "hdd":
                continue
            info = home.media.info(m.uuid)
            rows.append({"depth": depth, "uuid": m.uuid, "location": m.location,
                         "type": info["type"], "virtual_size": info.get("capacity"),
                         "actual_size": info.get("actual_size"), "state": info["state"]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        size = f"{r['virtual_size']} / {r['actual_size']} bytes" \
            if r["virtual_size"] is not None else "inaccessible"
        print(f"{'  ' * r['depth']}{'└─ ' if r['depth'] else ''}{os.path.basename(r['location'])}"
              f"  {{{r['uuid']}}}  {r['type']}  virtual/actual {size}")
    return 0


def cmd_media_add(args):
    home = home_of(args)
    with home.locked():
        m = home.media.add(args.file, args.device, type=args.type)
    print(f"Registered {DEVICE_WORDS[m.device]} {m.location} (UUID {m.uuid})")
    return 0


def cmd_media_create(args):
    home = home_of(args)
    fmt = _format(args.format)
    with home.locked():
        m = home.media.create_hdd(args.file, parse_size(args.size), format=fmt,
                                  variant="fixed" if args.fixed else "dynamic",
                                  type=args.type or "normal")
    print(f"Medium created. UUID: {m.uuid}")
    return 0


def cmd_media_copy(args):
    home = home_of(args)
    progress = TerminalProgress("Copying", force=args.progress)
    with home.locked():
        src = home.media.find(args.source)
        m = home.media.copy(src.uuid, args.dest, format=_format(args.format),
                            variant="fixed" if args.fixed else "dynamic", progress=progress)
    progress.finish()
    print(f"Copied to {m.location} (UUID {m.uuid})")
    return 0


def cmd_media_move(args):
    home = home_of(args)
    with home.locked():
        m = home.media.move(home.media.find(args.source).uuid, args.dest)
    print(f"Moved to {m.location}")
    return 0


def cmd_media_remove(args):
    home = home_of(args)
    with home.locked():
        m = home.media.find(args.source)
        home.media.remove(m.uuid, delete=args.delete)
    print(f"Removed {m.location}{' and deleted the file' if args.delete else ''}")
    return 0


def cmd_media_release(args):
    home = home_of(args)
    with home.locked():
        m = home.media.find(args.source)
        names = home.media.release(m.uuid)
    print(f"Released {m.location} from {', '.join(names) if names else 'no VM'}")
    return 0


def cmd_media_clear(args):
    home = home_of(args)
    with home.locked():
        gone = home.media.clear_inaccessible()
    for m in gone:
        print(f"Removed {DEVICE_WORDS[m.device]} {m.location}")
    return 0


def cmd_media_search(args):
    home = home_of(args)
    with home.locked():
        found = home.media.search(args.text)
    for m in found:
        print(f"{m.device:<7}{m.uuid}  {m.location}")
    return 0 if found else 1


def cmd_media_properties(args):
    args.kind, args.medium = None, args.source
    return cmd_showmediuminfo(args)


def cmd_media_set(args):
    home = home_of(args)
    with home.locked():
        m = home.media.find(args.source)
        reg = home.media
        if args.type:
            reg.set_type(m.uuid, args.type)
        if args.autoreset is not None:
            reg.set_autoreset(m.uuid, on_off(args.autoreset))
        if args.description is not None:
            reg.set_description(m.uuid, args.description)
        for prop in args.property or []:
            name, _, value = prop.partition("=")
            reg.set_property(m.uuid, name, value)
        reg.save()
        if args.size:
            reg.resize(m.uuid, parse_size(args.size))
    return 0


def cmd_media_refresh(args):
    home = home_of(args)
    with home.locked():
        problems = home.media.refresh()
        count = len(home.media.media)
    for uuid, problem in problems.items():
        print(f"inaccessible {uuid}: {problem}")
    print(f"{count - len(problems)} of {count} media accessible")
    return 1 if problems else 0


# -- parsers --------------------------------------------------------------------------------

def _kind(p, default=None):
    p.add_argument("kind", nargs="?", choices=["disk", "dvd", "floppy"], default=default)


def add_parsers(sub):
    p = sub.add_parser("createmedium", help="create a disk, CD/DVD (ISO/VISO) or floppy image")
    _kind(p, "disk")
    p.add_argument("--filename", required=True)
    p.add_argument("--size", type=int, metavar="MB")
    p.add_argument("--sizebyte", type=int, metavar="BYTES")
    p.add_argument("--diffparent", metavar="UUID|FILE")
    p.add_argument("--format", metavar="VDI|VHD|VMDK|RAW")
    p.add_argument("--variant", metavar="Standard,Fixed,...",
                   help="Standard, Fixed, Split2G, Stream, ESX, RawDisk (disk); Formatted "
                        "(floppy)")
    p.add_argument("--property", action="append", metavar="KEY=VALUE",
                   help="RawDisk: RawDrive=DEVICE and Partitions=N,M")
    p.add_argument("--source", action="append", metavar="[ISO_PATH=]HOST_PATH",
                   help="dvd: a file or folder to put on the disc (repeatable)")
    p.add_argument("--volume-id")
    p.add_argument("--viso", action="store_true", help="dvd: write a VirtualBox VISO file")
    p.add_argument("--no-joliet", action="store_true")
    p.add_argument("--no-rock-ridge", action="store_true")
    p.add_argument("-p", "--progress", action="store_true")
    p.set_defaults(func=cmd_createmedium)

    p = sub.add_parser("visotoiso", help="build the ISO image a VISO file describes")
    p.add_argument("viso")
    p.add_argument("iso")
    p.set_defaults(func=cmd_iso_from_viso)

    p = sub.add_parser("modifymedium", help="change a medium's type, size, location ...")
    p.add_argument("kind", nargs="?", choices=["disk", "dvd", "floppy"])
    p.add_argument("medium")
    p.add_argument("--type", choices=["normal", "writethrough", "immutable", "shareable",
                                      "readonly", "multiattach"])
    p.add_argument("--autoreset", metavar="on|off")
    p.add_argument("--compact", action="store_true")
    p.add_argument("--resize", type=int, metavar="MB")
    p.add_argument("--resizebyte", type=int, metavar="BYTES")
    p.add_argument("--move", metavar="PATH")
    p.add_argument("--setlocation", metavar="PATH")
    p.add_argument("--description")
    p.add_argument("--property", action="append", metavar="NAME=VALUE")
    p.add_argument("-p", "--progress", action="store_true")
    p.set_defaults(func=cmd_modifymedium)

    p = sub.add_parser("clonemedium", help="copy a medium (a new UUID), or into an existing one")
    p.add_argument("kind", nargs="?", choices=["disk", "dvd", "floppy"])
    p.add_argument("source")
    p.add_argument("target")
    p.add_argument("--format", metavar="VDI|VHD|RAW")
    p.add_argument("--variant")
    p.add_argument("--existing", action="store_true")
    p.add_argument("-p", "--progress", action="store_true")
    p.set_defaults(func=cmd_clonemedium)

    p = sub.add_parser("mediumproperty", help="get, set or delete a medium's property")
    p.add_argument("kind", nargs="?", choices=["disk", "dvd", "floppy"])
    p.add_argument("action", choices=["set", "get", "delete"])
    p.add_argument("medium")
    p.add_argument("name")
    p.add_argument("value", nargs="?")
    p.set_defaults(func=cmd_mediumproperty)

    p = sub.add_parser("showmediuminfo", help="show a medium's properties")
    p.add_argument("kind", nargs="?", choices=["disk", "dvd", "floppy"])
    p.add_argument("medium")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_showmediuminfo)

    p = sub.add_parser("closemedium", help="forget a medium (--delete: and its file)")
    p.add_argument("kind", nargs="?", choices=["disk", "dvd", "floppy"])
    p.add_argument("medium")
    p.add_argument("--delete", action="store_true")
    p.set_defaults(func=cmd_closemedium)

    p = sub.add_parser("convertfromraw", help="a raw disk (file or stdin) into an image")
    p.add_argument("input", help="a raw file, or 'stdin'")
    p.add_argument("output")
    p.add_argument("size", nargs="?", help="stdin: the number of bytes")
    p.add_argument("--format", metavar="VDI|VHD|RAW")
    p.add_argument("--variant")
    p.add_argument("--uuid")
    p.add_argument("-p", "--progress", action="store_true")
    p.set_defaults(func=cmd_convertfromraw)

    p = sub.add_parser("list", help="list hdds, dvds, floppies, vms or ostypes")
    p.add_argument("what", choices=["hdds", "dvds", "floppies", "vms", "ostypes"])
    p.add_argument("-l", "--long", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("media", help="the Virtual Media Manager")
    verbs = p.add_subparsers(dest="verb", required=True)
    v = verbs.add_parser("list", help="the known media")
    v.add_argument("what", nargs="?", default="all", choices=["all", "hdds", "dvds", "floppies"])
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_media_list)
    v = verbs.add_parser("tree", help="hard disks and their differencing images")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_media_tree)
    v = verbs.add_parser("add", help="register an existing image")
    v.add_argument("file")
    v.add_argument("--device", choices=["hdd", "dvd", "floppy"], default="hdd")
    v.add_argument("--type", choices=["normal", "writethrough", "immutable", "shareable",
                                      "readonly", "multiattach"])
    v.set_defaults(func=cmd_media_add)
    v = verbs.add_parser("create", help="create a hard disk image")
    v.add_argument("file")
    v.add_argument("--size", required=True, help="with k, M, G or T")
    v.add_argument("--format", default="vdi")
    v.add_argument("--fixed", action="store_true")
    v.add_argument("--type", choices=["normal", "writethrough", "immutable", "shareable",
                                      "multiattach"])
    v.set_defaults(func=cmd_media_create)
    v = verbs.add_parser("copy", help="copy a hard disk (its whole chain) to a new image")
    v.add_argument("source")
    v.add_argument("dest")
    v.add_argument("--format", default="vdi", help="vdi, vhd, vmdk, raw")
    v.add_argument("--fixed", action="store_true")
    v.add_argument("-p", "--progress", action="store_true")
    v.set_defaults(func=cmd_media_copy)
    v = verbs.add_parser("move", help="move an image; VM files follow")
    v.add_argument("source")
    v.add_argument("dest")
    v.set_defaults(func=cmd_media_move)
    v = verbs.add_parser("remove", help="forget a medium (--delete: and its file)")
    v.add_argument("source")
    v.add_argument("--delete", action="store_true")
    v.set_defaults(func=cmd_media_remove)
    v = verbs.add_parser("release", help="detach a medium from every VM's current state")
    v.add_argument("source")
    v.set_defaults(func=cmd_media_release)
    v = verbs.add_parser("clear-inaccessible", help="forget missing CD/DVD and floppy images")
    v.set_defaults(func=cmd_media_clear)
    v = verbs.add_parser("search", help="media whose name contains TEXT or UUID starts with it")
    v.add_argument("text")
    v.set_defaults(func=cmd_media_search)
    v = verbs.add_parser("properties", help="a medium's properties")
    v.add_argument("source")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_media_properties)
    v = verbs.add_parser("set", help="change type, auto-reset, description, size, properties")
    v.add_argument("source")
    v.add_argument("--type", choices=["normal", "writethrough", "immutable", "shareable",
                                      "readonly", "multiattach"])
    v.add_argument("--autoreset", metavar="on|off")
    v.add_argument("--description")
    v.add_argument("--size", help="grow to SIZE (k, M, G, T)")
    v.add_argument("--property", action="append", metavar="NAME=VALUE")
    v.set_defaults(func=cmd_media_set)
    v = verbs.add_parser("refresh", help="re-read every image; report the inaccessible ones")
    v.set_defaults(func=cmd_media_refresh)

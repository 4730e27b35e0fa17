"""``drivebay img``: create, inspect, convert and repair disk images (qemu-img's verbs).

Exit codes follow qemu-img: ``check`` 0 clean, 2 corrupted, 3 leaks only,
63 unsupported; ``compare`` 0 same, 1 different, 2 error.  Sizes take the
suffixes k, M, G, T (powers of 1024), as qemu-img does.
"""

import json
import os
import re
import sys

from drivebay.block import convert as convert_mod
from drivebay.block import merge as merge_mod
from drivebay.block.chain import open_chain
from drivebay.block.driver import State
from drivebay.block.drivers import DRIVERS, driver_for, open_image, probe
from drivebay.errors import ConfigError, DrivebayError, UnsupportedOperation
from drivebay.system.progress import TerminalProgress

VARIANT_HELP = ("how the image is laid out; each format takes its own (drivebay img formats): "
                "dynamic/fixed for most; vmdk also split2g, split2g-fixed, stream; parallels "
                "ext (the newer signature); floppy blank or fat12")
SIZE_RE = re.compile(r"^(\d+)([kKmMgGtT]?)[bB]?$")
SIZE_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}


def parse_size(text):
    m = SIZE_RE.match(text.strip())
    if not m:
        raise ConfigError(f"invalid size {text!r}: a number with an optional k, M, G or T suffix")
    return int(m.group(1)) << SIZE_SHIFT[m.group(2).lower()]


def _progress(args, label):
    return TerminalProgress(label, force=getattr(args, "progress", False))


def cmd_create(args):
    cls = driver_for(args.format)
    size = parse_size(args.size) if args.size else None
    if args.backing:
        with open_image(args.backing) as parent:
            cls.create(args.file, parent.size if size is None else size, variant=args.variant,
                       parent=parent)
    else:
        if size is None:
            raise ConfigError("img create: a size is required without a backing image (-b)")
        cls.create(args.file, size, variant=args.variant)
    print(f"Formatting '{args.file}', fmt={args.format} size={size if size is not None else 'backing'}")
    return 0


def _image_info(image):
    info = {
        "filename": image.path,
        "format": image.format_name,
        "virtual-size": image.size,
        "variant": image.variant,
    }
    if getattr(image.file, "fd", None) is not None:      # not for an iSCSI LUN
        info["actual-size"] = os.stat(image.path).st_blocks * 512
    for key, attr in (("uuid", "uuid"), ("modification-uuid", "modification_uuid"),
                      ("parent-uuid", "parent_uuid"),
                      ("parent-modification-uuid", "parent_modification_uuid")):
        value = getattr(image, attr)
        if value is not None:
            info[key] = str(value)
    if image.parent_locator:
        info["backing-filename"] = image.parent_locator
    info.update({k.replace("_", "-"): v for k, v in image.info().items()})
    return info


def cmd_info(args):
    with open_image(args.file, format=args.format) as image:
        info = _image_info(image)
    if args.output == "json":
        print(json.dumps(info, indent=4, default=str))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def cmd_map(args):
    with open_chain(args.file, format=args.format) as chain:
        rows = []
        for offset, length, state, depth in chain.block_status(0, chain.size):
            if rows and rows[-1]["depth"] == (depth or 0) and \
                    rows[-1]["data"] == (state is State.DATA) and \
                    rows[-1]["start"] + rows[-1]["length"] == offset:
                rows[-1]["length"] += length
                continue
            rows.append({"start": offset, "length": length, "depth": depth or 0,
                         "present": depth is not None, "zero": state is not State.DATA,
                         "data": state is State.DATA})
    if args.output == "json":
        print(json.dumps(rows, indent=4))
    else:
        print(f"{'Offset':<20}{'Length':<20}{'Depth':<8}{'Kind'}")
        for r in rows:
            kind = "data" if r["data"] else "zero" if r["present"] else "unallocated"
            print(f"{r['start']:#<20x}{r['length']:#<20x}{r['depth']:<8}{kind}".replace("#", " "))
    return 0


def cmd_check(args):
    try:
        cls = driver_for(args.format) if args.format else probe(args.file)
        with cls.open(args.file, writable=bool(args.repair), for_check=True) as image:
            report = image.check(repair=bool(args.repair))
    except UnsupportedOperation as e:
        print(f"drivebay img check: {e}", file=sys.stderr)
        return 63
    if args.output == "json":
        print(json.dumps({"filename": args.file, "check-errors": len(report.errors),
                          "errors": report.errors, "leaks": len(report.leaks),
                          "leak-details": report.leaks, "repaired": report.repaired,
                          "allocated-clusters": report.allocated_blocks,
                          "total-clusters": report.total_blocks}, indent=4))
        return report.exit_code
    for line in report.errors:
        print(f"ERROR {line}")
    for line in report.leaks:
        print(f"Leaked: {line}")
    for line in report.repaired:
        print(f"Repaired: {line}")
    if report.clean:
        print("No errors were found on the image.")
    if report.total_blocks:
        print(f"{report.allocated_blocks}/{report.total_blocks} blocks allocated")
    return report.exit_code


def cmd_compare(args):
    try:
        with open_chain(args.a) as a, open_chain(args.b) as b:
            at = convert_mod.compare(a, b, strict=args.strict, progress=_progress(args, "compare"))
    except DrivebayError as e:
        print(f"drivebay img compare: {e}", file=sys.stderr)
        return 2
    if at is None:
        print("Images are identical.")
        return 0
    print(f"Content mismatch at offset {at}!")
    return 1


def cmd_convert(args):
    progress = _progress(args, "convert")
    with open_chain(args.source, format=args.format) as chain:
        convert_mod.convert(chain, args.dest, args.output_format, variant=args.variant,
                            keep_uuid=args.keep_uuid, progress=progress)
    progress.finish()
    return 0


def cmd_resize(args):
    with open_image(args.file, writable=True, format=args.format) as image:
        size = parse_size(args.size.lstrip("+"))
        new = image.size + size if args.size.startswith("+") else size
        if new < image.size:
            raise ConfigError(f"{args.file}: shrinking from {image.size} to {new} bytes is not "
                              f"supported (it would drop data)")
        image.resize(new)
    print("Image resized.")
    return 0


def cmd_compact(args):
    progress = _progress(args, "compact")
    with open_image(args.file, writable=True, format=args.format) as image:
        if not hasattr(image, "compact"):
            raise UnsupportedOperation(f"{args.file}: {image.format_name} images cannot be compacted")
        image.compact(progress=progress)
    progress.finish()
    return 0


def cmd_merge(args):
    progress = _progress(args, "merge")
    if args.into == "parent":
        target = merge_mod.merge_into_parent(args.file, progress=progress)
    else:
        target = merge_mod.merge_parent_into_child(args.file, progress=progress)
    progress.finish()
    print(f"Merged into {target}")
    return 0


def cmd_rebase(args):
    progress = _progress(args, "rebase")
    merge_mod.rebase(args.file, args.backing, safe=not args.unsafe, progress=progress)
    progress.finish()
    return 0


def cmd_formats(args):
    for d in DRIVERS:
        variants = ", ".join(d.create_variants) or "read only"
        print(f"{d.format_name:<10} {d.description} ({variants})")
    return 0


def add_parser(sub):
    img = sub.add_parser("img", help="create, inspect, convert and repair disk images")
    verbs = img.add_subparsers(dest="verb", required=True)
    fmt_names = [d.format_name for d in DRIVERS]
    variants = sorted({v for d in DRIVERS for v in d.create_variants})

    def verb(name, func, help):
        p = verbs.add_parser(name, help=help)
        p.set_defaults(func=func)
        return p

    p = verb("create", cmd_create, "create an image (or a differencing image with -b)")
    p.add_argument("-f", "--format", default="vdi" if "vdi" in fmt_names else "raw", choices=fmt_names)
    p.add_argument("--variant", choices=variants, default=None, help=VARIANT_HELP)
    p.add_argument("-b", "--backing", help="parent image: make a differencing image")
    p.add_argument("file")
    p.add_argument("size", nargs="?")

    for name, func, help in (("info", cmd_info, "show an image's format, size and UUIDs"),
                             ("map", cmd_map, "show where the data of an image chain lies")):
        p = verb(name, func, help)
        p.add_argument("-f", "--format", choices=fmt_names)
        p.add_argument("--output", choices=["human", "json"], default="human")
        p.add_argument("file")

    p = verb("check", cmd_check, "check an image's metadata (exit 0 clean, 2 corrupt, 3 leaks)")
    p.add_argument("-f", "--format", choices=fmt_names)
    p.add_argument("-r", "--repair", choices=["leaks", "all"])
    p.add_argument("--output", choices=["human", "json"], default="human")
    p.add_argument("file")

    p = verb("compare", cmd_compare, "compare two disks by content (exit 0 same, 1 differ)")
    p.add_argument("-s", "--strict", action="store_true", help="sizes must match too")
    p.add_argument("-p", "--progress", action="store_true")
    p.add_argument("a")
    p.add_argument("b")

    for name in ("convert", "clone"):
        p = verb(name, cmd_convert, "copy a disk (a whole chain) into a new image")
        p.add_argument("-f", "--format", choices=fmt_names, help="source format (default: probe)")
        p.add_argument("-O", "--output-format", default="vdi" if "vdi" in fmt_names else "raw",
                       choices=fmt_names)
        p.add_argument("--variant", choices=variants, default=None, help=VARIANT_HELP)
        p.add_argument("--keep-uuid", action="store_true", help="give the copy the source's UUID")
        p.add_argument("-p", "--progress", action="store_true")
        p.add_argument("source")
        p.add_argument("dest")

    p = verb("resize", cmd_resize, "grow an image (SIZE or +SIZE)")
    p.add_argument("-f", "--format", choices=fmt_names)
    p.add_argument("file")
    p.add_argument("size")

    p = verb("compact", cmd_compact, "drop blocks that hold only zeros")
    p.add_argument("-f", "--format", choices=fmt_names)
    p.add_argument("-p", "--progress", action="store_true")
    p.add_argument("file")

    p = verb("commit", cmd_merge, "write a differencing image's content into its parent "
                                  "(merge --into parent)")
    p.set_defaults(into="parent")
    p.add_argument("-p", "--progress", action="store_true")
    p.add_argument("file")

    p = verb("merge", cmd_merge, "merge a differencing image with its parent")
    p.add_argument("--into", choices=["parent", "child"], default="parent",
                   help="parent: copy the child down (default); child: pull the parent up")
    p.add_argument("-p", "--progress", action="store_true")
    p.add_argument("file")

    p = verb("rebase", cmd_rebase, "give a differencing image another parent")
    p.add_argument("-b", "--backing", required=True)
    p.add_argument("-u", "--unsafe", action="store_true", help="only rewrite the link")
    p.add_argument("-p", "--progress", action="store_true")
    p.add_argument("file")

    verb("formats", cmd_formats, "list the image formats")
    return img

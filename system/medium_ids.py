"""``storageattach --setuuid`` and ``--setparentuuid``: a medium's UUIDs, rewritten.

VirtualBox's IMedium::setIds, an expert option: ``--setuuid ""`` gives an
image a new random UUID (the usual cure for an image copied with file
tools, which keeps the original's UUID and is refused as a duplicate);
``--setuuid UUID`` gives it that one; ``--setparentuuid UUID`` links a
differencing image (or a dynamic base image, which becomes one) to
another parent.  drivebay keeps the media registry and every VM file that
refers to the medium consistent with the new IDs, and refuses what would
break a chain: a UUID already known, a parent that is not a registered
hard disk, a parent below the image itself, a random parent UUID, a medium
a running VM uses.

The parent link is rewritten in place through the drivers' ``set_parent``.
The drivers have no in-place "set UUID" yet, so a new UUID is written by
rewriting the image: a new image of the same format and variant (and the
same parent) with the new UUID is made beside it, the image's own layer
is copied into it (system/layer_copy.py: zero-allocated ranges stay
zero-allocated, unallocated ones keep showing the parent), and it is
renamed over the old file (from a folder of its own beside it, so a
monolithic VMDK's descriptor names the right file), as the immutable
reset does.  Single-file
images only (VDI, VHD, monolithic sparse VMDK); an image that records no
UUID (raw, ISO, floppy) has its UUID in the registry only.

Order: image, children's parent links, registry, VM files.  A process
killed before the registry is saved leaves the image with a UUID the
registry does not know: the media commands then report the file as
replaced (``closemedium`` and ``storageattach --medium FILE`` recover).
"""

import os
import shutil
import uuid as uuidlib

from drivebay.block.chain import open_chain
from drivebay.block.drivers import driver_for, open_image
from drivebay.block.media import canonical_uuid, looks_like_uuid
from drivebay.errors import DrivebayError, MediaError
from drivebay.system.layer_copy import copy_layer

# Variants whose whole image is one file that can be rewritten and renamed.
REWRITABLE = {"vdi": ("dynamic", "fixed", "differencing"),
              "vhd": ("dynamic", "fixed", "differencing"),
              "vmdk": ("monolithicSparse",)}
CREATE_VARIANT = {"differencing": "dynamic", "monolithicSparse": "dynamic"}


def _new_uuid(text, reg):
    if text == "":
        return str(uuidlib.uuid4())
    if not looks_like_uuid(text):
        raise MediaError(f"--setuuid {text!r}: not a UUID (give one, or \"\" for a new "
                         f"random UUID)")
    new = canonical_uuid(text)
    other = reg.get(new)
    if other is not None:
        raise MediaError(f"--setuuid {new}: the medium '{other.location}' already has this "
                         f"UUID")
    return new


def _check_not_running(home, m, what):
    running = home.media.users.running(m.uuid)
    if running:
        raise MediaError(f"Cannot {what} of '{m.location}': in use by the running VM(s) "
                         f"{', '.join(running)}")


def rewrite_uuid(path, fmt, new_uuid, resolver=None):
    """Give the image file ``path`` the UUID ``new_uuid`` (see the module notes)."""
    with open_image(path, format=fmt) as src:
        if src.variant not in REWRITABLE.get(src.format_name, ()):
            raise MediaError(f"{path}: cannot give a {src.format_name} {src.variant} image a "
                             f"new UUID (drivebay rewrites single-file VDI, VHD and monolithic "
                             f"sparse VMDK images; convert it with 'drivebay clonemedium', "
                             f"which gives the copy a new UUID)")
        fmt, size, has_parent = src.format_name, src.size, src.has_parent
        variant = CREATE_VARIANT.get(src.variant, src.variant)
    cls = driver_for(fmt)
    # The new image has the old one's file name (a monolithic VMDK's
    # descriptor names its own file), in a folder of its own beside it.
    folder = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.setuuid-tmp")
    tmp = os.path.join(folder, os.path.basename(path))
    shutil.rmtree(folder, ignore_errors=True)
    os.mkdir(folder)
    try:
        with open_chain(path, format=fmt, resolver=resolver) as old:
            src = old.top
            parent = old.images[1] if has_parent else None
            link = (src.parent_uuid, src.parent_locator, src.parent_modification_uuid)
            cls.create(tmp, None if fmt == "vhd" and parent else size, variant=variant,
                       uuid=uuidlib.UUID(new_uuid), parent=parent)
            with open_chain(tmp, writable=True, format=fmt, resolver=resolver) as new:
                copy_layer(src, new)
        os.replace(tmp, path)
        if parent is not None:
            # The parent path was recorded from the temporary folder: put the
            # one the image had back.
            with open_image(path, writable=True, format=fmt) as image:
                image.set_parent(*link)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _relink(child, parent):
    """Tell the child image its parent's (new) UUID, and where it is."""
    with open_image(parent.open_location, format=parent.format) as p:
        modification = p.modification_uuid
    with open_image(child.location, writable=True, format=child.format) as w:
        locator = os.path.relpath(parent.location, os.path.dirname(child.location))
        w.set_parent(uuidlib.UUID(parent.uuid), locator, modification)


def _rename_in_vms(home, old, new):
    for vm in home.all_vms():
        changed = False
        for _where, cfg in vm.configs():
            for a in cfg.attachments:
                if a.medium == old:
                    a.medium, changed = new, True
        if changed:
            vm.save()


def set_uuid(home, ref, device, text):
    """``--setuuid``: the medium ``ref`` (registered, or an image file not
    registered yet) gets the UUID ``text`` ("" for a random one).  Returns
    what storageattach's --medium should name now (the new UUID, or the
    file when it is not registered)."""
    reg = home.media
    new = _new_uuid(text, reg)
    try:
        m = reg.find(ref, device)
    except MediaError:
        m = None
    if m is None:
        path = os.path.abspath(ref)
        if not os.path.isfile(path):
            raise MediaError(f"Could not find file for the medium '{path}' "
                             f"(VERR_FILE_NOT_FOUND)")
        if device == "hdd":
            with open_image(path) as image:
                fmt, has_uuid = image.format_name, image.uuid is not None
            if has_uuid:
                rewrite_uuid(path, fmt, new, reg.resolver)
                return path
        return reg.add(path, device, uuid=new).uuid
    _check_not_running(home, m, "change the UUID")
    if m.uuid_in_image:
        rewrite_uuid(m.location, m.format, new, reg.resolver)
    old = m.uuid
    del reg.media[old]
    m.uuid = new
    reg.media[new] = m
    reg.dirty = True
    for child in reg.children(old):
        child.parent = new
        _relink(child, m)
    reg.save()
    _rename_in_vms(home, old, new)
    return new


def set_parent_uuid(home, ref, device, text):
    """``--setparentuuid``: the hard disk ``ref`` (registered) records the
    registered hard disk ``text`` as its parent."""
    reg = home.media
    if device != "hdd":
        raise MediaError("--setparentuuid: only hard disks have parents")
    try:
        m = reg.find(ref, device)
    except MediaError:
        if not os.path.isfile(ref):
            raise
        m = reg.add(ref, device)
    if text == "" or not looks_like_uuid(text):
        raise MediaError(f"--setparentuuid {text!r}: give the UUID of a registered hard disk "
                         f"(a random parent UUID would cut the image off from its data)")
    parent = reg.get(canonical_uuid(text))
    if parent is None or parent.device != "hdd":
        raise MediaError(f"--setparentuuid {text}: no registered hard disk has this UUID")
    if parent.uuid == m.uuid or any(d.uuid == parent.uuid for d in reg.descendants(m.uuid)):
        raise MediaError(f"--setparentuuid {parent.uuid}: '{parent.location}' is "
                         f"'{m.location}' itself or below it (a loop)")
    if m.parent is None and m.type != "normal":
        raise MediaError(f"--setparentuuid: '{m.location}' is a {m.type} base disk; only a "
                         f"normal disk can become a differencing image")
    _check_not_running(home, m, "change the parent UUID")
    try:
        _relink(m, parent)
    except DrivebayError as e:
        raise MediaError(f"--setparentuuid: {e}") from None
    m.parent = parent.uuid
    reg.dirty = True
    reg.save()
    return m.uuid

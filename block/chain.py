"""Differencing chains: a child image over its parent over its grandparent...

``images[0]`` is the active image (writes go there), ``images[-1]`` the base.
A read asks each image's ``block_status`` — an in-memory table look-up for
every format with a block map — and falls through to the parent only where
the child holds nothing.  A range the child holds as zeros reads as zeros:
it never falls back to the parent (VirtualBox 7.2 lost data that way).

Parents are found through a ``resolver`` (the media registry maps UUIDs to
paths), from the locator the child stores (a path, relative to the child's
folder when not absolute), or, for a parent known only by UUID, among the
images in the child's folder.  A parent that is missing, whose UUID differs
from what the child records, or that closes a loop is refused.
"""

import os

from drivebay.block.driver import NULL_UUID, State
from drivebay.block.drivers import open_image
from drivebay.errors import ChainError, DrivebayError

MAX_CHAIN_DEPTH = 1024      # VirtualBox caps snapshot trees far lower; this bounds a hostile loop
MAX_FOLDER_SEARCH = 512     # files examined when looking for a parent by UUID beside the child


class Chain:
    def __init__(self, images, locations=None):
        """``locations``: what each image was opened from (open_chain's; an
        image's ``path`` may be masked, as an iSCSI URL without its secret)."""
        assert images
        self.images = list(images)
        self.locations = list(locations) if locations is not None else \
            [image.path for image in self.images]
        for level, image in enumerate(self.images[:-1]):
            image.backing_read = self._reader(level + 1)

    def _reader(self, level):
        return lambda offset, view: self._read(level, offset, view)

    @property
    def top(self):
        return self.images[0]

    @property
    def size(self):
        return self.top.size

    @property
    def path(self):
        return self.top.path

    def readinto(self, offset, buf):
        view = memoryview(buf).cast("B")
        self.top.check_range(offset, len(view))
        self._read(0, offset, view)

    def read(self, offset, length):
        buf = bytearray(length)
        self.readinto(offset, buf)
        return bytes(buf)

    def _read(self, level, offset, view):
        image = self.images[level]
        length = len(view)
        inside = max(0, min(length, image.size - offset))   # a parent may be smaller
        if inside < length:
            view[inside:] = bytes(length - inside)
        if inside == 0:
            return
        for ext in image.block_status(offset, inside):
            part = view[ext.offset - offset:ext.offset - offset + ext.length]
            if ext.state is State.DATA:
                image.read_allocated_into(ext, part)
            elif ext.state is State.UNALLOCATED and level + 1 < len(self.images):
                self._read(level + 1, ext.offset, part)
            else:
                part[:] = bytes(ext.length)

    def write(self, offset, data):
        self.top.write(offset, data)

    def write_zeroes(self, offset, length):
        self.top.write_zeroes(offset, length)

    def discard(self, offset, length):
        self.top.discard(offset, length)

    def flush(self):
        self.top.flush()

    def block_status(self, offset, length):
        """Extents of the whole chain: ``(offset, length, state, depth)`` where
        depth is the index of the image that decides the range (None: no image
        holds it and it reads as zeros)."""
        out = []
        self._status(0, offset, length, out)
        return out

    def _status(self, level, offset, length, out):
        image = self.images[level]
        inside = max(0, min(length, image.size - offset))
        if inside:
            for ext in image.block_status(offset, inside):
                if ext.state is State.UNALLOCATED and level + 1 < len(self.images):
                    self._status(level + 1, ext.offset, ext.length, out)
                elif ext.state is State.UNALLOCATED:
                    out.append((ext.offset, ext.length, State.UNALLOCATED, None))
                else:
                    out.append((ext.offset, ext.length, ext.state, level))
        if inside < length:
            out.append((offset + inside, length - inside, State.UNALLOCATED, None))

    def close(self):
        for image in self.images:
            image.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def parent_path(child, resolver=None):
    """Where the parent of ``child`` is, or a ChainError saying why it cannot be found."""
    if resolver is not None:
        found = resolver(child.parent_uuid, child.parent_locator, child.path)
        if found:
            return os.fspath(found)
    locator = child.parent_locator
    if locator:
        candidate = locator if os.path.isabs(locator) else \
            os.path.join(os.path.dirname(os.path.abspath(child.path)), locator)
        if os.path.exists(candidate):
            return candidate
    if child.parent_uuid not in (None, NULL_UUID):
        found = _search_folder(child)
        if found:
            return found
    uuid = child.parent_uuid if child.parent_uuid not in (None, NULL_UUID) else "unknown"
    raise ChainError(f"{child.path}: parent image not found (locator {locator!r}, "
                     f"UUID {uuid})")


def _search_folder(child):
    """A parent named only by UUID (VDI stores no path; VirtualBox finds it in
    its media registry) is looked for among the files beside the child."""
    folder = os.path.dirname(os.path.abspath(child.path))
    try:
        names = sorted(os.listdir(folder))[:MAX_FOLDER_SEARCH]
    except OSError:
        return None
    for name in names:
        path = os.path.join(folder, name)
        if os.path.samefile(path, child.path) if os.path.exists(path) else True:
            continue
        if not os.path.isfile(path):
            continue
        try:
            with open_image(path) as candidate:
                if candidate.uuid == child.parent_uuid:
                    return path
        except DrivebayError:
            continue
    return None


def open_chain(path, writable=False, format=None, resolver=None):
    """Open ``path`` and every parent it names, checking the links."""
    images = [open_image(path, writable=writable, format=format)]
    locations = [path]
    seen = {os.path.realpath(path)}
    try:
        while images[-1].has_parent:
            child = images[-1]
            if len(images) >= MAX_CHAIN_DEPTH:
                raise ChainError(f"{path}: chain deeper than {MAX_CHAIN_DEPTH} images")
            where = parent_path(child, resolver)
            real = os.path.realpath(where)
            if real in seen:
                raise ChainError(f"{child.path}: parent {where} is already in the chain (a loop)")
            seen.add(real)
            parent = open_image(where)
            images.append(parent)
            locations.append(where)
            if child.parent_uuid not in (None, NULL_UUID) and parent.uuid is not None \
                    and parent.uuid != child.parent_uuid:
                raise ChainError(f"{child.path}: records parent UUID {child.parent_uuid} but "
                                 f"{where} has UUID {parent.uuid}")
    except BaseException:
        for image in images:
            image.close()
        raise
    return Chain(images, locations)

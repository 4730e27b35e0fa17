"""Merging differencing images, and rebasing a child onto another parent.

Two directions, as VirtualBox's medium merge offers:

* ``merge_into_parent``: the child's content moves down into its parent
  (allocated data is copied, ranges the child holds as zeros are zeroed in
  the parent).  Afterwards the parent reads what the child read; the child
  is redundant and the caller deletes it.
* ``merge_parent_into_child``: the parent's content moves up into the child
  where the child holds nothing, and the child is re-linked to the
  grandparent (or becomes a base image).  The parent's other children are
  untouched, which is why VirtualBox uses this direction for snapshots.

Both write data first and change the links last, so an interrupted merge
leaves a chain that still reads the same content.
"""

import os

from drivebay.block.chain import Chain, open_chain
from drivebay.block.driver import State
from drivebay.block.drivers import open_image
from drivebay.errors import ChainError

STEP = 1 << 20


def _pieces(offset, length):
    end = offset + length
    while offset < end:
        n = min(STEP, end - offset)
        yield offset, n
        offset += n


def _copy(pieces, source, dest, progress):
    """Copy ``(offset, length, state)`` pieces from ``source`` into ``dest``:
    DATA is read and written, ZERO becomes zeros in ``dest``."""
    total, done = sum(n for _, n, _ in pieces), 0
    buf = bytearray(STEP)
    for ext_offset, ext_length, state in pieces:
        for offset, n in _pieces(ext_offset, ext_length):
            if state is State.DATA:
                view = memoryview(buf)[:n]
                source.readinto(offset, view)
                dest.write(offset, view)
            else:
                dest.write_zeroes(offset, n)
            done += n
            if progress is not None:
                progress(done, total)


def merge_into_parent(child_path, resolver=None, progress=None):
    """Copy ``child_path``'s own content into its parent; returns the parent's path."""
    with open_chain(child_path, resolver=resolver) as chain:
        if len(chain.images) < 2:
            raise ChainError(f"{child_path}: has no parent to merge into")
        parent_path = chain.locations[1]
    # The parent is opened with its own parents so that a differencing parent
    # can copy up the rest of a block it does not hold yet (backing_read).
    with open_image(child_path) as child, \
            open_chain(parent_path, writable=True, resolver=resolver) as below:
        if child.size > below.top.size:
            below.top.resize(child.size)
        pieces = [(e.offset, e.length, e.state) for e in child.block_status(0, child.size)
                  if e.state is not State.UNALLOCATED]
        _copy(pieces, child, below, progress)
        below.flush()
    return parent_path


def merge_parent_into_child(child_path, resolver=None, progress=None):
    """Pull the parent's content up into ``child_path`` and link it to the grandparent."""
    with open_chain(child_path, writable=True, resolver=resolver) as chain:
        if len(chain.images) < 2:
            raise ChainError(f"{child_path}: has no parent to merge")
        child = chain.images[0]
        pair = Chain(chain.images[:2])
        pieces = [(o, n, s) for o, n, s, depth in pair.block_status(0, child.size) if depth == 1]
        _copy(pieces, pair, child, progress)
        child.flush()
        if len(chain.images) > 2:
            grand = chain.images[2]
            locator = os.path.relpath(grand.path, os.path.dirname(os.path.abspath(child.path)))
            child.set_parent(grand.uuid, locator, grand.modification_uuid)
        else:
            child.set_parent(None, None, None)
        child.flush()
    return child_path


def rebase(child_path, new_parent_path, resolver=None, safe=True, progress=None):
    """Make ``new_parent_path`` the parent of ``child_path``.

    Safe mode keeps what the guest sees: every range the child does not hold
    and where the old and new backing content differ is copied into the
    child first.  Unsafe mode only rewrites the link (qemu-img rebase -u)."""
    with open_chain(child_path, writable=True, resolver=resolver) as chain, \
            open_chain(new_parent_path) as new_backing:
        child = chain.images[0]
        if safe:
            old_backing = Chain(chain.images[1:]) if len(chain.images) > 1 else None
            unallocated = [e for e in child.block_status(0, child.size)
                           if e.state is State.UNALLOCATED]
            total = sum(e.length for e in unallocated)
            done = 0
            old_buf, new_buf = bytearray(STEP), bytearray(STEP)
            for ext in unallocated:
                for offset, n in _pieces(ext.offset, ext.length):
                    old_v, new_v = memoryview(old_buf)[:n], memoryview(new_buf)[:n]
                    if old_backing is not None and offset < old_backing.size:
                        m = min(n, old_backing.size - offset)
                        old_backing.readinto(offset, old_v[:m])
                        old_v[m:] = bytes(n - m)
                    else:
                        old_v[:] = bytes(n)
                    m = max(0, min(n, new_backing.size - offset))
                    if m:
                        new_backing.readinto(offset, new_v[:m])
                    new_v[m:] = bytes(n - m)
                    if old_v != new_v:
                        child.write(offset, old_v)
                    done += n
                    if progress is not None:
                        progress(done, total)
            child.flush()
        top = new_backing.top
        locator = os.path.relpath(top.path, os.path.dirname(os.path.abspath(child.path)))
        child.set_parent(top.uuid, locator, top.modification_uuid)
        child.flush()

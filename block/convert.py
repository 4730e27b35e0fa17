"""Clone, convert and compare images.

``convert`` copies the virtual disk of a chain (or a single image) into a
new image of any format that can be created.  It walks the source's
allocation (``Chain.block_status``) so unallocated and zero ranges are never
read, and it tests each data cluster for zeros (``bitmap_impl.zero_blocks``)
so zero clusters stay unallocated in a dynamic output.  The new image gets a
new UUID unless ``keep_uuid`` is asked for.

``compare`` reads two disks side by side, as ``qemu-img compare`` does:
ranges unallocated in both are equal without reading; unallocated equals
zeros unless ``strict``.
"""

import os

from drivebay.block import bitmap_impl
from drivebay.block.driver import State
from drivebay.block.drivers import driver_for
from drivebay.errors import ImageError

COPY_CHUNK = 1 << 20          # bytes read and written per step


def _walk(chain, chunk=COPY_CHUNK):
    """``(offset, length, state)`` pieces of the chain, none longer than ``chunk``."""
    for offset, length, state, _depth in chain.block_status(0, chain.size):
        end = offset + length
        while offset < end:
            n = min(chunk, end - offset)
            yield offset, n, state
            offset += n


def convert(source, dest_path, dest_format, variant=None, keep_uuid=False, progress=None,
            cluster_size=None, **create_options):
    """Write the content of ``source`` (a Chain or an image) to a new image.

    Returns the path.  ``progress(done_bytes, total_bytes)`` is called after
    every step."""
    from drivebay.block.chain import Chain
    chain = source if isinstance(source, Chain) else Chain([source])
    cls = driver_for(dest_format)
    if os.path.exists(dest_path):
        raise ImageError(f"{dest_path}: already exists; refusing to overwrite it")
    uuid = chain.top.uuid if keep_uuid else None
    cls.create(dest_path, chain.size, variant=variant, uuid=uuid, **create_options)
    total, done = chain.size, 0
    try:
        with cls.open(dest_path, writable=True) as dest:
            zero_unit = cluster_size or max(dest.cluster_size, 4096)
            buf = bytearray(COPY_CHUNK)
            for offset, length, state in _walk(chain):
                if state is State.DATA:
                    view = memoryview(buf)[:length]
                    chain.readinto(offset, view)
                    _write_nonzero(dest, offset, view, zero_unit)
                done += length
                if progress is not None:
                    progress(done, total)
            dest.flush()
    except BaseException:
        os.unlink(dest_path)
        raise
    return dest_path


def _write_nonzero(dest, offset, view, unit):
    """Write ``view`` at ``offset`` skipping whole ``unit``-sized zero pieces
    (aligned to the virtual disk, so a skipped piece is one whole cluster)."""
    start = offset - offset % unit
    head = offset - start
    flags = bitmap_impl.zero_blocks(view, unit) if head == 0 else None
    if flags is None:
        if not bitmap_impl.is_zero(view):
            dest.write(offset, view)
        return
    run_start = None
    for i, zero in enumerate(flags + [True]):
        if not zero and run_start is None:
            run_start = i
        elif zero and run_start is not None:
            a, b = run_start * unit, min(i * unit, len(view))
            dest.write(offset + a, view[a:b])
            run_start = None


def compare(a, b, strict=False, progress=None):
    """Offset of the first byte where two disks differ, or None when equal.

    Disks of different sizes differ at the end of the shorter one unless the
    rest of the longer one reads zero (qemu-img compare's rule, not strict)."""
    size = max(a.size, b.size)
    common = min(a.size, b.size)
    if strict and a.size != b.size:
        return common
    buf_a, buf_b = bytearray(COPY_CHUNK), bytearray(COPY_CHUNK)
    offset = 0
    while offset < common:
        n = min(COPY_CHUNK, common - offset)
        va, vb = memoryview(buf_a)[:n], memoryview(buf_b)[:n]
        a.readinto(offset, va)
        b.readinto(offset, vb)
        if va != vb:
            for i in range(n):
                if va[i] != vb[i]:
                    return offset + i
        offset += n
        if progress is not None:
            progress(offset, size)
    longer = a if a.size > b.size else b
    while offset < size:
        n = min(COPY_CHUNK, size - offset)
        v = memoryview(buf_a)[:n]
        longer.readinto(offset, v)
        if not bitmap_impl.is_zero(v):
            return offset + next(i for i in range(n) if v[i])
        offset += n
    return None

"""One image's own layer copied into another image, allocation kept.

What a differencing image holds is its layer: ranges it stores (data),
ranges it states are zero, and ranges it leaves to its parent.  Copying a
layer onto a new image over an equivalent parent must keep all three: a
plain data copy that skips zeros would let the parent show through where
the layer had hidden it.  Used by ``storageattach --setuuid`` (the image
rebuilt with a new UUID) and ``clonevm --mode all`` (a snapshot tree's
differencing images rebuilt over the clone's own bases).
"""

from drivebay.block.driver import State

COPY_CHUNK = 1 << 20


def copy_layer(src, dest, progress=None):
    """Copy the layer of the open image ``src`` into ``dest`` (an image or a
    Chain opened for writing, ``src``'s size); returns the bytes copied.
    ``progress(done, total)`` follows the virtual offset."""
    buf = bytearray(COPY_CHUNK)
    copied = 0
    for ext in src.block_status(0, src.size):
        if ext.state is State.ZERO:
            dest.write_zeroes(ext.offset, ext.length)
        elif ext.state is State.DATA:
            at, end = ext.offset, ext.offset + ext.length
            while at < end:
                n = min(COPY_CHUNK, end - at)
                view = memoryview(buf)[:n]
                src.readinto(at, view)
                dest.write(at, view)
                at += n
            copied += ext.length
        if progress is not None:
            progress(ext.offset + ext.length, src.size)
    dest.flush()
    return copied

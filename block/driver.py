"""The block driver interface: one class per image format.

Modelled on QEMU's BlockDriver and VirtualBox's VDIMAGEBACKEND.  A driver is
a class with format metadata as class attributes and the operations it
implements; missing operations fall back to the defaults here or raise
UnsupportedOperation.  Drivers never look at other drivers: probing and
chains are done by ``block/drivers.py`` and ``block/chain.py``.

Addresses are byte offsets into the virtual disk.  ``block_status`` is the
heart of the interface: it says, for a byte range, which parts hold data in
this image (and where in the file), which read as zeros, and which are not
allocated here (a differencing image falls through to its parent there; a
base image reads zeros).
"""

import ctypes
import ctypes.util
import enum
import errno
import fcntl
import os
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import NamedTuple

from drivebay.block import locking
from drivebay.block.io import DirectIO
from drivebay.errors import CorruptImageError, ImageError, UnsupportedOperation

SECTOR_SIZE = 512
FALLOC_FL_KEEP_SIZE = 0x01     # linux/falloc.h
FALLOC_FL_PUNCH_HOLE = 0x02

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _fallocate = _libc.fallocate
    _fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
except (OSError, AttributeError):
    _fallocate = None
NULL_UUID = uuidlib.UUID(int=0)


class State(enum.Enum):
    DATA = "data"              # allocated here; host_offset says where
    ZERO = "zero"              # allocated here as zeros (or a hole in a raw file)
    UNALLOCATED = "unallocated"  # not in this image: the parent's data, or zeros


class Extent(NamedTuple):
    offset: int
    length: int
    state: State
    host_offset: int | None = None


@dataclass
class CheckReport:
    """What ``check`` found, in qemu-img check's categories."""
    path: str
    errors: list = field(default_factory=list)     # corruptions: wrong data may be read
    leaks: list = field(default_factory=list)      # allocated space nothing refers to
    repaired: list = field(default_factory=list)
    allocated_blocks: int = 0
    total_blocks: int = 0

    @property
    def clean(self):
        return not self.errors and not self.leaks

    @property
    def exit_code(self):
        """qemu-img check's convention: 0 clean, 2 corrupted, 3 leaks only."""
        return 2 if self.errors else 3 if self.leaks else 0


def _host_error(e, message):
    """An ImageError for the OSError ``e``, keeping its errno for the device
    (ENOSPC and EIO are different statuses on some controllers)."""
    err = ImageError(f"{message}: {e.strerror}")
    err.errno = e.errno
    return err


class ImageFile:
    """A host file holding an image; every error names the file and offset.

    Inside a ``locking.image_locking()`` context the file is locked when
    opened (block/locking.py).  ``set_host_cache(False)`` switches it to
    O_DIRECT; ``direct`` then does the reads and writes (block/io.py)."""

    def __init__(self, path, writable=False, create=False):
        self.path = os.fspath(path)
        self.writable = writable
        self.direct = None
        flags = os.O_RDWR if writable else os.O_RDONLY
        if create:
            flags |= os.O_CREAT | os.O_EXCL
        try:
            self.fd = os.open(self.path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            raise _host_error(e, f"{self.path}: cannot open"
                                 f"{' for writing' if writable else ''}") from None
        try:
            locking.lock_image(self.fd, self.path, writable)
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise

    def set_host_cache(self, enabled, **options):
        """Host I/O cache on (buffered, the default) or off (O_DIRECT with a
        small write cache; ``options`` go to io.DirectIO)."""
        if enabled and self.direct is not None:
            self.direct.drain()
            self.direct.close()
            self.direct = None
            fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        elif not enabled and self.direct is None:
            self.direct = DirectIO(self, **options)

    def size(self):
        if self.direct is not None:
            return self.direct.size()
        return os.fstat(self.fd).st_size

    def pread(self, offset, length, what="data"):
        """Exactly ``length`` bytes at ``offset``, or an error naming ``what``."""
        if self.direct is not None:
            buf = bytearray(length)
            data = buf if self.direct.preadinto(offset, memoryview(buf), what) == length else b""
        else:
            try:
                data = os.pread(self.fd, length, offset)
            except OSError as e:
                raise _host_error(e, f"{self.path}: reading {what} at offset {offset}") from None
        if len(data) != length:
            raise CorruptImageError(f"{self.path}: {what} at offset {offset} ({length} bytes) "
                                    f"lies past the end of the file ({self.size()} bytes)")
        return bytes(data)

    def preadinto(self, offset, view, what="data"):
        """Fill ``view`` from ``offset``; bytes past the end of file read as zeros."""
        if self.direct is not None:
            return self.direct.preadinto(offset, view, what)
        try:
            n = os.preadv(self.fd, [view], offset)
        except OSError as e:
            raise _host_error(e, f"{self.path}: reading {what} at offset {offset}") from None
        if n < len(view):
            view[n:] = bytes(len(view) - n)
        return n

    def pwrite(self, offset, data, what="data"):
        if self.direct is not None:
            return self.direct.pwrite(offset, data, what)
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += os.pwrite(self.fd, view[done:], offset + done)
        except OSError as e:
            raise _host_error(e, f"{self.path}: writing {what} at offset {offset + done}") from None

    def truncate(self, size):
        if self.direct is not None:
            self.direct.drain()
        try:
            os.ftruncate(self.fd, size)
        except OSError as e:
            raise _host_error(e, f"{self.path}: resizing the file to {size} bytes") from None

    def allocate(self, offset, length):
        """Reserve disk space (fixed images); falls back to writing zeros."""
        if self.direct is not None:
            self.direct.drain()
        try:
            os.posix_fallocate(self.fd, offset, length)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise _host_error(e, f"{self.path}: allocating {length} bytes") from None
            chunk = bytes(1 << 20)
            for at in range(offset, offset + length, len(chunk)):
                self.pwrite(at, chunk[:min(len(chunk), offset + length - at)])

    def punch_hole(self, offset, length):
        """Deallocate a range (it then reads as zeros); zeros are written where
        the host file system cannot punch holes."""
        if self.direct is not None:
            self.direct.drain()
        if _fallocate is not None and length > 0:
            r = _fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                           ctypes.c_int64(offset), ctypes.c_int64(length))
            if r == 0:
                return
        chunk = bytes(min(length, 1 << 20))
        for at in range(offset, offset + length, len(chunk) or 1):
            self.pwrite(at, chunk[:min(len(chunk), offset + length - at)])

    def sync(self):
        """Everything written so far on stable storage (the write cache drained first)."""
        if self.direct is not None:
            self.direct.drain()
        try:
            os.fdatasync(self.fd)
        except OSError as e:
            raise _host_error(e, f"{self.path}: flushing to stable storage") from None

    def close(self):
        if self.fd >= 0:
            try:
                if self.direct is not None:
                    self.direct.drain()
            finally:
                if self.direct is not None:
                    self.direct.close()
                os.close(self.fd)
                self.fd = -1


class BlockDriver:
    """Base class of every image format driver.

    Class attributes describe the format; instances are open images.
    """

    format_name = None
    description = ""
    create_variants = ()          # e.g. ("dynamic", "fixed"); empty: cannot create
    fixed_sizes = None            # the only sizes the format can be created in (floppies)
    supports_backing = False      # can be a differencing image over a parent
    resizable = False
    read_only_format = False      # ISO: never writable

    # -- class level: probe, create, open ---------------------------------------

    @classmethod
    def probe(cls, head, tail, file_size):
        """Score 0..100 how sure the driver is that this file is its format."""
        return 0

    @classmethod
    def create(cls, path, size, variant=None, uuid=None, parent=None, **options):
        raise UnsupportedOperation(f"{cls.format_name}: creating images is not supported")

    @classmethod
    def open(cls, path, writable=False, for_check=False):
        """Open an image.  ``for_check`` (as qemu-img check opens) records
        metadata corruption for ``check`` to report instead of refusing the
        image; such an image refuses writes until repaired."""
        if writable and cls.read_only_format:
            raise UnsupportedOperation(f"{path}: {cls.format_name} images are read-only")
        return cls._open_on(ImageFile(path, writable), writable, for_check)

    @classmethod
    def _open_on(cls, f, writable, for_check):
        """The image read from ``f`` (an ImageFile, or what stands for one);
        ``f`` is closed if that fails."""
        try:
            image = cls(f, writable)
            image.for_check = for_check
            image._open()
        except BaseException:
            f.close()
            raise
        return image

    # -- instance --------------------------------------------------------------------

    def __init__(self, file, writable):
        self.file = file
        self.path = file.path
        self.writable = writable
        self.size = 0                        # virtual disk size in bytes
        self.uuid = None                     # uuid.UUID or None when the format has none
        self.modification_uuid = None
        self.parent_uuid = None
        self.parent_modification_uuid = None
        self.parent_locator = None           # path hint to the parent, as stored
        self.variant = None
        self.cluster_size = SECTOR_SIZE      # allocation granularity, for map/convert
        self.for_check = False
        # Set by a chain on every image that has a parent below it:
        # backing_read(offset, view) fills view with what the images below
        # hold (zeros past their end).  A format whose allocation unit is
        # larger than a write (VDI blocks) copies the rest of a new block up.
        self.backing_read = None

    def _open(self):
        """Read and validate the image's metadata (subclasses)."""

    @property
    def has_parent(self):
        return self.parent_uuid is not None and self.parent_uuid != NULL_UUID or \
            bool(self.parent_locator)

    def check_range(self, offset, length):
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ImageError(f"{self.path}: request {offset}+{length} outside the "
                             f"{self.size}-byte disk")

    def _require_writable(self):
        if not self.writable:
            raise UnsupportedOperation(f"{self.path}: image is open read-only")

    # data path
    def block_status(self, offset, length):
        raise UnsupportedOperation(f"{self.format_name}: block_status not implemented")

    def readinto(self, offset, buf):
        """Fill ``buf`` (writable buffer) from virtual ``offset``.

        Unallocated ranges read as zeros here; a chain asks the parent instead."""
        view = memoryview(buf).cast("B")
        self.check_range(offset, len(view))
        for ext in self.block_status(offset, len(view)):
            part = view[ext.offset - offset:ext.offset - offset + ext.length]
            if ext.state is State.DATA:
                self.file.preadinto(ext.host_offset, part)
            else:
                part[:] = bytes(ext.length)

    def read(self, offset, length):
        buf = bytearray(length)
        self.readinto(offset, buf)
        return bytes(buf)

    def read_allocated_into(self, ext, view):
        """Read a DATA extent of this image into ``view`` (used by chains)."""
        self.file.preadinto(ext.host_offset, view)

    def write(self, offset, data):
        raise UnsupportedOperation(f"{self.format_name}: writing is not supported")

    def write_zeroes(self, offset, length):
        """Make the range read as zeros in this image (never "ask the parent")."""
        chunk = bytes(min(length, 1 << 20))
        at = offset
        while at < offset + length:
            n = min(len(chunk), offset + length - at)
            self.write(at, chunk[:n])
            at += n

    def discard(self, offset, length):
        """A hint that the range is no longer needed; data is unchanged or zero."""

    def flush(self):
        if self.writable:
            self.file.sync()

    def resize(self, new_size):
        raise UnsupportedOperation(f"{self.format_name}: resize is not supported")

    def check(self, repair=False):
        return CheckReport(self.path)

    def set_parent(self, parent_uuid, parent_locator, parent_modification_uuid=None):
        raise UnsupportedOperation(f"{self.format_name}: images of this format have no parent")

    def info(self):
        """Format-specific facts for ``drivebay img info``."""
        return {}

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<{type(self).__name__} {self.path!r} {self.size} bytes>"


def parse_uuid(raw, path, field_name, little_endian=False):
    """A UUID from 16 stored bytes (RTUUID layout when ``little_endian``)."""
    try:
        return uuidlib.UUID(bytes_le=raw) if little_endian else uuidlib.UUID(bytes=raw)
    except ValueError:
        raise CorruptImageError(f"{path}: field {field_name} is not a 16-byte UUID") from None

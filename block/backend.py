"""BlockBackend: the medium as a device model sees it.

Controllers never see image formats or chains.  They see a byte-addressed
disk of ``size`` bytes with a logical sector size, that reads into and
writes from guest-memory views, flushes, and (when the attachment allows)
discards.  IDE calls it synchronously, as VirtualBox's IDE does; the
asynchronous request queue of the I/O path (I/O threads, cache modes,
bandwidth groups) is layered on the same methods.

Host I/O failures surface as ``drivebay.errors.ImageError``: a device turns
them into the medium error its command set defines (ATA UNC, SCSI MEDIUM
ERROR), never into an exception out of the CPU loop.
"""

from drivebay.block.chain import Chain, open_chain
from drivebay.errors import ImageError, UnsupportedOperation

DISK_SECTOR = 512
OPTICAL_SECTOR = 2048


class BlockBackend:
    def __init__(self, chain, read_only=False, sector_size=DISK_SECTOR, discard=False,
                 non_rotational=False, name=None):
        self.chain = chain if isinstance(chain, Chain) else Chain([chain])
        self.read_only = read_only or not self.chain.top.writable
        self.sector_size = sector_size
        self.discard_enabled = discard
        self.non_rotational = non_rotational
        self.name = name or self.chain.path

    @classmethod
    def open(cls, path, read_only=False, format=None, resolver=None, **options):
        """Open the image at ``path`` with its parents."""
        chain = open_chain(path, writable=not read_only, format=format, resolver=resolver)
        return cls(chain, read_only=read_only, **options)

    @property
    def size(self):
        return self.chain.size

    @property
    def sectors(self):
        return self.chain.size // self.sector_size

    @property
    def uuid(self):
        """The active image's UUID (None for formats without one, e.g. raw)."""
        return self.chain.top.uuid

    def readinto(self, offset, view):
        self.chain.readinto(offset, view)

    def write(self, offset, data):
        if self.read_only:
            raise UnsupportedOperation(f"{self.name}: medium is read-only")
        self.chain.write(offset, data)

    def write_zeroes(self, offset, length):
        if self.read_only:
            raise UnsupportedOperation(f"{self.name}: medium is read-only")
        self.chain.write_zeroes(offset, length)

    def discard(self, offset, length):
        if self.read_only:
            raise UnsupportedOperation(f"{self.name}: medium is read-only")
        if self.discard_enabled:
            self.chain.discard(offset, length)

    def flush(self):
        if not self.read_only:
            self.chain.flush()

    def close(self):
        self.chain.close()


class MemoryBackend:
    """A BlockBackend over a bytearray: for device unit tests and scratch disks."""

    def __init__(self, data, read_only=False, sector_size=DISK_SECTOR, discard=False,
                 non_rotational=False, uuid=None, name="memory"):
        self.data = data
        self.read_only = read_only
        self.sector_size = sector_size
        self.discard_enabled = discard
        self.non_rotational = non_rotational
        self.uuid = uuid
        self.name = name
        self.flushes = 0

    size = property(lambda self: len(self.data))
    sectors = property(lambda self: len(self.data) // self.sector_size)

    def _range(self, offset, length):
        if offset < 0 or offset + length > len(self.data):
            raise ImageError(f"{self.name}: request {offset}+{length} outside the "
                             f"{len(self.data)}-byte disk")

    def readinto(self, offset, view):
        self._range(offset, len(view))
        view[:] = self.data[offset:offset + len(view)]

    def write(self, offset, data):
        if self.read_only:
            raise UnsupportedOperation(f"{self.name}: medium is read-only")
        self._range(offset, len(data))
        self.data[offset:offset + len(data)] = data

    def write_zeroes(self, offset, length):
        self.write(offset, bytes(length))

    def discard(self, offset, length):
        if self.discard_enabled:
            self.write_zeroes(offset, length)

    def flush(self):
        self.flushes += 1

    def close(self):
        pass

"""Raw disk images: the virtual disk byte for byte, no metadata.

A raw image has no UUID, no parent and no allocation table.  Unwritten
regions of a sparse file (holes, found with SEEK_DATA/SEEK_HOLE) are
reported as zero extents so convert and map skip them.  "fixed" creation
reserves the space (posix_fallocate); "dynamic" makes a sparse file.
"""

import errno
import os

from drivebay.block.driver import BlockDriver, Extent, ImageFile, State
from drivebay.errors import ImageError


class RawDriver(BlockDriver):
    format_name = "raw"
    description = "raw disk image"
    create_variants = ("dynamic", "fixed")
    resizable = True

    @classmethod
    def probe(cls, head, tail, file_size):
        return 1                     # anything can be a raw image; any real format wins

    @classmethod
    def create(cls, path, size, variant=None, uuid=None, parent=None, **options):
        if parent is not None:
            raise ImageError(f"{path}: raw images cannot have a parent")
        f = ImageFile(path, writable=True, create=True)
        try:
            f.truncate(size)
            if (variant or "dynamic") == "fixed":
                f.allocate(0, size)
        finally:
            f.close()

    def _open(self):
        self.size = self.file.size()
        self.variant = "raw"

    def block_status(self, offset, length):
        self.check_range(offset, length)
        end = offset + length
        extents, at, fd = [], offset, self.file.fd
        while at < end:
            try:
                data = os.lseek(fd, at, os.SEEK_DATA)
            except OSError as e:
                if e.errno != errno.ENXIO:      # ENXIO: no data after `at`
                    raise ImageError(f"{self.path}: SEEK_DATA at {at}: {e.strerror}") from None
                data = end
            data = min(data, end)
            if data > at:
                extents.append(Extent(at, data - at, State.ZERO))
                at = data
                continue
            hole = min(os.lseek(fd, at, os.SEEK_HOLE), end)
            extents.append(Extent(at, hole - at, State.DATA, at))
            at = hole
        return extents

    def readinto(self, offset, buf):
        view = memoryview(buf).cast("B")
        self.check_range(offset, len(view))
        self.file.preadinto(offset, view)

    def write(self, offset, data):
        self._require_writable()
        self.check_range(offset, len(data))
        self.file.pwrite(offset, data)

    def discard(self, offset, length):
        self._require_writable()
        self.check_range(offset, length)
        self.file.punch_hole(offset, length)

    def resize(self, new_size):
        self._require_writable()
        self.file.truncate(new_size)
        self.size = new_size


"""Guest RAM: one page-aligned host buffer shared by the CPU and every device.

The buffer is an anonymous mmap, so it is page aligned and zero filled, and
unicorn maps it with ``mem_map_ptr``: the CPU, DMA views (hw.dma.GuestMemory)
and block-layer reads all touch the same bytes with no copy.
"""

import ctypes
import mmap

from drivebay.errors import ConfigError
from drivebay.hw.dma import GuestMemory

PAGE_SIZE = 0x1000
# Guest RAM lives below the PCI hole: SeaBIOS and our loader place PCI BARs
# and the LAPIC above 0xE0000000, so RAM may reach 3.5 GiB at most.
MAX_RAM_BYTES = 0xE000_0000
MIN_RAM_BYTES = 2 << 20


class GuestRam:
    def __init__(self, size):
        if size % PAGE_SIZE or not MIN_RAM_BYTES <= size <= MAX_RAM_BYTES:
            raise ConfigError(
                f"guest RAM of {size} bytes: must be a multiple of 4 KiB between "
                f"{MIN_RAM_BYTES >> 20} MiB and {MAX_RAM_BYTES >> 20} MiB")
        self.size = size
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.buffer = memoryview(self._map)
        self._anchor = ctypes.c_char.from_buffer(self._map)

    @property
    def address(self):
        """Host address of the buffer, for unicorn's mem_map_ptr."""
        return ctypes.addressof(self._anchor)

    def load(self, address, data):
        """Copy ``data`` into RAM at guest-physical ``address`` (bounds checked)."""
        end = address + len(data)
        if address < 0 or end > self.size:
            raise ConfigError(f"{len(data)} bytes at {address:#x} do not fit in "
                              f"{self.size >> 20} MiB of guest RAM")
        self.buffer[address:end] = data


class CodeCoherentMemory(GuestMemory):
    """Guest RAM as devices see it, on a machine whose CPU caches translated code.

    Unicorn drops a translated block only when the CPU itself stores to its
    page; a device's DMA lands in the RAM buffer behind its back, and the
    old code would keep running (an MBR reads the partition's boot sector
    over itself at 0x7C00 and jumps there).  QEMU invalidates on every DMA
    write for the same reason (invalidate_and_set_dirty).  So every range a
    device may write is reported to ``invalidate(address, length)`` when
    the device gets it: a view handed to an asynchronous read is invalidated
    before its data lands, which is enough since no guest runs code out of
    a buffer while a read into it is in flight.
    """

    def __init__(self, buffer, invalidate):
        super().__init__(buffer)
        self._invalidate = invalidate

    def view(self, address, length):
        view = super().view(address, length)
        self._invalidate(address, length)
        return view

    def write(self, address, data):
        super().write(address, data)
        self._invalidate(address, len(data))

    def sg_views(self, segments):
        views = super().sg_views(segments)
        for address, length in segments:
            self._invalidate(address, length)
        return views

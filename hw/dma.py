"""Guest memory as devices see it: bounds-checked views of guest RAM.

A device never touches the CPU; it reads and writes guest physical memory
through a GuestMemory.  ``view`` gives a writable memoryview into RAM so a
block read can land in the guest with no copy.  Any range that is not wholly
inside RAM raises DmaError, which the device turns into the error status its
hardware reports (a master abort, a PRD error, an NVMe data transfer error):
a DMA outside RAM fails that DMA, never the host.
"""


class DmaError(Exception):
    """A DMA touched guest-physical addresses that are not RAM.

    Devices catch this and answer the guest with a hardware status; it must
    never escape into the CPU loop.
    """

    def __init__(self, address, length):
        super().__init__(f"DMA of {length} bytes at {address:#x} is outside guest RAM")
        self.address = address
        self.length = length


class GuestMemory:
    """Guest RAM: ``size`` bytes of one host buffer starting at physical 0.

    ``buffer`` is any writable buffer (a bytearray in unit tests, the
    unicorn-mapped RAM in a machine).
    """

    def __init__(self, buffer):
        self._mem = memoryview(buffer).cast("B")
        if self._mem.readonly:
            raise ValueError("guest RAM must be a writable buffer")
        self.size = len(self._mem)

    def _check(self, address, length):
        if address < 0 or length < 0 or address + length > self.size:
            raise DmaError(address, length)

    def view(self, address, length):
        """A writable memoryview of ``length`` bytes at ``address``."""
        self._check(address, length)
        return self._mem[address:address + length]

    def read(self, address, length):
        self._check(address, length)
        return bytes(self._mem[address:address + length])

    def write(self, address, data):
        length = len(data)
        self._check(address, length)
        self._mem[address:address + length] = data

    def read_u8(self, address):
        return self.read(address, 1)[0]

    def read_u16(self, address):
        return int.from_bytes(self.read(address, 2), "little")

    def read_u32(self, address):
        return int.from_bytes(self.read(address, 4), "little")

    def read_u64(self, address):
        return int.from_bytes(self.read(address, 8), "little")

    def write_u16(self, address, value):
        self.write(address, (value & 0xFFFF).to_bytes(2, "little"))

    def write_u32(self, address, value):
        self.write(address, (value & 0xFFFFFFFF).to_bytes(4, "little"))

    def write_u64(self, address, value):
        self.write(address, (value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))

    def sg_views(self, segments):
        """Views for a scatter-gather list of (address, length) pairs.

        Every segment is checked before any view is returned, so a list with
        one bad entry fails as a whole before any data moves.
        """
        for address, length in segments:
            self._check(address, length)
        return [self._mem[a:a + n] for a, n in segments]

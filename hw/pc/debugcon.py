"""QEMU's ISA debug console (``-device isa-debugcon``, port 0x402).

What QEMU's hw/char/debugcon.c does: every byte written to the port is
console output; a read returns the "readback" value, 0xE9 by default (the
Bochs port-E9 hack's identifier).  SeaBIOS probes the port by reading it and
stops logging there unless it reads 0xE9.  A 16- or 32-bit write is split
into its bytes, low byte first, as the ISA bus splits it for a byte port.
"""

PORT = 0x402
READBACK = 0xE9
REGISTERS = {0: "debugcon"}


class DebugCon:
    """Bytes written to ``port`` go to ``sink(bytes)``."""

    STATE_FIELDS = ()

    def __init__(self, sink, port=PORT, readback=READBACK):
        self.sink = sink
        self.port = port
        self.readback = readback

    def reset(self):
        pass

    def register(self, io):
        io.add("debugcon", self.port, 1, self.pio_read, self.pio_write, names=REGISTERS)

    def pio_read(self, offset, size):
        return int.from_bytes(bytes([self.readback]) * size, "little")

    def pio_write(self, offset, size, value):
        self.sink(value.to_bytes(size, "little"))

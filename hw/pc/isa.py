"""ISA bus cycles to 8-bit devices.

An ISA bus controller splits a 16- or 32-bit port access to an 8-bit device
into byte cycles at consecutive port addresses, low byte first.  The byte-
wide chips of the PC (8259A, 8254, MC146818, 16550A, 8042) use these helpers
so an ``inw``/``outw`` sees what it sees on a real board.
"""


def split_read(read_byte, offset, size, window):
    """Read ``size`` bytes as byte cycles; ports past ``window`` float high."""
    value = 0
    for i in range(size):
        port = offset + i
        byte = read_byte(port) if port < window else 0xFF
        value |= (byte & 0xFF) << (8 * i)
    return value


def split_write(write_byte, offset, size, value, window):
    """Write ``size`` bytes as byte cycles; ports past ``window`` are not decoded."""
    for i in range(size):
        port = offset + i
        if port < window:
            write_byte(port, (value >> (8 * i)) & 0xFF)

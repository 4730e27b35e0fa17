"""QEMU's isa-debug-exit device (``-device isa-debug-exit``, ports 0x501-0x502).

What QEMU's hw/misc/debugexit.c does: a write of value V ends the emulator
with process exit status ``(V << 1) | 1`` (so a guest can never report 0).
Here the write calls ``exit_request(V)`` with the value as written; turning
it into a process status is the machine's business.  Reads return all ones.
"""

from drivebay import trace

BASE = 0x501
SIZE = 2
REGISTERS = {0: "exit", 1: "exit+1"}


def qemu_exit_status(value):
    """The process exit status QEMU reports for a write of ``value``."""
    return ((value << 1) | 1) & 0xFF


class DebugExit:
    """``exit_request(value)`` on any write to the ports."""

    STATE_FIELDS = ()

    def __init__(self, exit_request, base=BASE, size=SIZE):
        self.exit_request = exit_request
        self.base = base
        self.size = size

    def reset(self):
        pass

    def register(self, io):
        io.add("debug_exit", self.base, self.size, self.pio_read, self.pio_write, names=REGISTERS)

    def pio_read(self, offset, size):
        return (1 << (8 * size)) - 1

    def pio_write(self, offset, size, value):
        if trace.on.dev:
            trace.emit("dev", f"debug_exit_write {value:#x} (QEMU status {qemu_exit_status(value)})")
        self.exit_request(value)

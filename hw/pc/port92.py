"""System Control Port A (port 0x92): fast A20 gate and fast reset.

Modelled from the PIIX3 datasheet (Intel 82371SB, 4.2.1 "Port 92h"), as
QEMU's port92 device behaves:

=====  ========================================================
bit    meaning
=====  ========================================================
0      FAST_INIT: a 0 -> 1 transition resets the CPU (INIT)
1      ALT_A20: A20 gate (1 = A20 passes)
3      security lock (stored; not enforced)
=====  ========================================================

The machine combines ``a20_changed`` with the 8042 output port's A20 bit
(the chipset ORs them).  ``reset_request()`` is called on the rising edge of
bit 0; the bit then reads back as written, as on the PIIX, until rewritten.
"""

from drivebay import trace

PORT = 0x92
REGISTERS = {0: "PORT92"}

FAST_INIT = 0x01
ALT_A20 = 0x02
LOCK = 0x08


class Port92:
    """``reset_request()`` on a fast reset; ``a20_changed(enabled)`` (optional)."""

    STATE_FIELDS = ("value",)

    def __init__(self, reset_request, a20_changed=None):
        self.reset_request = reset_request
        self.a20_changed = a20_changed
        self.value = 0

    def reset(self):
        old, self.value = self.value, 0
        if old & ALT_A20 and self.a20_changed is not None:
            self.a20_changed(False)

    def register(self, io):
        io.add("port92", PORT, 1, self.pio_read, self.pio_write, names=REGISTERS)

    @property
    def a20(self):
        return bool(self.value & ALT_A20)

    def pio_read(self, offset, size):
        return self.value

    def pio_write(self, offset, size, value):
        value &= 0xFF
        old, self.value = self.value, value
        if (old ^ value) & ALT_A20 and self.a20_changed is not None:
            self.a20_changed(bool(value & ALT_A20))
        if value & FAST_INIT and not old & FAST_INIT:
            if trace.on.dev:
                trace.emit("dev", "port92_fast_reset")
            self.reset_request()

"""System Control Port B (port 0x61) of the PC/AT.

Modelled from the PIIX3 datasheet (Intel 82371SB, 4.2.2 "NMI Status and
Control Register") and the IBM PC/AT Technical Reference:

=====  ===========================================  ======
bit    meaning                                      access
=====  ===========================================  ======
0      TIM2GATE: 8254 counter 2 GATE                rw
1      SPKR_DAT_EN: speaker data enable             rw
2      PCIERR_EN (0 = SERR# NMI enabled)            rw
3      IOCHK_EN (0 = IOCHK# NMI enabled)            rw
4      REF_TOGGLE: refresh cycle toggle             ro
5      OUT2: 8254 counter 2 OUT                     ro
6      IOCHK_STS: IOCHK# NMI source                 ro
7      SERR_STS: SERR# NMI source                   ro
=====  ===========================================  ======

REF_TOGGLE flips on every read (as QEMU's pcspk does) rather than every
15 us of virtual time: BIOS delay loops that count toggles then always make
progress, even while the virtual clock stands still within a CPU slice.
No NMI source is modelled (bits 6 and 7 read 0); the speaker makes no sound.
"""

from drivebay import trace

PORT = 0x61
REGISTERS = {0: "NMI_SC"}

TIM2GATE = 0x01
SPKR_DAT_EN = 0x02
PCIERR_EN = 0x04
IOCHK_EN = 0x08
REF_TOGGLE = 0x10
OUT2 = 0x20
WRITABLE = TIM2GATE | SPKR_DAT_EN | PCIERR_EN | IOCHK_EN


class PortB:
    """Port 0x61.  ``pit`` is the 8254 whose counter 2 this port gates and reads."""

    STATE_FIELDS = ("value", "refresh")

    def __init__(self, pit):
        self.pit = pit
        self.reset()

    def reset(self):
        self.value = 0
        self.refresh = 0
        self.pit.set_gate(2, False)

    def register(self, io):
        io.add("portb", PORT, 1, self.pio_read, self.pio_write, names=REGISTERS)

    @property
    def speaker_enabled(self):
        return bool(self.value & SPKR_DAT_EN)

    def pio_read(self, offset, size):
        self.refresh ^= REF_TOGGLE
        value = self.value | self.refresh
        if self.pit.out(2):
            value |= OUT2
        return value

    def pio_write(self, offset, size, value):
        value &= 0xFF
        if value & ~WRITABLE:
            # Writing the read-only status bits is common (read-modify-write);
            # hardware ignores them, so do we, silently.
            value &= WRITABLE
        self.value = value
        self.pit.set_gate(2, value & TIM2GATE)
        if trace.on.dev:
            trace.emit("dev", f"portb_write gate2={value & 1} speaker={(value >> 1) & 1}")

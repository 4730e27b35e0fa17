"""The 8042 keyboard controller (ports 0x60/0x64) with a PS/2 keyboard and mouse.

Modelled from the IBM PC/AT Technical Reference ("Keyboard Controller") and
the IBM PS/2 Hardware Interface Technical Reference ("Keyboard and
Auxiliary Device Controller", "Keyboard", "Pointing Device"), as the
PIIX-era Super I/O chips implement it:

* the status register (OBF, IBF, SYS, A2, INH, AUXB, TO, PERR), the command
  byte (0x20 read / 0x60 write; 0x21-0x3F / 0x61-0x7F the rest of the RAM),
  self test 0xAA -> 0x55, interface tests 0xAB / 0xA9 -> 0x00,
  disable/enable keyboard 0xAD/0xAE and aux 0xA7/0xA8, read input port 0xC0,
  output port 0xD0/0xD1 (bit 0 system reset, bit 1 A20), write keyboard /
  aux output buffer 0xD2/0xD3, write to aux device 0xD4, read test inputs
  0xE0, A20 on/off 0xDF/0xDD, pulse output port 0xF0-0xFF (bit 0 clear
  pulses the reset line);
* scan code translation (command byte bit 6): set 2 codes from the keyboard
  reach the host as set 1, as the 8042 firmware does;
* a PS/2 keyboard: reset 0xFF -> FA AA, identify 0xF2 -> FA AB 83 (AB 41
  once translated, as on real controllers and QEMU), set LEDs 0xED, echo 0xEE, scan code
  set 0xF0, typematic 0xF3, enable/disable scanning 0xF4/0xF5, defaults
  0xF6, resend 0xFE; a 16-byte output queue;
* a PS/2 mouse that answers its commands (reset -> FA AA 00, identify ->
  FA 00, status request, sample rate, resolution, scaling, stream/remote,
  wrap) so firmware probing it never waits for a timeout.  It reports no
  movement.

Bytes leave the controller through its one-byte output buffer: the next
byte (controller reply first, then keyboard, then mouse) is loaded as soon
as the host reads port 0x60.  IRQ1 is driven while the buffer holds a
keyboard/controller byte and command byte bit 0 is set, IRQ12 likewise for
mouse bytes and bit 1.  Commands complete at once, so IBF always reads 0.
"""

from collections import deque

from drivebay import trace

DATA_PORT = 0x60
COMMAND_PORT = 0x64
DATA_NAMES = {0: "data"}
COMMAND_NAMES = {0: "status/command"}

# -- status register -----------------------------------------------------------------
STATUS_OBF = 0x01        # output buffer full
STATUS_IBF = 0x02        # input buffer full (never: commands complete at once)
STATUS_SYS = 0x04        # system flag, from command byte bit 2
STATUS_A2 = 0x08         # last write was to 0x64 (command)
STATUS_INH = 0x10        # 1 = keyboard not inhibited (keylock open)
STATUS_AUXB = 0x20       # output buffer holds aux (mouse) data
STATUS_TO = 0x40         # timeout
STATUS_PERR = 0x80       # parity error

# -- command byte (controller RAM byte 0) -----------------------------------------------
CB_KBD_INT = 0x01        # IRQ1 on keyboard output buffer full
CB_AUX_INT = 0x02        # IRQ12 on aux output buffer full
CB_SYS = 0x04            # system flag
CB_IGNORE_LOCK = 0x08
CB_KBD_DISABLE = 0x10    # keyboard clock held low
CB_AUX_DISABLE = 0x20    # aux clock held low
CB_XLATE = 0x40          # translate set 2 to set 1
CB_RESET_VALUE = CB_KBD_INT | CB_AUX_INT       # as QEMU's pckbd leaves it

# -- output port (0xD0/0xD1) ----------------------------------------------------------
OUT_RESET = 0x01         # 0 = system reset asserted
OUT_A20 = 0x02           # A20 gate
OUT_AUX_CLOCK = 0x04
OUT_AUX_DATA = 0x08
OUT_OBF = 0x10           # keyboard output buffer full
OUT_AUX_OBF = 0x20
OUT_KBD_CLOCK = 0x40
OUT_KBD_DATA = 0x80
OUT_RESET_VALUE = 0xCF   # QEMU: reset deasserted, A20 on, clock/data lines high

# -- controller commands (written to 0x64) --------------------------------------------
CMD_READ_RAM = 0x20            # 0x20-0x3F
CMD_WRITE_RAM = 0x60           # 0x60-0x7F
CMD_AUX_DISABLE = 0xA7
CMD_AUX_ENABLE = 0xA8
CMD_AUX_TEST = 0xA9
CMD_SELF_TEST = 0xAA
CMD_KBD_TEST = 0xAB
CMD_KBD_DISABLE = 0xAD
CMD_KBD_ENABLE = 0xAE
CMD_READ_INPUT = 0xC0
CMD_READ_OUTPUT = 0xD0
CMD_WRITE_OUTPUT = 0xD1
CMD_WRITE_KBD_OBUF = 0xD2
CMD_WRITE_AUX_OBUF = 0xD3
CMD_WRITE_AUX = 0xD4
CMD_A20_OFF = 0xDD
CMD_A20_ON = 0xDF
CMD_READ_TEST = 0xE0
CMD_PULSE = 0xF0               # 0xF0-0xFF: pulse output port bits 3-0 that are 0

SELF_TEST_PASSED = 0x55
INTERFACE_TEST_PASSED = 0x00
INPUT_PORT_VALUE = 0x80        # bit 7: keyboard not inhibited (keylock)

# Commands followed by a data byte written to port 0x60.
PARAMETER_COMMANDS = frozenset([CMD_WRITE_OUTPUT, CMD_WRITE_KBD_OBUF, CMD_WRITE_AUX_OBUF,
                                CMD_WRITE_AUX]) | frozenset(range(CMD_WRITE_RAM, 0x80))

# -- PS/2 device replies ------------------------------------------------------------------
ACK = 0xFA
RESEND = 0xFE
BAT_OK = 0xAA                  # basic assurance test passed
ECHO = 0xEE
PS2_QUEUE_SIZE = 16            # bytes a PS/2 device buffers

# Keyboard commands
KBD_SET_LEDS = 0xED
KBD_ECHO = 0xEE
KBD_SCANCODE_SET = 0xF0
KBD_GET_ID = 0xF2
KBD_SET_TYPEMATIC = 0xF3
KBD_ENABLE = 0xF4
KBD_DEFAULT_DISABLE = 0xF5
KBD_SET_DEFAULT = 0xF6
KBD_RESEND = 0xFE
KBD_RESET = 0xFF
KBD_ID = (0xAB, 0x83)          # MF2 keyboard (AB 41 through the 8042's translation)

# Mouse commands
AUX_SET_SCALE11 = 0xE6
AUX_SET_SCALE21 = 0xE7
AUX_SET_RES = 0xE8
AUX_STATUS = 0xE9
AUX_SET_STREAM = 0xEA
AUX_READ_DATA = 0xEB
AUX_RESET_WRAP = 0xEC
AUX_SET_WRAP = 0xEE
AUX_SET_REMOTE = 0xF0
AUX_GET_ID = 0xF2
AUX_SET_SAMPLE = 0xF3
AUX_ENABLE = 0xF4
AUX_DISABLE = 0xF5
AUX_SET_DEFAULT = 0xF6
AUX_RESEND = 0xFE
AUX_RESET = 0xFF
MOUSE_ID = 0x00                # standard PS/2 mouse
MOUSE_STATUS_REMOTE = 0x40
MOUSE_STATUS_ENABLED = 0x20
MOUSE_STATUS_SCALE21 = 0x10

# Scan code set 1 -> set 2 for 0x00-0x7F (IBM keyboard technical reference);
# the 8042's translation is the inverse of this permutation.
_SET1_TO_SET2 = bytes([
    0x00, 0x76, 0x16, 0x1E, 0x26, 0x25, 0x2E, 0x36, 0x3D, 0x3E, 0x46, 0x45, 0x4E, 0x55, 0x66, 0x0D,
    0x15, 0x1D, 0x24, 0x2D, 0x2C, 0x35, 0x3C, 0x43, 0x44, 0x4D, 0x54, 0x5B, 0x5A, 0x14, 0x1C, 0x1B,
    0x23, 0x2B, 0x34, 0x33, 0x3B, 0x42, 0x4B, 0x4C, 0x52, 0x0E, 0x12, 0x5D, 0x1A, 0x22, 0x21, 0x2A,
    0x32, 0x31, 0x3A, 0x41, 0x49, 0x4A, 0x59, 0x7C, 0x11, 0x29, 0x58, 0x05, 0x06, 0x04, 0x0C, 0x03,
    0x0B, 0x02, 0x0A, 0x01, 0x09, 0x77, 0x7E, 0x6C, 0x75, 0x7D, 0x7B, 0x6B, 0x73, 0x74, 0x79, 0x69,
    0x72, 0x7A, 0x70, 0x71, 0x7F, 0x60, 0x61, 0x78, 0x07, 0x0F, 0x17, 0x1F, 0x27, 0x2F, 0x37, 0x3F,
    0x47, 0x4F, 0x56, 0x5E, 0x08, 0x10, 0x18, 0x20, 0x28, 0x30, 0x38, 0x40, 0x48, 0x50, 0x57, 0x6F,
    0x13, 0x19, 0x39, 0x51, 0x53, 0x5C, 0x5F, 0x62, 0x63, 0x64, 0x65, 0x67, 0x68, 0x6A, 0x6D, 0x6E,
])


def _translation_table():
    table = list(range(256))           # 0x80-0xFF (prefixes, replies) pass unchanged...
    for set1, set2 in enumerate(_SET1_TO_SET2):
        table[set2] = set1
    table[0x83] = 0x41                 # ...except set 2's F7 key, the one code above 0x7F
    return bytes(table)


TRANSLATE = _translation_table()
BREAK_PREFIX = 0xF0


class Ps2Keyboard:
    """A PS/2 MF2 keyboard: command bytes in, reply and scan code bytes out."""

    STATE_FIELDS = ("queue", "scanning", "scancode_set", "leds", "pending_command", "last_sent")

    def __init__(self, controller):
        self.controller = controller
        self.queue = deque()
        self.reset()

    def reset(self):
        self.queue.clear()
        self._defaults()
        self.scanning = True
        self.pending_command = None
        self.last_sent = 0

    def _defaults(self):
        self.scancode_set = 2
        self.leds = 0
        self.typematic = 0x2B              # 10.9 characters/s, 500 ms delay

    def send(self, *data):
        for byte in data:
            if len(self.queue) >= PS2_QUEUE_SIZE:
                trace.guest_error("ps2_keyboard", f"queue full, byte {byte:#04x} dropped")
                continue
            self.queue.append(byte)
        self.controller.update()

    def write(self, byte):
        """A byte the host sent to the keyboard."""
        command, self.pending_command = self.pending_command, None
        if command == KBD_SET_LEDS:
            self.leds = byte & 0x07
            self.send(ACK)
        elif command == KBD_SCANCODE_SET:
            if byte == 0:
                self.send(ACK, self.scancode_set)
            elif byte in (1, 2, 3):
                self.scancode_set = byte
                self.send(ACK)
            else:
                self.send(RESEND)
        elif command == KBD_SET_TYPEMATIC:
            self.typematic = byte & 0x7F
            self.send(ACK)
        elif byte in (KBD_SET_LEDS, KBD_SCANCODE_SET, KBD_SET_TYPEMATIC):
            self.pending_command = byte
            self.send(ACK)
        elif byte == KBD_ECHO:
            self.send(ECHO)
        elif byte == KBD_GET_ID:
            self.send(ACK, *KBD_ID)
        elif byte == KBD_ENABLE:
            self.queue.clear()
            self.scanning = True
            self.send(ACK)
        elif byte == KBD_DEFAULT_DISABLE:
            self.queue.clear()
            self._defaults()
            self.scanning = False
            self.send(ACK)
        elif byte == KBD_SET_DEFAULT:
            self.queue.clear()
            self._defaults()
            self.scanning = True
            self.send(ACK)
        elif byte == KBD_RESEND:
            self.send(self.last_sent)
        elif byte == KBD_RESET:
            self.reset()
            self.send(ACK, BAT_OK)
        elif 0xF7 <= byte <= 0xFD:
            self.send(ACK)                 # set 3 key type commands: accepted, no effect
        else:
            trace.guest_error("ps2_keyboard", f"unknown command {byte:#04x}")
            self.send(RESEND)

    def scancodes(self, data):
        if not self.scanning:
            if trace.on.dev:
                trace.emit("dev", f"ps2_keyboard_scancodes dropped {bytes(data).hex()} (scanning disabled)")
            return
        self.send(*data)


class Ps2Mouse:
    """A standard PS/2 mouse that answers commands and never moves."""

    STATE_FIELDS = ("queue", "status", "resolution", "sample_rate", "wrap", "pending_command",
                    "last_sent")

    def __init__(self, controller):
        self.controller = controller
        self.queue = deque()
        self.reset()

    def reset(self):
        self.queue.clear()
        self._defaults()
        self.wrap = False
        self.pending_command = None
        self.last_sent = 0

    def _defaults(self):
        self.status = 0                    # stream mode, disabled, 1:1 scaling
        self.resolution = 2                # 4 counts/mm
        self.sample_rate = 100

    def send(self, *data):
        for byte in data:
            if len(self.queue) < PS2_QUEUE_SIZE:
                self.queue.append(byte)
        self.controller.update()

    def write(self, byte):
        command, self.pending_command = self.pending_command, None
        if command == AUX_SET_RES:
            self.resolution = byte & 3
            self.send(ACK)
            return
        if command == AUX_SET_SAMPLE:
            self.sample_rate = byte
            self.send(ACK)
            return
        if self.wrap and byte not in (AUX_RESET_WRAP, AUX_RESET):
            self.send(byte)                # wrap mode echoes
            return
        if byte in (AUX_SET_RES, AUX_SET_SAMPLE):
            self.pending_command = byte
            self.send(ACK)
        elif byte == AUX_SET_SCALE11:
            self.status &= ~MOUSE_STATUS_SCALE21
            self.send(ACK)
        elif byte == AUX_SET_SCALE21:
            self.status |= MOUSE_STATUS_SCALE21
            self.send(ACK)
        elif byte == AUX_STATUS:
            self.send(ACK, self.status, self.resolution, self.sample_rate)
        elif byte == AUX_SET_STREAM:
            self.status &= ~MOUSE_STATUS_REMOTE
            self.send(ACK)
        elif byte == AUX_READ_DATA:
            self.send(ACK, 0x08, 0x00, 0x00)     # a packet with no movement, no buttons
        elif byte == AUX_RESET_WRAP:
            self.wrap = False
            self.send(ACK)
        elif byte == AUX_SET_WRAP:
            self.wrap = True
            self.send(ACK)
        elif byte == AUX_SET_REMOTE:
            self.status |= MOUSE_STATUS_REMOTE
            self.send(ACK)
        elif byte == AUX_GET_ID:
            self.send(ACK, MOUSE_ID)
        elif byte == AUX_ENABLE:
            self.status |= MOUSE_STATUS_ENABLED
            self.send(ACK)
        elif byte == AUX_DISABLE:
            self.status &= ~MOUSE_STATUS_ENABLED
            self.send(ACK)
        elif byte == AUX_SET_DEFAULT:
            self._defaults()
            self.send(ACK)
        elif byte == AUX_RESEND:
            self.send(self.last_sent)
        elif byte == AUX_RESET:
            self.reset()
            self.send(ACK, BAT_OK, MOUSE_ID)
        else:
            trace.guest_error("ps2_mouse", f"unknown command {byte:#04x}")
            self.send(RESEND)


class I8042:
    """The keyboard controller at 0x60/0x64.

    ``irq1``/``irq12`` are IrqLines to the PIC; ``reset_request()`` is called
    when the guest pulses the reset line (0xFE, or output port bit 0
    written 0); ``a20_changed(enabled)`` (optional) when output port bit 1
    changes.
    """

    STATE_FIELDS = ("status", "command_byte", "ram", "output_port", "obuf", "obuf_aux",
                    "last_read", "replies", "pending", "translate_break")

    def __init__(self, irq1, irq12, reset_request, a20_changed=None):
        self.irq1 = irq1
        self.irq12 = irq12
        self.reset_request = reset_request
        self.a20_changed = a20_changed
        self.replies = deque()             # controller replies (go before device bytes)
        self.keyboard = Ps2Keyboard(self)
        self.mouse = Ps2Mouse(self)
        self.reset()

    def reset(self):
        self.status = STATUS_A2 | STATUS_INH
        self.command_byte = CB_RESET_VALUE
        self.ram = bytearray(32)
        self.output_port = OUT_RESET_VALUE
        self.obuf = None                   # byte in the output buffer, or None
        self.obuf_aux = False
        self.last_read = 0
        self.pending = None                # a command waiting for its data byte
        self.translate_break = False
        self.replies.clear()
        self.keyboard.reset()
        self.mouse.reset()
        self.update()

    def register(self, io):
        io.add("i8042_data", DATA_PORT, 1, self._read_data, self._write_data, names=DATA_NAMES)
        io.add("i8042_cmd", COMMAND_PORT, 1, self._read_status, self._write_command,
               names=COMMAND_NAMES)

    # -- inputs from the host side -------------------------------------------------------

    def feed_scancodes(self, data):
        """Bytes the keyboard sends when keys move, in its current scan code set
        (``keyboard.scancode_set``, 2 unless the guest changed it)."""
        self.keyboard.scancodes(data)

    # -- output buffer --------------------------------------------------------------------

    def update(self):
        """Load the next byte into an empty output buffer; drive IRQ1/IRQ12."""
        if self.obuf is None:
            if self.replies:
                self.obuf, self.obuf_aux = self.replies.popleft(), False
            elif self.keyboard.queue and not self.command_byte & CB_KBD_DISABLE:
                self._load_keyboard_byte()
            elif self.mouse.queue and not self.command_byte & CB_AUX_DISABLE:
                byte = self.mouse.queue.popleft()
                self.mouse.last_sent = byte
                self.obuf, self.obuf_aux = byte, True
        full = self.obuf is not None
        self.irq1.set_level(full and not self.obuf_aux and bool(self.command_byte & CB_KBD_INT))
        self.irq12.set_level(full and self.obuf_aux and bool(self.command_byte & CB_AUX_INT))

    def _load_keyboard_byte(self):
        queue = self.keyboard.queue
        while queue:
            byte = queue.popleft()
            self.keyboard.last_sent = byte
            if not self.command_byte & CB_XLATE:
                self.obuf, self.obuf_aux = byte, False
                return
            # Translation covers every keyboard byte (replies 0xFA, 0xAA, 0xEE,
            # 0xFE and prefix 0xE0 map to themselves; the ID AB 83 becomes
            # AB 41).  F0 xx, a set 2 break, becomes one byte: set 1 code | 0x80.
            if byte == BREAK_PREFIX:
                self.translate_break = True
                continue
            byte = TRANSLATE[byte]
            if self.translate_break:
                byte |= 0x80
                self.translate_break = False
            self.obuf, self.obuf_aux = byte, False
            return

    def _reply(self, byte):
        self.replies.append(byte)
        self.update()

    # -- ports ---------------------------------------------------------------------------

    def _read_status(self, offset, size):
        status = self.status & ~(STATUS_OBF | STATUS_AUXB)
        if self.obuf is not None:
            status |= STATUS_OBF
            if self.obuf_aux:
                status |= STATUS_AUXB
        return status

    def _read_data(self, offset, size):
        if self.obuf is None:
            # An empty buffer still reads its last byte on real controllers.
            return self.last_read
        byte = self.obuf
        self.obuf = None
        self.last_read = byte
        # The line drops before the next byte (if any) raises it again: an edge per byte.
        self.irq1.set_level(False)
        self.irq12.set_level(False)
        self.update()
        return byte

    def _write_data(self, offset, size, value):
        value &= 0xFF
        self.status &= ~STATUS_A2
        command, self.pending = self.pending, None
        if command is None:
            # Data with no controller command goes to the keyboard; "sending
            # data to the keyboard reenables it" (clears command byte bit 4).
            self.command_byte &= ~CB_KBD_DISABLE
            self.keyboard.write(value)
            return
        if CMD_WRITE_RAM <= command < 0x80:
            self._write_ram(command - CMD_WRITE_RAM, value)
        elif command == CMD_WRITE_OUTPUT:
            self._write_output_port(value)
        elif command == CMD_WRITE_KBD_OBUF:
            self.keyboard.send(value)
        elif command == CMD_WRITE_AUX_OBUF:
            self.mouse.send(value)
        elif command == CMD_WRITE_AUX:
            self.command_byte &= ~CB_AUX_DISABLE
            self.mouse.write(value)
        self.update()

    def _write_ram(self, index, value):
        if index == 0:
            self.command_byte = value
            # The system flag in the status register follows command byte bit 2.
            self.status = (self.status & ~STATUS_SYS) | (value & CB_SYS)
            if trace.on.dev:
                trace.emit("dev", f"i8042_command_byte <- {value:#04x}")
        else:
            self.ram[index] = value

    def _write_command(self, offset, size, value):
        value &= 0xFF
        self.status |= STATUS_A2
        self.pending = None
        if trace.on.dev:
            trace.emit("dev", f"i8042_command {value:#04x}")
        if value in PARAMETER_COMMANDS:
            self.pending = value
        elif CMD_READ_RAM <= value < 0x40:
            index = value - CMD_READ_RAM
            self._reply(self.command_byte if index == 0 else self.ram[index])
        elif value == CMD_AUX_DISABLE:
            self.command_byte |= CB_AUX_DISABLE
        elif value == CMD_AUX_ENABLE:
            self.command_byte &= ~CB_AUX_DISABLE
        elif value in (CMD_AUX_TEST, CMD_KBD_TEST):
            self._reply(INTERFACE_TEST_PASSED)
        elif value == CMD_SELF_TEST:
            self.status |= STATUS_SYS
            self._reply(SELF_TEST_PASSED)
        elif value == CMD_KBD_DISABLE:
            self.command_byte |= CB_KBD_DISABLE
        elif value == CMD_KBD_ENABLE:
            self.command_byte &= ~CB_KBD_DISABLE
        elif value == CMD_READ_INPUT:
            self._reply(INPUT_PORT_VALUE)
        elif value == CMD_READ_OUTPUT:
            port = self.output_port & ~(OUT_OBF | OUT_AUX_OBF)
            if self.obuf is not None:
                port |= OUT_AUX_OBF if self.obuf_aux else OUT_OBF
            self._reply(port)
        elif value == CMD_A20_ON:
            self._write_output_port(self.output_port | OUT_A20)
        elif value == CMD_A20_OFF:
            self._write_output_port(self.output_port & ~OUT_A20)
        elif value == CMD_READ_TEST:
            self._reply(0x00)
        elif value >= CMD_PULSE:
            # Bits 3-0 that are 0 select output port lines to pulse low for
            # 6 us; only bit 0 (the reset line) has an effect.
            if not value & OUT_RESET:
                self._reset_pulse()
        else:
            trace.guest_error("i8042", f"unknown controller command {value:#04x}")
        self.update()

    def _write_output_port(self, value):
        old = self.output_port
        self.output_port = value
        if (old ^ value) & OUT_A20 and self.a20_changed is not None:
            self.a20_changed(bool(value & OUT_A20))
        if not value & OUT_RESET:
            # Bit 0 low asserts the system reset; the chip comes out of reset
            # with it high again.
            self.output_port |= OUT_RESET
            self._reset_pulse()

    def _reset_pulse(self):
        if trace.on.dev:
            trace.emit("dev", "i8042_reset_pulse")
        self.reset_request()

    @property
    def a20(self):
        return bool(self.output_port & OUT_A20)

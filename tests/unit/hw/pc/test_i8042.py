"""8042 keyboard controller at 0x60 (data) / 0x64 (status, command).

Values from the IBM PC/AT and PS/2 technical references: status OBF 0x01,
SYS 0x04, A2 0x08, INH 0x10, AUXB 0x20; command byte 0x20/0x60, self test
0xAA -> 0x55, keyboard interface test 0xAB -> 0x00, 0xAD/0xAE keyboard
off/on, 0xD0/0xD1 output port (A20 = bit 1), 0xD4 write to aux, 0xFE pulse
reset; keyboard replies ACK 0xFA, BAT passed 0xAA, ID AB 83.
"""

import pytest

from drivebay.hw.irq import IrqLine
from drivebay.hw.pc.i8042 import I8042


class Board:
    def __init__(self, io):
        self.irq1 = IrqLine()
        self.irq12 = IrqLine()
        self.resets = 0
        self.a20 = []
        self.kbc = I8042(self.irq1, self.irq12, self._reset, self.a20.append)
        self.kbc.register(io)

    def _reset(self):
        self.resets += 1


@pytest.fixture
def board(io):
    return Board(io)


def read_all(ports, limit=16):
    """Drain the output buffer the way SeaBIOS's i8042_flush does."""
    out = []
    for _ in range(limit):
        if not ports.inb(0x64) & 0x01:
            break
        out.append(ports.inb(0x60))
    return out


def controller_command(ports, command, *params, receive=0):
    """SeaBIOS __i8042_command: every wait must succeed on the first poll."""
    assert not ports.inb(0x64) & 0x02
    ports.outb(0x64, command)
    for p in params:
        assert not ports.inb(0x64) & 0x02
        ports.outb(0x60, p)
    out = []
    for _ in range(receive):
        assert ports.inb(0x64) & 0x01, "controller reply not ready"
        out.append(ports.inb(0x60))
    return out


def test_controller_self_test(board, ports):
    assert ports.inb(0x64) & 0x04 == 0             # SYS clear at power on
    assert controller_command(ports, 0xAA, receive=1) == [0x55]
    assert ports.inb(0x64) & 0x04                  # self test sets the system flag
    assert controller_command(ports, 0xAB, receive=1) == [0x00]
    assert controller_command(ports, 0xA9, receive=1) == [0x00]


def test_status_a2_tracks_last_port_written(board, ports):
    ports.outb(0x64, 0xAE)
    assert ports.inb(0x64) & 0x08
    ports.outb(0x60, 0xF4)
    assert not ports.inb(0x64) & 0x08
    assert ports.inb(0x64) & 0x10                  # keyboard not inhibited


def test_command_byte(board, ports):
    assert controller_command(ports, 0x20, receive=1) == [0x03]
    controller_command(ports, 0x60, 0x65)
    assert controller_command(ports, 0x20, receive=1) == [0x65]
    assert ports.inb(0x64) & 0x04                  # bit 2 shows as SYS
    controller_command(ports, 0x61, 0xA5)          # controller RAM byte 1
    assert controller_command(ports, 0x21, receive=1) == [0xA5]


def test_irq1_follows_output_buffer_and_enable(board, ports):
    controller_command(ports, 0x60, 0x00)          # interrupts off
    ports.outb(0x60, 0xEE)
    assert not board.irq1.level
    assert read_all(ports) == [0xEE]
    controller_command(ports, 0x60, 0x01)
    ports.outb(0x60, 0xEE)
    assert board.irq1.level
    ports.inb(0x60)
    assert not board.irq1.level


def test_keyboard_reset_and_identify(board, ports):
    ports.outb(0x60, 0xFF)
    assert read_all(ports) == [0xFA, 0xAA]
    ports.outb(0x60, 0xF2)
    assert read_all(ports) == [0xFA, 0xAB, 0x83]


def test_identify_with_translation(board, ports):
    controller_command(ports, 0x60, 0x41)
    ports.outb(0x60, 0xF2)
    assert read_all(ports) == [0xFA, 0xAB, 0x41]


def test_keyboard_parameter_commands(board, ports):
    ports.outb(0x60, 0xED)                         # set LEDs
    ports.outb(0x60, 0x07)
    assert read_all(ports) == [0xFA, 0xFA]
    assert board.kbc.keyboard.leds == 0x07
    ports.outb(0x60, 0xF3)                         # typematic
    ports.outb(0x60, 0x20)
    assert read_all(ports) == [0xFA, 0xFA]
    ports.outb(0x60, 0xF0)                         # get scan code set
    ports.outb(0x60, 0x00)
    assert read_all(ports) == [0xFA, 0xFA, 0x02]
    ports.outb(0x60, 0xEE)
    assert read_all(ports) == [0xEE]


def test_seabios_keyboard_init_sequence(board, ports):
    """What keyboard_init does, with ps2_command's CTR juggling around each
    command; every reply is ready on the first status poll."""
    assert read_all(ports) == []
    assert controller_command(ports, 0xAA, receive=1) == [0x55]
    assert controller_command(ports, 0xAB, receive=1) == [0x00]

    def ps2_kbd_command(command, *params, receive=0):
        controller_command(ports, 0x60, 0x30)      # both ports disabled, no IRQs
        read_all(ports)
        controller_command(ports, 0x60, 0x20)      # keyboard port enabled
        ports.outb(0x60, command)
        replies = [ports.inb(0x60)] if ports.inb(0x64) & 0x01 else []
        assert replies == [0xFA]
        for p in params:
            ports.outb(0x60, p)
            assert ports.inb(0x64) & 0x01 and ports.inb(0x60) == 0xFA
        out = []
        for _ in range(receive):
            assert ports.inb(0x64) & 0x01
            out.append(ports.inb(0x60))
        return out

    assert ps2_kbd_command(0xFF, receive=1) == [0xAA]
    ps2_kbd_command(0xF5)
    ps2_kbd_command(0xF0, 0x02)
    ps2_kbd_command(0xF4)
    controller_command(ports, 0x60, 0x61)          # AUX off, translate, keyboard IRQ
    board.kbc.feed_scancodes(b"\x1c")
    assert board.irq1.level
    assert ports.inb(0x60) == 0x1E                 # 'A' make code in set 1


def test_translation_of_scancodes(board, ports):
    controller_command(ports, 0x60, 0x40)
    board.kbc.feed_scancodes(b"\x1c\xf0\x1c\xe0\x75\xe0\xf0\x75")   # A, A up, Up, Up up
    assert read_all(ports) == [0x1E, 0x9E, 0xE0, 0x48, 0xE0, 0xC8]


def test_translation_of_the_scan_code_set_reply(board, ports):
    controller_command(ports, 0x60, 0x40)
    ports.outb(0x60, 0xF0)
    ports.outb(0x60, 0x00)
    assert read_all(ports) == [0xFA, 0xFA, 0x41]   # set 2 reported through translation


def test_scancodes_untranslated(board, ports):
    controller_command(ports, 0x60, 0x00)
    board.kbc.feed_scancodes(b"\x1c\xf0\x1c")
    assert read_all(ports) == [0x1C, 0xF0, 0x1C]


def test_scanning_disabled_drops_keys(board, ports):
    ports.outb(0x60, 0xF5)
    read_all(ports)
    board.kbc.feed_scancodes(b"\x1c")
    assert read_all(ports) == []


def test_keyboard_port_disable_holds_bytes(board, ports):
    controller_command(ports, 0x60, 0x00)
    ports.outb(0x64, 0xAD)
    board.kbc.feed_scancodes(b"\x1c")
    assert read_all(ports) == []
    ports.outb(0x64, 0xAE)
    assert read_all(ports) == [0x1C]


def test_output_port_and_a20(board, ports):
    assert controller_command(ports, 0xD0, receive=1) == [0xCF]
    controller_command(ports, 0xD1, 0xCD)          # A20 off
    assert board.a20 == [False]
    assert not board.kbc.a20
    assert controller_command(ports, 0xD0, receive=1) == [0xCD]
    controller_command(ports, 0xD1, 0xCF)
    assert board.a20 == [False, True]
    ports.outb(0x64, 0xDD)
    ports.outb(0x64, 0xDF)
    assert board.a20 == [False, True, False, True]
    assert board.resets == 0


def test_output_port_shows_buffer_full_bits(board, ports):
    ports.outb(0x64, 0xD0)
    assert ports.inb(0x60) & 0x30 == 0x00
    ports.outb(0x60, 0xEE)                         # echo byte waits in the buffer...
    ports.outb(0x64, 0xD0)                         # ...and the reply, made now, queues behind it
    assert read_all(ports) == [0xEE, 0xDF]         # bit 4: keyboard output buffer full


def test_reset_pulse(board, ports):
    ports.outb(0x64, 0xFF)                         # pulse nothing
    assert board.resets == 0
    ports.outb(0x64, 0xFE)
    assert board.resets == 1
    ports.outb(0x64, 0xF0)                         # pulses bits 3-0 including reset
    assert board.resets == 2
    controller_command(ports, 0xD1, 0xCE)          # output port bit 0 low
    assert board.resets == 3


def test_aux_device_answers(board, ports):
    controller_command(ports, 0x60, 0x03)
    controller_command(ports, 0xD4, 0xF2)          # mouse: identify
    assert ports.inb(0x64) & 0x21 == 0x21          # OBF with AUXB
    assert board.irq12.level
    assert read_all(ports) == [0xFA, 0x00]
    controller_command(ports, 0xD4, 0xFF)
    assert read_all(ports) == [0xFA, 0xAA, 0x00]
    controller_command(ports, 0xD4, 0xF3)
    controller_command(ports, 0xD4, 0x28)
    controller_command(ports, 0xD4, 0xE9)
    assert read_all(ports) == [0xFA, 0xFA, 0xFA, 0x00, 0x02, 0x28]


def test_controller_reply_and_keyboard_irq_with_write_obuf(board, ports):
    controller_command(ports, 0xD2, 0x5A)
    assert board.irq1.level
    assert read_all(ports) == [0x5A]


def test_reset_restores_power_on_state(board, ports):
    controller_command(ports, 0x60, 0x70)
    ports.outb(0x60, 0xEE)
    board.kbc.reset()
    assert read_all(ports) == []
    assert controller_command(ports, 0x20, receive=1) == [0x03]

"""8254 PIT at 0x40-0x43 and port 0x61, against the virtual clock.

The input clock is 1193182 Hz, so N counts take N * 838.0965 ns.  Control
words are the 8254 datasheet's: SC1-0 (bits 7-6), RW1-0 (5-4), M2-0 (3-1),
BCD (0): 0x34 = counter 0, LSB then MSB, mode 2; 0x36 = mode 3;
0xB0 = counter 2, mode 0; 0x00 = latch counter 0; 0xC2/0xE2/0xD2 read-back.
"""

import pytest

from drivebay.hw.irq import IrqLine
from drivebay.hw.pc.pit import Pit
from drivebay.hw.pc.portb import PortB

MS = 1_000_000


@pytest.fixture
def irq0():
    return IrqLine()


@pytest.fixture
def pit(io, clock, irq0):
    p = Pit(clock, irq0)
    p.register(io)
    PortB(p).register(io)
    return p


def program(ports, control, count, port=0x40):
    ports.outb(0x43, control)
    ports.outb(port, count & 0xFF)
    ports.outb(port, count >> 8)


def rising_edges(line):
    return sum(1 for a, b in zip([False] + line.history, line.history) if b and not a)


def test_mode2_rate_generator_interrupts_every_period(pit, ports, clock, irq0):
    program(ports, 0x34, 11932)                    # 100.0 Hz: 10.00015 ms per period
    assert irq0.level                              # OUT high in mode 2
    clock.advance_to(55 * MS)
    assert rising_edges(irq0) == 1 + 5             # the initial high, then 5 pulses
    clock.advance_to(1000 * MS)
    assert rising_edges(irq0) == 1 + 99            # the 100th falls at 1000.015 ms


def test_mode3_square_wave(pit, ports, clock, irq0):
    program(ports, 0x36, 0)                        # count 0 = 65536: 54.925 ms period
    clock.advance_to(10 * MS)
    assert irq0.level                              # first half: high for 27.46 ms
    clock.advance_to(30 * MS)
    assert not irq0.level
    clock.advance_to(60 * MS)
    assert irq0.level
    clock.advance_to(1000 * MS)
    assert rising_edges(irq0) == 1 + 18            # 18.2 Hz


def test_timers_only_when_an_output_can_change(pit, ports, clock):
    assert clock.next_deadline() is None           # nothing counts until programmed
    ports.outb(0x43, 0x34)
    assert clock.next_deadline() is None           # mode set, no count yet
    ports.outb(0x40, 0x00)
    ports.outb(0x40, 0x10)                         # 4096 counts = 3.433 ms
    assert clock.next_deadline() == 3432838        # ceil(4096 / 1193182 s) = 3432837.57 ns
    program(ports, 0xB0, 0x100, port=0x42)         # counter 2 drives no line
    assert clock.next_deadline() == 3432838


def test_mode0_out_goes_high_at_terminal_count_and_stays(pit, ports, clock, irq0):
    program(ports, 0x30, 1000)                     # mode 0: 838.1 us
    assert not irq0.level
    clock.advance_to(838_000)
    assert not irq0.level
    clock.advance_to(839_000)
    assert irq0.level
    clock.advance_to(100 * MS)
    assert irq0.history == [True]
    assert clock.next_deadline() is None


def test_mode4_strobe_pulses_once(pit, ports, clock, irq0):
    program(ports, 0x38, 100)
    clock.advance_to(10 * MS)
    assert irq0.history == [True, False, True]


def test_counter_latch_freezes_the_read_value(pit, ports, clock):
    program(ports, 0x34, 1000)
    clock.advance_to(83_810)                       # 100 counts
    ports.outb(0x43, 0x00)                         # latch counter 0
    clock.advance_to(200_000)
    assert ports.inb(0x40) == 0x84                 # 900 = 0x0384
    assert ports.inb(0x40) == 0x03
    lsb = ports.inb(0x40)                          # unlatched: the live count
    msb = ports.inb(0x40)
    assert lsb | msb << 8 == 1000 - 238            # 200 us = 238.6 counts


def test_read_back_status_and_count(pit, ports, clock):
    ports.outb(0x43, 0x34)
    ports.outb(0x43, 0xE2)                         # read-back: status of counter 0
    assert ports.inb(0x40) == 0x80 | 0x40 | 0x34   # OUT high, NULL COUNT, RW=3 mode 2
    ports.outb(0x40, 0xE8)
    ports.outb(0x40, 0x03)
    clock.advance_to(83_810)
    ports.outb(0x43, 0xC2)                         # read-back: count and status
    clock.advance_to(1 * MS)
    assert ports.inb(0x40) == 0xB4                 # status first, count loaded
    assert ports.inb(0x40) == 0x84
    assert ports.inb(0x40) == 0x03


def test_lsb_only_access(pit, ports, clock):
    ports.outb(0x43, 0x14)                         # counter 0, LSB only, mode 2
    ports.outb(0x40, 200)
    clock.advance_to(83_810)
    assert ports.inb(0x40) == 100


def test_bcd_counting(pit, ports, clock):
    program(ports, 0x35, 0x1000)                   # mode 2, BCD: 1000 decimal
    clock.advance_to(83_810)
    assert ports.inb(0x40) == 0x00
    assert ports.inb(0x40) == 0x09                 # 900 in BCD


def test_seabios_tsc_calibration_pattern(pit, ports, clock):
    orig = ports.inb(0x61)
    ports.outb(0x61, (orig & ~0x02) | 0x01)        # gate 2 on, speaker off
    program(ports, 0xB0, 0x0800, port=0x42)        # 2048 counts = 1716.4 us
    assert not ports.inb(0x61) & 0x20
    clock.advance_to(1_716_000)
    assert not ports.inb(0x61) & 0x20
    clock.advance_to(1_717_000)
    assert ports.inb(0x61) & 0x20
    ports.outb(0x61, orig)


def test_gate_low_holds_counter2(pit, ports, clock):
    ports.outb(0x61, 0x00)
    program(ports, 0xB0, 0x0800, port=0x42)
    clock.advance_to(5 * MS)
    assert not ports.inb(0x61) & 0x20              # not counting without GATE2
    ports.outb(0x61, 0x01)
    clock.advance_to(6 * MS)
    assert not ports.inb(0x61) & 0x20
    clock.advance_to(7 * MS)
    assert ports.inb(0x61) & 0x20


def test_mode2_gate_low_forces_out_high_and_restarts(pit, ports, clock):
    ports.outb(0x61, 0x01)
    program(ports, 0xB4, 1000, port=0x42)          # counter 2, mode 2
    clock.advance_to(83_810)
    ports.outb(0x61, 0x00)
    ports.outb(0x43, 0x80)                         # latch counter 2
    assert ports.inb(0x42) | ports.inb(0x42) << 8 == 900
    assert ports.inb(0x61) & 0x20
    ports.outb(0x61, 0x01)                         # rising GATE reloads
    ports.outb(0x43, 0x80)
    assert ports.inb(0x42) | ports.inb(0x42) << 8 == 1000


def test_port61_refresh_toggle_and_writable_bits(pit, ports):
    first = ports.inb(0x61) & 0x10
    second = ports.inb(0x61) & 0x10
    assert first != second
    ports.outb(0x61, 0xFF)
    assert ports.inb(0x61) & 0x0F == 0x0F          # bits 7-4 are status, not stored
    assert not ports.inb(0x61) & 0xC0


def test_control_register_reads_float(pit, ports):
    assert ports.inb(0x43) == 0xFF


def test_reset_stops_counting(pit, ports, clock, irq0):
    program(ports, 0x34, 1000)
    pit.reset()
    assert clock.next_deadline() is None
    assert not irq0.level

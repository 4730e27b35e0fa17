"""16550A UART at COM1 (0x3F8).

Offsets and bits from the NS PC16550D datasheet: 0 RBR/THR/DLL, 1 IER/DLM,
2 IIR/FCR, 3 LCR (DLAB 0x80), 4 MCR (OUT2 0x08, LOOP 0x10), 5 LSR (DR 0x01,
OE 0x02, THRE 0x20, TEMT 0x40), 6 MSR, 7 SCR.  IIR codes: 0x01 none, 0x06
line status, 0x04 data available, 0x0C character timeout, 0x02 THR empty,
0x00 modem status; 0xC0 when FIFOs are enabled.
"""

import pytest

from drivebay.hw.irq import IrqLine
from drivebay.hw.pc.uart import Uart16550

COM1 = 0x3F8


@pytest.fixture
def irq4():
    return IrqLine()


@pytest.fixture
def sent():
    return []


@pytest.fixture
def uart(io, irq4, sent):
    u = Uart16550(irq4, sent.append)
    u.register(io)
    return u


def reg(ports, offset):
    return ports.inb(COM1 + offset)


def setreg(ports, offset, value):
    ports.outb(COM1 + offset, value)


def output(sent):
    return b"".join(sent)


def test_reset_values(uart, ports):
    assert reg(ports, 1) == 0x00                   # IER
    assert reg(ports, 2) == 0x01                   # IIR: no interrupt
    assert reg(ports, 3) == 0x00                   # LCR
    assert reg(ports, 4) == 0x00                   # MCR
    assert reg(ports, 5) == 0x60                   # LSR: THRE | TEMT
    assert reg(ports, 6) & 0xF0 == 0xB0            # DCD, DSR, CTS asserted by the console


def test_divisor_latch(uart, ports):
    setreg(ports, 3, 0x80)                         # DLAB
    setreg(ports, 0, 0x01)                         # 115200 baud
    setreg(ports, 1, 0x00)
    assert reg(ports, 0) == 0x01
    assert reg(ports, 1) == 0x00
    setreg(ports, 3, 0x03)                         # 8N1, DLAB off
    assert reg(ports, 1) == 0x00                   # IER again, untouched
    assert uart.divisor == 1
    setreg(ports, 7, 0x5A)
    assert reg(ports, 7) == 0x5A


def test_transmit_goes_to_sink(uart, ports, sent):
    setreg(ports, 3, 0x03)
    for byte in b"SeaBIOS":
        assert reg(ports, 5) & 0x20                # THRE: ready for a byte
        setreg(ports, 0, byte)
    assert output(sent) == b"SeaBIOS"
    assert reg(ports, 5) == 0x60


def test_word_length_masks_transmitted_bits(uart, ports, sent):
    setreg(ports, 3, 0x02)                         # 7 data bits
    setreg(ports, 0, 0xFF)
    assert output(sent) == b"\x7f"


def test_thre_interrupt_on_ier_write_and_after_transmit(uart, ports, irq4):
    setreg(ports, 4, 0x08)                         # OUT2: IRQ driver on
    setreg(ports, 1, 0x02)                         # ETBEI with THR empty: at once
    assert irq4.level
    assert reg(ports, 2) == 0x02
    assert not irq4.level                          # reading IIR cleared it
    assert reg(ports, 2) == 0x01
    setreg(ports, 0, ord("x"))
    assert irq4.level                              # THR empty again
    setreg(ports, 1, 0x00)
    assert not irq4.level


def test_out2_gates_the_irq_line(uart, ports, irq4):
    setreg(ports, 1, 0x02)
    assert reg(ports, 2) == 0x02                   # pending inside the chip...
    setreg(ports, 1, 0x00)
    setreg(ports, 1, 0x02)
    assert not irq4.level                          # ...but OUT2 is 0: the line stays low


def test_receive_feed(uart, ports, irq4):
    setreg(ports, 4, 0x08)
    setreg(ports, 1, 0x01)                         # ERBFI
    uart.feed(b"ok")
    assert irq4.level
    assert reg(ports, 2) == 0x04
    assert reg(ports, 5) & 0x01
    assert reg(ports, 0) == ord("o")
    assert reg(ports, 0) == ord("k")
    assert not reg(ports, 5) & 0x01
    assert not irq4.level


def test_feed_is_never_lost(uart, ports):
    setreg(ports, 2, 0x07)                         # FIFO on, reset both
    data = bytes(range(40))
    uart.feed(data)
    got = bytearray()
    while reg(ports, 5) & 0x01:
        got.append(reg(ports, 0))
    assert bytes(got) == data
    assert not reg(ports, 5) & 0x02                # no overrun


def test_fifo_trigger_level_and_character_timeout(uart, ports):
    setreg(ports, 2, 0xC7)                         # FIFO on, trigger 14
    setreg(ports, 1, 0x01)
    assert reg(ports, 2) & 0xC0 == 0xC0
    uart.feed(b"abc")
    assert reg(ports, 2) == 0xCC                   # below trigger: character timeout
    uart.feed(b"defghijklmn")
    assert reg(ports, 2) == 0xC4                   # 14 bytes: data available
    setreg(ports, 2, 0x41)                         # trigger 4
    assert reg(ports, 2) == 0xC4


def test_fifo_enable_change_clears_fifos(uart, ports):
    setreg(ports, 2, 0x01)
    uart.feed(b"xy")
    setreg(ports, 2, 0x00)
    assert not reg(ports, 5) & 0x01


def test_iir_priorities(uart, ports, sent):
    setreg(ports, 3, 0x03)                         # 8 data bits
    setreg(ports, 4, 0x18)                         # loopback: CTS, DSR fall (they follow RTS, DTR)
    setreg(ports, 1, 0x0F)                         # every source enabled; THR is empty
    assert reg(ports, 2) == 0x02                   # THR empty outranks modem status
    assert reg(ports, 2) == 0x00                   # (the IIR read cleared THRE)
    assert reg(ports, 6) & 0x0F == 0x03            # MSR: delta CTS, delta DSR...
    assert reg(ports, 2) == 0x01                   # ...cleared by reading it
    setreg(ports, 0, 0x41)
    setreg(ports, 0, 0x42)                         # no FIFO: the second byte overruns
    assert reg(ports, 2) == 0x06                   # line status first
    assert reg(ports, 5) & 0x03 == 0x03            # DR | OE; reading LSR clears OE
    assert reg(ports, 2) == 0x04                   # then received data
    assert reg(ports, 0) == 0x42
    assert reg(ports, 2) == 0x02                   # then THR empty
    assert reg(ports, 2) == 0x01
    assert sent == []                              # loopback keeps SOUT quiet


def test_loopback_modem_lines(uart, ports):
    setreg(ports, 4, 0x1F)                         # loop with DTR, RTS, OUT1, OUT2
    assert reg(ports, 6) & 0xF0 == 0xF0            # CTS, DSR, RI, DCD
    setreg(ports, 4, 0x10)
    msr = reg(ports, 6)
    assert msr & 0xF0 == 0x00
    assert msr & 0x0F == 0x0F                      # DCTS, DDSR, TERI (RI fell), DDCD


def test_loopback_holds_fed_bytes_until_it_ends(uart, ports):
    setreg(ports, 4, 0x10)
    uart.feed(b"z")
    assert not reg(ports, 5) & 0x01
    setreg(ports, 4, 0x00)
    assert reg(ports, 0) == ord("z")


def test_loopback_gates_the_irq_line(uart, ports, irq4):
    setreg(ports, 4, 0x18)
    setreg(ports, 1, 0x02)
    assert not irq4.level                          # OUT2 is forced inactive in loopback


def test_wide_access_splits_into_bytes(uart, ports):
    setreg(ports, 3, 0x80)
    ports.outw(COM1, 0x0180)                       # DLL = 0x80, DLM = 0x01
    assert uart.divisor == 0x0180
    assert ports.inw(COM1) == 0x0180

"""System Control Port A (0x92): bit 1 A20 gate, bit 0 fast reset on 0 -> 1."""

from drivebay.hw.pc.port92 import Port92


def make(io):
    calls = {"resets": 0, "a20": []}

    def reset():
        calls["resets"] += 1
    dev = Port92(reset, calls["a20"].append)
    dev.register(io)
    return dev, calls


def test_a20_gate(io, ports):
    dev, calls = make(io)
    assert ports.inb(0x92) == 0x00
    ports.outb(0x92, 0x02)
    assert ports.inb(0x92) == 0x02
    assert dev.a20
    ports.outb(0x92, 0x02)
    ports.outb(0x92, 0x00)
    assert calls["a20"] == [True, False]
    assert calls["resets"] == 0


def test_fast_reset_on_rising_bit0(io, ports):
    dev, calls = make(io)
    ports.outb(0x92, 0x03)
    assert calls["resets"] == 1
    ports.outb(0x92, 0x03)                         # no new edge
    assert calls["resets"] == 1
    ports.outb(0x92, 0x02)
    ports.outb(0x92, 0x03)
    assert calls["resets"] == 2


def test_reset_turns_a20_off(io, ports):
    dev, calls = make(io)
    ports.outb(0x92, 0x02)
    dev.reset()
    assert ports.inb(0x92) == 0x00
    assert calls["a20"] == [True, False]

"""The ISA devices together, wired as a PC machine wires them: the port map
has no overlaps, and PIT ticks reach the CPU through the 8259 and LINT0."""

from drivebay.hw.irq import IrqLine
from drivebay.hw.memory import MmioSpace
from drivebay.hw.pc.debug_exit import DebugExit
from drivebay.hw.pc.debugcon import DebugCon
from drivebay.hw.pc.fw_cfg import FwCfg
from drivebay.hw.pc.i8042 import I8042
from drivebay.hw.pc.lapic import Lapic
from drivebay.hw.pc.pic import PicPair
from drivebay.hw.pc.pit import Pit
from drivebay.hw.pc.port92 import Port92
from drivebay.hw.pc.portb import PortB
from drivebay.hw.pc.rtc import Rtc
from drivebay.hw.pc.uart import Uart16550

MS = 1_000_000


def build(io, clock):
    mmio = MmioSpace()
    pic = PicPair()
    lapic = Lapic(clock, extint=pic)
    pic.intr.connect(lapic.lint0)
    irq = [IrqLine(pic.input(n), name=f"irq{n}") for n in range(16)]
    pit = Pit(clock, irq[0])
    devices = [pic, pit, PortB(pit), Rtc(clock, irq[8], lambda: 0),
               Uart16550(irq[4], lambda data: None), I8042(irq[1], irq[12], lambda: None),
               Port92(lambda: None), DebugCon(lambda data: None), DebugExit(lambda v: None),
               FwCfg()]
    for dev in devices:
        dev.register(io)
    lapic.register(io, mmio)
    return pic, lapic


def test_port_map_and_timer_interrupt_chain(io, ports, clock):
    pic, lapic = build(io, clock)
    assert {r.name: r.base for r in io.regions} == {
        "pic_master": 0x20, "pic_slave": 0xA0, "elcr": 0x4D0, "pit": 0x40, "portb": 0x61,
        "rtc": 0x70, "com1": 0x3F8, "i8042_data": 0x60, "i8042_cmd": 0x64, "port92": 0x92,
        "debugcon": 0x402, "debug_exit": 0x501, "fw_cfg": 0x510}
    for port, value in ((0x20, 0x11), (0x21, 0x08), (0x21, 0x04), (0x21, 0x01),
                        (0xA0, 0x11), (0xA1, 0x70), (0xA1, 0x02), (0xA1, 0x01),
                        (0x21, 0xFE), (0xA1, 0xFF)):
        ports.outb(port, value)
    ports.outb(0x43, 0x34)                         # PIT counter 0, mode 2, 1 ms
    ports.outb(0x40, 0xA9)
    ports.outb(0x40, 0x04)                         # 1193 counts
    ticks = 0
    for step in range(1, 11):
        clock.advance_to(step * MS + MS // 2)
        assert lapic.intr.level
        assert lapic.acknowledge() == 0x08
        ports.outb(0x20, 0x20)
        ticks += 1
    assert ticks == 10
    assert not lapic.pending()


def test_declared_state_fields_exist(io, clock):
    """Every device names its snapshot state; the names must be attributes."""
    pic, lapic = build(io, clock)
    devices = {r.read.__self__ for r in io.regions if hasattr(r.read, "__self__")}
    devices |= {pic.master, pic.slave, lapic}
    for dev in list(devices):
        devices |= set(getattr(dev, "counters", ()))
        for part in ("keyboard", "mouse"):
            if hasattr(dev, part):
                devices.add(getattr(dev, part))
    assert len(devices) >= 16
    for dev in devices:
        for field in dev.STATE_FIELDS:
            assert hasattr(dev, field), f"{type(dev).__name__}.{field}"

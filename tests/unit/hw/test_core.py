"""hw's shared plumbing: guest memory bounds, address spaces, IRQ lines, the clock."""

import pytest

from drivebay.hw.clock import VirtualClock
from drivebay.hw.dma import DmaError, GuestMemory
from drivebay.hw.irq import IrqLine
from drivebay.hw.memory import IoSpace, MmioSpace


def test_guest_memory_views_share_bytes():
    ram = bytearray(4096)
    mem = GuestMemory(ram)
    view = mem.view(100, 4)
    view[:] = b"abcd"
    assert ram[100:104] == b"abcd"
    mem.write_u32(200, 0x11223344)
    assert ram[200:204] == bytes.fromhex("44332211")
    assert mem.read_u64(200) == 0x11223344


@pytest.mark.parametrize("address,length", [(4095, 2), (4096, 1), (-1, 1), (0, 4097), (1 << 40, 1)])
def test_dma_outside_ram_fails_that_dma(address, length):
    mem = GuestMemory(bytearray(4096))
    with pytest.raises(DmaError) as info:
        mem.view(address, length)
    assert info.value.address == address and info.value.length == length
    with pytest.raises(DmaError):
        mem.write(address, bytes(length))


def test_scatter_gather_checks_every_segment_first():
    ram = bytearray(4096)
    mem = GuestMemory(ram)
    with pytest.raises(DmaError):
        mem.sg_views([(0, 16), (4090, 16)])
    views = mem.sg_views([(0, 2), (10, 3)])
    views[1][:] = b"xyz"
    assert ram[10:13] == b"xyz"


def test_io_space_routes_and_floats_high():
    io = IoSpace()
    seen = []
    io.add("dev", 0x1F0, 8, lambda off, size: 0x40 + off, lambda off, size, v: seen.append((off, size, v)))
    assert io.read(0x1F7, 1) == 0x47
    assert io.read(0x1F8, 1) == 0xFF          # nothing there: the bus floats high
    assert io.read(0x300, 4) == 0xFFFFFFFF
    io.write(0x1F2, 2, 0x12345)
    assert seen == [(2, 2, 0x2345)]           # masked to the access size
    with pytest.raises(ValueError, match="overlaps dev"):
        io.add("other", 0x1F4, 4, None, None)


def test_mmio_space_notifies_listeners():
    mmio = MmioSpace()
    events = []
    mmio.listeners.append(lambda event, region: events.append((event, region.name)))
    r = mmio.add("bar", 0xFEB00000, 0x1000, lambda o, s: o, lambda o, s, v: None)
    assert mmio.read(0xFEB00010, 4) == 0x10
    mmio.remove(r)
    assert events == [("add", "bar"), ("remove", "bar")]
    assert mmio.read(0xFEB00010, 4) == 0xFFFFFFFF


def test_irq_line_reports_changes_only():
    levels = []
    line = IrqLine(levels.append, name="t")
    line.raise_()
    line.raise_()
    line.lower()
    line.pulse()
    assert levels == [True, False, True, False]


def test_clock_fires_timers_in_order_and_cancels():
    clock = VirtualClock()
    fired = []
    a = clock.timer(lambda: fired.append(("a", clock.now_ns())))
    b = clock.timer(lambda: fired.append(("b", clock.now_ns())))
    c = clock.timer(lambda: fired.append("c"))
    a.mod(300)
    b.mod(100)
    c.mod(200)
    c.cancel()
    assert clock.next_deadline() == 100
    clock.advance_to(1000)
    assert fired == [("b", 100), ("a", 300)]
    assert clock.now_ns() == 1000
    a.mod(1500)
    a.mod(1200)                                  # re-arming replaces the old deadline
    clock.advance_to(2000)
    assert fired[-1] == ("a", 1200) and len(fired) == 3

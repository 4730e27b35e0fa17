"""8259A pair and ELCR, driven through ports 0x20/0x21, 0xA0/0xA1, 0x4D0/0x4D1.

Command values are the 8259A datasheet's: ICW1 0x11 (edge, cascade, ICW4
needed), ICW4 0x01 (8086 mode), OCW3 0x0A/0x0B (read IRR/ISR), 0x0C (poll),
OCW2 0x20 (non-specific EOI), 0x60+n (specific EOI), 0xC0+n (set priority).
"""

import pytest

from drivebay.hw.irq import IrqLine
from drivebay.hw.pc.pic import PicPair


@pytest.fixture
def pic(io):
    p = PicPair(IrqLine())
    p.register(io)
    return p


def init_pc(ports, master_base=0x08, slave_base=0x70, icw4=0x01):
    """The BIOS sequence: ICW1-ICW4 to both chips, everything unmasked."""
    ports.outb(0x20, 0x11)
    ports.outb(0x21, master_base)
    ports.outb(0x21, 0x04)          # ICW3: slave on IR2
    ports.outb(0x21, icw4)
    ports.outb(0xA0, 0x11)
    ports.outb(0xA1, slave_base)
    ports.outb(0xA1, 0x02)          # ICW3: slave ID 2
    ports.outb(0xA1, icw4)


def lines(pic):
    return [IrqLine(pic.input(n)) for n in range(16)]


def irr(ports, base=0x20):
    ports.outb(base, 0x0A)
    return ports.inb(base)


def isr(ports, base=0x20):
    ports.outb(base, 0x0B)
    return ports.inb(base)


def test_init_sequence_clears_imr_and_sets_vector_base(pic, ports):
    ports.outb(0x21, 0xFF)
    init_pc(ports)
    assert ports.inb(0x21) == 0x00                 # ICW1 clears the IMR
    assert ports.inb(0xA1) == 0x00
    ports.outb(0x21, 0xB8)
    assert ports.inb(0x21) == 0xB8
    irq = lines(pic)
    irq[1].pulse()
    assert pic.pending() and pic.intr.level
    assert pic.acknowledge() == 0x09


def test_edge_request_moves_from_irr_to_isr(pic, ports):
    init_pc(ports)
    irq = lines(pic)
    irq[3].pulse()
    assert irr(ports) == 0x08
    assert pic.acknowledge() == 0x0B
    assert irr(ports) == 0x00
    assert isr(ports) == 0x08
    assert not pic.pending()
    ports.outb(0x20, 0x20)                         # non-specific EOI
    assert isr(ports) == 0x00


def test_mask_holds_request_until_unmasked(pic, ports):
    init_pc(ports)
    ports.outb(0x21, 0x10)
    irq = lines(pic)
    irq[4].pulse()
    assert not pic.pending()
    assert not pic.intr.level
    assert irr(ports) == 0x10                      # IRR latches even when masked
    ports.outb(0x21, 0x00)
    assert pic.pending()
    assert pic.acknowledge() == 0x0C


def test_fixed_priority_and_nesting(pic, ports):
    init_pc(ports)
    irq = lines(pic)
    irq[5].pulse()
    irq[3].pulse()
    assert pic.acknowledge() == 0x0B               # IR3 before IR5
    assert not pic.pending()                       # IR5 waits for IR3's EOI
    irq[0].pulse()
    assert pic.pending()                           # IR0 outranks IR3 in service
    assert pic.acknowledge() == 0x08
    assert isr(ports) == 0x09
    ports.outb(0x20, 0x20)                         # clears IR0, the highest
    assert isr(ports) == 0x08
    ports.outb(0x20, 0x63)                         # specific EOI for IR3
    assert isr(ports) == 0x00
    assert pic.acknowledge() == 0x0D


def test_set_priority_rotates_order(pic, ports):
    init_pc(ports)
    irq = lines(pic)
    ports.outb(0x20, 0xC3)                         # IR3 lowest, so IR4 highest
    irq[1].pulse()
    irq[5].pulse()
    assert pic.acknowledge() == 0x0D               # IR5 now outranks IR1


def test_auto_eoi_leaves_isr_clear(pic, ports):
    init_pc(ports, icw4=0x03)
    irq = lines(pic)
    irq[6].pulse()
    assert pic.acknowledge() == 0x0E
    assert isr(ports) == 0x00


def test_poll_command_acknowledges(pic, ports):
    init_pc(ports)
    irq = lines(pic)
    irq[6].pulse()
    ports.outb(0x20, 0x0C)
    assert ports.inb(0x20) == 0x86                 # I=1, W2-W0 = 6
    assert isr(ports) == 0x40
    ports.outb(0x20, 0x0C)
    assert ports.inb(0x20) == 0x00                 # nothing requesting


def test_cascade_through_ir2(pic, ports):
    init_pc(ports)
    irq = lines(pic)
    irq[12].pulse()
    assert pic.pending()
    assert irr(ports) & 0x04
    assert pic.acknowledge() == 0x74
    assert isr(ports) == 0x04
    assert isr(ports, 0xA0) == 0x10
    irq[14].pulse()
    assert not pic.pending()                       # master IR2 still in service
    ports.outb(0xA0, 0x20)
    ports.outb(0x20, 0x20)
    assert pic.acknowledge() == 0x76


def test_slave_mask(pic, ports):
    init_pc(ports)
    ports.outb(0xA1, 0x01)
    irq = lines(pic)
    irq[8].pulse()
    assert not pic.pending()
    ports.outb(0xA1, 0x00)
    assert pic.acknowledge() == 0x70


def test_elcr_write_masks(pic, ports):
    ports.outb(0x4D0, 0xFF)
    ports.outb(0x4D1, 0xFF)
    assert ports.inb(0x4D0) == 0xF8                # IRQ0-2 stay edge
    assert ports.inb(0x4D1) == 0xDE                # IRQ8 and IRQ13 stay edge
    assert ports.inw(0x4D0) == 0xDEF8


def test_level_triggered_request_follows_the_wire(pic, ports):
    init_pc(ports)
    ports.outb(0x4D0, 0x20)                        # IRQ5 level
    irq = lines(pic)
    irq[5].raise_()
    assert pic.acknowledge() == 0x0D
    assert irr(ports) == 0x20                      # a level request stays in IRR
    ports.outb(0x20, 0x20)
    assert pic.pending()                           # still asserted: requests again
    irq[5].lower()
    assert not pic.pending()
    assert irr(ports) == 0x00


def test_level_triggered_slave_input_requests_again_after_eoi(pic, ports):
    init_pc(ports)
    ports.outb(0x4D1, 0x04)                        # IRQ10 level
    irq = lines(pic)
    irq[10].raise_()
    assert pic.acknowledge() == 0x72
    ports.outb(0xA0, 0x20)
    ports.outb(0x20, 0x20)
    assert pic.acknowledge() == 0x72               # the slave's INT rose again: new IR2 edge


def test_spurious_irq7_when_request_vanishes(pic, ports):
    init_pc(ports)
    ports.outb(0x4D0, 0x20)                        # IRQ5 level
    irq = lines(pic)
    irq[5].raise_()
    assert pic.pending()
    irq[5].lower()
    assert pic.acknowledge() == 0x0F               # IR7 of the master
    assert isr(ports) == 0x00                      # a spurious IR7 sets no ISR bit


def test_spurious_irq15_on_the_slave(pic, ports):
    init_pc(ports)
    ports.outb(0x4D1, 0x08)                        # IRQ11 level
    irq = lines(pic)
    irq[11].raise_()
    irq[11].lower()                                # gone, but the master latched IR2's edge
    assert pic.pending()
    assert pic.acknowledge() == 0x77
    assert isr(ports, 0xA0) == 0x00
    assert isr(ports) == 0x04                      # the master acknowledged IR2


def test_edge_input_needs_new_rising_edge_after_icw1(pic, ports):
    init_pc(ports)
    irq = lines(pic)
    irq[4].raise_()
    init_pc(ports)
    assert not pic.pending()
    irq[4].lower()
    irq[4].raise_()
    assert pic.acknowledge() == 0x0C


def test_intr_line_follows_pending(pic, ports):
    init_pc(ports)
    irq = lines(pic)
    irq[1].pulse()
    pic.acknowledge()
    ports.outb(0x20, 0x20)
    assert pic.intr.history == [True, False]


def test_input_range():
    with pytest.raises(ValueError):
        PicPair().input(16)

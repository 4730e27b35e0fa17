"""INTx (PCI 3.0 §2.2.6, §6.2.2-3), the board's PIRQ swizzle, PIIX3 PIRQ routing, line sharing."""

import pytest

from drivebay.hw.pci.bus import pirq_of
from drivebay.hw.pci.device import PciIdentity
from drivebay.hw.pci.piix3 import Piix3


def probe_with_pin(pin):
    return dict(identity=PciIdentity(vendor_id=0x1234, device_id=0x5678, class_code=0x018000,
                                     interrupt_pin=pin))


@pytest.fixture
def board(pci):
    """The bench with a PIIX3 at 00:01.0 recording ISA IRQ changes."""
    pci.isa = []
    pci.piix3 = pci.bus.plug(Piix3(isa_irq=lambda irq, level: pci.isa.append((irq, level))), 1)
    return pci


def route(pci, pirq_values):
    """Program PIRQRC[A:D] (0x60-0x63 of 00:01.0) the way SeaBIOS does: one byte each."""
    for n, value in enumerate(pirq_values):
        pci.cfg_write(1, 0, 0x60 + n, 1, value)


def test_interrupt_status_and_disable(board):
    probe = board.plug_probe(slot=3)              # INTA# of slot 3 -> PIRQC#
    route(board, [0x0A, 0x0A, 0x0B, 0x0B])
    probe.set_irq(True)
    assert board.cfg_read(3, 0, 0x06, 2) & 0x0008 # STATUS.Interrupt Status
    assert board.isa == [(11, True)]
    board.cfg_write(3, 0, 0x04, 2, 0x0400)        # COMMAND.Interrupt Disable
    assert board.isa[-1] == (11, False)
    assert board.cfg_read(3, 0, 0x06, 2) & 0x0008 # status is unaffected by the disable
    board.cfg_write(3, 0, 0x04, 2, 0x0000)
    assert board.isa[-1] == (11, True)
    probe.set_irq(False)
    assert board.isa[-1] == (11, False)
    assert board.cfg_read(3, 0, 0x06, 2) & 0x0008 == 0


@pytest.mark.parametrize("slot, pin, pirq", [
    (0, 1, 3),    # slot 0 INTA# -> PIRQD#
    (1, 1, 0),    # slot 1 INTA# -> PIRQA#
    (1, 4, 3),
    (2, 1, 1),
    (3, 1, 2),
    (3, 2, 3),
    (4, 1, 3),
    (5, 1, 0),
    (5, 4, 3),
    (31, 2, 3),
])
def test_slot_pin_to_pirq_swizzle(pci, slot, pin, pirq):
    # The i440FX/PIIX3 board wiring SeaBIOS assumes: PIRQ[(slot - 1 + pin - 1) & 3].
    assert pirq_of(slot, pin) == pirq
    probe = pci.plug_probe(slot=slot, **probe_with_pin(pin))
    probe.set_irq(True)
    assert [pci.bus.pirq_level(n) for n in range(4)] == [n == pirq for n in range(4)]


def test_routing_disabled_at_reset(board):
    assert board.cfg_read(1, 0, 0x60) == 0x80808080
    probe = board.plug_probe(slot=3)
    probe.set_irq(True)
    assert board.bus.pirq_level(2)
    assert board.isa == []


def test_two_devices_share_a_pirq(board):
    route(board, [0x80, 0x80, 0x0B, 0x80])
    a = board.plug_probe(slot=3)                  # INTA# -> PIRQC#
    b = board.plug_probe(slot=7)                  # (7 - 1 + 0) & 3 = 2: PIRQC# as well
    a.set_irq(True)
    b.set_irq(True)
    assert board.isa == [(11, True)]
    a.set_irq(False)
    assert board.bus.pirq_level(2) and board.piix3.isa_level(11)
    assert board.isa == [(11, True)]
    b.set_irq(False)
    assert board.isa == [(11, True), (11, False)]


def test_two_pirqs_routed_to_one_isa_irq(board):
    route(board, [0x0A, 0x0A, 0x0B, 0x0B])        # SeaBIOS's pci_irqs {10, 10, 11, 11}
    a = board.plug_probe(slot=1, function=1, **probe_with_pin(1))     # PIRQA#
    b = board.plug_probe(slot=2)                  # PIRQB#
    a.set_irq(True)
    b.set_irq(True)
    a.set_irq(False)
    assert board.isa == [(10, True)]
    b.set_irq(False)
    assert board.isa == [(10, True), (10, False)]


def test_rerouting_moves_an_asserted_line(board):
    route(board, [0x80, 0x80, 0x0B, 0x80])
    probe = board.plug_probe(slot=3)
    probe.set_irq(True)
    board.cfg_write(1, 0, 0x62, 1, 0x05)          # PIRQC# -> IRQ5
    assert board.isa == [(11, True), (11, False), (5, True)]
    board.cfg_write(1, 0, 0x62, 1, 0x85)          # bit 7: routing disabled
    assert board.isa[-1] == (5, False)


def test_repeated_requests_make_no_edges(board):
    # A device re-driving the level it already drives changes no line; STATUS
    # and the Interrupt Disable gate still follow.
    route(board, [0x80, 0x80, 0x0B, 0x80])
    probe = board.plug_probe(slot=3)
    probe.set_irq(True)
    probe.set_irq(True)
    assert board.isa == [(11, True)]
    board.cfg_write(3, 0, 0x04, 2, 0x0400)        # COMMAND.Interrupt Disable
    probe.set_irq(True)
    assert board.isa == [(11, True), (11, False)]
    assert board.cfg_read(3, 0, 0x06, 2) & 0x0008
    board.cfg_write(3, 0, 0x04, 2, 0x0000)
    probe.set_irq(False)
    probe.set_irq(False)
    assert board.isa == [(11, True), (11, False), (11, True), (11, False)]
    assert board.cfg_read(3, 0, 0x06, 2) & 0x0008 == 0


def test_rerouted_line_drops_on_its_new_irq(board):
    route(board, [0x80, 0x80, 0x0B, 0x0B])
    a = board.plug_probe(slot=3)                  # PIRQC#
    b = board.plug_probe(slot=4)                  # PIRQD#
    a.set_irq(True)
    b.set_irq(True)
    board.cfg_write(1, 0, 0x62, 1, 0x05)          # PIRQC# -> IRQ5; PIRQD# keeps IRQ11 up
    assert board.isa == [(11, True), (5, True)]
    a.set_irq(False)
    assert board.isa[-1] == (5, False) and board.piix3.isa_level(11)
    b.set_irq(False)
    assert board.isa == [(11, True), (5, True), (5, False), (11, False)]


@pytest.mark.parametrize("reserved", [0x00, 0x01, 0x02, 0x08, 0x0D])
def test_reserved_irq_values_route_nowhere(board, reserved):
    route(board, [0x80, 0x80, reserved, 0x80])
    probe = board.plug_probe(slot=3)
    probe.set_irq(True)
    assert board.isa == []


def test_pirqrc_reserved_bits_read_zero(board):
    board.cfg_write(1, 0, 0x60, 1, 0xFF)
    assert board.cfg_read(1, 0, 0x60, 1) == 0x8F


def test_router_plugged_after_devices_sees_current_levels(pci):
    probe = pci.plug_probe(slot=3)
    probe.set_irq(True)
    isa = []
    piix3 = pci.bus.plug(Piix3(isa_irq=lambda irq, level: isa.append((irq, level))), 1)
    pci.cfg_write(1, 0, 0x62, 1, 0x0B)
    assert isa == [(11, True)] and piix3.isa_level(11)


def test_bus_reset_deasserts_everything(board):
    route(board, [0x0A, 0x0A, 0x0B, 0x0B])
    probe = board.plug_probe(slot=3)
    probe.set_irq(True)
    board.bus.reset()
    assert not board.bus.pirq_level(2)
    assert board.isa[-1] == (11, False)
    assert board.cfg_read(1, 0, 0x62, 1) == 0x80


def test_device_without_pin_cannot_raise_intx(pci):
    probe = pci.plug_probe(slot=3, **probe_with_pin(0))
    assert pci.cfg_read(3, 0, 0x3D, 1) == 0
    with pytest.raises(AssertionError):
        probe.set_irq(True)

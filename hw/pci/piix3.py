"""The Intel 82371SB PIIX3 PCI-to-ISA bridge, function 0 at 00:01.0.

Modelled (82371FB/82371SB PIIX/PIIX3 datasheet, §2.2 "PCI to ISA Bridge
Configuration Registers"): identity 8086:7000, class 0601h (ISA bridge),
multi-function header (80h) since the IDE and USB functions share its slot;
the PIRQ Route Control registers PIRQRC[A:D] (60h-63h) routing PCI
interrupts to ISA IRQs; the other function-0 registers as plain storage with
their datasheet reset values (TOM, XBCS, MBIRQ, SMI registers...).

PIRQRC: bit 7 IRQROUTEN (1 = routing disabled, reset 80h), bits 3:0
IRQROUTE; the values 0, 1, 2, 8 and 13 are reserved (timer, keyboard,
cascade, RTC, FPU) and route nowhere.  An ISA IRQ fed by several PIRQs is
their OR, and the bridge tells ``isa_irq(irq, level)`` (the machine's 8259
inputs) only of changes.

The subsystem ID is QEMU's default 1AF4:1100 (the real part has none) so
the same guest sees the same chipset on drivebay and on QEMU.

Not modelled here: the ELCR (4D0h/4D1h, with the PIC), the reset control
register at CF9h (PciBus), MBIRQ routing, SMI generation, the APIC chip
select.
"""

from drivebay import trace
from drivebay.hw.pci.bus import PIRQ_COUNT
from drivebay.hw.pci.config import COMMAND, STATUS, Access, Field, Register
from drivebay.hw.pci.device import PciDevice, PciIdentity

PIIX3 = PciIdentity(
    vendor_id=0x8086, device_id=0x7000, revision=0x00,
    class_code=0x060100,                            # bridge, ISA bridge
    subsystem_vendor_id=0x1AF4, subsystem_id=0x1100,
    multifunction=True,
)

ISA_IRQS = 16
# IRQROUTE values the datasheet lists as "Reserved": IRQ0 timer, IRQ1
# keyboard, IRQ2 cascade, IRQ8 RTC, IRQ13 FPU error.
RESERVED_IRQS = frozenset({0, 1, 2, 8, 13})

_PIRQRC_FIELDS = (
    Field("IRQROUTE", 0, 4, Access.RW),
    Field("IRQROUTEN", 7, 1, Access.RW),     # 0 = route, 1 = disabled
)
PIRQRC = tuple(Register(0x60 + n, 1, f"PIRQRC{'ABCD'[n]}", reset=0x80, fields=_PIRQRC_FIELDS)
               for n in range(PIRQ_COUNT))
IRQROUTE = _PIRQRC_FIELDS[0]
IRQROUTEN = _PIRQRC_FIELDS[1]
_ROUTE_DISABLED, _ROUTE_IRQ = IRQROUTEN.mask, IRQROUTE.mask    # route() runs on every PIRQ change
assert IRQROUTE.lsb == 0

PIIX3_REGISTERS = (
    # PCICMD reset 0007h: I/O, memory and bus master are hardwired on.
    COMMAND.variant(reset=0x0007, rw=("SPECIAL_CYCLES", "SERR_ENABLE")),
    # PCISTS reset 0280h: fast back-to-back capable, DEVSEL# medium.
    STATUS.variant(reset=0x0280),
    Register(0x4C, 1, "IORT", Access.RW, reset=0x4D),      # ISA I/O recovery timer
    Register(0x4E, 2, "XBCS", Access.RW, reset=0x0003),    # X-bus chip select enable
    *PIRQRC,
    Register(0x69, 1, "TOM", Access.RW, reset=0x02),       # top of memory
    Register(0x6A, 2, "MSTAT", Access.RW),                 # miscellaneous status
    Register(0x70, 1, "MBIRQ0", Access.RW, reset=0x80),    # motherboard IRQ route control
    Register(0x71, 1, "MBIRQ1", Access.RW, reset=0x80),
    Register(0x76, 1, "MBDMA0", Access.RW, reset=0x0C),    # motherboard DMA control
    Register(0x77, 1, "MBDMA1", Access.RW, reset=0x0C),
    Register(0x78, 2, "PCSC", Access.RW, reset=0x0002),    # programmable chip select control
    Register(0x80, 1, "APICBASE", Access.RW),
    Register(0x82, 1, "DLC", Access.RW),                   # deterministic latency control
    Register(0xA0, 1, "SMICNTL", Access.RW, reset=0x08),
    Register(0xA2, 2, "SMIEN", Access.RW),
    Register(0xA4, 4, "SEE", Access.RW),                   # system event enable
    Register(0xA8, 1, "FTMR", Access.RW, reset=0x0F),      # fast off timer
    Register(0xAA, 2, "SMIREQ", Access.RW),
    Register(0xAC, 1, "CTLTMR", Access.RW),                # clock scale STPCLK# low timer
    Register(0xAE, 1, "CTHTMR", Access.RW),                # clock scale STPCLK# high timer
)


class Piix3(PciDevice):
    """PCI-to-ISA bridge function; plug it at slot 1, function 0.

    ``isa_irq(irq, level)`` drives ISA IRQ ``irq`` (0-15) from the PCI side.
    """

    def __init__(self, isa_irq=None, name="piix3"):
        super().__init__(PIIX3, name=name)
        self.config.declare(PIIX3_REGISTERS)
        self.isa_irq = isa_irq
        self._pirq_levels = [False] * PIRQ_COUNT
        self._isa_levels = [False] * ISA_IRQS       # what we drive now

    def plugged(self):
        self.bus.set_pirq_router(self.pirq_changed)

    def route(self, pirq):
        """The ISA IRQ PIRQ ``pirq`` (0 = PIRQA#) is routed to, or None."""
        value = self.config.data[PIRQRC[pirq].offset]
        if value & _ROUTE_DISABLED:
            return None
        irq = value & _ROUTE_IRQ
        return None if irq in RESERVED_IRQS else irq

    def isa_level(self, irq):
        return self._isa_levels[irq]

    def pirq_changed(self, pirq, level):
        self._pirq_levels[pirq] = level
        # The routes have not moved since the last full update (a PIRQRC
        # write makes one), so only the IRQ this PIRQ routes to can change:
        # it is the wired OR of the PIRQs routed to it.
        irq = self.route(pirq)
        if irq is None:
            return
        wanted = level
        if not wanted:
            for other, asserted in enumerate(self._pirq_levels):
                if asserted and self.route(other) == irq:
                    wanted = True
                    break
        if wanted != self._isa_levels[irq]:
            self._drive(irq, wanted)

    def _update_isa_irqs(self):
        wanted = [False] * ISA_IRQS
        for pirq, asserted in enumerate(self._pirq_levels):
            if asserted:
                irq = self.route(pirq)
                if irq is not None:
                    wanted[irq] = True
        if wanted == self._isa_levels:
            return
        # Lower before raising, so a line being rerouted is never seen on two
        # IRQs at once.
        for level in (False, True):
            for irq in range(ISA_IRQS):
                if wanted[irq] == level and self._isa_levels[irq] != level:
                    self._drive(irq, level)

    def _drive(self, irq, level):
        self._isa_levels[irq] = level
        if trace.on.irq:
            trace.emit("irq", f"{self.label} ISA IRQ{irq} {'raised' if level else 'lowered'}")
        if self.isa_irq is not None:
            self.isa_irq(irq, level)

    def config_written(self, offset, size, old, new):
        first, last = PIRQRC[0].offset, PIRQRC[-1].offset
        if offset > last or offset + size <= first:
            return
        for pirq, reg in enumerate(PIRQRC):
            if offset <= reg.offset < offset + size:
                value = self.config.get(reg.offset, 1)
                if not value & IRQROUTEN.mask and IRQROUTE.get(value) in RESERVED_IRQS:
                    trace.guest_error(self.label, f"{reg.name} <- {value:#04x}: IRQ{IRQROUTE.get(value)} "
                                                  f"is reserved, PIRQ{'ABCD'[pirq]}# routes nowhere")
        self._update_isa_irqs()

    def reset(self):
        self._update_isa_irqs()

"""The PC's two cascaded 8259A interrupt controllers and the PIIX ELCR.

Modelled from the Intel 8259A Programmable Interrupt Controller datasheet
(order 231468) as wired on the PC/AT: the master at ports 0x20/0x21 takes
IRQ0-7, the slave at 0xA0/0xA1 takes IRQ8-15 and drives the master's IR2.
The PIIX3/PIIX4 Edge/Level Control Registers (ELCR1/ELCR2 at 0x4D0/0x4D1,
Intel 82371SB datasheet, 4.2.5) choose edge or level sensing per input;
IRQ0, 1, 2, 8 and 13 are fixed edge (write masks 0xF8 and 0xDE).

Supported: ICW1-ICW4 (8086 mode), OCW1 (IMR), OCW2 (non-specific and
specific EOI, rotate on non-specific EOI, rotate in automatic EOI mode, set
priority, specific rotate), OCW3 (read IRR/ISR, poll, special mask mode),
automatic EOI, special fully nested mode, the spurious IR7 answer when a
request disappears before the acknowledge.

Not supported: MCS-80/85 mode (ICW4 uPM=0 is treated as 8086 mode and
traced), buffered mode (ICW4 BUF/M-S only stored), single mode on the PC
(ICW1 SNGL is honoured for the ICW sequence only: the pair is always
cascaded), ICW1 LTIM (the PIIX ignores it; the ELCR decides).
"""

from drivebay import trace
from drivebay.hw.irq import IrqLine
from drivebay.hw.pc.isa import split_read, split_write

# -- registers (datasheet names); offset is A0 ----------------------------------

# What a port means depends on the direction and on the initialization
# state; this table is the one place that names them (code and trace).
REGISTERS = {
    # offset: (read name, write name)
    0: ("IRR/ISR/poll", "ICW1/OCW2/OCW3"),
    1: ("IMR", "ICW2-4/OCW1"),
}
ELCR_REGISTERS = {0: "ELCR1", 1: "ELCR2"}

MASTER_BASE = 0x20
SLAVE_BASE = 0xA0
ELCR_BASE = 0x4D0
CASCADE_IRQ = 2

# 82371SB 4.2.5: "ELCR1 bits 0-2 ... must be 0 (edge)"; ELCR2 bits 0 and 5
# (IRQ8 = RTC, IRQ13 = FPU error) likewise.
ELCR_MASK = (0xF8, 0xDE)

# ICW1 bits
ICW1_IC4 = 0x01
ICW1_SNGL = 0x02
ICW1_LTIM = 0x08
ICW1_INIT = 0x10
# ICW4 bits
ICW4_UPM = 0x01
ICW4_AEOI = 0x02
ICW4_SFNM = 0x10
# OCW3 bits
OCW3_RIS = 0x01
OCW3_RR = 0x02
OCW3_P = 0x04
OCW3_SELECT = 0x08
OCW3_SMM = 0x20
OCW3_ESMM = 0x40

# Initialization sequence position: which ICW the next A0=1 write is.
_READY, _ICW2, _ICW3, _ICW4 = 0, 1, 2, 3


# _FIRST_SET[priority_add][mask]: position (0 = highest priority) of the
# first set bit of ``mask`` when IR ``priority_add`` has the highest priority;
# 8 for an empty mask.  The lookup runs on every request, INTA and EOI.
_FIRST_SET = tuple(
    tuple(next((p for p in range(8) if mask & (1 << ((p + add) & 7))), 8) for mask in range(256))
    for add in range(8))


def _lowest_priority_index(mask, priority_add):
    """Position (0 = highest priority) of the first set bit of ``mask`` in the
    current priority order, or 8 when the mask is empty."""
    return _FIRST_SET[priority_add][mask]


class I8259:
    """One 8259A.  ``output`` is called with the new level of its INT pin."""

    STATE_FIELDS = ("irr", "imr", "isr", "level", "elcr", "priority_add", "vector_base",
                    "read_isr", "poll", "special_mask", "init_state", "icw4_needed",
                    "single", "auto_eoi", "rotate_on_aeoi", "sfnm", "icw3", "int_level")

    def __init__(self, name, output, is_master, elcr_mask):
        self.name = name
        self._output = output
        self.is_master = is_master
        self.elcr_mask = elcr_mask
        self.elcr = 0
        self.level = 0          # current level of each IR input wire
        self.irr = 0
        self.int_level = False
        self._initialize()

    def reset(self):
        self.elcr = 0
        self.irr = 0
        self._initialize()
        self.update()

    def _initialize(self):
        # 8259A, "Initialization Command Words": ICW1 resets the edge sense
        # circuit, clears the IMR, gives IR7 the lowest priority, clears
        # special mask mode and selects IRR for status reads; with IC4=0 all
        # ICW4 functions are zero.
        self.irr &= self.elcr
        self.imr = 0
        self.isr = 0
        self.priority_add = 0
        self.vector_base = 0
        self.read_isr = False
        self.poll = False
        self.special_mask = False
        self.init_state = _READY
        self.icw4_needed = False
        self.single = False
        self.auto_eoi = False
        self.rotate_on_aeoi = False
        self.sfnm = False
        self.icw3 = 0

    # -- the request side ------------------------------------------------------------

    def set_input(self, irq, level):
        bit = 1 << irq
        was = self.level & bit
        if level:
            self.level |= bit
        else:
            self.level &= ~bit
        if self.elcr & bit:
            # Level sensitive: IRR follows the wire.
            if level:
                self.irr |= bit
            else:
                self.irr &= ~bit
        elif level and not was:
            self.irr |= bit        # edge: latched on the rising edge
        self.update()

    def highest_request(self):
        """The IR number this chip would present at INTA, or -1."""
        requests = self.irr & ~self.imr
        if not requests:
            return -1
        order = _FIRST_SET[self.priority_add]
        priority = order[requests]
        in_service = self.isr
        if not in_service:
            return (priority + self.priority_add) & 7
        if self.special_mask:
            # 8259A, special mask mode: "enables all lower priority levels
            # ... except those masked"; masked in-service levels don't block.
            in_service &= ~self.imr
        if self.sfnm and self.is_master:
            # Special fully nested mode: a higher priority request from the
            # slave is recognised while IR2 is in service.
            in_service &= ~(1 << CASCADE_IRQ)
        if priority < order[in_service]:
            return (priority + self.priority_add) & 7
        return -1

    def update(self):
        level = self.highest_request() >= 0
        if level != self.int_level:
            self.int_level = level
            self._output(level)

    def intack(self, irq):
        """The INTA sequence for ``irq``: IRR -> ISR (or automatic EOI)."""
        bit = 1 << irq
        if self.auto_eoi:
            if self.rotate_on_aeoi:
                self.priority_add = (irq + 1) & 7
        else:
            self.isr |= bit
        if not self.elcr & bit:
            self.irr &= ~bit       # edge requests are consumed by the acknowledge
        self.update()

    # -- the register side -------------------------------------------------------------

    def write_name(self, offset, value):
        """The datasheet's name for this write, decoded as the chip decodes it."""
        if offset == 0:
            return "ICW1" if value & ICW1_INIT else "OCW3" if value & OCW3_SELECT else "OCW2"
        return ("OCW1", "ICW2", "ICW3", "ICW4")[self.init_state]

    def write(self, offset, value):
        name = self.write_name(offset, value) if trace.on.dev else None
        if offset == 0:
            if value & ICW1_INIT:
                self._icw1(value)
            elif value & OCW3_SELECT:
                self._ocw3(value)
            else:
                self._ocw2(value)
        elif self.init_state == _READY:
            self.imr = value                                  # OCW1
            self.update()
        elif self.init_state == _ICW2:
            # 8086 mode: T7-T3 of the vector come from ICW2, T2-T0 from the IR.
            self.vector_base = value & 0xF8
            if self.single:
                self.init_state = _ICW4 if self.icw4_needed else _READY
            else:
                self.init_state = _ICW3
        elif self.init_state == _ICW3:
            self.icw3 = value
            if self.is_master and not value & (1 << CASCADE_IRQ):
                trace.guest_error(self.name, f"ICW3 {value:#04x} has no slave on IR2; "
                                             "the PC's cascade stays on IR2")
            elif not self.is_master and value & 7 != CASCADE_IRQ:
                trace.guest_error(self.name, f"ICW3 slave ID {value & 7} is not 2; "
                                             "the PC's cascade stays on IR2")
            self.init_state = _ICW4 if self.icw4_needed else _READY
        else:
            if not value & ICW4_UPM:
                trace.guest_error(self.name, "ICW4 selects MCS-80/85 mode; treated as 8086 mode")
            self.auto_eoi = bool(value & ICW4_AEOI)
            self.sfnm = bool(value & ICW4_SFNM)
            self.init_state = _READY
        if trace.on.dev:
            trace.emit("dev", f"{self.name}_write {name} <- {value:#04x} "
                              f"(irr={self.irr:#04x} imr={self.imr:#04x} isr={self.isr:#04x})")

    def _icw1(self, value):
        self._initialize()
        self.update()
        self.init_state = _ICW2
        self.icw4_needed = bool(value & ICW1_IC4)
        self.single = bool(value & ICW1_SNGL)
        if self.single:
            trace.guest_error(self.name, "ICW1 selects single mode; the PC's pair stays cascaded")
        if value & ICW1_LTIM:
            trace.guest_error(self.name, "ICW1 LTIM set; the PIIX ignores it (ELCR selects level mode)")

    def _ocw2(self, value):
        command = value >> 5          # R, SL, EOI
        if command in (0b000, 0b100):
            # Rotate in automatic EOI mode: clear (000) / set (100).
            self.rotate_on_aeoi = command == 0b100
        elif command in (0b001, 0b101):
            # Non-specific EOI: resets the highest priority ISR bit.
            priority = _lowest_priority_index(self.isr, self.priority_add)
            if priority != 8:
                irq = (priority + self.priority_add) & 7
                self.isr &= ~(1 << irq)
                if command == 0b101:       # rotate on non-specific EOI
                    self.priority_add = (irq + 1) & 7
            else:
                trace.guest_error(self.name, "non-specific EOI with nothing in service")
        elif command == 0b011:
            self.isr &= ~(1 << (value & 7))                      # specific EOI
        elif command == 0b110:
            self.priority_add = (value + 1) & 7                  # set priority: L2-L0 lowest
        elif command == 0b111:
            irq = value & 7                                      # rotate on specific EOI
            self.isr &= ~(1 << irq)
            self.priority_add = (irq + 1) & 7
        # 0b010 is "no operation"
        self.update()

    def _ocw3(self, value):
        if value & OCW3_P:
            self.poll = True
        if value & OCW3_RR:
            self.read_isr = bool(value & OCW3_RIS)
        if value & OCW3_ESMM:
            self.special_mask = bool(value & OCW3_SMM)
            self.update()

    def read(self, offset):
        if self.poll:
            # Poll command: the read is the acknowledge; I=1 and W2-W0 report
            # the highest request.
            self.poll = False
            irq = self.highest_request()
            if irq < 0:
                return 0
            self.intack(irq)
            return 0x80 | irq
        if offset == 0:
            return self.isr if self.read_isr else self.irr
        return self.imr


def _unconnected(level):
    pass


class PicPair:
    """The cascaded master/slave 8259A pair of the PC, with ELCR.

    ``intr`` is the master's INT output, to the CPU (or the local APIC's
    LINT0).  ``input(irq)`` gives the sink an ``IrqLine`` of a device drives;
    ``pending()``/``acknowledge()`` are the CPU's side of INTR/INTA.
    """

    STATE_FIELDS = ()          # the state is the two chips' (``master``, ``slave``)

    def __init__(self, intr=None):
        # Unconnected until the machine wires it (a line made without a sink
        # would record every transition, for tests).
        self.intr = intr if intr is not None else IrqLine(_unconnected, name="pic.intr")
        self.master = I8259("pic_master", self._master_output, True, ELCR_MASK[0])
        self.slave = I8259("pic_slave", self._slave_output, False, ELCR_MASK[1])
        self._sinks = [self._make_sink(irq) for irq in range(16)]

    def _make_sink(self, irq):
        chip = self.master if irq < 8 else self.slave
        line = irq & 7

        def sink(level):
            if trace.on.irq:
                trace.emit("irq", f"pic IRQ{irq} -> {int(bool(level))}")
            chip.set_input(line, level)
        return sink

    def _master_output(self, level):
        self.intr.set_level(level)

    def _slave_output(self, level):
        self.master.set_input(CASCADE_IRQ, level)

    def input(self, irq):
        """The sink for input IRQ ``irq`` (0-15): pass it to an IrqLine."""
        if not 0 <= irq < 16:
            raise ValueError(f"the PIC pair has IRQ0-15, not IRQ{irq}")
        return self._sinks[irq]

    def reset(self):
        # Inputs keep their wire levels across a reset: an edge input needs
        # a new rising edge, as after ICW1.
        self.slave.reset()
        self.master.reset()

    # -- the CPU side ----------------------------------------------------------------

    def pending(self):
        return self.master.int_level

    def acknowledge(self):
        """The INTA cycle: returns the vector and moves the request to ISR.

        A request that went away before the acknowledge gets IR7 of the chip
        that lost it (8259A: "the IR input must remain high until after the
        falling edge of the first INTA ... If the IR input goes low before
        this time a DEFAULT IR7 will occur").
        """
        master, slave = self.master, self.slave
        irq = master.highest_request()
        if irq < 0:
            vector = master.vector_base | 7
            if trace.on.irq:
                trace.emit("irq", f"pic_ack spurious IRQ7 (vector {vector:#x})")
            return vector
        if irq == CASCADE_IRQ:
            irq2 = slave.highest_request()
            if irq2 >= 0:
                slave.intack(irq2)
            else:
                irq2 = 7
                if trace.on.irq:
                    trace.emit("irq", "pic_ack spurious IRQ15 on the slave")
            vector = slave.vector_base | irq2
            shown = 8 + irq2
        else:
            vector = master.vector_base | irq
            shown = irq
        master.intack(irq)
        if trace.on.irq:
            trace.emit("irq", f"pic_ack IRQ{shown} vector {vector:#x}")
        return vector

    # -- ports -----------------------------------------------------------------------

    def register(self, io):
        io.add("pic_master", MASTER_BASE, 2, self._master_read, self._master_write,
               names=self._names)
        io.add("pic_slave", SLAVE_BASE, 2, self._slave_read, self._slave_write,
               names=self._names)
        io.add("elcr", ELCR_BASE, 2, self._elcr_read, self._elcr_write, names=ELCR_REGISTERS)

    @staticmethod
    def _names(offset, size):
        read_name, write_name = REGISTERS[offset & 1]
        return f"{read_name}|{write_name}"

    def _master_read(self, offset, size):
        return split_read(self.master.read, offset, size, 2)

    def _slave_read(self, offset, size):
        return split_read(self.slave.read, offset, size, 2)

    def _master_write(self, offset, size, value):
        split_write(self.master.write, offset, size, value, 2)

    def _slave_write(self, offset, size, value):
        split_write(self.slave.write, offset, size, value, 2)

    def _elcr_read(self, offset, size):
        return split_read(lambda port: (self.master, self.slave)[port].elcr, offset, size, 2)

    def _elcr_write(self, offset, size, value):
        split_write(lambda port, byte: self._set_elcr((self.master, self.slave)[port], byte),
                    offset, size, value, 2)

    def _set_elcr(self, chip, value):
        if value & ~chip.elcr_mask:
            trace.guest_error("elcr", f"{chip.name}: bits {value & ~chip.elcr_mask:#04x} are fixed edge")
        chip.elcr = value & chip.elcr_mask
        # A newly level-sensitive input reports its wire; a newly edge one
        # keeps what it latched.
        chip.irr = (chip.irr & ~chip.elcr) | (chip.level & chip.elcr)
        chip.update()
        if trace.on.dev:
            trace.emit("dev", f"elcr_write {chip.name} <- {chip.elcr:#04x}")

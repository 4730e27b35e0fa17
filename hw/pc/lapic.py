"""A local APIC (xAPIC mode) for a one-CPU machine, at 0xFEE00000.

Modelled from the Intel SDM vol. 3A, chapter 11 (chapter 10 in editions
before 2023), "Advanced Programmable Interrupt Controller (APIC)": the
register page of table 11-1 (ID, version, TPR, APR, PPR, EOI, RRD, LDR,
DFR, SVR, ISR/TMR/IRR, ESR, ICR, the six LVT entries, the timer's
initial/current count and divide configuration), interrupt acceptance by
priority class against the PPR (11.8.3), EOI (11.8.5), flat and cluster
logical destinations (11.6.2.2), the timer in one-shot and periodic modes
(11.5.4), software enable/disable through SVR (11.4.7.2), ESR latching on
write (11.5.3) and MSI messages (11.11).

The CPU loop asks ``pending()`` and takes a vector with ``acknowledge()``.
Two sources compete: the APIC's own IRR, and the 8259 INTR wired to LINT0.
The PIC passes through (``acknowledge()`` runs the PIC's INTA) when the
APIC is software-disabled or LINT0 is unmasked in ExtINT mode, as QEMU's
apic_accept_pic_intr lets it; APIC vectors are offered first, as in QEMU's
cpu_get_pic_interrupt.  As in QEMU, the bootstrap processor's LINT0 resets
to 0x700 (ExtINT, unmasked), so a guest that enables the APIC without
programming LINT0 still gets PIC interrupts on both.

The timer counts at ``APIC_BUS_HZ`` (1 GHz, the rate QEMU's and KVM's
emulated APIC timers use, so guest calibrations agree) divided by the
divide configuration register.  Timer interrupts are armed only while the
timer LVT is unmasked.

With one CPU, IPIs to our own ID, to "self", or broadcast reach this APIC;
INIT and STARTUP to others are accepted and dropped.  Not modelled: NMI,
SMI and INIT delivery to this CPU (traced, not delivered: the CPU loop has
no NMI pin), TSC-deadline mode, x2APIC, CMCI, thermal and performance
monitoring events (their LVTs are registers only), focus processor checks.
"""

from typing import NamedTuple

from drivebay import trace
from drivebay.hw.clock import NS_PER_SEC
from drivebay.hw.irq import IrqLine

APIC_BASE = 0xFEE00000
APIC_PAGE_SIZE = 0x1000
APIC_BUS_HZ = 1_000_000_000
VERSION = 0x00050014            # bits 23-16: max LVT entry 5 (six LVTs); 7-0: version 0x14


class Register(NamedTuple):
    offset: int
    name: str
    reset: int
    wmask: int                  # bits a guest write changes
    access: str                 # "rw", "ro", "wo"


# SDM table 11-1 "Local APIC Register Address Map".  Masks from the register
# layouts in figures 11-7 (ID), 11-8 (LVT), 11-12 (ICR), 11-13 (LDR), 11-14
# (DFR), 11-18 (TPR), 11-23 (SVR).
_FIXED = (
    Register(0x020, "ID", 0, 0xFF000000, "rw"),
    Register(0x030, "VERSION", VERSION, 0, "ro"),
    Register(0x080, "TPR", 0, 0x000000FF, "rw"),
    Register(0x090, "APR", 0, 0, "ro"),
    Register(0x0A0, "PPR", 0, 0, "ro"),
    Register(0x0B0, "EOI", 0, 0xFFFFFFFF, "wo"),
    Register(0x0C0, "RRD", 0, 0, "ro"),
    Register(0x0D0, "LDR", 0, 0xFF000000, "rw"),
    Register(0x0E0, "DFR", 0xFFFFFFFF, 0xF0000000, "rw"),
    Register(0x0F0, "SVR", 0x000000FF, 0x000003FF, "rw"),
    Register(0x280, "ESR", 0, 0, "rw"),
    Register(0x300, "ICR_LOW", 0, 0x000CCFFF, "rw"),
    Register(0x310, "ICR_HIGH", 0, 0xFF000000, "rw"),
    Register(0x320, "LVT_TIMER", 0x00010000, 0x000300FF, "rw"),
    Register(0x330, "LVT_THERMAL", 0x00010000, 0x000107FF, "rw"),
    Register(0x340, "LVT_PERF", 0x00010000, 0x000107FF, "rw"),
    Register(0x350, "LVT_LINT0", 0x00010000, 0x0001A7FF, "rw"),
    Register(0x360, "LVT_LINT1", 0x00010000, 0x0001A7FF, "rw"),
    Register(0x370, "LVT_ERROR", 0x00010000, 0x000100FF, "rw"),
    Register(0x380, "TIMER_INITIAL_COUNT", 0, 0xFFFFFFFF, "rw"),
    Register(0x390, "TIMER_CURRENT_COUNT", 0, 0, "ro"),
    Register(0x3E0, "TIMER_DIVIDE_CONFIG", 0, 0x0000000B, "rw"),
)
_BANKS = tuple(Register(base + 0x10 * i, f"{name}{i}", 0, 0, "ro")
               for name, base in (("ISR", 0x100), ("TMR", 0x180), ("IRR", 0x200))
               for i in range(8))
REGISTERS = {r.offset: r for r in _FIXED + _BANKS}
BY_NAME = {r.name: r.offset for r in REGISTERS.values()}

ID = BY_NAME["ID"]
TPR = BY_NAME["TPR"]
APR = BY_NAME["APR"]
PPR = BY_NAME["PPR"]
EOI = BY_NAME["EOI"]
LDR = BY_NAME["LDR"]
DFR = BY_NAME["DFR"]
SVR = BY_NAME["SVR"]
ESR = BY_NAME["ESR"]
ICR_LOW = BY_NAME["ICR_LOW"]
ICR_HIGH = BY_NAME["ICR_HIGH"]
LVT_TIMER = BY_NAME["LVT_TIMER"]
LVT_LINT0 = BY_NAME["LVT_LINT0"]
LVT_LINT1 = BY_NAME["LVT_LINT1"]
LVT_ERROR = BY_NAME["LVT_ERROR"]
LVTS = tuple(BY_NAME[n] for n in ("LVT_TIMER", "LVT_THERMAL", "LVT_PERF", "LVT_LINT0",
                                  "LVT_LINT1", "LVT_ERROR"))
TIMER_INITIAL_COUNT = BY_NAME["TIMER_INITIAL_COUNT"]
TIMER_CURRENT_COUNT = BY_NAME["TIMER_CURRENT_COUNT"]
TIMER_DIVIDE_CONFIG = BY_NAME["TIMER_DIVIDE_CONFIG"]
ISR_BASE, TMR_BASE, IRR_BASE = 0x100, 0x180, 0x200

SVR_APIC_ENABLED = 0x100
# LVT and ICR fields
VECTOR_MASK = 0xFF
DELIVERY_MODE_SHIFT = 8
DM_FIXED, DM_LOWEST, DM_SMI, DM_NMI, DM_INIT, DM_STARTUP, DM_EXTINT = 0, 1, 2, 4, 5, 6, 7
DELIVERY_MODE_NAMES = {0: "fixed", 1: "lowest priority", 2: "SMI", 3: "reserved", 4: "NMI",
                       5: "INIT", 6: "STARTUP", 7: "ExtINT"}
ICR_DEST_LOGICAL = 0x800
LVT_REMOTE_IRR = 0x4000
TRIGGER_LEVEL = 0x8000
LVT_MASKED = 0x10000
TIMER_PERIODIC = 0x20000
SHORTHAND_SHIFT = 18
SH_NONE, SH_SELF, SH_ALL, SH_OTHERS = 0, 1, 2, 3
BROADCAST = 0xFF
DFR_FLAT = 0xF
# ESR bits (figure 11-9)
ESR_SEND_ILLEGAL_VECTOR = 0x20
ESR_RECEIVE_ILLEGAL_VECTOR = 0x40
ESR_ILLEGAL_REGISTER = 0x80
# MSI address/data (SDM 11.11.1, 11.11.2)
MSI_ADDRESS_BASE = 0xFEE
MSI_DEST_SHIFT = 12
MSI_DEST_LOGICAL = 0x4
# QEMU's BSP LINT0 at reset (apic_reset_common): ExtINT, unmasked.
BSP_LINT0_RESET = DM_EXTINT << DELIVERY_MODE_SHIFT


def _highest(bits):
    return bits.bit_length() - 1


def _unconnected(level):
    pass


class Lapic:
    """The local APIC of our one CPU.

    ``clock`` is the VirtualClock; ``extint`` is the 8259 pair (anything with
    ``acknowledge()``) whose INTR arrives on ``lint0``; ``intr`` is the
    IrqLine to the CPU loop (high while ``pending()``), made here when not
    given; ``eoi_broadcast(vector)`` (optional) is called on EOI of a
    level-triggered vector, for an I/O APIC.
    """

    STATE_FIELDS = ("regs", "irr", "isr", "tmr", "esr_pending", "lint0_level", "lint1_level",
                    "timer_load_ns")

    def __init__(self, clock, extint=None, intr=None, apic_id=0, bsp=True, eoi_broadcast=None):
        self.clock = clock
        self.extint = extint
        # Connected by the machine; a line made without a sink would record
        # every transition (a test probe).
        self.intr = intr if intr is not None else IrqLine(_unconnected, name="lapic.intr")
        self.apic_id = apic_id
        self.bsp = bsp
        self.eoi_broadcast = eoi_broadcast
        self.timer = clock.timer(self._timer_fired, name="lapic_timer")
        self.lint0_level = False
        self.lint1_level = False
        self.reset()

    def reset(self):
        # SDM 11.4.7.1: IRR, ISR, TMR, ICR, LDR, TPR and the timer cleared,
        # DFR all ones, LVTs masked, SVR 0xFF; the ID is the hardware's.
        self.regs = {r.offset: r.reset for r in _FIXED}
        self.regs[ID] = self.apic_id << 24
        if self.bsp:
            self.regs[LVT_LINT0] = BSP_LINT0_RESET
        self.irr = 0
        self.isr = 0
        self.tmr = 0
        self.esr_pending = 0
        self.timer_load_ns = self.clock.now_ns()
        self.timer.cancel()
        self._update()

    def register(self, io, mmio):
        """The APIC has no ports; its page goes into ``mmio``."""
        self.register_mmio(mmio)

    def register_mmio(self, mmio, base=APIC_BASE):
        mmio.add("lapic", base, APIC_PAGE_SIZE, self.mmio_read, self.mmio_write, names=self._names)

    @staticmethod
    def _names(offset, size):
        reg = REGISTERS.get(offset & 0xFF0)
        if reg is None:
            return None
        return reg.name if offset & 0xF == 0 else f"{reg.name}+{offset & 0xF}"

    # -- state helpers ---------------------------------------------------------------

    @property
    def software_enabled(self):
        return bool(self.regs[SVR] & SVR_APIC_ENABLED)

    def ppr(self):
        """SDM 11.8.3.1: PPR = TPR if TPR[7:4] >= ISRV[7:4], else ISRV[7:4]:0."""
        tpr = self.regs[TPR]
        isrv = max(_highest(self.isr), 0)
        if tpr >> 4 >= isrv >> 4:
            return tpr
        return isrv & 0xF0

    def apr(self):
        """SDM 11.8.3 (P6 family): the arbitration priority."""
        tpr = self.regs[TPR]
        irrv = max(_highest(self.irr), 0)
        isrv = max(_highest(self.isr), 0)
        if tpr >> 4 >= irrv >> 4 and tpr >> 4 > isrv >> 4:
            return tpr
        return max(tpr & 0xF0, irrv & 0xF0, isrv & 0xF0)

    def _deliverable_vector(self):
        """The IRR vector the CPU would take now, or -1."""
        if not self.irr or not self.regs[SVR] & SVR_APIC_ENABLED:
            return -1
        irrv = _highest(self.irr)
        if irrv >= 0 and irrv >> 4 > self.ppr() >> 4:
            return irrv
        return -1

    def _pic_passes(self):
        if self.extint is None or not self.lint0_level:
            return False
        if not self.software_enabled:
            return True
        lvt = self.regs[LVT_LINT0]
        return not lvt & LVT_MASKED and (lvt >> DELIVERY_MODE_SHIFT) & 7 == DM_EXTINT

    def _update(self):
        self.intr.set_level(self.pending())

    # -- the CPU side ----------------------------------------------------------------

    def pending(self):
        return self._deliverable_vector() >= 0 or self._pic_passes()

    def acknowledge(self):
        """INTA: the vector the CPU takes, or None when nothing is pending."""
        vector = self._deliverable_vector()
        if vector >= 0:
            bit = 1 << vector
            self.irr &= ~bit
            self.isr |= bit
            self._update()
            if trace.on.irq:
                trace.emit("irq", f"lapic_ack vector {vector:#x}")
            return vector
        if self._pic_passes():
            vector = self.extint.acknowledge()
            self._update()
            return vector
        return None

    # -- interrupt sources -----------------------------------------------------------

    def _accept(self, vector, level_triggered=False, source="fixed"):
        """A fixed interrupt arrives: set IRR (and TMR for level triggering)."""
        if vector < 16:
            # SDM 11.5.3: vectors 0-15 are illegal; the APIC refuses them.
            trace.guest_error("lapic", f"{source} interrupt with illegal vector {vector}")
            self._error(ESR_RECEIVE_ILLEGAL_VECTOR)
            return
        bit = 1 << vector
        self.irr |= bit
        if level_triggered:
            self.tmr |= bit
        else:
            self.tmr &= ~bit
        if trace.on.irq:
            trace.emit("irq", f"lapic_accept {source} vector {vector:#x}")
        self._update()

    def _error(self, bit):
        self.esr_pending |= bit
        lvt = self.regs[LVT_ERROR]
        vector = lvt & VECTOR_MASK
        if not lvt & LVT_MASKED and vector >= 16:
            self._accept(vector, source="error")

    def _deliver_local(self, lvt_offset, source):
        """An LVT entry fires (timer, LINT in fixed mode)."""
        lvt = self.regs[lvt_offset]
        if lvt & LVT_MASKED:
            return
        mode = (lvt >> DELIVERY_MODE_SHIFT) & 7
        if lvt_offset == LVT_TIMER:
            mode = DM_FIXED                      # the timer LVT has no delivery mode field
        if mode == DM_FIXED:
            level = lvt_offset in (LVT_LINT0, LVT_LINT1) and bool(lvt & TRIGGER_LEVEL)
            if level:
                self.regs[lvt_offset] |= LVT_REMOTE_IRR
            self._accept(lvt & VECTOR_MASK, level, source)
        elif mode != DM_EXTINT:
            trace.guest_error("lapic", f"{source}: {DELIVERY_MODE_NAMES[mode]} delivery is not modelled")

    def lint0(self, level):
        """Sink for the LINT0 pin (the 8259's INTR on a PC)."""
        self._lint(LVT_LINT0, level, "lint0")

    def lint1(self, level):
        """Sink for the LINT1 pin (NMI on a PC)."""
        self._lint(LVT_LINT1, level, "lint1")

    def _lint(self, offset, level, name):
        level = bool(level)
        was = self.lint0_level if offset == LVT_LINT0 else self.lint1_level
        if offset == LVT_LINT0:
            self.lint0_level = level
        else:
            self.lint1_level = level
        lvt = self.regs[offset]
        if (lvt >> DELIVERY_MODE_SHIFT) & 7 != DM_EXTINT and level:
            if lvt & TRIGGER_LEVEL:
                if not lvt & LVT_REMOTE_IRR:
                    self._deliver_local(offset, name)
            elif not was:
                self._deliver_local(offset, name)
        self._update()

    def deliver_msi(self, address, data):
        """An MSI write (SDM 11.11): address 0xFEExxxxx, data vector and mode."""
        if address >> 20 != MSI_ADDRESS_BASE:
            trace.guest_error("lapic", f"MSI to {address:#x} is not an APIC address")
            return
        dest = (address >> MSI_DEST_SHIFT) & 0xFF
        logical = bool(address & MSI_DEST_LOGICAL)
        vector = data & VECTOR_MASK
        mode = (data >> DELIVERY_MODE_SHIFT) & 7
        if not self._matches(dest, logical):
            if trace.on.irq:
                trace.emit("irq", f"lapic_msi dest {dest:#x} is not this CPU; dropped")
            return
        if mode in (DM_FIXED, DM_LOWEST):
            self._accept(vector, bool(data & TRIGGER_LEVEL), "msi")
        else:
            trace.guest_error("lapic", f"MSI with {DELIVERY_MODE_NAMES[mode]} delivery is not modelled")

    def _matches(self, dest, logical):
        """SDM 11.6.2: does a destination address this APIC?"""
        if dest == BROADCAST:
            return True
        if not logical:
            return dest == self.regs[ID] >> 24
        ldr = self.regs[LDR] >> 24
        if self.regs[DFR] >> 28 == DFR_FLAT:
            return bool(ldr & dest)
        return ldr >> 4 == dest >> 4 and bool(ldr & dest & 0xF)

    # -- EOI and IPIs ----------------------------------------------------------------

    def _eoi(self):
        vector = _highest(self.isr)
        if vector < 0:
            trace.guest_error("lapic", "EOI with nothing in service")
            return
        bit = 1 << vector
        self.isr &= ~bit
        if self.tmr & bit:
            self.tmr &= ~bit
            for offset, level in ((LVT_LINT0, self.lint0_level), (LVT_LINT1, self.lint1_level)):
                lvt = self.regs[offset]
                if lvt & LVT_REMOTE_IRR and lvt & VECTOR_MASK == vector:
                    self.regs[offset] = lvt & ~LVT_REMOTE_IRR
                    if level:
                        self._deliver_local(offset, "lint")
            if self.eoi_broadcast is not None:
                self.eoi_broadcast(vector)
        self._update()

    def _send_ipi(self):
        low = self.regs[ICR_LOW]
        dest = self.regs[ICR_HIGH] >> 24
        vector = low & VECTOR_MASK
        mode = (low >> DELIVERY_MODE_SHIFT) & 7
        shorthand = (low >> SHORTHAND_SHIFT) & 3
        if shorthand == SH_NONE:
            to_self = self._matches(dest, bool(low & ICR_DEST_LOGICAL))
        else:
            to_self = shorthand in (SH_SELF, SH_ALL)
        if trace.on.irq:
            trace.emit("irq", f"lapic_ipi {DELIVERY_MODE_NAMES[mode]} vector {vector:#x} "
                              f"dest {dest:#x} shorthand {shorthand} (self: {to_self})")
        if mode in (DM_FIXED, DM_LOWEST):
            if vector < 16:
                self._error(ESR_SEND_ILLEGAL_VECTOR)
                trace.guest_error("lapic", f"IPI with illegal vector {vector}")
                return
            if to_self:
                self._accept(vector, bool(low & TRIGGER_LEVEL), "ipi")
        elif mode in (DM_INIT, DM_STARTUP):
            # One CPU: INIT and STARTUP to application processors find nobody.
            if to_self:
                trace.guest_error("lapic", f"{DELIVERY_MODE_NAMES[mode]} IPI to this CPU is not modelled")
        else:
            trace.guest_error("lapic", f"{DELIVERY_MODE_NAMES[mode]} IPI is not modelled")

    # -- timer ------------------------------------------------------------------------

    def _divide(self):
        dcr = self.regs[TIMER_DIVIDE_CONFIG]
        # SDM figure 11-10: bits 3,1,0 = 000 -> 2, 001 -> 4, ... 110 -> 128, 111 -> 1.
        value = (dcr >> 1) & 4 | dcr & 3
        return 1 << ((value + 1) & 7)

    def _ticks(self, now):
        return (now - self.timer_load_ns) * APIC_BUS_HZ // (NS_PER_SEC * self._divide())

    def _ns_of_ticks(self, ticks):
        return self.timer_load_ns + -(-ticks * NS_PER_SEC * self._divide() // APIC_BUS_HZ)

    def current_count(self, now=None):
        initial = self.regs[TIMER_INITIAL_COUNT]
        if not initial:
            return 0
        ticks = self._ticks(self.clock.now_ns() if now is None else now)
        if self.regs[LVT_TIMER] & TIMER_PERIODIC:
            return initial - ticks % initial
        return max(initial - ticks, 0)

    def _arm_timer(self):
        initial = self.regs[TIMER_INITIAL_COUNT]
        if not initial or self.regs[LVT_TIMER] & LVT_MASKED:
            self.timer.cancel()
            return
        ticks = self._ticks(self.clock.now_ns())
        if self.regs[LVT_TIMER] & TIMER_PERIODIC:
            expiry = (ticks // initial + 1) * initial
        elif ticks < initial:
            expiry = initial
        else:
            self.timer.cancel()
            return
        self.timer.mod(self._ns_of_ticks(expiry))

    def _timer_fired(self):
        self._deliver_local(LVT_TIMER, "timer")
        self._arm_timer()

    # -- register access ----------------------------------------------------------------

    def read_register(self, offset):
        """The 32-bit register at a 16-byte aligned ``offset`` (reserved: None)."""
        if offset in (TIMER_CURRENT_COUNT,):
            return self.current_count()
        if offset == PPR:
            return self.ppr()
        if offset == APR:
            return self.apr()
        if offset == DFR:
            return self.regs[DFR] | 0x0FFFFFFF
        if offset == EOI:
            return 0
        if ISR_BASE <= offset < IRR_BASE + 0x80:
            bank = (offset - ISR_BASE) // 0x80
            bits = (self.isr, self.tmr, self.irr)[bank]
            return (bits >> (32 * ((offset & 0x7F) >> 4))) & 0xFFFFFFFF
        if offset in self.regs:
            return self.regs[offset]
        return None

    def mmio_read(self, offset, size):
        value = 0
        cache = {}
        for i in range(size):
            at = offset + i
            slot = at & 0xFF0
            if at & 0xF >= 4:
                continue                     # bytes 4-15 of each 16-byte slot are reserved
            if slot not in cache:
                reg = self.read_register(slot)
                if reg is None:
                    trace.guest_error("lapic", f"read of reserved register {slot:#05x}")
                    self._error(ESR_ILLEGAL_REGISTER)
                    reg = 0
                cache[slot] = reg
            value |= ((cache[slot] >> (8 * (at & 3))) & 0xFF) << (8 * i)
        return value

    def mmio_write(self, offset, size, value):
        if size != 4 or offset & 0xF:
            # SDM 11.4.1: registers are 32 bits wide, 16-byte aligned; other
            # accesses are undefined.  Drop them, as QEMU does.
            trace.guest_error("lapic", f"{size}-byte write at {offset:#05x} ignored")
            return
        self.write_register(offset, value & 0xFFFFFFFF)

    def write_register(self, offset, value):
        reg = REGISTERS.get(offset)
        if reg is None:
            trace.guest_error("lapic", f"write to reserved register {offset:#05x}")
            self._error(ESR_ILLEGAL_REGISTER)
            return
        if trace.on.dev:
            trace.emit("dev", f"lapic_write {reg.name} <- {value:#010x}")
        if offset == EOI:
            self._eoi()
            return
        if offset == ESR:
            # SDM 11.5.3: a write latches the errors since the last write.
            self.regs[ESR], self.esr_pending = self.esr_pending, 0
            return
        if reg.access == "ro":
            trace.guest_error("lapic", f"write {value:#x} to read-only {reg.name}")
            return
        old = self.regs[offset]
        new = (old & ~reg.wmask) | (value & reg.wmask)
        if offset in LVTS and not self.software_enabled:
            new |= LVT_MASKED              # SDM 11.4.7.2: masks stay set while disabled
        if offset == TIMER_DIVIDE_CONFIG:
            # Keep the count where it is and carry on at the new rate.
            now = self.clock.now_ns()
            initial = self.regs[TIMER_INITIAL_COUNT]
            elapsed = self._ticks(now)
            if self.regs[LVT_TIMER] & TIMER_PERIODIC and initial:
                elapsed %= initial
            else:
                elapsed = min(elapsed, initial)
            self.regs[offset] = new
            self.timer_load_ns = now - -(-elapsed * NS_PER_SEC * self._divide() // APIC_BUS_HZ)
            self._arm_timer()
            return
        self.regs[offset] = new
        if offset == SVR and old & SVR_APIC_ENABLED and not new & SVR_APIC_ENABLED:
            for lvt in LVTS:
                self.regs[lvt] |= LVT_MASKED
        if offset == ICR_LOW:
            self._send_ipi()
        elif offset == TIMER_INITIAL_COUNT:
            self.timer_load_ns = self.clock.now_ns()
            self._arm_timer()
        elif offset == LVT_TIMER:
            self._arm_timer()
        elif offset in (LVT_LINT0, LVT_LINT1):
            # An unmasked fixed-mode level LINT that is asserted delivers now.
            level = self.lint0_level if offset == LVT_LINT0 else self.lint1_level
            if level and new & TRIGGER_LEVEL and not new & LVT_REMOTE_IRR \
                    and (new >> DELIVERY_MODE_SHIFT) & 7 == DM_FIXED:
                self._deliver_local(offset, "lint")
        self._update()

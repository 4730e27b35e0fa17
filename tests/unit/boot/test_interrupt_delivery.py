"""Hardware interrupts entered by the C block hook (boot/_slice_stop.pyx).

The hook takes a pending interrupt at the first block boundary where IF is
set, pushes the frame and jumps to the handler without leaving emu_start;
what it cannot do (a broken IDT, a 16-bit gate, paging) goes to the CPU
loop's Python path, which must give the same result as before: the
exception chain up to a triple fault.  The last tests run the real 8259
pair behind the local APIC, as the PC machine wires them.
"""

import pytest

from asm import assemble
from drivebay.boot.cpu import Cpu, StopReason
from drivebay.boot.machine import PcMachine
from drivebay.boot.ram import GuestRam
from drivebay.errors import GuestRunError
from drivebay.hw.clock import VirtualClock
from drivebay.hw.memory import IoSpace, MmioSpace

CODE = 0x10000
EXIT_PORT = 0x501
PROBE_PORT = 0x80
RAISE_PORT = 0x90
IDT = 0x3000


class Intc:
    """Hands out ``vectors`` in order, one per acknowledge."""

    def __init__(self, *vectors):
        self.vectors = list(vectors)
        self.acks = 0

    def pending(self):
        return bool(self.vectors)

    def acknowledge(self):
        self.acks += 1
        return self.vectors.pop(0)


def make_cpu(intc):
    ram = GuestRam(4 << 20)
    io = IoSpace()
    cpu = Cpu(ram, io, MmioSpace(), VirtualClock(), intc)
    writes = []
    io.add("exit", EXIT_PORT, 2, lambda o, s: 0xFFFF, lambda o, s, v: cpu.request_exit(v))
    io.add("probe", PROBE_PORT, 4, lambda o, s: 0, lambda o, s, v: writes.append(v))
    return cpu, ram, writes


def idt_gate(vector, label, kind):
    return f"""
    movl ${label}, %eax
    movw %ax, {IDT}+{vector}*8
    movw $0x08, {IDT}+{vector}*8+2
    movw ${kind << 8:#x}, {IDT}+{vector}*8+4
    shrl $16, %eax
    movw %ax, {IDT}+{vector}*8+6
"""


def protected_mode(cpu, ram, body, gates=(), idt_entries=256):
    source = f"""
    lidt idtr
    jmp 1f
idtr: .word {idt_entries}*8-1
      .long {IDT}
1:
""" + "".join(idt_gate(v, label, kind) for v, label, kind in gates) + body
    ram.load(CODE, assemble(source, CODE))
    cpu.enter_flat_protected_mode(CODE)
    cpu.set_reg("esp", 0x9000)


EXIT = f"movw ${EXIT_PORT:#x}, %dx; outw %ax, %dx\n"


def test_the_frame_of_an_interrupt_gate_and_a_trap_gate():
    """EIP, CS and EFLAGS on the stack, ESP back after IRET; an interrupt gate
    clears IF, a trap gate leaves it set."""
    intc = Intc()
    cpu, ram, writes = make_cpu(intc)
    protected_mode(cpu, ram, f"""
    movl %esp, %ebp
    sti
    movl $0, %eax
    movl $1, %eax
    outl %eax, $0x90             /* the device raises vector 0x20 here ... */
    jmp after_int                /* (the block ends: the hook runs at after_int) */
after_int:
    movl $2, %eax                /* ... and this runs after its handler */
    outl %eax, $0x90             /* then vector 0x21, a trap gate */
    jmp after_trap
after_trap:
    cmpl %esp, %ebp
    jne 9f
    movl $0x77, %eax
    outl %eax, $0x80
9:  {EXIT}
handler:
    movl (%esp), %eax
    outl %eax, $0x80             /* return EIP */
    movl 4(%esp), %eax
    outl %eax, $0x80             /* CS */
    movl 8(%esp), %eax
    andl $0x200, %eax
    outl %eax, $0x80             /* the interrupted IF */
    pushfl
    popl %eax
    andl $0x200, %eax
    outl %eax, $0x80             /* IF inside the handler */
    iret
""", gates=[(0x20, "handler", 0x8E), (0x21, "handler", 0x8F)])
    labels = _labels(cpu, ram)

    def raise_vector(offset, size, value):
        intc.vectors.append(0x1F + value)
        cpu.interrupt_raised(True)
    cpu.io.add("raise", RAISE_PORT, 4, lambda o, s: 0, raise_vector)
    result = cpu.run(budget_ns=2_000_000_000)
    assert (result.reason, intc.acks) == (StopReason.EXIT, 2)
    assert writes == [labels["after_int"], 0x08, 0x200, 0,
                      labels["after_trap"], 0x08, 0x200, 0x200, 0x77]


def _labels(cpu, ram):
    """Addresses of the program's labels after the two OUTs to RAISE_PORT
    (``outl %eax, $0x90; jmp .+2``: E7 90 EB 00)."""
    code = bytes(ram.buffer[CODE:CODE + 0x400])
    first = code.index(b"\xe7\x90\xeb\x00") + 4
    second = code.index(b"\xe7\x90\xeb\x00", first) + 4
    return {"after_int": CODE + first, "after_trap": CODE + second}


def test_an_interrupt_waits_while_if_is_clear_and_is_taken_after_sti():
    """Raised inside CLI ... STI: nothing happens until the instruction after
    STI has run (the STI shadow), then the handler runs exactly once."""
    intc = Intc()
    cpu, ram, writes = make_cpu(intc)
    protected_mode(cpu, ram, f"""
    xorl %ebx, %ebx
    cli
    movl $1, %eax
    outl %eax, $0x90             /* raised with IF clear */
    incl %ebx
    incl %ebx
    sti
    incl %ebx                    /* the shadow: runs before the handler */
    incl %ebx
    movl %ebx, %eax
    outl %eax, $0x80
    {EXIT}
handler:
    movl %ebx, %eax
    orl $0x100, %eax
    outl %eax, $0x80
    iret
""", gates=[(0x20, "handler", 0x8E)])

    def raise_vector(offset, size, value):
        intc.vectors.append(0x20)
        cpu.interrupt_raised(True)
    cpu.io.add("raise", RAISE_PORT, 4, lambda o, s: 0, raise_vector)
    result = cpu.run(budget_ns=2_000_000_000)
    assert result.reason == StopReason.EXIT
    assert writes == [0x103, 4]


def test_sti_hlt_with_an_interrupt_pending_returns_past_the_hlt():
    """``sti; hlt`` with a request already waiting: the CPU wakes at once and
    the handler returns to the instruction after HLT (the guest does not
    halt, and nothing else would wake it)."""
    intc = Intc(0x20)
    cpu, ram, writes = make_cpu(intc)
    protected_mode(cpu, ram, f"""
    xorl %ebx, %ebx
    sti
    hlt
    movl %ebx, %eax
    outl %eax, $0x80
    {EXIT}
handler:
    movl (%esp), %eax
    outl %eax, $0x80
    incl %ebx
    iret
""", gates=[(0x20, "handler", 0x8E)])
    code = bytes(ram.buffer[CODE:CODE + 0x200])
    after_hlt = CODE + code.index(b"\xfb\xf4") + 2
    result = cpu.run(budget_ns=2_000_000_000)
    assert result.reason == StopReason.EXIT
    assert writes == [after_hlt, 1]


def test_a_hardware_interrupt_through_an_absent_gate_becomes_gp():
    """The hook leaves a broken gate to the Python path: #GP is delivered,
    as before the hook took interrupts."""
    intc = Intc(0x20)
    cpu, ram, writes = make_cpu(intc)
    protected_mode(cpu, ram, f"""
    sti
1:  jmp 1b
gp:
    movl (%esp), %eax            /* the error code */
    outl %eax, $0x80
    movl $13, %eax
    {EXIT}
""", gates=[(13, "gp", 0x8E)])
    result = cpu.run(budget_ns=2_000_000_000)
    assert (result.reason, result.exit_code) == (StopReason.EXIT, 13)
    assert writes == [0] and intc.acks == 1


def test_a_hardware_interrupt_beyond_the_idt_limit_is_a_triple_fault():
    intc = Intc(0x40)
    cpu, ram, _ = make_cpu(intc)
    protected_mode(cpu, ram, "sti\n1: jmp 1b\n", idt_entries=0x20)
    with pytest.raises(GuestRunError, match=r"triple fault .*hardware interrupt 0x40: "
                                            r"vector 0x40 beyond the IDT limit"):
        cpu.run(budget_ns=1_000_000_000)


def test_a_16_bit_gate_is_delivered_by_the_python_path():
    """A 16-bit interrupt gate pushes IP, CS and FLAGS as words (the hook
    hands it to the loop); the handler sits below 64 KiB so its offset fits."""
    intc = Intc(0x20)
    cpu, ram, writes = make_cpu(intc)
    handler = 0x8000
    ram.load(handler, assemble("""
    movzwl (%esp), %eax
    outl %eax, $0x80             /* IP */
    movzwl 2(%esp), %eax
    outl %eax, $0x80             /* CS */
    movl $5, %eax
    movw $0x501, %dx
    outw %ax, %dx
""", handler))
    protected_mode(cpu, ram, "sti\n1: jmp 1b\n", gates=[(0x20, handler, 0x86)])
    spin = CODE + bytes(ram.buffer[CODE:CODE + 0x200]).index(b"\xfb\xeb\xfe") + 1
    result = cpu.run(budget_ns=2_000_000_000)
    assert (result.reason, result.exit_code) == (StopReason.EXIT, 5)
    assert writes == [spin & 0xFFFF, 0x08]


def test_an_error_in_the_acknowledge_ends_the_run_with_it():
    class Broken(Intc):
        def acknowledge(self):
            raise RuntimeError("controller model bug")
    cpu, ram, _ = make_cpu(Broken(0x20))
    protected_mode(cpu, ram, "sti\n1: jmp 1b\n")
    with pytest.raises(RuntimeError, match="controller model bug"):
        cpu.run(budget_ns=1_000_000_000)


def test_real_mode_frame_and_iret():
    """Real mode: FLAGS, CS, IP pushed on SS:SP, IF and TF cleared, CS:IP from the IVT."""
    intc = Intc()
    cpu, ram, writes = make_cpu(intc)
    code = assemble("""
.code16
    xorw %ax, %ax
    movw %ax, %ss
    movw $0x7000, %sp
    movw $0x0500, 0x21*4+2
    movw $0x0000, 0x21*4
    sti
    movw $1, %ax
    outw %ax, $0x90
    jmp back
back:
    movw %sp, %ax
    outw %ax, $0x80
    movw $0x501, %dx
    outw %ax, %dx
""", 0)
    ram.load(0x7C00, code)
    ram.load(0x5000, assemble("""
.code16
    movw %sp, %bp
    movw (%bp), %ax
    outw %ax, $0x80          /* IP */
    movw 2(%bp), %ax
    outw %ax, $0x80          /* CS */
    movw 4(%bp), %ax
    andw $0x200, %ax
    outw %ax, $0x80          /* FLAGS.IF of the interrupted code */
    pushfw
    popw %ax
    andw $0x200, %ax
    outw %ax, $0x80          /* IF in the handler */
    iret
""", 0))
    cpu.reset_to_real_mode()
    cpu.set_reg("cs", 0x07C0)
    cpu.set_reg("eip", 0)

    def raise_vector(offset, size, value):
        intc.vectors.append(0x21)
        cpu.interrupt_raised(True)
    cpu.io.add("raise", RAISE_PORT, 2, lambda o, s: 0, raise_vector)
    back = code.index(b"\xe7\x90\xeb\x00") + 4
    result = cpu.run(budget_ns=2_000_000_000)
    assert result.reason == StopReason.EXIT
    assert writes == [back, 0x07C0, 0x200, 0, 0x7000]


# -- the PC's 8259 pair behind the local APIC ----------------------------------------

PIC_SETUP = """
    movb $0x11, %al; outb %al, $0x20     /* ICW1: edge, cascade, ICW4 */
    movb $0x20, %al; outb %al, $0x21     /* ICW2: master vectors 0x20-0x27 */
    movb $0x04, %al; outb %al, $0x21     /* ICW3: slave on IR2 */
    movb $0x01, %al; outb %al, $0x21     /* ICW4: 8086 mode */
    movb $0x11, %al; outb %al, $0xa0
    movb $0x28, %al; outb %al, $0xa1
    movb $0x02, %al; outb %al, $0xa1
    movb $0x01, %al; outb %al, $0xa1
    movb $0x00, %al; outb %al, $0x21     /* all unmasked */
    outb %al, $0xa1
"""


def pc_with_raise_port(memory_mb=4):
    """A PcMachine whose port 0x90 raises the ISA IRQs set in the byte
    written (an edge on each) and whose port 0x80 records bytes."""
    machine = PcMachine(memory_mb=memory_mb, io_threads=0)
    seen = []

    def raise_irqs(offset, size, value):
        for irq in range(8):
            if value & (1 << irq) and irq != 2:
                machine.irqs.set(irq, "test", True)
                machine.irqs.set(irq, "test", False)
    machine.io.add("raise", RAISE_PORT, 1, lambda o, s: 0, raise_irqs)
    machine.io.add("probe", PROBE_PORT, 1, lambda o, s: 0, lambda o, s, v: seen.append(v))
    return machine, seen


def pc_handlers():
    """Handlers for IRQ1, 3 and 5 at vectors 0x21, 0x23, 0x25: each records
    its IRQ number; IRQ3's handler enables interrupts and raises IRQ1 and
    IRQ5 before its EOI: IRQ1 (higher priority) nests at once, IRQ5 waits
    for the EOI."""
    return [(0x21, "irq1", 0x8E), (0x23, "irq3", 0x8E), (0x25, "irq5", 0x8E)], """
irq1:
    movb $1, %al; outb %al, $0x80
    movb $0x20, %al; outb %al, $0x20
    iret
irq3:
    movb $3, %al; outb %al, $0x80
    sti
    movb $0x22, %al; outb %al, $0x90     /* IRQ1 and IRQ5 ... */
    jmp 1f                               /* ... taken at the next block */
1:  nop
    movb $0x33, %al; outb %al, $0x80     /* back from IRQ1, IRQ5 still waiting */
    cli
    movb $0x20, %al; outb %al, $0x20     /* EOI: now IRQ5 may come */
    iret
irq5:
    movb $5, %al; outb %al, $0x80
    movb $0x20, %al; outb %al, $0x20
    iret
"""


def test_pic_priority_and_nesting_through_the_lapic():
    """IRQ5 and IRQ3 raised together: IRQ3 first (higher priority); inside
    its handler IRQ1 nests, IRQ5 waits for the EOI of IRQ3."""
    machine, seen = pc_with_raise_port()
    with machine:
        gates, handlers = pc_handlers()
        protected_mode(machine.cpu, machine.ram, PIC_SETUP + f"""
    cli
    movb $0x28, %al; outb %al, $0x90     /* IRQ3 and IRQ5 while IF is clear */
    sti
    nop
    movb $0x99, %al; outb %al, $0x80
    movw $0, %ax
    {EXIT}
""" + handlers, gates=gates)
        result = machine.run(timeout_s=2)
    assert result.reason == StopReason.EXIT
    assert seen == [3, 1, 0x33, 5, 0x99]


def test_an_irq_raised_while_halted_wakes_the_cpu():
    """HLT with IF set, the PIT's IRQ0 as the only source: the hook takes
    it when the loop wakes the CPU."""
    machine, seen = pc_with_raise_port()
    with machine:
        protected_mode(machine.cpu, machine.ram, PIC_SETUP + f"""
    movb $0x34, %al; outb %al, $0x43     /* PIT channel 0, mode 2 */
    movb $0x00, %al; outb %al, $0x40
    movb $0x10, %al; outb %al, $0x40     /* 4096 ticks: about 3.4 ms */
    xorl %ebx, %ebx
    sti
1:  hlt
    cmpl $3, %ebx
    jb 1b
    movb %bl, %al; outb %al, $0x80
    movw $0, %ax
    {EXIT}
tick:
    incl %ebx
    movb $0x20, %al; outb %al, $0x20
    iret
""", gates=[(0x20, "tick", 0x8E)])
        result = machine.run(timeout_s=5)
    assert result.reason == StopReason.EXIT and seen == [3]

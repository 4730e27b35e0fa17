"""The CPU loop: interrupt delivery in real and protected mode, faults, budgets.

Guests here are a few instructions assembled with binutils; an interrupt
controller stand-in hands out vectors so the tests control exactly when a
hardware interrupt is pending.
"""

import pytest

from drivebay.boot.cpu import Cpu, StopReason
from drivebay.boot.ram import GuestRam
from drivebay.errors import GuestRunError
from drivebay.hw.clock import VirtualClock
from drivebay.hw.memory import IoSpace, MmioSpace
from asm import assemble

CODE = 0x10000
EXIT_PORT = 0x501
COUNT_PORT = 0x80


class FakeIntc:
    """Raises ``vector`` whenever ``armed`` is set; acknowledge clears it."""

    def __init__(self, vector):
        self.vector = vector
        self.armed = 0
        self.acks = 0

    def pending(self):
        return self.armed > 0

    def acknowledge(self):
        self.armed -= 1
        self.acks += 1
        return self.vector


@pytest.fixture
def machine():
    ram = GuestRam(4 << 20)
    io, mmio, clock = IoSpace(), MmioSpace(), VirtualClock()
    intc = FakeIntc(0x20)
    cpu = Cpu(ram, io, mmio, clock, intc)
    writes = []
    io.add("exit", EXIT_PORT, 2, lambda o, s: 0xFFFF, lambda o, s, v: cpu.request_exit(v))
    io.add("probe", COUNT_PORT, 1, lambda o, s: 0, lambda o, s, v: writes.append(v))
    return cpu, ram, intc, writes


def start_pm(cpu, ram, source):
    ram.load(CODE, assemble(source, CODE))
    cpu.enter_flat_protected_mode(CODE)
    cpu.set_reg("esp", 0x9000)


IDT_SETUP = """
    /* an IDT at 0x3000 of 256 interrupt gates, all absent, then fill some */
    lidt idtr
    jmp 1f
idtr: .word 256*8-1
      .long 0x3000
1:
"""


def gate(vector, label, kind=0x8E):
    return f"""
    movl ${label}, %eax
    movw %ax, 0x3000+{vector}*8
    movw $0x08, 0x3000+{vector}*8+2
    movw ${kind << 8:#x}, 0x3000+{vector}*8+4
    shrl $16, %eax
    movw %ax, 0x3000+{vector}*8+6
"""


def test_protected_mode_software_interrupt_and_iret(machine):
    cpu, ram, _, writes = machine
    start_pm(cpu, ram, IDT_SETUP + gate(0x80, "handler") + """
    movl $5, %ecx
    int $0x80
    movb %cl, %al
    outb %al, $0x80            /* handler doubled ECX: expect 10 */
    movw $0x2a, %ax
    movw $0x501, %dx; outw %ax, %dx
    hlt
handler:
    addl %ecx, %ecx
    iret
""")
    result = cpu.run(budget_ns=2_000_000_000)
    assert (result.reason, result.exit_code) == (StopReason.EXIT, 42)
    assert writes == [10]


def test_protected_mode_hardware_interrupts_wake_hlt(machine):
    cpu, ram, intc, writes = machine
    start_pm(cpu, ram, IDT_SETUP + gate(0x20, "tick") + """
    xorl %ebx, %ebx
    sti
2:  hlt
    cmpl $3, %ebx
    jb 2b
    movb %bl, %al
    outb %al, $0x80
    movw $0, %ax
    movw $0x501, %dx; outw %ax, %dx
tick:
    incl %ebx
    pushfl
    popl %eax
    andl $0x200, %eax          /* IF must be clear inside an interrupt gate */
    shrl $9, %eax
    outb %al, $0x80
    movl $1, 0x5000            /* ask for the next interrupt */
    iret
""")
    timer = cpu.time.clock.timer(lambda: None)

    def rearm():
        if ram.buffer[0x5000]:
            ram.buffer[0x5000] = 0
            intc.armed += 1
        return False
    intc.armed = 1
    result = cpu.run(budget_ns=2_000_000_000, should_stop=rearm)
    assert result.reason == StopReason.EXIT
    assert intc.acks == 3
    assert writes == [0, 0, 0, 3]
    del timer


def test_interrupts_not_taken_with_if_clear(machine):
    cpu, ram, intc, _ = machine
    start_pm(cpu, ram, IDT_SETUP + gate(0x20, "tick") + """
    cli
    hlt
tick:
    movw $1, %ax
    movw $0x501, %dx; outw %ax, %dx
""")
    intc.armed = 1
    result = cpu.run(budget_ns=1_000_000_000)
    assert result.reason == StopReason.HALTED
    assert intc.acks == 0


def test_real_mode_interrupt_through_ivt(machine):
    cpu, ram, intc, writes = machine
    code = assemble("""
.code16
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %ss
    movw $0x7000, %sp
    movw $handler, 0x08*4      /* IVT[8] = 1000:handler */
    movw $0x1000, 0x08*4+2
    movw $soft, 0x60*4
    movw $0x1000, 0x60*4+2
    xorw %bx, %bx
    int $0x60                          /* software interrupt: BX += 0x100 */
    sti
1:  hlt
    cmpb $2, %bl
    jb 1b
    movb %bh, %al
    outb %al, $0x80
    movb %bl, %al
    outb %al, $0x80
    movw $7, %ax
    movw $0x501, %dx; outw %ax, %dx
handler:
    incb %bl
    movw %sp, %si
    movw 4(%si), %ax                   /* pushed FLAGS: IF was set */
    shrw $9, %ax
    andb $1, %al
    outb %al, $0x80
    iret
soft:
    addw $0x100, %bx
    iret
""", 0)                                     # offsets within segment 0x1000
    ram.load(CODE, code)
    cpu.reset_to_real_mode()
    cpu.set_reg("cs", 0x1000)
    cpu.set_reg("eip", 0)
    intc.vector = 0x08
    intc.armed = 2
    result = cpu.run(budget_ns=2_000_000_000)
    assert (result.reason, result.exit_code) == (StopReason.EXIT, 7)
    assert writes == [1, 1, 1, 2]


def test_invalid_opcode_reaches_idt(machine):
    cpu, ram, _, writes = machine
    start_pm(cpu, ram, IDT_SETUP + gate(6, "ud") + """
    ud2
ud:
    movw $6, %ax
    movw $0x501, %dx; outw %ax, %dx
""")
    result = cpu.run(budget_ns=1_000_000_000)
    assert (result.reason, result.exit_code) == (StopReason.EXIT, 6)


def test_triple_fault_is_a_clear_error(machine):
    cpu, ram, _, _ = machine
    start_pm(cpu, ram, """
    lidt idtr
    int $0x30
idtr: .word 0
      .long 0
""")
    with pytest.raises(GuestRunError, match="triple fault at EIP 0x1000") as info:
        cpu.run(budget_ns=1_000_000_000)
    assert info.value.address is not None


def test_unmapped_access_names_the_address(machine):
    cpu, ram, _, _ = machine
    start_pm(cpu, ram, "movl 0xd0000000, %eax\n hlt")
    with pytest.raises(GuestRunError, match="read from unmapped guest address 0xd0000000") as info:
        cpu.run(budget_ns=1_000_000_000)
    assert info.value.address == 0xD0000000


def test_runaway_guest_hits_budget(machine):
    cpu, ram, _, _ = machine
    start_pm(cpu, ram, "1: jmp 1b")
    result = cpu.run(budget_ns=50_000_000)
    assert result.reason == StopReason.TIMEOUT
    assert result.eip == CODE


def test_mmio_window_follows_space(machine):
    cpu, ram, _, writes = machine
    seen = []
    region = cpu.mmio.add("dev", 0xFEB00010, 0x10, lambda o, s: 0x1234 + o,
                          lambda o, s, v: seen.append((o, s, v)))
    start_pm(cpu, ram, """
    movl 0xfeb00014, %eax
    outb %al, $0x80
    movl $0xabcd, 0xfeb00018
    movw $0, %ax
    movw $0x501, %dx; outw %ax, %dx
""")
    cpu.run(budget_ns=1_000_000_000)
    assert writes == [0x38] and seen == [(8, 4, 0xABCD)]
    cpu.mmio.remove(region)
    start_pm(cpu, ram, "movl 0xfeb00014, %eax\n hlt")
    with pytest.raises(GuestRunError, match="0xfeb00014"):
        cpu.run(budget_ns=1_000_000_000)


@pytest.mark.parametrize("bulk", [False, True], ids=["per-word", "one-call"])
@pytest.mark.parametrize("direction", ["in", "out"])
def test_rep_string_io_survives_stops(machine, direction, bulk):
    """Unicorn replays the interrupted iteration of REP INSW/OUTSW after a stop;
    the device must still see each word exactly once, whether the CPU moves
    the words one hook call at a time or a whole run at once (a region with
    read_repeat/write_repeat, served in chunks of 250 words), with interrupt
    handlers run between iterations and slices stopped in the middle."""
    cpu, ram, intc, _ = machine
    words = 3000
    seen = []
    counter = iter(range(1, 1 << 20))
    calls = []

    def event():
        if len(seen) % 97 == 0:
            intc.armed += 1                            # an interrupt, taken mid-REP
            cpu.interrupt_raised(True)
        if len(seen) % 211 == 0:
            cpu._slice_timer.kick()                    # and a slice stopped mid-REP

    def read(offset, size):
        value = next(counter)
        seen.append(value)
        event()
        return value

    def write(offset, size, value):
        seen.append(value)
        event()

    def read_repeat(offset, size, count):
        calls.append(count)
        return b"".join(read(offset, size).to_bytes(2, "little") for _ in range(min(count, 250)))

    def write_repeat(offset, size, data):
        calls.append(len(data) // 2)
        units = min(len(data) // 2, 250)
        for i in range(units):
            write(offset, size, int.from_bytes(data[2 * i:2 * i + 2], "little"))
        return units

    cpu.io.add("fifo", 0x1F0, 2, read, write,
               read_repeat=read_repeat if bulk else None, write_repeat=write_repeat if bulk else None)
    ram.load(0x200000, b"".join(i.to_bytes(2, "little") for i in range(1, words + 1)))
    op = "rep insw" if direction == "in" else "rep outsw"
    start_pm(cpu, ram, IDT_SETUP + gate(0x20, "isr") + f"""
    movl ${words}, %ecx
    movl $0x200000, %edi
    movl $0x200000, %esi
    movw $0x1f0, %dx
    cld
    sti
    {op}
    cli
    movw $0x501, %dx
    movw $0, %ax
    outw %ax, %dx
isr:
    iret
""")
    result = cpu.run(budget_ns=5_000_000_000)
    assert result.reason == StopReason.EXIT
    assert seen == list(range(1, words + 1))
    assert intc.acks == words // 97 and intc.armed == 0
    stored = [int.from_bytes(ram.buffer[0x200000 + 2 * i:0x200002 + 2 * i], "little") for i in range(words)]
    assert stored == list(range(1, words + 1))
    assert bool(calls) == bulk and len(calls) < (words // 100 if bulk else 1)


@pytest.mark.parametrize("access", ["mmio", "port"])
def test_a_doorbell_that_raises_an_interrupt_is_written_once(machine, access):
    """A device raising its interrupt inside the guest's write (an AHCI PxCI
    doorbell completing at once), with IF set and an interrupt handler that
    touches the device itself: the write reaches the device once, the
    handler runs once, and the guest goes on after the write."""
    cpu, ram, intc, writes = machine
    doorbells, reads = [], []

    def ring(offset, size, value):
        doorbells.append(value)
        intc.armed += 1
        cpu.interrupt_raised()
    if access == "mmio":
        cpu.mmio.add("bell", 0xFEB00000, 0x10, lambda o, s: reads.append(o) or 0, ring)
        ring_insn, status_insn = "movl %eax, 0xFEB00000", "movl 0xFEB00004, %eax"
    else:
        cpu.io.add("bell", 0x300, 8, lambda o, s: reads.append(o) or 0, ring)
        ring_insn, status_insn = "movw $0x300, %dx; outl %eax, %dx", \
            "movw $0x304, %dx; inl %dx, %eax"
    start_pm(cpu, ram, IDT_SETUP + gate(0x20, "isr") + f"""
    xorl %ebx, %ebx
    sti
    movl $0x11, %eax
    {ring_insn}
    movl $0x22, %ecx               /* after the write: runs once, after the handler */
    movb %cl, %al
    outb %al, $0x80
1:  cmpl $1, %ebx
    jb 1b
    movw $0, %ax
    movw $0x501, %dx; outw %ax, %dx
isr:
    pushl %eax
    pushl %edx
    {status_insn}                  /* the handler reads the device's status */
    incl %ebx
    movb $0x33, %al
    outb %al, $0x80
    popl %edx
    popl %eax
    iret
""")
    result = cpu.run(budget_ns=2_000_000_000)
    assert result.reason == StopReason.EXIT
    assert doorbells == [0x11] and intc.acks == 1 and len(reads) == 1
    assert sorted(writes) == [0x22, 0x33]


@pytest.mark.parametrize("follower", ["incl %ebx", "jmp 3f\n3:"])
def test_the_sti_shadow_lets_exactly_one_instruction_run(machine, follower):
    """An interrupt waiting while IF is clear is taken after the instruction
    that follows STI (SDM vol. 2, STI), here inside a one-instruction window
    ``sti; X; cli``: the handler sees X done, and the CLI not yet."""
    cpu, ram, intc, writes = machine
    start_pm(cpu, ram, IDT_SETUP + gate(0x20, "isr") + f"""
    xorl %ebx, %ebx
    xorl %esi, %esi
    movl $5, %edi
2:  sti
    {follower}
    cli
    cmpl $0, %esi
    jne 4f
    decl %edi
    jnz 2b
4:  movl %esi, %eax
    outb %al, $0x80
    movw $0, %ax
    movw $0x501, %dx; outw %ax, %dx
isr:
    movl %ebx, %eax
    addl $0x10, %eax
    outb %al, $0x80             /* what the follower left: 0x11 after incl, 0x10 after jmp */
    movl $1, %esi
    iret
""")
    intc.armed = 1                                # pending from the start, IF clear
    result = cpu.run(budget_ns=2_000_000_000)
    assert result.reason == StopReason.EXIT and intc.acks == 1
    assert writes == [0x11 if follower.startswith("incl") else 0x10, 1]


def test_the_exit_port_ends_the_run_before_what_follows_it(machine):
    """Unicorn runs on to the end of the block after a callback stops it:
    those instructions reach no device, and a fault among them (an IRET
    with no frame here) does not outlive the exit."""
    cpu, ram, intc, writes = machine
    start_pm(cpu, ram, IDT_SETUP + """
    movb $1, %al
    outb %al, $0x80
    movw $3, %ax
    movw $0x501, %dx; outw %ax, %dx
    movb $0x99, %al
    outb %al, $0x80
    iret
""")
    result = cpu.run(budget_ns=1_000_000_000)
    assert (result.reason, result.exit_code) == (StopReason.EXIT, 3)
    assert writes == [1]


@pytest.mark.parametrize("access", ["mmio", "port"])
def test_an_exception_in_a_device_callback_ends_the_run_with_it(machine, access):
    """A device model's bug surfaces as its own exception from run(), whether
    the access came through a port or an MMIO page."""
    cpu, ram, _, _ = machine

    def broken(offset, size):
        raise ValueError(f"device model bug at {offset}")
    if access == "mmio":
        cpu.mmio.add("dev", 0xFEB00000, 0x10, broken, lambda o, s, v: None)
        insn = "movl 0xFEB00004, %eax"
    else:
        cpu.io.add("dev", 0x300, 8, broken, lambda o, s, v: None)
        insn = "movw $0x304, %dx; inl %dx, %eax"
    start_pm(cpu, ram, f"{insn}\n hlt\n")
    with pytest.raises(ValueError, match="device model bug at 4"):
        cpu.run(budget_ns=1_000_000_000)

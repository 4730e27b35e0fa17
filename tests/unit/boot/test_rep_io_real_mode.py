"""REP INSW/OUTSW in real mode with 32-bit addresses (a 67h prefix) take the
one-call path: SeaBIOS reads IDE sectors in its 16-bit INT 13h handler with
``rep insw (%dx),%es:(%edi)``, and a hook call per word made booting from
the IDE disk ten times slower than from AHCI.  Each word still reaches the
device and memory exactly once, across interrupts taken between iterations
and slices stopped in the middle.
"""

import pytest

from asm import assemble
from drivebay.boot.cpu import Cpu, StopReason
from drivebay.boot.ram import GuestRam
from drivebay.hw.clock import VirtualClock
from drivebay.hw.memory import IoSpace, MmioSpace

CODE, SEGMENT, OFFSET, WORDS = 0x7C00, 0x2000, 0x10, 3000
EXIT_PORT, DATA_PORT = 0x501, 0x1F0


class Intc:
    def __init__(self):
        self.waiting = self.acks = 0

    def pending(self):
        return self.waiting > 0

    def acknowledge(self):
        self.waiting -= 1
        self.acks += 1
        return 0x08


@pytest.mark.parametrize("direction", ["in", "out"])
def test_addr32_rep_string_io_in_real_mode_is_one_call_and_exact(direction):
    ram = GuestRam(4 << 20)
    io = IoSpace()
    intc = Intc()
    cpu = Cpu(ram, io, MmioSpace(), VirtualClock(), intc)
    seen, calls = [], []
    counter = iter(range(1, 1 << 20))

    def note(value):
        seen.append(value)
        if len(seen) % 97 == 0:
            intc.waiting += 1                       # an interrupt taken mid-run
            cpu.interrupt_raised(True)
        if len(seen) % 211 == 0:
            cpu._slice_timer.kick()                 # a slice stopped mid-run
        return value

    def read_repeat(offset, size, count):
        calls.append(count)
        return b"".join(note(next(counter)).to_bytes(2, "little") for _ in range(min(count, 250)))

    def write_repeat(offset, size, data):
        calls.append(len(data) // 2)
        units = min(len(data) // 2, 250)
        for i in range(units):
            note(int.from_bytes(data[2 * i:2 * i + 2], "little"))
        return units

    io.add("fifo", DATA_PORT, 2, lambda o, s: note(next(counter)), lambda o, s, v: note(v),
           read_repeat=read_repeat, write_repeat=write_repeat)
    io.add("exit", EXIT_PORT, 2, lambda o, s: 0xFFFF, lambda o, s, v: cpu.request_exit(v))
    base = SEGMENT * 16 + OFFSET
    ram.load(base, b"".join(i.to_bytes(2, "little") for i in range(1, WORDS + 1)))
    op = "rep insw (%dx), %es:(%edi)" if direction == "in" else "rep outsw %ds:(%esi), (%dx)"
    ram.load(0x500, b"\xcf")                      # IRET, the handler of vector 8
    ram.load(8 * 4, (0x500).to_bytes(4, "little"))
    ram.load(CODE, assemble(f"""
.code16
    xorw %ax, %ax
    movw %ax, %ss
    movw $0x7000, %sp
    sti
    movw ${SEGMENT:#x}, %ax
    movw %ax, %es
    movw %ax, %ds
    movl ${OFFSET:#x}, %edi
    movl ${OFFSET:#x}, %esi
    movl ${WORDS}, %ecx
    movw ${DATA_PORT:#x}, %dx
    cld
    addr32 {op}
    xorw %ax, %ax
    movw ${EXIT_PORT:#x}, %dx
    outw %ax, %dx
1:  hlt
    jmp 1b
""", CODE))
    cpu.reset_to_real_mode()
    cpu.set_reg("cs", 0)
    cpu.set_reg("eip", CODE)
    result = cpu.run(budget_ns=5_000_000_000)
    assert (result.reason, result.exit_code) == (StopReason.EXIT, 0)
    assert seen == list(range(1, WORDS + 1))
    stored = [int.from_bytes(ram.buffer[base + 2 * i:base + 2 * i + 2], "little") for i in range(WORDS)]
    assert stored == list(range(1, WORDS + 1))
    assert 0 < len(calls) < WORDS // 100
    assert intc.acks == WORDS // 97

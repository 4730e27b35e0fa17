"""A slice that ends at its deadline resumes exactly where it stopped.

Unicorn's own timeout stops the CPU from another thread, and where that
lands between chained translation blocks EIP is left at an earlier
instruction: the next slice ran some instructions twice (GRUB's LZMA
decoder applied an ``add`` to its probability table twice and crashed).
The guest here does nothing but read-modify-write memory in a loop while
counting the rounds in a register, across a few hundred slice ends; any
instruction run twice makes the memory counters and the register disagree.
"""

from asm import assemble
from drivebay.boot.cpu import Cpu, StopReason
from drivebay.boot.ram import GuestRam
from drivebay.hw.clock import VirtualClock
from drivebay.hw.memory import IoSpace, MmioSpace

CODE, DATA, EXIT_PORT = 0x10000, 0x30000, 0x501
ROUNDS = 3_000_000

PROGRAM = f"""
    movl $0x9000, %esp
    movl ${DATA:#x}, %ecx
    xorl %esi, %esi
1:  call bump
    incl %esi
    cmpl ${ROUNDS}, %esi
    jb 1b
    movw ${EXIT_PORT:#x}, %dx
    xorl %eax, %eax
    outw %ax, %dx
2:  hlt
    jmp 2b
bump:
    movl $3, %edx
    addl %edx, (%ecx)        /* +3 */
    subl $1, 4(%ecx)         /* -1 */
    shll $0, 8(%ecx)
    incl 8(%ecx)             /* +1 */
    ret
"""


def test_slices_ending_at_their_deadline_run_no_instruction_twice():
    ram = GuestRam(4 << 20)
    io, clock = IoSpace(), VirtualClock()
    cpu = Cpu(ram, io, MmioSpace(), clock)
    io.add("exit", EXIT_PORT, 2, lambda o, s: 0xFFFF, lambda o, s, v: cpu.request_exit(v))
    ram.load(CODE, assemble(PROGRAM, CODE))
    cpu.enter_flat_protected_mode(CODE)
    result = cpu.run(budget_ns=600_000_000_000)
    assert (result.reason, result.exit_code) == (StopReason.EXIT, 0)
    counters = [int.from_bytes(ram.buffer[DATA + i:DATA + i + 4], "little") for i in (0, 4, 8)]
    assert counters == [3 * ROUNDS, (-ROUNDS) & 0xFFFFFFFF, ROUNDS]

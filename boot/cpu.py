"""The x86 CPU: unicorn runs the instructions, this loop does the rest of a PC CPU.

Unicorn executes guest code but has no interrupt pins, no local APIC and no
notion of virtual time.  This module supplies them:

* port I/O (IN/OUT and the string forms) goes to ``hw.memory.IoSpace``;
* MMIO windows of ``hw.memory.MmioSpace`` are mapped page by page with
  ``mmio_map`` as devices add and remove them (PCI BARs move at run time);
* hardware interrupts are taken at the first block boundary where
  EFLAGS.IF allows, by the C block hook without leaving ``emu_start``
  (_slice_stop.pyx; the acknowledge is a Python call), and software
  interrupts and CPU exceptions (which unicorn hands to UC_HOOK_INTR without
  delivering) between slices here: through the IVT in real mode, through
  the IDT in protected mode (Intel SDM vol. 3, 6.12 and 20.1.4);
* HLT ends a slice: with IF=1 the loop skips virtual time to the next timer
  deadline, with IF=0 the guest is stopped for good;
* a triple fault, an access to unmapped memory or a guest that exceeds its
  time budget ends the run with a GuestRunError naming the guest address.

Not supported yet: paging during interrupt delivery, task gates, privilege
changes (ring 3 interrupted), virtual-8086 mode.
"""

import ctypes
import enum
import struct
import time
from dataclasses import dataclass

from unicorn import (UC_ARCH_X86, UC_ERR_FETCH_UNMAPPED, UC_ERR_INSN_INVALID, UC_ERR_READ_UNMAPPED,
                     UC_ERR_WRITE_UNMAPPED, UC_HOOK_INTR,
                     UC_HOOK_MEM_UNMAPPED, UC_MEM_FETCH_UNMAPPED, UC_MEM_WRITE_UNMAPPED,
                     UC_MODE_32, UC_PROT_ALL, UC_PROT_EXEC, UC_PROT_READ, Uc, UcError)
from unicorn import x86_const as X
from unicorn.unicorn_py3 import unicorn as _uc_native

from drivebay import trace
from drivebay.boot.slice_timer import CALLBACK_ERROR, DELIVER, IDLE, SliceTimer
from drivebay.errors import GuestRunError

PAGE = 0x1000
PAGE_SHIFT = 12
SLICE_US = 10_000              # longest stretch of guest code between interrupt checks
EFLAGS_IF = 1 << 9
EFLAGS_DF = 1 << 10
STRING_PREFIXES = frozenset({0xF3, 0xF2, 0x66, 0x67, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65})
SEGMENT_OVERRIDES = frozenset({0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65})
EFLAGS_TF = 1 << 8
EFLAGS_AC = 1 << 18
EFLAGS_NT = 1 << 14
EFLAGS_RF = 1 << 16
EFLAGS_VM = 1 << 17
CR0_PE = 1 << 0
CR0_PG = 1 << 31
# Exceptions that push an error code (SDM vol. 3, table 6-1).
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21})
VECTOR_DF = 8
VECTOR_UD = 6
# Gate types in an IDT descriptor (SDM vol. 3, 6.11).
GATE_INT16, GATE_TRAP16, GATE_INT32, GATE_TRAP32 = 0x6, 0x7, 0xE, 0xF
UNTIL = 1 << 40                 # an end address EIP can never reach
IO_SLICE_US = 1_000             # slice length while block requests are in flight
IO_WAIT_MAX_S = 0.005           # a halted CPU waits this long at most for a block completion
MAX_SYNC_STEP_NS = 25_000_000   # virtual time moves at most this far between two looks


class StopReason(enum.Enum):
    EXIT = "exit"          # the guest wrote its status to the exit port
    HALTED = "halted"      # HLT with interrupts disabled: nothing can wake it
    RESET = "reset"        # the guest asked the chipset for a reset
    TIMEOUT = "timeout"    # the run's time budget ran out
    STOPPED = "stopped"    # the host asked (Ctrl-C, a console match)


@dataclass
class RunResult:
    reason: StopReason
    exit_code: int = 0
    virtual_ns: int = 0
    eip: int = 0


class HostPacedTime:
    """Virtual time that follows the host's monotonic clock while the guest runs
    and jumps ahead over idle periods (HLT with nothing pending)."""

    def __init__(self, clock):
        self.clock = clock
        self._base = time.monotonic_ns() - clock.now_ns()

    def sync(self, halted=False):
        """Move virtual time to the host's.  ``halted``: the guest was idle
        meanwhile (HLT with a block request in flight), so however long the
        host took, the guest saw all of it go by."""
        now = time.monotonic_ns() - self._base
        current = self.clock.now_ns()
        if now > current + MAX_SYNC_STEP_NS and not halted:
            # The host stalled (a loaded machine, a GC pause): the guest did
            # not run meanwhile, so its time does not leap either; otherwise
            # its timeouts would expire with no chance to see the events.
            self._base += now - current - MAX_SYNC_STEP_NS
            now = current + MAX_SYNC_STEP_NS
        if now > current:
            self.clock.advance_to(now)
        return self.clock.now_ns()

    def skip_to(self, ns):
        """Idle until virtual ``ns``: time jumps rather than the host sleeping."""
        if ns > self.clock.now_ns():
            self._base -= ns - self.clock.now_ns()
            self.clock.advance_to(ns)


class Cpu:
    """One x86 CPU attached to guest RAM, the port space and the MMIO space.

    ``intc`` is the CPU's interrupt controller (the local APIC): it has
    ``pending() -> bool`` and ``acknowledge() -> vector``.

    ``block_io`` is the I/O executor of the machine's disks (block/io.py),
    or None.  Its completions reach the devices on this thread: the
    executor's ``notify`` flags them to the block hook, which hands them over
    at the next block boundary (and the loop at each slice start); slices
    are kept short while requests are in flight.  A halted CPU with requests in flight waits for them on the host
    instead of letting virtual time leap: a guest's command timeout must not
    expire while the host is still doing its I/O.
    """

    def __init__(self, ram, io, mmio, clock, intc=None):
        self.ram = ram
        self.io = io
        self.mmio = mmio
        self.intc = intc
        self.time = HostPacedTime(clock)
        self.uc = uc = Uc(UC_ARCH_X86, UC_MODE_32)
        uc.mem_map_ptr(0, ram.size, UC_PROT_ALL, ram.address)
        self._roms = []
        self._mmio_pages = {}            # page address -> number of regions on it
        self._stop_reason = None
        self._exit_code = 0
        self._pending_soft = None        # (vector, is_software) from UC_HOOK_INTR
        self._fault = None
        self._running = False
        self._replay_candidate = None    # a REP INS/OUTS access the CPU may run again
        self._last_io = None             # (is_out, port, size, (eip, ecx, edi|esi), value) of the last one
        self._fresh_mmio = False         # no MMIO access yet in this slice
        self._mmio_replay = None         # (is_write, address, size, value) that may be replayed
        self._stop_requested = False     # emu_stop was called during this slice
        self._slice_timer = SliceTimer(uc, ram, intack=self._intack if intc is not None else None,
                                       service=self._service, ports=(self._port_in, self._port_out),
                                       mmio=(self._mmio_read, self._mmio_write))
        self._block_io = None            # the disks' I/O executor (see the class docstring)
        self._uch = uc._uch
        self._reg_value = ctypes.c_uint64()
        self._reg_ref = ctypes.byref(self._reg_value)
        self.code_pages = self._slice_timer.code_pages   # pages code ran from (invalidate_code)
        uc.hook_add(UC_HOOK_INTR, self._hook_intr)
        uc.hook_add(UC_HOOK_MEM_UNMAPPED, self._hook_unmapped)
        mmio.listeners.append(self._mmio_changed)
        for region in mmio.regions:
            self._mmio_changed("add", region)

    # -- memory map ---------------------------------------------------------

    def map_rom(self, address, data):
        """Map ``data`` read-only at ``address`` (page aligned), e.g. a BIOS image."""
        size = (len(data) + PAGE - 1) & ~(PAGE - 1)
        buf = bytearray(size)
        buf[:len(data)] = data
        import ctypes
        anchor = (ctypes.c_char * size).from_buffer(buf)
        self._roms.append((buf, anchor))
        self.uc.mem_map_ptr(address, size, UC_PROT_READ | UC_PROT_EXEC, ctypes.addressof(anchor))

    def _mmio_changed(self, event, region):
        first = region.base & ~(PAGE - 1)
        last = (region.base + region.size - 1) & ~(PAGE - 1)
        for page in range(first, last + PAGE, PAGE):
            count = self._mmio_pages.get(page, 0)
            if event == "add":
                if count == 0:
                    try:
                        self._slice_timer.mmio_map(page, PAGE)
                    except UcError:
                        # Real hardware would decode both; we keep RAM and say so.
                        trace.guest_error("cpu", f"MMIO window {region.name} at {page:#x} overlaps "
                                                 f"RAM or a ROM: not mapped")
                        continue
                self._mmio_pages[page] = count + 1
            elif count:
                if count == 1:
                    self._slice_timer.mmio_unmap(page, PAGE)
                    del self._mmio_pages[page]
                else:
                    self._mmio_pages[page] = count - 1

    # An MMIO access is replayed the same way when the CPU is stopped while
    # its callback runs (unicorn then restarts the instruction; EIP is not
    # exact inside these callbacks, so it cannot be compared).  An access
    # during which a stop became due (our own stop request, or the slice's
    # time running out) is remembered; if the next slice begins with the
    # same access, that is the replay: a write is dropped, a read answered
    # from memory.  Any other access in between forgets it.

    def _mmio_read(self, address, size):
        self.time.sync()
        replay = self._mmio_replay
        self._mmio_replay = None
        if self._fresh_mmio:
            self._fresh_mmio = False
            if replay is not None and replay[:3] == (False, address, size):
                return replay[3]
        value = self.mmio.read(address, size)
        if self._stop_due():
            self._mmio_replay = (False, address, size, value)
        return value

    def _mmio_write(self, address, size, value):
        if self._stop_reason is not None:
            return                       # the machine has stopped (see run)
        self.time.sync()
        replay = self._mmio_replay
        self._mmio_replay = None
        if self._fresh_mmio:
            self._fresh_mmio = False
            if replay == (True, address, size, value):
                return
        self.mmio.write(address, size, value)
        if self._stop_due():
            self._mmio_replay = (True, address, size, value)

    def _stop_due(self):
        """A stop will end the slice at the end of the current instruction."""
        # The slice's deadline ends it only at a block start (slice_timer.py),
        # never inside an instruction, so only a stop requested by a callback counts.
        return self._stop_requested

    # -- hooks ----------------------------------------------------------------

    # Unicorn aborts the current iteration of a REP INS/OUTS when the CPU is
    # stopped (a timed slice ending, an interrupt kick) *after* the port hook
    # ran, then runs that iteration again when emulation resumes: the device
    # would see one read or write too many and a word of data would be lost.
    # So when a slice stops at the REP instruction of the last port access,
    # that access is kept; when the guest comes back to it (perhaps after an
    # interrupt handler ran), the same port, EIP, ECX and EDI/ESI mean the
    # same iteration, answered from memory instead of the device.

    #
    # A REP INSW/OUTSW on a port whose region serves repeats (an IDE data
    # register) is done in one hook call: the hook moves all but one unit
    # itself, between guest memory and the device, and leaves EDI/ESI and ECX
    # one iteration from the end; unicorn finishes that iteration.  Unicorn
    # stores an IN's value at the EDI it had before the hook, but resumes
    # from the updated registers, so the first unit is returned and the
    # replay record names the last one.

    def _port_in(self, port, size, eip, ecx, edi):
        """IN, INS (one iteration, or a whole REP on a data port): EIP, ECX
        and EDI come from the C trampoline (slice_timer.py)."""
        self.time.sync()
        where = (eip, ecx, edi)
        cand = self._replay_candidate
        if cand is not None and cand[3][0] == eip:
            # Back at the stopped instruction: the replay, or it moved on.
            self._replay_candidate = None
            if cand[:4] == (False, port, size, where):
                return cand[4]
        region = self.io.find(port)
        if region is not None and region.read_repeat is not None and ecx > 1 and size > 1:
            step = self._string_io(eip)
            if step is not None and step[0] == "ins":
                data = self.io.read_repeat(region, port, size, ecx)
                n = len(data) // size
                if n:
                    if n > 1:
                        # Unit 0 too: should the CPU be stopped before its
                        # store, the replayed iteration stores the last unit.
                        self._write_linear(step[1] + edi, data[:n * size])
                        self.set_reg("edi", edi + size * (n - 1))
                        self.set_reg("ecx", ecx - (n - 1))
                    last_value = int.from_bytes(data[(n - 1) * size:n * size], "little")
                    self._last_io = (False, port, size,
                                     (eip, ecx - (n - 1), edi + size * (n - 1)), last_value)
                    return int.from_bytes(data[:size], "little")
        value = self.io.read(port, size)
        self._last_io = (False, port, size, where, value)
        return value

    def _port_out(self, port, size, value, eip, ecx, esi):
        if self._stop_reason is not None:
            return                       # the machine has stopped (see run)
        self.time.sync()
        where = (eip, ecx, esi)
        cand = self._replay_candidate
        if cand is not None and cand[3][0] == eip:
            self._replay_candidate = None
            if cand == (True, port, size, where, value):
                return
        region = self.io.find(port)
        if region is not None and region.write_repeat is not None and ecx > 1 and size > 1:
            step = self._string_io(eip)
            if step is not None and step[0] == "outs":
                rest = self._read_phys(self._linear(step[1] + esi + size), size * (ecx - 1))
                units = self.io.write_repeat(region, port, size,
                                             value.to_bytes(size, "little") + rest)
                if units > 1:
                    # The last unit taken is the one unicorn now reads and "writes".
                    self.set_reg("esi", esi + size * (units - 1))
                    self.set_reg("ecx", ecx - (units - 1))
                    last_value = int.from_bytes(rest[(units - 2) * size:(units - 1) * size], "little")
                    self._last_io = (True, port, size,
                                     (eip, ecx - (units - 1), esi + size * (units - 1)), last_value)
                    return
                if units == 1:
                    self._last_io = (True, port, size, where, value)
                    return
        self.io.write(port, size, value)
        self._last_io = (True, port, size, where, value)

    def _rep_string_io(self, eip):
        """(opcode, prefixes) of a REP INS/OUTS at CS:EIP, in any mode; else None."""
        try:
            code = self._read_phys(self._linear(self.segment_base(self.reg("cs")) + eip), 5)
        except (GuestRunError, UcError):
            return None
        count = next((i for i, b in enumerate(code) if b not in STRING_PREFIXES), len(code))
        prefixes = code[:count]
        if count >= len(code) or 0xF3 not in prefixes or code[count] not in (0x6C, 0x6D, 0x6E, 0x6F):
            return None
        return code[count], prefixes

    def _string_io(self, eip):
        """For a REP INS/OUTS at CS:EIP that the one-call path handles (32-bit
        addresses, i.e. 32-bit code or a 67h prefix in 16-bit code as
        SeaBIOS's ``rep insw (%dx),%es:(%edi)`` in real mode; DF clear; no
        segment override on OUTS): ("ins", ES base) or ("outs", DS base);
        None otherwise (each iteration then goes through the hook on its own)."""
        found = self._rep_string_io(eip)
        if found is None:
            return None
        op, prefixes = found
        if self.reg("eflags") & EFLAGS_DF or self._code32() == (0x67 in prefixes):
            return None
        if op in (0x6C, 0x6D):
            # INS stores to ES:EDI, which no prefix overrides (SDM vol. 2, INS).
            return ("ins", self.segment_base(self.reg("es")))
        if set(prefixes) & SEGMENT_OVERRIDES:
            return None
        return ("outs", self.segment_base(self.reg("ds")))

    def _code32(self):
        """The current code segment uses 32-bit addresses (descriptor D bit)."""
        if not self.protected:
            return False
        _, base, limit, _ = self.uc.reg_read(X.UC_X86_REG_GDTR)
        index = self.reg("cs") & ~7
        if index + 7 > limit:
            return False
        high = struct.unpack("<I", self._read_phys(base + index + 4, 4))[0]
        return bool(high & (1 << 22))

    def _hook_intr(self, uc, vector, data):
        self._pending_soft = vector
        uc.emu_stop()

    def _hook_unmapped(self, uc, access, address, size, value, data):
        kind = {UC_MEM_WRITE_UNMAPPED: "write to", UC_MEM_FETCH_UNMAPPED: "instruction fetch from"}
        self._fault = (f"{kind.get(access, 'read from')} unmapped guest address {address:#x} "
                       f"({size} bytes)", address)
        return False

    # -- control from devices and the host -----------------------------------------

    def interrupt_raised(self, level=True):
        """Sink for the interrupt controller's INTR line.  The block hook takes
        the interrupt at the next block boundary where IF is set, without
        stopping the slice (slice_timer.py).

        Never with emu_stop() from the device's callback: unicorn would then
        run the interrupted MMIO or port access again after the stop, and
        the interrupt handler between the two (with accesses of its own)
        hides that it is a replay, so a write to a doorbell like PxCI would
        reach the device twice."""
        self._slice_timer.set_irq(level)

    @property
    def block_io(self):
        return self._block_io

    @block_io.setter
    def block_io(self, io):
        """The executor's completions wake the block hook (``notify``), which
        hands them to the devices at the next block boundary."""
        old, wake = self._block_io, self._slice_timer.io_ready
        if old is not None and getattr(old, "notify", None) == wake:
            old.notify = None
        self._block_io = io
        if io is not None and hasattr(io, "notify"):
            io.notify = wake

    def request_exit(self, code):
        self._stop(StopReason.EXIT, code)

    def request_reset(self, hard=False):
        self._stop(StopReason.RESET)

    def request_stop(self):
        self._stop(StopReason.STOPPED)

    def _stop(self, reason, code=0):
        if self._stop_reason is None:
            self._stop_reason = reason
            self._exit_code = code
        if self._running:
            self._stop_requested = True
            self.uc.emu_stop()

    # -- registers and segments ---------------------------------------------------

    def invalidate_code(self, address, length):
        """Forget translated code in RAM at [address, address + length): it was
        written behind unicorn's back (a device's DMA, a store of this loop).
        Unicorn notices only the CPU's own stores to a page holding code.

        Only pages code has run from since their last invalidation hold
        translations (``code_pages``, kept by the block hook), so a DMA into
        a data buffer costs a look at a few bytes; a page that did hold code
        is dropped whole, which lets its mark be cleared."""
        if length <= 0:
            return
        first, last = address >> PAGE_SHIFT, (address + length - 1) >> PAGE_SHIFT
        marks = self.code_pages[first:last + 1]
        if not marks or marks.tobytes().find(1) < 0:
            return
        self.uc.ctl_remove_cache(first << PAGE_SHIFT, (last + 1) << PAGE_SHIFT)
        marks[:] = bytes(len(marks))

    def reg(self, name):
        """A register by name ("eip", "cs", "eflags", "cr0"...): general,
        segment (the selector) and control registers, through libunicorn
        directly (its Python wrapper's per-call dispatch cost more than the
        loop's own work for each interrupt taken)."""
        regid = _REG_IDS.get(name)
        if regid is None:
            return self.uc.reg_read(getattr(X, f"UC_X86_REG_{name.upper()}"))
        value = self._reg_value
        value.value = 0
        status = _uc_reg_read(self._uch, regid, self._reg_ref)
        if status:
            raise UcError(status)
        return value.value

    def set_reg(self, name, value):
        regid = _REG_IDS.get(name)
        if regid is None:
            self.uc.reg_write(getattr(X, f"UC_X86_REG_{name.upper()}"), value)
            return
        self._reg_value.value = value
        status = _uc_reg_write(self._uch, regid, self._reg_ref)
        if status:
            raise UcError(status)

    @property
    def protected(self):
        return bool(self.reg("cr0") & CR0_PE)

    def segment_base(self, selector):
        """Linear base of a segment register's current selector."""
        if not self.protected:
            return (selector & 0xFFFF) << 4
        if selector & 4:                     # LDT selectors: no guest here uses an LDT
            raise GuestRunError(f"LDT selector {selector:#x} in interrupt delivery is not supported",
                                self.reg("eip"))
        _, base, limit, _ = self.uc.reg_read(X.UC_X86_REG_GDTR)
        index = selector & ~7
        if index + 7 > limit:
            return 0
        low, high = struct.unpack("<II", self._read_phys(base + index, 8))
        return (low >> 16) | ((high & 0xFF) << 16) | (high & 0xFF000000)

    def _read_phys(self, address, length):
        if address + length <= self.ram.size:
            return bytes(self.ram.buffer[address:address + length])
        return bytes(self.uc.mem_read(address, length))

    def _linear(self, address):
        if self.reg("cr0") & CR0_PG:
            raise GuestRunError("interrupt delivery with paging enabled is not supported yet",
                                self.reg("eip"))
        return address & 0xFFFFFFFF

    def eip_linear(self):
        return self.segment_base(self.reg("cs")) + self.reg("eip")

    def reset_to_real_mode(self):
        """The state after RESET: real mode at F000:FFF0 (SDM vol. 3, 9.1.1)."""
        uc = self.uc
        uc.reg_write(X.UC_X86_REG_CR0, 0x60000010)
        for seg in ("ds", "es", "ss", "fs", "gs"):
            self.set_reg(seg, 0)
        self.set_reg("cs", 0xF000)
        self.set_reg("eip", 0xFFF0)
        self.set_reg("eflags", 0x2)
        self.set_reg("esp", 0)
        uc.reg_write(X.UC_X86_REG_IDTR, (0, 0, 0x3FF, 0))

    def enter_flat_protected_mode(self, entry, eax=0, ebx=0, gdt_address=0x800):
        """The machine state a multiboot loader hands over (Multiboot 0.6.96, 3.2):
        32-bit protected mode, flat 4 GiB code and data segments, paging off,
        interrupts disabled."""
        gdt = struct.pack("<QQQ", 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF)
        self.ram.load(gdt_address, gdt)
        uc = self.uc
        uc.reg_write(X.UC_X86_REG_GDTR, (0, gdt_address, len(gdt) - 1, 0))
        uc.reg_write(X.UC_X86_REG_CR0, 0x11)
        self.set_reg("cs", 0x08)
        for seg in ("ds", "es", "ss", "fs", "gs"):
            self.set_reg(seg, 0x10)
        self.set_reg("eflags", 0x2)
        self.set_reg("eax", eax)
        self.set_reg("ebx", ebx)
        self.set_reg("esp", 0x7000)
        self.set_reg("eip", entry)

    # -- interrupt delivery -------------------------------------------------------

    def _push16(self, ss_base, sp_reg, values):
        sp = self.reg(sp_reg) & 0xFFFF
        for v in values:
            sp = (sp - 2) & 0xFFFF
            self._write_linear(ss_base + sp, struct.pack("<H", v & 0xFFFF))
        self.set_reg("esp", (self.reg("esp") & 0xFFFF0000) | sp)

    def _write_linear(self, address, data):
        address = self._linear(address)
        if address + len(data) <= self.ram.size:
            self.ram.buffer[address:address + len(data)] = data
            self.invalidate_code(address, len(data))
        else:
            raise GuestRunError(f"interrupt delivery pushed to {address:#x}, outside guest RAM",
                                self.reg("eip"))

    def deliver(self, vector, error_code=None):
        """Enter the handler for ``vector`` as the CPU does at an instruction boundary."""
        eflags = self.reg("eflags")
        cs, eip = self.reg("cs"), self.reg("eip")
        if not self.protected:
            _, idt_base, idt_limit, _ = self.uc.reg_read(X.UC_X86_REG_IDTR)
            if vector * 4 + 3 > idt_limit:
                raise _DeliveryFault(f"vector {vector:#x} beyond the real-mode IVT limit {idt_limit:#x}")
            ip_new, cs_new = struct.unpack("<HH", self._read_phys(idt_base + vector * 4, 4))
            ss_base = self.segment_base(self.reg("ss"))
            self._push16(ss_base, "sp", (eflags, cs, eip))
            self.set_reg("eflags", eflags & ~(EFLAGS_IF | EFLAGS_TF | EFLAGS_AC | EFLAGS_RF))
            self.set_reg("cs", cs_new)
            self.set_reg("eip", ip_new)
            return
        _, idt_base, idt_limit, _ = self.uc.reg_read(X.UC_X86_REG_IDTR)
        if vector * 8 + 7 > idt_limit:
            raise _DeliveryFault(f"vector {vector:#x} beyond the IDT limit {idt_limit:#x}")
        low, high = struct.unpack("<II", self._read_phys(self._linear(idt_base + vector * 8), 8))
        gate_type = (high >> 8) & 0x1F
        if not high & 0x8000:
            raise _DeliveryFault(f"IDT gate {vector:#x} not present")
        if gate_type not in (GATE_INT16, GATE_TRAP16, GATE_INT32, GATE_TRAP32):
            raise _DeliveryFault(f"IDT gate {vector:#x} has type {gate_type:#x} (task gates are not supported)")
        selector = low >> 16
        offset = (low & 0xFFFF) | (high & 0xFFFF0000)
        ss_base = self.segment_base(self.reg("ss"))
        if gate_type in (GATE_INT32, GATE_TRAP32):
            esp = self.reg("esp")
            frame = [eflags, cs, eip] + ([error_code] if error_code is not None else [])
            for v in frame:
                esp = (esp - 4) & 0xFFFFFFFF
                self._write_linear(ss_base + esp, struct.pack("<I", v & 0xFFFFFFFF))
            self.set_reg("esp", esp)
        else:
            self._push16(ss_base, "sp", [eflags, cs, eip] + ([error_code] if error_code is not None else []))
            offset &= 0xFFFF
        new_flags = eflags & ~(EFLAGS_TF | EFLAGS_NT | EFLAGS_RF | EFLAGS_VM)
        if gate_type in (GATE_INT16, GATE_INT32):
            new_flags &= ~EFLAGS_IF
        self.set_reg("eflags", new_flags)
        self.set_reg("cs", selector)
        self.set_reg("eip", offset)

    def _software_interrupt(self, vector):
        """True when the INTR hook's vector came from an INT n/INT3/INTO/INT1
        instruction just executed, rather than from a CPU exception."""
        try:
            at = self.eip_linear()
            before = self._read_phys(at - 2, 2)
        except (GuestRunError, UcError):
            return False
        return (before[0] == 0xCD and before[1] == vector) or \
               (vector == 3 and before[1] == 0xCC) or (vector == 4 and before[1] == 0xCE) or \
               (vector == 1 and before[1] == 0xF1)

    def _deliver_hook_vector(self, vector):
        if self._software_interrupt(vector):
            try:
                self.deliver(vector)
            except _DeliveryFault as e:
                self._exception_chain(13, f"INT {vector:#x}: {e}")
            return
        self._exception_chain(vector, None)

    def _exception_chain(self, vector, why):
        """Deliver a CPU exception; a fault while doing so becomes #DF, and a
        fault delivering #DF is a triple fault (SDM vol. 3, 6.15, interrupt 8)."""
        eip = self.reg("eip")
        if trace.on.cpu:
            trace.emit("cpu", f"exception {vector} at {self.reg('cs'):#06x}:{eip:#x}")
        try:
            self.deliver(vector, 0 if self.protected and vector in ERROR_CODE_VECTORS else None)
            return
        except _DeliveryFault as first:
            cause = why or f"CPU exception {vector} at EIP {eip:#x}: {first}"
        try:
            self.deliver(VECTOR_DF, 0 if self.protected else None)
        except _DeliveryFault as second:
            raise GuestRunError(f"triple fault at EIP {eip:#x} (CS {self.reg('cs'):#x}): {cause}; "
                                f"then #DF: {second}", eip) from None

    def _intack(self):
        """The block hook's INTA (IF is set, not in an STI shadow): the vector
        to deliver, or -1 when no request is left."""
        intc = self.intc
        if self._stop_reason is not None or not intc.pending():
            self._slice_timer.set_irq(False)
            return -1
        vector = intc.acknowledge()
        if vector is None:
            self._slice_timer.set_irq(intc.pending())
            return -1
        if trace.on.irq:
            trace.emit("irq", f"cpu takes vector {vector:#x} at {self.reg('cs'):#06x}:{self.reg('eip'):#x}")
        return vector

    def _deliver_hardware(self, vector):
        """A vector the block hook acknowledged but left to this path (see _slice_stop.pyx)."""
        try:
            self.deliver(vector)
        except _DeliveryFault as e:
            self._exception_chain(13, f"hardware interrupt {vector:#x}: {e}")

    def _service(self):
        """The block hook found block completions waiting: hand them to the
        devices now, at this instruction boundary.  True ends the run."""
        self._slice_timer.io_seen()
        io = self._block_io
        if io is not None and io.pending:
            self.time.sync()
            io.poll_completions()
        return self._stop_reason is not None

    # -- the run loop ---------------------------------------------------------------

    def run(self, budget_ns=None, should_stop=None):
        """Run until the guest exits, halts for good, resets, or ``budget_ns`` of
        virtual time pass.  ``should_stop()`` is polled between slices."""
        start = self.time.sync()
        deadline = None if budget_ns is None else start + budget_ns
        self._stop_reason = None
        uc = self.uc
        timer = self._slice_timer
        while True:
            now = self.time.sync()
            if self._stop_reason is not None:
                break
            if should_stop is not None and should_stop():
                self._stop_reason = StopReason.STOPPED
                break
            if deadline is not None and now >= deadline:
                self._stop_reason = StopReason.TIMEOUT
                break
            io = self._block_io
            if io is not None and io.pending:
                timer.io_seen()
                io.poll_completions()
            if self.intc is not None:
                # The block hook takes it at the first boundary where IF allows.
                timer.set_irq(self.intc.pending())
            self._fault = None
            self._pending_soft = None
            slice_us = IO_SLICE_US if io is not None and io.busy else SLICE_US
            self._running = True
            self._fresh_mmio = True
            self._stop_requested = False
            timer.arm(time.monotonic_ns() + slice_us * 1000)
            error = None
            try:
                uc.emu_start(self.reg("eip"), UNTIL)
            except UcError as e:
                error = e
            finally:
                self._running = False
                why = timer.disarm()
            if why == CALLBACK_ERROR:
                raise timer.take_error()
            if error is not None:
                if error.errno == UC_ERR_INSN_INVALID and self._fault is None:
                    self._exception_chain(VECTOR_UD, None)     # #UD, as the CPU raises it
                    continue
                self._raise_fault(error)
            # Stopped at the REP INS/OUTS of the last port access: that
            # iteration will run again when the guest gets back here (maybe
            # after an interrupt handler), so it becomes the replay candidate.
            last = self._last_io
            if last is not None and last[3][0] == self.reg("eip") and \
                    self._rep_string_io(last[3][0]) is not None:
                self._replay_candidate = last
            # A stop asked for inside a callback (the exit port, a reset) ends
            # the run even though unicorn ran on to the end of the block, and
            # whatever those instructions raised is moot.
            if self._stop_reason is not None:
                break
            if why == DELIVER:
                self._deliver_hardware(timer.vector)
                continue
            if self._pending_soft is not None:
                self._deliver_hook_vector(self._pending_soft)
                continue
            # A run the hook did not end, right after a HLT: halted
            # (unicorn also returns early after some of its own cache flushes).
            if why == IDLE and self._after_hlt():
                self._halted(deadline, should_stop)
        return RunResult(self._stop_reason, self._exit_code,
                         self.time.clock.now_ns() - start, self.reg("eip"))

    def _after_hlt(self):
        try:
            return self._read_phys(self.eip_linear() - 1, 1) == b"\xf4"
        except (GuestRunError, UcError):
            return False

    def _halted(self, deadline, should_stop):
        """HLT: wait for an interrupt (SDM vol. 2, HLT) by moving virtual time on."""
        if not self.reg("eflags") & EFLAGS_IF:
            self._stop_reason = StopReason.HALTED
            return
        while self._stop_reason is None:
            self.time.sync()
            if should_stop is not None and should_stop():
                self._stop_reason = StopReason.STOPPED
                return
            if self.intc is not None and self.intc.pending():
                return
            io = self._block_io
            if io is not None and (io.pending or io.busy):
                self._wait_for_block_io(io)
                continue
            nxt = self.time.clock.next_deadline()
            if nxt is None or (deadline is not None and nxt > deadline):
                if deadline is None:
                    # Nothing will ever wake the guest but outside input; idle on the host.
                    time.sleep(0.001)
                    continue
                self.time.skip_to(deadline)
                return
            self.time.skip_to(nxt)

    def _wait_for_block_io(self, io):
        """Halted with block requests in flight: wait on the host (no longer
        than the next virtual timer is due) and deliver what completed."""
        if not io.pending:
            nxt = self.time.clock.next_deadline()
            left_s = IO_WAIT_MAX_S if nxt is None else \
                max(0.0, min(IO_WAIT_MAX_S, (nxt - self.time.clock.now_ns()) / 1e9))
            io.wait(left_s)              # may run a queued request itself, for its whole time
        self.time.sync(halted=True)
        if io.pending:
            io.poll_completions()

    def _raise_fault(self, err):
        eip = self.reg("eip")
        if self._fault is not None:
            message, address = self._fault
            raise GuestRunError(f"{message} at EIP {eip:#x}", address) from None
        if err.errno in (UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_UNMAPPED, UC_ERR_FETCH_UNMAPPED):
            raise GuestRunError(f"access to unmapped memory at EIP {eip:#x}: {err}", eip) from None
        raise GuestRunError(f"CPU error at EIP {eip:#x} (CS {self.reg('cs'):#x}): {err}", eip) from None


# Registers read and written through libunicorn directly: at most 8 bytes each.
_REG_IDS = {name: getattr(X, f"UC_X86_REG_{name.upper()}") for name in (
    "eax", "ebx", "ecx", "edx", "esi", "edi", "ebp", "esp", "eip", "eflags",
    "cs", "ds", "es", "fs", "gs", "ss", "cr0", "cr2", "cr3", "cr4")}
_uc_reg_read = _uc_native.uclib.uc_reg_read
_uc_reg_write = _uc_native.uclib.uc_reg_write


class _DeliveryFault(Exception):
    """Interrupt delivery found a broken IVT/IDT entry (becomes #GP/#DF)."""

"""The C block hook behind slice_timer.py: slice ends and interrupt delivery.

Unicorn calls ``block_hook`` at the start of every translation block, after
setting EIP to the block's address and before any of its instructions, so
whatever it does happens exactly at an instruction boundary: a stop ends the
run before the block, and a new EIP written here makes unicorn leave the
block unexecuted and go on at the new address without leaving emu_start.
Its user data is the ``HookState`` of a ``BlockHook``:

* ``deadline_ns``: the slice ends (TIMED_OUT) at the first block start past
  this CLOCK_MONOTONIC time; the clock is read every CLOCK_EVERY blocks.
* ``kick``: stop at the next block (KICKED), for the CPU loop.
* ``io``: an I/O thread queued a block completion; the hook has the owner's
  ``service()`` deliver it to the devices (a Python call), which returns
  True when the run is to end (a device asked for an exit or a reset).
* ``irq``: the interrupt controller has a request.  While it is set the hook
  reads EFLAGS, and once IF is set it takes the vector from the owner's
  ``intack()`` (the INTA cycle, in Python, -1 when nothing is left) and
  enters the handler itself: through the IVT in real mode, through a 32-bit
  interrupt or trap gate in protected mode (Intel SDM vol. 3, 6.12.1 and
  20.1.4).  Anything else (paging on, a 16-bit or task gate, a broken
  IDT, a stack outside RAM, an LDT stack segment) stops the run with the
  vector in ``vector`` (DELIVER) and the CPU loop delivers it in Python,
  faults and all.
* The STI shadow: at a block that follows an STI byte the hook lets that
  one instruction run first (TCG translates the instruction after STI as a
  block of its own), except HLT, which is skipped: the handler returns past
  it, as from a HLT woken at once.
* ``code_pages``: one byte per 4 KiB page of guest RAM, set for every page a
  block starts or ends on: the pages that may hold translated code, so that
  a device's DMA invalidates translations only there.

It is C because a Python block hook would cost a Python call per block,
and delivering here saves the CPU loop a stop and a restart of emu_start
for each interrupt.
"""

from cpython.ref cimport PyObject
from libc.stdlib cimport free, malloc
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

ctypedef int (*emu_stop_t)(void *uc) noexcept nogil
ctypedef int (*reg_rw_t)(void *uc, int regid, void *value) noexcept nogil
ctypedef int (*mem_read_t)(void *uc, uint64_t address, void *data, uint64_t size) noexcept nogil
ctypedef int (*mem_write_t)(void *uc, uint64_t address, const void *data, uint64_t size) noexcept nogil

# Why the hook stopped a run (must match slice_timer.py).
cdef enum:
    IDLE = 0
    TIMED_OUT = 1
    KICKED = 2
    DELIVER = 3
    SERVICE_STOP = 4
    CALLBACK_ERROR = 5

cdef enum:
    CLOCK_EVERY = 64             # blocks between two looks at the clock
    EFLAGS_TF = 1 << 8
    EFLAGS_IF = 1 << 9
    EFLAGS_NT = 1 << 14
    EFLAGS_RF = 1 << 16
    EFLAGS_VM = 1 << 17
    EFLAGS_AC = 1 << 18
    CR0_PE = 1
    GATE_INT32 = 0xE
    GATE_TRAP32 = 0xF
    STI = 0xFB
    HLT = 0xF4

cdef packed struct Mmr:          # unicorn's uc_x86_mmr (natural alignment spelled out)
    uint16_t selector
    uint16_t pad0
    uint32_t pad1
    uint64_t base
    uint32_t limit
    uint32_t flags

cdef struct Regs:                # register ids (unicorn's x86_const), set by the owner
    int eflags, eip, esp, cs, ss, cr0, idtr, gdtr, ecx, esi, edi

cdef struct HookState:
    int32_t why                  # out: why the hook stopped the run (or IDLE)
    int32_t kick
    int32_t irq
    int32_t io
    int32_t deliver              # delivery in the hook allowed (there is an interrupt controller)
    int32_t shadow_done          # the last block was let run for an STI shadow
    int32_t countdown
    int32_t vector               # with DELIVER: the vector acknowledged, for Python to deliver
    int64_t deadline_ns
    uint32_t pages
    uint8_t *code_pages
    uint8_t *ram
    uint64_t ram_size
    Regs reg
    PyObject *owner              # the BlockHook (borrowed: it outlives the engine's use of it)

cdef emu_stop_t _emu_stop = NULL
cdef reg_rw_t _reg_read = NULL
cdef reg_rw_t _reg_write = NULL
cdef mem_read_t _mem_read = NULL
cdef mem_write_t _mem_write = NULL


cdef inline int64_t _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline uint32_t _reg(void *uc, int regid) noexcept nogil:
    cdef uint64_t value = 0
    _reg_read(uc, regid, &value)
    return <uint32_t>value


cdef inline int _set_reg(void *uc, int regid, uint32_t value) noexcept nogil:
    cdef uint64_t wide = value
    return _reg_write(uc, regid, &wide)


cdef inline bint _in_ram(HookState *st, uint64_t address, uint64_t length) noexcept nogil:
    return address + length <= st.ram_size


cdef int _read_byte(void *uc, HookState *st, uint64_t address) noexcept nogil:
    """The byte at guest-physical ``address``, or -1."""
    cdef uint8_t byte
    if address < st.ram_size:
        return st.ram[address]
    if _mem_read(uc, address, &byte, 1) != 0:
        return -1
    return byte


cdef bint _deliver(void *uc, HookState *st, int vector, uint32_t eip) noexcept nogil:
    """Enter the handler for ``vector`` with ``eip`` as the return address;
    False (nothing changed) when this needs the CPU loop's Python path."""
    cdef Mmr idtr, gdtr
    cdef uint32_t cr0 = _reg(uc, st.reg.cr0)
    cdef uint32_t eflags = _reg(uc, st.reg.eflags)
    cdef uint32_t cs = _reg(uc, st.reg.cs) & 0xFFFF
    cdef uint32_t ss = _reg(uc, st.reg.ss) & 0xFFFF
    cdef uint32_t esp = _reg(uc, st.reg.esp)
    cdef uint16_t frame16[3]
    cdef uint32_t frame32[3]
    cdef uint32_t entry, low, high, selector, offset, ss_base, sp, new_flags
    cdef uint64_t at
    cdef uint8_t desc[8]
    cdef int i
    if _reg_read(uc, st.reg.idtr, &idtr) != 0:
        return False
    if not cr0 & CR0_PE:
        # Real mode: IVT entry IP:CS; FLAGS, CS, IP pushed on SS:SP.
        if <uint64_t>vector * 4 + 3 > idtr.limit or _mem_read(uc, idtr.base + vector * 4, &entry, 4) != 0:
            return False
        ss_base = ss << 4
        sp = esp & 0xFFFF
        frame16[0] = <uint16_t>eip
        frame16[1] = <uint16_t>cs
        frame16[2] = <uint16_t>eflags
        for i in range(3):
            if not _in_ram(st, ss_base + ((sp - 2 * (3 - i)) & 0xFFFF), 2):
                return False
        if _set_reg(uc, st.reg.cs, entry >> 16) != 0:
            return False
        for i in range(3):
            sp = (sp - 2) & 0xFFFF
            _mem_write(uc, ss_base + sp, &frame16[2 - i], 2)
        _set_reg(uc, st.reg.esp, (esp & <uint32_t>0xFFFF0000U) | sp)
        _set_reg(uc, st.reg.eflags, eflags & ~(EFLAGS_IF | EFLAGS_TF | EFLAGS_AC | EFLAGS_RF))
        _set_reg(uc, st.reg.eip, entry & 0xFFFF)
        return True
    # Protected mode without paging, 32-bit gates, no privilege change.
    if cr0 & <uint32_t>0x80000000U or <uint64_t>vector * 8 + 7 > idtr.limit:
        return False
    if _mem_read(uc, (idtr.base + vector * 8) & <uint64_t>0xFFFFFFFFU, desc, 8) != 0:
        return False
    low = desc[0] | desc[1] << 8 | desc[2] << 16 | <uint32_t>desc[3] << 24
    high = desc[4] | desc[5] << 8 | desc[6] << 16 | <uint32_t>desc[7] << 24
    if not high & 0x8000 or ((high >> 8) & 0x1F != GATE_INT32 and (high >> 8) & 0x1F != GATE_TRAP32):
        return False
    selector = low >> 16
    offset = (low & 0xFFFF) | (high & <uint32_t>0xFFFF0000U)
    if ss & 4 or _reg_read(uc, st.reg.gdtr, &gdtr) != 0:
        return False
    ss_base = 0
    if (ss & ~7) + 7 <= gdtr.limit:
        if _mem_read(uc, gdtr.base + (ss & ~7), desc, 8) != 0:
            return False
        ss_base = (desc[2] | desc[3] << 8 | desc[4] << 16 | <uint32_t>desc[7] << 24)
    at = <uint32_t>(ss_base + esp - 12)
    if esp < 12 or <uint64_t>ss_base + esp > <uint64_t>0xFFFFFFFFU or not _in_ram(st, at, 12):
        return False
    if _set_reg(uc, st.reg.cs, selector) != 0:
        return False
    frame32[0] = eip
    frame32[1] = cs
    frame32[2] = eflags
    _mem_write(uc, at, frame32, 12)
    new_flags = eflags & ~(EFLAGS_TF | EFLAGS_NT | EFLAGS_RF | EFLAGS_VM)
    if (high >> 8) & 0x1F == GATE_INT32:
        new_flags &= ~EFLAGS_IF
    _set_reg(uc, st.reg.esp, esp - 12)
    _set_reg(uc, st.reg.eflags, new_flags)
    _set_reg(uc, st.reg.eip, offset)
    return True


cdef inline void _stop(void *uc, HookState *st, int32_t why) noexcept nogil:
    st.why = why
    _emu_stop(uc)


cdef struct MmioPage:            # user data of an MMIO page's callbacks
    HookState *st
    uint64_t page


cdef int _call_owner(HookState *st, int which) noexcept with gil:
    """which 0: intack() -> vector or -1; 1: service() -> 1 to stop.  A
    Python exception is kept on the owner and reported as -2."""
    owner = <BlockHook><object>st.owner
    try:
        if which == 0:
            return owner.intack()
        return 1 if owner.service() else 0
    except BaseException as e:
        owner.error = e
        return -2


cdef void block_hook(void *uc, uint64_t address, uint32_t size, void *user_data) noexcept nogil:
    cdef HookState *st = <HookState *>user_data
    cdef uint64_t page = address >> 12
    cdef uint64_t last = (address + size - 1) >> 12 if size else page
    cdef uint32_t eip
    cdef int before, vector, r
    cdef bint shadow_done
    if page < st.pages:
        st.code_pages[page] = 1
    if last != page and last < st.pages:
        st.code_pages[last] = 1
    if st.why != IDLE:
        return                   # stopping already (blocks may still start before the stop)
    if st.kick:
        st.kick = 0
        _stop(uc, st, KICKED)
        return
    st.countdown -= 1
    if st.countdown <= 0:
        st.countdown = CLOCK_EVERY
        if st.deadline_ns and _now_ns() >= st.deadline_ns:
            _stop(uc, st, TIMED_OUT)
            return
    if st.io:
        r = _call_owner(st, 1)
        if r != 0:
            _stop(uc, st, CALLBACK_ERROR if r < 0 else SERVICE_STOP)
            return
    shadow_done = st.shadow_done
    st.shadow_done = 0
    if not st.irq or not st.deliver or not _reg(uc, st.reg.eflags) & EFLAGS_IF:
        return
    eip = _reg(uc, st.reg.eip)
    if not shadow_done and address > 0 and _read_byte(uc, st, address - 1) == STI:
        # The STI shadow (SDM vol. 2, STI): this block is the one
        # instruction after STI; the interrupt comes after it.  For HLT the
        # CPU halts and wakes at once: the handler returns past the HLT.
        if _read_byte(uc, st, address) != HLT:
            st.shadow_done = 1
            return
        eip += 1
    vector = _call_owner(st, 0)
    if vector == -2:
        _stop(uc, st, CALLBACK_ERROR)
    elif vector >= 0:
        if eip != _reg(uc, st.reg.eip):
            _set_reg(uc, st.reg.eip, eip)      # past the HLT, as the Python path would leave it
        if not _deliver(uc, st, vector, eip):
            st.vector = vector
            _stop(uc, st, DELIVER)


# -- port I/O and MMIO: C trampolines to the owner's Python methods -------------------
#
# Unicorn's Python binding reaches a hook through a ctypes callback and two
# wrapper frames, and the port hooks then read EIP/ECX/EDI through ctypes;
# these call the owner's method directly with the registers read here.  A
# Python exception is kept on the owner and stops the run (CALLBACK_ERROR).

cdef void _callback_failed(void *uc, HookState *st, BaseException e) noexcept:
    (<BlockHook><object>st.owner).error = e
    _stop(uc, st, CALLBACK_ERROR)


cdef uint32_t in_hook(void *uc, uint32_t port, int size, void *user_data) noexcept with gil:
    cdef HookState *st = <HookState *>user_data
    try:
        return (<BlockHook><object>st.owner).port_in(
            port, size, _reg(uc, st.reg.eip), _reg(uc, st.reg.ecx), _reg(uc, st.reg.edi))
    except BaseException as e:
        _callback_failed(uc, st, e)
        return 0


cdef void out_hook(void *uc, uint32_t port, int size, uint32_t value, void *user_data) noexcept with gil:
    cdef HookState *st = <HookState *>user_data
    try:
        (<BlockHook><object>st.owner).port_out(
            port, size, value, _reg(uc, st.reg.eip), _reg(uc, st.reg.ecx), _reg(uc, st.reg.esi))
    except BaseException as e:
        _callback_failed(uc, st, e)


cdef uint64_t mmio_read_hook(void *uc, uint64_t offset, unsigned size, void *user_data) noexcept with gil:
    cdef MmioPage *mp = <MmioPage *>user_data
    try:
        return (<BlockHook><object>mp.st.owner).mmio_read(mp.page + offset, size)
    except BaseException as e:
        _callback_failed(uc, mp.st, e)
        return 0


cdef void mmio_write_hook(void *uc, uint64_t offset, unsigned size, uint64_t value,
                          void *user_data) noexcept with gil:
    cdef MmioPage *mp = <MmioPage *>user_data
    try:
        (<BlockHook><object>mp.st.owner).mmio_write(mp.page + offset, size, value)
    except BaseException as e:
        _callback_failed(uc, mp.st, e)


def set_unicorn(uintptr_t emu_stop, uintptr_t reg_read, uintptr_t reg_write,
                uintptr_t mem_read, uintptr_t mem_write):
    """libunicorn's uc_emu_stop, uc_reg_read, uc_reg_write, uc_mem_read and
    uc_mem_write, which the hooks call."""
    global _emu_stop, _reg_read, _reg_write, _mem_read, _mem_write
    _emu_stop = <emu_stop_t>emu_stop
    _reg_read = <reg_rw_t>reg_read
    _reg_write = <reg_rw_t>reg_write
    _mem_read = <mem_read_t>mem_read
    _mem_write = <mem_write_t>mem_write


def hook_address():
    return <uintptr_t>&block_hook


def io_hook_addresses():
    """(IN hook, OUT hook, MMIO read, MMIO write): their user data is a
    ``BlockHook.state_address()`` (ports) or a ``BlockHook.mmio_page()``."""
    return (<uintptr_t>&in_hook, <uintptr_t>&out_hook,
            <uintptr_t>&mmio_read_hook, <uintptr_t>&mmio_write_hook)


cdef class BlockHook:
    """The hook's state (``state_address()`` is its user data) and the
    owner's callbacks: ``intack()`` and ``service()`` (see the module)."""

    cdef HookState st
    cdef object _pages
    cdef dict _mmio                  # page -> MmioPage (its address) while mapped
    cdef public object intack, service, port_in, port_out, mmio_read, mmio_write
    cdef public object error

    def __init__(self, uintptr_t ram, uint64_t ram_size, code_pages, regs, intack, service):
        cdef uint8_t[::1] view = code_pages
        self._pages = code_pages                 # keeps the marks' buffer alive
        self.st.pages = <uint32_t>(ram_size >> 12)
        self.st.code_pages = &view[0]
        self.st.ram = <uint8_t *>ram
        self.st.ram_size = ram_size
        (self.st.reg.eflags, self.st.reg.eip, self.st.reg.esp, self.st.reg.cs, self.st.reg.ss,
         self.st.reg.cr0, self.st.reg.idtr, self.st.reg.gdtr, self.st.reg.ecx, self.st.reg.esi,
         self.st.reg.edi) = regs
        self.st.countdown = CLOCK_EVERY
        self.st.owner = <PyObject *>self
        self.intack = intack
        self.service = service
        self.error = None
        self._mmio = {}

    def __dealloc__(self):
        if self._mmio:
            for address in self._mmio.values():
                free(<void *><uintptr_t>address)

    def mmio_page(self, uint64_t page):
        """User data for the MMIO callbacks of ``page`` (kept until ``mmio_release``)."""
        address = self._mmio.get(page)
        if address is None:
            mp = <MmioPage *>malloc(sizeof(MmioPage))
            if mp == NULL:
                raise MemoryError()
            mp.st = &self.st
            mp.page = page
            address = self._mmio[page] = <uintptr_t>mp
        return address

    def mmio_release(self, uint64_t page):
        address = self._mmio.pop(page, None)
        if address is not None:
            free(<void *><uintptr_t>address)

    def state_address(self):
        return <uintptr_t>&self.st

    def arm(self, int64_t deadline_ns):
        self.st.deadline_ns = deadline_ns
        self.st.why = IDLE
        self.st.kick = 0
        self.st.shadow_done = 0
        self.st.countdown = 1            # the first block looks at the clock

    def disarm(self):
        """Why the hook stopped the run (IDLE: it did not)."""
        why = self.st.why
        self.st.why = IDLE
        self.st.deadline_ns = 0
        self.st.kick = 0
        return why

    def take_error(self):
        e, self.error = self.error, None
        return e

    @property
    def vector(self):
        return self.st.vector

    @property
    def kick(self):
        return self.st.kick

    @kick.setter
    def kick(self, int32_t value):
        self.st.kick = value

    @property
    def irq(self):
        return self.st.irq

    @irq.setter
    def irq(self, int32_t value):
        self.st.irq = value

    @property
    def io(self):
        return self.st.io

    @io.setter
    def io(self, int32_t value):
        self.st.io = value

    @property
    def deliver(self):
        return self.st.deliver

    @deliver.setter
    def deliver(self, int32_t value):
        self.st.deliver = value

"""The C block hook behind slice_timer.py.

Unicorn calls it at the start of every translation block, after setting EIP
to the block's address, so a stop it makes is exact: the run ends before the
block, and nothing is executed twice.  Its user data is a ``HookState``:

* ``flag``: the timer thread sets DUE when the slice's deadline passes, the
  CPU loop sets KICK when a device raised an interrupt during a callback;
  the hook then stops the engine and records which (TIMED_OUT, KICKED).
  SKIP_ONE: let this block run and stop at the next one.
* ``watch_if``: while set (an interrupt waits for EFLAGS.IF), the hook reads
  EFLAGS and stops with IF_SET once the guest has set IF.
* ``code_pages``/``pages``: one byte per 4 KiB page of guest RAM, set for
  every page a block starts or ends on: the pages that may hold translated
  code, so that a device's DMA invalidates translations only there.

It is C because a Python block hook would cost a Python call per block.
``stop_hook`` is the CPU loop's one-instruction step (cpu.py, _step_one): a
code hook on the bytes after an instruction.
"""

from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t, uintptr_t

ctypedef int (*emu_stop_t)(void *uc) noexcept nogil
ctypedef int (*reg_read_t)(void *uc, int regid, void *value) noexcept nogil

# Must match slice_timer.py.
cdef enum:
    IDLE = 0
    DUE = 1
    TIMED_OUT = 2
    KICK = 3
    KICKED = 4
    IF_SET = 5
    SKIP_ONE = 6

cdef struct HookState:
    int32_t flag
    int32_t watch_if
    int32_t eflags_reg
    uint32_t pages
    uint8_t *code_pages

cdef emu_stop_t _emu_stop = NULL
cdef reg_read_t _reg_read = NULL


cdef void block_hook(void *uc, uint64_t address, uint32_t size, void *user_data) noexcept nogil:
    cdef HookState *st = <HookState *>user_data
    cdef uint64_t page = address >> 12
    cdef uint64_t last = (address + size - 1) >> 12 if size else page
    cdef uint32_t eflags = 0
    if page < st.pages:
        st.code_pages[page] = 1
    if last != page and last < st.pages:
        st.code_pages[last] = 1
    if st.flag == DUE:
        st.flag = TIMED_OUT
        _emu_stop(uc)
    elif st.flag == KICK:
        st.flag = KICKED
        _emu_stop(uc)
    elif st.flag == SKIP_ONE:
        st.flag = KICK
    elif st.watch_if:
        _reg_read(uc, st.eflags_reg, &eflags)
        if eflags & 0x200:
            st.flag = IF_SET
            _emu_stop(uc)


cdef void stop_hook(void *uc, uint64_t address, uint32_t size, void *user_data) noexcept nogil:
    # A code hook over a range: stop before the instruction at ``address``.
    _emu_stop(uc)


def stop_hook_address():
    """A code hook that stops the engine before the first instruction it is
    called for (after hook_address() has given it uc_emu_stop)."""
    return <uintptr_t>&stop_hook


def hook_address(uintptr_t emu_stop, uintptr_t reg_read):
    """The address of the hook, which stops the engine with ``emu_stop`` and
    reads EFLAGS with ``reg_read`` (libunicorn's uc_emu_stop, uc_reg_read)."""
    global _emu_stop, _reg_read
    _emu_stop = <emu_stop_t>emu_stop
    _reg_read = <reg_read_t>reg_read
    return <uintptr_t>&block_hook

"""The C block hook behind slice_timer.py.

Unicorn calls it at the start of every translation block, after setting EIP
to the block's address.  Its user data points at an int the timer thread
sets to 1 when the slice's deadline has passed; the hook then marks it 2
(the slice ended by its deadline) and stops the engine, before the block.
It is C because a Python block hook would cost a Python call per block.
"""

from libc.stdint cimport uint32_t, uint64_t, uintptr_t

ctypedef int (*emu_stop_t)(void *uc) noexcept nogil

cdef emu_stop_t _emu_stop = NULL


cdef void block_hook(void *uc, uint64_t address, uint32_t size, void *user_data) noexcept nogil:
    cdef int *flag = <int *>user_data
    if flag[0] == 1:
        flag[0] = 2
        _emu_stop(uc)


def hook_address(uintptr_t emu_stop):
    """The address of the hook, which stops the engine with ``emu_stop``
    (the address of libunicorn's uc_emu_stop)."""
    global _emu_stop
    _emu_stop = <emu_stop_t>emu_stop
    return <uintptr_t>&block_hook

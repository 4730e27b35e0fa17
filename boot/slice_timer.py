"""Where a slice of guest code stops, and interrupts taken without stopping it.

Unicorn's ``emu_start(timeout=...)`` stops the CPU from its own timer
thread (``uc_emu_stop``).  When that stop lands while translated blocks run
chained, unicorn does not restore EIP from the block it stopped before
(cpu_tb_exec skips ``synchronize_from_tb`` once ``stop_request`` is set), so
EIP still names an earlier instruction and the next slice runs the
instructions in between a second time: a read-modify-write such as
``add %edx,(%ecx)`` is applied twice.  GRUB's LZMA decoder and SYSLINUX
crashed on it, at random, on drivebay only.

A stop requested from a block hook is exact: unicorn sets EIP to the
block's address before it calls block hooks, and the run ends before the
block.  The hook is C (_slice_stop.pyx; unicorn compiles a hook's callback
into each translated block, so it cannot be swapped later, and a Python
block hook would cost a Python call per block).  It reads the host's
monotonic clock every few dozen blocks and ends the slice at its deadline,
so no timer thread (and no thread hand-over per slice) is needed; and it
enters interrupt handlers itself at the first block boundary where IF
allows, so taking an interrupt costs one Python call (the acknowledge)
rather than a stop and a restart of the engine.
"""

import ctypes

from unicorn import UC_HOOK_BLOCK, UC_HOOK_INSN, UcError
from unicorn import x86_const as X
from unicorn.unicorn_py3 import unicorn as _unicorn

from drivebay.boot import _slice_stop

# Why the hook stopped a run (must match _slice_stop.pyx).
IDLE, TIMED_OUT, KICKED, DELIVER, SERVICE_STOP, CALLBACK_ERROR = range(6)
PAGE_SHIFT = 12
_HOOK_REGS = (X.UC_X86_REG_EFLAGS, X.UC_X86_REG_EIP, X.UC_X86_REG_ESP, X.UC_X86_REG_CS,
              X.UC_X86_REG_SS, X.UC_X86_REG_CR0, X.UC_X86_REG_IDTR, X.UC_X86_REG_GDTR,
              X.UC_X86_REG_ECX, X.UC_X86_REG_ESI, X.UC_X86_REG_EDI)
_IN_HOOK, _OUT_HOOK, _MMIO_READ, _MMIO_WRITE = _slice_stop.io_hook_addresses()


def _address(fn):
    return ctypes.cast(fn, ctypes.c_void_p).value


_lib = _unicorn.uclib
_slice_stop.set_unicorn(_address(_lib.uc_emu_stop), _address(_lib.uc_reg_read),
                        _address(_lib.uc_reg_write), _address(_lib.uc_mem_read),
                        _address(_lib.uc_mem_write))


class SliceTimer:
    """The CPU loop's C block hook.

    ``arm(deadline_ns)`` before ``emu_start`` (without a timeout),
    ``disarm()`` after it, which tells why the hook stopped the run:
    TIMED_OUT (the monotonic clock passed the deadline), KICKED (``kick()``),
    DELIVER (an interrupt acknowledged by ``intack`` that the hook left to
    the loop: ``vector``), SERVICE_STOP (``service`` asked for the stop),
    CALLBACK_ERROR (a callback raised: ``take_error()``), or IDLE (the hook
    did not stop it: HLT, a stop from another callback, an error).

    ``ram`` is the GuestRam.  ``intack()`` is called at the first block
    boundary with IF set while ``irq`` is set: the vector to deliver, or -1.
    ``service()`` is called at the next block boundary once ``io`` is set
    (from any thread, by ``io_ready()``); True ends the run.  ``code_pages``
    (one byte per 4 KiB page of RAM) marks the pages blocks ran from since
    the byte was last cleared.

    ``ports`` is (port_in, port_out): IN and OUT go to ``port_in(port,
    size, eip, ecx, edi) -> value`` and ``port_out(port, size, value, eip,
    ecx, esi)``; ``mmio`` is (read, write): pages mapped with ``mmio_map``
    go to ``read(address, size) -> value`` and ``write(address, size,
    value)``.  Both through C trampolines (_slice_stop.pyx) rather than
    unicorn's ctypes callbacks."""

    def __init__(self, uc, ram, intack=None, service=None, ports=None, mmio=None):
        pages = ram.size >> PAGE_SHIFT
        self._marks = bytearray(max(1, pages))
        self.code_pages = memoryview(self._marks)
        self._hook = hook = _slice_stop.BlockHook(
            ram.address, ram.size, self.code_pages, _HOOK_REGS,
            intack or (lambda: -1), service or (lambda: False))
        hook.deliver = 1 if intack is not None else 0
        self._uc = uc                      # the hook's state lives as long as the engine
        self._add_hook(UC_HOOK_BLOCK, _slice_stop.hook_address())
        if ports is not None:
            hook.port_in, hook.port_out = ports
            self._add_hook(UC_HOOK_INSN, _IN_HOOK, ctypes.c_int(X.UC_X86_INS_IN))
            self._add_hook(UC_HOOK_INSN, _OUT_HOOK, ctypes.c_int(X.UC_X86_INS_OUT))
        if mmio is not None:
            hook.mmio_read, hook.mmio_write = mmio
        self.arm = hook.arm
        self.disarm = hook.disarm
        self.take_error = hook.take_error

    def _add_hook(self, kind, callback, *extra):
        handle = _unicorn.uc_hook_h()
        status = _lib.uc_hook_add(self._uc._uch, ctypes.byref(handle), kind,
                                  ctypes.c_void_p(callback),
                                  ctypes.c_void_p(self._hook.state_address()),
                                  ctypes.c_uint64(1), ctypes.c_uint64(0), *extra)
        if status != 0:
            raise OSError(f"uc_hook_add (type {kind}) failed with unicorn error {status}")

    def mmio_map(self, page, size):
        """Map ``size`` bytes at ``page`` as MMIO going to the ``mmio`` callbacks
        (UcError when it overlaps RAM or a ROM)."""
        user_data = ctypes.c_void_p(self._hook.mmio_page(page))
        status = _lib.uc_mmio_map(self._uc._uch, page, size, ctypes.c_void_p(_MMIO_READ), user_data,
                                  ctypes.c_void_p(_MMIO_WRITE), user_data)
        if status != 0:
            self._hook.mmio_release(page)
            raise UcError(status)

    def mmio_unmap(self, page, size):
        self._uc.mem_unmap(page, size)
        self._hook.mmio_release(page)

    @property
    def vector(self):
        return self._hook.vector

    def kick(self):
        """Stop the running slice before its next block (CPU thread only)."""
        self._hook.kick = 1

    def set_irq(self, level):
        """The interrupt controller has (or no longer has) a request."""
        self._hook.irq = 1 if level else 0

    def io_ready(self):
        """A block completion is waiting (any thread): ``service()`` runs at
        the next block boundary."""
        self._hook.io = 1

    def io_seen(self):
        self._hook.io = 0

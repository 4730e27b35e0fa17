"""Ending a slice of guest code at its deadline, with EIP exact.

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
block hook would cost a Python call per block): it stops the engine when
an int it is given says so.  A timer thread sets that int at the deadline.
"""

import ctypes
import threading
import time
import weakref

from unicorn import UC_HOOK_BLOCK, UC_HOOK_CODE
from unicorn import x86_const as X
from unicorn.unicorn_py3 import unicorn as _unicorn

from drivebay.boot import _slice_stop

# The hook's flag (must match _slice_stop.pyx).
IDLE, DUE, TIMED_OUT, KICK, KICKED, IF_SET, SKIP_ONE = range(7)
PAGE_SHIFT = 12


class _HookState(ctypes.Structure):
    _fields_ = [("flag", ctypes.c_int32), ("watch_if", ctypes.c_int32),
                ("eflags_reg", ctypes.c_int32), ("pages", ctypes.c_uint32),
                ("code_pages", ctypes.POINTER(ctypes.c_uint8))]


class SliceTimer:
    """The CPU loop's C block hook and the thread that times its slices.

    ``arm(deadline_ns)`` before ``emu_start`` (without a timeout),
    ``disarm()`` after it, which tells why the hook stopped the slice:
    TIMED_OUT, KICKED (``kick()``: stop before the next block, to take an
    interrupt a device raised in a callback), IF_SET (``watch_if(True)``:
    stop once the guest sets EFLAGS.IF) or IDLE (the hook did not stop it:
    HLT, a stop from a callback, an error).  ``code_pages`` (one byte per
    4 KiB page of the first ``ram_size`` bytes) marks the pages blocks ran
    from since the byte was last cleared."""

    def __init__(self, uc, ram_size=0):
        lib = _unicorn.uclib
        pages = ram_size >> PAGE_SHIFT
        self._pages = (ctypes.c_uint8 * max(1, pages))()
        self.code_pages = memoryview(self._pages).cast("B")
        self._state = _HookState(IDLE, 0, X.UC_X86_REG_EFLAGS, pages,
                                 ctypes.cast(self._pages, ctypes.POINTER(ctypes.c_uint8)))
        hook = _slice_stop.hook_address(ctypes.cast(lib.uc_emu_stop, ctypes.c_void_p).value,
                                        ctypes.cast(lib.uc_reg_read, ctypes.c_void_p).value)
        handle = _unicorn.uc_hook_h()
        status = lib.uc_hook_add(uc._uch, ctypes.byref(handle), UC_HOOK_BLOCK,
                                 ctypes.c_void_p(hook),
                                 ctypes.cast(ctypes.byref(self._state), ctypes.c_void_p),
                                 ctypes.c_uint64(1), ctypes.c_uint64(0))
        if status != 0:
            raise OSError(f"uc_hook_add for the slice timer failed with unicorn error {status}")
        self._uc = uc                      # the hook reads self._state as long as the engine lives
        self._stop_hook = _slice_stop.stop_hook_address()
        self._cond = threading.Condition()
        self._deadline = None              # monotonic ns at which the running slice ends
        thread = threading.Thread(target=_serve, args=(weakref.ref(self), self._cond),
                                  name="drivebay-slice-timer", daemon=True)
        thread.start()

    def arm(self, deadline_ns):
        with self._cond:
            self._deadline = deadline_ns
            self._state.flag = IDLE
            self._cond.notify()

    def disarm(self):
        with self._cond:
            self._deadline = None
            why = self._state.flag
            self._state.flag = IDLE
            return why if why in (TIMED_OUT, KICKED, IF_SET) else IDLE

    def kick(self):
        """Stop the running slice before its next block (CPU thread only)."""
        if self._state.flag == IDLE:
            self._state.flag = KICK

    def add_stop_hook(self, begin, end):
        """A code hook stopping the CPU before any instruction in [begin,
        end] (it applies to blocks translated from now on); returns the
        handle for ``remove_hook``."""
        handle = _unicorn.uc_hook_h()
        status = _unicorn.uclib.uc_hook_add(self._uc._uch, ctypes.byref(handle), UC_HOOK_CODE,
                                            ctypes.c_void_p(self._stop_hook), None,
                                            ctypes.c_uint64(begin), ctypes.c_uint64(end))
        if status != 0:
            raise OSError(f"uc_hook_add for a stop hook failed with unicorn error {status}")
        return handle

    def remove_hook(self, handle):
        _unicorn.uclib.uc_hook_del(self._uc._uch, handle)

    def stop_after_this_block(self):
        """Let the block about to run complete, then stop (CPU thread only)."""
        self._state.flag = SKIP_ONE

    def watch_if(self, on):
        self._state.watch_if = 1 if on else 0

    def _due_in(self):
        """Timer side: mark the deadline passed; else the seconds left (None: no slice)."""
        if self._deadline is None:
            return None
        left = self._deadline - time.monotonic_ns()
        if left > 0:
            return left / 1e9
        if self._state.flag == IDLE:
            self._state.flag = DUE
        self._deadline = None
        return None


def _serve(ref, cond):
    """The timer thread; it ends with the SliceTimer it serves."""
    while True:
        with cond:
            timer = ref()
            if timer is None:
                return
            wait = timer._due_in()
            del timer
            cond.wait(1.0 if wait is None else wait)

"""Trace events: a human-readable line for every guest-visible access.

Enabled by the environment variable ``DRIVEBAY_TRACE`` or the CLI flag
``--trace``: a comma-separated list of categories (``pio``, ``mmio``,
``pci``, ``irq``, ``dev``, ``guest_error``) or ``all``.  Lines go to
stderr (or a file given by ``DRIVEBAY_TRACE_FILE``).

Callers test ``trace.on.<category>`` before formatting a message so a
disabled trace costs one attribute look-up on the hot path.
"""

import os
import sys

CATEGORIES = ("pio", "mmio", "pci", "irq", "dev", "guest_error", "cpu")


class _Switches:
    __slots__ = CATEGORIES

    def __init__(self):
        for name in CATEGORIES:
            setattr(self, name, False)


on = _Switches()
_out = sys.stderr


def configure(spec, path=None):
    """Turn categories on from a spec like ``"pio,pci"`` or ``"all"``."""
    global _out
    wanted = {s.strip() for s in (spec or "").split(",") if s.strip()}
    if "all" in wanted or "1" in wanted:
        wanted = set(CATEGORIES)
    unknown = wanted - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown trace categories: {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(CATEGORIES)}, all)")
    for name in CATEGORIES:
        setattr(on, name, name in wanted)
    if path:
        _out = open(path, "a", buffering=1)


def emit(category, message):
    _out.write(f"[{category}] {message}\n")


def guest_error(device, message):
    """A guest programmed a device wrongly; the device answers with a status."""
    if on.guest_error:
        emit("guest_error", f"{device}: {message}")


configure(os.environ.get("DRIVEBAY_TRACE"), os.environ.get("DRIVEBAY_TRACE_FILE"))

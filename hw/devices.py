"""Device names as VM files and the command line spell them -> how to build them.

Each row maps a name ("piix3-ide", "ahci", "nvme", ...) to a factory
``factory(ctx, **options) -> PciDevice``.  ``ctx`` is a DeviceContext: what
the board offers a device beyond the PCI bus (ISA interrupt lines for legacy
IDE, the virtual clock).  Chip variants are rows with different arguments,
not subclasses.  The machine plugs the returned function into the PCI bus.
"""

from dataclasses import dataclass
from typing import Callable

from drivebay.errors import ConfigError


@dataclass
class DeviceContext:
    isa_irq: Callable          # isa_irq(irq, name) -> IrqLine driving ISA IRQ `irq`
    clock: object              # the VirtualClock
    io: object                 # IoSpace, for legacy fixed ports
    mmio: object               # MmioSpace


# name -> (factory, one-line description); controller issues add rows.
DEVICES = {}


def register(name, factory, description):
    if name in DEVICES:
        raise AssertionError(f"device {name} registered twice")
    DEVICES[name] = (factory, description)


def create(name, ctx, **options):
    try:
        factory, _ = DEVICES[name]
    except KeyError:
        known = ", ".join(sorted(DEVICES)) or "none yet"
        raise ConfigError(f"unknown device {name!r} (known: {known})") from None
    return factory(ctx, **options)

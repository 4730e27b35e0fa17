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
    # open_medium(path, **BlockBackend.open options) -> backend; the machine
    # opens the image, and closes it when it powers off.
    open_medium: Callable = None
    # The machine's I/O executor (block/io.py) when its CPU loop delivers the
    # completions of asynchronous requests; None: the device polls itself.
    block_io: object = None


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


# -- rows ------------------------------------------------------------------------------
# Imported here, after register() exists, so each controller package stays
# free of import-time side effects; a row is (name, factory, description).
from functools import partial  # noqa: E402

from drivebay.hw.ide import piix as ide_piix  # noqa: E402

register("piix3-ide", partial(ide_piix.create, "piix3-ide"), ide_piix.VARIANT_BY_NAME["piix3-ide"].description)
register("piix4-ide", partial(ide_piix.create, "piix4-ide"), ide_piix.VARIANT_BY_NAME["piix4-ide"].description)
register("ich6-ide", partial(ide_piix.create, "ich6-ide"), ide_piix.VARIANT_BY_NAME["ich6-ide"].description)

from drivebay.hw.ahci import hba as ahci_hba  # noqa: E402

register(ahci_hba.DEVICE_NAME, ahci_hba.create, ahci_hba.DESCRIPTION)

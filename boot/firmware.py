"""Where guest code is found: the programs built from firmware/ and system firmware.

The ELF files built from firmware/ are installed inside the package
(``drivebay/firmware/NAME.elf``), and so is drivebay's own BIOS boot stub
(``drivebay/firmware/bios.bin``, built from firmware/bios/); an editable
install maps that folder to the build tree, so ``importlib.resources`` finds
them either way.
"""

import importlib.resources
import pathlib

from drivebay.errors import ConfigError

SEABIOS_PATHS = ("/usr/share/seabios/bios-256k.bin", "/usr/share/qemu/bios-256k.bin")


def firmware_dir():
    return importlib.resources.files("drivebay") / "firmware"


def guest_program(name):
    """Path of the guest program ``name`` (e.g. ``"hello"``) built from firmware/."""
    path = firmware_dir() / f"{name}.elf"
    if not path.is_file():
        known = sorted(p.name[:-4] for p in firmware_dir().iterdir() if p.name.endswith(".elf")) \
            if firmware_dir().is_dir() else []
        raise ConfigError(f"no guest program {name!r} in {firmware_dir()} "
                          f"(built programs: {', '.join(known) or 'none'})")
    return pathlib.Path(str(path))


def guest_programs():
    d = firmware_dir()
    return sorted(p.name[:-4] for p in d.iterdir() if p.name.endswith(".elf")) if d.is_dir() else []


def stub():
    """drivebay's own BIOS boot stub, the 128 KiB ROM built from firmware/bios/."""
    path = firmware_dir() / "bios.bin"
    if not path.is_file():
        raise ConfigError(f"drivebay's BIOS boot stub is not built (no bios.bin in {firmware_dir()})")
    return pathlib.Path(str(path))


def seabios():
    """Debian's unmodified SeaBIOS image (package ``seabios``)."""
    for candidate in SEABIOS_PATHS:
        if pathlib.Path(candidate).is_file():
            return pathlib.Path(candidate)
    raise ConfigError("SeaBIOS not found (looked for " + ", ".join(SEABIOS_PATHS) +
                      "): install Debian's 'seabios' package")

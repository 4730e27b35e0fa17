"""The PCI functions: identity rows, configuration registers, native mode, factory."""

import pytest

from idebench import DRDY, PRIMARY, SECTOR, STATUS, IdeBench, disk

from drivebay.errors import ConfigError
from drivebay.hw import devices


@pytest.mark.parametrize("variant,ids,prog_if", [
    ("piix3-ide", 0x70108086, 0x80),
    ("piix4-ide", 0x71118086, 0x80),
    ("ich6-ide", 0x269E8086, 0x8A),
])
def test_identity(variant, ids, prog_if):
    b = IdeBench(variant=variant)
    assert b.cfg_read(0x00) == ids
    assert b.cfg_read(0x08) >> 8 == 0x010100 | prog_if
    assert b.cfg_read(0x0E, 1) & 0x80                     # multi-function: it sits at 01.1
    assert b.cfg_read(0x20) == 0xC001                     # BMIBA as programmed, I/O indicator


def test_bmiba_sizes_as_16_bytes():
    b = IdeBench()
    b.cfg_write(0x20, 4, 0xFFFFFFFF)
    assert b.cfg_read(0x20) == 0xFFFFFFF1


def test_piix3_timing_registers_are_storage():
    b = IdeBench()
    assert b.cfg_read(0x40) == 0
    b.cfg_write(0x40, 2, 0xA307)
    b.cfg_write(0x42, 2, 0x8000)
    b.cfg_write(0x44, 1, 0x5A)
    assert b.cfg_read(0x40) == 0x8000A307
    assert b.cfg_read(0x44, 1) == 0x5A
    b.cfg_write(0x09, 1, 0x8F)                            # PI is read-only on PIIX3
    assert b.cfg_read(0x09, 1) == 0x80


def test_piix4_udma_registers():
    b = IdeBench(variant="piix4-ide")
    b.cfg_write(0x48, 1, 0xFF)
    assert b.cfg_read(0x48, 1) == 0x0F                    # PSDE0..SSDE1 only
    b.cfg_write(0x4A, 2, 0x1212)
    assert b.cfg_read(0x4A, 2) == 0x1212


def test_pcicmd_implemented_bits():
    b = IdeBench()
    b.cfg_write(0x04, 2, 0xFFFF)
    assert b.cfg_read(0x04, 2) == 0x0005                  # IOSE and BME
    assert b.cfg_read(0x06, 2) == 0x0280


def test_ich6_native_mode():
    b = IdeBench(variant="ich6-ide", drives={(0, 0): {"backend": disk(64)}})
    b.cfg_write(0x10, 4, 0xD000)                          # primary command block
    b.cfg_write(0x14, 4, 0xD010)                          # primary control block
    b.cfg_write(0x3C, 1, 11)
    b.cfg_write(0x09, 1, 0x8F)                            # both channels native
    assert b.cfg_read(0x09, 1) == 0x8F
    assert b.inb(0x1F7) == 0xFF                           # legacy ports released
    assert b.inb(0xD007) == DRDY | 0x10
    assert b.inb(0xD012) == DRDY | 0x10                   # alternate status at offset 2
    b.outb(0xD006, 0xE0)
    b.outb(0xD007, 0xE7)                                  # FLUSH CACHE
    assert b.cfg_read(0x06, 2) & 0x0008                   # PCI STATUS.INTERRUPT_STATUS
    assert not b.irqs[14].level
    b.inb(0xD007)
    assert not b.cfg_read(0x06, 2) & 0x0008
    b.cfg_write(0x09, 1, 0x8A)                            # back to legacy
    assert b.inb(PRIMARY + STATUS) == DRDY | 0x10


def test_pci_reset_returns_to_power_on():
    b = IdeBench(drives={(0, 0): {"backend": disk(64)}})
    b.issue(0x20, lba=0, count=2)
    b.bus.reset()
    assert b.cfg_read(0x04, 2) == 0
    assert b.inb(PRIMARY + STATUS) == DRDY | 0x10
    assert b.inb(PRIMARY + 2) == 1


def test_factory_drive_keys_and_errors():
    b = IdeBench(drives={"0:1": {"backend": disk(64)}, "1,0": {"backend": disk(64)}})
    assert b.ide.device(0, 1) is not None and b.ide.device(1, 0) is not None
    with pytest.raises(ConfigError):
        IdeBench(drives={(2, 0): {"backend": disk(64)}})
    with pytest.raises(ConfigError):
        IdeBench(drives={(0, 0): {"type": "fdd", "backend": disk(64)}})
    with pytest.raises(ConfigError):
        IdeBench(drives={(0, 0): {"backend": disk(64), "colour": "red"}})
    with pytest.raises(ConfigError):
        IdeBench(drives={(0, 0): {"type": "hdd"}})


def test_factory_opens_an_image_path(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * 2 * 32)
    b = IdeBench(drives={(0, 0): {"type": "hdd", "path": str(path), "format": "raw"}})
    b.issue(0x20, lba=1, count=1)
    assert b.read_words(SECTOR) == bytes(range(256)) * 2


def test_second_controller_on_the_same_ports_is_refused():
    b = IdeBench()
    ctx = devices.DeviceContext(isa_irq=b._isa_irq, clock=None, io=b.io, mmio=b.mmio)
    with pytest.raises(ConfigError):
        devices.create("piix4-ide", ctx)


def test_machine_add_device():
    from drivebay.boot.machine import PcMachine
    m = PcMachine(memory_mb=2)
    ide = m.add_device("piix3-ide", drives={(0, 0): {"backend": disk(64)}})
    assert m.io.read(0x1F7, 1) == DRDY | 0x10
    # The PIIX IDE function sits beside the ISA bridge at 00:01.1, as on a PC.
    assert ide.function == 1 and m.pci.functions[1, 1] is ide


def test_registered_names():
    for name in ("piix3-ide", "piix4-ide", "ich6-ide"):
        assert name in devices.DEVICES

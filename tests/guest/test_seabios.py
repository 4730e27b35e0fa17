"""Unmodified SeaBIOS (Debian's bios-256k.bin) on drivebay's bare PC.

With no disks it must print its banner and PCI scan on the debug port
(0x402) and reach "No bootable device" (shared/reference/firmware-on-unicorn.md).
"""

from drivebay.boot.cpu import StopReason
from drivebay.boot.firmware import seabios
from drivebay.boot.machine import PcMachine

DONE = b"No bootable device"


def boot_seabios(timeout_s=30):
    debug, serial = bytearray(), bytearray()
    machine = PcMachine(memory_mb=64, serial_out=serial.extend, debugcon_out=debug.extend)
    machine.load_bios(seabios())
    result = machine.run(timeout_s=timeout_s, should_stop=lambda: DONE in debug)
    return result, debug.decode("latin-1"), serial.decode("latin-1"), machine


def test_seabios_reaches_no_bootable_device():
    result, log, serial, machine = boot_seabios()
    assert result.reason == StopReason.STOPPED, log[-2000:]
    assert log.startswith("SeaBIOS (version 1.16")
    assert "Running on QEMU (i440fx)" in log
    assert "Found QEMU fw_cfg" in log
    assert "RamSize: 0x04000000 [cmos]" in log
    assert "Found 2 PCI devices (max PCI bus is 00)" in log
    assert "PCI: init bdf=00:00.0 id=8086:1237" in log
    assert "PCI: init bdf=00:01.0 id=8086:7000" in log
    assert "Found 1 cpu(s)" in log
    assert "PS2 keyboard initialized" in log
    assert "0000000000100000 - 0000000004000000 = 1 RAM" in log
    assert "No bootable device" in log
    # SeaBIOS also drives COM1 as its console (sercon).
    assert "SeaBIOS" in serial or "S\x1b" in serial or "No bootable device" in serial


def test_seabios_programs_the_piix3_pirq_routing():
    _, log, _, machine = boot_seabios()
    # SeaBIOS routes PIRQA-D to IRQs 10, 10, 11, 11 and marks them level in the ELCR.
    assert "PIIX3/PIIX4 init: elcr=00 0c" in log
    assert [machine.pci.config_read(1, 0, 0x60 + i, 1) for i in range(4)] == [10, 10, 11, 11]

"""``drivebay vm start``: power a VM on, boot its firmware, stream its console.

The VM file says which controllers and media the machine has
(system/snapshots.power_on opens and locks the media, resets immutable
disks and makes multiattach differencing images); this module builds the
PC from that plan, loads the firmware and runs it until the guest powers
off, the time budget ends, the user presses Ctrl-C or ``controlvm
poweroff`` asks.  While it runs, the VM answers control requests
(system/control.py): pause, resume, poweroff, status, and snapshots taken
of the running VM.

Firmware: ``stub`` (drivebay's own BIOS boot stub, firmware/bios/, the
default: it is always built, while SeaBIOS is a Debian package a machine
may lack), ``seabios`` (Debian's unmodified bios-256k.bin) or a path to a
BIOS image.  ``--firmware`` overrides the VM's setting for one run.
"""

import contextlib

from drivebay.block.io import IoThreads
from drivebay.boot import firmware as firmware_files
from drivebay.boot.machine import DEFAULT_IO_THREADS, PcMachine
from drivebay.errors import ConfigError
from drivebay.system import snapshots
from drivebay.system.control import ControlServer, socket_path
from drivebay.system.live import LiveVm

DEFAULT_FIRMWARE = "stub"


def firmware_path(choice):
    if choice in (None, "stub"):
        return firmware_files.stub()
    if choice == "seabios":
        return firmware_files.seabios()
    return choice


def start(home, ref, firmware=None, timeout_s=None, serial_out=None, debugcon_out=None,
          should_stop=None, io_threads=DEFAULT_IO_THREADS):
    """Boot the VM ``ref``; returns the CPU's RunResult when the run ends.

    The VM's media are opened on the machine's own I/O threads, so that the
    CPU loop delivers their completions (boot/cpu.py)."""
    with contextlib.ExitStack() as stack:
        io = IoThreads(io_threads, name="drivebay-io")
        stack.callback(io.close)                  # last: after the media are closed
        session = stack.enter_context(snapshots.power_on(home, ref, io=io))
        vm = session.vm
        firmware = firmware or session.firmware or DEFAULT_FIRMWARE
        # The VM's boot order as QEMU's string; "" (every slot "none") boots
        # nothing, and the firmware says so.
        machine = stack.enter_context(PcMachine(
            memory_mb=vm.config.memory_mb, serial_out=serial_out, debugcon_out=debugcon_out,
            boot_order=session.boot_order, block_io=io))
        controllers = {}
        for plan in session.devices:
            try:
                controllers[plan.controller] = machine.add_device(plan.name, **plan.options)
            except ConfigError as e:
                raise ConfigError(f"VM {vm.name}: controller {plan.controller!r} "
                                  f"({plan.name}): {e}") from None
        machine.load_bios(firmware_path(firmware))
        # Only now: the run lock is ours, so a socket already there is stale.
        live = LiveVm(session, controllers)
        control = stack.enter_context(ControlServer(
            socket_path(vm), live.handlers(), with_progress=live.WITH_PROGRESS,
            status=lambda: {"virtual_ns": machine.cpu.time.clock.now_ns()}))

        def stop():
            return control.service(should_stop) or (should_stop is not None and should_stop())
        return machine.run(timeout_s=timeout_s, should_stop=stop)


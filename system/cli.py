"""The ``drivebay`` command line.

    drivebay --version
    drivebay demo                      boot the built-in demo guest
    drivebay boot ELF [--cmdline ...]  run a multiboot guest program
    drivebay boot --bios stub|seabios|ROM   run system firmware from reset
    drivebay programs                  list the guest programs built from firmware/
    drivebay img VERB ...              create, inspect, convert, merge images (system/img.py)
    drivebay vm|modifyvm|storagectl|storageattach|bandwidthctl|snapshot|clonevm ...
                                       VMs in VBoxManage's shape (system/vbox_cli.py)
    drivebay createmedium|modifymedium|clonemedium|mediumproperty|showmediuminfo|
             closemedium|convertfromraw|list|media ...
                                       media and the Virtual Media Manager (system/vbox_media_cli.py)

The guest's serial port (COM1) streams to stdout; ``--debugcon`` sends the
0x402 debug console somewhere too.  ``boot`` exits with the status the guest
wrote to the exit port (0x501); a guest that halts for good, resets or runs
out of time exits with 124 (timeout), 125 (halted) or 126 (reset), and a
guest that crashes the machine (triple fault, unmapped access) with 127 and a
message naming the guest address.
"""

import argparse
import sys

from drivebay import __version__, trace
from drivebay.boot import firmware
from drivebay.boot.machine import PcMachine
from drivebay.errors import DrivebayError, GuestRunError
from drivebay.system import console, img, vbox_cli, vbox_media_cli, vmstart

def _run(machine, timeout):
    result = console.run_interruptible(
        lambda should_stop: machine.run(timeout_s=timeout, should_stop=should_stop))
    return console.exit_status(result, timeout)


def cmd_boot(args):
    if not args.program and not args.bios:
        raise SystemExit("drivebay boot: give a guest program (ELF) or --bios ROM")
    debugcon = args.debugcon or "none"
    machine = PcMachine(memory_mb=args.memory, serial_out=console.output("stdout"),
                        debugcon_out=console.output(debugcon))
    if args.bios:
        machine.load_bios(vmstart.firmware_path(args.bios))
    else:
        machine.load_program(args.program, cmdline=args.cmdline)
    return _run(machine, args.timeout)


def cmd_demo(args):
    from drivebay.system import demo, vm as vmmod
    home = vmmod.Home()

    def run(should_stop):
        return demo.run(home, firmware=args.firmware, timeout_s=args.timeout, fresh=args.fresh,
                        serial_out=console.output("stdout"), should_stop=should_stop)
    print(f"drivebay demo: VM '{demo.VM_NAME}' in {home.path} (SATA port 0: a "
          f"{demo.DISK_SIZE >> 20} MiB dynamic VDI holding the demo boot program; IDE "
          f"secondary master: a CD drive with a small ISO); its console follows", file=sys.stderr)
    vm, disk, result = console.run_interruptible(run)
    return console.exit_status(result, args.timeout)


def cmd_programs(args):
    for name in firmware.guest_programs():
        print(name)
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="drivebay", description="An emulator of PC storage hardware.")
    p.add_argument("--version", action="version", version=f"drivebay {__version__}")
    p.add_argument("--trace", metavar="CATS",
                   help="trace accesses: comma-separated pio,mmio,pci,irq,dev,guest_error,cpu or all "
                        "(also DRIVEBAY_TRACE)")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("boot", help="run a multiboot guest program or system firmware")
    b.add_argument("program", nargs="?", help="guest program (multiboot ELF)")
    b.add_argument("--cmdline", default="", help="multiboot command line for the guest")
    b.add_argument("--bios", metavar="stub|seabios|ROM",
                   help="start from the reset vector with this BIOS image ('stub': drivebay's "
                        "own, 'seabios': Debian's)")
    b.add_argument("--memory", type=int, default=64, metavar="MB", help="guest RAM (default 64)")
    b.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="power off after this much virtual time")
    b.add_argument("--debugcon", metavar="DEST", help="0x402 debug console: stdout, stderr, FILE or none")
    b.set_defaults(func=cmd_boot)

    d = sub.add_parser("demo", help="boot the demo VM: a disk whose boot program reports what it finds")
    d.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS")
    d.add_argument("--firmware", metavar="stub|seabios|PATH",
                   help="BIOS for this run (default: the demo VM's setting, drivebay's stub)")
    d.add_argument("--fresh", action="store_true", help="make the demo VM and its disk anew")
    d.set_defaults(func=cmd_demo)

    img.add_parser(sub)
    vbox_cli.add_parsers(sub)
    vbox_media_cli.add_parsers(sub)

    g = sub.add_parser("programs", help="list the guest programs built from firmware/")
    g.set_defaults(func=cmd_programs)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.trace:
        trace.configure(args.trace)
    try:
        return args.func(args)
    except GuestRunError as e:
        print(f"drivebay: guest crashed: {e}", file=sys.stderr)
        return console.EXIT_CRASH
    except DrivebayError as e:
        print(f"drivebay: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

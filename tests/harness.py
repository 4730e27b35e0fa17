"""The two-emulator harness: one guest program, drivebay and QEMU, TAP compared.

A guest program from firmware/ is a multiboot ELF that prints TAP lines on
COM1 and ends the run through the exit port (0x501).  ``run_drivebay`` boots
it on drivebay's PC machine, ``run_qemu`` on ``qemu-system-x86_64 -kernel``
with the same device list translated to ``-device`` options, and
``compare`` checks the two outcomes test by test.

QEMU's isa-debug-exit turns a guest status V into the process status
(V << 1) | 1; ``run_qemu`` undoes that so both outcomes carry the guest's V.
"""

import re
import shutil
import subprocess
from dataclasses import dataclass, field

from drivebay.boot.cpu import StopReason
from drivebay.boot.machine import PcMachine

TAP_LINE = re.compile(r"^(ok|not ok) (\d+)(?: - (.*))?$")
TAP_PLAN = re.compile(r"^1\.\.(\d+)$")
QEMU = "qemu-system-x86_64"

# -- IDE: drivebay's drives={(channel, unit): {"type": "hdd"|"dvddrive", "path": ...}} --------

_QEMU_IMAGE_FORMATS = {".vdi": "vdi", ".vmdk": "vmdk", ".vhd": "vpc", ".vhdx": "vhdx",
                       ".qcow2": "qcow2", ".qcow": "qcow", ".qed": "qed", ".hdd": "parallels"}
_QEMU_IDE_MEDIA = {"hdd": "disk", "dvddrive": "cdrom"}


def _qemu_ide_drive(spec):
    """The -drive properties for one drive spec: media, and file/format unless
    it is an empty CD/DVD drive.  Commas in a path are doubled (QEMU's escape)."""
    media = _QEMU_IDE_MEDIA[spec["type"]]
    props = f"media={media}"
    if spec.get("path"):
        path = str(spec["path"])
        fmt = spec.get("format") or _QEMU_IMAGE_FORMATS.get(
            path[path.rfind("."):].lower() if "." in path else "", "raw")
        props += f",file={path.replace(',', ',,')},format={fmt}"
    return props


def _ide_slots(options):
    """(channel, unit, spec) for each drive, keys given as (c, u) or "c:u"."""
    slots = []
    for key, spec in (options.get("drives") or {}).items():
        channel, unit = map(int, key.split(":")) if isinstance(key, str) else key
        slots.append((channel, unit, spec))
    return sorted(slots, key=lambda s: s[:2])


def _qemu_piix3_ide(options):
    # The pc machine's own PIIX3 IDE (00:01.1): drives by IDE index, 0-3 =
    # primary master, primary slave, secondary master, secondary slave.
    return [arg for channel, unit, spec in _ide_slots(options)
            for arg in ("-drive", f"if=ide,index={2 * channel + unit},{_qemu_ide_drive(spec)}")]


# -- AHCI: drivebay's drives={port: {"type": ..., "path": ..., "hotpluggable": bool}} ----------

QEMU_AHCI_PORTS = 6              # QEMU's "ahci" (ich9-ahci) always has six ports


def _qemu_ahci(options):
    # QEMU's ICH9 AHCI, 8086:2922, with one ide-hd/ide-cd per port (bus
    # ahci.N).  "hotpluggable" has no QEMU counterpart (its AHCI has no
    # hot-plug) and "ports" none either: PI is always 3Fh there.
    args = ["-device", "ahci,id=ahci"]
    for key, spec in sorted((int(k), v) for k, v in (options.get("drives") or {}).items()):
        if not 0 <= key < QEMU_AHCI_PORTS:
            raise ValueError(f"QEMU's ahci has ports 0-{QEMU_AHCI_PORTS - 1}, not {key}")
        device = "ide-hd" if spec["type"] == "hdd" else "ide-cd"
        args += ["-drive", f"if=none,id=ahci{key},{_qemu_ide_drive(spec)}",
                 "-device", f"{device},drive=ahci{key},bus=ahci.{key}"]
    return args


# drivebay device names -> QEMU -device options (controller issues add rows).
QEMU_DEVICES = {
    "piix3-ide": _qemu_piix3_ide,
    "ahci": _qemu_ahci,
}


@dataclass
class Outcome:
    emulator: str
    status: int | None                 # the guest's exit-port value, None if it never wrote one
    output: str
    plan: int | None = None
    results: dict = field(default_factory=dict)   # test number -> (passed, description)

    @property
    def passed(self):
        return (self.status == 0 and self.plan is not None and len(self.results) == self.plan
                and all(ok for ok, _ in self.results.values()))

    def failures(self):
        return {n: d for n, (ok, d) in self.results.items() if not ok}


def parse_tap(emulator, status, text):
    outcome = Outcome(emulator, status, text)
    for raw in text.splitlines():
        line = raw.strip("\r")
        if m := TAP_PLAN.match(line):
            outcome.plan = int(m.group(1))
        elif m := TAP_LINE.match(line):
            outcome.results[int(m.group(2))] = (m.group(1) == "ok", m.group(3) or "")
    return outcome


def run_drivebay(elf, cmdline="", devices=(), memory_mb=64, timeout_s=60.0, on_line=None):
    """Run ``elf`` on drivebay.  ``on_line(line, machine)``, if given, sees each
    console line as the guest completes it, with the CPU stopped between
    instructions: the place for host actions a guest asks for in the middle
    of a run (hot-plug, media changes).  The run then goes on."""
    out = bytearray()
    lines, partial = [], bytearray()

    def serial(data):
        out.extend(data)
        if on_line is not None:
            partial.extend(data)
            while (end := partial.find(b"\n")) >= 0:
                lines.append(partial[:end].decode("latin-1").rstrip("\r"))
                del partial[:end + 1]

    with PcMachine(memory_mb=memory_mb, serial_out=serial) as machine:
        for name, options in devices:
            machine.add_device(name, **options)
        machine.load_program(elf, cmdline=cmdline)
        budget_ns = int(timeout_s * 1e9)
        while True:
            result = machine.run(timeout_s=budget_ns / 1e9,
                                 should_stop=(lambda: bool(lines)) if on_line else None)
            while lines:
                on_line(lines.pop(0), machine)
            budget_ns -= result.virtual_ns
            if result.reason != StopReason.STOPPED or budget_ns <= 0:
                break
    status = result.exit_code if result.reason == StopReason.EXIT else None
    return parse_tap("drivebay", status, out.decode("latin-1"))


def qemu_available():
    return shutil.which(QEMU) is not None


def run_qemu(elf, cmdline="", devices=(), memory_mb=64, timeout_s=120.0):
    cmd = [QEMU, "-machine", "pc", "-nodefaults", "-m", str(memory_mb), "-kernel", str(elf),
           "-serial", "stdio", "-display", "none", "-monitor", "none", "-no-reboot",
           "-device", "isa-debug-exit,iobase=0x501,iosize=2", "-accel", "tcg"]
    if cmdline:
        cmd += ["-append", cmdline]
    for name, options in devices:
        cmd += QEMU_DEVICES[name](options)
    done = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
    status = done.returncode >> 1 if done.returncode & 1 else None
    return parse_tap("qemu", status, done.stdout.decode("latin-1"))


def compare(a, b):
    """Differences between two outcomes, as readable lines (empty when they agree)."""
    diffs = []
    if a.plan != b.plan:
        diffs.append(f"plan: {a.emulator} 1..{a.plan}, {b.emulator} 1..{b.plan}")
    for n in sorted(set(a.results) | set(b.results)):
        ra, rb = a.results.get(n), b.results.get(n)
        if ra is None or rb is None or ra[0] != rb[0]:
            diffs.append(f"test {n}: {a.emulator} {ra}, {b.emulator} {rb}")
    if a.status != b.status:
        diffs.append(f"exit status: {a.emulator} {a.status}, {b.emulator} {b.status}")
    return diffs

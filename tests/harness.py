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

# drivebay device names -> QEMU -device options (controller issues add rows).
QEMU_DEVICES = {}


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


def run_drivebay(elf, cmdline="", devices=(), memory_mb=64, timeout_s=60.0):
    out = bytearray()
    machine = PcMachine(memory_mb=memory_mb, serial_out=out.extend)
    for name, options in devices:
        machine.add_device(name, **options)
    machine.load_program(elf, cmdline=cmdline)
    result = machine.run(timeout_s=timeout_s)
    status = result.exit_code if result.reason == StopReason.EXIT else None
    return parse_tap("drivebay", status, out.decode("latin-1"))


def qemu_available():
    return shutil.which(QEMU) is not None


def run_qemu(elf, cmdline="", devices=(), memory_mb=64, timeout_s=120.0):
    cmd = [QEMU, "-machine", "pc", "-m", str(memory_mb), "-kernel", str(elf),
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

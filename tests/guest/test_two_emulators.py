"""Guest programs from firmware/ on drivebay and on QEMU: same ELF, same TAP.

Each program must pass on both emulators and the two outcomes must agree
test by test (harness.compare).  Controller issues add their programs and
device lists to PROGRAMS.
"""

import pytest

from drivebay.boot.firmware import guest_program
from harness import compare, run_drivebay, run_qemu

PROGRAMS = [
    ("hello", ""),
    ("irq_pm", ""),
    ("irq_rm", ""),
    ("bench_io", "n=2000"),
]


@pytest.mark.parametrize("name,cmdline", PROGRAMS, ids=[p[0] for p in PROGRAMS])
def test_program_passes_on_both(name, cmdline):
    elf = guest_program(name)
    ours = run_drivebay(elf, cmdline=cmdline)
    theirs = run_qemu(elf, cmdline=cmdline)
    assert theirs.passed, f"QEMU:\n{theirs.output}"
    assert ours.passed, f"drivebay:\n{ours.output}"
    assert compare(ours, theirs) == []


def test_hello_lists_the_default_machine():
    out = run_drivebay(guest_program("hello"))
    lines = out.output.splitlines()
    assert "pci 00:00.0 8086:1237 class 06:00:00 hdr 00" in lines
    assert "pci 00:01.0 8086:7000 class 06:01:00 hdr 80" in lines
    assert out.results[3] == (True, "pci host bridge 8086:1237 at 00:00.0")


def test_failing_tap_line_is_reported_as_failure():
    from harness import parse_tap
    outcome = parse_tap("x", 1, "1..2\nok 1 - a\nnot ok 2 - b\n")
    assert not outcome.passed and outcome.failures() == {2: "b"}

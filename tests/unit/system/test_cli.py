"""The ``drivebay`` command as a user runs it (a subprocess, real exit codes)."""

import subprocess
import sys

from drivebay import __version__
from drivebay.boot.firmware import guest_program
from minielf import build_elf32

DRIVEBAY = [sys.executable, "-m", "drivebay.system.cli"]


def run(*args, timeout=120):
    return subprocess.run(DRIVEBAY + list(args), capture_output=True, text=True, timeout=timeout)


def test_version():
    done = run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"drivebay {__version__}"


def test_boot_exits_with_the_guest_status(tmp_path):
    # mov $0x501,%dx; mov $0x2a,%al; out %al,(%dx); cli; hlt
    code = bytes.fromhex("66ba0105" "b02a" "ee" "fa" "f4")
    elf = tmp_path / "exit42.elf"
    elf.write_bytes(build_elf32(code))
    done = run("boot", str(elf))
    assert done.returncode == 42, done.stderr


def test_boot_passes_the_command_line():
    done = run("boot", str(guest_program("bench_io")), "--cmdline", "n=123")
    assert done.returncode == 0
    assert "bench pio 123" in done.stdout


def test_boot_refuses_a_non_elf_file(tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello")
    done = run("boot", str(bogus))
    assert done.returncode == 2
    assert f"{bogus}: not an ELF file" in done.stderr


def test_boot_reports_a_crash_with_the_guest_address(tmp_path):
    # mov 0xd0000000,%eax
    elf = tmp_path / "crash.elf"
    elf.write_bytes(build_elf32(bytes.fromhex("a1000000d0") + b"\xf4"))
    done = run("boot", str(elf))
    assert done.returncode == 127
    assert "unmapped guest address 0xd0000000" in done.stderr


def test_timeout_powers_off_a_running_guest(tmp_path):
    elf = tmp_path / "spin.elf"
    elf.write_bytes(build_elf32(bytes.fromhex("ebfe")))      # jmp $
    done = run("boot", str(elf), "--timeout", "0.2")
    assert done.returncode == 124
    assert "still running after 0.2 s" in done.stderr


def test_trace_names_registers():
    done = run("--trace", "pci,pio", "boot", str(guest_program("hello")))
    assert done.returncode == 0
    assert "[pci] 00:00.0 i440fx VENDOR_ID/DEVICE_ID -> 0x12378086" in done.stderr
    assert "[pio] outb 0x03f8 com1.RBR/THR" in done.stderr


def test_boot_bios_stub_with_no_disks():
    done = run("boot", "--bios", "stub", "--timeout", "20")
    assert done.stdout.startswith("drivebay BIOS boot stub\n"), done.stdout
    assert done.stdout.rstrip().endswith("No bootable device."), done.stdout
    assert done.returncode != 0 and "halted" in done.stderr

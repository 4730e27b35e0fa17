"""Assemble small guest snippets with binutils (``as --32``), for CPU tests.

``assemble(source, base)`` returns the flat machine code of ``source``
linked at ``base``.  Tests use it to make guests that misbehave on purpose
(faults, runaway loops, broken IDTs) without adding them to firmware/.
"""

import pathlib
import subprocess
import tempfile


def assemble(source, base):
    with tempfile.TemporaryDirectory() as d:
        d = pathlib.Path(d)
        (d / "t.S").write_text(".text\n.globl _start\n_start:\n" + source + "\n")
        done = subprocess.run(["as", "--32", "-o", str(d / "t.o"), str(d / "t.S")],
                              capture_output=True, text=True)
        if done.returncode:
            raise AssertionError(f"as failed:\n{done.stderr}")
        done = subprocess.run(["ld", "-m", "elf_i386", "-Ttext", hex(base), "--oformat", "binary",
                               "-o", str(d / "t.bin"), str(d / "t.o")], capture_output=True, text=True)
        if done.returncode:
            raise AssertionError(f"ld failed:\n{done.stderr}")
        return (d / "t.bin").read_bytes()


# The start of a boot sector: real mode, segments zero, the stack below
# 0x7C00 where the BIOS loaded it, interrupts on.
BOOT_SECTOR_START = """
.code16
    cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw $0x7c00, %sp
    sti
"""

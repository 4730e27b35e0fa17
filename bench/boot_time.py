#!/usr/bin/env python3
"""Boot time: power-on to the SYSLINUX ``boot:`` prompt, drivebay against QEMU.

The disk is tests/guest/bootimages.py's SYSLINUX image (syslinux's MBR, a
FAT16 partition, Debian's ldlinux).  Both emulators run Debian's SeaBIOS
(bios-256k.bin) and the same disk, on the PIIX3 IDE primary master and on
port 0 of an AHCI HBA (QEMU: its board IDE and its ich9-ahci, TCG).  A run
is timed on the host clock from the moment the emulator is started (PcMachine
built, or qemu-system-x86_64 spawned) to the moment the prompt is on the
serial console; the best of --repeat runs counts.  drivebay's virtual time
at the prompt is reported too.  Results go to bench/results/boot_time.json
with the ratio drivebay/QEMU (above 1: drivebay is slower).
"""

import argparse
import pathlib
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests"), str(HERE.parent / "tests" / "guest")]
import bootimages  # noqa: E402

from drivebay.boot.cpu import StopReason  # noqa: E402
from drivebay.boot.firmware import seabios  # noqa: E402

import benchlib

BUDGET_S = 300                  # virtual (drivebay) and wall (QEMU) seconds before a run fails
CONTROLLERS = ("piix3-ide", "ahci")


def time_drivebay(controller, disk):
    t = time.perf_counter()
    result, out = bootimages.boot_on_drivebay("syslinux", controller, seabios(), disk, BUDGET_S)
    elapsed = time.perf_counter() - t
    if result.reason != StopReason.STOPPED or not bootimages.booted("syslinux", out):
        raise SystemExit(f"drivebay ({controller}) did not reach the prompt: {result}\n"
                         f"{out.decode('latin-1')[-2000:]}")
    return elapsed, result.virtual_ns / 1e9


def time_qemu(controller, disk):
    t = time.perf_counter()
    out = bootimages.boot_on_qemu("syslinux", controller, disk, BUDGET_S)
    elapsed = time.perf_counter() - t
    if not bootimages.booted("syslinux", out):
        raise SystemExit(f"QEMU ({controller}) did not reach the prompt:\n{out.decode('latin-1')[-2000:]}")
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "boot_time.json"))
    args = ap.parse_args()
    result = {"benchmark": "boot_time", "firmware": str(seabios()), "repeat": args.repeat}
    with tempfile.TemporaryDirectory() as tmp:
        disk = bootimages.syslinux_disk(tmp)
        for controller in CONTROLLERS:
            drivebay = [time_drivebay(controller, disk) for _ in range(args.repeat)]
            qemu = [time_qemu(controller, disk) for _ in range(args.repeat)]
            best, virtual = min(drivebay)
            row = {"drivebay_s": [round(w, 3) for w, _ in drivebay],
                   "drivebay_virtual_s": [round(v, 3) for _, v in drivebay],
                   "qemu_s": [round(w, 3) for w in qemu],
                   "drivebay_best_s": round(best, 3), "qemu_best_s": round(min(qemu), 3),
                   "ratio_drivebay_to_qemu": round(best / min(qemu), 2)}
            result[controller] = row
            print(f"{controller}: drivebay {best:.2f} s (virtual {virtual:.2f} s), "
                  f"qemu {min(qemu):.2f} s, ratio {row['ratio_drivebay_to_qemu']:.2f}")
    benchlib.save_results(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

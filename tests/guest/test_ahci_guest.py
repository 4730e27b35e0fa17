"""The AHCI guest program (firmware/tests/ahci.c) on drivebay and QEMU.

One HBA with six ports: disks on ports 0 and 1, a CD drive on port 2, a
hot-pluggable disk on port 3, ports 4 and 5 empty.  Each run gets its own
images, made here with the pattern the program checks: every sector of the
image on port N holds (N << 24) + its LBA as a little-endian u32, repeated
(512-byte sectors on the disks, 2048-byte ones on the CD).  Afterwards each
disk image must hold exactly the program's writes (lib/ata.h's
ata_written_word, the LBA ranges in ahci.c) and the pattern everywhere else;
the CD image must be unchanged.

QEMU's reference is its ``ahci`` device (ICH9, 8086:2922), drivebay's is
the ICH8-M (8086:2829): identity (PCI ID, AHCI version, capabilities,
drive models) is reported, never compared; each emulator's command line
carries its own expected models.

Hot-plug.  The guest asks for it on the console and waits (bounded) for the
HBA to report the change:

    # hotplug-request port 3 detach
    # hotplug-request port 3 attach

``hotplug_host`` answers those lines on drivebay, with the CPU stopped
between instructions (harness.run_drivebay's ``on_line``), by calling the
AHCI controller's ``detach_drive(3)`` and ``attach_drive(3, drive,
hotpluggable=True)``; the drive that was removed is the one put back, like a
disk pulled from its bay and pushed in again.  QEMU's AHCI has no hot-plug:
its ports say so (PxCMD.HPCP clear, no CAP.SXS), the guest sends no request
and reports those four tests as "ok N - # SKIP no hot-plug on this HBA".
The comparison therefore leaves out the tests one emulator legitimately
skipped, and only those: a SKIP with another reason, or any SKIP on drivebay
(which must run everything), fails the test.  On QEMU the hot-plugged disk
is never written, so its expected image depends on whether the hot-plug
tests ran.
"""

import re
import struct

from drivebay.boot.firmware import guest_program
from harness import Outcome, compare, run_drivebay, run_qemu

DISK_SECTOR = 512
CD_SECTOR = 2048
PORTS = 6
HOTPLUG_PORT = 3
# port -> (drivebay type, sectors)
LAYOUT = {0: ("hdd", 131072), 1: ("hdd", 65536), 2: ("dvddrive", 2000), 3: ("hdd", 16384)}

MODELS = {
    "qemu": {"hdd": "QEMU_HARDDISK", "dvddrive": "QEMU_DVD-ROM"},
    "drivebay": {"hdd": "VBOX_HARDDISK", "dvddrive": "VBOX_CD-ROM"},
}

# ahci.c's writes per port: (first LBA, sectors, tag); written word i of
# sector lba is (tag << 24) ^ (i << 16) ^ lba.
WRITES = {
    0: [(4096, 8, 0xB1), (8192, 40, 0xB2), (16384, 128, 0xB3)],
    1: [(1024, 64, 0xC1)],
}
HOTPLUG_WRITES = {3: [(100, 8, 0xD1)]}   # only when the hot-plug tests ran

# The one reason a test may be skipped, and on which emulator.
HOTPLUG_SKIP = "# SKIP no hot-plug on this HBA"
ALLOWED_SKIPS = {"qemu": HOTPLUG_SKIP}

HOTPLUG_REQUEST = re.compile(r"^# hotplug-request port (\d+) (attach|detach)$")
DRIVEBAY_TIMEOUT_S = 300.0


def pattern_sector(value, size):
    return struct.pack("<I", value) * (size // 4)


def written_sector(lba, tag, size=DISK_SECTOR):
    words = size // 4
    return struct.pack(f"<{words}I", *(((tag << 24) ^ (i << 16) ^ lba) for i in range(words)))


def make_image(path, port, sectors, size):
    with open(path, "wb") as f:
        for first in range(0, sectors, 4096):
            last = min(first + 4096, sectors)
            f.write(b"".join(pattern_sector((port << 24) + lba, size)
                             for lba in range(first, last)))


def expected_image(port, writes):
    kind, sectors = LAYOUT[port]
    size = CD_SECTOR if kind == "dvddrive" else DISK_SECTOR
    data = [pattern_sector((port << 24) + lba, size) for lba in range(sectors)]
    for first, count, tag in writes.get(port, []):
        for lba in range(first, first + count):
            data[lba] = written_sector(lba, tag)
    return b"".join(data)


def first_difference(path, expected, size):
    data = path.read_bytes()
    if len(data) != len(expected):
        return f"{path.name}: {len(data)} bytes, expected {len(expected)}"
    if data == expected:
        return None
    at = next(i for i in range(len(data)) if data[i] != expected[i])
    return (f"{path.name}: sector {at // size} offset {at % size}: "
            f"{data[at:at + 8].hex()} expected {expected[at:at + 8].hex()}")


def image_path(tmp_path, emulator, port):
    kind, _ = LAYOUT[port]
    return tmp_path / f"{emulator}-port{port}.{'iso' if kind == 'dvddrive' else 'img'}"


def drives(tmp_path, emulator):
    """Fresh images and the drives= option of the "ahci" device."""
    spec = {}
    for port, (kind, sectors) in LAYOUT.items():
        path = image_path(tmp_path, emulator, port)
        make_image(path, port, sectors, CD_SECTOR if kind == "dvddrive" else DISK_SECTOR)
        spec[port] = {"type": kind, "path": str(path)}
    spec[HOTPLUG_PORT]["hotpluggable"] = True
    return spec


def cmdline(emulator):
    words = [f"ports={PORTS}", f"hotplug={HOTPLUG_PORT}",
             f"model={MODELS[emulator]['hdd']}", f"cdmodel={MODELS[emulator]['dvddrive']}"]
    words += [f"p{port}={'cd' if kind == 'dvddrive' else 'hd'}:{sectors}"
              for port, (kind, sectors) in LAYOUT.items()]
    return " ".join(words)


def identity(outcome):
    """The diagnostic lines that name the hardware (reported, never compared)."""
    keys = ("ahci controller", "cap ", "model ", "inquiry:", "msi capability")
    return [line for line in outcome.output.splitlines()
            if line.startswith("# ") and any(k in line for k in keys)]


def skipped(outcome):
    return {n: d for n, (ok, d) in outcome.results.items() if ok and d.startswith("# SKIP")}


def without(outcome, numbers):
    """A copy of ``outcome`` without the tests ``numbers``."""
    kept = {n: r for n, r in outcome.results.items() if n not in numbers}
    return Outcome(outcome.emulator, outcome.status, outcome.output, outcome.plan, kept)


def compare_except_legitimate_skips(a, b):
    """harness.compare on the tests both emulators ran; a SKIP other than
    the allowed one for that emulator is itself a difference."""
    diffs, dropped = [], set()
    for outcome in (a, b):
        for n, description in skipped(outcome).items():
            if description == ALLOWED_SKIPS.get(outcome.emulator):
                dropped.add(n)
            else:
                diffs.append(f"test {n}: {outcome.emulator} skipped it: {description}")
    return diffs + compare(without(a, dropped), without(b, dropped))


class HotplugHost:
    """The host half of the hot-plug handshake, for run_drivebay(on_line=...)."""

    def __init__(self):
        self.removed = {}          # port -> the drive taken out
        self.done = []             # (port, action) carried out

    def __call__(self, line, machine):
        m = HOTPLUG_REQUEST.match(line)
        if not m:
            return
        port, action = int(m.group(1)), m.group(2)
        hba = next(d for d in machine.devices.values() if hasattr(d, "detach_drive"))
        if action == "detach":
            self.removed[port] = hba.detach_drive(port)
        else:
            hba.attach_drive(port, self.removed.pop(port), hotpluggable=True)
        self.done.append((port, action))


def run_on(emulator, tmp_path, on_line=None):
    devices = [("ahci", {"ports": PORTS, "drives": drives(tmp_path, emulator)})]
    if emulator == "qemu":
        outcome = run_qemu(guest_program("ahci"), cmdline=cmdline(emulator), devices=devices)
    else:
        outcome = run_drivebay(guest_program("ahci"), cmdline=cmdline(emulator), devices=devices,
                               timeout_s=DRIVEBAY_TIMEOUT_S, on_line=on_line)
    print(f"{emulator}: " + " | ".join(identity(outcome)))
    return outcome


def check_images(tmp_path, emulator, hotplug_ran):
    writes = dict(WRITES)
    if hotplug_ran:
        writes.update(HOTPLUG_WRITES)
    for port, (kind, _) in LAYOUT.items():
        size = CD_SECTOR if kind == "dvddrive" else DISK_SECTOR
        assert first_difference(image_path(tmp_path, emulator, port),
                                expected_image(port, writes), size) is None


def test_ahci_program(tmp_path):
    theirs = run_on("qemu", tmp_path)
    assert theirs.passed, f"QEMU:\n{theirs.output}"
    assert set(skipped(theirs).values()) <= {HOTPLUG_SKIP}, theirs.output
    check_images(tmp_path, "qemu", hotplug_ran=not skipped(theirs))

    host = HotplugHost()
    ours = run_on("drivebay", tmp_path, on_line=host)
    assert ours.passed, f"drivebay:\n{ours.output}"
    assert not skipped(ours), f"drivebay skipped tests:\n{ours.output}"
    assert host.done == [(HOTPLUG_PORT, "detach"), (HOTPLUG_PORT, "attach")]
    check_images(tmp_path, "drivebay", hotplug_ran=True)

    assert compare_except_legitimate_skips(ours, theirs) == []


def test_legitimate_skips_are_left_out_of_the_comparison():
    def outcome(emulator, results):
        return Outcome(emulator, 0, "", len(results), dict(enumerate(results, 1)))

    ran = (True, "hot-plug removal")
    qemu = outcome("qemu", [(True, "a"), (True, HOTPLUG_SKIP)])
    assert compare_except_legitimate_skips(outcome("drivebay", [(True, "a"), ran]), qemu) == []
    assert compare_except_legitimate_skips(
        outcome("drivebay", [(True, "a"), (False, "hot-plug removal")]), qemu) == []
    # drivebay must not skip, and QEMU only for the one reason.
    assert compare_except_legitimate_skips(outcome("drivebay", [(True, "a"), (True, HOTPLUG_SKIP)]),
                                           qemu)
    assert compare_except_legitimate_skips(
        outcome("drivebay", [(True, "a"), ran]),
        outcome("qemu", [(True, "a"), (True, "# SKIP no ncq")]))


def test_image_pattern_matches_the_guest_program():
    # ahci.c: IMAGE_BASE(port) + lba in every word of an unwritten sector;
    # lib/ata.h: ata_written_word(lba, i, tag) = (tag << 24) ^ (i << 16) ^ lba
    assert pattern_sector((1 << 24) + 0x0203, DISK_SECTOR)[:8] == bytes([3, 2, 0, 1, 3, 2, 0, 1])
    assert struct.unpack_from("<2I", written_sector(100, 0xD1)) == (0xD1000064, 0xD1010064)

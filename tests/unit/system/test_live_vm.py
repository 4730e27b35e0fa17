"""A running VM under control: ``vm start`` runs a real guest that keeps
counting in a disk sector through INT 13h while another caller pauses it,
takes a live snapshot, changes a bandwidth group's limit and powers it off
through the control channel (system/control.py)."""

import subprocess
import sys
import threading
import time

import pytest

from drivebay.boot.cpu import StopReason
from drivebay.system import control, vmstart
from drivebay.system.cli import main
from drivebay.system.vm import Home

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from asm import BOOT_SECTOR_START, assemble  # noqa: E402

COUNTER_LBA = 1


def counting_mbr():
    """Read LBA 1, add one to its first word, write it back, wait 2 ms
    (INT 15h AH=86h), forever: a guest that writes its disk while it runs."""
    code = assemble(BOOT_SECTOR_START + f"""
    movb %dl, drive
again:
    movw $0x0201, %ax              /* read one sector */
    call chs
    incw 0x8000
    movw $0x0301, %ax              /* write it back */
    call chs
    movb $0x86, %ah
    xorw %cx, %cx
    movw $2000, %dx
    int $0x15
    jmp again
chs:
    movw ${COUNTER_LBA + 1}, %cx   /* cylinder 0, sector LBA+1 */
    xorb %dh, %dh
    movb drive, %dl
    movw $0x8000, %bx
    int $0x13
    jc failed
    ret
failed:
    movw $0x501, %dx               /* the exit port: status 3 */
    movb $3, %al
    outb %al, %dx
    hlt
drive: .byte 0
""", 0x7C00)
    return code + bytes(510 - len(code)) + b"\x55\xaa"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIVEBAY_HOME", str(tmp_path / "home"))
    return Home()


def counter(home, name, medium=None):
    with home.locked():
        vm = home.find_vm(name)
        a = next(a for a in vm.config.attachments if a.type == "hdd")
        with home.media.open_chain(medium or a.medium) as chain:
            return int.from_bytes(chain.read(COUNTER_LBA * 512, 2), "little")


class Running:
    """``vm start`` on a thread; the machine it built, for a look inside."""

    def __init__(self, name, monkeypatch):
        self.machines = []
        real = vmstart.PcMachine

        def machine(**kw):
            m = real(**kw)
            self.machines.append(m)
            return m
        monkeypatch.setattr(vmstart, "PcMachine", machine)
        self.result = None
        self.thread = threading.Thread(target=self._run, args=(name,), daemon=True)
        self.thread.start()

    def _run(self, name):
        self.result = vmstart.start(Home(), name, timeout_s=120)

    def wait_for_virtual_ns(self, vm, ns):
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                if control.request(vm, "status")["virtual_ns"] >= ns:
                    return
            except Exception:
                pass                     # not listening yet
            time.sleep(0.05)
        raise AssertionError("the VM did not get going")

    def join(self):
        self.thread.join(60)
        assert not self.thread.is_alive()
        return self.result


def make_vm(home, capsys, name, ostype):
    assert main(["vm", "create", "--name", name, "--ostype", ostype, "--disk-size", "8"]) == 0
    disk = capsys.readouterr().out.split("Disk: '")[1].split("'")[0]
    with home.locked():
        vm = home.find_vm(name)
        a = next(a for a in vm.config.attachments if a.type == "hdd")
        with home.media.open_chain(a.medium, writable=True) as chain:
            chain.write(0, counting_mbr())
    return disk


@pytest.mark.parametrize("ostype", ["DOS", "Ubuntu_64"])      # IDE and AHCI
def test_live_snapshot_switches_the_running_disks(home, capsys, monkeypatch, ostype):
    base = make_vm(home, capsys, "live", ostype)
    run = Running("live", monkeypatch)
    with home.locked():
        vm = home.find_vm("live")
    run.wait_for_virtual_ns(vm, 200_000_000)
    # A second start of the running VM is refused and leaves its channel be.
    with pytest.raises(Exception, match="already running"):
        vmstart.start(Home(), "live", timeout_s=1)
    assert main(["snapshot", "live", "take", "first", "--live", "--description", "d"]) == 0
    assert "Snapshot taken. UUID: " in capsys.readouterr().out
    time.sleep(0.3)
    assert main(["controlvm", "live", "status"]) == 0
    assert capsys.readouterr().out.strip() == 'VMState="running"'
    # Online deletion: a second snapshot, deleted while the guest runs,
    # merges the disk the VM writes into its parent.
    assert main(["snapshot", "live", "take", "second"]) == 0
    time.sleep(0.2)
    assert main(["snapshot", "live", "delete", "second", "-p"]) == 0
    out, err = capsys.readouterr()
    assert "Deleted snapshot 'second'" in out and "Merged " in out and "100.0%" in err
    with home.locked():
        vm = home.find_vm("live")
        assert [s.name for s in vm.snapshots] == ["first"]
        on_top = next(a for a in vm.config.attachments if a.type == "hdd").medium
    time.sleep(0.2)
    assert main(["controlvm", "live", "poweroff"]) == 0
    result = run.join()
    assert result.reason is StopReason.STOPPED

    with home.locked():
        vm = home.find_vm("live")
        snap = vm.snapshots[0]
        assert (snap.name, snap.description, snap.online) == ("first", "d", True)
        frozen = home.media.find(base)
        diff = next(a for a in vm.config.attachments if a.type == "hdd").medium
        assert home.media.get(diff).parent == frozen.uuid
    assert diff == on_top                         # the merge went into the running disk's image
    at_snapshot = counter(home, "live", frozen.uuid)
    now = counter(home, "live")
    assert 0 < at_snapshot < now                  # the guest went on writing, into the diff
    # The frozen image is consistent on its own, as qemu-img sees it.
    subprocess.run(["qemu-img", "check", "-f", "vdi", base], check=True, capture_output=True)
    # Restoring goes back to the count at the moment of the snapshot.
    assert main(["snapshot", "live", "restore", "first"]) == 0
    assert counter(home, "live") == at_snapshot


def test_pause_stops_guest_time_and_bandwidth_set_applies_at_once(home, capsys, monkeypatch):
    make_vm(home, capsys, "p", "Ubuntu_64")
    assert main(["bandwidthctl", "p", "add", "Limit", "--type", "disk", "--limit", "20M"]) == 0
    assert main(["storageattach", "p", "--storagectl", "SATA", "--port", "0", "--device", "0",
                 "--bandwidthgroup", "Limit"]) == 0
    run = Running("p", monkeypatch)
    with home.locked():
        vm = home.find_vm("p")
    run.wait_for_virtual_ns(vm, 100_000_000)
    assert main(["controlvm", "p", "pause"]) == 0
    t1 = control.request(vm, "status")
    time.sleep(0.3)
    t2 = control.request(vm, "status")
    assert t1["state"] == t2["state"] == "paused" and t1["virtual_ns"] == t2["virtual_ns"]
    capsys.readouterr()
    assert main(["vm", "show", "p", "--machinereadable"]) == 0
    assert 'VMState="paused"' in capsys.readouterr().out.splitlines()
    assert main(["controlvm", "p", "resume"]) == 0
    run.wait_for_virtual_ns(vm, t2["virtual_ns"] + 50_000_000)

    hba = next(d for d in run.machines[0].devices.values() if type(d).__name__ == "AhciHba")
    group = hba.ports[0].device.backend.bandwidth.group
    assert group.limits.bps_total == 20 * 1024 * 1024
    assert main(["bandwidthctl", "p", "set", "Limit", "--limit", "5M"]) == 0
    assert group.limits.bps_total == 5 * 1024 * 1024       # the running disk's group, at once
    assert main(["controlvm", "p", "poweroff"]) == 0
    assert run.join().reason is StopReason.STOPPED
    assert counter(home, "p") > 0
    capsys.readouterr()
    assert main(["controlvm", "p", "pause"]) != 0
    assert "Machine 'p' is not currently running" in capsys.readouterr().err


def test_vm_start_process_powers_off_on_controlvm(home, capsys):
    """The real command in its own process, as a user runs it."""
    import os
    make_vm(home, capsys, "cli", "DOS")
    proc = subprocess.Popen([sys.executable, "-m", "drivebay.system.cli", "vm", "start", "cli",
                             "--timeout", "120"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ))
    try:
        with home.locked():
            vm = home.find_vm("cli")
        end = time.monotonic() + 60
        while True:
            try:
                if control.request(vm, "status")["virtual_ns"] > 100_000_000:
                    break
            except Exception:
                if time.monotonic() > end or proc.poll() is not None:
                    raise
            time.sleep(0.05)
        assert main(["controlvm", "cli", "poweroff"]) == 0
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert b"powered off (controlvm poweroff)" in err
    assert counter(home, "cli") > 0


def test_storageattach_on_a_running_vm(home, capsys, monkeypatch, tmp_path):
    """VirtualBox's medium change and hot-plug: a disc changed, refused while
    the guest locks the tray unless forced, ejected; a disk plugged into a
    hot-pluggable SATA port and pulled out.  The VM file follows only what
    the running VM did."""
    make_vm(home, capsys, "m", "Ubuntu_64")
    src = tmp_path / "files"
    src.mkdir()
    (src / "a.txt").write_text("a")
    for name in ("one", "two"):
        assert main(["createmedium", "dvd", "--filename", str(tmp_path / f"{name}.iso"),
                     "--source", str(src), "--volume-id", name.upper()]) == 0
    for name in ("extra", "other"):
        assert main(["createmedium", "disk", "--filename", str(tmp_path / f"{name}.vdi"),
                     "--size", "4"]) == 0
    assert main(["storagectl", "m", "--name", "SATA", "--portcount", "4"]) == 0
    capsys.readouterr()
    run = Running("m", monkeypatch)
    with home.locked():
        vm = home.find_vm("m")
    run.wait_for_virtual_ns(vm, 50_000_000)
    devices = run.machines[0].devices.values()
    ide = next(d for d in devices if type(d).__name__ == "PciIdeController")
    hba = next(d for d in devices if type(d).__name__ == "AhciHba")
    lun = ide.device(1, 0).lun

    def dvd():
        with home.locked():
            return home.find_vm("m").config.attachment_at("IDE", 1, 0).location

    def attach(*args):
        capsys.readouterr()
        code = main(["storageattach", "m", *args])
        return code, capsys.readouterr().err

    dvd_args = ["--storagectl", "IDE", "--port", "1", "--device", "0", "--type", "dvddrive"]
    assert attach(*dvd_args, "--medium", str(tmp_path / "one.iso")) == (0, "")
    assert lun.backend.chain.path.endswith("one.iso") and dvd().endswith("one.iso")
    lun.locked = True                               # the guest's PREVENT MEDIUM REMOVAL
    code, err = attach(*dvd_args, "--medium", str(tmp_path / "two.iso"))
    assert code != 0 and "locked the medium" in err and "--forceunmount" in err
    assert lun.backend.chain.path.endswith("one.iso") and dvd().endswith("one.iso")
    assert attach(*dvd_args, "--medium", str(tmp_path / "two.iso"), "--forceunmount") == (0, "")
    assert lun.backend.chain.path.endswith("two.iso") and dvd().endswith("two.iso")
    lun.locked = False
    assert attach(*dvd_args, "--medium", "emptydrive") == (0, "")
    assert lun.backend is None and dvd() is None

    sata = ["--storagectl", "SATA", "--port", "1", "--device", "0", "--type", "hdd"]
    code, err = attach(*sata, "--medium", str(tmp_path / "extra.vdi"))
    assert code != 0 and "not hot-pluggable" in err and hba.ports[1].device is None
    assert attach(*sata, "--medium", str(tmp_path / "extra.vdi"), "--hotpluggable", "on") == \
        (0, "")
    assert hba.ports[1].device is not None
    assert hba.ports[1].device.backend.name == "SATA-1-0"
    # A port the running controller does not have: its count is fixed at power-on.
    code, err = attach("--storagectl", "SATA", "--port", "9", "--device", "0", "--type", "hdd",
                       "--medium", str(tmp_path / "other.vdi"), "--hotpluggable", "on")
    assert code != 0 and "no port 9" in err
    with home.locked():
        assert home.find_vm("m").config.controller("SATA").port_count == 4
    assert attach(*sata, "--medium", "none") == (0, "")
    assert hba.ports[1].device is None
    with home.locked():
        assert home.find_vm("m").config.attachment_at("SATA", 1, 0) is None
    assert main(["controlvm", "m", "poweroff"]) == 0
    assert run.join().reason is StopReason.STOPPED

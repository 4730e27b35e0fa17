"""``drivebay vm start``: a VM made with VirtualBox's defaults boots its disk
under its default firmware (drivebay's BIOS boot stub) and under unmodified
SeaBIOS, through the controllers its VM file names."""

import sys

import pytest

from drivebay.block.chain import open_chain
from drivebay.boot.cpu import StopReason
from drivebay.system import vmstart
from drivebay.system.cli import main
from drivebay.system.vm import Home

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "guest"))
from test_seabios_boot import GOOD, boot_code  # noqa: E402


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIVEBAY_HOME", str(tmp_path / "home"))
    return Home()


def write_mbr(disk_path):
    signature = b"DRIVEBAY-SECTOR-ONE"
    code = boot_code(1, signature)
    with open_chain(disk_path, writable=True) as chain:
        chain.write(0, code + bytes(510 - len(code)) + b"\x55\xaa")
        chain.write(512, signature)


@pytest.mark.parametrize("firmware", [None, "seabios"])
@pytest.mark.parametrize("ostype,controller", [("DOS", "ata0-0"), ("Ubuntu_64", "AHCI/0")])
def test_vm_start_boots_the_vm_disk(home, capsys, ostype, controller, firmware):
    assert main(["vm", "create", "--name", "box", "--ostype", ostype, "--disk-size", "16"]) == 0
    disk = capsys.readouterr().out.split("Disk: '")[1].split("'")[0]
    write_mbr(disk)
    debug = bytearray()
    result = vmstart.start(Home(), "box", firmware=firmware, timeout_s=60,
                           debugcon_out=debug.extend)
    log = debug.decode("latin-1")
    assert controller in log, log[-2000:]
    assert (result.reason, result.exit_code) == (StopReason.EXIT, GOOD), log[-2000:]


def test_vm_start_cli_timeout_is_success(home, capsys):
    assert main(["vm", "create", "--name", "idle", "--ostype", "DOS", "--disk-size", "8"]) == 0
    capsys.readouterr()
    # An empty disk: SeaBIOS finds nothing to boot and keeps retrying.
    assert main(["vm", "start", "idle", "--firmware", "seabios", "--timeout", "2"]) == 0
    assert "still running after 2.0 s" in capsys.readouterr().err


def test_vm_start_stub_says_when_nothing_boots(home, capsys):
    # An empty disk and an empty CD drive: the stub tries both in the VM's
    # boot order, says why each failed, and halts.
    assert main(["vm", "create", "--name", "s", "--ostype", "DOS", "--disk-size", "8"]) == 0
    capsys.readouterr()
    assert main(["vm", "start", "s", "--firmware", "stub", "--timeout", "20"]) != 0
    out, err = capsys.readouterr()
    assert "Boot failed: not a bootable disk" in out, out
    assert out.rstrip().endswith("No bootable device."), out
    assert "halted" in err


def test_vm_start_follows_the_vm_boot_order(home, capsys):
    """Every boot slot "none": nothing is tried, though the disk is bootable."""
    assert main(["vm", "create", "--name", "n", "--ostype", "DOS", "--disk-size", "8"]) == 0
    disk = capsys.readouterr().out.split("Disk: '")[1].split("'")[0]
    write_mbr(disk)
    assert main(["modifyvm", "n"] + [a for i in range(1, 5) for a in (f"--boot{i}", "none")]) == 0
    capsys.readouterr()
    assert main(["vm", "start", "n", "--timeout", "20"]) != 0
    out, _ = capsys.readouterr()
    assert "Booting from" not in out and out.rstrip().endswith("No bootable device."), out
    assert main(["modifyvm", "n", "--boot1", "disk"]) == 0
    result = vmstart.start(Home(), "n", timeout_s=60)
    assert (result.reason, result.exit_code) == (StopReason.EXIT, GOOD)


def test_vm_start_serves_the_disks_from_the_machine_io_threads(home, capsys, monkeypatch):
    assert main(["vm", "create", "--name", "t", "--ostype", "Ubuntu_64", "--disk-size", "8"]) == 0
    disk = capsys.readouterr().out.split("Disk: '")[1].split("'")[0]
    write_mbr(disk)
    seen = []
    real = vmstart.PcMachine

    def machine(**kw):
        m = real(**kw)
        seen.append(m)
        return m
    monkeypatch.setattr(vmstart, "PcMachine", machine)
    result = vmstart.start(Home(), "t", timeout_s=60)
    assert (result.reason, result.exit_code) == (StopReason.EXIT, GOOD)
    hba = next(d for d in seen[0].devices.values() if type(d).__name__ == "AhciHba")
    assert hba.ports[0].device.backend.io is hba.machine_io is seen[0].block_io


def test_firmware_choices():
    # The stub is the default: always built, while SeaBIOS is a package.
    from drivebay.boot import firmware
    assert vmstart.firmware_path(None) == vmstart.firmware_path("stub") == firmware.stub()
    assert firmware.stub().stat().st_size == 128 << 10
    assert vmstart.firmware_path("seabios") == firmware.seabios()
    assert vmstart.firmware_path("/opt/bios.bin") == "/opt/bios.bin"

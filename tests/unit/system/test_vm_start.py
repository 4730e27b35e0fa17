"""``drivebay vm start``: a VM made with VirtualBox's defaults boots its disk
under unmodified SeaBIOS, through the controllers its VM file names."""

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


@pytest.mark.parametrize("ostype,controller", [("DOS", "ata0-0"), ("Ubuntu_64", "AHCI/0")])
def test_vm_start_boots_the_vm_disk(home, capsys, ostype, controller):
    assert main(["vm", "create", "--name", "box", "--ostype", ostype, "--disk-size", "16"]) == 0
    disk = capsys.readouterr().out.split("Disk: '")[1].split("'")[0]
    write_mbr(disk)
    debug = bytearray()
    result = vmstart.start(Home(), "box", timeout_s=60, debugcon_out=debug.extend)
    log = debug.decode("latin-1")
    assert controller in log, log[-2000:]
    assert (result.reason, result.exit_code) == (StopReason.EXIT, GOOD), log[-2000:]


def test_vm_start_cli_timeout_is_success(home, capsys):
    assert main(["vm", "create", "--name", "idle", "--ostype", "DOS", "--disk-size", "8"]) == 0
    capsys.readouterr()
    # An empty disk: SeaBIOS finds nothing to boot and keeps retrying.
    assert main(["vm", "start", "idle", "--timeout", "2"]) == 0
    assert "still running after 2.0 s" in capsys.readouterr().err


def test_vm_start_refuses_the_unbuilt_stub(home, capsys):
    assert main(["vm", "create", "--name", "s", "--ostype", "DOS", "--disk-size", "8"]) == 0
    assert main(["vm", "start", "s", "--firmware", "stub"]) == 2
    assert "boot stub is not built yet" in capsys.readouterr().err

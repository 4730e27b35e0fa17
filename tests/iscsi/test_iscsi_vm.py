"""iSCSI disks in VMs, as VBoxManage attaches them (``storageattach
--medium iscsi --server --target --lun --username --password``), against a
real target (tgtd): a guest counts in a disk sector through INT 13h on an
AHCI disk that is an iSCSI LUN; snapshots put a VDI over the LUN and
deleting them merges back into it; clonemedium copies the LUN to a file."""

import os
import sys
import time

import pytest

from drivebay.boot.cpu import StopReason
from drivebay.system import vmstart
from drivebay.system.cli import main
from drivebay.system.vm import Home

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "unit" / "system"))
from test_live_vm import COUNTER_LBA, Running, counting_mbr  # noqa: E402

MiB = 1 << 20


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIVEBAY_HOME", str(tmp_path / "home"))
    return Home()


def run_cli(capsys, *args):
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def lun_counter(target):
    return int.from_bytes(target.file_bytes(COUNTER_LBA * 512, 2), "little")


def attach_lun(capsys, vm, target, port, user, password, *extra):
    return run_cli(capsys, "storageattach", vm, "--storagectl", "SATA", "--port", 0,
                   "--device", 0, "--type", "hdd", "--medium", "iscsi",
                   "--server", f"127.0.0.1:{port}", "--target", target.iqn, "--lun", 1,
                   "--username", user, "--password", password, *extra)


def counted_run(home, name, monkeypatch, ns=300_000_000):
    run = Running(name, monkeypatch)
    with home.locked():
        vm = home.find_vm(name)
    run.wait_for_virtual_ns(vm, ns)
    assert main(["controlvm", name, "poweroff"]) == 0
    assert run.join().reason is StopReason.STOPPED


def test_a_vm_boots_and_writes_an_iscsi_disk(tgtd, home, capsys, monkeypatch, tmp_path):
    t = tgtd.target("vmdisk", size=8 * MiB, content=counting_mbr(),
                    users=[("dave", "dave-secret12")])
    assert main(["vm", "create", "--name", "net", "--ostype", "Ubuntu_64"]) == 0
    code, _, err = attach_lun(capsys, "net", t, tgtd.port, "dave", "dave-secret12")
    assert code == 0, err

    # The medium: VirtualBox's properties, the URL without the secret.
    code, out, _ = run_cli(capsys, "showmediuminfo", "disk", f"iscsi://127.0.0.1:{tgtd.port}/"
                           f"{t.iqn}/1")
    assert code == 0
    assert "iscsi" in out and f"127.0.0.1:{tgtd.port}" in out and "dave-secret12" not in out
    lines = out.splitlines()
    assert "Capacity:       8 MBytes (8388608 bytes)" in lines
    assert "Property:       InitiatorSecret=***" in lines
    assert "Property:       InitiatorUsername=dave" in lines
    assert f"Property:       TargetName={t.iqn}" in lines

    counted_run(home, "net", monkeypatch)
    first = lun_counter(t)
    assert first > 0                                  # the guest's writes reached the target

    # A snapshot puts a VDI over the LUN: the next run writes there, not to the LUN.
    assert main(["snapshot", "net", "take", "s1"]) == 0
    with home.locked():
        vm = home.find_vm("net")
        a = vm.config.attachment_at("SATA", 0, 0)
        diff = home.media.get(a.medium)
        assert diff.format == "vdi" and home.media.get(diff.parent).format == "iscsi"
    counted_run(home, "net", monkeypatch)
    assert lun_counter(t) == first
    with home.locked():
        with home.media.open_chain(diff.uuid) as chain:
            later = int.from_bytes(chain.read(COUNTER_LBA * 512, 2), "little")
    assert later > first
    # Deleting the snapshot merges the VDI into the LUN.
    assert main(["snapshot", "net", "delete", "s1"]) == 0
    assert lun_counter(t) == later
    with home.locked():
        assert home.find_vm("net").config.attachment_at("SATA", 0, 0).medium == diff.parent

    # clonemedium copies the LUN into a file.
    out_vdi = tmp_path / "copy.vdi"
    code, _, err = run_cli(capsys, "clonemedium", "disk", diff.parent, out_vdi)
    assert code == 0, err
    with home.locked():
        with home.media.open_chain(home.media.find(str(out_vdi)).uuid) as chain:
            assert chain.read(0, 8 * MiB) == t.file_bytes(0, 8 * MiB)

    # What cannot be done to a LUN is refused by name.
    for args, words in ((("closemedium", "disk", diff.parent, "--delete"), "iSCSI LUN"),
                        (("modifymedium", "disk", diff.parent, "--resize", "16"), "iSCSI LUN"),
                        (("modifymedium", "disk", diff.parent, "--compact"), "iSCSI LUN")):
        code, _, err = run_cli(capsys, *args)
        assert code != 0 and words in err, (args, err)


def test_wrong_secret_fails_at_power_on_naming_the_login(tgtd, home, capsys):
    t = tgtd.target("locked", users=[("carol", "carol-secret1")])
    assert main(["vm", "create", "--name", "bad", "--ostype", "Ubuntu_64"]) == 0
    code, _, err = attach_lun(capsys, "bad", t, tgtd.port, "carol", "wrong-secret12")
    assert code == 0, err                     # attaching does not log in, as in VirtualBox
    with pytest.raises(Exception) as e:
        vmstart.start(Home(), "bad", timeout_s=5)
    assert "authentication failed" in str(e.value) and "wrong-secret12" not in str(e.value)


def test_iscsi_options_are_checked(tgtd, home, capsys, tmp_path):
    t = tgtd.target("opts")
    assert main(["vm", "create", "--name", "o", "--ostype", "Ubuntu_64"]) == 0
    base = ["storageattach", "o", "--storagectl", "SATA", "--port", 1, "--device", 0,
            "--medium", "iscsi"]
    for extra, words in (([], "--server and --target"),
                         (["--server", "127.0.0.1", "--target", t.iqn, "--intnet"], "--intnet"),
                         (["--server", "127.0.0.1", "--target", t.iqn, "--lun", 1,
                           "--encodedlun", "0001000000000000"], "give one"),
                         (["--server", "127.0.0.1", "--target", t.iqn, "--encodedlun",
                           "zz"], "hexadecimal"),
                         (["--server", "127.0.0.1", "--target", t.iqn, "--username", "u"],
                          "both --username and --password"),
                         (["--server", "127.0.0.1", "--target", t.iqn, "--type", "dvddrive"],
                          "hard disk")):
        code, _, err = run_cli(capsys, *base, *extra)
        assert code != 0 and words in err, (extra, err)
    # --encodedlun 0001000000000000 is LUN 1 (peripheral addressing, bus 0).
    secret = tmp_path / "secret"
    secret.write_text("pw-from-file1\n")
    code, _, err = run_cli(capsys, *base, "--server", f"127.0.0.1:{tgtd.port}", "--target", t.iqn,
                           "--encodedlun", "0001000000000000", "--username", "u",
                           "--passwordfile", secret)
    assert code == 0, err
    with home.locked():
        m = home.media.get(home.find_vm("o").config.attachment_at("SATA", 1, 0).medium)
        assert m.location == f"iscsi://127.0.0.1:{tgtd.port}/{t.iqn}/1"
        assert m.properties["InitiatorSecret"] == "pw-from-file1"
        # The registry holding the secret is its owner's alone, as VirtualBox.xml is.
        assert os.stat(home.media.path).st_mode & 0o077 == 0
        assert m.properties["LUN"] == "1"


def test_initiator_name_and_mutual_chap_from_the_medium(tgtd, home, capsys, monkeypatch):
    """--initiator and the TargetUsername/TargetSecret properties reach the
    login: a target that admits only one initiator IQN and checks its own
    CHAP account (mutual) serves the VM."""
    iqn = "iqn.2026-11.org.drivebay.test:vm-initiator"
    t = tgtd.target("mutualvm", size=4 * MiB, content=counting_mbr(),
                    users=[("erin", "erin-secret123")], outgoing=("tgt-erin", "tgt-secret123"),
                    initiators=[iqn])
    assert main(["vm", "create", "--name", "mu", "--ostype", "Ubuntu_64"]) == 0
    code, _, err = attach_lun(capsys, "mu", t, tgtd.port, "erin", "erin-secret123")
    assert code == 0, err
    with home.locked():
        uuid = home.find_vm("mu").config.attachment_at("SATA", 0, 0).medium
    with pytest.raises(Exception, match="login refused"):      # not the admitted initiator
        vmstart.start(Home(), "mu", timeout_s=5)
    code, _, err = attach_lun(capsys, "mu", t, tgtd.port, "erin", "erin-secret123",
                              "--initiator", iqn)
    assert code == 0, err
    for name, value in (("TargetUsername", "tgt-erin"), ("TargetSecret", "wrong-secret123")):
        assert main(["mediumproperty", "disk", "set", uuid, name, value]) == 0
    with pytest.raises(Exception, match="target failed mutual CHAP"):
        vmstart.start(Home(), "mu", timeout_s=5)
    assert main(["mediumproperty", "disk", "set", uuid, "TargetSecret", "tgt-secret123"]) == 0
    code, out, _ = run_cli(capsys, "showmediuminfo", "disk", uuid)
    assert "Property:       TargetSecret=***" in out.splitlines() and "tgt-secret123" not in out
    counted_run(home, "mu", monkeypatch, ns=100_000_000)
    assert lun_counter(t) > 0

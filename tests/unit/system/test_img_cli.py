"""``drivebay img`` as a user types it (in process, through main())."""

import json

import pytest

from drivebay.block.drivers import open_image
from drivebay.system.cli import main

MiB = 1 << 20


def img(capsys, *args):
    code = main(["img", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_create_info_and_map(tmp_path, capsys):
    disk = tmp_path / "disk.vdi"
    code, out, _ = img(capsys, "create", "-f", "vdi", disk, "64M")
    assert code == 0 and "fmt=vdi" in out
    with open_image(disk, writable=True) as im:
        im.write(3 * MiB, b"x" * 4096)
    code, out, _ = img(capsys, "info", "--output", "json", disk)
    info = json.loads(out)
    assert info["format"] == "vdi" and info["virtual-size"] == 64 * MiB
    assert len(info["uuid"]) == 36
    code, out, _ = img(capsys, "map", "--output", "json", disk)
    rows = json.loads(out)
    data = [r for r in rows if r["data"]]
    assert data and data[0]["start"] <= 3 * MiB < data[0]["start"] + data[0]["length"]
    assert sum(r["length"] for r in rows) == 64 * MiB


def test_sizes_take_suffixes(tmp_path, capsys):
    for text, expect in (("1k", 1024), ("2M", 2 * MiB), ("1G", 1 << 30), ("4096", 4096)):
        path = tmp_path / f"d{text}.img"
        assert img(capsys, "create", "-f", "raw", path, text)[0] == 0
        with open_image(path) as im:
            assert im.size == expect
    code, _, err = img(capsys, "create", "-f", "raw", tmp_path / "bad.img", "12Q")
    assert code == 2 and "invalid size '12Q'" in err


def test_convert_compare_and_check(tmp_path, capsys):
    raw = tmp_path / "disk.img"
    img(capsys, "create", "-f", "raw", raw, "16M")
    with open_image(raw, writable=True) as im:
        im.write(5 * MiB, b"data" * 1024)
    vhd, vdi = tmp_path / "disk.vhd", tmp_path / "disk.vdi"
    assert img(capsys, "convert", "-O", "vhd", raw, vhd)[0] == 0
    assert img(capsys, "convert", "-O", "vdi", vhd, vdi)[0] == 0
    code, out, _ = img(capsys, "compare", raw, vdi)
    assert (code, out.strip()) == (0, "Images are identical.")
    with open_image(vdi, writable=True) as im:
        im.write(100, b"!")
    code, out, _ = img(capsys, "compare", raw, vdi)
    assert code == 1 and "Content mismatch at offset 100!" in out
    code, out, _ = img(capsys, "check", vdi)
    assert code == 0 and "No errors were found" in out


def test_check_reports_corruption_with_qemu_exit_code(tmp_path, capsys):
    vdi = tmp_path / "disk.vdi"
    img(capsys, "create", "-f", "vdi", vdi, "8M")
    with open_image(vdi, writable=True) as im:
        im.write(0, b"a" * MiB)
        im.write(MiB, b"b" * MiB)
    blob = bytearray(vdi.read_bytes())
    off_blocks = int.from_bytes(blob[0x154:0x158], "little")
    blob[off_blocks + 4:off_blocks + 8] = blob[off_blocks:off_blocks + 4]    # two entries, one block
    vdi.write_bytes(bytes(blob))
    code, out, _ = img(capsys, "check", vdi)
    assert code == 2 and "ERROR" in out


def test_resize_compact_merge_rebase(tmp_path, capsys):
    base, child = tmp_path / "base.vdi", tmp_path / "child.vdi"
    img(capsys, "create", "-f", "vdi", base, "8M")
    with open_image(base, writable=True) as im:
        im.write(0, b"B" * MiB)
    assert img(capsys, "create", "-f", "vdi", "-b", base, child)[0] == 0
    with open_image(child, writable=True) as im:
        im.write(2 * MiB, b"C" * MiB)
    code, out, _ = img(capsys, "merge", child)
    assert code == 0 and str(base) in out
    with open_image(base) as im:
        assert im.read(0, 1) == b"B" and im.read(2 * MiB, 1) == b"C"
    assert img(capsys, "resize", base, "+8M")[0] == 0
    with open_image(base) as im:
        assert im.size == 16 * MiB
    code, _, err = img(capsys, "resize", base, "4M")
    assert code == 2 and "shrinking" in err
    with open_image(base, writable=True) as im:
        im.write(2 * MiB, bytes(MiB))
    before = base.stat().st_size
    assert img(capsys, "compact", base)[0] == 0
    assert base.stat().st_size < before


def test_merge_parent_into_child_makes_a_base(tmp_path, capsys):
    base, child = tmp_path / "base.vhd", tmp_path / "child.vhd"
    img(capsys, "create", "-f", "vhd", base, "8M")
    with open_image(base, writable=True) as im:
        im.write(0, b"P" * 4096)
    img(capsys, "create", "-f", "vhd", "-b", base, child)
    assert img(capsys, "merge", "--into", "child", child)[0] == 0
    base.unlink()
    with open_image(child) as im:
        assert not im.has_parent
        assert im.read(0, 4096) == b"P" * 4096


def test_formats_lists_drivers(capsys):
    code, out, _ = img(capsys, "formats")
    assert code == 0
    assert {line.split()[0] for line in out.splitlines()} >= {"raw", "vdi"}


def test_progress_is_drawn_on_request(tmp_path, capsys):
    raw = tmp_path / "disk.img"
    img(capsys, "create", "-f", "raw", raw, "4M")
    code, _, err = img(capsys, "convert", "-p", "-O", "vdi", raw, tmp_path / "o.vdi")
    assert code == 0 and "100.0%" in err


def test_commit_and_check_json(tmp_path, capsys):
    base, child = tmp_path / "base.vhd", tmp_path / "child.vhd"
    img(capsys, "create", "-f", "vhd", base, "4M")
    img(capsys, "create", "-f", "vhd", "-b", base, child)
    with open_image(child, writable=True) as im:
        im.write(4096, b"c" * 512)
    assert img(capsys, "commit", child)[0] == 0
    with open_image(base) as im:
        assert im.read(4096, 512) == b"c" * 512
    code, out, _ = img(capsys, "check", "--output", "json", base)
    report = json.loads(out)
    assert code == 0 and report["check-errors"] == 0 and report["leaks"] == 0

import os

import pytest

from drivebay.block.convert import compare, convert
from drivebay.block.driver import State
from drivebay.block.drivers import open_image, probe
from drivebay.block.raw import RawDriver
from drivebay.errors import ImageError, UnsupportedOperation


@pytest.fixture
def raw(tmp_path):
    path = tmp_path / "disk.img"
    RawDriver.create(path, 4 << 20)
    return path


def test_create_sparse_and_fixed(tmp_path):
    RawDriver.create(tmp_path / "d.img", 8 << 20)
    RawDriver.create(tmp_path / "f.img", 8 << 20, variant="fixed")
    assert os.path.getsize(tmp_path / "d.img") == 8 << 20
    assert os.stat(tmp_path / "d.img").st_blocks == 0
    assert os.stat(tmp_path / "f.img").st_blocks * 512 >= 8 << 20


def test_write_read_and_holes(raw):
    with open_image(raw, writable=True) as im:
        assert im.size == 4 << 20
        im.write(1 << 20, b"\xab" * 4096)
        assert im.read((1 << 20) - 2, 4) == b"\0\0\xab\xab"
        status = im.block_status(0, im.size)
        assert [e.state for e in status] == [State.ZERO, State.DATA, State.ZERO]
        assert status[1].host_offset == 1 << 20
        im.discard(1 << 20, 4096)
        assert im.read(1 << 20, 4096) == bytes(4096)


def test_out_of_range_and_read_only(raw):
    with open_image(raw) as im:
        with pytest.raises(ImageError, match="outside the 4194304-byte disk"):
            im.read((4 << 20) - 1, 2)
        with pytest.raises(UnsupportedOperation, match="open read-only"):
            im.write(0, b"x")


def test_probe_is_content_based(tmp_path, raw):
    renamed = tmp_path / "disk.vdi"
    os.rename(raw, renamed)
    assert probe(renamed) is RawDriver


def test_convert_skips_zero_clusters(tmp_path, raw):
    with open_image(raw, writable=True) as im:
        im.write(0, b"\x01" * 512)
        im.write(2 << 20, bytes(65536))             # allocated on the host but zero
        im.write(3 << 20, b"\x02" * 65536)
    out = tmp_path / "copy.img"
    done = []
    with open_image(raw) as src:
        convert(src, out, "raw", progress=lambda d, t: done.append((d, t)))
    with open_image(raw) as a, open_image(out) as b:
        assert compare(a, b) is None
        data = [e for e in b.block_status(0, b.size) if e.state is State.DATA]
        assert sum(e.length for e in data) <= 4096 + 65536
    assert done[-1] == (4 << 20, 4 << 20)


def test_convert_refuses_to_overwrite(tmp_path, raw):
    with open_image(raw) as src, pytest.raises(ImageError, match="already exists"):
        convert(src, raw, "raw")


def test_compare_reports_first_difference(tmp_path, raw):
    other = tmp_path / "b.img"
    RawDriver.create(other, 5 << 20)
    with open_image(other, writable=True) as im:
        im.write(12345, b"z")
    with open_image(raw) as a, open_image(other) as b:
        assert compare(a, b) == 12345
        assert compare(a, b, strict=True) == 4 << 20
    with open_image(other, writable=True) as im:
        im.write(12345, b"\0")
        im.write((5 << 20) - 1, b"q")
    with open_image(raw) as a, open_image(other) as b:
        assert compare(a, b) == (5 << 20) - 1

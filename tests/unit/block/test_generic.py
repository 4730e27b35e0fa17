"""Behaviour every writable format shares (QEMU iotests' "_supported_fmt generic").

Each test runs for every registered driver that can create images, so a new
format gets the whole set by registering.
"""

import os

import pytest

from drivebay.block.chain import open_chain
from drivebay.block.convert import compare, convert
from drivebay.block.driver import State
from drivebay.block.drivers import DRIVERS, open_image, probe
from drivebay.errors import ImageError

MiB = 1 << 20
CREATABLE = [d for d in DRIVERS if d.create_variants and d.fixed_sizes is None]
DIFFERENCING = [d for d in CREATABLE if d.supports_backing]


def variants():
    for d in CREATABLE:
        for v in d.create_variants:
            yield pytest.param((d, v), id=f"{d.format_name}-{v}")


@pytest.fixture(params=list(variants()))
def image(request, tmp_path):
    cls, variant = request.param
    path = tmp_path / f"disk.{cls.format_name}"
    cls.create(path, 8 * MiB, variant=variant)
    return cls, variant, path


def pattern(n, seed=1):
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def test_probe_finds_the_format(image):
    cls, _, path = image
    assert probe(path) is cls


def test_fresh_image_reads_zeros(image):
    _, _, path = image
    with open_image(path) as im:
        assert im.size == 8 * MiB
        assert im.read(0, 64 * 1024) == bytes(64 * 1024)
        assert im.read(8 * MiB - 512, 512) == bytes(512)


def test_write_read_reopen(image):
    _, _, path = image
    data = pattern(300_000)
    with open_image(path, writable=True) as im:
        im.write(12345, data)
        im.write(8 * MiB - 10, b"0123456789")
        assert im.read(12345, len(data)) == data
        im.flush()
    with open_image(path) as im:
        assert im.read(12345, len(data)) == data
        assert im.read(8 * MiB - 10, 10) == b"0123456789"
        assert im.read(0, 12345) == bytes(12345)


def test_block_status_covers_the_disk(image):
    _, _, path = image
    with open_image(path, writable=True) as im:
        im.write(3 * MiB, b"\x01" * 4096)
        status = im.block_status(0, im.size)
        assert status[0].offset == 0
        assert sum(e.length for e in status) == im.size
        for a, b in zip(status, status[1:]):
            assert a.offset + a.length == b.offset
        covering = [e for e in status if e.offset <= 3 * MiB < e.offset + e.length]
        assert covering[0].state is State.DATA


def test_out_of_range_is_refused(image):
    _, _, path = image
    with open_image(path, writable=True) as im:
        with pytest.raises(ImageError):
            im.write(8 * MiB - 1, b"ab")
        with pytest.raises(ImageError):
            im.read(8 * MiB, 1)


def test_resize_keeps_data(image):
    cls, _, path = image
    if not cls.resizable:
        pytest.fail(f"{cls.format_name} must be resizable")
    with open_image(path, writable=True) as im:
        im.write(MiB, b"keep" * 1000)
        im.resize(20 * MiB)
        im.write(19 * MiB, b"tail")
    with open_image(path) as im:
        assert im.size == 20 * MiB
        assert im.read(MiB, 4000) == b"keep" * 1000
        assert im.read(19 * MiB, 4) == b"tail"
        assert im.read(8 * MiB, 4096) == bytes(4096)


@pytest.mark.parametrize("target", [d.format_name for d in CREATABLE])
def test_convert_to_every_format(image, target, tmp_path):
    _, _, path = image
    with open_image(path, writable=True) as im:
        im.write(0, pattern(5000))
        im.write(5 * MiB, pattern(70000, seed=3))
    out = tmp_path / f"out.{target}"
    with open_image(path) as src:
        convert(src, out, target)
    with open_image(path) as a, open_image(out) as b:
        assert b.size == a.size
        assert compare(a, b) is None
        if b.uuid is not None and a.uuid is not None:
            assert b.uuid != a.uuid                     # a clone gets a new UUID


@pytest.mark.parametrize("cls", DIFFERENCING, ids=lambda d: d.format_name)
def test_differencing_chain_and_merges(cls, tmp_path):
    base, mid, top = tmp_path / "base", tmp_path / "mid", tmp_path / "top"
    cls.create(base, 4 * MiB)
    with open_image(base, writable=True) as im:
        im.write(0, b"B" * (2 * MiB))
    with open_image(base) as parent:
        cls.create(mid, None, parent=parent)
    with open_image(mid) as parent:
        cls.create(top, None, parent=parent)

    resolver = _resolver(tmp_path)
    with open_chain(mid, writable=True, resolver=resolver) as chain:
        chain.write(MiB, b"M" * 4096)
    with open_chain(top, writable=True, resolver=resolver) as chain:
        chain.write(MiB + 4096, b"T" * 4096)
        chain.write_zeroes(0, 4096)          # zeros in the child must shadow the parent
    expect = bytearray(b"B" * (2 * MiB) + bytes(2 * MiB))
    expect[MiB:MiB + 4096] = b"M" * 4096
    expect[MiB + 4096:MiB + 8192] = b"T" * 4096
    expect[0:4096] = bytes(4096)
    with open_chain(top, resolver=resolver) as chain:
        assert len(chain.images) == 3
        assert chain.read(0, 4 * MiB) == bytes(expect)


def _resolver(folder):
    """Find a parent by UUID among the files of ``folder`` (the media registry's job)."""
    def resolve(uuid, locator, child):
        for name in os.listdir(folder):
            try:
                with open_image(folder / name) as im:
                    if uuid is not None and im.uuid == uuid:
                        return folder / name
            except ImageError:
                continue
        return None
    return resolve

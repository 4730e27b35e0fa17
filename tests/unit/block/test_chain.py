"""Chain links: trees, UUID mismatches, missing parents and loops."""

import pytest

from drivebay.block.chain import open_chain
from drivebay.block.drivers import open_image
from drivebay.block.vhd import VhdDriver
from drivebay.errors import ChainError

MiB = 1 << 20


def make_chain(tmp_path, *names):
    paths = [tmp_path / n for n in names]
    VhdDriver.create(paths[0], 4 * MiB)
    for parent, child in zip(paths, paths[1:]):
        with open_image(parent) as p:
            VhdDriver.create(child, None, parent=p)
    return paths


def test_a_parent_with_two_children(tmp_path):
    base, a = make_chain(tmp_path, "base.vhd", "a.vhd")
    with open_image(base) as p:
        VhdDriver.create(tmp_path / "b.vhd", None, parent=p)
    with open_image(base, writable=True) as im:
        im.write(0, b"base")
    with open_chain(a, writable=True) as chain:
        chain.write(0, b"AA")
    with open_chain(tmp_path / "b.vhd", writable=True) as chain:
        chain.write(2, b"BB")
    with open_chain(a) as chain:
        assert chain.read(0, 4) == b"AAse"
    with open_chain(tmp_path / "b.vhd") as chain:
        assert chain.read(0, 4) == b"baBB"


def test_missing_parent(tmp_path):
    base, child = make_chain(tmp_path, "base.vhd", "child.vhd")
    base.unlink()
    with pytest.raises(ChainError, match=r"child\.vhd: parent image not found"):
        open_chain(child)


def test_parent_uuid_mismatch(tmp_path):
    base, child = make_chain(tmp_path, "base.vhd", "child.vhd")
    base.unlink()
    VhdDriver.create(base, 4 * MiB)                # same name, new UUID
    with pytest.raises(ChainError, match="records parent UUID .* but .*base.vhd has UUID"):
        open_chain(child)


def test_loop_is_refused(tmp_path):
    a, b = make_chain(tmp_path, "a.vhd", "b.vhd")
    with open_image(b) as im_b:
        b_uuid = im_b.uuid
    # Hand-edit a into a child of b: a -> b -> a.
    with open_image(a, writable=True) as im:
        im.set_parent(b_uuid, "b.vhd")
    with pytest.raises(ChainError, match="already in the chain"):
        open_chain(b)


def test_failed_open_closes_what_it_opened(tmp_path):
    base, child = make_chain(tmp_path, "base.vhd", "child.vhd")
    base.unlink()
    import os
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(ChainError):
            open_chain(child)
    assert len(os.listdir("/proc/self/fd")) == before

"""BlockBackend.detach_chain/attach_chain: the images under a running
device change (a live snapshot) while the backend object stays."""

import errno
import os

import pytest

from drivebay.block.backend import BlockBackend
from drivebay.block.chain import open_chain
from drivebay.block.drivers import driver_for
from drivebay.block.io import IoThreads, Op, Request
from drivebay.block.locking import image_locking
from drivebay.errors import ConfigError, ImageError

MiB = 1 << 20


@pytest.mark.parametrize("host_cache", [True, False])
def test_writes_before_detach_reach_the_old_image_and_after_attach_the_new(tmp_path, host_cache):
    vdi = driver_for("vdi")
    base = str(tmp_path / "base.vdi")
    vdi.create(base, 4 * MiB)
    io = IoThreads(2)
    try:
        backend = BlockBackend.open(base, io=io, host_cache=host_cache)
        done = []
        backend.submit(Request(Op.WRITE, 0, [b"A" * 4096]), done.append)
        old_path = backend.detach_chain()
        assert old_path == base
        # Detached: the image is unlocked, so another opener may write it.
        with image_locking():
            chain = open_chain(base, writable=True)
        chain.close()
        diff = str(tmp_path / "diff.vdi")
        with vdi.open(base) as parent:
            vdi.create(diff, 4 * MiB, parent=parent)
        with image_locking():
            backend.attach_chain(open_chain(diff, writable=True))
        backend.write(4096, b"B" * 4096)
        backend.flush()
        got = bytearray(8192)
        backend.readinto(0, got)
        assert bytes(got) == b"A" * 4096 + b"B" * 4096
        backend.poll_completions()
        assert [d.ok for d in done] == [True]
        backend.close()
        with vdi.open(base) as image:
            assert image.read(0, 8192) == b"A" * 4096 + bytes(4096)
        with open_chain(diff) as chain:
            assert chain.read(0, 8192) == b"A" * 4096 + b"B" * 4096
    finally:
        io.close()


def test_attach_on_a_backend_that_has_images_is_refused(tmp_path):
    raw = str(tmp_path / "d.raw")
    with open(raw, "wb") as f:
        f.truncate(MiB)
    with BlockBackend.open(raw) as backend:
        with pytest.raises(ConfigError, match="attach_chain"):
            backend.attach_chain(open_chain(raw))


def test_a_detached_backend_refuses_requests_and_closes_cleanly(tmp_path):
    raw = str(tmp_path / "d.raw")
    with open(raw, "wb") as f:
        f.truncate(MiB)
    backend = BlockBackend.open(raw)
    backend.detach_chain()
    # A device that still talks to it (a live change whose new images did
    # not open) gets EIO, and the size it had.
    assert backend.size == MiB
    done = []
    backend.submit(Request(Op.READ, 0, [bytearray(512)]), done.append)
    backend.poll_completions()
    assert [d.errno for d in done] == [errno.EIO]
    for call in (lambda: backend.readinto(0, bytearray(512)), lambda: backend.write(0, b"x"),
                 backend.flush):
        with pytest.raises(ImageError, match="images are closed") as e:
            call()
        assert e.value.errno == errno.EIO
    backend.close()
    assert os.path.getsize(raw) == MiB

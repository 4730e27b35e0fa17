"""Image locking between processes (OFD locks, QEMU's byte layout): writers
exclude everyone, readers share, shareable media share writing, the error
names the holder, and QEMU's tools see our locks and we see theirs."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from drivebay.block.backend import BlockBackend
from drivebay.block.chain import open_chain
from drivebay.block.drivers import open_image
from drivebay.block.locking import ImageLockedError, find_holders, image_locking
from drivebay.block.raw import RawDriver
from drivebay.block.vdi import VdiDriver

MiB = 1 << 20

HOLDER = textwrap.dedent("""
    import sys
    from drivebay.block.backend import BlockBackend
    path, mode = sys.argv[1], sys.argv[2]
    b = BlockBackend.open(path, read_only="ro" in mode, shareable="share" in mode)
    if "ro" not in mode:
        b.write(0, b"holder")
        b.flush()
    print("ready", flush=True)
    sys.stdin.read()
    b.close()
""")


class Holder:
    """Another process with the image open (``mode``: rw, ro, share-rw, share-ro)."""

    def __init__(self, path, mode):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), mode],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", self.proc.stderr.read()
        self.pid = self.proc.pid

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(30)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.kill()


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.vdi"
    VdiDriver.create(path, 4 * MiB)
    return path


def test_a_second_writer_is_refused_and_told_who_holds_the_image(image):
    with Holder(image, "rw") as holder:
        with pytest.raises(ImageLockedError) as e:
            BlockBackend.open(image)
        message = str(e.value)
        assert str(image) in message and "image is in use" in message
        assert f"process {holder.pid} (python" in message
        assert [pid for pid, _ in e.value.holders] == [holder.pid]
        holder.close()
    BlockBackend.open(image).close()               # released when the holder closed it


def test_a_reader_is_refused_while_a_writer_has_the_image(image):
    with Holder(image, "rw") as holder:
        with pytest.raises(ImageLockedError, match=f"process {holder.pid} .*has it open for "
                                                    f"write"):
            BlockBackend.open(image, read_only=True)


def test_readers_share_and_keep_writers_out(image):
    with Holder(image, "ro") as holder:
        BlockBackend.open(image, read_only=True).close()
        with pytest.raises(ImageLockedError, match=f"process {holder.pid} .*does not share "
                                                    f"write access"):
            BlockBackend.open(image)


def test_shareable_media_may_be_written_by_several(image):
    with Holder(image, "share-rw") as holder:
        with BlockBackend.open(image, shareable=True) as b:
            b.write(512, b"second writer")
        BlockBackend.open(image, read_only=True, shareable=True).close()
        with pytest.raises(ImageLockedError, match=str(holder.pid)):
            BlockBackend.open(image)                     # not as a normal medium
        with pytest.raises(ImageLockedError, match=str(holder.pid)):
            BlockBackend.open(image, read_only=True)     # nor by a reader that trusts metadata


def test_the_locks_die_with_the_process(image):
    with Holder(image, "rw") as holder:
        holder.kill()
    with BlockBackend.open(image) as b:
        out = bytearray(6)
        b.readinto(0, out)
        assert out == b"holder"


def test_one_process_cannot_open_an_image_twice_for_writing(image):
    with BlockBackend.open(image):
        with pytest.raises(ImageLockedError, match="another open of it in this process"):
            BlockBackend.open(image)
        with pytest.raises(ImageLockedError):
            BlockBackend.open(image, read_only=True)


def test_plain_opens_take_no_locks(image):
    """open_image/open_chain outside an image_locking() context behave as before."""
    with open_chain(image, writable=True), open_chain(image), open_image(image, writable=True):
        pass
    with BlockBackend.open(image), open_chain(image):
        pass


def test_forced_sharing_reads_without_locks(image):
    with Holder(image, "rw"):
        with image_locking(force_share=True):
            with open_chain(image) as chain:
                assert chain.read(0, 6) == b"holder"
        with BlockBackend.open(image, read_only=True, lock=False) as b:
            assert b.size == 4 * MiB


def test_a_refused_open_holds_no_descriptor(image):
    with BlockBackend.open(image):
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            with pytest.raises(ImageLockedError):
                BlockBackend.open(image)
        assert len(os.listdir("/proc/self/fd")) == before


def test_two_children_share_their_parent(tmp_path):
    base = tmp_path / "base.vdi"
    VdiDriver.create(base, 4 * MiB)
    with open_image(base) as p:
        VdiDriver.create(tmp_path / "a.vdi", None, parent=p)
        VdiDriver.create(tmp_path / "b.vdi", None, parent=p)
    with Holder(tmp_path / "a.vdi", "rw") as holder:
        with BlockBackend.open(tmp_path / "b.vdi") as b:        # the parent is shared read-only
            b.write(0, b"b")
        with pytest.raises(ImageLockedError, match=f"base.vdi: .*process {holder.pid}"):
            BlockBackend.open(base)                             # but not writable under a child


def test_holders_are_found_through_fdinfo(image):
    with Holder(image, "rw") as holder:
        fd = os.open(image, os.O_RDONLY)
        try:
            assert [pid for pid, _ in find_holders(fd, 101)] == [holder.pid]   # the write byte
            assert find_holders(fd, 150) == []
        finally:
            os.close(fd)


# -- QEMU sees our locks, we see QEMU's ----------------------------------------------------------------

def _qemu(tool):
    path = shutil.which(tool)
    assert path, f"{tool} is not installed: the lock tests need qemu-utils"
    return path


def test_qemu_img_refuses_an_image_we_write(image):
    with BlockBackend.open(image):
        r = subprocess.run([_qemu("qemu-img"), "info", "-f", "vdi", str(image)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0
        assert 'Failed to get shared "write" lock' in r.stderr
        r = subprocess.run([_qemu("qemu-img"), "info", "-U", "-f", "vdi", str(image)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr


def test_we_refuse_an_image_qemu_writes(tmp_path):
    path = tmp_path / "disk.raw"
    RawDriver.create(path, MiB)
    proc = subprocess.Popen([_qemu("qemu-io"), "-f", "raw", "-c", "sleep 30000", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:                      # until qemu-io has opened and locked the image
            fd = os.open(path, os.O_RDONLY)
            try:
                holders = find_holders(fd, 101)
            finally:
                os.close(fd)
            if holders:
                break
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.02)
        with pytest.raises(ImageLockedError, match=f"process {proc.pid} \\(qemu-io\\)"):
            BlockBackend.open(path)
    finally:
        proc.kill()
        proc.wait(30)

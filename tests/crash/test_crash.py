"""Crash safety: writers killed at random points leave images that
``drivebay img check`` passes and that hold every flushed write.

DRIVEBAY_CRASH_TRIALS trials per format (default 100, half with the host
cache on, half off); ``python tests/crash/crashlib.py --trials N`` runs more.
"""

import os
import tempfile

import pytest

import crashlib

TRIALS = int(os.environ.get("DRIVEBAY_CRASH_TRIALS", "100"))


@pytest.fixture
def disk_dir(tmp_path):
    from drivebay.block.io import mount_fstype
    if mount_fstype(str(tmp_path)) not in ("tmpfs", "ramfs"):
        yield str(tmp_path)
        return
    with tempfile.TemporaryDirectory(prefix="drivebay-crash-",
                                     dir=os.environ.get("DRIVEBAY_DISK_TMP", "/var/tmp")) as d:
        yield d


@pytest.mark.parametrize("fmt", crashlib.FORMATS)
def test_kills_at_random_points(fmt, disk_dir):
    results = crashlib.run_trials(fmt, TRIALS, disk_dir)
    for (f, cache), s in crashlib.summary(results).items():
        print(f"{f} cache {'on' if cache else 'off'}: {s}")
    failures = [t.describe() for t in results if t.failed]
    assert not failures, "\n".join(failures[:10])
    assert sum(t.killed for t in results) >= TRIALS // 2      # most runs were cut short


def test_the_data_check_catches_a_lost_flush():
    """The verifier itself: a byte that a completed flush covered must not change."""
    ops = [("write", 0, 4096, 1), ("flush",), ("write", 8192, 512, 2)]
    initial = bytes(16384)
    model, _ = crashlib.expected_state(initial, ops, 1)
    assert crashlib.verify_data(bytes(model), initial, ops, 1) is None
    torn = bytearray(model)
    torn[8192:8192 + 100] = crashlib.op_data(ops[2])[:100]       # an unflushed write, torn
    assert crashlib.verify_data(bytes(torn), initial, ops, 1) is None
    lost = bytearray(model)
    lost[100] ^= 0xFF                                              # a flushed byte changed
    assert "byte 100" in crashlib.verify_data(bytes(lost), initial, ops, 1)
    assert crashlib.verify_data(initial, initial, ops, 1) is not None   # the flush lost

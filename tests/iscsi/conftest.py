"""Fixtures for the iSCSI initiator's tests: a private tgtd (tests/tgtd.py).

``tgtd`` starts one daemon for the whole run; each test makes its own target
with ``tgtd.target()``.  ``tgtd_factory`` starts extra daemons for the tests
that kill one.  Every daemon started here is killed by its pid afterwards.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tgtd import Tgtd  # noqa: E402


def _start(workdir, port=None, host="127.0.0.1"):
    try:
        return Tgtd(workdir, port, host)
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def tgtd(tmp_path_factory):
    daemon = _start(str(tmp_path_factory.mktemp("tgtd")))
    yield daemon
    daemon.stop()


@pytest.fixture
def tgtd_factory(tmp_path):
    started = []

    def start(port=None, host="127.0.0.1"):
        started.append(_start(str(tmp_path), port, host))
        return started[-1]
    yield start
    for daemon in started:
        daemon.stop()

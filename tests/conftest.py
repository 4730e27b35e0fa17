"""Shared fixtures.

``bitmap_backend`` runs a test on both implementations of the block layer's
hot loops (ids ``cython`` and ``python``).  A missing compiled module fails
the run rather than skipping: a normal install always builds it.
"""

import pytest

from drivebay.block import bitmap as python_bitmap

try:
    from drivebay.block import _bitmap as cython_bitmap
except ImportError:  # pragma: no cover - reported by the fixture below
    cython_bitmap = None


@pytest.fixture(params=["cython", "python"])
def bitmap_backend(request):
    if request.param == "python":
        return python_bitmap
    if cython_bitmap is None:
        pytest.fail("drivebay.block._bitmap is not built: the Cython extension is required")
    return cython_bitmap


# -- zero skips: with DRIVEBAY_NO_SKIP=1 (tests/run, CI) a skipped test fails the run.

_skipped = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    import os
    if _skipped and os.environ.get("DRIVEBAY_NO_SKIP") == "1" and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    import os
    if _skipped and os.environ.get("DRIVEBAY_NO_SKIP") == "1":
        terminalreporter.write_line(
            f"FAILED: {len(_skipped)} test(s) skipped; every test must run here "
            f"(first: {_skipped[0]})", red=True)

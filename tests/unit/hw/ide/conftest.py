"""Fixtures for the IDE tests; the bench itself is in idebench.py."""

import pytest

from idebench import IdeBench, disk


@pytest.fixture
def make_bench():
    return IdeBench


@pytest.fixture
def bench():
    return IdeBench(drives={(0, 0): {"backend": disk()}})

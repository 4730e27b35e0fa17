"""Fixtures for the AHCI tests; the bench itself is in ahcibench.py."""

import pytest

from ahcibench import AhciBench, disk


@pytest.fixture
def bench():
    """Four ports, a 2048-sector disk on port 0, brought up."""
    return AhciBench(ports=4, drives={0: {"backend": disk()}}).bring_up(0)

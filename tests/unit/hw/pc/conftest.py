"""Fixtures for the PC chipset devices: a port space, a virtual clock and
byte/word port helpers shaped like the ``inb``/``outb`` of guest code."""

import pytest

from drivebay.hw.clock import VirtualClock
from drivebay.hw.memory import IoSpace


class Ports:
    def __init__(self, io):
        self.io = io

    def inb(self, port):
        return self.io.read(port, 1)

    def inw(self, port):
        return self.io.read(port, 2)

    def outb(self, port, value):
        self.io.write(port, 1, value)

    def outw(self, port, value):
        self.io.write(port, 2, value)


@pytest.fixture
def io():
    return IoSpace()


@pytest.fixture
def ports(io):
    return Ports(io)


@pytest.fixture
def clock():
    return VirtualClock()

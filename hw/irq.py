"""Interrupt lines.

An IrqLine is the wire from a device's interrupt output to one input of an
interrupt controller.  The device drives a level; the sink (a PIC input, an
IOAPIC pin, a PCI INTx router) is told of every change.  Edge-triggered
consumers see a rising edge as ``set_level(True)`` after ``False``.
"""


class IrqLine:
    __slots__ = ("name", "level", "_sink", "history")

    def __init__(self, sink=None, name="irq", record=False):
        self.name = name
        self.level = False
        self._sink = sink
        # A line made without a sink is a test probe: it keeps its transitions.
        self.history = [] if (record or sink is None) else None

    def connect(self, sink):
        """Attach the consumer: a callable taking the new level (bool)."""
        self._sink = sink
        if self.level:
            sink(True)

    def set_level(self, level):
        level = bool(level)
        if level == self.level:
            return
        self.level = level
        if self.history is not None:
            self.history.append(level)
        if self._sink is not None:
            self._sink(level)

    def raise_(self):
        self.set_level(True)

    def lower(self):
        self.set_level(False)

    def pulse(self):
        """An edge: up then down (ISA edge-triggered devices)."""
        self.set_level(True)
        self.set_level(False)

    def __repr__(self):
        return f"IrqLine({self.name!r}, level={int(self.level)})"


class MsiMessage:
    """An MSI write as a device emits it: a 32-bit data value to an address."""

    __slots__ = ("address", "data")

    def __init__(self, address, data):
        self.address = address
        self.data = data

    def __repr__(self):
        return f"MsiMessage(address={self.address:#x}, data={self.data:#x})"

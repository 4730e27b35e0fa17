"""The guest side: PCI/ISA plumbing and every device model.

Devices are sans-I/O state machines: accesses come in through
``pio_read/pio_write/mmio_read/mmio_write`` and config-space calls, effects go
out only through the injected GuestMemory, IrqLine and Clock objects defined
in this package.  Nothing here imports unicorn, threading or time.
"""

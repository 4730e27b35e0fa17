"""drivebay: an emulator of PC storage hardware.

The package root holds only infrastructure shared by every layer (errors,
tracing); it imports nothing else from drivebay.  The layers are
``drivebay.block`` (host side), ``drivebay.hw`` (guest-visible devices),
``drivebay.boot`` (CPU, machine, firmware loading) and ``drivebay.system``
(VMs and the command line); dependencies point system -> boot -> hw -> block.
"""

__version__ = "0.1.0"

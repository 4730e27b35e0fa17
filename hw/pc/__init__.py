"""The PC chipset's ISA devices.

One module per chip, named for what it models: the 8259A interrupt
controller pair with the PIIX ELCR (``pic``), the 8254 interval timer
(``pit``) and System Control Port B (``portb``), the MC146818 RTC/CMOS
(``rtc``), the 16550A UART (``uart``), the 8042 keyboard controller with its
PS/2 keyboard and mouse (``i8042``), System Control Port A (``port92``),
QEMU's debug console (``debugcon``), isa-debug-exit (``debug_exit``) and
firmware configuration interface (``fw_cfg``), and a one-CPU local APIC
(``lapic``).

Every device takes its collaborators (IrqLine outputs, the VirtualClock,
callbacks for reset/exit/console output) in its constructor, adds its port
ranges with ``register(io)`` and returns to power-on state with ``reset()``.
The machine in boot/ does the wiring; see each module's docstring.
"""

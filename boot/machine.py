"""The PC: guest RAM, the i440FX/PIIX3 chipset, its ISA devices and one CPU.

This is where the sans-I/O devices of drivebay.hw are wired together and
given a CPU.  The layout follows QEMU's ``pc`` machine so that firmware and
guest programs see the same board on drivebay and on QEMU:

=========  ===========================================================
00:00.0    i440FX host bridge 8086:1237 (subsystem 1AF4:1100)
00:01.0    PIIX3 ISA bridge 8086:7000, PIRQA-D routed to the 8259s
ports      8259 pair 20/A0 + ELCR 4D0, 8254 40-43, port B 61, i8042 60/64,
           RTC/CMOS 70/71, port 92, COM1 3F8 (IRQ4), fw_cfg 510/511,
           debug console 402, exit port 501, PCI config CF8-CFF (CF9 reset)
MMIO       local APIC FEE00000; BIOS ROM at 4 GiB - size, its last 128 KiB
           copied to 0xE0000-0xFFFFF (or all of a 64 KiB ROM at 0xF0000)
=========  ===========================================================

Interrupts: ISA devices and PCI INTx (through the PIIX3's PIRQ routing)
drive 8259 inputs; the 8259's INTR arrives on the local APIC's LINT0; MSI
writes go to the local APIC; the CPU loop asks the APIC for vectors.

Disks: the machine opens every image its controllers name (``open_medium``)
on one I/O executor, a pool of ``io_threads`` I/O threads (block/io.py);
the CPU loop delivers the completions to the controllers on its own thread.
"""

import time

from drivebay.block.backend import BlockBackend
from drivebay.block.io import InlineIo, IoThreads
from drivebay.boot.cpu import Cpu
from drivebay.boot.loader import load_multiboot
from drivebay.boot.ram import CodeCoherentMemory, GuestRam
from drivebay.errors import ConfigError
from drivebay.hw import devices
from drivebay.hw.clock import NS_PER_SEC, VirtualClock
from drivebay.hw.irq import IrqLine
from drivebay.hw.memory import IoSpace, MmioSpace
from drivebay.hw.pc.debug_exit import DebugExit
from drivebay.hw.pc.debugcon import DebugCon
from drivebay.hw.pc.fw_cfg import FwCfg
from drivebay.hw.pc.i8042 import I8042
from drivebay.hw.pc.lapic import Lapic
from drivebay.hw.pc.pic import PicPair
from drivebay.hw.pc.pit import Pit
from drivebay.hw.pc.port92 import Port92
from drivebay.hw.pc.portb import PortB
from drivebay.hw.pc.rtc import Rtc
from drivebay.hw.pc.uart import Uart16550
from drivebay.hw.pci.bus import PciBus
from drivebay.hw.pci.i440fx import I440fx
from drivebay.hw.pci.piix3 import Piix3

FOUR_GIB = 1 << 32
BIOS_LOW_WINDOW = 0x20000          # the top 128 KiB of the ROM also appear below 1 MiB
MAX_BIOS_SIZE = 16 << 20
DEFAULT_IO_THREADS = 2            # VirtualBox and QEMU serve disks from a few threads too
IRQ_PIT, IRQ_KBD, IRQ_COM1, IRQ_RTC, IRQ_MOUSE = 0, 1, 4, 8, 12


class IsaIrqs:
    """The 16 ISA interrupt inputs, each a wired OR of its sources.

    An ISA device's IrqLine and the PCI PIRQs routed to the same IRQ share
    one 8259 input: the input is high while any source is."""

    def __init__(self, pic):
        self.pic = pic
        self._levels = [dict() for _ in range(16)]

    def line(self, irq, name):
        return IrqLine(lambda level: self.set(irq, name, level), name=name)

    def set(self, irq, source, level):
        levels = self._levels[irq]
        before = any(levels.values())
        levels[source] = bool(level)
        after = any(levels.values())
        if after != before:
            self.pic.input(irq)(after)


class PcMachine:
    def __init__(self, memory_mb=64, serial_out=None, debugcon_out=None, wall_clock=time.time,
                 boot_order="cad", io_threads=DEFAULT_IO_THREADS, block_io=None):
        """``io_threads``: the I/O threads serving the disks' asynchronous
        requests (0: each request runs when submitted, on the CPU's thread);
        ``block_io``: an executor of the caller's instead (e.g. the one a VM
        session opened its media with), which the caller closes."""
        if block_io is None:
            block_io = IoThreads(io_threads, name="drivebay-io") if io_threads else InlineIo()
            self._owns_block_io = True
        else:
            self._owns_block_io = False
        self.block_io = block_io
        self.ram = GuestRam(memory_mb << 20)
        self.memory = CodeCoherentMemory(self.ram.buffer,
                                         lambda address, length: self.cpu.invalidate_code(address, length))
        self.io = IoSpace()
        self.mmio = MmioSpace()
        self.clock = VirtualClock()
        self.exit_code = None

        self.pic = PicPair()
        self.irqs = IsaIrqs(self.pic)
        self.lapic = Lapic(self.clock, extint=self.pic)
        self.pic.intr.connect(self.lapic.lint0)
        self.pit = Pit(self.clock, irq0=self.irqs.line(IRQ_PIT, "pit"))
        self.portb = PortB(self.pit)
        self.rtc = Rtc(self.clock, self.irqs.line(IRQ_RTC, "rtc"), wall_clock,
                       memory_below_4g=self.ram.size, boot_order=boot_order)
        self.uart = Uart16550(self.irqs.line(IRQ_COM1, "com1"), serial_out or (lambda data: None))
        self.kbd = I8042(self.irqs.line(IRQ_KBD, "kbd"), self.irqs.line(IRQ_MOUSE, "mouse"),
                         self._reset_request)
        self.port92 = Port92(self._reset_request)
        self.debugcon = DebugCon(debugcon_out or (lambda data: None))
        self.debug_exit = DebugExit(self._exit_request)
        self.fw_cfg = FwCfg(ram_size=self.ram.size)
        for device in (self.pic, self.pit, self.portb, self.rtc, self.uart, self.kbd,
                       self.port92, self.debugcon, self.debug_exit, self.fw_cfg):
            device.register(self.io)
        self.lapic.register_mmio(self.mmio)

        self.pci = PciBus(self.io, self.mmio, msi_sink=self.lapic.deliver_msi,
                          reset_request=self._reset_request, memory=self.memory)
        self.host_bridge = I440fx()
        self.isa_bridge = Piix3(isa_irq=lambda irq, level: self.irqs.set(irq, "pci", level))
        self.pci.plug(self.host_bridge, 0)
        self.pci.plug(self.isa_bridge, 1)

        self.cpu = Cpu(self.ram, self.io, self.mmio, self.clock, intc=self.lapic)
        self.lapic.intr.connect(self.cpu.interrupt_raised)
        self.cpu.block_io = block_io
        self.devices = {}
        self._device_context = devices.DeviceContext(
            isa_irq=lambda irq, name: self.irqs.line(irq, name), clock=self.clock,
            io=self.io, mmio=self.mmio, open_medium=self._open_medium, block_io=block_io)
        self._media = []

    # -- what the guest runs ---------------------------------------------------------

    def load_program(self, path, cmdline=""):
        """Load a multiboot ELF and start the CPU at its entry, as a multiboot loader would."""
        program = load_multiboot(self.ram, path, cmdline)
        self.cpu.enter_flat_protected_mode(program.entry, eax=0x2BADB002, ebx=program.mbi_address)
        return program

    def load_bios(self, path):
        """Map a BIOS image at the top of 4 GiB and below 1 MiB, and start at the reset vector."""
        try:
            with open(path, "rb") as f:
                rom = f.read(MAX_BIOS_SIZE + 1)
        except OSError as e:
            raise ConfigError(f"{path}: cannot read BIOS image: {e.strerror}") from None
        if not rom or len(rom) % 0x10000 or len(rom) > MAX_BIOS_SIZE:
            raise ConfigError(f"{path}: BIOS image of {len(rom)} bytes: must be a non-empty "
                              f"multiple of 64 KiB up to {MAX_BIOS_SIZE >> 20} MiB")
        self.cpu.map_rom(FOUR_GIB - len(rom), rom)
        low = rom[-BIOS_LOW_WINDOW:]
        self.ram.load(0x100000 - len(low), low)
        self.cpu.reset_to_real_mode()

    def add_device(self, name, slot=None, **options):
        """Build the device ``name`` (hw/devices.py) and plug it into the PCI bus.

        A device built for a function other than 0 (``function=1`` for the
        PIIX IDE, which sits at 01.1 on a PC) joins slot 1 beside the ISA
        bridge; others take ``slot`` or the first free slot from 2 (QEMU's
        numbering, so guest programs see the same bus/device/function on
        both emulators)."""
        device = devices.create(name, self._device_context, **options)
        function = getattr(device, "pci_function", 0)
        if slot is None and function:
            slot = 1                     # a PIIX function beside the ISA bridge, as 01.1 on a PC
        if slot is None:
            taken = {s for s, _ in self.pci.functions}
            slot = next((s for s in range(2, 32) if s not in taken), None)
            if slot is None:
                raise ConfigError(f"no free PCI slot for {name}")
        self.pci.plug(device, slot, function)
        self.devices[slot, function] = device
        return device

    def _open_medium(self, path, **options):
        options.setdefault("io", self.block_io)
        backend = BlockBackend.open(path, **options)
        self._media.append(backend)
        return backend

    def close(self):
        """Power off: close every image the machine opened (and its locks)."""
        while self._media:
            self._media.pop().close()
        if self._owns_block_io and self.block_io is not None:
            self.block_io.close()
            self.block_io = self.cpu.block_io = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- running -----------------------------------------------------------------------

    def run(self, timeout_s=None, should_stop=None):
        budget = None if timeout_s is None else int(timeout_s * NS_PER_SEC)
        return self.cpu.run(budget_ns=budget, should_stop=should_stop)

    def _exit_request(self, value):
        self.exit_code = value
        self.cpu.request_exit(value)

    def _reset_request(self, hard=False):
        self.cpu.request_reset(hard)

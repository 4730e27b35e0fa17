"""A National Semiconductor 16550A UART (COM1: 0x3F8, IRQ4).

Modelled from the NS PC16550D datasheet: RBR/THR, IER, IIR/FCR, LCR, MCR,
LSR, MSR, SCR and the divisor latch (DLL/DLM with LCR.DLAB), 16-byte
transmit and receive FIFOs with the receiver trigger levels 1/4/8/14, the
interrupt priorities of the IIR table (receiver line status, received data
available / character timeout, THR empty, modem status), and the loopback
mode of MCR bit 4 (SOUT to SIN, DTR/RTS/OUT1/OUT2 to DSR/CTS/RI/DCD).

Transmission is instantaneous: a byte written to THR goes to ``sink`` at
once and the transmitter is empty again, so THRE and TEMT read 1 whenever
the guest looks.  Bytes from ``feed()`` wait in a host-side queue until the
receive FIFO has room, as a terminal waits on flow control, so console input
is never lost; the character timeout indication is given as soon as data
sits below the trigger level (no baud-rate timing).

PC wiring: the chip's INTRPT output reaches the ISA IRQ line through a
driver enabled by the OUT2 pin, so the line is driven only while MCR.OUT2 is
1 and loopback is off (loopback forces the OUT pins inactive).  Pass
``out2_gates_irq=False`` for a board without that gate.
"""

from collections import deque

from drivebay import trace
from drivebay.hw.pc.isa import split_read, split_write

COM1_BASE, COM1_IRQ = 0x3F8, 4
COM2_BASE, COM2_IRQ = 0x2F8, 3
FIFO_SIZE = 16

# Offsets (A2-A0).  Names for (DLAB=0 read, DLAB=0 write, DLAB=1) at each offset.
RBR_THR, IER, IIR_FCR, LCR, MCR, LSR, MSR, SCR = range(8)
REGISTERS = {
    RBR_THR: ("RBR", "THR", "DLL"),
    IER: ("IER", "IER", "DLM"),
    IIR_FCR: ("IIR", "FCR", None),
    LCR: ("LCR", "LCR", None),
    MCR: ("MCR", "MCR", None),
    LSR: ("LSR", "LSR", None),
    MSR: ("MSR", "MSR", None),
    SCR: ("SCR", "SCR", None),
}

# IER
IER_ERBFI = 0x01       # received data available
IER_ETBEI = 0x02       # transmitter holding register empty
IER_ELSI = 0x04        # receiver line status
IER_EDSSI = 0x08       # modem status
IER_MASK = 0x0F
# IIR (bit 0 = 0: interrupt pending); bits 3-1 identify the source
IIR_NO_INT = 0x01
IIR_RLS = 0x06         # priority 1: overrun, parity, framing error or break
IIR_RDA = 0x04         # priority 2: received data available
IIR_CTI = 0x0C         # priority 2: character timeout
IIR_THRE = 0x02        # priority 3: THR empty
IIR_MS = 0x00          # priority 4: modem status
IIR_FIFOS_ENABLED = 0xC0
IIR_SOURCE_NAMES = {IIR_NO_INT: "none", IIR_RLS: "line status", IIR_RDA: "data available",
                    IIR_CTI: "character timeout", IIR_THRE: "THR empty", IIR_MS: "modem status"}
# FCR
FCR_FIFO_ENABLE = 0x01
FCR_RX_RESET = 0x02
FCR_TX_RESET = 0x04
FCR_DMA_MODE = 0x08
FCR_TRIGGER_SHIFT = 6
RX_TRIGGER_LEVELS = (1, 4, 8, 14)
# LCR
LCR_WLS_MASK = 0x03    # word length 5 + WLS
LCR_BREAK = 0x40
LCR_DLAB = 0x80
# MCR
MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08
MCR_LOOP = 0x10
MCR_MASK = 0x1F
# LSR
LSR_DR = 0x01
LSR_OE = 0x02
LSR_PE = 0x04
LSR_FE = 0x08
LSR_BI = 0x10
LSR_THRE = 0x20
LSR_TEMT = 0x40
LSR_RX_FIFO_ERROR = 0x80
LSR_ERRORS = LSR_OE | LSR_PE | LSR_FE | LSR_BI
# MSR
MSR_DCTS = 0x01
MSR_DDSR = 0x02
MSR_TERI = 0x04
MSR_DDCD = 0x08
MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80
MSR_DELTAS = 0x0F
# With nothing attached but a console: carrier, data set ready, clear to send.
MSR_CONSOLE_LINES = MSR_DCD | MSR_DSR | MSR_CTS

# Arbitrary power-on divisor (the datasheet leaves it undefined): 12, 9600 baud.
RESET_DIVISOR = 12


class Uart16550:
    """A 16550A at ``base``.

    ``irq`` is the IrqLine to the PIC (IRQ4 for COM1); ``sink(bytes)``
    receives every transmitted byte; ``feed(data)`` is the terminal typing.
    """

    STATE_FIELDS = ("divisor", "ier", "iir_source", "fcr", "lcr", "mcr", "lsr", "msr_lines",
                    "msr_deltas", "scr", "rx_fifo", "rx_pending", "thr_ipending",
                    "timeout_ipending")

    def __init__(self, irq, sink, base=COM1_BASE, name="com1", out2_gates_irq=True):
        self.irq = irq
        self.sink = sink
        self.base = base
        self.name = name
        self.out2_gates_irq = out2_gates_irq
        self.rx_fifo = deque()
        self.rx_pending = deque()          # fed bytes waiting for FIFO room
        self.reset()

    def reset(self):
        # PC16550D Table IV, "UART Reset Configuration".
        self.divisor = RESET_DIVISOR
        self.ier = 0
        self.fcr = 0
        self.lcr = 0
        self.mcr = 0
        self.lsr = LSR_THRE | LSR_TEMT
        self.msr_lines = MSR_CONSOLE_LINES
        self.msr_deltas = 0
        self.scr = 0
        self.rx_fifo.clear()
        self.thr_ipending = False
        self.timeout_ipending = False
        self.iir_source = IIR_NO_INT
        self._update_irq()

    def register(self, io):
        io.add(self.name, self.base, 8, self.pio_read, self.pio_write, names=self._names)

    def _names(self, offset, size):
        names = REGISTERS[offset]
        if self.lcr & LCR_DLAB and names[2]:
            return names[2]
        return names[0] if names[0] == names[1] else f"{names[0]}/{names[1]}"

    # -- the line side ------------------------------------------------------------------

    def feed(self, data):
        """Bytes arriving on SIN (from the terminal)."""
        self.rx_pending.extend(data)
        self._fill_rx()

    def _fifo_capacity(self):
        return FIFO_SIZE if self.fcr & FCR_FIFO_ENABLE else 1

    def _fill_rx(self):
        if self.mcr & MCR_LOOP:
            return                       # loopback disconnects SIN from the receiver
        moved = False
        while self.rx_pending and len(self.rx_fifo) < self._fifo_capacity():
            self.rx_fifo.append(self.rx_pending.popleft())
            moved = True
        if moved:
            self._received()

    def _receive_byte(self, byte):
        """A byte from the receiver shift register (loopback)."""
        if len(self.rx_fifo) >= self._fifo_capacity():
            # Overrun: "the character in the shift register is overwritten"
            # (FIFO mode) / replaces RBR (character mode).
            if not self.fcr & FCR_FIFO_ENABLE:
                self.rx_fifo.clear()
                self.rx_fifo.append(byte)
            self.lsr |= LSR_OE
        else:
            self.rx_fifo.append(byte)
        self._received()

    def _received(self):
        self.lsr |= LSR_DR
        if self.fcr & FCR_FIFO_ENABLE:
            self.timeout_ipending = len(self.rx_fifo) < self._trigger_level()
        self._update_irq()

    def _trigger_level(self):
        return RX_TRIGGER_LEVELS[self.fcr >> FCR_TRIGGER_SHIFT]

    def _transmit(self, byte):
        byte &= (1 << (5 + (self.lcr & LCR_WLS_MASK))) - 1
        if self.mcr & MCR_LOOP:
            self._receive_byte(byte)
        else:
            self.sink(bytes((byte,)))
        # The byte left at once: THR and the shift register are empty again.
        self.lsr |= LSR_THRE | LSR_TEMT
        self.thr_ipending = True

    # -- modem status -------------------------------------------------------------------

    def _modem_lines(self):
        if self.mcr & MCR_LOOP:
            mcr = self.mcr
            return ((MSR_CTS if mcr & MCR_RTS else 0) | (MSR_DSR if mcr & MCR_DTR else 0)
                    | (MSR_RI if mcr & MCR_OUT1 else 0) | (MSR_DCD if mcr & MCR_OUT2 else 0))
        return MSR_CONSOLE_LINES

    def _update_modem_status(self):
        new = self._modem_lines()
        old = self.msr_lines
        changed = old ^ new
        if changed & MSR_CTS:
            self.msr_deltas |= MSR_DCTS
        if changed & MSR_DSR:
            self.msr_deltas |= MSR_DDSR
        if changed & MSR_DCD:
            self.msr_deltas |= MSR_DDCD
        if old & MSR_RI and not new & MSR_RI:
            self.msr_deltas |= MSR_TERI          # trailing edge of RI
        self.msr_lines = new

    # -- interrupts ---------------------------------------------------------------------

    def _identify(self):
        """The highest-priority pending source (PC16550D Table V)."""
        ier = self.ier
        if ier & IER_ELSI and self.lsr & LSR_ERRORS:
            return IIR_RLS
        if ier & IER_ERBFI and self.lsr & LSR_DR:
            if self.fcr & FCR_FIFO_ENABLE:
                if len(self.rx_fifo) >= self._trigger_level():
                    return IIR_RDA
                if self.timeout_ipending:
                    return IIR_CTI
            else:
                return IIR_RDA
        if ier & IER_ETBEI and self.thr_ipending:
            return IIR_THRE
        if ier & IER_EDSSI and self.msr_deltas:
            return IIR_MS
        return IIR_NO_INT

    def _update_irq(self):
        source = self._identify()
        if source != self.iir_source and trace.on.dev:
            trace.emit("dev", f"{self.name}_irq {IIR_SOURCE_NAMES[source]}")
        self.iir_source = source
        level = source != IIR_NO_INT
        if self.out2_gates_irq and (not self.mcr & MCR_OUT2 or self.mcr & MCR_LOOP):
            level = False
        self.irq.set_level(level)

    # -- register access ----------------------------------------------------------------

    def pio_read(self, offset, size):
        return split_read(self._read, offset, size, 8)

    def pio_write(self, offset, size, value):
        split_write(self._write, offset, size, value, 8)

    def _read(self, offset):
        dlab = self.lcr & LCR_DLAB
        if offset == RBR_THR:
            if dlab:
                return self.divisor & 0xFF
            return self._read_rbr()
        if offset == IER:
            return self.divisor >> 8 if dlab else self.ier
        if offset == IIR_FCR:
            value = self.iir_source
            if self.fcr & FCR_FIFO_ENABLE:
                value |= IIR_FIFOS_ENABLED
            if self.iir_source == IIR_THRE:
                # "Reading the IIR (if source of interrupt)" clears THRE.
                self.thr_ipending = False
                self._update_irq()
            return value
        if offset == LCR:
            return self.lcr
        if offset == MCR:
            return self.mcr
        if offset == LSR:
            value = self.lsr
            if self.lsr & LSR_ERRORS:
                self.lsr &= ~(LSR_ERRORS | LSR_RX_FIFO_ERROR)
                self._update_irq()
            return value
        if offset == MSR:
            value = self.msr_lines | self.msr_deltas
            if self.msr_deltas:
                self.msr_deltas = 0
                self._update_irq()
            return value
        return self.scr

    def _read_rbr(self):
        if not self.rx_fifo:
            return 0
        byte = self.rx_fifo.popleft()
        self._fill_rx()
        if not self.rx_fifo:
            self.lsr &= ~LSR_DR
            self.timeout_ipending = False
        elif self.fcr & FCR_FIFO_ENABLE:
            # The timeout restarts on every read; with no baud timing it is
            # due at once while data sits below the trigger level.
            self.timeout_ipending = len(self.rx_fifo) < self._trigger_level()
        self._update_irq()
        return byte

    def _write(self, offset, value):
        dlab = self.lcr & LCR_DLAB
        if offset == RBR_THR:
            if dlab:
                self.divisor = (self.divisor & 0xFF00) | value
                self._trace_divisor()
            else:
                self.thr_ipending = False
                self._transmit(value)
                self._update_irq()
        elif offset == IER:
            if dlab:
                self.divisor = (self.divisor & 0x00FF) | value << 8
                self._trace_divisor()
                return
            changed = (value & IER_MASK) ^ self.ier
            self.ier = value & IER_MASK
            if changed & IER_ETBEI:
                # Enabling ETBEI with THR empty raises the THRE interrupt at
                # once, as 8250-family chips do (drivers kick transmission
                # this way).
                self.thr_ipending = bool(self.ier & IER_ETBEI and self.lsr & LSR_THRE)
            self._update_irq()
        elif offset == IIR_FCR:
            self._write_fcr(value)
        elif offset == LCR:
            self.lcr = value
        elif offset == MCR:
            was_loop = self.mcr & MCR_LOOP
            self.mcr = value & MCR_MASK
            self._update_modem_status()
            if was_loop and not self.mcr & MCR_LOOP:
                self._fill_rx()
            self._update_irq()
        elif offset == LSR:
            trace.guest_error(self.name, f"write {value:#04x} to LSR (factory test only)")
        elif offset == MSR:
            trace.guest_error(self.name, f"write {value:#04x} to read-only MSR")
        else:
            self.scr = value

    def _write_fcr(self, value):
        if (value ^ self.fcr) & FCR_FIFO_ENABLE:
            # "Resetting FCR0 will clear all bytes in both FIFOs"; so does setting it.
            self.rx_fifo.clear()
            self.lsr &= ~LSR_DR
            self.timeout_ipending = False
        if value & FCR_RX_RESET:
            self.rx_fifo.clear()
            self.lsr &= ~(LSR_DR | LSR_RX_FIFO_ERROR)
            self.timeout_ipending = False
        # TX reset: the transmit FIFO is always empty here.
        self.fcr = value & (FCR_FIFO_ENABLE | FCR_DMA_MODE | 0xC0)
        if not self.fcr & FCR_FIFO_ENABLE:
            self.fcr = 0
        self._fill_rx()
        self._update_irq()

    def _trace_divisor(self):
        if trace.on.dev:
            baud = 115200 // self.divisor if self.divisor else 0
            trace.emit("dev", f"{self.name}_divisor {self.divisor} ({baud} baud)")

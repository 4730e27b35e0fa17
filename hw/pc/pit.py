"""The Intel 8254 Programmable Interval Timer of the PC (ports 0x40-0x43).

Modelled from the Intel 8254 datasheet (order 231164): three 16-bit down
counters clocked at 1.193182 MHz (the PC's 14.31818 MHz crystal / 12),
modes 0-5, LSB/MSB/both access, binary or BCD counting, the counter latch
command and the read-back command with status bytes.  On the PC, counter 0's
OUT drives IRQ0, counter 1 (DRAM refresh) has no consumer, and counter 2's
GATE and OUT are System Control Port B bits 0 and 5 (see ``portb``).

Counting follows the VirtualClock: a counter's value and OUT are computed
from the virtual time elapsed since the count was loaded, never ticked.  A
timer is armed only for a counter whose OUT drives a line, once per OUT edge
(modes 0, 1, 3) or once per pulse (modes 2, 4, 5, whose OUT is low for a
single clock and reaches the line as a low-high pulse).

Simplifications: a count is loaded the moment its last byte is written (the
8254 takes one more CLK); a new count in modes 2 and 3 restarts the period at
once (the 8254 waits for the end of the current period); mode 3 with an odd
count alternates (N+1)/2 and (N-1)/2 clocks and its counter reads as if N
were even.  Power-on state is "no count loaded": nothing counts until the
firmware programs a counter.
"""

from drivebay import trace
from drivebay.hw.clock import NS_PER_SEC
from drivebay.hw.pc.isa import split_read, split_write

PIT_HZ = 1_193_182          # 8254 CLK on the PC: 14.31818 MHz / 12
BASE = 0x40

# Ports (A1 A0).  The control word register is write-only.
REGISTERS = {0: "counter0", 1: "counter1", 2: "counter2", 3: "control"}
CONTROL = 3

# Control word fields (8254 datasheet, "Control Word Format").
CW_SC_SHIFT = 6              # SC1 SC0: counter select, 3 = read-back
CW_RW_SHIFT = 4              # RW1 RW0: 0 latch, 1 LSB, 2 MSB, 3 LSB then MSB
CW_M_SHIFT = 1               # M2 M1 M0
CW_BCD = 0x01

RW_LATCH, RW_LSB, RW_MSB, RW_BOTH = 0, 1, 2, 3

# Read-back command bits: /COUNT, /STATUS (active low), CNT2..CNT0.
RB_NOT_COUNT = 0x20
RB_NOT_STATUS = 0x10
# Status byte: OUTPUT and NULL COUNT above the programmed bits 5-0.
STATUS_OUTPUT = 0x80
STATUS_NULL_COUNT = 0x40

MODE_NAMES = {0: "interrupt on terminal count", 1: "hardware retriggerable one-shot",
              2: "rate generator", 3: "square wave", 4: "software triggered strobe",
              5: "hardware triggered strobe"}


def _to_bcd(value):
    return int(str(value % 10000), 16)


def _from_bcd(value):
    digits = [(value >> shift) & 0xF for shift in (12, 8, 4, 0)]
    return ((digits[0] * 10 + digits[1]) * 10 + digits[2]) * 10 + digits[3]


class Counter:
    """One counter of the 8254: programmed state plus where its count started.

    While running, the elapsed clocks are ``base_ticks`` plus the clocks
    since ``base_ns``; stopping folds the elapsed clocks into ``base_ticks``.
    """

    STATE_FIELDS = ("mode", "rw", "bcd", "count", "gate", "loaded", "triggered", "running",
                    "base_ns", "base_ticks", "write_msb_next", "write_lsb", "read_msb_next",
                    "count_latch", "status_latch", "null_count", "pending_count")

    def __init__(self, index, clock, line=None):
        self.index = index
        self.clock = clock
        self.line = line                       # IrqLine driven by OUT, or None
        self.gate = index != 2                 # GATE0/1 are tied high on the PC
        self.timer = clock.timer(self._fire, name=f"pit{index}") if line is not None else None
        self.reset()

    def reset(self):
        self.mode = 0
        self.rw = RW_BOTH
        self.bcd = False
        self.count = 0x10000
        self.pending_count = None
        self.loaded = False        # a count was written since the control word
        self.triggered = False     # modes 1 and 5: a GATE edge started the count
        self.running = False
        self.base_ns = self.clock.now_ns()
        self.base_ticks = 0
        self.write_msb_next = False
        self.write_lsb = 0
        self.read_msb_next = False
        self.count_latch = []
        self.status_latch = None
        self.null_count = True
        if self.timer is not None:
            self.timer.cancel()
        self._drive_line()

    # -- time ------------------------------------------------------------------------

    def elapsed(self, now=None):
        """CLK pulses counted since the count started (or was triggered)."""
        if not self.running:
            return self.base_ticks
        now = self.clock.now_ns() if now is None else now
        return self.base_ticks + (now - self.base_ns) * PIT_HZ // NS_PER_SEC

    def _ns_of_tick(self, tick):
        """The first virtual time at which ``elapsed()`` reaches ``tick``."""
        return self.base_ns + -(-(tick - self.base_ticks) * NS_PER_SEC // PIT_HZ)

    def _start(self, now):
        self.base_ns = now
        self.base_ticks = 0
        self.running = True

    def _stop(self, now):
        self.base_ticks = self.elapsed(now)
        self.base_ns = now
        self.running = False

    # -- what the counter shows --------------------------------------------------------

    def _modulus(self):
        return 10000 if self.bcd else 0x10000

    def value(self, now=None):
        """The counting element (CE) as a read shows it."""
        if not (self.loaded and self.triggered):
            return self.count % self._modulus()
        d = self.elapsed(now)
        n = self.count
        if self.mode in (2, 3):
            step = d % n if self.mode == 2 else (2 * d) % n
            return (n - step) % self._modulus()
        return (n - d) % self._modulus()

    def out(self, now=None):
        """The OUT pin level."""
        mode = self.mode
        if not self.loaded:
            return mode != 0                  # control word: mode 0 OUT low, others high
        if mode in (2, 3) and not self.gate:
            return True                       # "GATE = 0 forces OUT high"
        if not self.triggered:
            return True                       # modes 1, 5 waiting for GATE
        d = self.elapsed(now)
        n = self.count
        if mode in (0, 1):
            return d >= n
        if mode == 2:
            return d % n != n - 1             # low for the clock when the count is 1
        if mode == 3:
            return d % n < (n + 1) // 2
        return d != n                         # modes 4, 5: one clock low at terminal count

    def _next_event(self, d):
        """The next clock (> d) at which OUT changes as the line sees it."""
        n = self.count
        mode = self.mode
        if mode in (0, 1, 4, 5):
            return n if d < n else None
        if mode == 2:
            return (d // n + 1) * n           # the rising edge that ends the low clock
        half = (n + 1) // 2
        base = d // n * n
        return base + half if d - base < half else base + n

    # -- the output line -------------------------------------------------------------

    def _drive_line(self):
        if self.line is None:
            return
        self.line.set_level(self.out())
        self._reschedule()

    def _reschedule(self):
        timer = self.timer
        if timer is None:
            return
        if not (self.loaded and self.triggered and self.running):
            timer.cancel()
            return
        event = self._next_event(self.elapsed())
        if event is None:
            timer.cancel()
        else:
            timer.mod(self._ns_of_tick(event))

    def _fire(self):
        mode = self.mode
        if mode in (2, 4, 5):
            # OUT is low for one 838 ns clock: deliver it as a pulse.
            self.line.set_level(False)
            self.line.set_level(True)
        else:
            self.line.set_level(self.out())
        self._reschedule()

    # -- programming ------------------------------------------------------------------

    def control(self, value):
        rw = (value >> CW_RW_SHIFT) & 3
        if rw == RW_LATCH:
            self.latch_count()
            return
        mode = (value >> CW_M_SHIFT) & 7
        if mode > 5:
            mode -= 4                         # "X10" is mode 2, "X11" mode 3
        self.mode = mode
        self.rw = rw
        self.bcd = bool(value & CW_BCD)
        self.loaded = False
        self.triggered = False
        self.running = False
        self.pending_count = None
        self.write_msb_next = False
        self.read_msb_next = False
        self.count_latch = []
        self.status_latch = None
        self.null_count = True
        if trace.on.dev:
            trace.emit("dev", f"pit_control counter{self.index} mode {mode} ({MODE_NAMES[mode]}) "
                              f"rw {rw} {'bcd' if self.bcd else 'binary'}")
        self._drive_line()

    def write(self, value):
        if self.rw == RW_LSB:
            self._load(value)
        elif self.rw == RW_MSB:
            self._load(value << 8)
        elif not self.write_msb_next:
            self.write_lsb = value
            self.write_msb_next = True
            if self.mode == 0:
                # "Writing the first byte disables counting.  OUT is set low
                # immediately."
                if self.running:
                    self._stop(self.clock.now_ns())
                self.loaded = False
                self.null_count = True
                self._drive_line()
        else:
            self.write_msb_next = False
            self._load(self.write_lsb | value << 8)

    def _load(self, raw):
        if self.bcd:
            if any(((raw >> s) & 0xF) > 9 for s in (0, 4, 8, 12)):
                trace.guest_error(f"pit{self.index}", f"BCD count {raw:#06x} has a digit above 9")
            n = _from_bcd(raw) % 10000 or 10000
        else:
            n = raw or 0x10000            # a count of 0 is the maximum, 2^16
        if self.mode in (2, 3) and n < 2:
            # 8254: "a count of 1 is illegal" in modes 2 and 3.
            trace.guest_error(f"pit{self.index}", f"count 1 is illegal in mode {self.mode}; using 2")
            n = 2
        now = self.clock.now_ns()
        if self.mode in (1, 5) and self.triggered:
            # Mode 1/5: a new count waits for the next trigger.
            self.pending_count = n
            self.null_count = True
            return
        self.count = n
        self.loaded = True
        self.null_count = False
        if self.mode in (1, 5):
            self.triggered = False
            self.running = False
        else:
            self.triggered = True
            self._start(now)
            if not self.gate and self.mode in (0, 2, 3, 4):
                self._stop(now)
        if trace.on.dev:
            trace.emit("dev", f"pit_load counter{self.index} count {n}")
        self._drive_line()

    def set_gate(self, level):
        level = bool(level)
        if level == self.gate:
            return
        self.gate = level
        now = self.clock.now_ns()
        mode = self.mode
        if self.loaded:
            if mode in (0, 4):
                # GATE low suspends counting, high resumes it.
                if level and self.triggered:
                    self.base_ns, self.running = now, True
                elif self.running:
                    self._stop(now)
            elif mode in (2, 3):
                # GATE low stops counting; a rising edge reloads the count.
                if level:
                    self._start(now)
                else:
                    self._stop(now)
            elif level:
                # Modes 1 and 5: a rising edge (re)triggers the count.
                if self.pending_count is not None:
                    self.count, self.pending_count = self.pending_count, None
                    self.null_count = False
                self.triggered = True
                self._start(now)
        self._drive_line()

    # -- reading ----------------------------------------------------------------------

    def latch_count(self):
        # "If a Counter is latched and then, some time later, latched again
        # before the count is read, the second Counter Latch Command is ignored."
        if self.count_latch:
            return
        value = self.value()
        if self.bcd:
            value = _to_bcd(value)
        value &= 0xFFFF
        if self.rw == RW_LSB:
            self.count_latch = [value & 0xFF]
        elif self.rw == RW_MSB:
            self.count_latch = [value >> 8]
        else:
            self.count_latch = [value & 0xFF, value >> 8]

    def latch_status(self):
        if self.status_latch is not None:
            return
        status = (self.rw << CW_RW_SHIFT) | (self.mode << CW_M_SHIFT) | int(self.bcd)
        if self.out():
            status |= STATUS_OUTPUT
        if self.null_count:
            status |= STATUS_NULL_COUNT
        self.status_latch = status

    def read(self):
        if self.status_latch is not None:
            status, self.status_latch = self.status_latch, None
            return status
        if self.count_latch:
            return self.count_latch.pop(0)
        value = self.value()
        if self.bcd:
            value = _to_bcd(value)
        value &= 0xFFFF
        if self.rw == RW_LSB:
            return value & 0xFF
        if self.rw == RW_MSB:
            return value >> 8
        msb, self.read_msb_next = self.read_msb_next, not self.read_msb_next
        return value >> 8 if msb else value & 0xFF


class Pit:
    """The 8254 at 0x40-0x43.  ``irq0`` is the IrqLine driven by counter 0's OUT."""

    STATE_FIELDS = ()          # the state is the three ``counters``'

    def __init__(self, clock, irq0=None):
        self.clock = clock
        self.counters = [Counter(0, clock, irq0), Counter(1, clock), Counter(2, clock)]

    def reset(self):
        for counter in self.counters:
            counter.gate = counter.index != 2
            counter.reset()

    def register(self, io):
        io.add("pit", BASE, 4, self.pio_read, self.pio_write, names=REGISTERS)

    # -- channel 2 as port 0x61 sees it ----------------------------------------------

    def set_gate(self, index, level):
        self.counters[index].set_gate(level)

    def out(self, index):
        return self.counters[index].out()

    # -- ports -----------------------------------------------------------------------

    def pio_read(self, offset, size):
        return split_read(self._read_byte, offset, size, 4)

    def pio_write(self, offset, size, value):
        split_write(self._write_byte, offset, size, value, 4)

    def _read_byte(self, port):
        if port == CONTROL:
            trace.guest_error("pit", "read of the write-only control word register")
            return 0xFF
        return self.counters[port].read()

    def _write_byte(self, port, value):
        if port != CONTROL:
            self.counters[port].write(value)
            return
        select = value >> CW_SC_SHIFT
        if select != 3:
            self.counters[select].control(value)
            return
        # Read-back command: latch count and/or status of the selected counters.
        for counter in self.counters:
            if value & (2 << counter.index):
                if not value & RB_NOT_COUNT:
                    counter.latch_count()
                if not value & RB_NOT_STATUS:
                    counter.latch_status()

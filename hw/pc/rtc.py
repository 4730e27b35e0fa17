"""The Motorola MC146818 real-time clock and its CMOS RAM (ports 0x70/0x71).

Modelled from the Motorola MC146818A datasheet: the time and date registers
0x00-0x09 in BCD or binary (register B DM) and 12- or 24-hour format
(register B 24/12), alarm registers with "don't care" codes (0xC0-0xFF),
register A (UIP, divider DV2-0, rate select RS3-0), register B (SET, PIE,
AIE, UIE, SQWE, DM, 24/12, DSE), register C flags (IRQF, PF, AF, UF; all
cleared by reading C), register D (VRT), and the RAM bytes 0x0E-0x7F (the PC
extends the chip's 50 bytes to 114).  Port 0x70 takes the index in bits 6-0
and, on the PC, the NMI mask in bit 7.

Time follows the VirtualClock from the moment ``wall_clock()`` (a UNIX
timestamp, UTC) was read at construction or reset; the registers show UTC
(pass a shifted ``wall_clock`` for local time).  The chip's /IRQ pin stays
asserted until register C is read, so ``irq`` (IRQ8) is driven at the level
of IRQF.  Flags are computed when register C is read; a timer is armed only
while an enabled interrupt source could raise IRQF.

The standard PC CMOS layout is filled from constructor arguments the way
QEMU's pc_cmos_init does (see ``Rtc.__init__``).  Not modelled: daylight
saving (DSE is stored, never applied), the square-wave output, the day of
week as an independent counter (it is derived from the date).
"""

import math

from drivebay import trace
from drivebay.hw.clock import NS_PER_SEC

INDEX_PORT = 0x70
PORTS = {0: "index", 1: "data"}

# -- registers (MC146818A names) -----------------------------------------------------

SECONDS, SECONDS_ALARM, MINUTES, MINUTES_ALARM, HOURS, HOURS_ALARM = range(6)
DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR = range(6, 10)
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D

REGISTER_NAMES = {
    SECONDS: "seconds", SECONDS_ALARM: "seconds alarm", MINUTES: "minutes",
    MINUTES_ALARM: "minutes alarm", HOURS: "hours", HOURS_ALARM: "hours alarm",
    DAY_OF_WEEK: "day of week", DAY_OF_MONTH: "day of month", MONTH: "month", YEAR: "year",
    REG_A: "register A", REG_B: "register B", REG_C: "register C", REG_D: "register D",
}
TIME_REGISTERS = (SECONDS, MINUTES, HOURS, DAY_OF_WEEK, DAY_OF_MONTH, MONTH, YEAR)

# Register A
A_UIP = 0x80
A_DV_MASK = 0x70
A_RS_MASK = 0x0F
A_RESET_VALUE = 0x26             # DV=010 (32.768 kHz time base), RS=0110 (1024 Hz)
# Register B
B_SET = 0x80
B_PIE = 0x40
B_AIE = 0x20
B_UIE = 0x10
B_SQWE = 0x08
B_DM = 0x04                      # 1 = binary, 0 = BCD
B_24H = 0x02
B_DSE = 0x01
B_RESET_VALUE = B_24H            # 24-hour BCD, as QEMU and most BIOSes leave it
# Register C
C_IRQF = 0x80
C_PF = 0x40
C_AF = 0x20
C_UF = 0x10
# Register D
D_VRT = 0x80

HOUR_PM = 0x80                   # 12-hour mode: bit 7 of the hours byte is PM
ALARM_DONT_CARE = 0xC0           # "11XXXXXX" in an alarm byte matches every value

TIME_BASE_HZ = 32768
# UIP is 1 for 244 us (8 time-base cycles) before each update (datasheet, "UIP").
UIP_LEAD_NS = 8 * NS_PER_SEC // TIME_BASE_HZ
# The first update after the divider leaves reset comes 500 ms later.
DIVIDER_RELEASE_PHASE_NS = NS_PER_SEC // 2

# -- the PC's CMOS layout (IBM PC/AT Technical Reference; QEMU hw/i386/pc.c) ---------

CMOS_SHUTDOWN_STATUS = 0x0F
CMOS_FLOPPY_TYPES = 0x10
CMOS_EQUIPMENT = 0x14
CMOS_BASE_MEMORY = 0x15          # 0x15/0x16: KiB below 1 MiB (640)
CMOS_EXT_MEMORY = 0x17           # 0x17/0x18: KiB above 1 MiB, capped at 0xFFFF
CMOS_CHECKSUM = 0x2E             # 0x2E (high), 0x2F (low): sum of 0x10-0x2D
CHECKSUM_FIRST, CHECKSUM_LAST = 0x10, 0x2D
CMOS_EXT_MEMORY_POST = 0x30      # 0x30/0x31: copy of 0x17/0x18
CMOS_CENTURY = 0x32
CMOS_BOOT_FLAGS_3 = 0x38         # bits 7-4: third boot device; bit 0: skip floppy boot signature check
CMOS_BOOT_ORDER = 0x3D           # bits 3-0 first, 7-4 second boot device
CMOS_MEM_ABOVE_16M = 0x34        # 0x34/0x35: 64 KiB units between 16 MiB and 4 GiB
CMOS_MEM_ABOVE_4G = 0x5B         # 0x5B-0x5D: 64 KiB units above 4 GiB
CMOS_CPU_COUNT = 0x5F            # number of CPUs - 1

# QEMU's boot_device2nibble: a/b floppy, c hard disk, d CD-ROM, n network.
BOOT_DEVICE_NIBBLE = {"a": 1, "b": 1, "c": 2, "d": 3, "n": 4}
EQUIP_FLOPPY = 0x01
EQUIP_FPU = 0x02
EQUIP_PS2_MOUSE = 0x04

KIB = 1024
MIB = 1024 * KIB


# -- calendar arithmetic (proleptic Gregorian, days since 1970-01-01) ----------------

def days_from_civil(year, month, day):
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(days):
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (month <= 2), month, day


def _unix_ns(timestamp):
    """UNIX seconds (int, float, Fraction...) to integer nanoseconds, without
    the float rounding of ``timestamp * 1e9`` at today's magnitudes."""
    whole = math.floor(timestamp)
    return int(whole) * NS_PER_SEC + round((timestamp - whole) * NS_PER_SEC)


def _bcd(value):
    return (value // 10) << 4 | value % 10


def _unbcd(value):
    # Tolerant of non-decimal nibbles: a guest may write anything.
    return (value >> 4) * 10 + (value & 0x0F)


def periodic_interval_ticks(rs):
    """Periodic interrupt interval in 32.768 kHz cycles for RS3-0 (0 = none).

    Datasheet table "Periodic Interrupt Rate": RS=1 and 2 give 3.90625 ms
    and 7.8125 ms, RS=3..15 give 2^(RS-1) cycles (122.070 us .. 500 ms).
    """
    if rs == 0:
        return 0
    if rs <= 2:
        rs += 7
    return 1 << (rs - 1)


class Rtc:
    """The MC146818 at 0x70/0x71 with the PC's CMOS contents.

    ``clock`` is the VirtualClock, ``irq`` the IrqLine to IRQ8,
    ``wall_clock()`` returns the UNIX time (seconds, int or float) that the
    clock starts from.  Memory sizes are in bytes: ``memory_below_4g`` is the
    RAM the guest sees below 4 GiB, ``memory_above_4g`` the RAM relocated
    above it.  ``boot_order`` is QEMU's ``-boot order=`` string (up to three
    of a, b, c, d, n); ``fd_bootchk=False`` sets the "skip floppy boot
    signature check" flag.  ``floppies`` (0-2) sets the equipment byte's
    floppy bits; the drive types at 0x10 and the hard-disk bytes are left to
    the machine through ``set_cmos``.
    """

    STATE_FIELDS = ("cmos", "index", "nmi_disabled", "offset_ns", "checked_ns", "flags")

    def __init__(self, clock, irq, wall_clock, *, memory_below_4g=640 * KIB, memory_above_4g=0,
                 cpus=1, boot_order="cad", fd_bootchk=True, floppies=0):
        self.clock = clock
        self.irq = irq
        self.wall_clock = wall_clock
        self.timer = clock.timer(self._timer_fired, name="rtc")
        self.cmos = self._standard_cmos(memory_below_4g, memory_above_4g, cpus, boot_order,
                                        fd_bootchk, floppies)
        self.power_on()

    @staticmethod
    def _standard_cmos(below_4g, above_4g, cpus, boot_order, fd_bootchk, floppies):
        """The bytes 0x0E-0x7F a PC BIOS expects, as QEMU's pc_cmos_init sets them."""
        if not 1 <= cpus <= 256:
            raise ValueError(f"CPU count {cpus} does not fit CMOS 0x5F (1-256)")
        if len(boot_order) > 3 or any(c not in BOOT_DEVICE_NIBBLE for c in boot_order):
            raise ValueError(f"boot order {boot_order!r}: up to three of a, b, c, d, n")
        if not 0 <= floppies <= 2:
            raise ValueError(f"{floppies} floppy drives: the PC has at most 2")
        cmos = bytearray(128)

        def put16(index, value):
            cmos[index] = value & 0xFF
            cmos[index + 1] = (value >> 8) & 0xFF

        put16(CMOS_BASE_MEMORY, min(below_4g // KIB, 640))
        extended = min(max(below_4g - MIB, 0) // KIB, 0xFFFF)
        put16(CMOS_EXT_MEMORY, extended)
        put16(CMOS_EXT_MEMORY_POST, extended)
        put16(CMOS_MEM_ABOVE_16M, min(max(below_4g - 16 * MIB, 0) // (64 * KIB), 0xFFFF))
        high = above_4g // (64 * KIB)
        for i in range(3):
            cmos[CMOS_MEM_ABOVE_4G + i] = (high >> (8 * i)) & 0xFF
        cmos[CMOS_CPU_COUNT] = cpus - 1
        nibbles = [BOOT_DEVICE_NIBBLE[c] for c in boot_order] + [0, 0, 0]
        # QEMU set_boot_dev: 0x3D = second << 4 | first; 0x38 = third << 4 |
        # (1 unless the floppy boot signature is checked).  "cad" gives
        # 0x3D = 0x12, 0x38 = 0x30.
        cmos[CMOS_BOOT_ORDER] = nibbles[1] << 4 | nibbles[0]
        cmos[CMOS_BOOT_FLAGS_3] = nibbles[2] << 4 | (0 if fd_bootchk else 1)
        equipment = EQUIP_FPU | EQUIP_PS2_MOUSE
        if floppies:
            equipment |= EQUIP_FLOPPY | (floppies - 1) << 6
        cmos[CMOS_EQUIPMENT] = equipment
        return cmos

    # -- host-side access ---------------------------------------------------------------

    def set_cmos(self, index, value):
        """Set a CMOS RAM byte (0x0E-0x7F) from the machine; keeps the checksum."""
        if not 0x0E <= index < 0x80:
            raise ValueError(f"CMOS index {index:#x}: RAM is 0x0E-0x7F")
        self.cmos[index] = value & 0xFF
        if CHECKSUM_FIRST <= index <= CHECKSUM_LAST:
            self.update_checksum()

    def update_checksum(self):
        total = sum(self.cmos[CHECKSUM_FIRST:CHECKSUM_LAST + 1])
        self.cmos[CMOS_CHECKSUM] = (total >> 8) & 0xFF
        self.cmos[CMOS_CHECKSUM + 1] = total & 0xFF

    def power_on(self):
        """Battery insertion: registers A-D to their defaults, time from ``wall_clock()``."""
        self.cmos[REG_A] = A_RESET_VALUE
        self.cmos[REG_B] = B_RESET_VALUE
        self.cmos[REG_C] = 0
        self.cmos[REG_D] = D_VRT
        self.index = 0
        self.nmi_disabled = False
        self.flags = 0                                  # PF/AF/UF not yet read
        now = self.clock.now_ns()
        self.offset_ns = _unix_ns(self.wall_clock()) - now
        self.checked_ns = now
        self._materialize(now)
        self.update_checksum()
        self.timer.cancel()
        self.irq.set_level(False)

    def reset(self):
        """System reset: the chip's RESET pin.

        The clock and the CMOS RAM are battery backed and survive (a BIOS
        reads the shutdown status byte 0x0F after a reset); RESET clears
        PIE, AIE, UIE, SQWE and the flags (datasheet, "RESET").
        """
        self._sync(self.clock.now_ns())
        self.cmos[REG_B] &= ~(B_PIE | B_AIE | B_UIE | B_SQWE)
        self.flags = 0
        self.index = 0
        self.nmi_disabled = False
        self._update_irq()

    def register(self, io):
        io.add("rtc", INDEX_PORT, 2, self.pio_read, self.pio_write, names=self._names)

    def _names(self, offset, size):
        if offset == 0:
            return "index"
        return f"data[{self.index:#04x} {REGISTER_NAMES.get(self.index, 'CMOS RAM')}]"

    # -- time -----------------------------------------------------------------------------

    def _updating(self):
        """Register B SET and a divider in reset (DV=11x) both stop the updates."""
        return not self.cmos[REG_B] & B_SET and (self.cmos[REG_A] & A_DV_MASK) <= 0x20

    def _divider_running(self):
        return (self.cmos[REG_A] & 0x60) != 0x60

    def rtc_ns(self, now=None):
        """The RTC's own time, UNIX nanoseconds (meaningful while updating)."""
        return (self.clock.now_ns() if now is None else now) + self.offset_ns

    def _format(self, value):
        return value if self.cmos[REG_B] & B_DM else _bcd(value)

    def _parse(self, value):
        return value if self.cmos[REG_B] & B_DM else _unbcd(value)

    def _format_hour(self, hour):
        if self.cmos[REG_B] & B_24H:
            return self._format(hour)
        return self._format(hour % 12 or 12) | (HOUR_PM if hour >= 12 else 0)

    def _parse_hour(self, value):
        if self.cmos[REG_B] & B_24H:
            return self._parse(value)
        hour = self._parse(value & 0x7F) % 12
        return hour + 12 if value & HOUR_PM else hour

    def _materialize(self, now):
        """Write the current time into the time registers (while updating)."""
        if not self._updating():
            return
        seconds = self.rtc_ns(now) // NS_PER_SEC
        days, second_of_day = divmod(seconds, 86400)
        year, month, day = civil_from_days(days)
        cmos = self.cmos
        cmos[SECONDS] = self._format(second_of_day % 60)
        cmos[MINUTES] = self._format(second_of_day // 60 % 60)
        cmos[HOURS] = self._format_hour(second_of_day // 3600)
        cmos[DAY_OF_WEEK] = self._format((days + 4) % 7 + 1)      # 1970-01-01 was a Thursday; Sunday = 1
        cmos[DAY_OF_MONTH] = self._format(day)
        cmos[MONTH] = self._format(month)
        cmos[YEAR] = self._format(year % 100)
        cmos[CMOS_CENTURY] = self._format(year // 100 % 100)

    def _registers_seconds(self):
        """The UNIX time the time registers hold."""
        cmos = self.cmos
        year = self._parse(cmos[CMOS_CENTURY]) * 100 + self._parse(cmos[YEAR])
        month = min(max(self._parse(cmos[MONTH]), 1), 12)
        day = max(self._parse(cmos[DAY_OF_MONTH]), 1)
        days = days_from_civil(year, month, day)
        return (days * 86400 + self._parse_hour(cmos[HOURS]) * 3600
                + self._parse(cmos[MINUTES]) * 60 + self._parse(cmos[SECONDS]))

    def _rebase(self, now, subsecond_ns):
        self.offset_ns = self._registers_seconds() * NS_PER_SEC + subsecond_ns - now

    # -- interrupt flags ------------------------------------------------------------------

    def _alarm_second_of_day_sets(self):
        """Allowed (hours, minutes, seconds) lists from the alarm registers."""
        cmos = self.cmos

        def allowed(index, limit, parse):
            value = cmos[index]
            if value & ALARM_DONT_CARE == ALARM_DONT_CARE:
                return range(limit)
            v = parse(value)
            return [v] if 0 <= v < limit else []
        return (allowed(HOURS_ALARM, 24, self._parse_hour), allowed(MINUTES_ALARM, 60, self._parse),
                allowed(SECONDS_ALARM, 60, self._parse))

    def _next_alarm(self, after):
        """The first RTC second > ``after`` the alarm matches, or None."""
        hours, minutes, seconds = self._alarm_second_of_day_sets()
        day_start = after // 86400 * 86400
        for day in (day_start, day_start + 86400):
            for h in hours:
                if day + h * 3600 + 3599 <= after:
                    continue
                for m in minutes:
                    if day + h * 3600 + m * 60 + 59 <= after:
                        continue
                    for s in seconds:
                        t = day + h * 3600 + m * 60 + s
                        if t > after:
                            return t
        return None

    def _sync(self, now):
        """Fold the events between the last check and ``now`` into the flags."""
        then = self.checked_ns
        if now <= then:
            return
        self.checked_ns = now
        if self._divider_running():
            interval = periodic_interval_ticks(self.cmos[REG_A] & A_RS_MASK)
            if interval:
                ticks_then = self.rtc_ns(then) * TIME_BASE_HZ // NS_PER_SEC
                ticks_now = self.rtc_ns(now) * TIME_BASE_HZ // NS_PER_SEC
                if ticks_now // interval > ticks_then // interval:
                    self.flags |= C_PF
        if self._updating():
            s_then = self.rtc_ns(then) // NS_PER_SEC
            s_now = self.rtc_ns(now) // NS_PER_SEC
            if s_now > s_then:
                self.flags |= C_UF
                alarm = self._next_alarm(s_then)
                if alarm is not None and alarm <= s_now:
                    self.flags |= C_AF

    def _enabled_flags(self):
        b = self.cmos[REG_B]
        return self.flags & ((C_PF if b & B_PIE else 0) | (C_AF if b & B_AIE else 0)
                             | (C_UF if b & B_UIE else 0))

    def _update_irq(self):
        level = bool(self._enabled_flags())
        self.irq.set_level(level)
        if level:
            self.timer.cancel()          # nothing new can happen until C is read
            return
        deadline = self._next_event_ns(self.clock.now_ns())
        if deadline is None:
            self.timer.cancel()
        else:
            self.timer.mod(deadline)

    def _next_event_ns(self, now):
        """When an enabled source next sets its flag, in virtual time."""
        b = self.cmos[REG_B]
        rtc = self.rtc_ns(now)
        candidates = []
        if b & B_PIE and self._divider_running():
            interval = periodic_interval_ticks(self.cmos[REG_A] & A_RS_MASK)
            if interval:
                nxt = (rtc * TIME_BASE_HZ // NS_PER_SEC // interval + 1) * interval
                candidates.append(-(-nxt * NS_PER_SEC // TIME_BASE_HZ))
        if self._updating():
            if b & B_UIE:
                candidates.append((rtc // NS_PER_SEC + 1) * NS_PER_SEC)
            if b & B_AIE:
                alarm = self._next_alarm(rtc // NS_PER_SEC)
                if alarm is not None:
                    candidates.append(alarm * NS_PER_SEC)
        if not candidates:
            return None
        return min(candidates) - self.offset_ns

    def _timer_fired(self):
        self._sync(self.clock.now_ns())
        self._update_irq()

    # -- register access ------------------------------------------------------------------

    def pio_read(self, offset, size):
        value = 0
        for i in range(size):
            port = offset + i
            byte = self._read_data() if port == 1 else 0xFF     # the index port is write-only
            value |= byte << (8 * i)
        return value

    def pio_write(self, offset, size, value):
        for i in range(size):
            port = offset + i
            byte = (value >> (8 * i)) & 0xFF
            if port == 0:
                self.index = byte & 0x7F
                self.nmi_disabled = bool(byte & 0x80)
            elif port == 1:
                self._write_data(byte)

    def _read_data(self):
        index = self.index
        now = self.clock.now_ns()
        if index < REG_A or index == CMOS_CENTURY:
            self._materialize(now)
            return self.cmos[index]
        if index == REG_A:
            value = self.cmos[REG_A] & ~A_UIP
            if self._updating() and self.rtc_ns(now) % NS_PER_SEC >= NS_PER_SEC - UIP_LEAD_NS:
                value |= A_UIP
            return value
        if index == REG_C:
            self._sync(now)
            value = self.flags
            if self._enabled_flags():
                value |= C_IRQF
            self.flags = 0                       # "all flags are cleared by reading C"
            self._update_irq()
            if trace.on.dev:
                trace.emit("dev", f"rtc_read register C -> {value:#04x}")
            return value
        return self.cmos[index]

    def _write_data(self, value):
        index = self.index
        now = self.clock.now_ns()
        self._sync(now)
        if trace.on.dev:
            trace.emit("dev", f"rtc_write {REGISTER_NAMES.get(index, f'CMOS {index:#04x}')} <- {value:#04x}")
        if index in TIME_REGISTERS or index == CMOS_CENTURY:
            updating = self._updating()
            self._materialize(now)
            self.cmos[index] = value
            if updating:
                # The count chain carries on from the written time, keeping its phase.
                self._rebase(now, self.rtc_ns(now) % NS_PER_SEC)
        elif index in (SECONDS_ALARM, MINUTES_ALARM, HOURS_ALARM):
            self.cmos[index] = value
        elif index == REG_A:
            self._write_register_a(now, value)
        elif index == REG_B:
            self._write_register_b(now, value)
        elif index in (REG_C, REG_D):
            trace.guest_error("rtc", f"write {value:#04x} to read-only {REGISTER_NAMES[index]}")
            return
        else:
            self.cmos[index] = value
            return
        self._update_irq()

    def _write_register_a(self, now, value):
        was_updating = self._updating()
        was_reset = not self._divider_running()
        self._materialize(now)
        self.cmos[REG_A] = value & ~A_UIP
        if was_reset and self._divider_running():
            # "the first update cycle begins one-half second later"
            self._rebase(now, DIVIDER_RELEASE_PHASE_NS)
        elif not was_updating and self._updating():
            self._rebase(now, self.rtc_ns(now) % NS_PER_SEC)

    def _write_register_b(self, now, value):
        was_updating = self._updating()
        self._materialize(now)
        if value & B_SET:
            # Setting SET stops the updates and clears UIE (datasheet, "SET").
            value &= ~B_UIE
        self.cmos[REG_B] = value
        if not was_updating and self._updating():
            self._rebase(now, self.rtc_ns(now) % NS_PER_SEC)

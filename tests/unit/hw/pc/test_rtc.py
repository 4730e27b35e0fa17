"""MC146818 RTC/CMOS at 0x70/0x71.

The wall clock is fixed at 2024-02-29 23:59:58 UTC (UNIX 1709251198), a
Thursday, two seconds before a month and leap-day boundary.  Register
numbers and bits are the MC146818A datasheet's: 0x00 seconds .. 0x09 year,
A = 0x0A (UIP 0x80, DV 0x70, RS 0x0F), B = 0x0B (SET 0x80, PIE 0x40, AIE
0x20, UIE 0x10, DM 0x04, 24/12 0x02), C = 0x0C (IRQF 0x80, PF 0x40, AF
0x20, UF 0x10), D = 0x0D (VRT 0x80).  CMOS offsets are the IBM PC/AT ones.
"""

import pytest

from drivebay.hw.irq import IrqLine
from drivebay.hw.pc.rtc import Rtc

LEAP_DAY_EVENING = 1709251198
MS = 1_000_000
S = 1_000_000_000
MIB = 1 << 20


@pytest.fixture
def irq8():
    return IrqLine()


def make_rtc(io, clock, irq8, when=LEAP_DAY_EVENING, **kwargs):
    rtc = Rtc(clock, irq8, lambda: when, **kwargs)
    rtc.register(io)
    return rtc


@pytest.fixture
def rtc(io, clock, irq8):
    return make_rtc(io, clock, irq8)


def cmos(ports, index):
    ports.outb(0x70, index)
    return ports.inb(0x71)


def set_cmos(ports, index, value):
    ports.outb(0x70, index)
    ports.outb(0x71, value)


def time_registers(ports):
    return [cmos(ports, i) for i in (0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32)]


def test_bcd_time_from_wall_clock(rtc, ports):
    #                       sec   min   hour  dow   day   month year  century
    assert time_registers(ports) == [0x58, 0x59, 0x23, 0x05, 0x29, 0x02, 0x24, 0x20]
    assert cmos(ports, 0x0A) == 0x26
    assert cmos(ports, 0x0B) == 0x02
    assert cmos(ports, 0x0D) == 0x80


def test_time_advances_across_leap_day(rtc, ports, clock):
    clock.advance_to(2 * S)
    assert time_registers(ports) == [0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x24, 0x20]


def test_binary_mode(rtc, ports):
    set_cmos(ports, 0x0B, 0x06)                    # DM binary, 24 hour
    assert time_registers(ports) == [58, 59, 23, 5, 29, 2, 24, 20]


def test_12_hour_mode(rtc, ports, clock):
    set_cmos(ports, 0x0B, 0x00)                    # BCD, 12 hour
    assert cmos(ports, 0x04) == 0x91               # 11 PM: PM bit 7 | 0x11
    clock.advance_to(2 * S)
    assert cmos(ports, 0x04) == 0x12               # midnight is 12 AM


def test_uip_set_in_the_last_244_us_of_a_second(rtc, ports, clock):
    clock.advance_to(999_700_000)
    assert cmos(ports, 0x0A) == 0x26
    clock.advance_to(999_800_000)
    assert cmos(ports, 0x0A) == 0xA6
    clock.advance_to(1_000_000_000)
    assert cmos(ports, 0x0A) == 0x26


def test_set_bit_stops_updates_and_writes_the_time(rtc, ports, clock):
    set_cmos(ports, 0x0B, 0x82)                    # SET, 24 hour, BCD
    for index, value in ((0x00, 0x30), (0x02, 0x15), (0x04, 0x08),
                         (0x07, 0x04), (0x08, 0x07), (0x09, 0x26)):
        set_cmos(ports, index, value)
    clock.advance_to(5 * S)
    assert cmos(ports, 0x00) == 0x30               # frozen while SET
    set_cmos(ports, 0x0B, 0x02)
    clock.advance_to(7 * S)
    assert time_registers(ports)[:3] == [0x32, 0x15, 0x08]
    assert cmos(ports, 0x06) == 0x07               # 2026-07-04 is a Saturday


def test_divider_release_updates_half_a_second_later(rtc, ports, clock):
    set_cmos(ports, 0x0A, 0x66)                    # DV=110: divider in reset
    clock.advance_to(3 * S)
    assert cmos(ports, 0x00) == 0x58
    set_cmos(ports, 0x0A, 0x26)
    clock.advance_to(3 * S + 499 * MS)
    assert cmos(ports, 0x00) == 0x58
    clock.advance_to(3 * S + 501 * MS)
    assert cmos(ports, 0x00) == 0x59


def test_memory_size_registers(io, clock, irq8, ports):
    make_rtc(io, clock, irq8, memory_below_4g=512 * MIB, memory_above_4g=1 << 30, cpus=2)
    assert [cmos(ports, i) for i in (0x15, 0x16)] == [0x80, 0x02]      # 640 KiB
    assert [cmos(ports, i) for i in (0x17, 0x18)] == [0xFF, 0xFF]      # capped at 65535 KiB
    assert [cmos(ports, i) for i in (0x30, 0x31)] == [0xFF, 0xFF]
    assert [cmos(ports, i) for i in (0x34, 0x35)] == [0x00, 0x1F]      # 7936 x 64 KiB
    assert [cmos(ports, i) for i in (0x5B, 0x5C, 0x5D)] == [0x00, 0x40, 0x00]  # 16384 x 64 KiB
    assert cmos(ports, 0x5F) == 0x01


def test_small_memory(io, clock, irq8, ports):
    make_rtc(io, clock, irq8, memory_below_4g=8 * MIB)
    assert [cmos(ports, i) for i in (0x17, 0x18)] == [0x00, 0x1C]      # 7168 KiB
    assert [cmos(ports, i) for i in (0x34, 0x35)] == [0x00, 0x00]
    assert cmos(ports, 0x5F) == 0x00


def test_equipment_boot_order_and_checksum(rtc, ports):
    assert cmos(ports, 0x14) == 0x06               # FPU, PS/2 mouse, no floppy
    assert cmos(ports, 0x3D) == 0x12               # "cad": hard disk, then floppy
    assert cmos(ports, 0x38) == 0x30               # then CD-ROM; floppy signature checked
    total = sum(cmos(ports, i) for i in range(0x10, 0x2E))
    assert total == 0x06 + 0x80 + 0x02
    assert cmos(ports, 0x2E) == 0x00
    assert cmos(ports, 0x2F) == 0x88


def test_boot_order_and_floppies(io, clock, irq8, ports):
    rtc = make_rtc(io, clock, irq8, boot_order="dnc", fd_bootchk=False, floppies=2)
    assert cmos(ports, 0x3D) == 0x43
    assert cmos(ports, 0x38) == 0x21
    assert cmos(ports, 0x14) == 0x47               # floppy present, 2 drives, FPU, mouse
    rtc.set_cmos(0x10, 0x44)                       # two 1.44 MB drives
    total = sum(cmos(ports, i) for i in range(0x10, 0x2E))
    assert cmos(ports, 0x2E) << 8 | cmos(ports, 0x2F) == total


def test_bad_configuration_is_refused(io, clock, irq8):
    with pytest.raises(ValueError):
        Rtc(clock, irq8, lambda: 0, boot_order="x")
    with pytest.raises(ValueError):
        Rtc(clock, irq8, lambda: 0, cpus=0)


def test_register_c_clears_on_read(rtc, ports, clock, irq8):
    set_cmos(ports, 0x0B, 0x42)                    # PIE at 1024 Hz (RS=6)
    clock.advance_to(1 * MS)
    assert irq8.level
    assert cmos(ports, 0x0C) == 0xC0               # IRQF | PF
    assert not irq8.level
    assert cmos(ports, 0x0C) == 0x00


def test_flags_set_without_interrupt_enables(rtc, ports, clock, irq8):
    clock.advance_to(2 * S)
    assert cmos(ports, 0x0C) == 0x70               # PF, AF (00:00:00 matched) and UF, no IRQF
    assert irq8.history == []


def test_periodic_interrupt_rate(rtc, ports, clock, irq8):
    set_cmos(ports, 0x0A, 0x2F)                    # RS=15: 500 ms
    set_cmos(ports, 0x0B, 0x42)
    taken = []
    while clock.next_deadline() is not None and clock.now_ns() < 3 * S:
        clock.advance_to(clock.next_deadline())
        assert irq8.level
        taken.append(clock.now_ns())
        assert cmos(ports, 0x0C) & 0xC0 == 0xC0
    assert taken[:3] == [500 * MS, 1000 * MS, 1500 * MS]


def test_periodic_interrupt_1024hz_spacing(rtc, ports, clock, irq8):
    set_cmos(ports, 0x0B, 0x42)
    times = []
    for _ in range(4):
        clock.advance_to(clock.next_deadline())
        times.append(clock.now_ns())
        cmos(ports, 0x0C)
    assert times == [976563, 1953125, 2929688, 3906250]     # 1/1024 s steps


def test_update_ended_interrupt(io, clock, irq8, ports):
    make_rtc(io, clock, irq8, when=LEAP_DAY_EVENING + 0.25)
    set_cmos(ports, 0x0B, 0x12)                    # UIE
    assert clock.next_deadline() == 750 * MS
    clock.advance_to(750 * MS)
    assert irq8.level
    assert cmos(ports, 0x0C) == 0xD0               # IRQF | UF, and PF (set even without PIE)


def test_alarm_interrupt(rtc, ports, clock, irq8):
    set_cmos(ports, 0x01, 0x00)                    # alarm 00:00:00
    set_cmos(ports, 0x03, 0x00)
    set_cmos(ports, 0x05, 0x00)
    set_cmos(ports, 0x0B, 0x22)                    # AIE
    assert clock.next_deadline() == 2 * S
    clock.advance_to(2 * S)
    assert irq8.level
    assert cmos(ports, 0x0C) & 0xA0 == 0xA0


def test_alarm_dont_care_matches_every_minute(rtc, ports, clock, irq8):
    set_cmos(ports, 0x01, 0x30)                    # at hh:mm:30, any hour, any minute
    set_cmos(ports, 0x03, 0xC0)
    set_cmos(ports, 0x05, 0xFF)
    set_cmos(ports, 0x0B, 0x22)
    assert clock.next_deadline() == 32 * S         # 00:00:30 on March 1st


def test_setting_set_clears_uie(rtc, ports):
    set_cmos(ports, 0x0B, 0x92)
    assert cmos(ports, 0x0B) == 0x82


def test_nmi_mask_bit_and_index(rtc, ports):
    ports.outb(0x70, 0x8A)
    assert ports.inb(0x71) == 0x26                 # index bits 6-0 select register A
    assert rtc.nmi_disabled
    assert ports.inb(0x70) == 0xFF                 # the index port is write-only


def test_ram_survives_reset_and_reset_clears_enables(rtc, ports, clock, irq8):
    set_cmos(ports, 0x0F, 0x0A)                    # shutdown status: jump via 40:67
    set_cmos(ports, 0x0B, 0x72)
    clock.advance_to(1 * S)
    assert irq8.level
    rtc.reset()
    assert not irq8.level
    assert cmos(ports, 0x0F) == 0x0A
    assert cmos(ports, 0x0B) == 0x02


def test_read_only_registers(rtc, ports):
    set_cmos(ports, 0x0D, 0x00)
    assert cmos(ports, 0x0D) == 0x80

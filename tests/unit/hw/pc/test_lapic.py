"""Local APIC page at 0xFEE00000, per the Intel SDM vol. 3A chapter 11.

Register offsets from table 11-1: 0x020 ID, 0x030 version, 0x080 TPR,
0x0A0 PPR, 0x0B0 EOI, 0x0D0 LDR, 0x0E0 DFR, 0x0F0 SVR (enable bit 8),
0x100-0x170 ISR, 0x180-0x1F0 TMR, 0x200-0x270 IRR, 0x280 ESR, 0x300/0x310
ICR, 0x320 LVT timer (periodic bit 17), 0x350/0x360 LINT0/1, 0x370 LVT
error, 0x380 initial count, 0x390 current count, 0x3E0 divide configuration
(0xB = divide by 1).  Mask bit 16.  The timer runs at 1 GHz / divider.
"""

import pytest

from drivebay.hw.irq import IrqLine
from drivebay.hw.memory import MmioSpace
from drivebay.hw.pc.lapic import Lapic
from drivebay.hw.pc.pic import PicPair

BASE = 0xFEE00000


class Apic:
    """Register access through the MMIO space, as the CPU makes it."""

    def __init__(self, clock, **kwargs):
        self.mmio = MmioSpace()
        self.intr = IrqLine()
        self.dev = Lapic(clock, intr=self.intr, **kwargs)
        self.dev.register(None, self.mmio)

    def read(self, offset, size=4):
        return self.mmio.read(BASE + offset, size)

    def write(self, offset, value, size=4):
        self.mmio.write(BASE + offset, size, value)

    def enable(self):
        self.write(0x0F0, 0x1FF)

    def take(self):
        """What the CPU loop does: if pending, acknowledge."""
        return self.dev.acknowledge() if self.dev.pending() else None


@pytest.fixture
def apic(clock):
    return Apic(clock)


def test_register_reset_values(apic):
    assert apic.read(0x020) == 0x00000000
    assert apic.read(0x030) == 0x00050014
    assert apic.read(0x080) == 0
    assert apic.read(0x0A0) == 0
    assert apic.read(0x0D0) == 0
    assert apic.read(0x0E0) == 0xFFFFFFFF
    assert apic.read(0x0F0) == 0x000000FF
    assert apic.read(0x320) == 0x00010000
    assert apic.read(0x330) == 0x00010000
    assert apic.read(0x340) == 0x00010000
    assert apic.read(0x350) == 0x00000700           # QEMU's BSP: LINT0 ExtINT, unmasked
    assert apic.read(0x360) == 0x00010000
    assert apic.read(0x370) == 0x00010000
    assert apic.read(0x380) == 0
    assert apic.read(0x390) == 0
    assert apic.read(0x3E0) == 0
    assert all(apic.read(0x100 + 0x10 * i) == 0 for i in range(24))


def test_apic_id_from_constructor(clock):
    assert Apic(clock, apic_id=3, bsp=False).read(0x020) == 0x03000000
    assert Apic(clock, bsp=False).read(0x350) == 0x00010000


def test_write_masks(apic):
    apic.write(0x020, 0xFFFFFFFF)
    assert apic.read(0x020) == 0xFF000000
    apic.write(0x030, 0)
    assert apic.read(0x030) == 0x00050014            # read-only
    apic.write(0x0E0, 0x0FFFFFFF)
    assert apic.read(0x0E0) == 0x0FFFFFFF            # cluster model
    apic.enable()
    apic.write(0x350, 0xFFFFFFFF)
    assert apic.read(0x350) == 0x0001A7FF            # remote IRR and delivery status stay 0


def test_msi_delivery_acknowledge_and_eoi(apic):
    apic.enable()
    apic.dev.deliver_msi(0xFEE00000, 0x0041)
    assert apic.intr.level
    assert apic.read(0x220) == 0x00000002            # IRR bank 2, bit 1: vector 0x41
    assert apic.take() == 0x41
    assert apic.read(0x220) == 0
    assert apic.read(0x120) == 0x00000002            # now in service
    assert apic.read(0x0A0) == 0x40                  # PPR follows the in-service class
    assert not apic.intr.level
    apic.write(0x0B0, 0)
    assert apic.read(0x120) == 0


def test_msi_to_another_apic_is_dropped(apic):
    apic.enable()
    apic.dev.deliver_msi(0xFEE01000, 0x0041)        # destination ID 1
    assert not apic.dev.pending()
    apic.dev.deliver_msi(0xFEEFF000, 0x0042)        # broadcast
    assert apic.take() == 0x42


def test_level_triggered_msi_sets_tmr(apic):
    apic.enable()
    eois = []
    apic.dev.eoi_broadcast = eois.append
    apic.dev.deliver_msi(0xFEE00000, 0x8051)
    assert apic.read(0x1A0) == 0x00020000            # TMR bank 2, bit 17: vector 0x51
    assert apic.take() == 0x51
    apic.write(0x0B0, 0)
    assert eois == [0x51]


def test_tpr_blocks_lower_classes(apic):
    apic.enable()
    apic.write(0x080, 0x50)
    apic.dev.deliver_msi(0xFEE00000, 0x0041)
    assert not apic.dev.pending()
    assert apic.read(0x0A0) == 0x50
    apic.dev.deliver_msi(0xFEE00000, 0x0061)
    assert apic.take() == 0x61
    apic.write(0x0B0, 0)
    apic.write(0x080, 0x00)
    assert apic.take() == 0x41


def test_priority_and_nesting(apic):
    apic.enable()
    apic.dev.deliver_msi(0xFEE00000, 0x0041)
    apic.dev.deliver_msi(0xFEE00000, 0x0081)
    assert apic.take() == 0x81
    assert apic.take() is None                       # 0x41 waits below PPR 0x80
    apic.dev.deliver_msi(0xFEE00000, 0x0091)
    assert apic.take() == 0x91                       # a higher class nests
    apic.write(0x0B0, 0)                             # EOI ends 0x91, the highest
    apic.write(0x0B0, 0)
    assert apic.take() == 0x41


def test_software_disabled_apic_holds_its_vectors(apic):
    apic.dev.deliver_msi(0xFEE00000, 0x0041)
    assert not apic.dev.pending()
    apic.enable()
    assert apic.take() == 0x41


def test_software_disable_masks_the_lvts(apic):
    apic.enable()
    apic.write(0x320, 0x00000030)
    apic.write(0x0F0, 0x0FF)
    assert apic.read(0x320) == 0x00010030
    apic.write(0x320, 0x00000030)
    assert apic.read(0x320) == 0x00010030            # cannot unmask while disabled


def test_timer_one_shot(apic, clock):
    apic.enable()
    apic.write(0x3E0, 0xB)                           # divide by 1: 1 ns per count
    apic.write(0x320, 0x00000030)
    apic.write(0x380, 1000)
    clock.advance_to(400)
    assert apic.read(0x390) == 600
    assert not apic.dev.pending()
    clock.advance_to(1000)
    assert apic.read(0x390) == 0
    assert apic.take() == 0x30
    apic.write(0x0B0, 0)
    clock.advance_to(10_000)
    assert not apic.dev.pending()                    # one shot


def test_timer_periodic(apic, clock):
    apic.enable()
    apic.write(0x3E0, 0x3)                           # divide by 16: 16 ns per count
    apic.write(0x320, 0x00020031)
    apic.write(0x380, 1000)                          # 16 us period
    taken = 0
    for step in range(1, 101):
        clock.advance_to(step * 1000)
        if apic.take() == 0x31:
            taken += 1
            apic.write(0x0B0, 0)
    assert taken == 6                                # 16, 32, 48, 64, 80, 96 us
    assert apic.read(0x390) == 1000 - (100_000 % 16_000) // 16


def test_timer_divide_by_two_current_count(apic, clock):
    apic.write(0x380, 1000)                          # divide config 0: by 2
    clock.advance_to(500)
    assert apic.read(0x390) == 750


def test_masked_timer_arms_nothing(apic, clock):
    apic.enable()
    apic.write(0x320, 0x00010030)
    apic.write(0x380, 1000)
    assert clock.next_deadline() is None
    apic.write(0x320, 0x00000030)                    # unmasking arms it
    assert clock.next_deadline() == 2000


def test_self_ipi(apic):
    apic.enable()
    apic.write(0x300, 0x00040050)                    # shorthand self, fixed, vector 0x50
    assert apic.read(0x300) == 0x00040050            # delivery status idle at once
    assert apic.take() == 0x50


def test_ipi_to_own_physical_id(apic):
    apic.enable()
    apic.write(0x310, 0x00000000)
    apic.write(0x300, 0x00000052)
    assert apic.take() == 0x52


def test_init_and_startup_to_others_are_dropped(apic):
    apic.enable()
    apic.write(0x300, 0x000C4500)                    # INIT to all excluding self
    apic.write(0x300, 0x000C4608)                    # STARTUP at 0x8000
    assert not apic.dev.pending()
    apic.write(0x280, 0)
    assert apic.read(0x280) == 0


def test_logical_destination_flat(apic):
    apic.enable()
    apic.write(0x0D0, 0x01000000)
    apic.write(0x310, 0x03000000)
    apic.write(0x300, 0x00000853)                    # logical, fixed, vector 0x53
    assert apic.take() == 0x53
    apic.write(0x0B0, 0)
    apic.write(0x310, 0x02000000)
    apic.write(0x300, 0x00000854)
    assert not apic.dev.pending()


def test_illegal_vector_sets_esr(apic):
    apic.enable()
    apic.dev.deliver_msi(0xFEE00000, 0x0005)
    assert not apic.dev.pending()
    assert apic.read(0x280) == 0                     # ESR shows errors after a write
    apic.write(0x280, 0)
    assert apic.read(0x280) == 0x40                  # receive illegal vector
    apic.write(0x280, 0)
    assert apic.read(0x280) == 0


def test_odd_sized_accesses(apic):
    assert apic.read(0x030, 1) == 0x14
    assert apic.read(0x032, 1) == 0x05
    assert apic.read(0x030, 2) == 0x0014
    assert apic.read(0x034) == 0                     # bytes 4-15 of a slot are reserved
    apic.write(0x080, 0x55, size=1)
    assert apic.read(0x080) == 0                     # sub-dword writes are dropped


def test_pic_passes_through_when_disabled_or_extint(clock, io, ports):
    pic = PicPair()
    pic.register(io)
    apic = Apic(clock, extint=pic)
    pic.intr.connect(apic.dev.lint0)
    for port, value in ((0x20, 0x11), (0x21, 0x08), (0x21, 0x04), (0x21, 0x01),
                        (0xA0, 0x11), (0xA1, 0x70), (0xA1, 0x02), (0xA1, 0x01)):
        ports.outb(port, value)
    irq1 = IrqLine(pic.input(1))
    irq1.pulse()
    assert apic.intr.level                           # software-disabled APIC: pass-through
    assert apic.take() == 0x09
    ports.outb(0x20, 0x20)
    apic.enable()
    apic.write(0x350, 0x00010700)                    # LINT0 masked
    irq1.pulse()
    assert not apic.dev.pending()
    apic.write(0x350, 0x00008700)                    # ExtINT, level, as SeaBIOS programs it
    assert apic.take() == 0x09
    ports.outb(0x20, 0x20)
    apic.write(0x350, 0x00000030)                    # fixed mode: the PIC cannot pass
    irq1.pulse()
    assert apic.take() == 0x30                       # the rising INTR became vector 0x30


def test_apic_vectors_before_the_pic(clock, io, ports):
    pic = PicPair()
    pic.register(io)
    apic = Apic(clock, extint=pic)
    pic.intr.connect(apic.dev.lint0)
    ports.outb(0x20, 0x11)
    ports.outb(0x21, 0x20)
    ports.outb(0x21, 0x04)
    ports.outb(0x21, 0x01)
    apic.enable()
    IrqLine(pic.input(0)).pulse()
    apic.dev.deliver_msi(0xFEE00000, 0x0041)
    assert apic.take() == 0x41
    assert apic.take() == 0x20

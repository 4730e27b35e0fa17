/*
 * POST, the power-on self test: everything a BIOS sets up before it boots.
 *
 *   the interrupt vector table (IVT) at 0: 256 far pointers, all valid
 *   the BIOS data area (BDA) at 400h and the extended one (EBDA) below 640 KiB
 *   the two 8259 PICs (vectors 08h-0Fh and 70h-77h, the PC/AT assignment)
 *   the 8254 PIT, channel 0 at 18.2 Hz driving INT 08h
 *   COM1, 115200 8N1: the console
 *   PCI: addresses for every BAR, decoding on, interrupt lines routed
 *   the disks behind the IDE and AHCI controllers
 *
 * References: IBM PC/AT Technical Reference (IVT, BDA), Intel 8259A and
 * 82C54 data sheets, PCI Local Bus 3.0 (BARs), PIIX3 data sheet (PIRQ).
 */
#include "bios.h"
#include "runtime.h"

#define PIC1_CMD 0x20
#define PIC1_DATA 0x21
#define PIC2_CMD 0xA0
#define PIC2_DATA 0xA1
#define ICW1_INIT_ICW4 0x11
#define ICW4_8086 0x01
#define PIC1_VECTOR 0x08              /* IRQ 0-7 -> INT 08h-0Fh */
#define PIC2_VECTOR 0x70              /* IRQ 8-15 -> INT 70h-77h */
#define PIC_CASCADE_IRQ 2

/* Equipment word (INT 11h): bit 1 math coprocessor, bits 5:4 = 10b initial
 * video mode 80x25 colour, bits 11:9 = number of serial ports. */
#define EQUIP_FPU 0x0002
#define EQUIP_VIDEO_80X25 0x0020
#define EQUIP_SERIAL(n) ((n) << 9)

#define COM1_PORT 0x3F8

static void set_vector(unsigned vector, const char *entry)
{
    volatile uint16_t *ivt = phys_ptr(0);
    ivt[vector * 2] = (uint16_t)(uintptr_t)entry;
    ivt[vector * 2 + 1] = BIOS_SEG;
}

static void ivt_init(void)
{
    for (unsigned v = 0; v < 256; v++)
        set_vector(v, entry_iret);
    for (unsigned irq = 0; irq < 8; irq++) {
        set_vector(PIC1_VECTOR + irq, entry_irq_master);
        set_vector(PIC2_VECTOR + irq, entry_irq_slave);
    }
    set_vector(0x08, entry_08);
    set_vector(0x10, entry_10);
    set_vector(0x11, entry_11);
    set_vector(0x12, entry_12);
    set_vector(0x13, entry_13);
    set_vector(0x15, entry_15);
    set_vector(0x16, entry_16);
    set_vector(0x18, entry_18);
    set_vector(0x19, entry_19);
    set_vector(0x1A, entry_1a);
}

static void bda_init(void)
{
    memset(phys_ptr(0x400), 0, 0x100);
    memset(phys_ptr(EBDA_BASE), 0, EBDA_KIB * 1024);
    *(volatile uint8_t *)phys_ptr(EBDA_BASE) = EBDA_KIB;           /* first byte: its size in KiB */
    bda16_set(BDA_COM1, COM1_PORT);
    bda16_set(BDA_EBDA_SEG, EBDA_BASE >> 4);
    bda16_set(BDA_EQUIPMENT, EQUIP_FPU | EQUIP_VIDEO_80X25 | EQUIP_SERIAL(1));
    bda16_set(BDA_BASE_MEMORY, BASE_MEMORY_KIB);
    bda16_set(BDA_KBD_START, BDA_KBD_BUF);
    bda16_set(BDA_KBD_END, BDA_KBD_BUF + 32);
    bda16_set(BDA_KBD_HEAD, BDA_KBD_BUF);
    bda16_set(BDA_KBD_TAIL, BDA_KBD_BUF);
    BDA[BDA_VIDEO_MODE] = 3;                             /* 80x25 text */
    bda16_set(BDA_VIDEO_COLS, 80);
    BDA[BDA_VIDEO_ROWS] = 24;
    bda16_set(BDA_CURSOR_SHAPE, 0x0607);
    bda16_set(BDA_CRTC_BASE, 0x3D4);
}

static void pic_setup(void)
{
    /* ICW1-ICW4: edge triggered, cascaded, vector bases, slave on IRQ 2,
     * 8086 mode.  Then everything masked but the timer and the cascade. */
    outb(PIC1_CMD, ICW1_INIT_ICW4);
    outb(PIC2_CMD, ICW1_INIT_ICW4);
    outb(PIC1_DATA, PIC1_VECTOR);
    outb(PIC2_DATA, PIC2_VECTOR);
    outb(PIC1_DATA, 1 << PIC_CASCADE_IRQ);
    outb(PIC2_DATA, PIC_CASCADE_IRQ);
    outb(PIC1_DATA, ICW4_8086);
    outb(PIC2_DATA, ICW4_8086);
    outb(PIC1_DATA, (uint8_t)~(1 << 0 | 1 << PIC_CASCADE_IRQ));
    outb(PIC2_DATA, 0xFF);
}

/* ---- the RTC (MC146818; QEMU's and our CMOS keep it in BCD, 24 h) ------ */

#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
#define CMOS_NMI_OFF 0x80

uint8_t cmos_read(uint8_t index)
{
    outb(CMOS_INDEX, index | CMOS_NMI_OFF);
    return inb(CMOS_DATA);
}

void cmos_write(uint8_t index, uint8_t value)
{
    outb(CMOS_INDEX, index | CMOS_NMI_OFF);
    outb(CMOS_DATA, value);
}

static unsigned bcd(uint8_t v)
{
    return (v >> 4) * 10 + (v & 0xF);
}

/* INT 1Ah AH=00h counts ticks since midnight: start from the RTC's time. */
static void ticks_init(void)
{
    /* 1193182 / 65536 ticks a second: seconds * 1193182 / 65536. */
    uint32_t seconds = bcd(cmos_read(RTC_HOURS)) * 3600 + bcd(cmos_read(RTC_MINUTES)) * 60 +
                       bcd(cmos_read(RTC_SECONDS));
    uint64_t t = (uint64_t)seconds * 1193182u;
    bda32_set(BDA_TICKS, (uint32_t)(t >> 16));
}

void handle_post(struct bregs *r)
{
    (void)r;
    memset(__bss_start, 0, (size_t)(__bss_end - __bss_start));
    console_init();                   /* COM1 115200 8N1 (lib/console.c) */
    ivt_init();
    bda_init();
    pic_setup();
    timer_init();                     /* PIT channel 0 at 18.2 Hz (lib/timer.c) */
    memmap_init();
    ticks_init();
    printf("drivebay BIOS boot stub\n");
    printf("RAM %u MiB below 4 GiB\n", memmap_ram_top() >> 20);
    pci_setup();
    ide_probe();
    ahci_probe();
    BDA[BDA_HD_COUNT] = 0;
    for (unsigned i = 0; i < disk_count; i++)
        if (disks[i].kind == DISK_HD)
            BDA[BDA_HD_COUNT]++;
    boot_init();
}

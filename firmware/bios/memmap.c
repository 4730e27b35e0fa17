/*
 * The memory map: how much RAM there is, and what a boot loader may use.
 *
 * RAM sizes come from the CMOS, as QEMU's pc_cmos_init (and our
 * hw/pc/rtc.py) store them: 30h/31h KiB between 1 and 64 MiB, 34h/35h 64 KiB
 * units between 16 MiB and 4 GiB, 5Bh-5Dh 64 KiB units above 4 GiB.
 *
 * The BIOS keeps the top DMA_ZONE bytes of RAM below 4 GiB for its drivers'
 * memory structures (AHCI command lists, bounce buffers), and reports them
 * reserved, as SeaBIOS does with its "high" zone.
 *
 * INT 15h E820h (ACPI 6.x, 15 "System Address Map Interfaces"), E801h and
 * 88h are the three ways a boot loader asks.
 */
#include "bios.h"
#include "runtime.h"

#define DMA_ZONE (1u << 20)
#define SMAP 0x534D4150u               /* "SMAP" */
#define E820_RAM 1
#define E820_RESERVED 2

static uint32_t ram_top;               /* end of RAM below 4 GiB */
static uint64_t ram_high;              /* bytes above 4 GiB */

struct e820_entry {
    uint64_t base, length;
    uint32_t type;
} __attribute__((packed));

void memmap_init(void)
{
    uint32_t above16 = cmos_read(0x34) | (uint32_t)cmos_read(0x35) << 8;
    if (above16)
        ram_top = (16u << 20) + (above16 << 16);
    else
        ram_top = (1u << 20) + ((cmos_read(0x30) | (uint32_t)cmos_read(0x31) << 8) << 10);
    ram_high = ((uint64_t)cmos_read(0x5B) | (uint64_t)cmos_read(0x5C) << 8 |
                (uint64_t)cmos_read(0x5D) << 16) << 16;
    dma_init_range(ram_top - DMA_ZONE, ram_top);
}

uint32_t memmap_ram_top(void) { return ram_top; }
uint32_t memmap_usable_top(void) { return ram_top - DMA_ZONE; }

/* The map, in address order. */
static unsigned e820_table(struct e820_entry *t)
{
    unsigned n = 0;
    t[n++] = (struct e820_entry){0, EBDA_BASE, E820_RAM};
    t[n++] = (struct e820_entry){EBDA_BASE, 0xA0000 - EBDA_BASE, E820_RESERVED};
    t[n++] = (struct e820_entry){0xE0000, 0x20000, E820_RESERVED};          /* this BIOS */
    t[n++] = (struct e820_entry){0x100000, memmap_usable_top() - 0x100000, E820_RAM};
    t[n++] = (struct e820_entry){memmap_usable_top(), DMA_ZONE, E820_RESERVED};
    t[n++] = (struct e820_entry){0xFEC00000u, 0x1000, E820_RESERVED};       /* I/O APIC */
    t[n++] = (struct e820_entry){0xFEE00000u, 0x1000, E820_RESERVED};       /* local APIC */
    t[n++] = (struct e820_entry){0xFFFE0000u, 0x20000, E820_RESERVED};      /* the ROM */
    if (ram_high)
        t[n++] = (struct e820_entry){1ull << 32, ram_high, E820_RAM};
    return n;
}

/* INT 15h AX=E820h: EBX = continuation (0 first), ES:DI = buffer of ECX
 * (>= 20) bytes, EDX = "SMAP".  Returns one entry, EAX = "SMAP", ECX = 20,
 * EBX = the next continuation or 0 after the last. */
void handle_e820(struct bregs *r)
{
    struct e820_entry table[10];
    unsigned n = e820_table(table);
    if (r->edx != SMAP || r->ecx < 20 || r->ebx >= n) {
        r->ah = 0x86;
        set_cf(r, true);
        return;
    }
    memcpy(rm_ptr(r->es, r->di), &table[r->ebx], sizeof(table[0]));
    r->ebx = r->ebx + 1 < n ? r->ebx + 1 : 0;
    r->eax = SMAP;
    r->ecx = sizeof(table[0]);
    set_cf(r, false);
}

/*
 * INT 13h conformance: a boot program that calls the disk services of
 * whatever BIOS booted it and checks data, geometry and error returns.
 * tests/guest/test_bios_stub_int13.py runs it under drivebay's boot stub
 * and under SeaBIOS on QEMU with the same disk image, and compares.
 *
 * The disk (made by the test): DISK_SECTORS sectors of 512 bytes; the
 * program in LBA 0-63; from DATA_LBA on, every 32-bit word of sector L
 * holds L.  Sectors the program writes hold written_word(L, i).
 *
 * Only what both BIOSes must agree on is checked: the data, the EDD table
 * sizes and fields, the CHS arithmetic of the geometry AH=08h reports, and
 * the status codes SeaBIOS and the stub both document (01h for a missing
 * drive, a bad CHS address and an LBA past the end).
 * Then the other services a boot loader uses: INT 12h, INT 15h E820h,
 * E801h, 88h and 86h (wait), INT 1Ah (ticks, RTC).  Results are TAP
 * lines printed through INT 10h AH=0Eh, each shorter than 80 characters:
 * SeaBIOS's serial console wraps longer ones like a screen would.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "console.h"
#include "cstring.h"

#define DISK_SECTORS 16384u             /* 8 MiB */
#define DATA_LBA 64u
#define F_CF 0x0001u
#define PLAN 37

struct regs {
    uint32_t eax, ebx, ecx, edx, esi, edi, flags;
};

/* INT n with the registers in *r (DS = ES = 0 throughout).  Every general
 * register is an operand, so FLAGS goes through a global (an absolute
 * address needs no register). */
static uint32_t int_flags;
#define BIOS_INT(n, r)                                                          \
    do {                                                                        \
        __asm__ volatile("pushl %%ebp\n\tint $" #n "\n\tpopl %%ebp\n\t"         \
                         "pushfl\n\tpopl %[fl]\n\tpushw $0\n\tpopw %%es"          \
                         : "+a"((r)->eax), "+b"((r)->ebx), "+c"((r)->ecx),       \
                           "+d"((r)->edx), "+S"((r)->esi), "+D"((r)->edi),       \
                           [fl] "=m"(int_flags)                                  \
                         : : "memory", "cc");                                    \
        (r)->flags = int_flags;                                                 \
    } while (0)

static void int13(struct regs *r) { BIOS_INT(0x13, r); }

#define AH(r) (((r)->eax >> 8) & 0xFF)
#define CF(r) ((r)->flags & F_CF)

/* ---- TAP on the BIOS console ------------------------------------------------ */

static void tty(char c, void *ctx)
{
    (void)ctx;
    if (c == '\n')
        tty('\r', NULL);
    struct regs r = {.eax = 0x0E00 | (uint8_t)c};
    BIOS_INT(0x10, &r);
}

static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vformat(tty, NULL, fmt, ap);
    va_end(ap);
}

static unsigned tests, failures;

static bool ok(bool cond, const char *what, const struct regs *r)
{
    tests++;
    if (!cond)
        failures++;
    say("%sok %u - %s", cond ? "" : "not ", tests, what);
    if (!cond && r)
        say("\n# AX=%04x CF=%u BX=%04x CX=%04x DX=%04x)", (unsigned)(r->eax & 0xFFFF),
            (unsigned)CF(r), (unsigned)(r->ebx & 0xFFFF), (unsigned)(r->ecx & 0xFFFF),
            (unsigned)(r->edx & 0xFFFF));
    say("\n");
    return cond;
}

/* ---- the disk's pattern ------------------------------------------------------ */

static uint32_t written_word(uint32_t lba, uint32_t i)
{
    return 0xA5000000u ^ (i << 16) ^ lba;
}

static bool check_sectors(const void *buf, uint32_t lba, uint32_t count, bool written)
{
    const uint8_t *p = buf;
    for (uint32_t s = 0; s < count; s++)
        for (uint32_t i = 0; i < 128; i++) {
            uint32_t w;
            memcpy(&w, p + s * 512 + i * 4, 4);
            if (w != (written ? written_word(lba + s, i) : lba + s))
                return false;
        }
    return true;
}

static void fill_written(void *buf, uint32_t lba, uint32_t count)
{
    uint8_t *p = buf;
    for (uint32_t s = 0; s < count; s++)
        for (uint32_t i = 0; i < 128; i++) {
            uint32_t w = written_word(lba + s, i);
            memcpy(p + s * 512 + i * 4, &w, 4);
        }
}

/* ---- the calls ----------------------------------------------------------------- */

struct dap {
    uint8_t size, reserved;
    uint16_t count, offset, segment;
    uint64_t lba;
} __attribute__((packed));

static struct dap dap;
static uint8_t buffer[8 * 512 + 1] __attribute__((aligned(16)));
static uint8_t edd[0x42 + 16];

static struct regs edd_rw(uint8_t ah, uint8_t drive, uint64_t lba, uint16_t count, void *buf)
{
    dap = (struct dap){.size = 16, .count = count, .offset = (uint16_t)(uintptr_t)buf,
                       .lba = lba};
    struct regs r = {.eax = (uint32_t)ah << 8, .edx = drive, .esi = (uint16_t)(uintptr_t)&dap};
    int13(&r);
    return r;
}

static struct regs chs_rw(uint8_t ah, uint8_t drive, unsigned c, unsigned h, unsigned s,
                          uint8_t count, void *buf)
{
    struct regs r = {
        .eax = (uint32_t)ah << 8 | count,
        .ecx = (c & 0xFF) << 8 | (c >> 2 & 0xC0) | (s & 0x3F),
        .edx = h << 8 | drive,
        .ebx = (uint16_t)(uintptr_t)buf,
    };
    int13(&r);
    return r;
}

static struct regs edd_params(uint8_t drive, uint16_t size)
{
    memset(edd, 0xCC, sizeof(edd));
    memcpy(edd, &size, 2);
    struct regs r = {.eax = 0x4800, .edx = drive, .esi = (uint16_t)(uintptr_t)edd};
    int13(&r);
    return r;
}

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p) { return le16(p) | (uint32_t)le16(p + 2) << 16; }

/* ---- memory size, memory map, time ------------------------------------------ */

struct e820_entry {
    uint64_t base, length;
    uint32_t type;
} __attribute__((packed));

static uint32_t bcd_ok(uint8_t v, uint8_t limit)
{
    return (v & 0xF) <= 9 && (v >> 4) <= 9 && v < limit;
}

static void other_services(void)
{
    struct regs r = {0};
    BIOS_INT(0x12, &r);
    unsigned base_kib = r.eax & 0xFFFF;
    ok(base_kib >= 512 && base_kib <= 640, "INT 12h: 512-640 KiB of base memory", &r);

    /* E820 (ACPI "System Address Map"): walk the map with the continuation
     * value until it comes back 0. */
    static struct e820_entry e;
    uint32_t next = 0;
    uint64_t usable = 0, usable_high = 0;
    bool first_ok = false, sane = true;
    unsigned n = 0;
    do {
        memset(&e, 0, sizeof(e));
        r = (struct regs){.eax = 0xE820, .ebx = next, .ecx = sizeof(e), .edx = 0x534D4150,
                          .edi = (uint16_t)(uintptr_t)&e};
        BIOS_INT(0x15, &r);
        if (CF(&r) || r.eax != 0x534D4150 || r.ecx < 20) {
            sane = false;
            break;
        }
        if (n == 0)
            first_ok = e.base == 0 && e.type == 1 && e.length >= (uint64_t)base_kib << 10;
        if (e.type == 1) {
            usable += e.length;
            if (e.base >= 0x100000)
                usable_high += e.length;
        }
        next = r.ebx;
    } while (next && ++n < 64);
    ok(sane && n < 64, "INT 15h E820h: the map ends with EBX=0, 'SMAP' each time", &r);
    ok(first_ok, "E820h: the first entry is usable RAM from 0 over INT 12h's size", NULL);
    ok(usable_high >= (56u << 20) && usable_high <= (63u << 20),
       "E820h: 56-63 MiB usable above 1 MiB (64 MiB machine)", NULL);

    r = (struct regs){.eax = 0xE801};
    BIOS_INT(0x15, &r);
    uint32_t e801 = (1u << 20) + ((r.ecx & 0xFFFF) << 10) + ((r.edx & 0xFFFF) << 16);
    say("# E801h: %lu KiB, E820h: %lu KiB usable above 1 MiB\n", (unsigned long)(e801 >> 10),
        (unsigned long)(usable_high >> 10));
    ok(!CF(&r) && (r.ecx & 0xFFFF) == 0x3C00 && e801 <= (64u << 20) &&
       e801 + (1u << 20) >= 0x100000 + usable_high,
       "INT 15h E801h: 15 MiB, then 64 KiB blocks, about what E820h says", &r);

    r = (struct regs){.eax = 0x8800};
    BIOS_INT(0x15, &r);
    ok(!CF(&r) && (r.eax & 0xFFFF) >= 0x3C00, "INT 15h AH=88h: extended memory KiB", &r);

    /* Ticks since midnight (INT 1Ah AH=00h) run at 18.2 Hz: a 330 ms wait
     * (INT 15h AH=86h) is 6 of them, 5 seen if the first one was due at
     * once.  A loaded host may make QEMU deliver late ticks in a burst, and
     * a BIOS may wait longer than asked: the upper bound is loose. */
    r = (struct regs){.eax = 0x0000};
    BIOS_INT(0x1A, &r);
    uint32_t t0 = (r.ecx & 0xFFFF) << 16 | (r.edx & 0xFFFF);
    r = (struct regs){.eax = 0x8600, .ecx = 330000 >> 16, .edx = 330000 & 0xFFFF};
    BIOS_INT(0x15, &r);
    bool waited = !CF(&r);
    r = (struct regs){.eax = 0x0000};
    BIOS_INT(0x1A, &r);
    uint32_t t1 = (r.ecx & 0xFFFF) << 16 | (r.edx & 0xFFFF);
    say("# ticks %lu -> %lu\n", (unsigned long)t0, (unsigned long)t1);
    ok(waited && t1 - t0 >= 5 && t1 - t0 <= 40,
       "INT 15h AH=86h 330 ms: INT 1Ah ticks advance 5-40", &r);

    r = (struct regs){.eax = 0x0200};
    BIOS_INT(0x1A, &r);
    uint8_t hh = (r.ecx >> 8) & 0xFF, mm = r.ecx & 0xFF, ss = (r.edx >> 8) & 0xFF;
    ok(!CF(&r) && bcd_ok(hh, 0x24) && bcd_ok(mm, 0x60) && bcd_ok(ss, 0x60),
       "INT 1Ah AH=02h: the RTC time in BCD", &r);
    r = (struct regs){.eax = 0x0400};
    BIOS_INT(0x1A, &r);
    uint8_t month = (r.edx >> 8) & 0xFF, day = r.edx & 0xFF;
    ok(!CF(&r) && ((r.ecx >> 8) & 0xFF) >= 0x19 && bcd_ok(month, 0x13) && month &&
       bcd_ok(day, 0x32) && day, "INT 1Ah AH=04h: the RTC date in BCD", &r);
}

int main(uint32_t drive)
{
    struct regs r;
    say("# INT 13h conformance, booted from drive %02x\n", (unsigned)drive);
    say("1..%u\n", PLAN);
    ok(drive == 0x80, "the BIOS passes the boot drive 80h in DL", NULL);

    /* AH=41h: EDD installation check. */
    r = (struct regs){.eax = 0x4100, .ebx = 0x55AA, .edx = 0x80};
    int13(&r);
    ok(!CF(&r) && (r.ebx & 0xFFFF) == 0xAA55 && AH(&r) >= 0x21 && (r.ecx & 1),
       "AH=41h: EDD present, BX=AA55h, fixed disk access subset", &r);

    /* AH=08h: geometry; DL = number of hard disks. */
    r = (struct regs){.eax = 0x0800, .edx = 0x80};
    int13(&r);
    unsigned heads = ((r.edx >> 8) & 0xFF) + 1, spt = r.ecx & 0x3F;
    unsigned cylinders = ((r.ecx >> 8) & 0xFF) + ((r.ecx & 0xC0) << 2) + 1;
    ok(!CF(&r) && AH(&r) == 0 && (r.edx & 0xFF) == 1 && spt > 0 && heads > 0 &&
       cylinders * heads * spt <= DISK_SECTORS,
       "AH=08h: one hard disk, a geometry within the disk", &r);
    say("# geometry: %u cylinders, %u heads, %u sectors per track\n", cylinders, heads, spt);

    /* AH=15h: fixed disk, CX:DX sectors. */
    r = (struct regs){.eax = 0x1500, .edx = 0x80};
    int13(&r);
    uint32_t n15 = (r.ecx & 0xFFFF) << 16 | (r.edx & 0xFFFF);
    ok(!CF(&r) && AH(&r) == 3 && n15 > 0 && n15 <= DISK_SECTORS,
       "AH=15h: type 3 (fixed disk), a sector count within the disk", &r);

    /* AH=48h: the EDD parameter table, three buffer sizes. */
    r = edd_params(0x80, 0x1A);
    ok(!CF(&r) && le16(edd) == 0x1A && le32(edd + 0x10) == DISK_SECTORS && le32(edd + 0x14) == 0 &&
       le16(edd + 0x18) == 512 && edd[0x1A] == 0xCC,
       "AH=48h, 1Ah-byte buffer: EDD 1.1 table, sectors and sector size", &r);
    /* 42h bytes: EDD 3.0 adds the device path (key BEDDh, 24h bytes from
     * 1Eh, checksum).  A BIOS may return less, and say so in the size
     * word: SeaBIOS 1.16 answers 1Ah bytes for an AHCI disk and 1Eh (with
     * the path filled in anyway) for an IDE disk; the stub answers 42h. */
    r = edd_params(0x80, 0x42);
    uint16_t size = le16(edd);
    uint8_t sum = 0;
    for (unsigned i = 0x1E; i < 0x42; i++)
        sum += edd[i];
    bool path_ok = size == 0x1A || size == 0x1E ||
        (le16(edd + 0x1E) == 0xBEDD && edd[0x20] == 0x24 && !memcmp(edd + 0x24, "PCI", 3) &&
         sum == 0);
    ok(!CF(&r) && path_ok && le32(edd + 0x10) == DISK_SECTORS,
       "AH=48h, 42h bytes: an EDD 1.x, 2.x or 3.0 table, valid path", &r);
    say("# EDD table %02xh bytes, 1E-2F:", size);
    for (unsigned i = 0x1E; i < 0x30; i++)
        say(" %02x", edd[i]);
    say("\n# 30-41:");
    for (unsigned i = 0x30; i < 0x42; i++)
        say(" %02x", edd[i]);
    say("\n");
    r = edd_params(0x80, 0x10);
    ok(CF(&r) && AH(&r) == 0x01, "AH=48h, buffer too small: CF, AH=01h", &r);

    /* AH=42h: reads. */
    r = edd_rw(0x42, 0x80, DATA_LBA + 36, 4, buffer);
    ok(!CF(&r) && dap.count == 4 && check_sectors(buffer, DATA_LBA + 36, 4, false),
       "AH=42h: four sectors, the right data", &r);
    r = edd_rw(0x42, 0x80, DISK_SECTORS - 1, 1, buffer + 1);
    ok(!CF(&r) && check_sectors(buffer + 1, DISK_SECTORS - 1, 1, false),
       "AH=42h: the last sector, to an odd address", &r);
    r = edd_rw(0x42, 0x80, DATA_LBA, 0, buffer);
    ok(!CF(&r) && AH(&r) == 0, "AH=42h: zero sectors is a successful no-op", &r);

    /* AH=43h: write, then read back. */
    fill_written(buffer, DATA_LBA + 136, 3);
    r = edd_rw(0x43, 0x80, DATA_LBA + 136, 3, buffer);
    ok(!CF(&r) && dap.count == 3, "AH=43h: three sectors written", &r);
    memset(buffer, 0, sizeof(buffer));
    r = edd_rw(0x42, 0x80, DATA_LBA + 136, 4, buffer);
    ok(!CF(&r) && check_sectors(buffer, DATA_LBA + 136, 3, true) &&
       check_sectors(buffer + 3 * 512, DATA_LBA + 139, 1, false),
       "AH=43h: read back, the next sector untouched", &r);

    /* AH=02h/03h: CHS, through the geometry AH=08h gave. */
    unsigned c = 1, h = 1, s = 1;
    uint32_t lba = (c * heads + h) * spt + s - 1;
    r = chs_rw(0x02, 0x80, c, h, s, 2, buffer);
    ok(!CF(&r) && (r.eax & 0xFF) == 2 && check_sectors(buffer, lba, 2, false),
       "AH=02h: C/H/S 1/1/1 is LBA (C * heads + H) * spt + S - 1", &r);
    c = 2; h = heads - 1; s = spt;
    lba = (c * heads + h) * spt + s - 1;
    fill_written(buffer, lba, 1);
    r = chs_rw(0x03, 0x80, c, h, s, 1, buffer);
    ok(!CF(&r) && (r.eax & 0xFF) == 1, "AH=03h: write the last sector of a cylinder", &r);
    memset(buffer, 0, 512);
    r = edd_rw(0x42, 0x80, lba, 1, buffer);
    ok(!CF(&r) && check_sectors(buffer, lba, 1, true), "AH=03h: the data is at that LBA", &r);
    r = chs_rw(0x04, 0x80, 0, 0, 1, 1, buffer);
    ok(!CF(&r), "AH=04h: verify", &r);
    r = (struct regs){.eax = 0x0000, .edx = 0x80};
    int13(&r);
    ok(!CF(&r) && AH(&r) == 0, "AH=00h: reset", &r);

    /* Errors. */
    r = chs_rw(0x02, 0x80, 0, 0, 0, 1, buffer);
    ok(CF(&r) && AH(&r) == 0x01, "AH=02h, sector 0: CF, AH=01h", &r);
    r = chs_rw(0x02, 0x80, 0, heads, 1, 1, buffer);
    ok(CF(&r) && AH(&r) == 0x01, "AH=02h, head past the geometry: CF, AH=01h", &r);
    r = (struct regs){.eax = 0x0100, .edx = 0x80};
    int13(&r);
    ok(CF(&r) && AH(&r) == 0x01, "AH=01h: the last status (01h)", &r);
    r = edd_rw(0x42, 0x80, DISK_SECTORS, 1, buffer);
    ok(CF(&r) && AH(&r) == 0x01, "AH=42h, LBA just past the end: CF, AH=01h", &r);
    r = edd_rw(0x42, 0x80, 0x7FFFFFFFull, 1, buffer);
    ok(CF(&r) && AH(&r) == 0x01, "AH=42h, LBA far past the end: CF, AH=01h", &r);
    r = edd_rw(0x43, 0x80, 1ull << 40, 1, buffer);
    ok(CF(&r) && AH(&r) == 0x01, "AH=43h, LBA past the end: CF, AH=01h", &r);
    r = edd_rw(0x42, 0x81, DATA_LBA, 1, buffer);
    ok(CF(&r) && AH(&r) == 0x01, "AH=42h, drive 81h (missing): CF, AH=01h", &r);
    r = (struct regs){.eax = 0x0800, .edx = 0x81};
    int13(&r);
    ok(CF(&r) && AH(&r) == 0x01, "AH=08h, drive 81h (missing): CF, AH=01h", &r);
    r = (struct regs){.eax = 0x1500, .edx = 0x81};
    int13(&r);
    ok(CF(&r), "AH=15h, drive 81h (missing): CF", &r);
    r = edd_params(0x81, 0x42);
    ok(CF(&r) && AH(&r) == 0x01, "AH=48h, drive 81h (missing): CF, AH=01h", &r);
    r = (struct regs){.eax = 0x0000, .edx = 0x80};
    int13(&r);
    r = (struct regs){.eax = 0x0100, .edx = 0x80};
    int13(&r);
    ok(!CF(&r) && AH(&r) == 0, "AH=01h after a good call: 00h", &r);

    other_services();
    say("# %u of %u failed\n", failures, tests);
    return failures || tests != PLAN;
}

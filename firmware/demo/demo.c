/*
 * The demo boot program: what a boot loader can learn about its PC.
 *
 * Runs in real mode from the boot disk (../lib/mbr16.S loaded it), asks the BIOS
 * about memory and drives, scans PCI configuration space for storage
 * controllers, proves the boot disk is writable by counting boots in one of
 * its sectors, and prints all of it on the BIOS console (INT 10h).  It only
 * uses what any PC BIOS offers, so the same disk boots under drivebay's boot
 * stub, under SeaBIOS on drivebay and on QEMU.
 *
 * Built with gcc -m16: ordinary C whose instructions carry operand-size
 * prefixes so they run in real mode.  The BIOS services used:
 *   INT 10h AH=0Eh      teletype output
 *   INT 12h             conventional memory size
 *   INT 15h EAX=E820h   the system memory map
 *   INT 13h AH=08h      drive parameters (CHS geometry, number of disks)
 *   INT 13h AH=15h      disk type and size
 *   INT 13h AH=41h      EDD extensions present?  Which version?
 *   INT 13h AH=48h      EDD drive parameters: size, sector size, device path
 *   INT 13h AH=42h/43h  EDD read/write by LBA
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "bios.h"
#include "console.h"
#include "cstring.h"
#include "io.h"
#include "pci.h"

/* ---- the console --------------------------------------------------------- */

#define COM1_LSR    (COM1_BASE + 5)
#define COM1_MCR    (COM1_BASE + 4)
#define LSR_DR      0x01        /* received data ready */
#define MCR_LOOP    0x10        /* loopback: the transmitter feeds the receiver */
#define POLL_LIMIT  1000

static bool com1_direct;        /* we write to COM1 ourselves, the BIOS does not */

static void teletype(char c)
{
    struct bios_regs r = {.eax = 0x0E00 | (uint8_t)c, .ebx = 0x0007};
    bios_int(0x10, &r);
}

static void drain_receiver(void)
{
    for (int i = 0; i < 32 && (inb(COM1_LSR) & LSR_DR); i++)
        inb(COM1_BASE);
}

/*
 * Make the BIOS write out console output it may still hold back.  SeaBIOS's
 * serial console (sercon) sends a character only when the next one arrives
 * or another console call comes in.  Clearing the one blank cell under the
 * cursor (INT 10h AH=06h with AL=0, after AH=03h tells where the cursor is)
 * is such a call, and changes nothing on a screen.
 */
static void console_flush(void)
{
    struct bios_regs r = {.eax = 0x0300};
    bios_int(0x10, &r);
    uint16_t cursor = (uint16_t)r.edx;      /* DH = row, DL = column */
    r = (struct bios_regs){.eax = 0x0600, .ebx = 0x0700, .ecx = cursor, .edx = cursor};
    bios_int(0x10, &r);
}

/*
 * Does the BIOS console (INT 10h) reach COM1?  drivebay's boot stub sends it
 * there; SeaBIOS does when asked to (fw_cfg etc/sercon-port, which drivebay
 * sets); a BIOS with a screen does not.  The UART can tell: in loopback mode
 * what it transmits arrives in its own receiver instead of on the line.  So
 * send a space and a backspace (nothing changes on a screen) through INT 10h
 * and look for them there.  Interrupts stay off meanwhile, so no interrupt
 * handler reads the receiver first.
 */
static bool bios_console_on_com1(void)
{
    if (inb(COM1_LSR) == 0xFF)
        return false;                       /* no UART: the port floats */
    console_flush();                        /* the BIOS's own last words, to the line */
    cli();
    uint8_t mcr = inb(COM1_MCR);
    outb(COM1_MCR, mcr | MCR_LOOP);
    drain_receiver();
    teletype(' ');
    teletype('\b');
    bool echoed = false;
    for (int i = 0; i < POLL_LIMIT && !echoed; i++)
        echoed = inb(COM1_LSR) & LSR_DR;
    drain_receiver();
    outb(COM1_MCR, mcr);
    sti();
    return echoed;
}

static void put(char c, void *ctx)
{
    (void)ctx;
    if (c == '\n')
        teletype('\r');
    teletype(c);
    if (com1_direct)
        console_putc(c);                    /* lib/console.c: LF goes out as CR LF */
}

__attribute__((format(printf, 1, 2)))
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vformat(put, 0, fmt, ap);
    va_end(ap);
}

/* ---- memory -------------------------------------------------------------- */

#define SMAP 0x534D4150                     /* "SMAP": E820's signature */

struct e820_entry {
    uint64_t base, length;
    uint32_t type;
    uint32_t attributes;                    /* ACPI 3.0: bit 0 = valid */
} __attribute__((packed));

static const char *e820_type(uint32_t type)
{
    static const char *const names[] = {"?", "usable", "reserved", "ACPI data", "ACPI NVS",
                                        "unusable", "disabled", "persistent"};
    return type < sizeof names / sizeof names[0] ? names[type] : "other";
}

static void report_memory(void)
{
    struct bios_regs r = {0};
    bios_int(0x12, &r);
    say("memory: %u KiB conventional (INT 12h); E820 map (INT 15h):\n",
        (unsigned)(r.eax & 0xFFFF));

    static struct e820_entry e;
    uint64_t usable = 0;
    uint32_t next = 0;
    for (int n = 0; n < 32; n++) {
        e.attributes = 1;
        r = (struct bios_regs){.eax = 0xE820, .ebx = next, .ecx = sizeof e, .edx = SMAP,
                               .edi = offset_of(&e)};
        bios_int(0x15, &r);
        if (carry(&r) || r.eax != SMAP)
            break;
        say("  %010llx-%010llx %s\n", e.base, e.base + e.length - 1, e820_type(e.type));
        if (e.type == 1)
            usable += e.length;
        next = r.ebx;
        if (!next)
            break;
    }
    say("  usable RAM: %llu KiB\n", usable >> 10);
}

/* ---- INT 13h drives -------------------------------------------------------- */

/* INT 13h AH=48h's result (EDD 3.0): drive size, then where the drive is. */
struct edd_params {
    uint16_t size;                          /* in: buffer size; out: bytes filled */
    uint16_t flags;
    uint32_t cylinders, heads, sectors_per_track;
    uint64_t sectors;
    uint16_t bytes_per_sector;
    uint32_t dpte;
    uint16_t key;                           /* BEDDh: the device path is valid */
    uint8_t path_length;
    uint8_t reserved[3];
    char host_bus[4];                       /* "PCI " or "ISA " */
    char interface[8];                      /* "ATA", "ATAPI", "SCSI", "SATA", "USB", ... */
    uint8_t interface_path[8];              /* PCI: bus, device, function, channel */
    uint8_t device_path[8];                 /* ATA: 0 master / 1 slave; SATA: port; ... */
    uint8_t reserved2, checksum;
} __attribute__((packed));
_Static_assert(sizeof(struct edd_params) == 0x42, "EDD 3.0 parameter table");

#define EDD_KEY 0xBEDD

/* The EDD disk address packet of AH=42h (read) and AH=43h (write). */
struct dap {
    uint8_t size, reserved;
    uint16_t count;
    uint16_t offset, segment;
    uint64_t lba;
} __attribute__((packed));

/* INT 13h on `drive` with AH = fn; false (and the status in *status) on error. */
static bool int13(uint8_t fn, uint8_t drive, struct bios_regs *r, uint8_t *status)
{
    r->eax = (r->eax & 0xFF) | (uint32_t)fn << 8;
    r->edx = (r->edx & ~0xFFu) | drive;
    bios_int(0x13, r);
    if (status)
        *status = ah(r);
    return !carry(r);
}

static bool edd_present(uint8_t drive, uint8_t *version)
{
    struct bios_regs r = {.ebx = 0x55AA};
    if (!int13(0x41, drive, &r, 0) || (r.ebx & 0xFFFF) != 0xAA55)
        return false;
    *version = ah(&r);
    return true;
}

static const char *edd_version_name(uint8_t v)
{
    switch (v) {
    case 0x01: return "1.x";
    case 0x20: return "2.0";
    case 0x21: return "1.1";
    case 0x30: return "3.0";
    default: return "(unknown)";
    }
}

static bool edd_params(uint8_t drive, struct edd_params *p)
{
    memset(p, 0, sizeof *p);
    p->size = sizeof *p;
    struct bios_regs r = {.esi = offset_of(p)};
    return int13(0x48, drive, &r, 0);
}

/* Read (AH=42h) or write (AH=43h) `count` sectors at `lba` to/from buf. */
static bool disk_io(uint8_t fn, uint8_t drive, uint64_t lba, uint16_t count, void *buf,
                    uint8_t *status)
{
    static struct dap dap;
    dap = (struct dap){.size = sizeof dap, .count = count, .offset = offset_of(buf),
                       .lba = lba};
    struct bios_regs r = {.esi = offset_of(&dap)};
    return int13(fn, drive, &r, status);
}

/* "ATA     " -> "ATA" */
static void trimmed(char *out, const char *field, int n)
{
    memcpy(out, field, n);
    while (n && (out[n - 1] == ' ' || out[n - 1] == 0))
        n--;
    out[n] = 0;
}

/* Where the drive is, from the EDD 3.0 device path, if the BIOS gives one. */
static void describe_path(const struct edd_params *p)
{
    if (p->size < sizeof *p || p->key != EDD_KEY) {
        say("      no EDD 3.0 device path (AH=48h filled %u bytes)\n", p->size);
        return;
    }
    char bus[5], iface[9];
    trimmed(bus, p->host_bus, 4);
    trimmed(iface, p->interface, 8);
    say("      %s on %s", iface, bus);
    const uint8_t *ip = p->interface_path, *dp = p->device_path;
    if (!strcmp(bus, "PCI")) {
        say(" %02x:%02x.%x", ip[0], ip[1], ip[2]);
        if (ip[3] != 0xFF)
            say(" channel %u", ip[3]);
    }
    if (!strcmp(iface, "ATA") || !strcmp(iface, "ATAPI"))
        say(", %s", dp[0] ? "slave" : "master");
    else if (!strcmp(iface, "SATA"))
        say(", port %u", dp[0]);
    else if (!strcmp(iface, "SCSI"))
        say(", target %u lun %u", dp[0] | dp[1] << 8, dp[2]);
    say(" (AH=48h)\n");
}

static void report_disk(uint8_t drive, uint8_t boot_drive)
{
    static struct edd_params p;
    uint8_t version = 0;
    bool edd = edd_present(drive, &version);
    if (edd && edd_params(drive, &p)) {
        uint64_t sectors = p.sectors, mib = (sectors * p.bytes_per_sector) >> 20;
        say("  %02Xh%s: %llu MiB, %llu sectors of %u bytes\n", drive,
            drive == boot_drive ? " (boot drive)" : "", mib, sectors, p.bytes_per_sector);
    } else {
        say("  %02Xh%s: no EDD extensions\n", drive, drive == boot_drive ? " (boot drive)" : "");
    }

    struct bios_regs r = {0};
    if (int13(0x08, drive, &r, 0)) {
        unsigned cylinders = ((r.ecx >> 8) & 0xFF) + ((r.ecx & 0xC0) << 2) + 1;
        unsigned heads = ((r.edx >> 8) & 0xFF) + 1, sectors = r.ecx & 0x3F;
        say("      CHS %u/%u/%u (AH=08h)", cylinders, heads, sectors);
    }
    r = (struct bios_regs){0};
    if (int13(0x15, drive, &r, 0) && ah(&r) == 3)
        say(", %lu sectors (AH=15h)", (unsigned long)((r.ecx & 0xFFFF) << 16 | (r.edx & 0xFFFF)));
    if (edd)
        say(", EDD %s (AH=41h)", edd_version_name(version));
    say("\n");
    if (edd)
        describe_path(&p);
}

static void report_hard_disks(uint8_t boot_drive)
{
    struct bios_regs r = {0};
    unsigned count = int13(0x08, 0x80, &r, 0) ? r.edx & 0xFF : 0;
    say("hard disks: %u (INT 13h AH=08h)\n", count);
    for (unsigned i = 0; i < count && i < 16; i++)
        report_disk((uint8_t)(0x80 + i), boot_drive);
}

/*
 * CD/DVD drives have no standard drive numbers; BIOSes that give INT 13h
 * access to them use E0h and up (the El Torito convention).  Show those that
 * answer, and the volume name of a data CD (ISO 9660: the primary volume
 * descriptor in sector 16: type 1, "CD001" at byte 1, the volume ID at byte 40).
 */
static void report_cd_drives(void)
{
    static struct edd_params p;
    static uint8_t block[2048];
    unsigned found = 0;
    say("CD/DVD drives (INT 13h E0h-E3h):\n");
    for (unsigned drive = 0xE0; drive < 0xE4; drive++) {
        uint8_t version, status;
        if (!edd_present((uint8_t)drive, &version) || !edd_params((uint8_t)drive, &p))
            continue;
        found++;
        say("  %02Xh: %u-byte sectors, EDD %s", drive, p.bytes_per_sector,
            edd_version_name(version));
        if (p.bytes_per_sector != sizeof block)
            say("\n");
        else if (!disk_io(0x42, (uint8_t)drive, 16, 1, block, &status))
            say(", no readable medium (status %02Xh)\n", status);
        else if (block[0] != 1 || memcmp(block + 1, "CD001", 5))
            say(", sector 16 is no ISO 9660 primary volume descriptor\n");
        else {
            char volume[33];
            trimmed(volume, (const char *)block + 40, 32);
            say(", ISO 9660 volume \"%s\"\n", volume);
        }
        describe_path(&p);
    }
    if (!found)
        say("  none answered\n");
}

/* ---- PCI --------------------------------------------------------------------- */

static const char *storage_class_name(const struct pci_dev *d)
{
    switch (d->subclass) {
    case 0x00: return "SCSI controller";
    case 0x01: return "IDE controller";
    case 0x02: return "floppy controller";
    case 0x04: return "RAID controller";
    case 0x05: return "ATA controller (ADMA)";
    case 0x06: return d->prog_if == 0x01 ? "SATA controller (AHCI)" : "SATA controller";
    case 0x07: return "SAS controller";
    case 0x08: return d->prog_if == 0x02 ? "NVMe controller" : "non-volatile memory controller";
    default: return "mass storage controller";
    }
}

static bool show_storage(const struct pci_dev *d, void *ctx)
{
    unsigned *count = ctx;
    if (d->class_code == 0x01) {
        say("  %02x:%02x.%x %04x:%04x %s, prog-if %02Xh\n", PCI_BUS(d->bdf), PCI_DEV(d->bdf),
            PCI_FN(d->bdf), d->vendor, d->device, storage_class_name(d), d->prog_if);
        ++*count;
    }
    return false;
}

static void report_pci_storage(void)
{
    unsigned storage = 0;
    say("PCI storage controllers (configuration space, ports CF8h/CFCh):\n");
    unsigned all = pci_enumerate(show_storage, &storage);
    say("  %u of %u PCI functions\n", storage, all);
}

/* ---- the boot counter ---------------------------------------------------------- */

#define COUNTER_LBA 64                      /* demo.ld keeps the program below it */
static const char COUNTER_MAGIC[16] = "DRIVEBAY-DEMO-N";

struct counter_sector {
    char magic[16];
    uint32_t count;
    uint8_t pattern[492];                   /* changes every boot: the whole sector is checked */
} __attribute__((packed));
_Static_assert(sizeof(struct counter_sector) == 512, "one sector");

static bool boot_count(uint8_t drive)
{
    static struct counter_sector sector, check;
    uint8_t status;
    if (!disk_io(0x42, drive, COUNTER_LBA, 1, &sector, &status)) {
        say("boot count: reading sector %u failed (status %02Xh)\n", COUNTER_LBA, status);
        return false;
    }
    uint32_t count = memcmp(sector.magic, COUNTER_MAGIC, 16) ? 0 : sector.count;
    count++;
    memcpy(sector.magic, COUNTER_MAGIC, 16);
    sector.count = count;
    for (unsigned i = 0; i < sizeof sector.pattern; i++)
        sector.pattern[i] = (uint8_t)(count * 7 + i);
    if (!disk_io(0x43, drive, COUNTER_LBA, 1, &sector, &status)) {
        say("boot count: writing sector %u failed (status %02Xh)\n", COUNTER_LBA, status);
        return false;
    }
    if (!disk_io(0x42, drive, COUNTER_LBA, 1, &check, &status)) {
        say("boot count: reading sector %u back failed (status %02Xh)\n", COUNTER_LBA, status);
        return false;
    }
    if (memcmp(&sector, &check, sizeof sector)) {
        say("boot count: sector %u read back differs from what was written\n", COUNTER_LBA);
        return false;
    }
    say("boot count %lu (sector %u written and read back)\n", (unsigned long)count,
        COUNTER_LBA);
    return true;
}

/* ---- main ------------------------------------------------------------------------ */

int main(uint8_t boot_drive)
{
    com1_direct = !bios_console_on_com1();
    if (com1_direct)
        console_init();
    say("\ndrivebay demo: a boot program reports what it finds\n");
    say("console: %s\n", com1_direct ? "INT 10h, and COM1 written directly"
                                     : "INT 10h (the BIOS sends it to COM1)");
    say("booted from drive %02Xh\n", boot_drive);
    report_memory();
    report_hard_disks(boot_drive);
    report_cd_drives();
    report_pci_storage();
    int status = boot_count(boot_drive) ? 0 : 1;
    say("done: exit status %d to port 501h\n", status);
    console_flush();
    return status;
}

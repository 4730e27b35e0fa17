/*
 * Booting: INT 19h (the bootstrap loader) and INT 18h (boot failed, try
 * the next device).
 *
 * The boot order comes from the CMOS bytes QEMU's `-boot order=` writes
 * (and our hw/pc/rtc.py): 3Dh bits 3:0 first device, 7:4 second, 38h bits
 * 7:4 third; 1 = floppy, 2 = hard disk, 3 = CD-ROM, 4 = network.
 *
 * A hard disk boots the IBM PC way: its first sector goes to 0000:7C00h
 * and must end in 55h AAh; it starts with DL = the drive number.
 *
 * A CD boots the El Torito 1.0 way, "no emulation" images only:
 *   sector 17 is the boot record volume descriptor ("EL TORITO
 *   SPECIFICATION"), holding the LBA of the boot catalog;
 *   the catalog's validation entry (header ID 01h, key 55h AAh, words
 *   summing to 0) is followed by the initial/default entry (80h bootable,
 *   media type 0 = no emulation, load segment (0 means 07C0h), sector
 *   count in 512-byte units, the image's LBA);
 *   the image is read to the load segment and entered at load segment:0
 *   with DL = the CD's drive number (E0h).
 */
#include "bios.h"
#include "runtime.h"

#define BOOT_FLOPPY 1
#define BOOT_HD 2
#define BOOT_CD 3
#define BOOT_NET 4
#define MAX_BOOT_ENTRIES 3
#define CMOS_BOOT_ORDER 0x3D
#define CMOS_BOOT_FLAGS3 0x38
#define MBR_ADDRESS 0x7C00
#define BOOT_SIGNATURE 0xAA55

static uint8_t boot_order[MAX_BOOT_ENTRIES];
static unsigned boot_next;             /* the entry INT 18h/19h tries next */

/* What INT 13h AH=4Bh reports after a CD boot (El Torito 1.0, 5.3). */
static struct {
    bool active;
    uint8_t drive;
    uint32_t image_lba;
    uint16_t load_segment, sectors;
} cd_boot;

void boot_init(void)
{
    uint8_t order = cmos_read(CMOS_BOOT_ORDER), flags3 = cmos_read(CMOS_BOOT_FLAGS3);
    boot_order[0] = order & 0xF;
    boot_order[1] = order >> 4;
    boot_order[2] = flags3 >> 4;
    /* An empty order boots nothing: it is what a VM whose boot slots are
     * all "none" gets (VirtualBox then reports no bootable medium).  The
     * machine always writes an order; QEMU's default is "cad". */
    boot_next = 0;
    cd_boot.active = false;
}

/* Enter the loaded boot code by the IRET at the end of this INT 19h. */
static void enter(struct bregs *r, uint16_t cs, uint16_t ip, uint8_t drive)
{
    memset(r, 0, offsetof(struct bregs, handler));
    r->cs = cs;
    r->ip = ip;
    r->dl = drive;
    r->flags = F_IF | 0x0002;          /* bit 1 always reads 1 */
}

static bool boot_disk(struct bregs *r, struct disk *d)
{
    printf("Booting from Hard Disk %u...\n", d->number - 0x80);
    uint32_t count = 1;
    if (disk_io(d, false, 0, count, phys_ptr(MBR_ADDRESS))) {
        printf("Boot failed: could not read the boot disk\n");
        return false;
    }
    if (*(volatile uint16_t *)phys_ptr(MBR_ADDRESS + 510) != BOOT_SIGNATURE) {
        printf("Boot failed: not a bootable disk\n");
        return false;
    }
    enter(r, 0, MBR_ADDRESS, d->number);
    return true;
}

static uint8_t cd_buffer[2048] __attribute__((aligned(16)));

static bool boot_cd(struct bregs *r, struct disk *d)
{
    printf("Booting from DVD/CD...\n");
    if (!d->sectors || disk_io(d, false, 17, 1, cd_buffer)) {
        printf("Boot failed: could not read from CDROM\n");
        return false;
    }
    if (cd_buffer[0] != 0 || memcmp(cd_buffer + 1, "CD001\001EL TORITO SPECIFICATION", 29)) {
        printf("Boot failed: no El Torito boot record on the CD\n");
        return false;
    }
    uint32_t catalog = cd_buffer[0x47] | cd_buffer[0x48] << 8 | cd_buffer[0x49] << 16 |
                       (uint32_t)cd_buffer[0x4A] << 24;
    if (disk_io(d, false, catalog, 1, cd_buffer)) {
        printf("Boot failed: could not read the boot catalog\n");
        return false;
    }
    uint16_t sum = 0;
    for (unsigned i = 0; i < 32; i += 2)
        sum += (uint16_t)(cd_buffer[i] | cd_buffer[i + 1] << 8);
    if (cd_buffer[0] != 1 || cd_buffer[0x1E] != 0x55 || cd_buffer[0x1F] != 0xAA || sum) {
        printf("Boot failed: bad El Torito validation entry\n");
        return false;
    }
    const uint8_t *e = cd_buffer + 32;
    if (e[0] != 0x88) {
        printf("Boot failed: the CD's default entry is not bootable\n");
        return false;
    }
    if (e[1] & 0x0F) {
        printf("Boot failed: floppy/hard disk emulation is not supported, only no emulation\n");
        return false;
    }
    uint16_t segment = (uint16_t)(e[2] | e[3] << 8);
    if (!segment)
        segment = 0x07C0;
    uint16_t sectors = (uint16_t)(e[6] | e[7] << 8);     /* 512-byte "virtual sectors" */
    uint32_t lba = e[8] | e[9] << 8 | e[10] << 16 | (uint32_t)e[11] << 24;
    uint32_t blocks = (sectors + 3) / 4;
    uint8_t *dest = rm_ptr(segment, 0);
    if (!sectors || (uintptr_t)dest < 0x500 || (uintptr_t)dest + blocks * 2048 > EBDA_BASE) {
        printf("Boot failed: the boot image does not fit below the EBDA\n");
        return false;
    }
    /* Read whole CD blocks through the buffer, then copy just the
     * 512-byte sectors the catalog asked for. */
    for (uint32_t i = 0; i < blocks; i++) {
        if (disk_io(d, false, lba + i, 1, cd_buffer)) {
            printf("Boot failed: could not read the boot image\n");
            return false;
        }
        uint32_t bytes = (sectors - 4 * i) * 512;
        memcpy(dest + i * 2048, cd_buffer, bytes > 2048 ? 2048 : bytes);
    }
    cd_boot = (typeof(cd_boot)){true, d->number, lba, segment, sectors};
    enter(r, segment, 0, d->number);
    return true;
}

static struct disk *first_of(enum disk_kind kind)
{
    for (unsigned i = 0; i < disk_count; i++)
        if (disks[i].kind == kind)
            return &disks[i];
    return NULL;
}

/* Drives we found but cannot boot from (VirtualBox documents that NVMe
 * and USB boot needs EFI). */
static void report_unbootable(void)
{
    const struct pci_dev *dev;
    for (unsigned i = 0; (dev = pci_find(0x01, 0x08, PCI_ANY_PROG_IF, i)); i++)
        printf("NVMe controller at %02x:%02x.%x: not bootable from this BIOS (needs EFI)\n",
               PCI_BUS(dev->bdf), PCI_DEV(dev->bdf), PCI_FN(dev->bdf));
    for (unsigned i = 0; (dev = pci_find(0x0C, 0x03, PCI_ANY_PROG_IF, i)); i++)
        printf("USB controller at %02x:%02x.%x: USB disks are not bootable from this BIOS "
               "(needs EFI)\n", PCI_BUS(dev->bdf), PCI_DEV(dev->bdf), PCI_FN(dev->bdf));
}

/* Try the boot entries from boot_next on; on success the IRET of this
 * interrupt enters the boot code. */
static void boot_from_next(struct bregs *r)
{
    while (boot_next < MAX_BOOT_ENTRIES) {
        uint8_t what = boot_order[boot_next++];
        struct disk *d;
        switch (what) {
        case BOOT_HD:
            if ((d = first_of(DISK_HD)) && boot_disk(r, d))
                return;
            break;
        case BOOT_CD:
            if ((d = first_of(DISK_CD)) && boot_cd(r, d))
                return;
            break;
        default:
            break;                     /* no floppy or network boot here */
        }
    }
    report_unbootable();
    printf("No bootable device.\n");
    bios_halt();
}

void handle_19(struct bregs *r)
{
    boot_next = 0;
    boot_from_next(r);
}

void handle_18(struct bregs *r)
{
    boot_from_next(r);
}

void bios_halt(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* INT 13h AX=4B01h: El Torito "get emulation status" into DS:SI (13h
 * bytes).  After a no-emulation boot it describes the boot image. */
void eltorito_status(struct bregs *r)
{
    if (r->al != 0x01 && r->al != 0x00) {
        r->ah = DISK_RET_EPARAM;
        set_cf(r, true);
        return;
    }
    if (!cd_boot.active) {
        r->ah = DISK_RET_EPARAM;
        set_cf(r, true);
        return;
    }
    uint8_t *p = rm_ptr(r->ds, r->si);
    memset(p, 0, 0x13);
    p[0] = 0x13;                       /* packet size */
    p[1] = 0x00;                       /* media type: no emulation */
    p[2] = cd_boot.drive;
    p[3] = 0;                          /* controller index */
    memcpy(p + 4, &cd_boot.image_lba, 4);
    memcpy(p + 0xC, &cd_boot.load_segment, 2);
    memcpy(p + 0xE, &cd_boot.sectors, 2);
    r->ah = 0;
    set_cf(r, false);
}

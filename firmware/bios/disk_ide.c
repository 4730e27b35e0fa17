/*
 * The IDE driver of the BIOS: every PCI IDE function (class 0101h), both
 * channels, master and slave, ATA disks and ATAPI CD/DVD drives.
 *
 * Transfers are PIO and polled (lib/ata.c), as a BIOS does them: READ/WRITE
 * SECTORS (EXT for LBAs past 28 bits), READ(10) through the PACKET command
 * for CDs.  A caller's buffer below 1 MiB is a plain pointer here.
 */
#include "bios.h"
#include "runtime.h"
#include "ata.h"

#define MAX_IDE_CONTROLLERS 2
#define ATAPI_MAX_BLOCKS 32             /* 64 KiB per READ(10) */

struct ide_drive {
    struct ata_channel *ch;
    unsigned unit;
    bool lba48;
};

static struct ata_controller controllers[MAX_IDE_CONTROLLERS];
static struct ide_drive drives[MAX_IDE_CONTROLLERS * 4];
static unsigned drive_count;

/* Map the device's error to an INT 13h status. */
static int ata_status(const struct ata_result *res)
{
    if (res->timeout)
        return DISK_RET_ETIMEOUT;
    if (res->status & ATA_SR_ERR) {
        if (res->error & ATA_ER_IDNF)
            return DISK_RET_ENOTFOUND;
        if (res->error & ATA_ER_UNC)
            return DISK_RET_EUNCORR;
        return DISK_RET_ECONTROLLER;
    }
    return ata_ok(res) ? DISK_RET_OK : DISK_RET_ECONTROLLER;
}

/* READ/WRITE SECTORS, or their EXT forms past LBA28's reach. */
static int ide_rw(struct disk *d, bool write, uint64_t lba, uint32_t count, void *buf)
{
    struct ide_drive *drv = d->ctx;
    bool lba48 = lba + count > 0x0FFFFFFF;
    if (lba48 && !drv->lba48)
        return DISK_RET_ENOTFOUND;
    struct ata_cmd cmd = {
        .command = write ? (lba48 ? ATA_CMD_WRITE_SECTORS_EXT : ATA_CMD_WRITE_SECTORS)
                         : (lba48 ? ATA_CMD_READ_SECTORS_EXT : ATA_CMD_READ_SECTORS),
        .count = (uint16_t)count,             /* LBA28: 256 is written as 0 */
        .lba = lba, .lba48 = lba48,
    };
    struct ata_result res;
    bool ok = write ? ata_cmd_pio_out(drv->ch, drv->unit, &cmd, buf, count * 512, 512, &res)
                    : ata_cmd_pio_in(drv->ch, drv->unit, &cmd, buf, count * 512, 512, &res);
    return ok ? DISK_RET_OK : ata_status(&res);
}

/* One PACKET command with data in (disk_cd.c retries and asks for sense). */
static bool atapi_command(struct disk *d, const uint8_t *cdb, void *buf, uint32_t bytes)
{
    struct ide_drive *drv = d->ctx;
    struct atapi_result res;
    return atapi_packet(drv->ch, drv->unit, cdb, buf, bytes, 0xFFFE, &res) && res.bytes == bytes;
}

static const struct disk_ops ide_ops = {"ide", 256, ide_rw, NULL};
static const struct disk_ops atapi_ops = {"atapi", ATAPI_MAX_BLOCKS, cd_rw, atapi_command};

static void add_drive(struct ata_controller *c, struct ata_channel *ch, unsigned unit,
                      enum ata_kind kind)
{
    static uint16_t id[ATA_ID_WORDS];
    struct ata_result res;
    if (drive_count == sizeof(drives) / sizeof(drives[0]) ||
        !ata_identify(ch, unit, kind == ATA_KIND_ATAPI, id, &res))
        return;
    struct ide_drive *drv = &drives[drive_count];
    drv->ch = ch;
    drv->unit = unit;
    drv->lba48 = id[ATA_ID_COMMAND_SET_2] & (1u << 10);
    struct disk *d = disk_add();
    if (!d)
        return;
    drive_count++;
    d->ctx = drv;
    d->bdf = c->pci.bdf;
    d->channel = ch->index;
    d->unit = (uint8_t)unit;
    char where[16];
    snprintf(where, sizeof(where), "ata%u-%u", ch->index, unit);
    bool atapi = kind == ATA_KIND_ATAPI;
    disk_from_identify(d, id, atapi, atapi ? &atapi_ops : &ide_ops, where);
}

void ide_probe(void)
{
    for (unsigned i = 0; i < MAX_IDE_CONTROLLERS; i++) {
        struct ata_controller *c = &controllers[i];
        const struct pci_dev *dev = pci_find(PCI_CLASS_STORAGE, PCI_SUBCLASS_IDE, PCI_ANY_PROG_IF, i);
        if (!dev)
            break;
        ata_controller_init(dev, c);
        for (unsigned n = 0; n < 2; n++) {
            struct ata_channel *ch = &c->channel[n];
            ata_set_nien(ch, true);    /* polled: keep INTRQ quiet */
            uint8_t st = ata_altstatus(ch);
            if (st == 0xFF || st == 0x7F)
                continue;              /* a floating bus: nothing attached */
            ata_soft_reset(ch);
            for (unsigned unit = 0; unit < 2; unit++) {
                struct ata_signature sig = ata_read_signature(ch, unit);
                enum ata_kind kind = ata_classify(&sig);
                if (kind == ATA_KIND_ATA || kind == ATA_KIND_ATAPI)
                    add_drive(c, ch, unit, kind);
            }
        }
    }
}

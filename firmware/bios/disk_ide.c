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
#define ATAPI_RETRIES 3                 /* a fresh CD reports UNIT ATTENTION first */

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

static int ide_rw(struct disk *d, uint64_t lba, uint32_t count, void *buf, bool write)
{
    struct ide_drive *drv = d->ctx;
    while (count) {
        bool lba48 = lba + count > 0x0FFFFFFF;
        if (lba48 && !drv->lba48)
            return DISK_RET_ENOTFOUND;
        uint32_t n = count > 256 ? 256 : count;
        struct ata_cmd cmd = {
            .command = write ? (lba48 ? ATA_CMD_WRITE_SECTORS_EXT : ATA_CMD_WRITE_SECTORS)
                             : (lba48 ? ATA_CMD_READ_SECTORS_EXT : ATA_CMD_READ_SECTORS),
            .count = (uint16_t)(n & 0xFF ? n : (lba48 ? n : 0)),
            .lba = lba, .lba48 = lba48,
        };
        struct ata_result res;
        bool ok = write ? ata_cmd_pio_out(drv->ch, drv->unit, &cmd, buf, n * 512, 512, &res)
                        : ata_cmd_pio_in(drv->ch, drv->unit, &cmd, buf, n * 512, 512, &res);
        if (!ok)
            return ata_status(&res);
        lba += n;
        count -= n;
        buf = (uint8_t *)buf + n * 512;
    }
    return DISK_RET_OK;
}

static int ide_read(struct disk *d, uint64_t lba, uint32_t count, void *buf)
{
    return ide_rw(d, lba, count, buf, false);
}

static int ide_write(struct disk *d, uint64_t lba, uint32_t count, const void *buf)
{
    return ide_rw(d, lba, count, (void *)buf, true);
}

/* A SCSI command with data in, retried while the drive reports a unit
 * attention (new medium, reset) or is becoming ready. */
static bool atapi_command(struct ide_drive *drv, const uint8_t *cdb, void *buf, uint32_t bytes)
{
    for (unsigned attempt = 0; attempt < ATAPI_RETRIES; attempt++) {
        struct atapi_result res;
        if (atapi_packet(drv->ch, drv->unit, cdb, buf, bytes, 0xFFFE, &res) &&
            res.bytes == bytes)
            return true;
        struct atapi_sense sense;
        atapi_request_sense(drv->ch, drv->unit, &sense);
    }
    return false;
}

static int atapi_read(struct disk *d, uint64_t lba, uint32_t count, void *buf)
{
    uint8_t cdb[ATAPI_CDB_SIZE] = {0x28};           /* READ(10) */
    put_be32(cdb + 2, (uint32_t)lba);
    put_be16(cdb + 7, (uint16_t)count);
    return atapi_command(d->ctx, cdb, buf, count * ATAPI_SECTOR_SIZE) ? DISK_RET_OK
                                                                      : DISK_RET_ENOTFOUND;
}

static int atapi_write(struct disk *d, uint64_t lba, uint32_t count, const void *buf)
{
    (void)d; (void)lba; (void)count; (void)buf;
    return DISK_RET_EWRITEPROT;
}

static const struct disk_ops ide_ops = {"ide", ide_read, ide_write};
static const struct disk_ops atapi_ops = {"atapi", atapi_read, atapi_write};

/* READ CAPACITY(10): the last LBA + 1, or 0 without a medium. */
static uint64_t atapi_capacity(struct ide_drive *drv)
{
    uint8_t cdb[ATAPI_CDB_SIZE] = {0x25}, data[8];
    return atapi_command(drv, cdb, data, sizeof(data)) ? (uint64_t)be32(data) + 1 : 0;
}

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
    ata_id_string(id, ATA_ID_MODEL, 20, d->model);
    if (kind == ATA_KIND_ATAPI) {
        d->kind = DISK_CD;
        d->ops = &atapi_ops;
        d->block_size = ATAPI_SECTOR_SIZE;
        d->sectors = atapi_capacity(drv);
        disk_set_geometry(d, NULL);
    } else {
        d->kind = DISK_HD;
        d->ops = &ide_ops;
        d->block_size = 512;
        d->sectors = drv->lba48 ? ata_id_sectors48(id) : ata_id_sectors28(id);
        disk_set_geometry(d, id);
    }
    printf("ata%u-%u: %s, %s, %llu sectors, drive %02xh\n", ch->index, unit, d->model,
           kind == ATA_KIND_ATAPI ? "ATAPI" : "ATA", (unsigned long long)d->sectors, d->number);
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

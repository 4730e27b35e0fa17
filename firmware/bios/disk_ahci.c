/*
 * The AHCI driver of the BIOS: every AHCI HBA (class 0106h, prog-if 01h),
 * every implemented port with a device on it.
 *
 * Commands go through command slot 0 and are polled (lib/ahci.c): READ/
 * WRITE DMA EXT for disks, PACKET + READ(10) for CD/DVD drives.  The data
 * moves through a bounce buffer in the BIOS's DMA zone (memmap.c): AHCI
 * wants word-aligned buffers and a caller may hand any address.
 */
#include "bios.h"
#include "runtime.h"
#include "ahci.h"

#define MAX_HBAS 2
#define MAX_PORTS 8                    /* ports with a device, over all HBAs */
#define BOUNCE_BYTES 0x10000u          /* 64 KiB: 128 disk sectors, 32 CD sectors */
#define LINK_WAIT_US 10000
#define ATAPI_RETRIES 3

static struct ahci_hba hbas[MAX_HBAS];
static struct ahci_port *ports[MAX_PORTS];
static unsigned port_count;
static uint8_t *bounce;

static int ahci_status(struct ahci_port *p, const struct ahci_result *r)
{
    ahci_port_recover(p, NULL);
    if (r->timeout)
        return DISK_RET_ETIMEOUT;
    if (r->status & ATA_SR_ERR)
        return (r->error & ATA_ER_IDNF) ? DISK_RET_ENOTFOUND
             : (r->error & ATA_ER_UNC) ? DISK_RET_EUNCORR : DISK_RET_ECONTROLLER;
    return DISK_RET_ECONTROLLER;
}

static int ahci_rw(struct disk *d, uint64_t lba, uint32_t count, void *buf, bool write)
{
    struct ahci_port *p = d->ctx;
    while (count) {
        uint32_t n = count > BOUNCE_BYTES / 512 ? BOUNCE_BYTES / 512 : count;
        struct ata_cmd cmd = {
            .command = write ? ATA_CMD_WRITE_DMA_EXT : ATA_CMD_READ_DMA_EXT,
            .count = (uint16_t)n, .lba = lba, .lba48 = true,
        };
        struct ahci_result r;
        if (write)
            memcpy(bounce, buf, n * 512);
        if (!ahci_exec_ata(p, 0, &cmd, bounce, n * 512, write, &r))
            return ahci_status(p, &r);
        if (!write)
            memcpy(buf, bounce, n * 512);
        lba += n;
        count -= n;
        buf = (uint8_t *)buf + n * 512;
    }
    return DISK_RET_OK;
}

static int sata_read(struct disk *d, uint64_t lba, uint32_t count, void *buf)
{
    return ahci_rw(d, lba, count, buf, false);
}

static int sata_write(struct disk *d, uint64_t lba, uint32_t count, const void *buf)
{
    return ahci_rw(d, lba, count, (void *)buf, true);
}

/* A SCSI command with data in, by DMA, retried past a unit attention. */
static bool ahci_scsi(struct ahci_port *p, const uint8_t *cdb, void *buf, uint32_t bytes)
{
    for (unsigned attempt = 0; attempt < ATAPI_RETRIES; attempt++) {
        struct ahci_result r;
        if (ahci_atapi(p, cdb, bounce, bytes, true, 0, &r)) {
            memcpy(buf, bounce, bytes);
            return true;
        }
        ahci_port_recover(p, NULL);
        uint8_t sense_cdb[ATAPI_CDB_SIZE] = {0x03, 0, 0, 0, 18};     /* REQUEST SENSE */
        ahci_atapi(p, sense_cdb, bounce, 18, true, 0, &r);
    }
    return false;
}

static int ahci_cd_read(struct disk *d, uint64_t lba, uint32_t count, void *buf)
{
    while (count) {
        uint32_t n = count > BOUNCE_BYTES / ATAPI_SECTOR_SIZE ? BOUNCE_BYTES / ATAPI_SECTOR_SIZE
                                                              : count;
        uint8_t cdb[ATAPI_CDB_SIZE] = {0x28};       /* READ(10) */
        put_be32(cdb + 2, (uint32_t)lba);
        put_be16(cdb + 7, (uint16_t)n);
        if (!ahci_scsi(d->ctx, cdb, buf, n * ATAPI_SECTOR_SIZE))
            return DISK_RET_ENOTFOUND;
        lba += n;
        count -= n;
        buf = (uint8_t *)buf + n * ATAPI_SECTOR_SIZE;
    }
    return DISK_RET_OK;
}

static int ahci_cd_write(struct disk *d, uint64_t lba, uint32_t count, const void *buf)
{
    (void)d; (void)lba; (void)count; (void)buf;
    return DISK_RET_EWRITEPROT;
}

static const struct disk_ops ahci_disk_ops = {"ahci", sata_read, sata_write};
static const struct disk_ops ahci_cd_ops = {"ahci-atapi", ahci_cd_read, ahci_cd_write};

static void add_port(struct ahci_hba *hba, struct ahci_port *p)
{
    static uint16_t id[ATA_ID_WORDS];
    struct ahci_result r;
    enum ata_kind kind = ahci_port_classify(p, 1000000);
    if (kind != ATA_KIND_ATA && kind != ATA_KIND_ATAPI)
        return;
    if (!ahci_port_start(p) || !ahci_identify(p, kind == ATA_KIND_ATAPI, id, &r))
        return;
    struct disk *d = disk_add();
    if (!d)
        return;
    ports[port_count++] = p;
    d->ctx = p;
    d->bdf = hba->pci.bdf;
    d->channel = (uint8_t)p->index;
    d->sata = true;
    ata_id_string(id, ATA_ID_MODEL, 20, d->model);
    if (kind == ATA_KIND_ATAPI) {
        uint8_t cdb[ATAPI_CDB_SIZE] = {0x25}, cap[8];     /* READ CAPACITY(10) */
        d->kind = DISK_CD;
        d->ops = &ahci_cd_ops;
        d->block_size = ATAPI_SECTOR_SIZE;
        d->sectors = ahci_scsi(p, cdb, cap, sizeof(cap)) ? (uint64_t)be32(cap) + 1 : 0;
        disk_set_geometry(d, NULL);
    } else {
        d->kind = DISK_HD;
        d->ops = &ahci_disk_ops;
        d->block_size = 512;
        d->sectors = (id[ATA_ID_COMMAND_SET_2] & (1u << 10)) ? ata_id_sectors48(id)
                                                             : ata_id_sectors28(id);
        disk_set_geometry(d, id);
    }
    printf("AHCI/%u: %s, %s, %llu sectors, drive %02xh\n", p->index, d->model,
           kind == ATA_KIND_ATAPI ? "ATAPI" : "ATA", (unsigned long long)d->sectors, d->number);
}

void ahci_probe(void)
{
    for (unsigned i = 0; i < MAX_HBAS; i++) {
        struct ahci_hba *hba = &hbas[i];
        const struct pci_dev *dev = pci_find(PCI_CLASS_STORAGE, PCI_SUBCLASS_SATA, AHCI_PROGIF, i);
        if (!dev || !ahci_hba_init(dev, hba))
            break;
        if (!bounce && !(bounce = dma_alloc(BOUNCE_BYTES, 2)))
            return;
        ahci_hba_enable(hba);
        for (unsigned n = 0; n < AHCI_MAX_PORTS && port_count < MAX_PORTS; n++) {
            if (!(hba->pi & (1u << n)))
                continue;
            if (!ahci_port_setup(hba, n, LINK_WAIT_US) || !ahci_port_present(&hba->port[n]))
                continue;
            add_port(hba, &hba->port[n]);
        }
    }
}

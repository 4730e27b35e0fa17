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

/* READ/WRITE DMA EXT through the bounce buffer. */
static int ahci_rw(struct disk *d, bool write, uint64_t lba, uint32_t count, void *buf)
{
    struct ahci_port *p = d->ctx;
    struct ata_cmd cmd = {
        .command = write ? ATA_CMD_WRITE_DMA_EXT : ATA_CMD_READ_DMA_EXT,
        .count = (uint16_t)count, .lba = lba, .lba48 = true,
    };
    struct ahci_result r;
    if (write)
        memcpy(bounce, buf, count * 512);
    if (!ahci_exec_ata(p, 0, &cmd, bounce, count * 512, write, &r))
        return ahci_status(p, &r);
    if (!write)
        memcpy(buf, bounce, count * 512);
    return DISK_RET_OK;
}

/* One PACKET command with data in, by DMA (disk_cd.c retries and asks for
 * sense).  A CHECK CONDITION stops the port's command list: restart it. */
static bool ahci_scsi(struct disk *d, const uint8_t *cdb, void *buf, uint32_t bytes)
{
    struct ahci_port *p = d->ctx;
    struct ahci_result r;
    if (!ahci_atapi(p, cdb, bounce, bytes, true, 0, &r)) {
        ahci_port_recover(p, NULL);
        return false;
    }
    memcpy(buf, bounce, bytes);
    return true;
}

static const struct disk_ops ahci_disk_ops = {"ahci", BOUNCE_BYTES / 512, ahci_rw, NULL};
static const struct disk_ops ahci_cd_ops = {"ahci-atapi", BOUNCE_BYTES / ATAPI_SECTOR_SIZE,
                                            cd_rw, ahci_scsi};

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
    char where[16];
    snprintf(where, sizeof(where), "AHCI/%u", p->index);
    bool atapi = kind == ATA_KIND_ATAPI;
    disk_from_identify(d, id, atapi, atapi ? &ahci_cd_ops : &ahci_disk_ops, where);
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

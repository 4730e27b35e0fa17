/*
 * INT 13h: disk services, over the drives the controller drivers found.
 *
 * Drive numbers: hard disks are 80h, 81h, ... in the order the drivers
 * registered them (IDE primary master first, then AHCI ports); CD/DVD
 * drives are E0h, E1h, ... as SeaBIOS numbers them (El Torito 1.0 leaves
 * the number of a no-emulation CD to the BIOS).
 *
 * Two families of calls reach the same drivers:
 *   the IBM PC/AT CHS calls (AH=02h read, 03h write, 04h verify, 08h
 *   parameters, 15h type), which address a sector by cylinder/head/sector
 *   of a geometry the BIOS invents (disk_set_geometry);
 *   the Phoenix "Enhanced Disk Drive" 3.0 calls (41h check, 42h read, 43h
 *   write, 44h verify, 47h seek, 48h parameters), which take a 64-bit LBA
 *   in a disk address packet.
 * Every call ends with the status in AH, CF set when it is nonzero, and the
 * status kept in the BDA (40:74h) for AH=01h.
 *
 * Statuses for bad requests follow SeaBIOS, so a program sees the same on
 * both: 01h for a drive that does not exist, a bad CHS address, an LBA past
 * the end or a bad packet; 04h (sector not found) when a transfer runs past
 * the end of the disk.
 */
#include "bios.h"
#include "runtime.h"
#include "ata.h"

struct disk disks[MAX_DISKS];
unsigned disk_count;

struct disk *disk_add(void)
{
    if (disk_count == MAX_DISKS)
        return NULL;
    struct disk *d = &disks[disk_count++];
    memset(d, 0, sizeof(*d));
    return d;
}

/* Number the drives: hard disks from 80h, CDs from E0h, in table order. */
static void disk_number(struct disk *d)
{
    uint8_t n = d->kind == DISK_CD ? 0xE0 : 0x80;
    for (unsigned i = 0; i < disk_count; i++)
        if (&disks[i] != d && disks[i].kind == d->kind)
            n++;
    d->number = n;
}

struct disk *disk_by_number(uint8_t number)
{
    for (unsigned i = 0; i < disk_count; i++)
        if (disks[i].number == number)
            return &disks[i];
    return NULL;
}

/* A geometry for CHS calls.  A disk whose IDENTIFY geometry fits the
 * classic 1024-cylinder limit keeps it; a larger one gets the "LBA-assisted"
 * translation of the BIOS Enhanced Disk Drive spec: 63 sectors per track and
 * the fewest heads (16, 32, 64, 128, 255) that bring the cylinders to 1024. */
void disk_set_geometry(struct disk *d, const uint16_t *id)
{
    if (id && id[1] && id[1] <= 1024 && id[3] && id[3] <= 16 && id[6] && id[6] <= 63) {
        d->cylinders = id[1];
        d->heads = id[3];
        d->spt = id[6];
    } else {
        static const uint16_t heads[] = {16, 32, 64, 128, 255};
        d->spt = 63;
        d->heads = 255;
        for (unsigned i = 0; i < sizeof(heads) / sizeof(heads[0]); i++)
            if (d->sectors <= 1024ull * heads[i] * 63) {
                d->heads = heads[i];
                break;
            }
        uint64_t c = d->sectors;
        udiv64(&c, (uint32_t)d->heads * 63);
        d->cylinders = c > 1024 ? 1024 : (c ? (uint16_t)c : 1);
    }
    disk_number(d);
}

int disk_io(struct disk *d, bool write, uint64_t lba, uint32_t count, void *buf)
{
    while (count) {
        uint32_t n = count > d->ops->max_blocks ? d->ops->max_blocks : count;
        int status = d->ops->rw(d, write, lba, n, buf);
        if (status)
            return status;
        lba += n;
        count -= n;
        buf = (uint8_t *)buf + n * d->block_size;
    }
    return DISK_RET_OK;
}

/* An ATA disk or ATAPI drive on any transport, from its IDENTIFY (PACKET)
 * DEVICE data: model, size (READ CAPACITY for a CD), geometry, number;
 * then one console line naming it by `where` ("ata0-1", "AHCI/2"). */
void disk_from_identify(struct disk *d, const uint16_t *id, bool atapi, const struct disk_ops *ops,
                        const char *where)
{
    ata_id_string(id, ATA_ID_MODEL, 20, d->model);
    d->ops = ops;
    if (atapi) {
        d->kind = DISK_CD;
        d->block_size = ATAPI_SECTOR_SIZE;
        d->sectors = cd_capacity(d);
        disk_set_geometry(d, NULL);
    } else {
        d->kind = DISK_HD;
        d->block_size = ATA_SECTOR_SIZE;
        d->sectors = (id[ATA_ID_COMMAND_SET_2] & (1u << 10)) ? ata_id_sectors48(id)
                                                             : ata_id_sectors28(id);
        disk_set_geometry(d, id);
    }
    printf("%s: %s, %s, %llu sectors, drive %02xh\n", where, d->model, atapi ? "ATAPI" : "ATA",
           (unsigned long long)d->sectors, d->number);
}

static void disk_ret(struct bregs *r, int status)
{
    r->ah = (uint8_t)status;
    set_cf(r, status != 0);
    if (r->dl & 0x80)
        BDA[BDA_DISK_STATUS] = (uint8_t)status;
}

/* Transfer, clipping at the end of the disk: *count becomes what moved. */
static int transfer(struct disk *d, bool write, uint64_t lba, uint32_t *count, void *buf)
{
    if (lba >= d->sectors) {
        *count = 0;
        return DISK_RET_ENOTFOUND;
    }
    uint32_t n = *count;
    bool clipped = lba + n > d->sectors;
    if (clipped)
        n = (uint32_t)(d->sectors - lba);
    int status = disk_io(d, write, lba, n, buf);
    if (status) {
        *count = 0;
        return status;
    }
    *count = n;
    return clipped ? DISK_RET_ENOTFOUND : DISK_RET_OK;
}

/* ---- the CHS calls ------------------------------------------------------ */

/* AH=02h/03h/04h: AL sectors from cylinder CH + CL bits 7:6, head DH,
 * sector CL bits 5:0 (from 1), to/from ES:BX.  AL = sectors moved. */
static void chs_access(struct bregs *r, struct disk *d, bool write, bool verify)
{
    uint32_t count = r->al;
    unsigned cylinder = r->ch | (r->cl & 0xC0) << 2, sector = r->cl & 0x3F, head = r->dh;
    if (d->kind != DISK_HD || count == 0 || count > 128 || sector == 0 ||
        cylinder >= d->cylinders || head >= d->heads || sector > d->spt) {
        r->al = 0;
        disk_ret(r, DISK_RET_EPARAM);
        return;
    }
    uint64_t lba = ((uint64_t)cylinder * d->heads + head) * d->spt + sector - 1;
    int status = DISK_RET_OK;
    if (!verify)
        status = transfer(d, write, lba, &count, rm_ptr(r->es, r->bx));
    r->al = (uint8_t)count;
    disk_ret(r, status);
}

/* AH=08h: CH/CL last cylinder (bits 9:8 in CL 7:6) and sectors per track,
 * DH last head, DL number of hard disks.  IBM's BIOS keeps the last
 * cylinder for diagnostics and does not report it; so does SeaBIOS. */
static void get_parameters(struct bregs *r, struct disk *d)
{
    if (d->kind != DISK_HD) {
        disk_ret(r, DISK_RET_EPARAM);
        return;
    }
    unsigned last = d->cylinders >= 2 ? d->cylinders - 2 : 0;
    r->al = 0;
    r->ch = (uint8_t)last;
    r->cl = (uint8_t)((last >> 2 & 0xC0) | (d->spt & 0x3F));
    r->dh = (uint8_t)(d->heads - 1);
    disk_ret(r, DISK_RET_OK);
    r->dl = BDA[BDA_HD_COUNT];
}

/* AH=15h: AH=03h "fixed disk", CX:DX the sectors CHS calls reach. */
static void get_type(struct bregs *r, struct disk *d)
{
    disk_ret(r, DISK_RET_OK);
    if (d->kind != DISK_HD) {
        r->ah = 0x02;                  /* removable, with change-line support */
        return;
    }
    uint32_t n = (uint32_t)(d->cylinders - 1) * d->heads * d->spt;
    r->cx = (uint16_t)(n >> 16);
    r->dx = (uint16_t)n;
    r->ah = 0x03;
}

/* ---- the EDD calls ------------------------------------------------------- */

/* The disk address packet (EDD 3.0, 3.1.1). */
struct dap {
    uint8_t size;                      /* 10h, or 18h with the 64-bit flat buffer */
    uint8_t reserved;
    uint16_t count;
    uint16_t offset, segment;
    uint64_t lba;
    uint64_t flat;                     /* used when segment:offset is FFFF:FFFF */
} __attribute__((packed));

static void edd_access(struct bregs *r, struct disk *d, bool write, bool move)
{
    struct dap *p = rm_ptr(r->ds, r->si);
    /* Phoenix EDD 3.0 allows a BIOS to refuse more than 7Fh blocks a
     * call; SeaBIOS takes any count, and boot loaders written against it
     * may ask for more, so the stub does too. */
    if (p->size < 0x10 || p->lba >= d->sectors) {
        disk_ret(r, DISK_RET_EPARAM);
        return;
    }
    if (!move || p->count == 0) {      /* verify and seek only check the address */
        disk_ret(r, DISK_RET_OK);
        return;
    }
    if (write && d->kind == DISK_CD) {
        p->count = 0;
        disk_ret(r, DISK_RET_EWRITEPROT);
        return;
    }
    void *buf = rm_ptr(p->segment, p->offset);
    if (p->size >= 0x18 && p->segment == 0xFFFF && p->offset == 0xFFFF) {
        if (p->flat >> 32) {
            disk_ret(r, DISK_RET_EPARAM);
            return;
        }
        buf = (void *)(uintptr_t)p->flat;
    }
    uint32_t count = p->count;
    int status = transfer(d, write, p->lba, &count, buf);
    p->count = (uint16_t)count;
    disk_ret(r, status);
}

/* The EDD 3.0 drive parameter table AH=48h fills (EDD 3.0, 3.1.6). */
struct edd_params {
    uint16_t size;
    uint16_t flags;
    uint32_t cylinders, heads, spt;
    uint64_t sectors;
    uint16_t block_size;
    uint32_t dpte;                     /* 1Ah: seg:off of the DPTE, FFFF:FFFF = none */
    uint16_t key;                      /* 1Eh: BEDDh = the device path follows */
    uint8_t path_length;               /* 24h: from 1Eh to the checksum */
    uint8_t reserved1[3];
    char host_bus[4];                  /* "PCI " */
    char interface[8];                 /* "ATA     ", "ATAPI   ", "SATA    " */
    uint8_t interface_path[8];         /* PCI: bus, slot, function, channel */
    uint8_t device_path[8];            /* ATA/ATAPI: unit; SATA: port */
    uint8_t reserved2;
    uint8_t checksum;                  /* 1Eh..41h sum to zero */
} __attribute__((packed));

_Static_assert(sizeof(struct edd_params) == 0x42, "EDD 3.0 table size");

#define EDD_FLAG_CHS_VALID 0x0002
#define EDD_FLAG_REMOVABLE 0x0004
#define EDD_FLAG_CHANGE_LINE 0x0010
#define EDD_FLAG_LOCKABLE 0x0020
#define EDD_FLAG_NO_MEDIA_CHS 0x0040

static void get_edd_parameters(struct bregs *r, struct disk *d)
{
    struct edd_params *e = rm_ptr(r->ds, r->si);
    uint16_t size = e->size;
    if (size < 0x1A) {
        disk_ret(r, DISK_RET_EPARAM);
        return;
    }
    struct edd_params t;
    memset(&t, 0, sizeof(t));
    t.size = 0x1A;
    t.sectors = d->sectors;
    t.block_size = d->block_size;
    if (d->kind == DISK_CD) {
        t.flags = EDD_FLAG_REMOVABLE | EDD_FLAG_CHANGE_LINE | EDD_FLAG_LOCKABLE |
                  EDD_FLAG_NO_MEDIA_CHS;
        t.cylinders = t.heads = t.spt = 0xFFFFFFFF;
    } else {
        t.flags = EDD_FLAG_CHS_VALID;
        t.cylinders = d->cylinders;
        t.heads = d->heads;
        t.spt = d->spt;
    }
    if (size >= 0x1E) {
        t.size = 0x1E;
        t.dpte = 0xFFFFFFFF;
    }
    if (size >= 0x42) {
        t.size = 0x42;
        t.key = 0xBEDD;
        t.path_length = 0x24;
        memcpy(t.host_bus, "PCI ", 4);
        memcpy(t.interface, d->sata ? "SATA    " : d->kind == DISK_CD ? "ATAPI   " : "ATA     ", 8);
        t.interface_path[0] = (uint8_t)(d->bdf >> 8);
        t.interface_path[1] = (uint8_t)((d->bdf >> 3) & 0x1F);
        t.interface_path[2] = (uint8_t)(d->bdf & 7);
        t.interface_path[3] = d->sata ? 0 : d->channel;
        t.device_path[0] = d->sata ? d->channel : d->unit;
        uint8_t sum = 0;
        const uint8_t *p = (const uint8_t *)&t;
        for (unsigned i = 0x1E; i < 0x41; i++)
            sum += p[i];
        t.checksum = (uint8_t)-sum;
    }
    memcpy(e, &t, t.size);
    disk_ret(r, DISK_RET_OK);
}

void handle_13(struct bregs *r)
{
    if (r->ah == 0x4B) {               /* El Torito: emulation status */
        eltorito_status(r);
        return;
    }
    struct disk *d = disk_by_number(r->dl);
    if (!d) {                          /* no such drive: 01h, as SeaBIOS */
        disk_ret(r, DISK_RET_EPARAM);
        return;
    }
    switch (r->ah) {
    case 0x00: case 0x0C: case 0x0D: case 0x10: case 0x11:
        disk_ret(r, DISK_RET_OK);      /* reset, seek, alternate reset, ready, recalibrate */
        return;
    case 0x01: {                       /* status of the last operation */
        uint8_t last = BDA[BDA_DISK_STATUS];
        r->ah = last;
        set_cf(r, last != 0);
        return;
    }
    case 0x02: chs_access(r, d, false, false); return;
    case 0x03: chs_access(r, d, true, false); return;
    case 0x04: chs_access(r, d, false, true); return;
    case 0x08: get_parameters(r, d); return;
    case 0x15: get_type(r, d); return;
    case 0x41:                         /* EDD installation check: BX=55AAh in */
        if (r->bx != 0x55AA)
            break;
        r->bx = 0xAA55;
        r->cx = 0x0005;                /* bit 0: 42h-44h, 47h, 48h; bit 2: EDD (48h) */
        disk_ret(r, DISK_RET_OK);
        r->ah = 0x30;                  /* EDD 3.0 */
        return;
    case 0x42: edd_access(r, d, false, true); return;
    case 0x43: edd_access(r, d, true, true); return;
    case 0x44: case 0x47: edd_access(r, d, false, false); return;
    case 0x48: get_edd_parameters(r, d); return;
    }
    disk_ret(r, DISK_RET_EPARAM);
}

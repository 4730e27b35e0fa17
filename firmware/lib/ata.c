/*
 * The IDE/ATA driver described in ata.h: controller discovery, the taskfile
 * protocols (non-data, PIO in, PIO out, DMA), bus-master PRD tables, the
 * channel interrupt, and ATAPI PACKET commands.
 */
#include "runtime.h"

#include "ata.h"

/* Generous bounds: emulators answer in microseconds, real disks spin up in
 * seconds; the ATA standard allows 31 s after a reset, which no test waits. */
#define ATA_TIMEOUT_US        5000000u
#define ATA_RESET_TIMEOUT_US  5000000u
#define ATA_SRST_PULSE_US     10        /* spec: at least 5 us */
#define ATA_SRST_SETTLE_MS    2         /* spec: wait 2 ms before polling BSY */
#define ATA_SIGNATURE_WAIT_US 100000    /* how long a reset signature may lag BSY */
#define ATAPI_MAX_CHUNKS      4096      /* bounds the packet data loop */

/* Intel PIIX-family IDE functions: their legacy ports decode only while
 * IDETIM bit 15 ("IDE decode enable") is set for the channel (82371SB
 * datasheet, IDETIM register).  A BIOS sets it; we do too, since nothing
 * may have run before us. */
#define PIIX_IDETIM_PRI   0x40
#define PIIX_IDETIM_SEC   0x42
#define PIIX_IDETIM_IDE   0x8000
static const uint16_t piix_ide_ids[] = {
    0x1230,   /* PIIX */
    0x7010,   /* PIIX3 */
    0x7111,   /* PIIX4 */
};

/* ---- controller ---------------------------------------------------------- */

static bool is_piix(const struct pci_dev *d)
{
    if (d->vendor != 0x8086)
        return false;
    for (unsigned i = 0; i < sizeof(piix_ide_ids) / sizeof(piix_ide_ids[0]); i++)
        if (d->device == piix_ide_ids[i])
            return true;
    return false;
}

/* An I/O BAR's base; programs `fallback` into a BAR nobody assigned. */
static uint32_t io_bar(pci_bdf_t bdf, unsigned index, uint32_t fallback, bool *assigned)
{
    struct pci_bar bar;
    if (!pci_bar_decode(bdf, index, &bar) || !bar.io || bar.size == 0)
        return 0;
    if (bar.base == 0 && fallback) {
        pci_write32(bdf, PCI_BAR0 + 4 * index, fallback | 1);
        if (assigned)
            *assigned = true;
        return fallback;
    }
    return (uint32_t)bar.base;
}

void ata_controller_init(const struct pci_dev *dev, struct ata_controller *c)
{
    memset(c, 0, sizeof(*c));
    c->pci = *dev;
    pci_bdf_t bdf = c->pci.bdf;
    uint8_t progif = c->pci.prog_if;

    if (progif & IDE_PROGIF_BUSMASTER)
        c->bm_base = io_bar(bdf, 4, ATA_BM_DEFAULT_BASE, &c->bm_assigned);
    pci_enable(bdf, PCI_COMMAND_IO | PCI_COMMAND_MASTER);
    if (is_piix(&c->pci)) {
        pci_write16(bdf, PIIX_IDETIM_PRI, pci_read16(bdf, PIIX_IDETIM_PRI) | PIIX_IDETIM_IDE);
        pci_write16(bdf, PIIX_IDETIM_SEC, pci_read16(bdf, PIIX_IDETIM_SEC) | PIIX_IDETIM_IDE);
    }

    for (unsigned i = 0; i < 2; i++) {
        struct ata_channel *ch = &c->channel[i];
        ch->index = (uint8_t)i;
        ch->native = progif & (i ? IDE_PROGIF_SEC_NATIVE : IDE_PROGIF_PRI_NATIVE);
        if (ch->native) {
            /* Native mode: BAR0/1 (primary) or BAR2/3 (secondary).  The
             * control BAR spans 4 ports; the alternate status is the 3rd.
             * The interrupt is the function's PCI INTx, as routed by the BIOS. */
            ch->cmd = (uint16_t)io_bar(bdf, 2 * i, 0, NULL);
            uint32_t ctl = io_bar(bdf, 2 * i + 1, 0, NULL);
            ch->ctl = ctl ? (uint16_t)(ctl + 2) : 0;
            ch->irq = pci_read8(bdf, PCI_INTERRUPT_LINE);
        } else {
            ch->cmd = i ? ATA_SEC_CMD : ATA_PRI_CMD;
            ch->ctl = i ? ATA_SEC_CTL : ATA_PRI_CTL;
            ch->irq = i ? ATA_SEC_IRQ : ATA_PRI_IRQ;
        }
        ch->bm = c->bm_base ? (uint16_t)(c->bm_base + 8 * i) : 0;
    }
}

bool ata_controller_find(unsigned index, struct ata_controller *c)
{
    struct pci_dev dev;
    if (!pci_find_class(PCI_CLASS_STORAGE, PCI_SUBCLASS_IDE, PCI_ANY_PROG_IF, index, &dev))
        return false;
    ata_controller_init(&dev, c);
    return true;
}

/* ---- registers ----------------------------------------------------------- */

uint8_t ata_read(const struct ata_channel *ch, unsigned reg)
{
    return inb(ch->cmd + reg);
}

void ata_write(const struct ata_channel *ch, unsigned reg, uint8_t v)
{
    outb(ch->cmd + reg, v);
}

uint8_t ata_altstatus(const struct ata_channel *ch)
{
    return inb(ch->ctl + ATA_REG_ALTSTATUS);
}

void ata_set_nien(struct ata_channel *ch, bool nien)
{
    ch->devctl = nien ? ATA_DC_NIEN : 0;
    outb(ch->ctl + ATA_REG_DEVCTL, ch->devctl);
}

void ata_delay400(const struct ata_channel *ch)
{
    for (int i = 0; i < 4; i++)
        (void)ata_altstatus(ch);
}

bool ata_wait_not_busy(const struct ata_channel *ch, uint32_t timeout_us, uint8_t *status)
{
    uint8_t st = 0;
    bool ok = WAIT_FOR(!((st = ata_altstatus(ch)) & ATA_SR_BSY), timeout_us);
    if (status)
        *status = st;
    return ok;
}

bool ata_select(const struct ata_channel *ch, unsigned unit)
{
    /* The device register may only be written while the channel is idle
     * (BSY and DRQ clear), or the write goes to a device mid-command. */
    if (!WAIT_FOR(!(ata_altstatus(ch) & (ATA_SR_BSY | ATA_SR_DRQ)), ATA_TIMEOUT_US))
        return false;
    ata_write(ch, ATA_REG_DEVICE, ATA_DEV_OBS | ATA_DEV_LBA | ATA_DEV_UNIT(unit));
    ata_delay400(ch);
    return ata_wait_not_busy(ch, ATA_TIMEOUT_US, NULL);
}

bool ata_soft_reset(struct ata_channel *ch)
{
    /* SRST resets both devices on the channel; each then runs its
     * diagnostics and leaves its signature in the taskfile. */
    outb(ch->ctl + ATA_REG_DEVCTL, ch->devctl | ATA_DC_SRST);
    udelay(ATA_SRST_PULSE_US);
    outb(ch->ctl + ATA_REG_DEVCTL, ch->devctl);
    mdelay(ATA_SRST_SETTLE_MS);
    if (!ata_wait_not_busy(ch, ATA_RESET_TIMEOUT_US, NULL))
        return false;
    /* Device 0 posts its signature (sector count and LBA low both 01h, for
     * disks and packet devices alike) when its diagnostics end.  Some
     * emulators finish the reset asynchronously, a moment after BSY is
     * already clear, so give the signature a bounded moment to appear; an
     * empty channel simply waits the whole moment. */
    WAIT_FOR(ata_read(ch, ATA_REG_COUNT) == 0x01 && ata_read(ch, ATA_REG_LBA_LOW) == 0x01,
             ATA_SIGNATURE_WAIT_US);
    return true;
}

struct ata_signature ata_read_signature(const struct ata_channel *ch, unsigned unit)
{
    struct ata_signature s;
    ata_select(ch, unit);
    s.count = ata_read(ch, ATA_REG_COUNT);
    s.lba_low = ata_read(ch, ATA_REG_LBA_LOW);
    s.lba_mid = ata_read(ch, ATA_REG_LBA_MID);
    s.lba_high = ata_read(ch, ATA_REG_LBA_HIGH);
    s.error = ata_read(ch, ATA_REG_ERROR);
    s.status = ata_altstatus(ch);
    return s;
}

enum ata_kind ata_classify(const struct ata_signature *s)
{
    /* A channel with nothing on it floats: status reads FFh (7Fh with a
     * pull-down on bit 7). */
    if (s->status == 0xFF || s->status == 0x7F)
        return ATA_KIND_NONE;
    if (s->lba_mid == 0x00 && s->lba_high == 0x00 && s->count == 0x01 && s->lba_low == 0x01)
        return ATA_KIND_ATA;
    if (s->lba_mid == 0x14 && s->lba_high == 0xEB)
        return ATA_KIND_ATAPI;
    /* Serial ATA bridges: 3Ch/C3h = SATA disk, 69h/96h = SATA packet device. */
    if (s->lba_mid == 0x3C && s->lba_high == 0xC3)
        return ATA_KIND_ATA;
    if (s->lba_mid == 0x69 && s->lba_high == 0x96)
        return ATA_KIND_ATAPI;
    if (s->status == 0x00 && s->lba_mid == 0x00 && s->lba_high == 0x00)
        return ATA_KIND_NONE;
    return ATA_KIND_UNKNOWN;
}

const char *ata_kind_name(enum ata_kind kind)
{
    switch (kind) {
    case ATA_KIND_NONE: return "none";
    case ATA_KIND_ATA: return "ata";
    case ATA_KIND_ATAPI: return "atapi";
    default: return "unknown";
    }
}

/* ---- commands ------------------------------------------------------------ */

bool ata_ok(const struct ata_result *r)
{
    return !r->timeout && !(r->status & (ATA_SR_BSY | ATA_SR_ERR | ATA_SR_DF | ATA_SR_DRQ));
}

const char *ata_result_str(const struct ata_result *r)
{
    static char text[64];
    snprintf(text, sizeof(text), "status %02x error %02x%s", r->status, r->error,
             r->timeout ? " timeout" : "");
    return text;
}

bool ata_issue(const struct ata_channel *ch, unsigned unit, const struct ata_cmd *c)
{
    if (!ata_select(ch, unit))
        return false;
    uint8_t device = ATA_DEV_OBS | ATA_DEV_LBA | ATA_DEV_UNIT(unit);
    if (c->lba48) {
        /* Each register is a two-deep FIFO: "previous" (high) byte first. */
        ata_write(ch, ATA_REG_FEATURES, 0);
        ata_write(ch, ATA_REG_COUNT, (uint8_t)(c->count >> 8));
        ata_write(ch, ATA_REG_LBA_LOW, (uint8_t)(c->lba >> 24));
        ata_write(ch, ATA_REG_LBA_MID, (uint8_t)(c->lba >> 32));
        ata_write(ch, ATA_REG_LBA_HIGH, (uint8_t)(c->lba >> 40));
    } else {
        device |= (uint8_t)((c->lba >> 24) & 0x0F);
    }
    ata_write(ch, ATA_REG_FEATURES, c->features);
    ata_write(ch, ATA_REG_COUNT, (uint8_t)c->count);
    ata_write(ch, ATA_REG_LBA_LOW, (uint8_t)c->lba);
    ata_write(ch, ATA_REG_LBA_MID, (uint8_t)(c->lba >> 8));
    ata_write(ch, ATA_REG_LBA_HIGH, (uint8_t)(c->lba >> 16));
    ata_write(ch, ATA_REG_DEVICE, device);
    ata_write(ch, ATA_REG_COMMAND, c->command);
    return true;
}

/* The end of any PIO command: wait for BSY to clear, then read the status
 * register (not the alternate one), which acknowledges the interrupt. */
static void finish(const struct ata_channel *ch, struct ata_result *res)
{
    ata_delay400(ch);
    if (!ata_wait_not_busy(ch, ATA_TIMEOUT_US, NULL))
        res->timeout = true;
    res->status = ata_read(ch, ATA_REG_STATUS);
    res->error = ata_read(ch, ATA_REG_ERROR);
}

bool ata_cmd_nodata(const struct ata_channel *ch, unsigned unit, const struct ata_cmd *cmd,
                    struct ata_result *res)
{
    memset(res, 0, sizeof(*res));
    if (!ata_issue(ch, unit, cmd)) {
        res->timeout = true;
        return false;
    }
    finish(ch, res);
    return ata_ok(res);
}

bool ata_cmd_pio_in(const struct ata_channel *ch, unsigned unit, const struct ata_cmd *cmd,
                    void *buf, uint32_t bytes, uint32_t block_bytes, struct ata_result *res)
{
    memset(res, 0, sizeof(*res));
    if (!ata_issue(ch, unit, cmd)) {
        res->timeout = true;
        return false;
    }
    uint8_t *p = buf;
    while (bytes) {
        /* The device works (BSY), then either fails (ERR) or raises DRQ and
         * INTRQ with a block ready.  Reading the status register clears
         * INTRQ; then the block is read through the 16-bit data port. */
        ata_delay400(ch);
        if (!ata_wait_not_busy(ch, ATA_TIMEOUT_US, NULL)) {
            res->timeout = true;
            break;
        }
        uint8_t st = ata_read(ch, ATA_REG_STATUS);
        if ((st & (ATA_SR_ERR | ATA_SR_DF)) || !(st & ATA_SR_DRQ))
            break;
        uint32_t n = bytes < block_bytes ? bytes : block_bytes;
        insw(ch->cmd + ATA_REG_DATA, p, n / 2);
        p += n;
        bytes -= n;
        res->blocks++;
    }
    /* After the last block the device clears DRQ without a new interrupt. */
    finish(ch, res);
    return ata_ok(res) && bytes == 0;
}

bool ata_cmd_pio_out(const struct ata_channel *ch, unsigned unit, const struct ata_cmd *cmd,
                     const void *buf, uint32_t bytes, uint32_t block_bytes,
                     struct ata_result *res)
{
    memset(res, 0, sizeof(*res));
    if (!ata_issue(ch, unit, cmd)) {
        res->timeout = true;
        return false;
    }
    const uint8_t *p = buf;
    while (bytes) {
        /* The first block is asked for with DRQ alone; every later one
         * comes with an interrupt for the block before, which the status
         * read acknowledges. */
        ata_delay400(ch);
        if (!ata_wait_not_busy(ch, ATA_TIMEOUT_US, NULL)) {
            res->timeout = true;
            break;
        }
        uint8_t st = ata_read(ch, ATA_REG_STATUS);
        if ((st & (ATA_SR_ERR | ATA_SR_DF)) || !(st & ATA_SR_DRQ))
            break;
        uint32_t n = bytes < block_bytes ? bytes : block_bytes;
        outsw(ch->cmd + ATA_REG_DATA, p, n / 2);
        p += n;
        bytes -= n;
        res->blocks++;
    }
    /* The interrupt after the last block says the data is written (to the
     * device's cache, at least). */
    finish(ch, res);
    return ata_ok(res) && bytes == 0;
}

bool ata_identify(const struct ata_channel *ch, unsigned unit, bool packet,
                  uint16_t id[ATA_ID_WORDS], struct ata_result *res)
{
    struct ata_cmd cmd = {.command = packet ? ATA_CMD_IDENTIFY_PACKET : ATA_CMD_IDENTIFY};
    return ata_cmd_pio_in(ch, unit, &cmd, id, ATA_ID_WORDS * 2, ATA_ID_WORDS * 2, res);
}

void ata_id_string(const uint16_t *id, unsigned first_word, unsigned words, char *out)
{
    unsigned n = 0;
    for (unsigned i = 0; i < words; i++) {
        out[n++] = (char)(id[first_word + i] >> 8);
        out[n++] = (char)(id[first_word + i] & 0xFF);
    }
    while (n && (out[n - 1] == ' ' || out[n - 1] == '\0'))
        n--;
    out[n] = '\0';
}

uint32_t ata_id_sectors28(const uint16_t *id)
{
    return (uint32_t)id[ATA_ID_LBA28] | (uint32_t)id[ATA_ID_LBA28 + 1] << 16;
}

uint64_t ata_id_sectors48(const uint16_t *id)
{
    uint64_t n = 0;
    for (int i = 3; i >= 0; i--)
        n = n << 16 | id[ATA_ID_LBA48 + i];
    return n;
}

int ata_id_checksum(const uint16_t *id)
{
    if ((id[ATA_ID_INTEGRITY] & 0xFF) != 0xA5)
        return 0;
    uint8_t sum = 0;
    for (unsigned i = 0; i < ATA_ID_WORDS; i++)
        sum = (uint8_t)(sum + (id[i] & 0xFF) + (id[i] >> 8));
    return sum == 0 ? 1 : -1;
}

/* ---- bus-master DMA ------------------------------------------------------ */

bool ata_prd_add(struct ata_prd *table, unsigned max, unsigned *used, void *buf,
                 uint32_t bytes, bool last)
{
    uint32_t addr = dma_phys(buf);
    if ((addr | bytes) & 1)
        return false;
    while (bytes) {
        if (*used >= max)
            return false;
        uint32_t room = ATA_PRD_MAX_BYTES - (addr & 0xFFFF);   /* to the next 64 KiB line */
        uint32_t n = bytes < room ? bytes : room;
        table[*used].addr = addr;
        table[*used].bytes = (uint16_t)n;                      /* 65536 wraps to 0 = 64 KiB */
        table[*used].flags = 0;
        (*used)++;
        addr += n;
        bytes -= n;
    }
    if (last && *used)
        table[*used - 1].flags |= ATA_PRD_EOT;
    return true;
}

struct ata_prd *ata_prd_alloc(unsigned entries)
{
    /* Aligned to its own size rounded up to a power of two, a table of up
     * to 64 KiB cannot straddle a 64 KiB line. */
    uint32_t size = entries * sizeof(struct ata_prd), align = 8;
    while (align < size)
        align <<= 1;
    return align > ATA_PRD_MAX_BYTES ? NULL : dma_alloc(size, align);
}

/* Load the engine: stopped, PRD table address, INTR and ERROR cleared
 * (write-one-to-clear; the drive-capable bits are read/write and are
 * written back unchanged), direction set. */
static void bm_prepare(const struct ata_channel *ch, const struct ata_prd *prdt, bool to_memory)
{
    outb(ch->bm + ATA_BM_COMMAND, 0);
    outl(ch->bm + ATA_BM_PRDT, dma_phys(prdt));
    outb(ch->bm + ATA_BM_STATUS,
         inb(ch->bm + ATA_BM_STATUS) | ATA_BM_ST_INTR | ATA_BM_ST_ERROR);
    outb(ch->bm + ATA_BM_COMMAND, to_memory ? ATA_BM_CMD_TO_MEMORY : 0);
}

static void bm_go(const struct ata_channel *ch)
{
    outb(ch->bm + ATA_BM_COMMAND, inb(ch->bm + ATA_BM_COMMAND) | ATA_BM_CMD_START);
}

bool ata_dma_start(const struct ata_channel *ch, unsigned unit, const struct ata_cmd *cmd,
                   const struct ata_prd *prdt, bool to_memory)
{
    if (!ch->bm)
        return false;
    bm_prepare(ch, prdt, to_memory);
    if (!ata_issue(ch, unit, cmd))
        return false;
    bm_go(ch);
    return true;
}

bool ata_dma_poll(const struct ata_channel *ch, uint32_t timeout_us)
{
    return WAIT_FOR(({
                        uint8_t bs = inb(ch->bm + ATA_BM_STATUS);
                        (bs & ATA_BM_ST_INTR) ||
                            (!(bs & ATA_BM_ST_ACTIVE) && !(ata_altstatus(ch) & ATA_SR_BSY));
                    }),
                    timeout_us);
}

void ata_dma_finish(const struct ata_channel *ch, struct ata_result *res)
{
    uint8_t dir = inb(ch->bm + ATA_BM_COMMAND) & ATA_BM_CMD_TO_MEMORY;
    res->bm_status = inb(ch->bm + ATA_BM_STATUS);
    outb(ch->bm + ATA_BM_COMMAND, dir);                  /* stop the engine */
    if (!ata_wait_not_busy(ch, ATA_TIMEOUT_US, NULL))
        res->timeout = true;
    res->status = ata_read(ch, ATA_REG_STATUS);          /* acknowledges INTRQ */
    res->error = ata_read(ch, ATA_REG_ERROR);
    outb(ch->bm + ATA_BM_STATUS, res->bm_status | ATA_BM_ST_INTR | ATA_BM_ST_ERROR);
}

bool ata_cmd_dma(const struct ata_channel *ch, unsigned unit, const struct ata_cmd *cmd,
                 const struct ata_prd *prdt, bool to_memory, struct ata_result *res)
{
    memset(res, 0, sizeof(*res));
    if (!ata_dma_start(ch, unit, cmd, prdt, to_memory)) {
        res->timeout = true;
        return false;
    }
    bool done = ata_dma_poll(ch, ATA_TIMEOUT_US);
    ata_dma_finish(ch, res);
    if (!done)
        res->timeout = true;
    return ata_ok(res) && !(res->bm_status & (ATA_BM_ST_ERROR | ATA_BM_ST_ACTIVE));
}

/* ---- interrupts ---------------------------------------------------------- */

static struct ata_channel *irq_owner[16];

static void ata_irq_handler(unsigned irq)
{
    struct ata_channel *ch = irq_owner[irq];
    if (!ch)
        return;
    /* With a bus master, its INTR bit tells whether our device interrupted
     * (the IRQ may be shared, or a request latched long ago while masked). */
    uint8_t bs = ch->bm ? inb(ch->bm + ATA_BM_STATUS) : ATA_BM_ST_INTR;
    if (!(bs & ATA_BM_ST_INTR)) {
        ch->irq_foreign++;
        return;
    }
    ch->irq_bm_status = bs;
    ch->irq_status = ata_read(ch, ATA_REG_STATUS);   /* deasserts INTRQ */
    ch->irq_count++;
}

void ata_irq_enable(struct ata_channel *ch)
{
    /* Start clean: no INTR left from earlier polled commands, INTRQ
     * deasserted.  An edge the PIC latched while the IRQ was masked is
     * delivered as soon as it is unmasked: let it come now (it is foreign:
     * INTR is clear) rather than in the middle of the first command. */
    if (ch->bm)
        outb(ch->bm + ATA_BM_STATUS, inb(ch->bm + ATA_BM_STATUS) | ATA_BM_ST_INTR);
    (void)ata_read(ch, ATA_REG_STATUS);
    irq_owner[ch->irq] = ch;
    irq_register(ch->irq, ata_irq_handler);
    pic_unmask(ch->irq);
    sti();
    udelay(100);
    cli();
    ch->irq_count = 0;
    ch->irq_foreign = 0;
}

void ata_irq_disable(struct ata_channel *ch)
{
    pic_mask(ch->irq);
    irq_owner[ch->irq] = NULL;
}

bool ata_wait_irq(struct ata_channel *ch, unsigned seen, uint32_t timeout_us)
{
    sti();
    bool ok = WAIT_FOR(ch->irq_count != seen, timeout_us);
    cli();
    return ok;
}

/* ---- ATAPI --------------------------------------------------------------- */

/* Issue PACKET and hand over the 12 CDB bytes once the device asks for
 * them (DRQ with interrupt reason CoD=1, IO=0).  `dma` sets the features
 * register's DMA bit; byte_limit goes to the byte count registers. */
static bool packet_send_cdb(const struct ata_channel *ch, unsigned unit, const uint8_t *cdb,
                            bool dma, uint16_t byte_limit, struct ata_result *res)
{
    struct ata_cmd cmd = {
        .command = ATA_CMD_PACKET,
        .features = dma ? 0x01 : 0x00,
        .lba = (uint64_t)byte_limit << 8,     /* LBA mid/high = byte count limit */
    };
    if (!ata_issue(ch, unit, &cmd)) {
        res->timeout = true;
        return false;
    }
    ata_delay400(ch);
    uint8_t st;
    if (!ata_wait_not_busy(ch, ATA_TIMEOUT_US, &st)) {
        res->timeout = true;
        return false;
    }
    uint8_t reason = ata_read(ch, ATA_REG_COUNT);
    if ((st & ATA_SR_ERR) || !(st & ATA_SR_DRQ) ||
        (reason & (ATAPI_IR_COD | ATAPI_IR_IO)) != ATAPI_IR_COD)
        return false;
    outsw(ch->cmd + ATA_REG_DATA, cdb, ATAPI_CDB_SIZE / 2);
    return true;
}

bool atapi_packet(const struct ata_channel *ch, unsigned unit, const uint8_t *cdb, void *buf,
                  uint32_t buflen, uint16_t byte_limit, struct atapi_result *res)
{
    memset(res, 0, sizeof(*res));
    if (packet_send_cdb(ch, unit, cdb, false, byte_limit, &res->ata)) {
        uint8_t *p = buf;
        for (unsigned guard = 0; guard < ATAPI_MAX_CHUNKS; guard++) {
            /* Each data phase: BSY clears with DRQ set and INTRQ raised;
             * the byte count registers say how much this chunk is.  The
             * status phase: DRQ clear, interrupt reason IO|CoD. */
            ata_delay400(ch);
            if (!ata_wait_not_busy(ch, ATA_TIMEOUT_US, NULL)) {
                res->ata.timeout = true;
                break;
            }
            uint8_t st = ata_read(ch, ATA_REG_STATUS);
            if ((st & ATA_SR_ERR) || !(st & ATA_SR_DRQ))
                break;
            uint8_t reason = ata_read(ch, ATA_REG_COUNT);
            if ((reason & (ATAPI_IR_COD | ATAPI_IR_IO)) != ATAPI_IR_IO)
                break;                          /* not data-in: unsupported here */
            uint32_t n = ata_read(ch, ATA_REG_LBA_MID) | ata_read(ch, ATA_REG_LBA_HIGH) << 8;
            res->chunks++;
            if (n > res->largest_chunk)
                res->largest_chunk = n;
            /* A chunk that fits the buffer goes in with one REP INSW (one
             * emulator exit instead of one per word).  Otherwise take it a
             * word at a time; whatever does not fit the buffer is read and
             * dropped, as the device insists on it. */
            if (!(n & 1) && res->bytes + n <= buflen) {
                insw(ch->cmd + ATA_REG_DATA, p + res->bytes, n / 2);
                res->bytes += n;
                continue;
            }
            for (uint32_t i = 0; i < n; i += 2) {
                uint16_t w = inw(ch->cmd + ATA_REG_DATA);
                if (res->bytes + 1 < buflen) {
                    p[res->bytes] = (uint8_t)w;
                    p[res->bytes + 1] = (uint8_t)(w >> 8);
                } else if (res->bytes < buflen) {
                    p[res->bytes] = (uint8_t)w;
                }
                res->bytes += (n - i >= 2) ? 2 : 1;
            }
        }
    }
    finish(ch, &res->ata);
    res->reason = ata_read(ch, ATA_REG_COUNT);
    return ata_ok(&res->ata);
}

bool atapi_request_sense(const struct ata_channel *ch, unsigned unit, struct atapi_sense *s)
{
    uint8_t cdb[ATAPI_CDB_SIZE] = {0x03, 0, 0, 0, 18, 0};
    uint8_t data[18] = {0};
    struct atapi_result r;
    memset(s, 0, sizeof(*s));
    s->ok = atapi_packet(ch, unit, cdb, data, sizeof(data), sizeof(data), &r) && r.bytes >= 14;
    s->response = data[0] & 0x7F;
    s->key = data[2] & 0x0F;
    s->asc = data[12];
    s->ascq = data[13];
    return s->ok;
}

bool atapi_dma_start(const struct ata_channel *ch, unsigned unit, const uint8_t *cdb,
                     const struct ata_prd *prdt, struct ata_result *res)
{
    memset(res, 0, sizeof(*res));
    if (!ch->bm)
        return false;
    bm_prepare(ch, prdt, true);
    if (!packet_send_cdb(ch, unit, cdb, true, 0, res))
        return false;
    bm_go(ch);
    return true;
}

/* ---- test program conventions -------------------------------------------- */

/* Up to `digits` hex digits at *p; advances *p. */
static uint32_t parse_hex(const char **p, const char *end, unsigned digits)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < digits && *p < end; i++, (*p)++) {
        char c = **p;
        unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
                     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16;
        if (d == 16)
            break;
        v = v << 4 | d;
    }
    return v;
}

struct ata_channel *ata_test_channel(struct ata_controller *c, unsigned default_channel,
                                     unsigned *unit)
{
    size_t len;
    const char *id = cmdline_value("pciid", &len);
    struct pci_dev dev;
    bool found;
    if (id) {
        const char *p = id, *end = id + len;
        uint16_t vendor = (uint16_t)parse_hex(&p, end, 4);
        if (p < end && *p == ':')
            p++;
        uint16_t device = (uint16_t)parse_hex(&p, end, 4);
        found = pci_find_id(vendor, device, 0, &dev) && dev.class_code == PCI_CLASS_STORAGE &&
                dev.subclass == PCI_SUBCLASS_IDE;
        if (!found)
            tap_diag("no ide controller %04x:%04x (pciid=%.*s)", vendor, device, (int)len, id);
    } else {
        found = pci_find_class(PCI_CLASS_STORAGE, PCI_SUBCLASS_IDE, PCI_ANY_PROG_IF, 0, &dev);
        if (!found)
            tap_diag("no ide controller (pci class 0101)");
    }
    if (!found)
        return NULL;
    ata_controller_init(&dev, c);
    unsigned channel = cmdline_u32("channel", default_channel) ? 1 : 0;
    *unit = cmdline_u32("unit", 0) ? 1 : 0;
    struct ata_channel *ch = &c->channel[channel];
    tap_diag("ide controller %04x:%04x at %02x:%02x.%x prog-if %02x, bus master at %04x%s",
             c->pci.vendor, c->pci.device, PCI_BUS(c->pci.bdf), PCI_DEV(c->pci.bdf),
             PCI_FN(c->pci.bdf), c->pci.prog_if, c->bm_base,
             c->bm_assigned ? " (assigned here)" : "");
    tap_diag("channel %u (%s mode): command %03x, control %03x, irq %u; unit %u", channel,
             ch->native ? "native" : "legacy", ch->cmd, ch->ctl, ch->irq, *unit);
    return ch;
}

bool ata_test_expected_model(char *out)
{
    size_t len = 0, n = 0;
    const char *want = cmdline_value("model", &len);
    for (; want && n < len && n < 40; n++)
        out[n] = want[n] == '_' ? ' ' : want[n];
    out[n] = '\0';
    return n > 0;
}

/* ---- the test images' pattern -------------------------------------------- */

void ata_pattern_fill(void *buf, uint32_t lba, uint32_t sectors, uint32_t sector_size,
                      uint8_t tag)
{
    uint32_t *w = buf, per = sector_size / 4;
    for (uint32_t s = 0; s < sectors; s++)
        for (uint32_t i = 0; i < per; i++)
            *w++ = tag ? ata_written_word(lba + s, i, tag) : lba + s;
}

uint32_t ata_pattern_check(const void *buf, uint32_t lba, uint32_t sectors,
                           uint32_t sector_size, uint8_t tag, uint32_t *got, uint32_t *want)
{
    const uint32_t *w = buf;
    uint32_t per = sector_size / 4;
    for (uint32_t s = 0; s < sectors; s++)
        for (uint32_t i = 0; i < per; i++, w++) {
            uint32_t expect = tag ? ata_written_word(lba + s, i, tag) : lba + s;
            if (*w != expect) {
                if (got)
                    *got = *w;
                if (want)
                    *want = expect;
                return s;
            }
        }
    return sectors;
}

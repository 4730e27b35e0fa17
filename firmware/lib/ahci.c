/*
 * The AHCI driver described in ahci.h: HBA discovery and reset, the port
 * start/stop state machine, command slots with their FIS and PRD table,
 * polled and interrupt-driven completion, error recovery.
 */
#include "runtime.h"

#include "ahci.h"

/* Bounds from AHCI 1.3.1: HBA reset within 1 s (10.4.3), CR/FR clear within
 * 500 ms of ST/FRE clearing (10.1.2), COMRESET held for at least 1 ms
 * (10.4.2).  Commands get what ata.c gives an IDE device. */
#define AHCI_HR_TIMEOUT_US      1000000u
#define AHCI_ENGINE_TIMEOUT_US  500000u
#define AHCI_COMRESET_HOLD_MS   2
#define AHCI_LINK_TIMEOUT_US    1000000u
#define AHCI_BUSY_TIMEOUT_US    1000000u
#define AHCI_CMD_TIMEOUT_US     5000000u
#define AHCI_LAPIC_EOI          0xB0

/* ---- registers ------------------------------------------------------------ */

uint32_t ahci_read(const struct ahci_hba *hba, unsigned reg)
{
    return mmio_read32(hba->abar + reg);
}

void ahci_write(const struct ahci_hba *hba, unsigned reg, uint32_t v)
{
    mmio_write32(hba->abar + reg, v);
}

uint32_t ahci_port_read(const struct ahci_port *p, unsigned reg)
{
    return mmio_read32(p->regs + reg);
}

void ahci_port_write(const struct ahci_port *p, unsigned reg, uint32_t v)
{
    mmio_write32(p->regs + reg, v);
}

/* ---- the HBA -------------------------------------------------------------- */

static void read_capabilities(struct ahci_hba *hba)
{
    hba->cap = ahci_read(hba, AHCI_CAP);
    hba->pi = ahci_read(hba, AHCI_PI);
    hba->vs = ahci_read(hba, AHCI_VS);
    /* CAP2 and BOHC exist from AHCI 1.2 on; earlier HBAs read 0 there. */
    hba->cap2 = hba->vs >= 0x00010200 ? ahci_read(hba, AHCI_CAP2) : 0;
    hba->slots = AHCI_CAP_NCS(hba->cap) + 1;
}

bool ahci_hba_init(const struct pci_dev *dev, struct ahci_hba *hba)
{
    memset(hba, 0, sizeof(*hba));
    hba->pci = *dev;
    pci_bdf_t bdf = dev->bdf;

    /* BAR5 is the ABAR, a 32-bit memory BAR.  Without a BIOS nobody has
     * assigned it: put it at the default address, aligned to its size. */
    struct pci_bar bar;
    if (!pci_bar_decode(bdf, AHCI_ABAR_INDEX, &bar) || bar.io || bar.size == 0)
        return false;
    uint32_t base = (uint32_t)bar.base;
    if (base == 0) {
        base = AHCI_ABAR_DEFAULT & ~(uint32_t)(bar.size - 1);
        pci_write32(bdf, PCI_BAR0 + 4 * AHCI_ABAR_INDEX, base);
        hba->abar_assigned = true;
    }
    hba->abar = base;
    pci_enable(bdf, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);

    read_capabilities(hba);
    for (unsigned i = 0; i < AHCI_MAX_PORTS; i++) {
        hba->port[i].hba = hba;
        hba->port[i].index = i;
        hba->port[i].regs = hba->abar + AHCI_PORT_BASE(i);
        hba->port[i].sig = AHCI_SIG_NONE;
    }
    return true;
}

bool ahci_hba_find(unsigned index, struct ahci_hba *hba)
{
    struct pci_dev dev;
    if (!pci_find_class(PCI_CLASS_STORAGE, PCI_SUBCLASS_SATA, AHCI_PROGIF, index, &dev))
        return false;
    return ahci_hba_init(&dev, hba);
}

void ahci_hba_enable(struct ahci_hba *hba)
{
    /* With CAP.SAM set AE is read-only 1 and the write changes nothing. */
    uint32_t ghc = ahci_read(hba, AHCI_GHC);
    if (!(ghc & AHCI_GHC_AE))
        ahci_write(hba, AHCI_GHC, (ghc & ~AHCI_GHC_HR) | AHCI_GHC_AE);
}

bool ahci_hba_reset(struct ahci_hba *hba)
{
    /* AE first: some HBAs ignore other GHC bits in legacy mode. */
    ahci_hba_enable(hba);
    ahci_write(hba, AHCI_GHC, ahci_read(hba, AHCI_GHC) | AHCI_GHC_HR);
    bool done = WAIT_FOR(!(ahci_read(hba, AHCI_GHC) & AHCI_GHC_HR), AHCI_HR_TIMEOUT_US);
    /* The reset cleared AE (unless CAP.SAM) and IE. */
    ahci_hba_enable(hba);
    read_capabilities(hba);
    for (unsigned i = 0; i < AHCI_MAX_PORTS; i++) {
        hba->port[i].sig = AHCI_SIG_NONE;
        hba->port[i].kind = ATA_KIND_NONE;
    }
    return done;
}

void ahci_hba_irq_enable(struct ahci_hba *hba, bool on)
{
    uint32_t ghc = ahci_read(hba, AHCI_GHC) & ~AHCI_GHC_HR;
    ahci_write(hba, AHCI_GHC, on ? ghc | AHCI_GHC_IE : ghc & ~AHCI_GHC_IE);
}

const char *ahci_version_str(uint32_t vs)
{
    /* Major in 31:16, minor in 15:0, both BCD: 0001_0301h is 1.3.1. */
    static char text[16];
    unsigned major = vs >> 16, minor = vs & 0xFFFF;
    if (vs == 0x00000905)
        return "0.95";
    if (minor & 0xFF)
        snprintf(text, sizeof(text), "%x.%x.%x", major, minor >> 8, minor & 0xFF);
    else
        snprintf(text, sizeof(text), "%x.%x", major, minor >> 8);
    return text;
}

/* ---- port state machine --------------------------------------------------- */

bool ahci_port_idle(const struct ahci_port *p)
{
    uint32_t cmd = ahci_port_read(p, AHCI_PxCMD);
    return !(cmd & (AHCI_PxCMD_ST | AHCI_PxCMD_CR | AHCI_PxCMD_FRE | AHCI_PxCMD_FR));
}

bool ahci_port_stop_engine(struct ahci_port *p)
{
    uint32_t cmd = ahci_port_read(p, AHCI_PxCMD);
    if (cmd & AHCI_PxCMD_ST)
        ahci_port_write(p, AHCI_PxCMD, cmd & ~AHCI_PxCMD_ST);
    /* CR clears once the HBA has finished with the command list; commands
     * still in PxCI are dropped (the HBA clears PxCI and PxSACT). */
    return WAIT_FOR(!(ahci_port_read(p, AHCI_PxCMD) & AHCI_PxCMD_CR), AHCI_ENGINE_TIMEOUT_US);
}

bool ahci_port_stop(struct ahci_port *p)
{
    bool ok = ahci_port_stop_engine(p);
    uint32_t cmd = ahci_port_read(p, AHCI_PxCMD);
    if (cmd & AHCI_PxCMD_FRE)
        ahci_port_write(p, AHCI_PxCMD, cmd & ~AHCI_PxCMD_FRE);
    return WAIT_FOR(!(ahci_port_read(p, AHCI_PxCMD) & AHCI_PxCMD_FR), AHCI_ENGINE_TIMEOUT_US) &&
           ok;
}

static bool port_allocate(struct ahci_port *p)
{
    if (p->allocated) {
        memset(p->clist, 0, AHCI_MAX_SLOTS * sizeof(struct ahci_cmd_header));
        memset((void *)p->rfis, 0, AHCI_RFIS_SIZE);
        return true;
    }
    p->clist = dma_alloc(AHCI_MAX_SLOTS * sizeof(struct ahci_cmd_header), AHCI_CLB_ALIGN);
    p->rfis = dma_alloc(AHCI_RFIS_SIZE, AHCI_FB_ALIGN);
    if (!p->clist || !p->rfis)
        return false;
    for (unsigned s = 0; s < p->hba->slots; s++) {
        p->table[s] = dma_alloc(sizeof(struct ahci_cmd_table), AHCI_CTBA_ALIGN);
        if (!p->table[s])
            return false;
    }
    p->allocated = true;
    return true;
}

bool ahci_port_setup(struct ahci_hba *hba, unsigned index, uint32_t link_wait_us)
{
    struct ahci_port *p = &hba->port[index];
    /* 1. Idle: a BIOS may have left the port running with its own lists. */
    if (!ahci_port_stop(p))
        return false;
    /* 2. Memory: the command list and the received-FIS area, zeroed. */
    if (!port_allocate(p))
        return false;
    ahci_port_write(p, AHCI_PxCLB, dma_phys(p->clist));
    ahci_port_write(p, AHCI_PxCLBU, 0);
    ahci_port_write(p, AHCI_PxFB, dma_phys(p->rfis));
    ahci_port_write(p, AHCI_PxFBU, 0);
    /* 3. Old errors and interrupt status out, no interrupts yet. */
    ahci_port_write(p, AHCI_PxSERR, 0xFFFFFFFFu);
    ahci_port_write(p, AHCI_PxIS, 0xFFFFFFFFu);
    ahci_port_write(p, AHCI_PxIE, 0);
    /* 4. Receive FISes from now on: the device's signature FIS lands in
     * the D2H area. */
    uint32_t cmd = ahci_port_read(p, AHCI_PxCMD);
    ahci_port_write(p, AHCI_PxCMD, cmd | AHCI_PxCMD_FRE);
    if (!WAIT_FOR(ahci_port_read(p, AHCI_PxCMD) & AHCI_PxCMD_FR, AHCI_ENGINE_TIMEOUT_US))
        return false;
    /* 5. Power and spin-up: with staggered spin-up (CAP.SSS) nothing talks
     * on the link until SUD is set; POD matters with cold presence detect. */
    cmd = ahci_port_read(p, AHCI_PxCMD);
    uint32_t want = cmd | AHCI_PxCMD_SUD | ((cmd & AHCI_PxCMD_CPD) ? AHCI_PxCMD_POD : 0);
    if (want != cmd)
        ahci_port_write(p, AHCI_PxCMD, want);
    /* 6. The link: DET = 3 once a device has finished OOB signalling. */
    WAIT_FOR(AHCI_SSTS_DET(ahci_port_read(p, AHCI_PxSSTS)) == AHCI_DET_PRESENT, link_wait_us);
    /* 7. Coming up left DIAG.X/N in PxSERR (and so PCS/PRCS in PxIS):
     * clear them now the link has settled (AHCI 10.1.2 step 6, 10.10.1). */
    ahci_port_write(p, AHCI_PxSERR, 0xFFFFFFFFu);
    ahci_port_write(p, AHCI_PxIS, 0xFFFFFFFFu);
    return true;
}

bool ahci_port_present(const struct ahci_port *p)
{
    return AHCI_SSTS_DET(ahci_port_read(p, AHCI_PxSSTS)) == AHCI_DET_PRESENT;
}

enum ata_kind ahci_sig_kind(uint32_t sig)
{
    switch (sig) {
    case AHCI_SIG_ATA: return ATA_KIND_ATA;
    case AHCI_SIG_ATAPI: return ATA_KIND_ATAPI;
    case AHCI_SIG_NONE: return ATA_KIND_NONE;
    default: return ATA_KIND_UNKNOWN;          /* port multiplier, SEMB, ... */
    }
}

enum ata_kind ahci_port_classify(struct ahci_port *p, uint32_t timeout_us)
{
    if (!ahci_port_present(p)) {
        p->sig = ahci_port_read(p, AHCI_PxSIG);
        p->kind = ATA_KIND_NONE;
        return p->kind;
    }
    /* The HBA holds BSY (PxTFD 80h or 7Fh) and PxSIG at FFFFFFFFh until the
     * device's first D2H register FIS arrives. */
    WAIT_FOR(!(AHCI_TFD_STS(ahci_port_read(p, AHCI_PxTFD)) & (ATA_SR_BSY | ATA_SR_DRQ)) &&
                 ahci_port_read(p, AHCI_PxSIG) != AHCI_SIG_NONE,
             timeout_us);
    p->sig = ahci_port_read(p, AHCI_PxSIG);
    p->kind = ahci_sig_kind(p->sig);
    return p->kind;
}

bool ahci_port_start(struct ahci_port *p)
{
    uint32_t cmd = ahci_port_read(p, AHCI_PxCMD);
    if (!(cmd & AHCI_PxCMD_FRE))
        return false;                        /* FRE before ST, always */
    if (cmd & AHCI_PxCMD_ST)
        return cmd & AHCI_PxCMD_CR;
    /* The HBA would send nothing to a busy device: wait for BSY/DRQ to
     * clear, and for the engine to have really stopped. */
    if (!WAIT_FOR(!(AHCI_TFD_STS(ahci_port_read(p, AHCI_PxTFD)) & (ATA_SR_BSY | ATA_SR_DRQ)),
                  AHCI_BUSY_TIMEOUT_US))
        return false;
    if (!WAIT_FOR(!(ahci_port_read(p, AHCI_PxCMD) & AHCI_PxCMD_CR), AHCI_ENGINE_TIMEOUT_US))
        return false;
    ahci_port_write(p, AHCI_PxCMD, ahci_port_read(p, AHCI_PxCMD) | AHCI_PxCMD_ST);
    return WAIT_FOR(ahci_port_read(p, AHCI_PxCMD) & AHCI_PxCMD_CR, AHCI_ENGINE_TIMEOUT_US);
}

bool ahci_port_comreset(struct ahci_port *p)
{
    if (ahci_port_read(p, AHCI_PxCMD) & AHCI_PxCMD_ST)
        return false;                        /* only with the engine stopped */
    /* DET = 1 sends COMRESET for as long as it is held; the spec asks for
     * at least 1 ms before DET goes back to 0. */
    uint32_t sctl = ahci_port_read(p, AHCI_PxSCTL) & ~0xFu;
    ahci_port_write(p, AHCI_PxSCTL, sctl | AHCI_SCTL_DET_COMRESET);
    mdelay(AHCI_COMRESET_HOLD_MS);
    ahci_port_write(p, AHCI_PxSCTL, sctl);
    /* The device answers with COMINIT, the link comes up, and the device
     * sends its signature in a D2H register FIS. */
    bool link = WAIT_FOR(ahci_port_present(p), AHCI_LINK_TIMEOUT_US);
    if (link)
        link = WAIT_FOR(!(AHCI_TFD_STS(ahci_port_read(p, AHCI_PxTFD)) &
                          (ATA_SR_BSY | ATA_SR_DRQ)) &&
                            ahci_port_read(p, AHCI_PxSIG) != AHCI_SIG_NONE,
                        AHCI_LINK_TIMEOUT_US);
    /* The link's comings and goings left diagnostics in SERR (DIAG.X/N). */
    ahci_port_write(p, AHCI_PxSERR, 0xFFFFFFFFu);
    return link;
}

bool ahci_port_clo(struct ahci_port *p)
{
    if (!(p->hba->cap & AHCI_CAP_SCLO))
        return false;
    ahci_port_write(p, AHCI_PxCMD, ahci_port_read(p, AHCI_PxCMD) | AHCI_PxCMD_CLO);
    return WAIT_FOR(!(ahci_port_read(p, AHCI_PxCMD) & AHCI_PxCMD_CLO), AHCI_ENGINE_TIMEOUT_US);
}

bool ahci_port_recover(struct ahci_port *p, const char **how)
{
    const char *method = "restart";
    /* AHCI 6.2.2.1: stop the engine (the HBA forgets PxCI and PxSACT),
     * clear the error state, and only then restart. */
    bool stopped = ahci_port_stop_engine(p);
    ahci_port_write(p, AHCI_PxSERR, 0xFFFFFFFFu);
    ahci_port_write(p, AHCI_PxIS, 0xFFFFFFFFu);
    ahci_write(p->hba, AHCI_IS, 1u << p->index);
    uint8_t status = AHCI_TFD_STS(ahci_port_read(p, AHCI_PxTFD));
    bool ok = stopped;
    if (!stopped || (status & (ATA_SR_BSY | ATA_SR_DRQ))) {
        /* The device still looks busy: CLO if the HBA can, else COMRESET. */
        if (stopped && ahci_port_clo(p)) {
            method = "clo";
        } else {
            method = "comreset";
            ok = ahci_port_stop_engine(p) && ahci_port_comreset(p);
        }
    }
    if (how)
        *how = method;
    return ok && ahci_port_start(p);
}

/* ---- FIS and PRD table ------------------------------------------------------ */

struct ahci_taskfile ahci_tf_from_ata(const struct ata_cmd *c)
{
    struct ahci_taskfile tf = {
        .command = c->command,
        .features = c->features,
        .count = c->lba48 ? c->count : (uint8_t)c->count,
        .lba = c->lba48 ? c->lba & 0xFFFFFFFFFFFFull : c->lba & 0xFFFFFF,
        .device = ATA_DEV_LBA | (c->lba48 ? 0 : (uint8_t)((c->lba >> 24) & 0x0F)),
    };
    return tf;
}

struct ahci_taskfile ahci_tf_ncq(bool write, uint64_t lba, uint16_t count, unsigned tag)
{
    struct ahci_taskfile tf = {
        .command = write ? ATA_CMD_WRITE_FPDMA_QUEUED : ATA_CMD_READ_FPDMA_QUEUED,
        .features = count,                   /* the sector count moves to features */
        .count = ATA_NCQ_TAG(tag),           /* and the tag to count 7:3 */
        .lba = lba,
        .device = ATA_DEV_NCQ,
    };
    return tf;
}

void ahci_fis_h2d(uint8_t fis[FIS_H2D_LENGTH], const struct ahci_taskfile *tf)
{
    /* SATA "Register - Host to Device" FIS: the two-deep LBA48 registers of
     * the IDE taskfile are laid out side by side. */
    memset(fis, 0, FIS_H2D_LENGTH);
    fis[0] = FIS_TYPE_REG_H2D;
    fis[1] = FIS_H2D_C;                       /* a command, port multiplier port 0 */
    fis[2] = tf->command;
    fis[3] = (uint8_t)tf->features;
    fis[4] = (uint8_t)tf->lba;
    fis[5] = (uint8_t)(tf->lba >> 8);
    fis[6] = (uint8_t)(tf->lba >> 16);
    fis[7] = tf->device;
    fis[8] = (uint8_t)(tf->lba >> 24);
    fis[9] = (uint8_t)(tf->lba >> 32);
    fis[10] = (uint8_t)(tf->lba >> 40);
    fis[11] = (uint8_t)(tf->features >> 8);
    fis[12] = (uint8_t)tf->count;
    fis[13] = (uint8_t)(tf->count >> 8);
    fis[15] = tf->control;
}

bool ahci_prd_add(struct ahci_prd *table, unsigned max, unsigned *used, const void *buf,
                  uint32_t bytes, uint32_t chunk)
{
    uint32_t addr = dma_phys(buf);
    if (chunk == 0 || chunk > AHCI_PRD_MAX_BYTES)
        chunk = AHCI_PRD_MAX_BYTES;
    chunk &= ~1u;
    if ((addr | bytes) & 1 || chunk == 0)
        return false;
    while (bytes) {
        if (*used >= max)
            return false;
        uint32_t n = bytes < chunk ? bytes : chunk;
        table[*used] = (struct ahci_prd){.dba = addr, .dbau = 0, .dbc = AHCI_PRD_DBC(n)};
        (*used)++;
        addr += n;
        bytes -= n;
    }
    return true;
}

bool ahci_slot_prepare(struct ahci_port *p, unsigned slot, const struct ahci_cmd *cmd)
{
    if (slot >= p->hba->slots || !p->allocated)
        return false;
    struct ahci_cmd_table *t = p->table[slot];
    memset(t, 0, offsetof(struct ahci_cmd_table, prdt));
    ahci_fis_h2d(t->cfis, &cmd->tf);
    if (cmd->cdb)
        memcpy(t->acmd, cmd->cdb, ATAPI_CDB_SIZE);
    unsigned used = 0;
    for (unsigned i = 0; i < cmd->nsg; i++)
        if (!ahci_prd_add(t->prdt, AHCI_PRDT_ENTRIES, &used, cmd->sg[i].buf, cmd->sg[i].bytes,
                          cmd->prd_bytes))
            return false;
    if (cmd->prd_intr_last && used)
        t->prdt[used - 1].dbc |= AHCI_PRD_INTR;

    struct ahci_cmd_header *h = &p->clist[slot];
    h->flags = AHCI_HDR_CFL(FIS_H2D_LENGTH / 4) | (cmd->cdb ? AHCI_HDR_ATAPI : 0) |
               (cmd->write ? AHCI_HDR_WRITE : 0);
    h->prdtl = (uint16_t)used;
    h->prdbc = 0;
    h->ctba = dma_phys(t);
    h->ctbau = 0;
    return true;
}

void ahci_slots_issue(struct ahci_port *p, uint32_t slots, bool queued)
{
    /* Queued commands: software sets the tag's PxSACT bit before issuing
     * the command (AHCI 3.3.13); the HBA clears it when the device's Set
     * Device Bits FIS reports the command done. */
    if (queued)
        ahci_port_write(p, AHCI_PxSACT, slots);
    ahci_port_write(p, AHCI_PxCI, slots);
}

/* ---- completion ------------------------------------------------------------- */

bool ahci_ok(const struct ahci_result *r)
{
    return !r->timeout && !r->ci && !r->sact && !(r->is & AHCI_PxIS_ERRORS) &&
           !(r->status & (ATA_SR_BSY | ATA_SR_DRQ | ATA_SR_ERR | ATA_SR_DF));
}

const char *ahci_result_str(const struct ahci_result *r)
{
    static char text[96];
    snprintf(text, sizeof(text), "tfd %02x/%02x is %08x serr %08x%s%s", r->status, r->error,
             r->is, r->serr, r->ci || r->sact ? " outstanding" : "",
             r->timeout ? " timeout" : "");
    return text;
}

static unsigned lowest_slot(uint32_t slots)
{
    unsigned s = 0;
    while (s < 31 && !(slots & (1u << s)))
        s++;
    return s;
}

static void collect(struct ahci_port *p, uint32_t slots, bool queued, struct ahci_result *r)
{
    uint32_t tfd = ahci_port_read(p, AHCI_PxTFD);
    r->status = AHCI_TFD_STS(tfd);
    r->error = AHCI_TFD_ERR(tfd);
    r->serr = ahci_port_read(p, AHCI_PxSERR);
    r->ci = ahci_port_read(p, AHCI_PxCI) & slots;
    r->sact = queued ? ahci_port_read(p, AHCI_PxSACT) & slots : 0;
    r->prdbc = p->clist[lowest_slot(slots)].prdbc;
}

bool ahci_wait_slots(struct ahci_port *p, uint32_t slots, bool queued, uint32_t timeout_us,
                     struct ahci_result *r)
{
    memset(r, 0, sizeof(*r));
    bool done = WAIT_FOR(({
                             uint32_t busy = ahci_port_read(p, AHCI_PxCI);
                             if (queued)
                                 busy |= ahci_port_read(p, AHCI_PxSACT);
                             !(busy & slots) ||
                                 (ahci_port_read(p, AHCI_PxIS) & AHCI_PxIS_ERRORS);
                         }),
                         timeout_us);
    r->timeout = !done;
    collect(p, slots, queued, r);
    /* Acknowledge what happened (PxIS first, then the HBA's IS bit). */
    r->is = ahci_port_read(p, AHCI_PxIS);
    ahci_port_write(p, AHCI_PxIS, r->is);
    ahci_write(p->hba, AHCI_IS, 1u << p->index);
    return ahci_ok(r);
}

bool ahci_wait_slots_irq(struct ahci_port *p, uint32_t slots, bool queued,
                         uint32_t timeout_us, struct ahci_result *r)
{
    memset(r, 0, sizeof(*r));
    /* Done when the slots are, and the handler has taken every enabled
     * status bit (an interrupt follows the completion by an instruction or
     * two). */
    sti();
    bool done = WAIT_FOR(({
                             uint32_t busy = ahci_port_read(p, AHCI_PxCI);
                             if (queued)
                                 busy |= ahci_port_read(p, AHCI_PxSACT);
                             ((!(busy & slots)) || (p->irq_is & AHCI_PxIS_ERRORS)) &&
                                 !(ahci_port_read(p, AHCI_PxIS) &
                                   ahci_port_read(p, AHCI_PxIE));
                         }),
                         timeout_us);
    cli();
    r->timeout = !done;
    collect(p, slots, queued, r);
    r->is = p->irq_is;
    p->irq_is = 0;
    return ahci_ok(r);
}

bool ahci_exec(struct ahci_port *p, unsigned slot, const struct ahci_cmd *cmd,
               struct ahci_result *r)
{
    if (!ahci_slot_prepare(p, slot, cmd)) {
        memset(r, 0, sizeof(*r));
        r->timeout = true;
        return false;
    }
    bool queued = cmd->tf.command == ATA_CMD_READ_FPDMA_QUEUED ||
                  cmd->tf.command == ATA_CMD_WRITE_FPDMA_QUEUED;
    ahci_slots_issue(p, 1u << slot, queued);
    return ahci_wait_slots(p, 1u << slot, queued, AHCI_CMD_TIMEOUT_US, r);
}

bool ahci_exec_ata(struct ahci_port *p, unsigned slot, const struct ata_cmd *ata, void *buf,
                   uint32_t bytes, bool write, struct ahci_result *r)
{
    struct ahci_sg sg = {buf, bytes};
    struct ahci_cmd c = {
        .tf = ahci_tf_from_ata(ata), .write = write, .sg = &sg, .nsg = bytes ? 1 : 0,
    };
    return ahci_exec(p, slot, &c, r);
}

bool ahci_identify(struct ahci_port *p, bool packet, uint16_t id[ATA_ID_WORDS],
                   struct ahci_result *r)
{
    /* A PIO data-in command: the device announces the 512 bytes with a PIO
     * setup FIS, the HBA moves them through the PRD table. */
    struct ata_cmd c = {.command = packet ? ATA_CMD_IDENTIFY_PACKET : ATA_CMD_IDENTIFY};
    return ahci_exec_ata(p, 0, &c, id, ATA_ID_WORDS * 2, false, r);
}

bool ahci_atapi(struct ahci_port *p, const uint8_t cdb[ATAPI_CDB_SIZE], void *buf,
                uint32_t bytes, bool dma, uint16_t byte_limit, struct ahci_result *r)
{
    /* PACKET with the CDB in the command table (the A bit tells the HBA to
     * send it when the device asks); features bit 0 picks DMA, LBA mid/high
     * carry the byte count limit for PIO. */
    struct ahci_sg sg = {buf, bytes};
    struct ahci_cmd c = {
        .tf = {.command = ATA_CMD_PACKET, .features = dma ? 0x01 : 0x00,
               .lba = (uint64_t)byte_limit << 8},
        .cdb = cdb, .sg = &sg, .nsg = bytes ? 1 : 0,
    };
    return ahci_exec(p, 0, &c, r);
}

/* ---- interrupts ------------------------------------------------------------- */

void ahci_irq_service(struct ahci_hba *hba)
{
    uint32_t is = ahci_read(hba, AHCI_IS);
    if (!is) {
        hba->irq_empty++;
        return;
    }
    /* Port status first: IS.IPS[n] would be set again at once while the
     * port's PxIS & PxIE is non-zero. */
    for (unsigned i = 0; i < AHCI_MAX_PORTS; i++) {
        if (!(is & (1u << i)))
            continue;
        struct ahci_port *p = &hba->port[i];
        uint32_t pis = ahci_port_read(p, AHCI_PxIS);
        /* PCS and PRCS cannot be cleared in PxIS: they mirror SERR.DIAG.X
         * and DIAG.N (AHCI 3.3.5), and the interrupt stays asserted until
         * those are cleared.  Take them with the rest of PxSERR. */
        if (pis & (AHCI_PxIS_PCS | AHCI_PxIS_PRCS)) {
            uint32_t serr = ahci_port_read(p, AHCI_PxSERR);
            p->irq_serr |= serr;
            ahci_port_write(p, AHCI_PxSERR, serr);
        }
        ahci_port_write(p, AHCI_PxIS, pis);
        p->irq_is |= pis;
        p->irq_count++;
    }
    ahci_write(hba, AHCI_IS, is);
    hba->irq_last_is = is;
    hba->irq_count++;
}

bool ahci_wait_irq(struct ahci_hba *hba, unsigned seen, uint32_t timeout_us)
{
    sti();
    bool ok = WAIT_FOR(hba->irq_count != seen, timeout_us);
    cli();
    return ok;
}

static struct ahci_hba *intx_owner[16];
static struct ahci_hba *msi_owner;

static void intx_handler(unsigned irq)
{
    /* A level-triggered, possibly shared line: service whatever the HBA
     * has; the runtime sends the EOI after we return, by which time the
     * HBA has dropped the line. */
    if (intx_owner[irq])
        ahci_irq_service(intx_owner[irq]);
}

void ahci_irq_attach_intx(struct ahci_hba *hba, unsigned irq)
{
    intx_owner[irq] = hba;
    irq_register(irq, intx_handler);
    pic_unmask(irq);
}

void ahci_irq_detach_intx(struct ahci_hba *hba, unsigned irq)
{
    (void)hba;
    pic_mask(irq);
    intx_owner[irq] = NULL;
}

static void msi_handler(struct int_frame *frame)
{
    (void)frame;
    if (msi_owner)
        ahci_irq_service(msi_owner);
    mmio_write32(LAPIC_BASE + AHCI_LAPIC_EOI, 0);
}

bool ahci_irq_attach_msi(struct ahci_hba *hba, uint8_t vector)
{
    pci_bdf_t bdf = hba->pci.bdf;
    uint8_t cap = pci_find_capability(bdf, PCI_CAP_ID_MSI);
    if (!cap)
        return false;
    /* PCI 3.0, 6.8.1: message address FEE0_0000h = local APIC ID 0,
     * physical destination; data = the vector, fixed delivery, edge. */
    uint16_t control = pci_read16(bdf, cap + 2);
    pci_write32(bdf, cap + 4, LAPIC_BASE);
    if (control & (1u << 7)) {               /* 64-bit address capable */
        pci_write32(bdf, cap + 8, 0);
        pci_write16(bdf, cap + 12, vector);
    } else {
        pci_write16(bdf, cap + 8, vector);
    }
    msi_owner = hba;
    int_register(vector, msi_handler);
    /* One message (MME = 0), enabled; INTx off while MSI is in use. */
    pci_write16(bdf, cap + 2, (uint16_t)((control & ~(7u << 4)) | 1u));
    pci_write16(bdf, PCI_COMMAND, pci_read16(bdf, PCI_COMMAND) | PCI_COMMAND_INTX_DISABLE);
    return true;
}

void ahci_irq_detach_msi(struct ahci_hba *hba, uint8_t vector)
{
    pci_bdf_t bdf = hba->pci.bdf;
    uint8_t cap = pci_find_capability(bdf, PCI_CAP_ID_MSI);
    if (cap)
        pci_write16(bdf, cap + 2, pci_read16(bdf, cap + 2) & ~1u);
    pci_write16(bdf, PCI_COMMAND, pci_read16(bdf, PCI_COMMAND) & ~PCI_COMMAND_INTX_DISABLE);
    int_register(vector, NULL);
    msi_owner = NULL;
}

/*
 * bench_ahci: reads from the AHCI disk on port 0, for the host to time.
 *
 * Command line:
 *   mode=seq      sequential reads from LBA 0 (wrapping at the end of the disk)
 *   mode=rand     reads at pseudo-random LBAs aligned to the request size,
 *                 from a fixed LCG (seed=N), so every emulator reads the same
 *   depth=N       requests kept in flight, 1-32.  Above 1 they are READ FPDMA
 *                 QUEUED (NCQ), one per tag, and a tag is refilled as soon as
 *                 its completion arrives; at 1 READ DMA EXT, or READ FPDMA
 *                 QUEUED with ncq=1
 *   kib=N         request size in KiB (default 128 for seq, 4 for rand)
 *   mib=N         how much to read (default 64), or count=N requests
 *   irq=0         poll PxCI/PxSACT instead of sleeping until the interrupt
 *
 * Completions are taken the way an operating system's driver takes them:
 * commands are issued with interrupts off (a driver holds its port lock),
 * the port interrupts (INTx through the 8259) on a D2H Register FIS (non-
 * queued) or a Set Device Bits FIS (NCQ), and the program sleeps in HLT in
 * between; PxCI/PxSACT say which slots are done.  A 100 Hz PIT interrupt
 * bounds every HLT, so a lost interrupt ends in a timeout, not a hang.
 * With irq=0 the port's interrupts stay disabled and the program polls.
 *
 * Every sector's first word is checked against the pattern the host wrote
 * (its LBA as a little-endian u32) and poisoned before the sector is read
 * again, so an emulator cannot be fast by being wrong.
 *
 * Output: "# bench-start" just before the first request is issued and
 * "# bench-end" after the last completion (the host times the interval
 * between the two lines), then a summary with the guest's own PIT time.
 */
#include "runtime.h"

#include "ahci.h"
#include "ata.h"

#define PORT            0
#define MAX_DEPTH       32
#define LINK_WAIT_US    100000u
#define SIGNATURE_WAIT_US 1000000u
#define TICK_DIVISOR    11932u         /* PIT channel 0 at 100 Hz: the HLT bound */
/* No request takes 10 s on either emulator.  Counted in ticks: reading the
 * PIT on every poll would cost more port I/O than the disk access. */
#define REQUEST_TIMEOUT_TICKS 1000u
#define DEFAULT_PCI_IRQ 11
#define PIIX3_BDF       PCI_BDF(0, 1, 0)
#define PIIX_PIRQRC     0x60           /* PIRQ[A-D] route control, 60h-63h */
#define PIIX_PIRQ_OFF   0x80           /* IRQEN clear: the link is not routed */
#define POISON_WORD     0xFFFFFFFFu    /* no sector of a < 2 TiB disk has this LBA */
#define PORT_IE (AHCI_PxIS_DHRS | AHCI_PxIS_SDBS | AHCI_PxIS_ERRORS)
/* Numerical Recipes' 32-bit LCG: the host needs nothing of it but its
 * determinism, the same sequence on every emulator. */
#define LCG_A 1664525u
#define LCG_C 1013904223u

static struct ahci_hba hba;
static struct ahci_port *port;
static uint8_t *buffers[MAX_DEPTH];
static uint32_t tag_lba[MAX_DEPTH];
static uint32_t req_sectors;
static uint32_t bad_sectors, first_bad_lba, first_bad_word;
static volatile unsigned ticks;
static bool use_irq;

static void tick(unsigned irq)
{
    (void)irq;
    ticks++;
    time_ticks();                      /* keeps the PIT clock counting periods */
}

/* The PCI interrupt pin through the PIIX3's PIRQ router to an 8259 input,
 * routed here (to IRQ 11) when no BIOS did. */
static unsigned pci_irq(const struct pci_dev *dev)
{
    uint8_t pin = pci_read8(dev->bdf, PCI_INTERRUPT_PIN);
    if (pin < 1 || pin > 4)
        return 0;
    unsigned pirq = PIIX_PIRQRC + ((PCI_DEV(dev->bdf) + pin - 2) & 3);
    uint8_t route = pci_read8(PIIX3_BDF, pirq);
    if (route & PIIX_PIRQ_OFF) {
        route = DEFAULT_PCI_IRQ;
        pci_write8(PIIX3_BDF, pirq, route);
    }
    pic_set_level_triggered(route & 0x0F, true);
    return route & 0x0F;
}

static bool bring_up(uint16_t id[ATA_ID_WORDS])
{
    struct ahci_result r;
    if (!ahci_hba_find(0, &hba) || !ahci_hba_reset(&hba) || !(hba.pi & (1u << PORT)) ||
        !ahci_port_setup(&hba, PORT, LINK_WAIT_US))
        return false;
    port = &hba.port[PORT];
    return ahci_port_classify(port, SIGNATURE_WAIT_US) == ATA_KIND_ATA &&
           ahci_port_start(port) && ahci_identify(port, false, id, &r);
}

static uint32_t request_lba(bool random, uint32_t i, uint32_t blocks, uint32_t *lcg)
{
    if (!random)
        return (i % blocks) * req_sectors;
    *lcg = *lcg * LCG_A + LCG_C;
    return (*lcg >> 8) % blocks * req_sectors;
}

static bool prepare(unsigned tag, bool queued, uint32_t lba)
{
    uint32_t *words = (uint32_t *)buffers[tag];
    for (uint32_t s = 0; s < req_sectors; s++)
        words[s * (ATA_SECTOR_SIZE / 4)] = POISON_WORD;
    struct ahci_sg sg = {buffers[tag], req_sectors * ATA_SECTOR_SIZE};
    struct ata_cmd c = {.command = ATA_CMD_READ_DMA_EXT, .lba = lba,
                        .count = (uint16_t)req_sectors, .lba48 = true};
    struct ahci_cmd cmd = {.tf = queued ? ahci_tf_ncq(false, lba, (uint16_t)req_sectors, tag)
                                        : ahci_tf_from_ata(&c),
                           .sg = &sg, .nsg = 1};
    tag_lba[tag] = lba;
    return ahci_slot_prepare(port, tag, &cmd);
}

static void check(unsigned tag)
{
    const uint32_t *words = (const uint32_t *)buffers[tag];
    for (uint32_t s = 0; s < req_sectors; s++) {
        uint32_t want = tag_lba[tag] + s, got = words[s * (ATA_SECTOR_SIZE / 4)];
        if (got != want && bad_sectors++ == 0) {
            first_bad_lba = want;
            first_bad_word = got;
        }
    }
}

/* Wait until a slot of `inflight` is done; returns the done ones, 0 on an
 * error or a timeout (*why says which).  With interrupts (use_irq) the
 * program sleeps in HLT between checks, and the handler acknowledges each
 * completion as it arrives, as in an operating system; without, it polls
 * PxCI/PxSACT and PxIS. */
static uint32_t wait_done(uint32_t inflight, bool queued, const char **why)
{
    unsigned deadline = ticks + REQUEST_TIMEOUT_TICKS;
    unsigned busy_reg = queued ? AHCI_PxSACT : AHCI_PxCI;
    for (;;) {
        if (use_irq)
            cli();
        uint32_t done = inflight & ~ahci_port_read(port, busy_reg);
        uint32_t is = use_irq ? port->irq_is : done ? 0 : ahci_port_read(port, AHCI_PxIS);
        if (is & AHCI_PxIS_ERRORS)
            *why = "error interrupt status";
        else if (!done && (int)(ticks - deadline) > 0)
            *why = "timeout";
        if (done || *why) {
            sti();
            return *why ? 0 : done;
        }
        if (use_irq)
            sti_hlt();             /* the STI shadow covers the HLT: no wake-up is lost */
        else
            cpu_relax();
    }
}

int main(unsigned magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    size_t len;
    const char *mode = cmdline_value("mode", &len);
    bool random = mode && len == 4 && memcmp(mode, "rand", 4) == 0;
    uint32_t depth = cmdline_u32("depth", 1);
    uint32_t kib = cmdline_u32("kib", random ? 4 : 128);
    bool queued = depth > 1 || cmdline_u32("ncq", 0);
    uint32_t lcg = cmdline_u32("seed", 1);
    use_irq = cmdline_u32("irq", 1);
    tap_plan(3);
    if (depth < 1 || depth > MAX_DEPTH || kib < 1 || kib > 4096)
        panic("depth=1..32, kib=1..4096");
    req_sectors = kib * 2;
    uint32_t count = cmdline_u32("count", cmdline_u32("mib", 64) * 1024 / kib);

    uint16_t *id = dma_alloc(ATA_ID_WORDS * 2, 2);
    for (unsigned t = 0; t < depth; t++)
        buffers[t] = dma_alloc(kib * 1024, 0x1000);
    if (!id || !buffers[depth - 1])
        panic("dma_alloc");
    bool up = bring_up(id);
    uint64_t sectors = up ? ata_id_sectors48(id) : 0;
    bool ncq = (hba.cap & AHCI_CAP_SNCQ) && (id[ATA_ID_SATA_CAP] & ATA_ID_SATA_NCQ) &&
               (id[ATA_ID_QUEUE_DEPTH] & 0x1F) + 1u >= depth && hba.slots >= depth;
    tap_ok(up && sectors >= req_sectors,
           "ahci port %u: disk of %u sectors up (hba %04x:%04x)", PORT, (uint32_t)sectors,
           hba.pci.vendor, hba.pci.device);
    tap_ok(!queued || ncq, "ncq at depth %u: CAP.SNCQ %u, identify word 75 %04x, word 76 %04x",
           depth, !!(hba.cap & AHCI_CAP_SNCQ), id[ATA_ID_QUEUE_DEPTH], id[ATA_ID_SATA_CAP]);
    if (!up || sectors < req_sectors || (queued && !ncq))
        tap_done();
    uint32_t blocks = (uint32_t)(sectors > 0xFFFFFFFFu ? 0xFFFFFFFFu : sectors) / req_sectors;

    if (use_irq)
        ahci_irq_attach_intx(&hba, pci_irq(&hba.pci));
    irq_register(0, tick);
    pit_set_periodic(TICK_DIVISOR);
    pic_unmask(0);
    ahci_port_write(port, AHCI_PxIS, 0xFFFFFFFFu);
    ahci_write(&hba, AHCI_IS, 0xFFFFFFFFu);
    ahci_port_write(port, AHCI_PxIE, use_irq ? PORT_IE : 0);
    ahci_hba_irq_enable(&hba, use_irq);

    tap_diag("bench-start");
    uint64_t t0 = time_us();
    uint32_t issued = 0, completed = 0, inflight = 0, free_tags = (depth >= 32) ? 0xFFFFFFFFu
                                                                               : (1u << depth) - 1;
    const char *why = NULL;
    sti();
    while (completed < count) {
        uint32_t batch = 0;
        while (free_tags && issued < count) {
            unsigned tag = __builtin_ctz(free_tags);
            if (!prepare(tag, queued, request_lba(random, issued, blocks, &lcg))) {
                why = "slot prepare";
                break;
            }
            free_tags &= free_tags - 1;
            batch |= 1u << tag;
            issued++;
        }
        if (why)
            break;
        if (batch) {
            /* Issued with interrupts off, as a driver does under its port
             * lock: the completion interrupt comes after the write. */
            cli();
            ahci_slots_issue(port, batch, queued);
            sti();
            inflight |= batch;
        }
        uint32_t done = wait_done(inflight, queued, &why);
        if (!done)
            break;
        inflight &= ~done;
        free_tags |= done;
        for (uint32_t m = done; m; m &= m - 1) {
            check(__builtin_ctz(m));
            completed++;
        }
    }
    cli();
    uint64_t t1 = time_us();
    tap_diag("bench-end");
    ahci_hba_irq_enable(&hba, false);
    pic_mask(0);

    uint64_t us = t1 - t0;
    printf("# bench ahci %s %u KiB depth %u %s %s: %u requests in %u us (guest PIT), %u interrupts\n",
           random ? "rand" : "seq", kib, depth, queued ? "ncq" : "dma",
           use_irq ? "intx" : "polled", completed, (uint32_t)us, hba.irq_count);
    if (bad_sectors)
        tap_diag("lba %u: first word %08x", first_bad_lba, first_bad_word);
    if (why)
        tap_diag("%s with %u issued: slots in flight %08x, free %08x, PxCI %08x, PxSACT %08x, "
                 "PxIS %08x, PxTFD %08x", why, issued, inflight, free_tags,
                 ahci_port_read(port, AHCI_PxCI), ahci_port_read(port, AHCI_PxSACT),
                 ahci_port_read(port, AHCI_PxIS), ahci_port_read(port, AHCI_PxTFD));
    tap_ok(!why && completed == count && !bad_sectors,
           "%u of %u reads of %u KiB done%s%s, %u wrong sectors", completed, count, kib,
           why ? ": " : "", why ? why : "", bad_sectors);
    tap_done();
}

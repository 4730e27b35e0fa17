/*
 * ahci: a Serial ATA host bus adapter driven from reset to queued I/O on
 * several ports, the way an operating system's driver (or a BIOS) does it.
 *
 * The program finds the HBA by its PCI class (01h/06h, prog-if 01h), maps
 * its registers, resets it, reads what it can do, and brings every
 * implemented port up: command list and received-FIS area in memory, FIS
 * receive on, the link and the device's signature checked against what the
 * host put there, the command engine started.  Then, on the first disk:
 * IDENTIFY, PIO reads and writes (the PIO setup FIS), DMA reads and writes
 * through PRD tables that split sectors at odd places, flush, an error and
 * two ways back from it (engine restart, COMRESET); native command queuing
 * (several READ/WRITE FPDMA QUEUED in flight, on two ports at once, at full
 * queue depth); an ATAPI CD drive on its own port; interrupts by INTx
 * through the 8259 and by MSI through the local APIC; and hot-plug, where
 * the host removes and inserts a disk while the program watches.
 *
 * The host (tests/guest/test_ahci_guest.py) builds the images: every
 * sector of the image on port N holds (N << 24) + its LBA as a little-endian
 * u32, repeated (512-byte sectors on disks, 2048 on the CD), so data read
 * from the wrong disk is noticed too.  Sectors the program writes get
 * ata_written_word(lba, i, tag) (lib/ata.h), a tag per test, and the host
 * checks them in the images afterwards.
 *
 * Hot-plug needs the host to act in the middle of the run.  The handshake:
 * the program prints a diagnostic line
 *     # hotplug-request port N detach        (or: attach)
 * and then waits, at most HOTPLUG_WAIT_US, for the HBA to report the change
 * (the port-connect / PhyRdy change interrupt and the link state).  The
 * host watches the console, and on that line removes the disk from port N
 * (or inserts it again).  An HBA whose port is not hot-plug capable
 * (PxCMD.HPCP clear, and no external port: CAP.SXS/PxCMD.ESP) gets no
 * request: those tests report "# SKIP no hot-plug on this HBA".
 *
 * Command line:
 *   ports=N          the ports the HBA implements (required)
 *   pN=hd:SECTORS    a disk on port N with that many 512-byte sectors
 *   pN=cd:SECTORS    a CD/DVD drive on port N, medium of 2048-byte sectors
 *                    (ports not named must be empty)
 *   hotplug=N        the disk port the host hot-plugs (optional)
 *   model=TEXT       the disks' expected IDENTIFY model, '_' for ' '
 *   cdmodel=TEXT     the CD drive's expected model
 */
#include "runtime.h"

#include "ahci.h"
#include "ata.h"

#define TESTS 38
#define TIMEOUT_US        5000000u
#define LINK_WAIT_US      50000u       /* how long a port may take to show a device */
#define SIGNATURE_WAIT_US 1000000u
#define HOTPLUG_WAIT_US   10000000u    /* how long the host may take to hot-plug */
#define POISON 0xEE
#define NO_PORT 0xFF
#define SKIP_HOTPLUG "no hot-plug on this HBA"

/* What each port holds: (port << 24) + LBA in every sector. */
#define IMAGE_BASE(port) ((uint32_t)(port) << 24)

/* Where the write tests put their data (the host knows these too). */
#define LBA_PIO_WRITE   4096            /* disk A, 8 sectors, tag B1 */
#define LBA_DMA_WRITE   8192            /* disk A, 40 sectors, tag B2 */
#define LBA_NCQ_WRITE   16384           /* disk A, 8 x 16 sectors, tag B3 */
#define LBA_NCQ_WRITE_B 1024            /* disk B, 8 x 8 sectors, tag C1 */
#define LBA_HP_WRITE    100             /* hot-plugged disk, 8 sectors, tag D1 */
#define TAG_PIO_WRITE   0xB1
#define TAG_DMA_WRITE   0xB2
#define TAG_NCQ_WRITE   0xB3
#define TAG_NCQ_WRITE_B 0xC1
#define TAG_HP_WRITE    0xD1

/* Interrupt plumbing: where an unrouted PIRQ is sent, and the MSI vector. */
#define PIIX3_BDF       PCI_BDF(0, 1, 0)
#define PIIX_PIRQRC     0x60            /* PIRQRC[A-D], 60h-63h */
#define PIIX_PIRQ_OFF   0x80            /* IRQROUTEN: routing disabled */
#define DEFAULT_PCI_IRQ 11
#define MSI_VECTOR      0x60
#define LAPIC_SPURIOUS_VECTOR 0xFF
#define LAPIC_TPR       0x80
#define LAPIC_SVR       0xF0
#define LAPIC_SVR_ENABLE 0x100
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_LVT_LINT1 0x360
#define LAPIC_EXTINT    0x700
#define LAPIC_NMI       0x400

/* Interrupt enables the program uses: completions, errors, link changes. */
#define PORT_IE (AHCI_PxIS_DHRS | AHCI_PxIS_PSS | AHCI_PxIS_SDBS | AHCI_PxIS_ERRORS | \
                 AHCI_PxIS_PCS | AHCI_PxIS_PRCS)

/* SCSI for the CD (SPC-3, MMC-5). */
#define SCSI_TEST_UNIT_READY 0x00
#define SCSI_REQUEST_SENSE   0x03
#define SCSI_INQUIRY         0x12
#define SCSI_READ_CAPACITY   0x25
#define SCSI_READ_10         0x28
#define SK_ILLEGAL_REQUEST   0x5
#define ASC_LBA_OUT_OF_RANGE 0x21
#define READY_TRIES 10
#define CDB(...) ((const uint8_t[ATAPI_CDB_SIZE]){__VA_ARGS__})

struct expected {
    enum ata_kind kind;
    uint32_t sectors;
};

static struct ahci_hba hba;
static struct expected expect[AHCI_MAX_PORTS];
static unsigned nports;                    /* ports=N */
static struct ahci_port *disk_a, *disk_b, *cd, *hp;
static unsigned hp_index = NO_PORT;
static unsigned intx_irq;
static uint16_t id[ATA_ID_WORDS];
static uint8_t *big;                       /* 256 KiB, 64 KiB aligned */
static uint8_t *wbuf;                      /* 64 KiB to write from */
static uint8_t *ncq_a, *ncq_b;             /* 128 KiB each: NCQ data */
static uint8_t *small;                     /* 4 KiB: sense, inquiry, capacity */

/* ---- helpers ------------------------------------------------------------- */

static uint32_t sectors_of(const struct ahci_port *p)
{
    return p ? expect[p->index].sectors : 0;
}

static unsigned popcount(uint32_t v)
{
    unsigned n = 0;
    for (; v; v &= v - 1)
        n++;
    return n;
}

/* Check `count` sectors of buf against port p's image (tag 0) or a written
 * pattern, printing where the first difference is. */
static bool data_ok(const struct ahci_port *p, const void *buf, uint32_t lba, uint32_t count,
                    uint32_t sector_size, uint8_t tag)
{
    uint32_t got = 0, want = 0;
    uint32_t first = tag ? lba : IMAGE_BASE(p->index) + lba;
    uint32_t bad = ata_pattern_check(buf, first, count, sector_size, tag, &got, &want);
    if (bad != count)
        tap_diag("port %u lba %u: read %08x, expected %08x", p->index, lba + bad, got, want);
    return bad == count;
}

/* The byte at offset `at` of a transfer that started at `lba` (512-byte
 * sectors), for data split across buffers at any even boundary. */
static uint8_t expected_byte(const struct ahci_port *p, uint32_t lba, uint32_t at, uint8_t tag)
{
    uint32_t sector = lba + at / ATA_SECTOR_SIZE, word = (at % ATA_SECTOR_SIZE) / 4;
    uint32_t v = tag ? ata_written_word(sector, word, tag) : IMAGE_BASE(p->index) + sector;
    return (uint8_t)(v >> (8 * (at % 4)));
}

static bool scattered_ok(const struct ahci_port *p, const struct ahci_sg *sg, unsigned n,
                         uint32_t lba, uint8_t tag)
{
    uint32_t at = 0;
    for (unsigned i = 0; i < n; i++) {
        const uint8_t *b = sg[i].buf;
        for (uint32_t k = 0; k < sg[i].bytes; k++, at++)
            if (b[k] != expected_byte(p, lba, at, tag)) {
                tap_diag("buffer %u byte %u (transfer byte %u): %02x, expected %02x", i, k, at,
                         b[k], expected_byte(p, lba, at, tag));
                return false;
            }
    }
    return true;
}

/* Guard bytes around a buffer must keep their POISON. */
static bool guards_ok(const uint8_t *buf, uint32_t bytes, uint32_t guard)
{
    for (uint32_t k = 1; k <= guard; k++)
        if (buf[-(int32_t)k] != POISON || buf[bytes + k - 1] != POISON)
            return false;
    return true;
}

static bool rw_dma(struct ahci_port *p, bool write, uint64_t lba, uint32_t count, void *buf,
                   struct ahci_result *r)
{
    struct ata_cmd c = {.command = write ? ATA_CMD_WRITE_DMA_EXT : ATA_CMD_READ_DMA_EXT,
                        .lba = lba, .count = (uint16_t)count, .lba48 = true};
    if (!write)
        memset(buf, POISON, count * ATA_SECTOR_SIZE);
    return ahci_exec_ata(p, 0, &c, buf, count * ATA_SECTOR_SIZE, write, r);
}

static volatile uint8_t *d2h_fis(const struct ahci_port *p)
{
    return p->rfis + AHCI_RFIS_RFIS;
}

/* ---- the HBA ------------------------------------------------------------- */

static void test_controller(void)
{
    if (!ahci_hba_find(0, &hba)) {
        tap_diag("no ahci controller (pci class 0106, prog-if 01) with a memory bar5");
        tap_ok(false, "ahci controller present");
        tap_done();
    }
    uint16_t command = pci_read16(hba.pci.bdf, PCI_COMMAND);
    tap_diag("ahci controller %04x:%04x rev %02x at %02x:%02x.%x, abar %08x%s", hba.pci.vendor,
             hba.pci.device, hba.pci.revision, PCI_BUS(hba.pci.bdf), PCI_DEV(hba.pci.bdf),
             PCI_FN(hba.pci.bdf), (unsigned)hba.abar, hba.abar_assigned ? " (assigned here)" : "");
    tap_ok(hba.abar && (command & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)) ==
                           (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER),
           "ahci controller found by class 0106 prog-if 01: abar mapped, memory decoding and "
           "bus mastering on");
}

static void test_hba_reset(void)
{
    /* A BIOS may have left ports running with command lists in its own
     * memory: the HBA reset stops everything (and resets every port). */
    bool reset = ahci_hba_reset(&hba);
    uint32_t ghc = ahci_read(&hba, AHCI_GHC), is = ahci_read(&hba, AHCI_IS);
    bool idle = true;
    for (unsigned i = 0; i < AHCI_MAX_PORTS; i++)
        if (hba.pi & (1u << i))
            idle = ahci_port_idle(&hba.port[i]) && idle;
    tap_ok(reset && (ghc & AHCI_GHC_AE) && !(ghc & (AHCI_GHC_HR | AHCI_GHC_IE)) && is == 0 &&
               idle,
           "hba reset: GHC.HR cleared by the hba, ahci enabled, interrupts off, IS 0, every "
           "port idle (GHC %08x)", ghc);
}

static bool known_version(uint32_t vs)
{
    static const uint32_t versions[] = {0x00000905, 0x00010000, 0x00010100, 0x00010200,
                                        0x00010300, 0x00010301};
    for (unsigned i = 0; i < sizeof(versions) / sizeof(versions[0]); i++)
        if (vs == versions[i])
            return true;
    return false;
}

static void test_capabilities(void)
{
    uint32_t cap = hba.cap;
    tap_diag("cap %08x: %u ports, %u slots, gen %u, ncq %u, 64-bit %u, clo %u, sss %u, "
             "sxs %u, sam %u; cap2 %08x; pi %08x; ahci version %s", cap, AHCI_CAP_NP(cap) + 1,
             hba.slots, AHCI_CAP_ISS(cap), !!(cap & AHCI_CAP_SNCQ), !!(cap & AHCI_CAP_S64A),
             !!(cap & AHCI_CAP_SCLO), !!(cap & AHCI_CAP_SSS), !!(cap & AHCI_CAP_SXS),
             !!(cap & AHCI_CAP_SAM), hba.cap2, hba.pi, ahci_version_str(hba.vs));
    /* PI names the ports that exist; none may lie beyond CAP.NP + 1 (the
     * spec allows PI to have holes, and CAP.NP to count them). */
    unsigned highest = 0;
    for (unsigned i = 0; i < AHCI_MAX_PORTS; i++)
        if (hba.pi & (1u << i))
            highest = i;
    tap_ok(known_version(hba.vs) && hba.pi && popcount(hba.pi) == nports &&
               highest <= AHCI_CAP_NP(cap) && hba.slots >= 1,
           "cap/pi/vs: ahci %s, %u ports implemented (pi %08x, ports=%u), %u command slots",
           ahci_version_str(hba.vs), popcount(hba.pi), hba.pi, nports, hba.slots);
}

/* ---- ports --------------------------------------------------------------- */

static void test_port_setup(void)
{
    unsigned done = 0, want = 0;
    for (unsigned i = 0; i < AHCI_MAX_PORTS; i++) {
        if (!(hba.pi & (1u << i)))
            continue;
        want++;
        struct ahci_port *p = &hba.port[i];
        bool ok = ahci_port_setup(&hba, i, expect[i].kind != ATA_KIND_NONE ? SIGNATURE_WAIT_US
                                                                           : LINK_WAIT_US);
        uint32_t cmd = ahci_port_read(p, AHCI_PxCMD);
        /* The base registers keep what was written (CLB bits 9:0 and FB
         * bits 7:0 are reserved, so aligned addresses read back whole). */
        ok = ok && ahci_port_read(p, AHCI_PxCLB) == dma_phys(p->clist) &&
             ahci_port_read(p, AHCI_PxFB) == dma_phys(p->rfis) &&
             (cmd & (AHCI_PxCMD_FRE | AHCI_PxCMD_FR)) == (AHCI_PxCMD_FRE | AHCI_PxCMD_FR) &&
             !(cmd & (AHCI_PxCMD_ST | AHCI_PxCMD_CR));
        if (!ok)
            tap_diag("port %u: clb %08x fb %08x cmd %08x", i, ahci_port_read(p, AHCI_PxCLB),
                     ahci_port_read(p, AHCI_PxFB), cmd);
        done += ok;
    }
    tap_ok(want && done == want,
           "port bring-up on %u of %u ports: command list and received-fis area programmed "
           "and read back, FRE acknowledged by FR, engine still stopped", done, want);
}

static void test_presence(void)
{
    bool match = true;
    for (unsigned i = 0; i < AHCI_MAX_PORTS; i++) {
        if (!(hba.pi & (1u << i)))
            continue;
        struct ahci_port *p = &hba.port[i];
        enum ata_kind kind = ahci_port_classify(p, SIGNATURE_WAIT_US);
        uint32_t ssts = ahci_port_read(p, AHCI_PxSSTS);
        tap_diag("port %u: ssts %03x (det %u spd %u ipm %u), sig %08x = %s, tfd %04x, "
                 "cmd %08x", i, ssts, AHCI_SSTS_DET(ssts), AHCI_SSTS_SPD(ssts),
                 AHCI_SSTS_IPM(ssts), p->sig, ata_kind_name(kind),
                 ahci_port_read(p, AHCI_PxTFD), ahci_port_read(p, AHCI_PxCMD));
        bool want_device = expect[i].kind != ATA_KIND_NONE;
        /* A port with nothing behind it: no device, no link (DET 0). */
        if (want_device ? kind != expect[i].kind
                        : AHCI_SSTS_DET(ssts) != AHCI_DET_NONE || kind != ATA_KIND_NONE)
            match = false;
    }
    tap_ok(match, "device detection: PxSSTS.DET and PxSIG match the command line on every "
                  "port (disk 00000101, atapi eb140101, empty: det 0)");
}

static void test_start(void)
{
    unsigned started = 0, want = 0;
    for (unsigned i = 0; i < AHCI_MAX_PORTS; i++) {
        struct ahci_port *p = &hba.port[i];
        if (!(hba.pi & (1u << i)) || (p->kind != ATA_KIND_ATA && p->kind != ATA_KIND_ATAPI))
            continue;
        want++;
        if (ahci_port_start(p))
            started++;
        else
            tap_diag("port %u would not start: cmd %08x tfd %04x", i,
                     ahci_port_read(p, AHCI_PxCMD), ahci_port_read(p, AHCI_PxTFD));
    }
    tap_ok(want && started == want,
           "command engines started on %u of %u ports with a device: PxCMD.ST and CR set",
           started, want);
}

/* ---- disk A: identify, PIO, DMA ------------------------------------------ */

static void test_identify(void)
{
    struct ahci_result r;
    memset(id, 0, sizeof(id));
    memset((void *)(disk_a->rfis + AHCI_RFIS_PSFIS), 0, 20);
    bool ok = ahci_identify(disk_a, false, id, &r);
    volatile uint8_t *ps = disk_a->rfis + AHCI_RFIS_PSFIS;
    tap_diag("pio setup fis: type %02x flags %02x status %02x error %02x e_status %02x "
             "count %u", ps[0], ps[1], ps[2], ps[3], ps[15], ps[16] | ps[17] << 8);
    /* PIO data-in: the device sends a PIO setup FIS before the data, the HBA
     * copies it to the received-FIS area and sets PxIS.PSS. */
    tap_ok(ok && r.prdbc == 512 && ps[0] == FIS_TYPE_PIO_SETUP && (r.is & AHCI_PxIS_PSS) &&
               !(id[ATA_ID_CONFIG] & 0x8000),
           "identify device on port %u: 512 bytes (prdbc %u), pio setup fis received, word 0 "
           "%04x = ata (%s)", disk_a->index, r.prdbc, id[ATA_ID_CONFIG], ahci_result_str(&r));

    char model[41], expect_model[41];
    ata_id_string(id, ATA_ID_MODEL, 20, model);
    tap_diag("model \"%s\"", model);
    bool have = ata_test_expected_model(expect_model);
    tap_ok(have && !strncmp(model, expect_model, strlen(expect_model)),
           "model starts with \"%s\"", expect_model);

    uint64_t lba48 = ata_id_sectors48(id);
    uint32_t sectors = sectors_of(disk_a);
    tap_diag("sata capabilities (word 76) %04x, queue depth %u", id[ATA_ID_SATA_CAP],
             (id[ATA_ID_QUEUE_DEPTH] & 0x1F) + 1);
    tap_ok(sectors && (id[ATA_ID_COMMAND_SET_2] & (1u << 10)) && lba48 == sectors,
           "capacity: lba48 supported, words 100-103 %llu (p%u=hd:%u)", lba48, disk_a->index,
           sectors);
}

static void test_pio(void)
{
    /* READ SECTORS: a PIO command.  Over SATA each DRQ block is announced
     * by a PIO setup FIS; the HBA moves the data FISes through the PRDs. */
    struct ahci_result r, w;
    struct ata_cmd c = {.command = ATA_CMD_READ_SECTORS, .lba = 0, .count = 8};
    memset(big, POISON, 8 * ATA_SECTOR_SIZE);
    bool ok = ahci_exec_ata(disk_a, 0, &c, big, 8 * ATA_SECTOR_SIZE, false, &r);
    tap_ok(ok && r.prdbc == 8 * ATA_SECTOR_SIZE && (r.is & AHCI_PxIS_PSS) &&
               data_ok(disk_a, big, 0, 8, ATA_SECTOR_SIZE, 0),
           "read sectors (pio) lba 0-7: %u bytes, PxIS.PSS, image data (%s)", r.prdbc,
           ahci_result_str(&r));

    /* WRITE SECTORS: PIO data-out, the W bit in the command header. */
    ata_pattern_fill(wbuf, LBA_PIO_WRITE, 8, ATA_SECTOR_SIZE, TAG_PIO_WRITE);
    c = (struct ata_cmd){.command = ATA_CMD_WRITE_SECTORS, .lba = LBA_PIO_WRITE, .count = 8};
    bool wok = ahci_exec_ata(disk_a, 0, &c, wbuf, 8 * ATA_SECTOR_SIZE, true, &w);
    bool rok = rw_dma(disk_a, false, LBA_PIO_WRITE, 8, big, &r);
    tap_ok(wok && w.prdbc == 8 * ATA_SECTOR_SIZE && rok &&
               data_ok(disk_a, big, LBA_PIO_WRITE, 8, ATA_SECTOR_SIZE, TAG_PIO_WRITE),
           "write sectors (pio) lba %u-%u, read back by read dma ext (%s)", LBA_PIO_WRITE,
           LBA_PIO_WRITE + 7, ahci_result_str(&w));
}

static void test_dma_scatter_read(void)
{
    /* 24 sectors into three buffers whose sizes are not whole sectors
     * (1.5, 10.5 and 12 sectors), the last at a word-but-not-dword aligned
     * address, each cut into PRDs of at most 2 KiB: 1 + 3 + 3 entries.  16
     * guard bytes around each buffer must stay untouched. */
    memset(big, POISON, 0x20000);
    struct ahci_sg sg[3] = {
        {big + 0x0100, 768},
        {big + 0x3000, 5376},
        {big + 0x9002, 6144},
    };
    struct ahci_cmd c = {
        .tf = ahci_tf_from_ata(&(struct ata_cmd){.command = ATA_CMD_READ_DMA_EXT, .lba = 6000,
                                                 .count = 24, .lba48 = true}),
        .sg = sg, .nsg = 3, .prd_bytes = 2048,
    };
    struct ahci_result r;
    bool ok = ahci_exec(disk_a, 0, &c, &r);
    unsigned prds = disk_a->clist[0].prdtl;
    bool guards = true;
    for (int i = 0; i < 3; i++)
        guards = guards && guards_ok(sg[i].buf, sg[i].bytes, 16);
    tap_ok(ok && prds == 7 && r.prdbc == 24 * ATA_SECTOR_SIZE && scattered_ok(disk_a, sg, 3,
                                                                               6000, 0) &&
               guards,
           "read dma ext through %u prds of odd sizes: 24 sectors byte-exact, prdbc %u, guard "
           "bytes untouched (%s)", prds, r.prdbc, ahci_result_str(&r));
}

static void test_dma_scatter_write(void)
{
    /* 40 sectors written from four pieces (1000, 3096, 8192 and 8192
     * bytes), read back in one PRD. */
    uint8_t *src = big + 0x10000;
    memset(big, POISON, 0x20000);
    ata_pattern_fill(wbuf, LBA_DMA_WRITE, 40, ATA_SECTOR_SIZE, TAG_DMA_WRITE);
    struct ahci_sg sg[4] = {
        {src + 0x0000, 1000},
        {src + 0x1000, 3096},
        {src + 0x3000, 8192},
        {src + 0x6000, 8192},
    };
    uint32_t at = 0;
    for (int i = 0; i < 4; i++) {
        memcpy(sg[i].buf, wbuf + at, sg[i].bytes);
        at += sg[i].bytes;
    }
    struct ahci_cmd c = {
        .tf = ahci_tf_from_ata(&(struct ata_cmd){.command = ATA_CMD_WRITE_DMA_EXT,
                                                 .lba = LBA_DMA_WRITE, .count = 40,
                                                 .lba48 = true}),
        .write = true, .sg = sg, .nsg = 4,
    };
    struct ahci_result w, r;
    bool wok = ahci_exec(disk_a, 0, &c, &w);
    bool rok = rw_dma(disk_a, false, LBA_DMA_WRITE, 40, big, &r);
    tap_ok(at == 40 * ATA_SECTOR_SIZE && wok && w.prdbc == at && rok &&
               data_ok(disk_a, big, LBA_DMA_WRITE, 40, ATA_SECTOR_SIZE, TAG_DMA_WRITE),
           "write dma ext from 4 prds (1000/3096/8192/8192 bytes), lba %u-%u read back (%s)",
           LBA_DMA_WRITE, LBA_DMA_WRITE + 39, ahci_result_str(&w));
}

static void test_dma_large(void)
{
    /* The last 256 sectors (128 KiB) in one PRD, and the D2H register FIS
     * that ends a DMA command. */
    uint32_t lba = sectors_of(disk_a) - 256;
    memset((void *)d2h_fis(disk_a), 0, 20);
    struct ahci_result r;
    bool ok = rw_dma(disk_a, false, lba, 256, big, &r);
    volatile uint8_t *d2h = d2h_fis(disk_a);
    tap_diag("d2h fis: type %02x flags %02x status %02x error %02x", d2h[0], d2h[1], d2h[2],
             d2h[3]);
    tap_ok(ok && r.prdbc == 256 * ATA_SECTOR_SIZE && (r.is & AHCI_PxIS_DHRS) &&
               d2h[0] == FIS_TYPE_REG_D2H && (d2h[2] & (ATA_SR_DRDY | ATA_SR_ERR | ATA_SR_BSY)) ==
                   ATA_SR_DRDY && data_ok(disk_a, big, lba, 256, ATA_SECTOR_SIZE, 0),
           "read dma ext, last 256 sectors (lba %u) in one 128 KiB prd: d2h register fis "
           "status %02x, PxIS.DHRS", lba, d2h[2]);
}

static void test_flush(void)
{
    struct ahci_result r;
    struct ata_cmd c = {.command = ATA_CMD_FLUSH_CACHE_EXT};
    memset((void *)d2h_fis(disk_a), 0, 20);
    bool ok = ahci_exec_ata(disk_a, 0, &c, NULL, 0, false, &r);
    tap_ok(ok && (r.is & AHCI_PxIS_DHRS) && d2h_fis(disk_a)[0] == FIS_TYPE_REG_D2H &&
               r.prdbc == 0,
           "flush cache ext: no data, d2h register fis, PxIS.DHRS (%s)", ahci_result_str(&r));
}

static void test_disk_b(void)
{
    /* The second disk, on its own port: its own identity and size. */
    struct ahci_result r;
    uint16_t idb[ATA_ID_WORDS];
    memset(idb, 0, sizeof(idb));
    bool ok = disk_b && ahci_identify(disk_b, false, idb, &r);
    char model[41], expect_model[41];
    ata_id_string(idb, ATA_ID_MODEL, 20, model);
    ata_test_expected_model(expect_model);
    uint64_t n = ata_id_sectors48(idb);
    struct ahci_result rr;
    bool rok = ok && rw_dma(disk_b, false, 10, 8, big, &rr) &&
               data_ok(disk_b, big, 10, 8, ATA_SECTOR_SIZE, 0);
    tap_ok(ok && !strncmp(model, expect_model, strlen(expect_model)) && n == sectors_of(disk_b) &&
               rok,
           "second disk on port %u: identify %llu sectors, model as expected, its own data",
           disk_b ? disk_b->index : NO_PORT, n);
}

/* ---- errors and recovery -------------------------------------------------- */

static void test_error(void)
{
    /* An LBA past the end: the device ends with ERR (IDNF, or ABRT), the
     * HBA sets PxIS.TFES, stops processing the list, moves no data. */
    uint32_t lba = sectors_of(disk_a);
    struct ahci_result r;
    memset(big, POISON, 8 * ATA_SECTOR_SIZE);
    rw_dma(disk_a, false, lba, 8, big, &r);
    uint32_t cmd = ahci_port_read(disk_a, AHCI_PxCMD);
    tap_diag("after the error: %s, ci %08x, PxCMD.CCS %u", ahci_result_str(&r),
             ahci_port_read(disk_a, AHCI_PxCI), AHCI_PxCMD_CCS(cmd));
    /* The first step of every recovery: stop the engine.  That also drops
     * the failed command: the HBA clears PxCI (AHCI 3.3.14). */
    bool stopped = ahci_port_stop_engine(disk_a);
    tap_diag("engine stopped (%d): ci %08x, is %08x, tfd %04x", stopped,
             ahci_port_read(disk_a, AHCI_PxCI), ahci_port_read(disk_a, AHCI_PxIS),
             ahci_port_read(disk_a, AHCI_PxTFD));
    tap_ok(!r.timeout && (r.is & AHCI_PxIS_TFES) && (r.status & ATA_SR_ERR) &&
               (r.error & (ATA_ER_IDNF | ATA_ER_ABRT)) && r.prdbc == 0 && big[0] == POISON,
           "read dma ext at lba %u (past the end): PxIS.TFES, PxTFD.ERR with error %02x, no "
           "data moved", lba, r.error);
}

static void test_recover_restart(void)
{
    /* AHCI 6.2.2.1: ST off (wait CR), clear SERR and IS, CLO or COMRESET if
     * the device still looks busy, ST on; then a good command. */
    const char *how = "";
    bool recovered = ahci_port_recover(disk_a, &how);
    struct ahci_result r;
    bool ok = recovered && rw_dma(disk_a, false, 7000, 8, big, &r) &&
              data_ok(disk_a, big, 7000, 8, ATA_SECTOR_SIZE, 0);
    tap_ok(ok, "recovery by %s (ST off, errors cleared, ST on): read dma ext works again",
           how);
}

static void test_comreset(void)
{
    /* COMRESET: reset the link and the device.  The device answers with
     * its signature in a D2H register FIS (count 01h, lba 01h/00h/00h),
     * which lands in the received-FIS area since FRE stayed on. */
    bool stopped = ahci_port_stop_engine(disk_a);
    memset((void *)d2h_fis(disk_a), 0, 20);
    bool reset = stopped && ahci_port_comreset(disk_a);
    uint8_t d2h[20];
    for (int i = 0; i < 20; i++)
        d2h[i] = d2h_fis(disk_a)[i];
    uint32_t sig = ahci_port_read(disk_a, AHCI_PxSIG);
    tap_diag("after comreset: ssts %03x sig %08x tfd %04x, d2h fis %02x: count %02x lba "
             "%02x %02x %02x", ahci_port_read(disk_a, AHCI_PxSSTS), sig,
             ahci_port_read(disk_a, AHCI_PxTFD), d2h[0], d2h[12], d2h[4], d2h[5], d2h[6]);
    ahci_port_write(disk_a, AHCI_PxIS, 0xFFFFFFFFu);
    bool started = ahci_port_start(disk_a);
    struct ahci_result r;
    bool ok = started && rw_dma(disk_a, false, 7100, 8, big, &r) &&
              data_ok(disk_a, big, 7100, 8, ATA_SECTOR_SIZE, 0);
    tap_ok(reset && sig == AHCI_SIG_ATA && d2h[0] == FIS_TYPE_REG_D2H && d2h[12] == 1 &&
               d2h[4] == 1 && d2h[5] == 0 && d2h[6] == 0 && ok,
           "comreset (PxSCTL.DET 1 then 0): link back, signature fis 00000101 received, port "
           "restarted, read dma ext works");
}

/* ---- native command queuing ----------------------------------------------- */

static bool ncq_supported;
static unsigned ncq_depth;

/* Prepare an NCQ command in slot `tag` (tag = slot). */
static bool ncq_prepare(struct ahci_port *p, unsigned tag, bool write, uint64_t lba,
                        uint16_t count, void *buf)
{
    struct ahci_sg sg = {buf, (uint32_t)count * ATA_SECTOR_SIZE};
    struct ahci_cmd c = {.tf = ahci_tf_ncq(write, lba, count, tag), .write = write, .sg = &sg,
                         .nsg = 1};
    if (!write)
        memset(buf, POISON, sg.bytes);
    return ahci_slot_prepare(p, tag, &c);
}

static bool sdb_fis_ok(const struct ahci_port *p, uint32_t issued)
{
    /* Set Device Bits FIS: type A1h, I bit, status without ERR, and the
     * SActive field naming the tags it completes (a subset of ours). */
    volatile const uint8_t *sdb = p->rfis + AHCI_RFIS_SDBFIS;
    uint32_t sactive = sdb[4] | sdb[5] << 8 | sdb[6] << 16 | (uint32_t)sdb[7] << 24;
    bool ok = sdb[0] == FIS_TYPE_DEV_BITS && (sdb[1] & FIS_FLAG_I) && !(sdb[2] & ATA_SR_ERR) &&
              sactive && !(sactive & ~issued);
    if (!ok)
        tap_diag("port %u sdb fis: %02x %02x %02x %02x sactive %08x (issued %08x)", p->index,
                 sdb[0], sdb[1], sdb[2], sdb[3], sactive, issued);
    return ok;
}

static bool ncq_skip(void)
{
    if (ncq_supported)
        return false;
    tap_skip("no ncq (CAP.SNCQ %u, identify word 76 %04x)", !!(hba.cap & AHCI_CAP_SNCQ),
             id[ATA_ID_SATA_CAP]);
    return true;
}

static void test_ncq_reads(void)
{
    if (ncq_skip())
        return;
    /* Eight READ FPDMA QUEUED in slots 0-7, issued by one PxCI write. */
    uint32_t mask = 0xFF;
    bool prepared = true;
    for (unsigned t = 0; t < 8; t++)
        prepared = ncq_prepare(disk_a, t, false, 20000 + 997 * t, 8, ncq_a + t * 4096) &&
                   prepared;
    memset((void *)(disk_a->rfis + AHCI_RFIS_SDBFIS), 0, 8);
    ahci_slots_issue(disk_a, mask, true);
    struct ahci_result r;
    bool ok = prepared && ahci_wait_slots(disk_a, mask, true, TIMEOUT_US, &r);
    bool data = true;
    for (unsigned t = 0; t < 8; t++)
        data = data_ok(disk_a, ncq_a + t * 4096, 20000 + 997 * t, 8, ATA_SECTOR_SIZE, 0) && data;
    tap_ok(ok && data && (r.is & AHCI_PxIS_SDBS) && sdb_fis_ok(disk_a, mask),
           "ncq: 8 read fpdma queued at once, PxSACT and PxCI clear, set device bits fis, data "
           "in every slot's buffer (%s)", ahci_result_str(&r));
}

static void test_ncq_writes(void)
{
    if (ncq_skip())
        return;
    /* Eight WRITE FPDMA QUEUED of 16 sectors, then eight reads back. */
    uint32_t mask = 0xFF;
    bool prepared = true;
    ata_pattern_fill(wbuf, LBA_NCQ_WRITE, 128, ATA_SECTOR_SIZE, TAG_NCQ_WRITE);
    for (unsigned t = 0; t < 8; t++)
        prepared = ncq_prepare(disk_a, t, true, LBA_NCQ_WRITE + 16 * t, 16, wbuf + t * 8192) &&
                   prepared;
    ahci_slots_issue(disk_a, mask, true);
    struct ahci_result w, r;
    bool wok = prepared && ahci_wait_slots(disk_a, mask, true, TIMEOUT_US, &w);
    /* Read back in slots 8-15, in the opposite order of LBAs. */
    prepared = true;
    for (unsigned t = 0; t < 8; t++)
        prepared = ncq_prepare(disk_a, 8 + t, false, LBA_NCQ_WRITE + 16 * (7 - t), 16,
                               ncq_a + t * 8192) && prepared;
    ahci_slots_issue(disk_a, mask << 8, true);
    bool rok = prepared && ahci_wait_slots(disk_a, mask << 8, true, TIMEOUT_US, &r);
    bool data = true;
    for (unsigned t = 0; t < 8; t++)
        data = data_ok(disk_a, ncq_a + t * 8192, LBA_NCQ_WRITE + 16 * (7 - t), 16,
                       ATA_SECTOR_SIZE, TAG_NCQ_WRITE) && data;
    tap_ok(wok && rok && data,
           "ncq: 8 write fpdma queued (lba %u-%u), read back by 8 queued reads in slots 8-15 "
           "(%s)", LBA_NCQ_WRITE, LBA_NCQ_WRITE + 127, ahci_result_str(&w));
}

static void test_ncq_two_ports(void)
{
    if (ncq_skip())
        return;
    bool ok = disk_b != NULL;
    /* Port A: 16 reads.  Port B: 8 writes and 8 reads.  All 32 commands
     * are issued before either port is waited for. */
    bool prepared = ok;
    for (unsigned t = 0; ok && t < 16; t++)
        prepared = ncq_prepare(disk_a, t, false, 30000 + 613 * t, 4, ncq_a + t * 2048) &&
                   prepared;
    ata_pattern_fill(wbuf, LBA_NCQ_WRITE_B, 64, ATA_SECTOR_SIZE, TAG_NCQ_WRITE_B);
    for (unsigned t = 0; ok && t < 8; t++) {
        prepared = ncq_prepare(disk_b, t, true, LBA_NCQ_WRITE_B + 8 * t, 8, wbuf + t * 4096) &&
                   prepared;
        prepared = ncq_prepare(disk_b, 8 + t, false, 5000 + 300 * t, 8, ncq_b + t * 4096) &&
                   prepared;
    }
    struct ahci_result ra, rb, rr;
    bool aok = false, bok = false;
    if (prepared) {
        ahci_slots_issue(disk_a, 0xFFFF, true);
        ahci_slots_issue(disk_b, 0xFFFF, true);
        aok = ahci_wait_slots(disk_a, 0xFFFF, true, TIMEOUT_US, &ra);
        bok = ahci_wait_slots(disk_b, 0xFFFF, true, TIMEOUT_US, &rb);
    }
    bool data = aok && bok;
    for (unsigned t = 0; data && t < 16; t++)
        data = data_ok(disk_a, ncq_a + t * 2048, 30000 + 613 * t, 4, ATA_SECTOR_SIZE, 0);
    for (unsigned t = 0; data && t < 8; t++)
        data = data_ok(disk_b, ncq_b + t * 4096, 5000 + 300 * t, 8, ATA_SECTOR_SIZE, 0);
    /* What port B wrote, read back by an ordinary DMA read. */
    bool back = data && rw_dma(disk_b, false, LBA_NCQ_WRITE_B, 64, big, &rr) &&
                data_ok(disk_b, big, LBA_NCQ_WRITE_B, 64, ATA_SECTOR_SIZE, TAG_NCQ_WRITE_B);
    tap_ok(prepared && data && back,
           "ncq on two ports at once: 16 reads on port %u, 8 writes + 8 reads on port %u, all "
           "data right, port %u's writes read back", disk_a->index,
           disk_b ? disk_b->index : NO_PORT, disk_b ? disk_b->index : NO_PORT);
}

static void test_ncq_depth(void)
{
    if (ncq_skip())
        return;
    /* As many queued reads as both the HBA (CAP.NCS) and the device
     * (IDENTIFY word 75) take: 32 on an HBA with 32 slots. */
    unsigned n = ncq_depth;
    uint32_t mask = n >= 32 ? 0xFFFFFFFFu : (1u << n) - 1;
    bool prepared = true;
    for (unsigned t = 0; t < n; t++)
        prepared = ncq_prepare(disk_a, t, false, 40000 + 1500 * t, 4, ncq_a + t * 2048) &&
                   prepared;
    ahci_slots_issue(disk_a, mask, true);
    struct ahci_result r;
    bool ok = prepared && ahci_wait_slots(disk_a, mask, true, TIMEOUT_US, &r);
    bool data = true;
    for (unsigned t = 0; t < n; t++)
        data = data_ok(disk_a, ncq_a + t * 2048, 40000 + 1500 * t, 4, ATA_SECTOR_SIZE, 0) &&
               data;
    tap_ok(ok && data && n >= 2,
           "ncq at full queue depth: %u queued reads (slots %u, device depth %u), all "
           "complete with the right data (%s)", n, hba.slots,
           (id[ATA_ID_QUEUE_DEPTH] & 0x1F) + 1, ahci_result_str(&r));
}

/* ---- ATAPI ---------------------------------------------------------------- */

/* A PACKET command; a CHECK CONDITION stops the port (TFES), which is then
 * recovered so the next command (REQUEST SENSE, usually) can run. */
static bool cd_packet(const uint8_t *cdb, void *buf, uint32_t len, bool dma, uint16_t limit,
                      struct ahci_result *r)
{
    bool ok = ahci_atapi(cd, cdb, buf, len, dma, limit, r);
    if (!ok && !r->timeout)
        ahci_port_recover(cd, NULL);
    return ok;
}

static bool cd_sense(uint8_t *key, uint8_t *asc, uint8_t *ascq)
{
    struct ahci_result r;
    memset(small, 0, 18);
    bool ok = cd_packet(CDB(SCSI_REQUEST_SENSE, 0, 0, 0, 18), small, 18, false, 18, &r);
    if (!ok || (small[0] & 0x7F) != 0x70)
        tap_diag("request sense: %s, prdbc %u, response code %02x", ahci_result_str(&r),
                 r.prdbc, small[0]);
    *key = small[2] & 0x0F;
    *asc = small[12];
    *ascq = small[13];
    return ok && (small[0] & 0x7F) == 0x70;
}

static void read10_cdb(uint8_t *cdb, uint32_t lba, uint16_t count)
{
    memset(cdb, 0, ATAPI_CDB_SIZE);
    cdb[0] = SCSI_READ_10;
    put_be32(cdb + 2, lba);
    put_be16(cdb + 7, count);
}

static void test_atapi_identify(void)
{
    struct ahci_result r;
    memset(id, 0, sizeof(id));
    bool ok = cd && ahci_identify(cd, true, id, &r);
    uint16_t w0 = id[ATA_ID_CONFIG];
    tap_ok(ok && (w0 >> 14) == 2 && ((w0 >> 8) & 0x1F) == 0x05 && r.prdbc == 512,
           "atapi port %u: identify packet device, word 0 %04x = atapi, cd/dvd (%s)",
           cd ? cd->index : NO_PORT, w0, ahci_result_str(&r));
    char model[41], expect_model[41] = "";
    ata_id_string(id, ATA_ID_MODEL, 20, model);
    tap_diag("model \"%s\"", model);
    size_t len = 0, n = 0;
    const char *want = cmdline_value("cdmodel", &len);
    for (; want && n < len && n < 40; n++)
        expect_model[n] = want[n] == '_' ? ' ' : want[n];
    expect_model[n] = '\0';
    tap_ok(n && !strncmp(model, expect_model, n), "model starts with \"%s\"", expect_model);
}

static void test_atapi_ready_inquiry(void)
{
    /* TEST UNIT READY until GOOD: the first may be a UNIT ATTENTION. */
    struct ahci_result r;
    unsigned tries;
    bool ready = false;
    for (tries = 1; cd && tries <= READY_TRIES && !ready; tries++) {
        ready = cd_packet(CDB(SCSI_TEST_UNIT_READY), NULL, 0, false, 0, &r);
        if (!ready) {
            uint8_t key, asc, ascq;
            cd_sense(&key, &asc, &ascq);
            tap_diag("test unit ready: sense %02x/%02x/%02x", key, asc, ascq);
            mdelay(10);
        }
    }
    memset(small, 0, 96);
    bool ok = ready && cd_packet(CDB(SCSI_INQUIRY, 0, 0, 0, 96), small, 96, false, 96, &r);
    char vendor[9], product[17];
    memcpy(vendor, small + 8, 8);
    vendor[8] = '\0';
    memcpy(product, small + 16, 16);
    product[16] = '\0';
    tap_diag("inquiry: vendor \"%s\" product \"%s\", %u bytes", vendor, product, r.prdbc);
    tap_ok(ok && (small[0] & 0x1F) == 0x05 && (small[1] & 0x80) && r.prdbc >= 36,
           "test unit ready, then inquiry: peripheral type %02x (cd/dvd), removable",
           small[0] & 0x1F);
}

static void test_atapi_capacity(void)
{
    struct ahci_result r;
    memset(small, 0, 8);
    bool ok = cd && cd_packet(CDB(SCSI_READ_CAPACITY), small, 8, false, 8, &r);
    uint32_t last = be32(small), block = be32(small + 4), want = sectors_of(cd);
    tap_ok(ok && want && last == want - 1 && block == ATAPI_SECTOR_SIZE,
           "read capacity: last lba %u, block %u", last, block);
}

static void test_atapi_read_dma(void)
{
    /* READ(10) by DMA into three buffers: 5 + 3 + 8 sectors. */
    uint8_t cdb[ATAPI_CDB_SIZE];
    read10_cdb(cdb, 100, 16);
    memset(big, POISON, 0x20000);
    struct ahci_sg sg[3] = {
        {big + 0x0000, 5 * ATAPI_SECTOR_SIZE},
        {big + 0x8000, 3 * ATAPI_SECTOR_SIZE},
        {big + 0x10000, 8 * ATAPI_SECTOR_SIZE},
    };
    struct ahci_cmd c = {
        .tf = {.command = ATA_CMD_PACKET, .features = 0x01},   /* DMA */
        .cdb = cdb, .sg = sg, .nsg = 3,
    };
    struct ahci_result r;
    bool ok = cd && ahci_exec(cd, 0, &c, &r);
    if (!ok && cd)
        ahci_port_recover(cd, NULL);
    bool data = ok && data_ok(cd, sg[0].buf, 100, 5, ATAPI_SECTOR_SIZE, 0) &&
                data_ok(cd, sg[1].buf, 105, 3, ATAPI_SECTOR_SIZE, 0) &&
                data_ok(cd, sg[2].buf, 108, 8, ATAPI_SECTOR_SIZE, 0);
    tap_ok(data && r.prdbc == 16 * ATAPI_SECTOR_SIZE,
           "read(10) by dma, 16 sectors at lba 100 into 3 prds (%s)", ahci_result_str(&r));
}

static void test_atapi_read_pio(void)
{
    /* The same by PIO: the byte count limit (one sector) makes the device
     * send four DRQ blocks, each announced by a PIO setup FIS; the HBA
     * puts them one after the other through the PRDs. */
    uint8_t cdb[ATAPI_CDB_SIZE];
    read10_cdb(cdb, 20, 4);
    memset(big, POISON, 4 * ATAPI_SECTOR_SIZE);
    struct ahci_result r;
    bool ok = cd && cd_packet(cdb, big, 4 * ATAPI_SECTOR_SIZE, false, ATAPI_SECTOR_SIZE, &r);
    tap_ok(ok && r.prdbc == 4 * ATAPI_SECTOR_SIZE && (r.is & AHCI_PxIS_PSS) &&
               data_ok(cd, big, 20, 4, ATAPI_SECTOR_SIZE, 0),
           "read(10) by pio, 4 sectors at lba 20 with a 2048-byte limit: prdbc %u, PxIS.PSS",
           r.prdbc);
}

static void test_atapi_error(void)
{
    /* READ(10) past the end: CHECK CONDITION.  The error register carries
     * the sense key in bits 7:4; REQUEST SENSE gives the whole story. */
    uint8_t cdb[ATAPI_CDB_SIZE];
    uint32_t n = sectors_of(cd);
    read10_cdb(cdb, n ? n - 1 : 0, 2);
    struct ahci_result r;
    bool good = cd && ahci_atapi(cd, cdb, big, 2 * ATAPI_SECTOR_SIZE, true, 0, &r);
    const char *how = "";
    bool recovered = cd && ahci_port_recover(cd, &how);
    tap_diag("check condition: %s; recovery by %s, then ci %08x tfd %04x", ahci_result_str(&r),
             how, cd ? ahci_port_read(cd, AHCI_PxCI) : 0, cd ? ahci_port_read(cd, AHCI_PxTFD) : 0);
    uint8_t key = 0, asc = 0, ascq = 0;
    bool sense = recovered && cd_sense(&key, &asc, &ascq);
    tap_ok(!good && !r.timeout && (r.is & AHCI_PxIS_TFES) && (r.status & ATA_SR_ERR) &&
               ATAPI_ER_SENSE_KEY(r.error) == SK_ILLEGAL_REQUEST && sense &&
               key == SK_ILLEGAL_REQUEST && asc == ASC_LBA_OUT_OF_RANGE,
           "read(10) past the end: PxIS.TFES, error %02x (sense key %x), after recovery "
           "request sense %02x/%02x/%02x", r.error, ATAPI_ER_SENSE_KEY(r.error), key, asc,
           ascq);
}

/* ---- interrupts ----------------------------------------------------------- */

/* What a BIOS does for a PCI function's INTx on the PIIX3: pin P of the
 * device in slot S of bus 0 drives PIRQ[(S - 1 + P - 1) mod 4] (the board's
 * wiring, as QEMU's pc and SeaBIOS have it), which PIRQRC routes to an ISA
 * IRQ, level triggered (ELCR).  A BIOS that ran left the routing in place;
 * otherwise we pick one. */
static unsigned route_intx(void)
{
    pci_bdf_t bdf = hba.pci.bdf;
    uint8_t pin = pci_read8(bdf, PCI_INTERRUPT_PIN);
    if (pin < 1 || pin > 4)
        return 0;
    unsigned link = (PCI_DEV(bdf) - 1 + pin - 1) & 3;
    uint8_t route = pci_read8(PIIX3_BDF, PIIX_PIRQRC + link);
    bool assigned = route & PIIX_PIRQ_OFF;
    unsigned irq = assigned ? DEFAULT_PCI_IRQ : (route & 0x0F);
    if (assigned)
        pci_write8(PIIX3_BDF, PIIX_PIRQRC + link, (uint8_t)irq);
    pci_write8(bdf, PCI_INTERRUPT_LINE, (uint8_t)irq);
    pic_set_level_triggered(irq, true);
    tap_diag("intx: pin %c -> pirq%c -> irq %u (%s)", 'A' + pin - 1, 'A' + link, irq,
             assigned ? "routed here" : "routed by the bios");
    return irq;
}

static void enable_port_irqs(struct ahci_port *p, uint32_t mask)
{
    ahci_port_write(p, AHCI_PxIS, 0xFFFFFFFFu);
    p->irq_is = 0;
    ahci_port_write(p, AHCI_PxIE, mask);
}

static void test_intx(void)
{
    intx_irq = route_intx();
    unsigned bit = 1u << intx_irq;
    ahci_irq_attach_intx(&hba, intx_irq);
    enable_port_irqs(disk_a, PORT_IE);
    if (disk_b)
        enable_port_irqs(disk_b, PORT_IE);
    ahci_write(&hba, AHCI_IS, 0xFFFFFFFFu);
    ahci_hba_irq_enable(&hba, true);

    /* READ DMA EXT with interrupts blocked in the CPU: once it completes,
     * the (level-triggered) line is up in the PIC's request register; then
     * the handler runs once and the line goes down. */
    unsigned seen = hba.irq_count;
    struct ata_cmd c = {.command = ATA_CMD_READ_DMA_EXT, .lba = 9000, .count = 16, .lba48 = true};
    struct ahci_sg sg = {big, 16 * ATA_SECTOR_SIZE};
    struct ahci_cmd cmd = {.tf = ahci_tf_from_ata(&c), .sg = &sg, .nsg = 1};
    memset(big, POISON, sg.bytes);
    bool prepared = ahci_slot_prepare(disk_a, 0, &cmd);
    ahci_slots_issue(disk_a, 1, false);
    bool completed = WAIT_FOR(!(ahci_port_read(disk_a, AHCI_PxCI) & 1) &&
                                  (ahci_port_read(disk_a, AHCI_PxIS) & AHCI_PxIS_DHRS),
                              TIMEOUT_US);
    bool asserted = pic_read_irr() & bit;
    bool irq = ahci_wait_irq(&hba, seen, TIMEOUT_US);
    udelay(1000);                        /* room for a second, unwanted delivery */
    bool deasserted = !(pic_read_irr() & bit);
    unsigned count = hba.irq_count - seen;
    uint32_t got = disk_a->irq_is;
    tap_diag("intx: %u interrupt(s), IS %08x, port %u PxIS %08x, %u with IS 0", count,
             hba.irq_last_is, disk_a->index, got, hba.irq_empty);
    tap_ok(prepared && completed && asserted && irq && count == 1 && deasserted &&
               (hba.irq_last_is & (1u << disk_a->index)) && (got & AHCI_PxIS_DHRS) &&
               data_ok(disk_a, big, 9000, 16, ATA_SECTOR_SIZE, 0),
           "intx on irq %u: line asserted after the command, one interrupt, the handler found "
           "IS bit %u and PxIS.DHRS, line deasserted once PxIS and IS were cleared",
           intx_irq, disk_a->index);
}

static void test_ncq_irq(void)
{
    if (ncq_skip())
        return;
    /* Queued reads on two ports, completion by set device bits interrupts. */
    bool prepared = disk_b != NULL;
    for (unsigned t = 0; prepared && t < 8; t++) {
        prepared = ncq_prepare(disk_a, t, false, 50000 + 333 * t, 8, ncq_a + t * 4096) &&
                   prepared;
        prepared = ncq_prepare(disk_b, t, false, 6000 + 222 * t, 8, ncq_b + t * 4096) &&
                   prepared;
    }
    struct ahci_result ra, rb;
    bool ok = false;
    unsigned ia = disk_a->irq_count, ib = disk_b ? disk_b->irq_count : 0;
    if (prepared) {
        disk_a->irq_is = disk_b->irq_is = 0;
        ahci_slots_issue(disk_a, 0xFF, true);
        ahci_slots_issue(disk_b, 0xFF, true);
        bool aok = ahci_wait_slots_irq(disk_a, 0xFF, true, TIMEOUT_US, &ra);
        bool bok = ahci_wait_slots_irq(disk_b, 0xFF, true, TIMEOUT_US, &rb);
        ok = aok && bok;
    }
    bool data = ok;
    for (unsigned t = 0; data && t < 8; t++)
        data = data_ok(disk_a, ncq_a + t * 4096, 50000 + 333 * t, 8, ATA_SECTOR_SIZE, 0) &&
               data_ok(disk_b, ncq_b + t * 4096, 6000 + 222 * t, 8, ATA_SECTOR_SIZE, 0);
    unsigned na = disk_a->irq_count - ia, nb = disk_b ? disk_b->irq_count - ib : 0;
    tap_diag("ncq by interrupts: port %u %u interrupts (PxIS %08x), port %u %u (PxIS %08x)",
             disk_a->index, na, ra.is, disk_b ? disk_b->index : NO_PORT, nb, rb.is);
    tap_ok(data && na >= 1 && nb >= 1 && (ra.is & AHCI_PxIS_SDBS) && (rb.is & AHCI_PxIS_SDBS),
           "ncq by interrupts: 8 queued reads on each of two ports, completions seen by the "
           "handler as PxIS.SDBS on both ports, all data right");
}

static void spurious_handler(struct int_frame *frame)
{
    (void)frame;                          /* the spurious vector gets no EOI */
}

static void lapic_enable(void)
{
    /* Software-enable the local APIC (SVR bit 8) with LINT0 as ExtINT, so
     * the 8259 keeps reaching the CPU ("virtual wire"), and accept every
     * priority (TPR 0). */
    int_register(LAPIC_SPURIOUS_VECTOR, spurious_handler);
    mmio_write32(LAPIC_BASE + LAPIC_TPR, 0);
    uint32_t svr = lapic_read(LAPIC_SVR);
    mmio_write32(LAPIC_BASE + LAPIC_SVR, (svr & ~0xFFu) | LAPIC_SVR_ENABLE |
                                             LAPIC_SPURIOUS_VECTOR);
    mmio_write32(LAPIC_BASE + LAPIC_LVT_LINT0, LAPIC_EXTINT);
    mmio_write32(LAPIC_BASE + LAPIC_LVT_LINT1, LAPIC_NMI);
}

static void test_msi(void)
{
    /* MSI: the HBA writes the vector to the local APIC instead of raising
     * INTx.  With INTx masked at the PIC (but still visible in its request
     * register) the line must stay down. */
    ahci_irq_detach_intx(&hba, intx_irq);
    lapic_enable();
    bool msi = ahci_irq_attach_msi(&hba, MSI_VECTOR);
    uint8_t cap = pci_find_capability(hba.pci.bdf, PCI_CAP_ID_MSI);
    tap_diag("msi capability at %02x, control %04x", cap,
             cap ? pci_read16(hba.pci.bdf, cap + 2) : 0);
    unsigned seen = hba.irq_count;
    disk_a->irq_is = 0;
    struct ahci_result r;
    memset(big, POISON, 8 * ATA_SECTOR_SIZE);
    struct ahci_sg sg = {big, 8 * ATA_SECTOR_SIZE};
    struct ata_cmd c = {.command = ATA_CMD_READ_DMA_EXT, .lba = 9500, .count = 8, .lba48 = true};
    struct ahci_cmd cmd = {.tf = ahci_tf_from_ata(&c), .sg = &sg, .nsg = 1};
    bool prepared = msi && ahci_slot_prepare(disk_a, 0, &cmd);
    if (prepared)
        ahci_slots_issue(disk_a, 1, false);
    bool completed = prepared &&
                     WAIT_FOR(!(ahci_port_read(disk_a, AHCI_PxCI) & 1) &&
                                  (ahci_port_read(disk_a, AHCI_PxIS) & AHCI_PxIS_DHRS),
                              TIMEOUT_US);
    bool intx_quiet = !(pic_read_irr() & (1u << intx_irq));
    bool got = completed && ahci_wait_irq(&hba, seen, TIMEOUT_US);
    udelay(1000);
    unsigned count = hba.irq_count - seen;
    r.is = disk_a->irq_is;
    tap_ok(got && count == 1 && intx_quiet && (r.is & AHCI_PxIS_DHRS) &&
               data_ok(disk_a, big, 9500, 8, ATA_SECTOR_SIZE, 0),
           "msi to vector %02x: one message for a read dma ext, handler found PxIS.DHRS, intx "
           "stayed deasserted", MSI_VECTOR);
    if (msi)
        ahci_irq_detach_msi(&hba, MSI_VECTOR);
    /* Back to INTx for what follows. */
    ahci_irq_attach_intx(&hba, intx_irq);
}

/* ---- hot-plug --------------------------------------------------------------- */

static const char *hotplug_unavailable(void)
{
    /* Only a port that says it is hot-plug capable gets the request. */
    if (!hp)
        return "no hotplug=N disk port on the command line";
    uint32_t cmd = ahci_port_read(hp, AHCI_PxCMD);
    if (!(cmd & AHCI_PxCMD_HPCP) && !((hba.cap & AHCI_CAP_SXS) && (cmd & AHCI_PxCMD_ESP))) {
        tap_diag("port %u: PxCMD %08x (HPCP %u, ESP %u), CAP.SXS %u: not hot-plug capable",
                 hp->index, cmd, !!(cmd & AHCI_PxCMD_HPCP), !!(cmd & AHCI_PxCMD_ESP),
                 !!(hba.cap & AHCI_CAP_SXS));
        return SKIP_HOTPLUG;
    }
    return NULL;
}

static void test_hotplug(void)
{
    const char *why = hotplug_unavailable();
    if (why) {
        for (int i = 0; i < 4; i++)
            tap_skip("%s", why);
        return;
    }
    /* 1. Capability: the hot-plug port says so; ports with fixed drives
     * do not. */
    bool fixed_quiet = true;
    for (unsigned i = 0; i < AHCI_MAX_PORTS; i++)
        if (&hba.port[i] != hp && expect[i].kind != ATA_KIND_NONE &&
            (ahci_port_read(&hba.port[i], AHCI_PxCMD) & AHCI_PxCMD_HPCP))
            fixed_quiet = false;
    tap_ok(fixed_quiet, "hot-plug: port %u is hot-plug capable, ports with fixed drives are "
                        "not (PxCMD.HPCP)", hp->index);

    /* 2. Removal.  Ask the host, then wait for the PhyRdy change interrupt
     * and the link to go down. */
    enable_port_irqs(hp, PORT_IE);
    hp->irq_serr = 0;
    unsigned seen = hp->irq_count;
    tap_diag("hotplug-request port %u detach", hp->index);
    sti();
    bool gone = WAIT_FOR((hp->irq_is & AHCI_PxIS_PRCS) && !ahci_port_present(hp),
                         HOTPLUG_WAIT_US);
    cli();
    uint32_t ssts = ahci_port_read(hp, AHCI_PxSSTS);
    tap_diag("after detach: ssts %03x, %u interrupt(s) with PxIS %08x, PxSERR %08x (diag.x "
             "%u, diag.n %u)", ssts, hp->irq_count - seen, hp->irq_is, hp->irq_serr,
             !!(hp->irq_serr & AHCI_SERR_DIAG_X), !!(hp->irq_serr & AHCI_SERR_DIAG_N));
    /* A driver stops the engine of a port whose device went away. */
    bool stopped = ahci_port_stop_engine(hp);
    tap_ok(gone && (hp->irq_serr & AHCI_SERR_DIAG_N) && AHCI_SSTS_DET(ssts) != AHCI_DET_PRESENT &&
               stopped,
           "hot-plug removal on port %u: PhyRdy change interrupt (PxIS.PRCS, SERR.DIAG.N), "
           "link down (det %u), engine stopped", hp->index, AHCI_SSTS_DET(ssts));

    /* 3. Insertion: the connect change interrupt, the link, the device's
     * signature FIS, and a working device. */
    hp->irq_is = 0;
    hp->irq_serr = 0;
    seen = hp->irq_count;
    tap_diag("hotplug-request port %u attach", hp->index);
    sti();
    bool back = WAIT_FOR((hp->irq_is & AHCI_PxIS_PCS) && ahci_port_present(hp),
                         HOTPLUG_WAIT_US);
    cli();
    tap_diag("after attach: ssts %03x, %u interrupt(s) with PxIS %08x, PxSERR %08x",
             ahci_port_read(hp, AHCI_PxSSTS), hp->irq_count - seen, hp->irq_is, hp->irq_serr);
    ahci_port_write(hp, AHCI_PxIE, 0);        /* polled from here */
    enum ata_kind kind = ahci_port_classify(hp, SIGNATURE_WAIT_US);
    bool started = kind == ATA_KIND_ATA && ahci_port_start(hp);
    uint16_t idh[ATA_ID_WORDS];
    memset(idh, 0, sizeof(idh));
    struct ahci_result r;
    bool identified = started && ahci_identify(hp, false, idh, &r);
    char model[41], expect_model[41];
    ata_id_string(idh, ATA_ID_MODEL, 20, model);
    ata_test_expected_model(expect_model);
    tap_ok(back && (hp->irq_serr & AHCI_SERR_DIAG_X) && kind == ATA_KIND_ATA && started &&
               identified && !strncmp(model, expect_model, strlen(expect_model)) &&
               ata_id_sectors48(idh) == sectors_of(hp),
           "hot-plug insertion on port %u: connect change interrupt (PxIS.PCS, SERR.DIAG.X), "
           "signature %08x, engine started, identify: %llu sectors", hp->index, hp->sig,
           ata_id_sectors48(idh));

    /* 4. I/O on the disk that came back. */
    struct ahci_result w, rr;
    bool rok = identified && rw_dma(hp, false, 0, 16, big, &r) &&
               data_ok(hp, big, 0, 16, ATA_SECTOR_SIZE, 0);
    ata_pattern_fill(wbuf, LBA_HP_WRITE, 8, ATA_SECTOR_SIZE, TAG_HP_WRITE);
    bool wok = rok && rw_dma(hp, true, LBA_HP_WRITE, 8, wbuf, &w) &&
               rw_dma(hp, false, LBA_HP_WRITE, 8, big, &rr) &&
               data_ok(hp, big, LBA_HP_WRITE, 8, ATA_SECTOR_SIZE, TAG_HP_WRITE);
    tap_ok(rok && wok, "hot-plugged disk: read dma ext of lba 0-15, write dma ext of lba %u-%u "
                       "read back", LBA_HP_WRITE, LBA_HP_WRITE + 7);
}

/* ---- the end ---------------------------------------------------------------- */

static void test_shutdown(void)
{
    /* What a driver does before handing the HBA on (to an OS, from a boot
     * loader): interrupts off, every port stopped and idle. */
    ahci_hba_irq_enable(&hba, false);
    ahci_irq_detach_intx(&hba, intx_irq);
    unsigned idle = 0, want = 0;
    for (unsigned i = 0; i < AHCI_MAX_PORTS; i++) {
        if (!(hba.pi & (1u << i)))
            continue;
        want++;
        struct ahci_port *p = &hba.port[i];
        ahci_port_write(p, AHCI_PxIE, 0);
        if (ahci_port_stop(p) && ahci_port_idle(p))
            idle++;
    }
    tap_ok(want && idle == want, "shutdown: %u of %u ports stopped, ST/CR/FRE/FR all clear",
           idle, want);
}

/* ---- the command line --------------------------------------------------------- */

static void parse_ports(void)
{
    nports = cmdline_u32("ports", 0);
    for (unsigned i = 0; i < AHCI_MAX_PORTS; i++) {
        char key[4] = {'p', 0, 0, 0};
        if (i < 10) {
            key[1] = (char)('0' + i);
        } else {
            key[1] = (char)('0' + i / 10);
            key[2] = (char)('0' + i % 10);
        }
        size_t len;
        const char *v = cmdline_value(key, &len);
        if (!v || len < 4 || v[2] != ':')
            continue;
        expect[i].kind = !strncmp(v, "hd", 2) ? ATA_KIND_ATA
                         : !strncmp(v, "cd", 2) ? ATA_KIND_ATAPI : ATA_KIND_UNKNOWN;
        expect[i].sectors = parse_u32(v + 3, NULL);
    }
    hp_index = cmdline_u32("hotplug", NO_PORT);
    for (unsigned i = 0; i < AHCI_MAX_PORTS; i++) {
        struct ahci_port *p = &hba.port[i];
        if (expect[i].kind == ATA_KIND_ATA && i == hp_index)
            hp = p;
        else if (expect[i].kind == ATA_KIND_ATA && !disk_a)
            disk_a = p;
        else if (expect[i].kind == ATA_KIND_ATA && !disk_b)
            disk_b = p;
        else if (expect[i].kind == ATA_KIND_ATAPI && !cd)
            cd = p;
    }
    tap_diag("ports=%u: disk a on port %u, disk b on port %u, cd on port %u, hot-plug port %u",
             nports, disk_a ? disk_a->index : NO_PORT, disk_b ? disk_b->index : NO_PORT,
             cd ? cd->index : NO_PORT, hp ? hp->index : NO_PORT);
}

int main(unsigned magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    tap_plan(TESTS);
    big = dma_alloc(0x40000, 0x10000);
    wbuf = dma_alloc(0x10000, 0x1000);
    ncq_a = dma_alloc(0x20000, 0x1000);
    ncq_b = dma_alloc(0x20000, 0x1000);
    small = dma_alloc(0x1000, 0x1000);
    if (!big || !wbuf || !ncq_a || !ncq_b || !small)
        panic("dma_alloc failed");

    test_controller();                   /* 1 */
    parse_ports();
    if (!disk_a)
        panic("no pN=hd:SECTORS disk on the command line");
    test_hba_reset();                    /* 2 */
    test_capabilities();                 /* 3 */
    test_port_setup();                   /* 4 */
    test_presence();                     /* 5 */
    test_start();                        /* 6 */

    test_identify();                     /* 7-9 */
    ncq_supported = (hba.cap & AHCI_CAP_SNCQ) && (id[ATA_ID_SATA_CAP] & ATA_ID_SATA_NCQ);
    ncq_depth = (id[ATA_ID_QUEUE_DEPTH] & 0x1F) + 1;
    if (ncq_depth > hba.slots)
        ncq_depth = hba.slots;
    test_pio();                          /* 10-11 */
    test_dma_scatter_read();             /* 12 */
    test_dma_scatter_write();            /* 13 */
    test_dma_large();                    /* 14 */
    test_flush();                        /* 15 */
    test_disk_b();                       /* 16 */

    test_error();                        /* 17 */
    test_recover_restart();              /* 18 */
    test_comreset();                     /* 19 */

    test_ncq_reads();                    /* 20 */
    test_ncq_writes();                   /* 21 */
    test_ncq_two_ports();                /* 22 */
    test_ncq_depth();                    /* 23 */

    test_atapi_identify();               /* 24-25 */
    test_atapi_ready_inquiry();          /* 26 */
    test_atapi_capacity();               /* 27 */
    test_atapi_read_dma();               /* 28 */
    test_atapi_read_pio();               /* 29 */
    test_atapi_error();                  /* 30 */

    test_intx();                         /* 31 */
    test_ncq_irq();                      /* 32 */
    test_msi();                          /* 33 */

    test_hotplug();                      /* 34-37 */
    test_shutdown();                     /* 38 */
    tap_done();
}

/*
 * atapi: a CD/DVD drive on an IDE channel, driven through the ATA PACKET
 * command.
 *
 * An ATAPI device speaks ATA only to identify itself and to accept PACKET;
 * everything else is a SCSI command (SPC for the common ones, MMC for the
 * CD/DVD ones) in a 12-byte command descriptor block sent through the data
 * port.  Failures come back as CHECK CONDITION: the ERR bit (called CHK
 * here), the sense key in the error register's top nibble, and the full
 * sense data from REQUEST SENSE.
 *
 * The program resets the channel and finds the packet device by its
 * signature, identifies it, waits for it to be ready, reads the capacity,
 * the TOC and data by PIO (in chunks bounded by the byte count limit) and
 * by DMA, asks the drive's event and capability pages, then locks the tray,
 * tries to eject (refused), unlocks, ejects, sees the medium gone, loads it
 * again, and ends with an opcode no drive implements.
 *
 * The host (tests/guest/test_ide_guest.py) builds the image: every
 * 2048-byte sector holds its LBA as a little-endian u32, repeated.
 *
 * Command line:
 *   cdsectors=N      the image's size in 2048-byte sectors (required)
 *   model=TEXT       the expected IDENTIFY PACKET model, '_' for ' ' (required)
 *   channel=0|1 unit=0|1   where the drive is (default secondary master)
 *   pciid=VVVV:DDDD  which IDE controller (default: the first one)
 */
#include "runtime.h"

#include "ata.h"

#define TESTS 22
#define TIMEOUT_US 5000000u
#define POISON 0xEE
#define READY_TRIES 10                /* TEST UNIT READY attempts before giving up */
#define PIO_LIMIT 0x600               /* byte count limit: 1.5 sectors per DRQ */
#define PIO_SECTORS 4
#define DMA_SECTORS 16
#define BYTE_LIMIT_MAX 0xFFFE         /* for commands whose answers are small */
#define INVALID_OPCODE 0x02           /* reserved in SPC and MMC */

/* SCSI operation codes (SPC-3, MMC-5). */
#define SCSI_TEST_UNIT_READY   0x00
#define SCSI_REQUEST_SENSE     0x03
#define SCSI_INQUIRY           0x12
#define SCSI_START_STOP_UNIT   0x1B
#define SCSI_PREVENT_ALLOW     0x1E
#define SCSI_READ_CAPACITY     0x25
#define SCSI_READ_10           0x28
#define SCSI_READ_TOC          0x43
#define SCSI_GET_EVENT_STATUS  0x4A
#define SCSI_MODE_SENSE_10     0x5A

/* Sense keys and additional sense codes used here. */
#define SK_NOT_READY       0x2
#define SK_ILLEGAL_REQUEST 0x5
#define SK_UNIT_ATTENTION  0x6
#define ASC_INVALID_OPCODE        0x20
#define ASC_LBA_OUT_OF_RANGE      0x21
#define ASC_MEDIUM_NOT_PRESENT    0x3A
#define ASC_REMOVAL_PREVENTED     0x53

#define MODE_PAGE_CAPABILITIES 0x2A

static struct ata_controller ctrl;
static struct ata_channel *ch;
static unsigned unit;
static uint32_t cdsectors;
static uint8_t *buf;                  /* 64 KiB, 64 KiB aligned */
static struct ata_prd *prdt;
#define PRDT_ENTRIES 8
#define BUF_BYTES 0x10000

/* ---- helpers ------------------------------------------------------------- */

/* A CDB: the opcode and up to 11 parameter bytes (the rest are zero). */
#define CDB(...) ((const uint8_t[ATAPI_CDB_SIZE]){__VA_ARGS__})

static bool packet(const uint8_t *cdb, void *data, uint32_t len, struct atapi_result *r)
{
    return atapi_packet(ch, unit, cdb, data, len, BYTE_LIMIT_MAX, r);
}

/* Run a command expected to end in CHECK CONDITION and fetch its sense. */
static bool check_condition(const uint8_t *cdb, struct atapi_result *r, struct atapi_sense *s)
{
    bool good = packet(cdb, buf, 0, r);
    bool chk = !good && !r->ata.timeout && (r->ata.status & ATA_SR_ERR);
    atapi_request_sense(ch, unit, s);
    return chk && s->ok;
}

static bool data_ok(const void *data, uint32_t lba, uint32_t count)
{
    uint32_t got = 0, want = 0;
    uint32_t bad = ata_pattern_check(data, lba, count, ATAPI_SECTOR_SIZE, 0, &got, &want);
    if (bad != count)
        tap_diag("lba %u: read %08x, expected %08x", lba + bad, got, want);
    return bad == count;
}

static void read10_cdb(uint8_t *cdb, uint32_t lba, uint16_t count)
{
    memset(cdb, 0, ATAPI_CDB_SIZE);
    cdb[0] = SCSI_READ_10;
    put_be32(cdb + 2, lba);
    put_be16(cdb + 7, count);
}

/* READ(10) by PIO into buf. */
static bool read_pio(uint32_t lba, uint16_t count, uint16_t limit, struct atapi_result *r)
{
    uint8_t cdb[ATAPI_CDB_SIZE];
    read10_cdb(cdb, lba, count);
    memset(buf, POISON, (uint32_t)count * ATAPI_SECTOR_SIZE);
    return atapi_packet(ch, unit, cdb, buf, (uint32_t)count * ATAPI_SECTOR_SIZE, limit, r);
}

/* TEST UNIT READY until GOOD, at most READY_TRIES times, fetching the sense
 * after each CHECK CONDITION (which also clears a unit attention).  The
 * first sense seen is returned in *first (key 0 if the first try was GOOD). */
static bool wait_ready(struct atapi_sense *first, unsigned *tries)
{
    memset(first, 0, sizeof(*first));
    for (*tries = 1; *tries <= READY_TRIES; (*tries)++) {
        struct atapi_result r;
        if (packet(CDB(SCSI_TEST_UNIT_READY), NULL, 0, &r))
            return true;
        struct atapi_sense s;
        atapi_request_sense(ch, unit, &s);
        if (*tries == 1)
            *first = s;
        mdelay(10);
    }
    return false;
}

static const char *sense_str(const struct atapi_sense *s)
{
    static char text[32];
    snprintf(text, sizeof(text), "sense %02x/%02x/%02x", s->key, s->asc, s->ascq);
    return text;
}

/* ---- the device ---------------------------------------------------------- */

static void test_controller_and_signature(void)
{
    ch = ata_test_channel(&ctrl, 1, &unit);
    if (!ch) {
        tap_ok(false, "ide controller present");
        tap_done();
    }
    tap_ok(ch->cmd && ch->ctl && ch->bm, "ide controller with bus master found");

    /* After a reset a packet device leaves 14h/EBh in lba mid/high, and
     * (unlike a disk) keeps DRDY clear until it is identified. */
    ata_set_nien(ch, false);
    bool reset = ata_soft_reset(ch);
    struct ata_signature s = ata_read_signature(ch, unit);
    tap_diag("after srst: count %02x lba %02x %02x %02x error %02x status %02x", s.count,
             s.lba_low, s.lba_mid, s.lba_high, s.error, s.status);
    tap_ok(reset && ata_classify(&s) == ATA_KIND_ATAPI && !(s.status & ATA_SR_BSY),
           "srst: packet device signature %02x/%02x", s.lba_mid, s.lba_high);
}

static void test_identify(void)
{
    /* IDENTIFY DEVICE is for disks: a packet device aborts it and puts its
     * signature in the registers again, so a driver can tell what it is. */
    uint16_t id[ATA_ID_WORDS];
    struct ata_result r;
    ata_identify(ch, unit, false, id, &r);
    uint8_t mid = ata_read(ch, ATA_REG_LBA_MID), high = ata_read(ch, ATA_REG_LBA_HIGH);
    tap_ok(!r.timeout && (r.status & ATA_SR_ERR) && (r.error & ATA_ER_ABRT) && mid == 0x14 &&
               high == 0xEB,
           "identify device aborted, signature %02x/%02x (%s)", mid, high, ata_result_str(&r));

    bool ok = ata_identify(ch, unit, true, id, &r);
    char model[41], firmware[9];
    ata_id_string(id, ATA_ID_MODEL, 20, model);
    ata_id_string(id, ATA_ID_FIRMWARE, 4, firmware);
    tap_diag("model \"%s\" firmware \"%s\"", model, firmware);
    /* Word 0: 15:14 = 10b ATAPI, 12:8 = device type 05h (CD/DVD),
     * 1:0 = 00b: 12-byte packets. */
    uint16_t w0 = id[ATA_ID_CONFIG];
    tap_ok(ok && (w0 >> 14) == 2 && ((w0 >> 8) & 0x1F) == 0x05 && (w0 & 3) == 0,
           "identify packet device: word 0 %04x = atapi, cd/dvd, 12-byte packets", w0);

    char expect[41];
    bool have = ata_test_expected_model(expect);
    tap_ok(have && !strncmp(model, expect, strlen(expect)), "model starts with \"%s\"", expect);
}

static void test_ready(void)
{
    /* A drive that has just powered up or seen a new medium answers its
     * first command with UNIT ATTENTION (06h/28h medium changed or 06h/29h
     * reset); a driver fetches the sense and tries again.  Whether the
     * attention is still pending depends on what ran before us (a BIOS may
     * have consumed it), so both are accepted. */
    struct atapi_sense first;
    unsigned tries;
    bool ready = wait_ready(&first, &tries);
    if (first.key)
        tap_diag("first test unit ready: %s%s", sense_str(&first),
                 first.key == SK_UNIT_ATTENTION ? " (unit attention)" : "");
    tap_ok(ready, "test unit ready: ready after %u tries", tries);
}

static void test_inquiry_capacity(void)
{
    struct atapi_result r;
    uint8_t *d = buf;
    memset(d, 0, 96);
    bool ok = packet(CDB(SCSI_INQUIRY, 0, 0, 0, 96), d, 96, &r);
    char vendor[9], product[17];
    memcpy(vendor, d + 8, 8);
    vendor[8] = '\0';
    memcpy(product, d + 16, 16);
    product[16] = '\0';
    tap_diag("inquiry: vendor \"%s\" product \"%s\", %u bytes", vendor, product, r.bytes);
    tap_ok(ok && (d[0] & 0x1F) == 0x05 && (d[1] & 0x80) && r.bytes >= 36,
           "inquiry: peripheral type %02x (05h = cd/dvd), removable", d[0] & 0x1F);

    memset(d, 0, 8);
    ok = packet(CDB(SCSI_READ_CAPACITY), d, 8, &r);
    uint32_t last = be32(d), block = be32(d + 4);
    tap_ok(ok && cdsectors && last == cdsectors - 1 && block == ATAPI_SECTOR_SIZE,
           "read capacity: last lba %u, block %u (cdsectors=%u)", last, block, cdsectors);
}

/* ---- data ---------------------------------------------------------------- */

static void test_read_pio(void)
{
    /* 4 sectors = 8 KiB, but the host takes at most PIO_LIMIT bytes per
     * DRQ: the device splits the data into chunks, announcing each one's
     * size in the byte count registers. */
    struct atapi_result r;
    bool ok = read_pio(20, PIO_SECTORS, PIO_LIMIT, &r);
    uint32_t total = PIO_SECTORS * ATAPI_SECTOR_SIZE;
    unsigned min_chunks = (total + PIO_LIMIT - 1) / PIO_LIMIT;
    tap_ok(ok && r.bytes == total && r.chunks >= min_chunks && r.largest_chunk <= PIO_LIMIT &&
               (r.reason & (ATAPI_IR_IO | ATAPI_IR_COD)) == (ATAPI_IR_IO | ATAPI_IR_COD) &&
               data_ok(buf, 20, PIO_SECTORS),
           "read(10) by pio: %u bytes in %u drq chunks of at most %u (limit %u)", r.bytes,
           r.chunks, r.largest_chunk, PIO_LIMIT);

    /* A few sectors across the disc, one at a time: where an ISO 9660
     * volume's descriptors start (16), the middle, and the last one. */
    const uint32_t probe[] = {0, 16, cdsectors / 2, cdsectors - 1};
    bool all = true;
    for (unsigned i = 0; i < sizeof(probe) / sizeof(probe[0]); i++)
        all = read_pio(probe[i], 1, BYTE_LIMIT_MAX, &r) && data_ok(buf, probe[i], 1) && all;
    tap_ok(all, "image content: sectors 0, 16, %u and %u hold their lba", cdsectors / 2,
           cdsectors - 1);

    /* Reading past the end: CHECK CONDITION, ILLEGAL REQUEST / LBA out of range. */
    struct atapi_sense s;
    uint8_t cdb[ATAPI_CDB_SIZE];
    read10_cdb(cdb, cdsectors - 1, 2);
    bool chk = check_condition(cdb, &r, &s);
    tap_ok(chk && s.key == SK_ILLEGAL_REQUEST && s.asc == ASC_LBA_OUT_OF_RANGE,
           "read(10) past the end: check condition, %s", sense_str(&s));
}

static void test_read_dma(void)
{
    /* One PRD, completion found by polling the bus-master status. */
    uint8_t cdb[ATAPI_CDB_SIZE];
    read10_cdb(cdb, 100, DMA_SECTORS);
    memset(buf, POISON, DMA_SECTORS * ATAPI_SECTOR_SIZE);
    unsigned used = 0;
    ata_prd_add(prdt, PRDT_ENTRIES, &used, buf, DMA_SECTORS * ATAPI_SECTOR_SIZE, true);
    struct ata_result r;
    bool started = atapi_dma_start(ch, unit, cdb, prdt, &r);
    bool done = started && ata_dma_poll(ch, TIMEOUT_US);
    ata_dma_finish(ch, &r);
    tap_ok(done && ata_ok(&r) &&
               (r.bm_status & (ATA_BM_ST_INTR | ATA_BM_ST_ACTIVE | ATA_BM_ST_ERROR)) ==
                   ATA_BM_ST_INTR && data_ok(buf, 100, DMA_SECTORS),
           "read(10) by dma, polled: %u sectors at lba 100 (bm status %02x, %s)", DMA_SECTORS,
           r.bm_status, ata_result_str(&r));

    /* The last 8 sectors into three buffers (2 + 1 + 5 sectors, the middle
     * one across a 64 KiB line), completion by the channel's IRQ. */
    uint8_t *parts[3] = {buf + 0x1000, buf + 0x10000 - 0x400, buf + 0x12000};
    const uint32_t counts[3] = {2, 1, 5};
    memset(buf, POISON, 2 * BUF_BYTES);
    used = 0;
    for (int i = 0; i < 3; i++)
        ata_prd_add(prdt, PRDT_ENTRIES, &used, parts[i], counts[i] * ATAPI_SECTOR_SIZE, i == 2);
    uint32_t lba = cdsectors - 8;
    read10_cdb(cdb, lba, 8);
    ata_irq_enable(ch);
    unsigned seen = ch->irq_count;
    started = atapi_dma_start(ch, unit, cdb, prdt, &r);
    bool irq = started && ata_wait_irq(ch, seen, TIMEOUT_US);
    ata_dma_finish(ch, &r);
    ata_irq_disable(ch);
    bool data = true;
    for (int i = 0; i < 3; i++) {
        data = data_ok(parts[i], lba, counts[i]) && data;
        lba += counts[i];
    }
    tap_ok(irq && ata_ok(&r) && used == 4 && data,
           "read(10) by dma through %u prds, irq %u: the last 8 sectors (handler status %02x)",
           used, ch->irq, ch->irq_status);
}

/* ---- the drive's own pages ----------------------------------------------- */

static void test_toc(void)
{
    /* READ TOC format 0 (MMC-5, 6.26.2.2): a 4-byte header (length, first
     * and last track) and 8 bytes per track, then the lead-out (AAh), whose
     * address is the disc's size. */
    struct atapi_result r;
    uint8_t *d = buf;
    memset(d, 0, 64);
    bool ok = packet(CDB(SCSI_READ_TOC, 0, 0, 0, 0, 0, 1, 0, 64), d, 64, &r);
    uint16_t len = be16(d);
    uint32_t t1 = be32(d + 8), leadout = be32(d + 16);
    tap_diag("toc: length %u, tracks %u-%u, track %u adr/control %02x at %u, "
             "track %02x at %u", len, d[2], d[3], d[6], d[5], t1, d[14], leadout);
    tap_ok(ok && len == 18 && d[2] == 1 && d[3] == 1 && d[6] == 1 && (d[5] & 0x0F) == 0x04 &&
               t1 == 0 && d[14] == 0xAA && leadout == cdsectors,
           "read toc format 0: one data track at 0, lead-out at %u", leadout);
}

/* GET EVENT STATUS NOTIFICATION, polled, media class: the 4-byte header and
 * the media event descriptor (MMC-5, 6.6). */
static bool media_event(uint8_t *event, uint8_t *media_status, uint8_t *cls)
{
    struct atapi_result r;
    uint8_t *d = buf;
    memset(d, 0, 8);
    bool ok = packet(CDB(SCSI_GET_EVENT_STATUS, 0x01, 0, 0, 0x10, 0, 0, 0, 8), d, 8, &r);
    *cls = d[2];
    *event = d[4] & 0x0F;
    *media_status = d[5];
    /* The event descriptor length (bytes 0-1) counts the bytes after the
     * 4-byte header: the media event descriptor's 4. */
    return ok && r.bytes >= 8 && be16(d) >= 4 && (d[3] & 0x10);
}

static void test_event_status(void)
{
    /* Event code 0 = no change, 2 = new media (if the insertion had not
     * been reported yet); media status bit 1 = present, bit 0 = tray open. */
    uint8_t event, status, cls;
    bool ok = media_event(&event, &status, &cls);
    tap_ok(ok && (cls & 0x87) == 0x04 && (event == 0 || event == 2) && (status & 3) == 2,
           "get event status notification (polled): media class %02x, event %u, "
           "status %02x = present, tray closed", cls, event, status);
}

/* MODE SENSE(10) of the capabilities page; returns the page or NULL. */
static const uint8_t *capabilities_page(void)
{
    struct atapi_result r;
    uint8_t *d = buf;
    memset(d, 0, 64);
    if (!packet(CDB(SCSI_MODE_SENSE_10, 0, MODE_PAGE_CAPABILITIES, 0, 0, 0, 0, 0, 64), d, 64,
                &r))
        return NULL;
    uint16_t bdl = be16(d + 6);                 /* block descriptors come first */
    const uint8_t *page = d + 8 + bdl;
    return (page[0] & 0x3F) == MODE_PAGE_CAPABILITIES && 8u + bdl + 2 + page[1] <= r.bytes
               ? page : NULL;
}

static void test_mode_sense(void)
{
    /* Page 2Ah byte 6: bit 0 lock supported, bit 1 lock state, bit 3 eject
     * supported. */
    const uint8_t *p = capabilities_page();
    tap_ok(p && p[1] >= 0x12 && (p[6] & 0x09) == 0x09 && !(p[6] & 0x02),
           "mode sense(10) page 2ah: length %u, lock and eject supported, unlocked "
           "(byte 6 %02x)", p ? p[1] : 0, p ? p[6] : 0);
}

/* ---- the tray ------------------------------------------------------------ */

static void test_lock_and_eject(void)
{
    struct atapi_result r;
    struct atapi_sense s;
    /* PREVENT: byte 4 bit 0.  The lock state shows in page 2Ah. */
    bool prevent = packet(CDB(SCSI_PREVENT_ALLOW, 0, 0, 0, 1), NULL, 0, &r);
    const uint8_t *p = capabilities_page();
    tap_ok(prevent && p && (p[6] & 0x02), "prevent medium removal: locked (page 2ah byte 6 %02x)",
           p ? p[6] : 0);

    /* START STOP UNIT with LoEj=1, Start=0 is "eject".  While locked, MMC
     * says ILLEGAL REQUEST / MEDIUM REMOVAL PREVENTED (05h/53h/02h); the
     * ASC is what matters, the key and qualifier are reported. */
    bool chk = check_condition(CDB(SCSI_START_STOP_UNIT, 0, 0, 0, 0x02), &r, &s);
    if (chk && (s.key != SK_ILLEGAL_REQUEST || s.ascq != 0x02))
        tap_diag("eject refused with %s, mmc says 05/53/02", sense_str(&s));
    tap_ok(chk && s.asc == ASC_REMOVAL_PREVENTED &&
               (s.key == SK_ILLEGAL_REQUEST || s.key == SK_NOT_READY),
           "eject while locked: refused, %s", sense_str(&s));

    bool allow = packet(CDB(SCSI_PREVENT_ALLOW, 0, 0, 0, 0), NULL, 0, &r);
    bool eject = packet(CDB(SCSI_START_STOP_UNIT, 0, 0, 0, 0x02), NULL, 0, &r);
    tap_ok(allow && eject, "allow medium removal, then eject: good status (%s)",
           ata_result_str(&r.ata));

    /* The medium is gone: NOT READY / MEDIUM NOT PRESENT (ASCQ 02h: tray open). */
    chk = check_condition(CDB(SCSI_TEST_UNIT_READY), &r, &s);
    uint8_t event, status, cls;
    media_event(&event, &status, &cls);
    tap_diag("after eject: media event %u, media status %02x", event, status);
    tap_ok(chk && s.key == SK_NOT_READY && s.asc == ASC_MEDIUM_NOT_PRESENT && !(status & 0x02),
           "after eject: test unit ready says not ready, %s; event status: no medium",
           sense_str(&s));

    /* LoEj=1, Start=1: load the tray again.  The drive becomes ready,
     * possibly after a unit attention for the "new" medium. */
    bool load = packet(CDB(SCSI_START_STOP_UNIT, 0, 0, 0, 0x03), NULL, 0, &r);
    struct atapi_sense first;
    unsigned tries;
    bool ready = load && wait_ready(&first, &tries);
    if (first.key)
        tap_diag("first test unit ready after load: %s", sense_str(&first));
    bool data = ready && read_pio(5, 1, BYTE_LIMIT_MAX, &r) && data_ok(buf, 5, 1);
    tap_ok(ready && data, "load: ready again after %u tries, data readable", tries);
}

static void test_invalid_opcode(void)
{
    /* The error register carries the sense key in bits 7:4; ABRT (bit 2) is
     * for a PACKET command the device could not take at all, and is
     * optional for a CDB it rejects. */
    struct atapi_result r;
    struct atapi_sense s;
    bool chk = check_condition(CDB(INVALID_OPCODE), &r, &s);
    uint8_t key = ATAPI_ER_SENSE_KEY(r.ata.error);
    tap_ok(chk && key == SK_ILLEGAL_REQUEST && s.key == SK_ILLEGAL_REQUEST &&
               s.asc == ASC_INVALID_OPCODE,
           "invalid opcode %02x: check condition, error register %02x, %s", INVALID_OPCODE,
           r.ata.error, sense_str(&s));
}

int main(unsigned magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    cdsectors = cmdline_u32("cdsectors", 0);
    tap_plan(TESTS);
    if (!cdsectors)
        tap_diag("no cdsectors=N on the command line");

    /* Two 64 KiB halves: the scattered DMA test lays a buffer across the
     * line between them. */
    buf = dma_alloc(2 * BUF_BYTES, 0x10000);
    prdt = ata_prd_alloc(PRDT_ENTRIES);
    if (!buf || !prdt)
        panic("dma_alloc failed");

    test_controller_and_signature();   /* 1-2 */
    test_identify();                   /* 3-5 */
    test_ready();                      /* 6 */
    test_inquiry_capacity();           /* 7-8 */
    test_read_pio();                   /* 9-11 */
    test_read_dma();                   /* 12-13 */
    test_toc();                        /* 14 */
    test_event_status();               /* 15 */
    test_mode_sense();                 /* 16 */
    test_lock_and_eject();             /* 17-21 */
    test_invalid_opcode();             /* 22 */
    tap_done();
}

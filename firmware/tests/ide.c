/*
 * ide: an ATA hard disk on a PCI IDE controller, the way a driver (or a
 * BIOS) talks to it.
 *
 * The program finds the controller by its PCI class (01h/01h), resets the
 * channel and recognises the disk by the signature it leaves in the
 * taskfile, reads IDENTIFY DEVICE, then moves data every way ATA offers:
 * PIO one sector per interrupt (READ/WRITE SECTORS), PIO several sectors per
 * interrupt (READ/WRITE MULTIPLE), bus-master DMA (READ/WRITE DMA), each also
 * in its 48-bit ("EXT") form, with completion found by polling the
 * bus-master status and by the IRQ.  It finishes with the error paths: LBAs
 * past the end, a PRD table shorter than the transfer, an opcode nobody
 * implements, and INTRQ's relation to the status register.
 *
 * The host (tests/guest/test_ide_guest.py) builds the disk image: every
 * 512-byte sector holds its LBA as a little-endian u32, repeated.  Sectors
 * the program writes get ata_written_word(lba, i, tag) (lib/ata.h), with a
 * tag per test, so the host can check them in the image after the run.
 *
 * Command line:
 *   sectors=N        the disk's size in sectors (required)
 *   model=TEXT       the expected IDENTIFY model, '_' for ' ' (required)
 *   channel=0|1 unit=0|1   where the disk is (default primary master)
 *   pciid=VVVV:DDDD  which IDE controller (default: the first one)
 */
#include "runtime.h"

#include "ata.h"

#define TESTS 30
#define TIMEOUT_US 5000000u
#define POISON 0xEE                      /* buffers are filled with this before a read */

/* Where the write tests put their data (the host knows these too). */
#define LBA_WRITE_PIO        4096        /* 8 sectors, tag A1 */
#define LBA_WRITE_PIO_EXT    4104        /* 8 sectors, tag A2 */
#define LBA_WRITE_MULT       4200        /* 20 sectors, tag A3 */
#define LBA_WRITE_MULT_EXT   4220        /* 12 sectors, tag A4 */
#define LBA_WRITE_DMA        8192        /* 64 sectors, tag A5 */
#define LBA_WRITE_DMA_EXT    12288       /* 32 sectors, tag A6 */
#define TAG_PIO      0xA1
#define TAG_PIO_EXT  0xA2
#define TAG_MULT     0xA3
#define TAG_MULT_EXT 0xA4
#define TAG_DMA      0xA5
#define TAG_DMA_EXT  0xA6

#define WANTED_MULTIPLE 8                /* sectors per DRQ block for READ/WRITE MULTIPLE */
#define UNKNOWN_OPCODE  0x01             /* reserved in every ATA/ATAPI and ACS revision */
#define BIG_BYTES       (256 * ATA_SECTOR_SIZE)

static struct ata_controller ctrl;
static struct ata_channel *ch;
static unsigned unit;
static uint32_t sectors;
static uint16_t id[ATA_ID_WORDS];
static uint8_t *big;                     /* 128 KiB, 64 KiB aligned */
static uint8_t *wbuf;                    /* 32 KiB of data to write */
static struct ata_prd *prdt;
#define PRDT_ENTRIES 8

/* ---- helpers ------------------------------------------------------------- */

static struct ata_cmd cmd_rw(uint8_t command, uint64_t lba, uint32_t count, bool lba48)
{
    struct ata_cmd c = {.command = command, .lba = lba, .count = (uint16_t)count, .lba48 = lba48};
    return c;
}

/* Check `count` sectors of buf against the image (tag 0) or a written
 * pattern, printing where the first difference is. */
static bool data_ok(const void *buf, uint32_t lba, uint32_t count, uint8_t tag)
{
    uint32_t got = 0, want = 0;
    uint32_t bad = ata_pattern_check(buf, lba, count, ATA_SECTOR_SIZE, tag, &got, &want);
    if (bad != count)
        tap_diag("lba %u: read %08x, expected %08x", lba + bad, got, want);
    return bad == count;
}

/* PIO read of `count` sectors in DRQ blocks of `per_block` sectors. */
static bool pio_read(uint8_t command, bool lba48, uint64_t lba, uint32_t count,
                     uint32_t per_block, struct ata_result *r)
{
    struct ata_cmd c = cmd_rw(command, lba, count, lba48);
    memset(big, POISON, count * ATA_SECTOR_SIZE);
    return ata_cmd_pio_in(ch, unit, &c, big, count * ATA_SECTOR_SIZE,
                          per_block * ATA_SECTOR_SIZE, r);
}

static bool pio_write(uint8_t command, bool lba48, uint64_t lba, uint32_t count,
                      uint32_t per_block, uint8_t tag, struct ata_result *r)
{
    struct ata_cmd c = cmd_rw(command, lba, count, lba48);
    ata_pattern_fill(wbuf, (uint32_t)lba, count, ATA_SECTOR_SIZE, tag);
    return ata_cmd_pio_out(ch, unit, &c, wbuf, count * ATA_SECTOR_SIZE,
                           per_block * ATA_SECTOR_SIZE, r);
}

/* A one-buffer PRD table for `bytes` at buf. */
static bool prd_single(void *buf, uint32_t bytes)
{
    unsigned used = 0;
    return ata_prd_add(prdt, PRDT_ENTRIES, &used, buf, bytes, true);
}

static bool bm_done_ok(const struct ata_result *r)
{
    /* Normal completion (SFF-8038i, table 2): INTR set, ACTIVE clear, no error. */
    return (r->bm_status & (ATA_BM_ST_INTR | ATA_BM_ST_ACTIVE | ATA_BM_ST_ERROR)) ==
           ATA_BM_ST_INTR;
}

static const char *error_name(uint8_t error)
{
    if (error & ATA_ER_IDNF)
        return "IDNF";
    if (error & ATA_ER_ABRT)
        return "ABRT";
    return "neither IDNF nor ABRT";
}

/* ---- the controller and the device --------------------------------------- */

static void test_controller(void)
{
    ch = ata_test_channel(&ctrl, 0, &unit);
    if (!ch) {
        tap_ok(false, "ide controller present");
        tap_done();
    }
    uint16_t command = pci_read16(ctrl.pci.bdf, PCI_COMMAND);
    tap_ok(ch->cmd && ch->ctl && ch->bm && (command & (PCI_COMMAND_IO | PCI_COMMAND_MASTER)) ==
                                               (PCI_COMMAND_IO | PCI_COMMAND_MASTER),
           "ide controller with bus master found, i/o and bus mastering enabled");
}

static void test_reset_signature(void)
{
    ata_set_nien(ch, false);
    bool reset = ata_soft_reset(ch);
    struct ata_signature s = ata_read_signature(ch, unit);
    tap_diag("after srst: count %02x lba %02x %02x %02x error %02x status %02x", s.count,
             s.lba_low, s.lba_mid, s.lba_high, s.error, s.status);
    /* Error register after a reset = diagnostic code: 01h device 0 passed
     * (bit 7 would say device 1 failed). */
    tap_ok(reset && ata_classify(&s) == ATA_KIND_ATA && (s.error & 0x7F) == 0x01 &&
               (s.status & (ATA_SR_BSY | ATA_SR_DRDY | ATA_SR_ERR)) == ATA_SR_DRDY,
           "srst: ata signature 01/01/00/00, diagnostic code 01, drdy");
}

static void test_identify(void)
{
    struct ata_result r;
    bool ok = ata_identify(ch, unit, false, id, &r);
    char model[41], serial[21], firmware[9];
    ata_id_string(id, ATA_ID_MODEL, 20, model);
    ata_id_string(id, ATA_ID_SERIAL, 10, serial);
    ata_id_string(id, ATA_ID_FIRMWARE, 4, firmware);
    tap_diag("model \"%s\" serial \"%s\" firmware \"%s\"", model, serial, firmware);
    tap_ok(ok && !(id[ATA_ID_CONFIG] & 0x8000),
           "identify device: word 0 %04x says ata (bit 15 clear), %s", id[ATA_ID_CONFIG],
           ata_result_str(&r));

    /* The expected model comes from the host: each emulator has its own. */
    char expect[41];
    bool have = ata_test_expected_model(expect);
    tap_ok(have && !strncmp(model, expect, strlen(expect)), "model starts with \"%s\"", expect);

    uint32_t lba28 = ata_id_sectors28(id);
    uint64_t lba48 = ata_id_sectors48(id);
    uint32_t want28 = sectors < 0x0FFFFFFF ? sectors : 0x0FFFFFFF;
    tap_ok(sectors && lba28 == want28 && (id[ATA_ID_COMMAND_SET_2] & (1u << 10)) &&
               lba48 == sectors,
           "capacity: words 60-61 %u, lba48 supported, words 100-103 %llu (sectors=%u)",
           lba28, lba48, sectors);

    int sum = ata_id_checksum(id);
    tap_ok(sum >= 0, "word 255 %04x: %s", id[ATA_ID_INTEGRITY],
           sum > 0 ? "signature a5, checksum valid"
                   : sum == 0 ? "no integrity signature (optional)" : "checksum WRONG");
}

/* ---- PIO ----------------------------------------------------------------- */

static void test_pio_reads(void)
{
    struct ata_result r;
    bool ok = pio_read(ATA_CMD_READ_SECTORS, false, 0, 8, 1, &r);
    tap_ok(ok && r.blocks == 8 && data_ok(big, 0, 8, 0),
           "read sectors: lba 0-7 in 8 drq blocks, image data (%s)", ata_result_str(&r));

    ok = pio_read(ATA_CMD_READ_SECTORS, false, sectors - 1, 1, 1, &r);
    tap_ok(ok && data_ok(big, sectors - 1, 1, 0), "read sectors: the last sector, lba %u (%s)",
           sectors - 1, ata_result_str(&r));

    /* 256 sectors: the 8-bit count register holds 0, which means 256. */
    ok = pio_read(ATA_CMD_READ_SECTORS, false, 1000, 256, 1, &r);
    tap_ok(ok && r.blocks == 256 && data_ok(big, 1000, 256, 0),
           "read sectors: count register 0 reads 256 sectors (%u blocks, %s)", r.blocks,
           ata_result_str(&r));

    ok = pio_read(ATA_CMD_READ_SECTORS_EXT, true, sectors - 4, 4, 1, &r);
    tap_ok(ok && r.blocks == 4 && data_ok(big, sectors - 4, 4, 0),
           "read sectors ext: the last 4 sectors, lba %u (%s)", sectors - 4, ata_result_str(&r));
}

/* The LBA48 registers are two bytes deep: a write pushes the previous value
 * into the "high order byte", which the HOB bit of device control reads back. */
static void test_hob_readback(void)
{
    ata_select(ch, unit);
    ata_write(ch, ATA_REG_LBA_LOW, 0x12);
    ata_write(ch, ATA_REG_LBA_LOW, 0x34);
    ata_write(ch, ATA_REG_COUNT, 0x56);
    ata_write(ch, ATA_REG_COUNT, 0x78);
    uint8_t low = ata_read(ch, ATA_REG_LBA_LOW), count = ata_read(ch, ATA_REG_COUNT);
    outb(ch->ctl + ATA_REG_DEVCTL, ch->devctl | ATA_DC_HOB);
    uint8_t hob_low = ata_read(ch, ATA_REG_LBA_LOW), hob_count = ata_read(ch, ATA_REG_COUNT);
    outb(ch->ctl + ATA_REG_DEVCTL, ch->devctl);
    tap_ok(low == 0x34 && count == 0x78 && hob_low == 0x12 && hob_count == 0x56,
           "lba48 register fifo: hob=0 reads %02x/%02x, hob=1 reads %02x/%02x", low, count,
           hob_low, hob_count);
}

static void test_pio_writes(void)
{
    struct ata_result w, r;
    bool wok = pio_write(ATA_CMD_WRITE_SECTORS, false, LBA_WRITE_PIO, 8, 1, TAG_PIO, &w);
    bool rok = pio_read(ATA_CMD_READ_SECTORS, false, LBA_WRITE_PIO, 8, 1, &r);
    tap_ok(wok && w.blocks == 8 && rok && data_ok(big, LBA_WRITE_PIO, 8, TAG_PIO),
           "write sectors: lba %u-%u in 8 blocks, read back (%s)", LBA_WRITE_PIO,
           LBA_WRITE_PIO + 7, ata_result_str(&w));

    wok = pio_write(ATA_CMD_WRITE_SECTORS_EXT, true, LBA_WRITE_PIO_EXT, 8, 1, TAG_PIO_EXT, &w);
    rok = pio_read(ATA_CMD_READ_SECTORS_EXT, true, LBA_WRITE_PIO_EXT, 8, 1, &r);
    tap_ok(wok && rok && data_ok(big, LBA_WRITE_PIO_EXT, 8, TAG_PIO_EXT),
           "write sectors ext: lba %u-%u, read back with read sectors ext (%s)",
           LBA_WRITE_PIO_EXT, LBA_WRITE_PIO_EXT + 7, ata_result_str(&w));
}

static void test_multiple(void)
{
    /* SET MULTIPLE MODE: the count register says how many sectors each DRQ
     * block of READ/WRITE MULTIPLE carries (word 47: the largest allowed). */
    unsigned max = id[ATA_ID_MAX_MULTIPLE] & 0xFF;
    unsigned m = max < WANTED_MULTIPLE ? max : WANTED_MULTIPLE;
    struct ata_cmd set = {.command = ATA_CMD_SET_MULTIPLE, .count = (uint16_t)m};
    struct ata_result r, w;
    bool ok = m && ata_cmd_nodata(ch, unit, &set, &r);
    uint16_t now[ATA_ID_WORDS] = {0};
    struct ata_result ir;
    ok = ok && ata_identify(ch, unit, false, now, &ir);
    /* Word 59 should now read 01xxh with the new count.  QEMU answers every
     * IDENTIFY with the data it built the first time and leaves word 59 as
     * it was: accepted, and reported; the block counts below show which
     * count is really in use. */
    bool updated = now[ATA_ID_MULTIPLE] == (0x100 | m);
    bool stale = now[ATA_ID_MULTIPLE] == id[ATA_ID_MULTIPLE];
    if (!updated && stale)
        tap_diag("identify word 59 still %04x after set multiple mode: not updated",
                 now[ATA_ID_MULTIPLE]);
    tap_ok(ok && (updated || stale), "set multiple mode %u (max %u): identify word 59 = %04x",
           m, max, now[ATA_ID_MULTIPLE]);
    if (!m)
        m = 1;

    /* 20 sectors in blocks of m: the last block is the remainder. */
    unsigned blocks = (20 + m - 1) / m;
    ok = pio_read(ATA_CMD_READ_MULTIPLE, false, 2000, 20, m, &r);
    tap_ok(ok && r.blocks == blocks && data_ok(big, 2000, 20, 0),
           "read multiple: 20 sectors in %u drq blocks (%s)", r.blocks, ata_result_str(&r));

    bool wok = pio_write(ATA_CMD_WRITE_MULTIPLE, false, LBA_WRITE_MULT, 20, m, TAG_MULT, &w);
    bool rok = pio_read(ATA_CMD_READ_MULTIPLE_EXT, true, LBA_WRITE_MULT, 20, m, &r);
    tap_ok(wok && w.blocks == blocks && rok && r.blocks == blocks &&
               data_ok(big, LBA_WRITE_MULT, 20, TAG_MULT),
           "write multiple, read back with read multiple ext (%u and %u blocks)", w.blocks,
           r.blocks);

    wok = pio_write(ATA_CMD_WRITE_MULTIPLE_EXT, true, LBA_WRITE_MULT_EXT, 12, m, TAG_MULT_EXT,
                    &w);
    rok = pio_read(ATA_CMD_READ_SECTORS, false, LBA_WRITE_MULT_EXT, 12, 1, &r);
    tap_ok(wok && rok && data_ok(big, LBA_WRITE_MULT_EXT, 12, TAG_MULT_EXT),
           "write multiple ext, read back with read sectors (%s)", ata_result_str(&w));
}

static void test_transfer_mode(void)
{
    /* SET FEATURES 03h picks the transfer mode; IDENTIFY word 88 shows the
     * selected Ultra DMA mode in its high byte. */
    struct ata_cmd set = {.command = ATA_CMD_SET_FEATURES, .features = ATA_SF_SET_TRANSFER_MODE,
                          .count = ATA_XFER_UDMA(2)};
    struct ata_result r, ir;
    bool ok = ata_cmd_nodata(ch, unit, &set, &r);
    uint16_t now[ATA_ID_WORDS] = {0};
    ok = ok && ata_identify(ch, unit, false, now, &ir);
    tap_ok(ok && (now[ATA_ID_UDMA] >> 8) == (1u << 2) && (now[ATA_ID_UDMA] & (1u << 2)),
           "set features: udma mode 2 selected, word 88 = %04x", now[ATA_ID_UDMA]);
}

/* ---- DMA ----------------------------------------------------------------- */

static void test_dma_polled(void)
{
    struct ata_result r, rr;
    struct ata_cmd c = cmd_rw(ATA_CMD_READ_DMA, 3000, 16, false);
    memset(big, POISON, 16 * ATA_SECTOR_SIZE);
    prd_single(big, 16 * ATA_SECTOR_SIZE);
    bool ok = ata_cmd_dma(ch, unit, &c, prdt, true, &r);
    tap_ok(ok && bm_done_ok(&r) && data_ok(big, 3000, 16, 0),
           "read dma, polled: 16 sectors at lba 3000 (bm status %02x, %s)", r.bm_status,
           ata_result_str(&r));

    ata_pattern_fill(wbuf, LBA_WRITE_DMA, 64, ATA_SECTOR_SIZE, TAG_DMA);
    c = cmd_rw(ATA_CMD_WRITE_DMA, LBA_WRITE_DMA, 64, false);
    prd_single(wbuf, 64 * ATA_SECTOR_SIZE);
    ok = ata_cmd_dma(ch, unit, &c, prdt, false, &r);
    bool rok = pio_read(ATA_CMD_READ_SECTORS, false, LBA_WRITE_DMA, 64, 1, &rr);
    tap_ok(ok && bm_done_ok(&r) && rok && data_ok(big, LBA_WRITE_DMA, 64, TAG_DMA),
           "write dma, polled: 64 sectors at lba %u, read back by pio (bm status %02x, %s)",
           LBA_WRITE_DMA, r.bm_status, ata_result_str(&r));
}

/* Start a DMA command, sleep until the channel's IRQ, finish it. */
static bool dma_by_irq(const struct ata_cmd *c, bool to_memory, struct ata_result *r)
{
    memset(r, 0, sizeof(*r));
    unsigned seen = ch->irq_count;
    if (!ata_dma_start(ch, unit, c, prdt, to_memory))
        return false;
    bool irq = ata_wait_irq(ch, seen, TIMEOUT_US);
    ata_dma_finish(ch, r);
    r->timeout = !irq;
    return irq && ata_ok(r);
}

static void test_dma_irq(void)
{
    ata_irq_enable(ch);

    /* 128 sectors = 64 KiB into a 64 KiB-aligned buffer: one PRD whose byte
     * count field is 0, which means 64 KiB. */
    struct ata_result r;
    struct ata_cmd c = cmd_rw(ATA_CMD_READ_DMA_EXT, 5000, 128, true);
    memset(big, POISON, 128 * ATA_SECTOR_SIZE);
    prd_single(big, 128 * ATA_SECTOR_SIZE);
    bool ok = dma_by_irq(&c, true, &r);
    tap_ok(ok && prdt[0].bytes == 0 && ch->irq_count == 1 &&
               (ch->irq_bm_status & ATA_BM_ST_INTR) && bm_done_ok(&r) &&
               data_ok(big, 5000, 128, 0),
           "read dma ext, irq %u: 64 KiB in one prd (count field 0), %u interrupt, "
           "status %02x in the handler", ch->irq, ch->irq_count, ch->irq_status);
    if (ch->irq_foreign)
        tap_diag("%u deliveries without the bus-master interrupt bit", ch->irq_foreign);

    ata_pattern_fill(wbuf, LBA_WRITE_DMA_EXT, 32, ATA_SECTOR_SIZE, TAG_DMA_EXT);
    c = cmd_rw(ATA_CMD_WRITE_DMA_EXT, LBA_WRITE_DMA_EXT, 32, true);
    prd_single(wbuf, 32 * ATA_SECTOR_SIZE);
    bool wok = dma_by_irq(&c, false, &r);
    unsigned irqs = ch->irq_count;
    /* Read it back with READ DMA EXT, polled this time. */
    c = cmd_rw(ATA_CMD_READ_DMA_EXT, LBA_WRITE_DMA_EXT, 32, true);
    memset(big, POISON, 32 * ATA_SECTOR_SIZE);
    prd_single(big, 32 * ATA_SECTOR_SIZE);
    struct ata_result rr;
    bool rok = ata_cmd_dma(ch, unit, &c, prdt, true, &rr);
    tap_ok(wok && irqs == 2 && rok && data_ok(big, LBA_WRITE_DMA_EXT, 32, TAG_DMA_EXT),
           "write dma ext by irq, read back by read dma ext polled (%s)", ata_result_str(&r));

    ata_irq_disable(ch);
}

static void test_dma_scatter(void)
{
    /* 24 sectors into three separate buffers: 1 sector, 7 sectors laid
     * across a 64 KiB line (ata_prd_add splits that one in two), 16 sectors.
     * Each buffer is followed by guard bytes the engine must not touch. */
    const uint32_t parts[3] = {1, 7, 16};
    uint8_t *region = big;                       /* 64 KiB aligned, 128 KiB long */
    uint8_t *bufs[3] = {
        region + 0x100,
        region + 0x10000 - 3 * ATA_SECTOR_SIZE,  /* 3 sectors below the line, 4 above */
        region + 0x12000,
    };
    memset(region, POISON, BIG_BYTES);
    unsigned used = 0;
    bool built = true;
    for (int i = 0; i < 3; i++)
        built = built && ata_prd_add(prdt, PRDT_ENTRIES, &used, bufs[i],
                                     parts[i] * ATA_SECTOR_SIZE, i == 2);
    struct ata_cmd c = cmd_rw(ATA_CMD_READ_DMA, 6000, 24, false);
    struct ata_result r;
    bool ok = built && ata_cmd_dma(ch, unit, &c, prdt, true, &r);
    bool data = true, guards = true;
    uint32_t lba = 6000;
    for (int i = 0; i < 3; i++) {
        data = data && data_ok(bufs[i], lba, parts[i], 0);
        lba += parts[i];
        const uint8_t *g = bufs[i] + parts[i] * ATA_SECTOR_SIZE;
        for (int k = 0; k < 16; k++)
            guards = guards && g[k] == POISON;
    }
    guards = guards && bufs[0][-1] == POISON;
    tap_ok(ok && used == 4 && data && guards,
           "read dma through %u prds (3 buffers, one split at 64 KiB): data in place, "
           "guard bytes untouched", used);
}

static void test_flush(void)
{
    struct ata_result r;
    struct ata_cmd c = {.command = ATA_CMD_FLUSH_CACHE};
    bool ok = ata_cmd_nodata(ch, unit, &c, &r);
    tap_ok(ok, "flush cache (%s)", ata_result_str(&r));
    c.command = ATA_CMD_FLUSH_CACHE_EXT;
    ok = ata_cmd_nodata(ch, unit, &c, &r);
    tap_ok(ok, "flush cache ext (%s)", ata_result_str(&r));
}

/* ---- errors -------------------------------------------------------------- */

static void test_out_of_range(void)
{
    /* The ATA standard answers an address past the end with IDNF; some
     * implementations use ABRT.  Either is accepted; which one is printed. */
    struct ata_result r;
    pio_read(ATA_CMD_READ_SECTORS, false, sectors, 1, 1, &r);
    tap_ok(!r.timeout && (r.status & ATA_SR_ERR) && !(r.status & ATA_SR_DRQ) &&
               (r.error & (ATA_ER_IDNF | ATA_ER_ABRT)),
           "read sectors at lba %u (one past the end): err, %s (%s)", sectors,
           error_name(r.error), ata_result_str(&r));

    /* An LBA with bits above 32 set: a device that drops the high bytes
     * would read sector 6000 instead of failing. */
    uint64_t far = (1ull << 32) + 6000;
    struct ata_cmd c = cmd_rw(ATA_CMD_READ_DMA_EXT, far, 8, true);
    memset(big, POISON, 8 * ATA_SECTOR_SIZE);
    prd_single(big, 8 * ATA_SECTOR_SIZE);
    ata_cmd_dma(ch, unit, &c, prdt, true, &r);
    tap_ok(!r.timeout && (r.status & ATA_SR_ERR) && (r.error & (ATA_ER_IDNF | ATA_ER_ABRT)) &&
               big[0] == POISON,
           "read dma ext at lba 2^32+6000: err, %s, no data (bm status %02x, %s)",
           error_name(r.error), r.bm_status, ata_result_str(&r));
}

static void test_short_prd(void)
{
    /* A PRD table covering 4 sectors for an 8-sector READ DMA.  SFF-8038i
     * calls "PRD table exhausted before the device interrupted" an error:
     * the engine stops with ACTIVE and INTR both clear.  Whatever the device
     * does then, nothing may land past the table's buffer, and a soft reset
     * must bring the channel back. */
    memset(big, POISON, 16 * ATA_SECTOR_SIZE);
    prd_single(big, 4 * ATA_SECTOR_SIZE);
    struct ata_cmd c = cmd_rw(ATA_CMD_READ_DMA, 7000, 8, false);
    struct ata_result r;
    ata_cmd_dma(ch, unit, &c, prdt, true, &r);
    bool guard = true;
    for (uint32_t i = 4 * ATA_SECTOR_SIZE; i < 16 * ATA_SECTOR_SIZE; i++)
        guard = guard && big[i] == POISON;
    bool filled = ata_pattern_check(big, 7000, 4, ATA_SECTOR_SIZE, 0, NULL, NULL) == 4;
    tap_diag("short prd: bm status %02x, %s, the 4 sectors the prd covers %s", r.bm_status,
             ata_result_str(&r), filled ? "were filled" : "were not filled");
    bool reset = ata_soft_reset(ch);
    struct ata_result rr;
    c = cmd_rw(ATA_CMD_READ_DMA, 7000, 8, false);
    memset(big, POISON, 8 * ATA_SECTOR_SIZE);
    prd_single(big, 8 * ATA_SECTOR_SIZE);
    bool ok = ata_cmd_dma(ch, unit, &c, prdt, true, &rr);
    tap_ok(!r.timeout && guard && !(r.bm_status & ATA_BM_ST_ACTIVE) && reset && ok &&
               data_ok(big, 7000, 8, 0),
           "prd table shorter than the transfer: engine stopped, nothing written past it, "
           "channel works after srst");
}

static void test_unknown_opcode(void)
{
    struct ata_result r;
    struct ata_cmd c = {.command = UNKNOWN_OPCODE};
    ata_cmd_nodata(ch, unit, &c, &r);
    tap_ok(!r.timeout && (r.status & (ATA_SR_ERR | ATA_SR_DRDY | ATA_SR_DRQ)) ==
                             (ATA_SR_ERR | ATA_SR_DRDY) && (r.error & ATA_ER_ABRT),
           "unknown opcode %02x: err with abrt (%s)", UNKNOWN_OPCODE, ata_result_str(&r));
}

static void test_status_clears_intrq(void)
{
    /* INTRQ stays asserted until the host reads the status register (not
     * the alternate status).  With the channel's IRQ masked at the PIC and
     * switched to level sensing in the ELCR, the PIC's request register
     * shows the wire's level. */
    unsigned bit = 1u << ch->irq;
    pic_mask(ch->irq);
    pic_set_level_triggered(ch->irq, true);
    struct ata_cmd c = {.command = ATA_CMD_FLUSH_CACHE};
    bool issued = ata_issue(ch, unit, &c);
    ata_delay400(ch);
    bool idle = ata_wait_not_busy(ch, TIMEOUT_US, NULL);
    bool asserted = pic_read_irr() & bit;
    (void)ata_altstatus(ch);
    bool after_alt = pic_read_irr() & bit;
    uint8_t st = ata_read(ch, ATA_REG_STATUS);
    bool after_status = pic_read_irr() & bit;
    pic_set_level_triggered(ch->irq, false);
    tap_ok(issued && idle && asserted && after_alt && !after_status && !(st & ATA_SR_ERR),
           "intrq: asserted after a command (%d), kept by alternate status (%d), "
           "cleared by reading status (%d)", asserted, after_alt, after_status);
}

int main(unsigned magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    sectors = cmdline_u32("sectors", 0);
    tap_plan(TESTS);
    if (!sectors)
        tap_diag("no sectors=N on the command line");

    big = dma_alloc(BIG_BYTES, 0x10000);
    wbuf = dma_alloc(64 * ATA_SECTOR_SIZE, 0x1000);
    prdt = ata_prd_alloc(PRDT_ENTRIES);
    if (!big || !wbuf || !prdt)
        panic("dma_alloc failed");

    test_controller();          /* 1 */
    test_reset_signature();     /* 2 */
    test_identify();            /* 3-6 */
    test_pio_reads();           /* 7-10 */
    test_hob_readback();        /* 11 */
    test_pio_writes();          /* 12-13 */
    test_multiple();            /* 14-17 */
    test_transfer_mode();       /* 18 */
    test_dma_polled();          /* 19-20 */
    test_dma_irq();             /* 21-22 */
    test_dma_scatter();         /* 23 */
    test_flush();               /* 24-25 */
    test_out_of_range();        /* 26-27 */
    test_short_prd();           /* 28 */
    test_unknown_opcode();      /* 29 */
    test_status_clears_intrq(); /* 30 */
    tap_done();
}

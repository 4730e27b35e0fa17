/*
 * bench_ide: sequential reads from the first IDE disk, for the host to time.
 *
 * Command line: "mode=pio" or "mode=dma", "mib=N" (default 16).  The disk is
 * read from LBA 0 in 64 KiB requests: READ SECTORS with 128 DRQ blocks of one
 * sector each (PIO, the way a BIOS or a simple driver reads), or READ DMA
 * EXT through a one-entry PRD table completed by polling the bus-master
 * status (DMA).  Every sector's first word is checked against the pattern
 * the host wrote (its LBA), so an emulator cannot be fast by being wrong.
 * With mib=0 the program only finds the disk: the host subtracts that run.
 */
#include "runtime.h"
#include "ata.h"

#define CHUNK_SECTORS 128u                       /* 64 KiB per request */
#define CHUNK_BYTES (CHUNK_SECTORS * ATA_SECTOR_SIZE)

static bool read_chunk(struct ata_channel *ch, unsigned unit, bool dma, uint32_t lba,
                       uint8_t *buf, const struct ata_prd *prdt)
{
    struct ata_result r;
    if (dma) {
        struct ata_cmd c = {.command = ATA_CMD_READ_DMA_EXT, .count = CHUNK_SECTORS,
                            .lba = lba, .lba48 = true};
        return ata_cmd_dma(ch, unit, &c, prdt, true, &r);
    }
    struct ata_cmd c = {.command = ATA_CMD_READ_SECTORS, .count = CHUNK_SECTORS, .lba = lba};
    return ata_cmd_pio_in(ch, unit, &c, buf, CHUNK_BYTES, ATA_SECTOR_SIZE, &r);
}

int main(unsigned magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    size_t len;
    const char *mode = cmdline_value("mode", &len);
    bool dma = mode && len == 3 && memcmp(mode, "dma", 3) == 0;
    uint32_t mib = cmdline_u32("mib", 16);
    tap_plan(2);

    struct ata_controller ctrl;
    unsigned unit;
    struct ata_channel *ch = ata_test_channel(&ctrl, 0, &unit);
    bool ready = ch && ata_soft_reset(ch) && ata_select(ch, unit);
    tap_ok(ready, "ide disk found and reset");
    if (!ready)
        tap_done();

    uint8_t *buf = dma_alloc(CHUNK_BYTES, 0x10000);
    struct ata_prd *prdt = ata_prd_alloc(2);
    unsigned used = 0;
    if (!buf || !prdt || !ata_prd_add(prdt, 2, &used, buf, CHUNK_BYTES, true))
        panic("dma buffers");

    uint32_t chunks = mib * (1024u * 1024u / CHUNK_BYTES), bad = 0, failed = 0;
    for (uint32_t i = 0; i < chunks; i++) {
        uint32_t lba = i * CHUNK_SECTORS;
        if (!read_chunk(ch, unit, dma, lba, buf, prdt)) {
            failed++;
            continue;
        }
        for (uint32_t s = 0; s < CHUNK_SECTORS; s++)
            bad += *(const uint32_t *)(buf + s * ATA_SECTOR_SIZE) != lba + s;
    }
    printf("bench ide %s %u MiB\n", dma ? "dma" : "pio", mib);
    tap_ok(!failed && !bad, "%u MiB read by %s: %u failed requests, %u wrong sectors",
           mib, dma ? "dma" : "pio", failed, bad);
    tap_done();
}

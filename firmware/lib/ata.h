/*
 * A small IDE/ATA driver: the PCI IDE controller, the ATA taskfile, PIO and
 * bus-master DMA data transfers, and ATAPI packet commands.
 *
 * How a host talks to an IDE device
 * ---------------------------------
 * An IDE channel is a 16-bit bus with two devices on it, "master" (0) and
 * "slave" (1).  The host sees each channel through two groups of I/O ports:
 *
 *   command block (1F0h-1F7h primary, 170h-177h secondary)
 *     +0 data         16-bit PIO data port (the sector data goes through here)
 *     +1 error        read: why the last command failed   | write: features
 *     +2 count        sector count                         (ATAPI: interrupt reason)
 *     +3 lba low      LBA bits 7:0
 *     +4 lba mid      LBA bits 15:8                        (ATAPI: byte count 7:0)
 *     +5 lba high     LBA bits 23:16                       (ATAPI: byte count 15:8)
 *     +6 device       bit 4 picks master/slave, bit 6 = LBA, bits 3:0 = LBA 27:24
 *     +7 status       read: device state, clears INTRQ     | write: command opcode
 *   control block (3F6h primary, 376h secondary)
 *     alternate status (read: status WITHOUT clearing INTRQ) | device control
 *     (write: SRST soft reset, nIEN interrupt disable, HOB read-back select)
 *
 * Both devices share the registers: writing the device register selects
 * which one answers.  A command is "write the parameters, then the opcode";
 * the device sets BSY while it works, DRQ when it wants to move a block of
 * data through the data port, ERR (with the reason in the error register)
 * when the command failed, and raises INTRQ (IRQ 14/15) when it needs the
 * host.  LBA48 ("EXT") commands take each parameter register twice: the
 * first write is the high ("previous") byte, the second the low byte.
 *
 * Bus-master DMA (SFF-8038i, the PIIX's "BMIDE" registers behind BAR4)
 * moves the data instead of the CPU: the host builds a table of physical
 * regions (PRD table), points the controller at it, issues a DMA command and
 * starts the engine; the engine raises its interrupt bit when the device
 * finishes.
 *
 * ATAPI devices (CD/DVD drives) take SCSI command descriptor blocks through
 * the ATA PACKET command: the host sends 12 CDB bytes through the data port,
 * then moves the data in chunks whose size the device announces in the LBA
 * mid/high registers (the "byte count"), bounded by the limit the host put
 * there when it issued PACKET.  Errors come back as SCSI sense data.
 *
 * References: ATA/ATAPI-6 (T13/1410D) and ATA8-ACS for commands and
 * protocols, SFF-8038i and the Intel 82371SB (PIIX3) datasheet for the
 * bus-master engine, SPC and MMC for the packet commands.
 *
 * Everything here polls with bounded waits; interrupts are optional
 * (ata_irq_enable) and only used where the caller asks for them.
 */
#ifndef FW_ATA_H
#define FW_ATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pci.h"

/* ---- PCI: the IDE controller function (class 01h, subclass 01h) ---------- */

#define PCI_CLASS_STORAGE       0x01
#define PCI_SUBCLASS_IDE        0x01
/* Programming interface bits (PCI IDE Controller Specification 1.0, 2). */
#define IDE_PROGIF_PRI_NATIVE   0x01   /* primary channel uses BAR0/BAR1 */
#define IDE_PROGIF_PRI_SWITCH   0x02   /* ... and the mode can be changed */
#define IDE_PROGIF_SEC_NATIVE   0x04   /* secondary channel uses BAR2/BAR3 */
#define IDE_PROGIF_SEC_SWITCH   0x08
#define IDE_PROGIF_BUSMASTER    0x80   /* BAR4 is the bus-master (BMIDE) block */

/* Legacy ("compatibility mode") resources, fixed by the PC/AT. */
#define ATA_PRI_CMD   0x1F0
#define ATA_PRI_CTL   0x3F6
#define ATA_PRI_IRQ   14
#define ATA_SEC_CMD   0x170
#define ATA_SEC_CTL   0x376
#define ATA_SEC_IRQ   15
/* Where a BAR left unassigned (no BIOS ran) is put; see ata_controller_find. */
#define ATA_BM_DEFAULT_BASE 0xC000

/* ---- taskfile registers -------------------------------------------------- */

#define ATA_REG_DATA     0
#define ATA_REG_ERROR    1    /* read */
#define ATA_REG_FEATURES 1    /* write */
#define ATA_REG_COUNT    2
#define ATA_REG_LBA_LOW  3
#define ATA_REG_LBA_MID  4
#define ATA_REG_LBA_HIGH 5
#define ATA_REG_DEVICE   6
#define ATA_REG_STATUS   7    /* read */
#define ATA_REG_COMMAND  7    /* write */
/* Control block, offset from ctl_base. */
#define ATA_REG_ALTSTATUS 0   /* read */
#define ATA_REG_DEVCTL    0   /* write */

/* Status register. */
#define ATA_SR_BSY  0x80      /* busy: no other bit is valid */
#define ATA_SR_DRDY 0x40      /* ready to accept commands */
#define ATA_SR_DF   0x20      /* device fault */
#define ATA_SR_DSC  0x10      /* seek complete (obsolete; ATAPI: SERV) */
#define ATA_SR_DRQ  0x08      /* data request: the data port wants a transfer */
#define ATA_SR_CORR 0x04      /* obsolete */
#define ATA_SR_IDX  0x02      /* obsolete */
#define ATA_SR_ERR  0x01      /* error (ATAPI: CHK, check condition) */

/* Error register. */
#define ATA_ER_ICRC  0x80     /* interface CRC error (UDMA) */
#define ATA_ER_UNC   0x40     /* uncorrectable data */
#define ATA_ER_MC    0x20     /* media changed */
#define ATA_ER_IDNF  0x10     /* ID not found: address out of range */
#define ATA_ER_MCR   0x08     /* media change request */
#define ATA_ER_ABRT  0x04     /* command aborted: unknown or invalid */
#define ATA_ER_TK0NF 0x02
#define ATA_ER_AMNF  0x01
/* ATAPI: the error register carries the SCSI sense key in bits 7:4. */
#define ATAPI_ER_SENSE_KEY(e) ((e) >> 4)

/* Device control register. */
#define ATA_DC_HOB  0x80      /* read back the "previous" (LBA48 high) bytes */
#define ATA_DC_SRST 0x04      /* software reset of both devices on the channel */
#define ATA_DC_NIEN 0x02      /* keep INTRQ deasserted */

/* Device register: bits 7 and 5 are obsolete but traditionally set. */
#define ATA_DEV_OBS 0xA0
#define ATA_DEV_LBA 0x40
#define ATA_DEV_UNIT(u) ((u) ? 0x10 : 0x00)

/* ATAPI interrupt reason (count register). */
#define ATAPI_IR_COD 0x01     /* 1 = command packet, 0 = user data */
#define ATAPI_IR_IO  0x02     /* 1 = to the host */

/* ---- command opcodes ----------------------------------------------------- */

#define ATA_CMD_READ_SECTORS        0x20
#define ATA_CMD_READ_SECTORS_EXT    0x24
#define ATA_CMD_READ_DMA_EXT        0x25
#define ATA_CMD_READ_MULTIPLE_EXT   0x29
#define ATA_CMD_WRITE_SECTORS       0x30
#define ATA_CMD_WRITE_SECTORS_EXT   0x34
#define ATA_CMD_WRITE_DMA_EXT       0x35
#define ATA_CMD_WRITE_MULTIPLE_EXT  0x39
#define ATA_CMD_PACKET              0xA0
#define ATA_CMD_IDENTIFY_PACKET     0xA1
#define ATA_CMD_READ_MULTIPLE       0xC4
#define ATA_CMD_WRITE_MULTIPLE      0xC5
#define ATA_CMD_SET_MULTIPLE        0xC6
#define ATA_CMD_READ_DMA            0xC8
#define ATA_CMD_WRITE_DMA           0xCA
#define ATA_CMD_FLUSH_CACHE         0xE7
#define ATA_CMD_FLUSH_CACHE_EXT     0xEA
#define ATA_CMD_IDENTIFY            0xEC
#define ATA_CMD_SET_FEATURES        0xEF

#define ATA_SF_SET_TRANSFER_MODE    0x03   /* SET FEATURES subcommand; mode in count */
#define ATA_XFER_UDMA(n)            (0x40 | (n))
#define ATA_XFER_MWDMA(n)           (0x20 | (n))
#define ATA_XFER_PIO(n)             (0x08 | (n))

#define ATA_SECTOR_SIZE   512
#define ATAPI_SECTOR_SIZE 2048
#define ATAPI_CDB_SIZE    12

/* IDENTIFY (PACKET) DEVICE words used here (ATA8-ACS, 7.16/7.17). */
#define ATA_ID_CONFIG        0     /* bit 15: 0 = ATA; 10b in 15:14 = ATAPI */
#define ATA_ID_SERIAL        10    /* 10 words, 20 characters */
#define ATA_ID_FIRMWARE      23    /* 4 words */
#define ATA_ID_MODEL         27    /* 20 words, 40 characters */
#define ATA_ID_MAX_MULTIPLE  47    /* bits 7:0: largest SET MULTIPLE count */
#define ATA_ID_CAPABILITIES  49    /* bit 9 LBA, bit 8 DMA */
#define ATA_ID_MULTIPLE      59    /* bit 8 valid, bits 7:0 current count */
#define ATA_ID_LBA28         60    /* 2 words: addressable sectors, LBA28 */
#define ATA_ID_MWDMA         63
#define ATA_ID_COMMAND_SET_2 83    /* bit 10: LBA48 supported */
#define ATA_ID_UDMA          88    /* bits 7:0 supported, 15:8 selected */
#define ATA_ID_LBA48         100   /* 4 words: addressable sectors, LBA48 */
#define ATA_ID_INTEGRITY     255   /* bits 7:0 A5h, 15:8 checksum */
#define ATA_ID_WORDS         256

/* ---- the channel --------------------------------------------------------- */

struct ata_channel {
    uint16_t cmd;             /* command block base */
    uint16_t ctl;             /* control block: alternate status / device control */
    uint16_t bm;              /* this channel's bus-master registers, 0 if none */
    uint8_t irq;              /* ISA IRQ (legacy) or the PCI interrupt line */
    uint8_t index;            /* 0 primary, 1 secondary */
    bool native;              /* native-PCI mode (BARs) rather than legacy ports */
    uint8_t devctl;           /* what we last wrote to device control (nIEN) */
    /* Filled by the interrupt handler ata_irq_enable installs. */
    volatile unsigned irq_count;       /* interrupts that were this channel's */
    volatile unsigned irq_foreign;     /* deliveries with the BM interrupt bit clear */
    volatile uint8_t irq_status;       /* status register read by the handler */
    volatile uint8_t irq_bm_status;    /* bus-master status seen by the handler */
};

struct ata_controller {
    struct pci_dev pci;
    uint32_t bm_base;         /* BAR4 I/O base, 0 if there is no bus master */
    bool bm_assigned;         /* BAR4 was unassigned and we programmed it */
    struct ata_channel channel[2];
};

/* Set up the IDE function `dev`: enable I/O decoding and bus mastering,
 * and describe its two channels: legacy ports and IRQ 14/15, or BAR0-3 and
 * the PCI interrupt line for a channel in native mode.  An unassigned
 * bus-master BAR (nothing ran before us to assign it) is put at
 * ATA_BM_DEFAULT_BASE. */
void ata_controller_init(const struct pci_dev *dev, struct ata_controller *ctrl);
/* The same for the index-th function of class 0101; false if none. */
bool ata_controller_find(unsigned index, struct ata_controller *ctrl);

/* Register access. */
uint8_t ata_read(const struct ata_channel *ch, unsigned reg);
void ata_write(const struct ata_channel *ch, unsigned reg, uint8_t v);
uint8_t ata_altstatus(const struct ata_channel *ch);
/* Write device control (keeps SRST out); nien true masks the device's INTRQ. */
void ata_set_nien(struct ata_channel *ch, bool nien);
/* The 400 ns a device may take before its status is valid after a command
 * or device selection: four reads of the alternate status register. */
void ata_delay400(const struct ata_channel *ch);
/* Wait (bounded) until BSY is clear; the alternate status register is used
 * so INTRQ is left alone.  Returns false on timeout; *status gets the last
 * status read (if status is not NULL). */
bool ata_wait_not_busy(const struct ata_channel *ch, uint32_t timeout_us, uint8_t *status);
/* Select master (0) or slave (1), waiting for the channel to be idle first. */
bool ata_select(const struct ata_channel *ch, unsigned unit);

/* Software reset (SRST) of the channel: pulse SRST, wait for BSY to clear on
 * the master.  Returns false if the device stayed busy. */
bool ata_soft_reset(struct ata_channel *ch);

/* The signature a device leaves in the taskfile after reset or EXECUTE
 * DEVICE DIAGNOSTIC (ATA8-ACS, table 184): count/lba_low 01h/01h and
 * lba_mid/lba_high 00h/00h for ATA, 14h/EBh for ATAPI. */
struct ata_signature {
    uint8_t count, lba_low, lba_mid, lba_high, error, status;
};
enum ata_kind { ATA_KIND_NONE, ATA_KIND_ATA, ATA_KIND_ATAPI, ATA_KIND_UNKNOWN };
struct ata_signature ata_read_signature(const struct ata_channel *ch, unsigned unit);
enum ata_kind ata_classify(const struct ata_signature *sig);
const char *ata_kind_name(enum ata_kind kind);

/* ---- commands ------------------------------------------------------------ */

/* One command's parameters.  lba48 writes every register twice (high byte
 * first), as the EXT commands require; otherwise LBA bits 27:24 go to the
 * device register. */
struct ata_cmd {
    uint8_t command;
    uint8_t features;
    uint16_t count;           /* sectors; 0 means 256 (LBA28) or 65536 (LBA48) */
    uint64_t lba;
    bool lba48;
};

/* What a command ended with. */
struct ata_result {
    uint8_t status;           /* status register at the end */
    uint8_t error;            /* error register (meaningful when status has ERR) */
    uint8_t bm_status;        /* bus-master status at the end (DMA commands) */
    bool timeout;             /* the device stayed busy / never asked for data */
    unsigned blocks;          /* DRQ data blocks (PIO) or packets (ATAPI) moved */
};

/* True if the command completed: no timeout, not BSY, no ERR, no DF, no DRQ. */
bool ata_ok(const struct ata_result *r);
/* "status 50 error 00" style text for diagnostics (static buffer). */
const char *ata_result_str(const struct ata_result *r);

/* Write the taskfile and the command opcode (selects `unit` first). */
bool ata_issue(const struct ata_channel *ch, unsigned unit, const struct ata_cmd *cmd);

/* Commands without data (FLUSH CACHE, SET FEATURES, SET MULTIPLE, ...). */
bool ata_cmd_nodata(const struct ata_channel *ch, unsigned unit, const struct ata_cmd *cmd,
                    struct ata_result *res);
/* PIO data-in: `blocks` DRQ blocks of block_bytes each into buf.  One block
 * per sector for READ SECTORS, up to the multiple count for READ MULTIPLE. */
bool ata_cmd_pio_in(const struct ata_channel *ch, unsigned unit, const struct ata_cmd *cmd,
                    void *buf, uint32_t bytes, uint32_t block_bytes, struct ata_result *res);
/* PIO data-out, the same shape. */
bool ata_cmd_pio_out(const struct ata_channel *ch, unsigned unit, const struct ata_cmd *cmd,
                     const void *buf, uint32_t bytes, uint32_t block_bytes,
                     struct ata_result *res);
/* IDENTIFY DEVICE (packet = false) or IDENTIFY PACKET DEVICE (packet = true). */
bool ata_identify(const struct ata_channel *ch, unsigned unit, bool packet,
                  uint16_t id[ATA_ID_WORDS], struct ata_result *res);

/* IDENTIFY data helpers.  Strings are stored two characters per word, the
 * first in the high byte; ata_id_string undoes that and trims trailing
 * spaces.  out needs 2 * words + 1 bytes. */
void ata_id_string(const uint16_t *id, unsigned first_word, unsigned words, char *out);
uint32_t ata_id_sectors28(const uint16_t *id);
uint64_t ata_id_sectors48(const uint16_t *id);
/* Word 255: 1 = signature A5h and the 512 bytes sum to 0 mod 256, 0 = no
 * signature (the word is optional), -1 = signature with a wrong checksum. */
int ata_id_checksum(const uint16_t *id);

/* ---- bus-master DMA ------------------------------------------------------ */

/* Bus-master registers, offset from ata_channel.bm. */
#define ATA_BM_COMMAND 0
#define ATA_BM_STATUS  2
#define ATA_BM_PRDT    4
#define ATA_BM_CMD_START     0x01
#define ATA_BM_CMD_TO_MEMORY 0x08  /* "read/write control": 1 = device to memory */
#define ATA_BM_ST_ACTIVE 0x01      /* the engine is transferring */
#define ATA_BM_ST_ERROR  0x02      /* PCI error; write 1 to clear */
#define ATA_BM_ST_INTR   0x04      /* the device raised INTRQ; write 1 to clear */
#define ATA_BM_ST_DRV0   0x20      /* BIOS: drive 0 DMA capable */
#define ATA_BM_ST_DRV1   0x40
#define ATA_BM_ST_SIMPLEX 0x80

/* A physical region descriptor: a buffer of `bytes` (even, 0 = 64 KiB) at an
 * even physical address, which must not cross a 64 KiB boundary.  The last
 * entry of a table has ATA_PRD_EOT.  The table itself is 4-byte aligned and
 * may not cross a 64 KiB boundary either. */
struct ata_prd {
    uint32_t addr;
    uint16_t bytes;
    uint16_t flags;
};
#define ATA_PRD_EOT 0x8000
#define ATA_PRD_MAX_BYTES 0x10000u

/* Append descriptors for buf..buf+bytes to table[*used..max), splitting at
 * 64 KiB boundaries; mark the last one EOT when `last`.  Returns false if
 * the table is too small or the buffer is odd. */
bool ata_prd_add(struct ata_prd *table, unsigned max, unsigned *used, void *buf,
                 uint32_t bytes, bool last);
/* A PRD table that obeys the alignment and 64 KiB rules, from dma_alloc. */
struct ata_prd *ata_prd_alloc(unsigned entries);

/* Start a DMA command: load the PRD table, clear the engine's interrupt and
 * error bits, set the direction, issue the command, then start the engine
 * (SFF-8038i's order).  `to_memory` for reads. */
bool ata_dma_start(const struct ata_channel *ch, unsigned unit, const struct ata_cmd *cmd,
                   const struct ata_prd *prdt, bool to_memory);
/* The same, for an ATAPI PACKET command with the DMA bit: the CDB goes out
 * by PIO, then the engine starts. */
bool atapi_dma_start(const struct ata_channel *ch, unsigned unit, const uint8_t *cdb,
                     const struct ata_prd *prdt, struct ata_result *res);
/* Poll the bus-master status until the device's interrupt bit is set, or
 * the engine went idle with the device no longer busy. */
bool ata_dma_poll(const struct ata_channel *ch, uint32_t timeout_us);
/* Stop the engine, collect the bus-master and ATA status (reading the status
 * register acknowledges INTRQ), and clear the engine's INTR/ERROR bits. */
void ata_dma_finish(const struct ata_channel *ch, struct ata_result *res);
/* The whole polled DMA command, start to finish. */
bool ata_cmd_dma(const struct ata_channel *ch, unsigned unit, const struct ata_cmd *cmd,
                 const struct ata_prd *prdt, bool to_memory, struct ata_result *res);

/* ---- interrupts ---------------------------------------------------------- */

/* Install a handler for the channel's IRQ and unmask it at the PIC.  The
 * handler behaves like a real driver's: it ignores a delivery unless the
 * bus-master status shows the device's interrupt (counted in irq_foreign),
 * otherwise it reads the status register (acknowledging INTRQ) and counts. */
void ata_irq_enable(struct ata_channel *ch);
void ata_irq_disable(struct ata_channel *ch);
/* Enable CPU interrupts and wait until irq_count moves past `seen`. */
bool ata_wait_irq(struct ata_channel *ch, unsigned seen, uint32_t timeout_us);

/* ---- ATAPI --------------------------------------------------------------- */

/* What a PACKET command did. */
struct atapi_result {
    struct ata_result ata;
    uint32_t bytes;           /* data bytes moved */
    unsigned chunks;          /* DRQ data phases */
    uint32_t largest_chunk;   /* the largest byte count the device announced */
    uint8_t reason;           /* interrupt reason at the end (IO|CoD = status phase) */
};

/* PACKET with a data-in (or no-data) CDB, data by PIO: up to buflen bytes
 * into buf; byte_limit goes to the byte count registers as the largest chunk
 * the host takes per DRQ.  Returns true for GOOD status; on CHECK CONDITION
 * returns false with ERR in res->ata.status and the sense key in the error
 * register's top nibble. */
bool atapi_packet(const struct ata_channel *ch, unsigned unit, const uint8_t *cdb, void *buf,
                  uint32_t buflen, uint16_t byte_limit, struct atapi_result *res);

/* Fixed-format sense data (SPC, 4.5.3) as REQUEST SENSE returns it. */
struct atapi_sense {
    uint8_t key, asc, ascq;
    uint8_t response;         /* 70h current / 71h deferred */
    bool ok;                  /* REQUEST SENSE itself worked */
};
bool atapi_request_sense(const struct ata_channel *ch, unsigned unit, struct atapi_sense *s);

/* Big-endian field helpers for CDBs and SCSI data. */
static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void put_be16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static inline void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* ---- test program conventions -----------------------------------------------
 * Not part of the driver: what the guest test programs (tests/ide.c,
 * tests/atapi.c) share.
 *
 * ata_test_channel picks the controller (the command line's
 * "pciid=VVVV:DDDD", else the first IDE function), the channel
 * ("channel=0|1", default `default_channel`) and the unit ("unit=0|1",
 * default 0), prints them as TAP diagnostics, and returns the channel, or
 * NULL when there is no such controller. */
struct ata_channel *ata_test_channel(struct ata_controller *ctrl, unsigned default_channel,
                                     unsigned *unit);
/* "model=TEXT" from the command line, '_' standing for ' ', into out (41
 * bytes); false when it is missing. */
bool ata_test_expected_model(char *out);

/* ---- the test images' pattern -----------------------------------------------
 * Not part of the driver: the images the host side of the tests creates
 * (tests/guest/test_ide_guest.py) hold, in every sector, the sector's LBA
 * as a little-endian u32 repeated.  Sectors a test writes hold
 * ata_written_word(lba, i, tag) in word i, so the host can check them too. */
static inline uint32_t ata_written_word(uint32_t lba, uint32_t i, uint8_t tag)
{
    return ((uint32_t)tag << 24) ^ (i << 16) ^ lba;
}
/* Fill `sectors` sectors of `sector_size` bytes from `lba` with the written
 * pattern (tag != 0) or the image's own pattern (tag == 0). */
void ata_pattern_fill(void *buf, uint32_t lba, uint32_t sectors, uint32_t sector_size,
                      uint8_t tag);
/* Compare; returns the index of the first wrong sector, or `sectors` if all
 * match.  *got / *want (if not NULL) get the first wrong word. */
uint32_t ata_pattern_check(const void *buf, uint32_t lba, uint32_t sectors,
                           uint32_t sector_size, uint8_t tag, uint32_t *got, uint32_t *want);

#endif

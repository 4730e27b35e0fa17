/*
 * A small AHCI (Serial ATA) driver: the HBA, its ports, command slots,
 * FISes and PRD tables, polled and interrupt completion, and native command
 * queuing (NCQ).  The ATA and ATAPI commands themselves are ata.h's: AHCI is
 * only a new way to deliver them.
 *
 * How a host talks to an AHCI HBA
 * -------------------------------
 * An AHCI host bus adapter (PCI class 01h/06h, prog-if 01h) has up to 32
 * SATA ports.  Everything is memory mapped behind BAR5, the "ABAR":
 *
 *   000h  generic host control: CAP (what the HBA can do), GHC (AHCI enable,
 *         interrupt enable, HBA reset), IS (which ports want an interrupt),
 *         PI (which ports exist), VS (AHCI version), CAP2, BOHC
 *   100h  port 0's registers, then 80h bytes per port: CLB/FB (where its
 *         memory structures are), IS/IE (its interrupt status and enables),
 *         CMD (start/stop), TFD (the device's status and error registers),
 *         SIG (the device signature), SSTS/SCTL/SERR (the SATA link: status,
 *         control, errors), SACT (queued commands outstanding), CI (commands
 *         issued)
 *
 * A taskfile no longer exists as I/O ports.  Instead the host keeps, per
 * port, in its own memory:
 *
 *   the command list (PxCLB, 1 KiB aligned): 32 command headers of 32 bytes,
 *       one per "command slot".  A header says how long the command FIS is,
 *       the direction, whether it is ATAPI, how many PRD entries follow, and
 *       where the command table is; the HBA writes back how many bytes it
 *       moved (PRDBC).
 *   a command table per slot (128-byte aligned): the command FIS (the
 *       taskfile as a 20-byte "Register Host to Device" FIS), the ATAPI
 *       command packet, and the PRD table: up to 65535 entries of address
 *       and byte count (at most 4 MiB each, even, word aligned).
 *   the received-FIS area (PxFB, 256-byte aligned): where the HBA copies the
 *       FISes the device sends back: DMA setup (00h), PIO setup (20h),
 *       D2H register (40h: the status at the end of a command), set device
 *       bits (58h: NCQ completions), unknown FIS (60h).
 *
 * To run a command the host fills a slot's header and table and writes the
 * slot's bit to PxCI.  The HBA fetches the FIS, sends it to the device, moves
 * the data through the PRD table, copies the device's answer FIS into the
 * received-FIS area, updates PxTFD, clears the PxCI bit, and sets PxIS bits
 * (which raise the interrupt when enabled in PxIE and GHC.IE).
 *
 * NCQ: READ/WRITE FPDMA QUEUED carry a tag (= the slot number here).  The
 * host sets the slot's bit in PxSACT, then in PxCI; the device accepts the
 * command at once (PxCI clears) and later completes any number of queued
 * commands, in any order, with one Set Device Bits FIS whose SActive field
 * lists them; the HBA clears those PxSACT bits.
 *
 * Starting and stopping a port is a small state machine in PxCMD: FRE
 * (FIS receive enable, acknowledged by FR) must be on before ST (start the
 * command list engine, acknowledged by CR); both must be off (and FR/CR read
 * back 0) before CLB/FB may change.
 *
 * References: Serial ATA AHCI 1.3.1 (Intel), in particular 3 (registers),
 * 4 (memory structures), 5.6 (command processing), 6.2 (error recovery),
 * 10 (platform software: initialisation, starting, resets); SATA 3.x for the
 * FIS layouts; ATA8-ACS for the commands (NCQ: 7.28, 7.59).
 *
 * Everything polls with bounded waits.  Interrupts are optional: the test
 * program wires ahci_irq_service() to INTx or MSI.
 */
#ifndef FW_AHCI_H
#define FW_AHCI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ata.h"
#include "pci.h"

/* ---- PCI ------------------------------------------------------------------ */

#define PCI_SUBCLASS_SATA     0x06
#define AHCI_PROGIF           0x01     /* 01h = AHCI 1.0 programming interface */
#define AHCI_ABAR_INDEX       5
/* Where an ABAR nobody assigned is put (no BIOS ran): in the PCI hole, below
 * the I/O APIC (FEC00000h) and the local APIC (FEE00000h). */
#define AHCI_ABAR_DEFAULT     0xFEBF0000u

/* ---- generic host control (offsets in the ABAR) ---------------------------- */

#define AHCI_CAP     0x00
#define AHCI_GHC     0x04
#define AHCI_IS      0x08
#define AHCI_PI      0x0C
#define AHCI_VS      0x10
#define AHCI_CAP2    0x24
#define AHCI_BOHC    0x28

/* CAP: host capabilities. */
#define AHCI_CAP_NP(c)    ((c) & 0x1F)            /* ports - 1 */
#define AHCI_CAP_SXS      (1u << 5)               /* supports external SATA */
#define AHCI_CAP_NCS(c)   (((c) >> 8) & 0x1F)     /* command slots - 1 */
#define AHCI_CAP_PMD      (1u << 15)
#define AHCI_CAP_SPM      (1u << 17)              /* port multiplier */
#define AHCI_CAP_SAM      (1u << 18)              /* AHCI mode only */
#define AHCI_CAP_ISS(c)   (((c) >> 20) & 0xF)     /* interface speed: 1/2/3 = Gen 1/2/3 */
#define AHCI_CAP_SCLO     (1u << 24)              /* command list override */
#define AHCI_CAP_SSS      (1u << 27)              /* staggered spin-up */
#define AHCI_CAP_SSNTF    (1u << 29)
#define AHCI_CAP_SNCQ     (1u << 30)              /* native command queuing */
#define AHCI_CAP_S64A     (1u << 31)              /* 64-bit addressing */

/* GHC: global host control. */
#define AHCI_GHC_HR  (1u << 0)      /* HBA reset; the HBA clears it when done (<= 1 s) */
#define AHCI_GHC_IE  (1u << 1)      /* interrupt enable */
#define AHCI_GHC_AE  (1u << 31)     /* AHCI enable (vs. legacy IDE emulation) */

/* ---- port registers (offsets from the port's base, ABAR + 100h + 80h * n) -- */

#define AHCI_PORT_BASE(n)  (0x100u + 0x80u * (n))
#define AHCI_PxCLB   0x00
#define AHCI_PxCLBU  0x04
#define AHCI_PxFB    0x08
#define AHCI_PxFBU   0x0C
#define AHCI_PxIS    0x10
#define AHCI_PxIE    0x14
#define AHCI_PxCMD   0x18
#define AHCI_PxTFD   0x20
#define AHCI_PxSIG   0x24
#define AHCI_PxSSTS  0x28
#define AHCI_PxSCTL  0x2C
#define AHCI_PxSERR  0x30
#define AHCI_PxSACT  0x34
#define AHCI_PxCI    0x38
#define AHCI_PxSNTF  0x3C

/* PxIS / PxIE: interrupt status (write 1 to clear) and enables. */
#define AHCI_PxIS_DHRS  (1u << 0)    /* D2H register FIS received */
#define AHCI_PxIS_PSS   (1u << 1)    /* PIO setup FIS received */
#define AHCI_PxIS_DSS   (1u << 2)    /* DMA setup FIS received */
#define AHCI_PxIS_SDBS  (1u << 3)    /* set device bits FIS received */
#define AHCI_PxIS_UFS   (1u << 4)    /* unknown FIS */
#define AHCI_PxIS_DPS   (1u << 5)    /* a PRD with its I bit done */
#define AHCI_PxIS_PCS   (1u << 6)    /* port connect change (mirrors SERR.DIAG.X) */
#define AHCI_PxIS_DMPS  (1u << 7)
#define AHCI_PxIS_PRCS  (1u << 22)   /* PhyRdy change (mirrors SERR.DIAG.N) */
#define AHCI_PxIS_IPMS  (1u << 23)
#define AHCI_PxIS_OFS   (1u << 24)   /* overflow: more data than the PRDs hold */
#define AHCI_PxIS_INFS  (1u << 26)
#define AHCI_PxIS_IFS   (1u << 27)   /* interface fatal error */
#define AHCI_PxIS_HBDS  (1u << 28)   /* host bus data error */
#define AHCI_PxIS_HBFS  (1u << 29)   /* host bus fatal error */
#define AHCI_PxIS_TFES  (1u << 30)   /* task file error: status had ERR */
#define AHCI_PxIS_CPDS  (1u << 31)
/* What ends a command unsuccessfully. */
#define AHCI_PxIS_ERRORS (AHCI_PxIS_TFES | AHCI_PxIS_HBFS | AHCI_PxIS_HBDS | AHCI_PxIS_IFS | \
                          AHCI_PxIS_OFS | AHCI_PxIS_INFS | AHCI_PxIS_UFS)

/* PxCMD: command and status. */
#define AHCI_PxCMD_ST     (1u << 0)    /* start: process the command list */
#define AHCI_PxCMD_SUD    (1u << 1)    /* spin-up device (staggered spin-up) */
#define AHCI_PxCMD_POD    (1u << 2)    /* power on device (cold presence detect) */
#define AHCI_PxCMD_CLO    (1u << 3)    /* command list override: clear BSY/DRQ */
#define AHCI_PxCMD_FRE    (1u << 4)    /* FIS receive enable */
#define AHCI_PxCMD_CCS(c) (((c) >> 8) & 0x1F)   /* current command slot */
#define AHCI_PxCMD_FR     (1u << 14)   /* FIS receive running */
#define AHCI_PxCMD_CR     (1u << 15)   /* command list running */
#define AHCI_PxCMD_CPS    (1u << 16)   /* cold presence state */
#define AHCI_PxCMD_HPCP   (1u << 18)   /* hot plug capable port */
#define AHCI_PxCMD_CPD    (1u << 20)   /* cold presence detection */
#define AHCI_PxCMD_ESP    (1u << 21)   /* external SATA port */
#define AHCI_PxCMD_ATAPI  (1u << 24)   /* the device is ATAPI (drives the LED) */

/* PxTFD: the device's status (7:0) and error (15:8) registers. */
#define AHCI_TFD_STS(t)   ((uint8_t)(t))
#define AHCI_TFD_ERR(t)   ((uint8_t)((t) >> 8))

/* PxSSTS / PxSCTL: SATA status and control. */
#define AHCI_SSTS_DET(s)  ((s) & 0xF)          /* 0 none, 1 present no phy, 3 present + phy */
#define AHCI_SSTS_SPD(s)  (((s) >> 4) & 0xF)   /* negotiated speed */
#define AHCI_SSTS_IPM(s)  (((s) >> 8) & 0xF)   /* 1 = active */
#define AHCI_DET_NONE     0
#define AHCI_DET_PRESENT  3
#define AHCI_SCTL_DET_COMRESET 1               /* hold the link in reset (COMRESET) */

/* PxSERR: SATA errors (15:0) and diagnostics (31:16), write 1 to clear. */
#define AHCI_SERR_DIAG_N  (1u << 16)   /* PhyRdy change */
#define AHCI_SERR_DIAG_X  (1u << 26)   /* exchanged: device presence changed */

/* PxSIG: the signature from the device's first D2H register FIS after reset
 * (LBA high, LBA mid, LBA low, count): ATA8-ACS table 184 again. */
#define AHCI_SIG_ATA      0x00000101u
#define AHCI_SIG_ATAPI    0xEB140101u
#define AHCI_SIG_SEMB     0xC33C0101u   /* enclosure management bridge */
#define AHCI_SIG_PM       0x96690101u   /* port multiplier */
#define AHCI_SIG_NONE     0xFFFFFFFFu

/* ---- memory structures ------------------------------------------------------ */

#define AHCI_MAX_PORTS      32
#define AHCI_MAX_SLOTS      32
#define AHCI_CLB_ALIGN      1024
#define AHCI_FB_ALIGN       256
#define AHCI_CTBA_ALIGN     128
#define AHCI_RFIS_SIZE      256
#define AHCI_PRD_MAX_BYTES  (4u << 20)      /* one PRD entry moves at most 4 MiB */
/* PRD entries per command table here: enough for the scatter/gather the
 * test program does; a table is then 80h + 24 * 16 = 200h bytes. */
#define AHCI_PRDT_ENTRIES   24

/* Command header (AHCI 4.2.2), 32 bytes, one per slot in the command list. */
struct ahci_cmd_header {
    uint16_t flags;               /* CFL 4:0 (FIS dwords), A, W, P, R, B, C, PMP 15:12 */
    uint16_t prdtl;               /* PRD table length, in entries */
    volatile uint32_t prdbc;      /* PRD byte count: bytes moved, written by the HBA */
    uint32_t ctba;                /* command table base (128-byte aligned) */
    uint32_t ctbau;
    uint32_t reserved[4];
};
#define AHCI_HDR_CFL(dwords) ((dwords) & 0x1F)
#define AHCI_HDR_ATAPI    (1u << 5)    /* A: the table's ACMD holds a SCSI CDB */
#define AHCI_HDR_WRITE    (1u << 6)    /* W: data from memory to the device */
#define AHCI_HDR_PREFETCH (1u << 7)    /* P: the HBA may prefetch PRDs */
#define AHCI_HDR_RESET    (1u << 8)    /* R: part of a software reset sequence */
#define AHCI_HDR_CLEAR    (1u << 10)   /* C: clear BSY on R_OK */

/* Physical region descriptor (AHCI 4.2.3.3), 16 bytes. */
struct ahci_prd {
    uint32_t dba;                 /* data base address, bit 0 reserved (word aligned) */
    uint32_t dbau;
    uint32_t reserved;
    uint32_t dbc;                 /* 21:0 byte count - 1 (bit 0 set: even count), 31 I */
};
#define AHCI_PRD_DBC(bytes) (((bytes) - 1) & 0x3FFFFF)
#define AHCI_PRD_INTR       (1u << 31)

/* Command table (AHCI 4.2.3): FIS, ATAPI command, PRD table. */
struct ahci_cmd_table {
    uint8_t cfis[64];             /* command FIS */
    uint8_t acmd[16];             /* ATAPI command (12 or 16 bytes) */
    uint8_t reserved[48];
    struct ahci_prd prdt[AHCI_PRDT_ENTRIES];
};

/* The received-FIS area (AHCI 4.2.1): offsets of each FIS kind. */
#define AHCI_RFIS_DSFIS   0x00        /* DMA setup FIS, 28 bytes */
#define AHCI_RFIS_PSFIS   0x20        /* PIO setup FIS, 20 bytes */
#define AHCI_RFIS_RFIS    0x40        /* D2H register FIS, 20 bytes */
#define AHCI_RFIS_SDBFIS  0x58        /* set device bits FIS, 8 bytes */
#define AHCI_RFIS_UFIS    0x60        /* unknown FIS, up to 64 bytes */

/* FIS types (SATA 3.x, 10.5). */
#define FIS_TYPE_REG_H2D    0x27
#define FIS_TYPE_REG_D2H    0x34
#define FIS_TYPE_DMA_ACT    0x39
#define FIS_TYPE_DMA_SETUP  0x41
#define FIS_TYPE_DATA       0x46
#define FIS_TYPE_BIST       0x58
#define FIS_TYPE_PIO_SETUP  0x5F
#define FIS_TYPE_DEV_BITS   0xA1
#define FIS_H2D_C           0x80      /* byte 1: this FIS updates the command register */
#define FIS_FLAG_I          0x40      /* byte 1 of D2H/PIO setup/SDB: interrupt */
#define FIS_FLAG_D          0x20      /* byte 1 of PIO setup: data to the host */
#define FIS_H2D_LENGTH      20        /* bytes; CFL = 5 dwords */

/* ---- ATA commands only AHCI can send --------------------------------------- */

#define ATA_CMD_READ_LOG_EXT        0x2F
#define ATA_CMD_READ_FPDMA_QUEUED   0x60
#define ATA_CMD_WRITE_FPDMA_QUEUED  0x61
#define ATA_ID_QUEUE_DEPTH   75        /* bits 4:0: maximum queue depth - 1 */
#define ATA_ID_SATA_CAP      76        /* bit 8: NCQ supported */
#define ATA_ID_SATA_NCQ      (1u << 8)
/* NCQ FIS fields: the tag goes in count 7:3, the sector count in features,
 * device bit 6 must be 1 (bit 7 would be FUA). */
#define ATA_NCQ_TAG(tag)     ((uint16_t)((tag) << 3))
#define ATA_DEV_NCQ          0x40

/* ---- the HBA and its ports -------------------------------------------------- */

struct ahci_hba;

struct ahci_port {
    struct ahci_hba *hba;
    unsigned index;
    uintptr_t regs;                        /* ABAR + 100h + 80h * index */
    bool allocated;                        /* clist/rfis/tables exist */
    struct ahci_cmd_header *clist;         /* 32 headers, 1 KiB aligned */
    volatile uint8_t *rfis;                /* 256 bytes, 256-byte aligned */
    struct ahci_cmd_table *table[AHCI_MAX_SLOTS];
    uint32_t sig;                          /* PxSIG when last classified */
    enum ata_kind kind;
    /* Filled by ahci_irq_service. */
    volatile unsigned irq_count;           /* interrupts that had this port's IS bit */
    volatile uint32_t irq_is;              /* PxIS bits the handler collected (OR) */
    volatile uint32_t irq_serr;            /* PxSERR it cleared for PCS/PRCS (OR) */
};

struct ahci_hba {
    struct pci_dev pci;
    uintptr_t abar;
    bool abar_assigned;                    /* BAR5 was 0 and we programmed it */
    uint32_t cap, cap2, pi, vs;
    unsigned slots;                        /* CAP.NCS + 1 */
    struct ahci_port port[AHCI_MAX_PORTS];
    /* Filled by ahci_irq_service. */
    volatile unsigned irq_count;           /* deliveries with IS != 0 */
    volatile unsigned irq_empty;           /* deliveries that found IS == 0 */
    volatile uint32_t irq_last_is;
};

/* Register access. */
uint32_t ahci_read(const struct ahci_hba *hba, unsigned reg);
void ahci_write(const struct ahci_hba *hba, unsigned reg, uint32_t v);
uint32_t ahci_port_read(const struct ahci_port *p, unsigned reg);
void ahci_port_write(const struct ahci_port *p, unsigned reg, uint32_t v);

/* Set up the function `dev`: map the ABAR (programming AHCI_ABAR_DEFAULT
 * into an unassigned BAR5), enable memory decoding and bus mastering, read
 * CAP/PI/VS/CAP2.  False if BAR5 is not a memory BAR. */
bool ahci_hba_init(const struct pci_dev *dev, struct ahci_hba *hba);
/* The same for the index-th function of class 0106 prog-if 01; false if none. */
bool ahci_hba_find(unsigned index, struct ahci_hba *hba);
/* GHC.AE: AHCI mode on (before touching any other register, AHCI 10.1.2). */
void ahci_hba_enable(struct ahci_hba *hba);
/* HBA reset: GHC.HR, wait (at most 1 s) for the HBA to clear it, then AHCI
 * enable again (the reset cleared it).  Every port is reset with it.  CAP,
 * PI and friends are read again.  False if HR stayed set. */
bool ahci_hba_reset(struct ahci_hba *hba);
/* GHC.IE on/off. */
void ahci_hba_irq_enable(struct ahci_hba *hba, bool on);
/* "1.0", "1.3.1", ... for a VS value (static buffer). */
const char *ahci_version_str(uint32_t vs);

/* ---- ports ------------------------------------------------------------------ */

/* The port is idle: ST, CR, FRE and FR all clear. */
bool ahci_port_idle(const struct ahci_port *p);
/* Stop the command list engine: clear ST, wait (500 ms) for CR to clear. */
bool ahci_port_stop_engine(struct ahci_port *p);
/* Stop the port completely: the engine, then FIS receive (FRE, wait FR). */
bool ahci_port_stop(struct ahci_port *p);
/* Bring a port up from any state (AHCI 10.1.2, 10.3.1): stop it, allocate
 * and program its command list and received-FIS area, clear PxSERR and
 * PxIS, enable FIS receive (wait FR), spin the device up (SUD/POD), and wait
 * up to link_wait_us for a device to establish the link (PxSSTS.DET = 3).
 * Leaves ST clear.  False if the port cannot be stopped or FR never sets. */
bool ahci_port_setup(struct ahci_hba *hba, unsigned index, uint32_t link_wait_us);
/* A device is there and the link is up (PxSSTS.DET = 3). */
bool ahci_port_present(const struct ahci_port *p);
/* Wait (bounded) for the device to leave BSY/DRQ, then classify it by
 * PxSIG into p->sig / p->kind. */
enum ata_kind ahci_port_classify(struct ahci_port *p, uint32_t timeout_us);
enum ata_kind ahci_sig_kind(uint32_t sig);
/* Start the command list engine (AHCI 10.3.1): FRE must be on, the device
 * not BSY/DRQ (waited for, bounded), CR clear; then ST.  True once CR reads 1. */
bool ahci_port_start(struct ahci_port *p);
/* COMRESET (AHCI 10.4.2): with ST clear, hold PxSCTL.DET = 1 for more than
 * 1 ms, release it, wait for the link (DET = 3) and the device's signature
 * FIS (BSY clear), then clear PxSERR.  False if the link never came back. */
bool ahci_port_comreset(struct ahci_port *p);
/* Command list override (CAP.SCLO): tell the HBA to forget BSY/DRQ so the
 * port can start again.  False if unsupported or CLO did not clear. */
bool ahci_port_clo(struct ahci_port *p);
/* Recovery after an error (AHCI 6.2.2.1): stop the engine, clear PxSERR and
 * PxIS, get rid of BSY/DRQ (CLO, else COMRESET), start again.  *how (if not
 * NULL) gets "restart", "clo" or "comreset". */
bool ahci_port_recover(struct ahci_port *p, const char **how);

/* ---- commands --------------------------------------------------------------- */

/* The registers a Register Host to Device FIS carries. */
struct ahci_taskfile {
    uint8_t command;
    uint16_t features;
    uint16_t count;
    uint64_t lba;                  /* 48 bits */
    uint8_t device;
    uint8_t control;
};
/* From an ata.h command: LBA mode, LBA28 bits 27:24 into the device field. */
struct ahci_taskfile ahci_tf_from_ata(const struct ata_cmd *cmd);
/* READ/WRITE FPDMA QUEUED: `count` sectors at `lba` with this tag. */
struct ahci_taskfile ahci_tf_ncq(bool write, uint64_t lba, uint16_t count, unsigned tag);
/* Build the 20-byte H2D register FIS (C bit set: a command). */
void ahci_fis_h2d(uint8_t fis[FIS_H2D_LENGTH], const struct ahci_taskfile *tf);

/* One buffer of a transfer. */
struct ahci_sg {
    void *buf;
    uint32_t bytes;                /* even */
};

/* What goes into a command slot. */
struct ahci_cmd {
    struct ahci_taskfile tf;
    const uint8_t *cdb;            /* ATAPI: 12-byte CDB (tf.command is PACKET) */
    bool write;                    /* memory -> device */
    const struct ahci_sg *sg;      /* the data buffers, in order */
    unsigned nsg;
    uint32_t prd_bytes;            /* split buffers into PRDs of at most this (0 = 4 MiB) */
    bool prd_intr_last;            /* set the I bit of the last PRD (PxIS.DPS) */
};

/* PRD entries for buf..buf+bytes, each at most `chunk` bytes (even, <= 4
 * MiB), appended to table[*used..max).  False if the table is full or the
 * buffer is odd. */
bool ahci_prd_add(struct ahci_prd *table, unsigned max, unsigned *used, const void *buf,
                  uint32_t bytes, uint32_t chunk);
/* Fill slot `slot`'s header and table from `cmd` (PRDBC cleared).  False if
 * the PRDs do not fit or the slot does not exist. */
bool ahci_slot_prepare(struct ahci_port *p, unsigned slot, const struct ahci_cmd *cmd);
/* Hand prepared slots to the HBA: PxSACT first for queued commands, then
 * PxCI.  The port must be started. */
void ahci_slots_issue(struct ahci_port *p, uint32_t slots, bool queued);

/* How a command (or a batch) ended. */
struct ahci_result {
    uint8_t status, error;         /* PxTFD at the end */
    uint32_t is;                   /* PxIS at the end (cleared afterwards) */
    uint32_t serr;                 /* PxSERR at the end */
    uint32_t ci, sact;             /* still outstanding (0 when all completed) */
    uint32_t prdbc;                /* the first slot's byte count */
    bool timeout;
};
/* Completed: no timeout, nothing outstanding, no error interrupt, status
 * without BSY/DRQ/ERR/DF. */
bool ahci_ok(const struct ahci_result *r);
/* "tfd 50/00 is 00000001" style text (static buffer). */
const char *ahci_result_str(const struct ahci_result *r);

/* Poll until every slot in `slots` is done (PxCI and, for queued, PxSACT
 * bits clear) or an error interrupt bit is set, or timeout.  Fills *r and
 * clears the PxIS bits it reports. */
bool ahci_wait_slots(struct ahci_port *p, uint32_t slots, bool queued, uint32_t timeout_us,
                     struct ahci_result *r);
/* The same, but do not poll PxIS: interrupts deliver, *r->is is what the
 * handler collected (p->irq_is, which is then reset). */
bool ahci_wait_slots_irq(struct ahci_port *p, uint32_t slots, bool queued,
                         uint32_t timeout_us, struct ahci_result *r);
/* Prepare slot `slot`, issue it, poll to the end. */
bool ahci_exec(struct ahci_port *p, unsigned slot, const struct ahci_cmd *cmd,
               struct ahci_result *r);
/* The same for a one-buffer ATA command from ata.h. */
bool ahci_exec_ata(struct ahci_port *p, unsigned slot, const struct ata_cmd *ata, void *buf,
                   uint32_t bytes, bool write, struct ahci_result *r);
/* IDENTIFY DEVICE (packet = false) or IDENTIFY PACKET DEVICE (PIO data-in),
 * in slot 0. */
bool ahci_identify(struct ahci_port *p, bool packet, uint16_t id[ATA_ID_WORDS],
                   struct ahci_result *r);
/* An ATAPI PACKET command with data-in (or none), in slot 0: `dma` sets the
 * features DMA bit; otherwise the HBA moves the data by PIO, `byte_limit`
 * per DRQ block.  A CHECK CONDITION ends with PxIS.TFES, the sense key in
 * the error register's bits 7:4, and a stopped command list: recover the
 * port (ahci_port_recover) before REQUEST SENSE. */
bool ahci_atapi(struct ahci_port *p, const uint8_t cdb[ATAPI_CDB_SIZE], void *buf,
                uint32_t bytes, bool dma, uint16_t byte_limit, struct ahci_result *r);

/* ---- interrupts ------------------------------------------------------------- */

/* What an interrupt handler does: read IS, and for every port with its bit
 * collect and clear (write 1) that port's PxIS, then clear those IS bits.
 * A connect or PhyRdy change (PxIS.PCS/PRCS) is acknowledged by clearing
 * PxSERR, which is collected too.  Counts into hba->irq_* and port->irq_*. */
void ahci_irq_service(struct ahci_hba *hba);
/* Wait (interrupts on) until hba->irq_count moves past `seen`. */
bool ahci_wait_irq(struct ahci_hba *hba, unsigned seen, uint32_t timeout_us);
/* INTx through the 8259: install the handler for `irq` and unmask it. */
void ahci_irq_attach_intx(struct ahci_hba *hba, unsigned irq);
void ahci_irq_detach_intx(struct ahci_hba *hba, unsigned irq);
/* MSI: program the capability for a fixed, edge interrupt with `vector` to
 * the local APIC with ID 0, install the handler (which ends with a local
 * APIC EOI), disable INTx.  The local APIC must be software-enabled.  False
 * if the function has no MSI capability. */
bool ahci_irq_attach_msi(struct ahci_hba *hba, uint8_t vector);
void ahci_irq_detach_msi(struct ahci_hba *hba, uint8_t vector);

#endif

/*
 * drivebay's BIOS boot stub: what the C half shares.
 *
 * The stub is a 128 KiB ROM.  The machine maps it at 4 GiB - 128 KiB and
 * copies it to 0xE0000-0xFFFFF, which is RAM on this board (the PC's
 * "shadow RAM").  The CPU starts at F000:FFF0 in real mode.  Every BIOS
 * service enters through a small 16-bit stub in entry.S that saves the
 * caller's registers in a `struct bregs` on the caller's stack, switches to
 * 32-bit flat protected mode, and calls a C handler with a pointer to that
 * frame.  The handler reads and writes the frame; entry.S switches back to
 * real mode and IRETs with the registers and FLAGS from the frame.  See
 * docs/bios.md for the tour.
 */
#ifndef BIOS_H
#define BIOS_H

#ifndef __ASSEMBLER__
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io.h"
#include "pci.h"
#endif

/* GDT selectors of entry.S (the 16-bit code segment has base F0000h). */
#define BIOS_SEL_CODE32 0x08
#define BIOS_SEL_DATA32 0x10
#define BIOS_SEL_CODE16 0x18
#define BIOS_SEL_DATA16 0x20
#define BIOS_SEG 0xF000               /* real-mode segment of every entry point */

/* ---- the BIOS data area (IBM PC/AT Technical Reference; Ralf Brown's
 * "BIOS data area" table).  Segment 40h, i.e. linear 400h. */
#define BDA ((volatile uint8_t *)phys_ptr(0x400))
#define BDA_COM1          0x00   /* word: I/O base of COM1..COM4 */
#define BDA_EBDA_SEG      0x0E   /* word: segment of the extended BDA */
#define BDA_EQUIPMENT     0x10   /* word: what INT 11h returns */
#define BDA_BASE_MEMORY   0x13   /* word: KiB below 640 KiB, INT 12h */
#define BDA_KBD_FLAGS     0x17
#define BDA_KBD_HEAD      0x1A   /* word: offset (from 400h) of the next key */
#define BDA_KBD_TAIL      0x1C   /* word: offset of the next free slot */
#define BDA_KBD_BUF       0x1E   /* 16 words */
#define BDA_VIDEO_MODE    0x49
#define BDA_VIDEO_COLS    0x4A   /* word */
#define BDA_CURSOR_POS    0x50   /* 8 words: column, row per page */
#define BDA_CURSOR_SHAPE  0x60   /* word: end line, start line */
#define BDA_ACTIVE_PAGE   0x62
#define BDA_CRTC_BASE     0x63   /* word */
#define BDA_TICKS         0x6C   /* dword: IRQ0 ticks since midnight */
#define BDA_MIDNIGHT      0x70   /* nonzero once the count wrapped at midnight */
#define BDA_DISK_STATUS   0x74   /* status of the last INT 13h hard-disk call */
#define BDA_HD_COUNT      0x75   /* number of hard disks */
#define BDA_KBD_START     0x80   /* word: keyboard buffer start offset */
#define BDA_KBD_END       0x82   /* word: keyboard buffer end offset */
#define BDA_VIDEO_ROWS    0x84   /* rows - 1 */
#define BDA_KBD_FLAGS3    0x96

/* The extended BDA: 1 KiB at the top of base memory, as most BIOSes. */
#define EBDA_BASE 0x9FC00u
#define EBDA_KIB  1
#define BASE_MEMORY_KIB (EBDA_BASE / 1024)

#ifndef __ASSEMBLER__

/* The caller's registers, as entry.S pushed them (pushal, then the segment
 * registers, the handler address, and the IRET frame the INT instruction
 * pushed).  Byte and word views name the registers as a programmer does. */
#define BREG(x) union { uint32_t e##x; uint16_t x; }
#define BREG8(r) union { uint32_t e##r##x; uint16_t r##x; struct { uint8_t r##l, r##h; }; }
struct bregs {
    BREG(di);
    BREG(si);
    BREG(bp);
    uint32_t esp_unused;              /* pushal's copy of ESP; popal ignores it */
    BREG8(b);
    BREG8(d);
    BREG8(c);
    BREG8(a);
    uint16_t ds, es, fs, gs;
    uint32_t handler;                 /* the C function entry.S called */
    uint16_t ip, cs, flags;           /* the IRET frame */
} __attribute__((packed));
#undef BREG
#undef BREG8

#define F_CF 0x0001
#define F_ZF 0x0040
#define F_IF 0x0200

static inline void set_cf(struct bregs *r, bool on)
{
    r->flags = on ? (r->flags | F_CF) : (r->flags & ~F_CF);
}

/* A real-mode seg:off as the linear address it names. */
static inline void *rm_ptr(uint16_t seg, uint16_t off)
{
    return phys_ptr(((uintptr_t)seg << 4) + off);
}

static inline uint16_t bda16(unsigned off) { return *(volatile uint16_t *)(BDA + off); }
static inline void bda16_set(unsigned off, uint16_t v) { *(volatile uint16_t *)(BDA + off) = v; }
static inline uint32_t bda32(unsigned off) { return *(volatile uint32_t *)(BDA + off); }
static inline void bda32_set(unsigned off, uint32_t v) { *(volatile uint32_t *)(BDA + off) = v; }

/* ---- CMOS (post.c): the MC146818 RTC registers, BCD and 24-hour here --- */
#define RTC_SECONDS 0x00
#define RTC_MINUTES 0x02
#define RTC_HOURS 0x04
#define RTC_DAY 0x07
#define RTC_MONTH 0x08
#define RTC_YEAR 0x09
#define RTC_STATUS_A 0x0A
#define RTC_STATUS_B 0x0B
#define CMOS_CENTURY 0x32
uint8_t cmos_read(uint8_t index);
void cmos_write(uint8_t index, uint8_t value);

/* ---- memory (memmap.c) ------------------------------------------------- */
/* RAM below 4 GiB and above it, from the CMOS (QEMU's pc_cmos_init layout). */
void memmap_init(void);
uint32_t memmap_ram_top(void);          /* end of RAM below 4 GiB */
uint32_t memmap_usable_top(void);       /* ... minus what the BIOS keeps (E820 reserved) */
void handle_e820(struct bregs *r);

/* ---- the console ------------------------------------------------------ */
void tty_putc(char c);                  /* INT 10h teletype (raw byte, cursor kept) */

/* ---- PCI (pcisetup.c) -------------------------------------------------- */
void pci_setup(void);
/* The index-th function on bus 0 of this class (prog_if may be PCI_ANY_PROG_IF). */
const struct pci_dev *pci_find(uint8_t class_code, uint8_t subclass, int prog_if, unsigned index);

/* ---- disks (disk.c, drivers) -------------------------------------------- */
#define DISK_RET_OK          0x00
#define DISK_RET_EPARAM      0x01   /* bad command or parameter */
#define DISK_RET_ENOTFOUND   0x04   /* sector not found */
#define DISK_RET_EBOUNDARY   0x09   /* DMA across a 64 KiB boundary */
#define DISK_RET_EMEDIA      0x0C   /* unsupported track / media type */
#define DISK_RET_EUNCORR     0x10   /* uncorrectable read error */
#define DISK_RET_ECONTROLLER 0x20   /* controller failure */
#define DISK_RET_ENOTREADY   0xAA   /* drive not ready */
#define DISK_RET_ETIMEOUT    0x80   /* no answer */
#define DISK_RET_EWRITEPROT  0x03
#define DISK_RET_ENOMEDIA    0x31

enum disk_kind { DISK_HD, DISK_CD };

struct disk;
/* What a controller driver provides for each of its drives: one command
 * moving `count` (at most max_blocks) blocks at `lba` to or from a linear
 * buffer below 4 GiB, returning an INT 13h status (DISK_RET_*).  disk_io()
 * splits larger transfers.  SCSI, virtio and others join by adding a
 * driver with these operations. */
struct disk_ops {
    const char *name;
    uint32_t max_blocks;
    int (*rw)(struct disk *d, bool write, uint64_t lba, uint32_t count, void *buf);
    /* CD/DVD drives: one SCSI command with `bytes` of data in; true for
     * GOOD status (disk_cd.c builds the reads on it). */
    bool (*packet)(struct disk *d, const uint8_t *cdb, void *buf, uint32_t bytes);
};

struct disk {
    const struct disk_ops *ops;
    enum disk_kind kind;
    uint8_t number;                   /* INT 13h drive number: 80h+ disks, E0h+ CDs */
    uint16_t block_size;              /* 512, or 2048 for a CD */
    uint64_t sectors;
    uint16_t cylinders, heads, spt;   /* the geometry INT 13h shows (translated) */
    /* Where it is, for the EDD 3.0 device path (AH=48h). */
    uint16_t bdf;
    uint8_t channel, unit;            /* IDE channel/unit, or AHCI port */
    bool sata;
    void *ctx;                        /* the driver's own data */
    char model[41];
};

#define MAX_DISKS 16
extern struct disk disks[MAX_DISKS];
extern unsigned disk_count;
struct disk *disk_add(void);
struct disk *disk_by_number(uint8_t number);
int disk_io(struct disk *d, bool write, uint64_t lba, uint32_t count, void *buf);
void disk_set_geometry(struct disk *d, const uint16_t *identify);
void disk_from_identify(struct disk *d, const uint16_t *id, bool atapi, const struct disk_ops *ops,
                        const char *where);
int cd_rw(struct disk *d, bool write, uint64_t lba, uint32_t count, void *buf);
uint64_t cd_capacity(struct disk *d);
void ide_probe(void);
void ahci_probe(void);
void handle_13(struct bregs *r);
void eltorito_status(struct bregs *r);

/* ---- the services (services.c) ----------------------------------------- */
void handle_10(struct bregs *r);
void handle_11(struct bregs *r);
void handle_12(struct bregs *r);
void handle_15(struct bregs *r);
void handle_16(struct bregs *r);
/* Set by a handler to be called again after the next interrupt (entry.S). */
extern uint32_t bios_wait_request;
void handle_1a(struct bregs *r);
void serial_poll_input(void);

/* ---- POST and boot (post.c, boot.c) ------------------------------------ */
void handle_post(struct bregs *r);
void handle_18(struct bregs *r);
void handle_19(struct bregs *r);
void boot_init(void);
__attribute__((noreturn)) void bios_halt(void);

/* Entry points in entry.S, for the IVT.  Their addresses are offsets in
 * the F segment (bios.ld links .text16 that way). */
extern char entry_10[], entry_11[], entry_12[], entry_13[], entry_15[], entry_16[],
    entry_18[], entry_19[], entry_1a[], entry_08[], entry_iret[], entry_irq_master[],
    entry_irq_slave[];

/* Linker symbols (bios.ld). */
extern char __bss_start[], __bss_end[], __stack_top[];
#endif

#endif

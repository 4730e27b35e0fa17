/*
 * What irq_rm.c and irq_rm16.S share: where the real-mode code runs and the
 * layout of the results it leaves there.
 */
#ifndef IRQ_RM_H
#define IRQ_RM_H

/* The real-mode part is copied here and runs with CS = DS = SS = 0, so its
 * addresses are plain offsets below 64 KiB.  Below it sit the stack, the BIOS
 * data area (0x400) and the interrupt vector table (0); above it, from
 * 0x9000, drivebay's and QEMU's loaders put the multiboot information, which
 * the runtime has already copied. */
#define TRAMP_BASE  0x7000
#define TRAMP_MAX   0x1000
#define TRAMP_STACK TRAMP_BASE            /* grows down from here */

#define RM_TICKS_WANTED  20               /* IRQ0 ticks to sleep through with HLT */
#define RM_HLT_LIMIT     (RM_TICKS_WANTED * 4)
#define RM_SOFT_VECTOR   0x60             /* "reserved for user programs" on a PC */
#define RM_SOFT_MAGIC    0x1234
/* Busy-wait iterations for the first tick (a few tenths of a second at
 * emulator speed; a tick is due within 1 ms). */
#define RM_FIRST_TICK_SPINS 0x02000000

/* struct rm_results, as 16-bit words at rm_results. */
#define RM_CR0        0    /* machine status word (CR0 low half) in real mode */
#define RM_CS         2    /* CS in real mode */
#define RM_FIRST_TICK 4    /* 1 if a tick arrived in the busy-wait */
#define RM_TICKS      6    /* IRQ0 handler calls */
#define RM_WAKEUPS    8    /* HLT instructions executed */
#define RM_IRQ_FLAGS  10   /* FLAGS inside the IRQ0 handler (first call) */
#define RM_SOFT_AX    12   /* AX after INT 0x60 */
#define RM_SOFT_COUNT 14   /* INT 0x60 handler calls */
#define RM_RESULTS_SIZE 16

#endif

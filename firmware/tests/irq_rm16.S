/*
 * irq_rm16.S: the real-mode half of irq_rm (see irq_rm.c for the plan).
 *
 * rm_run() is called from C in 32-bit protected mode.  It goes
 *
 *   32-bit protected mode  --ljmp to a 16-bit code segment-->
 *   16-bit protected mode  --load 64 KiB data segments, clear CR0.PE,
 *                            ljmp to a real-mode CS-->
 *   real mode              (the tests)  --set CR0.PE, ljmpl to SEL_CODE32-->
 *   32-bit protected mode, back in rm_run's caller.
 *
 * This is Intel SDM vol. 3, 9.9.2 "Switching Back to Real-Address Mode".
 * The detour through 16-bit protected mode matters: clearing PE does not
 * reload the hidden parts of the segment registers, so each must first hold
 * a descriptor with a 64 KiB limit and 16-bit size, or real mode would run
 * with 4 GiB limits and 32-bit default operand size.
 *
 * Everything between rm_blob_start and rm_blob_end is copied by C to
 * TRAMP_BASE and runs there: L(x) is the address of label x in that copy.
 */
#include "irq_rm.h"
#include "exit.h"
#include "segments.h"

#define L(x) (TRAMP_BASE + (x) - rm_blob_start)
#define R(field) (L(rm_results) + (field))

/* ---- 32-bit side, runs where it was linked ---------------------------- */
    .code32
    .text
    .globl rm_run
rm_run:
    pushl %ebx                        /* callee-saved registers of the C ABI */
    pushl %esi
    pushl %edi
    pushl %ebp
    movl %esp, saved_esp
    cli
    /* In real mode the IDT register locates the IVT: 256 vectors of four
     * bytes (offset, segment) from address 0. */
    lidt ivt_descriptor
    ljmp $SEL_CODE16, $L(rm_pm16)

rm_back32:                            /* rm_real jumps here with PE set again */
    movl $SEL_DATA32, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    movl saved_esp, %esp
    popl %ebp
    popl %edi
    popl %esi
    popl %ebx
    ret                               /* the caller reloads its IDT */

/* ---- the copied part ---------------------------------------------------- */
    .code16
    .globl rm_blob_start, rm_blob_end, rm_results, rm_irq0, rm_soft, rm_unexpected
    .balign 16                        /* TRAMP_BASE is 16-aligned: keep data alignment */
rm_blob_start:

rm_pm16:                              /* 16-bit protected mode, CS = SEL_CODE16 */
    movw $SEL_DATA16, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    movl %cr0, %eax
    andl $~CR0_PE, %eax
    movl %eax, %cr0
    /* Still executing with the old CS until a far jump loads a real-mode one. */
    ljmp $0, $L(rm_real)

rm_real:                              /* real mode: address = segment * 16 + offset */
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $TRAMP_STACK, %esp
    smsw %ax                          /* CR0 bits 15:0, PE is bit 0 */
    movw %ax, R(RM_CR0)
    movw %cs, R(RM_CS)

    /* 1. Is IRQ0 arriving at all?  Busy-wait with a bound before trusting HLT:
     * a HLT with no interrupt coming would never return.  Each round reads
     * port 61h (a harmless status read, the classic I/O delay): an
     * emulator then gets a chance to deliver the tick even when it only
     * looks for interrupts at I/O and block boundaries. */
    movl $RM_FIRST_TICK_SPINS, %ecx
    sti
1:  cmpw $0, R(RM_TICKS)
    jne 2f
    pushw %ax
    inb $0x61, %al
    popw %ax
    decl %ecx
    jnz 1b
    jmp soft_int                      /* no tick: skip the HLT test */
2:  movw $1, R(RM_FIRST_TICK)

    /* 2. Sleep in HLT until RM_TICKS_WANTED ticks (at most RM_HLT_LIMIT
     * wakeups).  The check runs with IF=0 and STI takes effect only after
     * the HLT that follows it, so a tick cannot slip in between. */
3:  cli
    cmpw $RM_TICKS_WANTED, R(RM_TICKS)
    jae soft_int
    cmpw $RM_HLT_LIMIT, R(RM_WAKEUPS)
    jae soft_int
    incw R(RM_WAKEUPS)
    sti
    hlt
    jmp 3b

    /* 3. A software interrupt through the IVT; the handler returns AX + 1. */
soft_int:
    cli
    movw $RM_SOFT_MAGIC, %ax
    int $RM_SOFT_VECTOR
    movw %ax, R(RM_SOFT_AX)

    /* Back to protected mode: set PE, then a far jump loads CS from the GDT
     * (which real mode left alone).  The operand-size prefix of ljmpl gives
     * the jump a 32-bit offset, since rm_back32 lies above 1 MiB. */
    movl %cr0, %eax
    orl $CR0_PE, %eax
    movl %eax, %cr0
    ljmpl $SEL_CODE32, $rm_back32

/* IRQ0 at vector 0x08.  The CPU pushed FLAGS, CS and IP and cleared IF;
 * DS is whatever the interrupted code had, 0 here (a BIOS handler would
 * load its own). */
rm_irq0:
    pushw %ax
    cmpw $0, R(RM_TICKS)
    jne 1f
    pushfw
    popw R(RM_IRQ_FLAGS)
1:  incw R(RM_TICKS)
    movb $0x20, %al                   /* OCW2: non-specific EOI to the master */
    outb %al, $0x20
    popw %ax
    iret

/* INT 0x60: a "service" that returns its argument plus one. */
rm_soft:
    incw %ax
    incw R(RM_SOFT_COUNT)
    iret

/* Every other vector: a real-mode fault or a stray IRQ.  There is no console
 * code in real mode, so end the run with the fault status. */
rm_unexpected:
    movw $EXIT_PORT, %dx
    movb $EXIT_FAULT, %al
    outb %al, %dx
1:  cli
    hlt
    jmp 1b

    .balign 2
rm_results:
    .skip RM_RESULTS_SIZE
rm_blob_end:

    .data
    .balign 4
ivt_descriptor:
    .word 0x3FF                       /* limit: 256 * 4 - 1 */
    .long 0                           /* base */

    .bss
    .balign 4
saved_esp:
    .long 0

    .section .note.GNU-stack, "", @progbits

/*
 * entry.S: the real-mode face of the BIOS.
 *
 * A PC BIOS is called by software interrupts from real mode (INT 10h, 13h,
 * ...) and by the reset vector.  All of that lands here, in the F segment
 * (CS = F000h), and goes on in C:
 *
 *   1. The INT instruction pushed FLAGS, CS, IP and cleared IF.  The stub
 *      for vector N pushes the address of its C handler and jumps to
 *      bios_enter.
 *   2. bios_enter pushes DS, ES, FS, GS and all general registers: the
 *      caller's stack now holds a `struct bregs` (bios.h).
 *   3. It loads the ROM's GDT, sets CR0.PE and far-jumps to 32-bit flat
 *      code; a stack of the BIOS's own (in the shadow RAM, bios.ld) replaces
 *      the caller's, whose linear address (SS * 16 + SP) is the frame
 *      pointer handed to the C handler.  A real-mode seg:off is a plain
 *      pointer in flat mode, so C reads the caller's buffers directly.
 *   4. After the handler returns, it goes back to real mode the way Intel
 *      SDM vol. 3, 9.9.2 prescribes: a 16-bit protected-mode segment first
 *      (so the hidden segment limits are 64 KiB again), then CR0.PE = 0 and
 *      a far jump to F000h.  The caller's SS:SP comes back, the registers
 *      are popped from the (possibly modified) frame and IRET returns with
 *      the FLAGS (and so the carry) the handler left there.
 *
 * A handler that sets bios_wait_request asks to be called again after an
 * interrupt: the stub waits with STI; HLT (INT 16h AH=00h waiting for a key
 * does so, letting timer ticks run in the meantime).
 *
 * Interrupts stay off while C runs, so nothing re-enters the C side and one
 * BIOS stack suffices.  Hardware interrupt handlers (the timer's INT 08h)
 * are short and entirely 16-bit.
 */
#include "bios.h"

#define CR0_PE 1

    .section .text16, "ax"
    .code16

/* ---- service entry points --------------------------------------------- */

.macro service vector, handler
    .globl entry_\vector
entry_\vector:
    pushl $\handler
    jmp bios_enter
.endm

    service 10, handle_10
    service 11, handle_11
    service 12, handle_12
    service 13, handle_13
    service 15, handle_15
    service 16, handle_16
    service 18, handle_18
    service 19, handle_19
    service 1a, handle_1a

bios_enter:
    pushw %gs
    pushw %fs
    pushw %es
    pushw %ds
    pushal
bios_reenter:
    /* Frame address: the caller's SS:SP as a linear address, into EAX.
     * The caller's SS and ESP wait in SI and EDI (already saved).  All of
     * ESP: code from gcc -m16 addresses its stack with ESP, so the upper
     * half must come back as it was, not as the BIOS stack left it. */
    xorl %eax, %eax
    movw %ss, %ax
    shll $4, %eax
    movzwl %sp, %ebx
    addl %ebx, %eax
    movw %ss, %si
    movl %esp, %edi
    lgdtl %cs:gdt_descriptor
    movl %cr0, %ecx
    orl $CR0_PE, %ecx
    movl %ecx, %cr0
    ljmpl $BIOS_SEL_CODE32, $(bios_enter32 + 0xF0000)   /* linear address */

    .code32
bios_enter32:
    movl $BIOS_SEL_DATA32, %ecx
    movw %cx, %ds
    movw %cx, %es
    movw %cx, %fs
    movw %cx, %gs
    movw %cx, %ss
    movl $__stack_top, %esp
    pushl %esi                        /* the caller's SS and ESP */
    pushl %edi
    pushl %eax                        /* the frame: the handler's argument */
    cld
    call *40(%eax)                    /* struct bregs.handler */
    xorl %eax, %eax
    xchgl %eax, bios_wait_request     /* EAX != 0: wait and call again */
    addl $4, %esp
    popl %edi
    popl %esi
    ljmpl $BIOS_SEL_CODE16, $bios_leave16

    .code16
bios_leave16:                         /* 16-bit protected mode, CS base F0000h */
    movw $BIOS_SEL_DATA16, %cx
    movw %cx, %ds
    movw %cx, %es
    movw %cx, %fs
    movw %cx, %gs
    movw %cx, %ss
    movl %cr0, %ecx
    andl $~CR0_PE, %ecx
    movl %ecx, %cr0
    ljmp $BIOS_SEG, $bios_leave_rm
bios_leave_rm:                        /* real mode again */
    movw %si, %ss
    movl %edi, %esp
    testl %eax, %eax
    jnz bios_wait
    popal
    popw %ds
    popw %es
    popw %fs
    popw %gs
    addw $4, %sp                      /* the handler address */
    iret

bios_wait:                            /* called again after the next interrupt */
    sti
    hlt
    cli
    jmp bios_reenter

/* ---- hardware interrupts ----------------------------------------------- */

    /* IRQ 0, INT 08h: the PIT's 18.2 Hz tick.  Counts ticks since midnight
     * in the BDA (0x1800B0 ticks a day: IBM PC/AT BIOS), calls the user
     * hook INT 1Ch, acknowledges the PIC. */
    .globl entry_08
entry_08:
    pushw %ds
    pushl %eax
    xorw %ax, %ax
    movw %ax, %ds
    movl 0x400 + BDA_TICKS, %eax
    incl %eax
    cmpl $0x1800B0, %eax
    jb 1f
    xorl %eax, %eax
    movb $1, 0x400 + BDA_MIDNIGHT
1:  movl %eax, 0x400 + BDA_TICKS
    int $0x1C
    movb $0x20, %al                   /* non-specific EOI */
    outb %al, $0x20
    popl %eax
    popw %ds
    iret

    /* An IRQ nobody handles: acknowledge it so the PIC does not stay stuck. */
    .globl entry_irq_master, entry_irq_slave
entry_irq_slave:
    pushw %ax
    movb $0x20, %al
    outb %al, $0xA0
    outb %al, $0x20
    popw %ax
    iret
entry_irq_master:
    pushw %ax
    movb $0x20, %al
    outb %al, $0x20
    popw %ax
    iret

    /* Every other vector (and INT 1Ch, the user timer hook): nothing to do. */
    .globl entry_iret
entry_iret:
    iret

/* ---- POST ---------------------------------------------------------------- */

post:
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ss
    movw $0x7000, %sp                 /* any free low memory will do for now */
    /* A20 on (port 92h, "fast A20"), so addresses above 1 MiB do not wrap. */
    inb $0x92, %al
    orb $0x02, %al
    andb $0xFE, %al                   /* bit 0 would reset the machine */
    outb %al, $0x92
    /* Enter handle_post as though through an INT. */
    pushfw
    pushw %cs
    pushw $post_done
    pushl $handle_post
    jmp bios_enter
post_done:
    /* The IVT is in place: boot (INT 19h, the bootstrap loader). */
    int $0x19
1:  cli
    hlt
    jmp 1b

/* ---- the GDT (Intel SDM vol. 3, 3.4.5: segment descriptors) ------------- */

    .balign 8
gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF          /* 08h: code, flat 4 GiB, 32-bit */
    .quad 0x00CF92000000FFFF          /* 10h: data, flat 4 GiB */
    .quad 0x00009A0F0000FFFF          /* 18h: code, base F0000h, 64 KiB, 16-bit */
    .quad 0x000092000000FFFF          /* 20h: data, base 0, 64 KiB, 16-bit */
gdt_end:
gdt_descriptor:
    .word gdt_end - gdt - 1
    .long gdt + 0xF0000              /* linear: .text16 is linked at its F-segment offsets */

/* ---- the reset vector: F000:FFF0, the last 16 bytes of the ROM ------------ */

    .section .reset, "ax"
    .code16
    .globl reset_vector
reset_vector:
    ljmp $BIOS_SEG, $post
    .ascii "11/27/26"                 /* BIOS date at F000:FFF5 (IBM convention) */
    .byte 0
    .byte 0xFC                        /* model byte at F000:FFFE: AT */
    .byte 0

/* ---- the first bytes of the ROM image (E000:0000) ----------------------- */
    .section .romheader, "a"
    .ascii "drivebay BIOS boot stub\0"

    .section .note.GNU-stack, "", @progbits

/*
 * The demo's MBR stage and its door to the BIOS.
 *
 * A PC BIOS loads sector 0 of the boot disk to 0000:7C00 and jumps there
 * with the boot drive's number in DL.  512 bytes are too few for the report,
 * so this stage only sets up segments and a stack, reads the rest of the
 * program from the sectors after it (INT 13h AH=42h, the EDD "extended
 * read") to 0000:7E00, clears .bss and calls demo_main() in C.  Its return
 * value goes to the exit port, then the CPU halts.
 *
 * bios_int() below lets C code call any BIOS interrupt with all registers
 * given in a struct bios_regs (bios.h).
 */
#include "bios.h"

#define EXIT_PORT 0x501         /* isa-debug-exit on QEMU, DebugExit on drivebay */

    .code16
    .section .boot, "ax"
    .globl _start
_start:
    /* Some BIOSes jump to 07C0:0000 rather than 0000:7C00: same address,
     * other offsets.  A far jump makes CS 0 so our offsets are right. */
    ljmp $0, $1f
1:  cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $0x7C00, %esp          /* the stack grows down from below us */
    sti
    cld

    /* Read sectors 1..__load_sectors to 0000:7E00 with one EDD read.  The
     * disk address packet (dap below) names the buffer, count and LBA. */
    pushw %dx                   /* the boot drive, kept whatever the BIOS does to DL */
    movw $dap, %si
    movb $0x42, %ah
    int $0x13
    popw %dx
    jc load_failed

    /* .bss is not in the image: zero it. */
    movw $__bss_start, %di
    movw $__bss_end, %cx
    subw %di, %cx
    xorb %al, %al
    rep stosb

    /* demo_main(boot drive): gcc -m16 code takes 32-bit stack arguments and
     * returns with a 32-bit RET, so call it with CALLL. */
    movzbl %dl, %edx
    pushl %edx
    calll demo_main
    addl $4, %esp
    jmp finish

load_failed:
    movw $load_message, %si
2:  lodsb
    testb %al, %al
    jz 3f
    movb $0x0E, %ah             /* INT 10h teletype: AL = character */
    xorw %bx, %bx
    int $0x10
    movw $0x3F8, %dx            /* and to COM1, for BIOSes that show no screen */
    outb %al, %dx
    jmp 2b
3:  movb $1, %al

finish:
    movw $EXIT_PORT, %dx        /* ends the run on QEMU and drivebay */
    outb %al, %dx
    cli
4:  hlt                         /* elsewhere: stop here */
    jmp 4b

load_message:
    .asciz "demo: INT 13h AH=42h could not read the program\r\n"

    .balign 4
dap:                            /* EDD disk address packet */
    .byte 16, 0                 /* its size, reserved */
    .word __load_sectors        /* sectors to read */
    .word 0x7E00, 0             /* buffer offset, segment */
    .quad 1                     /* first LBA */


/*
 * void bios_int(uint8_t vector, struct bios_regs *r)
 *
 * INT n with n in a register.  The INT instruction only takes a constant,
 * but INT n is nothing more than: push FLAGS, clear IF, far call through the
 * interrupt vector table entry at 0000:(4 * n).  The handler's IRET pops
 * the flags again.  Registers come from *r and go back to it afterwards,
 * with the flags (CF is how the BIOS says "error").
 */
    .text
    .globl bios_int
bios_int:
    pushal                      /* 32 bytes */
    pushw %ds
    pushw %es                   /* 36 bytes: vector at 40(%esp), r at 44 */
    movzbl 40(%esp), %eax
    movl (,%eax,4), %eax        /* the IVT entry (offset, segment) */
    movl %eax, vector_entry
    movl 44(%esp), %esi
    pushl %esi                  /* r, for after the call */
    movl BR_EAX(%esi), %eax
    movl BR_EBX(%esi), %ebx
    movl BR_ECX(%esi), %ecx
    movl BR_EDX(%esi), %edx
    movl BR_EDI(%esi), %edi
    movw BR_ES(%esi), %es
    pushw BR_DS(%esi)
    movl BR_ESI(%esi), %esi
    popw %ds
    pushfw
    cli
    lcallw *%cs:vector_entry
    movzwl %sp, %esp            /* a BIOS may leave ESP's upper half dirty */
    pushw %ds
    pushl %esi
    pushfl
    xorw %si, %si
    movw %si, %ds
    movl 10(%esp), %esi         /* r, pushed before the call */
    movl %eax, BR_EAX(%esi)
    movl %ebx, BR_EBX(%esi)
    movl %ecx, BR_ECX(%esi)
    movl %edx, BR_EDX(%esi)
    movl %edi, BR_EDI(%esi)
    movw %es, BR_ES(%esi)
    popl BR_EFLAGS(%esi)
    popl BR_ESI(%esi)
    popw BR_DS(%esi)
    addl $4, %esp
    popw %es
    popw %ds
    popal
    retl

    .bss
    .balign 4
vector_entry:
    .long 0

    .section .note.GNU-stack, "", @progbits

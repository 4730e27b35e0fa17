/*
 * The demo's door to the BIOS: bios_int() lets C code call any BIOS
 * interrupt with all registers given in a struct bios_regs (bios.h).
 * (The MBR stage that loads the program is ../lib/mbr16.S.)
 */
#include "bios.h"

/*
 * void bios_int(uint8_t vector, struct bios_regs *r)
 *
 * INT n with n in a register.  The INT instruction only takes a constant,
 * but INT n is nothing more than: push FLAGS, clear IF, far call through the
 * interrupt vector table entry at 0000:(4 * n).  The handler's IRET pops
 * the flags again.  Registers come from *r and go back to it afterwards,
 * with the flags (CF is how the BIOS says "error").
 */
    .code16
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

/*
 * Entry point of every guest program: the multiboot header, the GDT, and
 * _start, which the loader jumps to in 32-bit protected mode with
 * EAX = 0x2BADB002 and EBX = the multiboot information (Multiboot 0.6.96,
 * 3.2).  The loader's GDT, stack and interrupt state are not ours to rely
 * on: _start loads its own GDT and stack before it calls any C.
 */
#include "multiboot.h"
#include "segments.h"

#define STACK_SIZE 0x10000        /* 64 KiB */

/* The loader searches the first 8 KiB of the file for this (spec 3.1.1);
 * link.ld puts the section first in .text, right after the ELF headers. */
    .section .multiboot, "a"
    .balign 4
multiboot_header:
    .long MB_HEADER_MAGIC
    .long MB_HEADER_FLAGS
    .long -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)   /* the three sum to zero */

    .section .text.entry, "ax"
    .globl _start
_start:
    cli
    cld
    /* Keep the loader's EAX and EBX in ESI and EBX: the stack lives in .bss,
     * which is about to be cleared, so nothing may be pushed yet. */
    movl %eax, %esi

    lgdt gdt_descriptor
    ljmp $SEL_CODE32, $1f        /* reload CS from our GDT */
1:  movl $SEL_DATA32, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss

    /* Zero .bss (link.ld keeps both ends 4-byte aligned). */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    shrl $2, %ecx
    xorl %eax, %eax
    rep stosl

    movl $stack_top, %esp
    xorl %ebp, %ebp              /* end of the frame-pointer chain */

    /* mbi = runtime_init(magic, mbi): console, IDT, PIC, PIT, a copy of the
     * multiboot information, the DMA region. */
    pushl %ebx
    pushl %esi
    call runtime_init
    addl $8, %esp

    /* exit_guest(main(magic, mbi)) */
    pushl %eax
    pushl %esi
    call main
    addl $8, %esp
    pushl %eax
    call exit_guest
2:  cli                          /* exit_guest does not return; in case */
    hlt
    jmp 2b

/* Flat segments plus the 16-bit pair used to return to real mode
 * (segments.h).  Descriptor layout: Intel SDM vol. 3, 3.4.5.  The accessed
 * bit is preset so the CPU never writes to the table. */
    .data
    .balign 8
gdt:
    .quad 0                      /* SEL_NULL */
    .quad 0x00CF9B000000FFFF     /* SEL_CODE32: base 0, limit 4 GiB, 32-bit code */
    .quad 0x00CF93000000FFFF     /* SEL_DATA32: base 0, limit 4 GiB, data */
    .quad 0x00009B000000FFFF     /* SEL_CODE16: base 0, limit 64 KiB, 16-bit code */
    .quad 0x000093000000FFFF     /* SEL_DATA16: base 0, limit 64 KiB, data */
gdt_end:

    .balign 4
    .word 0                      /* align the base that follows the limit */
gdt_descriptor:
    .word gdt_end - gdt - 1
    .long gdt

    .bss
    .balign 16
stack_bottom:
    .skip STACK_SIZE
stack_top:

    .section .note.GNU-stack, "", @progbits

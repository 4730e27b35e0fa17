/*
 * An MBR stage for real-mode boot programs written in C (gcc -m16), such
 * as the BIOS stub's INT 13h conformance program (bios/tests/int13.c).
 *
 * The BIOS loads sector 0 to 0000:7C00 and jumps there with the boot drive
 * in DL.  This stage sets up segments and a stack below 7C00h, loads the
 * rest of the program from LBA 1 to 0000:7E00 with INT 13h AH=42h (the EDD
 * extended read), clears .bss and calls main(boot drive) with a 32-bit
 * call, as gcc -m16 code expects.  main's return value goes to the exit
 * port (0x501: QEMU's isa-debug-exit, drivebay's DebugExit).
 *
 * The program's link script puts this .boot section at 0x7C00 (at most
 * 446 bytes), the boot signature at 0x7DFE and the program at 0x7E00, and
 * defines __load_sectors, __bss_start and __bss_end.
 */
#define EXIT_PORT 0x501
#define EXIT_FAULT 2

    .code16
    .section .boot, "ax"
    .globl _start
_start:
    ljmp $0, $1f                      /* CS = 0, whatever CS:IP the BIOS used */
1:  cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $0x7C00, %esp
    sti
    cld
    pushw %dx
    movw $load_packet, %si
    movb $0x42, %ah
    int $0x13
    popw %dx
    jc load_failed
    movw $__bss_start, %di
    movw $__bss_end, %cx
    subw %di, %cx
    xorb %al, %al
    rep stosb
    movzbl %dl, %edx
    pushl %edx
    calll main                        /* gcc -m16: 32-bit call frames */
    addl $4, %esp
exit:
    movw $EXIT_PORT, %dx
    outb %al, %dx
    cli
2:  hlt
    jmp 2b
load_failed:
    movw $load_message, %si
3:  lodsb
    testb %al, %al
    jz 4f
    movb $0x0E, %ah
    xorw %bx, %bx
    int $0x10
    jmp 3b
4:  movb $EXIT_FAULT, %al
    jmp exit

load_message:
    .asciz "Bail out! INT 13h AH=42h could not load the test program\r\n"
    .balign 4
load_packet:                          /* EDD disk address packet */
    .byte 16, 0
    .word __load_sectors
    .word 0x7E00, 0
    .quad 1

    .section .note.GNU-stack, "", @progbits

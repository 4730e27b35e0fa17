/*
 * The MBR stage of the INT 13h conformance program (int13.c): set up
 * segments and a stack, load the program from LBA 1 with INT 13h AH=42h,
 * clear .bss and call main(boot drive).  main's return value goes to the
 * exit port (0x501: QEMU's isa-debug-exit, drivebay's DebugExit).
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

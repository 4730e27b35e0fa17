/*
 * Interrupt entry stubs: one per IDT vector, 16 bytes apart (idt_init()
 * computes gate addresses as isr_stubs + 16 * vector).
 *
 * Some CPU exceptions push an error code and the rest do not (Intel SDM
 * vol. 3, table 6-1); the stubs of the others push a 0 in its place so that
 * every vector reaches isr_common with the same stack layout:
 *
 *     [esp+0]  vector          pushed by the stub
 *     [esp+4]  error code      pushed by the CPU or by the stub
 *     [esp+8]  EIP, CS, EFLAGS pushed by the CPU
 *
 * isr_common adds the general registers (PUSHAL) and hands the C dispatcher
 * a pointer to the whole frame, struct int_frame in interrupt.h.
 */

/* Exceptions that push an error code: #DF, #TS, #NP, #SS, #GP, #PF, #AC,
 * #CP, #VC, #SX. */
#define HAS_ERROR_CODE(v) ((v) == 8 || ((v) >= 10 && (v) <= 14) || (v) == 17 || \
                           (v) == 21 || (v) == 29 || (v) == 30)

    .text
    .balign 16
    .globl isr_stubs
isr_stubs:
    .set vector, 0
    .rept 256
    /* .org fails the build ("attempt to move .org backwards") should a stub
     * ever grow past its 16 bytes. */
    .org isr_stubs + vector * 16, 0x90
    .ifeq HAS_ERROR_CODE(vector)
    pushl $0
    .endif
    pushl $vector
    jmp isr_common
    .set vector, vector + 1
    .endr

isr_common:
    pushal
    cld                          /* the C ABI expects DF clear */
    pushl %esp                   /* argument: struct int_frame * */
    call interrupt_dispatch
    addl $4, %esp
    popal
    addl $8, %esp                /* drop vector and error code */
    iretl

    .section .note.GNU-stack, "", @progbits

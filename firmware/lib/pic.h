/*
 * The 8259A programmable interrupt controller pair of a PC: the master at
 * 0x20/0x21 takes IRQ0-7, the slave at 0xA0/0xA1 takes IRQ8-15 and is
 * cascaded into the master's IRQ2.  Each PIC turns its eight inputs into
 * vectors base..base+7, and the base is programmable: a PC BIOS uses 0x08
 * and 0x70 (real mode), protected-mode programs move them to 0x20 and 0x28
 * because 0x08-0x1F are CPU exception vectors there.
 */
#ifndef FW_PIC_H
#define FW_PIC_H

#include <stdbool.h>
#include <stdint.h>

#define PIC_VECTOR_MASTER 0x20   /* the runtime's protected-mode layout */
#define PIC_VECTOR_SLAVE  0x28
#define PIC_BIOS_VECTOR_MASTER 0x08   /* the real-mode (BIOS) layout */
#define PIC_BIOS_VECTOR_SLAVE  0x70
#define PIC_IRQ_CASCADE   2

/* Initialise both PICs (ICW1-ICW4) with these vector bases and every IRQ
 * masked.  The ELCR (edge/level per IRQ) is left as it was. */
void pic_init(uint8_t base_master, uint8_t base_slave);
void pic_mask(unsigned irq);
/* Unmask an IRQ; for IRQ8-15 the cascade input IRQ2 is unmasked too. */
void pic_unmask(unsigned irq);
/* Interrupt mask registers (OCW1) of both PICs: bit n = IRQn masked. */
uint16_t pic_get_mask(void);
/* Interrupt request and in-service registers via OCW3, slave in bits 15:8. */
uint16_t pic_read_irr(void);
uint16_t pic_read_isr(void);
/* Non-specific end of interrupt for `irq` (to the slave and the master for IRQ8-15). */
void pic_eoi(unsigned irq);
/* The IRQ a vector belongs to under the current bases, or -1. */
int pic_vector_to_irq(unsigned vector);
/* ELCR (0x4D0/0x4D1 on the PIIX): true = level triggered. */
void pic_set_level_triggered(unsigned irq, bool level);

#endif

/*
 * 8259A initialisation and control (Intel 8259A datasheet, "Initialization
 * Command Words" and "Operation Command Words").
 */
#include "pic.h"
#include "io.h"

#define PIC1_CMD  0x20
#define PIC1_DATA 0x21
#define PIC2_CMD  0xA0
#define PIC2_DATA 0xA1
#define ELCR1     0x4D0
#define ELCR2     0x4D1

#define ICW1_INIT  0x10      /* start initialisation; bit 3 = 0: edge mode */
#define ICW1_ICW4  0x01      /* an ICW4 follows */
#define ICW3_MASTER_SLAVE_ON_IR2 0x04   /* bit mask of master inputs with a slave */
#define ICW3_SLAVE_ID 0x02              /* the master input this slave hangs on */
#define ICW4_8086  0x01      /* 8086 mode: the PIC supplies a vector, not a CALL */
#define OCW2_EOI   0x20      /* non-specific end of interrupt */
#define OCW3_READ_IRR 0x0A
#define OCW3_READ_ISR 0x0B

static uint8_t vector_master = PIC_VECTOR_MASTER, vector_slave = PIC_VECTOR_SLAVE;

void pic_init(uint8_t base_master, uint8_t base_slave)
{
    uint32_t f = irq_save();
    outb(PIC1_CMD, ICW1_INIT | ICW1_ICW4);
    outb(PIC2_CMD, ICW1_INIT | ICW1_ICW4);
    outb(PIC1_DATA, base_master);               /* ICW2: vector base (bits 7:3) */
    outb(PIC2_DATA, base_slave);
    outb(PIC1_DATA, ICW3_MASTER_SLAVE_ON_IR2);  /* ICW3 */
    outb(PIC2_DATA, ICW3_SLAVE_ID);
    outb(PIC1_DATA, ICW4_8086);                 /* ICW4 */
    outb(PIC2_DATA, ICW4_8086);
    /* Initialisation clears the mask registers, unmasking everything:
     * mask every input again before anything can fire. */
    outb(PIC1_DATA, 0xFF);
    outb(PIC2_DATA, 0xFF);
    vector_master = base_master & 0xF8;
    vector_slave = base_slave & 0xF8;
    irq_restore(f);
}

void pic_mask(unsigned irq)
{
    uint16_t port = irq < 8 ? PIC1_DATA : PIC2_DATA;
    uint32_t f = irq_save();
    outb(port, inb(port) | (1u << (irq & 7)));
    irq_restore(f);
}

void pic_unmask(unsigned irq)
{
    uint32_t f = irq_save();
    if (irq >= 8) {
        outb(PIC2_DATA, inb(PIC2_DATA) & ~(1u << (irq & 7)));
        irq = PIC_IRQ_CASCADE;
    }
    outb(PIC1_DATA, inb(PIC1_DATA) & ~(1u << irq));
    irq_restore(f);
}

uint16_t pic_get_mask(void)
{
    return inb(PIC1_DATA) | (uint16_t)inb(PIC2_DATA) << 8;
}

static uint16_t read_ocw3(uint8_t ocw3)
{
    uint32_t f = irq_save();
    outb(PIC1_CMD, ocw3);
    outb(PIC2_CMD, ocw3);
    uint16_t v = inb(PIC1_CMD) | (uint16_t)inb(PIC2_CMD) << 8;
    irq_restore(f);
    return v;
}

uint16_t pic_read_irr(void) { return read_ocw3(OCW3_READ_IRR); }
uint16_t pic_read_isr(void) { return read_ocw3(OCW3_READ_ISR); }

void pic_eoi(unsigned irq)
{
    if (irq >= 8)
        outb(PIC2_CMD, OCW2_EOI);
    outb(PIC1_CMD, OCW2_EOI);
}

int pic_vector_to_irq(unsigned vector)
{
    if (vector >= vector_master && vector < vector_master + 8u)
        return (int)(vector - vector_master);
    if (vector >= vector_slave && vector < vector_slave + 8u)
        return (int)(vector - vector_slave + 8);
    return -1;
}

void pic_set_level_triggered(unsigned irq, bool level)
{
    uint16_t port = irq < 8 ? ELCR1 : ELCR2;
    uint8_t bit = 1u << (irq & 7);
    uint8_t v = inb(port);
    outb(port, level ? v | bit : v & ~bit);
}

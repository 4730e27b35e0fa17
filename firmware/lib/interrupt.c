/*
 * The interrupt descriptor table and the C side of interrupt dispatch.
 */
#include "runtime.h"

/* An IDT gate descriptor (Intel SDM vol. 3, 6.11, figure 6-2). */
struct idt_gate {
    uint16_t offset_low;
    uint16_t selector;
    uint8_t zero;
    uint8_t type_attr;        /* P, DPL, 0, gate type */
    uint16_t offset_high;
} __attribute__((packed));

#define GATE_INTERRUPT32 0x8E  /* present, DPL 0, 32-bit interrupt gate */

struct idt_descriptor {
    uint16_t limit;
    uint32_t base;
} __attribute__((packed));

/* isr.S: 256 stubs, ISR_STUB_SIZE bytes apart. */
extern const char isr_stubs[];
#define ISR_STUB_SIZE 16

static struct idt_gate idt[IDT_VECTORS] __attribute__((aligned(8)));
static int_handler_t int_handlers[IDT_VECTORS];
static irq_handler_t irq_handlers[16];
static unsigned spurious;
static bool in_fatal;

void idt_load(void)
{
    struct idt_descriptor d = { sizeof(idt) - 1, (uint32_t)idt };
    __asm__ __volatile__("lidt %0" : : "m"(d));
}

void idt_init(void)
{
    for (unsigned v = 0; v < IDT_VECTORS; v++) {
        uint32_t stub = (uint32_t)isr_stubs + v * ISR_STUB_SIZE;
        idt[v] = (struct idt_gate){ (uint16_t)stub, SEL_CODE32, 0, GATE_INTERRUPT32,
                                    (uint16_t)(stub >> 16) };
    }
    idt_load();
}

void int_register(unsigned vector, int_handler_t handler)
{
    if (vector < IDT_VECTORS)
        int_handlers[vector] = handler;
}

void irq_register(unsigned irq, irq_handler_t handler)
{
    if (irq < 16)
        irq_handlers[irq] = handler;
}

unsigned irq_spurious_count(void)
{
    return spurious;
}

static void irq_dispatch(unsigned irq)
{
    /* A request that goes away before the CPU acknowledges it still gets a
     * vector: the lowest-priority one, IRQ7 (or IRQ15 on the slave), with
     * no in-service bit set.  It must not be acknowledged with an EOI,
     * except that the master did put the cascade IRQ2 in service for a
     * spurious IRQ15 (8259A datasheet, "Interrupt Sequence"). */
    if ((irq == 7 || irq == 15) && !(pic_read_isr() & (1u << irq))) {
        spurious++;
        if (irq == 15)
            pic_eoi(PIC_IRQ_CASCADE);
        return;
    }
    if (irq_handlers[irq]) {
        irq_handlers[irq](irq);
    } else {
        pic_mask(irq);
        printf("# unhandled IRQ %u: masked\n", irq);
    }
    pic_eoi(irq);
}

static const char *const exception_names[EXCEPTION_VECTORS] = {
    "#DE divide error", "#DB debug", "NMI", "#BP breakpoint", "#OF overflow",
    "#BR bound range exceeded", "#UD invalid opcode", "#NM device not available",
    "#DF double fault", "coprocessor segment overrun", "#TS invalid TSS",
    "#NP segment not present", "#SS stack-segment fault", "#GP general protection",
    "#PF page fault", "reserved", "#MF x87 floating-point error", "#AC alignment check",
    "#MC machine check", "#XM SIMD floating-point", "#VE virtualization",
    "#CP control protection",
};

static void fatal(const struct int_frame *f)
{
    if (in_fatal)                       /* a fault while reporting a fault */
        exit_guest(EXIT_FAULT);
    in_fatal = true;
    if (f->vector < EXCEPTION_VECTORS) {
        const char *name = exception_names[f->vector] ? exception_names[f->vector] : "reserved";
        printf("Bail out! CPU exception %u (%s) error 0x%x at %04x:%08x eflags %08x\n",
               f->vector, name, f->error_code, f->cs & 0xFFFF, f->eip, f->eflags);
    } else {
        printf("Bail out! unexpected interrupt vector 0x%02x at %04x:%08x eflags %08x\n",
               f->vector, f->cs & 0xFFFF, f->eip, f->eflags);
    }
    printf("# eax %08x ebx %08x ecx %08x edx %08x\n", f->eax, f->ebx, f->ecx, f->edx);
    /* The interrupted ESP is the frame's end: the CPU pushed no SS:ESP
     * because there was no privilege change. */
    printf("# esi %08x edi %08x ebp %08x esp %08x\n", f->esi, f->edi, f->ebp,
           (uint32_t)(f + 1));
    if (f->vector == 14)
        printf("# cr2 %08x\n", read_cr2());
    exit_guest(EXIT_FAULT);
}

void interrupt_dispatch(struct int_frame *f)
{
    unsigned v = f->vector;
    if (int_handlers[v]) {
        int_handlers[v](f);
        return;
    }
    /* Exceptions win over a PIC programmed onto vectors below 32. */
    int irq = v >= EXCEPTION_VECTORS ? pic_vector_to_irq(v) : -1;
    if (irq >= 0) {
        irq_dispatch((unsigned)irq);
        return;
    }
    fatal(f);
}

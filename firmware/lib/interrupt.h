/*
 * Protected-mode interrupts: the IDT, C handlers for any vector, PIC IRQ
 * handlers, and the local APIC's identification registers.
 *
 * Every one of the 256 IDT gates is a 32-bit interrupt gate (IF cleared on
 * entry) leading to a stub in isr.S that builds a struct int_frame and calls
 * interrupt_dispatch(), which picks, in this order:
 *   1. a handler registered for the vector with int_register();
 *   2. for a vector of the PIC (pic.h): the handler registered for that IRQ
 *      with irq_register(), followed by the end of interrupt; a spurious IRQ7
 *      or IRQ15 is counted and ignored; an IRQ with no handler is masked;
 *   3. otherwise the vector is a CPU exception or an interrupt nobody asked
 *      for: print a "Bail out!" line with the vector, error code and EIP, and
 *      exit_guest(EXIT_FAULT), so a faulting program ends instead of hanging.
 */
#ifndef FW_INTERRUPT_H
#define FW_INTERRUPT_H

#include <stdint.h>

#include "io.h"

/* What isr.S leaves on the stack; handlers may change it (e.g. eax for a
 * software interrupt that returns a value, eip to skip an instruction). */
struct int_frame {
    uint32_t edi, esi, ebp, esp_pusha, ebx, edx, ecx, eax;   /* PUSHAL */
    uint32_t vector;
    uint32_t error_code;       /* 0 for vectors without one */
    uint32_t eip, cs, eflags;  /* pushed by the CPU */
};

typedef void (*int_handler_t)(struct int_frame *frame);
typedef void (*irq_handler_t)(unsigned irq);

#define IDT_VECTORS 256
#define EXCEPTION_VECTORS 32

/* Build the IDT (all gates to isr.S) and load it. */
void idt_init(void);
/* Load the IDT register again, e.g. after a trip through real mode. */
void idt_load(void);
/* Handle `vector` in C; NULL restores the default behaviour. */
void int_register(unsigned vector, int_handler_t handler);
/* Handle PIC input `irq` (0-15) in C.  The handler runs with IF=0 and the
 * IRQ in service; the EOI is sent after it returns.  Registering does not
 * unmask: call pic_unmask(). */
void irq_register(unsigned irq, irq_handler_t handler);
/* Spurious IRQ7/IRQ15 deliveries seen so far. */
unsigned irq_spurious_count(void);
/* Called by isr.S. */
void interrupt_dispatch(struct int_frame *frame);

/* Local APIC (Intel SDM vol. 3, 11.4.1): memory mapped at 0xFEE00000 after
 * reset; the version register's low byte is the version (0x1X for an
 * integrated APIC), bits 23:16 the highest LVT entry. */
#define LAPIC_BASE    0xFEE00000u
#define LAPIC_ID      0x20
#define LAPIC_VERSION 0x30

static inline uint32_t lapic_read(unsigned reg)
{
    return mmio_read32(LAPIC_BASE + reg);
}

static inline uint32_t lapic_version(void)
{
    return lapic_read(LAPIC_VERSION);
}

#endif

/*
 * irq_rm: interrupt delivery in real mode, the way a PC BIOS and DOS see it.
 *
 * In real mode there is no IDT and no gates: vector n is the far pointer
 * (offset, segment) at physical address 4 * n, the interrupt vector table.
 * A PC BIOS programs the master PIC to vectors 0x08-0x0F and the slave to
 * 0x70-0x77, so the timer's IRQ0 arrives at vector 0x08.
 *
 * The plan:
 *   1. here, in protected mode: copy the real-mode code (irq_rm16.S) below
 *      1 MiB, fill the IVT, program the PICs the BIOS way and the PIT to
 *      ~1000 Hz.  Port I/O and memory writes work the same in either mode;
 *      only the way the CPU finds a handler differs.
 *   2. rm_run() drops to real mode, enables interrupts, waits for the first
 *      tick (bounded busy-wait), sleeps in HLT until RM_TICKS_WANTED ticks,
 *      issues INT 0x60, and comes back to protected mode;
 *   3. here again: restore the protected-mode IDT and PIC layout and report
 *      what the real-mode code recorded.
 */
#include "runtime.h"
#include "irq_rm.h"

/* irq_rm16.S */
void rm_run(void);
extern const char rm_blob_start[], rm_blob_end[], rm_results[];
extern const char rm_irq0[], rm_soft[], rm_unexpected[];

struct ivt_entry {
    uint16_t offset;
    uint16_t segment;
};

struct rm_results {
    uint16_t cr0, cs, first_tick, ticks, wakeups, irq_flags, soft_ax, soft_count;
};
_Static_assert(__builtin_offsetof(struct rm_results, cr0) == RM_CR0, "layout");
_Static_assert(__builtin_offsetof(struct rm_results, cs) == RM_CS, "layout");
_Static_assert(__builtin_offsetof(struct rm_results, first_tick) == RM_FIRST_TICK, "layout");
_Static_assert(__builtin_offsetof(struct rm_results, ticks) == RM_TICKS, "layout");
_Static_assert(__builtin_offsetof(struct rm_results, wakeups) == RM_WAKEUPS, "layout");
_Static_assert(__builtin_offsetof(struct rm_results, irq_flags) == RM_IRQ_FLAGS, "layout");
_Static_assert(__builtin_offsetof(struct rm_results, soft_ax) == RM_SOFT_AX, "layout");
_Static_assert(__builtin_offsetof(struct rm_results, soft_count) == RM_SOFT_COUNT, "layout");
_Static_assert(sizeof(struct rm_results) == RM_RESULTS_SIZE, "layout");

#define PM_CHECK_VECTOR 0x81

/* Where label `sym` of the copied code ends up: the code runs with CS = 0,
 * so this is both its physical address and its real-mode offset. */
static uint16_t low_address(const char *sym)
{
    return (uint16_t)(TRAMP_BASE + (sym - rm_blob_start));
}

static void install_real_mode(void)
{
    size_t size = (size_t)(rm_blob_end - rm_blob_start);
    if (size > TRAMP_MAX)
        panic("real-mode code is %u bytes, more than the %u reserved", (unsigned)size,
              TRAMP_MAX);
    memcpy(phys_ptr(TRAMP_BASE), rm_blob_start, size);

    struct ivt_entry *ivt = phys_ptr(0);
    for (unsigned v = 0; v < IDT_VECTORS; v++)
        ivt[v] = (struct ivt_entry){ low_address(rm_unexpected), 0 };
    ivt[PIC_BIOS_VECTOR_MASTER + 0] = (struct ivt_entry){ low_address(rm_irq0), 0 };
    ivt[RM_SOFT_VECTOR] = (struct ivt_entry){ low_address(rm_soft), 0 };
}

static volatile unsigned pm_checks;

static void pm_check(struct int_frame *f)
{
    (void)f;
    pm_checks++;
}

int main(unsigned magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    tap_plan(6);

    install_real_mode();
    pic_init(PIC_BIOS_VECTOR_MASTER, PIC_BIOS_VECTOR_SLAVE);
    pit_set_periodic(PIT_DIVISOR_1KHZ);
    pic_unmask(0);

    rm_run();

    /* Protected mode again, interrupts off: our IDT, our PIC layout. */
    idt_load();
    pic_init(PIC_VECTOR_MASTER, PIC_VECTOR_SLAVE);
    pit_set_periodic(PIT_DIVISOR_MAX);

    const volatile struct rm_results *r = phys_ptr(low_address(rm_results));
    tap_ok(!(r->cr0 & CR0_PE) && r->cs == 0, "ran in real mode (msw 0x%04x, cs 0x%04x)",
           r->cr0, r->cs);
    tap_ok(r->first_tick, "irq0 reached ivt vector 0x%02x", PIC_BIOS_VECTOR_MASTER);
    tap_ok(r->ticks >= RM_TICKS_WANTED, "%u ticks by hlt in %u wakeups", r->ticks, r->wakeups);
    tap_ok(r->first_tick && !(r->irq_flags & EFLAGS_IF),
           "handler entered with IF clear (flags 0x%04x)", r->irq_flags);
    tap_ok(r->soft_count == 1 && r->soft_ax == RM_SOFT_MAGIC + 1,
           "int 0x%02x through the ivt (calls %u, ax 0x%04x)", RM_SOFT_VECTOR, r->soft_count,
           r->soft_ax);

    int_register(PM_CHECK_VECTOR, pm_check);
    __asm__ __volatile__("int %0" : : "i"(PM_CHECK_VECTOR) : "memory");
    tap_ok(pm_checks == 1, "back in protected mode with the idt restored");

    tap_done();
}

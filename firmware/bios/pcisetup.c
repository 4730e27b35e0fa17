/*
 * PCI resource assignment: nothing on this board gives a device its
 * addresses, so the BIOS does, as every PC BIOS does at POST.
 *
 *   I/O BARs get addresses from C000h up; memory BARs (32- and 64-bit)
 *   from FEC00000h down, below the I/O APIC, each aligned to its size
 *   (PCI 3.0, 6.2.5.1: a BAR decodes a naturally aligned power of two).
 *   Then I/O and memory decoding and bus mastering are switched on.
 *
 *   Interrupts: the PIIX3 routes the four PCI interrupt lines PIRQA-D to
 *   ISA IRQs through its PIRQRC registers (config 60h-63h); we pick 10, 10,
 *   11, 11 as SeaBIOS does, set those IRQs level-triggered in the ELCR, and
 *   write each function's IRQ into its Interrupt Line register.  Slot S
 *   pin P (INTA = 1) drives PIRQ (S + P - 1) mod 4 on the i440FX board.
 *   The BIOS itself polls; the IRQs are for the operating system.
 */
#include "bios.h"
#include "runtime.h"

#define IO_START 0xC000u
#define IO_END 0x10000u
#define MEM_TOP 0xFEC00000u
#define PIIX3_PIRQRC 0x60
#define ELCR2 0x4D1
static const uint8_t pirq_irq[4] = {10, 10, 11, 11};

static uint32_t io_next = IO_START, mem_next = MEM_TOP;

/* The functions on bus 0, found once: the i440FX board has one PCI bus,
 * and scanning all 256 (lib/pci.c's pci_enumerate) costs 16384 port
 * accesses each time. */
static struct pci_dev functions[32 * 8];
static unsigned function_count;

static void scan_bus0(void)
{
    function_count = 0;
    for (unsigned dev = 0; dev < 32; dev++) {
        for (unsigned fn = 0; fn < 8; fn++) {
            struct pci_dev d;
            if (!pci_probe(PCI_BDF(0, dev, fn), &d)) {
                if (fn == 0)
                    break;
                continue;
            }
            functions[function_count++] = d;
            if (fn == 0 && !(d.header_type & PCI_HEADER_MULTIFUNCTION))
                break;
        }
    }
}

const struct pci_dev *pci_find(uint8_t class_code, uint8_t subclass, int prog_if, unsigned index)
{
    for (unsigned i = 0; i < function_count; i++) {
        const struct pci_dev *d = &functions[i];
        if (d->class_code == class_code && d->subclass == subclass &&
            (prog_if == PCI_ANY_PROG_IF || d->prog_if == prog_if) && index-- == 0)
            return d;
    }
    return NULL;
}

static bool is_bridge_of_board(const struct pci_dev *d)
{
    return d->class_code == 0x06;      /* host and ISA bridges: fixed resources */
}

static void assign_bars(const struct pci_dev *d)
{
    for (unsigned i = 0; i < 6; i++) {
        struct pci_bar bar;
        if (!pci_bar_decode(d->bdf, i, &bar) || bar.size == 0) {
            continue;
        }
        if (bar.io) {
            uint32_t size = (uint32_t)bar.size, base = (io_next + size - 1) & ~(size - 1);
            if (base + size > IO_END)
                continue;
            pci_write32(d->bdf, PCI_BAR0 + 4 * i, base);
            io_next = base + size;
        } else {
            if (bar.size > 0x10000000u)
                continue;              /* larger than we place below 4 GiB */
            uint32_t size = (uint32_t)bar.size, base = (mem_next - size) & ~(size - 1);
            if (base < memmap_ram_top())
                continue;
            pci_write32(d->bdf, PCI_BAR0 + 4 * i, base);
            if (bar.mem64)
                pci_write32(d->bdf, PCI_BAR0 + 4 * (i + 1), 0);
            mem_next = base;
        }
        if (bar.mem64)
            i++;
    }
}

static void setup_function(const struct pci_dev *d)
{
    if (is_bridge_of_board(d) || (d->header_type & PCI_HEADER_LAYOUT) != 0)
        return;
    assign_bars(d);
    uint8_t pin = pci_read8(d->bdf, PCI_INTERRUPT_PIN);
    if (pin >= 1 && pin <= 4)
        pci_write8(d->bdf, PCI_INTERRUPT_LINE, pirq_irq[(PCI_DEV(d->bdf) + pin - 1) & 3]);
    pci_enable(d->bdf, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
}

void pci_setup(void)
{
    scan_bus0();
    struct pci_dev isa;
    if (pci_probe(PCI_BDF(0, 1, 0), &isa) && isa.vendor == 0x8086 && isa.device == 0x7000) {
        uint8_t elcr = inb(ELCR2);
        for (unsigned i = 0; i < 4; i++) {
            pci_write8(isa.bdf, PIIX3_PIRQRC + i, pirq_irq[i]);
            elcr |= (uint8_t)(1u << (pirq_irq[i] - 8));
        }
        outb(ELCR2, elcr);
    }
    for (unsigned i = 0; i < function_count; i++)
        setup_function(&functions[i]);
}

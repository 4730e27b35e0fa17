/*
 * hello: the smallest useful guest program.  It shows what the machine looks
 * like from inside (multiboot information, memory map, PCI functions, local
 * APIC) and checks the few facts every drivebay PC and QEMU's `pc` machine
 * share.
 */
#include "runtime.h"

#define I440FX_VENDOR 0x8086
#define I440FX_DEVICE 0x1237
#define PCI_CLASS_BRIDGE 0x06
#define PCI_SUBCLASS_ISA 0x01

static bool print_function(const struct pci_dev *d, void *ctx)
{
    (void)ctx;
    printf("pci %02x:%02x.%x %04x:%04x class %02x:%02x:%02x hdr %02x\n",
           PCI_BUS(d->bdf), PCI_DEV(d->bdf), PCI_FN(d->bdf), d->vendor, d->device,
           d->class_code, d->subclass, d->prog_if, d->header_type);
    return false;
}

/* Spec 3.3: the map must show the RAM a program is loaded into as available. */
static bool mmap_covers_1mib(const struct multiboot_info *mbi)
{
    bool found = false;
    for (const struct multiboot_mmap_entry *e = multiboot_mmap_next(mbi, NULL); e;
         e = multiboot_mmap_next(mbi, e)) {
        printf("mmap 0x%016llx-0x%016llx type %u\n", e->base_addr,
               e->base_addr + e->length - 1, e->type);
        if (e->type == MB_MMAP_AVAILABLE && e->base_addr <= 0x100000 &&
            e->base_addr + e->length > 0x100000)
            found = true;
    }
    return found;
}

int main(unsigned magic, struct multiboot_info *mbi)
{
    printf("drivebay hello: guest image %p-%p, DMA region %p-%p\n", (void *)_image_start,
           (void *)_end, (void *)dma_region_start(), (void *)dma_region_end());
    if (mbi->flags & MBI_FLAG_LOADER_NAME)
        printf("loader: %s\n", (const char *)mbi->boot_loader_name);
    if (mbi->flags & MBI_FLAG_CMDLINE)
        printf("cmdline: %s\n", (const char *)mbi->cmdline);
    if (mbi->flags & MBI_FLAG_MEM)
        printf("mem_lower %u KiB mem_upper %u KiB\n", mbi->mem_lower, mbi->mem_upper);

    tap_plan(5);
    tap_ok(magic == MB_BOOTLOADER_MAGIC, "multiboot magic");
    if (magic != MB_BOOTLOADER_MAGIC)
        tap_diag("EAX was 0x%08x, expected 0x%08x", magic, MB_BOOTLOADER_MAGIC);

    tap_ok((mbi->flags & MBI_FLAG_MMAP) && mmap_covers_1mib(mbi), "memory map present");

    unsigned functions = pci_enumerate(print_function, NULL);
    tap_diag("%u PCI functions", functions);
    struct pci_dev host;
    tap_ok(pci_probe(PCI_BDF(0, 0, 0), &host) && host.vendor == I440FX_VENDOR &&
           host.device == I440FX_DEVICE, "pci host bridge 8086:1237 at 00:00.0");

    struct pci_dev isa;
    bool have_isa = pci_find_class(PCI_CLASS_BRIDGE, PCI_SUBCLASS_ISA, PCI_ANY_PROG_IF, 0, &isa);
    tap_ok(have_isa, "isa bridge class 0601 found");
    if (have_isa)
        tap_diag("isa bridge %04x:%04x at %02x:%02x.%x", isa.vendor, isa.device,
                 PCI_BUS(isa.bdf), PCI_DEV(isa.bdf), PCI_FN(isa.bdf));

    uint32_t version = lapic_version();
    tap_ok((version & 0xFF) != 0 && (version & 0xFF) != 0xFF, "local apic version readable");
    tap_diag("local apic version register 0x%08x", version);

    tap_done();
}

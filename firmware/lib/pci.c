/*
 * PCI configuration access (mechanism #1), enumeration and BAR decoding.
 *
 * CONFIG_ADDRESS (0xCF8) layout, PCI 3.0 figure 3-1:
 *   bit 31 enable, 23:16 bus, 15:11 device, 10:8 function, 7:2 register.
 * Byte and word accesses go to CONFIG_DATA + (offset & 3).
 */
#include "pci.h"
#include "io.h"

#define PCI_CONFIG_ADDRESS 0xCF8
#define PCI_CONFIG_DATA    0xCFC
#define PCI_CONFIG_ENABLE  0x80000000u

/* A capability list longer than this is a loop: 256 bytes of config space
 * minus the 64-byte header hold at most 48 four-byte capabilities. */
#define PCI_CAP_MAX 48

static void select(pci_bdf_t bdf, unsigned offset)
{
    outl(PCI_CONFIG_ADDRESS, PCI_CONFIG_ENABLE | ((uint32_t)bdf << 8) | (offset & 0xFC));
}

/* Interrupt handlers do not touch configuration space, but a read is two
 * port accesses that must not be split by one that does: keep IF off. */
uint8_t pci_read8(pci_bdf_t bdf, unsigned offset)
{
    uint32_t f = irq_save();
    select(bdf, offset);
    uint8_t v = inb(PCI_CONFIG_DATA + (offset & 3));
    irq_restore(f);
    return v;
}

uint16_t pci_read16(pci_bdf_t bdf, unsigned offset)
{
    uint32_t f = irq_save();
    select(bdf, offset);
    uint16_t v = inw(PCI_CONFIG_DATA + (offset & 2));
    irq_restore(f);
    return v;
}

uint32_t pci_read32(pci_bdf_t bdf, unsigned offset)
{
    uint32_t f = irq_save();
    select(bdf, offset);
    uint32_t v = inl(PCI_CONFIG_DATA);
    irq_restore(f);
    return v;
}

void pci_write8(pci_bdf_t bdf, unsigned offset, uint8_t v)
{
    uint32_t f = irq_save();
    select(bdf, offset);
    outb(PCI_CONFIG_DATA + (offset & 3), v);
    irq_restore(f);
}

void pci_write16(pci_bdf_t bdf, unsigned offset, uint16_t v)
{
    uint32_t f = irq_save();
    select(bdf, offset);
    outw(PCI_CONFIG_DATA + (offset & 2), v);
    irq_restore(f);
}

void pci_write32(pci_bdf_t bdf, unsigned offset, uint32_t v)
{
    uint32_t f = irq_save();
    select(bdf, offset);
    outl(PCI_CONFIG_DATA, v);
    irq_restore(f);
}

bool pci_probe(pci_bdf_t bdf, struct pci_dev *out)
{
    uint32_t id = pci_read32(bdf, PCI_VENDOR_ID);
    /* No device: the host bridge ends the cycle with a master abort, which
     * reads as all ones (PCI 3.0, 6.1: "vendor ID FFFFh ... not present"). */
    if ((id & 0xFFFF) == 0xFFFF || (id & 0xFFFF) == 0)
        return false;
    uint32_t class_rev = pci_read32(bdf, PCI_REVISION_ID);
    out->bdf = bdf;
    out->vendor = (uint16_t)id;
    out->device = (uint16_t)(id >> 16);
    out->revision = (uint8_t)class_rev;
    out->prog_if = (uint8_t)(class_rev >> 8);
    out->subclass = (uint8_t)(class_rev >> 16);
    out->class_code = (uint8_t)(class_rev >> 24);
    out->header_type = pci_read8(bdf, PCI_HEADER_TYPE);
    return true;
}

unsigned pci_enumerate(bool (*visit)(const struct pci_dev *dev, void *ctx), void *ctx)
{
    unsigned count = 0;
    for (unsigned bus = 0; bus < 256; bus++) {
        for (unsigned dev = 0; dev < 32; dev++) {
            struct pci_dev d;
            if (!pci_probe(PCI_BDF(bus, dev, 0), &d))
                continue;
            /* Functions 1..7 exist only behind a function 0 whose header
             * type has the multi-function bit (PCI 3.0, 6.2.1). */
            unsigned functions = (d.header_type & PCI_HEADER_MULTIFUNCTION) ? 8 : 1;
            for (unsigned fn = 0; fn < functions; fn++) {
                if (fn && !pci_probe(PCI_BDF(bus, dev, fn), &d))
                    continue;
                count++;
                if (visit(&d, ctx))
                    return count;
            }
        }
    }
    return count;
}

struct find {
    int class_code, subclass, prog_if;      /* -1 matches anything */
    int vendor, device;
    unsigned skip;
    struct pci_dev *out;
    bool found;
};

static bool match(const struct pci_dev *d, void *ctx)
{
    struct find *f = ctx;
    if ((f->class_code >= 0 && d->class_code != f->class_code) ||
        (f->subclass >= 0 && d->subclass != f->subclass) ||
        (f->prog_if >= 0 && d->prog_if != f->prog_if) ||
        (f->vendor >= 0 && d->vendor != f->vendor) ||
        (f->device >= 0 && d->device != f->device))
        return false;
    if (f->skip) {
        f->skip--;
        return false;
    }
    *f->out = *d;
    f->found = true;
    return true;
}

bool pci_find_class(uint8_t class_code, uint8_t subclass, int prog_if, unsigned index,
                    struct pci_dev *out)
{
    struct find f = { class_code, subclass, prog_if, -1, -1, index, out, false };
    pci_enumerate(match, &f);
    return f.found;
}

bool pci_find_id(uint16_t vendor, uint16_t device, unsigned index, struct pci_dev *out)
{
    struct find f = { -1, -1, -1, vendor, device, index, out, false };
    pci_enumerate(match, &f);
    return f.found;
}

/* Write all ones to a BAR and read back which bits stick, restoring it. */
static uint32_t bar_probe(pci_bdf_t bdf, unsigned offset, uint32_t *original)
{
    *original = pci_read32(bdf, offset);
    pci_write32(bdf, offset, 0xFFFFFFFFu);
    uint32_t mask = pci_read32(bdf, offset);
    pci_write32(bdf, offset, *original);
    return mask;
}

bool pci_bar_decode(pci_bdf_t bdf, unsigned index, struct pci_bar *out)
{
    unsigned layout = pci_read8(bdf, PCI_HEADER_TYPE) & PCI_HEADER_LAYOUT;
    unsigned count = layout == 0 ? 6 : layout == 1 ? 2 : 0;
    if (index >= count)
        return false;
    /* Walk up from BAR0: the slot above a 64-bit memory BAR is its upper
     * half, whose raw value says nothing about its own type. */
    for (unsigned i = 0; i < index; i++) {
        uint32_t v = pci_read32(bdf, PCI_BAR0 + 4 * i);
        if (!(v & 1) && (v & 0x6) == 0x4 && ++i == index)
            return false;
    }
    unsigned offset = PCI_BAR0 + 4 * index;

    uint16_t command = pci_read16(bdf, PCI_COMMAND);
    pci_write16(bdf, PCI_COMMAND, command & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY));

    uint32_t low, mask_low = bar_probe(bdf, offset, &low);
    *out = (struct pci_bar){ 0 };
    if (low & 1) {
        /* I/O BAR: bit 0 set, bit 1 reserved, address in 31:2. */
        uint32_t mask = mask_low & ~0x3u;
        out->io = true;
        out->base = low & ~0x3u;
        /* Devices may hardwire bits 31:16 to zero (x86 ports are 16-bit), so
         * size from the low 16 bits only; I/O BARs are at most 256 bytes. */
        if (mask)
            out->size = (~(mask | 0xFFFF0000u) + 1) & 0xFFFF;
    } else {
        /* Memory BAR: bits 2:1 type (00 32-bit, 10 64-bit), bit 3 prefetchable. */
        out->mem64 = (low & 0x6) == 0x4;
        out->prefetchable = low & 0x8;
        uint64_t bits = mask_low & ~0xFu;       /* address bits that stuck */
        uint64_t above = 0xFFFFFFFF00000000ull; /* a 32-bit BAR decodes below 4 GiB */
        out->base = low & ~0xFu;
        if (out->mem64 && index + 1 < count) {
            uint32_t high, mask_high = bar_probe(bdf, offset + 4, &high);
            bits |= (uint64_t)mask_high << 32;
            out->base |= (uint64_t)high << 32;
            above = 0;
        }
        if (bits)
            out->size = ~(bits | above) + 1;
    }

    pci_write16(bdf, PCI_COMMAND, command);
    return true;
}

void pci_enable(pci_bdf_t bdf, uint16_t command_bits)
{
    pci_write16(bdf, PCI_COMMAND, pci_read16(bdf, PCI_COMMAND) | command_bits);
}

uint8_t pci_find_capability(pci_bdf_t bdf, uint8_t cap_id)
{
    if (!(pci_read16(bdf, PCI_STATUS) & PCI_STATUS_CAP_LIST))
        return 0;
    /* Pointers are dword aligned; the low two bits are reserved (PCI 3.0, 6.7). */
    uint8_t at = pci_read8(bdf, PCI_CAPABILITY_LIST) & 0xFC;
    for (int n = 0; at >= 0x40 && n < PCI_CAP_MAX; n++) {
        if (pci_read8(bdf, at) == cap_id)
            return at;
        at = pci_read8(bdf, at + 1) & 0xFC;
    }
    return 0;
}

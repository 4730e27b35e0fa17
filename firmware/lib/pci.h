/*
 * PCI configuration space through configuration mechanism #1 (PCI Local Bus
 * Specification 3.0, 3.2.2.3.2): write an address to CONFIG_ADDRESS (0xCF8),
 * then access CONFIG_DATA (0xCFC..0xCFF).
 *
 * A function is named by a pci_bdf_t, bus/device/function packed the way the
 * address register wants them: PCI_BDF(0, 1, 0) is 00:01.0.
 */
#ifndef FW_PCI_H
#define FW_PCI_H

#include <stdbool.h>
#include <stdint.h>

typedef uint16_t pci_bdf_t;
#define PCI_BDF(bus, dev, fn) ((pci_bdf_t)(((bus) << 8) | ((dev) << 3) | (fn)))
#define PCI_BUS(bdf)  ((unsigned)(bdf) >> 8)
#define PCI_DEV(bdf)  (((unsigned)(bdf) >> 3) & 0x1F)
#define PCI_FN(bdf)   ((unsigned)(bdf) & 0x7)

/* Configuration header registers (PCI 3.0, 6.1), common to all header types. */
#define PCI_VENDOR_ID     0x00
#define PCI_DEVICE_ID     0x02
#define PCI_COMMAND       0x04
#define PCI_STATUS        0x06
#define PCI_REVISION_ID   0x08
#define PCI_PROG_IF       0x09
#define PCI_SUBCLASS      0x0A
#define PCI_CLASS_CODE    0x0B
#define PCI_HEADER_TYPE   0x0E
#define PCI_BAR0          0x10
#define PCI_CAPABILITY_LIST 0x34
#define PCI_INTERRUPT_LINE 0x3C
#define PCI_INTERRUPT_PIN  0x3D

#define PCI_COMMAND_IO      (1u << 0)
#define PCI_COMMAND_MEMORY  (1u << 1)
#define PCI_COMMAND_MASTER  (1u << 2)
#define PCI_COMMAND_INTX_DISABLE (1u << 10)
#define PCI_STATUS_CAP_LIST (1u << 4)
#define PCI_HEADER_MULTIFUNCTION 0x80
#define PCI_HEADER_LAYOUT   0x7F      /* 0 device, 1 PCI-PCI bridge, 2 CardBus */

/* Capability IDs (PCI 3.0, appendix H). */
#define PCI_CAP_ID_PM     0x01
#define PCI_CAP_ID_MSI    0x05
#define PCI_CAP_ID_PCIE   0x10
#define PCI_CAP_ID_MSIX   0x11

uint8_t pci_read8(pci_bdf_t bdf, unsigned offset);
uint16_t pci_read16(pci_bdf_t bdf, unsigned offset);
uint32_t pci_read32(pci_bdf_t bdf, unsigned offset);
void pci_write8(pci_bdf_t bdf, unsigned offset, uint8_t v);
void pci_write16(pci_bdf_t bdf, unsigned offset, uint16_t v);
void pci_write32(pci_bdf_t bdf, unsigned offset, uint32_t v);

/* What enumeration reports about one function. */
struct pci_dev {
    pci_bdf_t bdf;
    uint16_t vendor, device;
    uint8_t class_code, subclass, prog_if, revision;
    uint8_t header_type;          /* including the multi-function bit */
};

/* Read the identity of `bdf`; false if no function answers there. */
bool pci_probe(pci_bdf_t bdf, struct pci_dev *out);

/* Call visit() for every function on buses 0..255, in bus/device/function
 * order; stop early when it returns true.  Returns how many were visited. */
unsigned pci_enumerate(bool (*visit)(const struct pci_dev *dev, void *ctx), void *ctx);

/* The index-th (from 0) function with this class and subclass, and this
 * prog-if unless prog_if is PCI_ANY_PROG_IF.  False if there is none. */
#define PCI_ANY_PROG_IF (-1)
bool pci_find_class(uint8_t class_code, uint8_t subclass, int prog_if, unsigned index,
                    struct pci_dev *out);
/* The index-th function with this vendor and device ID. */
bool pci_find_id(uint16_t vendor, uint16_t device, unsigned index, struct pci_dev *out);

/* A decoded base address register (PCI 3.0, 6.2.5.1). */
struct pci_bar {
    uint64_t base;        /* address the BAR holds, type bits masked off */
    uint64_t size;        /* bytes decoded; 0 if the BAR is not implemented */
    bool io;              /* I/O space rather than memory */
    bool mem64;           /* a 64-bit memory BAR: it also uses the next slot */
    bool prefetchable;
};

/* Decode BAR `index` (0..5 for a device, 0..1 for a bridge).  Sizing writes
 * all ones and restores the value, with I/O and memory decoding switched off
 * meanwhile so the device never answers at a bogus address.  Returns false
 * for an index past the header's BARs or the upper half of a 64-bit BAR. */
bool pci_bar_decode(pci_bdf_t bdf, unsigned index, struct pci_bar *out);

/* Set bits (PCI_COMMAND_IO | _MEMORY | _MASTER) in the command register. */
void pci_enable(pci_bdf_t bdf, uint16_t command_bits);

/* Offset of the first capability with this ID, or 0 if there is none. */
uint8_t pci_find_capability(pci_bdf_t bdf, uint8_t cap_id);

#endif

/*
 * bench_io: the cost of the two kinds of device register access, for the
 * host to time.  The command line's "n=COUNT" (default 100000) sets how many
 * of each:
 *   - port I/O: IN from the PCI configuration data port with the host
 *     bridge's vendor/device register selected, a register read the chipset
 *     model answers (not an unclaimed port);
 *   - MMIO: reads of the local APIC version register at 0xFEE00030.
 * Each value is checked, so an emulator cannot pass by being fast and wrong.
 */
#include "runtime.h"

#define DEFAULT_COUNT 100000
#define PCI_CONFIG_ADDRESS 0xCF8
#define PCI_CONFIG_DATA 0xCFC
#define CONFIG_ENABLE 0x80000000u   /* bus 0, device 0, function 0, register 0 */

int main(unsigned magic, struct multiboot_info *mbi)
{
    (void)magic;
    (void)mbi;
    uint32_t n = cmdline_u32("n", DEFAULT_COUNT);
    tap_plan(2);

    /* Select the register once: the loop measures just the data reads. */
    uint32_t expect = pci_read32(PCI_BDF(0, 0, 0), PCI_VENDOR_ID);
    outl(PCI_CONFIG_ADDRESS, CONFIG_ENABLE);
    uint32_t wrong = 0;
    for (uint32_t i = 0; i < n; i++)
        wrong += inl(PCI_CONFIG_DATA) != expect;
    printf("bench pio %u\n", n);
    tap_ok(wrong == 0, "pio: %u reads of 00:00.0 register 0 returned %08x", n, expect);

    uint32_t version = lapic_version();
    wrong = 0;
    for (uint32_t i = 0; i < n; i++)
        wrong += lapic_version() != version;
    printf("bench mmio %u\n", n);
    tap_ok(wrong == 0, "mmio: %u reads of the local apic version returned %08x", n, version);

    tap_done();
}

"""PCI plumbing: configuration space, functions, bus 0 and the PC chipset.

* ``config``  — 256-byte configuration space, write masks, register tables
* ``device``  — PciDevice: identity and BARs as data, INTx, bus mastering
* ``msi``, ``msix`` — the MSI and MSI-X capabilities
* ``bus``     — PciBus: configuration mechanism #1, PIRQ wiring, MSI sink
* ``i440fx``, ``piix3`` — the host bridge (00:00.0) and ISA bridge (00:01.0)
"""

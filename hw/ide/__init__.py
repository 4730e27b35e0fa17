"""IDE: the PIIX3/PIIX4/ICH6 PCI IDE functions, their channels and bus-master DMA.

``regs.py`` declares the task file ports, bus-master registers and PCI
configuration registers; ``channel.py`` is a cable with two ATA devices (the
devices' AtaTransport); ``bmdma.py`` the bus-master engine and PRD walking;
``piix.py`` the PCI function rows and the factory hw/devices.py registers.
The ATA command set itself is hw/ata's.
"""

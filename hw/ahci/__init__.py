"""AHCI (SATA) host bus adapter: regs.py (register map), regfile.py (masks),
fis.py (FISes and memory structures), port.py (one port = one ATA bus),
hba.py (the PCI function and its factory), trace.py (trace events)."""

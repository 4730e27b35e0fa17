"""The CPU side: the unicorn-driven x86 CPU, PC machine assembly and firmware/ELF loading.

This is the only package that imports unicorn.  It implements the GuestMemory,
IrqLine and Clock interfaces of drivebay.hw on top of guest RAM.
"""

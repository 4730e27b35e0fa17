"""Test bench for the AHCI HBA, driven the way a guest driver does.

Layered like QEMU's tests/qtest/libqos/ahci.h:

1. register access: ``hba_read``/``hba_write`` (generic host control) and
   ``px_read``/``px_write``/``px_set``/``px_clr`` (port registers);
2. bring-up: ``hba_enable`` (HBA reset, AE, IE) and ``port_start`` (command
   list and FIS area, FRE, spin-up, link, ST), as AHCI 1.3.1 §10.1 and
   libqos's ahci_hba_enable/ahci_port_select do;
3. the command lifecycle: ``Command`` builds a command header, a Register
   H2D FIS (or a Device Control FIS), the ACMD and a PRDT in guest memory,
   ``issue`` sets PxCI (and PxSACT for NCQ), ``wait`` polls, ``verify``
   checks PxIS/PxTFD; hooks let a test corrupt the header, table or PRDs
   before issue (fault injection);
4. one-call I/O: ``identify``, ``read``/``write`` (DMA or PIO, LBA28/48),
   ``ncq`` (queued reads/writes in several slots), ``atapi``.

Offsets and bits are written out from the AHCI 1.3.1 spec (§3.1, §3.3,
§4.2) and the SATA/ATA specs, not imported from hw/ahci, so a wrong register
table cannot confirm itself.
"""

import functools

from drivebay.block.backend import MemoryBackend
from drivebay.block.io import InlineIo
from drivebay.hw import devices
from drivebay.hw.clock import VirtualClock
from drivebay.hw.dma import GuestMemory
from drivebay.hw.memory import IoSpace, MmioSpace
from drivebay.hw.pci.bus import PciBus

RAM_SIZE = 4 << 20
ABAR = 0xFEBF0000
SLOT = 3
SECTOR = 512

# -- §3.1 generic host control ------------------------------------------------------------
CAP, GHC, IS, PI, VS, CCC_CTL, CCC_PORTS, EM_LOC, EM_CTL, CAP2, BOHC = (
    0x00, 0x04, 0x08, 0x0C, 0x10, 0x14, 0x18, 0x1C, 0x20, 0x24, 0x28)
GHC_HR, GHC_IE, GHC_AE = 1 << 0, 1 << 1, 1 << 31
# -- §3.3 port registers: port x at 100h + x * 80h ---------------------------------------------
PxCLB, PxCLBU, PxFB, PxFBU, PxIS, PxIE, PxCMD = 0x00, 0x04, 0x08, 0x0C, 0x10, 0x14, 0x18
PxTFD, PxSIG, PxSSTS, PxSCTL, PxSERR, PxSACT, PxCI, PxSNTF, PxFBS = (
    0x20, 0x24, 0x28, 0x2C, 0x30, 0x34, 0x38, 0x3C, 0x40)
CMD_ST, CMD_SUD, CMD_POD, CMD_CLO, CMD_FRE = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4
CMD_FR, CMD_CR, CMD_HPCP, CMD_ATAPI = 1 << 14, 1 << 15, 1 << 18, 1 << 24
IS_DHRS, IS_PSS, IS_DSS, IS_SDBS, IS_UFS, IS_DPS, IS_PCS = 1, 2, 4, 8, 0x10, 0x20, 0x40
IS_PRCS, IS_OFS, IS_INFS, IS_IFS, IS_HBDS, IS_HBFS, IS_TFES = (
    1 << 22, 1 << 24, 1 << 26, 1 << 27, 1 << 28, 1 << 29, 1 << 30)
IE_ALL = 0x7DC0007F                 # every PxIE bit that is RW here (not CPDE, DMPE)
SERR_DIAG_N, SERR_DIAG_X, SERR_ERR_P = 1 << 16, 1 << 26, 1 << 10
# -- §4.2.1 received FIS area, §4.2.2 command header, §4.2.3 command table ------------------------
RX_DSFIS, RX_PSFIS, RX_RFIS, RX_SDBFIS = 0x00, 0x20, 0x40, 0x58
CH_A, CH_W, CH_P, CH_R, CH_C = 1 << 5, 1 << 6, 1 << 7, 1 << 8, 1 << 10
CT_ACMD, CT_PRDT = 0x40, 0x80
# -- ATA status / error, SATA FIS types -------------------------------------------------------------
BSY, DRDY, DF, DSC, DRQ, ERR = 0x80, 0x40, 0x20, 0x10, 0x08, 0x01
ABRT, IDNF, UNC = 0x04, 0x10, 0x40
FIS_H2D, FIS_D2H, FIS_DMA_SETUP, FIS_PIO_SETUP, FIS_SDB = 0x27, 0x34, 0x41, 0x5F, 0xA1
# ATA opcodes (ACS-3 Annex B)
READ_DMA, READ_DMA_EXT, WRITE_DMA, WRITE_DMA_EXT = 0xC8, 0x25, 0xCA, 0x35
READ_SECTORS, READ_SECTORS_EXT, WRITE_SECTORS, WRITE_SECTORS_EXT = 0x20, 0x24, 0x30, 0x34
READ_FPDMA_QUEUED, WRITE_FPDMA_QUEUED, READ_LOG_EXT = 0x60, 0x61, 0x2F
IDENTIFY_DEVICE, IDENTIFY_PACKET_DEVICE, PACKET, SET_FEATURES = 0xEC, 0xA1, 0xA0, 0xEF


@functools.lru_cache(maxsize=64)
def pattern(sectors, seed=0):
    out = bytearray()
    for s in range(sectors):
        tag = ((s + seed) & 0xFFFFFFFF).to_bytes(4, "little")
        out += bytes((tag[i % 4] + i) & 0xFF for i in range(SECTOR))
    return bytes(out)


def disk(sectors=2048, shuffle=None, **kwargs):
    """A MemoryBackend with recognisable sectors; ``shuffle`` (a seed) makes
    its completions come back in random order."""
    return MemoryBackend(bytearray(pattern(sectors)), io=InlineIo(shuffle=shuffle), **kwargs)


class Allocator:
    """A bump allocator over guest RAM above 1 MiB."""

    def __init__(self, start=0x100000, end=RAM_SIZE):
        self.next = start
        self.end = end

    def alloc(self, size, align=16):
        at = (self.next + align - 1) & ~(align - 1)
        assert at + size <= self.end, "bench RAM exhausted"
        self.next = at + size
        return at


class Command:
    """One command slot's contents, built in guest memory by ``build``."""

    def __init__(self, bench, port, slot, command, lba=0, count=0, features=0, device=0x40,
                 buffers=(), write=False, atapi=None, control=None, header_flags=0, prdtl=None,
                 ncq_tag=None, fua=False, icc=0):
        self.bench, self.port, self.slot = bench, port, slot
        self.command, self.lba, self.count, self.features = command, lba, count, features
        self.device, self.buffers, self.write, self.atapi = device, list(buffers), write, atapi
        self.control, self.header_flags, self.prdtl = control, header_flags, prdtl
        self.ncq_tag, self.fua, self.icc = ncq_tag, fua, icc
        self.table = None

    def cfis(self):
        if self.control is not None:
            fis = bytearray(20)
            fis[0], fis[1], fis[15] = FIS_H2D, 0x00, self.control
            return fis
        fis = bytearray(20)
        lba, count, features, device = self.lba, self.count, self.features, self.device
        if self.ncq_tag is not None:
            # READ/WRITE FPDMA QUEUED: sector count in Features, tag in Count 7:3.
            features, count = count, self.ncq_tag << 3
            device = 0x40 | (0x80 if self.fua else 0)
        fis[0], fis[1], fis[2] = FIS_H2D, 0x80, self.command
        fis[3], fis[11] = features & 0xFF, features >> 8 & 0xFF
        fis[4], fis[5], fis[6] = lba & 0xFF, lba >> 8 & 0xFF, lba >> 16 & 0xFF
        fis[7] = device | (lba >> 24 & 0x0F if self.command in (READ_DMA, WRITE_DMA, READ_SECTORS,
                                                                 WRITE_SECTORS) else 0)
        fis[8], fis[9], fis[10] = lba >> 24 & 0xFF, lba >> 32 & 0xFF, lba >> 40 & 0xFF
        fis[12], fis[13] = count & 0xFF, count >> 8 & 0xFF
        fis[14] = self.icc
        return fis

    def build(self):
        b, mem = self.bench, self.bench.memory
        entries = len(self.buffers)
        self.table = b.alloc.alloc(0x80 + 16 * max(entries, 1), 128)
        mem.write(self.table, bytes(0x80 + 16 * max(entries, 1)))
        mem.write(self.table, bytes(self.cfis()))
        if self.atapi is not None:
            mem.write(self.table + CT_ACMD, bytes(self.atapi).ljust(16, b"\0"))
        for i, (address, length, *irq) in enumerate(self.buffers):
            entry = self.table + CT_PRDT + 16 * i
            mem.write_u32(entry, address & 0xFFFFFFFF)
            mem.write_u32(entry + 4, address >> 32)
            mem.write_u32(entry + 12, ((length - 1) & 0x3FFFFF) | (0x80000000 if irq and irq[0] else 0))
        flags = 5 | self.header_flags
        if self.write:
            flags |= CH_W
        if self.atapi is not None:
            flags |= CH_A
        prdtl = entries if self.prdtl is None else self.prdtl
        header = b.clb[self.port] + 32 * self.slot
        mem.write_u32(header, prdtl << 16 | flags)
        mem.write_u32(header + 4, 0xDEADBEEF)              # PRDBC: the HBA overwrites it
        mem.write_u32(header + 8, self.table)
        mem.write_u32(header + 12, 0)
        return self

    @property
    def prdbc(self):
        return self.bench.memory.read_u32(self.bench.clb[self.port] + 32 * self.slot + 4)


class AhciBench:
    def __init__(self, ports=4, drives=None, bus_master=True, clock=None):
        self.io = IoSpace()
        self.mmio = MmioSpace()
        self.ram = bytearray(RAM_SIZE)
        self.memory = GuestMemory(self.ram)
        self.msis = []
        self.bus = PciBus(self.io, self.mmio, memory=self.memory,
                          msi_sink=lambda address, data: self.msis.append((address, data)))
        self.clock = clock or VirtualClock()
        ctx = devices.DeviceContext(isa_irq=None, clock=self.clock, io=self.io, mmio=self.mmio)
        self.hba = devices.create("ahci", ctx, ports=ports, drives=drives)
        self.bus.plug(self.hba, SLOT, 0)
        self.cfg_write(0x24, 4, ABAR)                                  # BAR5: ABAR
        self.cfg_write(0x04, 2, 0x0006 if bus_master else 0x0002)     # memory space (+ bus master)
        self.alloc = Allocator()
        self.clb = {}
        self.fb = {}

    # -- layer 1: registers ----------------------------------------------------------------

    def cfg_read(self, register, size=4):
        return self.bus.config_read(SLOT, 0, register, size)

    def cfg_write(self, register, size, value):
        self.bus.config_write(SLOT, 0, register, size, value)

    def hba_read(self, offset, size=4):
        return self.mmio.read(ABAR + offset, size)

    def hba_write(self, offset, value, size=4):
        self.mmio.write(ABAR + offset, size, value)

    def px_read(self, port, reg, size=4):
        return self.hba_read(0x100 + 0x80 * port + reg, size)

    def px_write(self, port, reg, value, size=4):
        self.hba_write(0x100 + 0x80 * port + reg, value, size)

    def px_set(self, port, reg, bits):
        self.px_write(port, reg, self.px_read(port, reg) | bits)

    def px_clr(self, port, reg, bits):
        self.px_write(port, reg, self.px_read(port, reg) & ~bits)

    @property
    def intx(self):
        return self.hba.intx_asserted

    # -- layer 2: bring-up ------------------------------------------------------------------------

    def hba_enable(self, interrupts=True):
        self.hba_write(GHC, GHC_HR)
        assert not self.hba_read(GHC) & GHC_HR            # HR reads 0 once the reset is done
        self.hba_write(GHC, GHC_AE | (GHC_IE if interrupts else 0))
        return self

    def port_start(self, port, ie=IE_ALL, start=True):
        if port not in self.clb:
            self.clb[port] = self.alloc.alloc(1024, 1024)
            self.fb[port] = self.alloc.alloc(256, 256)
        self.memory.write(self.clb[port], bytes(1024))
        self.memory.write(self.fb[port], bytes(256))
        self.px_write(port, PxCLB, self.clb[port])
        self.px_write(port, PxCLBU, 0)
        self.px_write(port, PxFB, self.fb[port])
        self.px_write(port, PxFBU, 0)
        self.px_set(port, PxCMD, CMD_FRE)
        self.px_set(port, PxCMD, CMD_SUD)
        self.px_write(port, PxSERR, 0xFFFFFFFF)
        self.px_write(port, PxIS, 0xFFFFFFFF)
        self.hba_write(IS, 1 << port)
        self.px_write(port, PxIE, ie)
        if start:
            self.px_set(port, PxCMD, CMD_ST)
        return self

    def bring_up(self, *ports, interrupts=True):
        self.hba_enable(interrupts)
        for port in ports:
            self.port_start(port)
        return self

    def rx_fis(self, port, offset, size):
        return self.memory.read(self.fb[port] + offset, size)

    # -- layer 3: command lifecycle -------------------------------------------------------------------

    def command(self, port, slot, command, **kwargs):
        return Command(self, port, slot, command, **kwargs).build()

    def issue(self, cmd, ncq=False):
        if ncq:
            self.px_write(cmd.port, PxSACT, 1 << cmd.slot)
        self.px_write(cmd.port, PxCI, 1 << cmd.slot)

    def wait(self, port, slots=None, limit=1000):
        """Poll until the slots' PxCI and PxSACT bits clear (or the port stops
        on an error); returns PxIS."""
        mask = 0xFFFFFFFF if slots is None else slots
        for _ in range(limit):
            busy = (self.px_read(port, PxCI) | self.px_read(port, PxSACT)) & mask
            pxis = self.px_read(port, PxIS)
            if not busy or pxis & (IS_TFES | IS_HBFS | IS_IFS | IS_OFS):
                return pxis
            self.clock.advance_to(self.clock.now_ns() + 10_000)
        raise AssertionError(f"port {port}: slots {mask:#x} still busy")

    def clear_irq(self, port):
        self.px_write(port, PxIS, self.px_read(port, PxIS))
        self.hba_write(IS, 1 << port)

    def run(self, cmd, ncq=False):
        self.issue(cmd, ncq)
        return self.wait(cmd.port, 1 << cmd.slot)

    def tfd(self, port):
        value = self.px_read(port, PxTFD)
        return value & 0xFF, value >> 8 & 0xFF

    # -- layer 4: one-call I/O ---------------------------------------------------------------------------

    def buffer(self, nbytes, fill=None):
        address = self.alloc.alloc(nbytes, 16)
        if fill is not None:
            self.memory.write(address, fill)
        return address

    def identify(self, port, slot=0, command=IDENTIFY_DEVICE):
        buf = self.buffer(512)
        cmd = self.command(port, slot, command, buffers=[(buf, 512)])
        pxis = self.run(cmd)
        data = self.memory.read(buf, 512)
        return [int.from_bytes(data[2 * i:2 * i + 2], "little") for i in range(256)], pxis, cmd

    def _split(self, address, nbytes, pieces):
        sizes = []
        left = nbytes
        for i in range(pieces - 1):
            n = max(2, (left // (pieces - i)) & ~1)
            sizes.append(n)
            left -= n
        sizes.append(left)
        out, at = [], address
        for n in sizes:
            out.append((at, n))
            at += n
        return out

    def read(self, port, lba, count, slot=0, command=READ_DMA_EXT, pieces=1):
        nbytes = count * SECTOR
        buf = self.buffer(nbytes, bytes(nbytes))
        cmd = self.command(port, slot, command, lba=lba, count=count,
                           buffers=self._split(buf, nbytes, pieces))
        pxis = self.run(cmd)
        return self.memory.read(buf, nbytes), pxis, cmd

    def write(self, port, lba, data, slot=0, command=WRITE_DMA_EXT, pieces=1):
        buf = self.buffer(len(data), data)
        cmd = self.command(port, slot, command, lba=lba, count=len(data) // SECTOR, write=True,
                           buffers=self._split(buf, len(data), pieces))
        return self.run(cmd), cmd

    def ncq(self, port, slot, lba, count, write=False, data=None, pieces=1, fua=False):
        """Build and issue one queued command; returns (cmd, buffer address)."""
        nbytes = count * SECTOR
        buf = self.buffer(nbytes, data if write else bytes(nbytes))
        cmd = self.command(port, slot, WRITE_FPDMA_QUEUED if write else READ_FPDMA_QUEUED,
                           lba=lba, count=count, ncq_tag=slot, write=write, fua=fua,
                           buffers=self._split(buf, nbytes, pieces))
        self.issue(cmd, ncq=True)
        return cmd, buf

    def atapi(self, port, cdb, nbytes, slot=0, dma=True, byte_count=0xFFFE):
        buf = self.buffer(max(nbytes, 2), bytes(max(nbytes, 2)))
        cmd = self.command(port, slot, PACKET, features=1 if dma else 0,
                           lba=(byte_count & 0xFFFF) << 8, atapi=cdb,
                           buffers=[(buf, max(nbytes, 2))] if nbytes else [])
        pxis = self.run(cmd)
        return self.memory.read(buf, nbytes), pxis, cmd


def drives(*specs):
    """{port: spec} for hdd backends/specs given in port order (None: empty)."""
    out = {}
    for port, spec in enumerate(specs):
        if spec is None:
            continue
        out[port] = spec if isinstance(spec, dict) else {"backend": spec}
    return out

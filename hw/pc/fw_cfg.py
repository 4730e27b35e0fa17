"""QEMU's firmware configuration device, traditional I/O interface (0x510/0x511).

Modelled from QEMU's docs/specs/fw_cfg.rst: a 16-bit write to the selector
port 0x510 chooses an item and rewinds it; each byte read from the data
port 0x511 returns the next byte of the item, and 0 past its end (or for an
unknown selector).  Writes to the data port are ignored (the traditional
interface is read-only).  The DMA interface is not offered: FW_CFG_ID reads
1 (bit 0 "traditional interface", bit 1 "DMA" clear), so firmware never
looks at 0x514.

Selectors: bits 13-0 choose the item, bit 14 is the historical write flag
(ignored), bit 15 selects the architecture-specific items (x86: 0x8000 ACPI
tables, 0x8001 SMBIOS, 0x8002 IRQ0 override, 0x8003 E820 table, 0x8004
HPET), a namespace of its own.  Named files live in the file directory
(FW_CFG_FILE_DIR, 0x0019): a big-endian u32 count, then per file a
big-endian u32 size, u16 selector, u16 reserved and a 56-byte NUL-padded
name.  As in QEMU (fw_cfg_add_file_callback), the directory is sorted by
name and file selectors are 0x0020 plus the position in that order, so
adding a file that sorts earlier moves the selectors of those after it:
look a selector up with ``selector_of(name)`` once all files are added.

What SeaBIOS 1.16 reads (src/fw/paravirt.c, src/boot.c):

* FW_CFG_SIGNATURE ("QEMU", detection) and FW_CFG_ID (DMA support bit);
* FW_CFG_FILE_DIR, then any file by name; legacy keys 0x000E (boot menu),
  0x8002 (IRQ0 override) and 0x000F (max CPUs) appear to it as the files
  ``etc/show-boot-menu``, ``etc/irq0-override``, ``etc/max-cpus``;
* ``etc/e820``: entries {u64 address, u64 length, u32 type} little-endian
  (type 1 RAM, 2 reserved); when present SeaBIOS sizes RAM from its type-1
  entries, otherwise from CMOS 0x34/0x35, 0x5B-0x5D;
* ``bootorder``: OpenFirmware device paths separated by newlines, NUL
  terminated (QEMU's get_boot_devices_list).  SeaBIOS matches them against
  paths it builds, with ``*`` for any device name: ``/pci@i0cf8/*@4`` (an
  NVMe or virtio controller at slot 4), ``/pci@i0cf8/*@1,1/drive@0/disk@0``
  (IDE primary master), ``/pci@i0cf8/*@5/*@0/*@0,0`` (SCSI target 0 LUN 0),
  ``HALT`` to stop after the list;
* ``etc/boot-fail-wait`` (u32 ms), ``etc/boot-menu-wait``,
  ``etc/ps2-keyboard-spinup`` and other ``etc/`` integers via
  romfile_loadint (little-endian, 1-8 bytes).
"""

import struct

from drivebay import trace
from drivebay.errors import ConfigError

BASE = 0x510
REGISTERS = {0: "selector", 1: "data"}

# Selector keys (docs/specs/fw_cfg.rst, include/standard-headers/linux/qemu_fw_cfg.h)
FW_CFG_SIGNATURE = 0x0000
FW_CFG_ID = 0x0001
FW_CFG_UUID = 0x0002
FW_CFG_RAM_SIZE = 0x0003
FW_CFG_NOGRAPHIC = 0x0004
FW_CFG_NB_CPUS = 0x0005
FW_CFG_MACHINE_ID = 0x0006
FW_CFG_BOOT_MENU = 0x000E
FW_CFG_MAX_CPUS = 0x000F
FW_CFG_FILE_DIR = 0x0019
FW_CFG_FILE_FIRST = 0x0020
FW_CFG_WRITE_CHANNEL = 0x4000
FW_CFG_ARCH_LOCAL = 0x8000
FW_CFG_ENTRY_MASK = 0x3FFF
FW_CFG_IRQ0_OVERRIDE = FW_CFG_ARCH_LOCAL | 0x0002
FW_CFG_E820_TABLE = FW_CFG_ARCH_LOCAL | 0x0003

FW_CFG_VERSION = 0x01          # FW_CFG_ID bit 0: traditional interface
FW_CFG_VERSION_DMA = 0x02      # FW_CFG_ID bit 1: DMA interface (not offered)
SIGNATURE = b"QEMU"

FILE_NAME_SIZE = 56            # FW_CFG_MAX_FILE_PATH, NUL included
FILE_ENTRY = struct.Struct(">IHH56s")
assert FILE_ENTRY.size == 64
# Files take selectors 0x0020 up to the end of the 14-bit item space.
MAX_FILES = FW_CFG_ENTRY_MASK + 1 - FW_CFG_FILE_FIRST

E820_ENTRY = struct.Struct("<QQI")
assert E820_ENTRY.size == 20
E820_RAM = 1
E820_RESERVED = 2


class FwCfg:
    """The fw_cfg device.  Items are added by the machine before the guest runs."""

    STATE_FIELDS = ("selector", "offset")

    def __init__(self, *, ram_size=0, cpus=1, max_cpus=None, uuid=bytes(16), nographic=True,
                 boot_menu=False):
        self.items = {}                # full selector (arch bit included) -> bytes
        self.files = {}                # name -> bytes
        self.add_item(FW_CFG_SIGNATURE, SIGNATURE)
        self.add_item(FW_CFG_ID, struct.pack("<I", FW_CFG_VERSION))
        if len(uuid) != 16:
            raise ConfigError(f"fw_cfg UUID must be 16 bytes, got {len(uuid)}")
        self.add_item(FW_CFG_UUID, bytes(uuid))
        self.add_item(FW_CFG_RAM_SIZE, struct.pack("<Q", ram_size))
        self.add_item(FW_CFG_NOGRAPHIC, struct.pack("<H", int(nographic)))
        self.add_item(FW_CFG_NB_CPUS, struct.pack("<H", cpus))
        self.add_item(FW_CFG_MAX_CPUS, struct.pack("<H", max_cpus or cpus))
        self.add_item(FW_CFG_BOOT_MENU, struct.pack("<H", int(boot_menu)))
        self.reset()

    def reset(self):
        self.selector = FW_CFG_SIGNATURE
        self.offset = 0
        self._current = self.items[FW_CFG_SIGNATURE]

    def register(self, io):
        io.add("fw_cfg", BASE, 2, self.pio_read, self.pio_write, names=REGISTERS)

    # -- building the contents ----------------------------------------------------------

    def add_item(self, key, data):
        """Set a numbered item (``key`` below 0x20, or with bit 15 for x86 items)."""
        index = key & FW_CFG_ENTRY_MASK
        if key & FW_CFG_WRITE_CHANNEL or key > 0xFFFF:
            raise ConfigError(f"fw_cfg key {key:#x}: bits 14 and above 15 are not item bits")
        if not key & FW_CFG_ARCH_LOCAL and index >= FW_CFG_FILE_DIR:
            raise ConfigError(f"fw_cfg key {key:#x} is in the file range; use add_file")
        self.items[key] = bytes(data)

    def add_file(self, name, data):
        """Add the named file; returns its selector as the directory stands now."""
        encoded = name.encode("ascii")
        if not encoded or len(encoded) >= FILE_NAME_SIZE:
            raise ConfigError(f"fw_cfg file name {name!r}: 1 to {FILE_NAME_SIZE - 1} ASCII characters")
        if name in self.files:
            raise ConfigError(f"fw_cfg file {name!r} already exists")
        if len(self.files) >= MAX_FILES:
            raise ConfigError(f"fw_cfg holds at most {MAX_FILES} files")
        self.files[name] = bytes(data)
        return self.selector_of(name)

    def replace_file(self, name, data):
        if name not in self.files:
            raise ConfigError(f"fw_cfg file {name!r} does not exist")
        self.files[name] = bytes(data)

    def file_names(self):
        """Names in directory order (QEMU sorts with strcmp: bytewise)."""
        return sorted(self.files, key=lambda n: n.encode("ascii"))

    def selector_of(self, name):
        return FW_CFG_FILE_FIRST + self.file_names().index(name)

    def file_directory(self):
        """The FW_CFG_FILE_DIR item, byte for byte."""
        names = self.file_names()
        out = bytearray(struct.pack(">I", len(names)))
        for position, name in enumerate(names):
            out += FILE_ENTRY.pack(len(self.files[name]), FW_CFG_FILE_FIRST + position, 0,
                                   name.encode("ascii"))
        return bytes(out)

    def add_e820(self, entries):
        """``etc/e820`` from (address, length, type) triples."""
        data = b"".join(E820_ENTRY.pack(address, length, kind) for address, length, kind in entries)
        return self.add_file("etc/e820", data)

    def add_bootorder(self, paths):
        """``bootorder`` from OpenFirmware device paths, highest priority first."""
        for path in paths:
            if "\n" in path or "\0" in path:
                raise ConfigError(f"boot device path {path!r} contains a newline or NUL")
        return self.add_file("bootorder", ("\n".join(paths)).encode("ascii") + b"\0")

    def add_file_u32(self, name, value):
        """An ``etc/`` integer file as romfile_loadint reads it."""
        return self.add_file(name, struct.pack("<I", value))

    # -- the guest side -------------------------------------------------------------------

    def _lookup(self, selector):
        index = selector & FW_CFG_ENTRY_MASK
        key = selector & (FW_CFG_ARCH_LOCAL | FW_CFG_ENTRY_MASK)
        if not selector & FW_CFG_ARCH_LOCAL:
            if index == FW_CFG_FILE_DIR:
                return self.file_directory()
            if index >= FW_CFG_FILE_FIRST:
                names = self.file_names()
                position = index - FW_CFG_FILE_FIRST
                return self.files[names[position]] if position < len(names) else None
        return self.items.get(key)

    def select(self, selector):
        self.selector = selector & 0xFFFF
        self.offset = 0
        data = self._lookup(self.selector)
        if data is None:
            data = b""             # firmware probes absent items; they read as zeros
        if selector & FW_CFG_WRITE_CHANNEL:
            trace.guest_error("fw_cfg", f"selector {selector:#06x} has the write bit; data is read-only")
        self._current = data
        if trace.on.dev:
            trace.emit("dev", f"fw_cfg_select {self.selector:#06x} ({len(data)} bytes"
                              f"{', absent' if self._lookup(self.selector) is None else ''})")

    def read_byte(self):
        data, offset = self._current, self.offset
        if offset >= len(data):
            return 0
        self.offset = offset + 1
        return data[offset]

    def pio_read(self, offset, size):
        if size != 1:
            # QEMU accepts only byte reads here; anything else floats.
            trace.guest_error("fw_cfg", f"{size}-byte read at {BASE + offset:#x}")
            return (1 << (8 * size)) - 1
        return self.read_byte()

    def pio_write(self, offset, size, value):
        if size == 2:
            self.select(value)
        elif size == 1:
            trace.guest_error("fw_cfg", f"byte write {value:#04x}: the traditional data port is read-only")
        else:
            trace.guest_error("fw_cfg", f"{size}-byte write at {BASE + offset:#x}")

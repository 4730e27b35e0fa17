"""Disk geometry: the default CHS a disk reports, and CHS translation.

This is the one place the geometry rules live (hw/identity.py holds the
strings; it is shared with SCSI and NVMe, which have no CHS).

Default geometry, as VirtualBox computes it for an ATA disk whose image
stores none (DevATA's attach path): 16 heads, 63 sectors per track and

    cylinders = min(total_sectors // (16 * 63), 16383)

16383 is the cylinder count ATA/ATAPI-6 §8.15.7 prescribes for IDENTIFY
word 1 of any disk above 8.4 GB ("16,383 cylinders, 16 heads, 63 sectors").
A disk smaller than one cylinder (1008 sectors, 504 KiB) still reports one
cylinder, so CHS stays usable; sectors past the end answer IDNF.

Current translation (IDENTIFY words 54-58): INITIALIZE DEVICE PARAMETERS sets
heads and sectors per track; the cylinders follow as

    cylinders = min(total_sectors // (heads * sectors), 65535)

(ATA/ATAPI-6 §8.15.54: "the number of logical cylinders ... shall not exceed
65,535").  A CHS address maps to LBA = (C * heads + H) * sectors + (S - 1).
"""

from dataclasses import dataclass

DEFAULT_HEADS = 16
DEFAULT_SECTORS = 63
MAX_DEFAULT_CYLINDERS = 16383
MAX_CYLINDERS = 65535
MAX_HEADS = 16               # four head bits in the Device register
MAX_SECTORS = 255            # the Sector Number register is 8 bits and counts from 1


@dataclass(frozen=True)
class Chs:
    cylinders: int
    heads: int
    sectors: int

    @property
    def capacity(self):
        return self.cylinders * self.heads * self.sectors

    def to_lba(self, cylinder, head, sector):
        """LBA of a CHS address, or None if the address is outside this geometry."""
        if not (1 <= sector <= self.sectors and head < self.heads and cylinder < self.cylinders):
            return None
        return (cylinder * self.heads + head) * self.sectors + sector - 1

    def from_lba(self, lba):
        """(cylinder, head, sector) of ``lba`` (cylinder may exceed the range
        for an LBA past the geometry; callers only report it)."""
        cylinder, rest = divmod(lba, self.heads * self.sectors)
        head, sector = divmod(rest, self.sectors)
        return cylinder, head, sector + 1


def default_geometry(total_sectors):
    """VirtualBox's default CHS for a disk of ``total_sectors`` 512-byte sectors."""
    cylinders = min(total_sectors // (DEFAULT_HEADS * DEFAULT_SECTORS), MAX_DEFAULT_CYLINDERS)
    return Chs(max(1, cylinders), DEFAULT_HEADS, DEFAULT_SECTORS)


def translation(total_sectors, heads, sectors):
    """The current translation after INITIALIZE DEVICE PARAMETERS, or None if
    ``heads``/``sectors`` are not a geometry the device can present."""
    if not (1 <= heads <= MAX_HEADS and 1 <= sectors <= MAX_SECTORS):
        return None
    cylinders = min(total_sectors // (heads * sectors), MAX_CYLINDERS)
    return Chs(max(1, cylinders), heads, sectors)

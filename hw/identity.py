"""How drivebay's devices introduce themselves: one module for every command set.

IDENTIFY DEVICE, IDENTIFY PACKET DEVICE, SCSI INQUIRY (and its VPD pages) and
NVMe Identify all take their strings from here, so a disk shows the same
model and serial number on every controller, as on VirtualBox.

VirtualBox's ATA serial number is "VB" + two 8-digit hex groups taken from the
image UUID: the first and last 32-bit words of the UUID in VirtualBox's
in-memory layout (RTUUID, whose first field is little-endian), e.g. Linux
shows ``VB5cfdb1e2-c251e503``.  A medium without a UUID (raw files) gets one
derived from its name so the serial stays stable across runs.
"""

import hashlib
import struct
import uuid as uuidlib

DISK_MODEL = "VBOX HARDDISK"
CDROM_MODEL = "VBOX CD-ROM"
VENDOR = "VBOX"                 # SCSI T10 vendor identification (8 bytes, space padded)
FIRMWARE_REVISION = "1.0"
SCSI_REVISION = "1.0"


def medium_uuid(uuid, name=""):
    """The UUID identity is derived from: the image's, or a stable one from its name."""
    if uuid is not None:
        return uuid
    return uuidlib.UUID(bytes=hashlib.sha1(name.encode()).digest()[:16])


def serial_number(uuid, name=""):
    """VirtualBox's "VB%08x-%08x" of RTUUID words 0 and 3."""
    raw = medium_uuid(uuid, name).bytes_le
    first, last = struct.unpack_from("<I", raw, 0)[0], struct.unpack_from("<I", raw, 12)[0]
    return f"VB{first:08x}-{last:08x}"


def ata_string(text, length):
    """An ATA IDENTIFY string field: space padded, bytes swapped in each word
    (ATA8-ACS 3.3.10: the first character is in bits 15:8 of the first word)."""
    padded = text.encode("ascii")[:length].ljust(length, b" ")
    swapped = bytearray(length)
    swapped[0::2], swapped[1::2] = padded[1::2], padded[0::2]
    return bytes(swapped)


def scsi_string(text, length):
    """A SCSI INQUIRY ASCII field: left aligned, space padded (SPC-4 4.4.1)."""
    return text.encode("ascii")[:length].ljust(length, b" ")

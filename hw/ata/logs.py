"""ATA logs read by READ LOG EXT (ACS-3 §9 "Log definitions").

Built here, served by AtaDevice.cmd_read_log_ext:

* 00h, the log directory (ACS-3 §9.2): word 0 is the General Purpose
  Logging version (0001h), word N the number of 512-byte pages of log N.
* 10h, the NCQ Command Error log (ACS-3 §9.13, Table 223 "Queued Error
  log"), one page: byte 0 bit 7 NQ ("the error was not in a queued
  command; NCQ TAG is not valid") and bits 4:0 NCQ TAG; bytes 2-13 the
  Status, Error, LBA, Device and Count outputs of the failed command; byte
  511 the data structure checksum (the two's complement of the sum of bytes
  0..510).

Which logs exist depends on the device: page 10h only where NCQ does.
"""

from drivebay.layout import Layout

PAGE = 512
GPL_VERSION = 0x0001                     # log directory word 0
LOG_DIRECTORY = 0x00
LOG_NCQ_COMMAND_ERROR = 0x10
NQ = 0x80                                # byte 0 bit 7

NCQ_COMMAND_ERROR = Layout("NCQ Command Error log", "<", [
    ("NCQ_TAG", "B"),                    # bit 7 NQ, bits 4:0 tag
    ("reserved1", "B"),
    ("STATUS", "B"),
    ("ERROR", "B"),
    ("LBA_7_0", "B"), ("LBA_15_8", "B"), ("LBA_23_16", "B"),
    ("DEVICE", "B"),
    ("LBA_31_24", "B"), ("LBA_39_32", "B"), ("LBA_47_40", "B"),
    ("reserved11", "B"),
    ("COUNT", "H"),
    ("reserved14", "242s"),
    ("vendor_specific", "255s"),
    ("CHECKSUM", "B"),
], size=PAGE)


def _checksummed(page):
    page[PAGE - 1] = -sum(page[:PAGE - 1]) & 0xFF
    return page


def ncq_command_error_log(tag=0, nq=False, status=0, error=0, lba=0, count=0, device=0):
    """The 512 bytes of log 10h; all zero (but the checksum) before any error."""
    record = NCQ_COMMAND_ERROR.defaults(
        NCQ_TAG=(NQ if nq else tag & 0x1F), STATUS=status, ERROR=error, DEVICE=device,
        LBA_7_0=lba & 0xFF, LBA_15_8=lba >> 8 & 0xFF, LBA_23_16=lba >> 16 & 0xFF,
        LBA_31_24=lba >> 24 & 0xFF, LBA_39_32=lba >> 32 & 0xFF, LBA_47_40=lba >> 40 & 0xFF,
        COUNT=count & 0xFFFF)
    return _checksummed(bytearray(NCQ_COMMAND_ERROR.pack(record)))


def log_directory(device):
    """Log 00h for ``device``: itself and, with NCQ, the NCQ Command Error log."""
    page = bytearray(PAGE)
    page[0:2] = GPL_VERSION.to_bytes(2, "little")
    if device.ncq_supported:
        at = 2 * LOG_NCQ_COMMAND_ERROR
        page[at:at + 2] = (1).to_bytes(2, "little")
    return bytes(page)

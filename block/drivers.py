"""Every block driver, and recognising an image's format by its content.

The registry is this one tuple: explicit and greppable.  Probing reads the
head and the tail of the file (a fixed VHD has only a footer) and asks each
driver for a score from 0 to 100; the highest wins, a tie is reported, and
the file name never matters.
"""

import os

from drivebay.block.driver import ImageFile
from drivebay.block.floppy import FloppyDriver
from drivebay.block.iscsi import IscsiDriver, is_url, mask_url
from drivebay.block.iso import IsoDriver
from drivebay.block.parallels import ParallelsDriver
from drivebay.block.raw import RawDriver
from drivebay.block.vdi import VdiDriver
from drivebay.block.vhd import VhdDriver
from drivebay.block.vmdk import VmdkDriver
from drivebay.errors import FormatError

DRIVERS = (RawDriver, VdiDriver, VhdDriver, ParallelsDriver, IsoDriver, FloppyDriver, VmdkDriver)

PROBE_HEAD = 64 * 1024
PROBE_TAIL = 1024


def driver_for(name):
    if name == IscsiDriver.format_name:
        return IscsiDriver
    for d in DRIVERS:
        if d.format_name == name:
            return d
    raise FormatError(f"unknown image format {name!r} (known: "
                      f"{', '.join(d.format_name for d in DRIVERS)})")


def probe(path):
    """The driver class for the image at ``path`` (an iscsi:// URL is a LUN, never a file)."""
    if is_url(path):
        return IscsiDriver
    f = ImageFile(path)
    try:
        size = f.size()
        head = os.pread(f.fd, min(PROBE_HEAD, size), 0)
        tail_len = min(PROBE_TAIL, size)
        tail = os.pread(f.fd, tail_len, size - tail_len) if tail_len else b""
    finally:
        f.close()
    scores = sorted(((d.probe(head, tail, size), d) for d in DRIVERS),
                    key=lambda s: s[0], reverse=True)
    best_score, best = scores[0]
    ties = [d.format_name for s, d in scores if s == best_score and d is not best]
    if ties and best_score > 1:
        raise FormatError(f"{path}: the content matches several formats equally "
                          f"({best.format_name}, {', '.join(ties)}): give the format explicitly")
    return best


def open_image(path, writable=False, format=None):
    """Open one image (not its parents: see block.chain), or the LUN an
    iscsi:// URL names (``format`` then None, raw or iscsi)."""
    if is_url(path):
        if format not in (None, "raw", IscsiDriver.format_name):
            raise FormatError(f"{mask_url(path)}: an iSCSI LUN is a raw disk, not {format!r}")
        return IscsiDriver.open(path, writable=writable)
    cls = driver_for(format) if format else probe(path)
    return cls.open(path, writable=writable)

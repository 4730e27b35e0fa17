"""``createmedium --variant ESX``: VirtualBox's VMDK for ESX Server.

VirtualBox's ESX image flag makes a preallocated disk whose descriptor says
``createType="vmfs"`` and whose one extent is of type VMFS, in the file
``NAME-flat.vmdk`` beside the descriptor ``NAME.vmdk``: what an ESX host
keeps in its datastore.  The VMDK driver creates the same layout as
monolithicFlat (a FLAT extent); this module makes that image and turns its
descriptor into the vmfs one through the descriptor API of
block/vmdk_descriptor.py (which renders a VMFS line without an offset,
as VMware writes it and QEMU requires).
"""

import os

from drivebay.block import vmdk_descriptor as vd
from drivebay.block.vmdk import VmdkDriver

ESX_CREATE_TYPE = "vmfs"
ESX_EXTENT_TYPE = "VMFS"


def create_esx(path, size, uuid=None):
    """Create the descriptor ``path`` and its flat extent; returns ``path``."""
    path = os.path.abspath(path)
    VmdkDriver.create(path, size, variant="fixed", uuid=uuid)
    folder = os.path.dirname(path)
    try:
        with open(path, "rb") as f:
            desc = vd.parse(f.read(), path)
        desc.create_type = ESX_CREATE_TYPE
        for e in desc.extents:
            e.type = ESX_EXTENT_TYPE
        text = desc.render()
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        for name in [path, path + ".tmp"] + [os.path.join(folder, e.filename)
                                             for e in desc.extents if e.filename]:
            try:
                os.unlink(name)
            except OSError:
                pass
        raise
    return path

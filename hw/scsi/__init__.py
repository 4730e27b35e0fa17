"""The SCSI target shared by every SCSI-speaking transport.

ATAPI (IDE, AHCI), LSI Logic SPI/SAS (MPT), BusLogic, USB mass storage and
virtio-scsi all hand CDBs to the same objects: ``ScsiTarget`` (LUNs, REPORT
LUNS, absent LUNs) and its ``ScsiLun``s: ``ScsiDisk`` (SBC-3), ``ScsiCdrom``
(MMC-6) and ``PassthroughCdrom`` (a host optical drive).  A transport calls
``lun.request(cdb)``, moves ``xfer_length`` bytes in ``direction`` and calls
``request.execute(data_out)`` for a ``ScsiResult`` (status, data-in, sense,
residual).

Modules: ``cdb`` (CDB layout, command table rows), ``sense`` (sense
conditions and formats), ``bus`` (dispatch, unit attention, targets),
``spc`` (common commands, mode pages), ``sbc`` (disk), ``mmc`` (CD/DVD),
``passthrough`` (host drive allow-list).
"""

from drivebay.hw.scsi.bus import (Direction, ScsiLun, ScsiRequest, ScsiResult, ScsiTarget, Status,
                                  decode_lun, encode_lun)
from drivebay.hw.scsi.mmc import MediaEvent, ScsiCdrom
from drivebay.hw.scsi.passthrough import HostDrive, PassthroughCdrom, SimulatedDrive
from drivebay.hw.scsi.sbc import ScsiDisk

__all__ = ["Direction", "Status", "ScsiResult", "ScsiRequest", "ScsiLun", "ScsiTarget",
           "ScsiDisk", "ScsiCdrom", "MediaEvent", "PassthroughCdrom", "HostDrive",
           "SimulatedDrive", "encode_lun", "decode_lun"]

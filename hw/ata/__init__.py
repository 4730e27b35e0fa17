"""The ATA/ATAPI command layer, written once for every ATA transport.

``device.py`` is one ATA device (disk or PACKET CD/DVD drive) as a state
machine; ``commands.py`` the command table that drives dispatch, IDENTIFY's
command-set words and trace names; ``identify.py`` the IDENTIFY data;
``taskfile.py`` the registers and their bits; ``geometry.py`` CHS geometry;
``logs.py`` the logs READ LOG EXT returns (directory, NCQ Command Error);
``transport.py`` the interface a controller implements (IDE in hw/ide/,
AHCI in hw/ahci/).  The CD/DVD command set is hw/scsi's; PACKET only
carries CDBs to it.
"""

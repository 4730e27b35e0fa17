/*
 * CD/DVD drives: the SCSI MMC commands the BIOS sends, whatever carries
 * them (ATAPI on IDE and on AHCI today; SCSI HBAs later).  A driver gives
 * its CD drives a `packet` operation that runs one CDB with data in; the
 * block reads and the capacity are built here once.
 *
 * References: SCSI Block Commands (READ(10), READ CAPACITY(10)) and MMC,
 * whose data blocks are 2048 bytes on a CD-ROM.
 */
#include "bios.h"
#include "runtime.h"
#include "ata.h"                        /* put_be16/32, be32, ATAPI_* sizes */

#define SCSI_REQUEST_SENSE 0x03
#define SCSI_READ_10 0x28
#define SCSI_READ_CAPACITY_10 0x25
#define SENSE_BYTES 18
#define CD_RETRIES 3                    /* a fresh CD reports UNIT ATTENTION first */

/* A command with data in, retried while the drive reports a unit attention
 * (new medium, reset) or is becoming ready.  REQUEST SENSE after a CHECK
 * CONDITION collects (and so clears) the reason. */
static bool cd_command(struct disk *d, const uint8_t *cdb, void *buf, uint32_t bytes)
{
    for (unsigned attempt = 0; attempt < CD_RETRIES; attempt++) {
        if (d->ops->packet(d, cdb, buf, bytes))
            return true;
        uint8_t sense_cdb[ATAPI_CDB_SIZE] = {SCSI_REQUEST_SENSE, 0, 0, 0, SENSE_BYTES};
        uint8_t sense[SENSE_BYTES];
        d->ops->packet(d, sense_cdb, sense, sizeof(sense));
    }
    return false;
}

int cd_rw(struct disk *d, bool write, uint64_t lba, uint32_t count, void *buf)
{
    if (write)
        return DISK_RET_EWRITEPROT;
    uint8_t cdb[ATAPI_CDB_SIZE] = {SCSI_READ_10};
    put_be32(cdb + 2, (uint32_t)lba);
    put_be16(cdb + 7, (uint16_t)count);
    return cd_command(d, cdb, buf, count * ATAPI_SECTOR_SIZE) ? DISK_RET_OK
                                                               : DISK_RET_ENOTFOUND;
}

/* The last LBA + 1, or 0 without a medium. */
uint64_t cd_capacity(struct disk *d)
{
    uint8_t cdb[ATAPI_CDB_SIZE] = {SCSI_READ_CAPACITY_10}, data[8];
    return cd_command(d, cdb, data, sizeof(data)) ? (uint64_t)be32(data) + 1 : 0;
}

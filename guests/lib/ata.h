/*
 * The registers, status bits and commands of the ATA controller on the
 * primary channel, as the guests that drive the disk (disk.c, paging.c)
 * name them (ATA/ATAPI-6, section 7: the command block registers at
 * 0x1F0-0x1F7 and the control block register at 0x3F6).
 */
#ifndef BT86_ATA_H
#define BT86_ATA_H

#define ATA_DATA 0x1F0
#define ATA_ERROR 0x1F1
#define ATA_FEATURES 0x1F1
#define ATA_COUNT 0x1F2
#define ATA_LBA_LOW 0x1F3
#define ATA_LBA_MID 0x1F4
#define ATA_LBA_HIGH 0x1F5
#define ATA_DEVICE 0x1F6
#define ATA_STATUS 0x1F7
#define ATA_COMMAND 0x1F7
#define ATA_CONTROL 0x3F6 /* alternate status when read */

#define ST_BSY 0x80
#define ST_DRDY 0x40
#define ST_DRQ 0x08
#define ST_ERR 0x01
#define CTL_SRST 0x04
#define CTL_NIEN 0x02

#define CMD_READ 0x20
#define CMD_WRITE 0x30
#define CMD_READ_MULTIPLE 0xC4
#define CMD_WRITE_MULTIPLE 0xC5
#define CMD_SET_MULTIPLE 0xC6
#define CMD_RECALIBRATE 0x10
#define CMD_FLUSH 0xE7
#define CMD_IDENTIFY 0xEC

#endif

/*
 * The GDT that start.S loads (and its selectors), shared by C and assembly,
 * and the CR0 bit that switches between real and protected mode.
 *
 * All segments have base 0.  The two 16-bit segments (limit 64 KiB, byte
 * granular) are the stepping stone to real mode: the CPU keeps a segment's
 * hidden limit and size when CR0.PE is cleared, so code that returns to real
 * mode first loads segments that already look like real-mode ones
 * (Intel SDM vol. 3, 9.9.2 "Switching Back to Real-Address Mode").
 */
#ifndef FW_SEGMENTS_H
#define FW_SEGMENTS_H

#define SEL_NULL   0x00
#define SEL_CODE32 0x08   /* flat 4 GiB, 32-bit, execute/read */
#define SEL_DATA32 0x10   /* flat 4 GiB, read/write */
#define SEL_CODE16 0x18   /* base 0, limit 0xFFFF, 16-bit, execute/read */
#define SEL_DATA16 0x20   /* base 0, limit 0xFFFF, read/write */

#define CR0_PE 0x1        /* CR0 bit 0: protection enable */

#endif

/*
 * The disk image of the paging guest: a directory in sector 0, the flat
 * binaries of the user programs in fixed slots, and a zeroed area for the
 * results the kernel writes back. Assembled with the programs' binaries
 * on the assembler's include path (.incbin), then turned into a raw image
 * with objcopy -O binary.
 *
 * Sector 0 (all numbers little-endian):
 *     0   "BT86DIR1"
 *     8   number of programs
 *     12  first sector of the result area
 *     16  sectors in the result area
 *     32  one 32-byte entry per program: a NUL-padded name (16 bytes),
 *         first sector, length in bytes, two reserved words
 * A program that outgrows its slot stops the build (.org cannot move
 * backwards).
 */
#define SECTOR 512
#define SLOT_SECTORS 64 /* 32 KiB per program */
#define FIRST_SLOT 8
#define SLOT(n) (FIRST_SLOT + (n) * SLOT_SECTORS)
#define RESULT_LBA 256
#define RESULT_SECTORS 64
#define IMAGE_SECTORS 512

    .macro ENTRY name, slot, start, end
    .ascii "\name"
    .balign 16, 0
    .long SLOT(\slot)
    .long \end - \start
    .long 0, 0
    .endm

    .data
    .ascii "BT86DIR1"
    .long 3
    .long RESULT_LBA
    .long RESULT_SECTORS
    .long 0, 0, 0
    ENTRY "jit", 0, jit_start, jit_end
    ENTRY "primes", 1, primes_start, primes_end
    ENTRY "wild", 2, wild_start, wild_end

    .org SLOT(0) * SECTOR
jit_start:
    .incbin "jit.bin"
jit_end:
    .org SLOT(1) * SECTOR
primes_start:
    .incbin "primes.bin"
primes_end:
    .org SLOT(2) * SECTOR
wild_start:
    .incbin "wild.bin"
wild_end:
    .org RESULT_LBA * SECTOR
    .org IMAGE_SECTORS * SECTOR - 1
    .byte 0

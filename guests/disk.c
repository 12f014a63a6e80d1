/*
 * disk: an ATA PIO driver for the primary IDE channel's master, run
 * against the disk image the test attaches (bt86 --disk IMG, or QEMU's
 * -drive file=IMG,format=raw,if=ide,index=0,media=disk).
 *
 * mode=check (the default) resets the channel with SRST and reads the
 * reset signature, probes the absent slave, reads the IDENTIFY block with
 * 32-bit accesses, reads sectors with interrupts (LBA28, CHS, a sector
 * count of 0 meaning 256, READ MULTIPLE) and prints an FNV-1a checksum of
 * each, writes sectors (LBA28, CHS, 256 at once, WRITE MULTIPLE) with a
 * pattern the test can recompute, flushes, reads them back, provokes the
 * errors every driver must handle (an unknown command, an address past
 * the end, CHS sector 0), and shows that nIEN holds the interrupt back.
 * Every line is the same under QEMU and bt86: only registers the ATA
 * standard fixes, checksums of data and counts the guest controls.
 *
 * mode=crash writes sectors 1, 2, 3, ... in batches of 8, polled, each
 * sector stamped with its number, issues FLUSH CACHE after every batch
 * and prints "flushed N" once the flush has completed, N being the number
 * of sectors written so far. A test kills the monitor at some point and
 * checks that every sector up to the last N printed is on the disk.
 */
#include "guest.h"
#include "ata.h"

#define VEC_IRQ0 0x20
#define VEC_IRQ8 0x28
#define IRQ_ATA 14

static volatile uint32_t irqs;
/* Page-aligned, so that no buffer shares a page with code: under bt86 a
 * store into a page that holds translated code is emulated (it might be
 * self-modifying code), which is correct but slow. */
static uint16_t sector[256 * 16] __attribute__((aligned(4096)));
static uint16_t identify[256] __attribute__((aligned(4096)));
static uint32_t total_sectors;

static void on_irq14(struct frame *f)
{
    (void)f;
    irqs++;
    pic_eoi(IRQ_ATA);
}

static void insw(void *buf, uint32_t words)
{
    __asm__ volatile("rep insw" : "+D"(buf), "+c"(words) : "d"(ATA_DATA) : "memory");
}

static void insl(void *buf, uint32_t dwords)
{
    __asm__ volatile("rep insl" : "+D"(buf), "+c"(dwords) : "d"(ATA_DATA) : "memory");
}

static void outsw(const void *buf, uint32_t words)
{
    __asm__ volatile("rep outsw" : "+S"(buf), "+c"(words) : "d"(ATA_DATA) : "memory");
}

/* FNV-1a over n bytes, continuing from h (start with 0x811C9DC5). */
static uint32_t fnv(uint32_t h, const void *data, uint32_t n)
{
    const uint8_t *p = data;
    for (uint32_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x01000193u;
    }
    return h;
}
#define FNV_START 0x811C9DC5u

/* The byte the check mode writes at offset j of sector lba. */
static uint8_t pattern(uint32_t lba, uint32_t j) { return (uint8_t)((lba * 7 + j) ^ 0xA5); }

static void fill_pattern(uint32_t lba)
{
    uint8_t *b = (uint8_t *)sector;
    for (uint32_t j = 0; j < 512; j++)
        b[j] = pattern(lba, j);
}

/* Polls the alternate status (which leaves the interrupt pending) until
 * BSY clears; the 400 ns the standard asks for after a command are the
 * first reads. */
static uint8_t wait_not_busy(void)
{
    for (uint32_t i = 0; i < 50000000; i++) {
        uint8_t s = inb(ATA_CONTROL);
        if (!(s & ST_BSY))
            return s;
    }
    printf("disk: the drive stayed busy\n");
    exit(EXIT_FAIL);
}

/* Waits until the drive wants data moved (DRQ) or reports an error. */
static uint8_t wait_drq(void)
{
    for (uint32_t i = 0; i < 50000000; i++) {
        uint8_t s = inb(ATA_CONTROL);
        if (!(s & ST_BSY) && (s & (ST_DRQ | ST_ERR)))
            return s;
    }
    printf("disk: DRQ never came\n");
    exit(EXIT_FAIL);
}

/* Sleeps until the interrupt count moves past `seen`. */
static void wait_irq(uint32_t seen)
{
    while (irqs == seen)
        __asm__ volatile("sti; hlt; cli" ::: "memory");
}

static void select_lba(uint32_t lba, uint8_t count)
{
    outb(ATA_DEVICE, 0xE0 | ((lba >> 24) & 0x0F));
    outb(ATA_COUNT, count);
    outb(ATA_LBA_LOW, lba);
    outb(ATA_LBA_MID, lba >> 8);
    outb(ATA_LBA_HIGH, lba >> 16);
}

static void select_chs(uint32_t c, uint32_t h, uint32_t s, uint8_t count)
{
    outb(ATA_DEVICE, 0xA0 | (h & 0x0F));
    outb(ATA_COUNT, count);
    outb(ATA_LBA_LOW, s);
    outb(ATA_LBA_MID, c);
    outb(ATA_LBA_HIGH, c >> 8);
}

/* Runs a PIO data-in command with interrupts: one interrupt per block of
 * `block` sectors. Returns the FNV of all the data and stores the number
 * of interrupts in *n_irqs. */
static uint32_t read_irq(uint8_t command, uint32_t sectors, uint32_t block, uint32_t *n_irqs)
{
    uint32_t h = FNV_START, start = irqs;
    cli();
    outb(ATA_COMMAND, command);
    for (uint32_t done = 0; done < sectors;) {
        uint32_t n = sectors - done < block ? sectors - done : block;
        wait_irq(irqs);
        uint8_t st = inb(ATA_STATUS);
        if ((st & (ST_DRQ | ST_ERR | ST_BSY)) != ST_DRQ) {
            printf("read: unexpected status 0x%02x after %u sectors\n", st, done);
            exit(EXIT_FAIL);
        }
        insw(sector, 256 * n);
        h = fnv(h, sector, 512 * n);
        done += n;
    }
    *n_irqs = irqs - start;
    return h;
}

/* Runs a PIO data-out command with interrupts, writing pattern() sectors
 * from `lba` on. The first block is asked for without an interrupt; every
 * block written is followed by one. */
static uint32_t write_irq(uint8_t command, uint32_t lba, uint32_t sectors, uint32_t block)
{
    uint32_t start = irqs;
    cli();
    outb(ATA_COMMAND, command);
    wait_drq();
    for (uint32_t done = 0; done < sectors;) {
        uint32_t n = sectors - done < block ? sectors - done : block;
        for (uint32_t i = 0; i < n; i++) {
            fill_pattern(lba + done + i);
            outsw(sector, 256);
        }
        uint32_t seen = irqs;
        wait_irq(seen);
        uint8_t st = inb(ATA_STATUS);
        done += n;
        uint8_t want = done < sectors ? ST_DRQ : 0;
        if ((st & (ST_DRQ | ST_ERR | ST_BSY)) != want) {
            printf("write: unexpected status 0x%02x after %u sectors\n", st, done);
            exit(EXIT_FAIL);
        }
    }
    return irqs - start;
}

/* A non-data command with interrupts; returns the status it ended with. */
static uint8_t nondata_irq(uint8_t command)
{
    cli();
    uint32_t seen = irqs;
    outb(ATA_COMMAND, command);
    wait_irq(seen);
    return inb(ATA_STATUS);
}

static void reset_and_probe(void)
{
    outb(ATA_CONTROL, CTL_SRST | CTL_NIEN);
    pit_wait_ms(1);
    outb(ATA_CONTROL, CTL_NIEN);
    pit_wait_ms(2);
    wait_not_busy();
    /* Select device 0 before looking: after SRST the standard selects it,
     * but QEMU's channel keeps addressing whichever device the firmware
     * selected last. */
    outb(ATA_DEVICE, 0xA0);
    for (int i = 0; i < 4; i++)
        inb(ATA_CONTROL);
    uint8_t st = inb(ATA_CONTROL);
    printf("after SRST: status=0x%02x error=0x%02x count=%u lba=%u/%u/%u device=0x%02x\n", st,
           inb(ATA_ERROR), inb(ATA_COUNT), inb(ATA_LBA_LOW), inb(ATA_LBA_MID), inb(ATA_LBA_HIGH),
           inb(ATA_DEVICE));
    outb(ATA_DEVICE, 0xB0);
    for (int i = 0; i < 4; i++)
        inb(ATA_CONTROL);
    printf("slave: status=0x%02x alternate=0x%02x\n", inb(ATA_STATUS), inb(ATA_CONTROL));
    outb(ATA_DEVICE, 0xA0);
    for (int i = 0; i < 4; i++)
        inb(ATA_CONTROL);
}

static void identify_drive(void)
{
    /* Polled, with nIEN still set: the interrupt stays pending until the
     * status read. */
    outb(ATA_COMMAND, CMD_IDENTIFY);
    uint8_t st = wait_drq();
    inb(ATA_STATUS);
    insl(identify, 128);
    printf("identify: status=0x%02x then 0x%02x\n", st, inb(ATA_STATUS));
    total_sectors = identify[60] | (uint32_t)identify[61] << 16;
    printf("identify: word0=0x%04x C/H/S=%u/%u/%u chs-capacity=%u lba-capacity=%u\n", identify[0], identify[1],
           identify[3], identify[6], identify[57] | (uint32_t)identify[58] << 16, total_sectors);
    printf("identify: word47=0x%04x word59=0x%04x lba=%s current C/H/S=%u/%u/%u\n", identify[47], identify[59],
           identify[49] & (1 << 9) ? "yes" : "no", identify[54], identify[55], identify[56]);
    int model = 0;
    for (int i = 27; i < 47; i++)
        model |= identify[i] != 0x2020 && identify[i] != 0;
    printf("identify: model named=%s flush-cache=%s\n", model ? "yes" : "no", identify[83] & (1 << 12) ? "yes" : "no");
}

static void reads(void)
{
    uint32_t n;
    for (uint32_t lba = 0; lba < 4; lba++) {
        select_lba(lba, 1);
        uint32_t h = read_irq(CMD_READ, 1, 1, &n);
        printf("read lba %u: fnv=%08x irqs=%u\n", lba, h, n);
    }
    select_lba(5, 3);
    uint32_t h = read_irq(CMD_READ, 3, 1, &n);
    printf("read lba 5-7: fnv=%08x irqs=%u status=0x%02x registers: count=%u lba-low=%u\n", h, n, inb(ATA_STATUS),
           inb(ATA_COUNT), inb(ATA_LBA_LOW));

    /* CHS 1/2/3 is LBA (1 * 16 + 2) * 63 + 2 with 16 heads and 63
     * sectors per track. */
    uint32_t heads = identify[3], spt = identify[6];
    uint32_t lba = (1 * heads + 2) * spt + 2;
    select_chs(1, 2, 3, 2);
    uint32_t chs = read_irq(CMD_READ, 2, 1, &n);
    printf("read C/H/S 1/2/3 x2: fnv=%08x irqs=%u next sector=%u head=%u\n", chs, n, inb(ATA_LBA_LOW),
           inb(ATA_DEVICE) & 0x0F);
    select_lba(lba, 2);
    printf("the same as LBA %u: %s\n", lba, read_irq(CMD_READ, 2, 1, &n) == chs ? "yes" : "no");

    select_lba(1000, 0);
    h = read_irq(CMD_READ, 256, 1, &n);
    printf("read 1000 with count 0: fnv=%08x irqs=%u count now=%u\n", h, n, inb(ATA_COUNT));

    outb(ATA_COUNT, 8);
    printf("set multiple 8: status=0x%02x\n", nondata_irq(CMD_SET_MULTIPLE));
    select_lba(2000, 20);
    h = read_irq(CMD_READ_MULTIPLE, 20, 8, &n);
    printf("read multiple 2000 x20: fnv=%08x irqs=%u\n", h, n);
}

static void writes(void)
{
    select_lba(3000, 3);
    printf("write lba 3000 x3: irqs=%u\n", write_irq(CMD_WRITE, 3000, 3, 1));
    uint32_t heads = identify[3], spt = identify[6];
    select_chs(2, 5, 10, 1);
    printf("write C/H/S 2/5/10: irqs=%u\n", write_irq(CMD_WRITE, (2 * heads + 5) * spt + 9, 1, 1));
    outb(ATA_COUNT, 4);
    printf("set multiple 4: status=0x%02x\n", nondata_irq(CMD_SET_MULTIPLE));
    select_lba(3500, 6);
    printf("write multiple 3500 x6: irqs=%u\n", write_irq(CMD_WRITE_MULTIPLE, 3500, 6, 4));
    select_lba(3584, 0);
    printf("write 3584 with count 0: irqs=%u\n", write_irq(CMD_WRITE, 3584, 256, 1));
    printf("flush cache: status=0x%02x\n", nondata_irq(CMD_FLUSH));

    /* Read the first write back and compare with the pattern. */
    uint32_t want = FNV_START, n;
    for (uint32_t s = 3000; s < 3003; s++) {
        fill_pattern(s);
        want = fnv(want, sector, 512);
    }
    select_lba(3000, 3);
    printf("read back 3000 x3: %s\n", read_irq(CMD_READ, 3, 1, &n) == want ? "matches" : "differs");
}

static void errors(void)
{
    uint8_t st = nondata_irq(0xEE);
    printf("unknown command 0xEE: status=0x%02x error=0x%02x\n", st, inb(ATA_ERROR));
    select_lba(total_sectors, 1);
    st = nondata_irq(CMD_READ);
    printf("read past the end: status=0x%02x error=0x%02x\n", st, inb(ATA_ERROR));
    select_chs(0, 0, 0, 1);
    st = nondata_irq(CMD_READ);
    printf("CHS sector 0: status=0x%02x error=0x%02x\n", st, inb(ATA_ERROR));
    st = nondata_irq(CMD_RECALIBRATE);
    printf("recalibrate: status=0x%02x error=0x%02x\n", st, inb(ATA_ERROR));

    /* With nIEN set, a completed command raises no interrupt. */
    outb(ATA_CONTROL, CTL_NIEN);
    uint32_t seen = irqs;
    outb(ATA_COMMAND, CMD_RECALIBRATE);
    wait_not_busy();
    sti();
    pit_wait_ms(2);
    cli();
    printf("nIEN: interrupts while masked=%u status=0x%02x\n", irqs - seen, inb(ATA_STATUS));
    outb(ATA_CONTROL, 0);
}

static void crash_loop(void)
{
    outb(ATA_CONTROL, CTL_NIEN);
    uint32_t last = total_sectors - 1;
    for (uint32_t first = 1; first <= last; first += 8) {
        uint32_t n = last - first + 1 < 8 ? last - first + 1 : 8;
        select_lba(first, n);
        outb(ATA_COMMAND, CMD_WRITE);
        for (uint32_t i = 0; i < n; i++) {
            uint8_t st = wait_drq();
            if (st & ST_ERR) {
                printf("crash: write error 0x%02x at sector %u\n", inb(ATA_ERROR), first + i);
                exit(EXIT_FAIL);
            }
            uint32_t lba = first + i;
            uint8_t *b = (uint8_t *)sector;
            for (uint32_t j = 0; j < 512; j++)
                b[j] = (uint8_t)(lba * 13 + j * 7);
            sector[0] = 0x3842; /* "B8" */
            sector[1] = 0x3654; /* "T6" */
            sector[2] = lba;
            sector[3] = lba >> 16;
            outsw(sector, 256);
        }
        wait_not_busy();
        inb(ATA_STATUS);
        outb(ATA_COMMAND, CMD_FLUSH);
        uint8_t st = wait_not_busy();
        inb(ATA_STATUS);
        if (st & ST_ERR) {
            printf("crash: flush failed\n");
            exit(EXIT_FAIL);
        }
        printf("flushed %u\n", first + n - 1);
    }
    printf("crash: done\n");
}

int kmain(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    char mode[16] = "check";
    if (info->flags & MBI_CMDLINE)
        cmdline_string((const char *)info->cmdline, "mode", mode, sizeof mode);
    pic_remap(VEC_IRQ0, VEC_IRQ8);
    set_handler(VEC_IRQ8 + IRQ_ATA - 8, on_irq14);
    pic_set_mask((uint16_t) ~((1u << 2) | (1u << IRQ_ATA)));
    printf("disk: mode %s\n", mode);
    reset_and_probe();
    identify_drive();
    if (strncmp(mode, "crash", 6) == 0) {
        crash_loop();
        return EXIT_PASS;
    }
    /* Interrupts on from here: nIEN clear. */
    outb(ATA_CONTROL, 0);
    inb(ATA_STATUS);
    reads();
    writes();
    errors();
    printf("disk: done\n");
    return EXIT_PASS;
}

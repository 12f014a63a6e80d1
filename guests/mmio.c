/*
 * mmio: memory-mapped I/O through the instructions a kernel really uses on
 * device registers, against a device that QEMU has too.
 *
 * The device is the "iomem" window of QEMU's pc-testdev (QEMU's
 * hw/misc/pc-testdev.c), present when the machine is started with
 * `-device pc-testdev`: 64 KiB at physical 0xFF000000 that read back what
 * was written, starting as zeroes. Under QEMU its accesses go through
 * QEMU's memory core; under bt86 the host faults on every one of them (the
 * page is not RAM, so nothing is mapped there) and the monitor emulates
 * the one instruction against the machine's MMIO bus. Either way the guest
 * must print the same bytes.
 *
 * Paging stays off, so linear addresses are physical. Every access is
 * written in inline assembly, so the instruction is exactly the one named
 * in the line it prints: mov at 8, 16 and 32 bits, movzx and movsx, the
 * arithmetic and logic instructions with a memory operand (as destination
 * and as source, with the arithmetic flags they leave), xchg, and the
 * string instructions into, out of and within the device.
 *
 * The last section tries the accesses a bus must split: across a 4 KiB
 * boundary, across the end of the device's window (the rest is
 * unassigned: it reads 0 and drops writes), and misaligned within a page.
 * QEMU and bt86 cut them into different pieces (see bt86-machine's
 * mmio.rs), but for a device whose registers are plain storage every cut
 * gives the same bytes.
 *
 * Without the device every read returns 0 (unassigned memory), so the
 * first section doubles as a check that it is really there.
 */
#include "guest.h"

/* The pc-testdev iomem window: its base and its length (IOMEM_LEN). */
#define DEV_BASE 0xFF000000u
#define DEV_LEN 0x10000u

/* The arithmetic flags (CF, PF, AF, ZF, SF, OF): SDM Vol. 1 §3.4.3.1. */
#define ARITH_FLAGS 0x8D5u

static inline uint32_t dev(uint32_t offset) { return DEV_BASE + offset; }

/* ----- Plain moves ---------------------------------------------------- */

static inline void store32(uint32_t addr, uint32_t v)
{
    __asm__ volatile("movl %0, (%1)" ::"r"(v), "r"(addr) : "memory");
}

static inline void store16(uint32_t addr, uint16_t v)
{
    __asm__ volatile("movw %w0, (%1)" ::"r"(v), "r"(addr) : "memory");
}

static inline void store8(uint32_t addr, uint8_t v)
{
    __asm__ volatile("movb %b0, (%1)" ::"q"(v), "r"(addr) : "memory");
}

static inline uint32_t load32(uint32_t addr)
{
    uint32_t v;
    __asm__ volatile("movl (%1), %0" : "=r"(v) : "r"(addr) : "memory");
    return v;
}

/* A 16-bit mov into a register that already holds 0xAAAA5555: only the
 * low half may change (SDM Vol. 2B, MOV). */
static inline uint32_t load16_into(uint32_t addr)
{
    uint32_t v = 0xAAAA5555u;
    __asm__ volatile("movw (%1), %w0" : "+r"(v) : "r"(addr) : "memory");
    return v;
}

/* The same for an 8-bit mov into AL. */
static inline uint32_t load8_into(uint32_t addr)
{
    uint32_t v = 0xAAAA5555u;
    __asm__ volatile("movb (%1), %b0" : "+a"(v) : "r"(addr) : "memory");
    return v;
}

static void moves(void)
{
    printf("[mov]\n");
    printf("fresh: %08x %08x %08x\n", load32(dev(0)), load32(dev(0x800)), load32(dev(DEV_LEN - 4)));

    store32(dev(0x10), 0x11223344u);
    printf("movl 0x11223344 -> +0x10: %08x\n", load32(dev(0x10)));
    printf("  movw +0x10: %08x  movw +0x12: %08x\n", load16_into(dev(0x10)), load16_into(dev(0x12)));
    printf("  movb +0x10..13: %08x %08x %08x %08x\n", load8_into(dev(0x10)), load8_into(dev(0x11)),
           load8_into(dev(0x12)), load8_into(dev(0x13)));

    store16(dev(0x12), 0xBEEF);
    store8(dev(0x10), 0x7F);
    printf("movw 0xbeef -> +0x12, movb 0x7f -> +0x10: %08x\n", load32(dev(0x10)));

    /* Immediate forms. */
    __asm__ volatile("movl $0xCAFEF00D, (%0)" ::"r"(dev(0x20)) : "memory");
    __asm__ volatile("movw $0x1234, (%0)" ::"r"(dev(0x24)) : "memory");
    __asm__ volatile("movb $0x56, (%0)" ::"r"(dev(0x26)) : "memory");
    printf("mov imm -> +0x20: %08x %08x\n", load32(dev(0x20)), load32(dev(0x24)));

    /* The last dword of the window, and the one just past it, which is
     * unassigned: it reads 0 and forgets what was written. */
    store32(dev(DEV_LEN - 4), 0x0BADF00Du);
    store32(dev(DEV_LEN), 0x12345678u);
    printf("last dword: %08x, past the end: %08x\n", load32(dev(DEV_LEN - 4)), load32(dev(DEV_LEN)));
}

/* ----- Zero and sign extension ---------------------------------------- */

static void extensions(void)
{
    printf("[movzx/movsx]\n");
    store32(dev(0x30), 0x80F17F85u);
    static const uint32_t offsets[] = { 0x30, 0x31, 0x32, 0x33 };
    for (unsigned i = 0; i < 4; i++) {
        uint32_t a = dev(offsets[i]);
        uint32_t zb, sb;
        __asm__ volatile("movzbl (%1), %0" : "=r"(zb) : "r"(a) : "memory");
        __asm__ volatile("movsbl (%1), %0" : "=r"(sb) : "r"(a) : "memory");
        printf("byte +0x%x: movzx %08x movsx %08x\n", offsets[i], zb, sb);
    }
    for (unsigned off = 0x30; off <= 0x32; off += 2) {
        uint32_t zw, sw;
        uint16_t sw16 = 0;
        __asm__ volatile("movzwl (%1), %0" : "=r"(zw) : "r"(dev(off)) : "memory");
        __asm__ volatile("movswl (%1), %0" : "=r"(sw) : "r"(dev(off)) : "memory");
        __asm__ volatile("movsbw (%1), %0" : "=r"(sw16) : "r"(dev(off + 1)) : "memory");
        printf("word +0x%x: movzx %08x movsx %08x movsx16 %04x\n", off, zw, sw, sw16);
    }
}

/* ----- Arithmetic and logic with a memory operand ---------------------- */

/* Runs `insn` with %1 = the device address and %2 = the operand, and
 * returns the arithmetic flags it left. */
#define FLAGS_OP(insn, addr, operand, constraint)                                     \
    ({                                                                              \
        uint32_t fl_;                                                               \
        __asm__ volatile(insn "\n\tpushfl\n\tpopl %0"                               \
                         : "=r"(fl_)                                                \
                         : "r"(addr), constraint(operand)                           \
                         : "memory", "cc");                                         \
        fl_ & ARITH_FLAGS;                                                          \
    })

static void arithmetic(void)
{
    printf("[alu]\n");
    uint32_t a = dev(0x40);
    uint32_t fl;

    store32(a, 0x0000FFF0u);
    fl = FLAGS_OP("orl %2, (%1)", a, 0x0F000001u, "r");
    printf("orl   0x0f000001: %08x flags %03x\n", load32(a), fl);
    fl = FLAGS_OP("andl %2, (%1)", a, 0xFF00FF0Fu, "r");
    printf("andl  0xff00ff0f: %08x flags %03x\n", load32(a), fl);
    fl = FLAGS_OP("xorl %2, (%1)", a, 0x0F00FF01u, "r");
    printf("xorl  0x0f00ff01: %08x flags %03x\n", load32(a), fl);
    fl = FLAGS_OP("addl %2, (%1)", a, 0xFFFFFFFFu, "r");
    printf("addl  0xffffffff: %08x flags %03x\n", load32(a), fl);
    fl = FLAGS_OP("subl %2, (%1)", a, 0x7FFFFFFFu, "r");
    printf("subl  0x7fffffff: %08x flags %03x\n", load32(a), fl);
    fl = FLAGS_OP("addw %w2, (%1)", a, 0x8001u, "r");
    printf("addw  0x8001:     %08x flags %03x\n", load32(a), fl);
    fl = FLAGS_OP("subb %b2, (%1)", a, 0x02u, "q");
    printf("subb  0x02:       %08x flags %03x\n", load32(a), fl);
    fl = FLAGS_OP("xorb %b2, 1(%1)", a, 0xFFu, "q");
    printf("xorb  0xff at +1: %08x flags %03x\n", load32(a), fl);
    fl = FLAGS_OP("orw %2, 2(%1)", a, 0x4000u, "i");
    printf("orw   imm 0x4000: %08x flags %03x\n", load32(a), fl);
    fl = FLAGS_OP("addl %2, (%1)", a, 0x10u, "i");
    printf("addl  imm 0x10:   %08x flags %03x\n", load32(a), fl);

    /* Compare and test leave memory alone and set only flags. */
    store32(a, 0x00000080u);
    static const uint32_t operands[] = { 0x80, 0x81, 0x7F, 0x80000000u };
    for (unsigned i = 0; i < 4; i++) {
        uint32_t c = FLAGS_OP("cmpl %2, (%1)", a, operands[i], "r");
        uint32_t t = FLAGS_OP("testl %2, (%1)", a, operands[i], "r");
        printf("cmpl/testl 0x%08x: flags %03x %03x\n", operands[i], c, t);
    }
    fl = FLAGS_OP("cmpb %2, (%1)", a, 0x80u, "i");
    printf("cmpb  imm 0x80: flags %03x\n", fl);
    fl = FLAGS_OP("testb %2, (%1)", a, 0x80u, "i");
    printf("testb imm 0x80: flags %03x\n", fl);
    printf("after cmp/test: %08x\n", load32(a));

    /* Memory as the source operand: the register changes, not the device. */
    uint32_t r = 5, f2;
    __asm__ volatile("addl (%2), %0\n\tpushfl\n\tpopl %1" : "+r"(r), "=r"(f2) : "r"(a) : "memory", "cc");
    printf("addl (mem), reg: %08x flags %03x\n", r, f2 & ARITH_FLAGS);
    r = 0x100;
    __asm__ volatile("cmpw (%2), %w0\n\tpushfl\n\tpopl %1" : "+r"(r), "=r"(f2) : "r"(a) : "memory", "cc");
    printf("cmpw reg, (mem): flags %03x\n", f2 & ARITH_FLAGS);
    r = 0xF0F0F0F0u;
    __asm__ volatile("andl (%2), %0\n\tpushfl\n\tpopl %1" : "+r"(r), "=r"(f2) : "r"(a) : "memory", "cc");
    printf("andl (mem), reg: %08x flags %03x\n", r, f2 & ARITH_FLAGS);
}

/* ----- Exchange --------------------------------------------------------- */

static void exchange(void)
{
    printf("[xchg]\n");
    uint32_t a = dev(0x50);
    store32(a, 0xA1B2C3D4u);
    uint32_t v = 0x01020304u;
    __asm__ volatile("xchgl %0, (%1)" : "+r"(v) : "r"(a) : "memory");
    printf("xchgl: reg %08x mem %08x\n", v, load32(a));
    uint16_t w = 0xEEFF;
    __asm__ volatile("xchgw %0, 2(%1)" : "+r"(w) : "r"(a) : "memory");
    printf("xchgw: reg %04x mem %08x\n", w, load32(a));
    uint8_t b = 0x99;
    __asm__ volatile("xchgb %0, (%1)" : "+q"(b) : "r"(a) : "memory");
    printf("xchgb: reg %02x mem %08x\n", b, load32(a));
}

/* ----- String instructions ---------------------------------------------- */

static uint32_t ram_buf[64];

/* FNV-1a over `n` bytes read one at a time through movzx from `addr`,
 * which may be RAM or the device. */
static uint32_t checksum(uint32_t addr, uint32_t n)
{
    uint32_t h = 2166136261u;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t b;
        __asm__ volatile("movzbl (%1), %0" : "=r"(b) : "r"(addr + i) : "memory");
        h = (h ^ b) * 16777619u;
    }
    return h;
}

static void strings(void)
{
    printf("[string]\n");
    uint32_t d = dev(0x100);

    /* rep stosl and rep stosb into the device. */
    uint32_t edi = d, ecx = 16;
    __asm__ volatile("cld\n\trep stosl" : "+D"(edi), "+c"(ecx) : "a"(0x5A5A0000u) : "memory");
    printf("rep stosl x16: edi +0x%x ecx %u, %08x %08x sum %08x\n", edi - DEV_BASE, ecx, load32(d),
           load32(d + 60), checksum(d, 64));
    edi = d + 3;
    ecx = 7;
    __asm__ volatile("cld\n\trep stosb" : "+D"(edi), "+c"(ecx) : "a"(0xC3u) : "memory");
    printf("rep stosb x7 at +3: %08x %08x %08x sum %08x\n", load32(d), load32(d + 4), load32(d + 8),
           checksum(d, 64));

    /* rep movsl from RAM into the device. */
    for (unsigned i = 0; i < 64; i++)
        ram_buf[i] = 0x01010101u * i ^ 0x80402010u;
    uint32_t esi = (uint32_t)ram_buf;
    edi = dev(0x200);
    ecx = 64;
    __asm__ volatile("cld\n\trep movsl" : "+S"(esi), "+D"(edi), "+c"(ecx)::"memory");
    printf("rep movsl RAM->dev x64: ecx %u, dev %08x %08x sum %08x, RAM sum %08x\n", ecx, load32(dev(0x200)),
           load32(dev(0x2FC)), checksum(dev(0x200), 256), checksum((uint32_t)ram_buf, 256));

    /* rep movsb from the device back into RAM, an odd count. */
    for (unsigned i = 0; i < 64; i++)
        ram_buf[i] = 0;
    esi = dev(0x201);
    edi = (uint32_t)ram_buf;
    ecx = 37;
    __asm__ volatile("cld\n\trep movsb" : "+S"(esi), "+D"(edi), "+c"(ecx)::"memory");
    printf("rep movsb dev->RAM x37: esi +0x%x, RAM %08x %08x sum %08x\n", esi - DEV_BASE, ram_buf[0],
           ram_buf[9], checksum((uint32_t)ram_buf, 40));

    /* rep movsw within the device, and backwards (DF = 1) with movsl. */
    esi = dev(0x200);
    edi = dev(0x400);
    ecx = 20;
    __asm__ volatile("cld\n\trep movsw" : "+S"(esi), "+D"(edi), "+c"(ecx)::"memory");
    printf("rep movsw dev->dev x20: sum %08x\n", checksum(dev(0x400), 40));
    esi = dev(0x2FC);
    edi = dev(0x5FC);
    ecx = 8;
    __asm__ volatile("std\n\trep movsl\n\tcld" : "+S"(esi), "+D"(edi), "+c"(ecx)::"memory", "cc");
    printf("std; rep movsl dev->dev x8: edi +0x%x, %08x %08x sum %08x\n", edi - DEV_BASE, load32(dev(0x5FC)),
           load32(dev(0x5E0)), checksum(dev(0x5E0), 32));

    /* repe cmpsl: RAM against the device, stopping at the first difference. */
    for (unsigned i = 0; i < 8; i++)
        ram_buf[i] = load32(dev(0x200 + 4 * i));
    ram_buf[5] ^= 0x100;
    esi = (uint32_t)ram_buf;
    edi = dev(0x200);
    ecx = 8;
    uint32_t fl;
    __asm__ volatile("cld\n\trepe cmpsl\n\tpushfl\n\tpopl %3"
                     : "+S"(esi), "+D"(edi), "+c"(ecx), "=r"(fl)::"memory", "cc");
    printf("repe cmpsl: stopped with ecx %u at dev +0x%x, flags %03x\n", ecx, edi - DEV_BASE, fl & ARITH_FLAGS);

    /* lodsl out of the device. */
    esi = dev(0x200);
    uint32_t eax;
    __asm__ volatile("cld\n\tlodsl" : "+S"(esi), "=a"(eax)::"memory");
    printf("lodsl: %08x esi +0x%x\n", eax, esi - DEV_BASE);
}

/* ----- The bus's rules for awkward accesses ---------------------------- */

static void awkward(void)
{
    printf("[split]\n");
    /* A dword across the 4 KiB boundary at +0x1000: two aligned halves,
     * each an ordinary access, so it behaves like memory. */
    store32(dev(0xFFC), 0x11111111u);
    store32(dev(0x1000), 0x22222222u);
    store32(dev(0xFFE), 0xA0B0C0D0u);
    printf("dword across a page: %08x, halves %08x %08x\n", load32(dev(0xFFE)), load32(dev(0xFFC)),
           load32(dev(0x1000)));
    store32(dev(0x1FFC), 0x33333333u);
    store32(dev(0x2000), 0x44444444u);
    store32(dev(0x1FFF), 0x01020304u);
    printf("dword at +0x1fff: %08x, around it %08x %08x\n", load32(dev(0x1FFF)), load32(dev(0x1FFC)),
           load32(dev(0x2000)));

    /* A dword across the end of the window: the first half is device, the
     * second unassigned. */
    store32(dev(DEV_LEN - 4), 0);
    store32(dev(DEV_LEN - 2), 0xFEEDFACEu);
    printf("dword across the end: %08x, last dword %08x\n", load32(dev(DEV_LEN - 2)), load32(dev(DEV_LEN - 4)));

    /* Misaligned accesses within a page: plain storage reads back the
     * bytes written, whatever the pieces. */
    printf("[misaligned]\n");
    store32(dev(0x60), 0x44332211u);
    store32(dev(0x64), 0x88776655u);
    printf("movl +0x61: %08x  movl +0x62: %08x  movw +0x61: %08x\n", load32(dev(0x61)), load32(dev(0x62)),
           load16_into(dev(0x61)));
    store32(dev(0x61), 0xFFFFFFFFu);
    store16(dev(0x65), 0xFFFF);
    printf("after misaligned writes: %08x %08x\n", load32(dev(0x60)), load32(dev(0x64)));
}

int kmain(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    printf("mmio: pc-testdev iomem at 0x%08x, %u bytes\n", DEV_BASE, DEV_LEN);
    moves();
    extensions();
    arithmetic();
    exchange();
    strings();
    awkward();
    printf("mmio: done\n");
    return EXIT_PASS;
}

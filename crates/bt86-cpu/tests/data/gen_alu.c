/*
 * Generator for the ALU reference data used by tests/alu.rs.
 *
 * Every case is computed by executing the real instruction on the host
 * processor with GCC inline assembly. The host runs in 64-bit mode, but the
 * 8-, 16- and 32-bit forms of these instructions have exactly the flag
 * semantics they have in 32-bit protected mode (Intel SDM Vol. 1 §3.4.3 and
 * the instruction pages in Vol. 2), so the data is valid for a 32-bit guest.
 * Flags the SDM calls "undefined" are recorded as this processor produced
 * them; tests/alu.rs says which of them it compares.
 *
 * Regenerate from the crate directory (crates/bt86-cpu) with:
 *
 *     cc -O1 -o gen_alu tests/data/gen_alu.c
 *     ./gen_alu alu    > tests/data/alu.txt
 *     ./gen_alu shift  > tests/data/shift.txt
 *     ./gen_alu muldiv > tests/data/muldiv.txt
 *     rm gen_alu
 *
 * It needs an x86-64 host and GCC or Clang. Review the diff before
 * committing: on a processor of another vendor the undefined flags may
 * differ, and then the Rust side must follow (see src/alu.rs).
 *
 * The inputs come from a fixed table of edge values plus a fixed-seed
 * pseudo-random generator, so the output is the same on every run on the
 * same kind of processor. Line format (all numbers hexadecimal):
 *
 *     alu:    OP SIZE A B FLAGS_IN -> RESULT FLAGS_OUT
 *             (for bt/bts/btr/btc, B is the bit offset register)
 *     shift:  OP SIZE A COUNT FLAGS_IN -> RESULT FLAGS_OUT
 *     muldiv: mul/imul SIZE A B FLAGS_IN -> LOW HIGH FLAGS_OUT
 *             imul2 SIZE A B FLAGS_IN -> RESULT FLAGS_OUT
 *             div/idiv SIZE DIVIDEND DIVISOR FLAGS_IN -> QUOTIENT REMAINDER FLAGS_OUT
 *
 * SIZE is the operand size in bits. For mul/imul, LOW and HIGH are AL/AH,
 * AX/DX or EAX/EDX. For div/idiv, DIVIDEND is AX, DX:AX or EDX:EAX as one
 * number; dividing cases that would raise #DE are not generated (the Rust
 * tests cover those).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* CF, PF, AF, ZF, SF, OF: the status flags (Intel SDM Vol. 1 §3.4.3.1). */
#define STATUS 0x8D5u

static uint64_t rng_state = 0x0123456789ABCDEFull;

/* xorshift64: small, deterministic and good enough to spread inputs. */
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uint32_t mask_of(int size)
{
    return size == 32 ? 0xFFFFFFFFu : (1u << size) - 1;
}

/*
 * Runs one instruction with the given flags loaded and returns the flags it
 * left. The stack pointer is moved below the red zone first, because pushf
 * writes below RSP where the compiler may keep locals.
 */
#define RUN2(insn, a_constraint, res, src, fin, fout)                          \
    __asm__ volatile("lea -128(%%rsp), %%rsp\n\t"                              \
                     "push %[f]\n\t"                                           \
                     "popfq\n\t" insn "\n\t"                                   \
                     "pushfq\n\t"                                              \
                     "pop %[f]\n\t"                                            \
                     "lea 128(%%rsp), %%rsp"                                   \
                     : [a] "+" a_constraint(res), [f] "+r"(fout)               \
                     : [b] "q"(src)                                            \
                     : "cc", "memory");                                        \
    (void)fin

/* Binary and unary ALU operations: r = a OP b. */
#define ALU_FN(name, insn8, insn16, insn32)                                    \
    static uint32_t name(int size, uint32_t a, uint32_t b, uint64_t fin,       \
                         uint64_t *fout)                                       \
    {                                                                          \
        uint64_t f = fin;                                                      \
        if (size == 8) {                                                       \
            uint8_t r = a, s = b;                                              \
            RUN2(insn8, "q", r, s, fin, f);                                    \
            *fout = f;                                                         \
            return r;                                                          \
        } else if (size == 16) {                                               \
            uint16_t r = a, s = b;                                             \
            RUN2(insn16, "r", r, s, fin, f);                                   \
            *fout = f;                                                         \
            return r;                                                          \
        } else {                                                               \
            uint32_t r = a, s = b;                                             \
            RUN2(insn32, "r", r, s, fin, f);                                   \
            *fout = f;                                                         \
            return r;                                                          \
        }                                                                      \
    }

ALU_FN(op_add, "addb %b[b], %b[a]", "addw %w[b], %w[a]", "addl %k[b], %k[a]")
ALU_FN(op_adc, "adcb %b[b], %b[a]", "adcw %w[b], %w[a]", "adcl %k[b], %k[a]")
ALU_FN(op_sub, "subb %b[b], %b[a]", "subw %w[b], %w[a]", "subl %k[b], %k[a]")
ALU_FN(op_sbb, "sbbb %b[b], %b[a]", "sbbw %w[b], %w[a]", "sbbl %k[b], %k[a]")
ALU_FN(op_and, "andb %b[b], %b[a]", "andw %w[b], %w[a]", "andl %k[b], %k[a]")
ALU_FN(op_or, "orb %b[b], %b[a]", "orw %w[b], %w[a]", "orl %k[b], %k[a]")
ALU_FN(op_xor, "xorb %b[b], %b[a]", "xorw %w[b], %w[a]", "xorl %k[b], %k[a]")
ALU_FN(op_inc, "incb %b[a]", "incw %w[a]", "incl %k[a]")
ALU_FN(op_dec, "decb %b[a]", "decw %w[a]", "decl %k[a]")
ALU_FN(op_neg, "negb %b[a]", "negw %w[a]", "negl %k[a]")
ALU_FN(op_not, "notb %b[a]", "notw %w[a]", "notl %k[a]")

/*
 * Bit tests with a register bit offset: r = a with bit (b mod size) tested
 * and then left, set, cleared or flipped. There is no 8-bit form.
 */
#define BT_FN(name, insn16, insn32)                                            \
    static uint32_t name(int size, uint32_t a, uint32_t b, uint64_t fin,       \
                         uint64_t *fout)                                       \
    {                                                                          \
        uint64_t f = fin;                                                      \
        if (size == 16) {                                                      \
            uint16_t r = a, s = b;                                             \
            RUN2(insn16, "r", r, s, fin, f);                                   \
            *fout = f;                                                         \
            return r;                                                          \
        } else {                                                               \
            uint32_t r = a, s = b;                                             \
            RUN2(insn32, "r", r, s, fin, f);                                   \
            *fout = f;                                                         \
            return r;                                                          \
        }                                                                      \
    }

BT_FN(op_bt, "btw %w[b], %w[a]", "btl %k[b], %k[a]")
BT_FN(op_bts, "btsw %w[b], %w[a]", "btsl %k[b], %k[a]")
BT_FN(op_btr, "btrw %w[b], %w[a]", "btrl %k[b], %k[a]")
BT_FN(op_btc, "btcw %w[b], %w[a]", "btcl %k[b], %k[a]")

/* Shifts and rotates by CL: r = a OP cl. */
#define SHIFT_FN(name, mn)                                                     \
    static uint32_t name(int size, uint32_t a, uint32_t count, uint64_t fin,   \
                         uint64_t *fout)                                       \
    {                                                                          \
        uint64_t f = fin;                                                      \
        uint8_t c = count;                                                     \
        if (size == 8) {                                                       \
            uint8_t r = a;                                                     \
            __asm__ volatile("lea -128(%%rsp), %%rsp\n\tpush %[f]\n\tpopfq\n\t" \
                             mn "b %%cl, %b[a]\n\t"                            \
                             "pushfq\n\tpop %[f]\n\tlea 128(%%rsp), %%rsp"     \
                             : [a] "+q"(r), [f] "+r"(f)                        \
                             : "c"(c)                                          \
                             : "cc", "memory");                                \
            *fout = f;                                                         \
            return r;                                                          \
        } else if (size == 16) {                                               \
            uint16_t r = a;                                                    \
            __asm__ volatile("lea -128(%%rsp), %%rsp\n\tpush %[f]\n\tpopfq\n\t" \
                             mn "w %%cl, %w[a]\n\t"                            \
                             "pushfq\n\tpop %[f]\n\tlea 128(%%rsp), %%rsp"     \
                             : [a] "+r"(r), [f] "+r"(f)                        \
                             : "c"(c)                                          \
                             : "cc", "memory");                                \
            *fout = f;                                                         \
            return r;                                                          \
        } else {                                                               \
            uint32_t r = a;                                                    \
            __asm__ volatile("lea -128(%%rsp), %%rsp\n\tpush %[f]\n\tpopfq\n\t" \
                             mn "l %%cl, %k[a]\n\t"                            \
                             "pushfq\n\tpop %[f]\n\tlea 128(%%rsp), %%rsp"     \
                             : [a] "+r"(r), [f] "+r"(f)                        \
                             : "c"(c)                                          \
                             : "cc", "memory");                                \
            *fout = f;                                                         \
            return r;                                                          \
        }                                                                      \
    }

SHIFT_FN(op_shl, "shl")
SHIFT_FN(op_shr, "shr")
SHIFT_FN(op_sar, "sar")
SHIFT_FN(op_rol, "rol")
SHIFT_FN(op_ror, "ror")
SHIFT_FN(op_rcl, "rcl")
SHIFT_FN(op_rcr, "rcr")

/*
 * One-operand mul/imul: the accumulator times b. Returns the low half and
 * stores the high half (AH, DX or EDX).
 */
#define MUL_FN(name, mn)                                                       \
    static uint32_t name(int size, uint32_t a, uint32_t b, uint64_t fin,       \
                         uint32_t *hi, uint64_t *fout)                         \
    {                                                                          \
        uint64_t f = fin;                                                      \
        uint32_t eax = a, edx = 0;                                             \
        if (size == 8) {                                                       \
            uint8_t s = b;                                                     \
            __asm__ volatile("lea -128(%%rsp), %%rsp\n\tpush %[f]\n\tpopfq\n\t" \
                             mn "b %[s]\n\t"                                   \
                             "pushfq\n\tpop %[f]\n\tlea 128(%%rsp), %%rsp"     \
                             : "+a"(eax), "+d"(edx), [f] "+r"(f)               \
                             : [s] "q"(s)                                      \
                             : "cc", "memory");                                \
            *hi = (eax >> 8) & 0xFF;                                           \
            *fout = f;                                                         \
            return eax & 0xFF;                                                 \
        } else if (size == 16) {                                               \
            uint16_t s = b;                                                    \
            __asm__ volatile("lea -128(%%rsp), %%rsp\n\tpush %[f]\n\tpopfq\n\t" \
                             mn "w %[s]\n\t"                                   \
                             "pushfq\n\tpop %[f]\n\tlea 128(%%rsp), %%rsp"     \
                             : "+a"(eax), "+d"(edx), [f] "+r"(f)               \
                             : [s] "r"(s)                                      \
                             : "cc", "memory");                                \
            *hi = edx & 0xFFFF;                                                \
            *fout = f;                                                         \
            return eax & 0xFFFF;                                               \
        } else {                                                               \
            __asm__ volatile("lea -128(%%rsp), %%rsp\n\tpush %[f]\n\tpopfq\n\t" \
                             mn "l %[s]\n\t"                                   \
                             "pushfq\n\tpop %[f]\n\tlea 128(%%rsp), %%rsp"     \
                             : "+a"(eax), "+d"(edx), [f] "+r"(f)               \
                             : [s] "r"(b)                                      \
                             : "cc", "memory");                                \
            *hi = edx;                                                         \
            *fout = f;                                                         \
            return eax;                                                        \
        }                                                                      \
    }

MUL_FN(op_mul, "mul")
MUL_FN(op_imul, "imul")

/* Two-operand imul r, r/m (16 and 32 bits only; there is no 8-bit form). */
static uint32_t op_imul2(int size, uint32_t a, uint32_t b, uint64_t fin, uint64_t *fout)
{
    uint64_t f = fin;
    if (size == 16) {
        uint16_t r = a, s = b;
        RUN2("imulw %w[b], %w[a]", "r", r, s, fin, f);
        *fout = f;
        return r;
    } else {
        uint32_t r = a, s = b;
        RUN2("imull %k[b], %k[a]", "r", r, s, fin, f);
        *fout = f;
        return r;
    }
}

/* div/idiv: the double-width dividend by b. Returns the quotient. */
#define DIV_FN(name, mn)                                                       \
    static uint32_t name(int size, uint64_t n, uint32_t b, uint64_t fin,       \
                         uint32_t *rem, uint64_t *fout)                        \
    {                                                                          \
        uint64_t f = fin;                                                      \
        uint32_t eax, edx;                                                     \
        if (size == 8) {                                                       \
            uint8_t s = b;                                                     \
            eax = n & 0xFFFF;                                                  \
            edx = 0;                                                           \
            __asm__ volatile("lea -128(%%rsp), %%rsp\n\tpush %[f]\n\tpopfq\n\t" \
                             mn "b %[s]\n\t"                                   \
                             "pushfq\n\tpop %[f]\n\tlea 128(%%rsp), %%rsp"     \
                             : "+a"(eax), "+d"(edx), [f] "+r"(f)               \
                             : [s] "q"(s)                                      \
                             : "cc", "memory");                                \
            *rem = (eax >> 8) & 0xFF;                                          \
            *fout = f;                                                         \
            return eax & 0xFF;                                                 \
        } else if (size == 16) {                                               \
            uint16_t s = b;                                                    \
            eax = n & 0xFFFF;                                                  \
            edx = (n >> 16) & 0xFFFF;                                          \
            __asm__ volatile("lea -128(%%rsp), %%rsp\n\tpush %[f]\n\tpopfq\n\t" \
                             mn "w %[s]\n\t"                                   \
                             "pushfq\n\tpop %[f]\n\tlea 128(%%rsp), %%rsp"     \
                             : "+a"(eax), "+d"(edx), [f] "+r"(f)               \
                             : [s] "r"(s)                                      \
                             : "cc", "memory");                                \
            *rem = edx & 0xFFFF;                                               \
            *fout = f;                                                         \
            return eax & 0xFFFF;                                               \
        } else {                                                               \
            eax = (uint32_t)n;                                                 \
            edx = (uint32_t)(n >> 32);                                         \
            __asm__ volatile("lea -128(%%rsp), %%rsp\n\tpush %[f]\n\tpopfq\n\t" \
                             mn "l %[s]\n\t"                                   \
                             "pushfq\n\tpop %[f]\n\tlea 128(%%rsp), %%rsp"     \
                             : "+a"(eax), "+d"(edx), [f] "+r"(f)               \
                             : [s] "r"(b)                                      \
                             : "cc", "memory");                                \
            *rem = edx;                                                        \
            *fout = f;                                                         \
            return eax;                                                        \
        }                                                                      \
    }

DIV_FN(op_div, "div")
DIV_FN(op_idiv, "idiv")

/* Edge values: zero, one, the sign boundaries, all-ones, nibble carries. */
static const uint32_t EDGES[] = {
    0x00000000, 0x00000001, 0x0000000F, 0x00000010, 0x0000007F, 0x00000080,
    0x000000FF, 0x00007FFF, 0x00008000, 0x0000FFFF, 0x7FFFFFFF, 0x80000000,
    0xFFFFFFFF, 0x00000055,
};
#define NEDGES (sizeof EDGES / sizeof EDGES[0])

static const int SIZES[] = {8, 16, 32};

/* Whether EDGES[i], cut to the operand size, already appeared earlier. */
static int repeated_edge(size_t i, uint32_t m)
{
    for (size_t k = 0; k < i; k++)
        if ((EDGES[k] & m) == (EDGES[i] & m))
            return 1;
    return 0;
}

/* A random mix of status flags, with the other bits of EFLAGS clear. */
static uint64_t rnd_flags(void)
{
    return rnd() & STATUS;
}

static void out_alu(const char *op, int size, uint32_t a, uint32_t b, uint64_t fin,
                    uint32_t r, uint64_t fout)
{
    printf("%s %d %x %x %x -> %x %x\n", op, size, a, b, (unsigned)(fin & STATUS), r,
           (unsigned)(fout & STATUS));
}

typedef uint32_t (*alu_fn)(int, uint32_t, uint32_t, uint64_t, uint64_t *);

static void gen_alu(void)
{
    static const struct {
        const char *name;
        alu_fn fn;
        int unary;
    } ops[] = {
        {"add", op_add, 0}, {"adc", op_adc, 0}, {"sub", op_sub, 0},
        {"sbb", op_sbb, 0}, {"and", op_and, 0}, {"or", op_or, 0},
        {"xor", op_xor, 0}, {"inc", op_inc, 1}, {"dec", op_dec, 1},
        {"neg", op_neg, 1}, {"not", op_not, 1},
        {"bt", op_bt, 0},   {"bts", op_bts, 0}, {"btr", op_btr, 0},
        {"btc", op_btc, 0},
    };
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
        for (int s = 0; s < 3; s++) {
            int size = SIZES[s];
            uint32_t m = mask_of(size);
            if (size == 8 && ops[o].name[0] == 'b')
                continue;
            for (size_t i = 0; i < NEDGES; i++) {
                uint32_t a = EDGES[i] & m;
                if (repeated_edge(i, m))
                    continue;
                if (ops[o].unary) {
                    /* Both carry-in values: inc and dec must preserve CF. */
                    for (uint64_t fin = 0; fin <= 1; fin++) {
                        uint64_t fl = fin ? STATUS : 0, fout;
                        uint32_t r = ops[o].fn(size, a, 0, fl, &fout);
                        out_alu(ops[o].name, size, a, 0, fl, r, fout);
                    }
                    continue;
                }
                for (size_t j = 0; j < NEDGES; j++) {
                    uint32_t b = EDGES[j] & m;
                    if (repeated_edge(j, m))
                        continue;
                    uint64_t fl = (i + j) % 2 ? STATUS : 0, fout;
                    uint32_t r = ops[o].fn(size, a, b, fl, &fout);
                    out_alu(ops[o].name, size, a, b, fl, r, fout);
                }
            }
            for (int k = 0; k < 40; k++) {
                uint32_t a = rnd() & m, b = ops[o].unary ? 0 : rnd() & m;
                uint64_t fl = rnd_flags(), fout;
                uint32_t r = ops[o].fn(size, a, b, fl, &fout);
                out_alu(ops[o].name, size, a, b, fl, r, fout);
            }
        }
    }
}

static void gen_shift(void)
{
    static const struct {
        const char *name;
        alu_fn fn;
    } ops[] = {
        {"shl", op_shl}, {"shr", op_shr}, {"sar", op_sar}, {"rol", op_rol},
        {"ror", op_ror}, {"rcl", op_rcl}, {"rcr", op_rcr},
    };
    /* Counts around every interesting boundary, including ones the
       processor masks to five bits (SDM Vol. 2B "SAL/SAR/SHL/SHR"). */
    static const uint32_t counts[] = {0,  1,  2,  3,  7,  8,  9,  15, 16,
                                      17, 18, 31, 32, 33, 63, 64, 0xFF};
    static const uint32_t values[] = {0x00000000, 0x00000001, 0x00000080, 0x000000C1,
                                      0x00008001, 0x80000000, 0xC0000001, 0xFFFFFFFF,
                                      0x12345678, 0x6DB6DB6D};
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
        for (int s = 0; s < 3; s++) {
            int size = SIZES[s];
            uint32_t m = mask_of(size);
            for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
                for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
                    uint32_t a = values[i] & m;
                    uint64_t fl = rnd_flags(), fout;
                    uint32_t r = ops[o].fn(size, a, counts[c], fl, &fout);
                    out_alu(ops[o].name, size, a, counts[c], fl, r, fout);
                }
            }
            for (int k = 0; k < 40; k++) {
                uint32_t a = rnd() & m, count = rnd() & 0x3F;
                uint64_t fl = rnd_flags(), fout;
                uint32_t r = ops[o].fn(size, a, count, fl, &fout);
                out_alu(ops[o].name, size, a, count, fl, r, fout);
            }
        }
    }
}

static void one_mul(const char *name, int imul, int size, uint32_t a, uint32_t b)
{
    uint64_t fl = rnd_flags(), fout;
    uint32_t hi;
    uint32_t lo = imul ? op_imul(size, a, b, fl, &hi, &fout) : op_mul(size, a, b, fl, &hi, &fout);
    printf("%s %d %x %x %x -> %x %x %x\n", name, size, a, b, (unsigned)fl, lo, hi,
           (unsigned)(fout & STATUS));
    if (imul && size > 8) {
        uint32_t r = op_imul2(size, a, b, fl, &fout);
        out_alu("imul2", size, a, b, fl, r, fout);
    }
}

/* Whether a dividend/divisor pair fits without #DE (SDM Vol. 2A "DIV", "IDIV"). */
static int div_fits(int is_signed, int size, uint64_t n, uint32_t d)
{
    uint32_t m = mask_of(size);
    if (d == 0)
        return 0;
    if (!is_signed) {
        return n / d <= m;
    }
    int64_t sn = size == 32 ? (int64_t)n : size == 16 ? (int64_t)(int32_t)n : (int64_t)(int16_t)n;
    int64_t sd = size == 32 ? (int32_t)d : size == 16 ? (int16_t)d : (int8_t)d;
    if (size == 32 && sn == INT64_MIN && sd == -1)
        return 0;
    int64_t q = sn / sd;
    int64_t lim = (int64_t)1 << (size - 1);
    return q >= -lim && q < lim;
}

static void one_div(const char *name, int is_signed, int size, uint64_t n, uint32_t d)
{
    if (!div_fits(is_signed, size, n, d))
        return;
    uint64_t fl = rnd_flags(), fout;
    uint32_t rem;
    uint32_t q = is_signed ? op_idiv(size, n, d, fl, &rem, &fout) : op_div(size, n, d, fl, &rem, &fout);
    printf("%s %d %llx %x %x -> %x %x %x\n", name, size, (unsigned long long)n, d,
           (unsigned)fl, q, rem, (unsigned)(fout & STATUS));
}

static void gen_muldiv(void)
{
    for (int s = 0; s < 3; s++) {
        int size = SIZES[s];
        uint32_t m = mask_of(size);
        uint64_t wide = size == 32 ? ~0ull : ((uint64_t)1 << (2 * size)) - 1;
        for (int imul = 0; imul <= 1; imul++) {
            const char *name = imul ? "imul" : "mul";
            for (size_t i = 0; i < NEDGES; i++) {
                for (size_t j = 0; j < NEDGES; j++) {
                    if (repeated_edge(i, m) || repeated_edge(j, m))
                        continue;
                    one_mul(name, imul, size, EDGES[i] & m, EDGES[j] & m);
                }
            }
            for (int k = 0; k < 60; k++)
                one_mul(name, imul, size, rnd() & m, rnd() & m);
        }
        for (int is_signed = 0; is_signed <= 1; is_signed++) {
            const char *name = is_signed ? "idiv" : "div";
            for (size_t i = 0; i < NEDGES; i++) {
                for (size_t j = 0; j < NEDGES; j++) {
                    uint64_t n = EDGES[i];
                    /* Also a dividend with its high half set, for signed cases. */
                    one_div(name, is_signed, size, n & wide, EDGES[j] & m);
                    one_div(name, is_signed, size, (~(uint64_t)0 ^ n) & wide, EDGES[j] & m);
                }
            }
            for (int k = 0; k < 200; k++) {
                uint64_t n = rnd() & wide;
                uint32_t d = rnd() & m;
                /* Shrink the dividend often so that most cases do not overflow. */
                if (k % 2)
                    n >>= (rnd() % (2 * size));
                one_div(name, is_signed, size, n, d);
            }
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s alu|shift|muldiv\n", argv[0]);
        return 2;
    }
    if (!strcmp(argv[1], "alu"))
        gen_alu();
    else if (!strcmp(argv[1], "shift"))
        gen_shift();
    else if (!strcmp(argv[1], "muldiv"))
        gen_muldiv();
    else {
        fprintf(stderr, "unknown table %s: expected alu, shift or muldiv\n", argv[1]);
        return 2;
    }
    return 0;
}

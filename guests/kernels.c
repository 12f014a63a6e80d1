/*
 * Compute kernels: loop-heavy and call-heavy integer code with no I/O.
 *
 * See kernels.h for the contract. Every function here is global, kept by
 * the linker even if no guest calls it (`used`), never inlined into a
 * caller (so that its code exists once, at one symbol), and free of calls
 * to anything outside this file. The Makefile builds it with
 * -fno-builtin and -fno-tree-loop-distribute-patterns so that GCC does not
 * replace loops with calls to memset.
 */
#include "kernels.h"

#define KERNEL __attribute__((used, noinline))

static uint8_t sieve_bits[SIEVE_MAX / 8 + 1];

KERNEL uint32_t kernel_sieve(uint32_t n)
{
    if (n > SIEVE_MAX)
        n = SIEVE_MAX;
    if (n < 2)
        return 0;
    /* A set bit means "composite". */
    for (uint32_t i = 0; i <= n / 8; i++)
        sieve_bits[i] = 0;
    uint32_t count = 0;
    for (uint32_t i = 2; i <= n; i++) {
        if (sieve_bits[i >> 3] & (1u << (i & 7)))
            continue;
        count++;
        for (uint32_t j = i * 2; j <= n; j += i)
            sieve_bits[j >> 3] |= (uint8_t)(1u << (j & 7));
    }
    return count;
}

static uint32_t crc_table[256];

KERNEL uint32_t kernel_crc32(uint32_t n)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
        crc_table[i] = c;
    }
    uint32_t crc = 0xFFFFFFFFu, x = 12345;
    for (uint32_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u; /* the data: an LCG's high bytes */
        crc = crc_table[(crc ^ (x >> 24)) & 0xFF] ^ (crc >> 8);
    }
    return ~crc;
}

static uint32_t mat_a[MATMUL_MAX][MATMUL_MAX], mat_b[MATMUL_MAX][MATMUL_MAX], mat_c[MATMUL_MAX][MATMUL_MAX];

KERNEL uint32_t kernel_matmul(uint32_t n)
{
    if (n > MATMUL_MAX)
        n = MATMUL_MAX;
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < n; j++) {
            mat_a[i][j] = i + j;
            mat_b[i][j] = i * j + 1;
        }
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < n; j++) {
            uint32_t s = 0;
            for (uint32_t k = 0; k < n; k++)
                s += mat_a[i][k] * mat_b[k][j];
            mat_c[i][j] = s;
        }
    uint32_t sum = 0;
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < n; j++)
            sum = sum * 31 + mat_c[i][j];
    return sum;
}

KERNEL uint32_t kernel_loop(uint32_t n)
{
    uint32_t x = 1;
    for (uint32_t i = 0; i < n; i++)
        x = x * 1664525u + 1013904223u;
    return x;
}

static __attribute__((noinline)) uint32_t fib(uint32_t n)
{
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

KERNEL uint32_t kernel_fib(uint32_t n)
{
    if (n > FIB_MAX)
        n = FIB_MAX;
    return fib(n);
}

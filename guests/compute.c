/*
 * compute: runs the compute kernels of kernels.c and prints their results.
 *
 * The Multiboot command line selects what runs: `workload=NAME` (sieve,
 * crc32, matmul, loop, fib or all; default all) and `n=N` (default: a small
 * size per kernel, so that the whole run takes well under a second under
 * QEMU). Results are pure functions of n, so the output is the same on
 * every machine; a final checksum folds all results together.
 */
#include "kernels.h"

struct workload {
    const char *name;
    uint32_t (*run)(uint32_t n);
    uint32_t default_n;
};

static const struct workload workloads[] = {
    { "sieve", kernel_sieve, 100000 },
    { "crc32", kernel_crc32, 65536 },
    { "matmul", kernel_matmul, 48 },
    { "loop", kernel_loop, 1000000 },
    { "fib", kernel_fib, 24 },
};

int kmain(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    const char *cmdline = (info->flags & MBI_CMDLINE) ? (const char *)info->cmdline : NULL;
    char which[16] = "all";
    cmdline_string(cmdline, "workload", which, sizeof(which));
    uint32_t n_override = cmdline_number(cmdline, "n", 0);

    printf("compute: workload=%s\n", which);
    uint32_t checksum = 2166136261u; /* FNV-1a offset basis */
    int ran = 0;
    for (unsigned i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++) {
        const struct workload *w = &workloads[i];
        if (strncmp(which, "all", 4) && strncmp(which, w->name, sizeof(which)))
            continue;
        uint32_t n = n_override ? n_override : w->default_n;
        uint32_t r = w->run(n);
        printf("%s(%u) = %u (0x%08x)\n", w->name, n, r, r);
        for (int b = 0; b < 4; b++)
            checksum = (checksum ^ ((r >> (8 * b)) & 0xFF)) * 16777619u;
        ran++;
    }
    if (!ran) {
        printf("unknown workload '%s': use sieve, crc32, matmul, loop, fib or all\n", which);
        return EXIT_FAIL;
    }
    printf("checksum 0x%08x\n", checksum);
    return EXIT_PASS;
}

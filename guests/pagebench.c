/*
 * pagebench: micro-benchmarks of memory virtualization, one per run.
 *
 * The Multiboot command line chooses the benchmark and its iteration
 * count: `mode=MODE n=N`. The host times the whole run and subtracts a run
 * of the same mode with n=0, which does all the setup and no iterations,
 * so nothing is printed per iteration: one line at the end gives the mode,
 * N and a checksum of what the iterations read, so that a run that skipped
 * work is caught.
 *
 *   pf      N page-fault round trips: a read of a not-present page, the
 *           #PF handler sets P and returns, the read is retried; then P is
 *           cleared again and the page invalidated with invlpg.
 *   invlpg  N times: re-point a PTE (alternately at two frames), invlpg,
 *           and one read through it.
 *   cr3     N CR3 writes, alternately to two page directories that map
 *           one linear page to different frames, and one read after each.
 *   hidden  N reads, each of a different page of a 64 MiB region mapped
 *           once, up front, with 4 KiB PTEs whose A and D bits are already
 *           set: the guest's page tables never change, so under bt86 each
 *           read of a page not yet in the shadow mapping is a hidden fault
 *           (bt86's counters say how many), while under QEMU it costs a
 *           TLB fill. After every 16384 reads (the whole region) CR3 is
 *           written, which drops every mapping, so the next sweep faults
 *           again.
 *   scatter N reads, each of a different page of a 1 GiB region whose
 *           PTEs point at the frames of the hidden region in a scattered
 *           order (frame index i * 7919 mod 16384), with A clear: no two
 *           neighbours share a run of frames, so under bt86 every page is
 *           its own host mapping. More than 65530 of them would exhaust
 *           Linux's per-process limit (vm.max_map_count) if the monitor
 *           did not drop its mappings in time; a hostile guest does this.
 *   fork    N address spaces created and destroyed, as a fork-and-exit
 *           workload does: a page directory (the kernel's PDEs copied), a
 *           page table with the kernel's PTEs and three user pages (code,
 *           data, stack), a CR3 switch, a tiny program at CPL 3 that
 *           touches its pages and exits through int 0x80, a CR3 switch
 *           back, and every frame freed.
 *
 * Layout: the kernel is identity-mapped at [1 MiB, 4 MiB) with 4 KiB pages,
 * the frame pool at [4 MiB, 16 MiB) with 4 MiB pages, all supervisor; the
 * user pages of the fork mode lie at 0x10000-0x12FFF, below them.
 */
#include "guest.h"
#include "paging.h"

#define KERNEL_BASE 0x00100000u
#define KERNEL_END 0x00400000u
#define POOL_BASE 0x00400000u
#define POOL_END 0x01000000u

#define TEST_PAGE 0x00800000u /* pf, invlpg: one page of pt2 */
#define SPACE_PAGE 0x00C00000u /* cr3: different frames in the two spaces */
#define HIDDEN_BASE 0x10000000u /* hidden: linear base of the 64 MiB region */
#define HIDDEN_PHYS 0x02000000u /* its frames: physical 32 MiB to 96 MiB */
#define HIDDEN_PAGES 16384u
#define SCATTER_BASE 0x40000000u /* scatter: 1 GiB of scattered mappings */
#define SCATTER_PAGES 262144u
#define USER_CODE 0x00010000u /* fork: the child's pages */
#define USER_DATA 0x00011000u
#define USER_STACK 0x00012000u

static pde_t kernel_pd[1024] __attribute__((aligned(4096)));
static pde_t other_pd[1024] __attribute__((aligned(4096)));
static pte_t kernel_pt0[1024] __attribute__((aligned(4096)));
static pte_t pt2[1024] __attribute__((aligned(4096)));
static pte_t pt3_a[1024] __attribute__((aligned(4096)));
static pte_t pt3_b[1024] __attribute__((aligned(4096)));
/* The page tables of the hidden-fault region live in the frame pool. */
static struct frame_pool pool;

static volatile uint32_t *word(uint32_t linear) { return (volatile uint32_t *)linear; }

static void build_kernel_space(void)
{
    for (uint32_t a = KERNEL_BASE; a < KERNEL_END; a += PAGE_SIZE)
        kernel_pt0[pte_index(a)] = a | PG_P | PG_RW;
    kernel_pd[0] = (uint32_t)kernel_pt0 | PG_P | PG_RW | PG_US;
    for (uint32_t a = POOL_BASE; a < POOL_END; a += LARGE_PAGE_SIZE)
        kernel_pd[pde_index(a)] = a | PG_P | PG_RW | PG_PS;
    kernel_pd[pde_index(TEST_PAGE)] = (uint32_t)pt2 | PG_P | PG_RW;
    kernel_pd[pde_index(SPACE_PAGE)] = (uint32_t)pt3_a | PG_P | PG_RW;
}

/* ---------------------------------------------------------------------
 * pf: the handler makes the page present and returns; the read is
 * retried (a #PF is a fault: SDM Vol. 3A section 6.5). No invlpg in the
 * handler: a not-present entry is never cached (section 4.10.2.3).
 * ------------------------------------------------------------------- */
static volatile uint32_t faults;

static void on_bench_fault(struct frame *f)
{
    (void)f;
    pt2[pte_index(TEST_PAGE)] |= PG_P;
    faults++;
}

static uint32_t bench_pf(uint32_t n)
{
    uint32_t frame = frame_alloc(&pool);
    *word(frame) = 0x00F00F00;
    pt2[pte_index(TEST_PAGE)] = frame | PG_RW; /* not present */
    set_handler(14, on_bench_fault);
    uint32_t sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        sum += *word(TEST_PAGE);
        pt2[pte_index(TEST_PAGE)] &= ~PG_P;
        invlpg(TEST_PAGE);
    }
    set_handler(14, NULL);
    return sum + faults;
}

static uint32_t bench_invlpg(uint32_t n)
{
    uint32_t frames[2] = { frame_alloc(&pool), frame_alloc(&pool) };
    *word(frames[0]) = 1;
    *word(frames[1]) = 2;
    volatile pte_t *pte = &pt2[pte_index(TEST_PAGE + PAGE_SIZE)];
    *pte = frames[0] | PG_P | PG_RW;
    uint32_t sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        *pte = frames[(i + 1) & 1] | PG_P | PG_RW;
        invlpg(TEST_PAGE + PAGE_SIZE);
        sum = sum * 3 + *word(TEST_PAGE + PAGE_SIZE);
    }
    return sum;
}

static uint32_t bench_cr3(uint32_t n)
{
    uint32_t fa = frame_alloc(&pool), fb = frame_alloc(&pool);
    *word(fa) = 0xA;
    *word(fb) = 0xB;
    pt3_a[0] = fa | PG_P | PG_RW;
    pt3_b[0] = fb | PG_P | PG_RW;
    for (int i = 0; i < 1024; i++)
        other_pd[i] = kernel_pd[i];
    other_pd[pde_index(SPACE_PAGE)] = (uint32_t)pt3_b | PG_P | PG_RW;
    const uint32_t pds[2] = { (uint32_t)kernel_pd, (uint32_t)other_pd };
    uint32_t sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        write_cr3(pds[(i + 1) & 1]);
        sum = sum * 5 + *word(SPACE_PAGE);
    }
    write_cr3((uint32_t)kernel_pd);
    return sum;
}

/* Maps the 64 MiB region with A and D already set in every PTE and PDE,
 * so that no access ever needs the page tables written. Each page's
 * first word holds its index, written while paging is still off. */
static void map_hidden_region(void)
{
    for (uint32_t i = 0; i < HIDDEN_PAGES; i++)
        *word(HIDDEN_PHYS + i * PAGE_SIZE) = i;
}

static void map_hidden_tables(void)
{
    for (uint32_t t = 0; t < HIDDEN_PAGES / 1024; t++) {
        pte_t *pt = (pte_t *)frame_alloc(&pool);
        for (uint32_t i = 0; i < 1024; i++)
            pt[i] = (HIDDEN_PHYS + (t * 1024 + i) * PAGE_SIZE) | PG_P | PG_RW | PG_A | PG_D;
        kernel_pd[pde_index(HIDDEN_BASE) + t] = (uint32_t)pt | PG_P | PG_RW | PG_A;
    }
}

static uint32_t scatter_frame(uint32_t i) { return (i * 7919u) % HIDDEN_PAGES; }

static void map_scatter_tables(void)
{
    for (uint32_t t = 0; t < SCATTER_PAGES / 1024; t++) {
        pte_t *pt = (pte_t *)frame_alloc(&pool);
        for (uint32_t i = 0; i < 1024; i++)
            pt[i] = (HIDDEN_PHYS + scatter_frame(t * 1024 + i) * PAGE_SIZE) | PG_P | PG_RW;
        kernel_pd[pde_index(SCATTER_BASE) + t] = (uint32_t)pt | PG_P | PG_RW;
    }
}

static uint32_t bench_scatter(uint32_t n)
{
    uint32_t sum = 0;
    for (uint32_t i = 0; i < n; i++)
        sum = sum * 31 + *word(SCATTER_BASE + (i % SCATTER_PAGES) * PAGE_SIZE);
    return sum;
}

static uint32_t bench_hidden(uint32_t n)
{
    uint32_t sum = 0;
    for (uint32_t i = 0, page = 0; i < n; i++) {
        sum += *word(HIDDEN_BASE + page * PAGE_SIZE);
        if (++page == HIDDEN_PAGES) {
            page = 0;
            flush_tlb();
        }
    }
    return sum;
}

/* ---------------------------------------------------------------------
 * fork: the child program, copied to USER_CODE in each new address space.
 * It reads the seed the kernel left in its data page, pushes and pops it
 * on its stack, stores seed + 1 back and exits with that status.
 * ------------------------------------------------------------------- */
extern const char fork_child[], fork_child_end[];
__asm__(".text\n"
        ".globl fork_child, fork_child_end\n"
        "fork_child:\n\t"
        "movl 0x11000, %eax\n\t"
        "pushl %eax\n\t"
        "popl %ebx\n\t"
        "addl $1, %ebx\n\t"
        "movl %ebx, 0x11004\n\t"
        "movl $1, %eax\n\t"
        "int $0x80\n"
        "fork_child_end:\n");

static uint32_t bench_fork(uint32_t n)
{
    uint32_t sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        pde_t *pd = (pde_t *)frame_alloc(&pool);
        pte_t *pt = (pte_t *)frame_alloc(&pool);
        uint32_t code = frame_alloc(&pool), data = frame_alloc(&pool), stack = frame_alloc(&pool);
        if (!pd || !pt || !code || !data || !stack) {
            printf("pagebench: out of frames at address space %u\n", i);
            exit(EXIT_FAIL);
        }
        for (int k = 1; k < 1024; k++)
            pd[k] = kernel_pd[k];
        for (uint32_t k = pte_index(KERNEL_BASE); k < 1024; k++)
            pt[k] = kernel_pt0[k];
        pd[0] = (uint32_t)pt | PG_P | PG_RW | PG_US;
        memcpy((void *)code, fork_child, (size_t)(fork_child_end - fork_child));
        *word(data) = i * 3;
        pt[pte_index(USER_CODE)] = code | PG_P | PG_US;
        pt[pte_index(USER_DATA)] = data | PG_P | PG_RW | PG_US;
        pt[pte_index(USER_STACK)] = stack | PG_P | PG_RW | PG_US;

        write_cr3((uint32_t)pd);
        sum += run_user((void (*)(void))USER_CODE, (void *)(USER_STACK + PAGE_SIZE), 0);
        write_cr3((uint32_t)kernel_pd);

        sum += *word(data + 4);
        frame_free(&pool, stack);
        frame_free(&pool, data);
        frame_free(&pool, code);
        frame_free(&pool, (uint32_t)pt);
        frame_free(&pool, (uint32_t)pd);
    }
    return sum;
}

struct mode {
    const char *name;
    uint32_t (*run)(uint32_t n);
};

static const struct mode modes[] = {
    { "pf", bench_pf }, { "invlpg", bench_invlpg }, { "cr3", bench_cr3 },
    { "hidden", bench_hidden }, { "scatter", bench_scatter }, { "fork", bench_fork },
};

int kmain(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    const char *cmdline = (info->flags & MBI_CMDLINE) ? (const char *)info->cmdline : NULL;
    char name[16] = "";
    cmdline_string(cmdline, "mode", name, sizeof(name));
    uint32_t n = cmdline_number(cmdline, "n", 1000);
    const struct mode *mode = NULL;
    for (unsigned i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
        if (!strncmp(name, modes[i].name, sizeof(name)))
            mode = &modes[i];
    if (!mode) {
        printf("pagebench: unknown mode '%s': use mode=pf|invlpg|cr3|hidden|scatter|fork n=N\n", name);
        return EXIT_FAIL;
    }

    user_init((uint32_t)kernel_stack_top);
    frame_pool_init(&pool, POOL_BASE, POOL_END);
    build_kernel_space();
    if (mode->run == bench_hidden || mode->run == bench_scatter)
        map_hidden_region();
    if (mode->run == bench_hidden)
        map_hidden_tables();
    if (mode->run == bench_scatter)
        map_scatter_tables();
    paging_enable((uint32_t)kernel_pd);

    uint32_t checksum = mode->run(n);
    printf("pagebench: mode=%s n=%u checksum=0x%08x frames in use=%u\n", mode->name, n, checksum, pool.inuse);
    return EXIT_PASS;
}

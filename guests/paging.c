/*
 * paging: a small kernel with one address space per process.
 *
 * It reads a directory and the user programs from the disk image on the
 * primary IDE master (ATA PIO, polled), gives each program a page
 * directory of its own (one CR3 each) and runs them at CPL 3, one after
 * the other whenever the running program yields or ends (cooperative, so
 * the output is the same on every machine). System calls come through
 * int 0x80: write, exit, sbrk and yield. A program's heap grows on page
 * faults: sbrk only moves the break, and the first access to each new
 * page faults into the kernel, which maps a zeroed frame and returns so
 * that the access is retried. A fault anywhere else ends the program.
 * When every program has ended, the kernel writes a result file (a header
 * sector, then each program's output) to the result area the directory
 * names, flushes the drive's cache and exits.
 *
 * Layout. Every address space maps the kernel at [1 MiB, 4 MiB) and the
 * frame pool at [4 MiB, 16 MiB), identity and supervisor-only. The user
 * part is [0x10000, 0xFF000), below every supervisor page: code and data
 * from 0x10000, the heap from the page after the program's .bss, the
 * stack in the two pages under 0xFF000. A monitor that protects
 * supervisor pages by cutting the user segments short at the lowest
 * supervisor page can do so here without a slow path.
 *
 * The disk image is built by the guests' Makefile (user/image.S); its
 * format is described there.
 */
#include "guest.h"
#include "paging.h"
#include "ata.h"

/* ---------------------------------------------------------------------
 * The address-space layout.
 * ------------------------------------------------------------------- */
#define KERNEL_BASE 0x00100000u
#define KERNEL_END 0x00400000u
#define POOL_BASE 0x00400000u
#define POOL_END 0x01000000u
#define USER_BASE 0x00010000u
#define USER_TOP 0x000FF000u
#define STACK_PAGES 2u
#define STACK_BOTTOM (USER_TOP - STACK_PAGES * PAGE_SIZE)
#define HEAP_LIMIT (STACK_BOTTOM - 16 * PAGE_SIZE) /* a guard gap under the stack */

#define MAX_PROCS 4
#define OUTPUT_MAX 2048 /* bytes of each program's output kept for the result file */

/* ---------------------------------------------------------------------
 * ATA PIO, polled, on the primary channel's master (ATA/ATAPI-6: READ
 * SECTORS 0x20, WRITE SECTORS 0x30, FLUSH CACHE 0xE7, LBA28 addressing).
 * nIEN stays set: this kernel never takes IRQ 14.
 * ------------------------------------------------------------------- */
#define SECTOR_SIZE 512u

static void NORETURN disk_fail(const char *what, uint32_t lba)
{
    printf("kernel: disk %s failed at sector %u: status 0x%02x error 0x%02x\n", what, lba, inb(ATA_STATUS),
           inb(ATA_ERROR));
    exit(EXIT_FAIL);
}

/* Polls the alternate status until BSY clears, and returns it. */
static uint8_t ata_wait(const char *what, uint32_t lba)
{
    for (uint32_t i = 0; i < 50000000; i++) {
        uint8_t s = inb(ATA_CONTROL);
        if (!(s & ST_BSY))
            return s;
    }
    disk_fail(what, lba);
}

/* Waits for DRQ (the drive wants data moved) and fails on an error. */
static void ata_wait_drq(const char *what, uint32_t lba)
{
    uint8_t s = ata_wait(what, lba);
    if ((s & ST_ERR) || !(s & ST_DRQ))
        disk_fail(what, lba);
}

static void ata_select(uint32_t lba, uint32_t count)
{
    outb(ATA_DEVICE, 0xE0 | ((lba >> 24) & 0x0F));
    outb(ATA_COUNT, (uint8_t)count);
    outb(ATA_LBA_LOW, (uint8_t)lba);
    outb(ATA_LBA_MID, (uint8_t)(lba >> 8));
    outb(ATA_LBA_HIGH, (uint8_t)(lba >> 16));
}

static void ata_init(void)
{
    outb(ATA_CONTROL, CTL_NIEN);
    outb(ATA_DEVICE, 0xE0);
    ata_wait("select", 0);
}

/* Reads `count` (1-255) sectors from `lba` into buf. */
static void ata_read(uint32_t lba, uint32_t count, void *buf)
{
    ata_select(lba, count);
    outb(ATA_COMMAND, CMD_READ);
    uint16_t *p = buf;
    for (uint32_t s = 0; s < count; s++) {
        ata_wait_drq("read", lba + s);
        uint32_t words = SECTOR_SIZE / 2;
        __asm__ volatile("rep insw" : "+D"(p), "+c"(words) : "d"(ATA_DATA) : "memory");
    }
}

/* Writes `count` (1-255) sectors from buf to `lba`, then flushes the
 * drive's write cache, so that the data is on the medium when this
 * returns (ATA/ATAPI-6 section 8.14, FLUSH CACHE). */
static void ata_write(uint32_t lba, uint32_t count, const void *buf)
{
    ata_select(lba, count);
    outb(ATA_COMMAND, CMD_WRITE);
    const uint16_t *p = buf;
    for (uint32_t s = 0; s < count; s++) {
        ata_wait_drq("write", lba + s);
        uint32_t words = SECTOR_SIZE / 2;
        __asm__ volatile("rep outsw" : "+S"(p), "+c"(words) : "d"(ATA_DATA) : "memory");
    }
    if (ata_wait("write", lba) & ST_ERR)
        disk_fail("write", lba);
    outb(ATA_COMMAND, CMD_FLUSH);
    if (ata_wait("flush", lba) & ST_ERR)
        disk_fail("flush", lba);
}

/* ---------------------------------------------------------------------
 * The disk's directory (see user/image.S) and the user binaries' header
 * (see user/crt0.S).
 * ------------------------------------------------------------------- */
struct PACKED dir_entry {
    char name[16];
    uint32_t lba, bytes, reserved[2];
};
struct PACKED directory {
    char magic[8]; /* "BT86DIR1" */
    uint32_t count, result_lba, result_sectors, reserved[3];
    struct dir_entry entries[15];
};
struct PACKED user_header {
    uint32_t magic; /* "USER" */
    uint32_t entry, data_start, end;
};
#define USER_MAGIC 0x52455355u

/* The result file: a header sector, then each program's output from a
 * sector boundary on. */
struct PACKED result_entry {
    char name[16];
    uint32_t exited;      /* 1: SYS_EXIT; 0: killed by an exception */
    uint32_t status;      /* the exit status, or the exception vector */
    uint32_t error, cr2;  /* the error code and CR2 of a fatal #PF */
    uint32_t heap_faults; /* pages the heap grew by on page faults */
    uint32_t text_sector; /* the output's first sector, relative to the header */
    uint32_t text_len;
    uint32_t text_fnv; /* FNV-1a of the output */
};
struct PACKED result_header {
    char magic[8]; /* "BT86RES1" */
    uint32_t count, sectors;
    struct result_entry entries[MAX_PROCS];
};

/* ---------------------------------------------------------------------
 * Processes.
 * ------------------------------------------------------------------- */
struct proc {
    char name[16];
    pde_t *pd;           /* the page directory: this process's CR3 */
    pte_t *pt0;          /* the page table of [0, 4 MiB): user pages and the kernel */
    uint32_t heap_start; /* the heap is [heap_start, brk) */
    uint32_t brk;
    int alive;
    struct frame *frame; /* where it resumes while another process runs */
    struct result_entry result;
    uint32_t out_len;
    char out[OUTPUT_MAX];
    uint8_t kstack[4096] __attribute__((aligned(16)));
};

static struct proc procs[MAX_PROCS];
static uint32_t nprocs, current;
static struct frame_pool pool;
static struct directory dir __attribute__((aligned(4096)));
static pde_t kernel_pd[1024] __attribute__((aligned(4096)));
static pte_t kernel_pt0[1024] __attribute__((aligned(4096)));
/* The result file, built in memory: at most one header sector and
 * OUTPUT_MAX bytes per program. */
static uint8_t results[SECTOR_SIZE * (1 + MAX_PROCS * OUTPUT_MAX / SECTOR_SIZE)] __attribute__((aligned(4096)));

static uint32_t kstack_top(const struct proc *p) { return (uint32_t)(p->kstack + sizeof(p->kstack)); }

static uint32_t fnv1a(const void *data, uint32_t n)
{
    const uint8_t *b = data;
    uint32_t h = 0x811C9DC5u;
    for (uint32_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x01000193u;
    return h;
}

static uint32_t round_up(uint32_t v) { return (v + PAGE_SIZE - 1) & PAGE_MASK; }

static uint32_t alloc_or_fail(void)
{
    uint32_t f = frame_alloc(&pool);
    if (!f) {
        printf("kernel: out of frames\n");
        exit(EXIT_FAIL);
    }
    return f;
}

/* The kernel's page tables: [1 MiB, 4 MiB) with 4 KiB pages and the
 * frame pool with 4 MiB pages, all supervisor. Every address space shares
 * the pool's PDEs and copies the kernel's PTEs into its own page table
 * for [0, 4 MiB), whose low part holds the user pages. */
static void build_kernel_space(void)
{
    for (uint32_t a = KERNEL_BASE; a < KERNEL_END; a += PAGE_SIZE)
        kernel_pt0[pte_index(a)] = a | PG_P | PG_RW;
    kernel_pd[0] = (uint32_t)kernel_pt0 | PG_P | PG_RW;
    for (uint32_t a = POOL_BASE; a < POOL_END; a += LARGE_PAGE_SIZE)
        kernel_pd[pde_index(a)] = a | PG_P | PG_RW | PG_PS;
}

static void map_user(struct proc *p, uint32_t linear, uint32_t frame, uint32_t flags)
{
    p->pt0[pte_index(linear)] = frame | flags | PG_P | PG_US;
}

/* Builds the address space of a process and loads its program from the
 * disk: one page at a time into a fresh frame. Pages below the program's
 * data are mapped read-only, the rest (data, .bss) writable. */
static void load(struct proc *p, const struct dir_entry *e)
{
    memcpy(p->name, e->name, sizeof(p->name));
    p->name[sizeof(p->name) - 1] = 0;
    p->pd = (pde_t *)alloc_or_fail();
    p->pt0 = (pte_t *)alloc_or_fail();
    for (int i = 1; i < 1024; i++)
        p->pd[i] = kernel_pd[i];
    for (uint32_t i = pte_index(KERNEL_BASE); i < 1024; i++)
        p->pt0[i] = kernel_pt0[i];
    /* The PDE allows user access so that each PTE decides (SDM Vol. 3A
     * section 4.6). */
    p->pd[0] = (uint32_t)p->pt0 | PG_P | PG_RW | PG_US;

    uint32_t sectors = (e->bytes + SECTOR_SIZE - 1) / SECTOR_SIZE;
    if (e->bytes < sizeof(struct user_header) || e->bytes > HEAP_LIMIT - USER_BASE) {
        printf("kernel: %s: a program of %u bytes cannot be loaded\n", p->name, e->bytes);
        exit(EXIT_FAIL);
    }
    for (uint32_t s = 0; s < sectors; s += PAGE_SIZE / SECTOR_SIZE) {
        uint32_t frame = alloc_or_fail();
        uint32_t n = sectors - s < PAGE_SIZE / SECTOR_SIZE ? sectors - s : PAGE_SIZE / SECTOR_SIZE;
        ata_read(e->lba + s, n, (void *)frame);
        map_user(p, USER_BASE + s * SECTOR_SIZE, frame, 0);
    }
    const struct user_header *h = (const struct user_header *)(p->pt0[pte_index(USER_BASE)] & PAGE_MASK);
    if (h->magic != USER_MAGIC || h->entry < USER_BASE || h->entry >= USER_BASE + e->bytes ||
        h->data_start < USER_BASE || h->end < h->data_start || h->end > HEAP_LIMIT) {
        printf("kernel: %s: not a user program (bad header)\n", p->name);
        exit(EXIT_FAIL);
    }
    uint32_t end = round_up(h->end);
    for (uint32_t a = USER_BASE; a < end; a += PAGE_SIZE) {
        if (!(p->pt0[pte_index(a)] & PG_P))
            map_user(p, a, alloc_or_fail(), PG_RW); /* .bss */
        else if (a + PAGE_SIZE > h->data_start)
            p->pt0[pte_index(a)] |= PG_RW;
    }
    for (uint32_t a = STACK_BOTTOM; a < USER_TOP; a += PAGE_SIZE)
        map_user(p, a, alloc_or_fail(), PG_RW);
    p->heap_start = p->brk = end;

    /* The first frame: as if an interrupt had stopped the program at its
     * entry point, so that IRET enters it at CPL 3 (SDM Vol. 3A section
     * 6.12.1). IF stays clear: this kernel takes no interrupts. */
    struct frame *f = (struct frame *)(kstack_top(p) - sizeof(struct frame));
    memset(f, 0, sizeof(*f));
    f->ds = f->es = f->fs = f->gs = SEL_UDATA;
    f->eip = h->entry;
    f->cs = SEL_UCODE;
    f->eflags = 0x2;
    f->esp = USER_TOP;
    f->ss = SEL_UDATA;
    p->frame = f;
    p->alive = 1;
    printf("kernel: loaded %s from sector %u: %u bytes; pages for code and data: %u; heap from +0x%x\n", p->name,
           e->lba, e->bytes, (end - USER_BASE) / PAGE_SIZE, p->heap_start - USER_BASE);
}

/* Frees every frame of a process's address space. It must not be the
 * current one: the caller switches to the kernel's first. */
static void free_space(struct proc *p)
{
    for (uint32_t a = USER_BASE; a < USER_TOP; a += PAGE_SIZE)
        if (p->pt0[pte_index(a)] & PG_P)
            frame_free(&pool, p->pt0[pte_index(a)] & PAGE_MASK);
    frame_free(&pool, (uint32_t)p->pt0);
    frame_free(&pool, (uint32_t)p->pd);
    p->pd = NULL;
    p->pt0 = NULL;
}

/* ---------------------------------------------------------------------
 * Scheduling and the end of the run.
 * ------------------------------------------------------------------- */
static void NORETURN finish(void)
{
    struct result_header *h = (struct result_header *)results;
    memset(results, 0, sizeof(results));
    memcpy(h->magic, "BT86RES1", 8);
    h->count = nprocs;
    uint32_t sector = 1;
    for (uint32_t i = 0; i < nprocs; i++) {
        struct proc *p = &procs[i];
        h->entries[i] = p->result;
        memcpy(h->entries[i].name, p->name, sizeof(p->name));
        h->entries[i].text_sector = sector;
        h->entries[i].text_len = p->out_len;
        h->entries[i].text_fnv = fnv1a(p->out, p->out_len);
        memcpy(results + sector * SECTOR_SIZE, p->out, p->out_len);
        sector += (p->out_len + SECTOR_SIZE - 1) / SECTOR_SIZE;
    }
    h->sectors = sector;
    if (sector > dir.result_sectors) {
        printf("kernel: the results need %u sectors, the result area has %u\n", sector, dir.result_sectors);
        exit(EXIT_FAIL);
    }
    ata_write(dir.result_lba, sector, results);
    printf("kernel: wrote the results of %u programs to sectors %u-%u and flushed the disk\n", nprocs,
           dir.result_lba, dir.result_lba + sector - 1);
    printf("kernel: frames still in use: %u\n", pool.inuse);
    printf("paging: done\n");
    exit(EXIT_PASS);
}

/* Makes process i the current one: its address space, its ring-0 stack
 * for the next interrupt from CPL 3, and its saved frame to resume when
 * the handler returns. */
static void switch_to(uint32_t i)
{
    current = i;
    write_cr3((uint32_t)procs[i].pd);
    user_tss.esp0 = kstack_top(&procs[i]);
    frame_switch(procs[i].frame);
}

/* Runs the next live process after the current one, round-robin. */
static void schedule(void)
{
    for (uint32_t k = 1; k <= nprocs; k++) {
        uint32_t i = (current + k) % nprocs;
        if (procs[i].alive) {
            switch_to(i);
            return;
        }
    }
    write_cr3((uint32_t)kernel_pd);
    finish();
}

static void end_current(void)
{
    struct proc *p = &procs[current];
    p->alive = 0;
    write_cr3((uint32_t)kernel_pd);
    free_space(p);
    schedule();
}

/* ---------------------------------------------------------------------
 * System calls.
 * ------------------------------------------------------------------- */
#define SYS_SBRK 45

/* 1 if [addr, addr + len) lies in the user part and every page of it is
 * mapped or belongs to the heap (and is mapped by the fault it causes). */
static int user_buffer_ok(const struct proc *p, uint32_t addr, uint32_t len)
{
    if (addr < USER_BASE || addr > USER_TOP || len > USER_TOP - addr)
        return 0;
    for (uint32_t a = addr & PAGE_MASK; a < addr + len; a += PAGE_SIZE)
        if (!(p->pt0[pte_index(a)] & PG_P) && !(a >= p->heap_start && a < p->brk))
            return 0;
    return 1;
}

static void sys_sbrk(struct proc *p, struct frame *f)
{
    uint32_t old = p->brk, want = old + f->ebx;
    int32_t inc = (int32_t)f->ebx;
    if ((inc > 0 && (want < old || want > HEAP_LIMIT)) || (inc < 0 && (want > old || want < p->heap_start))) {
        f->eax = (uint32_t)-1;
        return;
    }
    /* Shrinking gives back the pages wholly above the new break: unmap,
     * invlpg (the TLB may still hold them: SDM Vol. 3A section 4.10.4.3),
     * then free the frame. */
    for (uint32_t a = round_up(want); a < round_up(old); a += PAGE_SIZE) {
        pte_t *pte = &p->pt0[pte_index(a)];
        if (*pte & PG_P) {
            uint32_t frame = *pte & PAGE_MASK;
            *pte = 0;
            invlpg(a);
            frame_free(&pool, frame);
        }
    }
    p->brk = want;
    f->eax = old;
}

static void on_syscall(struct frame *f)
{
    struct proc *p = &procs[current];
    switch (f->eax) {
    case SYS_WRITE:
        if (!user_buffer_ok(p, f->ecx, f->edx)) {
            f->eax = (uint32_t)-14; /* EFAULT */
            break;
        }
        /* CR3 is the caller's, so its buffer is at the same linear
         * address for the kernel; a heap page not yet touched faults in
         * on the way. */
        console_write((const char *)f->ecx, f->edx);
        for (uint32_t i = 0; i < f->edx && p->out_len < OUTPUT_MAX; i++)
            p->out[p->out_len++] = ((const char *)f->ecx)[i];
        f->eax = f->edx;
        break;
    case SYS_SBRK:
        sys_sbrk(p, f);
        break;
    case SYS_YIELD:
        f->eax = 0;
        p->frame = f;
        schedule();
        break;
    case SYS_EXIT:
        p->result.exited = 1;
        p->result.status = f->ebx;
        printf("kernel: %s exited with status %u after %u heap faults\n", p->name, f->ebx, p->result.heap_faults);
        end_current();
        break;
    default:
        f->eax = (uint32_t)-38; /* ENOSYS */
        break;
    }
}

/* ---------------------------------------------------------------------
 * Faults.
 * ------------------------------------------------------------------- */
static void kill_current(struct frame *f, uint32_t cr2, const char *why)
{
    struct proc *p = &procs[current];
    p->result.exited = 0;
    p->result.status = f->vector;
    p->result.error = f->error;
    p->result.cr2 = f->vector == 14 ? cr2 : 0;
    printf("kernel: %s killed: ", p->name);
    print_exception(f->vector, f->error);
    if (f->vector == 14)
        printf(" CR2=0x%08x", cr2);
    printf(" (%s)\n", why);
    end_current();
}

static void on_page_fault(struct frame *f)
{
    uint32_t cr2 = read_cr2();
    struct proc *p = &procs[current];
    /* A not-present page of the heap, touched by the program or by the
     * kernel on its behalf (a SYS_WRITE buffer): map a zeroed frame and
     * return, so that the instruction is retried. No invlpg: a
     * not-present entry is never cached (SDM Vol. 3A section 4.10.2.3). */
    if (!(f->error & PF_P) && cr2 >= p->heap_start && cr2 < p->brk) {
        map_user(p, cr2 & PAGE_MASK, alloc_or_fail(), PG_RW);
        p->result.heap_faults++;
        return;
    }
    if ((f->cs & 3) == 3) {
        kill_current(f, cr2, (f->error & PF_P) ? "a protection fault" : "outside its memory");
        return;
    }
    printf("kernel: #PF(0x%04x) in the kernel, CR2=0x%08x\n", f->error, cr2);
    exit(EXIT_FAIL);
}

static void on_exception(struct frame *f)
{
    if ((f->cs & 3) == 3) {
        kill_current(f, 0, "an exception");
        return;
    }
    puts("kernel: exception in the kernel: ");
    print_exception(f->vector, f->error);
    printf(" eip=%p\n", (void *)f->eip);
    exit(EXIT_FAIL);
}

int kmain(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    for (int v = 0; v < 32; v++)
        set_handler((uint8_t)v, on_exception);
    set_handler(14, on_page_fault);
    user_init((uint32_t)kernel_stack_top);
    /* An interrupt gate, so that the kernel always runs with IF clear. */
    idt_set_access(0x80, ACC_INT_GATE | ACC_DPL3);
    set_handler(0x80, on_syscall);

    frame_pool_init(&pool, POOL_BASE, POOL_END);
    build_kernel_space();
    paging_enable((uint32_t)kernel_pd);
    printf("paging: kernel at 1 MiB, user programs at 0x%08x-0x%08x, one page directory each\n", USER_BASE,
           USER_TOP);

    ata_init();
    ata_read(0, 1, &dir);
    if (strncmp(dir.magic, "BT86DIR1", 8) || dir.count == 0 || dir.count > MAX_PROCS) {
        printf("kernel: sector 0 holds no program directory\n");
        return EXIT_FAIL;
    }
    nprocs = dir.count;
    for (uint32_t i = 0; i < nprocs; i++)
        load(&procs[i], &dir.entries[i]);
    printf("kernel: frames in use after loading: %u\n", pool.inuse);

    current = 0;
    write_cr3((uint32_t)procs[0].pd);
    user_tss.esp0 = kstack_top(&procs[0]);
    frame_resume(procs[0].frame);
}

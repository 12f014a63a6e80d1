/*
 * pagetest: the semantics of 32-bit paging, one printed line per check.
 *
 * The kernel builds its own page tables, turns on paging (CR4.PSE, then
 * CR0.PG) and then looks at what the processor does: which Accessed and
 * Dirty bits it writes back into the PDEs and PTEs, which accesses fault
 * under CR0.WP and the U/S and R/W bits at CPL 0 and CPL 3, what CR2 and
 * the #PF error code hold, how 4 MiB pages alias 4 KiB ones, what a CR3
 * switch and an invlpg change, how mappings at 0, 0xFFC00000 and
 * 0xFFFFF000 behave for data and for code, and how self-modifying code
 * behaves when code is written through one linear address and run through
 * another, or stored into the very block that is running.
 *
 * Every line says what was seen (values, PTE bits, CR2, error codes), not
 * only "ok", so a monitor that gets a rule wrong prints different bytes
 * than QEMU. Addresses printed are ones chosen here, never ones that
 * depend on where the linker put something. Stale TLB entries (a PTE
 * changed without invlpg) are never read: what they give is
 * implementation-defined (SDM Vol. 3A section 4.10.4.4).
 *
 * Layout. Linear [1 MiB, 4 MiB) is identity-mapped for the kernel with
 * 4 KiB pages, and [4 MiB, 8 MiB) with one 4 MiB page: the frames the
 * tests map elsewhere come from there, F(n) = 4 MiB + n * 4 KiB. User
 * pages sit at 0x10000-0x14000, below every supervisor page (the common
 * layout), and at 0x00900000, above supervisor pages at 0x00800000 (the
 * layout where a monitor cannot simply cut the user segments short at the
 * lowest supervisor page).
 */
#include "guest.h"
#include "paging.h"

/* The frames the tests use: identity-mapped by a 4 MiB PDE, so the kernel
 * can always look at them through their physical address. */
#define FRAME_BASE 0x00400000u
#define F(n) (FRAME_BASE + (uint32_t)(n) * PAGE_SIZE)
/* Word k of test frame n holds 0x5A000000 | n << 16 | k at the start, so
 * any word read says which frame it came from. */
#define FRAME_WORD(n, k) (0x5A000000u | (uint32_t)(n) << 16 | (uint32_t)(k))

/* The physical 4 MiB page that two PSE PDEs alias. */
#define PSE_PHYS 0x00C00000u
#define PSE_LIN_A 0x40000000u
#define PSE_LIN_B 0x40400000u

/* Linear addresses of the test pages. */
#define SUP_PAGE 0x00800000u     /* supervisor, read/write */
#define ALIAS_X 0x00801000u      /* supervisor, F(11) */
#define ALIAS_Y 0x00802000u      /* supervisor, F(11) as well */
#define FIX_PAGE 0x00803000u     /* not present until the #PF handler sets P */
#define RO_PAGE 0x00804000u      /* supervisor, read-only */
#define PSE_ALIAS_4K 0x00805000u /* a 4 KiB page inside the PSE frame */
#define AD_PAGE 0x00806000u      /* for the Accessed and Dirty bits */
#define SWAP_PAGE 0x00807000u    /* re-pointed between F(15) and F(16) */
#define HOLE_PAGE 0x00808000u    /* maps a physical address with no RAM */
#define HOLE_PHYS 0xE0000000u
#define USER_HIGH 0x00900000u    /* user page above the supervisor pages */
#define USER_HIGH_NP 0x00901000u /* user page, not present until fixed */
#define USER_HIGH_RO 0x00902000u /* user page, read-only until fixed */
#define SPACE_DATA 0x00C00000u   /* different frames in the two address spaces */
#define SPACE_CODE 0x00C01000u
#define PDE_SUP_PAGE 0x01000000u /* PTE allows user, PDE does not */
#define PDE_RO_PAGE 0x01400000u  /* PTE allows writes, PDE does not */
#define TOP_FIRST 0xFFC00000u    /* the first page of the top 4 MiB */
#define TOP_LAST 0xFFFFF000u     /* the last page of the address space */

/* The user pages below every supervisor page. */
#define USER_CODE 0x00010000u  /* read-only: the ring-3 routine */
#define USER_ARGS 0x00011000u  /* read/write: its arguments */
#define USER_STACK 0x00012000u /* read/write: its stack */
#define USER_RO 0x00013000u    /* read-only data */
#define USER_NP 0x00014000u    /* not present */

static pde_t pd_a[1024] __attribute__((aligned(4096)));
static pde_t pd_b[1024] __attribute__((aligned(4096)));
static pte_t pt0[1024] __attribute__((aligned(4096)));
static pte_t pt2[1024] __attribute__((aligned(4096)));
static pte_t pt3a[1024] __attribute__((aligned(4096)));
static pte_t pt3b[1024] __attribute__((aligned(4096)));
static pte_t pt4[1024] __attribute__((aligned(4096)));
static pte_t pt5[1024] __attribute__((aligned(4096)));
static pte_t pt1023[1024] __attribute__((aligned(4096)));

static volatile uint32_t *word(uint32_t linear) { return (volatile uint32_t *)linear; }

/* ---------------------------------------------------------------------
 * The page-fault handler. It records every #PF (CR2, error code, CPL),
 * then does one of three things: repairs the PTE the test named and
 * returns so that the instruction is retried; ends the ring-3 routine;
 * or, for a fault at CPL 0 inside a CATCH block, resumes after the block
 * the way the library's catcher does.
 * ------------------------------------------------------------------- */
static volatile uint32_t pf_count, pf_cr2, pf_error, pf_cpl;
static volatile pte_t *fix_pte;
static volatile uint32_t fix_bits;
static volatile uint32_t user_faulted;

/* In the ring-3 routine below: the instructions that end it after a
 * fault. */
extern const char user_routine[], user_routine_fault[], user_routine_end[];

static void on_page_fault(struct frame *f)
{
    pf_count++;
    pf_cr2 = read_cr2();
    pf_error = f->error;
    pf_cpl = f->cs & 3;
    if (fix_pte) {
        /* Returning retries the faulting instruction (a #PF is a fault:
         * SDM Vol. 3A section 6.5). No invlpg is needed: a not-present
         * translation is never cached, and a #PF invalidates the TLB
         * entries for the faulting address (SDM Vol. 3A sections
         * 4.10.2.3 and 4.10.4.1). */
        *fix_pte |= fix_bits;
        return;
    }
    if (pf_cpl == 3) {
        user_faulted = 1;
        f->eip = USER_CODE + (uint32_t)(user_routine_fault - user_routine);
        return;
    }
    if (catch_armed) {
        caught.taken = 1;
        caught.vector = f->vector;
        caught.error = f->error;
        caught.eip = f->eip;
        catch_armed = 0;
        f->eip = catch_resume;
        return;
    }
    printf("unexpected #PF(0x%04x) CR2=0x%08x at CPL %u\n", f->error, pf_cr2, pf_cpl);
    exit(EXIT_FAIL);
}

/* ---------------------------------------------------------------------
 * Accesses at CPL 0, with faults caught.
 * ------------------------------------------------------------------- */
static void show_fault(void)
{
    printf("#PF(0x%04x) CR2=0x%08x", caught.error, pf_cr2);
}

static uint32_t k_read(uint32_t linear)
{
    uint32_t v = 0xEEEEEEEEu;
    write_cr2(0);
    __asm__ volatile(CATCH("movl (%1), %0") : "+r"(v) : "r"(linear) : "memory");
    return v;
}

static void k_write(uint32_t linear, uint32_t v)
{
    write_cr2(0);
    __asm__ volatile(CATCH("movl %0, (%1)") ::"r"(v), "r"(linear) : "memory");
}

/* Prints "what: value 0x..." or "what: #PF(...) CR2=...". */
static void check_read(const char *what, uint32_t linear)
{
    uint32_t v = k_read(linear);
    printf("%s: ", what);
    if (caught.taken)
        show_fault();
    else
        printf("value 0x%08x", v);
    putc('\n');
}

static void check_write(const char *what, uint32_t linear, uint32_t v)
{
    k_write(linear, v);
    printf("%s: ", what);
    if (caught.taken)
        show_fault();
    else
        printf("written");
    putc('\n');
}

/* Calls the code at `linear` (which returns a value in EAX). */
static uint32_t call_at(uint32_t linear)
{
    uint32_t r;
    __asm__ volatile("call *%1" : "=a"(r) : "r"(linear) : "ecx", "edx", "memory");
    return r;
}

/* Writes "mov $imm, %eax; ret" (B8 imm32 C3) at `linear`. */
static void emit_return(uint32_t linear, uint32_t imm)
{
    volatile uint8_t *p = (volatile uint8_t *)linear;
    p[0] = 0xB8;
    for (int i = 0; i < 4; i++)
        p[1 + i] = (uint8_t)(imm >> (8 * i));
    p[5] = 0xC3;
}

/* ---------------------------------------------------------------------
 * Accesses at CPL 3. The routine is copied to USER_CODE; it reads its
 * operation from USER_ARGS (0 read, 1 write, 2 call) with an address and
 * a value, and ends with SYS_EXIT, passing the value read (or written, or
 * returned). The #PF handler sends a faulting run to user_routine_fault.
 * Only relative jumps are used inside, so the copy runs anywhere.
 * ------------------------------------------------------------------- */
__asm__(".text\n"
        ".globl user_routine, user_routine_fault, user_routine_end\n"
        "user_routine:\n\t"
        "movl 0x11000, %eax\n\t"
        "movl 0x11004, %ebx\n\t"
        "movl 0x11008, %ecx\n\t"
        "cmpl $1, %eax\n\t"
        "je 1f\n\t"
        "cmpl $2, %eax\n\t"
        "je 2f\n\t"
        "movl (%ebx), %ecx\n\t"
        "jmp 3f\n"
        "1:\n\t"
        "movl %ecx, (%ebx)\n\t"
        "jmp 3f\n"
        "2:\n\t"
        "call *%ebx\n\t"
        "movl %eax, %ecx\n"
        "3:\n\t"
        "movl $1, %eax\n\t"
        "movl %ecx, %ebx\n\t"
        "int $0x80\n"
        "user_routine_fault:\n\t"
        "movl $1, %eax\n\t"
        "movl $0xFA017, %ebx\n\t"
        "int $0x80\n"
        "user_routine_end:\n");

enum { U_READ, U_WRITE, U_CALL };

/* Runs one access at CPL 3 and prints what happened. */
static void user_access(const char *what, uint32_t op, uint32_t linear, uint32_t value)
{
    word(USER_ARGS)[0] = op;
    word(USER_ARGS)[1] = linear;
    word(USER_ARGS)[2] = value;
    user_faulted = 0;
    uint32_t r = run_user((void (*)(void))USER_CODE, (void *)(USER_STACK + PAGE_SIZE), 0);
    printf("%s at CPL 3: ", what);
    if (user_faulted)
        printf("#PF(0x%04x) CR2=0x%08x", pf_error, pf_cr2);
    else if (op == U_WRITE)
        printf("written");
    else
        printf("value 0x%08x", r);
    putc('\n');
}

/* ---------------------------------------------------------------------
 * Building the address spaces.
 * ------------------------------------------------------------------- */
static void build_tables(void)
{
    /* PDE 0: a page table with user pages low and the kernel at 1 MiB. The
     * PDE allows user access; each PTE decides (SDM Vol. 3A section 4.6:
     * access rights combine the PDE's and the PTE's bits). */
    pd_a[0] = (uint32_t)pt0 | PG_P | PG_RW | PG_US;
    pt0[0] = F(0) | PG_P | PG_RW;
    pt0[pte_index(USER_CODE)] = F(1) | PG_P | PG_US;
    pt0[pte_index(USER_ARGS)] = F(2) | PG_P | PG_RW | PG_US;
    pt0[pte_index(USER_STACK)] = F(3) | PG_P | PG_RW | PG_US;
    pt0[pte_index(USER_RO)] = F(4) | PG_P | PG_US;
    for (uint32_t i = 256; i < 1024; i++)
        pt0[i] = i * PAGE_SIZE | PG_P | PG_RW;
    /* PDE 1: the frame pool, identity-mapped with one 4 MiB page. */
    pd_a[1] = FRAME_BASE | PG_P | PG_RW | PG_PS;

    pd_a[2] = (uint32_t)pt2 | PG_P | PG_RW | PG_US;
    pt2[pte_index(SUP_PAGE)] = F(10) | PG_P | PG_RW;
    pt2[pte_index(ALIAS_X)] = F(11) | PG_P | PG_RW;
    pt2[pte_index(ALIAS_Y)] = F(11) | PG_P | PG_RW;
    pt2[pte_index(FIX_PAGE)] = F(12) | PG_RW; /* P clear */
    pt2[pte_index(RO_PAGE)] = F(13) | PG_P;
    pt2[pte_index(PSE_ALIAS_4K)] = (PSE_PHYS + 0x3000) | PG_P | PG_RW;
    pt2[pte_index(AD_PAGE)] = F(14) | PG_P | PG_RW;
    pt2[pte_index(SWAP_PAGE)] = F(15) | PG_P | PG_RW;
    pt2[pte_index(USER_HIGH)] = F(17) | PG_P | PG_RW | PG_US;
    pt2[pte_index(USER_HIGH_NP)] = F(18) | PG_RW | PG_US; /* P clear */
    pt2[pte_index(USER_HIGH_RO)] = F(19) | PG_P | PG_US;

    pd_a[3] = (uint32_t)pt3a | PG_P | PG_RW;
    pt3a[0] = F(20) | PG_P | PG_RW;
    pt3a[1] = F(22) | PG_P | PG_RW;
    pt3b[0] = F(21) | PG_P | PG_RW;
    pt3b[1] = F(23) | PG_P | PG_RW;

    pd_a[pde_index(PDE_SUP_PAGE)] = (uint32_t)pt4 | PG_P | PG_RW;
    pt4[0] = F(24) | PG_P | PG_RW | PG_US;
    pd_a[pde_index(PDE_RO_PAGE)] = (uint32_t)pt5 | PG_P | PG_US;
    pt5[0] = F(25) | PG_P | PG_RW | PG_US;

    pd_a[pde_index(PSE_LIN_A)] = PSE_PHYS | PG_P | PG_RW | PG_PS;
    pd_a[pde_index(PSE_LIN_B)] = PSE_PHYS | PG_P | PG_RW | PG_PS;

    pd_a[1023] = (uint32_t)pt1023 | PG_P | PG_RW;
    pt1023[0] = F(30) | PG_P | PG_RW;
    pt1023[1023] = F(31) | PG_P | PG_RW;

    /* The second address space differs only in PDE 3. */
    for (int i = 0; i < 1024; i++)
        pd_b[i] = pd_a[i];
    pd_b[3] = (uint32_t)pt3b | PG_P | PG_RW;

    /* Fill every test frame, and the first pages of the 4 MiB page, while
     * paging is still off, so linear = physical. */
    for (uint32_t n = 0; n < 32; n++)
        for (uint32_t k = 0; k < PAGE_SIZE / 4; k++)
            word(F(n))[k] = FRAME_WORD(n, k);
    for (uint32_t off = 0; off < 0x4000; off += 4)
        *word(PSE_PHYS + off) = 0x0C000000u + off;
    emit_return(F(22), 0xA);
    emit_return(F(23), 0xB);
    memcpy((void *)F(1), user_routine, (size_t)(user_routine_end - user_routine));
}

/* ---------------------------------------------------------------------
 * The checks.
 * ------------------------------------------------------------------- */
static void accessed_dirty(void)
{
    puts("-- accessed and dirty bits\n");
    volatile pte_t *pte = &pt2[pte_index(AD_PAGE)];
    /* Clearing A in a PDE needs the paging-structure caches flushed (SDM
     * Vol. 3A section 4.10.4.2); a CR3 write does that. */
    pd_a[2] &= ~(PG_A | PG_D);
    flush_tlb();
    uint32_t v = *word(AD_PAGE);
    printf("read: value 0x%08x, PDE 2 flags 0x%03x, PTE 0x%08x\n", v, pd_a[2] & PG_FLAGS, *pte);
    *word(AD_PAGE + 4) = 0x0AD0;
    printf("write: PDE 2 flags 0x%03x, PTE 0x%08x\n", pd_a[2] & PG_FLAGS, *pte);
    *pte &= ~(PG_A | PG_D);
    invlpg(AD_PAGE);
    printf("A and D cleared, invlpg: PTE 0x%08x\n", *pte);
    v = *word(AD_PAGE + 4);
    printf("read: value 0x%08x, PTE 0x%08x\n", v, *pte);
    *word(AD_PAGE + 8) = 0x0AD1;
    printf("write: PTE 0x%08x\n", *pte);
    *pte &= ~(PG_A | PG_D);
    invlpg(AD_PAGE);
    *word(AD_PAGE + 12) = 0x0AD2;
    printf("cleared again, a write first: PTE 0x%08x\n", *pte);

    /* A 4 MiB page keeps its D bit in the PDE (SDM Vol. 3A section 4.8). */
    volatile pde_t *pde = &pd_a[pde_index(PSE_LIN_A)];
    *pde &= ~(PG_A | PG_D);
    flush_tlb();
    v = *word(PSE_LIN_A + 0x100);
    printf("4 MiB page read: value 0x%08x, PDE 0x%08x\n", v, *pde);
    *word(PSE_LIN_A + 0x100) = 0x4444;
    printf("4 MiB page write: PDE 0x%08x, other PDE 0x%08x\n", *pde, pd_a[pde_index(PSE_LIN_B)]);
}

static void write_protect(void)
{
    puts("-- CR0.WP\n");
    printf("CR0.WP=%u\n", (read_cr0() & CR0_WP) ? 1 : 0);
    check_write("WP=0: supervisor write to read-only supervisor page", RO_PAGE + 8, 0x11110000);
    printf("  read back 0x%08x, PTE 0x%08x\n", *word(RO_PAGE + 8), pt2[pte_index(RO_PAGE)]);
    check_write("WP=0: supervisor write to read-only user page", USER_RO + 8, 0x11110001);
    check_write("WP=0: supervisor write through a read-only PDE", PDE_RO_PAGE + 8, 0x11110002);
    write_cr0(read_cr0() | CR0_WP);
    printf("CR0.WP=%u\n", (read_cr0() & CR0_WP) ? 1 : 0);
    check_write("WP=1: supervisor write to read-only supervisor page", RO_PAGE + 12, 0x22220000);
    printf("  word unchanged: 0x%08x\n", *word(RO_PAGE + 12));
    check_write("WP=1: supervisor write to read-only user page", USER_RO + 0x10, 0x22220001);
    check_write("WP=1: supervisor write through a read-only PDE", PDE_RO_PAGE + 0x10, 0x22220002);
    check_read("WP=1: supervisor read of the read-only page", RO_PAGE + 8);
    write_cr0(read_cr0() & ~CR0_WP);
    printf("CR0.WP=%u\n", (read_cr0() & CR0_WP) ? 1 : 0);
}

static void user_supervisor(void)
{
    puts("-- U/S and R/W, user pages below every supervisor page\n");
    user_access("read of a read-only user page", U_READ, USER_RO, 0);
    user_access("write to a read-only user page", U_WRITE, USER_RO + 0x24, 7);
    user_access("read of a not-present page", U_READ, USER_NP + 0x124, 0);
    user_access("write to a not-present page", U_WRITE, USER_NP + 0x128, 0);
    check_read("read of a not-present page at CPL 0", USER_NP + 0xABC);
    check_write("write to a not-present page at CPL 0", USER_NP + 0xAC0, 1);
    user_access("read of kernel code", U_READ, 0x00100000u, 0);
    user_access("write to kernel code", U_WRITE, 0x00100010u, 0);
    user_access("read of page 0 (supervisor)", U_READ, 0x00000010u, 0);
    user_access("read, PTE user but PDE supervisor", U_READ, PDE_SUP_PAGE + 0x40, 0);
    user_access("write, PTE writable but PDE read-only", U_WRITE, PDE_RO_PAGE + 0x44, 1);
    user_access("read, PTE writable but PDE read-only", U_READ, PDE_RO_PAGE, 0);
    user_access("write to its own stack page", U_WRITE, USER_STACK + 0x100, 0x5555);
    printf("  the kernel reads 0x%08x there\n", *word(USER_STACK + 0x100));

    puts("-- U/S, a user page above a supervisor page\n");
    check_write("kernel writes the supervisor page 0x00800000", SUP_PAGE, 0x5E5E0001);
    check_read("kernel reads it back", SUP_PAGE);
    user_access("read of the user page 0x00900000", U_READ, USER_HIGH, 0);
    user_access("write to the user page", U_WRITE, USER_HIGH + 4, 0x0BE0);
    printf("  the kernel reads 0x%08x there\n", *word(USER_HIGH + 4));
    user_access("read of the supervisor page", U_READ, SUP_PAGE + 0x30, 0);
    user_access("write to the supervisor page", U_WRITE, SUP_PAGE + 0x34, 0);
    check_read("kernel reads the supervisor page again", SUP_PAGE);
    user_access("read of the user page again", U_READ, USER_HIGH + 4, 0);
    /* Code at CPL 3: a user page runs, a supervisor page does not (an
     * instruction fetch is a read: error code 5). */
    emit_return(USER_HIGH + 0x800, 0x0C0DE003);
    emit_return(SUP_PAGE + 0x800, 0x0C0DE000);
    user_access("call into the user page", U_CALL, USER_HIGH + 0x800, 0);
    user_access("call into the supervisor page", U_CALL, SUP_PAGE + 0x800, 0);
    /* The kernel calls that code through a pointer, as CPL 3 does, so the
     * monitor learns an indirect-branch target there; the same indirect
     * call at CPL 3 must still fault (the fetch check is owed all the
     * same). */
    for (int i = 1; i <= 3; i++)
        printf("kernel call %d into the supervisor page: value 0x%08x\n", i, call_at(SUP_PAGE + 0x800));
    user_access("call into the supervisor page after the kernel's", U_CALL, SUP_PAGE + 0x800, 0);
}

static void fix_and_retry(void)
{
    puts("-- #PF handler repairs the PTE and returns\n");
    static const struct {
        const char *what;
        uint32_t cpl, op, linear, value;
        uint32_t bits, wp;
    } cases[] = {
        { "read of a not-present page", 0, U_READ, FIX_PAGE + 0x10, 0, PG_P, 0 },
        { "write to a read-only page with WP=1", 0, U_WRITE, RO_PAGE + 0x20, 0x3030, PG_RW, 1 },
        { "read of a not-present user page", 3, U_READ, USER_HIGH_NP + 0x40, 0, PG_P, 0 },
        { "write to a read-only user page", 3, U_WRITE, USER_HIGH_RO + 0x44, 0x4040, PG_RW, 0 },
    };
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pf_count = 0;
        pf_error = pf_cr2 = 0xFFFFFFFF;
        /* Every page of these cases is mapped by pt2. */
        volatile pte_t *pte = &pt2[pte_index(cases[i].linear)];
        fix_pte = pte;
        fix_bits = cases[i].bits;
        if (cases[i].wp)
            write_cr0(read_cr0() | CR0_WP);
        uint32_t v = 0;
        if (cases[i].cpl == 3) {
            word(USER_ARGS)[0] = cases[i].op;
            word(USER_ARGS)[1] = cases[i].linear;
            word(USER_ARGS)[2] = cases[i].value;
            v = run_user((void (*)(void))USER_CODE, (void *)(USER_STACK + PAGE_SIZE), 0);
        } else if (cases[i].op == U_READ) {
            v = *word(cases[i].linear);
        } else {
            *word(cases[i].linear) = cases[i].value;
            v = cases[i].value;
        }
        write_cr0(read_cr0() & ~CR0_WP);
        fix_pte = NULL;
        printf("%s at CPL %u: %u fault(s), #PF(0x%04x) CR2=0x%08x at CPL %u, then value 0x%08x, PTE 0x%08x\n",
               cases[i].what, cases[i].cpl, pf_count, pf_error, pf_cr2, pf_cpl, v, *pte);
    }
}

static void pse_aliases(void)
{
    puts("-- 4 MiB pages aliasing one physical page, and a 4 KiB alias\n");
    printf("read 0x%08x: 0x%08x\n", PSE_LIN_A + 0x3000, *word(PSE_LIN_A + 0x3000));
    *word(PSE_LIN_A + 0x3004) = 0x12345678;
    printf("written through 0x%08x, read through 0x%08x: 0x%08x, through 0x%08x: 0x%08x\n", PSE_LIN_A + 0x3004,
           PSE_LIN_B + 0x3004, *word(PSE_LIN_B + 0x3004), PSE_ALIAS_4K + 4, *word(PSE_ALIAS_4K + 4));
    *word(PSE_ALIAS_4K + 8) = 0x9ABCDEF0;
    printf("written through 0x%08x, read through 0x%08x: 0x%08x, through 0x%08x: 0x%08x\n", PSE_ALIAS_4K + 8,
           PSE_LIN_A + 0x3008, *word(PSE_LIN_A + 0x3008), PSE_LIN_B + 0x3008, *word(PSE_LIN_B + 0x3008));
    *word(PSE_LIN_B + 0x3FFFFC) = 0xE0E0E0E0;
    printf("last word written through 0x%08x, read through 0x%08x: 0x%08x\n", PSE_LIN_B + 0x3FFFFC,
           PSE_LIN_A + 0x3FFFFC, *word(PSE_LIN_A + 0x3FFFFC));
}

static void cr3_switches(void)
{
    puts("-- CR3 switches between two address spaces\n");
    for (int round = 1; round <= 3; round++) {
        write_cr3((uint32_t)pd_a);
        uint32_t da = *word(SPACE_DATA), ca = call_at(SPACE_CODE);
        write_cr3((uint32_t)pd_b);
        uint32_t db = *word(SPACE_DATA), cb = call_at(SPACE_CODE);
        printf("round %d: space A data 0x%08x code returns 0x%x; space B data 0x%08x code returns 0x%x\n", round,
               da, ca, db, cb);
    }
    /* Still in B: a write lands in B's frame only. */
    *word(SPACE_DATA + 4) = 0xBBBB0004;
    write_cr3((uint32_t)pd_a);
    printf("written in B, read in A: 0x%08x; B's frame holds 0x%08x\n", *word(SPACE_DATA + 4),
           *word(F(21) + 4));
    /* New code in A at the same address, then B again. */
    emit_return(SPACE_CODE, 0xAA);
    uint32_t ca = call_at(SPACE_CODE);
    write_cr3((uint32_t)pd_b);
    uint32_t cb = call_at(SPACE_CODE);
    write_cr3((uint32_t)pd_a);
    printf("after rewriting A's code: A returns 0x%x, B returns 0x%x\n", ca, cb);
}

static void invlpg_check(void)
{
    puts("-- invlpg after changing a PTE\n");
    volatile pte_t *pte = &pt2[pte_index(SWAP_PAGE)];
    printf("PTE 0x%08x: 0x%08x\n", *pte, *word(SWAP_PAGE));
    for (int i = 0; i < 4; i++) {
        uint32_t frame = (i & 1) ? F(15) : F(16);
        *pte = frame | PG_P | PG_RW;
        invlpg(SWAP_PAGE);
        printf("PTE 0x%08x, invlpg: 0x%08x\n", *pte, *word(SWAP_PAGE));
    }
    *word(SWAP_PAGE + 0x10) = 0x15151515;
    printf("written through it: F(15) holds 0x%08x, F(16) holds 0x%08x\n", *word(F(15) + 0x10),
           *word(F(16) + 0x10));
}

static void edge_mappings(void)
{
    puts("-- mappings at 0, 0xFFC00000 and 0xFFFFF000\n");
    static const struct {
        uint32_t linear, frame;
    } pages[] = { { 0x00000000u, F(0) }, { TOP_FIRST, F(30) }, { TOP_LAST, F(31) } };
    for (unsigned i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
        uint32_t lin = pages[i].linear, fr = pages[i].frame;
        uint32_t first = k_read(lin);
        k_write(lin + 0xFFC, 0xF00D0000 + i);
        k_write(lin + 0x200, 0xF00D0100 + i);
        printf("0x%08x: first word 0x%08x; wrote +0xffc and +0x200, read back 0x%08x 0x%08x, frame holds 0x%08x "
               "0x%08x\n",
               lin, first, k_read(lin + 0xFFC), k_read(lin + 0x200), *word(fr + 0xFFC), *word(fr + 0x200));
        /* Code there: one function in the middle, one at the very end. */
        emit_return(lin + 0x400, 0xC0DE0000 + i);
        uint32_t mid = call_at(lin + 0x400);
        emit_return(lin + 0xFF0, 0xC0DE0100 + i);
        uint32_t end = call_at(lin + 0xFF0);
        /* Patch the immediate through the same linear address. */
        *word(lin + 0x401) = 0xC0DE0200 + i;
        uint32_t patched = call_at(lin + 0x400);
        printf("0x%08x: code at +0x400 returns 0x%08x, at +0xff0 0x%08x, patched 0x%08x\n", lin, mid, end,
               patched);
    }
    uint32_t last_byte;
    __asm__ volatile("movzbl 0xFFFFFFFF, %0" : "=r"(last_byte));
    printf("the byte at 0xffffffff: 0x%02x\n", last_byte);
    /* The frame of page 0 is also F(0) at 4 MiB: data written through the
     * identity alias is seen at 0. */
    *word(F(0) + 0x20) = 0x00C0FFEE;
    printf("written through the frame's alias, read at 0x00000020: 0x%08x\n", k_read(0x20));
}

/* ---------------------------------------------------------------------
 * Self-modifying code in the kernel's own text. The functions live on a
 * page of their own, so that patching them disturbs no other code.
 * ------------------------------------------------------------------- */
extern uint8_t smc_patch_fn[], smc_next_imm_fn[], smc_next_imm[], smc_next_op_fn[], smc_next_op[],
    smc_loop_fn[], smc_loop_imm[];
__asm__(".section .text.smc, \"ax\"\n"
        ".balign 4096\n"
        /* A function whose immediate the kernel patches between calls. */
        ".globl smc_patch_fn\n"
        "smc_patch_fn:\n\t"
        "movl $0x11111111, %eax\n\t"
        "ret\n"
        /* A store into the next instruction of the same straight-line
         * run: its immediate becomes 0x22222222 before it executes. */
        ".globl smc_next_imm_fn, smc_next_imm\n"
        "smc_next_imm_fn:\n\t"
        "movl $0x22222222, smc_next_imm\n\t"
        ".byte 0xB8\n" /* mov imm32, %eax */
        "smc_next_imm:\n\t"
        ".long 0x11111111\n\t"
        "ret\n"
        /* A store that turns the next instruction, inc %eax (0x40), into
         * dec %eax (0x48). */
        ".globl smc_next_op_fn, smc_next_op\n"
        "smc_next_op_fn:\n\t"
        "xorl %eax, %eax\n\t"
        "movb $0x48, smc_next_op\n"
        "smc_next_op:\n\t"
        ".byte 0x40\n\t"
        "ret\n"
        /* A loop whose body increments the immediate of its own add: the
         * sum is 0 + 1 + 2 + 3 + 4 = 10 when every store takes effect. */
        ".globl smc_loop_fn, smc_loop_imm\n"
        "smc_loop_fn:\n\t"
        "xorl %eax, %eax\n\t"
        "movl $5, %ecx\n"
        "1:\n\t"
        ".byte 0x05\n" /* add imm32, %eax */
        "smc_loop_imm:\n\t"
        ".long 0\n\t"
        "addl $1, smc_loop_imm\n\t"
        "loop 1b\n\t"
        "ret\n"
        ".balign 4096\n"
        ".text\n");

/* A page mapped to a physical address where nothing is: reads return all
 * ones and writes vanish, as on the PC's bus (the monitor cannot map it,
 * so it emulates each access against its device bus). */
static void unassigned_physical(void)
{
    puts("-- a page mapped to physical memory with nothing behind it\n");
    pt2[pte_index(HOLE_PAGE)] = HOLE_PHYS | PG_P | PG_RW;
    invlpg(HOLE_PAGE);
    printf("read 0x%08x: 0x%08x\n", HOLE_PHYS + 0x10, *word(HOLE_PAGE + 0x10));
    *word(HOLE_PAGE + 0x10) = 0x12345678;
    uint32_t after = *word(HOLE_PAGE + 0x10);
    /* The write set D even though nothing took the data. */
    uint32_t pte = ((volatile pte_t *)pt2)[pte_index(HOLE_PAGE)];
    printf("after a write: 0x%08x; PTE flags 0x%03x\n", after, pte & 0xFFF);
    volatile uint8_t *b = (volatile uint8_t *)HOLE_PAGE;
    printf("byte 0x%02x, word 0x%04x\n", b[3], *(volatile uint16_t *)(HOLE_PAGE + 6));
}

static void self_modifying(void)
{
    puts("-- self-modifying code\n");
    emit_return(ALIAS_X, 0x5101);
    uint32_t a = call_at(ALIAS_Y);
    *word(ALIAS_X + 1) = 0x5102;
    uint32_t b = call_at(ALIAS_Y);
    emit_return(ALIAS_Y, 0x5103);
    uint32_t c = call_at(ALIAS_X);
    uint32_t d = call_at(ALIAS_Y);
    printf("written through 0x%08x, run through 0x%08x: 0x%x, patched 0x%x; the other way 0x%x, 0x%x\n", ALIAS_X,
           ALIAS_Y, a, b, c, d);

    uint32_t before = call_at((uint32_t)smc_patch_fn);
    *(volatile uint32_t *)(smc_patch_fn + 1) = 0x33333333;
    uint32_t after = call_at((uint32_t)smc_patch_fn);
    *(volatile uint32_t *)(smc_patch_fn + 1) = 0x44444444;
    uint32_t again = call_at((uint32_t)smc_patch_fn);
    printf("patched immediate: 0x%08x, then 0x%08x, then 0x%08x\n", before, after, again);

    for (int i = 1; i <= 2; i++) {
        *(volatile uint32_t *)smc_next_imm = 0x11111111;
        uint32_t imm = call_at((uint32_t)smc_next_imm_fn);
        *(volatile uint8_t *)smc_next_op = 0x40;
        uint32_t op = call_at((uint32_t)smc_next_op_fn);
        *(volatile uint32_t *)smc_loop_imm = 0;
        uint32_t loop = call_at((uint32_t)smc_loop_fn);
        printf("store into the running block, run %d: next immediate 0x%08x, next opcode gives 0x%08x, loop sum %u\n",
               i, imm, op, loop);
    }
}

int kmain(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    user_init((uint32_t)kernel_stack_top);
    set_handler(14, on_page_fault);
    build_tables();
    paging_enable((uint32_t)pd_a);
    printf("pagetest: paging on, CR0.PG=%u CR4.PSE=%u CR0.WP=%u\n", read_cr0() >> 31, (read_cr4() >> 4) & 1,
           (read_cr0() >> 16) & 1);

    accessed_dirty();
    write_protect();
    user_supervisor();
    fix_and_retry();
    pse_aliases();
    cr3_switches();
    invlpg_check();
    edge_mappings();
    unassigned_physical();
    self_modifying();
    puts("pagetest: done\n");
    return EXIT_PASS;
}

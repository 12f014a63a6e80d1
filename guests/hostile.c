/*
 * hostile: a guest that tries to break out of its virtual machine.
 *
 * It jumps to the selectors the Linux host uses for its own 32-bit and
 * 64-bit code (0x23, 0x33) and data (0x2b), loads LDT selectors when it has
 * no LDT, reads and writes the addresses where bt86 keeps its monitor
 * (0xFFC00000 and up), executes the instructions that enter a host kernel
 * (int 0x80, syscall, sysenter), jumps into the monitor's area, raises a
 * storm of exceptions and fills thousands of pages with code that it then
 * rewrites. Every one of these must do to the guest exactly what it does
 * under QEMU, and nothing at all to the monitor. The output must be
 * byte-identical under QEMU and bt86.
 */
#include "guest.h"

static void host_selectors(void)
{
    /* Our own GDT cut down to null, code and data: limit 0x17 (SDM Vol. 3A
     * section 3.5.1). Selectors 0x23, 0x2b and 0x33 are beyond it, so a far
     * transfer raises #GP with the selector (RPL bits cleared) as error
     * code (SDM Vol. 2A, JMP and CALL). */
    gdt_load(3);
    __asm__ volatile(CATCH("ljmp $0x23, $0") ::: "memory");
    report("jmp far 0x23:0 (host 32-bit code)");
    __asm__ volatile(CATCH("ljmp $0x33, $0") ::: "memory");
    report("jmp far 0x33:0 (host 64-bit code)");
    __asm__ volatile(CATCH("lcall $0x33, $0") ::: "memory");
    report("call far 0x33:0");
    __asm__ volatile(CATCH("lcall $0x23, $0") ::: "memory");
    report("call far 0x23:0");
    __asm__ volatile(CATCH("movw %%ax, %%ds") ::"a"(0x2b) : "memory");
    report("mov ds, 0x2b (host data)");
    __asm__ volatile(CATCH("ljmp $0x10, $0") ::: "memory");
    report("jmp far 0x10:0 (our data)");
    gdt_load(GDT_ENTRIES);

    /* The LDTR holds the null selector, so every LDT reference is #GP
     * (SDM Vol. 3A section 3.5.1). */
    __asm__ volatile(CATCH("movw %%ax, %%es") ::"a"(0x0f) : "memory");
    report("mov es, 0x0f (LDT, no LDT)");
    __asm__ volatile(CATCH("ljmp $0x07, $0") ::: "memory");
    report("jmp far 0x07:0 (LDT, no LDT)");
    /* LLDT of a selector that is not an LDT descriptor (SDM Vol. 2A, LLDT). */
    __asm__ volatile(CATCH("lldt %%ax") ::"a"(SEL_DATA) : "memory");
    report("lldt 0x10 (a data segment)");
}

static void monitor_area(void)
{
    /* Addresses where neither machine has RAM or ROM: QEMU reads zeros and
     * drops writes. The BIOS ROM at 0xFFFC0000 and up differs between
     * firmwares and is left alone. The last address straddles the start
     * of bt86's monitor area. */
    static const uint32_t addresses[] = { 0xFFC00000, 0xFFE00000, 0xFFBFFFFC, 0xFFBFFFFE, 0xFFF00000 };
    for (unsigned i = 0; i < sizeof(addresses) / sizeof(addresses[0]); i++) {
        volatile uint32_t *p = (volatile uint32_t *)addresses[i];
        uint32_t before = *p;
        *p = 0x12345678;
        uint32_t after = *p;
        printf("[0x%08x]: read 0x%08x, after writing 0x12345678 read 0x%08x\n", addresses[i], before, after);
    }
    volatile uint8_t *b = (volatile uint8_t *)0xFFC00000;
    b[1] = 0xCC;
    printf("[0xffc00001] byte write 0xcc -> read 0x%02x\n", b[1]);
}

static volatile uint32_t int80_calls;

static void on_int80(struct frame *f)
{
    int80_calls++;
    f->eax = 0xC0DE0000 | (f->eax & 0xFFFF);
}

static void host_entries(void)
{
    set_handler(0x80, on_int80);
    /* On Linux, int 0x80 with EAX = 1 is exit(2); here it must reach our
     * own IDT gate and nothing else. */
    uint32_t eax = 1, ebx = 0;
    __asm__ volatile("int $0x80" : "+a"(eax) : "b"(ebx) : "memory");
    printf("int 0x80 (eax=1): guest handler ran %u time(s), eax=0x%08x\n", int80_calls, eax);
    set_handler(0x80, NULL);

    __asm__ volatile(CATCH("int $0x80") ::"a"(60) : "memory");
    report("int 0x80 without a handler");
    __asm__ volatile(CATCH("syscall") ::"a"(60) : "ecx", "memory");
    report("syscall");
    wrmsr(MSR_SYSENTER_CS, 0);
    __asm__ volatile(CATCH("sysenter") ::"a"(1) : "memory");
    report("sysenter with SYSENTER_CS=0");
}

/* Single-step through the first instructions found at 0xFFC10000. */
#define MONITOR_JUMP 0xFFC10000u
#define JUMP_STEPS 4
static volatile uint32_t jump_eips[JUMP_STEPS];
static volatile uint32_t jump_steps;
static uint8_t landing[512] __attribute__((aligned(256)));
extern const char jump_recover[];

static void on_jump_step(struct frame *f)
{
    jump_eips[jump_steps++] = f->eip;
    if (jump_steps == JUMP_STEPS) {
        /* Enough seen: stop stepping and resume after the jump. */
        f->eip = (uint32_t)jump_recover;
        f->eflags &= ~EFLAGS_TF;
    }
}

static void jump_into_monitor(void)
{
    /* Nothing answers at 0xFFC10000 on either machine, so the guest fetches
     * zero bytes: "add [eax], al", forever, until it reaches the BIOS ROM.
     * Single-stepping shows the first few instructions and gets out before
     * that. EAX points into `landing` with AL = 0x21, so each step adds
     * 0x21 to landing[0x21]. */
    set_handler(1, on_jump_step);
    jump_steps = 0;
    __asm__ volatile("movl %%esp, catch_esp\n\t"
                     "pushfl\n\t"
                     "orl $0x100, (%%esp)\n\t"
                     "popfl\n\t"
                     "jmp *%%ecx\n"
                     "jump_recover:\n\t"
                     "movl catch_esp, %%esp"
                     :
                     : "a"(&landing[0x21]), "c"(MONITOR_JUMP)
                     : "memory", "cc");
    set_handler(1, NULL);
    printf("jump to 0x%08x: stepped", MONITOR_JUMP);
    for (uint32_t i = 0; i < jump_steps; i++)
        printf(" 0x%08x", jump_eips[i]);
    printf(", landing byte = 0x%02x\n", landing[0x21]);
}

static volatile uint32_t storm_count;
static void on_storm_ud(struct frame *f)
{
    storm_count++;
    f->eip += 2; /* skip the two-byte UD2 */
}

static void exception_storm(void)
{
    set_handler(6, on_storm_ud);
    for (uint32_t i = 0; i < 100000; i++)
        __asm__ volatile("ud2" ::: "memory");
    set_handler(6, NULL);
    printf("exception storm: %u #UD handled\n", storm_count);
}

/* Generated code: each page holds ADDS_PER_PAGE "add eax, imm32" (opcode
 * 05, SDM Vol. 2A, ADD) and a RET. */
#define CODE_BASE 0x01000000u
#define CODE_PAGES 4000u
#define ADDS_PER_PAGE 818u

static uint32_t immediate(uint32_t page, uint32_t i, uint32_t seed)
{
    uint32_t x = page * 0x9E3779B1u ^ i * 0x85EBCA77u ^ seed * 0xC2B2AE3Du;
    x ^= x >> 15;
    x *= 0x2C1B3C6Du;
    x ^= x >> 12;
    return x;
}

/* Writes one page of code and returns the sum its adds will produce. */
static uint32_t write_page(uint32_t page, uint32_t seed)
{
    uint8_t *p = (uint8_t *)(CODE_BASE + page * 4096);
    uint32_t sum = 0;
    for (uint32_t i = 0; i < ADDS_PER_PAGE; i++) {
        uint32_t imm = immediate(page, i, seed);
        p[0] = 0x05;
        memcpy(p + 1, &imm, 4);
        p += 5;
        sum += imm;
    }
    *p = 0xC3;
    return sum;
}

static uint32_t run_pages(void)
{
    uint32_t eax = 0;
    for (uint32_t page = 0; page < CODE_PAGES; page++)
        __asm__ volatile("call *%1" : "+a"(eax) : "r"(CODE_BASE + page * 4096) : "memory", "cc");
    return eax;
}

static void code_pages(void)
{
    uint32_t expected = 0;
    for (uint32_t page = 0; page < CODE_PAGES; page++)
        expected += write_page(page, 1);
    uint32_t got = run_pages();
    printf("%u code pages: total 0x%08x, expected 0x%08x\n", CODE_PAGES, got, expected);

    /* Rewrite a few pages that have already run, then run everything again:
     * stale translations of those pages must not be used. */
    static const uint32_t rewritten[] = { 0, 1, 2047, 2048, CODE_PAGES - 1 };
    for (unsigned i = 0; i < sizeof(rewritten) / sizeof(rewritten[0]); i++) {
        expected -= write_page(rewritten[i], 1);
        expected += write_page(rewritten[i], 2);
    }
    got = run_pages();
    printf("after rewriting 5 pages: total 0x%08x, expected 0x%08x\n", got, expected);

    /* Self-modifying code inside one page: its first instruction, a 10-byte
     * "mov dword [last], imm32" written over the first two adds, changes
     * the immediate of the page's last add before execution reaches it. */
    uint8_t *p = (uint8_t *)CODE_BASE;
    uint32_t last = CODE_BASE + (ADDS_PER_PAGE - 1) * 5 + 1;
    uint32_t new_imm = 0x11111111;
    uint32_t smc_expected = new_imm;
    for (uint32_t i = 2; i < ADDS_PER_PAGE - 1; i++)
        smc_expected += immediate(0, i, 2);
    p[0] = 0xC7;
    p[1] = 0x05;
    memcpy(p + 2, &last, 4);
    memcpy(p + 6, &new_imm, 4);
    uint32_t eax = 0;
    __asm__ volatile("call *%1" : "+a"(eax) : "r"(CODE_BASE) : "memory", "cc");
    printf("page that patches itself: eax 0x%08x, expected 0x%08x\n", eax, smc_expected);
}

int kmain(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    puts("hostile: start\n");
    host_selectors();
    monitor_area();
    host_entries();
    jump_into_monitor();
    exception_storm();
    code_pages();
    puts("hostile: done, the monitor is still alive\n");
    return EXIT_PASS;
}

/*
 * exceptions: raises every exception a CPL-0 guest can raise on purpose
 * and prints what the handler saw: the vector, the error code, and the
 * EIP the processor pushed, relative to the start of the code that
 * faulted. A fault pushes the address of the faulting instruction; a trap
 * (#BP, #OF, single-step #DB) pushes the address of the next one (SDM
 * Vol. 3A section 6.5). The output must be byte-identical under QEMU and
 * bt86.
 *
 * This guest owns only its own test code; the catching machinery is the
 * CATCH macro of the support library.
 */
#include "guest.h"

/* Spare GDT selectors this guest fills in. */
#define SEL_SMALL 0x18      /* data, base = scratch, limit 0xFFF, byte granular */
#define SEL_ABSENT 0x20     /* data, not present */

static uint8_t scratch[8192] __attribute__((aligned(4096)));
static const uint32_t bounds[2] = { 10, 20 };
static const double zero_double = 0.0;
static const float one_float = 1.0f, zero_float = 0.0f;

static void divide_errors(void)
{
    __asm__ volatile(CATCH("divl %%ecx") ::"a"(1), "d"(0), "c"(0) : "memory", "cc");
    report("div by zero");
    /* -2^31 / -1 = 2^31 does not fit in a signed 32-bit quotient (SDM
     * Vol. 2A, IDIV: "#DE if the quotient is too large"). */
    __asm__ volatile(CATCH("idivl %%ecx") ::"a"(0x80000000), "d"(0xFFFFFFFF), "c"(-1)
                     : "memory", "cc");
    report("idiv overflow");
}

static void invalid_opcodes(void)
{
    __asm__ volatile(CATCH("ud2") ::: "memory");
    report("ud2");
    /* FF /7 is not an instruction (SDM Vol. 2D, table A-6, group 5). */
    __asm__ volatile(CATCH(".byte 0xff, 0xff") ::: "memory");
    report("ff /7");
    /* LOCK is only allowed on read-modify-write memory forms (SDM Vol. 2A,
     * LOCK): "lock add eax, eax" raises #UD. */
    __asm__ volatile(CATCH(".byte 0xf0, 0x01, 0xc0") ::: "memory", "cc");
    report("lock add reg");
}

static void traps(void)
{
    __asm__ volatile(CATCH("int3") ::: "memory");
    report("int3");
    __asm__ volatile(CATCH(".byte 0xcd, 0x03") ::: "memory");
    report("int 3");
    /* 0x7F + 1 overflows a signed byte and sets OF; INTO then traps. */
    __asm__ volatile(CATCH("addb $1, %%al\n\tinto") ::"a"(0x7F) : "memory", "cc");
    report("into, OF=1");
    __asm__ volatile(CATCH("addb $1, %%al\n\tinto") ::"a"(0x10) : "memory", "cc");
    report("into, OF=0");
    __asm__ volatile(CATCH("boundl %%eax, (%%edx)") ::"a"(30), "d"(bounds) : "memory");
    report("bound 30 in [10,20]");
    __asm__ volatile(CATCH("boundl %%eax, (%%edx)") ::"a"(15), "d"(bounds) : "memory");
    report("bound 15 in [10,20]");
}

static void protection(void)
{
    /* A selector beyond the GDT limit: #GP with the selector as error
     * code (SDM Vol. 2B, MOV: "#GP(selector) if segment selector index is
     * outside descriptor table limits"). */
    __asm__ volatile(CATCH("movw %%ax, %%es") ::"a"(0xFFF8) : "memory");
    report("mov es, 0xfff8");
    /* A far jump to a data segment (SDM Vol. 2A, JMP). */
    __asm__ volatile(CATCH("ljmp $0x10, $0") ::: "memory");
    report("jmp far 0x10:0");
    gdt_set(SEL_ABSENT, make_descriptor(0, 0xFFFFF, ACC_DATA & ACC_NOT_PRESENT, GRAN_4K_32));
    __asm__ volatile(CATCH("movw %%ax, %%fs") ::"a"(SEL_ABSENT) : "memory");
    report("mov fs, not-present");
    /* For SS a not-present segment is a stack fault instead (SDM Vol. 2B,
     * MOV: "#SS(selector) if the SS register is being loaded and the
     * segment pointed to is marked not present"). */
    __asm__ volatile(CATCH("movw %%ax, %%ss") ::"a"(SEL_ABSENT) : "memory");
    report("mov ss, not-present");
    /* An instruction longer than 15 bytes (SDM Vol. 2A section 2.3.11). */
    __asm__ volatile(CATCH(".fill 16, 1, 0x3e\n\tnop") ::: "memory");
    report("16 prefixes + nop");
}

static void floating_point(void)
{
    uint32_t cr0 = read_cr0();
    /* With CR0.TS set the first x87 instruction raises #NM, so that an OS
     * can switch FPU state lazily (SDM Vol. 3A section 2.5). */
    write_cr0((cr0 & ~(CR0_EM | CR0_TS)) | CR0_MP);
    __asm__ volatile("fninit");
    write_cr0(read_cr0() | CR0_TS);
    __asm__ volatile(CATCH("fld1") ::: "memory");
    __asm__ volatile("clts");
    report("fld1 with CR0.TS");

    /* With CR0.NE set, an unmasked x87 exception is reported as #MF at the
     * next waiting x87 instruction, here FWAIT (SDM Vol. 1 section 8.7). */
    write_cr0(read_cr0() | CR0_NE);
    static const uint16_t cw_unmask_zm = 0x037B; /* default 0x037F minus ZM */
    __asm__ volatile("fninit\n\tfldcw %0" ::"m"(cw_unmask_zm));
    __asm__ volatile(CATCH("fld1\n\tfdivl %0\n\tfwait") ::"m"(zero_double) : "memory");
    __asm__ volatile("fnclex\n\tfninit");
    report("x87 1/0 then fwait");

    write_cr0(cr0);
}

/*
 * Checks that QEMU's TCG does not implement, so they run only with
 * `strict=1` on the command line and are not part of the QEMU comparison:
 * TCG skips segment-limit checks on data accesses for speed, and QEMU 7.2
 * sets MXCSR flags but never raises #XM. bt86 runs this code natively and
 * gets the hardware's answer.
 */
static void beyond_qemu(void)
{
    puts("strict checks (hardware behaviour QEMU does not model):\n");
    /* An expand-up segment with limit 0xFFF: the last dword inside is fine,
     * a dword that ends one byte beyond the limit is #GP(0) (SDM Vol. 3A
     * section 5.3). */
    gdt_set(SEL_SMALL, make_descriptor((uint32_t)scratch, 0xFFF, ACC_DATA, GRAN_BYTE_32));
    __asm__ volatile(CATCH("movw %%ax, %%es\n\t"
                           "movl $1, %%es:0xffc\n\t"
                           "movl $2, %%es:0xffd")
                     ::"a"(SEL_SMALL)
                     : "memory");
    __asm__ volatile("movw %w0, %%es" ::"r"(SEL_DATA));
    report("write beyond limit 0xfff");
    printf("  dword at limit-3 = %u\n", *(uint32_t *)(scratch + 0xFFC));


    uint32_t cr0 = read_cr0();
    write_cr0((cr0 & ~(CR0_EM | CR0_TS)) | CR0_MP | CR0_NE);
    /* With CR4.OSFXSR and CR4.OSXMMEXCPT set, an unmasked SSE exception is
     * #XM at the faulting instruction (SDM Vol. 3A section 2.5 and Vol. 1
     * section 11.5.1). MXCSR 0x1D80 is the default with ZM cleared. */
    write_cr4(read_cr4() | CR4_OSFXSR | CR4_OSXMMEXCPT);
    static const uint32_t mxcsr_unmask_zm = 0x1D80, mxcsr_default = 0x1F80;
    __asm__ volatile("ldmxcsr %0\n\t"
                     "movss %1, %%xmm0\n\t"
                     "movss %2, %%xmm1" ::"m"(mxcsr_unmask_zm),
                     "m"(one_float), "m"(zero_float));
    __asm__ volatile(CATCH("divss %%xmm1, %%xmm0") ::: "memory");
    uint32_t mxcsr;
    __asm__ volatile("stmxcsr %0\n\tldmxcsr %1" : "=m"(mxcsr) : "m"(mxcsr_default));
    report("sse 1/0");
    printf("  mxcsr after = 0x%04x\n", mxcsr);
    write_cr0(cr0);
}

/* Single-step: the #DB handler records where each step stopped. */
static volatile uint32_t step_eips[32];
static volatile uint32_t step_count;
extern const char step_base[];

static void on_debug(struct frame *f)
{
    if (step_count < 32)
        step_eips[step_count] = f->eip - (uint32_t)step_base;
    step_count++;
}

static void single_step(void)
{
    step_count = 0;
    set_handler(1, on_debug);
    /* POPF that sets TF does not trap itself; the first #DB comes after
     * the next instruction, and every instruction executed while TF was
     * set at its start traps, including the POPF that clears TF (SDM Vol.
     * 3A section 17.3.1.4). */
    __asm__ volatile("pushfl\n\t"
                     "orl $0x100, (%%esp)\n\t"
                     "popfl\n"
                     "step_base:\n\t"
                     "nop\n\t"
                     "movl $2, %%ecx\n"
                     "1:\n\t"
                     "decl %%ecx\n\t"
                     "jnz 1b\n\t"
                     "addl $1, %%eax\n\t"
                     "pushfl\n\t"
                     "andl $~0x100, (%%esp)\n\t"
                     "popfl\n\t"
                     "nop"
                     ::: "eax", "ecx", "memory", "cc");
    set_handler(1, NULL);
    printf("single-step: %u traps:", step_count);
    for (uint32_t i = 0; i < step_count && i < 32; i++)
        printf(" +%u", step_eips[i]);
    puts("\n");
}

static void double_fault(void)
{
    /* With the #GP gate not present, delivering #GP raises #NP; two
     * contributory exceptions in a row make a double fault with error
     * code 0 (SDM Vol. 3A section 6.15, table 6-5). */
    idt_set_present(13, 0);
    __asm__ volatile(CATCH("movw %%ax, %%es") ::"a"(0xFFF8) : "memory");
    idt_set_present(13, 1);
    report("#GP with #GP gate not present");
}

int kmain(uint32_t magic, const struct multiboot_info *info)
{
    const char *cmdline = (info->flags & MBI_CMDLINE) ? (const char *)info->cmdline : NULL;
    puts("exceptions: start\n");
    if (magic != MULTIBOOT_BOOTLOADER_MAGIC)
        printf("bad multiboot magic 0x%08x\n", magic);
    divide_errors();
    invalid_opcodes();
    traps();
    protection();
    floating_point();
    single_step();
    double_fault();
    if (cmdline_number(cmdline, "strict", 0))
        beyond_qemu();
    puts("exceptions: done\n");
    return EXIT_PASS;
}

/*
 * rings: user mode and the privilege transitions of IA-32.
 *
 * The kernel part runs at CPL 0; every test body runs at CPL 3, entered
 * with IRET through the library's run_user. From ring 3 it takes int 0x80
 * through a DPL-3 trap gate and prints the frame the ring-0 handler got on
 * the TSS stack, raises #GP through DPL-0 gates, tries every privileged
 * instruction, watches popf fail silently to change IF and IOPL, has its
 * data segment registers nulled by IRET, uses an I/O permission bitmap and
 * IOPL 3, enters the kernel with sysenter and leaves with sysexit, loads
 * selectors it may not use, takes a hardware interrupt, and calls ring 0
 * through a call gate (switched off with `callgate=0` on the command
 * line). The output must be byte-identical under QEMU and bt86; nothing
 * printed depends on an absolute address.
 */
#include "guest.h"

/* GDT slots this guest adds after user_init's 0x08-0x28 (SDM Vol. 3A
 * section 3.4.5). */
#define SEL_CONFORMING 0x30 /* conforming execute/read code, DPL 0 */
#define SEL_ABSENT 0x38     /* read/write data, DPL 3, not present */
#define SEL_GATE3 0x40      /* 32-bit call gate, DPL 3, to 0x08:callgate_entry */
#define SEL_GATE0 0x48      /* the same gate with DPL 0 */

/* The private system calls of this guest, beside the library's. */
#define SYS_PROBE 200    /* the handler records its frame */
#define SYS_SETFLAGS 201 /* ebx: new IF and IOPL for the caller */
#define SYS_LOADSEGS 202 /* return with DPL-0 selectors in DS and ES */

#define EFLAGS_SHOWN (EFLAGS_IF | EFLAGS_IOPL_MASK | 0x2u)

static uint8_t user_stack[8192] __attribute__((aligned(16)));
#define USER_STACK_TOP ((void *)(user_stack + sizeof(user_stack)))
static uint8_t sysenter_stack[1024] __attribute__((aligned(16)));

/* ---------------------------------------------------------------------
 * The kernel side: the system call handler.
 * ------------------------------------------------------------------- */
static volatile struct {
    uint32_t handler_cs, handler_ss;
    uint32_t cs, eflags, ss, esp;
    uint32_t frame_below_esp0; /* ESP0 minus the address of the pushed EIP */
} probe;
volatile uint32_t probe_user_esp;

static void on_syscall(struct frame *f)
{
    switch (f->eax) {
    case SYS_PROBE:
        probe.handler_cs = READ_SEG(cs);
        probe.handler_ss = READ_SEG(ss);
        probe.cs = f->cs;
        probe.eflags = f->eflags;
        probe.ss = f->ss;
        probe.esp = f->esp;
        probe.frame_below_esp0 = user_tss.esp0 - (uint32_t)&f->eip;
        f->eax = 0x1234;
        break;
    case SYS_SETFLAGS:
        /* IRET at CPL 0 may change IF and IOPL (SDM Vol. 2A, IRET), so the
         * kernel can grant them through the frame. */
        f->eflags = (f->eflags & ~(EFLAGS_IF | EFLAGS_IOPL_MASK)) | (f->ebx & (EFLAGS_IF | EFLAGS_IOPL_MASK));
        f->eax = 0;
        break;
    case SYS_LOADSEGS:
        /* isr_common pops these at CPL 0, where they are all allowed; the
         * IRET to CPL 3 that follows must then null DS and ES (DPL 0 data)
         * but keep FS (a DPL-3 data selector with RPL 0) and GS (a
         * conforming code segment), SDM Vol. 2A, IRET: "RETURN-TO-OUTER-
         * PRIVILEGE-LEVEL". */
        f->ds = SEL_DATA;
        f->es = SEL_DATA;
        f->fs = SEL_UDATA & ~3u;
        f->gs = SEL_CONFORMING;
        f->eax = 0;
        break;
    default:
        sys_default(f);
        break;
    }
}

static uint32_t syscall1(uint32_t n, uint32_t a)
{
    __asm__ volatile("int $0x80" : "+a"(n) : "b"(a) : "memory");
    return n;
}

/* ---------------------------------------------------------------------
 * 1. Ring 3 itself, and int 0x80 through a DPL-3 trap gate.
 * ------------------------------------------------------------------- */
static void user_basics(void)
{
    printf("ring 3: CPL %u, CS=0x%04x SS=0x%04x DS=0x%04x ES=0x%04x FS=0x%04x GS=0x%04x\n",
           current_cpl(), READ_SEG(cs), READ_SEG(ss), READ_SEG(ds), READ_SEG(es), READ_SEG(fs),
           READ_SEG(gs));
    printf("ring 3: EFLAGS & (IF|IOPL) = 0x%08x\n", read_eflags() & EFLAGS_SHOWN);

    uint32_t eax = SYS_PROBE;
    __asm__ volatile("movl %%esp, probe_user_esp\n\t"
                     "int $0x80"
                     : "+a"(eax)
                     :
                     : "memory");
    printf("int 0x80: handler ran with CS=0x%04x SS=0x%04x (SS0 of the TSS)\n", probe.handler_cs,
           probe.handler_ss);
    printf("int 0x80: frame CS=0x%04x SS=0x%04x EFLAGS & (IF|IOPL) = 0x%08x\n", probe.cs, probe.ss,
           probe.eflags & EFLAGS_SHOWN);
    printf("int 0x80: frame ESP is the ring-3 ESP: %s; pushed EIP lies at ESP0-%u\n",
           probe.esp == probe_user_esp ? "yes" : "no", probe.frame_below_esp0);
    printf("int 0x80: returned EAX=0x%04x at CPL %u\n", eax, current_cpl());
}

/* ---------------------------------------------------------------------
 * 2. Gate DPL: int n, int3 and into check it; exceptions do not.
 * ------------------------------------------------------------------- */
static void user_gates(void)
{
    /* SDM Vol. 3A section 6.12.1.1: a software interrupt through a gate
     * with DPL < CPL raises #GP with error code vector*8+2 (IDT bit). */
    __asm__ volatile(CATCH("int $0x81") ::: "memory");
    report("int 0x81 (DPL-0 gate)");
    __asm__ volatile(CATCH("int3") ::: "memory");
    report("int3 (DPL-0 gate)");
    __asm__ volatile(CATCH("movb $0x7f, %%al\n\taddb $1, %%al\n\tinto") ::: "eax", "cc", "memory");
    report("into with OF=1 (DPL-0 gate)");
    /* The DPL check comes before the present check. */
    __asm__ volatile(CATCH("int $0x82") ::: "memory");
    report("int 0x82 (DPL-3 gate, not present)");
    /* A #GP raised by the CPU is delivered through vector 13's DPL-0 gate
     * regardless of its DPL: that is how every CATCH here reaches ring 0. */
}

/* ---------------------------------------------------------------------
 * 3. Privileged instructions at CPL 3: #GP(0) each (SDM Vol. 3A section
 *    5.9), and the I/O instructions at CPL > IOPL without a bitmap (SDM
 *    Vol. 1 section 19.5.1).
 * ------------------------------------------------------------------- */
static struct dtr user_dtr;

static void user_privileged(void)
{
    __asm__ volatile(CATCH("cli") ::: "memory");
    report("cli");
    __asm__ volatile(CATCH("sti") ::: "memory");
    report("sti");
    __asm__ volatile(CATCH("hlt") ::: "memory");
    report("hlt");
    __asm__ volatile(CATCH("movl %%cr0, %%eax") ::: "eax", "memory");
    report("mov eax, cr0");
    __asm__ volatile(CATCH("movl %%eax, %%cr0") ::"a"(CR0_PE | CR0_ET) : "memory");
    report("mov cr0, eax");
    __asm__ volatile(CATCH("movl %%cr3, %%eax") ::: "eax", "memory");
    report("mov eax, cr3");
    __asm__ volatile(CATCH("movl %%dr7, %%eax") ::: "eax", "memory");
    report("mov eax, dr7");
    __asm__ volatile(CATCH("lgdt user_dtr") ::: "memory");
    report("lgdt");
    __asm__ volatile(CATCH("lidt user_dtr") ::: "memory");
    report("lidt");
    __asm__ volatile(CATCH("lldt %%ax") ::"a"(0) : "memory");
    report("lldt");
    __asm__ volatile(CATCH("ltr %%ax") ::"a"(SEL_USER_TSS) : "memory");
    report("ltr");
    __asm__ volatile(CATCH("lmsw %%ax") ::"a"(CR0_PE) : "memory");
    report("lmsw");
    __asm__ volatile(CATCH("clts") ::: "memory");
    report("clts");
    __asm__ volatile(CATCH("invlpg user_dtr") ::: "memory");
    report("invlpg");
    __asm__ volatile(CATCH("wbinvd") ::: "memory");
    report("wbinvd");
    __asm__ volatile(CATCH("rdmsr") ::"c"(MSR_SYSENTER_CS) : "eax", "edx", "memory");
    report("rdmsr");
    __asm__ volatile(CATCH("wrmsr") ::"c"(MSR_SYSENTER_CS), "a"(0), "d"(0) : "memory");
    report("wrmsr");
    __asm__ volatile(CATCH("sysexit") ::: "memory");
    report("sysexit");
    __asm__ volatile(CATCH("inb $0x71, %%al") ::: "eax", "memory");
    report("in al, 0x71 (IOPL 0, no bitmap)");
    __asm__ volatile(CATCH("outb %%al, $0x80") ::"a"(0) : "memory");
    report("out 0x80, al (IOPL 0, no bitmap)");
    __asm__ volatile(CATCH("insb") ::"d"(0x3FF), "D"(&user_dtr) : "memory");
    report("insb (IOPL 0, no bitmap)");
    __asm__ volatile(CATCH("outsb") ::"d"(0x3FF), "S"(&user_dtr) : "memory");
    report("outsb (IOPL 0, no bitmap)");

    /* Sensitive but not privileged: these work at CPL 3 and show kernel
     * state (SDM Vol. 3A section 2.8; CR4.UMIP is clear on both machines
     * the guest is compared on). */
    struct dtr g = sgdt();
    printf("sgdt at CPL 3: no fault, limit 0x%04x, base is the kernel's GDT: %s\n", g.limit,
           g.base == (uint32_t)gdt ? "yes" : "no");
    uint16_t tr, msw;
    __asm__ volatile("str %0" : "=r"(tr));
    __asm__ volatile("smsw %0" : "=r"(msw));
    printf("str at CPL 3: 0x%04x; smsw: PE=%u\n", tr, msw & 1u);
}

/* ---------------------------------------------------------------------
 * 4. popf at CPL 3 leaves IF and IOPL alone, silently (SDM Vol. 2B, POPF:
 *    at CPL > 0 IOPL is not changed, and IF only when CPL <= IOPL).
 * ------------------------------------------------------------------- */
static uint32_t popf_pushf(uint32_t value)
{
    uint32_t out;
    __asm__ volatile("pushl %1\n\tpopfl\n\tpushfl\n\tpopl %0" : "=r"(out) : "r"(value) : "cc", "memory");
    return out;
}

static void user_popf(void)
{
    uint32_t now = read_eflags() & EFLAGS_SHOWN;
    printf("popf 0x00003003 with EFLAGS 0x%08x: read back 0x%08x\n", now, popf_pushf(0x3003));
    syscall1(SYS_SETFLAGS, 0);
    now = read_eflags() & EFLAGS_SHOWN;
    printf("popf 0x00003203 with EFLAGS 0x%08x: read back 0x%08x\n", now, popf_pushf(0x3203));
    syscall1(SYS_SETFLAGS, EFLAGS_IF);
}

/* ---------------------------------------------------------------------
 * 5. IRET to CPL 3 nulls DS, ES, FS and GS when they hold data or
 *    non-conforming code segments with DPL < 3.
 * ------------------------------------------------------------------- */
static void user_iret_nulls(void)
{
    uint32_t ds = SYS_LOADSEGS, es = 0, fs = 0, gs = 0;
    /* Until DS is loaded again, no instruction may touch memory through
     * it: read the four selectors into registers first. */
    __asm__ volatile("int $0x80\n\t"
                     "movw %%ds, %%ax\n\t"
                     "movw %%es, %%bx\n\t"
                     "movw %%fs, %%cx\n\t"
                     "movw %%gs, %%dx\n\t"
                     "movw %w4, %%ds\n\t"
                     "movw %w4, %%es\n\t"
                     "movw %w4, %%fs\n\t"
                     "movw %w4, %%gs"
                     : "+a"(ds), "+b"(es), "+c"(fs), "+d"(gs)
                     : "r"(SEL_UDATA)
                     : "memory");
    printf("after IRET to CPL 3 with DS=ES=0x%04x FS=0x%04x GS=0x%04x: DS=0x%04x ES=0x%04x FS=0x%04x "
           "GS=0x%04x\n",
           SEL_DATA, SEL_UDATA & ~3u, SEL_CONFORMING, ds, es, fs, gs);
}

/* ---------------------------------------------------------------------
 * 6. The I/O permission bitmap: only port 0x3FF (the UART's scratch
 *    register) is allowed (SDM Vol. 1 section 19.5.2).
 * ------------------------------------------------------------------- */
static void user_io_bitmap(void)
{
    uint32_t v = 0x5A;
    __asm__ volatile(CATCH("outb %%al, %%dx\n\txorl %%eax, %%eax\n\tinb %%dx, %%al")
                     : "+a"(v)
                     : "d"(0x3FF)
                     : "memory");
    report("out/in 0x3ff (allowed)");
    printf("  read back 0x%02x\n", v & 0xFF);
    uint8_t byte = 0;
    __asm__ volatile(CATCH("insb") ::"d"(0x3FF), "D"(&byte) : "memory");
    report("insb from 0x3ff (allowed)");
    printf("  stored 0x%02x\n", byte);
    __asm__ volatile(CATCH("inb %%dx, %%al") ::"d"(0x3FE) : "eax", "memory");
    report("in 0x3fe (neighbour, denied)");
    __asm__ volatile(CATCH("inw %%dx, %%ax") ::"d"(0x3FE) : "eax", "memory");
    report("in ax, 0x3fe (0x3fe denied, 0x3ff allowed)");
    __asm__ volatile(CATCH("inw %%dx, %%ax") ::"d"(0x3FF) : "eax", "memory");
    report("in ax, 0x3ff (0x400 is in the 0xff end byte)");
    __asm__ volatile(CATCH("inb %%dx, %%al") ::"d"(0x1F7) : "eax", "memory");
    report("in 0x1f7 (denied)");
    __asm__ volatile(CATCH("inb %%dx, %%al") ::"d"(0x5000) : "eax", "memory");
    report("in 0x5000 (beyond the TSS limit)");
    __asm__ volatile(CATCH("cli") ::: "memory");
    report("cli (the bitmap does not cover it)");
}

/* ---------------------------------------------------------------------
 * 7. IOPL 3: cli, sti and every port are allowed at CPL 3; hlt and the
 *    other CPL-0 instructions are not.
 * ------------------------------------------------------------------- */
static void user_iopl3(void)
{
    printf("IOPL 3: EFLAGS & (IF|IOPL) = 0x%08x\n", read_eflags() & EFLAGS_SHOWN);
    __asm__ volatile(CATCH("cli") ::: "memory");
    report("cli");
    printf("  IF after cli: %u\n", (read_eflags() & EFLAGS_IF) ? 1u : 0u);
    __asm__ volatile(CATCH("sti") ::: "memory");
    report("sti");
    printf("  IF after sti: %u\n", (read_eflags() & EFLAGS_IF) ? 1u : 0u);
    printf("popf 0x00000202 at IOPL 3: read back 0x%08x\n", popf_pushf(0x0202) & EFLAGS_SHOWN);
    printf("popf 0x00000002 at IOPL 3: read back 0x%08x\n", popf_pushf(0x0002) & EFLAGS_SHOWN);
    __asm__ volatile("sti");
    __asm__ volatile(CATCH("inb %%dx, %%al") ::"d"(0x3FE) : "eax", "memory");
    report("in 0x3fe");
    __asm__ volatile(CATCH("inb %%dx, %%al") ::"d"(0x5000) : "eax", "memory");
    report("in 0x5000");
    __asm__ volatile(CATCH("hlt") ::: "memory");
    report("hlt");
    __asm__ volatile(CATCH("movl %%cr0, %%eax") ::: "eax", "memory");
    report("mov eax, cr0");
}

/* ---------------------------------------------------------------------
 * 8. sysenter and sysexit (SDM Vol. 2B): CS and SS come from
 *    IA32_SYSENTER_CS, ESP and EIP from the other two MSRs; sysexit goes
 *    to CPL 3 with CS = SYSENTER_CS + 16, SS = + 24, EIP = EDX, ESP = ECX.
 * ------------------------------------------------------------------- */
volatile uint32_t se_entry_esp;
static volatile uint32_t se_cs, se_ss, se_eflags, se_user_esp, se_calls;
void sysenter_entry(void);
void sysenter_c(uint32_t user_eip, uint32_t user_esp);

__asm__(".text\n"
        ".globl sysenter_entry\n"
        "sysenter_entry:\n\t"
        "movl %esp, se_entry_esp\n\t"
        /* cdecl arguments: user EIP (EDX), then user ESP (ECX). */
        "pushl %ecx\n\t"
        "pushl %edx\n\t"
        "call sysenter_c\n\t"
        "popl %edx\n\t"
        "popl %ecx\n\t"
        "sysexit\n");

void sysenter_c(uint32_t user_eip, uint32_t user_esp)
{
    (void)user_eip;
    se_cs = READ_SEG(cs);
    se_ss = READ_SEG(ss);
    se_eflags = read_eflags();
    se_user_esp = user_esp;
    se_calls++;
}

static void user_sysenter(void)
{
    uint32_t before, after, cs_after, ss_after;
    __asm__ volatile("movl %%esp, %%ecx\n\t"
                     "movl %%esp, %0\n\t"
                     "movl $1f, %%edx\n\t"
                     "sysenter\n"
                     "1:\n\t"
                     "movl %%esp, %1\n\t"
                     "movl %%cs, %2\n\t"
                     "movl %%ss, %3"
                     : "=&m"(before), "=m"(after), "=r"(cs_after), "=r"(ss_after)
                     :
                     : "ecx", "edx", "memory");
    printf("sysenter: handler ran %u time(s) with CS=0x%04x SS=0x%04x IF=%u, ESP = SYSENTER_ESP: %s, "
           "ECX = user ESP: %s\n",
           se_calls, se_cs & 0xFFFF, se_ss & 0xFFFF, (se_eflags & EFLAGS_IF) ? 1u : 0u,
           se_entry_esp == (uint32_t)(sysenter_stack + sizeof(sysenter_stack)) ? "yes" : "no",
           se_user_esp == before ? "yes" : "no");
    printf("sysexit: back at CPL %u with CS=0x%04x SS=0x%04x, ESP restored: %s, IF=%u\n", current_cpl(),
           cs_after & 0xFFFF, ss_after & 0xFFFF, after == before ? "yes" : "no",
           (read_eflags() & EFLAGS_IF) ? 1u : 0u);
    /* sysenter cleared IF and sysexit does not set it again. */
    syscall1(SYS_SETFLAGS, EFLAGS_IF);
}

/* ---------------------------------------------------------------------
 * 9. Segment loads at CPL 3 (SDM Vol. 2A, MOV: "IF DS, ES, FS, or GS is
 *    loaded with non-null selector" and "IF SS is loaded").
 * ------------------------------------------------------------------- */
#define LOAD(reg, sel, name)                                                  \
    do {                                                                      \
        __asm__ volatile(CATCH("movw %%ax, %%" reg "\n\tmovw %%cx, %%" reg)  \
                         ::"a"(sel), "c"(SEL_UDATA)                           \
                         : "memory");                                         \
        report(name);                                                         \
    } while (0)

static void user_segment_loads(void)
{
    LOAD("ds", SEL_DATA, "mov ds, 0x0010 (DPL 0 data)");
    LOAD("ds", SEL_DATA | 3, "mov ds, 0x0013 (DPL 0 data, RPL 3)");
    LOAD("es", SEL_CODE, "mov es, 0x0008 (DPL 0 code)");
    LOAD("fs", SEL_USER_TSS, "mov fs, 0x0028 (TSS)");
    LOAD("gs", SEL_CONFORMING, "mov gs, 0x0030 (conforming code, DPL 0)");
    LOAD("ds", SEL_UDATA & ~3u, "mov ds, 0x0020 (DPL 3 data, RPL 0)");
    LOAD("ds", SEL_UCODE, "mov ds, 0x001b (DPL 3 readable code)");
    LOAD("ds", 0, "mov ds, 0 (null)");
    LOAD("es", 0xF8, "mov es, 0x00f8 (beyond the GDT limit)");
    LOAD("ds", 0x0F, "mov ds, 0x000f (LDT, no LDT)");
    LOAD("ds", SEL_ABSENT | 3, "mov ds, 0x003b (not present)");
    LOAD("ss", SEL_ABSENT | 3, "mov ss, 0x003b (not present)");
    LOAD("ss", SEL_DATA | 3, "mov ss, 0x0013 (DPL 0 data)");
    LOAD("ss", SEL_UDATA & ~3u, "mov ss, 0x0020 (RPL 0 != CPL)");
    LOAD("ss", SEL_UCODE, "mov ss, 0x001b (code)");
    LOAD("ss", 0, "mov ss, 0 (null)");
    LOAD("ss", SEL_UDATA, "mov ss, 0x0023");
}

/* ---------------------------------------------------------------------
 * 10. A hardware interrupt taken at CPL 3.
 * ------------------------------------------------------------------- */
static volatile uint32_t irq_seen, irq_cs, irq_ss, irq_below_esp0;
volatile uint32_t irq_user_esp;

static void on_irq0(struct frame *f)
{
    /* A tick can arrive before user_irq has recorded its ESP (IRQ 0 is
     * unmasked before ring 3 is entered): only count ticks after that. */
    if (!irq_seen && irq_user_esp != 0) {
        irq_cs = f->cs;
        irq_ss = f->ss;
        irq_below_esp0 = (f->cs & 3) && f->esp == irq_user_esp ? user_tss.esp0 - (uint32_t)&f->eip : 0;
        irq_seen = 1;
    }
    pic_eoi(0);
}

static void user_irq(void)
{
    /* Wait with IF set; the loop keeps ESP constant so that the handler
     * can compare it. */
    __asm__ volatile("movl %%esp, irq_user_esp\n"
                     "1:\n\t"
                     "cmpl $0, irq_seen\n\t"
                     "je 1b"
                     :
                     :
                     : "memory", "cc");
    printf("IRQ 0 taken at CPL 3: frame CS=0x%04x SS=0x%04x, ESP the ring-3 ESP and EIP at ESP0-%u\n",
           irq_cs, irq_ss, irq_below_esp0);
}

/* ---------------------------------------------------------------------
 * 11. A far call through a call gate to ring 0 (SDM Vol. 3A section
 *     5.8.5): the gate copies one parameter to the ring-0 stack.
 * ------------------------------------------------------------------- */
volatile uint32_t gate_entry_esp;
static volatile uint32_t gate_cs, gate_calls, gate_words[5];
void callgate_entry(void);
void callgate_c(void);

__asm__(".text\n"
        ".globl callgate_entry\n"
        "callgate_entry:\n\t"
        "movl %esp, gate_entry_esp\n\t"
        "pushal\n\t"
        "call callgate_c\n\t"
        "popal\n\t"
        /* Return to CPL 3 and release the parameter on both stacks. */
        "lret $4\n");

void callgate_c(void)
{
    const uint32_t *w = (const uint32_t *)gate_entry_esp;
    gate_cs = READ_SEG(cs);
    for (int i = 0; i < 5; i++)
        gate_words[i] = w[i];
    gate_calls++;
}

volatile uint32_t gate_user_esp, gate_after_esp;

static void user_callgate(void)
{
    __asm__ volatile(CATCH("pushl $0xc0ffee\n\t"
                           "movl %%esp, gate_user_esp\n\t"
                           "lcall $0x43, $0\n\t"
                           "movl %%esp, gate_after_esp") ::: "memory");
    report("call far 0x43:0 (call gate, DPL 3)");
    if (gate_calls) {
        /* The ring-0 stack, from ESP up: EIP, CS, the parameter, ESP, SS
         * (SDM Vol. 3A section 5.8.6, figure 5-13). */
        printf("  ring 0 with CS=0x%04x, at ESP0-20: %s; pushed CS=0x%04x, parameter 0x%x, SS=0x%04x, "
               "ESP the caller's: %s\n",
               gate_cs & 0xFFFF, gate_entry_esp == user_tss.esp0 - 20 ? "yes" : "no", gate_words[1],
               gate_words[2], gate_words[4], gate_words[3] == gate_user_esp ? "yes" : "no");
        printf("  lret 4: back at CPL %u, parameter released: %s\n", current_cpl(),
               gate_after_esp == gate_user_esp + 4 ? "yes" : "no");
    }
    __asm__ volatile(CATCH("lcall $0x4b, $0") ::: "memory");
    report("call far 0x4b:0 (call gate, DPL 0)");
}

/* ---------------------------------------------------------------------
 * The kernel.
 * ------------------------------------------------------------------- */
static void run(const char *title, void (*fn)(void), uint32_t eflags)
{
    printf("-- %s\n", title);
    uint32_t status = run_user(fn, USER_STACK_TOP, eflags);
    if (status)
        printf("   (user code exited with %u)\n", status);
}

static uint64_t call_gate(uint16_t sel, void (*entry)(void), uint8_t dpl, uint8_t params)
{
    uint32_t off = (uint32_t)entry;
    uint32_t lo = (off & 0xFFFF) | ((uint32_t)sel << 16);
    uint32_t hi = (off & 0xFFFF0000) | ((uint32_t)(ACC_CALL_GATE | (dpl << 5)) << 8) | params;
    return ((uint64_t)hi << 32) | lo;
}

int kmain(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    const char *cmdline = (info->flags & MBI_CMDLINE) ? (const char *)info->cmdline : NULL;
    uint32_t use_callgate = cmdline_number(cmdline, "callgate", 1);

    user_init((uint32_t)kernel_stack_top);
    gdt_set(SEL_CONFORMING, make_descriptor(0, 0xFFFFF, ACC_CODE_CONF, GRAN_4K_32));
    gdt_set(SEL_ABSENT, make_descriptor(0, 0xFFFFF, ACC_DATA_DPL3 & ACC_NOT_PRESENT, GRAN_4K_32));
    gdt_set(SEL_GATE3, call_gate(SEL_CODE, callgate_entry, 3, 1));
    gdt_set(SEL_GATE0, call_gate(SEL_CODE, callgate_entry, 0, 1));
    set_handler(0x80, on_syscall);
    idt_set_access(0x82, (ACC_TRAP_GATE | ACC_DPL3) & ACC_NOT_PRESENT);
    wrmsr(MSR_SYSENTER_CS, SEL_CODE);
    wrmsr(MSR_SYSENTER_ESP, (uint32_t)(sysenter_stack + sizeof(sysenter_stack)));
    wrmsr(MSR_SYSENTER_EIP, (uint32_t)sysenter_entry);
    printf("rings: TSS 0x%04x with SS0=0x%04x, int 0x80 is a DPL-3 trap gate\n", SEL_USER_TSS, user_tss.ss0);

    run("entering ring 3 with IRET", user_basics, EFLAGS_IF);
    run("gate DPL checks", user_gates, EFLAGS_IF);
    run("privileged instructions at CPL 3", user_privileged, EFLAGS_IF);
    run("popf at CPL 3", user_popf, EFLAGS_IF);
    run("IRET nulls data segment registers", user_iret_nulls, EFLAGS_IF);

    tss_io_bitmap(1);
    tss_allow_port(0x3FF, 1);
    run("I/O permission bitmap allowing port 0x3ff", user_io_bitmap, EFLAGS_IF);
    run("IOPL 3", user_iopl3, EFLAGS_IF | EFLAGS_IOPL3);
    tss_io_bitmap(0);

    run("sysenter and sysexit", user_sysenter, EFLAGS_IF);
    run("segment loads at CPL 3", user_segment_loads, EFLAGS_IF);

    pic_remap(0x20, 0x28);
    set_handler(0x20, on_irq0);
    pit_set_rate(100);
    pic_set_mask((uint16_t)~1u);
    run("a hardware interrupt at CPL 3", user_irq, EFLAGS_IF);
    pic_set_mask(0xFFFF);

    if (use_callgate)
        run("call gates", user_callgate, EFLAGS_IF);
    else
        printf("-- call gates: skipped (callgate=0)\n");

    printf("rings: done\n");
    return EXIT_PASS;
}

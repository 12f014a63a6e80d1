/*
 * probe: executes the privileged and sensitive instructions of IA-32 at
 * CPL 0 and prints what each one returned. These are exactly the
 * instructions a binary translator must not copy unchanged (the Robin and
 * Irvine list plus the privileged ones), so every line is a small contract
 * between the virtual CPU and the reference: QEMU and bt86 must print the
 * same bytes.
 *
 * Only values both implementations must agree on are printed: no vendor
 * strings, no timings, and no addresses other than those of this guest's
 * own tables (which are the same wherever the ELF is loaded, because it is
 * always loaded at its link address).
 */
#include "guest.h"

/* Spare GDT slots filled by this guest. */
#define SEL_LDT 0x18
#define SEL_TSS 0x20
#define SEL_DATA2 0x28
#define SEL_CODE2 0x30
#define SEL_CONFORMING 0x38
#define SEL_XONLY 0x40
#define SEL_RODATA 0x48
#define SEL_DOWN 0x50
#define SEL_DATA_DPL3 0x58
#define SEL_ABSENT 0x60
#define SEL_CALL_GATE 0x68
#define SEL_INT_GATE 0x70
#define SEL_BYTES 0x78

static uint64_t ldt[2] __attribute__((aligned(8)));
static uint32_t tss[26] __attribute__((aligned(16))); /* a 104-byte 32-bit TSS */

static void setup_descriptors(void)
{
    ldt[0] = make_descriptor(0, 0xFFFFF, ACC_DATA, GRAN_4K_32);
    ldt[1] = make_descriptor(0x1000, 0xFF, ACC_DATA_RO, GRAN_BYTE_32);
    gdt_set(SEL_LDT, make_descriptor((uint32_t)ldt, sizeof(ldt) - 1, ACC_LDT, 0));
    gdt_set(SEL_TSS, make_descriptor((uint32_t)tss, sizeof(tss) - 1, ACC_TSS, 0));
    gdt_set(SEL_DATA2, make_descriptor(0, 0xFFFFF, ACC_DATA, GRAN_4K_32));
    gdt_set(SEL_CODE2, make_descriptor(0, 0xFFFFF, ACC_CODE, GRAN_4K_32));
    gdt_set(SEL_CONFORMING, make_descriptor(0, 0xFFFFF, ACC_CODE_CONF, GRAN_4K_32));
    gdt_set(SEL_XONLY, make_descriptor(0, 0xFFFFF, ACC_CODE_XONLY, GRAN_4K_32));
    gdt_set(SEL_RODATA, make_descriptor(0, 0xFFFFF, ACC_DATA_RO, GRAN_4K_32));
    gdt_set(SEL_DOWN, make_descriptor(0, 0xFFF, ACC_DATA_DOWN, GRAN_BYTE_32));
    gdt_set(SEL_DATA_DPL3, make_descriptor(0, 0xFFFFF, ACC_DATA_DPL3, GRAN_4K_32));
    gdt_set(SEL_ABSENT, make_descriptor(0, 0xFFFFF, ACC_DATA & ACC_NOT_PRESENT, GRAN_4K_32));
    /* A call gate to SEL_CODE:0 and an interrupt gate in the GDT: LAR
     * accepts call gates but not interrupt gates, LSL accepts neither (SDM
     * Vol. 2A, LAR and LSL, table of valid types). */
    gdt_set(SEL_CALL_GATE, ((uint64_t)ACC_CALL_GATE << 40) | ((uint64_t)SEL_CODE << 16));
    gdt_set(SEL_INT_GATE, ((uint64_t)ACC_INT_GATE << 40) | ((uint64_t)SEL_CODE << 16));
    gdt_set(SEL_BYTES, make_descriptor(0x2000, 0x1234, ACC_DATA, GRAN_BYTE_32));
}

static void descriptor_tables(void)
{
    /* SGDT and SIDT store exactly what LGDT and LIDT loaded (SDM Vol. 2B,
     * SGDT: in 32-bit mode all 32 base bits are stored). */
    struct dtr saved = sgdt();
    printf("sgdt: limit=0x%04x base=%s\n", saved.limit, saved.base == (uint32_t)gdt ? "gdt" : "other");
    static const struct dtr odd = { 0x1237, 0x00345678 };
    lgdt(&odd);
    struct dtr got = sgdt();
    lgdt(&saved);
    printf("lgdt 0x%08x/0x%04x -> sgdt 0x%08x/0x%04x\n", odd.base, odd.limit, got.base, got.limit);

    saved = sidt();
    printf("sidt: limit=0x%04x base=%s\n", saved.limit, saved.base == (uint32_t)idt ? "idt" : "other");
    lidt(&odd);
    got = sidt();
    lidt(&saved);
    printf("lidt 0x%08x/0x%04x -> sidt 0x%08x/0x%04x\n", odd.base, odd.limit, got.base, got.limit);

    uint16_t before, after, fs;
    __asm__ volatile("sldt %0" : "=r"(before));
    __asm__ volatile("lldt %w0" ::"r"(SEL_LDT));
    __asm__ volatile("sldt %0" : "=r"(after));
    /* Selector 0x04 is LDT entry 0 (TI = 1). */
    __asm__ volatile("movw %w1, %%fs\n\tmovw %%fs, %0" : "=r"(fs) : "r"(0x04));
    __asm__ volatile("movw %w0, %%fs" ::"r"(SEL_DATA));
    printf("sldt before=0x%04x, lldt 0x%02x -> sldt=0x%04x, fs=0x%04x after loading 0x04\n", before,
           SEL_LDT, after, fs);

    __asm__ volatile("str %0" : "=r"(before));
    __asm__ volatile("ltr %w0" ::"r"(SEL_TSS));
    __asm__ volatile("str %0" : "=r"(after));
    /* LTR marks the TSS descriptor busy: type 9 becomes type 11 (SDM Vol.
     * 3A section 8.2.4). */
    printf("str before=0x%04x, ltr 0x%02x -> str=0x%04x, descriptor type now %u\n", before, SEL_TSS, after,
           (uint32_t)(gdt[SEL_TSS >> 3] >> 40) & 0xF);
}

/* One row of the LAR/LSL/VERR/VERW table. */
struct selector_case {
    uint16_t sel;
    const char *what;
};

static void access_rights(void)
{
    static const struct selector_case cases[] = {
        { 0x0000, "null" },
        { 0x0008, "code" },
        { 0x000b, "code, RPL 3" },
        { 0x0010, "data" },
        { SEL_LDT, "LDT" },
        { SEL_TSS, "busy TSS" },
        { SEL_CONFORMING, "conforming code" },
        { SEL_CONFORMING | 3, "conforming, RPL 3" },
        { SEL_XONLY, "execute-only code" },
        { SEL_RODATA, "read-only data" },
        { SEL_DOWN, "expand-down data" },
        { SEL_DATA_DPL3 | 3, "DPL 3 data, RPL 3" },
        { SEL_ABSENT, "not-present data" },
        { SEL_CALL_GATE, "call gate" },
        { SEL_INT_GATE, "interrupt gate" },
        { SEL_BYTES, "byte-granular data" },
        { 0x0004, "LDT entry 0" },
        { 0x000c, "LDT entry 1" },
        { 0x0014, "beyond LDT limit" },
        { 0x00c0, "beyond GDT limit" },
        { 0xfff8, "far beyond GDT limit" },
    };
    __asm__ volatile("lldt %w0" ::"r"(SEL_LDT));
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint32_t sel = cases[i].sel, ar = 0xdeadbeef, limit = 0xdeadbeef;
        uint8_t zf_lar, zf_lsl, zf_verr, zf_verw;
        __asm__ volatile("larl %2, %0\n\tsetz %1" : "+r"(ar), "=q"(zf_lar) : "r"(sel) : "cc");
        __asm__ volatile("lsll %2, %0\n\tsetz %1" : "+r"(limit), "=q"(zf_lsl) : "r"(sel) : "cc");
        __asm__ volatile("verr %w1\n\tsetz %0" : "=q"(zf_verr) : "r"(sel) : "cc");
        __asm__ volatile("verw %w1\n\tsetz %0" : "=q"(zf_verw) : "r"(sel) : "cc");
        printf("sel 0x%04x %s: lar zf=%u", sel, cases[i].what, zf_lar);
        /* LAR masks the descriptor's high dword with 0x00FxFF00: bits 19:16
         * are undefined (SDM Vol. 2A, LAR), so they are not printed. */
        if (zf_lar)
            printf(" 0x%08x", ar & 0x00F0FF00);
        printf(", lsl zf=%u", zf_lsl);
        if (zf_lsl)
            printf(" 0x%08x", limit);
        printf(", verr=%u verw=%u\n", zf_verr, zf_verw);
    }
    __asm__ volatile("lldt %w0" ::"r"(0));
}

static void control_registers(void)
{
    uint32_t cr0 = read_cr0();
    /* CD and NW are cache controls whose reset value the firmware may or may
     * not have changed; they say nothing about the CPU model, so they are
     * masked out. */
    printf("cr0 at entry (without CD/NW) = 0x%08x\n", cr0 & ~(CR0_CD | CR0_NW));
    uint16_t msw;
    __asm__ volatile("smsw %0" : "=r"(msw));
    printf("smsw = 0x%04x\n", msw);
    write_cr0(cr0 | CR0_TS);
    uint32_t with_ts = read_cr0();
    __asm__ volatile("clts");
    uint32_t after_clts = read_cr0();
    printf("cr0 |= TS -> TS=%u, clts -> TS=%u\n", !!(with_ts & CR0_TS), !!(after_clts & CR0_TS));
    /* LMSW can set PE but never clear it, and only touches bits 0-3 (SDM
     * Vol. 2A, LMSW). */
    __asm__ volatile("lmsw %w0" ::"r"(0x000e));
    printf("lmsw 0x000e -> cr0 low bits = 0x%x\n", read_cr0() & 0xF);
    write_cr0(cr0);

    write_cr2(0x12345678);
    printf("cr2 = 0x%08x after writing 0x12345678\n", read_cr2());
    uint32_t cr3 = read_cr3();
    write_cr3(0x00123018);
    printf("cr3 = 0x%08x after writing 0x00123018\n", read_cr3());
    write_cr3(cr3);
    uint32_t cr4 = read_cr4();
    printf("cr4 at entry = 0x%08x\n", cr4);
    write_cr4(cr4 | CR4_PSE);
    printf("cr4 |= PSE -> 0x%08x\n", read_cr4());
    write_cr4(cr4);
}

#define DR_WRITE(n, v) __asm__ volatile("movl %0, %%db" #n ::"r"(v))
#define DR_READ(n)                                                            \
    ({                                                                        \
        uint32_t v_;                                                          \
        __asm__ volatile("movl %%db" #n ", %0" : "=r"(v_));                   \
        v_;                                                                   \
    })

static void debug_registers(void)
{
    DR_WRITE(0, 0x00100000);
    DR_WRITE(1, 0x11111111);
    DR_WRITE(2, 0x22222222);
    DR_WRITE(3, 0xfffffffc);
    printf("dr0-3 = 0x%08x 0x%08x 0x%08x 0x%08x\n", DR_READ(0), DR_READ(1), DR_READ(2), DR_READ(3));
    /* DR6 bits 4-11 and 16-31 and DR7 bit 10 read as 1 whatever is written
     * (SDM Vol. 3B sections 17.2.3 and 17.2.4). With CR4.DE clear, DR4 and
     * DR5 are aliases of DR6 and DR7 (section 17.2.2). */
    DR_WRITE(6, 0);
    DR_WRITE(7, 0);
    printf("dr6 = 0x%08x, dr7 = 0x%08x after writing 0\n", DR_READ(6), DR_READ(7));
    DR_WRITE(7, 0x00000300); /* LE and GE only: no breakpoint enabled. */
    printf("dr7 = 0x%08x after writing 0x300, dr5 = 0x%08x\n", DR_READ(7), DR_READ(5));
    DR_WRITE(4, 0x0000000f);
    printf("dr4 <- 0xf: dr6 = 0x%08x\n", DR_READ(6));
    DR_WRITE(6, 0);
    DR_WRITE(7, 0);
}

static void flags(void)
{
    /* Each value goes through POPF and comes back through PUSHF; at CPL 0
     * POPF may change IF, IOPL, NT, AC and ID, but never VM or RF (SDM Vol.
     * 2B, POPF). PICs are masked, so IF=1 for a moment is harmless. */
    static const uint32_t values[] = {
        0x00000002, 0x00000202, 0x000008d5, 0x00003002, 0x00004002,
        0x00010002, 0x00020002, 0x00040002, 0x00200002,
    };
    for (unsigned i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        uint32_t out;
        __asm__ volatile("pushl %1\n\tpopfl\n\tpushfl\n\tpopl %0\n\tpushl $2\n\tpopfl"
                         : "=r"(out)
                         : "r"(values[i])
                         : "cc");
        printf("popf 0x%08x -> pushf 0x%08x\n", values[i], out);
    }
    uint32_t a, b;
    __asm__ volatile("cli\n\tpushfl\n\tpopl %0\n\tsti\n\tpushfl\n\tpopl %1\n\tcli" : "=r"(a), "=r"(b));
    printf("cli -> IF=%u, sti -> IF=%u\n", !!(a & EFLAGS_IF), !!(b & EFLAGS_IF));
}

static void segment_registers(void)
{
    printf("cs=0x%04x ds=0x%04x es=0x%04x fs=0x%04x gs=0x%04x ss=0x%04x\n", READ_SEG(cs), READ_SEG(ds),
           READ_SEG(es), READ_SEG(fs), READ_SEG(gs), READ_SEG(ss));
    uint32_t cs, ss, fs;
    /* A 32-bit push of a segment register may write 16 or 32 bits (SDM Vol.
     * 2B, PUSH), so only the low 16 bits are meaningful. */
    __asm__ volatile("pushl %%cs\n\tpopl %0\n\tpushl %%ss\n\tpopl %1" : "=r"(cs), "=r"(ss));
    __asm__ volatile("pushl %1\n\tpopl %%fs\n\tmovw %%fs, %w0\n\tpushl %%ds\n\tpopl %%fs"
                     : "=r"(fs)
                     : "i"(SEL_DATA2));
    printf("push cs -> 0x%04x, push ss -> 0x%04x, pop fs <- 0x%02x -> fs=0x%04x\n", cs & 0xFFFF, ss & 0xFFFF,
           SEL_DATA2, fs);

    /* LDS/LES/LFS/LGS/LSS load a 16:32 far pointer (SDM Vol. 2A, LDS). */
    static struct PACKED {
        uint32_t offset;
        uint16_t sel;
    } ptr = { 0x12345678, SEL_DATA2 };
    uint32_t r1, r2, r3, r4, s1 = 0, s2 = 0, s3 = 0, s4 = 0;
    /* SEL_DATA2 is flat like SEL_DATA, so compiled code may keep using DS
     * and ES between these statements. */
#define LOAD_FAR(insn, seg, reg, sel)                                         \
    __asm__ volatile(insn " %2, %0\n\tmovw %%" seg ", %w1"                   \
                     : "=r"(reg), "+r"(sel)                                   \
                     : "m"(ptr)                                               \
                     : "memory")
    LOAD_FAR("ldsl", "ds", r1, s1);
    LOAD_FAR("lesl", "es", r2, s2);
    LOAD_FAR("lfsl", "fs", r3, s3);
    LOAD_FAR("lgsl", "gs", r4, s4);
#undef LOAD_FAR
    __asm__ volatile("movw %w0, %%ds\n\tmovw %w0, %%es\n\tmovw %w0, %%fs\n\tmovw %w0, %%gs" ::"r"(SEL_DATA));
    printf("lds/les/lfs/lgs -> 0x%08x/0x%04x 0x%08x/0x%04x 0x%08x/0x%04x 0x%08x/0x%04x\n", r1, s1 & 0xFFFF, r2,
           s2 & 0xFFFF, r3, s3 & 0xFFFF, r4, s4 & 0xFFFF);

    /* LSS switches to a new stack in one instruction. */
    static uint32_t stack2[64];
    static struct PACKED {
        uint32_t offset;
        uint16_t sel;
    } new_stack, old_stack;
    new_stack.offset = (uint32_t)&stack2[64];
    new_stack.sel = SEL_DATA2;
    uint32_t esp_on, ss_on;
    __asm__ volatile("movl %%esp, %2\n\t"
                     "movw %%ss, %3\n\t"
                     "lssl %4, %%esp\n\t"
                     "movl %%esp, %0\n\t"
                     "movw %%ss, %w1\n\t"
                     "lssl %2, %%esp"
                     : "=&r"(esp_on), "=&r"(ss_on), "=m"(old_stack.offset), "=m"(old_stack.sel)
                     : "m"(new_stack)
                     : "memory");
    printf("lss -> ss=0x%04x esp=%s\n", ss_on & 0xFFFF, esp_on == new_stack.offset ? "new stack" : "wrong");
}

/* Written by the far callee in assembly, so they must be visible globals. */
volatile uint32_t far_callee_cs, far_callee_pushed_cs;

static void far_transfers(void)
{
    uint32_t cs1, cs2;
    /* JMP ptr16:32 and JMP m16:32 to another flat code segment and back. */
    __asm__ volatile("ljmp %2, $1f\n"
                     "1:\n\t"
                     "movw %%cs, %w0\n\t"
                     "ljmp %3, $2f\n"
                     "2:\n\t"
                     : "=r"(cs1)
                     : "0"(0), "i"(SEL_CODE2), "i"(SEL_CODE));
    static struct PACKED {
        uint32_t offset;
        uint16_t sel;
    } target;
    __asm__ volatile("movl $1f, %1\n\t"
                     "movw %3, %2\n\t"
                     "ljmp *%1\n"
                     "1:\n\t"
                     "movw %%cs, %w0\n\t"
                     "ljmp %4, $2f\n"
                     "2:\n\t"
                     : "=r"(cs2), "=m"(target.offset), "=m"(target.sel)
                     : "i"(SEL_CODE2), "i"(SEL_CODE), "0"(0)
                     : "memory");
    printf("jmp far ptr16:32 -> cs=0x%04x, jmp far m16:32 -> cs=0x%04x, back cs=0x%04x\n", cs1 & 0xFFFF,
           cs2 & 0xFFFF, READ_SEG(cs));

    /* CALL ptr16:32 pushes CS (as a 32-bit slot) and EIP; RETF imm16 pops
     * them and then releases imm16 bytes of arguments (SDM Vol. 2A, CALL,
     * and Vol. 2B, RET). */
    uint32_t esp_delta;
    __asm__ volatile("jmp 3f\n"
                     "far_callee:\n\t"
                     "movw %%cs, far_callee_cs\n\t"
                     "movl 4(%%esp), %%eax\n\t"
                     "movl %%eax, far_callee_pushed_cs\n\t"
                     "lret $8\n"
                     "3:\n\t"
                     "movl %%esp, %%edx\n\t"
                     "pushl $1\n\t"
                     "pushl $2\n\t"
                     "lcall %2, $far_callee\n\t"
                     "subl %%esp, %%edx\n\t"
                     "movl %%edx, %0"
                     : "=r"(esp_delta)
                     : "0"(0), "i"(SEL_CODE2)
                     : "eax", "edx", "memory");
    printf("call far 0x%02x -> callee cs=0x%04x, pushed cs=0x%04x, retf 8 -> esp delta %d\n", SEL_CODE2,
           far_callee_cs & 0xFFFF, far_callee_pushed_cs & 0xFFFF, (int)esp_delta);
    static struct PACKED {
        uint32_t offset;
        uint16_t sel;
    } callee = { 0, SEL_CODE };
    __asm__ volatile("movl $far_callee, %0\n\t"
                     "pushl $1\n\t"
                     "pushl $2\n\t"
                     "lcall *%0"
                     : "=m"(callee.offset)
                     :
                     : "eax", "memory");
    printf("call far m16:32 0x%02x -> callee cs=0x%04x\n", SEL_CODE, far_callee_cs & 0xFFFF);
}

static volatile uint32_t int_seen_vector, int_seen_cs, int_seen_if;

static void on_soft_int(struct frame *f)
{
    int_seen_vector = f->vector;
    int_seen_cs = f->cs & 0xFFFF;
    int_seen_if = !!(f->eflags & EFLAGS_IF);
    f->eax = f->eax * 3 + 1;
}

static void software_interrupts(void)
{
    set_handler(0x80, on_soft_int);
    set_handler(0x41, on_soft_int);
    uint32_t eax = 5;
    __asm__ volatile("int $0x80" : "+a"(eax)::"memory");
    printf("int 0x80 (eax=5) -> vector 0x%02x, cs=0x%04x, handler returned eax=%u\n", int_seen_vector, int_seen_cs,
           eax);
    eax = 7;
    __asm__ volatile("sti\n\tint $0x41\n\tcli" : "+a"(eax)::"memory");
    printf("int 0x41 (eax=7, IF=1) -> vector 0x%02x, saved IF=%u, eax=%u\n", int_seen_vector, int_seen_if, eax);
    set_handler(0x80, NULL);
    set_handler(0x41, NULL);
}

#define POST_PORT 0x80
#define UNKNOWN_PORT 0x2f0

static void ports(void)
{
    outb(POST_PORT, 0x42);
    printf("in 0x80 = 0x%02x, in unknown 0x%03x = 0x%02x/0x%04x/0x%08x\n", inb(POST_PORT), UNKNOWN_PORT,
           inb(UNKNOWN_PORT), inw(UNKNOWN_PORT), inl(UNKNOWN_PORT));
    outb(UNKNOWN_PORT, 0x55);
    printf("out unknown then in = 0x%02x\n", inb(UNKNOWN_PORT));

    static const uint8_t out_buf[4] = { 1, 2, 3, 4 };
    static uint8_t in_buf[6];
    uint32_t esi = (uint32_t)out_buf, edi = (uint32_t)in_buf, ecx = 4;
    __asm__ volatile("cld\n\trep outsb" : "+S"(esi), "+c"(ecx) : "d"(POST_PORT) : "memory");
    printf("rep outsb x4 to 0x80: esi advanced %u, ecx=%u\n", esi - (uint32_t)out_buf, ecx);
    ecx = 4;
    __asm__ volatile("cld\n\trep insb" : "+D"(edi), "+c"(ecx) : "d"(UNKNOWN_PORT) : "memory");
    printf("rep insb x4 from unknown: edi advanced %u, bytes %02x %02x %02x %02x %02x\n", edi - (uint32_t)in_buf,
           in_buf[0], in_buf[1], in_buf[2], in_buf[3], in_buf[4]);
}

static void msrs_and_cpuid(void)
{
    wrmsr(MSR_SYSENTER_CS, 0x0008);
    wrmsr(MSR_SYSENTER_ESP, 0x00200000);
    wrmsr(MSR_SYSENTER_EIP, 0x00101234);
    uint64_t cs = rdmsr(MSR_SYSENTER_CS), esp = rdmsr(MSR_SYSENTER_ESP), eip = rdmsr(MSR_SYSENTER_EIP);
    printf("sysenter msrs: cs=0x%08x:%08x esp=0x%08x:%08x eip=0x%08x:%08x\n", (uint32_t)(cs >> 32), (uint32_t)cs,
           (uint32_t)(esp >> 32), (uint32_t)esp, (uint32_t)(eip >> 32), (uint32_t)eip);

    /* The TSC only has to move forward; its rate differs on every machine. */
    uint64_t t0 = rdtsc();
    uint64_t t1 = rdtsc();
    uint64_t t2 = rdtsc();
    printf("rdtsc: %s\n", (t1 > t0 && t2 > t1) ? "monotonic" : "NOT monotonic");

    /* Both CPU models must report these leaf 1 EDX features (bits from SDM
     * Vol. 2A, CPUID, table 3-11). Vendor, family and the rest differ. */
    static const struct {
        const char *name;
        uint32_t bit;
    } features[] = {
        { "fpu", 0 }, { "tsc", 4 }, { "msr", 5 }, { "cx8", 8 }, { "sep", 11 },
        { "cmov", 15 }, { "mmx", 23 }, { "fxsr", 24 }, { "sse", 25 }, { "sse2", 26 },
    };
    struct cpuid_regs r = cpuid(1, 0);
    puts("cpuid 1 edx:");
    for (unsigned i = 0; i < sizeof(features) / sizeof(features[0]); i++)
        printf(" %s=%u", features[i].name, (r.edx >> features[i].bit) & 1);
    puts("\n");
    printf("cpuid 0 max leaf >= 1: %s\n", cpuid(0, 0).eax >= 1 ? "yes" : "no");
}

static void fast_system_calls(void)
{
    /* SYSCALL is not available in legacy protected mode on this CPU model
     * (EFER.SCE is clear): #UD (SDM Vol. 2B, SYSCALL). */
    __asm__ volatile(CATCH("syscall") ::: "ecx", "memory");
    report("syscall");
    /* SYSENTER with IA32_SYSENTER_CS = 0 is #GP(0) (SDM Vol. 2B, SYSENTER). */
    wrmsr(MSR_SYSENTER_CS, 0);
    __asm__ volatile(CATCH("sysenter") ::: "memory");
    report("sysenter with SYSENTER_CS=0");
}

/* The x87 and SSE registers belong to the guest while its code runs natively
 * out of the translation cache; every exit to the monitor must save them and
 * every re-entry restore them. Load known values, cause a string of exits
 * (port I/O, CPUID and an int3 handled by the guest), and read them back. */
static void fpu_state_across_exits(void)
{
    /* in: 0..127, out: 128..255, x87 in: 256..263, x87 out: 264..271 */
    static struct {
        uint32_t in[32], out[32], x87_in[2], x87_out[2];
    } s __attribute__((aligned(16)));
    for (int i = 0; i < 32; i++)
        s.in[i] = 0x01010101u * (uint32_t)(i + 1) ^ 0x5a5a0000u;
    s.x87_in[0] = 0x3fc00000u; /* 1.5f */
    s.x87_in[1] = 0x40490fdbu; /* pi */
    write_cr4(read_cr4() | CR4_OSFXSR);
    __asm__ volatile(
        "movdqa 0(%0), %%xmm0\n\t"
        "movdqa 16(%0), %%xmm1\n\t"
        "movdqa 32(%0), %%xmm2\n\t"
        "movdqa 48(%0), %%xmm3\n\t"
        "movdqa 64(%0), %%xmm4\n\t"
        "movdqa 80(%0), %%xmm5\n\t"
        "movdqa 96(%0), %%xmm6\n\t"
        "movdqa 112(%0), %%xmm7\n\t"
        "flds 256(%0)\n\t"
        "flds 260(%0)\n\t"
        "outb %%al, $0x80\n\t"
        "pushl %%ebx\n\t"
        "pushl %0\n\t"
        "xorl %%eax, %%eax\n\t"
        "cpuid\n\t"
        "popl %0\n\t"
        "popl %%ebx\n\t"
        "outb %%al, $0x80\n\t"
        "fstps 264(%0)\n\t"
        "fstps 268(%0)\n\t"
        "movdqa %%xmm0, 128(%0)\n\t"
        "movdqa %%xmm1, 144(%0)\n\t"
        "movdqa %%xmm2, 160(%0)\n\t"
        "movdqa %%xmm3, 176(%0)\n\t"
        "movdqa %%xmm4, 192(%0)\n\t"
        "movdqa %%xmm5, 208(%0)\n\t"
        "movdqa %%xmm6, 224(%0)\n\t"
        "movdqa %%xmm7, 240(%0)\n\t"
        :
        : "S"(&s)
        : "eax", "ecx", "edx", "memory");
    int same = 1;
    for (int i = 0; i < 32; i++)
        same &= s.in[i] == s.out[i];
    printf("sse registers across exits: %s\n", same ? "kept" : "LOST");
    printf("x87 stack across exits: 0x%08x 0x%08x\n", s.x87_out[0], s.x87_out[1]);
}

/* Indirect branches whose target is read through GS or CS: GS belongs to
 * the monitor on the host and CS is the translation cache's, so bt86 must
 * read these targets itself, through the guest's own segments. */
static uint32_t indirect_target_hits;
static void indirect_target(void) { indirect_target_hits++; }
static void (*const indirect_table[1])(void) = { indirect_target };

static void overridden_indirect_branches(void)
{
    __asm__ volatile("call *%%gs:(%0)" : : "r"(indirect_table) : "eax", "ecx", "edx", "memory");
    __asm__ volatile("call *%%cs:(%0)" : : "r"(indirect_table) : "eax", "ecx", "edx", "memory");
    __asm__ volatile("pushl $1f\n\t"
                     "jmp *%%gs:(%0)\n"
                     "1:"
                     : : "r"(indirect_table) : "eax", "ecx", "edx", "memory");
    printf("call gs:[table], call cs:[table], jmp gs:[table]: target reached %u times\n", indirect_target_hits);
}

int kmain(uint32_t magic, const struct multiboot_info *info)
{
    (void)info;
    puts("probe: start\n");
    printf("multiboot magic 0x%08x\n", magic);
    setup_descriptors();
    descriptor_tables();
    access_rights();
    control_registers();
    debug_registers();
    flags();
    segment_registers();
    far_transfers();
    software_interrupts();
    ports();
    msrs_and_cpuid();
    fast_system_calls();
    fpu_state_across_exits();
    overridden_indirect_branches();
    puts("probe: done\n");
    return EXIT_PASS;
}

/*
 * demo: a short, friendly tour of the machine the guest finds itself on.
 *
 * This is the first guest a reader runs. It prints what a kernel can learn
 * about its machine in about 25 lines (CPUID, the Multiboot information,
 * the control registers, its own descriptor tables), takes one exception
 * on purpose, computes something, and powers the machine off so that the
 * monitor exits with status 0. Its output differs between QEMU and bt86 by
 * design (the CPU models differ), so it is not part of the QEMU comparison.
 */
#include "guest.h"

static void print_cpuid_string(const uint32_t *words, int count)
{
    const char *s = (const char *)words;
    int n = count * 4;
    while (n > 0 && (s[n - 1] == 0 || s[n - 1] == ' '))
        n--;
    int start = 0;
    while (start < n && s[start] == ' ')
        start++;
    for (int i = start; i < n; i++)
        putc(s[i] ? s[i] : '.');
}

static void cpu(void)
{
    struct cpuid_regs r = cpuid(0, 0);
    uint32_t vendor[3] = { r.ebx, r.edx, r.ecx };
    uint32_t max_leaf = r.eax;
    r = cpuid(1, 0);
    uint32_t family = (r.eax >> 8) & 0xF, model = (r.eax >> 4) & 0xF;
    if (family == 0xF)
        family += (r.eax >> 20) & 0xFF;
    if (family == 0x6 || family >= 0xF)
        model |= ((r.eax >> 16) & 0xF) << 4;
    puts("cpu:      vendor \"");
    print_cpuid_string(vendor, 3);
    printf("\", family %u, model %u, stepping %u, max leaf %u\n", family, model, r.eax & 0xF, max_leaf);

    if (cpuid(0x80000000, 0).eax >= 0x80000004) {
        uint32_t brand[12];
        for (uint32_t i = 0; i < 3; i++) {
            struct cpuid_regs b = cpuid(0x80000002 + i, 0);
            brand[i * 4] = b.eax;
            brand[i * 4 + 1] = b.ebx;
            brand[i * 4 + 2] = b.ecx;
            brand[i * 4 + 3] = b.edx;
        }
        puts("cpu:      brand \"");
        print_cpuid_string(brand, 12);
        puts("\"\n");
    }

    /* Leaf 1 EDX feature bits, SDM Vol. 2A, CPUID, table 3-11. */
    static const char *const edx_names[32] = {
        "fpu", "vme", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", NULL, "sep", "mtrr", "pge", "mca",
        "cmov", "pat", "pse36", "psn", "clfsh", NULL, "ds", "acpi", "mmx", "fxsr", "sse", "sse2", "ss", "htt",
        "tm", NULL, "pbe",
    };
    puts("cpu:      features");
    for (int b = 0; b < 32; b++)
        if ((r.edx >> b) & 1 && edx_names[b])
            printf(" %s", edx_names[b]);
    puts("\n");

    /* ECX bit 31 says a hypervisor is present; leaf 0x40000000 then names
     * it (a convention shared by KVM, Hyper-V, VMware and Xen). */
    if (r.ecx & (1u << 31)) {
        struct cpuid_regs h = cpuid(0x40000000, 0);
        uint32_t sig[3] = { h.ebx, h.ecx, h.edx };
        puts("cpu:      hypervisor \"");
        print_cpuid_string(sig, 3);
        printf("\", max hypervisor leaf 0x%08x\n", h.eax);
    } else {
        puts("cpu:      no hypervisor bit in CPUID\n");
    }
}

static void boot_info(uint32_t magic, const struct multiboot_info *info)
{
    printf("boot:     multiboot magic 0x%08x, info at %p", magic, (const void *)info);
    if (info->flags & MBI_LOADER_NAME)
        printf(", loader \"%s\"", (const char *)info->boot_loader_name);
    puts("\n");
    if (info->flags & MBI_CMDLINE)
        printf("boot:     command line \"%s\"\n", (const char *)info->cmdline);
    if (info->flags & MBI_MEM)
        printf("memory:   %u KiB below 1 MiB, %u KiB above\n", info->mem_lower, info->mem_upper);
    if (info->flags & MBI_MMAP) {
        uint32_t p = info->mmap_addr, end = info->mmap_addr + info->mmap_length;
        while (p < end) {
            const struct multiboot_mmap_entry *e = (const void *)p;
            uint32_t kib = (uint32_t)(e->len >> 10);
            printf("memory:   0x%08x-0x%08x %8u KiB %s\n", (uint32_t)e->addr, (uint32_t)(e->addr + e->len - 1),
                   kib, e->type == 1 ? "available" : "reserved");
            p += e->size + 4;
        }
    }
    if (info->flags & MBI_MODS) {
        printf("modules:  %u\n", info->mods_count);
        const struct multiboot_module *m = (const void *)info->mods_addr;
        for (uint32_t i = 0; i < info->mods_count; i++)
            printf("module:   %u bytes at %p \"%s\"\n", m[i].mod_end - m[i].mod_start, (void *)m[i].mod_start,
                   m[i].string ? (const char *)m[i].string : "");
    }
}

static volatile uint32_t bp_vector, bp_return;
static void on_breakpoint(struct frame *f)
{
    bp_vector = f->vector;
    bp_return = f->eip;
}

static uint32_t collatz_steps(uint32_t n)
{
    uint32_t steps = 0;
    while (n != 1) {
        n = (n & 1) ? 3 * n + 1 : n / 2;
        steps++;
    }
    return steps;
}

int kmain(uint32_t magic, const struct multiboot_info *info)
{
    puts("bt86 demo guest: a 32-bit kernel looks at the machine it runs on\n");
    cpu();
    boot_info(magic, info);

    uint32_t cr0 = read_cr0();
    printf("control:  cr0=0x%08x (PE=%u PG=%u) cr4=0x%08x eflags=0x%08x\n", cr0, cr0 & CR0_PE,
           !!(cr0 & CR0_PG), read_cr4(), read_eflags());
    struct dtr g = sgdt(), i = sidt();
    printf("tables:   our GDTR = %p/0x%04x (%u descriptors), IDTR = %p/0x%04x (256 gates)\n", (void *)g.base,
           g.limit, (g.limit + 1) / 8, (void *)i.base, i.limit);

    extern const char demo_int3[];
    set_handler(3, on_breakpoint);
    __asm__ volatile("demo_int3: int3" ::: "memory");
    set_handler(3, NULL);
    printf("int3:     handled vector %u; it returned %u byte past the int3, as a trap should\n", bp_vector,
           bp_return - (uint32_t)demo_int3);

    uint32_t best = 1, most = 0;
    for (uint32_t n = 1; n < 10000; n++) {
        uint32_t s = collatz_steps(n);
        if (s > most) {
            most = s;
            best = n;
        }
    }
    printf("compute:  below 10000, %u takes the most Collatz steps (%u)\n", best, most);
    puts("bye:      powering off through port 0x604\n");
    poweroff();
}

/*
 * The bt86 guest support library: everything a test guest needs to talk to
 * the virtual PC, in one header.
 *
 * The library owns the platform contract that bt86 shares with QEMU's `pc`
 * machine: Multiboot v1 entry, COM1 output, exit through isa-debug-exit at
 * port 0xF4, power-off through the ACPI PM1a control port 0x604, a GDT and
 * an IDT of our own, and a way to run an instruction that faults and report
 * the fault. It must not depend on anything but the host C toolchain, and
 * it must never print an absolute address that could differ between two
 * machines: fault addresses are reported relative to a label.
 */
#ifndef BT86_GUEST_H
#define BT86_GUEST_H

typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef unsigned long long uint64_t;
typedef signed char int8_t;
typedef short int16_t;
typedef int int32_t;
typedef long long int64_t;
typedef unsigned int size_t;
typedef __builtin_va_list va_list;
#define va_start(ap, last) __builtin_va_start(ap, last)
#define va_arg(ap, type) __builtin_va_arg(ap, type)
#define va_end(ap) __builtin_va_end(ap)
#define NULL ((void *)0)

#define NORETURN __attribute__((noreturn))
#define PACKED __attribute__((packed))

/* ---------------------------------------------------------------------
 * Exit codes.
 *
 * Writing v to isa-debug-exit makes QEMU (and bt86) exit with status
 * (v << 1) | 1, so no guest can exit with status 0 this way; power-off is
 * the only road to 0. Every conformance guest ends with EXIT_PASS when it
 * has run to its end, and EXIT_FAIL when the library met something it
 * cannot go on from (an exception nobody expected).
 * ------------------------------------------------------------------- */
#define DEBUG_EXIT_PORT 0xF4
#define EXIT_PASS 0x10 /* process status 33 */
#define EXIT_FAIL 0x11 /* process status 35 */

/* ACPI PM1a control register of the PIIX4 power-management function, at
 * the I/O base 0x600 that the firmware of QEMU's `pc` machine assigns.
 * SLP_EN (bit 13) with SLP_TYP 0 enters S5, soft off (ACPI 6.4 section
 * 4.8.3.2.1; QEMU maps sleep type 0 to S5). */
#define POWEROFF_PORT 0x604
#define POWEROFF_VALUE 0x2000

/* ---------------------------------------------------------------------
 * Port I/O and other single instructions.
 * ------------------------------------------------------------------- */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint16_t inw(uint16_t port)
{
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static inline uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline uint32_t read_eflags(void)
{
    uint32_t v;
    __asm__ volatile("pushfl; popl %0" : "=r"(v));
    return v;
}
static inline void write_eflags(uint32_t v) { __asm__ volatile("pushl %0; popfl" ::"r"(v) : "memory", "cc"); }
static inline void cli(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void sti(void) { __asm__ volatile("sti" ::: "memory"); }

#define DEFINE_CR(n)                                                          \
    static inline uint32_t read_cr##n(void)                                   \
    {                                                                         \
        uint32_t v;                                                           \
        __asm__ volatile("movl %%cr" #n ", %0" : "=r"(v));                    \
        return v;                                                             \
    }                                                                         \
    static inline void write_cr##n(uint32_t v)                                \
    {                                                                         \
        __asm__ volatile("movl %0, %%cr" #n ::"r"(v) : "memory");             \
    }
DEFINE_CR(0)
DEFINE_CR(2)
DEFINE_CR(3)
DEFINE_CR(4)

#define CR0_PE (1u << 0)
#define CR0_MP (1u << 1)
#define CR0_EM (1u << 2)
#define CR0_TS (1u << 3)
#define CR0_ET (1u << 4)
#define CR0_NE (1u << 5)
#define CR0_WP (1u << 16)
#define CR0_AM (1u << 18)
#define CR0_NW (1u << 29)
#define CR0_CD (1u << 30)
#define CR0_PG (1u << 31)
#define CR4_DE (1u << 3)
#define CR4_PSE (1u << 4)
#define CR4_OSFXSR (1u << 9)
#define CR4_OSXMMEXCPT (1u << 10)
#define EFLAGS_CF (1u << 0)
#define EFLAGS_ZF (1u << 6)
#define EFLAGS_TF (1u << 8)
#define EFLAGS_IF (1u << 9)
#define EFLAGS_OF (1u << 11)

static inline uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((uint64_t)hi << 32) | lo;
}
static inline void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}
#define MSR_SYSENTER_CS 0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

struct cpuid_regs {
    uint32_t eax, ebx, ecx, edx;
};
static inline struct cpuid_regs cpuid(uint32_t leaf, uint32_t subleaf)
{
    struct cpuid_regs r;
    __asm__ volatile("cpuid" : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx) : "a"(leaf), "c"(subleaf));
    return r;
}

/* The operand of LGDT/LIDT/SGDT/SIDT: a 16-bit limit and a 32-bit base
 * (SDM Vol. 3A section 3.5.1, figure 3-11). */
struct PACKED dtr {
    uint16_t limit;
    uint32_t base;
};
static inline void lgdt(const struct dtr *d) { __asm__ volatile("lgdt %0" ::"m"(*d) : "memory"); }
static inline void lidt(const struct dtr *d) { __asm__ volatile("lidt %0" ::"m"(*d) : "memory"); }
static inline struct dtr sgdt(void)
{
    struct dtr d;
    __asm__ volatile("sgdt %0" : "=m"(d));
    return d;
}
static inline struct dtr sidt(void)
{
    struct dtr d;
    __asm__ volatile("sidt %0" : "=m"(d));
    return d;
}

#define READ_SEG(reg)                                                         \
    ({                                                                        \
        uint16_t v_;                                                          \
        __asm__ volatile("movw %%" #reg ", %0" : "=r"(v_));                   \
        v_;                                                                   \
    })

void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
size_t strlen(const char *s);
int strncmp(const char *a, const char *b, size_t n);

/* ---------------------------------------------------------------------
 * COM1 output and printf.
 * ------------------------------------------------------------------- */
void serial_init(void);
void putc(char c);
void puts(const char *s); /* No newline is added. */
/* Formats %s %c %d %u %x %p and %%, with an optional '0' flag and width
 * (for example %08x); %p prints 0x and eight hex digits. */
void printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Exit through isa-debug-exit: status (code << 1) | 1. */
void NORETURN exit(uint8_t code);
/* Power the machine off through the ACPI PM1a control port: status 0. */
void NORETURN poweroff(void);

/* ---------------------------------------------------------------------
 * Multiboot v1 information (Multiboot specification 0.6.96, section 3.3).
 * ------------------------------------------------------------------- */
#define MULTIBOOT_BOOTLOADER_MAGIC 0x2BADB002
#define MBI_MEM (1u << 0)
#define MBI_CMDLINE (1u << 2)
#define MBI_MODS (1u << 3)
#define MBI_MMAP (1u << 6)
#define MBI_LOADER_NAME (1u << 9)

struct PACKED multiboot_info {
    uint32_t flags;
    uint32_t mem_lower, mem_upper;
    uint32_t boot_device;
    uint32_t cmdline;
    uint32_t mods_count, mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length, mmap_addr;
    uint32_t drives_length, drives_addr;
    uint32_t config_table;
    uint32_t boot_loader_name;
};
struct PACKED multiboot_mmap_entry {
    uint32_t size; /* Size of the rest of the entry, not counting this field. */
    uint64_t addr, len;
    uint32_t type;
};
struct PACKED multiboot_module {
    uint32_t mod_start, mod_end, string, reserved;
};

/* Every guest defines kmain. Returning from it exits with the returned
 * code through isa-debug-exit. */
int kmain(uint32_t magic, const struct multiboot_info *info);

/* Looks up `key=value` in a Multiboot command line and returns the value as
 * a number (decimal, or hex with 0x), or `fallback` when it is absent. */
uint32_t cmdline_number(const char *cmdline, const char *key, uint32_t fallback);
/* Copies the value of `key=value` into buf (NUL-terminated); returns 0 when
 * the key is absent. Words without '=' (QEMU passes the kernel's file name
 * first) are ignored. */
int cmdline_string(const char *cmdline, const char *key, char *buf, size_t len);

/* ---------------------------------------------------------------------
 * Descriptor tables.
 * ------------------------------------------------------------------- */
#define SEL_CODE 0x08 /* flat 32-bit code, DPL 0 */
#define SEL_DATA 0x10 /* flat 32-bit read/write data, DPL 0 */
#define GDT_ENTRIES 24 /* selectors 0x18-0xB8 are spares for tests */

/* Access bytes (SDM Vol. 3A section 3.4.5, table 3-1). Code and data types
 * here have the accessed bit set so that the CPU never needs to write it,
 * which keeps the GDT's bytes identical on every implementation. */
#define ACC_CODE 0x9B        /* present, DPL 0, execute/read, accessed */
#define ACC_CODE_XONLY 0x99  /* present, DPL 0, execute-only, accessed */
#define ACC_CODE_CONF 0x9F   /* present, DPL 0, conforming execute/read, accessed */
#define ACC_DATA 0x93        /* present, DPL 0, read/write, accessed */
#define ACC_DATA_RO 0x91     /* present, DPL 0, read-only, accessed */
#define ACC_DATA_DOWN 0x97   /* present, DPL 0, read/write, expand-down, accessed */
#define ACC_DATA_DPL3 0xF3   /* present, DPL 3, read/write, accessed */
#define ACC_LDT 0x82         /* present, system, LDT */
#define ACC_TSS 0x89         /* present, system, available 32-bit TSS */
#define ACC_CALL_GATE 0x8C   /* present, system, 32-bit call gate */
#define ACC_INT_GATE 0x8E    /* present, system, 32-bit interrupt gate */
#define ACC_NOT_PRESENT 0x7F /* mask that clears the P bit */
#define GRAN_4K_32 0xC       /* G=1 (4 KiB units), D/B=1 */
#define GRAN_BYTE_32 0x4     /* G=0 (byte units), D/B=1 */

extern uint64_t gdt[GDT_ENTRIES];
/* Builds a segment descriptor from its fields. `flags` is the high nibble
 * of byte 6: G, D/B, L, AVL. */
uint64_t make_descriptor(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags);
/* Writes descriptor `d` into the GDT slot of selector `sel`. */
void gdt_set(uint16_t sel, uint64_t d);
/* Loads the GDTR with our GDT (limit covering `entries` descriptors) and
 * reloads CS, DS, ES, FS, GS and SS with the flat selectors. */
void gdt_load(unsigned entries);

/* The IDT has 256 32-bit interrupt gates to the stubs in isr.S. */
extern uint64_t idt[256];
void idt_load(void);
/* Sets or clears the present bit of a gate (SDM Vol. 3A section 6.11). */
void idt_set_present(uint8_t vector, int present);

/* ---------------------------------------------------------------------
 * Exceptions and interrupts.
 * ------------------------------------------------------------------- */

/* What isr_common saves, from the lowest address up. */
struct frame {
    uint32_t gs, fs, es, ds;
    uint32_t edi, esi, ebp, esp_unused, ebx, edx, ecx, eax;
    uint32_t vector, error;
    uint32_t eip, cs, eflags;
};
typedef void (*handler_fn)(struct frame *);
/* Installs a C handler for one vector (NULL to remove it). A vector with a
 * handler is given to the handler even while a CATCH is armed. */
void set_handler(uint8_t vector, handler_fn fn);

/* The last fault caught by a CATCH block. */
struct caught {
    uint32_t taken;  /* 1 if a fault was caught */
    uint32_t vector; /* exception vector */
    uint32_t error;  /* error code, or 0 for vectors without one */
    uint32_t eip;    /* EIP pushed by the CPU (absolute: never print it) */
    uint32_t base;   /* address of the first instruction of the block */
};
extern volatile struct caught caught;

/* Globals used by CATCH; the dispatcher reads them. */
extern volatile uint32_t catch_armed, catch_resume, catch_esp;

/*
 * CATCH(code) expands to the text of an inline-assembly block that runs
 * `code` with a fault catcher armed:
 *
 *     __asm__ volatile(CATCH("movw %%ax, %%ds") :: "a"(sel) : "memory");
 *     report("mov ds, 0x28");
 *
 * If an instruction in `code` raises an exception that has no installed
 * handler, the dispatcher records the vector, the error code and the
 * pushed EIP in `caught` and resumes after the block with the stack
 * pointer the block started with. Inside `code`, `.Lstart%=` names the
 * block's first instruction; faults are reported relative to it. Use only
 * local labels other than 8 and 9, and double every % of a register name,
 * because the block is extended assembly.
 */
#define CATCH(code)                                                           \
    "movl $0, caught\n\t"                                                     \
    "movl $.Lstart%=, caught+16\n\t"                                          \
    "movl $.Lend%=, catch_resume\n\t"                                         \
    "movl %%esp, catch_esp\n\t"                                               \
    "movl $1, catch_armed\n\t"                                                \
    ".Lstart%=:\n\t" code "\n\t"                                              \
    ".Lend%=:\n\t"                                                            \
    "movl catch_esp, %%esp\n\t"                                               \
    "movl $0, catch_armed\n\t"

/* Prints "name: #GP(0x0010) at +4" for a caught fault, or "name: no fault".
 * Exceptions without an error code print no parentheses. */
void report(const char *name);
/* The short name of a vector ("GP", "UD", ...), or NULL. */
const char *vector_name(uint32_t vector);
/* Prints "#GP(0x0010)" or "#UD" or "vector 0x80" for a vector and code. */
void print_exception(uint32_t vector, uint32_t error);
/* 1 if the CPU pushes an error code for this vector. */
int has_error_code(uint32_t vector);

/* Called from isr.S. */
void isr_dispatch(struct frame *f);

#endif

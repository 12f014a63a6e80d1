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
/* Formats like printf into buf (always NUL-terminated when size > 0) and
 * returns the length the whole output would have had. */
size_t snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

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

/* What isr_common saves, from the lowest address up. The CPU pushes the
 * interrupted SS:ESP only when the interrupt changed the privilege level
 * (SDM Vol. 3A section 6.12.1, figure 6-4), so `esp` and `ss` are valid
 * only when (cs & 3) != 0, that is, when the interrupted code ran at
 * CPL > 0. */
struct frame {
    uint32_t gs, fs, es, ds;
    uint32_t edi, esi, ebp, esp_unused, ebx, edx, ecx, eax;
    uint32_t vector, error;
    uint32_t eip, cs, eflags;
    uint32_t esp, ss; /* only when the interrupted code ran at CPL > 0 */
};
typedef void (*handler_fn)(struct frame *);
/* Installs a C handler for one vector (NULL to remove it). A vector with a
 * handler is given to the handler even while a CATCH is armed. */
void set_handler(uint8_t vector, handler_fn fn);
/* Called from a handler: when the handler returns, isr_common restores the
 * registers from `next` instead of from the interrupted frame and returns
 * with IRET through it. This is how a kernel switches tasks (each task's
 * frame sits on its own ring-0 stack) and how run_user returns to the
 * kernel. */
void frame_switch(struct frame *next);
/* The privilege level the caller runs at: the RPL of CS (SDM Vol. 3A
 * section 5.5). */
static inline uint32_t current_cpl(void) { return READ_SEG(cs) & 3u; }

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

/* Called from isr.S; returns the frame to resume (see frame_switch). */
struct frame *isr_dispatch(struct frame *f);

/* ---------------------------------------------------------------------
 * User mode (lib/user.c): ring-3 segments, the TSS, system calls.
 *
 * user_init() gives up the spare GDT slots 0x18-0x28 to the layout that
 * SYSENTER/SYSEXIT require (SDM Vol. 2B, SYSENTER and SYSEXIT): kernel code
 * and data at SYSENTER_CS (0x08) and SYSENTER_CS + 8, user code and data
 * at SYSENTER_CS + 16 and + 24, each with RPL 3. Guests that never call
 * it keep every spare slot.
 * ------------------------------------------------------------------- */
#define SEL_UCODE 0x1B /* flat 32-bit code, DPL 3, RPL 3 */
#define SEL_UDATA 0x23 /* flat 32-bit read/write data, DPL 3, RPL 3 */
#define SEL_USER_TSS 0x28   /* the 32-bit TSS */
#define ACC_CODE_DPL3 0xFB  /* present, DPL 3, execute/read, accessed */
#define ACC_TSS_BUSY 0x8B   /* present, system, busy 32-bit TSS */
#define ACC_TRAP_GATE 0x8F  /* present, system, 32-bit trap gate */
#define ACC_DPL3 0x60       /* the DPL field of an access byte, set to 3 */
#define EFLAGS_IOPL3 (3u << 12)
#define EFLAGS_IOPL_MASK (3u << 12)

/* The 32-bit TSS (SDM Vol. 3A section 8.2.1, figure 8-2), followed by an
 * I/O permission bitmap for ports 0-0x3FF and the all-ones byte that must
 * end every bitmap (SDM Vol. 1 section 19.5.2). */
#define TSS_IO_PORTS 0x400
struct PACKED tss {
    uint32_t link;
    uint32_t esp0, ss0, esp1, ss1, esp2, ss2;
    uint32_t cr3, eip, eflags, eax, ecx, edx, ebx, esp, ebp, esi, edi;
    uint32_t es, cs, ss, ds, fs, gs, ldt;
    uint16_t trap, iomap_base;
    uint8_t io_bitmap[TSS_IO_PORTS / 8];
    uint8_t io_bitmap_end; /* always 0xFF */
};
extern struct tss user_tss;
/* The top of the library's ring-0 stack, which user_init puts in
 * TSS.ESP0. */
extern uint8_t kernel_stack_top[];

/* Installs the user segments and the TSS (SS0:ESP0 = 0x10:esp0), loads TR,
 * makes vector 0x80 a DPL-3 trap gate and installs the library's system
 * call handler there. The TSS starts without an I/O permission bitmap (its
 * base lies beyond the TSS limit), so every in and out at CPL > IOPL
 * raises #GP(0). */
void user_init(uint32_t esp0);
/* Sets the access byte (type, DPL and present bit) of an IDT gate. */
void idt_set_access(uint8_t vector, uint8_t access);
/* Resumes a frame of the isr_common shape outside any handler: pops it and
 * returns through IRET (the first entry to a task). */
void NORETURN frame_resume(struct frame *f);
/* Switches the I/O permission bitmap on (every port denied until
 * tss_allow_port) or off. */
void tss_io_bitmap(int on);
/* Allows (1) or denies (0) one port in the I/O permission bitmap. */
void tss_allow_port(uint16_t port, int allow);

/* System call numbers (EAX), after Linux i386's, with arguments in EBX,
 * ECX and EDX and the result in EAX. */
#define SYS_EXIT 1  /* ebx = status */
#define SYS_WRITE 4 /* ebx = fd (ignored), ecx = buffer, edx = length */
#define SYS_YIELD 158
/* The longest SYS_WRITE the kernel accepts at once. */
#define SYS_WRITE_MAX 4096

/* Runs fn at CPL 3 on the stack that ends at user_stack_top, entered with
 * IRET (SDM Vol. 3A section 6.12.1: IRET to an outer level pops SS:ESP),
 * with the given EFLAGS (IOPL and IF included), CS = SEL_UCODE and DS, ES,
 * FS, GS, SS = SEL_UDATA. Returns the status fn passes to SYS_EXIT, or 0 if
 * fn returns. */
uint32_t run_user(void (*fn)(void), void *user_stack_top, uint32_t eflags);
/* Ring-3 code that makes SYS_EXIT with status 0: run_user's tasks return
 * to it, and a kernel may push it as the return address of its own. */
extern const char user_exit_stub[];
/* The library's handler for vector 0x80: SYS_WRITE and SYS_EXIT (which
 * returns from run_user); any other number returns -1 in EAX. */
void sys_default(struct frame *f);
/* Performs SYS_WRITE for the frame of a system call: writes ECX[0..EDX] to
 * COM1 and returns the count in EAX. Guests with their own handler for
 * vector 0x80 call it for SYS_WRITE. */
void sys_write(struct frame *f);
/* Writes len bytes to COM1: directly at CPL 0, and through int 0x80
 * (SYS_WRITE) at CPL > 0, where in and out are not allowed. printf, puts
 * and putc all come here, so they work at every CPL. */
void console_write(const char *s, size_t len);

/* ---------------------------------------------------------------------
 * Interrupt hardware (lib/irq.c): the 8259A PIC pair, the 8254 PIT and
 * the CMOS RTC, at the ports of the PC/AT.
 * ------------------------------------------------------------------- */
#define PIC1_CMD 0x20
#define PIC1_DATA 0x21
#define PIC2_CMD 0xA0
#define PIC2_DATA 0xA1
#define PIC_EOI 0x20          /* OCW2: non-specific EOI */
#define PIC_SPECIFIC_EOI 0x60 /* OCW2: specific EOI, OR the level */
#define PIC_READ_IRR 0x0A     /* OCW3: the next read of the command port gives IRR */
#define PIC_READ_ISR 0x0B     /* OCW3: ... ISR */
#define PIT_CH0 0x40
#define PIT_CH2 0x42
#define PIT_CMD 0x43
#define PIT_HZ 1193182u /* the PIT's input clock, 14.31818 MHz / 12 */
#define PORT_B 0x61     /* PC/AT system control port B */
#define PORT_B_GATE2 0x01   /* gate of PIT channel 2 */
#define PORT_B_SPEAKER 0x02 /* speaker data enable */
#define PORT_B_OUT2 0x20    /* output of PIT channel 2 (read only) */
#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71

/* Programs both PICs with ICW1-ICW4 (edge triggered, cascade on IRQ 2,
 * 8086 mode) so that IRQ 0-7 use vectors master_base.. and IRQ 8-15
 * slave_base.., and leaves every line masked. */
void pic_remap(uint8_t master_base, uint8_t slave_base);
/* Sets the interrupt mask registers (OCW1): bit n of `mask` masks IRQ n. */
void pic_set_mask(uint16_t mask);
uint16_t pic_get_mask(void);
/* Sends a non-specific EOI for `irq` (to the slave too for IRQ 8-15). */
void pic_eoi(uint8_t irq);
/* Reads IRR or ISR of both PICs with OCW3: slave in the high byte. */
uint16_t pic_read_irr(void);
uint16_t pic_read_isr(void);
/* Programs PIT channel 0 as a rate generator (mode 2) of `hz` ticks a
 * second, lobyte/hibyte access, binary counting. */
void pit_set_rate(uint32_t hz);
/* Busy-waits `ms` milliseconds (at most 54) with PIT channel 2 in mode 0,
 * gated through port 0x61, polling its output in bit 5 of port 0x61: the
 * calibration loop of PC kernels. It depends on no interrupt. */
void pit_wait_ms(uint32_t ms);
uint8_t cmos_read(uint8_t reg);
void cmos_write(uint8_t reg, uint8_t value);

#endif

/*
 * The C half of the guest support library: COM1, printf, exit and
 * power-off, the GDT and IDT, exception dispatch and the fault catcher.
 *
 * It owns the machine state every guest starts from (our descriptor tables,
 * a null LDTR, masked PICs) and must not print anything that depends on the
 * machine it runs on, such as absolute addresses of code or data.
 */
#include "guest.h"

/* ---------------------------------------------------------------------
 * Freestanding string functions. GCC may emit calls to memset and memcpy
 * even with -ffreestanding, so they must exist.
 * ------------------------------------------------------------------- */
void *memset(void *d, int c, size_t n)
{
    uint8_t *p = d;
    while (n--)
        *p++ = (uint8_t)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    uint8_t *p = d;
    const uint8_t *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (; n; n--, a++, b++) {
        if (*a != *b)
            return (uint8_t)*a - (uint8_t)*b;
        if (!*a)
            return 0;
    }
    return 0;
}

/* ---------------------------------------------------------------------
 * COM1: a 16550A UART at 0x3F8. Register offsets follow the National
 * Semiconductor PC16550D data sheet.
 * ------------------------------------------------------------------- */
#define COM1 0x3F8
#define UART_THR 0 /* transmit holding register (DLAB=0) */
#define UART_IER 1 /* interrupt enable (DLAB=0) */
#define UART_DLL 0 /* divisor latch, low byte (DLAB=1) */
#define UART_DLM 1 /* divisor latch, high byte (DLAB=1) */
#define UART_FCR 2 /* FIFO control */
#define UART_LCR 3 /* line control */
#define UART_MCR 4 /* modem control */
#define UART_LSR 5 /* line status */
#define LCR_DLAB 0x80
#define LCR_8N1 0x03
#define LSR_THRE 0x20 /* transmit holding register empty */

void serial_init(void)
{
    outb(COM1 + UART_IER, 0x00);     /* Polled output: no interrupts. */
    outb(COM1 + UART_LCR, LCR_DLAB); /* Expose the divisor latch. */
    outb(COM1 + UART_DLL, 0x01);     /* Divisor 1: 115200 baud. */
    outb(COM1 + UART_DLM, 0x00);
    outb(COM1 + UART_LCR, LCR_8N1);  /* 8 data bits, no parity, 1 stop. */
    outb(COM1 + UART_FCR, 0xC7);     /* Enable and clear both FIFOs. */
    outb(COM1 + UART_MCR, 0x03);     /* DTR and RTS; OUT2 off, so no IRQ 4. */
}

static void uart_putc(char c)
{
    /* Wait until the transmitter can take a byte. Emulated UARTs say so at
     * once; the loop is for real hardware. */
    while (!(inb(COM1 + UART_LSR) & LSR_THRE))
        ;
    outb(COM1 + UART_THR, (uint8_t)c);
}

void console_write(const char *s, size_t len)
{
    if (current_cpl() == 0) {
        for (size_t i = 0; i < len; i++)
            uart_putc(s[i]);
        return;
    }
    /* At CPL > IOPL the out instruction raises #GP(0) (SDM Vol. 1 section
     * 19.5.1), so user code asks the kernel to write for it. */
    uint32_t eax = SYS_WRITE;
    __asm__ volatile("int $0x80" : "+a"(eax) : "b"(1), "c"(s), "d"(len) : "memory");
}

void putc(char c) { console_write(&c, 1); }

void puts(const char *s) { console_write(s, strlen(s)); }

/* printf and snprintf write through COM1 (console_write). */
#define FORMAT_SINK console_write
#include "format.h"

void printf(const char *fmt, ...)
{
    struct out o = { .n = 0, .dst = NULL };
    va_list ap;
    va_start(ap, fmt);
    format(&o, fmt, ap);
    va_end(ap);
    out_flush(&o);
}

size_t snprintf(char *buf, size_t size, const char *fmt, ...)
{
    struct out o = { .n = 0, .dst = buf, .cap = size, .len = 0 };
    va_list ap;
    va_start(ap, fmt);
    format(&o, fmt, ap);
    va_end(ap);
    if (size)
        buf[o.len < size ? o.len : size - 1] = 0;
    return o.len;
}

void NORETURN exit(uint8_t code)
{
    outb(DEBUG_EXIT_PORT, code);
    /* Without an isa-debug-exit device the write does nothing; stop here. */
    for (;;)
        __asm__ volatile("cli; hlt");
}

void NORETURN poweroff(void)
{
    outw(POWEROFF_PORT, POWEROFF_VALUE);
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* ---------------------------------------------------------------------
 * Command line.
 * ------------------------------------------------------------------- */

/* Finds `key=` at the start of a word and returns the value's first
 * character, or NULL. */
static const char *cmdline_find(const char *s, const char *key)
{
    size_t k = strlen(key);
    if (!s)
        return NULL;
    while (*s) {
        while (*s == ' ')
            s++;
        if (!strncmp(s, key, k) && s[k] == '=')
            return s + k + 1;
        while (*s && *s != ' ')
            s++;
    }
    return NULL;
}

uint32_t cmdline_number(const char *cmdline, const char *key, uint32_t fallback)
{
    const char *v = cmdline_find(cmdline, key);
    uint32_t n = 0, base = 10;
    if (!v || !*v || *v == ' ')
        return fallback;
    if (v[0] == '0' && v[1] == 'x') {
        base = 16;
        v += 2;
    }
    for (; *v && *v != ' '; v++) {
        uint32_t d;
        if (*v >= '0' && *v <= '9')
            d = *v - '0';
        else if (base == 16 && *v >= 'a' && *v <= 'f')
            d = *v - 'a' + 10;
        else
            return fallback;
        n = n * base + d;
    }
    return n;
}

int cmdline_string(const char *cmdline, const char *key, char *buf, size_t len)
{
    const char *v = cmdline_find(cmdline, key);
    size_t n = 0;
    if (!v || !len)
        return 0;
    while (v[n] && v[n] != ' ' && n + 1 < len) {
        buf[n] = v[n];
        n++;
    }
    buf[n] = 0;
    return 1;
}

/* ---------------------------------------------------------------------
 * GDT (SDM Vol. 3A section 3.4.5).
 * ------------------------------------------------------------------- */
uint64_t gdt[GDT_ENTRIES] __attribute__((aligned(8)));

uint64_t make_descriptor(uint32_t base, uint32_t limit, uint8_t access, uint8_t flags)
{
    uint32_t lo = (limit & 0xFFFF) | (base << 16);
    uint32_t hi = ((base >> 16) & 0xFF) | ((uint32_t)access << 8) | (limit & 0xF0000) |
                  ((uint32_t)(flags & 0xF) << 20) | (base & 0xFF000000);
    return ((uint64_t)hi << 32) | lo;
}

void gdt_set(uint16_t sel, uint64_t d)
{
    if ((sel >> 3) < GDT_ENTRIES)
        gdt[sel >> 3] = d;
}

void gdt_load(unsigned entries)
{
    struct dtr d = { (uint16_t)(entries * 8 - 1), (uint32_t)gdt };
    lgdt(&d);
    /* A new GDTR does not change the segment registers' hidden parts; reload
     * every one of them so that all describe our own descriptors (SDM
     * Vol. 3A section 3.4.3). CS needs a far jump. */
    __asm__ volatile("ljmp %0, $1f\n"
                     "1:\n\t"
                     "movw %w1, %%ds\n\t"
                     "movw %w1, %%es\n\t"
                     "movw %w1, %%fs\n\t"
                     "movw %w1, %%gs\n\t"
                     "movw %w1, %%ss\n\t"
                     :
                     : "i"(SEL_CODE), "r"(SEL_DATA)
                     : "memory");
}

/* ---------------------------------------------------------------------
 * IDT (SDM Vol. 3A section 6.11).
 * ------------------------------------------------------------------- */
uint64_t idt[256] __attribute__((aligned(8)));
extern const uint32_t isr_stub_table[256];

void idt_load(void)
{
    for (int v = 0; v < 256; v++) {
        uint32_t off = isr_stub_table[v];
        uint32_t lo = (off & 0xFFFF) | ((uint32_t)SEL_CODE << 16);
        uint32_t hi = (off & 0xFFFF0000) | ((uint32_t)ACC_INT_GATE << 8);
        idt[v] = ((uint64_t)hi << 32) | lo;
    }
    struct dtr d = { sizeof(idt) - 1, (uint32_t)idt };
    lidt(&d);
}

void idt_set_present(uint8_t vector, int present)
{
    uint64_t p = 1ull << 47;
    if (present)
        idt[vector] |= p;
    else
        idt[vector] &= ~p;
}

/* ---------------------------------------------------------------------
 * Exception dispatch and the fault catcher.
 * ------------------------------------------------------------------- */
static handler_fn handlers[256];
volatile struct caught caught;
volatile uint32_t catch_armed, catch_resume, catch_esp;

void set_handler(uint8_t vector, handler_fn fn) { handlers[vector] = fn; }

int has_error_code(uint32_t v)
{
    return v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21 || v == 29 || v == 30;
}

const char *vector_name(uint32_t v)
{
    /* Mnemonics from SDM Vol. 3A section 6.15, table 6-1. */
    static const char *const names[32] = {
        "DE", "DB", "NMI", "BP", "OF", "BR", "UD", "NM", "DF", "CSO", "TS",
        "NP", "SS", "GP",  "PF", NULL, "MF", "AC", "MC", "XM", "VE",  "CP",
    };
    return v < 32 ? names[v] : NULL;
}

void print_exception(uint32_t vector, uint32_t error)
{
    const char *name = vector_name(vector);
    if (!name)
        printf("vector 0x%02x", vector);
    else if (has_error_code(vector))
        printf("#%s(0x%04x)", name, error);
    else
        printf("#%s", name);
}

void report(const char *name)
{
    printf("%s: ", name);
    if (!caught.taken) {
        puts("no fault\n");
        return;
    }
    print_exception(caught.vector, caught.error);
    int32_t rel = (int32_t)(caught.eip - caught.base);
    if (rel >= 0)
        printf(" at +%d\n", rel);
    else
        printf(" at -%d\n", -rel);
}

static struct frame *next_frame;

void frame_switch(struct frame *next) { next_frame = next; }

/* Runs the handler, then returns the frame isr_common must resume: the
 * interrupted one, or the one a handler chose with frame_switch. */
static void dispatch(struct frame *f);
struct frame *isr_dispatch(struct frame *f)
{
    /* A handler that enables interrupts can be interrupted itself; the
     * inner dispatch must neither see nor lose the outer one's choice. */
    struct frame *outer = next_frame;
    next_frame = NULL;
    dispatch(f);
    struct frame *next = next_frame ? next_frame : f;
    next_frame = outer;
    return next;
}

static void dispatch(struct frame *f)
{
    if (handlers[f->vector]) {
        handlers[f->vector](f);
        return;
    }
    if (catch_armed) {
        caught.taken = 1;
        caught.vector = f->vector;
        caught.error = f->error;
        caught.eip = f->eip;
        catch_armed = 0;
        /* Resume after the CATCH block, which restores ESP itself. Clear TF
         * so that a block that set it does not single-step the rest. */
        f->eip = catch_resume;
        f->eflags &= ~EFLAGS_TF;
        return;
    }
    /* Nobody expected this exception: say so and stop. The EIP is printed
     * because it is the best clue for a human, even though it is absolute. */
    puts("unexpected exception: ");
    print_exception(f->vector, f->error);
    printf(" eip=%p\n", (void *)f->eip);
    exit(EXIT_FAIL);
}

/* ---------------------------------------------------------------------
 * Entry from start.S.
 * ------------------------------------------------------------------- */

/* Masks every line of both 8259A PICs. The firmware leaves the timer
 * unmasked with IRQ 0 on vector 8, which a guest that executes STI would
 * otherwise take as a double fault. */
static void pic_mask_all(void)
{
    outb(0x21, 0xFF);
    outb(0xA1, 0xFF);
}

void NORETURN guest_entry(uint32_t magic, const struct multiboot_info *info);
void NORETURN guest_entry(uint32_t magic, const struct multiboot_info *info)
{
    serial_init();
    pic_mask_all();
    gdt[0] = 0;
    gdt[SEL_CODE >> 3] = make_descriptor(0, 0xFFFFF, ACC_CODE, GRAN_4K_32);
    gdt[SEL_DATA >> 3] = make_descriptor(0, 0xFFFFF, ACC_DATA, GRAN_4K_32);
    gdt_load(GDT_ENTRIES);
    idt_load();
    /* After reset the LDTR still describes a 64 KiB table at address 0
     * (SDM Vol. 3A section 10.1.1, table 10-1), and no loader is required to
     * change that. Loading the null selector makes every later reference
     * to the LDT fault, the same way on every machine. */
    __asm__ volatile("lldt %w0" ::"r"(0));
    exit((uint8_t)kmain(magic, info));
}

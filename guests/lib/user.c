/*
 * User mode for guests that run code at CPL 3: the user segments, the TSS
 * with its ring-0 stack and I/O permission bitmap, entry to ring 3 with
 * IRET, and the library's system calls through int 0x80.
 *
 * It owns GDT slots 0x18-0x28 and IDT vector 0x80 once user_init has run,
 * and the TSS. It must not touch the PICs or any other device: a guest
 * decides for itself which interrupts reach its user code.
 */
#include "guest.h"

struct tss user_tss __attribute__((aligned(128)));

/* The frame run_user_frame saved for its own continuation at CPL 0, which
 * SYS_EXIT resumes; NULL while no run_user is in progress. */
struct frame *user_kernel_frame;

/* In isr.S: builds the two frames and enters ring 3. */
uint32_t run_user_frame(void (*fn)(void), uint32_t user_esp, uint32_t eflags);

void idt_set_access(uint8_t vector, uint8_t access)
{
    idt[vector] = (idt[vector] & ~(0xFFull << 40)) | ((uint64_t)access << 40);
}

void user_init(uint32_t esp0)
{
    gdt_set(SEL_UCODE & ~3u, make_descriptor(0, 0xFFFFF, ACC_CODE_DPL3, GRAN_4K_32));
    gdt_set(SEL_UDATA & ~3u, make_descriptor(0, 0xFFFFF, ACC_DATA_DPL3, GRAN_4K_32));

    memset(&user_tss, 0, sizeof(user_tss));
    user_tss.ss0 = SEL_DATA;
    user_tss.esp0 = esp0;
    memset(user_tss.io_bitmap, 0xFF, sizeof(user_tss.io_bitmap));
    user_tss.io_bitmap_end = 0xFF;
    tss_io_bitmap(0);
    /* A TSS descriptor has byte granularity here and a limit that covers
     * the bitmap and its end byte; D/B must be 0 in a system descriptor
     * (SDM Vol. 3A section 8.2.2, figure 8-3). Writing the slot again also
     * clears the busy bit, so user_init may run twice. */
    gdt_set(SEL_USER_TSS, make_descriptor((uint32_t)&user_tss, sizeof(user_tss) - 1, ACC_TSS, 0));
    __asm__ volatile("ltr %w0" ::"r"(SEL_USER_TSS) : "memory");

    /* A trap gate with DPL 3: int 0x80 from ring 3 passes the gate's
     * privilege check (SDM Vol. 3A section 6.12.1.1) and leaves IF as the
     * caller had it. */
    idt_set_access(0x80, ACC_TRAP_GATE | ACC_DPL3);
    set_handler(0x80, sys_default);
}

void tss_io_bitmap(int on)
{
    /* A base at or beyond the TSS limit means "no bitmap": every I/O
     * instruction at CPL > IOPL then raises #GP(0) (SDM Vol. 1 section
     * 19.5.2). The processor reads the base on every check. */
    user_tss.iomap_base = on ? (uint16_t)__builtin_offsetof(struct tss, io_bitmap) : (uint16_t)sizeof(user_tss);
}

void tss_allow_port(uint16_t port, int allow)
{
    if (port >= TSS_IO_PORTS)
        return;
    uint8_t bit = (uint8_t)(1u << (port & 7));
    if (allow)
        user_tss.io_bitmap[port >> 3] &= (uint8_t)~bit;
    else
        user_tss.io_bitmap[port >> 3] |= bit;
}

uint32_t run_user(void (*fn)(void), void *user_stack_top, uint32_t eflags)
{
    /* fn's return address: the stub that calls SYS_EXIT from ring 3. */
    uint32_t *sp = user_stack_top;
    *--sp = (uint32_t)user_exit_stub;
    /* Bit 1 of EFLAGS is always 1 (SDM Vol. 1 section 3.4.3). */
    return run_user_frame(fn, (uint32_t)sp, eflags | 0x2);
}

void sys_write(struct frame *f)
{
    uint32_t len = f->edx;
    if (len > SYS_WRITE_MAX)
        len = SYS_WRITE_MAX;
    /* Paging is off and the user segments are flat, so the buffer is at
     * the same linear address for the kernel. */
    console_write((const char *)f->ecx, len);
    f->eax = len;
}

void sys_default(struct frame *f)
{
    switch (f->eax) {
    case SYS_WRITE:
        sys_write(f);
        break;
    case SYS_EXIT:
        if (user_kernel_frame && (f->cs & 3)) {
            struct frame *k = user_kernel_frame;
            user_kernel_frame = NULL;
            k->eax = f->ebx;
            frame_switch(k);
            break;
        }
        f->eax = (uint32_t)-1;
        break;
    default:
        f->eax = (uint32_t)-1;
        break;
    }
}

/*
 * triple: a guest that triple-faults on purpose.
 *
 * It loads an IDT whose limit is 0, so no gate can be read, then executes
 * INT3. Fetching the #BP gate is beyond the IDT limit, which raises #GP;
 * fetching the #GP gate fails the same way, which makes a double fault;
 * fetching the #DF gate fails too, and a fault while delivering #DF is a
 * triple fault: the processor enters shutdown (SDM Vol. 3A section 6.15,
 * interrupt 8). On a PC that resets the machine; QEMU with -no-reboot and
 * bt86 end the run instead.
 */
#include "guest.h"

int kmain(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    static const struct dtr empty_idt = { 0, 0 };
    puts("triple: loading an empty IDT and executing int3\n");
    lidt(&empty_idt);
    __asm__ volatile("int3");
    /* Not reached: shutdown does not return to the guest. */
    puts("triple: still running after the triple fault\n");
    return EXIT_FAIL;
}

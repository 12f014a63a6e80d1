/*
 * halt: a guest that stops for good.
 *
 * It prints one line, then executes CLI and HLT. With interrupts disabled
 * and no NMI source nothing can wake the processor again (SDM Vol. 2A,
 * HLT), so the machine is dead. QEMU just sits there; bt86 notices that
 * the virtual CPU halted with IF clear and ends the run with a message,
 * which is what this guest exists to test.
 */
#include "guest.h"

int kmain(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    puts("halt: halting with interrupts disabled\n");
    for (;;)
        __asm__ volatile("cli; hlt");
}

/*
 * spin: timer interrupts reaching a guest that never stops computing.
 *
 * The PIT ticks at 100 Hz on IRQ 0; the guest executes sti and then spins
 * in a tight loop that neither halts nor does I/O, polling the tick count
 * its handler keeps. It prints every hundredth tick and stops after 500
 * (five seconds). A monitor that runs the loop natively from its
 * translation cache must break into it to deliver each tick: if it cannot,
 * this guest hangs after its first line.
 */
#include "guest.h"

#define TICK_HZ 100
#define LAST_TICK 500
#define PRINT_EVERY 100

static volatile uint32_t ticks;

static void on_irq0(struct frame *f)
{
    (void)f;
    ticks++;
    pic_eoi(0);
}

int kmain(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    pic_remap(0x20, 0x28);
    set_handler(0x20, on_irq0);
    pit_set_rate(TICK_HZ);
    pic_set_mask((uint16_t)~1u);
    printf("spin: PIT at %u Hz, spinning until tick %u\n", TICK_HZ, LAST_TICK);
    sti();
    for (uint32_t next = PRINT_EVERY; next <= LAST_TICK; next += PRINT_EVERY) {
        while (ticks < next)
            ;
        /* Printing takes far less than a tick, so the next threshold is
         * never passed before the loop looks at it again. The number
         * printed is the threshold, not the count, to stay exact. */
        printf("tick %u\n", next);
    }
    cli();
    printf("spin: done\n");
    return EXIT_PASS;
}

/*
 * timer: the PC's interrupt hardware as a driver sees it.
 *
 * It remaps the 8259A pair to vectors 0x20 and 0x28, runs 8254 channel 0
 * as a 100 Hz rate generator on IRQ 0 and counts ticks with sti; hlt,
 * reads the PIT back with the latch and read-back commands, shows that a
 * masked IRQ 0 stays silent while its request waits in the IRR, holds a
 * tick back by not sending EOI (the nesting depth stays 1), uses a specific
 * EOI, reads IRR and ISR with OCW3 inside and outside a handler, counts the
 * RTC's periodic interrupt on IRQ 8 through the slave PIC, reads the CMOS
 * status registers, and finally spins without hlt until the timer has
 * ticked, which a monitor running the loop natively must still deliver.
 *
 * Everything printed is a count the guest controls, a register value the
 * data sheets fix, or a yes/no about a time window, never a measured time:
 * the output is the same under QEMU and bt86.
 */
#include "guest.h"

#define VEC_IRQ0 0x20
#define VEC_IRQ8 0x28
#define TICK_HZ 100
#define PIT_DIVISOR ((PIT_HZ + TICK_HZ / 2) / TICK_HZ)
#define HLT_TICKS 10
#define SPIN_TICKS 20
#define RTC_INTERRUPTS 8

/* What the IRQ 0 handler does beside counting. */
enum irq0_mode { PLAIN, HOLD_BACK, SPECIFIC_EOI };

static volatile uint32_t ticks;
static volatile enum irq0_mode mode = PLAIN;
static volatile uint32_t depth, max_depth;
static volatile uint16_t seen_isr, seen_irr, seen_isr_after;

static void on_irq0(struct frame *f)
{
    (void)f;
    depth++;
    if (depth > max_depth)
        max_depth = depth;
    ticks++;
    switch (mode) {
    case PLAIN:
        pic_eoi(0);
        break;
    case HOLD_BACK:
        mode = PLAIN;
        /* With IF set and no EOI yet, IRQ 0 is still in service: the
         * PIC holds back every request of the same or lower priority
         * (8259A data sheet, "fully nested mode"). Two more ticks fall
         * due in 25 ms; they wait in the IRR. */
        sti();
        pit_wait_ms(25);
        cli();
        seen_isr = pic_read_isr();
        seen_irr = pic_read_irr();
        pic_eoi(0);
        break;
    case SPECIFIC_EOI:
        mode = PLAIN;
        seen_isr = pic_read_isr();
        seen_irr = pic_read_irr();
        /* OCW2 specific EOI for level 0. */
        outb(PIC1_CMD, PIC_SPECIFIC_EOI | 0);
        seen_isr_after = pic_read_isr();
        break;
    }
    depth--;
}

static volatile uint32_t rtc_interrupts;
static volatile uint8_t rtc_reg_c;

static void on_irq8(struct frame *f)
{
    (void)f;
    rtc_interrupts++;
    /* Reading register C acknowledges the RTC's interrupt; without it the
     * RTC never raises IRQ 8 again (MC146818A data sheet). */
    rtc_reg_c |= cmos_read(0x0C);
    pic_eoi(8);
}

/* Waits with interrupts enabled until `ticks` moves past `from`, or gives
 * up after `ms` milliseconds; returns the ticks counted meanwhile. */
static uint32_t wait_for_tick(uint32_t from, uint32_t ms)
{
    sti();
    for (uint32_t i = 0; i < ms && ticks == from; i++)
        pit_wait_ms(1);
    cli();
    return ticks - from;
}

static void hlt_ticks(void)
{
    uint32_t start = ticks, wakeups = 0;
    while (ticks - start < HLT_TICKS) {
        /* STI delays interrupts by one instruction, so no tick can slip in
         * between the two and leave hlt waiting for the one after (SDM
         * Vol. 2B, STI). */
        __asm__ volatile("sti; hlt; cli" ::: "memory");
        wakeups++;
    }
    /* Each wakeup must be a tick's; a host that falls behind may deliver
     * two ticks in one wakeup (the second arrives between the handler's
     * iret and cli), so the counts themselves are not printed: they would
     * depend on how busy the host was. */
    printf("sti; hlt: %u ticks, no wakeup without one: %s\n", HLT_TICKS, wakeups <= ticks - start ? "yes" : "no");
}

static void pit_readback(void)
{
    /* Counter latch command for channel 0, then the latched count, low
     * byte first (8254 data sheet). */
    outb(PIT_CMD, 0x00);
    uint32_t count = inb(PIT_CH0);
    count |= (uint32_t)inb(PIT_CH0) << 8;
    printf("latched count of channel 0 is within 1..%u: %s\n", PIT_DIVISOR,
           count >= 1 && count <= PIT_DIVISOR ? "yes" : "no");
    /* Read-back command: latch the status (not the count) of channel 0.
     * Bits 5-0 echo the control word: lobyte/hibyte, mode 2, binary. */
    outb(PIT_CMD, 0xE2);
    printf("read-back status of channel 0 (bits 5-0): 0x%02x\n", inb(PIT_CH0) & 0x3F);
}

static void masked_irq0(void)
{
    pic_set_mask(0xFFFF);
    uint32_t before = ticks;
    sti();
    pit_wait_ms(50);
    cli();
    printf("IRQ 0 masked for 50 ms with IF=1: %u ticks\n", ticks - before);
    printf("  IRR bit 0 (a request waits): %u\n", pic_read_irr() & 1u);
    before = ticks;
    pic_set_mask((uint16_t)~1u);
    printf("  unmasked: the waiting tick arrives at once: %s\n",
           wait_for_tick(before, 5) == 1 ? "yes" : "no");
}

static void hold_back(void)
{
    max_depth = 0;
    mode = HOLD_BACK;
    uint32_t before = ticks;
    __asm__ volatile("sti; hlt; cli" ::: "memory");
    uint32_t after_slow = ticks;
    printf("handler without EOI for 25 ms: ISR=0x%04x, IRR bit 0=%u\n", seen_isr, seen_irr & 1u);
    /* The tick held back is delivered as soon as the handler's EOI and
     * IRET allow it; it may already have been. */
    uint32_t more = (after_slow - before - 1) + wait_for_tick(after_slow, 5);
    printf("  the held-back tick came after the EOI: %s; maximum nesting depth: %u\n",
           more >= 1 ? "yes" : "no", max_depth);
}

static void specific_eoi(void)
{
    mode = SPECIFIC_EOI;
    __asm__ volatile("sti; hlt; cli" ::: "memory");
    printf("in the handler: ISR=0x%04x IRR bit 0=%u; after specific EOI 0x60: ISR=0x%04x\n", seen_isr,
           seen_irr & 1u, seen_isr_after);
    printf("outside any handler: ISR=0x%04x\n", pic_read_isr());
}

static void rtc(void)
{
    /* Wait until no update cycle is in progress (register A bit 7), so
     * that the time registers are stable. */
    while (cmos_read(0x0A) & 0x80)
        ;
    uint8_t a = cmos_read(0x0A) & 0x7F, b = cmos_read(0x0B), d = cmos_read(0x0D);
    uint8_t hours = cmos_read(0x04);
    printf("CMOS: register A=0x%02x B=0x%02x D=0x%02x\n", a, b, d);
    int bcd = (hours & 0x0F) <= 9 && hours <= 0x23;
    printf("CMOS: hours register is 24-hour BCD: %s\n", !(b & 0x04) && (b & 0x02) && bcd ? "yes" : "no");

    /* Rate 10: 32768 >> 9 = 64 interrupts a second; divider bits 010
     * keep the 32.768 kHz time base running. */
    cmos_write(0x0A, 0x2A);
    cmos_write(0x0B, (uint8_t)(b | 0x40)); /* PIE: periodic interrupt enable */
    (void)cmos_read(0x0C);
    rtc_reg_c = 0;
    /* IRQ 8 is the slave's line 0; the slave reaches the CPU through
     * the master's line 2. */
    pic_set_mask((uint16_t)~((1u << 2) | (1u << 8)));
    uint32_t wakeups = 0;
    while (rtc_interrupts < RTC_INTERRUPTS) {
        __asm__ volatile("sti; hlt; cli" ::: "memory");
        wakeups++;
    }
    pic_set_mask(0xFFFF);
    cmos_write(0x0B, b);
    /* As for the PIT above: no wakeup without an interrupt, whatever the
     * host's timing. */
    printf("RTC: %u periodic interrupts on IRQ 8, no wakeup without one: %s, register A=0x%02x\n", RTC_INTERRUPTS,
           wakeups <= rtc_interrupts ? "yes" : "no", cmos_read(0x0A) & 0x7F);
    printf("RTC: register C in the handler had IRQF=%u PF=%u\n", (rtc_reg_c >> 7) & 1u, (rtc_reg_c >> 6) & 1u);
    cmos_write(0x0A, a);
}

static void spin(void)
{
    pic_set_mask((uint16_t)~1u);
    uint32_t start = ticks;
    sti();
    /* No hlt and no I/O: a monitor that runs this loop from its
     * translation cache must interrupt it to deliver the timer. */
    while (ticks - start < SPIN_TICKS)
        ;
    cli();
    printf("spinning without hlt: %u ticks arrived\n", SPIN_TICKS);
}

int kmain(uint32_t magic, const struct multiboot_info *info)
{
    (void)magic;
    (void)info;
    pic_remap(VEC_IRQ0, VEC_IRQ8);
    set_handler(VEC_IRQ0, on_irq0);
    set_handler(VEC_IRQ8, on_irq8);
    pit_set_rate(TICK_HZ);
    printf("timer: PICs at vectors 0x%02x/0x%02x, PIT channel 0 mode 2, divisor %u (%u Hz)\n", VEC_IRQ0,
           VEC_IRQ8, PIT_DIVISOR, TICK_HZ);
    printf("masks after ICW1-4: 0x%04x\n", pic_get_mask());
    pic_set_mask((uint16_t)~1u);
    printf("outside any handler: ISR=0x%04x\n", pic_read_isr());

    hlt_ticks();
    pit_readback();
    masked_irq0();
    hold_back();
    specific_eoi();
    rtc();
    spin();
    pic_set_mask(0xFFFF);
    printf("timer: done\n");
    return EXIT_PASS;
}

/*
 * The interrupt hardware of the PC/AT as a guest driver sees it: the
 * 8259A programmable interrupt controller pair, the 8254 programmable
 * interval timer with the port 0x61 gate of channel 2, and the CMOS RTC.
 *
 * It owns only the register sequences (Intel 8259A and 8254 data sheets,
 * Motorola MC146818A data sheet); which lines a guest unmasks and what its
 * handlers do are the guest's business.
 */
#include "guest.h"

void pic_remap(uint8_t master_base, uint8_t slave_base)
{
    /* ICW1: edge triggered, cascaded, ICW4 follows. Starting an
     * initialization clears the mask register, so interrupts must be off
     * (they are: the caller has not executed sti with a line unmasked). */
    outb(PIC1_CMD, 0x11);
    outb(PIC2_CMD, 0x11);
    /* ICW2: the vector of IR0. */
    outb(PIC1_DATA, master_base);
    outb(PIC2_DATA, slave_base);
    /* ICW3: the master has a slave on IR2; the slave's cascade identity
     * is 2. */
    outb(PIC1_DATA, 0x04);
    outb(PIC2_DATA, 0x02);
    /* ICW4: 8086 mode, normal (not automatic) EOI. */
    outb(PIC1_DATA, 0x01);
    outb(PIC2_DATA, 0x01);
    pic_set_mask(0xFFFF);
}

void pic_set_mask(uint16_t mask)
{
    outb(PIC1_DATA, (uint8_t)mask);
    outb(PIC2_DATA, (uint8_t)(mask >> 8));
}

uint16_t pic_get_mask(void) { return (uint16_t)(inb(PIC1_DATA) | (inb(PIC2_DATA) << 8)); }

void pic_eoi(uint8_t irq)
{
    /* An IRQ of the slave is in service on both chips: on the slave at its
     * own level and on the master at IR2. */
    if (irq >= 8)
        outb(PIC2_CMD, PIC_EOI);
    outb(PIC1_CMD, PIC_EOI);
}

static uint16_t pic_read(uint8_t ocw3)
{
    outb(PIC1_CMD, ocw3);
    outb(PIC2_CMD, ocw3);
    return (uint16_t)(inb(PIC1_CMD) | (inb(PIC2_CMD) << 8));
}

uint16_t pic_read_irr(void) { return pic_read(PIC_READ_IRR); }
uint16_t pic_read_isr(void) { return pic_read(PIC_READ_ISR); }

void pit_set_rate(uint32_t hz)
{
    uint32_t divisor = (PIT_HZ + hz / 2) / hz;
    /* Channel 0, lobyte/hibyte access, mode 2 (rate generator), binary. */
    outb(PIT_CMD, 0x34);
    outb(PIT_CH0, (uint8_t)divisor);
    outb(PIT_CH0, (uint8_t)(divisor >> 8));
}

void pit_wait_ms(uint32_t ms)
{
    if (ms > 54)
        ms = 54;
    uint32_t count = PIT_HZ * ms / 1000;
    /* Gate channel 2 on and keep the speaker off. */
    outb(PORT_B, (uint8_t)((inb(PORT_B) & ~PORT_B_SPEAKER) | PORT_B_GATE2));
    /* Channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count):
     * OUT goes low when the mode is written and high when the count,
     * started by writing it, reaches zero. */
    outb(PIT_CMD, 0xB0);
    outb(PIT_CH2, (uint8_t)count);
    outb(PIT_CH2, (uint8_t)(count >> 8));
    while (!(inb(PORT_B) & PORT_B_OUT2))
        ;
}

uint8_t cmos_read(uint8_t reg)
{
    outb(CMOS_INDEX, reg);
    return inb(CMOS_DATA);
}

void cmos_write(uint8_t reg, uint8_t value)
{
    outb(CMOS_INDEX, reg);
    outb(CMOS_DATA, value);
}

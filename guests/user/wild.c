/*
 * wild: a program that reaches outside its own memory, run by the paging
 * guest at CPL 3.
 *
 * It first uses two heap pages the way it may, then writes into the
 * kernel's code at 1 MiB. That page is mapped, but as a supervisor page,
 * so the write raises #PF with error code 7 (present, write, user: SDM
 * Vol. 3A section 4.7), and the kernel ends the program.
 */
#include "ulib.h"

int main(void)
{
    volatile uint32_t *heap = sbrk(2 * PAGE_SIZE);
    uint32_t sum = 0;
    for (uint32_t i = 0; i < 2 * PAGE_SIZE / 4; i += 256) {
        heap[i] = i * 3 + 1;
        sum += heap[i];
    }
    printf("wild: wrote and read back two heap pages, sum %u\n", sum);
    yield();
    printf("wild: now writing to the kernel at 0x00100000\n");
    *(volatile uint32_t *)0x00100000 = 0xBAD;
    printf("wild: the write went through\n");
    return 1;
}

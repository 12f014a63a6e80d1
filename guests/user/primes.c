/*
 * primes: the sieve of Eratosthenes in a heap that grows on page faults,
 * run by the paging guest at CPL 3.
 *
 * It asks for LIMIT bytes with sbrk; the kernel maps nothing until the
 * sieve touches each page, so every page of the sieve costs one page
 * fault that the kernel turns into a fresh zeroed frame. The count and
 * the sum of the primes below LIMIT are the program's result; the test
 * recomputes both.
 */
#include "ulib.h"

#define LIMIT 60000u

int main(void)
{
    uint8_t *composite = sbrk((int32_t)LIMIT);
    if (composite == (uint8_t *)-1) {
        printf("primes: no memory\n");
        return 1;
    }
    printf("primes: sieve of %u bytes on the heap\n", LIMIT);
    yield();
    /* The heap comes zeroed: every number starts as a prime candidate. */
    for (uint32_t i = 2; i * i < LIMIT; i++)
        if (!composite[i])
            for (uint32_t j = i * i; j < LIMIT; j += i)
                composite[j] = 1;
    uint32_t count = 0, sum = 0, largest = 0;
    for (uint32_t i = 2; i < LIMIT; i++)
        if (!composite[i]) {
            count++;
            sum += i;
            largest = i;
        }
    yield();
    printf("primes: %u primes below %u, sum %u, largest %u\n", count, LIMIT, sum, largest);
    /* Give the memory back: the kernel unmaps and frees the pages. */
    sbrk(-(int32_t)LIMIT);
    printf("primes: done\n");
    return 0;
}

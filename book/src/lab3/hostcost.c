/*
 * hostcost.c: what the host charges for the pieces of a hidden fault.
 *
 * This is a host program, not a guest: build and run it with
 *
 *     cc -O2 -o target/hostcost book/src/lab3/hostcost.c && target/hostcost
 *
 * A hidden fault under bt86 is a host page fault delivered as SIGSEGV,
 * a return from the signal handler, and one or more mmap calls that put
 * a page of the guest-RAM file at the faulting address; an invlpg or a
 * CR3 write unmaps pages again. This program times each of those host
 * operations alone, in a loop, and prints the mean cost of one, next to
 * a system call that does nothing (getppid) for scale. Lab 3 of the bt86
 * book explains the figures.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096L
#define FILE_SIZE (64L << 20) /* a small "guest RAM" */
#define SLOTS 1000L           /* distinct addresses the loops cycle through */
#define ITERATIONS 20000L

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static void report(const char *what, double start)
{
    printf("%-58s %8.0f ns\n", what, (now_ns() - start) / ITERATIONS);
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/* The page the SIGSEGV test protects; the handler makes it accessible
 * again and returns, and the faulting read is then retried. */
static char *fault_page;

static void on_fault(int sig, siginfo_t *info, void *uc)
{
    (void)sig, (void)info, (void)uc;
    mprotect(fault_page, PAGE, PROT_READ | PROT_WRITE);
}

static void on_signal(int sig, siginfo_t *info, void *uc)
{
    (void)sig, (void)info, (void)uc;
}

int main(void)
{
    /* The guest-RAM file, every page of it touched once so that the
     * timed mappings find it in the page cache. */
    int fd = memfd_create("guest-ram", 0);
    if (fd < 0 || ftruncate(fd, FILE_SIZE) != 0)
        die("guest-RAM file");
    char *ram = mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (ram == MAP_FAILED)
        die("mmap of the guest-RAM file");
    for (long off = 0; off < FILE_SIZE; off += PAGE)
        ram[off] = 1;
    /* A reservation for the "shadow" mappings, as bt86 reserves the low
     * 4 GiB. */
    char *space = mmap(NULL, SLOTS * 16 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (space == MAP_FAILED)
        die("reservation");

    double t0 = now_ns();
    for (long i = 0; i < ITERATIONS; i++)
        getppid();
    report("getppid() (a system call that does nothing)", t0);

    struct sigaction sa = { 0 };
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, NULL);
    t0 = now_ns();
    for (long i = 0; i < ITERATIONS; i++)
        raise(SIGUSR1);
    report("a signal delivered and returned from (raise)", t0);

    fault_page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (fault_page == MAP_FAILED)
        die("fault page");
    fault_page[0] = 1;
    t0 = now_ns();
    for (long i = 0; i < ITERATIONS; i++)
        mprotect(fault_page, PAGE, (i & 1) ? PROT_READ | PROT_WRITE : PROT_NONE);
    report("mprotect of one page", t0);

    sa.sa_sigaction = on_fault;
    sigaction(SIGSEGV, &sa, NULL);
    t0 = now_ns();
    for (long i = 0; i < ITERATIONS; i++) {
        mprotect(fault_page, PAGE, PROT_NONE);
        (void)*(volatile char *)fault_page;
    }
    report("SIGSEGV round trip with two mprotect calls", t0);

    t0 = now_ns();
    for (long i = 0; i < ITERATIONS; i++) {
        long slot = i % SLOTS;
        if (mmap(space + slot * PAGE, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_POPULATE, fd,
                 slot * PAGE) == MAP_FAILED)
            die("mmap of one page");
    }
    report("mmap of one page of the file, MAP_FIXED | MAP_POPULATE", t0);

    t0 = now_ns();
    for (long i = 0; i < ITERATIONS; i++) {
        long slot = i % SLOTS;
        if (mmap(space + slot * PAGE, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) ==
            MAP_FAILED)
            die("unmapping one page");
    }
    report("unmapping one page (PROT_NONE reservation put back)", t0);

    t0 = now_ns();
    for (long i = 0; i < ITERATIONS; i++) {
        long slot = i % SLOTS;
        if (mmap(space + slot * 16 * PAGE, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_POPULATE,
                 fd, slot * 16 * PAGE) == MAP_FAILED)
            die("mmap of 16 pages");
    }
    report("mmap of 16 pages of the file, MAP_FIXED | MAP_POPULATE", t0);
    return 0;
}

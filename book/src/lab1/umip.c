/*
 * umip.c: what the sensitive-but-unprivileged instructions return to an
 * ordinary user-mode program on this host.
 *
 * This is a host program, not a guest: build and run it with
 *
 *     cc -O2 -o target/umip book/src/lab1/umip.c && target/umip
 *
 * It executes, at ring 3, the instructions that Lab 1 of the bt86 book
 * discusses, and prints what each one produced, or that it raised a
 * signal. Compare what it prints with what a guest kernel would expect to
 * see at ring 0.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* In 64-bit mode SGDT and SIDT store a 2-byte limit and an 8-byte base
 * (Intel SDM Vol. 2B, SGDT). */
struct __attribute__((packed)) dtr {
    uint16_t limit;
    uint64_t base;
};

static sigjmp_buf on_signal;

static void catch_signal(int signo)
{
    siglongjmp(on_signal, signo);
}

/* Runs the statements that follow the name (one instruction and a printf);
 * prints the signal instead of the result if they raised one. */
#define TRY(name, ...)                                                        \
    do {                                                                      \
        int signo_ = sigsetjmp(on_signal, 1);                                 \
        if (signo_ == 0) {                                                    \
            __VA_ARGS__;                                                      \
        } else {                                                              \
            printf("%-5s raised %s\n", name, strsignal(signo_));             \
        }                                                                     \
    } while (0)

int main(void)
{
    signal(SIGSEGV, catch_signal);
    signal(SIGILL, catch_signal);

    /* The five instructions that UMIP (CR4.UMIP, SDM Vol. 3A section
     * 2.5) makes fault at CPL > 0. */
    TRY("sgdt", {
        struct dtr d = { 0, 0 };
        __asm__ volatile("sgdt %0" : "=m"(d));
        printf("sgdt  base=0x%016llx limit=0x%04x\n", (unsigned long long)d.base, d.limit);
    });
    TRY("sidt", {
        struct dtr d = { 0, 0 };
        __asm__ volatile("sidt %0" : "=m"(d));
        printf("sidt  base=0x%016llx limit=0x%04x\n", (unsigned long long)d.base, d.limit);
    });
    TRY("sldt", {
        uint16_t sel = 0xffff;
        __asm__ volatile("sldt %0" : "=r"(sel));
        printf("sldt  0x%04x\n", sel);
    });
    TRY("str", {
        uint16_t sel = 0xffff;
        __asm__ volatile("str %0" : "=r"(sel));
        printf("str   0x%04x\n", sel);
    });
    TRY("smsw", {
        uint64_t msw = 0;
        __asm__ volatile("smsw %0" : "=r"(msw));
        printf("smsw  0x%08llx\n", (unsigned long long)msw);
    });

    /* Instructions UMIP does not cover: they never fault, and they tell
     * the truth about the host. */
    uint64_t flags;
    __asm__ volatile("pushfq\n\tpopq %0" : "=r"(flags));
    printf("pushf 0x%08llx: IF=%llu IOPL=%llu\n", (unsigned long long)flags,
           (unsigned long long)(flags >> 9) & 1, (unsigned long long)(flags >> 12) & 3);

    /* POPF at CPL 3 with IOPL 0 leaves IF alone, without a fault (SDM Vol.
     * 2B, POPF, the table of flags each CPL may change). */
    uint64_t cleared = flags & ~(uint64_t)0x200, after;
    __asm__ volatile("pushq %1\n\tpopfq\n\tpushfq\n\tpopq %0" : "=r"(after) : "r"(cleared) : "cc");
    printf("popf  with IF=0, then pushf: IF=%llu (no fault)\n", (unsigned long long)(after >> 9) & 1);

    uint16_t cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    printf("mov   from cs: 0x%04x, so CPL=%u\n", cs, cs & 3);
    return 0;
}

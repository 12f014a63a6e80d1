/*
 * The user-mode library of the programs that the paging guest loads from
 * its disk image: system calls through int 0x80 and a small printf.
 *
 * These programs run at CPL 3 in an address space of their own, linked at
 * USER_BASE by user/link.ld; they can reach nothing but their own pages,
 * so this library must not use any instruction or address of the kernel.
 * System call numbers and registers follow Linux i386 (number in EAX,
 * arguments in EBX, ECX, EDX, result in EAX); the paging kernel
 * (paging.c) implements them.
 */
#ifndef BT86_ULIB_H
#define BT86_ULIB_H

typedef unsigned char uint8_t;
typedef unsigned short uint16_t;
typedef unsigned int uint32_t;
typedef signed char int8_t;
typedef int int32_t;
typedef unsigned int size_t;

#define SYS_EXIT 1   /* ebx = status; never returns */
#define SYS_WRITE 4  /* ebx = fd (ignored), ecx = buffer, edx = length */
#define SYS_SBRK 45  /* ebx = increment; returns the old break, or -1 */
#define SYS_YIELD 158

#define PAGE_SIZE 4096u

static inline uint32_t syscall3(uint32_t n, uint32_t a, uint32_t b, uint32_t c)
{
    __asm__ volatile("int $0x80" : "+a"(n) : "b"(a), "c"(b), "d"(c) : "memory");
    return n;
}

/* Ends the program with `status`. */
static inline __attribute__((noreturn)) void exit(uint32_t status)
{
    syscall3(SYS_EXIT, status, 0, 0);
    for (;;)
        ;
}

/* Moves the program break by `increment` bytes and returns the old break
 * (the start of the new memory), or (void *)-1 when the kernel refuses.
 * The kernel maps no page at once: each page of the heap is allocated on
 * the first access, through a page fault. */
static inline void *sbrk(int32_t increment) { return (void *)syscall3(SYS_SBRK, (uint32_t)increment, 0, 0); }

/* Gives the processor to the next program. */
static inline void yield(void) { syscall3(SYS_YIELD, 0, 0, 0); }

size_t strlen(const char *s);
void write(const char *s, size_t len);
/* printf with %s %c %d %u %x %p and %%, a zero flag and a width: the
 * formatter of guests/lib/format.h, written out with one system call per
 * buffer. */
void printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Every program defines main; its return value is the exit status. */
int main(void);

#endif

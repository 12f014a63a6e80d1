/*
 * The user-mode library: write and a small printf for the programs of the
 * paging guest. Everything here runs at CPL 3 and reaches the outside only
 * through int 0x80.
 */
#include "ulib.h"

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

void write(const char *s, size_t len) { syscall3(SYS_WRITE, 1, (uint32_t)s, len); }

/* printf writes with one system call per buffer. */
#define FORMAT_SINK write
#include "format.h"

void printf(const char *fmt, ...)
{
    struct out o = { .n = 0, .dst = 0 };
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    format(&o, fmt, ap);
    __builtin_va_end(ap);
    out_flush(&o);
}

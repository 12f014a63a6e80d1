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

/* The output of one printf call is collected here and written with one
 * system call. */
struct out {
    char buf[256];
    size_t n;
};

static void out_char(struct out *o, char c)
{
    if (o->n == sizeof(o->buf)) {
        write(o->buf, o->n);
        o->n = 0;
    }
    o->buf[o->n++] = c;
}

static void out_number(struct out *o, uint32_t v, unsigned base, int negative, int width, char pad)
{
    char digits[12];
    int n = 0;
    do {
        unsigned d = v % base;
        digits[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v);
    if (negative)
        digits[n++] = '-';
    for (int i = n; i < width; i++)
        out_char(o, pad);
    while (n)
        out_char(o, digits[--n]);
}

void printf(const char *fmt, ...)
{
    struct out o;
    o.n = 0;
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            out_char(&o, *fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        int width = 0;
        if (*fmt == '0') {
            pad = '0';
            fmt++;
        }
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        switch (*fmt) {
        case 's':
            for (const char *s = __builtin_va_arg(ap, const char *); *s; s++)
                out_char(&o, *s);
            break;
        case 'c':
            out_char(&o, (char)__builtin_va_arg(ap, int));
            break;
        case 'd': {
            int v = __builtin_va_arg(ap, int);
            out_number(&o, v < 0 ? -(uint32_t)v : (uint32_t)v, 10, v < 0, width, pad);
            break;
        }
        case 'u':
            out_number(&o, __builtin_va_arg(ap, uint32_t), 10, 0, width, pad);
            break;
        case 'x':
            out_number(&o, __builtin_va_arg(ap, uint32_t), 16, 0, width, pad);
            break;
        case '\0':
            fmt--;
            break;
        default:
            out_char(&o, *fmt);
            break;
        }
    }
    __builtin_va_end(ap);
    if (o.n)
        write(o.buf, o.n);
}

/*
 * The formatter behind printf and snprintf, shared by the kernel-side
 * support library (lib.c) and the user-mode library of the paging guest's
 * programs (user/ulib.c). Each gives it a sink for full buffers: COM1 for
 * the kernel, a write system call for a user program. It needs nothing
 * but the compiler's own varargs, so both libraries can include it.
 *
 * Conversions: %s (NULL prints "(null)"), %c, %d, %u, %x and %p, with an
 * optional width and 0 flag, and %%.
 */
#ifndef BT86_FORMAT_H
#define BT86_FORMAT_H

/* Output collected in a small buffer and handed to FORMAT_SINK in pieces, so
 * that user code makes one system call per line rather than one per
 * character; or written into `dst` (snprintf). The bytes are the same
 * either way. */
struct out {
    char buf[128];
    unsigned n;
    /* snprintf's destination (NULL: the output goes to FORMAT_SINK), its
     * size, and the length so far. */
    char *dst;
    unsigned cap, len;
};

static void out_flush(struct out *o)
{
    if (o->n)
        FORMAT_SINK(o->buf, o->n);
    o->n = 0;
}

static void out_char(struct out *o, char c)
{
    if (o->dst) {
        if (o->len + 1 < o->cap)
            o->dst[o->len] = c;
        o->len++;
        return;
    }
    if (o->n == sizeof(o->buf))
        out_flush(o);
    o->buf[o->n++] = c;
}

static void out_string(struct out *o, const char *s)
{
    while (*s)
        out_char(o, *s++);
}

static void put_number(struct out *o, unsigned v, unsigned base, int negative, int width, char pad)
{
    char buf[12];
    int n = 0;
    do {
        unsigned d = v % base;
        buf[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v);
    if (negative)
        buf[n++] = '-';
    for (int i = n; i < width; i++)
        out_char(o, pad);
    while (n)
        out_char(o, buf[--n]);
}

static void format(struct out *o, const char *fmt, __builtin_va_list ap)
{
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            out_char(o, *fmt);
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
        case 's': {
            const char *s = __builtin_va_arg(ap, const char *);
            out_string(o, s ? s : "(null)");
            break;
        }
        case 'c':
            out_char(o, (char)__builtin_va_arg(ap, int));
            break;
        case 'd': {
            int v = __builtin_va_arg(ap, int);
            put_number(o, v < 0 ? -(unsigned)v : (unsigned)v, 10, v < 0, width, pad);
            break;
        }
        case 'u':
            put_number(o, __builtin_va_arg(ap, unsigned), 10, 0, width, pad);
            break;
        case 'x':
            put_number(o, __builtin_va_arg(ap, unsigned), 16, 0, width, pad);
            break;
        case 'p':
            out_string(o, "0x");
            put_number(o, (unsigned)__builtin_va_arg(ap, void *), 16, 0, 8, '0');
            break;
        case '%':
            out_char(o, '%');
            break;
        case '\0':
            fmt--;
            break;
        default:
            out_char(o, '%');
            out_char(o, *fmt);
            break;
        }
    }
}

#endif

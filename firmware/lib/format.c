/*
 * printf-style formatting for a freestanding program: no floating point, no
 * positional arguments, no %n.  Numbers are converted with udiv64 (arith.h)
 * so 64-bit values need no libgcc helpers.
 */
#include <stdint.h>

#include "arith.h"
#include "console.h"
#include "cstring.h"

struct spec {
    bool left;          /* '-': pad on the right */
    bool zero;          /* '0': pad numbers with zeros */
    bool alt;           /* '#': 0x before nonzero hex, 0 before nonzero octal */
    int width;
    int precision;      /* -1 if none; for %s, the most characters printed */
};

struct out {
    void (*put)(char c, void *ctx);
    void *ctx;
    int count;
};

static void emit(struct out *o, char c)
{
    o->put(c, o->ctx);
    o->count++;
}

static void pad(struct out *o, char c, int n)
{
    while (n-- > 0)
        emit(o, c);
}

static void emit_string(struct out *o, const struct spec *sp, const char *s)
{
    if (!s)
        s = "(null)";
    int len = (int)(sp->precision >= 0 ? strnlen(s, (size_t)sp->precision) : strlen(s));
    if (!sp->left)
        pad(o, ' ', sp->width - len);
    for (int i = 0; i < len; i++)
        emit(o, s[i]);
    if (sp->left)
        pad(o, ' ', sp->width - len);
}

static void emit_number(struct out *o, const struct spec *sp, uint64_t v, unsigned base,
                        bool negative, bool upper, const char *prefix)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char buf[24];                       /* 2^64 in octal is 22 digits */
    int n = 0;
    do
        buf[n++] = digits[udiv64(&v, base)];
    while (v);

    int extra = (negative ? 1 : 0) + (int)strlen(prefix);
    int fill = sp->width - n - extra;
    if (!sp->left && !sp->zero)
        pad(o, ' ', fill);
    if (negative)
        emit(o, '-');
    for (const char *p = prefix; *p; p++)
        emit(o, *p);
    if (!sp->left && sp->zero)
        pad(o, '0', fill);
    while (n)
        emit(o, buf[--n]);
    if (sp->left)
        pad(o, ' ', fill);
}

int vformat(void (*put)(char c, void *ctx), void *ctx, const char *fmt, va_list ap)
{
    struct out o = { put, ctx, 0 };

    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            emit(&o, *fmt);
            continue;
        }
        struct spec sp = { false, false, false, 0, -1 };
        for (;; fmt++) {
            if (fmt[1] == '-')
                sp.left = true;
            else if (fmt[1] == '0')
                sp.zero = true;
            else if (fmt[1] == '#')
                sp.alt = true;
            else
                break;
        }
        if (fmt[1] == '*') {
            sp.width = va_arg(ap, int);
            if (sp.width < 0) {
                sp.left = true;
                sp.width = -sp.width;
            }
            fmt++;
        } else {
            while (fmt[1] >= '0' && fmt[1] <= '9')
                sp.width = sp.width * 10 + (*++fmt - '0');
        }
        if (fmt[1] == '.') {
            fmt++;
            sp.precision = 0;
            if (fmt[1] == '*') {
                sp.precision = va_arg(ap, int);
                fmt++;
            } else {
                while (fmt[1] >= '0' && fmt[1] <= '9')
                    sp.precision = sp.precision * 10 + (*++fmt - '0');
            }
        }
        /* Length: on i386 int, long and size_t are 32 bits; only ll is 64. */
        int longs = 0, shorts = 0;
        while (fmt[1] == 'l' || fmt[1] == 'h' || fmt[1] == 'z') {
            if (fmt[1] == 'l')
                longs++;
            else if (fmt[1] == 'h')
                shorts++;
            fmt++;
        }
        bool wide = longs >= 2;
        char conv = *++fmt;
        uint64_t u;
        switch (conv) {
        case 'd':
        case 'i': {
            int64_t s = wide ? va_arg(ap, int64_t) : va_arg(ap, int32_t);
            if (shorts == 1)
                s = (int16_t)s;
            else if (shorts >= 2)
                s = (int8_t)s;
            u = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
            emit_number(&o, &sp, u, 10, s < 0, false, "");
            break;
        }
        case 'u':
        case 'x':
        case 'X':
        case 'o':
            u = wide ? va_arg(ap, uint64_t) : va_arg(ap, uint32_t);
            if (shorts == 1)
                u = (uint16_t)u;
            else if (shorts >= 2)
                u = (uint8_t)u;
            emit_number(&o, &sp, u, conv == 'u' ? 10 : conv == 'o' ? 8 : 16, false,
                        conv == 'X',
                        !sp.alt || !u || conv == 'u' ? "" : conv == 'o' ? "0" :
                        conv == 'X' ? "0X" : "0x");
            break;
        case 'p':
            /* Always 0x and eight digits: a 32-bit physical address. */
            sp.zero = true;
            sp.width = 10;
            emit_number(&o, &sp, (uintptr_t)va_arg(ap, void *), 16, false, false, "0x");
            break;
        case 'c': {
            char c = (char)va_arg(ap, int);
            if (!sp.left)
                pad(&o, ' ', sp.width - 1);
            emit(&o, c);
            if (sp.left)
                pad(&o, ' ', sp.width - 1);
            break;
        }
        case 's':
            emit_string(&o, &sp, va_arg(ap, const char *));
            break;
        case '%':
            emit(&o, '%');
            break;
        case '\0':
            /* A lone '%' at the end: print it and stop. */
            emit(&o, '%');
            return o.count;
        default:
            /* Unknown conversion: show it as written rather than guess. */
            emit(&o, '%');
            emit(&o, conv);
            break;
        }
    }
    return o.count;
}

struct sbuf {
    char *buf;
    size_t size;
    size_t used;
};

static void put_buffer(char c, void *ctx)
{
    struct sbuf *b = ctx;
    if (b->used + 1 < b->size)
        b->buf[b->used] = c;
    b->used++;
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct sbuf b = { buf, size, 0 };
    int n = vformat(put_buffer, &b, fmt, ap);
    if (size)
        buf[b.used < size ? b.used : size - 1] = '\0';
    return n;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

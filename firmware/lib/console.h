/*
 * Console output: every character goes to COM1 (a 16550 UART at 0x3F8) and to
 * the debug console port 0x402 (QEMU's isa-debugcon, drivebay's debug port),
 * each only if console_init() found it present.
 *
 * printf understands %d %i %u %x %X %o %s %c %p %%, the flags '-', '0' and '#',
 * a field width (digits or '*'), a precision for %s, and the length
 * modifiers hh, h, l, ll, z.  64-bit values print in any base (see arith.h).
 */
#ifndef FW_CONSOLE_H
#define FW_CONSOLE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#define COM1_BASE     0x3F8
#define DEBUGCON_PORT 0x402
#define DEBUGCON_ID   0xE9      /* what a read of the debug port returns */

void console_init(void);
bool console_has_serial(void);
bool console_has_debugcon(void);
void console_putc(char c);
/* The byte as it is, no CR before LF (the BIOS stub's INT 10h teletype). */
void console_putc_raw(char c);
void console_write(const char *s, size_t n);

int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int vprintf(const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);

/* The formatting engine behind all of the above: calls put(c, ctx) for each
 * output character and returns how many there were. */
int vformat(void (*put)(char c, void *ctx), void *ctx, const char *fmt, va_list ap);

#endif

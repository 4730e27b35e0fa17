/*
 * COM1 and the debug console port.
 *
 * The UART is a National Semiconductor 16550A (PC16550D datasheet): eight
 * registers from 0x3F8; with LCR.DLAB set, the first two are the baud-rate
 * divisor latch (115200 / divisor = baud).  We send with interrupts off
 * (IER = 0, MCR.OUT2 = 0, so IRQ4 never fires) and poll LSR.THRE.
 */
#include "console.h"
#include "io.h"

/* 16550 register offsets from COM1_BASE. */
#define UART_THR 0   /* transmit holding (write, DLAB=0) */
#define UART_DLL 0   /* divisor latch low (DLAB=1) */
#define UART_IER 1   /* interrupt enable (DLAB=0) */
#define UART_DLM 1   /* divisor latch high (DLAB=1) */
#define UART_FCR 2   /* FIFO control (write) */
#define UART_LCR 3   /* line control */
#define UART_MCR 4   /* modem control */
#define UART_LSR 5   /* line status */

#define LCR_DLAB   0x80
#define LCR_8N1    0x03        /* 8 data bits, no parity, 1 stop bit */
#define FCR_ENABLE 0x07        /* enable FIFOs, clear both */
#define MCR_DTR_RTS 0x03
#define LSR_THRE   0x20        /* transmit holding register empty */
#define BAUD_DIVISOR 1         /* 115200 baud */

/* How many LSR reads to wait for THRE before sending anyway.  A 16550 at
 * 115200 baud frees its holding register within ~87 us (one character);
 * even at one microsecond per port read this bound is 100 times that, and on
 * a machine whose UART never sets THRE, output slows down but never hangs. */
#define THRE_POLL_LIMIT 10000

static bool have_serial, have_debugcon;

void console_init(void)
{
    /* Nothing decodes an absent port, so its reads float to all ones. */
    have_serial = inb(COM1_BASE + UART_LSR) != 0xFF;
    have_debugcon = inb(DEBUGCON_PORT) == DEBUGCON_ID;
    if (!have_serial)
        return;
    outb(COM1_BASE + UART_IER, 0);
    outb(COM1_BASE + UART_LCR, LCR_DLAB);
    outb(COM1_BASE + UART_DLL, BAUD_DIVISOR & 0xFF);
    outb(COM1_BASE + UART_DLM, BAUD_DIVISOR >> 8);
    outb(COM1_BASE + UART_LCR, LCR_8N1);
    outb(COM1_BASE + UART_FCR, FCR_ENABLE);
    outb(COM1_BASE + UART_MCR, MCR_DTR_RTS);
}

bool console_has_serial(void) { return have_serial; }
bool console_has_debugcon(void) { return have_debugcon; }

static void serial_putc(char c)
{
    for (int i = 0; i < THRE_POLL_LIMIT; i++)
        if (inb(COM1_BASE + UART_LSR) & LSR_THRE)
            break;
    outb(COM1_BASE + UART_THR, (uint8_t)c);
}

void console_putc(char c)
{
    if (have_serial) {
        /* A terminal on the other end of a serial line wants CR LF. */
        if (c == '\n')
            serial_putc('\r');
        serial_putc(c);
    }
    if (have_debugcon)
        outb(DEBUGCON_PORT, (uint8_t)c);
}

void console_putc_raw(char c)
{
    if (have_serial)
        serial_putc(c);
    if (have_debugcon)
        outb(DEBUGCON_PORT, (uint8_t)c);
}

void console_write(const char *s, size_t n)
{
    while (n--)
        console_putc(*s++);
}

static void put_console(char c, void *ctx)
{
    (void)ctx;
    console_putc(c);
}

int vprintf(const char *fmt, va_list ap)
{
    return vformat(put_console, NULL, fmt, ap);
}

int printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vprintf(fmt, ap);
    va_end(ap);
    return n;
}

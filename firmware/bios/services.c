/*
 * The BIOS services other than disks: video (INT 10h, on the serial
 * console), equipment and memory size (INT 11h, 12h), system services
 * (INT 15h), keyboard (INT 16h, fed from the serial port) and time (INT 1Ah).
 *
 * Function numbers, registers and status codes follow the IBM PC/AT BIOS
 * as Ralf Brown's Interrupt List documents it.  Unsupported functions set
 * CF with AH=86h ("function not supported"), as IBM's BIOS does for INT 15h.
 */
#include "bios.h"
#include "runtime.h"

uint32_t bios_wait_request;

static void unsupported(struct bregs *r)
{
    r->ah = 0x86;
    set_cf(r, true);
}

/* ---- INT 10h: video -------------------------------------------------------
 * There is no display adapter: characters go to COM1 as they are, and the
 * BDA keeps the cursor position a program would see on an 80x25 screen. */

static void cursor_get(uint8_t page, uint8_t *row, uint8_t *col)
{
    *col = BDA[BDA_CURSOR_POS + 2 * (page & 7)];
    *row = BDA[BDA_CURSOR_POS + 2 * (page & 7) + 1];
}

static void cursor_set(uint8_t page, uint8_t row, uint8_t col)
{
    BDA[BDA_CURSOR_POS + 2 * (page & 7)] = col;
    BDA[BDA_CURSOR_POS + 2 * (page & 7) + 1] = row;
}

void tty_putc(char c)
{
    uint8_t page = BDA[BDA_ACTIVE_PAGE], row, col;
    uint8_t cols = (uint8_t)bda16(BDA_VIDEO_COLS), last_row = BDA[BDA_VIDEO_ROWS];
    cursor_get(page, &row, &col);
    console_putc_raw(c);
    switch (c) {
    case '\r': col = 0; break;
    case '\n': row++; break;
    case '\b': if (col) col--; break;
    case '\a': break;
    default:
        if (++col >= cols) {
            col = 0;
            row++;
        }
    }
    if (row > last_row)
        row = last_row;                 /* the screen scrolled */
    cursor_set(page, row, col);
}

void handle_10(struct bregs *r)
{
    uint8_t row, col;
    switch (r->ah) {
    case 0x00:                          /* set mode AL: clears the screen */
        BDA[BDA_VIDEO_MODE] = r->al & 0x7F;
        cursor_set(0, 0, 0);
        break;
    case 0x01:                          /* cursor shape CH/CL */
        bda16_set(BDA_CURSOR_SHAPE, r->cx);
        break;
    case 0x02:                          /* set cursor: page BH, row DH, column DL */
        cursor_set(r->bh, r->dh, r->dl);
        break;
    case 0x03:                          /* get cursor and shape */
        cursor_get(r->bh, &row, &col);
        r->dh = row;
        r->dl = col;
        r->cx = bda16(BDA_CURSOR_SHAPE);
        break;
    case 0x05:                          /* active page */
        BDA[BDA_ACTIVE_PAGE] = r->al & 7;
        break;
    case 0x06: case 0x07:               /* scroll up/down: nothing to redraw */
        break;
    case 0x08:                          /* read character and attribute: blank */
        r->ax = 0x0720;
        break;
    case 0x09: case 0x0A:               /* write AL CX times, cursor stays */
        for (unsigned i = 0; i < r->cx; i++)
            console_putc_raw((char)r->al);
        break;
    case 0x0E:                          /* teletype output AL */
        tty_putc((char)r->al);
        break;
    case 0x0F:                          /* get mode: AL mode, AH columns, BH page */
        r->al = BDA[BDA_VIDEO_MODE];
        r->ah = (uint8_t)bda16(BDA_VIDEO_COLS);
        r->bh = BDA[BDA_ACTIVE_PAGE];
        break;
    case 0x13: {                        /* write string ES:BP, CX chars at DH/DL */
        const uint8_t *s = rm_ptr(r->es, r->bp);
        uint8_t save_row, save_col;
        cursor_get(r->bh, &save_row, &save_col);
        cursor_set(r->bh, r->dh, r->dl);
        for (unsigned i = 0; i < r->cx; i++)
            tty_putc((char)s[(r->al & 2) ? 2 * i : i]);   /* bit 1: char, attr pairs */
        if (!(r->al & 1))                                /* bit 0: move the cursor */
            cursor_set(r->bh, save_row, save_col);
        break;
    }
    default:
        break;                          /* no adapter: nothing else to do */
    }
}

/* ---- INT 11h, 12h ------------------------------------------------------ */

void handle_11(struct bregs *r) { r->ax = bda16(BDA_EQUIPMENT); }
void handle_12(struct bregs *r) { r->ax = bda16(BDA_BASE_MEMORY); }

/* ---- INT 15h: system services ------------------------------------------ */

#define PORT_A20 0x92
#define A20_ENABLE 0x02

/* The system configuration table (AH=C0h): 8 bytes after its length,
 * model FCh (AT), submodel 1, revision 0, feature byte 1 = 70h (second
 * PIC, RTC, INT 15h/4Fh keyboard intercept not supported: 70h = bits 6-4). */
static const uint8_t config_table[] __attribute__((aligned(2))) =
    {8, 0, 0xFC, 0x01, 0x00, 0x70, 0x00, 0x00, 0x00, 0x00};

/* AH=87h: copy CX words between two segment descriptors of the caller's
 * GDT at ES:SI (offsets 10h source, 18h destination).  We are already in
 * flat protected mode, so this is a memmove. */
static void block_move(struct bregs *r)
{
    const uint8_t *gdt = rm_ptr(r->es, r->si);
    uint32_t src = gdt[0x12] | gdt[0x13] << 8 | gdt[0x14] << 16 | (uint32_t)gdt[0x17] << 24;
    uint32_t dst = gdt[0x1A] | gdt[0x1B] << 8 | gdt[0x1C] << 16 | (uint32_t)gdt[0x1F] << 24;
    memmove((void *)dst, (const void *)src, (size_t)r->cx * 2);
    r->ah = 0;
    set_cf(r, false);
}

/* AH=86h: a wait shorter than a timer tick is a busy wait on PIT channel 2
 * (lib/timer.c).  A longer one lets the caller's timer ticks go on: the
 * first call notes how many ticks (40:6Ch) must pass, then entry.S halts
 * until the next interrupt and calls again until they have. */
#define TICK_US 54925u                  /* 65536 / 1193182 Hz */

static void wait_us(struct bregs *r, uint32_t us)
{
    static bool waiting;
    static uint32_t start, ticks;
    if (us < TICK_US) {
        udelay(us);
    } else {
        if (!waiting) {
            waiting = true;
            start = bda32(BDA_TICKS);
            ticks = (us + TICK_US - 1) / TICK_US;
        }
        uint32_t now = bda32(BDA_TICKS);
        /* After midnight the count restarts at 0: count from there. */
        if (now < start)
            start = 0;
        if (now - start < ticks) {
            bios_wait_request = 1;
            return;
        }
        waiting = false;
    }
    r->ah = 0;
    set_cf(r, false);
}

void handle_15(struct bregs *r)
{
    uint32_t kib;
    switch (r->ah) {
    case 0x24:                          /* A20 gate: 00 off, 01 on, 02 status, 03 support */
        switch (r->al) {
        case 0x00: outb(PORT_A20, inb(PORT_A20) & ~(A20_ENABLE | 1)); break;
        case 0x01: outb(PORT_A20, (inb(PORT_A20) | A20_ENABLE) & ~1); break;
        case 0x02: r->al = (inb(PORT_A20) & A20_ENABLE) ? 1 : 0; break;
        case 0x03: r->bx = 0x0002; break;           /* bit 1: port 92h */
        default: unsupported(r); return;
        }
        r->ah = 0;
        set_cf(r, false);
        return;
    case 0x86:                          /* wait CX:DX microseconds */
        wait_us(r, (uint32_t)r->cx << 16 | r->dx);
        return;
    case 0x87:
        block_move(r);
        return;
    case 0x88:                          /* KiB above 1 MiB, at most 63 MiB */
        kib = (memmap_usable_top() >> 10) - 1024;
        r->ax = kib > 0xFC00 ? 0xFC00 : (uint16_t)kib;
        set_cf(r, false);
        return;
    case 0xC0:                          /* ES:BX = the configuration table */
        r->es = (uint16_t)((uintptr_t)config_table >> 4);
        r->bx = (uint16_t)((uintptr_t)config_table & 0xF);
        r->ah = 0;
        set_cf(r, false);
        return;
    case 0xE8:
        if (r->al == 0x01) {            /* E801h: AX=CX KiB 1-16 MiB, BX=DX 64 KiB above 16 MiB */
            uint32_t top = memmap_usable_top();
            uint32_t low = top > (16u << 20) ? 15u << 10 : (top >> 10) - 1024;
            uint32_t high = top > (16u << 20) ? (top - (16u << 20)) >> 16 : 0;
            r->ax = r->cx = (uint16_t)low;
            r->bx = r->dx = (uint16_t)high;
            set_cf(r, false);
            return;
        }
        if (r->al == 0x20) {
            handle_e820(r);
            return;
        }
        break;
    }
    unsupported(r);
}

/* ---- INT 16h: keyboard ----------------------------------------------------
 * Characters received on COM1 are typed keys: each goes into the BDA's
 * 16-entry ring as (scan code << 8 | ASCII). */

#define UART_RBR 0
#define UART_LSR 5
#define LSR_DR 0x01

/* The PC/AT keyboard's scan codes (set 1, as INT 16h reports them) for
 * what a serial terminal can send: the keys of each row, left to right,
 * have consecutive codes. */
static const struct { const char *keys; uint8_t first; } key_rows[] = {
    {"1234567890-=", 0x02}, {"qwertyuiop[]", 0x10}, {"asdfghjkl;'`", 0x1E},
    {"\\zxcvbnm,./", 0x2B},
};

static uint8_t scan_code(uint8_t c)
{
    switch (c) {
    case '\r': return 0x1C;
    case '\b': return 0x0E;
    case 0x1B: return 0x01;
    case '\t': return 0x0F;
    case ' ': return 0x39;
    }
    if (c >= 1 && c <= 26)
        c += 'a' - 1;                   /* Ctrl+letter: the letter's key */
    else if (c >= 'A' && c <= 'Z')
        c += 'a' - 'A';
    for (unsigned r = 0; r < sizeof(key_rows) / sizeof(key_rows[0]); r++)
        for (unsigned i = 0; key_rows[r].keys[i]; i++)
            if (key_rows[r].keys[i] == c)
                return (uint8_t)(key_rows[r].first + i);
    return 0;
}

void serial_poll_input(void)
{
    if (!console_has_serial())
        return;
    while (inb(COM1_BASE + UART_LSR) & LSR_DR) {
        uint8_t c = inb(COM1_BASE + UART_RBR);
        if (c == '\n')
            c = '\r';                   /* Enter */
        else if (c == 0x7F)
            c = '\b';
        uint16_t tail = bda16(BDA_KBD_TAIL), next = tail + 2;
        if (next >= bda16(BDA_KBD_END))
            next = bda16(BDA_KBD_START);
        if (next == bda16(BDA_KBD_HEAD))
            continue;                   /* buffer full: the key is lost, as on a PC */
        bda16_set(tail, (uint16_t)(scan_code(c) << 8 | c));
        bda16_set(BDA_KBD_TAIL, next);
    }
}

/* The next key, or -1. */
static int key_peek(bool take)
{
    serial_poll_input();
    uint16_t head = bda16(BDA_KBD_HEAD);
    if (head == bda16(BDA_KBD_TAIL))
        return -1;
    uint16_t key = bda16(head);
    if (take) {
        head += 2;
        if (head >= bda16(BDA_KBD_END))
            head = bda16(BDA_KBD_START);
        bda16_set(BDA_KBD_HEAD, head);
    }
    return key;
}

void handle_16(struct bregs *r)
{
    int key;
    switch (r->ah) {
    case 0x00: case 0x10:               /* wait for a key: entry.S calls again after an IRQ */
        if ((key = key_peek(true)) < 0) {
            bios_wait_request = 1;
            return;
        }
        r->ax = (uint16_t)key;
        break;
    case 0x01: case 0x11:               /* key available? ZF=1 none, else AX = key */
        key = key_peek(false);
        if (key < 0) {
            r->flags |= F_ZF;
        } else {
            r->flags &= ~F_ZF;
            r->ax = (uint16_t)key;
        }
        break;
    case 0x02: case 0x12:               /* shift flags */
        r->al = BDA[BDA_KBD_FLAGS];
        if (r->ah == 0x12)
            r->ah = 0;
        break;
    default:
        break;
    }
}

/* ---- INT 1Ah: time of day ---------------------------------------------- */

#define RTC_UIP 0x80                    /* update in progress: wait before reading */
#define RTC_SET 0x80                    /* status B: stop updates while setting */
#define RTC_DST 0x01

static bool rtc_ready(void)
{
    return WAIT_FOR(!(cmos_read(RTC_STATUS_A) & RTC_UIP), 10000);
}

static void rtc_set(const uint8_t *index, const uint8_t *value, unsigned n)
{
    uint8_t b = cmos_read(RTC_STATUS_B);
    cmos_write(RTC_STATUS_B, b | RTC_SET);
    for (unsigned i = 0; i < n; i++)
        cmos_write(index[i], value[i]);
    cmos_write(RTC_STATUS_B, b & ~RTC_SET);
}

void handle_1a(struct bregs *r)
{
    switch (r->ah) {
    case 0x00:                          /* ticks since midnight in CX:DX, AL = wrapped */
        r->cx = (uint16_t)(bda32(BDA_TICKS) >> 16);
        r->dx = (uint16_t)bda32(BDA_TICKS);
        r->al = BDA[BDA_MIDNIGHT];
        BDA[BDA_MIDNIGHT] = 0;
        set_cf(r, false);
        return;
    case 0x01:
        bda32_set(BDA_TICKS, (uint32_t)r->cx << 16 | r->dx);
        BDA[BDA_MIDNIGHT] = 0;
        set_cf(r, false);
        return;
    case 0x02:                          /* RTC time: CH hours, CL minutes, DH seconds (BCD) */
        if (!rtc_ready())
            break;
        r->ch = cmos_read(RTC_HOURS);
        r->cl = cmos_read(RTC_MINUTES);
        r->dh = cmos_read(RTC_SECONDS);
        r->dl = cmos_read(RTC_STATUS_B) & RTC_DST;
        set_cf(r, false);
        return;
    case 0x03: {
        const uint8_t index[] = {RTC_HOURS, RTC_MINUTES, RTC_SECONDS};
        const uint8_t value[] = {r->ch, r->cl, r->dh};
        rtc_set(index, value, 3);
        set_cf(r, false);
        return;
    }
    case 0x04:                          /* RTC date: CH century, CL year, DH month, DL day */
        if (!rtc_ready())
            break;
        r->ch = cmos_read(CMOS_CENTURY);
        r->cl = cmos_read(RTC_YEAR);
        r->dh = cmos_read(RTC_MONTH);
        r->dl = cmos_read(RTC_DAY);
        set_cf(r, false);
        return;
    case 0x05: {
        const uint8_t index[] = {CMOS_CENTURY, RTC_YEAR, RTC_MONTH, RTC_DAY};
        const uint8_t value[] = {r->ch, r->cl, r->dh, r->dl};
        rtc_set(index, value, 4);
        set_cf(r, false);
        return;
    }
    case 0xB1:
        if (r->al == 0x01) {            /* PCI BIOS 2.1 installation check */
            r->ax = 0x0001;             /* AH=0 present, AL bit 0: mechanism #1 */
            r->bx = 0x0210;
            r->cl = 0;                  /* last bus */
            r->edx = 0x20494350;        /* "PCI " */
            r->edi = 0;                 /* no protected-mode entry point */
            set_cf(r, false);
            return;
        }
        break;
    }
    set_cf(r, true);
}

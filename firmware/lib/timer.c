/*
 * 8254 PIT: udelay on channel 2, the monotonic clock on channel 0.
 *
 * Control word written to port 0x43 (Intel 8254 datasheet, "Control Word
 * Format"): bits 7:6 select the channel, 5:4 the access (00 latch the count,
 * 11 low byte then high byte), 3:1 the mode, bit 0 BCD (we count in binary).
 */
#include "timer.h"
#include "arith.h"
#include "console.h"
#include "io.h"

#define PIT_CH0  0x40
#define PIT_CH2  0x42
#define PIT_CTRL 0x43
#define PIT_CH0_LATCH     0x00             /* channel 0, latch its count */
#define PIT_CH0_RATE_GEN  0x34             /* channel 0, lo/hi, mode 2 */
#define PIT_CH2_ONE_SHOT  0xB0             /* channel 2, lo/hi, mode 0 */

/* Port 0x61, "NMI status and control" (PIIX3 datasheet 4.7.2): bit 0 gates
 * PIT channel 2, bit 1 routes its output to the speaker, bit 5 reads its
 * output.  Bits 7:4 are read-only status, so writes keep only 3:0. */
#define PORT61 0x61
#define PORT61_CH2_GATE  0x01
#define PORT61_SPEAKER   0x02
#define PORT61_CH2_OUT   0x20
#define PORT61_WRITABLE  0x0F

/* Longest wait per channel-2 programming: 50 ms = 59659 ticks < 65536. */
#define UDELAY_CHUNK_US 50000
/* Reads of port 0x61 allowed per PIT tick before we decide channel 2 is
 * stuck.  A port read takes tens of nanoseconds on the fastest emulator and
 * about a microsecond on hardware; a tick is 0.84 us, so a working PIT never
 * gets near this.  After one overrun the bound shrinks so that a program on
 * a machine with a broken PIT finishes (failing its checks) instead of
 * spinning for minutes. */
#define POLLS_PER_TICK 256
#define POLLS_PER_TICK_BROKEN 4

static uint32_t ch0_reload = PIT_DIVISOR_MAX;
static uint32_t ch0_last;
static uint64_t ch0_total;
static unsigned overruns;

uint64_t us_to_ticks(uint32_t us)
{
    uint64_t n = (uint64_t)us * PIT_HZ + 999999;     /* round up: wait at least `us` */
    udiv64(&n, 1000000);
    return n;
}

uint64_t ticks_to_us(uint64_t ticks)
{
    uint64_t n = ticks * 1000000;
    udiv64(&n, PIT_HZ);
    return n;
}

/* Run channel 2 once for `ticks` (1..65535) and poll for terminal count.  In
 * mode 0 the output goes low when the control word is written and high when
 * the count reaches zero; counting only happens while the gate is high. */
static void pit_ch2_wait(uint32_t ticks)
{
    uint8_t p = inb(PORT61) & PORT61_WRITABLE & ~(PORT61_CH2_GATE | PORT61_SPEAKER);
    outb(PORT61, p);
    outb(PIT_CTRL, PIT_CH2_ONE_SHOT);
    outb(PIT_CH2, ticks & 0xFF);
    outb(PIT_CH2, (ticks >> 8) & 0xFF);
    outb(PORT61, p | PORT61_CH2_GATE);

    uint32_t limit = ticks * (overruns ? POLLS_PER_TICK_BROKEN : POLLS_PER_TICK) + 4096;
    while (!(inb(PORT61) & PORT61_CH2_OUT)) {
        time_ticks();                /* keep the monotonic clock counting */
        if (--limit == 0) {
            if (overruns++ == 0)
                printf("# udelay: PIT channel 2 never reached terminal count "
                       "(port 0x61 bit 5 stuck low)\n");
            break;
        }
    }
    outb(PORT61, p);
}

void udelay(uint32_t us)
{
    while (us) {
        uint32_t chunk = us > UDELAY_CHUNK_US ? UDELAY_CHUNK_US : us;
        pit_ch2_wait((uint32_t)us_to_ticks(chunk));
        us -= chunk;
    }
}

void mdelay(uint32_t ms)
{
    while (ms--)
        udelay(1000);
}

unsigned udelay_overruns(void)
{
    return overruns;
}

/* The current count of channel 0, in 1..reload. */
static uint32_t ch0_count(void)
{
    outb(PIT_CTRL, PIT_CH0_LATCH);
    uint32_t v = inb(PIT_CH0);
    v |= (uint32_t)inb(PIT_CH0) << 8;
    /* A count of 0 is 65536, the largest reload (8254: "0 = 2^16"). */
    if (v == 0 || v > ch0_reload)
        v = ch0_reload;
    return v;
}

void pit_set_periodic(uint32_t divisor)
{
    if (divisor < 2)
        divisor = 2;                 /* mode 2 does not allow a count of 1 */
    if (divisor > PIT_DIVISOR_MAX)
        divisor = PIT_DIVISOR_MAX;
    uint32_t f = irq_save();
    time_ticks();                    /* bank the time counted so far */
    outb(PIT_CTRL, PIT_CH0_RATE_GEN);
    outb(PIT_CH0, divisor & 0xFF);
    outb(PIT_CH0, (divisor >> 8) & 0xFF);
    ch0_reload = divisor;
    ch0_last = divisor;
    irq_restore(f);
}

void timer_init(void)
{
    outb(PORT61, inb(PORT61) & PORT61_WRITABLE & ~(PORT61_CH2_GATE | PORT61_SPEAKER));
    pit_set_periodic(PIT_DIVISOR_MAX);
    ch0_total = 0;                   /* forget what the stale state above added */
}

uint64_t time_ticks(void)
{
    uint32_t f = irq_save();
    uint32_t now = ch0_count();
    /* The counter runs down and reloads: past `last` means it wrapped. */
    uint32_t elapsed = ch0_last >= now ? ch0_last - now : ch0_last + ch0_reload - now;
    ch0_last = now;
    ch0_total += elapsed;
    uint64_t t = ch0_total;
    irq_restore(f);
    return t;
}

uint64_t time_us(void)
{
    return ticks_to_us(time_ticks());
}

struct deadline deadline_in(uint32_t us)
{
    return (struct deadline){ time_ticks() + us_to_ticks(us) };
}

bool deadline_passed(const struct deadline *d)
{
    return time_ticks() >= d->end;
}

bool wait_for(bool (*cond)(void *ctx), void *ctx, uint32_t timeout_us)
{
    return WAIT_FOR(cond(ctx), timeout_us);
}

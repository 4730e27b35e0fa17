/*
 * Time from the 8254 programmable interval timer (PIT).
 *
 * The PIT counts down at 1.193182 MHz (a third of the 3.579545 MHz NTSC
 * colour-burst crystal).  Channel 0 drives IRQ0; channel 2 is gated by port
 * 0x61 bit 0 and its output can be read back in port 0x61 bit 5, so software
 * can time an interval without interrupts.  The runtime uses:
 *
 * - channel 2, one-shot (mode 0), polled through port 0x61, for udelay();
 * - channel 0, free running (mode 2), read with the latch command, for the
 *   monotonic clock time_ticks()/time_us().  Each read adds the ticks elapsed
 *   since the previous one, so the clock must be read at least once per
 *   channel-0 period (55 ms as set up by timer_init; 1 ms after
 *   pit_set_periodic(PIT_DIVISOR_1KHZ)), or whole periods go uncounted and
 *   time runs slow.  Timeouts then last longer than asked, never shorter.
 *   wait_for() and udelay() read it as they poll, so only long stretches of
 *   other work (or HLT) between readings lose time.
 */
#ifndef FW_TIMER_H
#define FW_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#include "io.h"

#define PIT_HZ 1193182u
#define PIT_DIVISOR_1KHZ 1193u        /* 1000.15 Hz */
#define PIT_DIVISOR_MAX 65536u        /* written as 0: 18.2 Hz */

/* Channel 0 free running at PIT_DIVISOR_MAX, channel 2 stopped. */
void timer_init(void);

/* Channel 0 as a rate generator (mode 2): IRQ0 every `divisor` PIT ticks,
 * divisor 2..65536.  The monotonic clock keeps counting across the change. */
void pit_set_periodic(uint32_t divisor);

/* Busy-wait at least `us` microseconds (PIT channel 2). */
void udelay(uint32_t us);
void mdelay(uint32_t ms);
/* How many udelay() waits ended because channel 2 never reached its
 * terminal count within a generous poll bound (0 on a working PIT). */
unsigned udelay_overruns(void);

/* Monotonic clock: PIT ticks and microseconds since timer_init(). */
uint64_t time_ticks(void);
uint64_t time_us(void);
uint64_t ticks_to_us(uint64_t ticks);
uint64_t us_to_ticks(uint32_t us);

struct deadline {
    uint64_t end;                     /* in time_ticks() units */
};
struct deadline deadline_in(uint32_t us);
bool deadline_passed(const struct deadline *d);

/* Poll cond(ctx) until it returns true (-> true) or `timeout_us` pass
 * (-> false).  cond must return quickly compared with the PIT period. */
bool wait_for(bool (*cond)(void *ctx), void *ctx, uint32_t timeout_us);

/* The same for an expression, evaluated in the caller's scope:
 *     if (!WAIT_FOR(inb(STATUS) & READY, 100000)) ...timed out...
 * The expression is checked once more after the deadline, so a wait that
 * was merely descheduled past its deadline does not report a timeout. */
#define WAIT_FOR(expr, timeout_us)                                    \
    ({                                                                \
        struct deadline wait_for_dl_ = deadline_in(timeout_us);       \
        bool wait_for_ok_;                                            \
        for (;;) {                                                    \
            if ((expr)) {                                             \
                wait_for_ok_ = true;                                  \
                break;                                                \
            }                                                         \
            if (deadline_passed(&wait_for_dl_)) {                     \
                wait_for_ok_ = (expr);                                \
                break;                                                \
            }                                                         \
            cpu_relax();                                              \
        }                                                             \
        wait_for_ok_;                                                 \
    })

#endif

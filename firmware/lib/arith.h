/*
 * 64-bit arithmetic without libgcc.
 *
 * gcc turns a 64-bit `/` or `%` on i386 into calls to __udivdi3/__umoddi3,
 * which live in libgcc, and this machine has no 32-bit libgcc.  A 64-by-32
 * division needs only two DIVL instructions: divide the high word first,
 * then the remainder:low word pair, whose quotient fits 32 bits because the
 * remainder is smaller than the divisor (the same trick as Linux's do_div).
 * Multiplication and shifts of 64-bit values are inlined by gcc and are fine.
 */
#ifndef FW_ARITH_H
#define FW_ARITH_H

#include <stdint.h>

/* *n /= d; return the remainder.  d must not be 0. */
static inline uint32_t udiv64(uint64_t *n, uint32_t d)
{
    uint32_t hi = (uint32_t)(*n >> 32), lo = (uint32_t)*n;
    uint32_t qhi = hi / d, rem = hi % d;
    uint32_t qlo;
    __asm__("divl %[d]" : "=a"(qlo), "=d"(rem) : "0"(lo), "1"(rem), [d] "rm"(d));
    *n = ((uint64_t)qhi << 32) | qlo;
    return rem;
}

static inline uint32_t align_up32(uint32_t v, uint32_t align)
{
    return (v + align - 1) & ~(align - 1);
}

#endif

/*
 * Calling the BIOS from the demo's C code (gcc -m16, real mode).
 *
 * bios_int(vector, &r) loads every general register and DS/ES from r, runs
 * INT vector and stores what the BIOS left in them back into r, with the
 * flags.  A BIOS reports an error with CF set and a status in AH.
 */
#ifndef DEMO_BIOS_H
#define DEMO_BIOS_H

/* Offsets of struct bios_regs, for bioscall.S. */
#define BR_EAX     0
#define BR_EBX     4
#define BR_ECX     8
#define BR_EDX     12
#define BR_ESI     16
#define BR_EDI     20
#define BR_DS      24
#define BR_ES      26
#define BR_EFLAGS  28

#ifndef __ASSEMBLER__
#include <stdbool.h>
#include <stdint.h>

struct bios_regs {
    uint32_t eax, ebx, ecx, edx, esi, edi;
    uint16_t ds, es;
    uint32_t eflags;
};
_Static_assert(__builtin_offsetof(struct bios_regs, eflags) == BR_EFLAGS, "layout");

#define FLAG_CF 0x0001

void bios_int(uint8_t vector, struct bios_regs *r);

static inline uint8_t ah(const struct bios_regs *r) { return (uint8_t)(r->eax >> 8); }
static inline bool carry(const struct bios_regs *r) { return r->eflags & FLAG_CF; }

/* A real-mode address below 64 KiB as segment 0 and offset: all of the
 * demo's buffers live there. */
static inline uint16_t offset_of(const void *p) { return (uint16_t)(uintptr_t)p; }
#endif

#endif

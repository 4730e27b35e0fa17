/*
 * Port I/O, memory-mapped I/O and the few CPU instructions C cannot express.
 *
 * Everything here is static inline so a register access compiles to the one
 * instruction it names.  MMIO helpers use volatile accesses of the exact
 * width, wrapped in compiler barriers so gcc neither merges, splits nor moves
 * them across other memory accesses (x86 keeps uncached accesses in program
 * order itself; the barrier is for the compiler).
 */
#ifndef FW_IO_H
#define FW_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define barrier() __asm__ __volatile__("" ::: "memory")

/* ---- port I/O ------------------------------------------------------------ */

static inline void outb(uint16_t port, uint8_t v)
{
    __asm__ __volatile__("outb %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline void outw(uint16_t port, uint16_t v)
{
    __asm__ __volatile__("outw %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline void outl(uint16_t port, uint32_t v)
{
    __asm__ __volatile__("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ __volatile__("inb %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}

static inline uint16_t inw(uint16_t port)
{
    uint16_t v;
    __asm__ __volatile__("inw %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}

static inline uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ __volatile__("inl %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}

/* String forms: `count` 16-bit words between a port and memory (ATA PIO data). */
static inline void insw(uint16_t port, void *buf, size_t count)
{
    __asm__ __volatile__("rep insw" : "+D"(buf), "+c"(count) : "d"(port) : "memory");
}

static inline void outsw(uint16_t port, const void *buf, size_t count)
{
    __asm__ __volatile__("rep outsw" : "+S"(buf), "+c"(count) : "d"(port) : "memory");
}

static inline void insl(uint16_t port, void *buf, size_t count)
{
    __asm__ __volatile__("rep insl" : "+D"(buf), "+c"(count) : "d"(port) : "memory");
}

static inline void outsl(uint16_t port, const void *buf, size_t count)
{
    __asm__ __volatile__("rep outsl" : "+S"(buf), "+c"(count) : "d"(port) : "memory");
}

/* ---- MMIO -------------------------------------------------------------------
 * Addresses are physical: the runtime never enables paging. */

static inline uint8_t mmio_read8(uintptr_t addr)
{
    barrier();
    uint8_t v = *(volatile uint8_t *)addr;
    barrier();
    return v;
}

static inline uint16_t mmio_read16(uintptr_t addr)
{
    barrier();
    uint16_t v = *(volatile uint16_t *)addr;
    barrier();
    return v;
}

static inline uint32_t mmio_read32(uintptr_t addr)
{
    barrier();
    uint32_t v = *(volatile uint32_t *)addr;
    barrier();
    return v;
}

/* A 64-bit register read as two 32-bit accesses, low half first: without SSE
 * or cmpxchg8b tricks a 32-bit CPU has no plain 64-bit load.  Registers whose
 * halves can change between the two reads need the device's own protocol. */
static inline uint64_t mmio_read64(uintptr_t addr)
{
    uint32_t lo = mmio_read32(addr);
    uint32_t hi = mmio_read32(addr + 4);
    return ((uint64_t)hi << 32) | lo;
}

static inline void mmio_write8(uintptr_t addr, uint8_t v)
{
    barrier();
    *(volatile uint8_t *)addr = v;
    barrier();
}

static inline void mmio_write16(uintptr_t addr, uint16_t v)
{
    barrier();
    *(volatile uint16_t *)addr = v;
    barrier();
}

static inline void mmio_write32(uintptr_t addr, uint32_t v)
{
    barrier();
    *(volatile uint32_t *)addr = v;
    barrier();
}

/* Low half first, like mmio_read64 (NVMe and AHCI accept either order for
 * their 64-bit base-address registers while the device is disabled). */
static inline void mmio_write64(uintptr_t addr, uint64_t v)
{
    mmio_write32(addr, (uint32_t)v);
    mmio_write32(addr + 4, (uint32_t)(v >> 32));
}

/* A pointer to physical address `addr` (no paging: the same number).  The
 * empty asm hides the constant from gcc, whose array-bounds checks otherwise
 * warn about any access through a small constant address such as the IVT at
 * 0 or the BIOS data area at 0x400. */
static inline void *phys_ptr(uintptr_t addr)
{
    __asm__("" : "+r"(addr));
    return (void *)addr;
}

/* ---- CPU control -------------------------------------------------------- */

#define EFLAGS_IF (1u << 9)

static inline void cli(void) { __asm__ __volatile__("cli" ::: "memory"); }
static inline void sti(void) { __asm__ __volatile__("sti" ::: "memory"); }
static inline void hlt(void) { __asm__ __volatile__("hlt" ::: "memory"); }
static inline void cpu_relax(void) { __asm__ __volatile__("pause" ::: "memory"); }

/* Enable interrupts and halt as one step: STI holds interrupts off until the
 * end of the next instruction (SDM vol. 2, STI), so an interrupt that arrives
 * between a check of "is there work?" done with IF=0 and the HLT still wakes
 * the CPU instead of being taken before it and sleeping past it. */
static inline void sti_hlt(void) { __asm__ __volatile__("sti; hlt" ::: "memory"); }

static inline uint32_t read_eflags(void)
{
    uint32_t f;
    __asm__ __volatile__("pushfl; popl %0" : "=r"(f) : : "memory");
    return f;
}

/* Disable interrupts and return the previous EFLAGS for irq_restore(). */
static inline uint32_t irq_save(void)
{
    uint32_t f = read_eflags();
    cli();
    return f;
}

static inline void irq_restore(uint32_t flags)
{
    if (flags & EFLAGS_IF)
        sti();
}

static inline uint32_t read_cr0(void)
{
    uint32_t v;
    __asm__ __volatile__("mov %%cr0, %0" : "=r"(v));
    return v;
}

static inline uint32_t read_cr2(void)
{
    uint32_t v;
    __asm__ __volatile__("mov %%cr2, %0" : "=r"(v));
    return v;
}

#endif

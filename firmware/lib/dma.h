/*
 * Memory for DMA buffers, descriptor rings and the like: a bump allocator
 * over the RAM between the end of the program image (the linker's _end) and
 * the end of the RAM region holding it, taken from the multiboot memory map
 * (or mem_upper).  There is no paging, so a pointer is its physical address.
 */
#ifndef FW_DMA_H
#define FW_DMA_H

#include <stddef.h>
#include <stdint.h>

/* Set up the region from the multiboot information (runtime_init does it). */
void dma_init(void);
/* Or from a range the caller chose (the BIOS stub: RAM it keeps out of E820). */
void dma_init_range(uintptr_t start, uintptr_t end);
/* `size` zeroed bytes aligned to `align` (a power of two; 0 means 16), or
 * NULL when the region is exhausted.  Nothing is ever freed singly. */
void *dma_alloc(size_t size, size_t align);
/* Forget every allocation: the next dma_alloc starts over at the bottom. */
void dma_reset(void);
size_t dma_free_bytes(void);
uintptr_t dma_region_start(void);
uintptr_t dma_region_end(void);

static inline uint32_t dma_phys(const volatile void *p)
{
    return (uint32_t)(uintptr_t)p;
}

#endif

/*
 * The DMA region bump allocator.
 */
#include "runtime.h"

#define PAGE_SIZE 4096u
#define DEFAULT_ALIGN 16u
/* Without any memory information, use 1 MiB above the image: the machines
 * we run on have at least 32 MiB. */
#define FALLBACK_SIZE 0x100000u

static uintptr_t region_start, region_end, next;

/* End of the available RAM region holding `at`, from the memory map. */
static uint64_t region_end_from_mmap(const struct multiboot_info *mbi, uint64_t at)
{
    for (const struct multiboot_mmap_entry *e = multiboot_mmap_next(mbi, NULL); e;
         e = multiboot_mmap_next(mbi, e))
        if (e->type == MB_MMAP_AVAILABLE && e->base_addr <= at && at < e->base_addr + e->length)
            return e->base_addr + e->length;
    return 0;
}

void dma_init(void)
{
    const struct multiboot_info *mbi = multiboot_info();
    uint64_t start = align_up32((uint32_t)(uintptr_t)_end, PAGE_SIZE);
    /* Both sources describe the RAM from 1 MiB up; where both are given,
     * believe the smaller. */
    uint64_t end = 0;
    if (mbi->flags & MBI_FLAG_MMAP)
        end = region_end_from_mmap(mbi, start);
    if (mbi->flags & MBI_FLAG_MEM) {
        uint64_t upper = 0x100000ull + (uint64_t)mbi->mem_upper * 1024;   /* KiB above 1 MiB */
        if (!end || upper < end)
            end = upper;
    }
    if (!end)
        end = start + FALLBACK_SIZE;
    if (end > 0xFFFFF000ull)
        end = 0xFFFFF000ull;         /* stay addressable with 32-bit pointers */
    if (end < start)
        end = start;
    dma_init_range((uintptr_t)start, (uintptr_t)end);
}

void dma_init_range(uintptr_t start, uintptr_t end)
{
    region_start = next = start;
    region_end = end;
}

void *dma_alloc(size_t size, size_t align)
{
    if (align == 0)
        align = DEFAULT_ALIGN;
    if (align & (align - 1))
        panic("dma_alloc: alignment %u is not a power of two", (unsigned)align);
    uintptr_t at = (next + align - 1) & ~(uintptr_t)(align - 1);
    if (at < next || at > region_end || size > region_end - at)
        return NULL;
    next = at + size;
    return memset((void *)at, 0, size);
}

void dma_reset(void)
{
    next = region_start;
}

size_t dma_free_bytes(void)
{
    return region_end - next;
}

uintptr_t dma_region_start(void) { return region_start; }
uintptr_t dma_region_end(void) { return region_end; }

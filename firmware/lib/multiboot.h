/*
 * Multiboot v1 (Multiboot Specification 0.6.96): the header a guest program
 * carries and the information structure the loader hands over in EBX.
 *
 * Included from C and from assembly (start.S), so the structures are hidden
 * from the assembler.
 */
#ifndef FW_MULTIBOOT_H
#define FW_MULTIBOOT_H

/* Spec 3.1.1: the header is 32-bit aligned within the first 8192 bytes. */
#define MB_HEADER_MAGIC      0x1BADB002
#define MB_HEADER_PAGE_ALIGN (1u << 0)   /* boot modules on 4 KiB boundaries */
#define MB_HEADER_MEMORY     (1u << 1)   /* we want mem_* and mmap_* filled in */
#define MB_HEADER_FLAGS      (MB_HEADER_PAGE_ALIGN | MB_HEADER_MEMORY)

/* Spec 3.2: EAX holds this value when the loader jumps to the entry point. */
#define MB_BOOTLOADER_MAGIC  0x2BADB002

/* Spec 3.3: bits of multiboot_info.flags saying which fields are valid. */
#define MBI_FLAG_MEM         (1u << 0)   /* mem_lower, mem_upper */
#define MBI_FLAG_BOOTDEV     (1u << 1)
#define MBI_FLAG_CMDLINE     (1u << 2)
#define MBI_FLAG_MODS        (1u << 3)
#define MBI_FLAG_MMAP        (1u << 6)   /* mmap_length, mmap_addr */
#define MBI_FLAG_LOADER_NAME (1u << 9)

/* Spec 3.3, "mmap": type 1 is available RAM, every other type is reserved. */
#define MB_MMAP_AVAILABLE    1

#ifndef __ASSEMBLER__
#include <stdint.h>

struct multiboot_info {
    uint32_t flags;
    uint32_t mem_lower;          /* KiB of RAM from 0 (at most 640) */
    uint32_t mem_upper;          /* KiB of RAM from 1 MiB up to the first hole */
    uint32_t boot_device;
    uint32_t cmdline;            /* physical address of a NUL-terminated string */
    uint32_t mods_count;
    uint32_t mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length;        /* bytes in the buffer at mmap_addr */
    uint32_t mmap_addr;
    uint32_t drives_length;
    uint32_t drives_addr;
    uint32_t config_table;
    uint32_t boot_loader_name;
    uint32_t apm_table;
    uint32_t vbe_control_info;
    uint32_t vbe_mode_info;
    uint16_t vbe_mode;
    uint16_t vbe_interface_seg;
    uint16_t vbe_interface_off;
    uint16_t vbe_interface_len;
} __attribute__((packed));

/* One memory map entry.  `size` does not count itself: the next entry starts
 * size + 4 bytes after this one (spec 3.3). */
struct multiboot_mmap_entry {
    uint32_t size;
    uint64_t base_addr;
    uint64_t length;
    uint32_t type;
} __attribute__((packed));

#endif /* __ASSEMBLER__ */
#endif

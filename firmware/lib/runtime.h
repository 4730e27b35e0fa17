/*
 * The freestanding runtime of drivebay's guest programs: include this one
 * header.  A program defines
 *
 *     int main(unsigned magic, struct multiboot_info *mbi);
 *
 * start.S calls it once runtime_init() has set up the console, the IDT (all
 * vectors handled, see interrupt.h), both PICs (vectors 0x20/0x28, every IRQ
 * masked), the PIT (timer.h) and the DMA region (dma.h), with interrupts
 * disabled.  `mbi` points to a copy of the loader's multiboot information
 * (command line, loader name and memory map copied too), so the DMA region
 * may overwrite the original; its flags are 0 if `magic` was wrong.  main's
 * return value goes to exit_guest().
 */
#ifndef FW_RUNTIME_H
#define FW_RUNTIME_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arith.h"
#include "console.h"
#include "cstring.h"
#include "dma.h"
#include "exit.h"
#include "interrupt.h"
#include "io.h"
#include "multiboot.h"
#include "pci.h"
#include "pic.h"
#include "segments.h"
#include "tap.h"
#include "timer.h"

int main(unsigned magic, struct multiboot_info *mbi);
struct multiboot_info *runtime_init(uint32_t magic, uint32_t mbi_address);

/* The loader's magic and the copy of its information passed to main. */
uint32_t multiboot_magic(void);
struct multiboot_info *multiboot_info(void);
/* Walk the memory map: the first entry for prev == NULL, then the one after
 * prev; NULL at the end or where the map is malformed. */
const struct multiboot_mmap_entry *multiboot_mmap_next(const struct multiboot_info *mbi,
                                                       const struct multiboot_mmap_entry *prev);
/* The command line is words separated by spaces; QEMU puts the kernel's
 * file name first, drivebay does not.  cmdline_value("n") finds the word
 * "n=VALUE" and returns VALUE (up to the next space, *len bytes) or NULL. */
const char *cmdline_value(const char *key, size_t *len);
/* VALUE of "key=VALUE" as a decimal or 0x-hex number, or `fallback` if the
 * word is missing or not a number. */
uint32_t cmdline_u32(const char *key, uint32_t fallback);

/* Linker symbols (link.ld): the image spans _image_start.._end. */
extern char _image_start[], _end[];

#endif

/*
 * Start-up, multiboot information, command line and exit.
 */
#include "runtime.h"

/* Limits of what is copied out of the loader's information.  A PC's E820
 * map has a handful of entries; 170 of 24 bytes fit in MMAP_COPY_MAX. */
#define CMDLINE_COPY_MAX 1024
#define LOADER_NAME_COPY_MAX 64
#define MMAP_COPY_MAX 4096
#define MMAP_ENTRY_MIN 20          /* base, length, type: the entry's `size` */

static uint32_t boot_magic;
static struct multiboot_info mbi_copy;
static char cmdline_copy[CMDLINE_COPY_MAX];
static char loader_name_copy[LOADER_NAME_COPY_MAX];
static uint8_t mmap_copy[MMAP_COPY_MAX] __attribute__((aligned(8)));

static void copy_string(char *dst, uint32_t src, size_t max)
{
    const char *s = (const char *)(uintptr_t)src;
    size_t n = strnlen(s, max - 1);
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* QEMU puts its multiboot information right after the image, where the DMA
 * region begins: keep what programs read in .bss instead. */
static void copy_multiboot(uint32_t magic, uint32_t address)
{
    boot_magic = magic;
    if (magic != MB_BOOTLOADER_MAGIC || !address)
        return;                                  /* flags stay 0 */
    mbi_copy = *(const struct multiboot_info *)(uintptr_t)address;
    mbi_copy.flags &= MBI_FLAG_MEM | MBI_FLAG_BOOTDEV | MBI_FLAG_CMDLINE | MBI_FLAG_MMAP |
                      MBI_FLAG_LOADER_NAME;      /* the fields we copied or need no copy */
    if (mbi_copy.flags & MBI_FLAG_CMDLINE) {
        copy_string(cmdline_copy, mbi_copy.cmdline, sizeof(cmdline_copy));
        mbi_copy.cmdline = (uint32_t)cmdline_copy;
    }
    if (mbi_copy.flags & MBI_FLAG_LOADER_NAME) {
        copy_string(loader_name_copy, mbi_copy.boot_loader_name, sizeof(loader_name_copy));
        mbi_copy.boot_loader_name = (uint32_t)loader_name_copy;
    }
    if (mbi_copy.flags & MBI_FLAG_MMAP) {
        uint32_t n = mbi_copy.mmap_length < MMAP_COPY_MAX ? mbi_copy.mmap_length : MMAP_COPY_MAX;
        memcpy(mmap_copy, (const void *)(uintptr_t)mbi_copy.mmap_addr, n);
        mbi_copy.mmap_addr = (uint32_t)mmap_copy;
        mbi_copy.mmap_length = n;
    }
}

struct multiboot_info *runtime_init(uint32_t magic, uint32_t mbi_address)
{
    console_init();
    idt_init();
    pic_init(PIC_VECTOR_MASTER, PIC_VECTOR_SLAVE);
    timer_init();
    copy_multiboot(magic, mbi_address);
    dma_init();
    return &mbi_copy;
}

uint32_t multiboot_magic(void)
{
    return boot_magic;
}

struct multiboot_info *multiboot_info(void)
{
    return &mbi_copy;
}

const struct multiboot_mmap_entry *multiboot_mmap_next(const struct multiboot_info *mbi,
                                                       const struct multiboot_mmap_entry *prev)
{
    if (!(mbi->flags & MBI_FLAG_MMAP))
        return NULL;
    uintptr_t end = mbi->mmap_addr + mbi->mmap_length;
    uintptr_t at = prev ? (uintptr_t)prev + prev->size + 4 : mbi->mmap_addr;
    if (at + sizeof(struct multiboot_mmap_entry) > end)
        return NULL;
    const struct multiboot_mmap_entry *e = (const void *)at;
    if (e->size < MMAP_ENTRY_MIN || at + e->size + 4 > end)
        return NULL;
    return e;
}

const char *cmdline_value(const char *key, size_t *len)
{
    if (!(mbi_copy.flags & MBI_FLAG_CMDLINE))
        return NULL;
    size_t klen = strlen(key);
    for (const char *w = cmdline_copy; *w;) {
        while (*w == ' ')
            w++;
        const char *e = w;
        while (*e && *e != ' ')
            e++;
        if ((size_t)(e - w) > klen && !strncmp(w, key, klen) && w[klen] == '=') {
            if (len)
                *len = (size_t)(e - w) - klen - 1;
            return w + klen + 1;
        }
        w = e;
    }
    return NULL;
}

uint32_t cmdline_u32(const char *key, uint32_t fallback)
{
    size_t len;
    const char *v = cmdline_value(key, &len), *end;
    if (!v || !len)
        return fallback;
    uint32_t n = parse_u32(v, &end);
    return end == v + len ? n : fallback;
}

void exit_guest(unsigned code)
{
    outb(EXIT_PORT, (uint8_t)code);
    for (;;)
        __asm__ __volatile__("cli; hlt");
}

void panic(const char *fmt, ...)
{
    va_list ap;
    printf("Bail out! ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    console_putc('\n');
    exit_guest(EXIT_FAULT);
}

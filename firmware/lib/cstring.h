/*
 * The C library's memory and string functions.  gcc may emit calls to
 * memset/memcpy/memmove/memcmp on its own (structure copies, zeroing), even
 * with -fno-builtin, so these exact names must exist.
 */
#ifndef FW_CSTRING_H
#define FW_CSTRING_H

#include <stddef.h>
#include <stdint.h>

void *memset(void *dst, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
char *strchr(const char *s, int c);

/* Parse an unsigned number: decimal, or hex with a 0x prefix.  Stops at the
 * first character that is not a digit; *end (if given) points there.  Values
 * past 32 bits wrap. */
uint32_t parse_u32(const char *s, const char **end);

#endif

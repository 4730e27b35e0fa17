/*
 * Test Anything Protocol output (TAP version 12/13 line syntax), which the
 * host side (tests/harness.py) parses from the serial console:
 *
 *     1..3                   tap_plan(3)
 *     ok 1 - multiboot magic tap_ok(true, "multiboot magic")
 *     not ok 2 - ...         tap_ok(false, ...)
 *     ok 3 - # SKIP why      tap_skip("why")
 *     # anything             tap_diag("anything")
 *
 * tap_done() ends the program through the exit port: EXIT_PASS (0) when
 * every test passed and as many ran as planned, EXIT_FAIL (1) otherwise.
 * Without a tap_plan() call, tap_done() prints the plan after the tests.
 */
#ifndef FW_TAP_H
#define FW_TAP_H

#include <stdbool.h>

void tap_plan(unsigned n);
/* Print "ok N - desc" or "not ok N - desc"; returns cond. */
bool tap_ok(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tap_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
unsigned tap_failures(void);
__attribute__((noreturn)) void tap_done(void);

#endif

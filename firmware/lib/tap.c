/*
 * TAP lines on the console.
 */
#include "runtime.h"

static unsigned planned, run, failed;
static bool have_plan;

void tap_plan(unsigned n)
{
    planned = n;
    have_plan = true;
    printf("1..%u\n", n);
}

bool tap_ok(bool cond, const char *fmt, ...)
{
    va_list ap;
    run++;
    if (!cond)
        failed++;
    printf("%s %u - ", cond ? "ok" : "not ok", run);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    console_putc('\n');
    return cond;
}

void tap_skip(const char *fmt, ...)
{
    va_list ap;
    printf("ok %u - # SKIP ", ++run);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    console_putc('\n');
}

void tap_diag(const char *fmt, ...)
{
    va_list ap;
    console_write("# ", 2);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    console_putc('\n');
}

unsigned tap_failures(void)
{
    return failed;
}

void tap_done(void)
{
    if (!have_plan) {
        printf("1..%u\n", run);
        planned = run;
    }
    if (run != planned)
        tap_diag("planned %u tests but ran %u", planned, run);
    if (failed)
        tap_diag("failed %u of %u tests", failed, run);
    exit_guest(failed == 0 && run == planned ? EXIT_PASS : EXIT_FAIL);
}

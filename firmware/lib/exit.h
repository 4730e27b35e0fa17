/*
 * Ending a run: the exit port and the statuses written to it.  Included from
 * C and from assembly.
 *
 * drivebay reports the value written to the exit port as the guest's status;
 * QEMU's isa-debug-exit (-device isa-debug-exit,iobase=0x501,iosize=2) makes
 * the QEMU process exit with (value << 1) | 1, so EXIT_PASS becomes 1.
 */
#ifndef FW_EXIT_H
#define FW_EXIT_H

#define EXIT_PORT  0x501
#define EXIT_PASS  0          /* every test passed */
#define EXIT_FAIL  1          /* a test failed or the plan was not met */
#define EXIT_FAULT 2          /* CPU exception, unexpected interrupt, panic() */

#ifndef __ASSEMBLER__
/* Write `code` (one byte) to the exit port; if nothing is listening there,
 * stop the CPU (CLI; HLT forever).  Never returns. */
__attribute__((noreturn)) void exit_guest(unsigned code);
/* Print "Bail out! <message>" and exit_guest(EXIT_FAULT). */
__attribute__((noreturn, format(printf, 1, 2))) void panic(const char *fmt, ...);
#endif

#endif

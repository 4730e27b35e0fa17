"""The terminal side of a guest run: where console bytes go, Ctrl-C, and
what the end of a run means for the exit status."""

import signal
import sys

from drivebay.boot.cpu import StopReason

EXIT_TIMEOUT, EXIT_HALTED, EXIT_RESET, EXIT_CRASH, EXIT_INTERRUPTED = 124, 125, 126, 127, 130
STATUS = {StopReason.TIMEOUT: EXIT_TIMEOUT, StopReason.HALTED: EXIT_HALTED,
          StopReason.RESET: EXIT_RESET, StopReason.STOPPED: EXIT_INTERRUPTED}


def output(spec):
    """A byte sink for ``stdout``, ``stderr``, a file name, or None for ``none``."""
    if spec in (None, "none"):
        return None
    if spec in ("stdout", "stderr"):
        return stream_writer(getattr(sys, spec))
    f = open(spec, "ab", buffering=0)
    return f.write


def stream_writer(stream):
    buf = stream.buffer

    def write(data):
        buf.write(data)
        buf.flush()
    return write


def run_interruptible(run):
    """Call ``run(should_stop)``; Ctrl-C makes should_stop true, powering the
    guest off cleanly at the next slice instead of killing the process."""
    interrupted = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(True))
    try:
        return run(lambda: bool(interrupted))
    finally:
        signal.signal(signal.SIGINT, old)


def exit_status(result, timeout, timeout_status=EXIT_TIMEOUT):
    """The process exit status for a RunResult, telling the user why on stderr."""
    if result.reason == StopReason.EXIT:
        return result.exit_code
    if result.reason == StopReason.STOPPED:
        print("\ndrivebay: powered off (interrupted)", file=sys.stderr)
    elif result.reason == StopReason.TIMEOUT:
        print(f"\ndrivebay: guest still running after {timeout} s: powered off", file=sys.stderr)
        return timeout_status
    elif result.reason == StopReason.HALTED:
        print(f"\ndrivebay: guest halted with interrupts disabled at EIP {result.eip:#x}",
              file=sys.stderr)
    elif result.reason == StopReason.RESET:
        print("\ndrivebay: guest requested a reset", file=sys.stderr)
    return STATUS[result.reason]

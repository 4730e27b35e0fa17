"""Progress of long operations (convert, merge, compact) on a terminal.

``TerminalProgress`` is the callback the CLI passes down: it redraws one line
on stderr at most ten times a second, and only when stderr is a terminal
(or ``force`` is set), so scripts and tests see clean output.
"""

import sys
import time


class TerminalProgress:
    def __init__(self, label, stream=None, force=False):
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = force or self.stream.isatty()
        self._last = 0.0
        self._shown = False

    def __call__(self, done, total):
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        pct = 100.0 * done / total if total else 100.0
        bar = "#" * int(pct / 5)
        self.stream.write(f"\r{self.label}: [{bar:<20}] {pct:5.1f}%")
        self.stream.flush()
        self._shown = True

    def finish(self):
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()

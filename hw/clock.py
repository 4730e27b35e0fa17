"""Virtual time for devices.

Devices never read the host clock.  They read ``clock.now_ns()`` and arm
Timers; the machine that owns the VirtualClock decides how time moves
(boot/ follows the host's monotonic clock while the CPU runs and skips ahead
to the next deadline while the guest halts).
"""

import heapq

NS_PER_SEC = 1_000_000_000


class Timer:
    """A one-shot callback at a deadline in virtual nanoseconds."""

    __slots__ = ("clock", "callback", "deadline", "_seq", "name")

    def __init__(self, clock, callback, name="timer"):
        self.clock = clock
        self.callback = callback
        self.deadline = None
        self._seq = 0
        self.name = name

    def mod(self, deadline_ns):
        """(Re)arm to fire once at ``deadline_ns``."""
        self.deadline = deadline_ns
        self._seq += 1
        heapq.heappush(self.clock._queue, (deadline_ns, id(self), self._seq, self))

    def cancel(self):
        self.deadline = None
        self._seq += 1

    @property
    def pending(self):
        return self.deadline is not None


class VirtualClock:
    def __init__(self, start_ns=0):
        self._now = start_ns
        self._queue = []

    def now_ns(self):
        return self._now

    def timer(self, callback, name="timer"):
        return Timer(self, callback, name)

    def next_deadline(self):
        """The earliest armed deadline, or None."""
        q = self._queue
        while q:
            deadline, _, seq, timer = q[0]
            if timer._seq == seq and timer.deadline == deadline:
                return deadline
            heapq.heappop(q)
        return None

    def advance_to(self, ns):
        """Move time forward to ``ns`` firing every timer due by then, in order."""
        q = self._queue
        while q:
            deadline, _, seq, timer = q[0]
            if timer._seq != seq or timer.deadline != deadline:
                heapq.heappop(q)
                continue
            if deadline > ns:
                break
            heapq.heappop(q)
            if deadline > self._now:
                self._now = deadline
            timer.deadline = None
            timer.callback()
        if ns > self._now:
            self._now = ns

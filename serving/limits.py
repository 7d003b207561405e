"""How fast a client may make the service write: a token bucket of campaign-log rows.

Every `/feedback` event and every `assigned` row of a `/recommend` that names a campaign is a
row in the campaign log. The bucket refills at `rate` rows per second up to `burst`; a request
whose rows do not fit is refused with 429 and the seconds after which it would fit, so one key
holder cannot make the log grow without bound. Each worker keeps its own bucket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class WriteBudget:
    """A thread-safe token bucket of rows.

    Examples
    --------
    >>> now = [0.0]
    >>> budget = WriteBudget(rate=10.0, burst=20, clock=lambda: now[0])
    >>> budget.take(15), budget.take(10)
    (0.0, 0.5)
    >>> now[0] = 0.5
    >>> budget.take(10)
    0.0
    """

    def __init__(self, *, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.clock = rate, burst, clock
        self._tokens, self._at = float(burst), clock()
        self._lock = threading.Lock()

    def take(self, rows: int) -> float:
        """0.0 and the rows taken when they fit now, else the seconds until they would fit
        (nothing taken). More rows than `burst` never fit: the caller refuses those first."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if rows <= self._tokens:
                self._tokens -= rows
                return 0.0
            return (rows - self._tokens) / self.rate


class Rebuild:
    """While this process builds a new bundle (a hot reload), and for GRACE_SECONDS after it,
    the build's CPU and collector pause queue requests that are a transient backlog, not
    overload: admission then allows HEADROOM times its usual requests in flight."""

    HEADROOM = 4
    GRACE_SECONDS = 5.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._building = threading.Event()
        self._until = 0.0

    def start(self) -> None:
        self._building.set()

    def end(self) -> None:
        self._until = self.clock() + self.GRACE_SECONDS
        self._building.clear()

    def factor(self) -> int:
        """How many times the usual admission limit applies now."""
        busy = self._building.is_set() or self.clock() < self._until
        return self.HEADROOM if busy else 1


REBUILD = Rebuild()

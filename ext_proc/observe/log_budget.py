"""A budget for log lines caused by what peers send, so bad input cannot become a flood of logs.

Anyone who can reach the ext_proc port can send unparseable messages as fast as it likes; one
ERROR line with a traceback each would cost more disk and log-pipeline money than the attack
costs the sender. A token bucket lets a burst through (the first bad messages are the
interesting ones), then a steady trickle; what it held back is counted in the next line that
goes out. Counting in metrics is never limited: only the logging is.
"""

from __future__ import annotations

from ext_proc.core.clock import Clock, monotonic


class LogBudget:
    __slots__ = ("_burst", "_clock", "_last", "_rate", "_suppressed", "_tokens")

    def __init__(self, rate: float = 1.0, burst: int = 5, clock: Clock = monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._suppressed = 0

    def take(self) -> int | None:
        """None: leave this line out. Otherwise log it, saying how many were left out before it."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1.0:
            self._suppressed += 1
            return None
        self._tokens -= 1.0
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed

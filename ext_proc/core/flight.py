"""Calls in flight by admission time, so that a hanging tier is judged before its calls answer.

A fault whose calls hang (a GPU stalled, a server stuck on a lock) shows nothing to a breaker
that judges answers: the first answers are the per-try timeouts, a second or more later, and by
then hundreds of calls are stuck. A call still in flight after ``slow_call_duration`` is known to
be slow already (README, "Slow calls in flight"). Rather than a timer per request, each tier
counts its admissions in short buckets by admission time, and the answers that came back in
time; a periodic sweep on the server's loop (``StateRegistry.judge_in_flight``) looks at each
bucket once it is ``slow_call_duration`` old. Every call of a bucket that has no answer in time
is overdue; such buckets one after another, with no call answered in time between them, make a
run of slow calls in admission order, and a run of ``min_calls`` calls opens the breaker: the
slow-call rule's own evidence (every one of at least ``min_calls`` calls slow), not
``consecutive_failures``, which is about failures and would let a pause of a few calls trip a
model. One hung host among several cannot make such a run: the calls the others answer in time
break it, as Envoy's round robin interleaves them. A call dropped before its answer (the client
went away) is taken out of its bucket: neither slow nor in time, so a client cannot break a run
by abandoning calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable

MIN_WIDTH = 0.025
"""Seconds per bucket at least: a sweep tells calls apart to about this (and its own period)."""
BUCKETS_PER_DURATION = 16
"""Buckets per slow_call_duration, so that long durations keep a small ring."""
SPARE_BUCKETS = 64
"""Buckets past the duration the ring keeps, for a sweep that comes late (the loop was busy)."""


class Flight:
    """One tier's admissions and in-time answers by admission bucket (a ring of counts)."""

    __slots__ = (
        "_admitted",
        "_answered",
        "_head",
        "_size",
        "_swept",
        "_width",
        "duration",
        "inflight",
        "on_bucket",
        "overdue",
        "run",
    )

    def __init__(self, slow_call_duration: float, on_bucket: Callable[[], None] | None = None) -> None:
        self.on_bucket = on_bucket or _nothing
        """Called when an admission opens a new bucket: the sweep must look at this tier again."""
        self.inflight = 0
        """Calls admitted and not yet answered or dropped."""
        self.overdue = 0
        """Calls found still in flight past the duration, ever: for the state endpoint."""
        self.reconfigure(slow_call_duration)

    def reconfigure(self, slow_call_duration: float) -> None:
        """Judge by a new duration from now on: the buckets start empty (calls in flight now are
        not judged), the in-flight count goes on."""
        self.duration = slow_call_duration
        self._width = max(MIN_WIDTH, slow_call_duration / BUCKETS_PER_DURATION)
        self._size = math.ceil(slow_call_duration / self._width) + SPARE_BUCKETS
        self._admitted = [0] * self._size
        self._answered = [0] * self._size
        self._head = -1
        """Absolute index of the newest bucket (time / width); -1 before the first admission."""
        self._swept = -1
        """Absolute index of the last bucket the sweep judged."""
        self.run = 0
        """Overdue calls one after another in admission order, none answered in time between."""

    def admit(self, now: float) -> None:
        """A call admitted at ``now`` is in flight."""
        self.inflight += 1
        index = int(now / self._width)
        head = self._head
        if index == head:
            self._admitted[index % self._size] += 1
        elif index < head:  # a time older than the newest bucket (the clock never goes back): counted there
            self._admitted[head % self._size] += 1
        else:
            self._advance(index)
            self._admitted[index % self._size] += 1
            self.on_bucket()

    @property
    def swept(self) -> bool:
        """Every bucket with admissions has been judged: nothing for the sweep until the next one."""
        return self._swept >= self._head

    def answer(self, started: float, now: float) -> None:
        """A call admitted at ``started`` was answered at ``now``."""
        self.inflight -= 1
        if now - started < self.duration:
            index = int(started / self._width)
            if index > self._head - self._size and index > self._swept:
                self._answered[index % self._size] += 1

    def drop(self, started: float) -> None:
        """A call admitted at ``started`` ended without an answer: it is not counted at all."""
        self.inflight -= 1
        index = int(started / self._width)
        if index > self._head - self._size and index > self._swept:
            slot = index % self._size
            if self._admitted[slot] > self._answered[slot]:
                self._admitted[slot] -= 1

    def sweep(self, now: float) -> int:
        """Judge the buckets that are ``duration`` old by ``now``; returns the run of overdue calls."""
        ready = int((now - self.duration) / self._width) - 1  # the newest bucket wholly old enough
        first = max(self._swept + 1, self._head - self._size + 1)
        if ready < first:
            return self.run
        size = self._size
        for index in range(first, min(ready, self._head) + 1):
            slot = index % size
            admitted = self._admitted[slot]
            if not admitted:
                continue
            answered = self._answered[slot]
            self.overdue += admitted - answered
            self.run = self.run + admitted if answered == 0 else 0
        self._swept = max(self._swept, ready)
        return self.run

    def reset_run(self) -> None:
        self.run = 0

    def _advance(self, index: int) -> None:
        """Move the head to ``index``, emptying the slots it passes (their buckets are gone)."""
        head = self._head
        size = self._size
        for absolute in range(max(head + 1, index - size + 1), index + 1):
            slot = absolute % size
            self._admitted[slot] = 0
            self._answered[slot] = 0
        self._head = index


def _nothing() -> None:
    return None

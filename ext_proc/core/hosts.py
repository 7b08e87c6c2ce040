"""Which upstream hosts a tier's evidence comes from: a bad host is Envoy's, a bad model is ours.

One replica of three answering 503 is Envoy's to handle (retries on another host, outlier
ejection). But when it comes back from ejection still bad, or a retry budget runs out, its fast
failures reach modelguard back to back, ahead of the slower successes of the healthy replicas,
and a breaker judging the tier as one would open on them: the whole model off its first tier for
one host. So a breaker's verdict also asks where its evidence came from (README, "Host-aware
judgement"):

- a verdict stands when the hosts whose own calls cross the same threshold number at least
  ``min_failing_hosts`` (default 2), or every host seen in the window when fewer are seen: a
  model with one host trips as before, one with two needs both to fail;
- for ``consecutive_failures`` the hosts are those that answered the failures of the run;
- a failure no host answered (Envoy found no host to try: ``no healthy upstream``, an overflow,
  a client gone before an answer, or Envoy was not told to send the host) counts as one more host,
  ``NO_HOST``: without host information every call is its, one host seen, and the breaker judges
  exactly as before; with it, such failures alone cannot outvote healthy hosts.

Hosts come from Envoy's ``upstream.address`` attribute on the response (envoy/envoy.yaml,
``response_attributes``). A host's evidence is its share of the breaker's own window, so that one
host's figures are the tier's when it is the only one: with a time window, each host keeps a
window of the same length and buckets (``TimeHostBook``); with a count window, each of the last
``window_calls`` calls carries the slot of its host (``CountHostBook``). A tier tracks at most
``MAX_HOSTS`` hosts (the rest share one entry, ``OTHER``), so memory is bounded whatever Envoy
reports.
"""

from __future__ import annotations

from collections.abc import Iterator

from ext_proc.core.windows import TimeWindow, WindowFigures
from ext_proc.policy import BreakerSettings

NO_HOST = ""
"""The host of an answer Envoy gave without one (or named none)."""
OTHER = "other"
"""Where the hosts past MAX_HOSTS are counted together."""
MAX_HOSTS = 32
"""Hosts a tier tracks one by one: more than a model's replicas in one Envoy's view, usually."""
MAX_HOST_LENGTH = 64
"""A longer host name (an address is at most 47 characters) is counted as OTHER: names are shown
on /metrics and /v1/state, and anything that reaches the port can send one."""

CONSECUTIVE = "consecutive_failures"
FAILURE_RATE = "failure_rate"
SLOW_CALL_RATE = "slow_call_rate"


def host_book(settings: BreakerSettings) -> HostBook:
    """The book for a breaker's window: per-host time windows, or the count window's calls by host."""
    if settings.window_calls is not None:
        return CountHostBook(settings.window_calls)
    assert settings.window is not None  # the reader sets exactly one of the two
    return TimeHostBook(settings.window)


class HostBook:
    """The evidence of one tier's breaker by host: the run's hosts here, the counts in a subclass."""

    __slots__ = ("run",)

    def __init__(self) -> None:
        self.run: set[str] = set()
        """The hosts that answered the failures of the current run of consecutive failures."""

    def note(self, host: str, now: float, failed: bool, slow: bool) -> None:
        raise NotImplementedError

    def note_overload(self, host: str, now: float) -> None:
        raise NotImplementedError

    def figures(self, now: float) -> Iterator[tuple[str, WindowFigures]]:
        """Each tracked host's calls in the breaker's window (hosts without any may be left out)."""
        raise NotImplementedError

    def knows(self, host: str) -> bool:
        """Whether the host has answered for this tier (and is still tracked)."""
        raise NotImplementedError

    def clear_run(self) -> None:
        self.run.clear()

    def _noted(self, host: str, failed: bool) -> None:
        if failed:
            self.run.add(host)
        else:
            self.run.clear()

    def spread(self, cause: str, settings: BreakerSettings, now: float) -> bool:
        """Whether the evidence for ``cause`` comes from enough hosts (see the module's rule)."""
        need = settings.min_failing_hosts
        if cause == CONSECUTIVE and len(self.run) >= need:
            return True
        seen = [figures for _, figures in self.figures(now) if figures.calls]
        if len(seen) <= 1:  # one host, or nothing noted here (a caller that judges without hosts)
            return True
        if cause == CONSECUTIVE:
            failing = len(self.run)
        else:
            failing = sum(1 for figures in seen if _crosses(cause, figures, settings))
        return failing >= min(need, len(seen))

    def snapshot(self, now: float) -> dict[str, dict[str, object]]:
        """The hosts with calls in the window, for /v1/state."""
        found: dict[str, dict[str, object]] = {}
        for host, figures in self.figures(now):
            if figures.calls or figures.overloaded:
                found[host or "none"] = {
                    "calls": figures.calls,
                    "failures": figures.failures,
                    "slow": figures.slow,
                    "overloaded": figures.overloaded,
                    "failure_rate": round(figures.failure_rate, 4),
                    "in_run": host in self.run,
                }
        return found


class TimeHostBook(HostBook):
    """A time window per host, of the breaker's window's length (so the same buckets)."""

    __slots__ = ("_length", "hosts")

    def __init__(self, length: float) -> None:
        super().__init__()
        self._length = length
        self.hosts: dict[str, TimeWindow] = {}

    def note(self, host: str, now: float, failed: bool, slow: bool) -> None:
        window = self.hosts.get(host)
        if window is None:
            host = self._admit(host, now)
            window = self.hosts[host]
        window.record(now, failed, slow)
        if failed or self.run:
            self._noted(host, failed)

    def note_overload(self, host: str, now: float) -> None:
        window = self.hosts.get(host)
        if window is None:
            window = self.hosts[self._admit(host, now)]
        window.record_overload(now)

    def figures(self, now: float) -> Iterator[tuple[str, WindowFigures]]:
        for host, window in self.hosts.items():
            yield host, window.figures(now)

    def knows(self, host: str) -> bool:
        return host in self.hosts

    def _admit(self, host: str, now: float) -> str:
        """The entry a host not seen before is counted under: its own, in a slot of one gone quiet
        if the book is full, else the shared OTHER entry."""
        hosts = self.hosts
        if len(host) > MAX_HOST_LENGTH:
            host = OTHER
        if len(hosts) >= MAX_HOSTS - 1:  # one slot kept for OTHER
            quiet = [name for name, window in hosts.items() if name != OTHER and not window.figures(now).calls]
            for name in quiet:
                del hosts[name]
                self.run.discard(name)
            if len(hosts) >= MAX_HOSTS - 1:
                host = OTHER
        if host not in hosts:
            hosts[host] = TimeWindow(self._length)
        return host


class CountHostBook(HostBook):
    """The last ``size`` calls, each with the slot of the host that answered it (a ring of bytes:
    slot << 2, bit 1 slow, bit 0 failed), and each slot's running totals over the ring."""

    __slots__ = ("_calls", "_failures", "_filled", "_names", "_next", "_overloaded", "_ring", "_slot_of", "_slow")

    def __init__(self, size: int) -> None:
        super().__init__()
        self._ring = bytearray(size)
        self._next = 0
        self._filled = 0
        self._slot_of: dict[str, int] = {}
        self._names: list[str] = [NO_HOST] * MAX_HOSTS
        self._calls = [0] * MAX_HOSTS
        self._failures = [0] * MAX_HOSTS
        self._slow = [0] * MAX_HOSTS
        self._overloaded = [0] * MAX_HOSTS
        """Overload answers by slot since the slot was taken (a count window keeps no time)."""

    def note(self, host: str, now: float, failed: bool, slow: bool) -> None:
        slot = self._slot_of.get(host)
        if slot is None:
            slot = self._admit(host)
        ring = self._ring
        index = self._next
        if self._filled == len(ring):
            old = ring[index]
            gone = old >> 2
            self._calls[gone] -= 1
            self._failures[gone] -= old & 1
            self._slow[gone] -= (old >> 1) & 1
        else:
            self._filled += 1
        ring[index] = slot << 2 | slow << 1 | failed
        self._calls[slot] += 1
        self._failures[slot] += failed
        self._slow[slot] += slow
        self._next = index + 1 if index + 1 < len(ring) else 0
        if failed or self.run:
            self._noted(self._names[slot], failed)

    def note_overload(self, host: str, now: float) -> None:
        slot = self._slot_of.get(host)
        if slot is None:
            slot = self._admit(host)
        self._overloaded[slot] += 1

    def knows(self, host: str) -> bool:
        return host in self._slot_of

    def figures(self, now: float) -> Iterator[tuple[str, WindowFigures]]:
        for host, slot in self._slot_of.items():
            yield host, WindowFigures(self._calls[slot], self._failures[slot], self._slow[slot], self._overloaded[slot])

    def _admit(self, host: str) -> int:
        """The slot a host not seen before is counted in: a free one or one whose host has no call
        left in the ring, else the last slot, OTHER's."""
        last = MAX_HOSTS - 1
        taken = self._slot_of
        if len(host) <= MAX_HOST_LENGTH:
            for slot in range(last):
                if not self._calls[slot]:
                    name = self._names[slot]
                    if taken.get(name) == slot:
                        del taken[name]
                        self.run.discard(name)
                    return self._take(slot, host)
        return last if taken.get(OTHER) == last else self._take(last, OTHER)

    def _take(self, slot: int, host: str) -> int:
        self._names[slot] = host
        self._overloaded[slot] = 0
        self._slot_of[host] = slot
        return slot


def _crosses(cause: str, figures: WindowFigures, settings: BreakerSettings) -> bool:
    if cause == FAILURE_RATE:
        return figures.failures > 0 and figures.failures / figures.calls >= settings.failure_rate
    return figures.slow > 0 and figures.slow / figures.calls >= settings.slow_call_rate

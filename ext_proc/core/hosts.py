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
``response_attributes``). Each host keeps its own time window; a tier keeps at most
``MAX_HOSTS`` of them (the rest share one entry, ``OTHER``), so memory is bounded whatever
Envoy reports.
"""

from __future__ import annotations

from ext_proc.core.windows import TimeWindow, WindowFigures
from ext_proc.policy import BreakerSettings

NO_HOST = ""
"""The host of an answer Envoy gave without one (or named none)."""
OTHER = "other"
"""Where the hosts past MAX_HOSTS are counted together."""
MAX_HOSTS = 32
"""Hosts a tier tracks one by one: more than a model's replicas in one Envoy's view, usually."""
COUNT_WINDOW_LENGTH = 60.0
"""The host window of a breaker with a count window (which has no length of its own): long, so
that the hosts' windows hold at least the calls the breaker's window does at any sensible rate."""

CONSECUTIVE = "consecutive_failures"
FAILURE_RATE = "failure_rate"
SLOW_CALL_RATE = "slow_call_rate"


class HostBook:
    """The evidence of one tier's breaker by host."""

    __slots__ = ("_length", "hosts", "run")

    def __init__(self, settings: BreakerSettings) -> None:
        self._length = settings.window or COUNT_WINDOW_LENGTH
        self.hosts: dict[str, TimeWindow] = {}
        self.run: set[str] = set()
        """The hosts that answered the failures of the current run of consecutive failures."""

    def note(self, host: str, now: float, failed: bool, slow: bool) -> None:
        window = self.hosts.get(host)
        if window is None:
            host = self._admit(host, now)
            window = self.hosts[host]
        window.record(now, failed, slow)
        if failed:
            self.run.add(host)
        elif self.run:
            self.run.clear()

    def note_overload(self, host: str, now: float) -> None:
        window = self.hosts.get(host)
        if window is None:
            window = self.hosts[self._admit(host, now)]
        window.record_overload(now)

    def clear_run(self) -> None:
        self.run.clear()

    def spread(self, cause: str, settings: BreakerSettings, now: float) -> bool:
        """Whether the evidence for ``cause`` comes from enough hosts (see the module's rule)."""
        need = settings.min_failing_hosts
        if cause == CONSECUTIVE and len(self.run) >= need:
            return True
        seen = [figures for figures in (window.figures(now) for window in self.hosts.values()) if figures.calls]
        if not seen:  # nothing noted here (a caller that judges without hosts): the tier's verdict stands
            return True
        if cause == CONSECUTIVE:
            failing = len(self.run)
        else:
            failing = sum(1 for figures in seen if _crosses(cause, figures, settings))
        return failing >= min(need, len(seen))

    def snapshot(self, now: float) -> dict[str, dict[str, object]]:
        """The hosts with calls in the window, for /v1/state."""
        found: dict[str, dict[str, object]] = {}
        for host, window in self.hosts.items():
            figures = window.figures(now)
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

    def _admit(self, host: str, now: float) -> str:
        """The entry a host not seen before is counted under: its own, in a slot of one gone quiet
        if the book is full, else the shared OTHER entry."""
        hosts = self.hosts
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


def _crosses(cause: str, figures: WindowFigures, settings: BreakerSettings) -> bool:
    if cause == FAILURE_RATE:
        return figures.failures > 0 and figures.failures / figures.calls >= settings.failure_rate
    return figures.slow > 0 and figures.slow / figures.calls >= settings.slow_call_rate

"""The tiers' model servers' own load, scraped off the request path (README, "Backend load signals").

A tier with ``load_signal`` has its servers' Prometheus text fetched every ``interval`` (every URL at
once, each within ``timeout``; a page over MAX_BODY bytes is a failure); the samples of ``metric`` are summed per
URL. A URL's figure is fresh for ``stale_after`` seconds; the tier is overloaded while any fresh
figure is over ``max``, and then pushed back (core/registry.py ``TierState.signal``) for
``stale_after`` or until a reading under the bar: its requests but the critical ones step down the
ladder. A URL that fails (refused, timed out, not 200, no such metric, a figure that is not a
number) has no figure: unknown, which never holds traffic back. Decisions only read the state's
``pushed_until``: no request waits on a scrape. Figures and failures are on /v1/state (the tier's
``load_signal``, as of the last scrape).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from ext_proc.core.clock import Clock
from ext_proc.core.guard import Guard
from ext_proc.core.registry import StateRegistry
from ext_proc.observe.log_budget import LogBudget
from ext_proc.policy.model import LoadSignal

MAX_BODY = 1 << 20
"""Bytes of a metrics page read at most: vLLM's is about 30 KB."""
SUPERVISE_INTERVAL = 0.5
"""Seconds between looks at the live policy's signals (a reload adds or ends scrapes)."""

log = logging.getLogger("modelguard.server")

Key = tuple[str, str, LoadSignal]
"""(model, tier, its signal): a reload that changes the signal starts a new scrape."""


NOT_IT = -math.inf
"""A line starting with the metric's name that belongs to another metric (``name_total``)."""


def gauge_sum(text: str, metric: str) -> float | None:
    """The sum of ``metric``'s samples in Prometheus text (any labels), None when it has none or one
    is not a finite number. Only the lines that start with the name are looked at (str.find: a
    vLLM-sized page of 36 KB in about 16 µs)."""
    total: float | None = None
    needle = "\n" + metric
    at = 0 if text.startswith(metric) else _after(text.find(needle))
    while at >= 0:
        end = text.find("\n", at)
        value = _sample(text[at : len(text) if end < 0 else end], len(metric))
        if value is None:
            return None
        if value is not NOT_IT:
            total = value if total is None else total + value
        at = -1 if end < 0 else _after(text.find(needle, end))
    return total


def _after(newline: int) -> int:
    """Where the line after a newline found at ``newline`` starts; -1 when none was found."""
    return newline + 1 if newline >= 0 else -1


def _sample(line: str, name_length: int) -> float | None:
    """The value of a sample line, NOT_IT for another metric's line, None when it does not parse."""
    rest = line[name_length:]
    if rest.startswith("{"):
        close = rest.rfind("}")  # a label value may hold a brace: the labels end at the last one
        if close < 0:
            return None
        rest = rest[close + 1 :]
    elif not rest.startswith((" ", "\t")):
        return NOT_IT
    words = rest.split()
    if not words:
        return None
    try:
        value = float(words[0])
    except ValueError:
        return None
    return value if math.isfinite(value) else None


async def _page(response: aiohttp.ClientResponse) -> bytes:
    """The whole page, or ValueError past MAX_BODY bytes (read() alone may stop at a chunk)."""
    body = bytearray()
    async for chunk in response.content.iter_chunked(1 << 16):
        body += chunk
        if len(body) > MAX_BODY:
            raise ValueError(f"a page over {MAX_BODY} bytes")
    return bytes(body)


@dataclass
class Reading:
    """A URL's last figure and when it came (monotonic), and its scrapes."""

    value: float | None = None
    at: float = -math.inf
    ok: int = 0
    failed: int = 0
    error: str = ""


@dataclass
class Scrape:
    """One tier's signal and its URLs' readings."""

    model: str
    tier: str
    signal: LoadSignal
    readings: dict[str, Reading] = field(default_factory=dict)

    def fresh(self, now: float) -> list[tuple[float, float]]:
        """(figure, age) of every URL whose last figure is not stale."""
        stale = self.signal.stale_after
        return [(r.value, now - r.at) for r in self.readings.values() if r.value is not None and now - r.at <= stale]

    def overloaded(self, now: float) -> bool:
        return any(value > self.signal.max for value, _ in self.fresh(now))

    def snapshot(self, now: float) -> dict[str, object]:
        fresh = self.fresh(now)
        return {
            "metric": self.signal.metric,
            "max": self.signal.max,
            "value": max((value for value, _ in fresh), default=None),
            "overloaded": self.overloaded(now),
            "oldest_fresh_s": round(max((age for _, age in fresh), default=0.0), 3),
            "scrapes_ok": sum(r.ok for r in self.readings.values()),
            "scrapes_failed": sum(r.failed for r in self.readings.values()),
            "errors": sorted({r.error for r in self.readings.values() if r.error}),
        }


class LoadSignals:
    """Every tier's scrape, following the live guard."""

    def __init__(self, guard: Callable[[], Guard], registry: StateRegistry, clock: Clock) -> None:
        self._guard = guard
        self._registry = registry
        self._clock = clock
        self.scrapes: dict[Key, Scrape] = {}
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._failures = LogBudget()
        self._seen: Guard | None = None

    async def run(self) -> None:
        """Until cancelled: start and end the tiers' scrapes as the live policy says."""
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=True) as session:
            try:
                while True:
                    self._supervise(session)
                    await asyncio.sleep(SUPERVISE_INTERVAL)
            finally:
                for task in self._tasks.values():
                    task.cancel()
                await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _supervise(self, session: aiohttp.ClientSession) -> None:
        guard = self._guard()
        if guard is self._seen:
            return  # the same policy: its scrapes run (a look at 10,000 models' tiers is milliseconds)
        self._seen = guard
        wanted: dict[Key, Scrape] = {}
        for tier in guard.tiers():
            signal = tier.tier.load_signal
            if signal is not None:
                key = (tier.model_name, tier.name, signal)
                wanted[key] = self.scrapes.get(key) or Scrape(tier.model_name, tier.name, signal)
        for key in list(self._tasks):
            if key not in wanted:
                self._tasks.pop(key).cancel()
        for key, scrape in wanted.items():
            if key not in self._tasks:
                self._tasks[key] = asyncio.create_task(self._follow(session, scrape))
        self.scrapes = wanted

    async def _follow(self, session: aiohttp.ClientSession, scrape: Scrape) -> None:
        signal = scrape.signal
        while True:
            await asyncio.gather(*(self._read(session, scrape, url) for url in signal.urls))
            now = self._clock()
            with contextlib.suppress(KeyError):  # a tier a reload just removed: its task ends at the next look
                state = self._registry.get(scrape.model, scrape.tier)
                state.signal(now, scrape.overloaded(now), signal.stale_after)
                state.signal_figures = scrape.snapshot(now)
            await asyncio.sleep(signal.interval)

    async def _read(self, session: aiohttp.ClientSession, scrape: Scrape, url: str) -> None:
        reading = scrape.readings.setdefault(url, Reading())
        try:
            async with asyncio.timeout(scrape.signal.timeout):
                async with session.get(url) as response:
                    if response.status != 200:
                        raise ValueError(f"HTTP {response.status}")
                    body = await _page(response)
            value = gauge_sum(body.decode("utf-8", "replace"), scrape.signal.metric)
            if value is None:
                raise ValueError(f"no finite {scrape.signal.metric}")
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as exc:
            reading.failed += 1
            reading.error = type(exc).__name__ if not isinstance(exc, ValueError) else str(exc)
            self._log_failure(scrape, url, reading.error)
            return
        reading.value, reading.at, reading.error = value, self._clock(), ""
        reading.ok += 1

    def _log_failure(self, scrape: Scrape, url: str, error: str) -> None:
        suppressed = self._failures.take()
        if suppressed is not None:
            log.warning(
                "load signal scrape failed",
                extra={
                    "event": "load_signal_failed",
                    "model": scrape.model,
                    "tier": scrape.tier,
                    "url": url,
                    "error": error,
                    "suppressed_since_last": suppressed,
                },
            )

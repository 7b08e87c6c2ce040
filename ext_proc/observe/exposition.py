"""The Prometheus text format, written by hand in slices that give the event loop back.

The admin site shares its event loop with the ext_proc streams, and a decision that waits more
than Envoy's ``message_timeout`` (0.2 s) fails open. prometheus_client renders a whole registry
in one call: at 1,000 models x 3 tiers (~52,000 series) that held the loop for 0.3-0.6 s, and a
scrape made every decision behind it fail open. Here each subsystem's ``MetricSource`` writes its
families piece by piece (one tier's series at a time), byte for byte as prometheus_client would
(label names sorted, values through ``floatToGoString``; tests parse both and compare them), and
the pieces are drawn in slices (observe/slicing.py), so decisions never wait for more than about
one slice. The process, platform and gc families are
small and still come from prometheus_client, in one slice of their own.

Each value is read once, when its piece is written; a scrape is not a snapshot of one instant
(it never was one to Prometheus either: counters only go up).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate
from typing import Protocol, cast

from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, generate_latest
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString as _untyped_float_to_go

from ext_proc.core.stats import Histogram
from ext_proc.observe.slicing import SLICE_SECONDS, slices

__all__ = ["SLICE_SECONDS", "Labels", "MetricSource", "Metrics", "escape", "header", "histogram", "number", "sliced"]

floatToGoString = cast(Callable[[float], str], _untyped_float_to_go)

PREFIX = "modelguard_"


def header(name: str, kind: str, help_text: str) -> str:
    """A family's HELP and TYPE lines, as prometheus_client writes them (a counter's with ``_total``)."""
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


def escape(value: str) -> str:
    """A label value as the text format requires: backslash, newline and double quote escaped."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def number(value: float) -> str:
    """``floatToGoString``, with a fast path for the small integers most samples are."""
    if type(value) is int and -1_000_000 < value < 1_000_000:
        return f"{value}.0"  # what repr(float(value)) gives, which floatToGoString returns for these
    return floatToGoString(value)


class Labels:
    """Escaped label values, kept by a source across scrapes: the same few thousand names are
    written on every scrape. ``clear`` when the names change (a new policy)."""

    __slots__ = ("_escaped",)

    def __init__(self) -> None:
        self._escaped: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        found = self._escaped.get(value)
        if found is None:
            found = self._escaped[value] = escape(value)
        return found

    def clear(self) -> None:
        self._escaped.clear()


_LE: dict[tuple[float, ...], tuple[str, ...]] = {}


def _le_fragments(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """``le="0.005",`` ... ``le="+Inf",``: the bucket bounds as prometheus_client names them."""
    found = _LE.get(bounds)
    if found is None:
        found = _LE[bounds] = (*(f'le="{bound!r}",' for bound in bounds), 'le="+Inf",')
    return found


def histogram(name: str, labels: str, histogram: Histogram) -> str:
    """One histogram series: buckets, count, sum. ``labels`` is ``model="m",tier="t"`` or empty."""
    cumulative = list(accumulate(histogram.counts))
    if labels:
        lines = [f"{name}_bucket{{{le}{labels}}} {number(count)}\n"
                 for le, count in zip(_le_fragments(histogram.bounds), cumulative, strict=True)]  # fmt: skip
        labels = "{" + labels + "}"
    else:
        lines = [f"{name}_bucket{{{le[:-1]}}} {number(count)}\n"
                 for le, count in zip(_le_fragments(histogram.bounds), cumulative, strict=True)]  # fmt: skip
    lines.append(f"{name}_count{labels} {number(cumulative[-1])}\n")
    lines.append(f"{name}_sum{labels} {floatToGoString(histogram.total)}\n")
    return "".join(lines)


async def sliced(pieces: Iterable[str], budget: float = SLICE_SECONDS) -> list[bytes]:
    """The body as encoded chunks, one per slice (never joined: at 3,000 models the text is
    ~13 MB, and one join or encode of it is itself a stall)."""
    return ["".join(batch).encode() async for batch in slices(pieces, budget)]


class MetricSource(Protocol):
    """A subsystem's families, as text pieces small enough to write between two decisions."""

    def pieces(self) -> Iterator[str]: ...


class Metrics:
    """What /metrics serves: every subsystem's source, in the order registered, then ``runtime``
    (process, platform and gc: small enough for prometheus_client to render in one go)."""

    def __init__(self) -> None:
        self.sources: list[MetricSource] = []
        self.runtime = CollectorRegistry(auto_describe=False)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.runtime.register(collector)

    def register(self, source: MetricSource) -> None:
        self.sources.append(source)

    def pieces(self) -> Iterator[str]:
        for source in self.sources:
            yield from source.pieces()
        yield generate_latest(self.runtime).decode()

    async def render(self, budget: float = SLICE_SECONDS) -> list[bytes]:
        """The /metrics body, as encoded chunks (see ``sliced``)."""
        return await sliced(self.pieces(), budget)

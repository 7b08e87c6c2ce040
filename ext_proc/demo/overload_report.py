"""The overload scene's figures: each stage of the ramp, each class of request (README, "The demo").

What an SRE asks of a load ramp past capacity: did the critical requests get through, who was
refused first, and did the requests that were served stay fast. Per stage and criticality:
requests, successes (2xx), shed (429 answered without a model server: modelguard's), refused by a
model server's full queue (its 429), other failures, and the latency of what model servers served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ext_proc.demo.loadgen import Sample, latency_ms
from ext_proc.policy import CRITICALITIES

TOO_MANY = 429


@dataclass
class ClassFigures:
    requests: int = 0
    ok: int = 0
    shed: int = 0
    """429 answered by Envoy (modelguard's immediate answer): no model server's host on it."""
    refused: int = 0
    """429 from a model server's full queue."""
    failed: int = 0
    """Any other failure: 5xx, no answer."""
    degraded: int = 0
    """Served, by a tier below the first."""

    @property
    def success(self) -> float:
        return self.ok / self.requests if self.requests else 1.0


@dataclass
class StageFigures:
    stage: int
    rate: float
    classes: dict[str, ClassFigures] = field(default_factory=dict)
    served_p50_ms: float = 0.0
    served_p99_ms: float = 0.0
    """Latency of the requests a model server answered with a 2xx: what admitted requests got."""


def stages(samples: Sequence[Sample], start: float, duration: float, rates: Sequence[float]) -> list[StageFigures]:
    """The figures of each of the equal stages of ``duration`` from ``start``, one per rate."""
    length = duration / len(rates)
    found = [StageFigures(index + 1, rate, {name: ClassFigures() for name in CRITICALITIES}) for index, rate in
             enumerate(rates)]  # fmt: skip
    served: list[list[float]] = [[] for _ in rates]
    for sample in samples:
        index = int((sample.t - start) // length)
        if not 0 <= index < len(rates):
            continue
        figures = found[index].classes.setdefault(sample.criticality or "none", ClassFigures())
        figures.requests += 1
        if 200 <= sample.status < 300:
            figures.ok += 1
            figures.degraded += sample.degraded
            if sample.host:
                served[index].append(sample.latency)
        elif sample.status == TOO_MANY and not sample.host:
            figures.shed += 1
        elif sample.status == TOO_MANY:
            figures.refused += 1
        else:
            figures.failed += 1
    for stage, latencies in zip(found, served, strict=True):
        latencies.sort()
        stage.served_p50_ms = latency_ms(latencies, 0.5)
        stage.served_p99_ms = latency_ms(latencies, 0.99)
    return found


def overall(found: Sequence[StageFigures], name: str) -> ClassFigures:
    total = ClassFigures()
    for stage in found:
        figures = stage.classes.get(name)
        if figures is not None:
            for key, value in asdict(figures).items():
                setattr(total, key, getattr(total, key) + value)
    return total


def first_stage(found: Sequence[StageFigures], name: str, what: str) -> int | None:
    """The first stage in which requests of class ``name`` had any ``what`` (shed, degraded, ...)."""
    for stage in found:
        figures = stage.classes.get(name)
        if figures is not None and getattr(figures, what) > 0:
            return stage.stage
    return None


def expectations(found: Sequence[StageFigures]) -> dict[str, bool]:
    """The issue's acceptance, as the demo checks it on a protected run."""
    critical = overall(found, "critical")
    unloaded = found[0].served_p99_ms
    shed_first = first_stage(found, "sheddable", "shed")
    standard_lost = [first_stage(found, "standard", what) for what in ("shed", "refused", "failed")]
    standard_first = min((stage for stage in standard_lost if stage is not None), default=None)
    return {
        "critical requests >= 99% successful": critical.success >= 0.99,
        "sheddable requests are refused before standard ones": shed_first is not None
        and (standard_first is None or shed_first <= standard_first),
        "p99 of served requests within 2x the unloaded stage's": all(
            stage.served_p99_ms <= 2 * unloaded for stage in found[1:]
        ),
    }


def summary(found: Sequence[StageFigures]) -> dict[str, float | int | None]:
    """The ramp's headline figures, flat (bench/protection.py tabulates them side by side)."""
    figures: dict[str, float | int | None] = {}
    for name in CRITICALITIES:
        total = overall(found, name)
        figures[f"{name}_success"] = round(total.success, 4)
        figures[f"{name}_shed"] = total.shed
        figures[f"{name}_last_stage_success"] = round(found[-1].classes[name].success, 4)
    figures["sheddable_first_shed_stage"] = first_stage(found, "sheddable", "shed")
    figures["standard_first_degraded_stage"] = first_stage(found, "standard", "degraded")
    figures["served_p99_unloaded_ms"] = found[0].served_p99_ms
    figures["served_p99_max_ms"] = max(stage.served_p99_ms for stage in found)
    figures["served_p99_last_stage_ms"] = found[-1].served_p99_ms
    return figures


def table(found: Sequence[StageFigures]) -> str:
    lines = [
        "| stage | rate (req/s) | class | requests | ok | shed (429, modelguard) | refused (429, server) | failed "
        "| degraded | p99 served (ms) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for stage in found:
        for name, figures in stage.classes.items():
            if not figures.requests:
                continue
            lines.append(
                f"| {stage.stage} | {stage.rate:g} | {name} | {figures.requests} | {figures.success:.1%} "
                f"| {figures.shed} | {figures.refused} | {figures.failed} | {figures.degraded} "
                f"| {stage.served_p99_ms:g} |"
            )
    return "\n".join(lines)


def to_json(found: Sequence[StageFigures]) -> list[dict[str, Any]]:
    return [asdict(stage) for stage in found]

"""The demo model servers' injected faults: what a host is told to do wrong, validated.

A fault document (``PUT /admin/fault``, ``--fault``) states a host's whole behaviour; each one
replaces the last. Every field is optional and checked, and every problem is named at once.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

MAX_LATENCY_MS = 60_000.0
"""Cap of any added latency, so that a mistyped fault cannot park requests for hours."""


class FaultError(ValueError):
    """A fault document that does not validate; ``errors`` names every problem."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = list(errors)


@dataclass(frozen=True)
class LatencyDistribution:
    """Random added latency. Lognormal because real service times are right-skewed (a median and a
    long tail); uniform for when hard bounds matter more than realism (tests)."""

    distribution: str
    median_ms: float = 0.0
    sigma: float = 0.0
    min_ms: float = 0.0
    max_ms: float = 0.0

    def sample_ms(self, rng: random.Random) -> float:
        if self.distribution == "lognormal":
            value = rng.lognormvariate(math.log(self.median_ms), self.sigma) if self.sigma else self.median_ms
        else:
            value = rng.uniform(self.min_ms, self.max_ms)
        return min(value, MAX_LATENCY_MS)

    def to_json(self) -> dict[str, object]:
        if self.distribution == "lognormal":
            return {"distribution": "lognormal", "median_ms": self.median_ms, "sigma": self.sigma}
        return {"distribution": "uniform", "min_ms": self.min_ms, "max_ms": self.max_ms}


@dataclass(frozen=True)
class Fault:
    """The whole injected behaviour of a server, replaced (never merged) by each PUT, so that a
    scenario step states a host's behaviour completely and does not depend on the step before."""

    latency_ms: float = 0.0
    latency: LatencyDistribution | None = None
    error_rate: float = 0.0
    error_status: int = 503
    fail_fast: bool = False
    """Failed calls answer at once instead of after the added latency (a GPU error surfaces
    immediately; the calls that succeed are the slow ones)."""
    hang: bool = False
    reset_rate: float = 0.0
    overload_rate: float = 0.0
    overload_status: int = 429
    retry_after_s: int = 1

    @property
    def active(self) -> bool:
        """Whether it changes any answer (statuses alone, with no rate, change nothing)."""
        return bool(
            self.latency_ms
            or self.latency is not None
            or self.error_rate
            or self.hang
            or self.reset_rate
            or self.overload_rate
        )

    def to_json(self) -> dict[str, object]:
        return {
            "latency_ms": self.latency_ms,
            "latency": self.latency.to_json() if self.latency else None,
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "fail_fast": self.fail_fast,
            "hang": self.hang,
            "reset_rate": self.reset_rate,
            "overload_rate": self.overload_rate,
            "overload_status": self.overload_status,
            "retry_after_s": self.retry_after_s,
        }

    @classmethod
    def parse(cls, data: object) -> Fault:
        """Validate a fault document (every field optional, unknown fields refused).

        Raises FaultError naming every bad field, so one PUT shows everything that is wrong.
        """
        if not isinstance(data, dict):
            raise FaultError(["fault must be a JSON object"])
        errors: list[str] = []
        default = cls()
        errors.extend(f"{key}: unknown field" for key in data if key not in default.to_json())

        def rate(key: str) -> float:
            return _number(data[key], key, 0.0, 1.0, errors) if key in data else 0.0

        latency_ms = (
            _number(data["latency_ms"], "latency_ms", 0.0, MAX_LATENCY_MS, errors) if "latency_ms" in data else 0.0
        )
        latency = _distribution(data["latency"], errors) if data.get("latency") is not None else None
        error_status = default.error_status
        if "error_status" in data:
            error_status = _integer(data["error_status"], "error_status", 400, 599, errors)
        overload_status = data.get("overload_status", default.overload_status)
        if not _is_int(overload_status) or overload_status not in (429, 503):
            errors.append(f"overload_status: must be 429 or 503, got {overload_status!r}")
        retry_after_s = default.retry_after_s
        if "retry_after_s" in data:
            retry_after_s = _integer(data["retry_after_s"], "retry_after_s", 0, 3600, errors)
        hang = data.get("hang", False)
        if not isinstance(hang, bool):
            errors.append(f"hang: must be true or false, got {hang!r}")
        fail_fast = data.get("fail_fast", False)
        if not isinstance(fail_fast, bool):
            errors.append(f"fail_fast: must be true or false, got {fail_fast!r}")
        fault = cls(
            latency_ms=latency_ms,
            latency=latency,
            error_rate=rate("error_rate"),
            error_status=error_status,
            fail_fast=fail_fast is True,
            hang=hang is True,
            reset_rate=rate("reset_rate"),
            overload_rate=rate("overload_rate"),
            overload_status=overload_status if isinstance(overload_status, int) else default.overload_status,
            retry_after_s=retry_after_s,
        )
        if errors:
            raise FaultError(errors)
        return fault


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object, path: str, low: float, high: float, errors: list[str]) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        errors.append(f"{path}: must be a number from {low:g} to {high:g}, got {value!r}")
        return low
    return float(value)


def _integer(value: object, path: str, low: int, high: int, errors: list[str]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors.append(f"{path}: must be an integer from {low} to {high}, got {value!r}")
        return low
    return value


def _distribution(data: object, errors: list[str]) -> LatencyDistribution | None:
    if not isinstance(data, dict):
        errors.append("latency: must be an object with a distribution")
        return None
    kind = data.get("distribution")
    if kind == "lognormal":
        fields = ("median_ms", "sigma")
    elif kind == "uniform":
        fields = ("min_ms", "max_ms")
    else:
        errors.append(f"latency.distribution: must be 'lognormal' or 'uniform', got {kind!r}")
        return None
    errors.extend(f"latency.{key}: unknown field for {kind}" for key in data if key not in ("distribution", *fields))
    errors.extend(f"latency.{key}: required for {kind}" for key in fields if key not in data)
    if any(key not in data for key in fields):
        return None
    before = len(errors)
    if kind == "lognormal":
        median = _number(data["median_ms"], "latency.median_ms", 0.0, MAX_LATENCY_MS, errors)
        sigma = _number(data["sigma"], "latency.sigma", 0.0, 3.0, errors)
        if len(errors) == before and median <= 0:
            errors.append("latency.median_ms: must be above 0")
        return LatencyDistribution("lognormal", median_ms=median, sigma=sigma)
    low = _number(data["min_ms"], "latency.min_ms", 0.0, MAX_LATENCY_MS, errors)
    high = _number(data["max_ms"], "latency.max_ms", 0.0, MAX_LATENCY_MS, errors)
    if len(errors) == before and high < low:
        errors.append(f"latency.max_ms: must be at least min_ms ({low:g}), got {high:g}")
    return LatencyDistribution("uniform", min_ms=low, max_ms=high)

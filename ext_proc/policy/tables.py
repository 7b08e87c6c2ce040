"""The settings sections of a policy as tables: each key's spec, and the checks across keys.

Defaults are not here: a key left out takes its model dataclass's default (model.py, as the
README documents them), or one derived from other keys where the table says so.
"""

from __future__ import annotations

import re

from ext_proc.policy.fields import (
    HEADER_VALUE,
    ROUTE,
    CodeSet,
    Duration,
    DurationOrAuto,
    Flag,
    GrpcCode,
    HeaderName,
    HttpStatus,
    Integer,
    Number,
    OneOf,
    Percent,
    Ratio,
    Text,
    TextSet,
)
from ext_proc.policy.limits import MAX_CALL_PATHS, MAX_EXCLUDED_VALUES, MAX_WINDOW_CALLS
from ext_proc.policy.model import (
    CRITICALITIES,
    LEARNT,
    AdaptiveLimit,
    AutoSlow,
    BreakerSettings,
    Calls,
    Canary,
    Exclude,
    FailureSettings,
    Guardrails,
    Limit,
    LoadSignal,
    Overload,
    Ramp,
    Respond,
)
from ext_proc.policy.sections import Exclusive, Nested, Rule, Section, Values

_CONTENT_TYPE_PATTERN = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,254}[\x21-\x7e])?")
_NO_BODY_STATUSES = frozenset({204, 304})


def _min_calls_default(values: Values) -> int:
    """A count window shorter than the default min_calls caps it: the breaker could never open."""
    window_calls: int | None = values["window_calls"]
    default = BREAKER.defaults.min_calls
    return min(default, window_calls) if window_calls else default


def _probe_default(values: Values) -> object:
    """A probe is judged by the model's own idea of slow, unless told otherwise."""
    return values["slow_call_duration"]


def _auto_settings(values: Values) -> object:
    """``slow_call_duration: auto`` alone takes the documented defaults of its settings."""
    return AutoSlow() if values["slow_call_duration"] == LEARNT else None


def _auto_needs_auto(values: Values) -> str | None:
    if values["slow_call_auto"] is not None and values["slow_call_duration"] != LEARNT:
        return "only with slow_call_duration: auto"
    return None


def _min_calls_within_window(values: Values) -> str | None:
    window_calls, min_calls = values["window_calls"], values["min_calls"]
    if window_calls is not None and min_calls is not None and min_calls > window_calls:
        return f"must not exceed window_calls ({window_calls}), or the breaker never opens"
    return None


def _max_open_at_least_open(values: Values) -> str | None:
    open_duration, max_open = values["open_duration"], values["max_open_duration"]
    if open_duration is not None and max_open is not None and max_open < open_duration:
        return "must be at least open_duration"
    return None


def _no_body_without_one(values: Values) -> str | None:
    if values["body"] and values["status"] in _NO_BODY_STATUSES:
        return "must be empty: 204 and 304 answers carry no body"
    return None


def _ceiling_above_floor(values: Values) -> str | None:
    floor, ceiling = values["floor"], values["ceiling"]
    if floor is not None and ceiling is not None and ceiling < floor:
        return "must be at least floor"
    return None


AUTO_SLOW = Section(
    AutoSlow,
    {
        "initial": Duration(0.001, 3600.0),
        "factor": Number(1.0, 100.0),
        "quantile": Number(0.5, 0.9999),
        "floor": Duration(0.001, 3600.0),
        "ceiling": Duration(0.001, 3600.0),
        "calls": Integer(10, 1_000_000),
        "min_calls": Integer(1, 1_000_000),
    },
    rules=(Rule("ceiling", _ceiling_above_floor),),
)
_AUTO_SLOW: Nested[AutoSlow] = Nested(AUTO_SLOW)

BREAKER = Section(
    BreakerSettings,
    {
        "window_calls": Integer(1, MAX_WINDOW_CALLS),
        "window": Duration(0.1, 3600.0),
        "min_calls": Integer(1, 100_000),
        "failure_rate": Ratio(),
        "slow_call_duration": DurationOrAuto(Duration(0.001, 3600.0), LEARNT),
        "max_probe_duration": Duration(0.001, 3600.0),
        "slow_call_rate": Ratio(),
        "consecutive_failures": Integer(0, 100_000),
        "open_duration": Duration(0.01, 86400.0),
        "max_open_duration": Duration(0.01, 86400.0),
        "half_open_probes": Integer(1, 1000),
        "jitter": Ratio(allow_zero=True),
        "min_failing_hosts": Integer(1, 1000),
        "slow_call_auto": _AUTO_SLOW,
    },
    exclusive=(
        Exclusive(
            ("window", "window_calls"),
            "set one of window (time-based) or window_calls (count-based), not both",
        ),
    ),
    derived={"min_calls": _min_calls_default, "max_probe_duration": _probe_default, "slow_call_auto": _auto_settings},
    rules=(
        Rule("slow_call_auto", _auto_needs_auto),
        Rule("min_calls", _min_calls_within_window),
        Rule("max_open_duration", _max_open_at_least_open),
    ),
)

RESPOND = Section(
    Respond,
    {
        "status": Integer(200, 599, "must be an HTTP status from 200 to 599"),
        "content_type": Text(
            _CONTENT_TYPE_PATTERN,
            "must be a content type such as application/json: at most 256 visible ASCII characters"
            " (spaces only inside)",
        ),
        "body": Text(None, "must be a string"),
        "grpc_status": GrpcCode(ok_refused="must not be OK: an immediate response carries no gRPC message"),
    },
    rules=(Rule("body", _no_body_without_one, after="body"),),
)

FAILURE = Section(
    FailureSettings,
    {
        "statuses": CodeSet(HttpStatus(), "HTTP statuses or classes such as 5xx"),
        "grpc_statuses": CodeSet(GrpcCode(), "gRPC status names", refused=((0, "must not contain OK"),)),
    },
)


def _ramp_reaches_weight(values: Values) -> str | None:
    ramp: Ramp | None = values["ramp"]
    weight: int | None = values["weight"]
    if ramp is not None and weight is not None and ramp.max < weight:
        return f"max must be at least the starting weight ({weight / 100:g}%)"
    return None


def _route_required(values: Values) -> str | None:
    return "required: the route value of the new version" if values["route"] == "" else None


GUARDRAILS = Section(
    Guardrails,
    {
        "min_calls": Integer(1, 1_000_000),
        "max_failure_rate": Ratio(),
        "max_failure_rate_increase": Ratio(allow_zero=True),
        "max_latency_ratio": Number(1.0, 1000.0),
        "max_harm": Integer(1, 1_000_000),
        "confidence": Number(0.5, 0.999999),
    },
)
RAMP = Section(Ramp, {"step": Percent(1), "every": Duration(1.0, 86400.0), "max": Percent(1)})
EXCLUDE = Section(Exclude, {"header": HeaderName(), "values": TextSet(HEADER_VALUE, MAX_EXCLUDED_VALUES)})
_EXCLUDE: Nested[Exclude] = Nested(EXCLUDE)
_GUARDRAILS: Nested[Guardrails] = Nested(GUARDRAILS)
_RAMP: Nested[Ramp] = Nested(RAMP)
CANARY = Section(
    Canary,
    {
        "route": ROUTE,
        "weight": Percent(1),
        "sticky_header": HeaderName(),
        "exclude": _EXCLUDE,
        "guardrails": _GUARDRAILS,
        "ramp": _RAMP,
    },
    rules=(Rule("route", _route_required), Rule("ramp", _ramp_reaches_weight)),
)


CALLS = Section(
    Calls,
    {
        "judge": OneOf({"inference": "inference", "all": "all"}),
        "methods": TextSet(
            Text(re.compile(r"[A-Z]{1,16}"), "must be an HTTP method in capitals, such as POST"), MAX_CALL_PATHS
        ),
        "paths": TextSet(
            Text(
                re.compile(r"[/:][\x21-\x22\x24-\x3e\x40-\x7e]{0,255}"),
                "must be a path ending starting with '/' or ':', such as /infer: at most 256 visible ASCII"
                " characters, without '?' or '#'",
            ),
            MAX_CALL_PATHS,
        ),
    },
)


def _initial_within_bounds(values: Values) -> str | None:
    initial, low, high = values["initial"], values["min"], values["max"]
    if initial is not None and low is not None and high is not None and not low <= initial <= high:
        return f"must be from min ({low}) to max ({high})"
    return None


def _max_at_least_min(values: Values) -> str | None:
    low, high = values["min"], values["max"]
    if low is not None and high is not None and high < low:
        return "must be at least min"
    return None


def _static_at_least_adaptive_min(values: Values) -> str | None:
    static: int | None = values["max_inflight"]
    adaptive: AdaptiveLimit | None = values["adaptive"]
    if static is not None and adaptive is not None and static < adaptive.min:
        return f"must be at least adaptive.min ({adaptive.min}): it caps the adaptive limit"
    return None


def _some_limit(values: Values) -> str | None:
    if values["max_inflight"] is None and values["adaptive"] is None:
        return "required: max_inflight, adaptive, or both"
    return None


MAX_LIMIT = 1_000_000
ADAPTIVE = Section(
    AdaptiveLimit,
    {
        "initial": Integer(1, MAX_LIMIT),
        "min": Integer(1, MAX_LIMIT),
        "max": Integer(1, MAX_LIMIT),
        "tolerance": Number(1.0, 10.0),
        "smoothing": Ratio(),
        "window": Duration(0.01, 60.0),
        "min_samples": Integer(1, 100_000),
        "baseline_windows": Integer(1, 1_000_000),
    },
    rules=(Rule("max", _max_at_least_min), Rule("initial", _initial_within_bounds)),
)
_ADAPTIVE: Nested[AdaptiveLimit] = Nested(ADAPTIVE)
LIMIT = Section(
    Limit,
    {"max_inflight": Integer(1, MAX_LIMIT), "adaptive": _ADAPTIVE},
    rules=(Rule("max_inflight", _static_at_least_adaptive_min), Rule("max_inflight", _some_limit)),
)
"""A tier's ``limit:``: at least one of the two."""

_CRITICALITY = Text(re.compile("|".join(CRITICALITIES)), f"must be one of {', '.join(CRITICALITIES)} (in lower case)")
OVERLOAD = Section(
    Overload,
    {
        "header": HeaderName(),
        "default": OneOf({name: name for name in CRITICALITIES}),
        "honoured": TextSet(_CRITICALITY, len(CRITICALITIES)),
        "sheddable_share": Ratio(),
        "critical_share": Number(1.0, 100.0),
        "retry_after": Integer(1, 3600),
        "hold_retries": Flag(),
        "pushback_share": Ratio(),
        "pushback_min": Integer(1, 100_000),
        "max_pushback": Duration(1.0, 3600.0),
    },
)


_METRIC = Text(
    re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,199}"), "must be a Prometheus metric name such as vllm:num_requests_waiting"
)
_URL = Text(
    re.compile(r"https?://[\x21-\x7e]{1,1000}"),
    "must be an http:// or https:// URL of visible ASCII (at most 1000 characters)",
)
MAX_SIGNAL_URLS = 64


class _Urls:
    """1 to 64 URLs, each read as ``_URL``, in a stable order."""

    def read(self, value: object) -> tuple[str, ...]:
        return tuple(sorted(TextSet(_URL, MAX_SIGNAL_URLS).read(value)))


def _signal_required(values: Values) -> str | None:
    if not values["urls"]:
        return "required: the URLs of the tier's servers' metrics"
    return None


def _metric_required(values: Values) -> str | None:
    return "required: the gauge to read, such as vllm:num_requests_waiting" if not values["metric"] else None


def _stale_after_interval(values: Values) -> str | None:
    interval, stale = values["interval"], values["stale_after"]
    if interval is not None and stale is not None and stale < interval:
        return "must be at least interval: every figure would be stale before the next scrape"
    return None


LOAD_SIGNAL = Section(
    LoadSignal,
    {
        "urls": _Urls(),
        "metric": _METRIC,
        "max": Number(0.0, 1e12),
        "interval": Duration(0.1, 3600.0),
        "timeout": Duration(0.01, 60.0),
        "stale_after": Duration(0.1, 86400.0),
    },
    rules=(
        Rule("urls", _signal_required),
        Rule("metric", _metric_required),
        Rule("stale_after", _stale_after_interval),
    ),
)
"""A tier's ``load_signal:``."""

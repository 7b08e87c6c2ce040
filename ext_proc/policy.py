"""The policy file: its typed model, its defaults and its validation.

Validation collects every error with its path in the file (``models[0].breaker.failure_rate``)
instead of stopping at the first, because an operator fixing a policy during an incident
should see all that is wrong in one run of ``modelguard check``. Unknown keys are errors:
a misspelt ``failure_rat`` silently ignored would leave a breaker on its default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ext_proc.durations import format_duration, parse_duration
from ext_proc.grpc_codes import GRPC_STATUS_CODES

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")
_HEADER_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_ROUTE_PATTERN = re.compile(r"^[A-Za-z0-9_.:/\-]{1,128}$")
_STATUS_CLASS_PATTERN = re.compile(r"^([1-5])xx$")

RESERVED_LABELS = frozenset({"unmatched", "none"})


class PolicyError(Exception):
    """A policy that failed validation; ``errors`` holds every problem as ``path: message``."""

    def __init__(self, errors: list[str], source: str = "policy") -> None:
        self.errors = errors
        self.source = source
        super().__init__(f"{source}: {len(errors)} error(s)\n" + "\n".join(errors))


@dataclass(frozen=True, slots=True)
class Match:
    """How a request is recognised as a model's; exactly one field is set."""

    path_prefix: str | None = None
    authority: str | None = None
    header_name: str | None = None
    header_value: str | None = None


@dataclass(frozen=True, slots=True)
class Respond:
    """A direct answer from Envoy (ImmediateResponse), for the last rung of the ladder."""

    status: int = 503
    content_type: str = "application/json"
    body: str = ""
    grpc_status: int = GRPC_STATUS_CODES["UNAVAILABLE"]


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    route: str | None = None
    respond: Respond | None = None


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """Thresholds of one breaker; the README documents each default."""

    window: float | None = 10.0
    window_calls: int | None = None
    min_calls: int = 20
    failure_rate: float = 0.5
    slow_call_duration: float = 10.0
    slow_call_rate: float = 1.0
    consecutive_failures: int = 5
    open_duration: float = 5.0
    max_open_duration: float = 60.0
    half_open_probes: int = 3
    jitter: float = 0.1
    max_probe_duration: float = 10.0
    """A probe held longer than this counts as a slow failure; the reader defaults it to
    slow_call_duration."""


@dataclass(frozen=True, slots=True)
class FailureSettings:
    """Which responses count as failures. 429 and RESOURCE_EXHAUSTED count as overload unless
    listed here explicitly."""

    statuses: frozenset[int] = field(default_factory=lambda: frozenset(range(500, 600)))
    grpc_statuses: frozenset[int] = field(
        default_factory=lambda: frozenset(
            GRPC_STATUS_CODES[name] for name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL")
        )
    )


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    name: str
    match: Match
    tiers: tuple[Tier, ...]
    breaker: BreakerSettings
    failure: FailureSettings


@dataclass(frozen=True, slots=True)
class Policy:
    models: tuple[ModelPolicy, ...]

    def model(self, name: str) -> ModelPolicy:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; raise PolicyError naming every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([f"cannot read the file: {exc.strerror or exc}"], source) from exc
    except UnicodeDecodeError as exc:
        raise PolicyError([f"not UTF-8 text: {exc.reason} at byte {exc.start}"], source) from exc
    return parse_policy(text, source)


def parse_policy(text: str, source: str = "policy") -> Policy:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError([f"(yaml) {where}{problem}"], source) from exc
    return build_policy(document, source)


def build_policy(document: object, source: str = "policy") -> Policy:
    """Validate an already-parsed document (the YAML's Python form)."""
    errors: list[str] = []
    policy = _Reader(errors).policy(document)
    if errors or policy is None:
        raise PolicyError(errors or ["(root): empty policy"], source)
    return policy


_Node = Mapping[str, Any]


class _Reader:
    """Walks the document, appending ``path: message`` to errors and returning None on failure."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def mapping(self, value: object, path: str, allowed: set[str]) -> _Node | None:
        if not isinstance(value, Mapping):
            self.error(path or "(root)", f"must be a mapping, got {_kind(value)}")
            return None
        for key in value:
            if key not in allowed:
                hint = f" (expected one of: {', '.join(sorted(allowed))})"
                self.error(f"{path}.{key}" if path else str(key), f"unknown key{hint}")
        return value

    def policy(self, document: object) -> Policy | None:
        if document is None:
            self.error("(root)", "the policy is empty")
            return None
        root = self.mapping(document, "", {"models", "defaults"})
        if root is None:
            return None
        defaults: _Node = {}
        if "defaults" in root:
            found = self.mapping(root["defaults"], "defaults", {"breaker", "failure"})
            before = len(self.errors)
            if found is not None:
                # Checked once here, so a mistake in defaults is reported once, at its own path.
                self.breaker(found.get("breaker"), "defaults.breaker")
                self.failure(found.get("failure"), "defaults.failure")
            if found is None or len(self.errors) != before:
                return None
            defaults = found
        if "models" not in root:
            self.error("models", "required: a list of models")
            return None
        raw_models = root["models"]
        if not isinstance(raw_models, list) or not raw_models:
            self.error("models", f"must be a non-empty list, got {_kind(raw_models)}")
            return None
        models: list[ModelPolicy] = []
        seen: dict[str, int] = {}
        for index, raw in enumerate(raw_models):
            path = f"models[{index}]"
            model = self.model(raw, path, defaults)
            if model is None:
                continue
            if model.name in seen:
                self.error(f"{path}.name", f"duplicate model name {model.name!r} (also models[{seen[model.name]}])")
            seen[model.name] = index
            models.append(model)
        return Policy(tuple(models)) if len(models) == len(raw_models) else None

    def model(self, raw: object, path: str, defaults: _Node) -> ModelPolicy | None:
        node = self.mapping(raw, path, {"name", "match", "tiers", "breaker", "failure"})
        if node is None:
            return None
        name = self.name(node.get("name"), f"{path}.name")
        match = self.match(node.get("match"), f"{path}.match")
        tiers = self.tiers(node.get("tiers"), f"{path}.tiers")
        breaker = self.breaker(_merged_breaker(defaults.get("breaker"), node.get("breaker")), f"{path}.breaker")
        failure = self.failure(_merged(defaults.get("failure"), node.get("failure")), f"{path}.failure")
        if name is None or match is None or tiers is None or breaker is None or failure is None:
            return None
        return ModelPolicy(name, match, tiers, breaker, failure)

    def name(self, value: object, path: str) -> str | None:
        if value is None:
            self.error(path, "required")
            return None
        if not isinstance(value, str) or not _NAME_PATTERN.match(value):
            self.error(
                path,
                "must be 1-63 characters of letters, digits, '_', '.', '-', starting with a letter or digit",
            )
            return None
        if value in RESERVED_LABELS:
            self.error(path, f"{value!r} is reserved")
            return None
        return value

    def match(self, raw: object, path: str) -> Match | None:
        if raw is None:
            self.error(path, "required: one of path_prefix, authority, header")
            return None
        node = self.mapping(raw, path, {"path_prefix", "authority", "header"})
        if node is None:
            return None
        if len(node) != 1:
            self.error(path, f"must have exactly one of path_prefix, authority, header (got {len(node)})")
            return None
        if "path_prefix" in node:
            prefix = node["path_prefix"]
            if not isinstance(prefix, str) or not prefix.startswith("/"):
                self.error(f"{path}.path_prefix", "must be a string starting with '/'")
                return None
            return Match(path_prefix=prefix)
        if "authority" in node:
            authority = node["authority"]
            if not isinstance(authority, str) or not authority or any(c.isspace() for c in authority):
                self.error(f"{path}.authority", "must be a host name, optionally with :port")
                return None
            return Match(authority=authority.lower())
        if "header" not in node:
            return None  # the one key is unknown: mapping() has reported it
        header = self.mapping(node["header"], f"{path}.header", {"name", "value"})
        if header is None:
            return None
        header_name, header_value = header.get("name"), header.get("value")
        ok = True
        if not isinstance(header_name, str) or not _HEADER_NAME_PATTERN.match(header_name.lower()):
            self.error(f"{path}.header.name", "required: a header name such as x-model")
            ok = False
        elif header_name.lower().startswith((":", "x-modelguard-")):
            self.error(f"{path}.header.name", "must not be a pseudo-header or an x-modelguard-* header")
            ok = False
        if not isinstance(header_value, str) or not header_value:
            self.error(f"{path}.header.value", "required: the exact header value")
            ok = False
        if not ok:
            return None
        assert isinstance(header_name, str) and isinstance(header_value, str)
        return Match(header_name=header_name.lower(), header_value=header_value)

    def tiers(self, raw: object, path: str) -> tuple[Tier, ...] | None:
        if not isinstance(raw, list) or not raw:
            self.error(path, f"required: a non-empty list of tiers, best first (got {_kind(raw)})")
            return None
        tiers: list[Tier] = []
        names: set[str] = set()
        for index, raw_tier in enumerate(raw):
            tier_path = f"{path}[{index}]"
            tier = self.tier(raw_tier, tier_path, last=index == len(raw) - 1)
            if tier is None:
                continue
            if tier.name in names:
                self.error(f"{tier_path}.name", f"duplicate tier name {tier.name!r}")
            names.add(tier.name)
            tiers.append(tier)
        if len(tiers) != len(raw):
            return None
        return tuple(tiers)

    def tier(self, raw: object, path: str, last: bool) -> Tier | None:
        node = self.mapping(raw, path, {"name", "route", "respond"})
        if node is None:
            return None
        name = self.name(node.get("name"), f"{path}.name")
        has_route, has_respond = "route" in node, "respond" in node
        if has_route == has_respond:
            self.error(path, "must have exactly one of route, respond")
            return None
        if has_respond:
            if not last:
                self.error(f"{path}.respond", "only the last tier may respond directly")
                return None
            respond = self.respond(node["respond"], f"{path}.respond")
            if name is None or respond is None:
                return None
            return Tier(name=name, respond=respond)
        route = node["route"]
        if not isinstance(route, str) or not _ROUTE_PATTERN.match(route):
            self.error(f"{path}.route", "must be 1-128 characters of letters, digits, '_', '.', ':', '/', '-'")
            return None
        return Tier(name=name, route=route) if name is not None else None

    def respond(self, raw: object, path: str) -> Respond | None:
        node = self.mapping(raw, path, {"status", "content_type", "body", "grpc_status"})
        if node is None:
            return None
        defaults = Respond()
        ok = True
        status = node.get("status", defaults.status)
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            self.error(f"{path}.status", "must be an HTTP status from 200 to 599")
            ok = False
        content_type = node.get("content_type", defaults.content_type)
        if not isinstance(content_type, str) or not content_type or "\n" in content_type:
            self.error(f"{path}.content_type", "must be a content type such as application/json")
            ok = False
        body = node.get("body", defaults.body)
        if not isinstance(body, str):
            self.error(f"{path}.body", "must be a string")
            ok = False
        grpc_status = self.grpc_code(node.get("grpc_status", "UNAVAILABLE"), f"{path}.grpc_status")
        if grpc_status == 0:
            self.error(f"{path}.grpc_status", "must not be OK: an immediate response carries no gRPC message")
            ok = False
        if not ok or grpc_status is None:
            return None
        return Respond(status=status, content_type=content_type, body=body, grpc_status=grpc_status)

    def grpc_code(self, value: object, path: str) -> int | None:
        if isinstance(value, str) and value.upper() in GRPC_STATUS_CODES:
            return GRPC_STATUS_CODES[value.upper()]
        if isinstance(value, int) and not isinstance(value, bool) and value in GRPC_STATUS_CODES.values():
            return value
        self.error(path, f"unknown gRPC status {value!r} (expected a name such as UNAVAILABLE)")
        return None

    def breaker(self, raw: object, path: str) -> BreakerSettings | None:
        defaults = BreakerSettings()
        if raw is None:
            return defaults
        allowed = {
            "window",
            "window_calls",
            "min_calls",
            "failure_rate",
            "slow_call_duration",
            "slow_call_rate",
            "consecutive_failures",
            "open_duration",
            "max_open_duration",
            "half_open_probes",
            "jitter",
        }
        node = self.mapping(raw, path, allowed)
        if node is None:
            return None
        before = len(self.errors)
        if "window" in node and "window_calls" in node:
            self.error(path, "set one of window (time-based) or window_calls (count-based), not both")
        window: float | None = defaults.window
        window_calls: int | None = None
        if "window_calls" in node:
            window = None
            window_calls = self.integer(node["window_calls"], f"{path}.window_calls", 1, 100_000)
        elif "window" in node:
            window = self.duration(node["window"], f"{path}.window", 0.1, 3600.0)
        default_min_calls = min(defaults.min_calls, window_calls) if window_calls else defaults.min_calls
        min_calls = self.integer(node.get("min_calls", default_min_calls), f"{path}.min_calls", 1, 100_000)
        failure_rate = self.ratio(node.get("failure_rate", defaults.failure_rate), f"{path}.failure_rate")
        slow_call_duration = self.duration(
            node.get("slow_call_duration", "10s"), f"{path}.slow_call_duration", 0.001, 3600.0
        )
        slow_call_rate = self.ratio(node.get("slow_call_rate", defaults.slow_call_rate), f"{path}.slow_call_rate")
        consecutive = self.integer(
            node.get("consecutive_failures", defaults.consecutive_failures),
            f"{path}.consecutive_failures",
            0,
            100_000,
        )
        open_duration = self.duration(node.get("open_duration", "5s"), f"{path}.open_duration", 0.01, 86400.0)
        max_open = self.duration(node.get("max_open_duration", "60s"), f"{path}.max_open_duration", 0.01, 86400.0)
        probes = self.integer(
            node.get("half_open_probes", defaults.half_open_probes), f"{path}.half_open_probes", 1, 1000
        )
        jitter = self.ratio(node.get("jitter", defaults.jitter), f"{path}.jitter", allow_zero=True)
        if window_calls is not None and min_calls is not None and min_calls > window_calls:
            self.error(
                f"{path}.min_calls",
                f"must not exceed window_calls ({window_calls}), or the breaker never opens",
            )
        if open_duration is not None and max_open is not None and max_open < open_duration:
            self.error(f"{path}.max_open_duration", "must be at least open_duration")
        if len(self.errors) != before:
            return None
        assert min_calls is not None and failure_rate is not None and slow_call_duration is not None
        assert slow_call_rate is not None and consecutive is not None and open_duration is not None
        assert max_open is not None and probes is not None and jitter is not None
        return BreakerSettings(
            window=window,
            window_calls=window_calls,
            min_calls=min_calls,
            failure_rate=failure_rate,
            slow_call_duration=slow_call_duration,
            slow_call_rate=slow_call_rate,
            consecutive_failures=consecutive,
            open_duration=open_duration,
            max_open_duration=max_open,
            half_open_probes=probes,
            jitter=jitter,
        )

    def failure(self, raw: object, path: str) -> FailureSettings | None:
        defaults = FailureSettings()
        if raw is None:
            return defaults
        node = self.mapping(raw, path, {"statuses", "grpc_statuses"})
        if node is None:
            return None
        statuses = defaults.statuses
        grpc_statuses = defaults.grpc_statuses
        before = len(self.errors)
        if "statuses" in node:
            statuses = self.statuses(node["statuses"], f"{path}.statuses")
        if "grpc_statuses" in node:
            values = node["grpc_statuses"]
            if not isinstance(values, list):
                self.error(f"{path}.grpc_statuses", "must be a list of gRPC status names")
            else:
                codes = {self.grpc_code(v, f"{path}.grpc_statuses[{i}]") for i, v in enumerate(values)}
                if 0 in codes:
                    self.error(f"{path}.grpc_statuses", "must not contain OK")
                grpc_statuses = frozenset(c for c in codes if c is not None)
        if len(self.errors) != before:
            return None
        return FailureSettings(statuses=statuses, grpc_statuses=grpc_statuses)

    def statuses(self, values: object, path: str) -> frozenset[int]:
        if not isinstance(values, list):
            self.error(path, "must be a list of HTTP statuses or classes such as 5xx")
            return frozenset()
        codes: set[int] = set()
        for index, value in enumerate(values):
            text = str(value).strip().lower() if not isinstance(value, bool) else ""
            klass = _STATUS_CLASS_PATTERN.match(text)
            if klass:
                base = int(klass.group(1)) * 100
                codes.update(range(base, base + 100))
            elif text.isascii() and text.isdigit() and 100 <= int(text) <= 599:
                codes.add(int(text))
            else:
                self.error(
                    f"{path}[{index}]",
                    f"must be an HTTP status (100-599) or a class such as 5xx, got {value!r}",
                )
        return frozenset(codes)

    def integer(self, value: object, path: str, low: int, high: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.error(path, f"must be a whole number from {low} to {high}, got {value!r}")
            return None
        return value

    def ratio(self, value: object, path: str, allow_zero: bool = False) -> float | None:
        number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        if number is None or not 0.0 <= number <= 1.0 or (number == 0.0 and not allow_zero):
            bounds = "from 0 to 1" if allow_zero else "between 0 and 1 (above 0, at most 1)"
            self.error(path, f"must be {bounds}, got {value!r}")
            return None
        return number

    def duration(self, value: object, path: str, low: float, high: float) -> float | None:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.error(path, str(exc))
            return None
        if not low <= seconds <= high:
            self.error(path, f"must be from {format_duration(low)} to {format_duration(high)}, got {value!r}")
            return None
        return seconds


def _merged_breaker(default: object, override: object) -> object:
    """As _merged, and a model choosing one kind of window drops the other kind from defaults."""
    if isinstance(default, Mapping) and isinstance(override, Mapping):
        for kind, other in (("window", "window_calls"), ("window_calls", "window")):
            if kind in override:
                default = {k: v for k, v in default.items() if k != other}
    return _merged(default, override)


def _merged(default: object, override: object) -> object:
    """Model-level keys win over ``defaults``; a non-mapping is left for validation to report."""
    if isinstance(default, Mapping) and isinstance(override, Mapping):
        return {**default, **override}
    return override if override is not None else default


def _kind(value: object) -> str:
    kinds: dict[type, str] = {list: "a list", dict: "a mapping", str: "a string", bool: "a boolean"}
    if value is None:
        return "nothing"
    return kinds.get(type(value), type(value).__name__)

"""The policy's validation: a parsed document to a Policy, every error collected by its path.

Validation collects every error with its path in the file (``models[0].breaker.failure_rate``)
instead of stopping at the first, because an operator fixing a policy during an incident
should see all that is wrong in one run of ``modelguard check``. Unknown keys are errors:
a misspelt ``failure_rat`` silently ignored would leave a breaker on its default.

Every list is bounded before it is walked (an alias can make a short list of a million
references), and an error quotes a bad value only through ``shown`` (an alias bomb's ``repr``
is gigabytes). Patterns match whole values (``fullmatch``: ``$`` also matches before a trailing
newline) and digits are ASCII only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ext_proc.policy.durations import format_duration, parse_duration, shown
from ext_proc.policy.limits import MAX_DEPTH, MAX_ERRORS, MAX_MODELS, MAX_STATUSES, MAX_TIERS, MAX_WINDOW_CALLS
from ext_proc.policy.model import (
    RESERVED_LABELS,
    BreakerSettings,
    FailureSettings,
    Match,
    ModelPolicy,
    Policy,
    PolicyError,
    Respond,
    Tier,
)
from ext_proc.protocol.grpc_codes import GRPC_STATUS_CODES
from ext_proc.protocol.paths import covering_prefixes, normalize_path

_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}")
_HEADER_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_\-]{0,127}")
_HEADER_VALUE_PATTERN = re.compile(r"[^\x00-\x20\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]{0,1022}[^\x00-\x20\x7f-\x9f])?")
_ROUTE_PATTERN = re.compile(r"[A-Za-z0-9_.:/\-]{1,128}")
_PATH_PREFIX_PATTERN = re.compile(r"/[\x21-\x7e]{0,1023}")
_AUTHORITY_PATTERN = re.compile(r"[\x21-\x7e]{1,260}")
_CONTENT_TYPE_PATTERN = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,254}[\x21-\x7e])?")
_STATUS_CLASS_PATTERN = re.compile(r"([1-5])xx", re.ASCII)
_STATUS_CODE_PATTERN = re.compile(r"[0-9]{3}", re.ASCII)
_QUERY = re.compile(r"[?#]")
_PLAIN_KEY_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_NO_BODY_STATUSES = frozenset({204, 304})


def build_policy(document: object, source: str = "policy") -> Policy:
    """Validate an already-parsed document (the YAML's Python form)."""
    errors: list[str] = []
    reader = _Reader(errors)
    try:
        policy = reader.policy(document)
    except RecursionError as exc:  # nothing here recurses on the document; kept as a last line
        raise PolicyError([f"(root): nesting deeper than {MAX_DEPTH} levels"], source) from exc
    if errors or policy is None:
        raise PolicyError(errors or ["(root): empty policy"], source, reader.count - len(errors))
    return policy


_Node = Mapping[str, Any]


class _Reader:
    """Walks the document, appending ``path: message`` to errors and returning None on failure."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        self.count = 0
        """Every error found, kept or not: what a section compares to see whether it failed."""

    def error(self, path: str, message: str) -> None:
        self.count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{path}: {message}")

    def mapping(self, value: object, path: str, allowed: set[str]) -> _Node | None:
        if not isinstance(value, Mapping):
            self.error(path or "(root)", f"must be a mapping, got {_kind(value)}")
            return None
        for key in value:
            if key not in allowed:
                hint = f" (expected one of: {', '.join(sorted(allowed))})"
                self.error(f"{path}.{_key(key)}" if path else _key(key), f"unknown key{hint}")
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
            before = self.count
            if found is not None:
                # Checked once here, so a mistake in defaults is reported once, at its own path.
                self.breaker(found.get("breaker"), "defaults.breaker")
                self.failure(found.get("failure"), "defaults.failure")
            if found is None or self.count != before:
                return None
            defaults = found
        if "models" not in root:
            self.error("models", "required: a list of models")
            return None
        raw_models = root["models"]
        if not isinstance(raw_models, list) or not raw_models:
            self.error("models", f"must be a non-empty list, got {_kind(raw_models)}")
            return None
        if len(raw_models) > MAX_MODELS:
            self.error("models", f"at most {MAX_MODELS} models, got {len(raw_models)}")
            return None
        models: list[ModelPolicy] = []
        seen: dict[str, int] = {}
        claimed: dict[tuple[str, ...], tuple[int, str]] = {}
        for index, raw in enumerate(raw_models):
            path = f"models[{index}]"
            model = self.model(raw, path, defaults)
            if model is None:
                continue
            if model.name in seen:
                self.error(f"{path}.name", f"duplicate model name {model.name!r} (also models[{seen[model.name]}])")
            seen[model.name] = index
            self.unshadowed(model, index, claimed)
            models.append(model)
        return Policy(tuple(models)) if len(models) == len(raw_models) else None

    def unshadowed(self, model: ModelPolicy, index: int, claimed: dict[tuple[str, ...], tuple[int, str]]) -> None:
        """Report a match no request can reach, because an earlier model matches all it would.

        Mirrors matching.py: the first model in policy order wins, a path prefix matches every
        path that continues it at a segment boundary, and a policy authority without a port
        matches that host on any port."""
        key, covering, wider = _match_keys(model.match)
        earlier, reason = claimed.get(key), "same match as"
        for cover in covering:
            if earlier is None:
                earlier, reason = claimed.get(cover), wider
        if earlier is not None:
            self.error(
                f"models[{index}].match",
                f"{reason} models[{earlier[0]}] ({earlier[1]}); the second never matches",
            )
        claimed.setdefault(key, (index, model.name))

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
        if not isinstance(value, str) or not _NAME_PATTERN.fullmatch(value):
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
            if not _PATH_PREFIX_PATTERN.fullmatch(prefix):
                # A :path is visible ASCII (anything else arrives percent-encoded): such a prefix never matches.
                self.error(
                    f"{path}.path_prefix",
                    f"must be at most 1024 visible ASCII characters, no spaces, got {shown(prefix)}",
                )
                return None
            normal = normalize_path(_QUERY.split(prefix)[0])
            if normal != prefix:
                # Requests are matched on their normalized path, before any query: this would never match.
                self.error(
                    f"{path}.path_prefix",
                    f"never matches: paths are matched as normalized ({shown(normal)}), without their query;"
                    " write it that way",
                )
                return None
            return Match(path_prefix=prefix)
        if "authority" in node:
            authority = node["authority"]
            if not isinstance(authority, str) or not _AUTHORITY_PATTERN.fullmatch(authority):
                self.error(
                    f"{path}.authority",
                    "must be a host name, optionally with :port (at most 260 visible ASCII characters;"
                    " an international name in its xn-- form)",
                )
                return None
            return Match(authority=authority.lower())
        if "header" not in node:
            return None  # the one key is unknown: mapping() has reported it
        header = self.mapping(node["header"], f"{path}.header", {"name", "value"})
        if header is None:
            return None
        header_name, header_value = header.get("name"), header.get("value")
        ok = True
        if (
            not isinstance(header_name, str)
            or not header_name.isascii()  # str.lower() maps the Kelvin sign to k
            or not _HEADER_NAME_PATTERN.fullmatch(header_name.lower())
        ):
            self.error(f"{path}.header.name", "required: a header name such as x-model (at most 128 characters)")
            ok = False
        elif header_name.lower().startswith((":", "x-modelguard-")):
            self.error(f"{path}.header.name", "must not be a pseudo-header or an x-modelguard-* header")
            ok = False
        if not isinstance(header_value, str) or not _HEADER_VALUE_PATTERN.fullmatch(header_value):
            # A request header never carries control characters or surrounding spaces: such a value never matches.
            self.error(
                f"{path}.header.value",
                "required: the exact header value, at most 1024 characters, without control characters"
                " or surrounding spaces",
            )
            ok = False
        if not ok:
            return None
        assert isinstance(header_name, str) and isinstance(header_value, str)
        return Match(header_name=header_name.lower(), header_value=header_value)

    def tiers(self, raw: object, path: str) -> tuple[Tier, ...] | None:
        if not isinstance(raw, list) or not raw:
            self.error(path, f"required: a non-empty list of tiers, best first (got {_kind(raw)})")
            return None
        if len(raw) > MAX_TIERS:
            self.error(path, f"at most {MAX_TIERS} tiers, got {len(raw)}")
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
        if not isinstance(route, str) or not _ROUTE_PATTERN.fullmatch(route):  # an HTTP header value for Envoy
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
        if not isinstance(content_type, str) or not _CONTENT_TYPE_PATTERN.fullmatch(content_type):
            self.error(
                f"{path}.content_type",
                "must be a content type such as application/json: at most 256 visible ASCII characters"
                " (spaces only inside)",
            )
            ok = False
        body = node.get("body", defaults.body)
        if not isinstance(body, str):
            self.error(f"{path}.body", "must be a string")
            ok = False
        elif body and isinstance(status, int) and status in _NO_BODY_STATUSES:
            self.error(f"{path}.body", "must be empty: 204 and 304 answers carry no body")
            ok = False
        grpc_status = self.grpc_code(node.get("grpc_status", "UNAVAILABLE"), f"{path}.grpc_status")
        if grpc_status == 0:
            self.error(f"{path}.grpc_status", "must not be OK: an immediate response carries no gRPC message")
            ok = False
        if not ok or grpc_status is None:
            return None
        return Respond(status=status, content_type=content_type, body=body, grpc_status=grpc_status)

    def grpc_code(self, value: object, path: str) -> int | None:
        if isinstance(value, str) and value.isascii() and value.upper() in GRPC_STATUS_CODES:
            return GRPC_STATUS_CODES[value.upper()]
        if isinstance(value, int) and not isinstance(value, bool) and value in GRPC_STATUS_CODES.values():
            return value
        self.error(path, f"unknown gRPC status {shown(value)} (expected a name such as UNAVAILABLE)")
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
            "max_probe_duration",
        }
        node = self.mapping(raw, path, allowed)
        if node is None:
            return None
        before = self.count
        if "window" in node and "window_calls" in node:
            self.error(path, "set one of window (time-based) or window_calls (count-based), not both")
        window: float | None = defaults.window
        window_calls: int | None = None
        if "window_calls" in node:
            window = None
            window_calls = self.integer(node["window_calls"], f"{path}.window_calls", 1, MAX_WINDOW_CALLS)
        elif "window" in node:
            window = self.duration(node["window"], f"{path}.window", 0.1, 3600.0)
        default_min_calls = min(defaults.min_calls, window_calls) if window_calls else defaults.min_calls
        min_calls = self.integer(node.get("min_calls", default_min_calls), f"{path}.min_calls", 1, 100_000)
        failure_rate = self.ratio(node.get("failure_rate", defaults.failure_rate), f"{path}.failure_rate")
        slow_call_duration = self.duration(
            node.get("slow_call_duration", "10s"), f"{path}.slow_call_duration", 0.001, 3600.0
        )
        max_probe = slow_call_duration  # a probe is judged by the model's own idea of slow, unless told
        if "max_probe_duration" in node:
            max_probe = self.duration(node["max_probe_duration"], f"{path}.max_probe_duration", 0.001, 3600.0)
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
        if self.count != before:
            return None
        assert min_calls is not None and failure_rate is not None and slow_call_duration is not None
        assert max_probe is not None
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
            max_probe_duration=max_probe,
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
        before = self.count
        if "statuses" in node:
            values = self.status_list(node["statuses"], f"{path}.statuses", "HTTP statuses or classes such as 5xx")
            statuses = self.statuses(values, f"{path}.statuses") if values is not None else statuses
        if "grpc_statuses" in node:
            values = self.status_list(node["grpc_statuses"], f"{path}.grpc_statuses", "gRPC status names")
            if values is not None:
                codes = {self.grpc_code(v, f"{path}.grpc_statuses[{i}]") for i, v in enumerate(values)}
                if 0 in codes:
                    self.error(f"{path}.grpc_statuses", "must not contain OK")
                grpc_statuses = frozenset(c for c in codes if c is not None)
        if self.count != before:
            return None
        return FailureSettings(statuses=statuses, grpc_statuses=grpc_statuses)

    def status_list(self, values: object, path: str, what: str) -> list[object] | None:
        """The list, checked for length before anything walks it (an alias repeats a million times cheaply)."""
        if not isinstance(values, list):
            self.error(path, f"must be a list of {what}")
            return None
        if not values:
            # An empty list would make a breaker that never opens on errors, and say nothing.
            self.error(
                path,
                "must list at least one status: a breaker with none never opens on errors (omit the key"
                " for the defaults)",
            )
            return None
        if len(values) > MAX_STATUSES:
            self.error(path, f"at most {MAX_STATUSES} entries, got {len(values)}")
            return None
        return values

    def statuses(self, values: list[object], path: str) -> frozenset[int]:
        codes: set[int] = set()
        for index, value in enumerate(values):
            found = _status_codes(value)
            if found is None:
                self.error(
                    f"{path}[{index}]",
                    f"must be an HTTP status (100-599) or a class such as 5xx, got {shown(value)}",
                )
            else:
                codes.update(found)
        return frozenset(codes)

    def integer(self, value: object, path: str, low: int, high: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.error(path, f"must be a whole number from {low} to {high}, got {shown(value)}")
            return None
        return value

    def ratio(self, value: object, path: str, allow_zero: bool = False) -> float | None:
        number = None
        if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool) and -2 < value < 2):
            number = float(value)  # an int of 309 digits has no float: OverflowError
        if number is None or not 0.0 <= number <= 1.0 or (number == 0.0 and not allow_zero):
            bounds = "from 0 to 1" if allow_zero else "between 0 and 1 (above 0, at most 1)"
            self.error(path, f"must be {bounds}, got {shown(value)}")
            return None
        return number

    def duration(self, value: object, path: str, low: float, high: float) -> float | None:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.error(path, str(exc))
            return None
        if not low <= seconds <= high:
            self.error(path, f"must be from {format_duration(low)} to {format_duration(high)}, got {shown(value)}")
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


def _status_codes(value: object) -> range | None:
    """The codes an entry of failure.statuses names; ASCII digits only (``int()`` reads full-width 503 too)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return range(value, value + 1) if 100 <= value <= 599 else None
    if not isinstance(value, str):
        return None
    text = value.strip(" \t").lower()
    if _STATUS_CLASS_PATTERN.fullmatch(text):
        base = int(text[0]) * 100
        return range(base, base + 100)
    if _STATUS_CODE_PATTERN.fullmatch(text) and 100 <= int(text) <= 599:
        return range(int(text), int(text) + 1)
    return None


def _match_keys(match: Match) -> tuple[tuple[str, ...], list[tuple[str, ...]], str]:
    """The matcher's lookup key for a match, the keys of wider matches that catch all of its
    requests, and how to say so."""
    if match.path_prefix is not None:
        covering: list[tuple[str, ...]] = [("path", prefix) for prefix in covering_prefixes(match.path_prefix)]
        return ("path", match.path_prefix), covering, "every path it matches is already matched by"
    if match.header_name is not None and match.header_value is not None:
        return ("header", match.header_name, match.header_value), [], ""
    authority = match.authority or ""
    host: list[tuple[str, ...]] = [("authority", authority.rsplit(":", 1)[0])] if ":" in authority else []
    return ("authority", authority), host, "its host on any port is already matched by"


def _key(key: object) -> str:
    """A mapping key as a path segment: as written when plain, else quoted and bounded."""
    return key if isinstance(key, str) and _PLAIN_KEY_PATTERN.fullmatch(key) else shown(key)


def _kind(value: object) -> str:
    kinds: dict[type, str] = {list: "a list", dict: "a mapping", str: "a string", bool: "a boolean"}
    if value is None:
        return "nothing"
    return kinds.get(type(value), type(value).__name__)

"""The policy's validation: a parsed document to a Policy, every error collected by its path.

Validation collects every error with its path in the file (``models[0].breaker.failure_rate``)
instead of stopping at the first (sections.py says why). This module walks the document's shape:
models, their names, matches and tiers; the settings sections are tables (tables.py).

Every list is bounded before it is walked (an alias can make a short list of a million
references), and an error quotes a bad value only through ``shown`` (an alias bomb's ``repr``
is gigabytes). Patterns match whole values (``fullmatch``: ``$`` also matches before a trailing
newline) and digits are ASCII only.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TypeVar

from ext_proc.policy.durations import shown
from ext_proc.policy.fields import HEADER_VALUE, ROUTE, SERVED_MODEL, Duration, HeaderName, OneOf, Text
from ext_proc.policy.limits import MAX_DEPTH, MAX_MODELS, MAX_TIERS
from ext_proc.policy.model import (
    LEARNT,
    RESERVED_LABELS,
    BreakerSettings,
    Canary,
    FailureSettings,
    Match,
    ModelPolicy,
    Policy,
    PolicyError,
    Tier,
)
from ext_proc.policy.sections import Collector, Node, Section, kind_of, merged
from ext_proc.policy.tables import BREAKER, CALLS, CANARY, FAILURE, LIMIT, LOAD_SIGNAL, OVERLOAD, RESPOND
from ext_proc.protocol.answers import AUTO, PROTOCOLS
from ext_proc.protocol.paths import covering_prefixes, named_model, normalize_path

S = TypeVar("S")

_PROTOCOL = OneOf({name: name for name in PROTOCOLS})
_NAME = Text(
    re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}"),
    "must be 1-63 characters of letters, digits, '_', '.', '-', starting with a letter or digit",
)
_AUTHORITY = Text(
    re.compile(r"[\x21-\x7e]{1,260}"),
    "must be a host name, optionally with :port (at most 260 visible ASCII characters;"
    " an international name in its xn-- form)",
)
_PATH_PREFIX_PATTERN = re.compile(r"/[\x21-\x7e]{0,1023}")
_QUERY = re.compile(r"[?#]")
_DEADLINE = Duration(0.001, 86400.0)
_BODY_MODEL = Text(
    re.compile(r"[^\x00-\x20\x7f-\x9f\"\\](?:[^\x00-\x1f\x7f-\x9f\"\\]{0,254}[^\x00-\x20\x7f-\x9f\"\\])?"),
    "must be the model's name as clients send it in the body: 1-256 characters, no control characters,"
    " quotes, backslashes or surrounding spaces",
)

_Claims = dict[tuple[str, ...], tuple[int, str]]
"""A matcher lookup key to the index and name of the first model that claimed it."""


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


class _Reader(Collector):
    """Walks the document, appending ``path: message`` to errors and returning None on failure."""

    def policy(self, document: object) -> Policy | None:
        if document is None:
            self.error("(root)", "the policy is empty")
            return None
        root = self.mapping(document, "", {"models", "defaults"})
        if root is None:
            return None
        defaults = self.defaults(root["defaults"]) if "defaults" in root else {}
        if defaults is None:
            return None
        raw_models = self.model_list(root)
        if raw_models is None:
            return None
        models: list[ModelPolicy] = []
        seen: dict[str, int] = {}
        claimed: _Claims = {}
        for index, raw in enumerate(raw_models):
            model = self.model(raw, f"models[{index}]", defaults)
            if model is None:
                continue
            if model.name in seen:
                self.error(
                    f"models[{index}].name", f"duplicate model name {model.name!r} (also models[{seen[model.name]}])"
                )
            seen[model.name] = index
            self.unshadowed(model, index, claimed)
            models.append(model)
        return Policy(tuple(models)) if len(models) == len(raw_models) else None

    def defaults(self, raw: object) -> Node | None:
        """Checked once here, so that a mistake in defaults is reported once, at its own path."""
        found = self.mapping(raw, "defaults", {"breaker", "failure", "calls", "overload"})
        before = self.count
        if found is not None:
            self.settings(found.get("breaker"), "defaults.breaker", BREAKER)
            self.settings(found.get("failure"), "defaults.failure", FAILURE)
            self.settings(found.get("calls"), "defaults.calls", CALLS)
            self.settings(found.get("overload"), "defaults.overload", OVERLOAD)
        return found if found is not None and self.count == before else None

    def model_list(self, root: Node) -> list[object] | None:
        if "models" not in root:
            self.error("models", "required: a list of models")
            return None
        raw_models = root["models"]
        if not isinstance(raw_models, list) or not raw_models:
            self.error("models", f"must be a non-empty list, got {kind_of(raw_models)}")
            return None
        if len(raw_models) > MAX_MODELS:
            self.error("models", f"at most {MAX_MODELS} models, got {len(raw_models)}")
            return None
        return raw_models

    def unshadowed(self, model: ModelPolicy, index: int, claimed: _Claims) -> None:
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

    def model(self, raw: object, path: str, defaults: Node) -> ModelPolicy | None:
        node = self.mapping(
            raw, path, {"name", "match", "tiers", "breaker", "failure", "canary", "calls", "protocol", "overload"}
        )
        if node is None:
            return None
        name = self.name(node.get("name"), f"{path}.name")
        match = self.match(node.get("match"), f"{path}.match")
        tiers = self.tiers(node.get("tiers"), f"{path}.tiers")
        breaker = self.breaker(defaults.get("breaker"), node.get("breaker"), f"{path}.breaker")
        failure = self.failure(defaults.get("failure"), node.get("failure"), f"{path}.failure")
        canary = self.canary(node["canary"], f"{path}.canary", tiers) if "canary" in node else None
        calls = self.settings(merged(CALLS, defaults.get("calls"), node.get("calls")), f"{path}.calls", CALLS)
        protocol = self.value(_PROTOCOL, node.get("protocol", AUTO), f"{path}.protocol")
        raw_overload = merged(OVERLOAD, defaults.get("overload"), node.get("overload"))
        overload = self.settings(raw_overload, f"{path}.overload", OVERLOAD)
        served = match is None or tiers is None or self.served_names(match, tiers, f"{path}.tiers")
        if name is None or match is None or tiers is None or breaker is None or failure is None or calls is None:
            return None
        if ("canary" in node and canary is None) or protocol is None or not served or overload is None:
            return None
        return ModelPolicy(name, match, tiers, breaker, failure, canary, calls, protocol, overload)

    def served_names(self, match: Match, tiers: tuple[Tier, ...], path: str) -> bool:
        """A tier's ``model:`` replaces the name a request's path carries (or its body's ``model``), so
        the model must be matched by a path prefix that ends in that name, or by the body's name."""
        if match.body_model is not None:
            return True  # modelguard rewrites the body's model for the tier (server/wire.py)
        if match.path_prefix is not None and named_model(match.path_prefix) is not None:
            return True
        named = [index for index, tier in enumerate(tiers) if tier.model is not None]
        for index in named:
            self.error(
                f"{path}[{index}].model",
                "needs the model matched by a path_prefix ending in /models/NAME (as KServe v1 and v2 and"
                " Triton paths are: NAME is what the rendered routes rewrite) or by body_model",
            )
        return not named

    def canary(self, raw: object, path: str, tiers: tuple[Tier, ...] | None) -> Canary | None:
        """The canary of a model's first tier, which must be routed, to another route than any tier's."""
        canary = self.section(raw, path, CANARY)
        if canary is None or tiers is None:
            return None
        if tiers[0].route is None:
            self.error(path, "a canary needs a first tier with a route: it serves a share of that tier's requests")
            return None
        for index, tier in enumerate(tiers):
            if tier.route == canary.route:
                self.error(f"{path}.route", f"must differ from the routes of the tiers (tiers[{index}] has it)")
                return None
        return canary

    def breaker(self, default: object, override: object, path: str) -> BreakerSettings | None:
        return learnt(self.settings(merged(BREAKER, default, override), path, BREAKER))

    def failure(self, default: object, override: object, path: str) -> FailureSettings | None:
        return self.settings(merged(FAILURE, default, override), path, FAILURE)

    def settings(self, raw: object, path: str, table: Section[S]) -> S | None:
        """A settings section left out is all defaults."""
        return table.defaults if raw is None else self.section(raw, path, table)

    def name(self, value: object, path: str) -> str | None:
        if value is None:
            self.error(path, "required")
            return None
        name = self.value(_NAME, value, path)
        if name in RESERVED_LABELS:
            self.error(path, f"{name!r} is reserved")
            return None
        return name

    def match(self, raw: object, path: str) -> Match | None:
        if raw is None:
            self.error(path, "required: one of path_prefix, authority, header, body_model")
            return None
        node = self.mapping(raw, path, {"path_prefix", "authority", "header", "body_model"})
        if node is None:
            return None
        if len(node) != 1:
            self.error(path, f"must have exactly one of path_prefix, authority, header, body_model (got {len(node)})")
            return None
        if "body_model" in node:
            name = self.value(_BODY_MODEL, node["body_model"], f"{path}.body_model")
            return None if name is None else Match(body_model=name)
        if "path_prefix" in node:
            return self.path_prefix(node["path_prefix"], f"{path}.path_prefix")
        if "authority" in node:
            authority = self.value(_AUTHORITY, node["authority"], f"{path}.authority")
            return Match(authority=authority.lower()) if authority is not None else None
        if "header" in node:
            return self.header(node["header"], f"{path}.header")
        return None  # the one key is unknown: mapping() has reported it

    def path_prefix(self, prefix: object, path: str) -> Match | None:
        """A prefix some request can match: a :path is visible ASCII (anything else arrives
        percent-encoded), and requests are matched on their normalized path, before any query."""
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            self.error(path, "must be a string starting with '/'")
            return None
        if not _PATH_PREFIX_PATTERN.fullmatch(prefix):
            self.error(path, f"must be at most 1024 visible ASCII characters, no spaces, got {shown(prefix)}")
            return None
        normal = normalize_path(_QUERY.split(prefix)[0])
        if normal != prefix:
            self.error(
                path,
                f"never matches: paths are matched as normalized ({shown(normal)}), without their query;"
                " write it that way",
            )
            return None
        return Match(path_prefix=prefix)

    def header(self, raw: object, path: str) -> Match | None:
        node = self.mapping(raw, path, {"name", "value"})
        if node is None:
            return None
        name = self.header_name(node.get("name"), f"{path}.name")
        value = self.value(HEADER_VALUE, node.get("value"), f"{path}.value")
        if name is None or value is None:
            return None
        return Match(header_name=name, header_value=value)

    def header_name(self, name: object, path: str) -> str | None:
        return self.value(HeaderName(), name, path)

    def tiers(self, raw: object, path: str) -> tuple[Tier, ...] | None:
        if not isinstance(raw, list) or not raw:
            self.error(path, f"required: a non-empty list of tiers, best first (got {kind_of(raw)})")
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
        node = self.mapping(raw, path, {"name", "route", "respond", "model", "limit", "deadline", "load_signal"})
        if node is None:
            return None
        name = self.name(node.get("name"), f"{path}.name")
        has_route, has_respond = "route" in node, "respond" in node
        if has_route == has_respond:
            self.error(path, "must have exactly one of route, respond")
            return None
        if has_route:
            return self.routed_tier(node, path, name)
        routed_only = (
            ("model", "serves a model"),
            ("limit", "has a limit"),
            ("deadline", "has a deadline"),
            ("load_signal", "has a load signal"),
        )
        for key, what in routed_only:
            if key in node:
                self.error(f"{path}.{key}", f"only a tier with a route {what}: modelguard answers a respond tier")
        if not last:
            self.error(f"{path}.respond", "only the last tier may respond directly")
            return None
        respond = self.section(node["respond"], f"{path}.respond", RESPOND)
        if name is None or respond is None or node.keys() & {key for key, _ in routed_only}:
            return None
        return Tier(name=name, respond=respond)

    def routed_tier(self, node: Node, path: str, name: str | None) -> Tier | None:
        before = self.count
        route = self.value(ROUTE, node["route"], f"{path}.route")
        model = self.value(SERVED_MODEL, node["model"], f"{path}.model") if "model" in node else None
        limit = self.section(node["limit"], f"{path}.limit", LIMIT) if "limit" in node else None
        deadline = self.value(_DEADLINE, node["deadline"], f"{path}.deadline") if "deadline" in node else None
        signal = (
            self.section(node["load_signal"], f"{path}.load_signal", LOAD_SIGNAL) if "load_signal" in node else None
        )
        if name is None or route is None or self.count != before:
            return None
        return Tier(name=name, route=route, model=model, limit=limit, deadline=deadline, load_signal=signal)


def learnt(settings: BreakerSettings | None) -> BreakerSettings | None:
    """``slow_call_duration: auto`` as the core reads it: the auto settings' initial threshold,
    which a probe's bound also defaults to."""
    auto = None if settings is None else settings.slow_call_auto
    if settings is None or auto is None:
        return settings
    probe = auto.initial if settings.max_probe_duration == LEARNT else settings.max_probe_duration
    return replace(settings, slow_call_duration=auto.initial, max_probe_duration=probe)


def _match_keys(match: Match) -> tuple[tuple[str, ...], list[tuple[str, ...]], str]:
    """The matcher's lookup key for a match, the keys of wider matches that catch all of its
    requests, and how to say so."""
    if match.path_prefix is not None:
        covering: list[tuple[str, ...]] = [("path", prefix) for prefix in covering_prefixes(match.path_prefix)]
        return ("path", match.path_prefix), covering, "every path it matches is already matched by"
    if match.header_name is not None and match.header_value is not None:
        return ("header", match.header_name, match.header_value), [], ""
    if match.body_model is not None:
        return ("body", match.body_model), [], ""
    authority = match.authority or ""
    host: list[tuple[str, ...]] = [("authority", authority.rsplit(":", 1)[0])] if ":" in authority else []
    return ("authority", authority), host, "its host on any port is already matched by"

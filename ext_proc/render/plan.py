"""Which routes each model uses, read off the policy: the one thing every rendered manifest
is built from, so that tiers, routes and canary versions cannot drift from the policy."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import Enum

from ext_proc.policy.model import Match, ModelPolicy, Policy
from ext_proc.protocol.paths import named_model

__all__ = [
    "CANARY_REPLICAS",
    "MAX_REGEX_PROGRAM",
    "MAX_REWRITTEN_PREFIX",
    "REPLICAS",
    "ModelRoutes",
    "RenderError",
    "Rewrite",
    "Role",
    "RouteUse",
    "distinct",
    "max_ejection_percent",
    "plan",
]

REPLICAS = 3  # hosts per tier route, unless told: the reference config's primary
CANARY_REPLICAS = 1

# Kubernetes object names, Istio subset names and label values: a DNS-1123 label.
_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")

MAX_REGEX_PROGRAM = 100
"""Envoy refuses a regex that compiles to more RE2 instructions than this (runtime key
re2.max_program_size.error_level, 100 by default, in Istio's proxies too: a larger one would have
the whole route table rejected)."""
_VERSION = "(?:/versions/[^/:]+)?"
_PROGRAM_OVERHEAD = 24
"""RE2 instructions of a rewrite pattern besides one per character of the path prefix (measured
with Envoy 1.40: /v2/models/ and a 100-character name compile to 135)."""
MAX_REWRITTEN_PREFIX = MAX_REGEX_PROGRAM - _PROGRAM_OVERHEAD
_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$")


class RenderError(ValueError):
    """A policy that cannot be rendered for the target; ``errors`` names each place in the policy."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


class Role(Enum):
    TIER = "tier"
    CANARY = "canary"


@dataclass(frozen=True, slots=True)
class Rewrite:
    """A tier that serves the model under another name (its ``model:``): the path's model segment,
    with a ``/versions/N`` after it (a version of the model the request named, not of this one),
    becomes that name; the rest of the path and the query stay. ``pattern`` is RE2, anchored at the
    model's path prefix, which every request routed there starts with at a segment boundary."""

    pattern: str
    substitution: str
    model: str


@dataclass(frozen=True, slots=True)
class RouteUse:
    """One `route:` of a model: the header value modelguard sets, and what serves it."""

    route: str
    role: Role
    tier: str
    where: str  # its path in the policy file, for errors
    rewrite: Rewrite | None = None
    next_route: str | None = None
    """The next tier's route, where Envoy's last retry of a failed try goes (README, "Per-try
    outcomes"): set when the tier right after this one on the ladder is routed elsewhere, takes the
    same path (no other ``model:``) and every model on this route agrees on it."""

    @property
    def cluster(self) -> str:
        """What the route sends to: the tier's own cluster, or the aggregate of it and the next tier."""
        return self.route if self.next_route is None else f"{self.route}-then-{self.next_route}"


@dataclass(frozen=True, slots=True)
class ModelRoutes:
    name: str
    match: Match
    routes: tuple[RouteUse, ...]

    @property
    def fail_open_name(self) -> str:
        """The name of the model's fail-open route, in every rendered route table."""
        return f"{self.name}-fail-open"

    @property
    def fail_open(self) -> RouteUse:
        """Where requests go that modelguard did not tag (it is down, slow or skipped them):
        the first routed tier, as in the reference config's catch-all."""
        return next(use for use in self.routes if use.role is Role.TIER)


def plan(policy: Policy, *, kubernetes_names: bool = False) -> tuple[ModelRoutes, ...]:
    """The routes of every model that routes anywhere. ``kubernetes_names`` also requires model
    names and routes to be DNS-1123 labels, since they become object, subset and label names."""
    errors: list[str] = []
    models: list[ModelRoutes] = []
    for index, model in enumerate(policy.models):
        where = f"models[{index}]"
        if model.match.body_model is not None:
            errors.append(
                f"{where}.match.body_model: not rendered yet (no route can match a body before modelguard reads"
                " it): route its tiers' x-modelguard-route values by hand, as envoy/envoy.yaml does"
            )
            continue
        uses = [
            RouteUse(
                tier.route,
                Role.TIER,
                tier.name,
                f"{where}.tiers[{position}].route",
                _rewrite(model, tier.model),
                _next_route(model, position),
            )
            for position, tier in enumerate(model.tiers)
            if tier.route is not None
        ]
        errors += _rewrite_problems(model, where, uses)
        if model.canary is not None:
            first = uses[0].tier if uses else model.tiers[0].name
            uses.append(RouteUse(model.canary.route, Role.CANARY, first, f"{where}.canary.route"))
        if not any(use.role is Role.TIER for use in uses):
            continue  # answered by modelguard alone: nothing to route
        if kubernetes_names:
            errors += _kubernetes_problems(model.name, f"{where}.name", uses)
        models.append(ModelRoutes(model.name, model.match, distinct(uses)))
    models = _agreed_next_routes(models)
    errors += _aggregate_clashes(models)
    if errors:
        raise RenderError(errors)
    return tuple(models)


def _next_route(model: ModelPolicy, position: int) -> str | None:
    """A tier followed on the ladder by a routed tier that takes the same path retries its last try
    there; one followed by an answer of modelguard's own (``respond``), or by nothing, retries in place."""
    tier = model.tiers[position]
    after = model.tiers[position + 1] if position + 1 < len(model.tiers) else None
    if (
        after is None
        or after.route in (None, tier.route)
        or _rewrite(model, after.model) != _rewrite(model, tier.model)
    ):
        return None
    return after.route


def _agreed_next_routes(models: list[ModelRoutes]) -> list[ModelRoutes]:
    """Two models sharing a route share its Envoy route and Istio subset: a retry on one model's
    next tier would serve the other's calls, so a route whose models disagree retries in place."""
    seen: dict[str, set[str | None]] = {}
    for model in models:
        for use in model.routes:
            seen.setdefault(use.route, set()).add(use.next_route)
    disputed = {route for route, nexts in seen.items() if len(nexts) > 1}
    return [
        replace(model, routes=tuple(replace(u, next_route=None) if u.route in disputed else u for u in model.routes))
        for model in models
    ]


def _aggregate_clashes(models: list[ModelRoutes]) -> list[str]:
    """The cluster of a tier and the next one is named ROUTE-then-NEXT: no route may be named so."""
    routes = {use.route: use for model in models for use in model.routes}
    return [
        f"{routes[use.cluster].where}: {use.cluster!r} names the cluster of {use.where} and the next tier's: rename"
        " the route"
        for model in models
        for use in model.routes
        if use.next_route is not None and use.cluster in routes
    ]


def _rewrite(model: ModelPolicy, served: str | None) -> Rewrite | None:
    named = named_model(model.match.path_prefix or "")
    if served is None or named is None:
        return None  # the policy reader refuses a model: without a path prefix naming the model
    base, name = named
    return Rewrite(f"^({_re2_literal(base)}){_re2_literal(name)}{_VERSION}", f"\\1{served}", served)


def _re2_literal(text: str) -> str:
    return "".join(f"\\{char}" if char in _RE2_SPECIAL else char for char in text)


def _rewrite_problems(model: ModelPolicy, where: str, uses: list[RouteUse]) -> list[str]:
    """A route is one header value to Envoy's router and one Istio subset, so all of a model's tiers
    on it must agree on the rewrite; and Envoy must accept the pattern."""
    problems: list[str] = []
    first: dict[str, RouteUse] = {}
    for use in uses:
        earlier = first.setdefault(use.route, use)
        if earlier.rewrite != use.rewrite:
            problems.append(
                f"{use.where}: {use.route!r} is also {earlier.where}, with another model: (routes tell tiers apart"
                " for the router): give this tier a route of its own"
            )
    prefix = model.match.path_prefix or ""
    if any(use.rewrite for use in uses) and len(prefix) > MAX_REWRITTEN_PREFIX:
        problems.append(
            f"{where}.match.path_prefix: at most {MAX_REWRITTEN_PREFIX} characters when a tier has a model:"
            f" (the path rewrite's regex would pass Envoy's limit of {MAX_REGEX_PROGRAM} RE2 instructions)"
        )
    return problems


def distinct(uses: Iterable[RouteUse]) -> tuple[RouteUse, ...]:
    """Each route once, as its first use: two tiers, or two models, may share a route (one subset or
    cluster serves both)."""
    seen: dict[str, RouteUse] = {}
    for use in uses:
        seen.setdefault(use.route, use)
    return tuple(seen.values())


def _kubernetes_problems(model: str, where: str, uses: list[RouteUse]) -> list[str]:
    rule = "lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
    problems = [] if _DNS_LABEL.fullmatch(model) else [f"{where}: {model!r} names Kubernetes objects: use {rule}"]
    problems += [
        f"{use.where}: {use.route!r} is an Istio subset name and a label value: use {rule}"
        for use in uses
        if not _DNS_LABEL.fullmatch(use.route)
    ]
    return problems


def max_ejection_percent(replicas: int) -> int:
    """Outlier detection may eject one host of a route, never two, and never a route's only host:
    a whole model failing stays visible to modelguard (envoy/README.md, outlier detection). Envoy
    ejects while (ejected + 1) / hosts <= this percentage, a whole number: exact up to 100 hosts."""
    return 0 if replicas <= 1 else math.ceil(100 / replicas)

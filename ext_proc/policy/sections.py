"""Reading a section of the policy (``breaker:``, ``respond:``, ...) from a table of field specs.

A section is declared, not coded: its model's dataclass (whose defaults are the only defaults), the
spec of every key, and what ties keys together. The Collector reads any such table the same way,
collecting every error with its path instead of stopping at the first, because an operator fixing
a policy during an incident should see all that is wrong in one run of ``modelguard check``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ext_proc.policy.durations import shown
from ext_proc.policy.fields import Invalid, Spec
from ext_proc.policy.limits import MAX_ERRORS

S = TypeVar("S")
T = TypeVar("T")

Node = Mapping[str, Any]
Values = dict[str, Any]
"""A section's values by key; a key whose value was refused reads as None."""

_PLAIN_KEY_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_KINDS: dict[type, str] = {list: "a list", dict: "a mapping", str: "a string", bool: "a boolean"}


@dataclass(frozen=True, slots=True)
class Exclusive:
    """Two keys of which a section takes at most one; setting one unsets the other, default included."""

    keys: tuple[str, str]
    message: str
    """The error at the section when both are set. Only the second is then read: one of the two
    must go, and errors about a value the operator may delete would only crowd the one that matters."""


@dataclass(frozen=True, slots=True)
class Rule:
    """A check across fields, once they are read: a message for the field ``at``, or None."""

    at: str
    check: Callable[[Values], str | None]
    after: str | None = None
    """The field after which it runs, so that its error falls where the reader always reported it;
    None: after every field."""


class Section(Generic[S]):
    """The table of one section. ``build`` is the model's dataclass: called with no arguments it
    gives the defaults, so no default is written twice."""

    __slots__ = ("base", "build", "defaults", "derived", "exclusive", "fields", "last_rules", "steps")

    def __init__(
        self,
        build: Callable[..., S],
        fields: Mapping[str, Spec[object]],
        *,
        exclusive: tuple[Exclusive, ...] = (),
        derived: Mapping[str, Callable[[Values], object]] | None = None,
        rules: tuple[Rule, ...] = (),
    ) -> None:
        self.build = build
        self.defaults = build()
        self.fields = dict(fields)
        """Keys in the order their errors are reported."""
        self.base: Values = {key: getattr(self.defaults, key) for key in self.fields}
        self.exclusive = exclusive
        self.derived = dict(derived or {})
        """Defaults that follow from other values (a count window caps the default min_calls)."""
        unknown = {rule.after for rule in rules} - {None, *self.fields}
        if unknown or not self.derived.keys() <= self.fields.keys():
            raise ValueError(f"a rule or a derived default names a key the table lacks: {unknown or self.derived}")
        self.steps = [(key, spec, [rule for rule in rules if rule.after == key]) for key, spec in self.fields.items()]
        """Each key with the rules that run once it is read: one loop reads a section."""
        self.last_rules = [rule for rule in rules if rule.after is None]


class Collector:
    """Appends ``path: message`` to errors; a reading that fails returns None."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        self.count = 0
        """Every error found, kept or not: what a section compares to see whether it failed."""

    def error(self, path: str, message: str) -> None:
        self.count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{path}: {message}")

    def mapping(self, value: object, path: str, allowed: Collection[str]) -> Node | None:
        """The mapping, with every key not allowed reported: a misspelt ``failure_rat`` silently
        ignored would leave a breaker on its default."""
        if not isinstance(value, Mapping):
            self.error(path or "(root)", f"must be a mapping, got {kind_of(value)}")
            return None
        for key in value:
            if key not in allowed:
                hint = f" (expected one of: {', '.join(sorted(allowed))})"
                self.error(f"{path}.{_key(key)}" if path else _key(key), f"unknown key{hint}")
        return value

    def value(self, spec: Spec[T], value: object, path: str) -> T | None:
        try:
            return spec.read(value)
        except Invalid as exc:
            self.problems(path, exc)
            return None

    def problems(self, path: str, exc: Invalid) -> None:
        for suffix, message in exc.problems:
            self.error(f"{path}{suffix}", message)

    def section(self, raw: object, path: str, table: Section[S]) -> S | None:
        """The section built from raw, or None if any value was refused. An unknown key alone does
        not fail it: the model stays checkable against the others (duplicate names, shadowed matches)."""
        node = self.mapping(raw, path, table.fields)
        if node is None:
            return None
        before = self.count
        values = self.values(node, path, table)
        if self.count != before:
            return None
        return table.build(**values)

    def values(self, node: Node, path: str, table: Section[Any]) -> Values:
        unread = self.conflicts(node, path, table)
        values = table.base.copy()
        for key, spec, rules in table.steps:
            if key in node and key not in unread:
                try:
                    values[key] = spec.read(node[key])
                except Invalid as exc:
                    self.problems(f"{path}.{key}", exc)
                    values[key] = None
            if rules:
                self.apply(rules, values, path)
        for pair in table.exclusive:
            _unset_partner(pair, node, values)
        for key, derive in table.derived.items():
            if key not in node:
                values[key] = derive(values)
        self.apply(table.last_rules, values, path)
        return values

    def conflicts(self, node: Node, path: str, table: Section[Any]) -> set[str]:
        """Report every exclusive pair set together; the keys to leave unread."""
        unread: set[str] = set()
        for pair in table.exclusive:
            first, second = pair.keys
            if first in node and second in node:
                self.error(path, pair.message)
                unread.add(first)
        return unread

    def apply(self, rules: list[Rule], values: Values, path: str) -> None:
        for rule in rules:
            message = rule.check(values)
            if message is not None:
                self.error(f"{path}.{rule.at}", message)


class _Pairs(Collector):
    """A collector that keeps (path, message) pairs, for a section nested in another's field."""

    def __init__(self) -> None:
        super().__init__([])
        self.pairs: list[tuple[str, str]] = []

    def error(self, path: str, message: str) -> None:
        self.count += 1
        if len(self.pairs) < MAX_ERRORS:
            self.pairs.append((path, message))


@dataclass(frozen=True, slots=True)
class Nested(Generic[S]):
    """A field whose value is a section of its own (``canary.guardrails``): read by its table,
    every error reported at its path below the field."""

    table: Section[S]

    def read(self, value: object) -> S:
        pairs = _Pairs()
        found = pairs.section(value, "", self.table)
        if found is None or pairs.count:
            # mapping() names an unknown key without a leading dot when the path is empty
            raise Invalid(problems=[(_below(path), message) for path, message in pairs.pairs])
        return found


def _below(path: str) -> str:
    if path == "(root)":
        return ""
    return path if path.startswith(".") else f".{path}"


def merged(table: Section[Any], default: object, override: object) -> object:
    """A section of ``defaults:`` under a model's own: the model's keys win, and a model choosing one
    key of an exclusive pair drops the other from the defaults. A non-mapping is left for validation
    to report."""
    if isinstance(default, Mapping) and isinstance(override, Mapping):
        for pair in table.exclusive:
            for key, other in (pair.keys, pair.keys[::-1]):
                if key in override:
                    default = {k: v for k, v in default.items() if k != other}
        return {**default, **override}
    return override if override is not None else default


def _unset_partner(pair: Exclusive, node: Node, values: Values) -> None:
    first, second = pair.keys
    if second in node:
        values[first] = None
    elif first in node:
        values[second] = None


def kind_of(value: object) -> str:
    """What a value is, as an error names it: never the value itself, which may be huge."""
    if value is None:
        return "nothing"
    return _KINDS.get(type(value), type(value).__name__)


def _key(key: object) -> str:
    """A mapping key as a path segment: as written when plain, else quoted and bounded."""
    return key if isinstance(key, str) and _PLAIN_KEY_PATTERN.fullmatch(key) else shown(key)

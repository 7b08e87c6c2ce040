"""Which model a request is for, from the few headers the policy names.

Models are matched in policy order (the first that matches wins, as Envoy's routes do), but
the lookup is by dictionary rather than by scanning every model, so a policy with a thousand
models costs the same per request as one with three. A path is matched as a model server will
act on it (paths.py), so no spelling of a model's path escapes its breaker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Generic, TypeVar

from ext_proc.policy import Match
from ext_proc.protocol.headers import PATH
from ext_proc.protocol.paths import SEGMENT_ENDS, normalize_path

AUTHORITY = ":authority"

T = TypeVar("T")


class Matcher(Generic[T]):
    """Maps request headers to the first matching target, in the order given."""

    __slots__ = ("_authorities", "_headers", "_prefix_lengths", "_prefixes", "header_names")

    def __init__(self, entries: Sequence[tuple[Match, T]]) -> None:
        self._prefixes: dict[str, tuple[int, T]] = {}
        self._authorities: dict[str, tuple[int, T]] = {}
        self._headers: dict[str, dict[str, tuple[int, T]]] = {}
        for order, (match, target) in enumerate(entries):
            if match.path_prefix is not None:
                self._prefixes.setdefault(match.path_prefix, (order, target))
            elif match.authority is not None:
                self._authorities.setdefault(match.authority, (order, target))
            elif match.header_name is not None and match.header_value is not None:
                by_value = self._headers.setdefault(match.header_name, {})
                by_value.setdefault(match.header_value, (order, target))
            # a body_model match is not one of the headers': Guard.decide_body looks it up
        self._prefix_lengths = tuple(sorted({len(p) for p in self._prefixes}, reverse=True))
        names = set(self._headers)
        if self._prefixes:
            names.add(PATH)
        if self._authorities:
            names.add(AUTHORITY)
        self.header_names: frozenset[str] = frozenset(names)
        """The only request headers the matcher reads; the server extracts just these."""

    def match(self, headers: Mapping[str, str]) -> T | None:
        best: tuple[int, T] | None = None
        if self._prefixes:
            path = headers.get(PATH)
            if path:
                path = normalize_path(path)
                size = len(path)
                for length in self._prefix_lengths:
                    if length > size:
                        continue
                    hit = self._prefixes.get(path[:length])
                    if hit is None or (best is not None and hit[0] >= best[0]):
                        continue
                    if length == size or path[length - 1] == "/" or path[length] in SEGMENT_ENDS:
                        best = hit
        if self._authorities:
            authority = headers.get(AUTHORITY)
            if authority:
                authority = authority.lower()
                hit = self._authorities.get(authority)
                if hit is not None and (best is None or hit[0] < best[0]):
                    best = hit
                if ":" in authority:  # a policy authority without a port matches any port
                    hit = self._authorities.get(authority.rsplit(":", 1)[0])
                    if hit is not None and (best is None or hit[0] < best[0]):
                        best = hit
        for name, by_value in self._headers.items():
            value = headers.get(name)
            if value is not None:
                hit = by_value.get(value)
                if hit is not None and (best is None or hit[0] < best[0]):
                    best = hit
        return best[1] if best is not None else None

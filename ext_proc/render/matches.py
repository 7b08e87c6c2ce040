"""A model's match as Envoy's and Istio's routes spell it, matching what modelguard matches (a path
prefix at a segment boundary; an authority without case or port), so that one model's fail-open
route never catches another's requests. Plain prefix and exact matches only: no regex, whose
program size Envoy caps (re2.max_program_size, 100 by default) well below a long prefix."""

from __future__ import annotations

from typing import Any

from ext_proc.policy.model import Match
from ext_proc.protocol.paths import SEGMENT_ENDS

__all__ = ["envoy_matches", "istio_matches"]

# After the prefix, what else may follow in a path without its query string (route matching
# drops it). '/' is covered by Envoy's path_separated_prefix, '?' and '#' by its dropping the query.
_OTHER_ENDS = sorted(SEGMENT_ENDS - {"/", "?", "#"})


def istio_matches(match: Match) -> list[dict[str, Any]]:
    """HTTPMatchRequest conditions (any one matches) for a VirtualService route."""
    if match.path_prefix is None:
        return [{"headers": {str(match.header_name): {"exact": match.header_value}}}]
    prefix = match.path_prefix
    if prefix.endswith("/"):
        return [{"uri": {"prefix": prefix}}]
    return [{"uri": {"exact": prefix}}] + [{"uri": {"prefix": prefix + end}} for end in ["/", *_OTHER_ENDS]]


def envoy_matches(match: Match) -> list[dict[str, Any]]:
    """RouteMatch objects (one route each) for an Envoy route table."""
    if match.path_prefix is not None:
        prefix = match.path_prefix
        if prefix.endswith("/"):
            return [{"prefix": prefix}]
        return [{"path_separated_prefix": prefix}] + [{"prefix": prefix + end} for end in _OTHER_ENDS]
    if match.authority is not None:
        spellings = [{"exact": match.authority}, {"prefix": match.authority + ":"}]  # any port
        return [_header(":authority", {**spelling, "ignore_case": True}) for spelling in spellings]
    return [_header(str(match.header_name), {"exact": match.header_value})]


def _header(name: str, string_match: dict[str, Any]) -> dict[str, Any]:
    return {"prefix": "/", "headers": [{"name": name, "string_match": string_match}]}

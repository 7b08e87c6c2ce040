"""A model's match as Envoy's and Istio's routes spell it, matching exactly what modelguard matches,
so that the fail-open route of one model never catches another's requests."""

from __future__ import annotations

import re

from ext_proc.policy.model import Match
from ext_proc.protocol.paths import SEGMENT_ENDS

__all__ = ["authority_regex", "path_regex"]

_ENDS = "".join(sorted(SEGMENT_ENDS - {"?", "#"}))  # route regexes see the path without its query


def path_regex(match: Match) -> str | None:
    """A full-match RE2 regex for the model's path prefix at a segment boundary (modelguard's rule:
    /models/rec is not /models/recipe); None when the prefix ends in '/' and a plain prefix says
    the same."""
    prefix = str(match.path_prefix)
    if prefix.endswith("/"):
        return None
    return f"{re.escape(prefix)}(?:[{re.escape(_ENDS)}].*)?"


def authority_regex(match: Match) -> str:
    """modelguard compares authorities without case and without a port."""
    return f"(?i){re.escape(str(match.authority))}(?::[0-9]+)?"

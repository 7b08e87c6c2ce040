"""The path a model server will act on, for matching: whatever spelling the client chose.

A model server decodes percent-escapes, collapses repeated slashes and resolves ``.`` and
``..`` before it routes, so ``/v2/models/r%65commender//./infer`` is served as the recommender's
``/v2/models/recommender/infer``. Matching the raw ``:path`` would let such a spelling skip the
breaker and reach a failing primary (nothing would judge its outcome either). The normalization
here is a superset of RFC 3986's (section 6.2.2): every escape of a visible ASCII character is
decoded, not only the unreserved ones, because servers decode reserved ones too (``%3A`` is the
``:`` of ``/v1/models/name:predict``); an escaped or literal backslash counts as ``/``; repeated
slashes merge; dot segments are removed. Escapes of anything else (a space, a control character,
a byte of a non-ASCII character) stay escaped, since a request line cannot carry them raw, with
their hex digits upper-cased (``%c3%a9`` and ``%C3%A9`` are one path). Case stays significant
otherwise, as it does for the servers. The query is never touched.

Most paths need none of this, and a cheap look at them says so first.
"""

from __future__ import annotations

import re

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")

SEGMENT_ENDS = frozenset("/?#:;")
"""After a path prefix, one of these must follow, so /models/rec does not match /models/recipe
(':' for the /v1/models/name:predict style)."""


_NAMED_MODEL = re.compile(r"(.*/models/)([^/?#:;]+)")


def named_model(prefix: str) -> tuple[str, str] | None:
    """Where a path prefix names its model as KServe v1 and v2, Triton and TF Serving paths do
    (``/v2/models/NAME``, ``/v1/models/NAME``): the part before the name and the name; None when
    the prefix does not end so."""
    found = _NAMED_MODEL.fullmatch(prefix)
    return (found.group(1), found.group(2)) if found else None


def covering_prefixes(prefix: str) -> list[str]:
    """The shorter prefixes that match every path this one matches (matching.py's boundary rule):
    ``/v1/models/x`` is covered by ``/``, ``/v1``, ``/v1/``, ``/v1/models`` and ``/v1/models/``."""
    return [prefix[:end] for end in range(1, len(prefix)) if prefix[end - 1] == "/" or prefix[end] in SEGMENT_ENDS]


def needs_normalizing(path: str) -> bool:
    """True when the path could be spelled differently from what a server acts on."""
    return "%" in path or "//" in path or "/." in path or "\\" in path


def normalize_path(path: str) -> str:
    """The path as a server acts on it, with any query or fragment left as it came."""
    if not needs_normalizing(path):
        return path
    end = _query_start(path)
    head = path[:end]
    if "%" in head:
        head = _ESCAPE.sub(_decoded, head)
    if "\\" in head:
        head = head.replace("\\", "/")
    while "//" in head:
        head = head.replace("//", "/")
    if "/." in head or head.startswith("."):
        head = _without_dot_segments(head)
    return head + path[end:]


def _query_start(path: str) -> int:
    end = len(path)
    for mark in "?#":
        index = path.find(mark, 0, end)
        if index >= 0:
            end = index
    return end


def _decoded(escape: re.Match[str]) -> str:
    code = int(escape.group(1), 16)
    return chr(code) if 0x21 <= code <= 0x7E else "%" + escape.group(1).upper()


def _without_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 on a path whose slashes are already merged."""
    absolute = path.startswith("/")
    kept: list[str] = []
    segments = path.split("/")
    for segment in segments:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != "." and segment != "":
            kept.append(segment)
    trailing = segments[-1] in ("", ".", "..") and bool(kept)
    text = "/".join(kept)
    if absolute:
        text = "/" + text
    if trailing:
        text += "/"
    return text or "/"


def routed_path(path: str) -> str:
    """The path as a server routes it: without query or fragment, normalized, without a trailing
    slash (servers route ``/infer/`` as ``/infer``). The query is cut first, as a server does: an
    escaped ``%3F`` is a character of the path, not the start of a query."""
    return normalize_path(path[: _query_start(path)]).rstrip("/")

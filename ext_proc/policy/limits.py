"""How large a policy may be: every bound in one place, each with what it protects.

A policy is untrusted input to a process that must stay up; these bounds are checked before
anything is built from a file (size, nesting, nodes) or before a list is walked (models, tiers,
statuses). The README's "Limits" paragraph states them and the memory each costs.
"""

from __future__ import annotations

MAX_FILE_BYTES = 4 * 1024 * 1024
"""10,000 models of three tiers with their breaker and failure settings in ``defaults`` take about
2 MB; written out in every model, about 4.5 MB (over the limit: that is what ``defaults`` is for)."""
MAX_DEPTH = 64
"""A policy nests 5 levels; PyYAML's composer recurses once per level."""
MAX_NODES = 500_000
"""What validation may walk: YAML values (scalars, lists, mappings) counted with every alias
expanded, a scalar once more for every CHARS_PER_COST characters. 10,000 models of three tiers
with settings in ``defaults`` cost about 200,000 (every key written in every model: 630,000, but
that file is over MAX_FILE_BYTES too). Measured with `modelguard check` on the 2-core benchmark
machine: 10,000 such models, 4.6 s and 265 MB; the worst files just under the budget (500,000
empty mappings; one mapping of 240,000 keys), 4.1-4.7 s and 240-380 MB; anything over it, and any
short file of aliases of aliases or of aliases of a long string, refused in 0.2-1 s."""
CHARS_PER_COST = 64
MAX_MODELS = 10_000
MAX_TIERS = 16
MAX_STATUSES = 100
MAX_WINDOW_CALLS = 10_000
"""A count window keeps one byte per call per routed tier."""
MAX_ERRORS = 100
"""Errors kept for the message; the rest are counted. 10,000 broken models must not print a million lines."""
MAX_EXCLUDED_VALUES = 64
"""Values a canary's ``exclude`` lists: a set lookup per request, whatever its size."""
MAX_CALL_PATHS = 64
"""Path endings (and methods) of a model's inference calls."""
MAX_SERVED_NAME = 63
"""Characters of a tier's ``model:``, the name its servers know the model by: one path segment
(KServe names its models with DNS labels, at most 63 characters)."""

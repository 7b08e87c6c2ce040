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
MAX_NODES = 1_000_000
"""YAML values (scalars, lists, mappings), counted with every alias expanded: what validation will
walk. 10,000 models with every key written are about 600,000; a short file of aliases
of aliases, or 4 MB of ``{}``, is refused here in under a second instead of taking minutes and
gigabytes to build."""
MAX_MODELS = 10_000
MAX_TIERS = 16
MAX_STATUSES = 100
MAX_WINDOW_CALLS = 10_000
"""A count window keeps one byte per call per routed tier."""
MAX_ERRORS = 100
"""Errors kept for the message; the rest are counted. 10,000 broken models must not print a million lines."""

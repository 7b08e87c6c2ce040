"""The policy file: its typed model (model.py), its bounds (limits.py), reading it from a file
with YAML treated as hostile (loading.py), validating it with every error by its path (reader.py,
its settings sections as tables of field specs: tables.py, fields.py, sections.py) and what a new
one changes (diff.py). What the rest of modelguard uses is re-exported here."""

from ext_proc.policy.diff import PolicyDiff, diff_policies
from ext_proc.policy.limits import (
    MAX_DEPTH,
    MAX_ERRORS,
    MAX_FILE_BYTES,
    MAX_MODELS,
    MAX_NODES,
    MAX_STATUSES,
    MAX_TIERS,
    MAX_WINDOW_CALLS,
)
from ext_proc.policy.loading import load_policy, parse_policy
from ext_proc.policy.model import (
    BUCKETS,
    INFERENCE_PATHS,
    RESERVED_LABELS,
    BreakerSettings,
    Calls,
    Canary,
    Exclude,
    FailureSettings,
    Guardrails,
    Match,
    ModelPolicy,
    Policy,
    PolicyError,
    Ramp,
    Respond,
    Tier,
)
from ext_proc.policy.reader import build_policy

__all__ = [
    "BUCKETS",
    "INFERENCE_PATHS",
    "MAX_DEPTH",
    "MAX_ERRORS",
    "MAX_FILE_BYTES",
    "MAX_MODELS",
    "MAX_NODES",
    "MAX_STATUSES",
    "MAX_TIERS",
    "MAX_WINDOW_CALLS",
    "RESERVED_LABELS",
    "BreakerSettings",
    "Calls",
    "Canary",
    "Exclude",
    "FailureSettings",
    "Guardrails",
    "Match",
    "ModelPolicy",
    "Policy",
    "PolicyDiff",
    "PolicyError",
    "Ramp",
    "Respond",
    "Tier",
    "build_policy",
    "diff_policies",
    "load_policy",
    "parse_policy",
]

"""The words of ``x-modelguard-reason`` and of the ``reason`` label: a user-facing contract
(README, "Headers"), so every one is named here once."""

from __future__ import annotations

OK = "ok"
"""Served by the first tier of the ladder, as usual."""
BREAKER_OPEN = "breaker_open"
"""Served lower down the ladder (or refused) because a better tier's breaker is open."""
HALF_OPEN_PROBE = "half_open_probe"
"""One of the few requests a half-open breaker lets through to test a tier."""
FORCED = "forced"
"""Served lower down the ladder (or refused) because an operator forced a better tier open."""
PASS_THROUGH = "pass_through"
"""Not an inference call of the model (a readiness check, a metadata read): passed through
unjudged, untagged (core/calls.py)."""
OVERLOAD = "overload"
"""Over a tier's concurrency limit: served lower down the ladder (a standard or critical request),
or by a tier past its limit (a critical one that no tier had room for)."""
SHED = "shed"
"""Refused at once with 429 (gRPC RESOURCE_EXHAUSTED): a sheddable request over a tier's limit."""
CANARY = "canary"
"""Served by the new version of the first tier: the request's key is in the canary's share."""

ARM_CANARY = "canary"
ARM_STABLE = "stable"
"""The words of ``x-modelguard-arm``."""
CANARY_SUFFIX = "@canary"
"""The canary route's breaker is a tier state named after its tier with this suffix
(``primary@canary``), which no policy tier name can take."""

UNMATCHED = "unmatched"
"""Label of requests no model matched (and of their tier and reason)."""
NO_TIER = "none"
"""Tier label of a request every tier refused."""

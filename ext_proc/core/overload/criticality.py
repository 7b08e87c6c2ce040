"""A request's criticality, from ``x-request-criticality`` as far as the policy trusts it.

A client that could name itself ``critical`` would never be shed, so only the values the policy
``honoured`` are taken from the request; any other value, or none, is the policy's ``default``
(README, "Shedding"). Ranks are small integers, most important first: the limiter indexes its
shares by them.
"""

from __future__ import annotations

from collections.abc import Mapping

from ext_proc.policy import CRITICAL, CRITICALITIES, SHEDDABLE, STANDARD, Overload

CRITICAL_RANK = CRITICALITIES.index(CRITICAL)
STANDARD_RANK = CRITICALITIES.index(STANDARD)
SHEDDABLE_RANK = CRITICALITIES.index(SHEDDABLE)


class Criticality:
    """Reads one model's requests' rank."""

    __slots__ = ("default", "header", "honoured")

    def __init__(self, settings: Overload) -> None:
        self.header = settings.header
        self.default = CRITICALITIES.index(settings.default)
        self.honoured = {name: CRITICALITIES.index(name) for name in settings.honoured}
        """Exact values only: ``Critical`` or ``critical `` is not a word the policy trusts."""

    def rank(self, headers: Mapping[str, str]) -> int:
        value = headers.get(self.header)
        if value is None:
            return self.default
        return self.honoured.get(value, self.default)

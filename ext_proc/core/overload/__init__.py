"""Overload protection in the decision core: concurrency limits per tier, the criticality of a
request, and what happens to it over a limit (README, "Concurrency limits" and "Shedding").

Flow control lives here, apart from the breakers: a breaker judges whether a tier works, a limit
whether it can take one more call now. ``Limiter`` is a tier's admitter; its figure is a
``StaticLimit`` or a ``GradientLimit``; ``Criticality`` reads a request's class.
"""

from ext_proc.core.overload.criticality import CRITICAL_RANK, SHEDDABLE_RANK, STANDARD_RANK, Criticality
from ext_proc.core.overload.gradient import GradientLimit
from ext_proc.core.overload.limiter import Limiter, LimitFigure, StaticLimit

__all__ = [
    "CRITICAL_RANK",
    "SHEDDABLE_RANK",
    "STANDARD_RANK",
    "Criticality",
    "GradientLimit",
    "LimitFigure",
    "Limiter",
    "StaticLimit",
]

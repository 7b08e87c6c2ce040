"""Which criticality a request gets: only the values the policy honours come from the client."""

from __future__ import annotations

from ext_proc.core.overload import CRITICAL_RANK, SHEDDABLE_RANK, STANDARD_RANK, Criticality
from ext_proc.policy import Overload

HEADER = "x-request-criticality"


def test_by_default_a_client_cannot_make_itself_critical() -> None:
    criticality = Criticality(Overload())
    assert criticality.rank({HEADER: "critical"}) == STANDARD_RANK
    assert criticality.rank({HEADER: "sheddable"}) == SHEDDABLE_RANK
    assert criticality.rank({}) == STANDARD_RANK


def test_honoured_values_and_the_default_come_from_the_policy() -> None:
    criticality = Criticality(Overload(default="sheddable", honoured=frozenset({"critical"}), header="x-class"))
    assert criticality.rank({"x-class": "critical"}) == CRITICAL_RANK
    assert criticality.rank({"x-class": "standard"}) == SHEDDABLE_RANK
    assert criticality.rank({HEADER: "critical"}) == SHEDDABLE_RANK


def test_a_value_is_honoured_only_as_written() -> None:
    criticality = Criticality(Overload(honoured=frozenset({"critical", "standard", "sheddable"})))
    for value in ("Critical", "critical ", "CRITICAL", "critical,critical", ""):
        assert criticality.rank({HEADER: value}) == STANDARD_RANK

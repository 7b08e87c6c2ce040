"""A tier's limiter: shares by criticality, exact counts, and its figure kept across a reload."""

from __future__ import annotations

from ext_proc.core import reasons
from ext_proc.core.outcomes import FAILURE, OVERLOAD, SUCCESS
from ext_proc.core.overload import CRITICAL_RANK, SHEDDABLE_RANK, STANDARD_RANK, Limiter
from ext_proc.core.overload.gradient import GradientLimit
from ext_proc.policy import AdaptiveLimit, Limit, Overload

TEN = Limit(max_inflight=10)


def fill(limiter: Limiter, rank: int) -> int:
    taken = 0
    while limiter.admit(rank) is not None:
        taken += 1
    return taken


def test_each_class_has_its_share_of_the_limit() -> None:
    overload = Overload(sheddable_share=0.5, critical_share=1.5)
    assert fill(Limiter(TEN, overload), SHEDDABLE_RANK) == 5
    assert fill(Limiter(TEN, overload), STANDARD_RANK) == 10
    assert fill(Limiter(TEN, overload), CRITICAL_RANK) == 15


def test_sheddable_requests_lose_first() -> None:
    limiter = Limiter(TEN, Overload(sheddable_share=0.8))
    assert fill(limiter, STANDARD_RANK) == 10
    assert limiter.admit(SHEDDABLE_RANK) is None


def test_past_the_limit_a_critical_request_says_so() -> None:
    limiter = Limiter(TEN, Overload())
    tokens = [limiter.admit(CRITICAL_RANK) for _ in range(12)]
    assert [token.reason for token in tokens if token is not None] == [None] * 10 + [reasons.OVERLOAD] * 2
    assert limiter.force().reason == reasons.OVERLOAD
    assert limiter.inflight == 13


def test_every_settlement_frees_its_place() -> None:
    limiter = Limiter(TEN, Overload())
    tokens = [limiter.admit(STANDARD_RANK) for _ in range(10)]
    assert limiter.admit(STANDARD_RANK) is None
    outcomes = [SUCCESS, FAILURE, OVERLOAD]
    for index, token in enumerate(tokens):
        assert token is not None
        if index < 3:
            token.record(outcomes[index], 0.1, 1.0)
        else:
            token.release(1.0)
    assert limiter.inflight == 0


def test_only_successes_are_latency_samples_and_a_429_backs_off() -> None:
    limiter = Limiter(Limit(adaptive=AdaptiveLimit(initial=20, min_samples=1)), Overload())
    figure = limiter.figure
    assert isinstance(figure, GradientLimit)
    token = limiter.admit(STANDARD_RANK)
    assert token is not None
    token.record(FAILURE, 0.001, 1.0)
    assert figure.windows == 0
    token = limiter.admit(STANDARD_RANK)
    assert token is not None
    token.record(OVERLOAD, 0.5, 1.0)
    assert figure.value == 18


def test_a_reload_keeps_the_count_and_a_same_limit_keeps_what_it_learnt() -> None:
    adaptive = Limit(adaptive=AdaptiveLimit(initial=20))
    limiter = Limiter(adaptive, Overload())
    figure = limiter.figure
    limiter.admit(STANDARD_RANK)
    limiter.reconfigure(adaptive, Overload(sheddable_share=0.1))
    assert limiter.figure is figure
    assert limiter.shares[SHEDDABLE_RANK] == 0.1
    limiter.reconfigure(TEN, Overload())
    assert limiter.figure.value == 10
    assert limiter.inflight == 1

"""classify(): failure, overload (429 / RESOURCE_EXHAUSTED unless listed) and success."""

from __future__ import annotations

import pytest

from ext_proc.core.outcomes import FAILURE, OVERLOAD, SUCCESS, classify
from ext_proc.policy import FailureSettings, parse_policy
from ext_proc.protocol.grpc_codes import GRPC_STATUS_CODES

DEFAULT = FailureSettings()


@pytest.mark.parametrize(
    ("status", "grpc_status", "expected"),
    [
        (200, None, SUCCESS),
        (201, None, SUCCESS),
        (404, None, SUCCESS),  # the client's, unless the call says the tier lacks the model (below)
        (400, None, SUCCESS),
        (499, None, SUCCESS),
        (500, None, FAILURE),
        (503, None, FAILURE),
        (599, None, FAILURE),
        (429, None, OVERLOAD),
        (200, 0, SUCCESS),
        (200, 14, FAILURE),  # UNAVAILABLE
        (200, 4, FAILURE),  # DEADLINE_EXCEEDED
        (200, 13, FAILURE),  # INTERNAL
        (200, 8, OVERLOAD),  # RESOURCE_EXHAUSTED
        (200, 5, SUCCESS),  # NOT_FOUND is not a failure by default
        (503, 0, FAILURE),
        (429, 14, FAILURE),  # a listed grpc failure beats the 429 overload rule
    ],
)
def test_default_classification(status: int, grpc_status: int | None, expected: str) -> None:
    assert classify(status, grpc_status, DEFAULT) == expected


def test_429_listed_explicitly_is_a_failure() -> None:
    failure = FailureSettings(statuses=frozenset({429, *range(500, 600)}))
    assert classify(429, None, failure) == FAILURE
    assert classify(503, None, failure) == FAILURE
    assert classify(200, None, failure) == SUCCESS


def test_resource_exhausted_listed_is_a_failure() -> None:
    failure = FailureSettings(grpc_statuses=frozenset({GRPC_STATUS_CODES["RESOURCE_EXHAUSTED"]}))
    assert classify(200, 8, failure) == FAILURE
    # 14 is no longer listed, so it is a plain success here.
    assert classify(200, 14, failure) == SUCCESS


def test_unlisted_5xx_is_success() -> None:
    failure = FailureSettings(statuses=frozenset({503}))
    assert classify(503, None, failure) == FAILURE
    assert classify(500, None, failure) == SUCCESS
    # 429 is overload even when the status list is narrowed.
    assert classify(429, None, failure) == OVERLOAD


def test_empty_lists_judge_nothing_a_failure_but_keep_overload() -> None:
    failure = FailureSettings(statuses=frozenset(), grpc_statuses=frozenset())
    assert classify(500, None, failure) == SUCCESS
    assert classify(200, 14, failure) == SUCCESS
    assert classify(429, None, failure) == OVERLOAD
    assert classify(200, 8, failure) == OVERLOAD


def test_policy_listing_429_and_resource_exhausted() -> None:
    policy = parse_policy(
        """
models:
  - name: m
    match: {path_prefix: /m}
    tiers: [{name: p, route: r}]
    failure: {statuses: ["5xx", 429], grpc_statuses: [UNAVAILABLE, RESOURCE_EXHAUSTED]}
"""
    )
    failure = policy.models[0].failure
    assert classify(429, None, failure) == FAILURE
    assert classify(200, 8, failure) == FAILURE
    assert classify(200, 14, failure) == FAILURE
    assert classify(200, 4, failure) == SUCCESS  # DEADLINE_EXCEEDED not listed here
    assert classify(404, None, failure, lacks_model=True) == FAILURE, "404 is a failure whatever statuses lists"


@pytest.mark.parametrize("statuses", [frozenset(range(500, 600)), frozenset({503}), frozenset()])
def test_404_is_a_failure_whatever_the_statuses(statuses: frozenset[int]) -> None:
    """A tier whose servers do not know the model answers 404 to every call: its breaker must see
    failures, not successes, or it stays closed while the tier serves nothing."""
    failure = FailureSettings(statuses=statuses)
    assert classify(404, None, failure, lacks_model=True) == FAILURE
    assert classify(404, 0, failure, lacks_model=True) == FAILURE
    assert classify(404, None, failure) == (FAILURE if 404 in statuses else SUCCESS)
    assert classify(400, None, failure) == SUCCESS, "other 4xx stay the client's"

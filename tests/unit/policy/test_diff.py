"""diff_policies: what a reload changes, model by model, and the line it logs."""

from __future__ import annotations

import dataclasses

import pytest

from ext_proc.policy import ModelPolicy, Policy, PolicyDiff, diff_policies, parse_policy


def _policy(*models: str, breaker: dict[str, str] | None = None) -> Policy:
    """One model per name, each on its own prefix; ``breaker`` gives a name its own breaker keys."""
    lines = ["models:"]
    for name in models:
        settings = (breaker or {}).get(name, "{}")
        lines.append(
            f"  - {{name: {name}, match: {{path_prefix: /{name}}}, tiers: [{{name: p, route: {name}-p}}],"
            f" breaker: {settings}}}"
        )
    return parse_policy("\n".join(lines) + "\n")


def test_the_same_policy_is_unchanged() -> None:
    diff = diff_policies(_policy("a", "b"), _policy("a", "b"))
    assert diff == PolicyDiff(added=(), removed=(), changed=())
    assert diff.unchanged
    assert diff.summary() == "no model changed"


def test_added_models_in_the_new_order() -> None:
    diff = diff_policies(_policy("a"), _policy("z", "a", "b"))
    assert diff.added == ("z", "b")
    assert (diff.removed, diff.changed) == ((), ())
    assert not diff.unchanged
    assert diff.summary() == "2 added (z, b), 0 removed, 0 changed"


def test_removed_models_in_the_old_order() -> None:
    diff = diff_policies(_policy("c", "a", "b"), _policy("a"))
    assert diff.removed == ("c", "b")
    assert (diff.added, diff.changed) == ((), ())
    assert diff.summary() == "0 added, 2 removed (c, b), 0 changed"


def test_a_changed_breaker_setting_changes_the_model() -> None:
    old = _policy("a", "b", "c")
    new = _policy("c", "b", "a", breaker={"a": "{failure_rate: 0.3}", "c": "{open_duration: 1s}"})
    diff = diff_policies(old, new)
    assert diff.changed == ("c", "a")  # the new policy's order
    assert (diff.added, diff.removed) == ((), ())
    assert diff.summary() == "0 added, 0 removed, 2 changed (c, a)"


def test_reordering_alone_changes_nothing() -> None:
    assert diff_policies(_policy("a", "b"), _policy("b", "a")).unchanged


def _edited(model: ModelPolicy, field: str) -> ModelPolicy:
    if field == "match":
        return dataclasses.replace(model, match=dataclasses.replace(model.match, path_prefix="/elsewhere"))
    if field == "tiers":
        return dataclasses.replace(model, tiers=(dataclasses.replace(model.tiers[0], route="other"),))
    return dataclasses.replace(model, failure=dataclasses.replace(model.failure, statuses=frozenset({503})))


@pytest.mark.parametrize("field", ["match", "tiers", "failure"])
def test_every_other_field_of_a_model_counts(field: str) -> None:
    old = _policy("a", "b")
    new = Policy((_edited(old.models[0], field), old.models[1]))
    assert new.models[0] != old.models[0]
    assert diff_policies(old, new).changed == ("a",)


def test_all_kinds_at_once() -> None:
    diff = diff_policies(_policy("a", "b", "c"), _policy("d", "b", "a", breaker={"a": "{jitter: 0}"}))
    assert diff == PolicyDiff(added=("d",), removed=("c",), changed=("a",))
    assert diff.summary() == "1 added (d), 1 removed (c), 1 changed (a)"


def test_summary_lists_at_most_five_names_per_kind() -> None:
    new = [f"n{i}" for i in range(8)]
    old = [f"o{i}" for i in range(6)]
    diff = diff_policies(_policy(*old), _policy(*new))
    assert diff.added == tuple(new) and diff.removed == tuple(old)
    assert diff.summary() == "8 added (n0, n1, n2, n3, n4 +3 more), 6 removed (o0, o1, o2, o3, o4 +1 more), 0 changed"


def test_exactly_five_names_are_all_listed() -> None:
    names = [f"m{i}" for i in range(5)]
    assert diff_policies(_policy("x"), _policy("x", *names)).summary() == (
        "5 added (m0, m1, m2, m3, m4), 0 removed, 0 changed"
    )


def test_the_diff_is_frozen() -> None:
    diff = diff_policies(_policy("a"), _policy("b"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        diff.added = ()  # type: ignore[misc]

"""The overload scene's figures per stage and class, and the expectations drawn from them."""

from __future__ import annotations

from ext_proc.demo.loadgen import Sample
from ext_proc.demo.overload_report import expectations, stages, summary, table

START = 1000.0


def sample(at: float, status: int, criticality: str, latency: float = 0.2, host: str = "primary-1") -> Sample:
    return Sample(START + at, latency, status, "primary", False, host, "primary", None, "", criticality)


def run(shed_sheddable_at: int, critical_status: int = 200, slow_at_end: float = 0.2) -> list[Sample]:
    found = []
    for stage in range(4):
        for index in range(100):
            at = stage * 10 + index * 0.1
            found.append(sample(at, critical_status if index % 50 == 0 else 200, "critical"))
            status, host = (429, "") if stage >= shed_sheddable_at and index % 2 else (200, "light-1")
            found.append(sample(at, status, "sheddable", host=host))
            found.append(sample(at, 200, "standard", slow_at_end if stage == 3 else 0.2))
    return found


def test_stages_count_each_class_and_tell_modelguards_429_from_a_servers() -> None:
    samples = [*run(2), sample(5, 429, "standard", host="primary-2"), sample(6, 503, "standard")]
    found = stages(samples, START, 40, [30, 60, 90, 120])
    assert [stage.rate for stage in found] == [30, 60, 90, 120]
    first, third = found[0].classes, found[2].classes
    assert first["standard"].refused == 1 and first["standard"].failed == 1 and first["standard"].requests == 102
    assert first["sheddable"].shed == 0 and third["sheddable"].shed == 50
    assert third["sheddable"].success == 0.5
    assert "| 3 | 90 | sheddable | 100 | 50.0% | 50 | 0 | 0 | 0 |" in table(found)
    figures = summary(found)
    assert figures["sheddable_first_shed_stage"] == 3 and figures["sheddable_shed"] == 100


def test_expectations_hold_for_a_good_run_and_fail_for_each_miss() -> None:
    assert all(expectations(stages(run(2), START, 40, [1, 2, 3, 4])).values())
    critical_lost = expectations(stages(run(2, critical_status=503), START, 40, [1, 2, 3, 4]))
    assert not critical_lost["critical requests >= 99% successful"]  # 2 of 100 failed a stage: 98%
    never_shed = expectations(stages(run(9), START, 40, [1, 2, 3, 4]))
    assert not never_shed["sheddable requests are refused before standard ones"]
    slow = expectations(stages(run(2, slow_at_end=0.9), START, 40, [1, 2, 3, 4]))
    assert not slow["p99 of served requests within 2x the unloaded stage's"]

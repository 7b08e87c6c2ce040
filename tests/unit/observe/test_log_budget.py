"""LogBudget: a burst, then a trickle, and a count of what was left out."""

from __future__ import annotations

from ext_proc.core.clock import ManualClock
from ext_proc.observe.log_budget import LogBudget


def test_a_burst_then_one_line_per_interval_with_the_count_left_out() -> None:
    clock = ManualClock()
    budget = LogBudget(rate=1.0, burst=3, clock=clock)
    assert [budget.take() for _ in range(3)] == [0, 0, 0]
    assert [budget.take() for _ in range(100)] == [None] * 100
    clock.advance(0.5)
    assert budget.take() is None
    clock.advance(0.5)
    assert budget.take() == 101
    assert budget.take() is None


def test_the_budget_refills_only_up_to_the_burst() -> None:
    clock = ManualClock()
    budget = LogBudget(rate=10.0, burst=2, clock=clock)
    clock.advance(3600)
    assert [budget.take() for _ in range(3)] == [0, 0, None]

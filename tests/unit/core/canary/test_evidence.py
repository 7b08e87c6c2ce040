"""Judgement on a fake clock with seeded outcomes: false aborts, detection speed, latency-only
regressions, min_calls and max_harm. Stable and canary calls interleave as at 200 req/s."""

from __future__ import annotations

import random
import statistics
from dataclasses import replace

from ext_proc.core.canary.evidence import FAILURE_RATE, FAILURE_RATE_INCREASE, HARM, LATENCY, Evidence
from ext_proc.policy import Guardrails

RATE = 200.0
DEFAULTS = Guardrails()


class Trial:
    def __init__(self, seed: int, guardrails: Guardrails = DEFAULTS) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.evidence = Evidence(guardrails, self.now)

    def latency(self, scale: float = 1.0) -> float:
        return self.rng.lognormvariate(-3.9, 0.25) * scale  # about 20 ms, p95 about 30 ms

    def run(
        self,
        canary_rate: float,
        stable_rate: float = 0.01,
        slower: float = 1.0,
        weight: float = 0.1,
        calls: int = 10_000,
    ) -> str | None:
        """Until ``calls`` canary calls are judged or a guardrail breaks: the one that broke."""
        evidence = self.evidence
        while evidence.canary.calls < calls:
            self.now += 1 / RATE
            if self.rng.random() < weight:
                broken = evidence.canary_outcome(self.rng.random() < canary_rate, self.latency(slower), self.now)
                if broken is not None:
                    return broken
            else:
                evidence.stable_outcome(self.rng.random() < stable_rate, self.latency(), self.now)
        return None


def test_a_healthy_canary_is_not_aborted_in_10000_calls_in_any_of_20_seeds() -> None:
    for seed in range(20):
        trial = Trial(seed)
        assert trial.run(canary_rate=0.01) is None, seed
        assert trial.evidence.canary.calls == 10_000


def test_a_canary_failing_30_percent_against_1_percent_is_aborted_after_a_dozen_failures() -> None:
    failures = []
    for seed in range(100):
        trial = Trial(seed)
        assert trial.run(canary_rate=0.30) in (FAILURE_RATE, FAILURE_RATE_INCREASE)
        failures.append(trial.evidence.canary.failures)
    assert statistics.median(failures) <= 13
    assert sum(count <= 20 for count in failures) >= 97
    assert max(failures) <= 30


def test_a_canary_twice_as_slow_without_errors_is_aborted_on_latency_within_200_calls() -> None:
    for seed in range(20):
        trial = Trial(seed)
        assert trial.run(canary_rate=0.0, slower=2.0) == LATENCY
        assert trial.evidence.canary.calls <= 200, seed


def test_the_latency_test_holds_its_error_rate_on_sparse_heavy_tailed_traffic() -> None:
    """Canary and stable alike, few calls, heavy tails, the ratio at 1.0: the old rule (a fixed 5%
    against a p95 estimated from 20 calls) aborted such canaries; comparing both arms against the
    same reference must not, beyond its error budget."""
    aborted = 0
    for seed in range(200):
        rng = random.Random(seed)
        evidence = Evidence(Guardrails(max_latency_ratio=1.0, confidence=0.9), 0.0)
        for index in range(1500):
            latency = rng.lognormvariate(-3.0, 2.0)
            if rng.random() < 0.5:
                if evidence.canary_outcome(False, latency, index * 3.0) == LATENCY:
                    aborted += 1
                    break
            else:
                evidence.stable_outcome(False, latency, index * 3.0)
    assert aborted <= 200 * (0.1 / 4) + 6  # the latency test's share of alpha, plus sampling slack


def test_a_canary_slower_but_within_max_latency_ratio_is_not_aborted() -> None:
    for seed in range(5):
        assert Trial(seed).run(canary_rate=0.01, slower=1.3, calls=3000) is None


def test_no_verdict_below_min_calls_even_when_every_call_fails() -> None:
    trial = Trial(1, Guardrails(min_calls=50, max_harm=1000))
    trial.run(canary_rate=0.0, calls=0)  # stable only, for nothing: no canary calls
    for _ in range(49):
        trial.now += 0.01
        assert trial.evidence.canary_outcome(True, 0.02, trial.now) is None
    assert trial.evidence.canary_outcome(True, 0.02, trial.now) is not None


def _stable(evidence: Evidence, calls: int, every: int) -> None:
    for index in range(calls):
        evidence.stable_outcome(index % every == 0, 0.02, 1.0)
    evidence.refresh(1.0)


def test_max_harm_aborts_at_once_below_min_calls() -> None:
    evidence = Evidence(Guardrails(min_calls=1000, max_harm=5), 0.0)
    _stable(evidence, 20_000, 1000)  # stable fails 0.1%
    expected = evidence.stable_bound + 0.05
    verdicts = [evidence.canary_outcome(True, 0.02, 1.0) for _ in range(6)]
    assert verdicts[:5] == [None] * 5 and verdicts[5] == HARM
    assert abs(evidence.harm - 6 * (1 - expected)) < 1e-9


def test_harm_counts_failures_beyond_stable_bound_plus_the_allowed_increase_and_forgets_healthy_credit() -> None:
    evidence = Evidence(Guardrails(min_calls=10**6, max_harm=20), 0.0)
    _stable(evidence, 100_000, 100)  # stable fails 1%
    allowed = evidence.stable_bound + 0.05
    for _ in range(20_000):  # a long healthy run: no credit is banked (a CUSUM floors at 0)
        evidence.canary_outcome(False, 0.02, 1.0)
    assert evidence.harm == 0.0
    calls = 0
    while evidence.canary_outcome(calls % 4 == 0, 0.02, 1.0) != HARM:  # then 25% failures
        calls += 1
    assert calls < 20 / (0.25 - allowed) * 1.5


def test_harm_never_fires_while_stable_has_no_calls_as_when_the_canary_has_every_key() -> None:
    evidence = Evidence(Guardrails(max_harm=5), 0.0)
    verdicts = [evidence.canary_outcome(index % 14 == 0, 0.02, 1.0) for index in range(2000)]  # 7%
    assert HARM not in verdicts and evidence.harm == 0.0


def test_a_new_confidence_resizes_the_boundaries_and_keeps_the_evidence() -> None:
    trial = Trial(3)
    trial.run(canary_rate=0.05, calls=200)
    wealth = trial.evidence.failures.log_wealth
    trial.evidence.reconfigure(replace(Guardrails(), confidence=0.9))
    assert trial.evidence.failures.log_wealth == wealth
    assert trial.evidence.failures.boundary < Evidence(Guardrails(), 0.0).failures.boundary


def test_the_figures_show_both_arms_and_every_test_with_its_boundary() -> None:
    trial = Trial(4)
    trial.run(canary_rate=0.01, calls=300)
    figures = trial.evidence.figures()
    arms, tests = figures["arms"], figures["tests"]
    assert isinstance(arms, dict) and isinstance(tests, dict)
    assert arms["canary"]["calls"] == 300 and arms["stable"]["calls"] > 2000
    assert set(tests) == {"failures", LATENCY, HARM}
    assert tests["failures"]["boundary"] == 1 / ((1 - 0.99) / 2)
    assert tests["failures"]["null"] <= 0.10


def _moving(seed: int, profile: float, slower: float, hours: float, rate: float = 20.0) -> str | None:
    """Both arms' latencies follow ``profile``(t) x noise; the canary's times ``slower``."""
    rng = random.Random(seed)
    evidence = Evidence(Guardrails(), 0.0)
    now = 0.0
    while now < hours * 3600:
        now += rng.expovariate(rate)
        level = 0.1 * (profile if 600 <= now < 1200 else 1.0)
        latency = level * rng.lognormvariate(0.0, 0.5)
        if rng.random() < 0.1:
            verdict = evidence.canary_outcome(False, latency * slower, now)
            if verdict is not None:
                return verdict
        else:
            evidence.stable_outcome(False, latency, now)
    return None


def test_a_load_peak_that_slows_both_arms_alike_aborts_nothing() -> None:
    assert [_moving(seed, profile=3.0, slower=1.0, hours=0.5) for seed in range(10)] == [None] * 10


def test_a_slow_canary_is_caught_on_sparse_traffic_and_during_a_peak() -> None:
    assert _moving(1, profile=1.0, slower=10.0, hours=2.0, rate=0.5) == LATENCY
    assert _moving(2, profile=3.0, slower=3.0, hours=0.5) == LATENCY


def test_harm_does_not_walk_a_canary_as_good_as_stable_into_an_abort_even_without_an_allowed_increase() -> None:
    for seed in range(10):
        rng = random.Random(seed)
        evidence = Evidence(Guardrails(max_failure_rate=0.5, max_failure_rate_increase=0.0, min_calls=10**6), 0.0)
        for index in range(20_000):
            evidence.stable_outcome(rng.random() < 0.2, 0.02, index * 0.01)
            if rng.random() < 0.5:
                assert evidence.canary_outcome(rng.random() < 0.2, 0.02, index * 0.01) is None, seed

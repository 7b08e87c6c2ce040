"""The load generator's schedule (a ramp of stages) and criticality mix."""

from __future__ import annotations

import io

import pytest

from ext_proc.demo.loadgen import LoadGenerator, parse_mix, send_times


def test_a_ramp_sends_each_stage_at_its_rate() -> None:
    times = send_times([10, 20], 2.0)
    first, second = [t for t in times if t < 1.0], [t for t in times if t >= 1.0]
    assert len(first) == 10 and len(second) == 20
    assert second[0] == 1.0 and second[1] == pytest.approx(1.05)
    assert times == sorted(times)


def test_a_single_rate_is_one_stage() -> None:
    assert send_times([100], 0.05) == [0.0, 0.01, 0.02, 0.03, 0.04]


def test_the_mix_is_read_and_mistakes_are_named() -> None:
    assert parse_mix("critical=0.2,standard=0.5,sheddable=0.3") == {
        "critical": 0.2,
        "standard": 0.5,
        "sheddable": 0.3,
    }
    for bad in ("urgent=1", "critical", "critical=-1", "critical=nan", "critical=0,standard=0", "critical=inf"):
        with pytest.raises(ValueError):
            parse_mix(bad)


def test_requests_carry_their_criticality_in_the_drawn_shares() -> None:
    mix = {"critical": 0.2, "standard": 0.5, "sheddable": 0.3}
    generator = LoadGenerator("http://127.0.0.1:1", 100, 1, io.StringIO(), users=0, mix=mix, seed=3)
    drawn = [generator._headers() for _ in range(10_000)]
    counts = {name: sum(1 for h in drawn if h == {"x-request-criticality": name}) for name in mix}
    assert sum(counts.values()) == 10_000
    for name, share in mix.items():
        assert abs(counts[name] / 10_000 - share) < 0.02, counts
    plain = LoadGenerator("http://127.0.0.1:1", 100, 1, io.StringIO(), users=0)
    assert plain._headers() is None

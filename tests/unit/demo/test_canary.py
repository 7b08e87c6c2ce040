"""The demo's canary scene: arms per request, the ``canary_changed`` log line, and the figures,
timeline, marks and chart built from them, from synthetic runs whose answers are known."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from ext_proc.demo import canary, chart, report
from ext_proc.demo.canary import CanaryChange
from ext_proc.demo.loadgen import USER_HEADER, LoadGenerator, Sample, read_samples
from ext_proc.demo.logs import read_canary_changes, read_transitions
from ext_proc.demo.report import render_summary

START = 1_000_000.0
ABORT_AT = 4.99


def keyed(t: float, arm: str, status: int = 200) -> Sample:
    return Sample(START + t, 0.2, status, "primary", False, "h", "primary", None, arm)


def canary_run(after_abort: str = "stable", failures: int = 3) -> list[Sample]:
    """10 s at 20 req/s: every tenth request on the canary arm until the abort at 5 s, the first
    ``failures`` of them failing; after it, the canary's requests get ``after_abort``."""
    samples = []
    on_canary = 0
    for index in range(200):
        t = index / 20
        if index % 10 == 0:
            arm = "canary" if t < ABORT_AT else after_abort
            failed = arm == "canary" and on_canary < failures
            on_canary += arm == "canary"
            samples.append(keyed(t, arm, 503 if failed else 200))
        else:
            samples.append(keyed(t, "stable"))
    return samples


ABORT = CanaryChange(
    START + ABORT_AT,
    "recommender",
    "recommender-resnet50-v2",
    "active",
    "aborted",
    0.1,
    0.0,
    "guardrail failure_rate broken",
    "modelguard",
    judged_calls=10,
    judged_failures=3,
)


def test_the_figures_count_the_canary_arm_until_and_after_the_abort() -> None:
    summary = canary.summarize(canary_run(), [ABORT], "recommender")
    assert summary.aborted and summary.route == "recommender-resnet50-v2"
    assert summary.calls == 10 and summary.calls_before_abort == 10
    assert summary.failed_before_abort == 3
    assert summary.share_before_abort == 0.1
    assert summary.first_call_to_abort_s == ABORT_AT  # the first canary call was at 0 s
    assert summary.canary_after_abort == 0 and summary.stable_after_abort == 100
    assert summary.judged_calls == 10 and summary.judged_failures == 3
    assert all(canary.expectations(summary).values())
    text = "\n".join(canary.render(summary))
    assert "10 calls (10% of requests until the abort), 3 failed before the abort" in text
    assert "aborted 4.99 s (guardrail failure_rate broken, by modelguard" in text
    assert "0 requests on the canary arm" in text


def test_a_canary_request_after_the_abort_fails_the_run() -> None:
    summary = canary.summarize(canary_run(after_abort="canary"), [ABORT], "recommender")
    assert summary.canary_after_abort == 10
    assert canary.expectations(summary)["no request on the canary arm after the abort"] is False


def test_a_request_in_the_logs_last_millisecond_is_not_after_the_abort() -> None:
    """The log cuts the abort's time to the millisecond: a canary request sent less than 1 ms after
    the logged time may have been decided before the abort itself."""
    samples = [*canary_run(), keyed(ABORT_AT + 0.0005, "canary"), keyed(ABORT_AT + 0.002, "stable")]
    summary = canary.summarize(samples, [ABORT], "recommender")
    assert summary.canary_after_abort == 0 and summary.stable_after_abort == 101
    late = canary.summarize([*samples, keyed(ABORT_AT + 0.0015, "canary")], [ABORT], "recommender")
    assert late.canary_after_abort == 1


def test_too_many_failures_before_the_abort_fail_the_run() -> None:
    summary = canary.summarize(canary_run(failures=10), [ABORT], "recommender")
    assert summary.failed_before_abort == 10
    assert canary.expectations(summary)["<= 20 client-visible canary failures before the abort"] is True
    many = [*canary_run(), *(keyed(4 + i / 100, "canary", 503) for i in range(21))]
    summary = canary.summarize(many, [ABORT], "recommender")
    assert summary.failed_before_abort == 24
    assert canary.expectations(summary)["<= 20 client-visible canary failures before the abort"] is False


def test_a_canary_never_aborted_fails_every_canary_expectation() -> None:
    other_model = CanaryChange(START + 1, "ranker", "ranker-v2", "active", "aborted", 0.1, 0.0, "x", "y")
    summary = canary.summarize(canary_run(after_abort="canary"), [other_model], "recommender")
    assert not summary.aborted and summary.first_call_to_abort_s is None
    assert summary.calls == 20 and summary.failed_before_abort == 3  # the whole run is "before"
    assert not any(canary.expectations(summary).values())
    assert canary.render(summary) == ["canary: 20 calls, NOT aborted"]


def test_the_canary_changed_line_is_read_with_its_time_cause_and_evidence(tmp_path: Path) -> None:
    log = tmp_path / "modelguard.log"
    entry = {
        "ts": "2026-11-21T05:55:02.134Z",
        "event": "canary_changed",
        "model": "recommender",
        "route": "recommender-resnet50-v2",
        "from_state": "active",
        "to_state": "aborted",
        "from_weight": 0.1,
        "to_weight": 0.0,
        "cause": "guardrail failure_rate broken",
        "caller": "modelguard",
        "evidence": {"arms": {"canary": {"calls": 29, "failures": 10}, "stable": {"calls": 327, "failures": 0}}},
    }
    broken = {**entry, "ts": "not a time"}
    transition = {"ts": entry["ts"], "event": "breaker_transition", "model": "recommender", "tier": "primary"}
    lines = ['{"event": "serving"}', "not json", json.dumps(broken), json.dumps(transition), json.dumps(entry)]
    log.write_text("\n".join(lines) + "\n")
    (change,) = read_canary_changes(log)
    assert abs(change.t - 1795240502.134) < 1e-6
    assert (change.from_state, change.to_state, change.from_weight, change.to_weight) == ("active", "aborted", 0.1, 0.0)
    assert change.cause == "guardrail failure_rate broken" and change.caller == "modelguard"
    assert (change.judged_calls, change.judged_failures) == (29, 10)
    assert read_transitions(log) == []  # that transition lacks from/to state and cause: skipped
    assert read_canary_changes(tmp_path / "absent.log") == []


def test_the_timeline_has_the_arms_and_the_canary_state_each_second() -> None:
    samples = canary_run()
    rows = report.timeline(
        samples, START, START + 10, [], [], "recommender", "primary", True, [ABORT], canary_start="active"
    )
    assert rows[0].arms == {"canary": 2, "stable": 18} and rows[0].canary_failed == 2
    assert rows[1].canary_failed == 1 and rows[2].canary_failed == 0
    assert rows[3].canary == "active" and rows[4].canary == "aborted"  # the abort at 4.99 s, in second 4
    assert rows[6].arms == {"stable": 20} and rows[6].canary == "aborted"
    text = report.table(rows, ["primary", "light"])
    assert text.splitlines()[0].endswith("| breaker | ejected | canary arm | canary errors | canary |")
    assert "| 0 | 20 | 90% | 0% | 10% | 2 | 200 | 200 | closed | 0 | 2 | 2 | active |" in text
    assert text.splitlines()[7].endswith("| 0 | 0 | aborted |")
    plain = report.timeline(samples, START, START + 10, [], [], "recommender", "primary", True)
    assert plain[4].canary == "" and "canary" not in report.table(plain, ["primary"]).splitlines()[0]


def test_the_marks_name_the_abort_and_its_cause_among_the_steps() -> None:
    events = [report.Event(START, "canary_fault", "bad v2"), report.Event(START + 7, "single_host_fault", "host")]
    text = report.marks(events, [ABORT], START)
    assert text.splitlines() == [
        "- t=  0.0 s  bad v2",
        "- t=  5.0 s  canary active -> aborted (10% -> 0%): guardrail failure_rate broken, by modelguard",
        "- t=  7.0 s  host",
    ]


def test_the_summary_carries_the_canary_only_when_there_is_one() -> None:
    samples = canary_run()

    def summarize(changes: list[CanaryChange] | None) -> report.Summary:
        return report.summarize(
            samples, [], [], "recommender", "primary", "light", True, START + 10, canary_changes=changes
        )

    with_canary = summarize([ABORT])
    assert with_canary.canary is not None and with_canary.canary.failed_before_abort == 3
    assert with_canary.expectations["the bad v2 canary is aborted"] is True
    assert "canary first call -> aborted 4.99 s" in render_summary(with_canary)
    without = summarize(None)
    assert without.canary is None and "the bad v2 canary is aborted" not in without.expectations
    assert "canary" not in render_summary(without)


def test_canary_failures_are_not_counted_against_the_bad_host() -> None:
    """The host fault's figure is what the bad primary host cost; a canary still running then
    fails on its own account (and is counted in the canary's figures)."""
    events = [report.Event(START + 2, "single_host_fault", "host"), report.Event(START + 9, "whole_model_fault", "m")]
    samples = [*canary_run(failures=10), keyed(3.0, "stable", 503)]  # canary failures up to 4.5 s
    summary = report.summarize(samples, events, [], "recommender", "primary", "light", True, START + 10)
    assert summary.single_host_fault_failed == 1


def test_the_chart_draws_the_arms_band(tmp_path: Path) -> None:
    samples = canary_run()
    rows = report.timeline(
        samples, START, START + 10, [], [], "recommender", "primary", True, [ABORT], canary_start="active"
    )
    events = [report.Event(START, "canary_fault", "bad v2"), report.Event(START + 1, "single_host_fault", "host")]
    chart.draw(tmp_path / "c.png", rows, events, START, ["primary", "light"], "demo", [ABORT])
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_close_event_labels_take_turns_on_two_lines() -> None:
    assert chart.label_lines([0.0, 6.0, 14.0, 26.0], 40.0) == [0, 1, 0, 0]
    assert chart.label_lines([0.0, 12.0, 28.0, 52.0], 80.0) == [0, 1, 0, 0]
    assert chart.label_lines([0.0, 30.0], 40.0) == [0, 0]
    assert chart.label_lines([], 40.0) == []


def test_samples_without_an_arm_read_as_on_no_arm(tmp_path: Path) -> None:
    """A samples file written before arms were recorded still reads."""
    path = tmp_path / "old.jsonl"
    old = {"t": 1.0, "latency": 0.1, "status": 200, "tier": "primary", "degraded": False}
    path.write_text(json.dumps({**old, "host": "h", "variant": "primary", "error": None}) + "\n")
    (found,) = read_samples(path)
    assert found.arm == ""


def test_the_load_sends_user_ids_and_records_each_answers_arm() -> None:
    """Against a stand-in for Envoy on a free 127.0.0.1 port that answers users 0-9 on the canary
    arm: each request names one user of the population, and the arm of its answer is recorded."""
    seen: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        user = request.headers.get(USER_HEADER, "")
        seen.append(user)
        arm = "canary" if user in {f"user-{i}" for i in range(10)} else "stable"
        return web.Response(status=503 if arm == "canary" else 200, headers={"x-modelguard-arm": arm})

    async def run(users: int) -> tuple[list[Sample], list[dict[str, Any]]]:
        app = web.Application()
        app.router.add_post("/infer", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        out, progress = io.StringIO(), io.StringIO()
        try:
            load = LoadGenerator(f"http://127.0.0.1:{port}/infer", 200, 0.5, out, 5.0, progress=progress, users=users)
            await asyncio.wait_for(load.run(), 20)
        finally:
            await runner.cleanup()
        samples = [Sample(**json.loads(line)) for line in out.getvalue().splitlines()]
        seconds = [json.loads(line) for line in progress.getvalue().splitlines()]
        return samples, seconds

    samples, seconds = asyncio.run(run(users=20))
    assert len(samples) == len(seen) == 100
    assert set(seen) <= {f"user-{i}" for i in range(20)} and len(set(seen)) > 10  # drawn, not one user
    canary_users = sum(user in {f"user-{i}" for i in range(10)} for user in seen)
    assert sum(s.arm == "canary" for s in samples) == canary_users > 0
    assert all(s.failed for s in samples if s.arm == "canary")
    assert sum(second["arms"].get("canary", 0) for second in seconds) == canary_users
    assert sum(second["canary_failed"] for second in seconds) == canary_users

    seen.clear()
    samples, _ = asyncio.run(run(users=0))
    assert seen == [""] * 100 and {s.arm for s in samples} == {"stable"}

"""The end of a demo run: its samples and logs read back into the timeline, the JSON report, the
overload scene's stages and the chart, and the figures printed (demo/runner.py runs the stack)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from ext_proc.demo import chart, overload_report, report
from ext_proc.demo.loadgen import read_samples
from ext_proc.demo.logs import read_canary_changes, read_transitions
from ext_proc.demo.scenario import MODEL
from ext_proc.processes import say

if TYPE_CHECKING:
    from ext_proc.demo.runner import Demo


def write(demo: Demo, start: float, end: float, tiers: list[str]) -> int:
    """Read the run's samples and logs back, write the timeline, the JSON report, the stages and the
    chart, print the figures; 0 when the scenario's expectations held."""
    samples = read_samples(demo.out / "samples.jsonl")
    log = demo.out / "modelguard.log"
    transitions = read_transitions(log) if demo.options.with_modelguard else []
    changes = [c for c in read_canary_changes(log) if c.model == MODEL] if demo.has_canary else []
    # Before its first change the canary was as the first change found it; with none, as polled.
    first_state = changes[0].from_state if changes else demo.canary_state or "active"
    protected = demo.options.with_modelguard
    rows = report.timeline(
        samples,
        start,
        end,
        transitions,
        demo.polls,
        MODEL,
        tiers[0],
        protected,
        canary_changes=changes,
        canary_start=first_state if demo.has_canary else "",
    )
    summary = report.summarize(
        samples,
        demo.events,
        transitions,
        MODEL,
        tiers[0],
        tiers[1],
        protected,
        end,
        canary_changes=changes if demo.has_canary else None,
        scenario=demo.options.scenario,
    )
    ramp: list[overload_report.StageFigures] = []
    if demo.load.ramp:
        rates = [stage * demo.options.rate for stage in demo.load.ramp]
        ramp = overload_report.stages(samples, start, demo.options.duration, rates)
        if protected:
            summary.expectations.update(overload_report.expectations(ramp))
        (demo.out / "stages.md").write_text(overload_report.table(ramp) + "\n", encoding="utf-8")
    order = tiers if protected else [f"{t} (unprotected)" for t in ("primary", "light")]
    text = report.table(rows, order)
    timeline_md = text + "\n\n" + report.marks(demo.events, changes, start) + "\n"
    (demo.out / "timeline.md").write_text(timeline_md, encoding="utf-8")
    report.write_json(
        demo.out / "report.json",
        summary,
        rows,
        [report.Event(e.t - start, e.kind, e.label) for e in demo.events],
        {
            "options": {
                "duration": demo.options.duration,
                "rate": demo.options.rate,
                "policy": str(demo.options.policy),
                "with_modelguard": protected,
                "scenario": demo.options.scenario,
            },
            "transitions": [{**asdict(t), "t": round(t.t - start, 3)} for t in transitions],
            "canary_changes": [{**asdict(c), "t": round(c.t - start, 3)} for c in changes],
            "outlier_detection": demo.outlier_stats,
            "stages": overload_report.to_json(ramp),
            "overload": overload_report.summary(ramp) if ramp else {},
        },
    )
    if demo.options.chart:
        title = "modelguard demo: recommender" + ("" if protected else " (WITHOUT modelguard)")
        if demo.options.scenario != "incident":
            title += f", scenario {demo.options.scenario}"
        chart.draw(demo.out / "timeline.png", rows, demo.events, start, order, title, changes)
    say("\n" + text + "\n")
    if ramp:
        say(overload_report.table(ramp) + "\n")
    say(report.render_summary(summary))
    if "ejections_enforced_total" in demo.outlier_stats:
        say(f"Envoy ejected a primary host {demo.outlier_stats['ejections_enforced_total']} times")
    say(
        f"report: {demo.out / 'report.json'}   chart: {demo.out / 'timeline.png'}   "
        f"timeline: {demo.out / 'timeline.md'}"
    )
    return 0 if summary.passed else 1

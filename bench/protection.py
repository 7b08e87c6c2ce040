"""Protection quality: one of the demo's scenarios at a fixed rate, side by side, for
  envoy       Envoy retries on another replica + outlier detection only (the ext_proc filter removed)
  admission   the same plus Envoy's admission_control filter (client-side throttling on success rate)
  modelguard  Envoy + modelguard (the reference config: a failed primary try's last retry goes to the
              light tier, and the failed tries reach modelguard through Envoy's access log)
and, named in --configs: envoy-fallback (envoy plus the retry on the light tier), modelguard-same-tier
(modelguard without it), modelguard-answers (neither it nor the failed-try log: answers judged alone),
modelguard-fallback-unlogged (the retry on the light tier without the log).

Scenarios (ext_proc/demo/scenario.py): `incident` (default, 80 s), `bad_host` (one primary host of
three bad, let back in by Envoy while still bad; 36 s), `slow_fault` (every primary call hangs 3 s,
then fails; 40 s) and `overload` (no fault: the load ramps from 0.5 to 2 x the primary's capacity,
critical, standard and sheddable requests; 60 s; compare `--configs envoy,adaptive,modelguard`).
`--repeat N` plays each config N times (what
happens only sometimes, e.g. a false trip, shows over repeats): the table gives, per config, the false
trips summed over every run and the number of runs with at least one, and the medians of the other
figures; the JSON keeps every run's figures.

Writes a Markdown table and a JSON file. Usage:
  python -m bench.protection [--rate 200] [--scenario incident|bad_host|slow_fault] [--duration S] [--repeat N]
                             [--out DIR] [--configs envoy,admission,modelguard,...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from ext_proc.demo import scenario
from ext_proc.demo.runner import DEFAULT_POLICY, DemoOptions, run_demo

EJECTIONS = "envoy_ejections"
"""A run's figure beside its summary: Envoy's ejections of a primary host (ejections_enforced_total)."""

ADMISSION_CONTROL: dict[str, Any] = {
    "name": "envoy.filters.http.admission_control",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.admission_control.v3.AdmissionControl",
        "enabled": {"default_value": True, "runtime_key": "admission_control.enabled"},
        "sampling_window": "2s",
        "aggression": {"default_value": 1.0, "runtime_key": "admission_control.aggression"},
        "sr_threshold": {"default_value": {"value": 95.0}, "runtime_key": "admission_control.sr_threshold"},
        "rps_threshold": {"default_value": 5, "runtime_key": "admission_control.rps_threshold"},
        "max_rejection_probability": {
            "default_value": {"value": 95.0},
            "runtime_key": "admission_control.max_rejection_probability",
        },
        "success_criteria": {"http_criteria": {"http_success_status": [{"start": 100, "end": 500}]}},
    },
}

ADAPTIVE_CONCURRENCY: dict[str, Any] = {
    "name": "envoy.filters.http.adaptive_concurrency",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.adaptive_concurrency.v3.AdaptiveConcurrency",
        "gradient_controller_config": {
            "sample_aggregate_percentile": {"value": 50},
            "concurrency_limit_params": {"concurrency_update_interval": "0.1s", "max_concurrency_limit": 1000},
            "min_rtt_calc_params": {
                "interval": "30s",
                "request_count": 50,
                "jitter": {"value": 10},
                "min_concurrency": 3,
                "buffer": {"value": 25},
            },
        },
        "enabled": {"default_value": True, "runtime_key": "adaptive_concurrency.enabled"},
    },
}
"""Envoy's own adaptive concurrency (gradient controller, its documented example's settings with a
30 s minRTT interval): one limit for the whole listener, 503 past it."""

CONFIGS: dict[str, DemoOptions] = {
    "envoy": DemoOptions(with_modelguard=False, next_tier_retries=False),
    "envoy-fallback": DemoOptions(with_modelguard=False),
    "admission": DemoOptions(with_modelguard=False, extra_http_filters=(ADMISSION_CONTROL,), next_tier_retries=False),
    "adaptive": DemoOptions(with_modelguard=False, extra_http_filters=(ADAPTIVE_CONCURRENCY,), next_tier_retries=False),
    "modelguard": DemoOptions(with_modelguard=True),
    "modelguard-same-tier": DemoOptions(with_modelguard=True, next_tier_retries=False),
    "modelguard-answers": DemoOptions(with_modelguard=True, next_tier_retries=False, try_log=False),
    "modelguard-fallback-unlogged": DemoOptions(with_modelguard=True, try_log=False),
}
"""``envoy``: retries on another replica and outlier detection, as Envoy alone usually runs;
``envoy-fallback``: the same plus the reference config's last retry on the light tier;
``admission``: ``envoy`` plus admission control; ``adaptive``: ``envoy`` plus Envoy's
adaptive_concurrency filter (the overload scenario's peer); ``modelguard``: the reference config as is;
``modelguard-same-tier``: modelguard without the retry on the light tier (what the fallback saves
clients); ``modelguard-answers``: neither the fallback nor the failed-try log, modelguard judging the
answers alone (how it was before per-try outcomes); ``modelguard-fallback-unlogged``: the fallback
without the log (what the log is for: the retries hide the failures from the breaker)."""
DEFAULT_CONFIGS = ("envoy", "admission", "modelguard")

COLUMNS: dict[str, list[tuple[str, str]]] = {
    "incident": [
        ("client-visible failures in the whole-model fault", "whole_fault_failed"),
        ("of requests in the fault", "whole_fault_requests"),
        ("p99 during the fault (ms)", "whole_fault_p99_ms"),
        ("fault -> breaker open (s)", "fault_to_breaker_open_s"),
        ("fault -> first light answer (s)", "fault_to_first_light_s"),
        ("clear -> first primary answer (s)", "clear_to_first_primary_s"),
        ("false trips (one bad host)", "false_trips"),
        ("client failures, one bad host", "single_host_fault_failed"),
    ],
    "bad_host": [
        ("false trips (primary breaker opened)", "false_trips"),
        ("client failures, one bad host (canary arm left out)", "single_host_fault_failed"),
        ("client-visible failures, whole run", "failed"),
        ("requests", "requests"),
        ("primary share, last 10 s", "primary_share_at_end"),
        ("Envoy ejections of the bad host", EJECTIONS),
    ],
    "overload": [
        ("critical requests successful", "critical_success"),
        ("standard requests successful", "standard_success"),
        ("sheddable requests successful", "sheddable_success"),
        ("critical successful at 2x capacity", "critical_last_stage_success"),
        ("sheddable shed by modelguard (429)", "sheddable_shed"),
        ("standard shed by modelguard (429)", "standard_shed"),
        ("first stage with sheddable shed", "sheddable_first_shed_stage"),
        ("first stage with standard degraded", "standard_first_degraded_stage"),
        ("p99 served, unloaded stage (ms)", "served_p99_unloaded_ms"),
        ("p99 served, worst stage (ms)", "served_p99_max_ms"),
        ("client-visible failures, whole run", "failed"),
        ("requests", "requests"),
    ],
    "slow_fault": [
        ("client-visible failures in the fault", "whole_fault_failed"),
        ("of requests in the fault", "whole_fault_requests"),
        ("p99 during the fault (ms)", "whole_fault_p99_ms"),
        ("fault -> breaker open (s)", "fault_to_breaker_open_s"),
        ("fault -> first light answer (s)", "fault_to_first_light_s"),
        ("clear -> first primary answer (s)", "clear_to_first_primary_s"),
    ],
}
"""Per scenario, the table's rows: (label, the run's key)."""
SUMMED = "false_trips"
LET_BACK_IN = "runs_let_back_in"
"""The runs where Envoy ejected a primary host at least twice: in ``bad_host``, let back in while still bad."""
"""Over repeats, summed (with the count of runs where it was not 0); every other figure: the median."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=None, help="req/s (200; overload: the primary's capacity)")
    parser.add_argument("--scenario", choices=list(scenario.SCENARIOS), default="incident")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of load (the scenario's own: incident 80, bad_host 36, slow_fault 40, overload 60)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per config (1)")
    parser.add_argument(
        "--out", type=Path, default=Path("out") / "protection", help="output folder (./out/protection, gitignored)"
    )
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help=f"of {', '.join(CONFIGS)}")
    args = parser.parse_args(argv)
    duration = scenario.DEFAULT_DURATION[args.scenario] if args.duration is None else args.duration
    rate = scenario.DEFAULT_RATE.get(args.scenario, 200.0) if args.rate is None else args.rate
    names = args.configs.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or args.repeat < 1:
        parser.error(f"unknown config {', '.join(unknown)}" if unknown else "--repeat must be at least 1")
    try:
        scenario.steps(args.scenario, duration)
    except ValueError as exc:
        parser.error(str(exc))
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        base = CONFIGS[name]
        runs: list[dict[str, Any]] = []
        for index in range(1, args.repeat + 1):
            out = args.out / name if args.repeat == 1 else args.out / name / f"run-{index}"
            options = DemoOptions(
                duration=duration,
                rate=rate,
                policy=DEFAULT_POLICY,
                out=out,
                with_modelguard=base.with_modelguard,
                extra_http_filters=base.extra_http_filters,
                next_tier_retries=base.next_tier_retries,
                try_log=base.try_log,
                chart=True,
                scenario=args.scenario,
            )
            code = run_demo(options)
            if code == 130:  # interrupted: every process it started is already stopped
                return 130
            report = json.loads((out / "report.json").read_text())
            ejections = report.get("outlier_detection", {}).get("ejections_enforced_total")
            runs.append({"exit": code, **report["summary"], EJECTIONS: ejections, **report.get("overload", {})})
            if args.repeat > 1:
                trips = runs[-1].get(SUMMED)
                print(f"protection: {name} run {index}/{args.repeat}: false trips {trips}, exit {code}", flush=True)
        results[name] = runs[0] if args.repeat == 1 else aggregate(runs)
    table = render(results, args.scenario)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "protection.md").write_text(table + "\n")
    document = {
        "rate": rate,
        "scenario": args.scenario,
        "duration": duration,
        "repeat": args.repeat,
        "results": results,
    }
    (args.out / "protection.json").write_text(json.dumps(document, indent=2))
    return 0


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One config's figures over its repeats: ``false_trips`` summed, ``runs_with_trips`` the runs
    where it was not 0, ``failed_runs`` the runs that exited non-zero (an expectation failed),
    ``runs_let_back_in`` the runs where Envoy ejected a primary host twice or more, every
    other numeric summary figure the median of the runs that have it (left out when none has it: e.g.
    no breaker opening at all); ``runs`` keeps each run's own figures."""
    keys = [k for k in runs[0] if k not in ("exit", SUMMED) and any(_number(r.get(k)) for r in runs)]
    medians: dict[str, Any] = {}
    for key in keys:
        medians[key] = statistics.median(r[key] for r in runs if _number(r.get(key)))
    return {
        "repeat": len(runs),
        SUMMED: sum(int(r.get(SUMMED) or 0) for r in runs),
        "runs_with_trips": sum(1 for r in runs if r.get(SUMMED)),
        "failed_runs": sum(1 for r in runs if r.get("exit")),
        LET_BACK_IN: sum(1 for r in runs if let_back_in(r)),
        **medians,
        "runs": runs,
    }


def let_back_in(run: dict[str, Any]) -> bool:
    return int(run.get(EJECTIONS) or 0) >= 2


def render(results: dict[str, dict[str, Any]], scenario_name: str = "incident") -> str:
    """The Markdown table: a column per config. A config run more than once (``aggregate``'s figures)
    gets its false trips as a sum, the runs with one, and the medians of the rest."""
    names = list(results)
    repeats = {n: int(results[n].get("repeat", 1)) for n in names}
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    many = any(r > 1 for r in repeats.values())
    for label, key in COLUMNS[scenario_name]:
        cells = ["-" if results[n].get(key) is None else f"{results[n][key]:g}" for n in names]
        suffix = ", sum over the runs" if key == SUMMED else ", median"
        lines.append(f"| {label}{suffix if many else ''} | " + " | ".join(cells) + " |")
        if key == SUMMED and many:
            cells = [
                f"{results[n].get('runs_with_trips', int(bool(results[n].get(SUMMED))))} of {repeats[n]}" for n in names
            ]
            lines.append("| runs with a false trip | " + " | ".join(cells) + " |")
        if key == EJECTIONS:
            cells = [f"{results[n].get(LET_BACK_IN, int(let_back_in(results[n])))} of {repeats[n]}" for n in names]
            lines.append("| runs where Envoy let it back in while bad (2+ ejections) | " + " | ".join(cells) + " |")
    if many:
        cells = [f"{results[n].get('failed_runs', int(bool(results[n].get('exit'))))} of {repeats[n]}" for n in names]
        lines.append("| runs with an expectation failed | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

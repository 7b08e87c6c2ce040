"""Protection quality: the demo's incident at a fixed rate, side by side, for
  envoy       Envoy retries + outlier detection only (the ext_proc filter removed)
  admission   the same plus Envoy's admission_control filter (client-side throttling on success rate)
  modelguard  Envoy + modelguard (the reference config)

Writes a Markdown table and a JSON file. Usage:
  python -m bench.protection [--rate 200] [--duration 80] [--out DIR] [--configs envoy,admission,modelguard]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ext_proc.demo.runner import DEFAULT_POLICY, DemoOptions, run_demo

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

CONFIGS: dict[str, DemoOptions] = {
    "envoy": DemoOptions(with_modelguard=False),
    "admission": DemoOptions(with_modelguard=False, extra_http_filters=(ADMISSION_CONTROL,)),
    "modelguard": DemoOptions(with_modelguard=True),
}

COLUMNS = [
    ("client-visible failures in the whole-model fault", "whole_fault_failed"),
    ("of requests in the fault", "whole_fault_requests"),
    ("p99 during the fault (ms)", "whole_fault_p99_ms"),
    ("fault -> breaker open (s)", "fault_to_breaker_open_s"),
    ("fault -> first light answer (s)", "fault_to_first_light_s"),
    ("clear -> first primary answer (s)", "clear_to_first_primary_s"),
    ("false trips (one bad host)", "false_trips"),
    ("client failures, one bad host", "single_host_fault_failed"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=80.0)
    parser.add_argument(
        "--out", type=Path, default=Path("out") / "protection", help="output folder (./out/protection, gitignored)"
    )
    parser.add_argument("--configs", default=",".join(CONFIGS))
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    for name in args.configs.split(","):
        base = CONFIGS[name]
        options = DemoOptions(
            duration=args.duration,
            rate=args.rate,
            policy=DEFAULT_POLICY,
            out=args.out / name,
            with_modelguard=base.with_modelguard,
            extra_http_filters=base.extra_http_filters,
            chart=True,
        )
        code = run_demo(options)
        report = json.loads((args.out / name / "report.json").read_text())
        results[name] = {"exit": code, **report["summary"]}
    table = render(results)
    print(table)
    (args.out / "protection.md").write_text(table + "\n")
    (args.out / "protection.json").write_text(json.dumps({"rate": args.rate, "results": results}, indent=2))
    return 0


def render(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, key in COLUMNS:
        cells = ["-" if results[n].get(key) is None else f"{results[n][key]:g}" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

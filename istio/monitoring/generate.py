"""Writes the Grafana dashboard and the Prometheus alerts of modelguard on Istio from code.

    .venv/bin/python -m istio.monitoring.generate           # rewrites dashboard.json and prometheusrule.yaml
    .venv/bin/python -m istio.monitoring.generate --check   # exits 1 if either differs from what is written here

Run from the repository root: ``istio`` is a namespace package found there. The files are checked in, so
that kustomize and a reviewer read them without running Python; ``--check`` keeps them from drifting.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from istio.monitoring.alerts import rules_text
from istio.monitoring.dashboard import dashboard_text

HERE = Path(__file__).resolve().parent
DASHBOARD_FILE = "dashboard.json"
RULES_FILE = "prometheusrule.yaml"
COMMAND = ".venv/bin/python -m istio.monitoring.generate"
"""Written into both files, so that whoever opens one knows how to rewrite it."""


def render() -> dict[str, str]:
    """Every output file's name and text."""
    return {DASHBOARD_FILE: dashboard_text(COMMAND), RULES_FILE: rules_text(COMMAND)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if a file differs from what would be written")
    parser.add_argument("--output-dir", type=Path, default=HERE, help="where the files go (default: next to this)")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.output_dir / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)} (run {COMMAND})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

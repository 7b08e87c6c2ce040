"""What the monitoring tests share: the files istio/monitoring/ generates, every PromQL expression of
the dashboard and of the alerts, the metric names in them, and the samples of a Prometheus text
exposition as a Prometheus server stores them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "istio" / "monitoring"
DASHBOARD = MONITORING / "dashboard.json"
RULES = MONITORING / "prometheusrule.yaml"

GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
"""Grafana's own interval variables, and a duration each stands for when a query is parsed."""

MODELGUARD_PREFIX = "modelguard_"
ENVOY_PREFIX = "envoy_"


def load_dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def load_rule() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return loaded


# --------------------------------------------------------------------------- the queries


@dataclass(frozen=True)
class Query:
    where: str
    """Which panel target, template variable or alert it is."""
    text: str
    """The expression as written in the file."""

    @property
    def promql(self) -> str:
        """The expression with Grafana's interval variables replaced by durations (the other
        variables only appear inside label values, where they parse as they are)."""
        found = self.text
        for variable, duration in GRAFANA_INTERVALS.items():
            found = found.replace(variable, duration)
        return found

    def parse(self) -> promql_parser.Expr:
        return promql_parser.parse(self.promql)


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too (rows included)."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panels(panel)


_LABEL_VALUES = re.compile(r"label_values\((?:(?P<selector>.+),\s*)?(?P<label>[A-Za-z_][A-Za-z0-9_]*)\)", re.S)


def label_values_selector(query: str) -> str | None:
    """The series selector of a ``label_values(SELECTOR, LABEL)`` variable query (Grafana's, not
    PromQL); None for ``label_values(LABEL)``. ValueError for anything else."""
    match = _LABEL_VALUES.fullmatch(query.strip())
    if match is None:
        raise ValueError(f"not a label_values() query: {query!r}")
    return match["selector"]


def dashboard_queries(dashboard: dict[str, Any]) -> list[Query]:
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            found.append(Query(f"panel {panel['id']} {panel['title']!r} target {target['refId']}", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        text = variable["query"] if isinstance(variable["query"], str) else variable["query"]["query"]
        selector = label_values_selector(text)
        if selector is not None:
            found.append(Query(f"variable {variable['name']}", selector))
    return found


def alert_rules(rule: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for group in rule["spec"]["groups"] for item in group["rules"]]


def alert_queries(rule: dict[str, Any]) -> list[Query]:
    return [Query(f"alert {item['alert']}", str(item["expr"])) for item in alert_rules(rule)]


def all_queries() -> list[Query]:
    return dashboard_queries(load_dashboard()) + alert_queries(load_rule())


def selectors(expr: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    """Every vector selector, those inside matrix selectors and subqueries too."""
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    promql_parser.walk(expr, visit)
    return found


def metric_names(expr: promql_parser.Expr) -> set[str]:
    names = set()
    for selector in selectors(expr):
        assert selector.name, f"a selector without a metric name: {selector}"
        names.add(selector.name)
    return names


def used_metric_names() -> set[str]:
    """Every metric name the checked-in dashboard and alerts read."""
    return {name for query in all_queries() for name in metric_names(query.parse())}


# --------------------------------------------------------------------------- expositions


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


_SAMPLE = re.compile(r"(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?")
_LABEL = re.compile(r'\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"\s*,?')


def samples(text: str) -> list[Sample]:
    """The samples of a Prometheus text exposition, named as written (a Prometheus server keeps
    Envoy's counters without a ``_total``; prometheus_client's parser would add one)."""
    found = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _SAMPLE.fullmatch(line.strip())
        assert match is not None, f"not a sample line: {line!r}"
        labels = {}
        rest = match["labels"] or ""
        while rest:
            label = _LABEL.match(rest)
            assert label is not None, f"bad labels in {line!r}"
            labels[label["name"]] = label["value"].replace(r"\"", '"').replace(r"\n", "\n").replace("\\\\", "\\")
            rest = rest[label.end() :]
        found.append(Sample(match["name"], labels, float(match["value"])))
    return found


def sample_names(text: str) -> set[str]:
    return {sample.name for sample in samples(text)}

"""istio/monitoring/: the Grafana dashboard and the PrometheusRule are what istio.monitoring.generate
writes, the rule is a valid prometheus-operator object, and every query parses and reads series the way
modelguard writes them (names, labels and label values, from modelguard's own metric sources)."""

from __future__ import annotations

import copy
import json
import random
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import promql_parser
import pytest

from ext_proc.core.canary.run import CanaryState
from ext_proc.core.clock import ManualClock
from ext_proc.core.forcing import ForceMode, ForceOrder
from ext_proc.core.guard import Guard
from ext_proc.core.registry import StateRegistry
from ext_proc.observe.core_metrics import STATE_NAMES, CoreMetrics
from ext_proc.policy import load_policy
from ext_proc.server.metrics import ServerStats
from istio.monitoring import generate, series
from tests.unit.istio.monitoring_queries import (
    DASHBOARD,
    ENVOY_PREFIX,
    MODELGUARD_PREFIX,
    ROOT,
    RULES,
    Query,
    alert_queries,
    alert_rules,
    all_queries,
    dashboard_queries,
    label_values_selector,
    load_dashboard,
    load_rule,
    metric_names,
    panels,
    samples,
    selectors,
    used_metric_names,
)
from tests.unit.istio.schemas import schema_problems

DEMO_POLICY = ROOT / "ext_proc" / "demo" / "policy.yaml"
"""A policy with a ladder and a canary: every family, label and label value modelguard writes."""
TARGET_LABELS = frozenset({"namespace", "pod", "job", "instance", "container", "service", "endpoint"})
"""Labels Prometheus (prometheus-operator's scrape configs) puts on every series of a target."""
ENVOY_LABELS = frozenset({"envoy_http_conn_manager_prefix", "http_conn_manager_prefix"})
"""The HTTP connection manager's stat prefix as a label: Envoy's default tag name, and Istio's."""
PANEL_TYPES = frozenset({"timeseries", "stat", "state-timeline"})
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
VARIABLES = ["datasource", "namespace", "model", "proxy_namespace"]
SEVERITIES = frozenset({"critical", "warning", "info"})


# --------------------------------------------------------------------------- what modelguard writes


def exposition() -> str:
    """Every modelguard family for the demo policy, written by modelguard's own sources, after failures
    that open a breaker, a forced state, a protocol error and with a policy hash set, so that every
    family has samples."""
    clock = ManualClock()
    guard = Guard(load_policy(DEMO_POLICY), StateRegistry(clock, random.Random(1)))
    for index in range(20):
        ticket = guard.decide(
            {":method": "POST", ":path": "/v2/models/recommender/infer", "x-user-id": f"user-{index}"}
        )
        clock.advance(0.01)
        guard.record(ticket, 503, None)
    guard.registry.force("recommender", "light", ForceOrder(ForceMode.FORCED_OPEN, "drill", "sre", 0.0))
    stats = ServerStats()
    stats.policy_sha256 = "0" * 64
    stats.errors.count("parse_error")
    return "".join(CoreMetrics(lambda: guard).pieces()) + "".join(stats.pieces())


class Exported:
    """Sample names, and each name's label names and values, of an exposition."""

    def __init__(self, text: str) -> None:
        found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for sample in samples(text):
            family = found[sample.name]
            for name, value in sample.labels.items():
                family[name].add(value)
        self.labels = {name: dict(labels) for name, labels in found.items()}
        self.families = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}

    def names(self) -> set[str]:
        return set(self.labels)

    def label_names(self, metric: str) -> set[str]:
        if metric.startswith(MODELGUARD_PREFIX):
            return set(self.labels.get(metric, {})) | TARGET_LABELS
        if metric.startswith(ENVOY_PREFIX):
            return set(ENVOY_LABELS | TARGET_LABELS)
        return set(TARGET_LABELS)


@pytest.fixture(scope="module")
def exported() -> Exported:
    return Exported(exposition())


# --------------------------------------------------------------------------- the generator


def test_the_checked_in_files_are_what_the_generator_writes() -> None:
    rendered = generate.render()
    assert sorted(rendered) == sorted([DASHBOARD.name, RULES.name])
    assert rendered[DASHBOARD.name] == DASHBOARD.read_text(encoding="utf-8")
    assert rendered[RULES.name] == RULES.read_text(encoding="utf-8")


def test_check_fails_on_missing_or_stale_files_and_passes_once_written(tmp_path: Path) -> None:
    assert generate.main(["--check", "--output-dir", str(tmp_path)]) == 1
    assert list(tmp_path.iterdir()) == [], "--check wrote something"
    assert generate.main(["--output-dir", str(tmp_path)]) == 0
    assert {p.name: p.read_text(encoding="utf-8") for p in tmp_path.iterdir()} == generate.render()
    assert generate.main(["--check", "--output-dir", str(tmp_path)]) == 0
    stale = tmp_path / RULES.name
    stale.write_text(stale.read_text(encoding="utf-8").replace("for: 10m", "for: 11m", 1), encoding="utf-8")
    assert generate.main(["--check", "--output-dir", str(tmp_path)]) == 1


def test_the_script_runs_on_its_own_and_finds_the_repository_current() -> None:
    done = subprocess.run(
        [sys.executable, "-m", generate.__name__, "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_the_dashboard_json_is_sorted_and_indented() -> None:
    text = DASHBOARD.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


# --------------------------------------------------------------------------- the PrometheusRule


def test_the_rule_file_says_it_is_generated_and_how() -> None:
    first = RULES.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# Generated by istio/monitoring/generate.py")
    assert "`.venv/bin/python -m istio.monitoring.generate`" in first


def test_the_rule_validates_against_the_prometheus_operator_model_with_no_unknown_field() -> None:
    rule = load_rule()
    assert schema_problems(rule) == []
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"] == {
        "name": "modelguard",
        "namespace": "modelguard",
        "labels": {"app.kubernetes.io/name": "modelguard"},
    }


def test_the_model_check_catches_unknown_fields_and_bad_values() -> None:
    rule = load_rule()
    misspelt = copy.deepcopy(rule)
    misspelt["spec"]["groups"][0]["rules"][0]["fro"] = misspelt["spec"]["groups"][0]["rules"][0].pop("for")
    assert schema_problems(misspelt) == ["PrometheusRule: unknown field .spec.groups[0].rules[0].fro"]
    bad = copy.deepcopy(rule)
    bad["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    assert schema_problems(bad)


def test_every_alert_is_labelled_and_annotated() -> None:
    rules = alert_rules(load_rule())
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), names
    for rule in rules:
        assert rule["alert"].startswith("Modelguard"), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, rule["alert"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        if "for" in rule:
            assert promql_parser.parse_duration(rule["for"]).total_seconds() > 0, rule["alert"]
        assert "$" not in rule["expr"], f"{rule['alert']}: a Grafana variable in an alert"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_runbook_points_at_a_section_of_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    anchors = {_slug(line.lstrip("#")) for line in readme.splitlines() if line.startswith("## ")}
    for rule in alert_rules(load_rule()):
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert path == "README.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no README section #{anchor}"


def _result_labels(expr: promql_parser.Expr) -> set[str] | None:
    """The labels every series of ``expr``'s result carries, when the expression says (None when it
    keeps whatever its selectors have)."""
    if isinstance(expr, promql_parser.ParenExpr):
        return _result_labels(expr.expr)
    if isinstance(expr, promql_parser.AggregateExpr):
        if expr.modifier is None:
            return set()
        if expr.modifier.type == promql_parser.AggModifierType.By:
            return set(expr.modifier.labels)
        return None
    if isinstance(expr, promql_parser.BinaryExpr):
        if isinstance(expr.rhs, promql_parser.NumberLiteral):
            return _result_labels(expr.lhs)
        if isinstance(expr.lhs, promql_parser.NumberLiteral):
            return _result_labels(expr.rhs)
        if str(expr.op) == "or":
            return None
        return _result_labels(expr.lhs)
    if isinstance(expr, promql_parser.Call) and expr.func.name == "absent":
        (selector,) = selectors(expr)
        return {m.name for m in selector.matchers.matchers if m.op == promql_parser.MatchOp.Equal}
    return None


def test_annotations_name_only_labels_the_alert_keeps() -> None:
    checked = 0
    for rule in alert_rules(load_rule()):
        kept = _result_labels(promql_parser.parse(rule["expr"]))
        named = set()
        for text in rule["annotations"].values():
            named |= set(re.findall(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)", text))
        if kept is not None:
            checked += 1
            assert named <= kept, f"{rule['alert']}: annotations name {sorted(named - kept)}, gone by {sorted(kept)}"
    assert checked >= 8


def test_the_result_labels_check_sees_a_dropped_label() -> None:
    assert _result_labels(promql_parser.parse("sum by (namespace) (rate(x[5m])) > 0")) == {"namespace"}
    assert _result_labels(promql_parser.parse("sum by (namespace, pod) (rate(x[5m])) / sum(y) > 1")) == {
        "namespace",
        "pod",
    }
    assert _result_labels(promql_parser.parse("x == 0")) is None


def _has_selector(queries: list[Query], metric: str, label: str | None = None, value: str | None = None) -> bool:
    for query in queries:
        for selector in selectors(query.parse()):
            if selector.name != metric:
                continue
            if label is None:
                return True
            for matcher in selector.matchers.matchers:
                if matcher.name == label and re.fullmatch(matcher.value, str(value)):
                    return True
    return False


@pytest.mark.parametrize(
    ("metric", "label", "value"),
    [
        ("modelguard_breaker_state", "state", "open"),
        ("modelguard_breaker_state", "state", "forced_open"),
        ("modelguard_canary_state", "state", "aborted"),
        ("modelguard_policy_reloads_total", "result", "error"),
        ("envoy_http_ext_proc_modelguard_failure_mode_allowed", None, None),
        ("envoy_http_ext_proc_modelguard_streams_failed", None, None),
        ("up", "job", "modelguard"),
    ],
)
def test_the_alerts_watch(metric: str, label: str | None, value: str | None) -> None:
    assert _has_selector(alert_queries(load_rule()), metric, label, value)


# --------------------------------------------------------------------------- every query


QUERIES = all_queries()


def test_queries_are_found_in_panels_variables_and_alerts() -> None:
    places = {query.where.split()[0] for query in QUERIES}
    assert places == {"panel", "variable", "alert"}
    assert len(QUERIES) >= 40


@pytest.mark.parametrize("query", QUERIES, ids=[query.where for query in QUERIES])
def test_every_query_parses(query: Query) -> None:
    expr = query.parse()
    assert metric_names(expr), f"{query.where} reads no metric"


def test_a_broken_query_does_not_parse() -> None:
    with pytest.raises(ValueError):
        Query("x", "sum by (model (rate(modelguard_requests_total[$__rate_interval]))").parse()


def test_label_values_queries_give_their_selector() -> None:
    assert label_values_selector('label_values(a{b=~"$c"}, d)') == 'a{b=~"$c"}'
    assert label_values_selector("label_values(d)") is None
    with pytest.raises(ValueError):
        label_values_selector("query_result(up)")


def test_every_metric_is_modelguards_envoys_ext_proc_stats_or_up() -> None:
    for name in used_metric_names():
        assert (
            name.startswith(MODELGUARD_PREFIX) or name.startswith("envoy_http_ext_proc_modelguard_") or name == "up"
        ), name


def test_every_modelguard_family_shows_on_the_dashboard(exported: Exported) -> None:
    used = {name for query in dashboard_queries(load_dashboard()) for name in metric_names(query.parse())}
    families = {family for family in exported.families if family.startswith(MODELGUARD_PREFIX)}
    assert len(families) >= 13
    missing = {f for f in families if not any(name == f or name.startswith(f + "_") for name in used)}
    assert missing == set()


def _simple_alternatives(pattern: str) -> list[str] | None:
    return pattern.split("|") if re.fullmatch(r"[A-Za-z0-9_@]+(\|[A-Za-z0-9_@]+)*", pattern) else None


@pytest.mark.parametrize("query", QUERIES, ids=[query.where for query in QUERIES])
def test_selectors_use_names_labels_and_values_modelguard_writes(query: Query, exported: Exported) -> None:
    for selector in selectors(query.parse()):
        name = str(selector.name)
        if name.startswith(MODELGUARD_PREFIX):
            assert name in exported.names(), f"{query.where}: modelguard writes no {name}"
        for matcher in selector.matchers.matchers:
            assert matcher.name in exported.label_names(name), f"{query.where}: {name} has no label {matcher.name}"
            if not name.startswith(MODELGUARD_PREFIX) or matcher.name in TARGET_LABELS or "$" in matcher.value:
                continue
            values = exported.labels[name][matcher.name]
            if matcher.op == promql_parser.MatchOp.Equal:
                assert matcher.value in values, f"{query.where}: {name}{{{matcher.name}}} is never {matcher.value!r}"
            elif matcher.op == promql_parser.MatchOp.Re:
                for alternative in _simple_alternatives(matcher.value) or []:
                    assert alternative in values, f"{query.where}: {name}{{{matcher.name}}} is never {alternative!r}"
                assert any(re.fullmatch(matcher.value, v) for v in values), f"{query.where}: {matcher} matches none"


def _available(expr: promql_parser.Expr, exported: Exported) -> set[str]:
    """Every label a series of ``expr`` may carry: its selectors' labels, and label_replace's new ones."""
    found: set[str] = set()

    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.update(exported.label_names(str(node.name)))
        if isinstance(node, promql_parser.Call) and node.func.name == "label_replace":
            found.add(node.args[1].val)
        return True

    promql_parser.walk(expr, visit)
    return found


@pytest.mark.parametrize("query", QUERIES, ids=[query.where for query in QUERIES])
def test_grouping_and_matching_use_labels_the_series_have(query: Query, exported: Exported) -> None:
    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            missing = set(node.modifier.labels) - _available(node.expr, exported)
            assert not missing, f"{query.where}: grouped by {sorted(missing)}, which its series lack"
        if isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None and node.modifier.matching:
            labels = set(node.modifier.matching.labels)
            for side in (node.lhs, node.rhs):
                missing = labels - _available(side, exported)
                assert not missing, f"{query.where}: matched on {sorted(missing)}, which one side lacks"
        if isinstance(node, promql_parser.Call) and node.func.name == "histogram_quantile":
            inner = node.args[1]
            assert isinstance(inner, promql_parser.AggregateExpr) and inner.modifier is not None
            assert "le" in inner.modifier.labels, f"{query.where}: histogram_quantile over series without le"
        return True

    promql_parser.walk(query.parse(), visit)


def test_the_grouping_check_sees_a_missing_label(exported: Exported) -> None:
    with pytest.raises(AssertionError, match="grouped by"):
        test_grouping_and_matching_use_labels_the_series_have(
            Query("x", "sum by (tier_name) (modelguard_inflight)"), exported
        )
    with pytest.raises(AssertionError, match="is never"):
        test_selectors_use_names_labels_and_values_modelguard_writes(
            Query("x", 'modelguard_breaker_state{state="opened"}'), exported
        )


# --------------------------------------------------------------------------- the dashboard


def test_the_dashboard_is_identified_and_templated() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "modelguard"
    assert dashboard["title"] == "modelguard"
    variables = dashboard["templating"]["list"]
    assert [v["name"] for v in variables] == VARIABLES
    source = variables[0]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    for variable in variables[1:]:
        assert variable["type"] == "query", variable["name"]
        assert variable["datasource"] == DATASOURCE, variable["name"]
        assert variable["query"].startswith("label_values("), variable["name"]
        assert variable["multi"] and variable["includeAll"], variable["name"]


def test_every_panel_reads_prometheus_through_the_datasource_variable() -> None:
    dashboard = load_dashboard()
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), ids
    shown = [panel for panel in panels(dashboard) if panel["type"] != "row"]
    assert len(shown) >= 20
    for panel in shown:
        where = f"panel {panel['id']} {panel['title']!r}"
        assert panel["type"] in PANEL_TYPES, where
        assert panel["datasource"] == DATASOURCE, where
        assert panel["description"], where
        assert panel["targets"], where
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), where
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, where
            assert target["legendFormat"], where


def test_panels_fit_the_grid_without_overlapping() -> None:
    boxes = []
    for panel in panels(load_dashboard()):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["y"] >= 0 and pos["w"] > 0 and pos["h"] > 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        boxes.append((panel["title"], pos))
    for i, (title, a) in enumerate(boxes):
        for other, b in boxes[i + 1 :]:
            apart = (
                a["x"] + a["w"] <= b["x"]
                or b["x"] + b["w"] <= a["x"]
                or a["y"] + a["h"] <= b["y"]
                or b["y"] + b["h"] <= a["y"]
            )
            assert apart, f"{title!r} overlaps {other!r}"


def test_queries_use_only_defined_variables() -> None:
    defined = set(VARIABLES)
    for query in dashboard_queries(load_dashboard()):
        used = set(re.findall(r"\$\{?([A-Za-z_]\w*)", query.text))
        assert {name for name in used if not name.startswith("__")} <= defined, query.where


def test_panel_queries_filter_by_the_picked_namespaces_and_models(exported: Exported) -> None:
    for query in dashboard_queries(load_dashboard()):
        if not query.where.startswith("panel"):
            continue
        for selector in selectors(query.parse()):
            name = str(selector.name)
            matchers = {(m.name, m.value) for m in selector.matchers.matchers if m.op == promql_parser.MatchOp.Re}
            if name.startswith(ENVOY_PREFIX):
                assert ("namespace", "$proxy_namespace") in matchers, f"{query.where}: {name}"
                continue
            assert ("namespace", "$namespace") in matchers, f"{query.where}: {name}"
            if "model" in exported.labels.get(name, {}):
                assert ("model", "$model") in matchers, f"{query.where}: {name}"


@pytest.mark.parametrize(
    ("metric", "codes_name"),
    [("modelguard_breaker_state", "BREAKER_CODES"), ("modelguard_canary_state", "CANARY_CODES")],
)
def test_state_timelines_map_every_state_modelguard_writes(metric: str, codes_name: str, exported: Exported) -> None:
    codes: dict[str, int] = getattr(series, codes_name)
    states = exported.labels[metric]["state"]
    assert set(codes) == states
    assert len(set(codes.values())) == len(codes)
    timelines = [
        panel
        for panel in panels(load_dashboard())
        if panel["type"] == "state-timeline" and metric in metric_names(Query("", panel["targets"][0]["expr"]).parse())
    ]
    assert len(timelines) == 1
    (panel,) = timelines
    (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
    assert set(mapping["options"]) == {str(code) for code in codes.values()}
    (target,) = panel["targets"]
    picked = {
        m.value
        for selector in selectors(promql_parser.parse(target["expr"]))
        for m in selector.matchers.matchers
        if m.name == "state"
    }
    assert picked == states


def test_the_states_are_those_of_the_code() -> None:
    assert set(series.BREAKER_CODES) == set(STATE_NAMES)
    assert set(series.CANARY_CODES) == {state.value for state in CanaryState}


def _children(node: promql_parser.Expr) -> list[promql_parser.Expr]:
    if isinstance(node, promql_parser.AggregateExpr | promql_parser.ParenExpr | promql_parser.UnaryExpr):
        return [node.expr]
    if isinstance(node, promql_parser.SubqueryExpr):
        return [node.expr]
    if isinstance(node, promql_parser.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, promql_parser.Call):
        return [arg for arg in node.args if isinstance(arg, promql_parser.Expr)]
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    return []


def _summed_over_proxies(node: promql_parser.Expr, where: str, summed: bool = False) -> None:
    """Every Envoy selector sits under a sum by namespace (and pod): never by the connection manager."""
    if isinstance(node, promql_parser.AggregateExpr):
        assert node.modifier is not None and node.modifier.type == promql_parser.AggModifierType.By, where
        assert set(node.modifier.labels) <= {"namespace", "pod"}, where
        summed = True
    if isinstance(node, promql_parser.VectorSelector) and str(node.name).startswith(ENVOY_PREFIX):
        assert summed, f"{where}: {node.name} is not summed over the connection managers"
    for child in _children(node):
        _summed_over_proxies(child, where, summed)


def test_the_fail_open_panels_read_envoys_ext_proc_stats_summed_over_connection_managers() -> None:
    envoy = [query for query in QUERIES if any(n.startswith(ENVOY_PREFIX) for n in metric_names(query.parse()))]
    dashboard_names = {
        name for query in envoy if query.where.startswith("panel") for name in metric_names(query.parse())
    }
    assert {
        "envoy_http_ext_proc_modelguard_failure_mode_allowed",
        "envoy_http_ext_proc_modelguard_streams_failed",
        "envoy_http_ext_proc_modelguard_message_timeouts",
    } <= dashboard_names
    for query in envoy:
        assert "ingress_http" not in query.text and "conn_manager_prefix" not in query.text, query.where
        if query.where.startswith("variable"):
            continue
        _summed_over_proxies(query.parse(), query.where)


def test_the_summing_check_sees_a_selector_left_per_connection_manager() -> None:
    with pytest.raises(AssertionError, match="not summed"):
        _summed_over_proxies(promql_parser.parse("rate(envoy_http_ext_proc_modelguard_streams_failed[5m]) > 0"), "x")
    with pytest.raises(AssertionError):
        _summed_over_proxies(
            promql_parser.parse(
                "sum by (envoy_http_conn_manager_prefix) (envoy_http_ext_proc_modelguard_streams_failed)"
            ),
            "x",
        )

"""examples/rollouts: the Argo Rollouts and Flagger objects that gate a rollout on modelguard's canary verdict.

Each object is checked against the upstream CRD schema of its kind, as transcribed in tests/data/crds/
(the header of each file there names the upstream repository, path and commit). The checker below
implements the structural-schema keywords those files use and refuses any other, so a schema it cannot
read fails the test instead of passing it.
"""

from __future__ import annotations

import datetime
import functools
import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "rollouts"
CRDS = ROOT / "tests" / "data" / "crds"

Schema = dict[str, Any]

STATES = ("active", "ramping", "complete", "promoted", "aborted")
_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "items",
        "additionalProperties",
        "enum",
        "pattern",
        "format",
        "oneOf",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
        "x-not-transcribed",
    }
)
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def _has_type(value: object, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    raise ValueError(f"schema type {kind!r} is not implemented by this checker")


def schema_errors(value: object, schema: Schema, where: str = "") -> list[str]:
    """The ways `value` breaks a Kubernetes structural schema; unknown fields are errors, as under
    kubectl's strict field validation."""
    unknown = set(schema) - _KEYWORDS
    if unknown:
        raise ValueError(f"{where or '.'}: schema keywords not implemented by this checker: {sorted(unknown)}")
    if schema.get("x-not-transcribed"):
        return [f"{where}: this field's schema is not transcribed in tests/data/crds; add it from upstream first"]
    int_or_string = schema.get("x-kubernetes-int-or-string", False)
    if int_or_string and (isinstance(value, bool) or not isinstance(value, int | str)):
        return [f"{where}: expected an integer or a string, got {type(value).__name__}"]
    kind = schema.get("type")
    if kind is not None and not _has_type(value, kind):
        return [f"{where}: expected {kind}, got {type(value).__name__}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "pattern" in schema and isinstance(value, str) and re.search(schema["pattern"], value) is None:
        errors.append(f"{where}: {value!r} does not match {schema['pattern']!r}")
    fmt = schema.get("format")
    if fmt in _INT_RANGES:
        low, high = _INT_RANGES[fmt]
        if isinstance(value, int) and not low <= value <= high:
            errors.append(f"{where}: {value} is out of {fmt} range")
    elif fmt == "date-time":
        if isinstance(value, str):
            try:
                datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                errors.append(f"{where}: {value!r} is not a date-time")
    elif fmt is not None:
        raise ValueError(f"{where}: schema format {fmt!r} is not implemented by this checker")
    if isinstance(value, dict):
        properties: Schema = schema.get("properties", {})
        errors += [f"{where}: missing required field {key!r}" for key in schema.get("required", []) if key not in value]
        structural = "properties" in schema or kind == "object"
        for key, item in value.items():
            if key in properties:
                errors += schema_errors(item, properties[key], f"{where}.{key}")
            elif "additionalProperties" in schema:
                errors += schema_errors(item, schema["additionalProperties"], f"{where}.{key}")
            elif structural and not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{where}: unknown field {key!r}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{where}[{index}]")
    if "oneOf" in schema:
        matching = sum(not schema_errors(value, option, where) for option in schema["oneOf"])
        if matching != 1:
            errors.append(f"{where}: matches {matching} of the oneOf alternatives, not exactly one")
    return errors


@functools.cache
def crd_schemas() -> dict[tuple[str, str], Schema]:
    schemas: dict[tuple[str, str], Schema] = {}
    for path in sorted(CRDS.glob("*.schema.yaml")):
        for entry in yaml.safe_load(path.read_text())["kinds"]:
            schemas[(entry["apiVersion"], entry["kind"])] = entry["schema"]
    return schemas


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.yaml"))


def load_objects(path: Path) -> list[dict[str, Any]]:
    objects = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert objects, f"{path.name} holds no object"
    assert all(isinstance(obj, dict) for obj in objects), path.name
    return objects


def the_object(name: str, kind: str) -> dict[str, Any]:
    (obj,) = load_objects(EXAMPLES / name)
    assert obj["kind"] == kind
    return obj


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_example_validates_against_its_crd_schema(path: Path) -> None:
    for obj in load_objects(path):
        key = (obj.get("apiVersion"), obj.get("kind"))
        assert key in crd_schemas(), f"{path.name}: no CRD schema in tests/data/crds for {key}"
        assert schema_errors(obj, crd_schemas()[key]) == [], path.name


def test_every_example_file_is_covered() -> None:
    names = {p.name for p in example_files()}
    assert names == {
        "argo-analysistemplate.yaml",
        "argo-rollout-snippet.yaml",
        "flagger-metrictemplate.yaml",
        "flagger-canary-snippet.yaml",
    }


def test_the_checker_catches_what_the_api_server_would_reject() -> None:
    template = the_object("argo-analysistemplate.yaml", "AnalysisTemplate")
    schema = crd_schemas()[("argoproj.io/v1alpha1", "AnalysisTemplate")]
    metric = template["spec"]["metrics"][0]

    def errors_with(**changes: object) -> list[str]:
        return schema_errors({**template, "spec": {**template["spec"], "metrics": [{**metric, **changes}]}}, schema)

    assert errors_with(failureLimit="{{args.limit}}") == []  # IntOrString takes a string too
    assert errors_with(failureLimit=1.5) != []
    assert errors_with(failureLimit=True) != []
    assert errors_with(sucessCondition="true") != []  # misspelt: unknown field
    assert errors_with(provider={"web": {"jsonPath": "{$.state}"}}) != []  # web.url is required
    assert errors_with(provider={"prometheus": {"query": "up"}}) != []  # not transcribed: refused
    canary = the_object("flagger-canary-snippet.yaml", "Canary")
    canary_schema = crd_schemas()[("flagger.app/v1beta1", "Canary")]
    both = {**canary["spec"]["analysis"], "stepWeight": 10}  # iterations and stepWeight: two oneOf branches
    assert schema_errors({**canary, "spec": {**canary["spec"], "analysis": both}}, canary_schema) != []
    with pytest.raises(ValueError, match="not implemented"):
        schema_errors({}, {"type": "object", "minProperties": 1})


# Argo Rollouts' web provider: the template's jsonPath picks a value out of the JSON body and its
# successCondition (an expr expression over `result`) judges it; with no failureCondition, a false
# successCondition is a failed measurement. Only the forms the template uses are implemented.
_JSONPATH = re.compile(r"\{\$((?:\.[A-Za-z_][A-Za-z0-9_]*)+)\}")
_CONDITION = re.compile(r"result\s*(==|!=)\s*(['\"])([^'\"]*)\2")


def apply_jsonpath(expression: str, body: dict[str, Any]) -> object:
    match = _JSONPATH.fullmatch(expression)
    if match is None:
        raise ValueError(f"jsonPath form not implemented here: {expression!r}")
    value: object = body
    for name in match.group(1).split(".")[1:]:
        if not isinstance(value, dict) or name not in value:
            raise KeyError(f"{expression}: no {name!r} in the body (a measurement error in Argo)")
        value = value[name]
    return value


def evaluate_condition(condition: str, result: object) -> bool:
    match = _CONDITION.fullmatch(condition.strip())
    if match is None:
        raise ValueError(f"condition form not implemented here: {condition!r}")
    operator, _, literal = match.groups()
    return (result == literal) if operator == "==" else (result != literal)


def argo_success(body: dict[str, Any]) -> bool:
    """Whether the AnalysisTemplate's metric counts this /v1/canary/<model> body as a successful measurement."""
    (metric,) = the_object("argo-analysistemplate.yaml", "AnalysisTemplate")["spec"]["metrics"]
    assert "failureCondition" not in metric, "argo_success implements successCondition alone"
    return evaluate_condition(metric["successCondition"], apply_jsonpath(metric["provider"]["web"]["jsonPath"], body))


def canary_body(state: str) -> dict[str, Any]:
    return {
        "model": "recommender",
        "state": state,
        "weight": 0.10,
        "route": "recommender-resnet50-v2",
        "since": 1765000000.0,
        "reason": "",
        "arms": {
            "canary": {"calls": 120, "failures": 2, "failure_rate": 0.0167},
            "stable": {"calls": 1100, "failures": 11, "failure_rate": 0.01},
        },
        "verdict": "inconclusive",
    }


@pytest.mark.parametrize("state", STATES)
def test_argo_template_fails_on_aborted_only(state: str) -> None:
    assert argo_success(canary_body(state)) is (state != "aborted")


def test_argo_template_errors_without_a_state() -> None:
    with pytest.raises(KeyError):
        argo_success({"error": "no canary for model 'recommender'"})
    with pytest.raises(ValueError, match="not implemented"):
        evaluate_condition("result in ['aborted']", "ramping")


def test_argo_template_fails_at_the_first_failed_measurement() -> None:
    template = the_object("argo-analysistemplate.yaml", "AnalysisTemplate")
    (metric,) = template["spec"]["metrics"]
    assert metric["failureLimit"] == 0
    assert "{{args.model}}" in metric["provider"]["web"]["url"]
    assert "{{args.modelguard-url}}" in metric["provider"]["web"]["url"]
    args = {arg["name"]: arg.get("value") for arg in template["spec"]["args"]}
    assert args["model"] is None  # the Rollout must name the model
    assert args["modelguard-url"] == "http://modelguard.modelguard.svc:9464"


def test_rollout_runs_the_template_as_background_analysis_for_a_model() -> None:
    template = the_object("argo-analysistemplate.yaml", "AnalysisTemplate")
    analysis = the_object("argo-rollout-snippet.yaml", "Rollout")["spec"]["strategy"]["canary"]["analysis"]
    assert [t["templateName"] for t in analysis["templates"]] == [template["metadata"]["name"]]
    assert {arg["name"] for arg in analysis["args"]} == {"model"}


def flagger_query() -> str:
    query = the_object("flagger-metrictemplate.yaml", "MetricTemplate")["spec"]["query"]
    assert isinstance(query, str)
    return query.strip()


def test_flagger_query_reads_the_aborted_state() -> None:
    query = flagger_query()
    assert "modelguard_canary_state{" in query
    assert 'state="aborted"' in query
    assert query.endswith("or vector(0)")  # no series is 0 (not aborted), not a failed check
    if importlib.util.find_spec("promql_parser") is not None:  # not a dependency; checked where installed
        parser: Any = importlib.import_module("promql_parser")
        parser.parse(query.replace("{{ target }}", "recommender"))


def test_flagger_canary_rolls_back_when_the_query_is_above_zero() -> None:
    template = the_object("flagger-metrictemplate.yaml", "MetricTemplate")
    canary = the_object("flagger-canary-snippet.yaml", "Canary")
    (metric,) = canary["spec"]["analysis"]["metrics"]
    assert metric["templateRef"] == {
        "name": template["metadata"]["name"],
        "namespace": template["metadata"]["namespace"],
    }
    assert metric["thresholdRange"] == {"max": 0}
    assert template["spec"]["provider"]["type"] == "prometheus"

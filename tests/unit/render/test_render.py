"""Rendering a policy: which routes a model uses, the Istio objects and the Envoy bootstrap built
from them, and the command's errors. (The checked-in manifests: test_checked_in.py; in real
Envoy: tests/e2e/test_istio_filters.py and test_render_envoy.py.)"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest

from ext_proc import cli
from ext_proc.policy import load_policy
from ext_proc.policy.model import Policy
from ext_proc.render import EnvoyOptions, IstioOptions, RenderError, envoy_bootstrap, istio_objects
from ext_proc.render.plan import Role, max_ejection_percent, plan

REPO = Path(__file__).resolve().parents[3]
DEMO_POLICY = REPO / "ext_proc" / "demo" / "policy.yaml"

TWO_MODELS = """
models:
  - name: ranker
    match: {header: {name: x-model, value: ranker}}
    tiers:
      - {name: main, route: ranker-v1}
      - {name: fallback, respond: {status: 503}}
  - name: embedder
    match: {authority: embed.example.com}
    tiers:
      - {name: primary, route: embedder-large}
      - {name: small, route: embedder-small}
      - {name: same, route: embedder-small}
  - name: rules-only
    match: {path_prefix: /rules}
    tiers:
      - {name: default, respond: {status: 200, body: "{}"}}
"""


# What Istio routing can serve: models matched by path or header, each with routed tiers; two
# paths where one is a string prefix of the other (rec, recommender), as a trap for plain prefixes.
ISTIO_MODELS = """
models:
  - name: ranker
    match: {header: {name: x-model, value: ranker}}
    tiers:
      - {name: main, route: ranker-v1}
  - name: rec
    match: {path_prefix: /v2/models/rec}
    tiers:
      - {name: primary, route: rec-v1}
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: recommender-large}
      - {name: light, route: recommender-small}
"""


def policy_from(text: str, tmp_path: Path) -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return load_policy(path)


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_plan_lists_each_route_once_with_its_role(tmp_path: Path) -> None:
    models = {m.name: m for m in plan(policy_from(TWO_MODELS, tmp_path))}
    assert set(models) == {"ranker", "embedder"}, "a model answered by modelguard alone routes nothing"
    assert [(u.route, u.tier) for u in models["embedder"].routes] == [
        ("embedder-large", "primary"),
        ("embedder-small", "small"),
    ]
    assert models["embedder"].fail_open.route == "embedder-large", "fail-open goes to the first tier"
    (canary,) = [u for m in plan(load_policy(DEMO_POLICY)) for u in m.routes if u.role is Role.CANARY]
    assert (canary.route, canary.tier) == ("recommender-resnet50-v2", "primary")


def test_names_kubernetes_cannot_take_are_errors_by_their_place(tmp_path: Path) -> None:
    text = TWO_MODELS.replace("name: embedder", "name: Embedder").replace(
        "route: embedder-small", "route: embedder_small"
    )
    with pytest.raises(RenderError) as caught:
        plan(policy_from(text, tmp_path), kubernetes_names=True)
    assert [e.split(":", 1)[0] for e in caught.value.errors] == [
        "models[1].name",
        "models[1].tiers[1].route",
        "models[1].tiers[2].route",
    ]
    assert plan(policy_from(text, tmp_path)), "Envoy takes any route a policy allows"


@pytest.mark.parametrize("replicas", range(1, 101))  # a whole percentage: exact up to 100 hosts
def test_outlier_detection_ejects_one_host_at_most_and_never_the_only_one(replicas: int) -> None:
    percent = max_ejection_percent(replicas)
    ejectable = max((k for k in range(replicas + 1) if k * 100 <= percent * replicas), default=0)
    assert ejectable == (0 if replicas == 1 else 1)


def test_istio_subsets_retries_and_canary(tmp_path: Path) -> None:
    objects = istio_objects(load_policy(DEMO_POLICY), IstioOptions(replicas=2))
    rule = by_kind(objects, "DestinationRule")["recommender"]
    subsets = {s["name"]: s for s in rule["spec"]["subsets"]}
    assert set(subsets) == {"recommender-resnet50", "recommender-mobilenet", "recommender-resnet50-v2"}
    assert subsets["recommender-resnet50"]["labels"] == {"modelguard.io/route": "recommender-resnet50"}
    assert rule["spec"]["trafficPolicy"]["outlierDetection"]["maxEjectionPercent"] == 50
    assert subsets["recommender-resnet50-v2"]["trafficPolicy"]["outlierDetection"]["maxEjectionPercent"] == 0
    routes = {r["name"]: r for r in by_kind(objects, "VirtualService")["recommender"]["spec"]["http"]}
    assert list(routes) == ["recommender-resnet50", "recommender-mobilenet", "recommender-resnet50-v2", "fail-open"]
    assert "5xx" in routes["recommender-resnet50"]["retries"]["retryOn"]
    assert "5xx" not in routes["recommender-resnet50-v2"]["retries"]["retryOn"], "a canary's errors reach modelguard"
    assert (
        "match" not in routes["fail-open"]
        and routes["fail-open"]["route"][0]["destination"]["subset"] == "recommender-resnet50"
    )
    assert routes["recommender-mobilenet"]["match"] == [
        {"headers": {"x-modelguard-route": {"exact": "recommender-mobilenet"}}}
    ]
    assert set(by_kind(objects, "EnvoyFilter")) == {"modelguard-sidecar"}, "no gateway unless asked"


def test_a_gateway_routes_every_model_in_one_service_in_policy_order(tmp_path: Path) -> None:
    objects = istio_objects(
        policy_from(ISTIO_MODELS, tmp_path), IstioOptions(gateway="edge/gw", gateway_host="api.example.com")
    )
    gateway = by_kind(objects, "VirtualService")["modelguard-gateway"]["spec"]
    assert gateway["gateways"] == ["edge/gw"] and gateway["hosts"] == ["api.example.com"]
    assert [r["name"] for r in gateway["http"]] == [
        "ranker-ranker-v1",
        "ranker-fail-open",
        "rec-rec-v1",
        "rec-fail-open",
        "recommender-recommender-large",
        "recommender-recommender-small",
        "recommender-fail-open",
    ]
    routes = {r["name"]: r for r in gateway["http"]}
    assert routes["ranker-ranker-v1"]["match"] == [
        {"headers": {"x-model": {"exact": "ranker"}, "x-modelguard-route": {"exact": "ranker-v1"}}}
    ]
    assert routes["ranker-fail-open"]["match"] == [{"headers": {"x-model": {"exact": "ranker"}}}]
    assert routes["rec-fail-open"]["match"] == [
        {"uri": {"exact": "/v2/models/rec"}},
        {"uri": {"prefix": "/v2/models/rec/"}},
        {"uri": {"prefix": "/v2/models/rec:"}},
        {"uri": {"prefix": "/v2/models/rec;"}},
    ], "a segment boundary, as modelguard matches: /v2/models/rec is not /v2/models/recommender"
    assert all(c["headers"]["x-modelguard-route"] == {"exact": "rec-v1"} for c in routes["rec-rec-v1"]["match"])
    gateway_filter = by_kind(objects, "EnvoyFilter")["modelguard-gateway"]
    assert gateway_filter["metadata"]["namespace"] == "edge"
    patches = [p for p in gateway_filter["spec"]["configPatches"] if p["applyTo"] == "VIRTUAL_HOST"]
    assert [p["match"]["routeConfiguration"]["vhost"]["name"] for p in patches] == ["api.example.com:80"]
    assert "typed_per_filter_config" not in patches[0]["patch"]["value"], (
        "the host may carry other VirtualServices: ext_proc is on only on the models' own routes"
    )
    scoped = {
        p["match"]["routeConfiguration"]["vhost"]["route"]["name"]: p["patch"]["value"]["typed_per_filter_config"][
            "envoy.filters.http.ext_proc"
        ]["config"]["overrides"]["grpc_initial_metadata"]
        for p in gateway_filter["spec"]["configPatches"]
        if p["applyTo"] == "HTTP_ROUTE" and "typed_per_filter_config" in p["patch"]["value"]
    }
    assert scoped == {
        f"{name}-fail-open": [{"key": "x-modelguard-model", "value": name}] for name in ("ranker", "rec", "recommender")
    }, "each model's fail-open route, the only one taken before modelguard answers, is scoped to it"


def test_the_sidecar_filter_turns_ext_proc_on_for_model_hosts_only_each_scoped_to_its_model(tmp_path: Path) -> None:
    objects = istio_objects(policy_from(ISTIO_MODELS, tmp_path), IstioOptions(namespace="ml", port=9000))
    patches = by_kind(objects, "EnvoyFilter")["modelguard-sidecar"]["spec"]["configPatches"]
    (inserted,) = [p["patch"]["value"] for p in patches if p["patch"]["operation"] == "INSERT_BEFORE"]
    assert inserted["disabled"] is True
    hosts = [p for p in patches if p["applyTo"] == "VIRTUAL_HOST"]
    assert [p["match"]["routeConfiguration"]["vhost"]["name"] for p in hosts] == [
        "ranker.ml.svc.cluster.local:9000",
        "rec.ml.svc.cluster.local:9000",
        "recommender.ml.svc.cluster.local:9000",
    ]
    scopes = [
        p["patch"]["value"]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["config"]["overrides"]
        for p in hosts
    ]
    assert scopes == [
        {"grpc_initial_metadata": [{"key": "x-modelguard-model", "value": name}]}
        for name in ("ranker", "rec", "recommender")
    ]
    tags = [h["header"]["key"] for h in hosts[0]["patch"]["value"]["response_headers_to_add"]]
    assert tags == ["x-modelguard-tier", "x-modelguard-degraded", "x-modelguard-arm"]


def test_models_istio_cannot_serve_are_refused_by_their_place(tmp_path: Path) -> None:
    with pytest.raises(RenderError) as caught:
        istio_objects(policy_from(TWO_MODELS, tmp_path), IstioOptions())
    assert [e.split(":", 1)[0] for e in caught.value.errors] == ["models[1].match.authority", "models[2].tiers"]


def test_the_envoy_bootstrap_routes_every_route_then_each_model(tmp_path: Path) -> None:
    bootstrap = envoy_bootstrap(
        policy_from(TWO_MODELS, tmp_path), EnvoyOptions(upstream="{route}.ml:9000", modelguard="10.0.0.7:50051")
    )
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert [r["name"] for r in routes] == [
        "ranker-v1",
        "embedder-large",
        "embedder-small",
        "ranker-fail-open",
        "embedder-fail-open",
        "embedder-fail-open",
    ]
    assert routes[3]["match"] == {"prefix": "/", "headers": [{"name": "x-model", "string_match": {"exact": "ranker"}}]}
    assert [r["match"]["headers"][0]["string_match"] for r in routes[4:]] == [
        {"exact": "embed.example.com", "ignore_case": True},
        {"prefix": "embed.example.com:", "ignore_case": True},
    ], "an authority without case or port, as modelguard compares it"
    assert {r["route"]["cluster"] for r in routes[3:]} == {"ranker-v1", "embedder-large-then-embedder-small"}
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    assert set(clusters) == {
        "modelguard",
        "ranker-v1",
        "embedder-large",
        "embedder-small",
        "embedder-large-then-embedder-small",
    }
    assert clusters["modelguard"]["type"] == "STATIC"
    address = clusters["embedder-small"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert clusters["embedder-small"]["type"] == "STRICT_DNS" and address["socket_address"] == {
        "address": "embedder-small.ml",
        "port_value": 9000,
    }


def run(*words: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(words))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_the_command_names_what_it_cannot_render(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(ISTIO_MODELS.replace("route: ranker-v1", "route: Ranker/V1"))
    code, out, err = run("render", "istio", "--policy", str(tmp_path / "bad.yaml"))
    assert (code, out) == (1, "") and "models[0].tiers[0].route: 'Ranker/V1' is an Istio subset name" in err
    (tmp_path / "broken.yaml").write_text("models: [{name: x}]\n")
    code, out, err = run("render", "envoy", "--policy", str(tmp_path / "broken.yaml"))
    assert (code, out) == (1, "") and "models[0]" in err
    code, _, err = run("render", "istio", "--policy", str(DEMO_POLICY), "--gateway", "no-namespace")
    assert code == 2 and "NAMESPACE/NAME" in err
    code, _, err = run("render", "envoy", "--policy", str(DEMO_POLICY), "--upstream", "no-port")
    assert code == 1 and "--upstream: 'no-port' is not HOST:PORT" in err


def test_the_command_writes_out(tmp_path: Path) -> None:
    code, out, _ = run("render", "istio", "--policy", str(DEMO_POLICY), "--out", str(tmp_path / "routing.yaml"))
    assert (code, out) == (0, "")
    text = (tmp_path / "routing.yaml").read_text()
    assert text.startswith("# Generated by `modelguard render istio --policy ") and "kind: EnvoyFilter" in text


def test_objects_that_would_overwrite_each_other_are_refused(tmp_path: Path) -> None:
    policy = policy_from(ISTIO_MODELS.replace("name: rec\n", "name: modelguard-gateway\n"), tmp_path)
    assert istio_objects(policy, IstioOptions()), "without a gateway the names are distinct"
    with pytest.raises(RenderError, match="two VirtualServices would be named 'modelguard-gateway' in namespace"):
        istio_objects(policy, IstioOptions(gateway="edge/gw"))


def test_a_route_named_like_the_ext_proc_cluster_is_refused_for_envoy(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"models\[0\]\.tiers\[0\]\.route: 'modelguard' is the ext_proc cluster"):
        envoy_bootstrap(policy_from(ISTIO_MODELS.replace("ranker-v1", "modelguard"), tmp_path), EnvoyOptions())


def test_an_unwritable_out_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    code, out, err = run("render", "istio", "--policy", str(DEMO_POLICY), "--out", str(tmp_path / "no" / "such.yaml"))
    assert (code, out) == (1, "") and "cannot write" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "flag",
    [
        ["--namespace", "Models"],
        ["--filter-namespace", "a/b"],
        ["--modelguard-host", "modelguard..svc"],
        ["--gateway-host", "api.example.com:80"],
        ["--gateway", "edge/Gw"],
        ["--port", "0"],
        ["--replicas", "0"],
        ["--gateway-selector", "novalue"],
    ],
)
def test_flags_that_would_make_broken_manifests_are_refused(flag: list[str]) -> None:
    code, out, err = run("render", "istio", "--policy", str(DEMO_POLICY), *flag)
    assert (code, out) == (2, "") and flag[0] in err


def test_the_envoy_fail_open_routes_a_path_at_a_segment_boundary(tmp_path: Path) -> None:
    bootstrap = envoy_bootstrap(policy_from(ISTIO_MODELS, tmp_path), EnvoyOptions())
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    rec = [r["match"] for r in hcm["route_config"]["virtual_hosts"][0]["routes"] if r["name"] == "rec-fail-open"]
    assert rec == [
        {"path_separated_prefix": "/v2/models/rec"},
        {"prefix": "/v2/models/rec:"},
        {"prefix": "/v2/models/rec;"},
    ]
    assert "safe_regex" not in str(bootstrap), "no regex: Envoy caps a regex's size well below a long prefix"


def test_gateway_route_names_that_would_collide_are_refused(tmp_path: Path) -> None:
    """The gateway filter finds each model's fail-open route by name: model x with a route y-fail-open
    would name a header route like model x-y's fail-open route."""
    text = ISTIO_MODELS.replace("route: ranker-v1", "route: rec-fail-open").replace("name: ranker\n", "name: x\n")
    text = text.replace("name: rec\n", "name: x-rec\n")
    with pytest.raises(RenderError, match="x-rec-fail-open"):
        istio_objects(policy_from(text, tmp_path), IstioOptions(gateway="edge/gw"))


NEXT_TIERS = """
models:
  - name: ranker
    match: {path_prefix: /v2/models/ranker}
    tiers:
      - {name: main, route: ranker-big}
      - {name: answer, respond: {status: 503}}
  - name: renamed
    match: {path_prefix: /v2/models/renamed}
    tiers:
      - {name: main, route: renamed-big}
      - {name: light, route: renamed-small, model: renamed-light}
  - name: first
    match: {header: {name: x-model, value: first}}
    tiers:
      - {name: main, route: shared-big}
      - {name: light, route: first-small}
  - name: second
    match: {header: {name: x-model, value: second}}
    tiers:
      - {name: main, route: shared-big}
      - {name: light, route: second-small}
  - name: plain
    match: {header: {name: x-model, value: plain}}
    tiers:
      - {name: main, route: plain-big}
      - {name: light, route: plain-small}
      - {name: last, respond: {status: 503}}
"""


def test_a_tier_retries_on_the_next_only_when_that_tier_is_routed_takes_the_same_path_and_no_model_disputes_it(
    tmp_path: Path,
) -> None:
    routes = {
        model.name: {use.route: use.next_route for use in model.routes}
        for model in plan(policy_from(NEXT_TIERS, tmp_path))
    }
    assert routes["ranker"] == {"ranker-big": None}, "modelguard's own answer comes next"
    assert routes["renamed"] == {"renamed-big": None, "renamed-small": None}, "the light tier needs another path"
    assert routes["first"] == {"shared-big": None, "first-small": None}, "a shared route: whose light tier?"
    assert routes["second"] == {"shared-big": None, "second-small": None}
    assert routes["plain"] == {"plain-big": "plain-small", "plain-small": None}


def test_the_envoy_bootstrap_retries_a_tier_on_the_next_through_an_aggregate_cluster(tmp_path: Path) -> None:
    bootstrap = envoy_bootstrap(policy_from(NEXT_TIERS, tmp_path), EnvoyOptions())
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = {r["name"]: r["route"] for r in hcm["route_config"]["virtual_hosts"][0]["routes"]}
    for name in ("plain-big", "plain-fail-open"):
        assert routes[name]["cluster"] == "plain-big-then-plain-small"
        assert routes[name]["retry_policy"]["num_retries"] == 2
        assert routes[name]["retry_policy"]["retry_priority"]["typed_config"]["update_frequency"] == 2
    for name in ("plain-small", "ranker-big", "shared-big", "renamed-big", "renamed-small"):
        assert routes[name]["cluster"] == name and "retry_priority" not in routes[name]["retry_policy"], name
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    aggregate = clusters["plain-big-then-plain-small"]
    assert aggregate["cluster_type"]["typed_config"]["clusters"] == ["plain-big", "plain-small"]
    assert aggregate["lb_policy"] == "CLUSTER_PROVIDED" and "load_assignment" not in aggregate
    assert clusters["plain-big"]["load_assignment"]["policy"] == {"overprovisioning_factor": 200}, (
        "one ejected host of three does not spill first tries to the next tier"
    )
    router = hcm["http_filters"][-1]["typed_config"]
    (log,) = router["upstream_log"]
    assert log["typed_config"]["common_config"]["grpc_service"]["envoy_grpc"] == {"cluster_name": "modelguard"}


def test_a_route_named_like_a_tier_and_next_tier_cluster_is_refused(tmp_path: Path) -> None:
    text = """
models:
  - name: a
    match: {header: {name: x-model, value: a}}
    tiers:
      - {name: main, route: big}
      - {name: light, route: small}
  - name: b
    match: {header: {name: x-model, value: b}}
    tiers:
      - {name: main, route: big-then-small}
"""
    with pytest.raises(RenderError) as caught:
        plan(policy_from(text, tmp_path))
    (error,) = caught.value.errors
    assert error.startswith("models[1].tiers[0].route: 'big-then-small' names the cluster of models[0].tiers[0].route")


def test_istio_retries_a_tier_on_the_next_through_an_added_aggregate_and_logs_failed_tries(tmp_path: Path) -> None:
    objects = istio_objects(load_policy(DEMO_POLICY), IstioOptions(gateway="edge/gw", gateway_host="api.example.com"))
    routes = {r["name"]: r for r in by_kind(objects, "VirtualService")["recommender"]["spec"]["http"]}
    assert routes["recommender-resnet50"]["retries"]["attempts"] == 2 == routes["fail-open"]["retries"]["attempts"]
    assert routes["recommender-mobilenet"]["retries"]["attempts"] == 1
    host = "recommender.models.svc.cluster.local"
    aggregate = f"outbound|8080|recommender-resnet50-then-recommender-mobilenet|{host}"
    filters = by_kind(objects, "EnvoyFilter")
    for name, context, route_names, vhost in (
        ("modelguard-sidecar", "SIDECAR_OUTBOUND", ["recommender-resnet50", "fail-open"], f"{host}:8080"),
        (
            "modelguard-gateway",
            "GATEWAY",
            ["recommender-recommender-resnet50", "recommender-fail-open"],
            "api.example.com:80",
        ),
    ):
        patches = filters[name]["spec"]["configPatches"]
        assert all(p["match"]["context"] == context for p in patches)
        (added,) = [p["patch"]["value"] for p in patches if p["applyTo"] == "CLUSTER"]
        assert added["name"] == aggregate
        assert added["cluster_type"]["typed_config"]["clusters"] == [
            f"outbound|8080|recommender-resnet50|{host}",
            f"outbound|8080|recommender-mobilenet|{host}",
        ]
        sent = {
            p["match"]["routeConfiguration"]["vhost"]["route"]["name"]: p
            for p in patches
            if p["applyTo"] == "HTTP_ROUTE" and "route" in p["patch"]["value"]
        }
        assert sorted(sent) == sorted(route_names)
        for patch in sent.values():
            assert patch["match"]["routeConfiguration"]["vhost"]["name"] == vhost
            action = patch["patch"]["value"]["route"]
            assert action["cluster"] == aggregate
            assert set(action["retry_policy"]) == {"retry_priority"}, "Istio's own retry predicate is kept, not doubled"
        (inserted,) = [p["patch"]["value"] for p in patches if p["patch"]["operation"] == "INSERT_BEFORE"]
        grpc = inserted["typed_config"]["grpc_service"]
        assert grpc["envoy_grpc"] == {"cluster_name": "outbound|50051||modelguard.modelguard.svc.cluster.local"}
        assert {"key": "x-modelguard-try-log", "value": "on"} in grpc["initial_metadata"]
        (router,) = [
            p["patch"]["value"] for p in patches if p["applyTo"] == "HTTP_FILTER" and p["patch"]["operation"] == "MERGE"
        ]
        (log,) = router["typed_config"]["upstream_log"]
        assert log["typed_config"]["common_config"]["grpc_service"]["envoy_grpc"] == grpc["envoy_grpc"]
        only_tagged = log["filter"]["and_filter"]["filters"][0]
        assert only_tagged == {"header_filter": {"header": {"name": "x-modelguard-route", "present_match": True}}}


def test_a_model_matched_by_its_body_is_refused_with_a_reason(tmp_path: Path) -> None:
    policy = tmp_path / "body.yaml"
    policy.write_text(
        "models:\n  - name: chat\n    match: {body_model: llama-3}\n    tiers: [{name: primary, route: chat-primary}]\n"
    )
    for target in ("envoy", "istio"):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["render", target, "--policy", str(policy)])
        assert code == 1 and "models[0].match.body_model: not rendered yet" in err.getvalue()

"""A tier's `model:` rendered: the path rewrite on its routes (Envoy's regex_rewrite, Istio's
uriRegexRewrite), what it does to paths, and the policies it cannot be rendered for. (In real
Envoy: tests/e2e/test_render_envoy.py.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ext_proc.policy import load_policy, parse_policy
from ext_proc.policy.model import Policy
from ext_proc.render import EnvoyOptions, IstioOptions, RenderError, envoy_bootstrap, istio_objects
from ext_proc.render.plan import MAX_REWRITTEN_PREFIX, Rewrite, plan
from tests.unit.istio.schemas import schema_problems

LIGHT_SERVES_ITS_OWN_NAME = """
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: recommender-resnet50}
      - {name: light, route: recommender-light, model: recommender-light}
      - {name: default, respond: {status: 503}}
"""


def policy_from(text: str, tmp_path: Path) -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return load_policy(path)


def envoy_routes(bootstrap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return {route["name"]: route for route in hcm["route_config"]["virtual_hosts"][0]["routes"]}


def rewritten(rewrite: Rewrite, path: str) -> str:
    """What Envoy makes of a path (its query left off): RE2's syntax here is Python's too, and
    Envoy replaces every match, of which an anchored pattern has one."""
    return re.sub(rewrite.pattern, rewrite.substitution, path)


def test_the_tier_with_a_model_gets_the_rewrite_and_no_other_route(tmp_path: Path) -> None:
    routes = envoy_routes(envoy_bootstrap(policy_from(LIGHT_SERVES_ITS_OWN_NAME, tmp_path), EnvoyOptions()))
    assert routes["recommender-light"]["route"]["regex_rewrite"] == {
        "pattern": {"regex": "^(/v2/models/)recommender(?:/versions/[^/:]+)?"},
        "substitution": "\\1recommender-light",
    }
    assert routes["recommender-light"]["route"]["cluster"] == "recommender-light"
    assert "regex_rewrite" not in routes["recommender-resnet50"]["route"]
    assert "regex_rewrite" not in routes["recommender-fail-open"]["route"], "fail-open goes to the first tier"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/models/recommender/infer", "/v2/models/recommender-light/infer"),
        ("/v2/models/recommender/versions/3/infer", "/v2/models/recommender-light/infer"),
        ("/v2/models/recommender/versions/v2-beta/infer", "/v2/models/recommender-light/infer"),
        ("/v2/models/recommender/generate_stream", "/v2/models/recommender-light/generate_stream"),
        ("/v2/models/recommender", "/v2/models/recommender-light"),
        ("/v2/models/recommender/ready", "/v2/models/recommender-light/ready"),
        ("/v2/models/recommender/versions/", "/v2/models/recommender-light/versions/"),
        ("/v2/models/other/infer", "/v2/models/other/infer"),
        ("/x/v2/models/recommender/infer", "/x/v2/models/recommender/infer"),
    ],
)
def test_the_rewrite_replaces_the_name_and_a_version_of_the_model_the_request_named(path: str, expected: str) -> None:
    (model,) = plan(parse_policy(LIGHT_SERVES_ITS_OWN_NAME))
    rewrite = model.routes[1].rewrite
    assert rewrite is not None and rewritten(rewrite, path) == expected


def test_a_v1_path_keeps_its_verb_and_the_prefix_is_escaped() -> None:
    text = LIGHT_SERVES_ITS_OWN_NAME.replace("/v2/models/recommender", "/v1.0/models/rec+ommender")
    (model,) = plan(parse_policy(text))
    rewrite = model.routes[1].rewrite
    assert rewrite is not None
    assert rewrite.pattern == r"^(/v1\.0/models/)rec\+ommender(?:/versions/[^/:]+)?"
    assert rewritten(rewrite, "/v1.0/models/rec+ommender:predict") == "/v1.0/models/recommender-light:predict"
    assert (
        rewritten(rewrite, "/v1.0/models/rec+ommender/versions/7:predict") == "/v1.0/models/recommender-light:predict"
    )
    assert rewritten(rewrite, "/v1x0/models/recommender:predict") == "/v1x0/models/recommender:predict", "'.' is '.'"


def test_a_first_tier_with_a_model_rewrites_the_fail_open_route_too_but_not_the_canary(tmp_path: Path) -> None:
    text = LIGHT_SERVES_ITS_OWN_NAME.replace(
        "route: recommender-resnet50}", "route: recommender-resnet50, model: resnet50}"
    ) + ("    canary: {route: recommender-resnet50-v2}\n")
    routes = envoy_routes(envoy_bootstrap(policy_from(text, tmp_path), EnvoyOptions()))
    substitution = routes["recommender-resnet50"]["route"]["regex_rewrite"]["substitution"]
    assert substitution == "\\1resnet50"
    fail_open = [route for name, route in routes.items() if name == "recommender-fail-open"]
    assert fail_open and fail_open[0]["route"]["regex_rewrite"]["substitution"] == "\\1resnet50"
    assert "regex_rewrite" not in routes["recommender-resnet50-v2"]["route"], "a canary serves the path's own name"


def test_istio_routes_carry_the_rewrite_and_validate(tmp_path: Path) -> None:
    objects = istio_objects(policy_from(LIGHT_SERVES_ITS_OWN_NAME, tmp_path), IstioOptions(gateway="edge/gw"))
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "VirtualService"}
    wanted = {
        "uriRegexRewrite": {
            "match": "^(/v2/models/)recommender(?:/versions/[^/:]+)?",
            "rewrite": "\\1recommender-light",
        }
    }
    mesh = {r["name"]: r for r in services["recommender"]["spec"]["http"]}
    assert mesh["recommender-light"]["rewrite"] == wanted
    assert "rewrite" not in mesh["recommender-resnet50"] and "rewrite" not in mesh["fail-open"]
    gateway = {r["name"]: r for r in services["modelguard-gateway"]["spec"]["http"]}
    assert gateway["recommender-recommender-light"]["rewrite"] == wanted
    assert [problem for item in objects for problem in schema_problems(item)] == []


def test_two_tiers_of_a_model_on_one_route_must_agree_on_the_name(tmp_path: Path) -> None:
    text = LIGHT_SERVES_ITS_OWN_NAME.replace(
        "      - {name: default",
        "      - {name: lighter, route: recommender-light}\n      - {name: default",
    )
    for render in (
        lambda policy: envoy_bootstrap(policy, EnvoyOptions()),
        lambda policy: istio_objects(policy, IstioOptions()),
    ):
        with pytest.raises(RenderError) as caught:
            render(policy_from(text, tmp_path))
        assert caught.value.errors == [
            "models[0].tiers[2].route: 'recommender-light' is also models[0].tiers[1].route, with another model:"
            " (routes tell tiers apart for the router): give this tier a route of its own"
        ]
    same = text.replace("route: recommender-light}", "route: recommender-light, model: recommender-light}")
    assert len(envoy_routes(envoy_bootstrap(policy_from(same, tmp_path), EnvoyOptions()))) == 3


def test_envoy_refuses_a_rewritten_route_shared_with_another_model(tmp_path: Path) -> None:
    text = LIGHT_SERVES_ITS_OWN_NAME + (
        "  - name: ranker\n"
        "    match: {path_prefix: /v2/models/ranker}\n"
        "    tiers: [{name: only, route: recommender-light}]\n"
    )
    with pytest.raises(RenderError) as caught:
        envoy_bootstrap(policy_from(text, tmp_path), EnvoyOptions())
    assert caught.value.errors == [
        "models[1].tiers[0].route: 'recommender-light' is also models[0].tiers[1].route, and a tier's model:"
        " rewrites the path on it: give each model its own route there"
    ]
    assert istio_objects(policy_from(text, tmp_path), IstioOptions()), "Istio routes each model in its own service"
    shared = text.replace("route: recommender-light}]", "route: recommender-resnet50}]")
    assert envoy_bootstrap(policy_from(shared, tmp_path), EnvoyOptions()), "routes without a rewrite may be shared"


def test_a_prefix_too_long_for_envoys_regex_limit_is_refused(tmp_path: Path) -> None:
    longest = "/v2/models/" + "r" * (MAX_REWRITTEN_PREFIX - len("/v2/models/"))
    fits = LIGHT_SERVES_ITS_OWN_NAME.replace("/v2/models/recommender", longest)
    assert envoy_bootstrap(policy_from(fits, tmp_path), EnvoyOptions())
    with pytest.raises(RenderError) as caught:
        envoy_bootstrap(policy_from(fits.replace(longest, longest + "r"), tmp_path), EnvoyOptions())
    assert caught.value.errors == [
        f"models[0].match.path_prefix: at most {MAX_REWRITTEN_PREFIX} characters when a tier has a model: (the path"
        " rewrite's regex would pass Envoy's limit of 100 RE2 instructions)"
    ]
    plain = fits.replace(longest, longest + "r").replace(", model: recommender-light", "")
    assert envoy_bootstrap(policy_from(plain, tmp_path), EnvoyOptions()), "no rewrite, no regex, no limit"

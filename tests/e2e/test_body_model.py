"""The model named in an OpenAI-style body, through real Envoy on the reference config: modelguard
asks for the body of such a request only, routes on the name in it, and fail-open holds on these
routes too (modelguard killed under load: the requests keep flowing on the default route)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ext_proc.processes import HttpResult, ModelguardProcess, http_request, wait_for
from tests.e2e.e2e_harness import EnvoyFactory, Upstream, model_cluster_ports

pytestmark = pytest.mark.e2e

POLICY = """\
models:
  - name: chat
    match: {body_model: llama-3}
    tiers:
      - {name: primary, route: recommender-resnet50}
      - {name: light, route: recommender-mobilenet}
  - name: small
    match: {body_model: tiny}
    tiers:
      - {name: only, route: recommender-mobilenet, model: tiny-v2}
"""
CHAT = "/v1/chat/completions"
EXT_PROC_STATS = "http.ingress_http.ext_proc.modelguard."


def chat(url: str, model: str) -> HttpResult:
    body = json.dumps({"messages": [{"role": "user", "content": "hello"}], "model": model, "stream": False})
    return http_request(url, method="POST", headers={"Content-Type": "application/json"}, body=body.encode())


def test_the_body_picks_the_model_and_fail_open_holds_when_modelguard_dies(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    primary, light = upstream_factory("primary"), upstream_factory("light")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    modelguard = modelguard_factory(policy)
    envoy = envoy_factory(model_cluster_ports(modelguard.grpc_port, [primary.port], [light.port]))
    url = envoy.url + CHAT
    assert wait_for(lambda: chat(url, "llama-3").headers.get("x-modelguard-tier") == "primary" or None, 10.0, 0.1)

    served = chat(url, "llama-3")
    assert (
        served.status == 200
        and served.json()["server"] == "primary"
        and served.headers["x-modelguard-tier"] == "primary"
    )
    small = chat(url, "tiny")
    assert small.status == 200 and small.json()["server"] == "light" and small.headers["x-modelguard-tier"] == "only"
    renamed = json.loads(light.last_body)  # the tier's servers know it as tiny-v2: the body says so
    assert renamed["model"] == "tiny-v2" and renamed["messages"] == [{"role": "user", "content": "hello"}]
    assert json.loads(primary.last_body)["model"] == "llama-3"  # a tier without model: leaves it as it was
    unknown = chat(url, "someone-else")  # named by no model: passed on, on the default route, untagged
    assert (
        unknown.status == 200 and unknown.json()["server"] == "primary" and "x-modelguard-tier" not in unknown.headers
    )
    for _ in range(100):  # each such stream ends as soon as its body is answered: none may hang
        assert chat(url, "someone-else").status == 200
    headers_only = http_request(envoy.url + "/v2/models/recommender/infer", method="POST", body=b"{}")
    assert headers_only.status == 200 and "x-modelguard-tier" not in headers_only.headers  # no model: never asked
    state = modelguard.state()["models"]
    assert state["chat"]["tiers"]["primary"]["outcomes"]["success"] >= 2
    assert state["small"]["tiers"]["only"]["outcomes"]["success"] == 1
    stats = envoy.stats(EXT_PROC_STATS.replace(".", r"\.") + "(failure_mode_allowed|streams_failed)")
    assert not any(stats.values()), stats

    results: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 20.0
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                answer = chat(url, "llama-3")
                results.append((time.monotonic(), answer.status, answer.headers.get("x-modelguard-tier", "")))
            except OSError as exc:  # no HTTP answer at all: counted as a failure
                results.append((time.monotonic(), 0, type(exc).__name__))
            time.sleep(0.01)

    sender = threading.Thread(target=load, daemon=True)
    sender.start()
    assert wait_for(lambda: len(results) >= 20 or None, 10.0)
    t_kill = time.monotonic()
    modelguard.proc.kill()
    modelguard.proc.wait(timeout=5)
    assert wait_for(lambda: len([r for r in results if r[0] > t_kill + 0.5]) >= 30 or None, 15.0)
    stop.set()
    sender.join(timeout=10)

    after = [r for r in results if r[0] > t_kill]
    failed = [r for r in results if r[1] != 200]
    assert not failed, failed
    assert any(tier == "" for _, _, tier in after), "no request went through without modelguard"
    with capsys.disabled():
        print(
            f"\n[e2e body model] {len(results)} requests, {len(after)} after modelguard was killed, "
            f"{len(failed)} failed; envoy: {envoy.stats(EXT_PROC_STATS.replace('.', '[.]') + 'failure_mode_allowed')}"
        )

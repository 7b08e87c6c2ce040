"""The real inference SDKs through real Envoy and real modelguard, in every tier of the ladder.

tritonclient.http (with its defaults: binary tensors) and the openai client (chat and text
completions, whole and streamed) talk to Envoy on the reference config; behind it, demo model
servers (the primary and light variants, as `modelguard demo` runs them) with injected faults.
In each tier the client gets a parsed answer from the right model, or, in the last tier, an error
its SDK raises with modelguard's message: never an empty result. Readiness checks interleaved with
the failing calls (two per failing call, as tritonclient users do) pass through unjudged, so the
breaker still opens.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from ext_proc.demo.models import Model, variant_for
from ext_proc.demo.openai_api import choose, text_features
from ext_proc.processes import (
    LOCALHOST,
    EnvoyProcess,
    ManagedProcess,
    ModelguardProcess,
    free_ports,
    http_request,
    http_status,
    wait_for,
)
from tests.e2e.e2e_harness import EnvoyFactory, model_cluster_ports

pytestmark = pytest.mark.e2e

KSERVE_MODEL = "recommender"
CHAT_MODEL = "chat"
TIMEOUT_S = 10.0
MAX_FAILING_CALLS = 8
"""Bound of the loops that fail calls until a breaker opens (it takes consecutive_failures: 3)."""

# Two models on the same clusters: the KServe one by its path, the OpenAI one by the base URL's
# /v1 (any model name in the body). The breaker opens on 3 failures in a row (the failure rate
# rule needs every call in the window failed, so the healthy calls before cannot decide when):
# judged with the ready checks, 2 successes after each failure would hold it closed for good.
# The open period outlasts the test, so no half-open probe interferes.
POLICY = """\
defaults:
  breaker: {window: 60s, min_calls: 4, failure_rate: 1.0, consecutive_failures: 3,
            open_duration: 60s, max_open_duration: 60s, half_open_probes: 1}
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers: &ladder
      - {name: primary, route: recommender-resnet50}
      - {name: light,   route: recommender-mobilenet}
      - {name: default, respond: {status: 503}}
  - name: chat
    match: {path_prefix: /v1}
    tiers: *ladder
"""

PRIMARY, LIGHT = "primary", "light"
FAILING = {"error_rate": 1.0}


@dataclass
class Stack:
    envoy: EnvoyProcess
    modelguard: ModelguardProcess
    servers: dict[str, str]
    """variant -> base URL of its model server."""

    @property
    def address(self) -> str:
        """host:port of Envoy's listener, as tritonclient takes it."""
        return f"{LOCALHOST}:{self.envoy.listener_port}"

    def fail(self, variant: str) -> None:
        res = http_request(self.servers[variant] + "/admin/fault", method="PUT", body=json.dumps(FAILING).encode())
        assert res.status == 200, res.body

    def tier_state(self, model: str, tier: str) -> str | None:
        return self.modelguard.tier_state(model, tier)

    def pass_through_count(self) -> float:
        """modelguard_requests_total{tier="none",reason="pass_through"}, summed over models."""
        res = http_request(self.modelguard.admin_url + "/metrics", timeout=2.0)
        total = 0.0
        for line in res.body.decode().splitlines():
            if line.startswith("modelguard_requests_total{") and 'reason="pass_through"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="module")
def models() -> dict[str, Model]:
    return {PRIMARY: variant_for("recommender", PRIMARY), LIGHT: variant_for("recommender", LIGHT)}


def serving(url: str) -> bool:
    return http_status(url + "/v2/health/ready", 0.5) == 200


@pytest.fixture
def model_servers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """One demo model server process per variant, started as `modelguard demo` starts them."""
    ports = dict(zip((PRIMARY, LIGHT), free_ports(2), strict=True))
    failed_before = request.session.testsfailed
    started: list[ManagedProcess] = []
    try:
        for variant, port in ports.items():
            argv = [sys.executable, "-m", "ext_proc.demo.model_server", "--variant", variant]
            argv += ["--host-id", f"{variant}-1", "--port", str(port)]
            started.append(ManagedProcess(argv, tmp_path / f"{variant}.log"))
        urls = {variant: f"http://{LOCALHOST}:{port}" for variant, port in ports.items()}
        assert wait_for(lambda: all(serving(url) for url in urls.values()), 60.0, 0.1), f"model servers {urls}"
        yield urls
    finally:
        for process in started:
            process.stop()
        if request.session.testsfailed > failed_before:
            for process in started:
                print(process.describe())


@pytest.fixture
def stack(
    tmp_path: Path,
    model_servers: dict[str, str],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> Stack:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    modelguard = modelguard_factory(policy)
    ports = {variant: int(url.rsplit(":", 1)[1]) for variant, url in model_servers.items()}
    envoy = envoy_factory(model_cluster_ports(modelguard.grpc_port, [ports[PRIMARY]], [ports[LIGHT]]))
    return Stack(envoy, modelguard, model_servers)


def batch(rows: int, seed: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.random.default_rng(seed).standard_normal((rows, 64)).astype(np.float32)


def triton_infer(client: Any, x: np.ndarray[Any, np.dtype[np.float32]], binary_output: bool | None = None) -> Any:
    """The scores tritonclient parses; binary_output None: the client's defaults throughout."""
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    outputs = None if binary_output is None else [triton.InferRequestedOutput("scores", binary_data=binary_output)]
    result = client.infer(KSERVE_MODEL, [tensor], outputs=outputs)
    scores = result.as_numpy("scores")
    assert scores is not None, f"no scores in {result.get_response()}"
    return scores


def assert_scores_of(model: Model, scores: Any, x: np.ndarray[Any, np.dtype[np.float32]]) -> None:
    assert scores.shape == (len(x), 32)
    np.testing.assert_allclose(scores, model.predict(x), rtol=1e-5, atol=1e-7)


def answer_until_open(stack: Stack, model: str, tier: str, call: Callable[[], None], ready: Callable[[], None]) -> int:
    """Make calls that the next tier answers after ``tier`` failed them (Envoy's retry), each followed
    by two ready checks, until ``tier`` opens on its failed tries (Envoy's access log); how many."""
    for answered in range(1, MAX_FAILING_CALLS + 1):
        call()
        ready()
        ready()
        if wait_for(lambda: stack.tier_state(model, tier) == "open", 0.5, 0.02):
            return answered
    raise AssertionError(f"{model}/{tier} never opened: {stack.modelguard.state()}")


def fail_until_open(stack: Stack, model: str, tier: str, call: Callable[[], str], ready: Callable[[], None]) -> int:
    """Fail calls (each followed by two ready checks) until ``tier`` opens; how many it took.
    ``call`` makes one failing call and returns the message its SDK raised."""
    for failed in range(1, MAX_FAILING_CALLS + 1):
        message = call()
        assert "injected fault: model failed" in message, message
        ready()
        ready()
        if wait_for(lambda: stack.tier_state(model, tier) == "open", 0.5, 0.02):
            return failed
    raise AssertionError(f"{model}/{tier} never opened: {stack.modelguard.state()}")


def test_tritonclient_in_every_tier(stack: Stack, models: dict[str, Model]) -> None:
    client = triton.InferenceServerClient(stack.address, connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S)
    x = batch(2, seed=11)
    try:
        # -------------------------------------------------------------- primary healthy
        assert_scores_of(models[PRIMARY], triton_infer(client, x), x)
        assert_scores_of(models[PRIMARY], triton_infer(client, x, binary_output=False), x)
        assert client.is_model_ready(KSERVE_MODEL)
        assert stack.tier_state(KSERVE_MODEL, PRIMARY) == "closed"

        # -------------------------------------------------------------- primary failing
        stack.fail(PRIMARY)
        passed_before = stack.pass_through_count()

        def answered_by_light() -> None:
            # Envoy retries the failed primary try on the light tier: the client sees its scores
            assert_scores_of(models[LIGHT], triton_infer(client, x), x)

        def ready() -> None:
            # Readiness ignores faults: served by the primary host, passed through unjudged.
            assert client.is_model_ready(KSERVE_MODEL)

        answered = answer_until_open(stack, KSERVE_MODEL, PRIMARY, answered_by_light, ready)
        assert stack.pass_through_count() - passed_before == 2 * answered

        # -------------------------------------------------------------- the light tier answers
        assert_scores_of(models[LIGHT], triton_infer(client, x), x)
        assert_scores_of(models[LIGHT], triton_infer(client, x, binary_output=False), x)
        assert stack.tier_state(KSERVE_MODEL, LIGHT) == "closed"

        # -------------------------------------------------------------- both failing: the last tier
        stack.fail(LIGHT)

        def failing_infer() -> str:
            with pytest.raises(InferenceServerException) as caught:
                triton_infer(client, x)
            assert caught.value.status() == "503"
            return str(caught.value.message())

        failed = fail_until_open(stack, KSERVE_MODEL, LIGHT, failing_infer, ready)
        # Degraded traffic is not retried (README, "Retry-storm control"): one try a call, 3 in a row at the 3rd
        assert failed == 3, "each call to the degraded tier made one try (x-envoy-max-retries: 0)"
        for binary_output in (None, False, True):
            with pytest.raises(InferenceServerException) as caught:
                triton_infer(client, x, binary_output)
            assert caught.value.status() == "503"
            assert caught.value.message() == f"modelguard: {KSERVE_MODEL} is degraded, answered by tier default"
            assert str(caught.value) == f"[503] modelguard: {KSERVE_MODEL} is degraded, answered by tier default"
        assert client.is_model_ready(KSERVE_MODEL), "readiness still passes through to the primary"
    finally:
        client.close()


PROMPT = "trail running shoes in red"
MESSAGES: list[Any] = [{"role": "user", "content": PROMPT}]


def expected_text(model: Model, prompt: str = PROMPT) -> str:
    return " ".join(choose(model.predict_flat(text_features(prompt, 64), 1), None).words)


def assert_answers_of(client: openai.OpenAI, model: Model, tier: str, degraded: bool) -> None:
    """A whole and a streamed chat answer, and a text completion, from ``model``, tagged ``tier``."""
    raw = client.chat.completions.with_raw_response.create(model="demo-chat-model", messages=MESSAGES)
    assert raw.headers["x-modelguard-tier"] == tier
    assert raw.headers.get("x-modelguard-degraded") == ("true" if degraded else None)
    chat = raw.parse()
    assert chat.choices[0].message.content == expected_text(model)
    assert chat.model == "demo-chat-model"
    stream = client.chat.completions.create(model="demo-chat-model", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected_text(model)
    completion = client.completions.create(model="demo-completion-model", prompt=PROMPT)
    assert completion.choices[0].text == expected_text(model)


def test_openai_client_in_every_tier(stack: Stack, models: dict[str, Model]) -> None:
    client = openai.OpenAI(base_url=stack.envoy.url + "/v1", api_key="unused", max_retries=0, timeout=TIMEOUT_S)
    try:
        # -------------------------------------------------------------- primary healthy
        assert_answers_of(client, models[PRIMARY], PRIMARY, degraded=False)
        assert [m.id for m in client.models.list()] == ["recommender"]

        # -------------------------------------------------------------- primary failing
        stack.fail(PRIMARY)

        def answered_by_light() -> None:
            # Envoy retries the failed primary try on the light tier: the client gets its answer
            chat = client.chat.completions.create(model="demo-chat-model", messages=MESSAGES)
            assert chat.choices[0].message.content == expected_text(models[LIGHT])

        def failing_chat() -> str:
            with pytest.raises(openai.InternalServerError) as caught:
                client.chat.completions.create(model="demo-chat-model", messages=MESSAGES)
            assert caught.value.status_code == 503
            return caught.value.message

        def ready() -> None:
            assert [m.id for m in client.models.list()] == ["recommender"]  # GET /v1/models: passes through

        answer_until_open(stack, CHAT_MODEL, PRIMARY, answered_by_light, ready)

        # -------------------------------------------------------------- the light tier answers
        assert_answers_of(client, models[LIGHT], LIGHT, degraded=True)

        # -------------------------------------------------------------- both failing: the last tier
        stack.fail(LIGHT)
        assert fail_until_open(stack, CHAT_MODEL, LIGHT, failing_chat, ready) == 3  # one try a degraded call
        message = f"modelguard: {CHAT_MODEL} is degraded, answered by tier default"
        calls: list[Callable[[], object]] = [
            lambda: client.chat.completions.create(model="m", messages=MESSAGES),
            lambda: client.completions.create(model="m", prompt=PROMPT),
        ]
        for call in calls:
            with pytest.raises(openai.InternalServerError) as caught:
                call()
            error = caught.value
            assert error.status_code == 503
            assert error.message == f"Error code: 503 - {message}"
            assert error.body == {"message": message, "type": "server_error", "param": None, "code": "model_degraded"}
            assert error.response.headers["x-modelguard-tier"] == "default"
            assert int(error.response.headers["retry-after"]) >= 1
        # Streamed: the 503 is raised by create(), before any chunk, not a stream that ends empty.
        chunks: list[object] = []
        with pytest.raises(openai.InternalServerError) as caught:
            chunks.extend(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
        assert chunks == [] and caught.value.message == f"Error code: 503 - {message}"
        with pytest.raises(openai.InternalServerError):
            chunks.extend(client.completions.create(model="m", prompt=PROMPT, stream=True))
        assert chunks == []
    finally:
        client.close()

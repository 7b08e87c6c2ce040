"""The demo model server with the real client SDKs, directly (no Envoy): tritonclient.http with its
defaults (binary tensors) and the openai client (chat and text completions, whole and streamed).
Every answer parses, every error is raised by the SDK with the server's message.

One server process, started the way the demo starts it; each test sets the fault it needs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import openai
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from ext_proc.demo.models import Model, variant_for
from ext_proc.demo.openai_api import choose, text_features
from ext_proc.processes import http_request

TIMEOUT_S = 10.0


def read_port(stream: IO[str], timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        entry = json.loads(line)
        if entry.get("event") == "model_server_ready":
            return int(entry["port"])
    raise AssertionError("the model server never said it was ready")


@pytest.fixture(scope="module")
def light() -> Model:
    return variant_for("recommender", "light")


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    command = [sys.executable, "-m", "ext_proc.demo.model_server", "--variant", "light", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield f"127.0.0.1:{read_port(process.stdout)}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def set_fault(url: str, fault: dict[str, Any]) -> None:
    res = http_request(f"http://{url}/admin/fault", method="PUT", body=json.dumps(fault).encode())
    assert res.status == 200, res.body


@pytest.fixture
def url(server_url: str) -> Iterator[str]:
    set_fault(server_url, {})
    yield server_url
    set_fault(server_url, {})


@pytest.fixture
def triton_client(url: str) -> Iterator[Any]:
    client = triton.InferenceServerClient(url, connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S)
    yield client
    client.close()


@pytest.fixture
def openai_client(url: str) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"http://{url}/v1", api_key="unused", max_retries=0, timeout=TIMEOUT_S)
    yield client
    client.close()


def batch(rows: int, seed: int = 0) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.random.default_rng(seed).standard_normal((rows, 64)).astype(np.float32)


def triton_input(x: np.ndarray[Any, np.dtype[np.float32]], binary: bool = True) -> Any:
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


@pytest.mark.parametrize(
    ("binary_input", "binary_output"),
    [(True, None), (True, True), (True, False), (False, False), (False, True)],
)
def test_tritonclient_gets_parsed_scores(
    triton_client: Any, light: Model, binary_input: bool, binary_output: bool | None
) -> None:
    """None: the client's defaults (no outputs named: it asks for every output in binary)."""
    x = batch(3, seed=5)
    outputs = None if binary_output is None else [triton.InferRequestedOutput("scores", binary_data=binary_output)]
    result = triton_client.infer("any-model-name", [triton_input(x, binary_input)], outputs=outputs, request_id="r")
    scores = result.as_numpy("scores")
    assert scores is not None and scores.dtype == np.float32 and scores.shape == (3, 32)
    np.testing.assert_allclose(scores, light.predict(x), rtol=1e-5, atol=1e-7)
    response = result.get_response()
    assert (response["model_name"], response["id"]) == ("any-model-name", "r")
    assert ("parameters" in response["outputs"][0]) is (binary_output is not False)


def test_tritonclient_health_and_metadata(triton_client: Any) -> None:
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready("whatever")
    assert triton_client.is_model_ready("whatever", model_version="1")
    assert not triton_client.is_model_ready("whatever", model_version="2")
    metadata = triton_client.get_model_metadata("whatever")
    assert metadata["name"] == "whatever" and metadata["inputs"][0]["shape"] == [-1, 64]
    assert "binary_tensor_data" in triton_client.get_server_metadata()["extensions"]


def test_tritonclient_raises_the_servers_errors(url: str, triton_client: Any) -> None:
    with pytest.raises(InferenceServerException) as caught:
        triton_client.infer("m", [triton_input(batch(1)[:, :10])])
    assert caught.value.status() == "400"
    assert "inputs[0].shape: must be [B, 64]" in caught.value.message()
    set_fault(url, {"error_rate": 1.0})
    with pytest.raises(InferenceServerException) as caught:
        triton_client.infer("m", [triton_input(batch(1))])
    assert str(caught.value) == "[503] injected fault: model failed"
    set_fault(url, {"overload_rate": 1.0})
    with pytest.raises(InferenceServerException, match=r"^\[429\] injected overload"):
        triton_client.infer("m", [triton_input(batch(1))])


PROMPT = "red running shoes for trail"


def expected_words(light: Model, prompt: str) -> list[str]:
    return list(choose(light.predict_flat(text_features(prompt, 64), 1), None).words)


def test_openai_chat_completion(openai_client: openai.OpenAI, light: Model) -> None:
    answer = openai_client.chat.completions.create(
        model="any-chat-model", messages=[{"role": "user", "content": PROMPT}]
    )
    assert answer.model == "any-chat-model"
    assert answer.choices[0].message.content == " ".join(expected_words(light, PROMPT))
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.prompt_tokens == 5


def test_openai_chat_completion_streamed(openai_client: openai.OpenAI, light: Model) -> None:
    stream = openai_client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=3,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " ".join(expected_words(light, PROMPT)[:3])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_openai_completions(openai_client: openai.OpenAI, light: Model) -> None:
    answer = openai_client.completions.create(model="m", prompt=[PROMPT, "blue"])
    assert [c.text for c in answer.choices] == [
        " ".join(expected_words(light, PROMPT)),
        " ".join(expected_words(light, "blue")),
    ]
    streamed = list(openai_client.completions.create(model="m", prompt=PROMPT, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == " ".join(expected_words(light, PROMPT))


def test_openai_calls_are_counted_and_obey_faults(url: str, openai_client: openai.OpenAI) -> None:
    assert http_request(f"http://{url}/admin/stats", method="DELETE").status == 200
    openai_client.completions.create(model="m", prompt="x")
    set_fault(url, {"latency_ms": 300})
    started = time.monotonic()
    openai_client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert time.monotonic() - started >= 0.3
    stats = http_request(f"http://{url}/admin/stats").json()
    assert (stats["requests"], stats["served"]) == (2, 2)


def test_openai_models(openai_client: openai.OpenAI) -> None:
    assert [m.id for m in openai_client.models.list()] == ["recommender"]
    assert openai_client.models.retrieve("some-name").id == "some-name"


def test_openai_raises_the_servers_errors(url: str, openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        openai_client.chat.completions.create(model="m", messages=[])
    assert bad.value.status_code == 400 and "messages: required" in bad.value.message
    set_fault(url, {"error_rate": 1.0})
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as failed:
            openai_client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=stream)
        assert failed.value.status_code == 503
        assert "injected fault: model failed" in failed.value.message
        assert isinstance(failed.value.body, dict) and failed.value.body["type"] == "server_error"
    set_fault(url, {"overload_rate": 1.0, "retry_after_s": 2})
    with pytest.raises(openai.RateLimitError) as shed:
        openai_client.completions.create(model="m", prompt="x")
    assert shed.value.response.headers["retry-after"] == "2"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("GET", "/v1/chat/completions", None, 405, "Method Not Allowed"),
        ("POST", "/v1/chat/completions", b"{", 400, "must be JSON"),
        ("POST", "/v1/completions", b"\xff\xfe", 400, "must be JSON"),
        ("POST", "/v1/completions", b"[" * 100_000, 400, "must be JSON"),
        ("POST", "/v1/completions", b" " * (2 * 1024 * 1024), 413, "exceeded"),
        ("POST", "/v1/embeddings", b"{}", 404, "Not Found"),
    ],
)
def test_hostile_openai_requests_get_an_error_object(
    url: str, method: str, path: str, body: bytes | None, status: int, message: str
) -> None:
    res = http_request(f"http://{url}{path}", method=method, body=body, timeout=TIMEOUT_S)
    assert res.status == status
    error = res.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"

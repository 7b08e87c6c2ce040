"""The demo model servers' KServe v2 codec, against the bytes the real tritonclient writes and reads.

tritonclient.http's own request builder and response parser (no network) check that the codec
speaks the binary tensor data extension as the client does: binary inputs by default, binary
outputs when asked, JSON otherwise.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton

from ext_proc.demo.kserve import (
    HEADER_LENGTH,
    BadRequest,
    InferInput,
    check_model_name,
    infer_answer,
    parse_infer_request,
    split_body,
)

SIZE = 64
MAX_BATCH = 8


def rows(count: int, seed: int = 0) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.random.default_rng(seed).standard_normal((count, SIZE)).astype(np.float32)


def client_request(
    batch: np.ndarray[Any, np.dtype[np.float32]],
    *,
    binary_input: bool = True,
    outputs: list[Any] | None = None,
    request_id: str = "",
) -> tuple[bytes, str | None]:
    """The body and Inference-Header-Content-Length tritonclient.http sends for this batch."""
    tensor = triton.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary_input)
    body, json_size = triton.InferenceServerClient.generate_request_body(
        [tensor], outputs=outputs, request_id=request_id
    )
    return body, None if json_size is None else str(json_size)


def parse(body: bytes, header: str | None = None) -> InferInput:
    return parse_infer_request(body, header, SIZE, MAX_BATCH)


def test_the_clients_default_request_is_binary_and_asks_for_binary_outputs() -> None:
    batch = rows(3, seed=1)
    body, header = client_request(batch, request_id="r1")
    assert header is not None, "tritonclient sends binary inputs by default"
    parsed = parse(body, header)
    assert (parsed.request_id, parsed.batch_size, parsed.binary_output) == ("r1", 3, True)
    assert parsed.values == batch.ravel().tolist()


def test_a_json_request_from_the_client() -> None:
    batch = rows(2, seed=2)
    body, header = client_request(batch, binary_input=False, outputs=[triton.InferRequestedOutput("scores", False)])
    assert header is None
    parsed = parse(body, header)
    assert parsed.values == batch.ravel().tolist()
    assert parsed.binary_output is False


@pytest.mark.parametrize(
    ("outputs", "binary"),
    [
        (None, True),  # the client then sets binary_data_output on the request
        ([triton.InferRequestedOutput("scores")], True),
        ([triton.InferRequestedOutput("scores", binary_data=False)], False),
    ],
)
def test_the_output_format_follows_the_request(outputs: list[Any] | None, binary: bool) -> None:
    body, header = client_request(rows(1), outputs=outputs)
    assert parse(body, header).binary_output is binary


@pytest.mark.parametrize("binary", [True, False])
def test_the_client_parses_the_answer(binary: bool) -> None:
    scores = np.linspace(0, 1, 2 * 32, dtype=np.float32)
    body, headers = infer_answer("ranker", "id-1", 2, 32, scores.tolist(), binary)
    length = headers.get(HEADER_LENGTH)
    assert (length is not None) is binary
    assert headers["Content-Type"] == ("application/octet-stream" if binary else "application/json")
    result = triton.InferenceServerClient.parse_response_body(
        body, header_length=None if length is None else int(length)
    )
    output = result.as_numpy("scores")
    assert output is not None and output.dtype == np.float32 and output.shape == (2, 32)
    np.testing.assert_array_equal(output.ravel(), scores)
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("ranker", "1", "id-1")


def header_and_data(document: dict[str, Any], data: bytes) -> tuple[bytes, str]:
    header = json.dumps(document).encode()
    return header + data, str(len(header))


def binary_tensor(size: object, shape: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    tensor = {
        "name": "input",
        "shape": shape or [1, SIZE],
        "datatype": "FP32",
        "parameters": {"binary_data_size": size},
    }
    return {"inputs": [{**tensor, **extra}]}


ONE_ROW = struct.pack(f"<{SIZE}f", *([0.25] * SIZE))


def test_a_hand_written_binary_request() -> None:
    body, header = header_and_data(binary_tensor(256), ONE_ROW)
    assert parse(body, header).values == [0.25] * SIZE
    assert parse(body, f" {header} ").values == [0.25] * SIZE  # surrounding spaces of a header value


AUTO = "auto"
"""The header value that is the JSON object's true size."""
JSON_TENSOR = {"inputs": [{"name": "input", "shape": [1, SIZE], "datatype": "FP32", "data": [0.0] * SIZE}]}


def with_outputs(*outputs: Any) -> dict[str, Any]:
    return {**JSON_TENSOR, "outputs": list(outputs)}


@pytest.mark.parametrize(
    ("document", "data", "header", "message"),
    [
        (binary_tensor(256), ONE_ROW, "abc", "Inference-Header-Content-Length: must be a byte count"),
        (binary_tensor(256), ONE_ROW, "-5", "must be a byte count"),
        (binary_tensor(256), ONE_ROW, "1" * 11, "must be a byte count"),
        (binary_tensor(256), ONE_ROW, "\u0661\u0662", "must be a byte count"),  # non-ASCII digits
        (binary_tensor(256), ONE_ROW, "99999", "more than the body's"),
        (binary_tensor(256), ONE_ROW, "0", "must be JSON"),
        (binary_tensor(256), ONE_ROW, "10", "must be JSON"),  # cuts the JSON short
        (binary_tensor(255), ONE_ROW, AUTO, "64 FP32 values are 256 bytes, got 255"),
        (binary_tensor(256), ONE_ROW[:-4], AUTO, "252 bytes follow the JSON object"),
        (binary_tensor(256), ONE_ROW + b"\0", AUTO, "257 bytes follow the JSON object"),
        (binary_tensor(-1), ONE_ROW, AUTO, "binary_data_size: must be a byte count"),
        (binary_tensor(True), ONE_ROW, AUTO, "binary_data_size: must be a byte count"),
        (binary_tensor(256.0), ONE_ROW, AUTO, "binary_data_size: must be a byte count"),
        (binary_tensor(10**30), ONE_ROW, AUTO, "are 256 bytes"),
        (binary_tensor(512, shape=[2, SIZE]), ONE_ROW, AUTO, "256 bytes follow"),
        (binary_tensor(256, data=[0.0] * SIZE), ONE_ROW, AUTO, "not both"),
        (binary_tensor(256, datatype="FP16"), ONE_ROW, AUTO, "inputs[0].datatype"),
        (binary_tensor(256, name="x" * 500), ONE_ROW, AUTO, "..."),  # a long value is cut short
        (binary_tensor(256, parameters=[1]), ONE_ROW, AUTO, "inputs[0].parameters: must be an object"),
        (
            binary_tensor(256, parameters={"shared_memory_region": "r", "binary_data_size": 256}),
            ONE_ROW,
            AUTO,
            "inputs[0].parameters.shared_memory_region: shared memory is not supported",
        ),
        (JSON_TENSOR, ONE_ROW, AUTO, "256 bytes follow the JSON object, but no input has binary_data_size"),
        (
            {**JSON_TENSOR, "parameters": {"binary_data_output": "yes"}},
            b"",
            None,
            "parameters.binary_data_output: must be true or false",
        ),
        (
            with_outputs({"name": "scores", "parameters": {"binary_data": 1}}),
            b"",
            None,
            "outputs[0].parameters.binary_data: must be true or false",
        ),
        (with_outputs({"name": "scores", "parameters": []}), b"", None, "outputs[0].parameters: must be an object"),
        (
            with_outputs({"name": "scores", "parameters": {"classification": 3}}),
            b"",
            None,
            "classification extension is not supported",
        ),
        (with_outputs({"name": "scores"}, {"name": "scores"}), b"", None, "requested 2 times"),
        (
            with_outputs({"name": "scores", "parameters": {"shared_memory_region": "r"}}),
            b"",
            None,
            "shared memory is not supported",
        ),
    ],
)
def test_bad_requests_are_refused(document: Any, data: bytes, header: str | None, message: str) -> None:
    body = json.dumps(document).encode()
    length = str(len(body)) if header == AUTO else header
    with pytest.raises(BadRequest) as caught:
        parse(body + data, length)
    assert message in str(caught.value)
    assert len(str(caught.value)) < 200


def test_binary_inputs_without_the_header_are_refused() -> None:
    body = json.dumps(binary_tensor(256)).encode()
    for data in (ONE_ROW, b""):
        with pytest.raises(BadRequest, match="binary tensor data needs the Inference-Header-Content-Length header"):
            parse(body + data, None)


def test_non_finite_binary_values_reach_the_model_check() -> None:
    """NaN and infinity parse (they are FP32 values); the model refuses them (a 400 at the server)."""
    data = struct.pack(f"<{SIZE}f", float("nan"), *([0.0] * (SIZE - 1)))
    body, header = header_and_data(binary_tensor(256), data)
    assert np.isnan(parse(body, header).values[0])


def test_split_body() -> None:
    assert split_body(b"{}xy", None) == (b"{}xy", None)
    assert split_body(b"{}xy", "2") == (b"{}", b"xy")
    assert split_body(b"{}", "2") == (b"{}", b"")


def test_model_names() -> None:
    check_model_name("any-name.at_all")
    check_model_name("n" * 256)
    with pytest.raises(BadRequest, match="at most 256"):
        check_model_name("n" * 257)

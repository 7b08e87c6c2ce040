"""The demo model servers' Open Inference Protocol (KServe v2) codec: infer requests in, answers out.

Tensors travel as JSON, or with KServe's binary tensor data extension, which tritonclient uses by
default: the request header ``Inference-Header-Content-Length`` gives the size of the JSON object at
the start of the body, and each input with a ``binary_data_size`` parameter takes that many bytes,
in input order, from what follows (little-endian, row-major, no padding). Outputs are answered as
JSON, or as binary data after the JSON object when the request asks for it (``binary_data`` on a
requested output, else ``binary_data_output`` on the request), with the same header on the answer.

Every request is untrusted: each problem is a `BadRequest` whose message the server answers with a
400. No NumPy here: the server process must not load it before it sets its BLAS threads.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MODEL_VERSION = "1"
INPUT_NAME = "input"
OUTPUT_NAME = "scores"
DATATYPE = "FP32"
FLOAT_BYTES = 4
HEADER_LENGTH = "Inference-Header-Content-Length"
"""The request and answer header of the binary tensor data extension: the JSON object's size."""
BINARY_CONTENT_TYPE = "application/octet-stream"
MAX_NAME_CHARS = 256
"""Longest model name served (any name is: a server of one model answers to the name it is called)."""
_MAX_LENGTH_DIGITS = 10


class BadRequest(Exception):
    """A request the protocol does not allow: answered 400 with this message."""


@dataclass(frozen=True)
class InferInput:
    request_id: str | None
    batch_size: int
    values: list[float]
    binary_output: bool = False
    """Whether the answer carries the output as binary data."""


def check_model_name(name: str) -> None:
    """Any name is this server's model, within bounds (it is echoed in every answer)."""
    if len(name) > MAX_NAME_CHARS:
        raise BadRequest(f"model name: at most {MAX_NAME_CHARS} characters, got {len(name)}")


def parse_infer_request(body: bytes, header_length: str | None, input_size: int, max_batch: int) -> InferInput:
    """Check an infer request's body (and its ``Inference-Header-Content-Length``, if sent)
    against this server's one FP32 input ``[B, input_size]``."""
    json_part, binary = split_body(body, header_length)
    try:
        document = json.loads(json_part)
    except (ValueError, RecursionError):
        message = "request body must be JSON (Open Inference Protocol)"
        if binary is None and b'"binary_data_size"' in body:
            message += f"; binary tensor data needs the {HEADER_LENGTH} header (the size of the JSON object)"
        raise BadRequest(message) from None
    return parse_infer_document(document, binary, input_size, max_batch)


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes | None]:
    """The JSON object and the binary data after it (None: no header, the body is all JSON)."""
    if header_length is None:
        return body, None
    text = header_length.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_LENGTH_DIGITS):
        raise BadRequest(f"{HEADER_LENGTH}: must be a byte count, got {header_length[:40]!r}")
    size = int(text)
    if size > len(body):
        raise BadRequest(f"{HEADER_LENGTH}: {size} is more than the body's {len(body)} bytes")
    return body[:size], body[size:]


def parse_infer_document(document: object, binary: bytes | None, input_size: int, max_batch: int) -> InferInput:
    """The JSON object of an infer request, with the binary data after it (None: none sent)."""
    if not isinstance(document, dict):
        raise BadRequest("request body must be a JSON object")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("id: must be a string")
    parameters = _parameters(document, "parameters")
    binary_output = _requested_binary(document.get("outputs"), _flag(parameters, "binary_data_output", "parameters"))
    inputs = document.get("inputs")
    if inputs is None:
        raise BadRequest("inputs: required")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(f"inputs: must be a list of exactly one tensor, {INPUT_NAME!r}")
    tensor = inputs[0]
    if tensor.get("name") != INPUT_NAME:
        raise BadRequest(f"inputs[0].name: must be {INPUT_NAME!r}, got {quoted(tensor.get('name'))}")
    if tensor.get("datatype") != DATATYPE:
        raise BadRequest(f"inputs[0].datatype: must be {DATATYPE!r}, got {quoted(tensor.get('datatype'))}")
    tensor_parameters = _parameters(tensor, "inputs[0].parameters")
    _refuse_shared_memory(tensor_parameters, "inputs[0].parameters")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(_is_int(d) for d in shape)
        or shape[1] != input_size
        or not 1 <= shape[0] <= max_batch
    ):
        raise BadRequest(
            f"inputs[0].shape: must be [B, {input_size}] with B from 1 to {max_batch}, got {quoted(shape)}"
        )
    batch_size: int = shape[0]
    if "binary_data_size" in tensor_parameters:
        values = _binary_values(tensor, tensor_parameters["binary_data_size"], binary, batch_size * input_size)
    else:
        if binary:
            raise BadRequest(f"{len(binary)} bytes follow the JSON object, but no input has binary_data_size")
        values = _json_values(tensor.get("data"), shape, input_size)
    return InferInput(request_id, batch_size, values, binary_output)


def _parameters(owner: Mapping[str, object], path: str) -> Mapping[str, object]:
    key = path.rsplit(".", 1)[-1]
    value = owner.get(key, {})
    if not isinstance(value, dict):
        raise BadRequest(f"{path}: must be an object")
    return value


def _flag(parameters: Mapping[str, object], key: str, path: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{path}.{key}: must be true or false, got {quoted(value)}")
    return value


def _refuse_shared_memory(parameters: Mapping[str, object], path: str) -> None:
    for key in parameters:
        if key.startswith("shared_memory"):
            raise BadRequest(f"{path}.{key[:60]}: shared memory is not supported, send the data in the body")


def _requested_binary(outputs: object, default: bool) -> bool:
    """Whether the one output goes back as binary data; checks the requested outputs."""
    if outputs is None:
        return default
    if not isinstance(outputs, list) or any(not isinstance(o, dict) or o.get("name") != OUTPUT_NAME for o in outputs):
        raise BadRequest(f"outputs: only {OUTPUT_NAME!r} can be requested")
    if len(outputs) > 1:
        raise BadRequest(f"outputs: {OUTPUT_NAME!r} requested {len(outputs)} times")
    if not outputs:
        return default
    parameters = _parameters(outputs[0], "outputs[0].parameters")
    _refuse_shared_memory(parameters, "outputs[0].parameters")
    classification = parameters.get("classification", 0)
    if classification not in (0, None):
        raise BadRequest("outputs[0].parameters.classification: the classification extension is not supported")
    if "binary_data" not in parameters:
        return default
    return _flag(parameters, "binary_data", "outputs[0].parameters")


def _binary_values(tensor: Mapping[str, object], size: object, binary: bytes | None, count: int) -> list[float]:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BadRequest(f"inputs[0].parameters.binary_data_size: must be a byte count, got {quoted(size)}")
    if "data" in tensor:
        raise BadRequest("inputs[0]: give data or binary_data_size, not both")
    if binary is None:
        raise BadRequest(
            f"inputs[0]: binary tensor data needs the {HEADER_LENGTH} header (the size of the JSON object)"
        )
    needed = count * FLOAT_BYTES
    if size != needed:
        raise BadRequest(f"inputs[0].parameters.binary_data_size: {count} FP32 values are {needed} bytes, got {size}")
    if len(binary) != needed:
        raise BadRequest(f"inputs[0]: {len(binary)} bytes follow the JSON object, binary_data_size says {needed}")
    values = array("f")
    values.frombytes(binary)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


def _json_values(data: object, shape: list[int], input_size: int) -> list[float]:
    batch_size = shape[0]
    if not isinstance(data, list):
        raise BadRequest("inputs[0].data: required, a list of numbers")
    if data and all(isinstance(row, list) for row in data):
        # Nested rows ([B][input_size]) are allowed too; flatten them row-major.
        if len(data) != batch_size or any(len(row) != input_size for row in data):
            raise BadRequest(f"inputs[0].data: nested data must be {batch_size} rows of {input_size}")
        data = [value for row in data for value in row]
    if len(data) != batch_size * input_size:
        raise BadRequest(f"inputs[0].data: shape {shape} needs {batch_size * input_size} values, got {len(data)}")
    if not all(type(value) is float or type(value) is int for value in data):
        raise BadRequest("inputs[0].data: every value must be a number")
    return data


def infer_answer(
    model_name: str,
    request_id: str,
    batch_size: int,
    output_size: int,
    scores: Sequence[float],
    binary_output: bool,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a successful infer answer."""
    output: dict[str, object] = {"name": OUTPUT_NAME, "shape": [batch_size, output_size], "datatype": DATATYPE}
    document = {"model_name": model_name, "model_version": MODEL_VERSION, "id": request_id, "outputs": [output]}
    if not binary_output:
        output["data"] = list(scores)
        return json.dumps(document).encode(), {"Content-Type": "application/json"}
    raw = array("f", scores)
    if sys.byteorder == "big":
        raw.byteswap()
    data = raw.tobytes()
    output["parameters"] = {"binary_data_size": len(data)}
    header = json.dumps(document).encode()
    return header + data, {"Content-Type": BINARY_CONTENT_TYPE, HEADER_LENGTH: str(len(header))}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def quoted(value: object) -> str:
    """A client's value in an error message, at most 60 characters of its repr."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

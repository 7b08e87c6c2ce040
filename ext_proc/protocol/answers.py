"""The bodies of the answers modelguard gives itself, in the protocol the client speaks.

A client library parses an error only in its own protocol's shape: tritonclient and the KServe v2
client read ``{"error": "<string>"}`` (a nested object breaks tritonclient's exception formatting),
the openai SDK reads ``{"error": {"message", "type", "code"}}`` (a string loses the message), and a
gRPC client reads a status (Envoy's trailers-only answer). A 200 with an inference-looking body is
worse than any error: the clients return an empty result, or fail far from the cause. So the
built-in answer and a ``respond`` tier without a body of its own are an error in the client's
protocol, with ``Retry-After``. Which HTTP protocol: the model's ``protocol`` setting, or, with
``auto``, the request's path (an OpenAI endpoint, else KServe).
"""

from __future__ import annotations

import json

from ext_proc.protocol.paths import routed_path

KSERVE = "kserve"
OPENAI = "openai"
AUTO = "auto"
PROTOCOLS = (AUTO, KSERVE, OPENAI)
"""The values of a model's ``protocol`` setting."""

OPENAI_ENDINGS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
"""Paths of the OpenAI endpoints modelguard knows (an OpenAI-compatible server serves them)."""


def speaks_openai(protocol: str, path: str) -> bool:
    """Whether an HTTP client of a model with this ``protocol`` setting wants OpenAI's error shape."""
    if protocol != AUTO:
        return protocol == OPENAI
    return routed_path(path).endswith(OPENAI_ENDINGS)


def kserve_error(message: str) -> str:
    return json.dumps({"error": message})


def openai_error(message: str, code: str) -> str:
    # "server_error": the type OpenAI itself gives an overloaded or unavailable engine
    return json.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": code}})

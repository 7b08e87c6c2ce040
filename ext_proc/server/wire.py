"""The protobuf side of the adapter: every answer the guard can give, serialized in advance.

Each ``Decision`` maps to a fixed request-phase ProcessingResponse, so the common request costs a
dictionary lookup instead of building and serializing messages. Only a request carrying spoofed
``x-modelguard-*`` headers needs a message built on the spot, to name the headers to remove.

The response phase has no answers of its own: modelguard judges the response and ends the
stream (see server.py), and Envoy copies the tags for the client (``x-modelguard-tier``,
``x-modelguard-degraded``, ``x-modelguard-arm``) from the request headers set here onto the response
(``response_headers_to_add`` with ``%REQ(...)%`` in envoy/envoy.yaml).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3.external_processor_pb2 import (
    BodyResponse,
    CommonResponse,
    HeaderMutation,
    HeadersResponse,
    ImmediateResponse,
    ProcessingResponse,
    TrailersResponse,
)
from envoy.type.v3.http_status_pb2 import HttpStatus

from ext_proc.core.guard import Decision
from ext_proc.protocol.answers import KSERVE, OPENAI, kserve_error, openai_error
from ext_proc.protocol.grpc_codes import GRPC_STATUS_CODES
from ext_proc.protocol.headers import ARM, DEGRADED, MAX_RETRIES, REASON, RETRY_AFTER, ROUTE, TIER, UPSTREAM_TIMEOUT

_OVERWRITE = HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
_UNAVAILABLE = GRPC_STATUS_CODES["UNAVAILABLE"]
GRPC = "grpc"

EMPTY_REQUEST_HEADERS = ProcessingResponse(request_headers=HeadersResponse()).SerializeToString()
EMPTY_RESPONSE_HEADERS = ProcessingResponse(response_headers=HeadersResponse()).SerializeToString()
EMPTY_REQUEST_BODY = ProcessingResponse(request_body=BodyResponse()).SerializeToString()
EMPTY_RESPONSE_BODY = ProcessingResponse(response_body=BodyResponse()).SerializeToString()
EMPTY_REQUEST_TRAILERS = ProcessingResponse(request_trailers=TrailersResponse()).SerializeToString()
EMPTY_RESPONSE_TRAILERS = ProcessingResponse(response_trailers=TrailersResponse()).SerializeToString()
"""Continue-unchanged answers, one per phase: Envoy waits for an answer to every message it sends."""

READ_BODY_MESSAGE = ProcessingResponse(
    request_headers=HeadersResponse(), mode_override=ProcessingMode(request_body_mode=ProcessingMode.BUFFERED)
)
READ_BODY = READ_BODY_MESSAGE.SerializeToString()
"""The request-headers answer that asks Envoy for the whole request body (the filter's
``allow_mode_override``): the model is named in it (protocol/bodies.py). BUFFERED, not
BUFFERED_PARTIAL: Envoy applies the header mutations of a body-phase answer only to a fully buffered
body."""


def _set(headers: Iterable[tuple[str, str]]) -> list[HeaderValueOption]:
    # Envoy 1.40 reads raw_value; a value set through `value` arrives empty.
    return [
        HeaderValueOption(header=HeaderValue(key=key, raw_value=value.encode()), append_action=_OVERWRITE)
        for key, value in headers
    ]


@dataclass(frozen=True, slots=True)
class WireAnswers:
    """The serialized answers for one decision."""

    request_http: bytes
    request_grpc: bytes
    request_openai: bytes
    """An answer given directly to an OpenAI client (the same as ``request_http`` when routed)."""
    request_message: ProcessingResponse | None
    """The request-phase message to copy when spoofed headers must also be removed; None for an
    immediate response, which never reaches an upstream."""
    request_is_last: bool
    """Nothing of the response is judged or rewritten (unmatched, answered directly), so the
    stream can end with the request-phase answer."""


def build_answers(decision: Decision) -> WireAnswers:
    if decision.passes_through:
        message = ProcessingResponse(request_headers=HeadersResponse())
        wire = message.SerializeToString()
        return WireAnswers(wire, wire, wire, message, request_is_last=True)
    client_headers = [(TIER, decision.tier_name)]
    if decision.degraded:
        client_headers.append((DEGRADED, "true"))
    if decision.arm is not None:
        client_headers.append((ARM, decision.arm))
    if decision.route is not None:
        message = ProcessingResponse(
            request_headers=HeadersResponse(
                response=CommonResponse(
                    header_mutation=HeaderMutation(
                        set_headers=_set(
                            [(ROUTE, decision.route), *client_headers, (REASON, decision.reason), *_held_back(decision)]
                        )
                    ),
                    clear_route_cache=True,
                )
            )
        )
        wire = message.SerializeToString()
        return WireAnswers(wire, wire, wire, message, request_is_last=False)
    http, grpc, openai = (
        _immediate(decision, client_headers, flavour).SerializeToString() for flavour in (KSERVE, GRPC, OPENAI)
    )
    return WireAnswers(http, grpc, openai, None, request_is_last=True)


def build_body_answers(decision: Decision) -> WireAnswers:
    """A decision's answers to the request-body message (a model named in the body): the same
    header mutation and route-cache clearing in a body response; answers given directly as they are."""
    answers = build_answers(decision)
    if decision.passes_through:
        return WireAnswers(EMPTY_REQUEST_BODY, EMPTY_REQUEST_BODY, EMPTY_REQUEST_BODY, None, request_is_last=True)
    message = answers.request_message
    if message is None:
        return answers
    body = ProcessingResponse(request_body=BodyResponse(response=message.request_headers.response))
    wire = body.SerializeToString()
    return WireAnswers(wire, wire, wire, body, request_is_last=False)


def with_body(message: ProcessingResponse, body: bytes) -> bytes:
    """A body-phase answer that also replaces the body (a model name rewritten for its tier), with
    the content-length to match: Envoy keeps the client's in BUFFERED mode."""
    copy = ProcessingResponse()
    copy.CopyFrom(message)
    common = copy.request_body.response
    common.body_mutation.body = body
    common.header_mutation.set_headers.extend(_set([("content-length", str(len(body)))]))
    serialized: bytes = copy.SerializeToString()
    return serialized


def _held_back(decision: Decision) -> list[tuple[str, str]]:
    """Envoy's retry headers for a request whose tier struggles (core/decision.py ``holds_retries``)."""
    if not decision.holds_retries:
        return []
    if decision.deadline_ms is None:
        return [(MAX_RETRIES, "0")]
    return [(MAX_RETRIES, "0"), (UPSTREAM_TIMEOUT, str(decision.deadline_ms))]


def _immediate(decision: Decision, client_headers: list[tuple[str, str]], flavour: str) -> ProcessingResponse:
    """An answer given directly, in the client's protocol (protocol/answers.py), with Retry-After."""
    respond = decision.respond
    headers = [*client_headers, (REASON, decision.reason), (RETRY_AFTER, str(decision.retry_after))]
    if respond is not None:
        status, content_type, body = respond.status, respond.content_type, respond.body
        grpc_status = respond.grpc_status
        details = f"modelguard: {decision.model_name} is degraded, answered by tier {decision.tier_name}"
        code = "model_degraded"
        if decision.shed:
            details = f"modelguard: {decision.model_name} is over its concurrency limit; retry later"
            code = "model_overloaded"
    else:
        status, content_type, grpc_status, body = 503, "application/json", _UNAVAILABLE, ""
        details = f"modelguard: no tier of {decision.model_name} is available ({decision.reason})"
        code = "model_unavailable"
    immediate = ImmediateResponse(status=HttpStatus(code=status), details=details)
    if flavour == GRPC:
        # Envoy turns this into a trailers-only gRPC answer; grpc-message carries the text.
        immediate.grpc_status.status = grpc_status
        immediate.body = details.encode()
    else:
        if not body:  # the policy gave none: an error the client's library parses
            body = openai_error(details, code) if flavour == OPENAI else kserve_error(details)
            content_type = "application/json"
        headers.append(("content-type", content_type))
        immediate.body = body.encode()
    immediate.headers.set_headers.extend(_set(headers))
    return ProcessingResponse(immediate_response=immediate)


def with_removals(message: ProcessingResponse, names: list[str]) -> bytes:
    """The request-phase answer that also removes spoofed headers (route cache cleared)."""
    copy = ProcessingResponse()
    copy.CopyFrom(message)
    common = copy.request_headers.response
    common.header_mutation.remove_headers.extend(names)
    common.clear_route_cache = True
    serialized: bytes = copy.SerializeToString()
    return serialized

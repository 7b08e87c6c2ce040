"""The ext_proc gRPC servicer: protobuf in, one call into the guard, cached serialized protobuf out.

One bidirectional stream per HTTP request. Envoy waits for an answer to every message it
sends, so every phase gets one, including phases modelguard did not ask for. Whatever happens
on a stream, its ticket is settled when the stream ends: recorded if a response was seen,
released otherwise, so a dropped stream never leaves a probe slot or an in-flight count taken.

The servicer ends a stream itself (a clean close) as soon as it has nothing left to do on it:
after the request-phase answer when nothing of the response matters (unmatched, answered
directly), and, instead of answering, once the response headers are judged. The ext_proc
protocol's rule for a stream the server closes cleanly is that Envoy goes on without consulting
it again, with the message as it was: so the response phase costs one message, not two, and
neither side spends a round trip on the end of the stream (measured on a no-op processor through
Envoy: ending instead of answering saves about 40 µs of processor CPU per request, a fifth of
it). The client's tags are added by Envoy from the request headers (see wire.py). Only a gRPC
answer whose grpc-status is still to come in trailers gets an answer to its response headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import grpc
from envoy.service.ext_proc.v3.external_processor_pb2 import ProcessingRequest
from google.protobuf.message import DecodeError

from ext_proc.core.admission import NO_HEADERS
from ext_proc.core.guard import Decision, Guard, Ticket
from ext_proc.core.hosts import NO_HOST
from ext_proc.core.outcomes import TOO_MANY_REQUESTS
from ext_proc.core.tries import LOGGED_STATUS
from ext_proc.observe.log_budget import LogBudget
from ext_proc.protocol.answers import speaks_openai
from ext_proc.protocol.bodies import model_of
from ext_proc.protocol.grpc_codes import RESOURCE_EXHAUSTED
from ext_proc.protocol.headers import (
    CONTENT_TYPE,
    GRPC_CONTENT_TYPE,
    GRPC_STATUS,
    MODEL_SCOPE,
    PATH,
    PREFIX,
    RETRY_AFTER,
    STATUS,
    TRY_LOG,
    TRY_LOG_ON,
)
from ext_proc.server import wire
from ext_proc.server.metrics import ServerStats

SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"

log = logging.getLogger("modelguard.server")

_RESPONSE_HEADER_NAMES = frozenset({STATUS, GRPC_STATUS, CONTENT_TYPE, RETRY_AFTER})
_TRAILER_NAMES = frozenset({GRPC_STATUS})
ATTRIBUTES_KEY = "envoy.filters.http.ext_proc"
"""Where Envoy puts the attributes it was told to send (ProcessingRequest.attributes)."""
UPSTREAM_ADDRESS = "upstream.address"
"""The attribute naming the upstream host that answered: host-aware judgement (core/hosts.py)."""
UPSTREAM_ATTEMPTS = "upstream.request_attempt_count"
"""The attribute counting Envoy's tries of the request: more than one, and earlier tries failed
(their failures come from the access log: core/tries.py)."""
MAX_ATTEMPTS = 100
Pending = tuple[int, float, tuple[str, int, bool]]
"""A gRPC answer judged on its trailers: (status, when its headers came, (host, attempts, logged)))."""
CANCEL_WINDOW = 0.01
"""How long a stream whose gRPC answer awaits its grpc-status waits, at its end, to tell a
cancel from a half-close. grpc.aio returns EOF from read() for both; a cancel is delivered as
the handler's cancellation a moment later (at most 0.3 ms apart when measured idle)."""
DECISION_SAMPLE_MASK = 7
"""decision_duration_seconds observes one request-headers message in 8: timing every one cost
more than the decision itself."""
_CONTINUE = {
    "request_body": wire.EMPTY_REQUEST_BODY,
    "response_body": wire.EMPTY_RESPONSE_BODY,
    "request_trailers": wire.EMPTY_REQUEST_TRAILERS,
}


MAX_CACHED_ANSWERS = 65_536
"""Wire answers one plan keeps (a few hundred bytes each); past it the cache starts over."""


class Plan:
    """A guard with the wire form of its answers. A stream keeps the plan it started with, so
    swapping in a new policy (see ExtProcServicer.use) never mixes one policy's tickets with
    another's.

    An answer is serialized the first time its decision is given and kept, keyed by the decision
    (a tier and a reason; the HTTP and gRPC forms are built together): the common request costs
    a dictionary lookup, as when every answer was prebuilt, but a policy's start-up (and each
    reload) builds none, however many decisions its tiers, reasons and variants make."""

    __slots__ = ("answers", "body_answers", "guard", "models", "reads_bodies", "scoped", "wanted")

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.answers: dict[Decision, wire.WireAnswers] = {}
        self.body_answers: dict[Decision, wire.WireAnswers] = {}
        """The answers to request-body messages, for models named in the body."""
        self.reads_bodies = guard.reads_bodies
        """Some model is matched by the model an OpenAI-style body names (protocol/bodies.py)."""
        self.wanted = guard.header_names | {CONTENT_TYPE}
        self.models = frozenset(model.name for model in guard.models)
        self.scoped = len(self.models) > 1
        """Whether a stream's model scope (MODEL_SCOPE) can change a decision: with one model there is
        no other model to confuse it with, so the metadata is not read."""

    def build(self, decision: Decision) -> wire.WireAnswers:
        answers = wire.build_answers(decision)
        if len(self.answers) >= MAX_CACHED_ANSWERS:
            self.answers.clear()
        self.answers[decision] = answers
        return answers

    def build_body(self, decision: Decision) -> wire.WireAnswers:
        answers = wire.build_body_answers(decision)
        if len(self.body_answers) >= MAX_CACHED_ANSWERS:
            self.body_answers.clear()
        self.body_answers[decision] = answers
        return answers


class ExtProcServicer:
    def __init__(self, guard: Guard, stats: ServerStats | None = None) -> None:
        self.stats = stats or ServerStats()
        self.errors = self.stats.errors
        self._sampled = 0
        self._bad_input_logs = LogBudget()
        self._failure_logs = LogBudget()
        self.use(guard)

    def use(self, guard: Guard) -> None:
        """Serve with this guard from the next stream on; streams under way finish on the old one."""
        self.plan = Plan(guard)

    @property
    def guard(self) -> Guard:
        return self.plan.guard

    def handler(self) -> grpc.GenericRpcHandler:
        # Serializers None: the servicer parses what it reads (so that a message that does not
        # parse is its to count and log, not gRPC's) and writes bytes it serialized or prebuilt.
        method = grpc.stream_stream_rpc_method_handler(
            self.process, request_deserializer=None, response_serializer=None
        )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {"Process": method})

    async def process(self, _requests: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        # context.read()/write() rather than an async generator: measured ~5% more streams per
        # second, the generator plumbing being a good part of a no-op processor's cost.
        plan = self.plan
        guard = plan.guard
        ticket: Ticket | None = None
        pending: Pending | None = None  # gRPC answer whose grpc-status is still to come
        try:
            scope = self._scope(plan, context) if plan.scoped else None
            while True:
                message = await context.read()
                if message is grpc.aio.EOF:
                    if pending is not None:
                        await asyncio.sleep(CANCEL_WINDOW)  # raises CancelledError on a cancel
                    break
                try:
                    request = ProcessingRequest.FromString(message)
                except DecodeError:
                    await self._refuse_unparseable(context, len(message))
                phase = request.WhichOneof("request")
                if phase == "request_headers":
                    if ticket is not None:
                        self.errors.count("request_headers_twice")
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request_headers twice")
                    self._sampled = sampled = (self._sampled + 1) & DECISION_SAMPLE_MASK
                    if sampled:
                        ticket, answer, last = self._decide(plan, request, scope)
                    else:
                        started = time.perf_counter()
                        ticket, answer, last = self._decide(plan, request, scope)
                        self.stats.decision_duration.observe(time.perf_counter() - started)
                    await context.write(answer)
                    if last:
                        return
                elif phase == "response_headers":
                    if ticket is None:
                        self.errors.count("response_before_request")
                        await context.write(wire.EMPTY_RESPONSE_HEADERS)
                        continue
                    pending = self._on_response(guard, ticket, request, context)
                    if pending is None:
                        return  # judged: ending the stream is the answer (Envoy goes on unchanged)
                    await context.write(wire.EMPTY_RESPONSE_HEADERS)  # stay for the trailers
                elif phase == "response_trailers":
                    if ticket is not None and pending is not None:
                        grpc_status = _grpc_status(_read(request.response_trailers.trailers, _TRAILER_NAMES))
                        guard.record(ticket, pending[0], grpc_status, pending[1], *pending[2])
                        pending = None
                        return
                    await context.write(wire.EMPTY_RESPONSE_TRAILERS)
                elif phase == "request_body" and ticket is not None and awaits_body(ticket, guard):
                    ticket, answer, last = self._decide_body(plan, request, ticket, scope)
                    await context.write(answer)
                    if last:
                        return
                elif phase in _CONTINUE:
                    self.errors.count(f"unrequested_{phase}")
                    await context.write(_CONTINUE[phase])
                else:
                    self.errors.count("empty_message")
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a ProcessingRequest with no phase set")
        except grpc.aio.AbortError:
            raise
        except asyncio.CancelledError:
            pending = None  # cancelled, not half-closed: the answer never completed, nothing to judge
            raise
        except Exception:
            # A bug must cost one stream (Envoy fails open on it), never the server.
            self.errors.count("internal")
            suppressed = self._failure_logs.take()
            if suppressed is not None:
                log.exception("stream failed", extra={"event": "stream_failed", "suppressed_since_last": suppressed})
            await context.abort(grpc.StatusCode.INTERNAL, "modelguard failed on this stream")
        finally:
            if ticket is not None:
                if pending is not None:
                    guard.record(ticket, pending[0], None, pending[1], *pending[2])
                else:
                    guard.release(ticket)

    async def _refuse_unparseable(self, context: grpc.aio.ServicerContext[Any, Any], size: int) -> None:
        self.errors.count("parse_error")
        suppressed = self._bad_input_logs.take()
        if suppressed is not None:
            log.warning(
                "a message that is not a ProcessingRequest",
                extra={
                    "event": "parse_error",
                    "bytes": size,
                    "peer": context.peer(),
                    "suppressed_since_last": suppressed,
                },
            )
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not a ProcessingRequest")

    def _scope(self, plan: Plan, context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
        """The stream's MODEL_SCOPE metadata; a name the policy lacks (routing rendered from another
        policy) is counted, and then matches no model."""
        for key, value in context.invocation_metadata() or ():
            if key == MODEL_SCOPE:
                scope = value if isinstance(value, str) else ""
                if scope not in plan.models:
                    self.errors.count("unknown_model_scope")
                return scope
        return None

    def _decide(self, plan: Plan, request: ProcessingRequest, scope: str | None = None) -> tuple[Ticket, bytes, bool]:
        """The ticket, the request-phase answer, and whether that answer ends the stream."""
        wanted = plan.wanted
        values: dict[str, str] = {}
        spoofed: list[str] | None = None
        for header in request.request_headers.headers.headers:
            key = header.key
            if key in wanted:
                values[key] = _text(header)
            elif key.startswith(PREFIX):  # Envoy hands header names over lower-cased
                if spoofed is None:
                    spoofed = []
                spoofed.append(key)
        guard = plan.guard
        ticket = guard.decide(values, scope)
        decision = ticket.decision
        if decision is guard.unmatched and plan.reads_bodies and self._body_to_come(guard, request, values):
            answer = wire.READ_BODY if spoofed is None else wire.with_removals(wire.READ_BODY_MESSAGE, spoofed)
            return guard.awaiting_body(values), answer, False
        answers = plan.answers.get(decision)
        if answers is None:
            answers = plan.build(decision)
        if answers.request_message is None:  # answered directly: in the client's protocol
            return ticket, in_protocol(answers, decision, values), answers.request_is_last
        if spoofed is not None:
            return ticket, wire.with_removals(answers.request_message, spoofed), answers.request_is_last
        return ticket, answers.request_http, answers.request_is_last

    @staticmethod
    def _body_to_come(guard: Guard, request: ProcessingRequest, values: dict[str, str]) -> bool:
        """A request no header matched, that may name its model in a body still to come."""
        return not request.request_headers.end_of_stream and guard.reads_body(values)

    def _decide_body(
        self, plan: Plan, request: ProcessingRequest, waiting: Ticket, scope: str | None
    ) -> tuple[Ticket, bytes, bool]:
        """The ticket and answer of a request whose model its body names (protocol/bodies.py)."""
        found = model_of(request.request_body.body)
        values = waiting.headers
        ticket = plan.guard.decide_body(values, None if found is None else found.name, scope)
        decision = ticket.decision
        answers = plan.body_answers.get(decision)
        if answers is None:
            answers = plan.build_body(decision)
        if answers.request_message is None:
            return ticket, in_protocol(answers, decision, values), answers.request_is_last
        served = decision.served_model
        if served is not None and found is not None:
            body = request.request_body.body
            renamed = body[: found.start] + json.dumps(served).encode() + body[found.end :]
            return ticket, wire.with_body(answers.request_message, renamed), answers.request_is_last
        return ticket, answers.request_http, answers.request_is_last

    def _on_response(
        self,
        guard: Guard,
        ticket: Ticket,
        request: ProcessingRequest,
        context: grpc.aio.ServicerContext[Any, Any] | None = None,
    ) -> Pending | None:
        """Record the outcome now, or return (status, time, upstream) when grpc-status comes in trailers."""
        values = _read(request.response_headers.headers, _RESPONSE_HEADER_NAMES)
        try:
            status = int(values.get(STATUS, ""))
        except ValueError:
            self.errors.count("bad_status")
            guard.release(ticket)
            return None
        grpc_status = _grpc_status(values)
        if (
            grpc_status is None
            and status == 200
            and values.get(CONTENT_TYPE, "").startswith(GRPC_CONTENT_TYPE)
            and not request.response_headers.end_of_stream
        ):
            return status, guard.clock(), _upstream(request, status, context)
        overloaded = status == TOO_MANY_REQUESTS or grpc_status == RESOURCE_EXHAUSTED
        retry_after = _seconds(values.get(RETRY_AFTER)) if overloaded else None  # read for a 429 only
        guard.record(ticket, status, grpc_status, None, *_upstream(request, status, context), retry_after)
        return None


def in_protocol(answers: wire.WireAnswers, decision: Decision, values: Mapping[str, str]) -> bytes:
    """An answer given directly, in the client's protocol: gRPC, OpenAI or KServe's."""
    if values.get(CONTENT_TYPE, "").startswith(GRPC_CONTENT_TYPE):
        return answers.request_grpc
    if speaks_openai(decision.protocol, values.get(PATH, "")):
        return answers.request_openai
    return answers.request_http


def awaits_body(ticket: Ticket, guard: Guard) -> bool:
    """The stream asked Envoy for the request body (``Guard.awaiting_body``), not yet answered."""
    return ticket.decision is guard.unmatched and ticket.headers is not NO_HEADERS


def _text(header: Any) -> str:
    """A header's value: Envoy sends raw_value (bytes, possibly not UTF-8); kept lossless."""
    raw: bytes = header.raw_value
    return raw.decode("utf-8", "surrogateescape") if raw else str(header.value)


def _read(header_map: Any, names: frozenset[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for header in header_map.headers:
        key = header.key  # read once: each attribute access on a upb message builds a new str
        if key in names:
            values[key] = _text(header)
    return values


def _upstream(
    request: ProcessingRequest, status: int, context: grpc.aio.ServicerContext[Any, Any] | None
) -> tuple[str, int, bool]:
    """The upstream host that answered, the tries Envoy made (from the attributes it sends with the
    response headers: ``response_attributes`` in envoy/envoy.yaml; (NO_HOST, 1) without), and
    whether this call's failed tries are logged (core/tries.py): only asked of an answer it could
    matter to, so a healthy call reads no metadata."""
    attributes = request.attributes.get(ATTRIBUTES_KEY)
    if attributes is None:
        return NO_HOST, 1, False
    fields = attributes.fields
    address = fields.get(UPSTREAM_ADDRESS)
    found = fields.get(UPSTREAM_ATTEMPTS)
    attempts = 1 if found is None else _count(found)
    logged = (attempts > 1 or status >= LOGGED_STATUS) and _declares_log(context)
    return NO_HOST if address is None else str(address.string_value), attempts, logged


def _declares_log(context: grpc.aio.ServicerContext[Any, Any] | None) -> bool:
    """The stream's Envoy logs its failed tries to modelguard: it says so in the stream's metadata
    (``grpc_service.initial_metadata`` of the ext_proc filter, beside the ``upstream_log``)."""
    if context is None:
        return False
    return any(key == TRY_LOG and value == TRY_LOG_ON for key, value in context.invocation_metadata() or ())


def _count(value: Any) -> int:
    """A count attribute: Envoy sends a number (or, from some versions, its text); 1 if neither."""
    if value.HasField("number_value"):
        number = value.number_value
        return int(number) if 1 <= number <= MAX_ATTEMPTS else 1
    text = value.string_value
    if not (0 < len(text) <= 3 and text.isascii() and text.isdigit()):
        return 1
    return int(text) if 1 <= int(text) <= MAX_ATTEMPTS else 1


def _seconds(text: str | None) -> float | None:
    """A Retry-After in seconds; None when absent, or an HTTP date (taken as absent: 1 s)."""
    if text is None or not (0 < len(text) <= 6 and text.isascii() and text.isdigit()):
        return None
    return float(text)


def _grpc_status(values: dict[str, str]) -> int | None:
    text = values.get(GRPC_STATUS)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None

"""One demo model server as an aiohttp application: the model behind the Open Inference Protocol
(KServe v2, JSON and binary tensors) and OpenAI-compatible text endpoints, and the fault it is told
to have.

Inference calls (``POST .../infer``, ``/v1/chat/completions``, ``/v1/completions``) all obey the
injected fault and are counted; health, readiness and metadata ignore faults on purpose (a node
whose GPU overheats still passes its health check, which is why a breaker judging real responses is
needed). The server answers to any model name: it serves one model, under whatever name it is
called, as a client's SDK defaults expect.

Every response carries ``x-demo-host`` and ``x-demo-variant`` so that the load generator can tell
which host and which variant answered, even through Envoy.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web

from ext_proc import __version__
from ext_proc.demo import openai_api
from ext_proc.demo.capacity import RETRY_AFTER_S, Capacity
from ext_proc.demo.errors import (
    BAD_REQUEST,
    FAULT,
    OVERLOAD,
    ErrorAnswer,
    json_body,
    json_error,
    json_errors,
    openai_error,
)
from ext_proc.demo.faults import MAX_LATENCY_MS, Fault, FaultError, LatencyDistribution
from ext_proc.demo.host_faults import FaultGate, default_seed
from ext_proc.demo.kserve import (
    DATATYPE,
    HEADER_LENGTH,
    INPUT_NAME,
    MODEL_VERSION,
    OUTPUT_NAME,
    BadRequest,
    InferInput,
    check_model_name,
    infer_answer,
    parse_infer_request,
)

if TYPE_CHECKING:
    from ext_proc.demo.models import Model

HOST_HEADER = "x-demo-host"
VARIANT_HEADER = "x-demo-variant"
DEFAULT_MAX_HANG_S = 60.0
DEFAULT_MAX_BATCH = 64

OUTCOMES = (
    "ok",
    "error",
    "overload",
    "reset",
    "hang_timeout",
    "shutdown",
    "cancelled",
    "bad_request",
    "not_found",
)
"""How an inference call ended; ``ok`` is served, every other one is failed.

``cancelled``: the client went away (or the server stopped) while the request waited.
"""

Parsed = TypeVar("Parsed")


@dataclass
class Stats:
    """Counts of inference calls (other endpoints are not counted)."""

    requests: int = 0
    in_flight: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))

    def reset(self) -> None:
        self.requests = self.in_flight
        self.outcomes = dict.fromkeys(OUTCOMES, 0)


def check_options(base_latency_ms: float, base_latency_sigma: float, max_hang_s: float, max_batch: int) -> None:
    """Raise ValueError for settings a server cannot run with (checked before it binds)."""
    if not 0 <= base_latency_ms <= MAX_LATENCY_MS:
        raise ValueError(f"base latency must be from 0 to {MAX_LATENCY_MS:g} ms, got {base_latency_ms:g}")
    if not 0 <= base_latency_sigma <= 3:
        raise ValueError(f"base latency sigma must be from 0 to 3, got {base_latency_sigma:g}")
    if not 0 < max_hang_s <= 3600:
        raise ValueError(f"max hang must be above 0 and at most 3600 s, got {max_hang_s:g}")
    if max_batch < 1:
        raise ValueError(f"max batch must be at least 1, got {max_batch}")


class ModelServer:
    """One model variant behind the protocols, plus the fault it is told to have.

    Random draws (which request fails, resets, is shed; sampled latencies) come from one
    ``random.Random(seed)``, so a run with the same seed and the same request sequence fails the
    same requests.
    """

    def __init__(
        self,
        model: Model,
        host_id: str,
        *,
        seed: int | None = None,
        base_latency_ms: float = 0.0,
        base_latency_sigma: float = 0.0,
        max_hang_s: float = DEFAULT_MAX_HANG_S,
        max_batch: int = DEFAULT_MAX_BATCH,
        fault: Fault | None = None,
        workers: int = 0,
        queue: int = 0,
    ) -> None:
        check_options(base_latency_ms, base_latency_sigma, max_hang_s, max_batch)
        self.capacity = Capacity(workers, queue)
        """Workers and queue (demo/capacity.py); 0 workers: every call runs at once."""
        self.model = model
        self.host_id = host_id
        self.seed = default_seed(host_id) if seed is None else seed
        self.rng = random.Random(self.seed)
        base_latency = (
            LatencyDistribution("lognormal", median_ms=base_latency_ms, sigma=base_latency_sigma)
            if base_latency_ms > 0
            else None
        )
        self.max_batch = max_batch
        self.stats = Stats()
        self.gate = FaultGate(self.rng, base_latency, max_hang_s, fault)
        self._ids = 0

    @property
    def fault(self) -> Fault:
        return self.gate.fault

    def set_fault(self, fault: Fault) -> None:
        """Replace the fault (not merge); wakes hung requests so they see the new one."""
        self.gate.set_fault(fault)

    def clear_fault(self) -> None:
        self.set_fault(Fault())

    def close(self) -> None:
        """Release every hung request (answered 503) so that shutdown does not wait for them."""
        self.gate.close()

    def fault_json(self) -> dict[str, object]:
        return {"active": self.fault.active, "fault": self.fault.to_json()}

    def stats_json(self) -> dict[str, object]:
        outcomes = dict(self.stats.outcomes)
        return {
            "host_id": self.host_id,
            "model": self.model.name,
            "variant": self.model.variant,
            "seed": self.seed,
            "requests": self.stats.requests,
            "served": outcomes["ok"],
            "failed": sum(count for kind, count in outcomes.items() if kind != "ok"),
            "in_flight": self.stats.in_flight,
            "hanging": self.gate.hanging,
            "outcomes": outcomes,
            "fault": self.fault_json(),
        }

    def app(self) -> web.Application:
        app = web.Application(middlewares=[json_errors])
        app.on_response_prepare.append(self._tag_response)
        add = app.router.add_route
        add("GET", "/v2", self._server_metadata)
        add("GET", "/v2/health/live", self._live)
        add("GET", "/v2/health/ready", self._ready)
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            add("GET", prefix, self._model_metadata)
            add("GET", prefix + "/ready", self._model_ready)
            add("POST", prefix + "/infer", self._infer)
        add("POST", "/v1/chat/completions", self._chat)
        add("POST", "/v1/completions", self._completion)
        add("GET", "/v1/models", self._openai_models)
        add("GET", "/v1/models/{name}", self._openai_model)
        add("GET", "/admin/fault", self._get_fault)
        add("PUT", "/admin/fault", self._put_fault)
        add("DELETE", "/admin/fault", self._delete_fault)
        add("GET", "/admin/stats", self._get_stats)
        add("GET", "/metrics", self._metrics)
        add("DELETE", "/admin/stats", self._delete_stats)
        return app

    async def _tag_response(self, _request: web.Request, response: web.StreamResponse) -> None:
        response.headers[HOST_HEADER] = self.host_id
        response.headers[VARIANT_HEADER] = self.model.variant

    # -------------------------------------------------------------- health and metadata

    async def _server_metadata(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"name": "modelguard-demo-model-server", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    async def _live(self, _request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def _ready(self, _request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    def _refused_model(self, request: web.Request) -> tuple[str, web.Response] | None:
        """A model name out of bounds (400) or a version this server lacks (404); else None."""
        name = request.match_info["name"]
        try:
            check_model_name(name)
        except BadRequest as exc:
            return "bad_request", json_error(400, str(exc))
        version = request.match_info.get("version")
        if version is not None and version != MODEL_VERSION:
            return "not_found", json_error(
                404, f"unknown version {version[:40]!r} of model {name!r}; this server has version {MODEL_VERSION}"
            )
        return None

    async def _model_metadata(self, request: web.Request) -> web.Response:
        refused = self._refused_model(request)
        if refused is not None:
            return refused[1]
        model = self.model
        return web.json_response(
            {
                "name": request.match_info["name"],
                "versions": [MODEL_VERSION],
                "platform": "numpy",
                "inputs": [{"name": INPUT_NAME, "datatype": DATATYPE, "shape": [-1, model.input_size]}],
                "outputs": [{"name": OUTPUT_NAME, "datatype": DATATYPE, "shape": [-1, model.output_size]}],
                "parameters": {
                    "model": model.name,
                    "variant": model.variant,
                    "host_id": self.host_id,
                    "layer_sizes": list(model.spec.layer_sizes),
                    "parameter_count": model.parameter_count,
                    "max_batch": self.max_batch,
                },
            }
        )

    async def _model_ready(self, request: web.Request) -> web.Response:
        refused = self._refused_model(request)
        if refused is not None:
            return refused[1]
        return web.json_response({"name": request.match_info["name"], "ready": True})

    async def _openai_models(self, _request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self._openai_model_json(self.model.name)]})

    async def _openai_model(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            check_model_name(name)
        except BadRequest as exc:
            return openai_error(400, str(exc), BAD_REQUEST)
        return web.json_response(self._openai_model_json(name))

    def _openai_model_json(self, name: str) -> dict[str, object]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "modelguard-demo"}

    # -------------------------------------------------------------- inference calls

    async def _infer(self, request: web.Request) -> web.StreamResponse:
        return await self._counted(self._answer_infer(request))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._counted(self._call(request, openai_error, _chat_request, self._answer_text))

    async def _completion(self, request: web.Request) -> web.StreamResponse:
        def parse(body: bytes) -> openai_api.TextRequest:
            return openai_api.parse_completion(json_body(body), self.max_batch)

        return await self._counted(self._call(request, openai_error, parse, self._answer_text))

    async def _counted(self, answering: Awaitable[tuple[str, web.StreamResponse]]) -> web.StreamResponse:
        self.stats.requests += 1
        self.stats.in_flight += 1
        outcome = "cancelled"
        try:
            outcome, response = await answering
            return response
        finally:
            self.stats.in_flight -= 1
            self.stats.outcomes[outcome] += 1

    async def _answer_infer(self, request: web.Request) -> tuple[str, web.StreamResponse]:
        refused = self._refused_model(request)
        if refused is not None:
            return refused

        def parse(body: bytes) -> InferInput:
            header_length = request.headers.get(HEADER_LENGTH)
            return parse_infer_request(body, header_length, self.model.input_size, self.max_batch)

        return await self._call(request, self._kserve_error, parse, self._answer_tensors)

    async def _call(
        self,
        request: web.Request,
        error: ErrorAnswer,
        parse: Callable[[bytes], Parsed],
        respond: Callable[[web.Request, Parsed], Awaitable[web.StreamResponse]],
    ) -> tuple[str, web.StreamResponse]:
        """The outcome and the answer of one inference call, errors worded by ``error``.

        Order: read and check the request (400, 413); take a worker, or 429 with a full queue
        (demo/capacity.py); then, on the worker, act out the fault (`FaultGate.check`: hang,
        shed, delay, reset, fail); then run the model and ``respond``.
        """
        try:
            parsed = parse(await request.read())
            async with self.capacity.slot() as running:
                if not running:
                    full = error(429, "queue full: try again later", OVERLOAD)
                    full.headers["Retry-After"] = str(RETRY_AFTER_S)
                    return "overload", full
                faulted = await self.gate.check(request, error)
                if faulted is not None:
                    return faulted
                return "ok", await respond(request, parsed)
        except BadRequest as exc:
            return "bad_request", error(400, str(exc), BAD_REQUEST)
        except web.HTTPRequestEntityTooLarge as exc:
            return "bad_request", error(413, exc.text or "request body too large", BAD_REQUEST)

    def _kserve_error(self, status: int, message: str, kind: str) -> web.Response:
        return json_error(status, message, host=self.host_id) if kind == FAULT else json_error(status, message)

    def _predict(self, values: list[float], batch_size: int) -> list[float]:
        # On the event loop thread: a few milliseconds for the demo's single rows (about 26 ms for
        # a full 64-row batch of the primary), and no thread pool to size on a box where ten
        # processes share two cores.
        try:
            return self.model.predict_flat(values, batch_size)
        except (ValueError, OverflowError) as exc:
            raise BadRequest(f"inputs[0].data: {exc}") from None

    def _next_id(self) -> str:
        self._ids += 1
        return f"{self.host_id}-{self._ids}"

    async def _answer_tensors(self, request: web.Request, parsed: InferInput) -> web.StreamResponse:
        scores = self._predict(parsed.values, parsed.batch_size)
        request_id = parsed.request_id if parsed.request_id is not None else self._next_id()
        name = request.match_info["name"]
        body, headers = infer_answer(
            name, request_id, parsed.batch_size, self.model.output_size, scores, parsed.binary_output
        )
        return web.Response(body=body, headers=headers)

    async def _answer_text(self, request: web.Request, parsed: openai_api.TextRequest) -> web.StreamResponse:
        rows = [openai_api.text_features(prompt, self.model.input_size) for prompt in parsed.prompts]
        scores = self._predict([value for row in rows for value in row], len(rows))
        width = self.model.output_size
        choices = [
            openai_api.choose(scores[index * width : (index + 1) * width], parsed.max_tokens)
            for index in range(len(rows))
        ]
        answer_id, created = self._next_id(), int(time.time())
        if not parsed.stream:
            return web.json_response(openai_api.answer(parsed, choices, answer_id, created))
        response = web.StreamResponse(
            headers={"Content-Type": openai_api.SSE_CONTENT_TYPE, "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        for event in openai_api.stream_events(parsed, choices, answer_id, created):
            await response.write(event)
        await response.write_eof()
        return response

    # -------------------------------------------------------------- admin

    async def _get_fault(self, _request: web.Request) -> web.Response:
        return web.json_response(self.fault_json())

    async def _put_fault(self, request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.read())
        except (ValueError, RecursionError):
            return json_error(400, "fault must be a JSON object")
        try:
            fault = Fault.parse(data)
        except FaultError as exc:
            return json_error(400, str(exc), errors=exc.errors)
        self.set_fault(fault)
        return web.json_response(self.fault_json())

    async def _delete_fault(self, _request: web.Request) -> web.Response:
        self.clear_fault()
        return web.json_response(self.fault_json())

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.capacity.metrics(self.host_id), content_type="text/plain")

    async def _get_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats_json())

    async def _delete_stats(self, _request: web.Request) -> web.Response:
        self.stats.reset()
        return web.json_response(self.stats_json())


def _chat_request(body: bytes) -> openai_api.TextRequest:
    return openai_api.parse_chat(json_body(body))

"""A demo model server: Open Inference Protocol (KServe v2) over HTTP/JSON, with runtime faults.

The demo needs model servers that behave like real ones when healthy (real inference, standard
protocol, so Envoy and modelguard see ordinary traffic) and that can be made sick on cue, on the
same port, without a restart: slow, failing, overloaded, resetting connections, or hung. Health
endpoints ignore faults on purpose: a node whose GPU overheats still passes its health check,
which is why a breaker judging real responses is needed.

This module must not import NumPy at its top: ``main`` sets the BLAS thread variables first
(the demo runs about ten processes on two cores), and only then imports the models.

Every response carries ``x-demo-host`` and ``x-demo-variant`` so that the load generator can tell
which host and which variant answered, even through Envoy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import socket
import struct
import sys
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ext_proc import __version__

if TYPE_CHECKING:
    from ext_proc.demo.models import Model

HOST_HEADER = "x-demo-host"
VARIANT_HEADER = "x-demo-variant"
MODEL_VERSION = "1"
INPUT_NAME = "input"
OUTPUT_NAME = "scores"
DATATYPE = "FP32"

DEFAULT_PORT = 8000
DEFAULT_MAX_HANG_S = 60.0
DEFAULT_MAX_BATCH = 64
DEFAULT_SHUTDOWN_TIMEOUT_S = 2.0
MAX_LATENCY_MS = 60_000.0
"""Cap of any added latency, so that a mistyped fault cannot park requests for hours."""

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
"""How an infer request ended; ``ok`` is served, every other one is failed.

``cancelled``: the client went away (or the server stopped) while the request waited.
"""

BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class FaultError(ValueError):
    """A fault document that does not validate; ``errors`` names every problem."""

    def __init__(self, errors: Sequence[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = list(errors)


@dataclass(frozen=True)
class LatencyDistribution:
    """Random added latency. Lognormal because real service times are right-skewed (a median and a
    long tail); uniform for when hard bounds matter more than realism (tests)."""

    distribution: str
    median_ms: float = 0.0
    sigma: float = 0.0
    min_ms: float = 0.0
    max_ms: float = 0.0

    def sample_ms(self, rng: random.Random) -> float:
        if self.distribution == "lognormal":
            value = rng.lognormvariate(math.log(self.median_ms), self.sigma) if self.sigma else self.median_ms
        else:
            value = rng.uniform(self.min_ms, self.max_ms)
        return min(value, MAX_LATENCY_MS)

    def to_json(self) -> dict[str, object]:
        if self.distribution == "lognormal":
            return {"distribution": "lognormal", "median_ms": self.median_ms, "sigma": self.sigma}
        return {"distribution": "uniform", "min_ms": self.min_ms, "max_ms": self.max_ms}


@dataclass(frozen=True)
class Fault:
    """The whole injected behaviour of a server, replaced (never merged) by each PUT, so that a
    scenario step states a host's behaviour completely and does not depend on the step before."""

    latency_ms: float = 0.0
    latency: LatencyDistribution | None = None
    error_rate: float = 0.0
    error_status: int = 503
    fail_fast: bool = False
    """Failed calls answer at once instead of after the added latency (a GPU error surfaces
    immediately; the calls that succeed are the slow ones)."""
    hang: bool = False
    reset_rate: float = 0.0
    overload_rate: float = 0.0
    overload_status: int = 429
    retry_after_s: int = 1

    @property
    def active(self) -> bool:
        """Whether it changes any answer (statuses alone, with no rate, change nothing)."""
        return bool(
            self.latency_ms
            or self.latency is not None
            or self.error_rate
            or self.hang
            or self.reset_rate
            or self.overload_rate
        )

    def to_json(self) -> dict[str, object]:
        return {
            "latency_ms": self.latency_ms,
            "latency": self.latency.to_json() if self.latency else None,
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "fail_fast": self.fail_fast,
            "hang": self.hang,
            "reset_rate": self.reset_rate,
            "overload_rate": self.overload_rate,
            "overload_status": self.overload_status,
            "retry_after_s": self.retry_after_s,
        }

    @classmethod
    def parse(cls, data: object) -> Fault:
        """Validate a fault document (every field optional, unknown fields refused).

        Raises FaultError naming every bad field, so one PUT shows everything that is wrong.
        """
        if not isinstance(data, dict):
            raise FaultError(["fault must be a JSON object"])
        errors: list[str] = []
        default = cls()
        errors.extend(f"{key}: unknown field" for key in data if key not in default.to_json())

        def rate(key: str) -> float:
            return _number(data[key], key, 0.0, 1.0, errors) if key in data else 0.0

        latency_ms = (
            _number(data["latency_ms"], "latency_ms", 0.0, MAX_LATENCY_MS, errors) if "latency_ms" in data else 0.0
        )
        latency = _distribution(data["latency"], errors) if data.get("latency") is not None else None
        error_status = default.error_status
        if "error_status" in data:
            error_status = _integer(data["error_status"], "error_status", 400, 599, errors)
        overload_status = data.get("overload_status", default.overload_status)
        if not _is_int(overload_status) or overload_status not in (429, 503):
            errors.append(f"overload_status: must be 429 or 503, got {overload_status!r}")
        retry_after_s = default.retry_after_s
        if "retry_after_s" in data:
            retry_after_s = _integer(data["retry_after_s"], "retry_after_s", 0, 3600, errors)
        hang = data.get("hang", False)
        if not isinstance(hang, bool):
            errors.append(f"hang: must be true or false, got {hang!r}")
        fail_fast = data.get("fail_fast", False)
        if not isinstance(fail_fast, bool):
            errors.append(f"fail_fast: must be true or false, got {fail_fast!r}")
        fault = cls(
            latency_ms=latency_ms,
            latency=latency,
            error_rate=rate("error_rate"),
            error_status=error_status,
            fail_fast=fail_fast is True,
            hang=hang is True,
            reset_rate=rate("reset_rate"),
            overload_rate=rate("overload_rate"),
            overload_status=overload_status if isinstance(overload_status, int) else default.overload_status,
            retry_after_s=retry_after_s,
        )
        if errors:
            raise FaultError(errors)
        return fault


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object, path: str, low: float, high: float, errors: list[str]) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        errors.append(f"{path}: must be a number from {low:g} to {high:g}, got {value!r}")
        return low
    return float(value)


def _integer(value: object, path: str, low: int, high: int, errors: list[str]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors.append(f"{path}: must be an integer from {low} to {high}, got {value!r}")
        return low
    return value


def _distribution(data: object, errors: list[str]) -> LatencyDistribution | None:
    if not isinstance(data, dict):
        errors.append("latency: must be an object with a distribution")
        return None
    kind = data.get("distribution")
    if kind == "lognormal":
        fields = ("median_ms", "sigma")
    elif kind == "uniform":
        fields = ("min_ms", "max_ms")
    else:
        errors.append(f"latency.distribution: must be 'lognormal' or 'uniform', got {kind!r}")
        return None
    errors.extend(f"latency.{key}: unknown field for {kind}" for key in data if key not in ("distribution", *fields))
    errors.extend(f"latency.{key}: required for {kind}" for key in fields if key not in data)
    if any(key not in data for key in fields):
        return None
    before = len(errors)
    if kind == "lognormal":
        median = _number(data["median_ms"], "latency.median_ms", 0.0, MAX_LATENCY_MS, errors)
        sigma = _number(data["sigma"], "latency.sigma", 0.0, 3.0, errors)
        if len(errors) == before and median <= 0:
            errors.append("latency.median_ms: must be above 0")
        return LatencyDistribution("lognormal", median_ms=median, sigma=sigma)
    low = _number(data["min_ms"], "latency.min_ms", 0.0, MAX_LATENCY_MS, errors)
    high = _number(data["max_ms"], "latency.max_ms", 0.0, MAX_LATENCY_MS, errors)
    if len(errors) == before and high < low:
        errors.append(f"latency.max_ms: must be at least min_ms ({low:g}), got {high:g}")
    return LatencyDistribution("uniform", min_ms=low, max_ms=high)


class BadRequest(Exception):
    """An infer request the protocol does not allow: answered 400 with this message."""


@dataclass(frozen=True)
class InferInput:
    request_id: str | None
    batch_size: int
    values: list[float]


def parse_infer_request(body: object, input_size: int, max_batch: int) -> InferInput:
    """Check an Open Inference Protocol JSON body against this server's one FP32 input."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("id: must be a string")
    if "parameters" in body and not isinstance(body["parameters"], dict):
        raise BadRequest("parameters: must be an object")
    outputs = body.get("outputs")
    if outputs is not None and (
        not isinstance(outputs, list) or any(not isinstance(o, dict) or o.get("name") != OUTPUT_NAME for o in outputs)
    ):
        raise BadRequest(f"outputs: only {OUTPUT_NAME!r} can be requested")
    inputs = body.get("inputs")
    if inputs is None:
        raise BadRequest("inputs: required")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(f"inputs: must be a list of exactly one tensor, {INPUT_NAME!r}")
    tensor = inputs[0]
    if tensor.get("name") != INPUT_NAME:
        raise BadRequest(f"inputs[0].name: must be {INPUT_NAME!r}, got {tensor.get('name')!r}")
    if tensor.get("datatype") != DATATYPE:
        raise BadRequest(f"inputs[0].datatype: must be {DATATYPE!r}, got {tensor.get('datatype')!r}")
    parameters = tensor.get("parameters")
    if isinstance(parameters, dict) and "binary_data_size" in parameters:
        raise BadRequest("inputs[0]: binary tensor data is not supported, send JSON data")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(_is_int(d) for d in shape)
        or shape[1] != input_size
        or not 1 <= shape[0] <= max_batch
    ):
        raise BadRequest(f"inputs[0].shape: must be [B, {input_size}] with B from 1 to {max_batch}, got {shape!r}")
    batch_size: int = shape[0]
    data = tensor.get("data")
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
    return InferInput(request_id, batch_size, data)


@dataclass
class Stats:
    """Counts of infer requests (other endpoints are not counted)."""

    requests: int = 0
    in_flight: int = 0
    hanging: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))

    def reset(self) -> None:
        self.requests = self.in_flight
        self.outcomes = dict.fromkeys(OUTCOMES, 0)


def json_error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


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
    """One model variant behind the protocol, plus the fault it is told to have.

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
    ) -> None:
        check_options(base_latency_ms, base_latency_sigma, max_hang_s, max_batch)
        self.model = model
        self.host_id = host_id
        self.seed = default_seed(host_id) if seed is None else seed
        self.rng = random.Random(self.seed)
        self.base_latency = (
            LatencyDistribution("lognormal", median_ms=base_latency_ms, sigma=base_latency_sigma)
            if base_latency_ms > 0
            else None
        )
        self.max_hang_s = max_hang_s
        self.max_batch = max_batch
        self.stats = Stats()
        self.closing = False
        self._fault = fault or Fault()
        self._changed = asyncio.Event()
        self._ids = 0

    @property
    def fault(self) -> Fault:
        return self._fault

    def set_fault(self, fault: Fault) -> None:
        """Replace the fault (not merge); wakes hung requests so they see the new one."""
        self._fault = fault
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def clear_fault(self) -> None:
        self.set_fault(Fault())

    def close(self) -> None:
        """Release every hung request (answered 503) so that shutdown does not wait for them."""
        self.closing = True
        self.set_fault(self._fault)

    def fault_json(self) -> dict[str, object]:
        return {"active": self._fault.active, "fault": self._fault.to_json()}

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
            "hanging": self.stats.hanging,
            "outcomes": outcomes,
            "fault": self.fault_json(),
        }

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_json_errors])
        app.on_response_prepare.append(self._tag_response)
        add = app.router.add_route
        add("GET", "/v2", self._server_metadata)
        add("GET", "/v2/health/live", self._live)
        add("GET", "/v2/health/ready", self._ready)
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            add("GET", prefix, self._model_metadata)
            add("GET", prefix + "/ready", self._model_ready)
            add("POST", prefix + "/infer", self._infer)
        add("GET", "/admin/fault", self._get_fault)
        add("PUT", "/admin/fault", self._put_fault)
        add("DELETE", "/admin/fault", self._delete_fault)
        add("GET", "/admin/stats", self._get_stats)
        add("DELETE", "/admin/stats", self._delete_stats)
        return app

    async def _tag_response(self, _request: web.Request, response: web.StreamResponse) -> None:
        response.headers[HOST_HEADER] = self.host_id
        response.headers[VARIANT_HEADER] = self.model.variant

    def _unknown_model(self, request: web.Request) -> web.Response | None:
        name = request.match_info["name"]
        version = request.match_info.get("version")
        if name != self.model.name:
            return json_error(404, f"unknown model {name!r}; this server serves {self.model.name!r}")
        if version is not None and version != MODEL_VERSION:
            return json_error(404, f"unknown version {version!r} of model {name!r}")
        return None

    async def _server_metadata(self, _request: web.Request) -> web.Response:
        return web.json_response({"name": "modelguard-demo-model-server", "version": __version__, "extensions": []})

    async def _live(self, _request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def _ready(self, _request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    async def _model_metadata(self, request: web.Request) -> web.Response:
        unknown = self._unknown_model(request)
        if unknown is not None:
            return unknown
        model = self.model
        return web.json_response(
            {
                "name": model.name,
                "versions": [MODEL_VERSION],
                "platform": "numpy",
                "inputs": [{"name": INPUT_NAME, "datatype": DATATYPE, "shape": [-1, model.input_size]}],
                "outputs": [{"name": OUTPUT_NAME, "datatype": DATATYPE, "shape": [-1, model.output_size]}],
                "parameters": {
                    "variant": model.variant,
                    "host_id": self.host_id,
                    "layer_sizes": list(model.spec.layer_sizes),
                    "parameter_count": model.parameter_count,
                    "max_batch": self.max_batch,
                },
            }
        )

    async def _model_ready(self, request: web.Request) -> web.Response:
        unknown = self._unknown_model(request)
        if unknown is not None:
            return unknown
        return web.json_response({"name": self.model.name, "ready": True})

    async def _infer(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        self.stats.in_flight += 1
        outcome = "cancelled"
        try:
            outcome, response = await self._answer(request)
            return response
        finally:
            self.stats.in_flight -= 1
            self.stats.outcomes[outcome] += 1

    async def _answer(self, request: web.Request) -> tuple[str, web.StreamResponse]:
        """The outcome and the answer of one infer request.

        Order: validate the request; wait out a hang; draw reset/overload/error; answer an
        overload at once (shedding is fast); sleep the base latency plus the fault's; then reset,
        fail, or run the model.
        """
        unknown = self._unknown_model(request)
        if unknown is not None:
            return "not_found", unknown
        try:
            body = json.loads(await request.read())
        except (ValueError, RecursionError):
            return "bad_request", json_error(400, "request body must be JSON (Open Inference Protocol)")
        except web.HTTPRequestEntityTooLarge as exc:
            return "bad_request", json_error(413, exc.text or "request body too large")
        try:
            parsed = parse_infer_request(body, self.model.input_size, self.max_batch)
        except BadRequest as exc:
            return "bad_request", json_error(400, str(exc))

        ended = await self._wait_out_hang()
        if ended == "hang_timeout":
            return ended, json_error(503, f"injected hang: no answer within {self.max_hang_s:g} s")
        if ended == "shutdown":
            return ended, json_error(503, "server shutting down")

        fault = self._fault
        reset_draw, overload_draw, error_draw = self.rng.random(), self.rng.random(), self.rng.random()
        if overload_draw < fault.overload_rate:
            return "overload", web.json_response(
                {"error": "injected overload: try again later"},
                status=fault.overload_status,
                headers={"Retry-After": str(fault.retry_after_s)},
            )
        if fault.fail_fast and error_draw < fault.error_rate:
            return "error", json_error(fault.error_status, "injected fault: model failed", host=self.host_id)
        delay_ms = fault.latency_ms
        if fault.latency is not None:
            delay_ms += fault.latency.sample_ms(self.rng)
        if self.base_latency is not None:
            delay_ms += self.base_latency.sample_ms(self.rng)
        if delay_ms > 0:
            await asyncio.sleep(min(delay_ms, MAX_LATENCY_MS) / 1000)
        if reset_draw < fault.reset_rate:
            _reset_connection(request)
            # aiohttp's write of this answer to the aborted transport fails quietly.
            return "reset", web.Response(status=500)
        if error_draw < fault.error_rate:
            return "error", json_error(fault.error_status, "injected fault: model failed", host=self.host_id)

        # On the event loop thread: a few milliseconds for the demo's single rows (about 26 ms for
        # a full 64-row batch of the primary), and no thread pool to size on a box where ten
        # processes share two cores.
        try:
            scores = self.model.predict_flat(parsed.values, parsed.batch_size)
        except (ValueError, OverflowError) as exc:
            return "bad_request", json_error(400, f"inputs[0].data: {exc}")
        self._ids += 1
        return "ok", web.json_response(
            {
                "model_name": self.model.name,
                "model_version": MODEL_VERSION,
                "id": parsed.request_id if parsed.request_id is not None else f"{self.host_id}-{self._ids}",
                "outputs": [
                    {
                        "name": OUTPUT_NAME,
                        "shape": [parsed.batch_size, self.model.output_size],
                        "datatype": DATATYPE,
                        "data": scores,
                    }
                ],
            }
        )

    async def _wait_out_hang(self) -> str | None:
        """None once no hang fault holds the request; else how it ended (time out, shutdown)."""
        if self.closing:
            return "shutdown"
        if not self._fault.hang:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_hang_s
        self.stats.hanging += 1
        try:
            while self._fault.hang and not self.closing:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return "hang_timeout"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
            return "shutdown" if self.closing else None
        finally:
            self.stats.hanging -= 1

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

    async def _get_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats_json())

    async def _delete_stats(self, _request: web.Request) -> web.Response:
        self.stats.reset()
        return web.json_response(self.stats_json())


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own errors (no route, wrong method, body too large) as JSON, like ours."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response({"error": exc.reason}, status=exc.status, headers=headers)


def _reset_connection(request: web.Request) -> None:
    """Abort with SO_LINGER 0: the client gets a TCP RST, not a clean close."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def default_seed(host_id: str) -> int:
    """Stable across processes (unlike hash()), so each host has its own reproducible draws."""
    return zlib.crc32(host_id.encode())


@dataclass
class RunningModelServer:
    server: ModelServer
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        self.server.close()
        await self.runner.cleanup()


async def start_model_server(
    model: Model,
    host_id: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int | None = None,
    base_latency_ms: float = 0.0,
    base_latency_sigma: float = 0.0,
    max_hang_s: float = DEFAULT_MAX_HANG_S,
    max_batch: int = DEFAULT_MAX_BATCH,
    fault: Fault | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
) -> RunningModelServer:
    """Serve ``model`` on host:port (0: a free port) in the running event loop."""
    server = ModelServer(
        model,
        host_id,
        seed=seed,
        base_latency_ms=base_latency_ms,
        base_latency_sigma=base_latency_sigma,
        max_hang_s=max_hang_s,
        max_batch=max_batch,
        fault=fault,
    )
    # handler_cancellation: a client that gives up on a hung or slow request ends it here too,
    # so in_flight/hanging stay true and shutdown does not wait for it.
    runner = web.AppRunner(
        server.app(),
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=False)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple):
            bound = int(address[1])
            break
    return RunningModelServer(server, runner, host, bound)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ext_proc.demo.model_server",
        description="A demo model server (Open Inference Protocol v2) with runtime fault injection.",
    )
    parser.add_argument("--model", default="recommender", help="model name (recommender)")
    parser.add_argument("--variant", default="primary", help="model variant: primary, light or v2 (primary)")
    parser.add_argument("--host-id", help="this host's id, in x-demo-host (MODEL-VARIANT)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"listen port; 0: free ({DEFAULT_PORT})")
    parser.add_argument("--seed", type=int, help="seed of the fault draws (default: from the host id)")
    parser.add_argument(
        "--base-latency-ms", type=float, default=0.0, help="latency added to every answer when healthy (0)"
    )
    parser.add_argument(
        "--base-latency-sigma",
        type=float,
        default=0.0,
        help="> 0: the base latency is lognormal with that sigma around its median (0: fixed)",
    )
    parser.add_argument("--max-hang-s", type=float, default=DEFAULT_MAX_HANG_S, help="cap of a hang (60)")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="largest batch (64)")
    parser.add_argument("--fault", help="initial fault, as the JSON of PUT /admin/fault")
    parser.add_argument("--blas-threads", type=int, default=1, help="BLAS/OpenMP threads, set before NumPy loads (1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.blas_threads < 1:
        parser.error("--blas-threads must be at least 1")
    try:
        check_options(args.base_latency_ms, args.base_latency_sigma, args.max_hang_s, args.max_batch)
    except ValueError as exc:
        parser.error(str(exc))
    # Before the first NumPy import in this process; without effect if NumPy is already loaded.
    for variable in BLAS_THREAD_VARIABLES:
        os.environ[variable] = str(args.blas_threads)
    from ext_proc.demo.models import spec_for, variant_for

    try:
        spec_for(args.model, args.variant)
    except ValueError as exc:
        parser.error(str(exc))
    fault: Fault | None = None
    if args.fault is not None:
        try:
            fault = Fault.parse(json.loads(args.fault))
        except (ValueError, RecursionError) as exc:
            parser.error(f"--fault: {exc}")
    host_id = args.host_id or f"{args.model}-{args.variant}"
    model = variant_for(args.model, args.variant)
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "seed": args.seed,
        "base_latency_ms": args.base_latency_ms,
        "base_latency_sigma": args.base_latency_sigma,
        "max_hang_s": args.max_hang_s,
        "max_batch": args.max_batch,
        "fault": fault,
    }
    try:
        return asyncio.run(_serve(model, host_id, options, started))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        return 130


async def _serve(model: Model, host_id: str, options: Mapping[str, Any], started: float) -> int:
    try:
        running = await start_model_server(model, host_id, **options)
    except OSError as exc:
        _emit({"event": "model_server_failed", "host_id": host_id, "error": str(exc)}, sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    _emit(
        {
            "event": "model_server_ready",
            "host_id": host_id,
            "model": model.name,
            "variant": model.variant,
            "host": running.host,
            "port": running.port,
            "url": running.url,
            "pid": os.getpid(),
            "seed": running.server.seed,
            "blas_threads": int(os.environ[BLAS_THREAD_VARIABLES[0]]),
            "startup_s": round(time.monotonic() - started, 3),
        },
        sys.stdout,
    )
    await stop.wait()
    await running.stop()
    _emit({"event": "model_server_stopped", "host_id": host_id, "stats": running.server.stats_json()}, sys.stdout)
    return 0


def _emit(entry: Mapping[str, object], stream: Any) -> None:
    print(json.dumps(entry), file=stream, flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""The floor for any Python ext_proc server: a grpc.aio ExternalProcessor that does nothing.

It answers every request-headers and response-headers message with an empty HeadersResponse
(continue, unchanged) and does nothing else: no decision, no header mutation, no metrics. The
request is parsed by protobuf (a processor has to know the phase) and the answers are serialized
once at start-up and written as bytes, as modelguard does.

Two ways to write a bidirectional-streaming handler in grpc.aio, both kept for comparison:
  readwrite  (default) a coroutine that loops on ``await context.read()`` / ``await context.write()``:
             the cheapest no-op measured here, so the floor;
  generator  ``async for request in requests: yield answer``, the shape of modelguard's servicer
             (ext_proc/server.py) today.

It also serves the standard grpc.health.v1.Health (SERVING), because the reference Envoy config
health-checks its ext_proc cluster. Binds 127.0.0.1 only.

It runs on the standard asyncio loop unless asked for uvloop (``--event-loop uvloop``): the
issue's floor is plain grpc.aio; the uvloop variant is the like-for-like floor for modelguard,
which runs on uvloop.

Usage: python -m bench.noop_processor --port P [--api readwrite|generator] [--grace S] [--event-loop L]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.ext_proc.v3.external_processor_pb2 import (
    BodyResponse,
    HeadersResponse,
    ProcessingRequest,
    ProcessingResponse,
    TrailersResponse,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ext_proc.server.loops import ASYNCIO, EVENT_LOOPS, run

SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"
ADDRESS = "127.0.0.1"

ANSWERS: dict[str, bytes] = {
    "request_headers": ProcessingResponse(request_headers=HeadersResponse()).SerializeToString(),
    "response_headers": ProcessingResponse(response_headers=HeadersResponse()).SerializeToString(),
    # Not asked for by the reference config (bodies NONE, trailers SKIP); answered so that a
    # different processing mode cannot stall a stream.
    "request_body": ProcessingResponse(request_body=BodyResponse()).SerializeToString(),
    "response_body": ProcessingResponse(response_body=BodyResponse()).SerializeToString(),
    "request_trailers": ProcessingResponse(request_trailers=TrailersResponse()).SerializeToString(),
    "response_trailers": ProcessingResponse(response_trailers=TrailersResponse()).SerializeToString(),
}


async def process_generator(
    requests: AsyncIterator[ProcessingRequest], context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    """One stream per HTTP request: an empty answer of the same phase for every message."""
    async for request in requests:
        answer = ANSWERS.get(request.WhichOneof("request") or "")
        if answer is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a ProcessingRequest with no phase set")
            return
        yield answer


async def process_readwrite(
    requests: AsyncIterator[ProcessingRequest], context: grpc.aio.ServicerContext[Any, Any]
) -> None:
    """The same, through the servicer context's read/write API instead of an async generator."""
    read, write = context.read, context.write
    while True:
        request = await read()
        if request is grpc.aio.EOF:
            return
        answer = ANSWERS.get(request.WhichOneof("request") or "")
        if answer is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a ProcessingRequest with no phase set")
            return
        await write(answer)


HANDLERS: dict[str, Any] = {"readwrite": process_readwrite, "generator": process_generator}


def handler(api: str = "readwrite") -> grpc.GenericRpcHandler:
    method = grpc.stream_stream_rpc_method_handler(
        HANDLERS[api], request_deserializer=ProcessingRequest.FromString, response_serializer=None
    )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {"Process": method})


async def serve(port: int, grace: float, api: str = "readwrite") -> int:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler(api),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        bound = server.add_insecure_port(f"{ADDRESS}:{port}")
    except RuntimeError as exc:
        print(f"noop_processor: cannot listen on {ADDRESS}:{port}: {exc}", file=sys.stderr)
        return 1
    if bound == 0:
        print(f"noop_processor: cannot listen on {ADDRESS}:{port} (port taken?)", file=sys.stderr)
        return 1
    await server.start()
    for service in ("", SERVICE_NAME):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    print(json.dumps({"event": "serving", "grpc_port": bound, "api": api}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(grace)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="gRPC port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--api", choices=list(HANDLERS), default="readwrite", help="handler style (readwrite)")
    parser.add_argument("--grace", type=float, default=1.0, help="seconds in-flight streams get on SIGTERM (1)")
    parser.add_argument(
        "--event-loop", choices=EVENT_LOOPS, default=ASYNCIO, help="asyncio (the default: plain grpc.aio) or uvloop"
    )
    args = parser.parse_args(argv)
    return run(serve(args.port, args.grace, args.api), args.event_loop)


if __name__ == "__main__":
    sys.exit(main())

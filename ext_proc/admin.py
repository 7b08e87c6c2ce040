"""The admin HTTP endpoints: /metrics, /healthz, /readyz, /v1/state.

Served on the same event loop as the gRPC server, so a handler that holds the loop holds every
decision waiting behind it (past Envoy's 0.2 s message_timeout, they fail open). /metrics and
/v1/state are therefore rendered in slices of ~2 ms (exposition.py) and sent chunk by chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ext_proc.exposition import render_metrics, render_state
from ext_proc.guard import Guard
from ext_proc.metrics import GuardRegistry

JSON = "application/json; charset=utf-8"


class Readiness:
    """Ready once the policy is loaded and the gRPC port listens; not ready while draining."""

    def __init__(self) -> None:
        self.ready = False
        self.reason = "starting"

    def set(self, ready: bool, reason: str) -> None:
        self.ready = ready
        self.reason = reason


def build_app(guard: Callable[[], Guard], registry: GuardRegistry, readiness: Readiness) -> web.Application:
    # One render at a time: concurrent scrapes would each take a slice per loop turn, so
    # decisions would wait for several slices. Only rendering holds the lock, not sending, so a
    # slow reader does not keep the next scrape waiting.
    rendering = asyncio.Lock()

    async def metrics(request: web.Request) -> web.StreamResponse:
        async with rendering:
            chunks = await render_metrics(guard(), registry.errors, registry.runtime)
        return await _send(request, chunks, CONTENT_TYPE_LATEST)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        status = 200 if readiness.ready else 503
        return web.json_response({"ready": readiness.ready, "reason": readiness.reason}, status=status)

    async def state(request: web.Request) -> web.StreamResponse:
        async with rendering:
            chunks = await render_state(guard())
        return await _send(request, chunks, JSON)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/state", state)
    return app


async def _send(request: web.Request, chunks: list[bytes], content_type: str) -> web.StreamResponse:
    """Chunk by chunk, with backpressure: a 13 MB body (3,000 models) joined, or handed to the
    transport in one write (which copies what the socket does not take), is a stall of its own."""
    response = web.StreamResponse(headers={"Content-Type": content_type})
    response.content_length = sum(len(chunk) for chunk in chunks)
    await response.prepare(request)
    if request.method != "HEAD":  # unlike web.Response, a StreamResponse would send the body anyway
        for chunk in chunks:
            await response.write(chunk)
    await response.write_eof()
    return response


async def start_admin(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start the admin site; returns the runner (to clean up) and the bound port."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=False)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)

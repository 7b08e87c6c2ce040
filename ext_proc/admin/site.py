"""The admin HTTP endpoints: /metrics, /healthz, /readyz, /v1/state, /v1/canary/<model>.

Served on the same event loop as the gRPC server, so a handler that holds the loop holds every
decision waiting behind it (past Envoy's 0.2 s message_timeout, they fail open). /metrics and
/v1/state are therefore rendered in slices of ~2 ms (observe/exposition.py) and sent chunk by chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ext_proc.admin.bodies import Bodies
from ext_proc.admin.state import render_state
from ext_proc.core.canary.book import UnknownCanary
from ext_proc.core.guard import Guard
from ext_proc.observe.exposition import Metrics

JSON = "application/json; charset=utf-8"


class Readiness:
    """Ready once the policy is loaded and the gRPC port listens; not ready while draining."""

    def __init__(self) -> None:
        self.ready = False
        self.reason = "starting"

    def set(self, ready: bool, reason: str) -> None:
        self.ready = ready
        self.reason = reason


def build_app(guard: Callable[[], Guard], metrics: Metrics, readiness: Readiness) -> web.Application:
    # One render at a time: concurrent scrapes would each take a slice per loop turn, so
    # decisions would wait for several slices. Only rendering holds the lock, not sending, so a
    # slow reader does not keep the next scrape waiting.
    rendering = asyncio.Lock()
    bodies = Bodies()

    async def body(request: web.Request, render: Callable[[], Awaitable[list[bytes]]], kind: str) -> web.StreamResponse:
        slot = bodies.admit(request)
        if slot is None:
            return web.Response(status=503, text="too many scrapes in progress\n", headers={"Retry-After": "1"})
        try:
            async with rendering:
                chunks = await render()
            return await bodies.send(slot, chunks, kind)
        finally:
            bodies.release(slot)

    async def metrics_page(request: web.Request) -> web.StreamResponse:
        return await body(request, metrics.render, CONTENT_TYPE_LATEST)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        status = 200 if readiness.ready else 503
        return web.json_response({"ready": readiness.ready, "reason": readiness.reason}, status=status)

    async def state(request: web.Request) -> web.StreamResponse:
        return await body(request, lambda: render_state(guard()), JSON)

    async def canary(request: web.Request) -> web.Response:
        """A model's canary verdict for rollout tools (examples/rollouts/): 200 with ``state``
        (active, ramping, complete, promoted, aborted), weight and evidence; 404 without one."""
        model = request.match_info["model"]
        canaries = guard().canaries
        found = canaries.get(model)
        if found is None:
            return web.json_response({"error": str(UnknownCanary(model, list(canaries)))}, status=404)
        return web.json_response(found.snapshot())

    app = web.Application()
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/state", state)
    app.router.add_get("/v1/canary/{model}", canary)
    return app


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

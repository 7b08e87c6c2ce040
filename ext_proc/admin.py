"""The admin HTTP endpoints: /metrics, /healthz, /readyz, /v1/state.

Served on the same event loop as the gRPC server; every handler only reads in-memory state,
so a scrape cannot stall decisions for longer than it takes to format the answer.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from ext_proc.guard import Guard


class Readiness:
    """Ready once the policy is loaded and the gRPC port listens; not ready while draining."""

    def __init__(self) -> None:
        self.ready = False
        self.reason = "starting"

    def set(self, ready: bool, reason: str) -> None:
        self.ready = ready
        self.reason = reason


def build_app(guard: Callable[[], Guard], registry: CollectorRegistry, readiness: Readiness) -> web.Application:
    async def metrics(_request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        status = 200 if readiness.ready else 503
        return web.json_response({"ready": readiness.ready, "reason": readiness.reason}, status=status)

    async def state(_request: web.Request) -> web.Response:
        return web.json_response(guard().snapshot())

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/state", state)
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

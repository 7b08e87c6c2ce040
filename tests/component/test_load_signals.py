"""Backend load signals through the real server: a model server's queue over the bar steps the
tier's standard traffic down; a reading under it, or none at all (the server gone), lets it back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from ext_proc.core.guard import Guard
from ext_proc.policy import parse_policy
from ext_proc.server.service import Service

CALL = {":method": "POST", ":path": "/v2/models/m/infer"}


@dataclass
class Metrics:
    depth: str = "0"
    status: int = 200
    padding: int = 0
    """Lines of another metric before the gauge: a page in many chunks."""


@pytest.fixture
async def metrics_server() -> AsyncIterator[tuple[str, Metrics, web.AppRunner]]:
    figures = Metrics()

    async def page(_request: web.Request) -> web.StreamResponse:
        padding = "".join(f'other_metric{{i="{i}"}} {i}\n' for i in range(figures.padding))
        text = f'{padding}# TYPE demo_model_queue_depth gauge\ndemo_model_queue_depth{{host="a"}} {figures.depth}\n'
        response = web.StreamResponse(status=figures.status)
        await response.prepare(_request)
        for start in range(0, len(text), 4096):  # sent in pieces, as a big page is
            await response.write(text[start : start + 4096].encode())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/metrics", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/metrics", figures, runner
    finally:
        await runner.cleanup()


def policy(url: str) -> str:
    return f"""
models:
  - name: m
    match: {{path_prefix: /v2/models/m}}
    tiers:
      - name: primary
        route: m-primary
        load_signal: {{urls: ["{url}"], metric: demo_model_queue_depth, max: 8, interval: 100ms, timeout: 200ms,
                       stale_after: 300ms}}
      - {{name: light, route: m-light}}
"""


async def tier_becomes(guard: Guard, tier: str, timeout: float = 3.0) -> bool:
    for _ in range(int(timeout / 0.02)):
        if guard.decide(CALL).decision.tier_name == tier:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_queue_over_the_bar_steps_traffic_down_and_unknown_never_holds_it(
    metrics_server: tuple[str, Metrics, web.AppRunner],
) -> None:
    url, figures, runner = metrics_server
    service = Service(parse_policy(policy(url)))
    await service.start("127.0.0.1:0", "127.0.0.1:0")
    try:
        guard = service.guard
        assert await tier_becomes(guard, "primary")
        figures.depth = "12"
        assert await tier_becomes(guard, "light"), guard.snapshot()
        shown = guard.snapshot()["models"]["m"]["tiers"]["primary"]["load_signal"]  # type: ignore[index]
        assert shown["overloaded"] is True and shown["value"] == 12.0 and shown["oldest_fresh_s"] <= 0.3
        figures.depth = "3"
        assert await tier_becomes(guard, "primary")
        figures.padding, figures.depth = 2000, "40"  # ~60 KB: the gauge comes in a later piece
        assert await tier_becomes(guard, "light")
        figures.padding, figures.depth = 60_000, "40"  # over 1 MiB: no figure, never a hold
        assert await tier_becomes(guard, "primary")
        figures.padding = 0
        figures.depth = "50"
        assert await tier_becomes(guard, "light")
        figures.status = 500  # the page fails: no figure, and unknown never holds traffic back
        assert await tier_becomes(guard, "primary")
        figures.status, figures.depth = 200, "50"
        assert await tier_becomes(guard, "light")
        await runner.cleanup()  # the server gone: refused, then stale
        assert await tier_becomes(guard, "primary")
        shown = guard.snapshot()["models"]["m"]["tiers"]["primary"]["load_signal"]  # type: ignore[index]
        assert shown["scrapes_failed"] > 0 and shown["errors"]
    finally:
        await service.stop(0.5)

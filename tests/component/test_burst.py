"""A burst of new streams on one connection, as a gateway sends on a traffic spike."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc

from tests.component.conftest import REC_PATH, Harness, request_headers, response_headers, set_headers

BURST = 2_000


async def one_request(harness: Harness) -> str:
    call = harness.stub.Process()
    try:
        await call.write(request_headers({":path": REC_PATH}))
        tier = set_headers(await call.read())["x-modelguard-tier"]
        await call.write(response_headers({":status": "200"}))
        assert await call.read() is grpc.aio.EOF
        return tier
    except grpc.aio.AioRpcError as error:
        name: str = error.code().name
        return name


async def test_every_stream_of_a_burst_gets_its_decision(harness: Harness) -> None:
    seen = Counter(await asyncio.wait_for(asyncio.gather(*(one_request(harness) for _ in range(BURST))), 120))
    assert seen == {"primary": BURST}
    primary = harness.service.registry.get("recommender", "primary")
    assert primary.outcomes["success"] == BURST and primary.inflight == 0

"""The access log service that brings failed tries (core/tries.py): Envoy's router logs each
failed upstream try (``upstream_log`` in envoy/envoy.yaml) over one long-lived gRPC stream per
Envoy worker, in batches, and each entry is judged into the tier that took the try.

Anything that reaches the port can open such a stream, as it can an ext_proc one: entries are
read field by field, an entry that names no model or no failure is ignored, and a failure to judge
one is counted and logged, never fatal to the stream. While at least one stream is open the core
leaves answers after a failed try to the log (``StateRegistry.tries_logged``); when the last one
closes it judges them from the response phase again, so a lost log stream costs the per-try
detail, never the failures themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
from envoy.config.core.v3.base_pb2 import RequestMethod
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from ext_proc.core.guard import Guard
from ext_proc.core.registry import StateRegistry
from ext_proc.core.tries import LoggedTry
from ext_proc.observe.exposition import PREFIX, header, number
from ext_proc.observe.log_budget import LogBudget
from ext_proc.protocol.headers import ARM, AUTHORITY, METHOD, PATH, ROUTE, TIER

log = logging.getLogger("modelguard.server")

ENTRIES_PER_TURN = 256
"""Entries judged before the loop serves other streams (about 2 ms of work)."""
NO_ANSWER_STATUS = 504
"""A try that got no status (Envoy's per-try timeout, a reset, a refused connection): a gateway error."""
COUNTED, IGNORED, FAILED = "counted", "ignored", "error"
TRY_RESULTS = (COUNTED, IGNORED, FAILED)
"""``counted``: judged into a tier; ``ignored``: no model's inference call, or no failure by its
rules; ``error``: judging it raised (logged, rate-limited)."""
_METHODS = {value.number: value.name for value in RequestMethod.DESCRIPTOR.values}

TRIES = PREFIX + "logged_tries_total"
STREAMS = PREFIX + "try_log_streams"
_HEADERS = (
    header(TRIES, "counter", "Failed tries from Envoy's access log, by result (counted, ignored, error)."),
    header(STREAMS, "gauge", "Access log streams of failed tries open now (0: answers are judged alone)."),
)


class TryLog(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """``envoy.service.accesslog.v3.AccessLogService`` on modelguard's gRPC port."""

    def __init__(self, guard: Callable[[], Guard], registry: StateRegistry) -> None:
        self._guard = guard
        self._registry = registry
        self.streams = 0
        """Log streams open now."""
        self.tries: dict[str, int] = dict.fromkeys(TRY_RESULTS, 0)
        self._budget = LogBudget()

    async def StreamAccessLogs(
        self, request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage], context: grpc.aio.ServicerContext
    ) -> als_pb2.StreamAccessLogsResponse:
        self._opened(1)
        try:
            async for message in request_iterator:
                if message.HasField("http_logs"):
                    entries = message.http_logs.log_entry
                    for start in range(0, len(entries), ENTRIES_PER_TURN):
                        self.judge(entries[start : start + ENTRIES_PER_TURN])
                        await asyncio.sleep(0)  # a 4 MiB batch must not stall the ext_proc streams
        finally:
            self._opened(-1)
        return als_pb2.StreamAccessLogsResponse()

    def judge(self, entries: Any) -> None:
        guard = self._guard()
        for entry in entries:
            try:
                result = COUNTED if guard.judge_try(logged_try(entry)) else IGNORED
            except Exception:
                result = FAILED
                suppressed = self._budget.take()
                if suppressed is not None:
                    log.exception(
                        "judging a logged try failed",
                        extra={"event": "try_failed", "suppressed_since_last": suppressed},
                    )
            self.tries[result] += 1

    def pieces(self) -> Iterator[str]:
        yield _HEADERS[0] + "".join(f'{TRIES}{{result="{r}"}} {number(n)}\n' for r, n in self.tries.items())
        yield _HEADERS[1] + f"{STREAMS} {number(self.streams)}\n"

    def _opened(self, change: int) -> None:
        self.streams += change
        self._registry.tries_logged = self.streams > 0


def logged_try(entry: Any) -> LoggedTry:
    """One ``HTTPAccessLogEntry`` as the core reads it. The path is the one sent upstream (a tier's
    ``model:`` rewrites only the model's segment, not the ending that says it is an inference call);
    never ``original_path``, which a client can set (``x-envoy-original-path``)."""
    common = entry.common_properties
    request = entry.request
    headers = {name.lower(): value for name, value in request.request_headers.items()}
    headers[METHOD] = _METHODS.get(request.request_method, "")
    headers[PATH] = request.path
    headers[AUTHORITY] = request.authority
    code = entry.response.response_code.value if entry.response.HasField("response_code") else 0
    return LoggedTry(
        headers=headers,
        route=headers.get(ROUTE, ""),
        tier=headers.get(TIER, ""),
        arm=headers.get(ARM, ""),
        cluster=common.upstream_cluster,
        host=_address(common.upstream_remote_address),
        status=code or NO_ANSWER_STATUS,
        latency=_seconds(common.duration) if common.HasField("duration") else 0.0,
    )


def _address(address: Any) -> str:
    """As Envoy's ``upstream.address`` attribute spells it: ``ip:port`` (``[ip]:port`` for IPv6)."""
    socket = address.socket_address
    if not socket.address:
        return ""
    host = f"[{socket.address}]" if ":" in socket.address else socket.address
    return f"{host}:{socket.port_value}"


def _seconds(duration: Any) -> float:
    seconds: float = duration.seconds + duration.nanos / 1e9
    return seconds

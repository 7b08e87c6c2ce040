"""How a demo model server acts out its injected fault on each inference call: hang, shed, delay,
reset the connection, or fail, whatever protocol the call speaks.

The caller words the error answers in its call's protocol (an `ErrorAnswer` given the kind of
error); the draws come from the server's one seeded ``random.Random``, so the same seed and the
same request sequence fail the same requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import zlib

from aiohttp import web

from ext_proc.demo.errors import FAULT, OVERLOAD, UNAVAILABLE, ErrorAnswer
from ext_proc.demo.faults import MAX_LATENCY_MS, Fault, LatencyDistribution


class FaultGate:
    """The fault a server has now, and the hung calls waiting on it."""

    def __init__(
        self,
        rng: random.Random,
        base_latency: LatencyDistribution | None,
        max_hang_s: float,
        fault: Fault | None = None,
    ) -> None:
        self.rng = rng
        self.base_latency = base_latency
        self.max_hang_s = max_hang_s
        self.fault = fault or Fault()
        self.closing = False
        self.hanging = 0
        self._changed = asyncio.Event()

    def set_fault(self, fault: Fault) -> None:
        """Replace the fault (not merge); wakes hung calls so they see the new one."""
        self.fault = fault
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        """Release every hung call (answered 503) so that shutdown does not wait for them."""
        self.closing = True
        self.set_fault(self.fault)

    async def check(self, request: web.Request, error: ErrorAnswer) -> tuple[str, web.StreamResponse] | None:
        """None when the call may run the model (after any added latency); else its outcome and
        the answer the fault gives instead.

        Order: wait out a hang; draw reset/overload/error; answer an overload at once (shedding is
        fast), and a failure too when the fault fails fast; sleep the base latency plus the
        fault's; then reset or fail.
        """
        ended = await self._wait_out_hang()
        if ended == "hang_timeout":
            return ended, error(503, f"injected hang: no answer within {self.max_hang_s:g} s", UNAVAILABLE)
        if ended == "shutdown":
            return ended, error(503, "server shutting down", UNAVAILABLE)

        fault = self.fault
        reset_draw, overload_draw, error_draw = self.rng.random(), self.rng.random(), self.rng.random()
        if overload_draw < fault.overload_rate:
            shed = error(fault.overload_status, "injected overload: try again later", OVERLOAD)
            shed.headers["Retry-After"] = str(fault.retry_after_s)
            return "overload", shed
        if fault.fail_fast and error_draw < fault.error_rate:
            return "error", error(fault.error_status, "injected fault: model failed", FAULT)
        delay_ms = fault.latency_ms
        if fault.latency is not None:
            delay_ms += fault.latency.sample_ms(self.rng)
        if self.base_latency is not None:
            delay_ms += self.base_latency.sample_ms(self.rng)
        if delay_ms > 0:
            await asyncio.sleep(min(delay_ms, MAX_LATENCY_MS) / 1000)
        if reset_draw < fault.reset_rate:
            reset_connection(request)
            # aiohttp's write of this answer to the aborted transport fails quietly.
            return "reset", web.Response(status=500)
        if error_draw < fault.error_rate:
            return "error", error(fault.error_status, "injected fault: model failed", FAULT)
        return None

    async def _wait_out_hang(self) -> str | None:
        """None once no hang fault holds the call; else how it ended (time out, shutdown)."""
        if self.closing:
            return "shutdown"
        if not self.fault.hang:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_hang_s
        self.hanging += 1
        try:
            while self.fault.hang and not self.closing:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return "hang_timeout"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
            return "shutdown" if self.closing else None
        finally:
            self.hanging -= 1


def reset_connection(request: web.Request) -> None:
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

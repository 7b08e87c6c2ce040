"""Large admin bodies (/metrics, /v1/state) in flight: bounded in number, cut off when stalled.

Each body is held whole until its reader has taken it (13 MB at 3,000 models), so readers that
never read could pile bodies up (40 of them held ~450 MB). At most MAX_BODIES are rendered or
sent at once. A reader that takes nothing for SEND_IDLE_TIMEOUT is cut off. When every slot is
taken, a new reader evicts the one that has been stalled longest, if it has been for at least
STALLED_AFTER: a scraper that reads is never starved by connections that do not, while a burst of
healthy scrapers gets 503 with Retry-After rather than evicting each other.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

MAX_BODIES = 4
SEND_IDLE_TIMEOUT = 10.0
"""Prometheus' own scrape timeout defaults to 10 s: a reader that takes nothing for that long has given up."""
STALLED_AFTER = 1.0

log = logging.getLogger("modelguard.admin")


class Slot:
    """One reader being answered, and when it last took a chunk (None while its body renders)."""

    __slots__ = ("progress", "request")

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.progress: float | None = None


class Bodies:
    """The slots in use."""

    def __init__(self) -> None:
        self._slots: list[Slot] = []

    def admit(self, request: web.Request) -> Slot | None:
        if len(self._slots) >= MAX_BODIES and not self._evict_stalled():
            return None
        slot = Slot(request)
        self._slots.append(slot)
        return slot

    def release(self, slot: Slot) -> None:
        if slot in self._slots:
            self._slots.remove(slot)

    def _evict_stalled(self) -> bool:
        now = time.monotonic()
        stalled = [slot for slot in self._slots if slot.progress is not None]
        if not stalled:
            return False
        victim = min(stalled, key=lambda slot: slot.progress or 0.0)
        idle = now - (victim.progress or now)
        if idle < STALLED_AFTER:
            return False
        log.warning(
            "admin reader stalled; cut off for a new one",
            extra={"event": "admin_reader_evicted", "path": victim.request.path, "stalled_s": round(idle, 3)},
        )
        self._slots.remove(victim)
        if victim.request.transport is not None:
            victim.request.transport.abort()  # its pending write fails with a ConnectionError and ends
        return True

    async def send(self, slot: Slot, chunks: list[bytes], content_type: str) -> web.StreamResponse:
        """Chunk by chunk, with backpressure: a 13 MB body joined, or handed to the transport in one
        write (which copies what the socket does not take), is a stall of its own."""
        request = slot.request
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.content_length = sum(len(chunk) for chunk in chunks)
        try:
            await response.prepare(request)
            if request.method != "HEAD":  # unlike web.Response, a StreamResponse would send the body anyway
                for chunk in chunks:
                    slot.progress = time.monotonic()
                    async with asyncio.timeout(SEND_IDLE_TIMEOUT):
                        await response.write(chunk)
            await response.write_eof()
        except ConnectionError:
            # The reader left (a scrape timeout, a curl cut short) or was evicted: nothing is wrong
            # here, and aiohttp takes a response cut short as the end of the connection.
            log.debug("admin reader went away", extra={"event": "admin_reader_gone", "path": request.path})
        except TimeoutError:
            log.warning(
                "admin reader too slow; connection closed",
                extra={"event": "admin_reader_too_slow", "path": request.path, "idle_s": SEND_IDLE_TIMEOUT},
            )
            if request.transport is not None:
                request.transport.abort()  # close() would keep what the reader did not take, to send it later
        return response

"""Events for ``WatchEvents``: what the core and the reloader report, handed to every watcher.

Publishing happens where the event happens, on the request path for a breaker transition, so
it never waits: each watcher has a bounded queue, and one that falls that far behind is cut off
(told so) rather than let grow without bound or slow anyone down. With nobody watching,
publishing costs one check. The number of watchers is capped, since each holds a stream open.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any

MAX_WATCHERS = 32
RESERVED_WATCHERS = 8
"""Of MAX_WATCHERS, kept for callers that hold the admin token: whoever merely reaches the port
cannot take every slot and keep the operator's ``ctl watch`` out."""
QUEUE_LENGTH = 1024


class TooManyWatchers(Exception):
    pass


class FellBehind(Exception):
    pass


class _Watcher:
    __slots__ = ("overflowed", "queue")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE_LENGTH)
        self.overflowed = False


class EventHub:
    def __init__(self) -> None:
        self._watchers: set[_Watcher] = set()

    @property
    def watched(self) -> bool:
        return bool(self._watchers)

    def publish(self, build: Callable[[], Any]) -> None:
        """Hand the event ``build()`` makes to every watcher (built only if somebody watches)."""
        if not self._watchers:
            return
        event = build()
        for watcher in self._watchers:
            if watcher.overflowed:
                continue
            try:
                watcher.queue.put_nowait(event)
            except asyncio.QueueFull:
                watcher.overflowed = True
                watcher.queue.get_nowait()
                watcher.queue.put_nowait(None)  # wakes it to find out

    async def watch(self, trusted: bool = False) -> AsyncGenerator[Any, None]:
        """Events from now on, until the caller stops; FellBehind if it could not keep up,
        TooManyWatchers if there are already MAX_WATCHERS (for an untrusted caller, that many
        less RESERVED_WATCHERS)."""
        limit = MAX_WATCHERS if trusted else MAX_WATCHERS - RESERVED_WATCHERS
        if len(self._watchers) >= limit:
            raise TooManyWatchers(f"{len(self._watchers)} watchers already" + ("" if trusted else
                                  "; slots are kept for callers with the admin token"))  # fmt: skip
        watcher = _Watcher()
        self._watchers.add(watcher)
        try:
            while True:
                event = await watcher.queue.get()
                if watcher.overflowed and event is None:
                    raise FellBehind(f"more than {QUEUE_LENGTH} events behind; watch again")
                yield event
        finally:
            self._watchers.discard(watcher)

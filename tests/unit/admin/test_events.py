"""The event hub never waits: a watcher that falls behind is cut off, the number of watchers is capped."""

from __future__ import annotations

import asyncio
import functools

import pytest

from ext_proc.admin.events import MAX_WATCHERS, QUEUE_LENGTH, RESERVED_WATCHERS, EventHub, FellBehind, TooManyWatchers


async def test_events_reach_every_watcher_in_order_and_nothing_is_built_for_nobody() -> None:
    hub = EventHub()
    built: list[int] = []

    def event(n: int) -> int:
        built.append(n)
        return n

    hub.publish(lambda: event(0))
    assert built == [] and not hub.watched
    first, second = hub.watch(), hub.watch()
    waiting = [asyncio.ensure_future(anext(first)), asyncio.ensure_future(anext(second))]
    await asyncio.sleep(0)
    hub.publish(lambda: event(1))
    hub.publish(lambda: event(2))
    assert await waiting[0] == 1 and await waiting[1] == 1
    assert await anext(first) == 2 and await anext(second) == 2
    assert built == [1, 2]
    await first.aclose()
    await second.aclose()
    assert not hub.watched


async def test_a_watcher_that_falls_behind_is_told_and_the_others_go_on() -> None:
    hub = EventHub()
    slow, quick = hub.watch(), hub.watch()
    pending = [asyncio.ensure_future(anext(slow)), asyncio.ensure_future(anext(quick))]
    await asyncio.sleep(0)
    hub.publish(lambda: "first")
    assert [await p for p in pending] == ["first", "first"]
    for n in range(QUEUE_LENGTH + 5):
        hub.publish(functools.partial(int, n))
        if n < QUEUE_LENGTH:
            assert await anext(quick) == n
    received = 0
    with pytest.raises(FellBehind):
        while True:
            await anext(slow)
            received += 1
    assert received < QUEUE_LENGTH
    await quick.aclose()


async def test_watchers_are_capped_with_slots_kept_for_token_holders() -> None:
    hub = EventHub()
    watchers = [hub.watch() for _ in range(MAX_WATCHERS - RESERVED_WATCHERS)]
    pending = [asyncio.ensure_future(anext(w)) for w in watchers]
    await asyncio.sleep(0)
    with pytest.raises(TooManyWatchers, match="kept for callers with the admin token"):
        await anext(hub.watch())
    trusted = [hub.watch(trusted=True) for _ in range(RESERVED_WATCHERS)]
    pending += [asyncio.ensure_future(anext(w)) for w in trusted]
    await asyncio.sleep(0)
    with pytest.raises(TooManyWatchers):
        await anext(hub.watch(trusted=True))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)

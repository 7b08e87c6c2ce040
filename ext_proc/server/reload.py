"""Reloading the policy while serving: no restart, no lost state, no request that waits.

A reload is triggered by a change of the file (server/watch.py) or by SIGHUP. The file is read
and validated in full in a worker thread (a 4 MiB policy takes seconds to parse, which the event
loop must not wait for). A refused file changes nothing: the live policy keeps serving, and the
errors are logged exactly as ``modelguard check`` prints them. An accepted one becomes a new
guard over the same state registry (core/registry.py says what is kept), built a few models at a
time between decisions, and goes live between streams: streams under way finish on the guard
they started with (``ExtProcServicer.use``). One reload runs at a time; a trigger during one waits
for it and then reads the file again, and triggers beyond that one are folded into it (it reads the
file as it is by then), so a storm of HUPs costs two reads, not one per signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator

from ext_proc.core.guard import Guard, model_guards
from ext_proc.core.registry import StateRegistry
from ext_proc.observe.slicing import slices
from ext_proc.policy import Policy, PolicyError
from ext_proc.policy.diff import PolicyDiff, diff_policies
from ext_proc.policy.loading import PolicyFile, load_policy_file
from ext_proc.policy.report import error_lines
from ext_proc.server.metrics import ERROR, SUCCESS, UNCHANGED, ServerStats
from ext_proc.server.servicer import ExtProcServicer

log = logging.getLogger("modelguard.reload")

FOLDED = "folded"

ReloadListener = Callable[[str, str, str, list[str]], None]
"""Told of each reload's end: (result, trigger, live sha256, error lines)."""


def _nobody(_result: str, _trigger: str, _sha256: str, _errors: list[str]) -> None:
    return None


async def build_guard(policy: Policy, registry: StateRegistry) -> Guard:
    """``Guard(policy, registry)``, built in slices that give the loop back (10,000 models take
    about half a second to build)."""
    models = []
    async for batch in slices(model_guards(policy, registry)):
        models.extend(batch)
    return Guard(policy, registry, models)


def go_live(servicer: ExtProcServicer, guard: Guard) -> None:
    """New streams get ``guard``; the registry forgets what its policy no longer has."""
    servicer.use(guard)
    guard.adopt()


def _read(path: str, live: PolicyFile) -> tuple[PolicyFile, PolicyDiff | None]:
    """The file, validated, and what it changes against ``live`` (None when it is the same bytes):
    all the work a reload can do off the event loop, in a worker thread."""
    loaded = load_policy_file(path, regular_only=True)
    if loaded.sha256 == live.sha256:
        return loaded, None
    return loaded, diff_policies(live.policy, loaded.policy)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The garbage collector off while a reload runs. Its passes over the objects a reload makes
    (the YAML tree, then the new guard) ran with the GIL held, from the reading thread or from
    the loop, and held decisions for 0.3-1 s at 10,000 models; once re-enabled, its first pass
    still walked the whole new guard (~0.2 s), hence the freeze after the swap. Everything a reload
    makes is either kept or freed by reference counting, so a second or two without the
    collector costs nothing."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


class Reloader:
    """Reloads ``path`` into ``servicer`` on request; ``live`` is the file serving now."""

    def __init__(
        self,
        path: str,
        servicer: ExtProcServicer,
        registry: StateRegistry,
        stats: ServerStats,
        live: PolicyFile,
        on_reload: ReloadListener = _nobody,
    ) -> None:
        self.path = path
        self._on_reload = on_reload
        self.last_errors: list[str] = []
        """The error lines of the last refused file (for the admin API's answer)."""
        self._servicer = servicer
        self._registry = registry
        self._stats = stats
        self.live = live
        stats.policy_sha256 = live.sha256
        self._one_at_a_time = asyncio.Lock()
        self._queued = False
        """A reload is waiting for the running one: a new trigger needs nothing of its own."""

    async def reload(self, trigger: str) -> str:
        """Read the file and put it live if it is valid and new: ``success``, ``error`` or
        ``unchanged``; ``folded`` when a reload already waiting to run will read the file instead."""
        if self._queued:
            return FOLDED
        self._queued = True
        async with self._one_at_a_time:
            self._queued = False
            with _collector_paused():
                result = await self._reload(trigger)
            self._on_reload(result, trigger, self.live.sha256, self.last_errors if result == ERROR else [])
            return result

    async def _reload(self, trigger: str) -> str:
        started = time.monotonic()
        try:
            loaded, diff = await asyncio.to_thread(_read, self.path, self.live)
        except PolicyError as exc:
            return self._refused(exc, trigger)
        if diff is None:
            self._stats.reloads[UNCHANGED] += 1
            log.info(
                "policy file unchanged; nothing to reload",
                extra={"event": "policy_unchanged", "trigger": trigger, "sha256": loaded.sha256},
            )
            return UNCHANGED
        guard = await build_guard(loaded.policy, self._registry)
        go_live(self._servicer, guard)
        # The new guard lives until the next reload: out of the collector's passes, as the
        # first one is at start-up (server/service.py). A retired guard has no reference
        # cycle (core/guard.py), so it is freed when its last stream ends, frozen or not.
        gc.freeze()
        previous, self.live = self.live, loaded
        self._stats.policy_sha256 = loaded.sha256
        self._stats.reloads[SUCCESS] += 1
        log.info(
            "policy reloaded: %s",
            diff.summary(),
            extra={
                "event": "policy_reloaded",
                "trigger": trigger,
                "sha256": loaded.sha256,
                "previous_sha256": previous.sha256,
                "models": len(loaded.policy.models),
                "added": len(diff.added),
                "removed": len(diff.removed),
                "changed": len(diff.changed),
                "took_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        return SUCCESS

    def _refused(self, exc: PolicyError, trigger: str) -> str:
        self._stats.reloads[ERROR] += 1
        lines = self.last_errors = error_lines(exc)
        log.error(
            "policy reload refused; the current policy keeps serving:\n%s",
            "\n".join(lines),
            extra={
                "event": "policy_reload_failed",
                "trigger": trigger,
                "errors": lines,
                "live_sha256": self.live.sha256,
            },
        )
        return ERROR

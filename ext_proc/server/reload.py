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
import logging
import os
import stat
import time

from ext_proc.core.guard import Guard, model_guards
from ext_proc.core.registry import StateRegistry
from ext_proc.observe.slicing import slices
from ext_proc.policy import Policy, PolicyError
from ext_proc.policy.diff import diff_policies
from ext_proc.policy.loading import PolicyFile, load_policy_file
from ext_proc.policy.report import error_lines
from ext_proc.server.metrics import ERROR, SUCCESS, UNCHANGED, ServerStats
from ext_proc.server.servicer import ExtProcServicer

log = logging.getLogger("modelguard.reload")

FOLDED = "folded"

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


def _refuse_unless_regular(path: str) -> None:
    """A FIFO or a device in place of the file would block the read for good (and every reload
    queued behind it); only a regular file is read. A file that cannot be stat'ed is left for the
    read to report."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        raise PolicyError(["(file): not a regular file; a reload reads only regular files"], path)


class Reloader:
    """Reloads ``path`` into ``servicer`` on request; ``live`` is the file serving now."""

    def __init__(
        self,
        path: str,
        servicer: ExtProcServicer,
        registry: StateRegistry,
        stats: ServerStats,
        live: PolicyFile,
    ) -> None:
        self.path = path
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
            started = time.monotonic()
            try:
                _refuse_unless_regular(self.path)
                loaded = await asyncio.to_thread(load_policy_file, self.path)
            except PolicyError as exc:
                return self._refused(exc, trigger)
            if loaded.sha256 == self.live.sha256:
                self._stats.reloads[UNCHANGED] += 1
                log.info(
                    "policy file unchanged; nothing to reload",
                    extra={"event": "policy_unchanged", "trigger": trigger, "sha256": loaded.sha256},
                )
                return UNCHANGED
            guard = await build_guard(loaded.policy, self._registry)
            go_live(self._servicer, guard)
            previous, self.live = self.live, loaded
            self._stats.policy_sha256 = loaded.sha256
            self._stats.reloads[SUCCESS] += 1
            diff = diff_policies(previous.policy, loaded.policy)
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
        lines = error_lines(exc)
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

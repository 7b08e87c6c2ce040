"""Wiring for ``modelguard serve``: the guard, the gRPC server, the admin site, the signals."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import signal
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from aiohttp import web
from envoy.service.accesslog.v3 import als_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ext_proc.admin import messages
from ext_proc.admin.api import AdminApi, Reload, ReloadReport
from ext_proc.admin.events import EventHub
from ext_proc.admin.site import Readiness, build_app, start_admin
from ext_proc.core.breaker import Transition
from ext_proc.core.canary.run import CanaryChange
from ext_proc.core.clock import Clock, monotonic, wall_clock
from ext_proc.core.forcing import ForceChange
from ext_proc.core.guard import Guard
from ext_proc.core.registry import StateRegistry, TierState
from ext_proc.observe.core_metrics import CoreMetrics
from ext_proc.observe.exposition import Metrics
from ext_proc.observe.logs import log_canary_change, log_force_change, log_transition
from ext_proc.policy import Policy
from ext_proc.policy.loading import PolicyFile
from ext_proc.server.admin_grpc import AdminGrpcServer, AdminGrpcSettings
from ext_proc.server.forced import DurableOrders, UnusableStore
from ext_proc.server.load_signals import LoadSignals
from ext_proc.server.loops import running_loop_name
from ext_proc.server.metrics import ERROR, ServerStats
from ext_proc.server.reload import Reloader, go_live
from ext_proc.server.servicer import SERVICE_NAME, ExtProcServicer
from ext_proc.server.settings import DEFAULT_GRACE, GRPC_EXPERIMENTS, MAX_STREAMS_PER_PROCESS, split_address
from ext_proc.server.signals import (
    ALREADY_DRAINING,
    DRAIN_SIGNALS,
    IGNORED_SIGNALS,
    NO_RELOAD_WHILE_DRAINING,
    RELOAD_SIGNAL,
    log_ignored,
)
from ext_proc.server.sweeper import sweep_in_flight
from ext_proc.server.tls import TlsFiles, add_port
from ext_proc.server.tries import TryLog
from ext_proc.server.watch import ChangeDetector, watch
from ext_proc.store import StateStore

log = logging.getLogger("modelguard")

_GRPC_OPTIONS = [
    # Off, so that a port already taken is an error rather than two servers sharing it.
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.server.max_pending_requests", MAX_STREAMS_PER_PROCESS),
    ("grpc.server.max_pending_requests_hard_limit", MAX_STREAMS_PER_PROCESS),
]


NO_STORE = UnusableStore("(none)", "no state directory is configured")


@dataclass
class Ports:
    grpc: int
    admin: int
    admin_grpc: int | None = None


async def _no_reload(trigger: str) -> ReloadReport:
    return ReloadReport(ERROR, "", ["this server has no policy file to reload"])


class Service:
    """One running modelguard: start() binds its ports, stop() drains within a grace period."""

    def __init__(
        self,
        policy: Policy,
        clock: Clock = monotonic,
        rng: random.Random | None = None,
        store: StateStore = NO_STORE,
        wall: Clock = wall_clock,
        worker: int = 0,
    ) -> None:
        self.wall = wall
        self.worker = worker
        self.hub = EventHub()
        self.registry = StateRegistry(clock, rng, self._on_transition, self._on_force, wall, self._on_canary)
        self.orders = DurableOrders(self.registry, store)
        self.stats = ServerStats()
        self.servicer = ExtProcServicer(Guard(policy, self.registry), self.stats)
        self.readiness = Readiness()
        self.health = health.aio.HealthServicer()
        self.metrics = Metrics()
        self.metrics.register(CoreMetrics(lambda: self.servicer.guard))
        self.metrics.register(self.stats)
        self.tries = TryLog(lambda: self.servicer.guard, self.registry)
        self.metrics.register(self.tries)
        self.signals = LoadSignals(lambda: self.servicer.guard, self.registry, clock)
        self._server: grpc.aio.Server | None = None
        self._admin: web.AppRunner | None = None
        self._admin_grpc: AdminGrpcServer | None = None
        self._follower: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._scraper: asyncio.Task[None] | None = None

    # -- what the core and the reloader report: logs, watchers, the store -------------------

    def _on_transition(self, tier: TierState, transition: Transition) -> None:
        log_transition(tier, transition)
        self.hub.publish(lambda: messages.transition_event(tier, transition, self.wall(), self.worker))

    def _on_force(self, change: ForceChange) -> None:
        log_force_change(change)
        self.orders.note(change)
        self.hub.publish(lambda: messages.force_event(change, self.wall(), self.worker))

    def _on_canary(self, change: CanaryChange) -> None:
        log_canary_change(change)
        self.orders.note_canary(change)
        self.hub.publish(lambda: messages.canary_event(change, self.wall(), self.worker))

    def on_reload(self, result: str, trigger: str, sha256: str, errors: list[str]) -> None:
        self.hub.publish(lambda: messages.reload_event(result, trigger, sha256, errors, self.wall(), self.worker))

    @property
    def guard(self) -> Guard:
        """The live guard: the one new streams get."""
        return self.servicer.guard

    def use(self, policy: Policy) -> Guard:
        """Serve ``policy`` from the next stream on, keeping the state of what it shares with the
        live one (core/registry.py); streams under way finish on the old guard."""
        guard = Guard(policy, self.registry)
        go_live(self.servicer, guard)
        return guard

    async def start(
        self,
        grpc_address: str,
        admin_address: str,
        tls: TlsFiles | None = None,
        admin_grpc: AdminGrpcSettings | None = None,
        reload: Reload = _no_reload,
    ) -> Ports:
        """Plaintext gRPC unless ``tls`` names certificate files (TlsError, a ValueError, if they
        do not load); the admin gRPC API when ``admin_grpc`` says where. Forced states are read
        back from the store first, so that the first request already meets them."""
        admin_host, admin_port = split_address(admin_address)
        split_address(grpc_address)
        await self.orders.restore()
        self._follower = asyncio.create_task(self.orders.follow())
        self._sweeper = asyncio.create_task(sweep_in_flight(self.registry))
        self._scraper = asyncio.create_task(self.signals.run())
        server = grpc.aio.server(options=_GRPC_OPTIONS)
        server.add_generic_rpc_handlers((self.servicer.handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(self.tries, server)
        grpc_port = add_port(server, grpc_address, tls, "gRPC")
        await server.start()
        self._server = server
        try:
            self._admin, bound_admin = await start_admin(
                build_app(lambda: self.servicer.guard, self.metrics, self.readiness), admin_host, admin_port
            )
        except OSError:
            await server.stop(None)
            raise
        admin_grpc_port = None
        if admin_grpc is not None:
            api = AdminApi(
                lambda: self.servicer.guard,
                self.registry,
                self.orders,
                reload,
                lambda: self.stats.policy_sha256,
                admin_grpc.tokens,
                self.hub,
                self.wall,
                admin_grpc.worker,
                admin_grpc.workers,
            )
            self._admin_grpc = AdminGrpcServer(api, admin_grpc)
            admin_grpc_port = await self._admin_grpc.start()  # on OSError, serve() stops what started
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        # Everything built so far (modules, policy, guard, its state: ~50k objects) lives as
        # long as the process; frozen, it is no longer walked by the collector's full passes, which
        # otherwise stall the event loop for ~20 ms each under load (measured with gc.callbacks).
        # Collected first, so that no start-up garbage is frozen with it.
        gc.collect()
        gc.freeze()
        self.readiness.set(True, "serving")
        return Ports(grpc=grpc_port, admin=bound_admin, admin_grpc=admin_grpc_port)

    async def stop(self, grace: float = DEFAULT_GRACE) -> None:
        """Refuse new streams, give in-flight ones ``grace`` seconds, then close everything."""
        self.readiness.set(False, "draining")
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._admin is not None:
            await self._admin.cleanup()
            self._admin = None
        if self._admin_grpc is not None:
            await self._admin_grpc.stop(min(grace, 1.0))
            self._admin_grpc = None
        for task in (self._follower, self._sweeper, self._scraper):
            if task is not None:
                task.cancel()
        self._follower = self._sweeper = self._scraper = None


async def serve(
    loaded: PolicyFile,
    path: str,
    grpc_address: str,
    admin_address: str,
    grace: float = DEFAULT_GRACE,
    tls: TlsFiles | None = None,
    early: Sequence[int] = (),
    detector: ChangeDetector | None = None,
    admin_grpc: AdminGrpcSettings | None = None,
    store: StateStore = NO_STORE,
) -> int:
    """Serve ``loaded`` (read from ``path``) until TERM or INT, reloading ``path`` when it changes
    and on HUP; ``early`` are the signals received before this was called (EarlySignals), acted
    on as if they came now; ``detector`` watches ``path`` from before it was read."""
    service = Service(loaded.policy, store=store, worker=0 if admin_grpc is None else admin_grpc.worker)
    reloader = Reloader(path, service.servicer, service.registry, service.stats, loaded, service.on_reload)

    async def reload(trigger: str) -> ReloadReport:
        result = await reloader.reload(trigger)
        return ReloadReport(result, reloader.live.sha256, reloader.last_errors if result == ERROR else [])

    # Before binding, so that no signal finds the process between binding and its handlers: a
    # TERM or INT that early still gets a clean start and an immediate drain, not a sudden death.
    stop = _handle_signals(asyncio.get_running_loop(), reloader, early)
    try:
        ports = await service.start(grpc_address, admin_address, tls, admin_grpc, reload)
    except (OSError, ValueError) as exc:
        log.error("cannot start: %s", exc, extra={"event": "start_failed"})
        await service.stop(0)
        return 1
    log.info(
        "serving",
        extra={
            "event": "serving",
            "grpc_address": grpc_address,
            "grpc_port": ports.grpc,
            "grpc_tls": "off" if tls is None else "mutual" if tls.mutual else "on",
            "admin_address": admin_address,
            "admin_port": ports.admin,
            "admin_grpc_address": None if admin_grpc is None else admin_grpc.address,
            "admin_grpc_port": ports.admin_grpc,
            "admin_grpc_tls": "off" if admin_grpc is None or admin_grpc.tls is None else "on",
            "admin_token": "none" if admin_grpc is None else admin_grpc.tokens.source,
            "state_dir": store.where,
            "forced_states": len(service.registry.orders()),
            "policy": path,
            "policy_sha256": loaded.sha256,
            "models": [m.name for m in loaded.policy.models],
            "event_loop": running_loop_name(),
            "grpc_experiments": os.environ.get(GRPC_EXPERIMENTS, ""),
        },
    )
    watcher = asyncio.create_task(watch(path, lambda: reloader.reload("file changed"), detector=detector))
    await stop.wait()
    watcher.cancel()
    log.info("stopping", extra={"event": "stopping", "grace_s": grace})
    await service.stop(grace)
    log.info("stopped", extra={"event": "stopped"})
    return 0


def _handle_signals(loop: asyncio.AbstractEventLoop, reloader: Reloader, early: Sequence[int] = ()) -> asyncio.Event:
    """The event TERM and INT set; HUP reloads (ext_proc.server.signals says what each signal means).

    A second TERM or INT while draining is logged and changes nothing: the drain still ends when
    the in-flight streams do or when ``--grace`` runs out, whichever is first. Stopping at once on
    it would cut the very streams the grace exists for, and SIGKILL is there for that."""
    stop = asyncio.Event()
    reloads: set[asyncio.Task[str]] = set()  # held until done: the loop keeps only weak references

    def on_drain_signal(signum: int) -> None:
        if stop.is_set():
            log_ignored(log, signum, ALREADY_DRAINING)
        stop.set()

    def on_reload_signal() -> None:
        if stop.is_set():
            log_ignored(log, RELOAD_SIGNAL, NO_RELOAD_WHILE_DRAINING)
            return
        task = loop.create_task(reloader.reload(RELOAD_SIGNAL.name))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for signum in DRAIN_SIGNALS:
        loop.add_signal_handler(signum, on_drain_signal, signum)
    loop.add_signal_handler(RELOAD_SIGNAL, on_reload_signal)
    for signum, reason in IGNORED_SIGNALS.items():
        loop.add_signal_handler(signum, log_ignored, log, signum, reason)
    # Read after the handlers are in: none falls between the two. Drains first: a reload is moot
    # for a server told to stop.
    for number in sorted(early, key=lambda number: number not in DRAIN_SIGNALS):
        if number in DRAIN_SIGNALS:
            on_drain_signal(number)
        elif number == RELOAD_SIGNAL:
            on_reload_signal()
        else:
            log_ignored(log, number, IGNORED_SIGNALS[signal.Signals(number)])
    return stop

"""The admin gRPC API (proto/modelguard/admin/v1/admin.proto): a thin adapter from its messages
to the registry, the forced-state orders and the reloader.

What it needs of the running server it declares here (``Orders``, ``Reload``); server/ wires
them. Mutating calls check the bearer token first (admin/auth.py); names a caller gives are
checked against the live policy and refused with the names there are.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from ext_proc.admin import messages
from ext_proc.admin.auth import UNAUTHENTICATED, TokenSource
from ext_proc.admin.events import EventHub, FellBehind, TooManyWatchers
from ext_proc.api import CALLS, SERVICE_NAME, admin_pb2
from ext_proc.core.canary.book import RouteChanged, UnknownCanary
from ext_proc.core.canary.run import Action, CanaryChange, CanaryOrder
from ext_proc.core.clock import Clock
from ext_proc.core.forcing import ForceChange, ForceMode, ForceOrder
from ext_proc.core.guard import Guard
from ext_proc.core.listing import listed
from ext_proc.core.registry import StateRegistry, TierKey, UnknownTier
from ext_proc.observe.log_budget import LogBudget
from ext_proc.observe.slicing import slices
from ext_proc.policy import BUCKETS
from ext_proc.policy.durations import shown

log = logging.getLogger("modelguard.admin")

MAX_TEXT = 200
"""The longest reason or caller name kept (longer ones are cut): they are for people to read."""
MAX_FORCE_SECONDS = 366 * 24 * 3600.0


class Orders(Protocol):
    """Forced states, durable (server/forced.py)."""

    async def force(self, model: str, tier: str, order: ForceOrder) -> tuple[ForceChange, str]:
        """The change made, and a warning ("" if none) when it could not be made durable;
        UnknownTier for a tier the live policy lacks."""
        ...

    def dormant(self) -> dict[TierKey, ForceOrder]:
        """Orders for tiers the live policy does not have."""
        ...

    async def canary(self, model: str, order: CanaryOrder | None, caller: str) -> tuple[CanaryChange, str]:
        """A canary order put in force (None: resume) and a warning as for ``force``;
        UnknownCanary for a model without a canary."""
        ...


@dataclass(frozen=True)
class ReloadReport:
    result: str
    sha256: str
    errors: list[str] = field(default_factory=list)


Reload = Callable[[str], Awaitable[ReloadReport]]


def clean(text: str, limit: int = MAX_TEXT) -> str:
    """Printable, one line, at most ``limit`` characters: it goes into logs and tables."""
    return "".join(char if char.isprintable() else "?" for char in text[:limit]).strip()


class AdminApi:
    def __init__(
        self,
        guard: Callable[[], Guard],
        registry: StateRegistry,
        orders: Orders,
        reload: Reload,
        policy_sha256: Callable[[], str],
        tokens: TokenSource,
        hub: EventHub,
        wall: Clock,
        worker: int = 0,
        workers: tuple[str, ...] = (),
    ) -> None:
        self._guard = guard
        self._registry = registry
        self._orders = orders
        self._reload = reload
        self._sha256 = policy_sha256
        self._tokens = tokens
        self._hub = hub
        self._wall = wall
        self._worker = worker
        self._workers = workers
        self._one_state_at_a_time = asyncio.Lock()
        self._refusals_logged = LogBudget()
        """Whoever reaches the port can send refused calls as fast as it likes: not a log flood."""

    def handler(self) -> grpc.GenericRpcHandler:
        handlers = {}
        for name, call in CALLS.items():
            implementation = getattr(self, name)
            make = grpc.unary_stream_rpc_method_handler if call.streaming else grpc.unary_unary_rpc_method_handler
            handlers[name] = make(
                implementation,
                request_deserializer=call.request.FromString,
                response_serializer=call.response.SerializeToString,
            )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    # -- reading --------------------------------------------------------------------------

    async def GetState(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._registry.expire_due()
        guard = self._guard()
        wanted = [model for model in guard.models if not request.model or model.name == request.model]
        if request.model and not wanted:
            names = listed(model.name for model in guard.models)
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no model {shown(request.model)}; models: {names}")
        dormant = [
            admin_pb2.StoredOrder(model=model, tier=tier, forced=messages.forced_state(order))
            for (model, tier), order in sorted(self._orders.dormant().items())
            if not request.model or model == request.model
        ]
        models = []
        async with self._one_state_at_a_time:  # each is built in slices, like /v1/state: never in one go
            async for batch in slices(messages.model_state(model) for model in wanted):
                models.extend(batch)
        return admin_pb2.GetStateResponse(
            policy_sha256=self._sha256(),
            models=models,
            unmatched_requests=guard.unmatched.count,
            worker=self._worker,
            workers=self._workers,
            dormant=dormant,
        )

    async def WatchEvents(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        trusted = self._tokens.configured and self._tokens.check(context.invocation_metadata() or ()) is None
        try:
            async for event in self._hub.watch(trusted):
                yield event
        except (TooManyWatchers, FellBehind) as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))

    # -- changing -------------------------------------------------------------------------

    async def ForceState(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        caller = await self._authorized(context, "ForceState", request.caller)
        mode = messages.MODE_OF_FORCE.get(request.mode)
        if mode is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "mode must be FORCED_OPEN, FORCED_CLOSED or AUTO")
            raise AssertionError  # abort raises; this tells type checkers so
        now = self._wall()
        until = None
        if request.HasField("duration"):
            seconds = request.duration.ToNanoseconds() / 1e9
            if mode is ForceMode.AUTO:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "AUTO takes no duration")
            if not math.isfinite(seconds) or not 0 < seconds <= MAX_FORCE_SECONDS:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "duration must be above 0 and at most 366 days")
            until = now + seconds
        order = ForceOrder(mode, clean(request.reason), caller, now, until)
        try:
            change, warning = await self._orders.force(request.model, request.tier, order)
        except UnknownTier as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise AssertionError from None
        return admin_pb2.ForceStateResponse(
            tier=self._tier_message(request.model, request.tier), previous_state=change.from_state, warning=warning
        )

    async def ResetBreaker(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        caller = await self._authorized(context, "ResetBreaker", request.caller)
        try:
            state = self._registry.reset(request.model, request.tier, caller)
        except UnknownTier as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise AssertionError from None
        log.warning(
            "breaker reset",
            extra={"event": "breaker_reset", "model": state.model_name, "tier": state.name, "caller": caller},
        )
        return admin_pb2.ResetBreakerResponse(tier=self._tier_message(request.model, request.tier))

    async def ReloadPolicy(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        caller = await self._authorized(context, "ReloadPolicy", request.caller)
        report = await self._reload(f"admin API ({caller})")
        return admin_pb2.ReloadPolicyResponse(result=report.result, policy_sha256=report.sha256, errors=report.errors)

    # -- canaries -------------------------------------------------------------------------

    async def GetCanary(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        canaries = self._guard().canaries
        if request.model and request.model not in canaries:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(UnknownCanary(request.model, sorted(canaries))))
        wanted = [request.model] if request.model else sorted(canaries)
        return admin_pb2.GetCanaryResponse(
            canaries=[messages.model_canary(model, canaries[model]) for model in wanted],
            worker=self._worker,
            workers=self._workers,
        )

    async def AbortCanary(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._canary_order(request, context, "AbortCanary", Action.ABORT)

    async def PromoteCanary(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._canary_order(request, context, "PromoteCanary", Action.PROMOTE)

    async def SetCanaryWeight(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._canary_order(request, context, "SetCanaryWeight", Action.WEIGHT)

    async def ResumeCanary(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._canary_order(request, context, "ResumeCanary", None)

    async def _canary_order(
        self, request: Any, context: grpc.aio.ServicerContext, call: str, action: Action | None
    ) -> Any:
        caller = await self._authorized(context, call, request.caller)
        weight = 0
        if action is Action.WEIGHT:
            share = request.weight
            if not math.isfinite(share) or not 0 < share <= 1 or round(share * BUCKETS) < 1:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "weight must be above 0 (at least 0.0001) and at most 1"
                )
            weight = round(share * BUCKETS)
        try:
            order = None
            if action is not None:
                route = self._registry.canaries.find(request.model).route
                order = CanaryOrder(action, route, clean(request.reason), caller, self._wall(), weight)
            change, warning = await self._orders.canary(request.model, order, caller)
        except UnknownCanary as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise AssertionError from None
        except RouteChanged as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{exc}: ask again")
            raise AssertionError from None
        canary = self._guard().canaries.get(request.model)
        found = (
            admin_pb2.ModelCanary(model=request.model)
            if canary is None
            else messages.model_canary(request.model, canary)
        )
        return admin_pb2.CanaryOrderResponse(canary=found, previous_state=change.from_state, warning=warning)

    # -- helpers --------------------------------------------------------------------------

    async def _authorized(self, context: grpc.aio.ServicerContext, call: str, name: str) -> str:
        """The caller's description if its token is right; otherwise the call is aborted."""
        caller = f"{clean(name, 100) or 'unnamed'} ({context.peer()})"
        refusal = self._tokens.check(context.invocation_metadata() or ())
        if refusal is not None:
            left_out = self._refusals_logged.take()
            if left_out is not None:
                log.warning(
                    "admin call refused: %s",
                    refusal.code,
                    extra={
                        "event": "admin_call_refused",
                        "call": call,
                        "caller": caller,
                        "why": refusal.code,
                        "refusals_not_logged_before": left_out,
                    },
                )
            denied = grpc.StatusCode.PERMISSION_DENIED
            await context.abort(grpc.StatusCode.UNAUTHENTICATED if refusal.code == UNAUTHENTICATED else denied,
                                refusal.message)  # fmt: skip
        return caller

    def _tier_message(self, model: str, tier: str) -> Any:
        for candidate in self._guard().models:
            if candidate.name == model:
                for rung in candidate.tiers:
                    if rung.name == tier:
                        return messages.tier_state(rung)
        return admin_pb2.TierState(name=tier)

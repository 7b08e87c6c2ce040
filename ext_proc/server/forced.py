"""Forced states and canary orders made durable: the admin API's orders go to the state store
before they take effect, are read back at start-up, and are followed while serving. A canary's
abort decided by its guardrails (on the request path, which never writes) is stored by the next
tick, and counts as stored meanwhile, so that a read of the store cannot undo it.

Following is how ``--workers`` share them: every worker reads the same state directory, so an
order given to any one worker (by ``modelguard ctl`` or by any gRPC client) is written there and
every other worker picks it up within ``FOLLOW_INTERVAL``. The same tick hands back tiers whose
order has expired (core/registry.py's ``expire_due``) and removes expired orders from the store.

A store that cannot be written does not stop an operator in an incident: the order takes effect
at once, and the answer carries a warning that it will not survive a restart (and a log line).
A store that cannot be read leaves the orders in force as they are.
"""

from __future__ import annotations

import asyncio
import logging

from ext_proc.core.canary.book import RouteChanged
from ext_proc.core.canary.run import CanaryChange, CanaryOrder
from ext_proc.core.forcing import ForceChange, ForceMode, ForceOrder
from ext_proc.core.registry import EXPIRY, StateRegistry, TierKey
from ext_proc.store import CANARY_KEY, Order, StateStore, StoreError

log = logging.getLogger("modelguard.forced")

FOLLOW_INTERVAL = 0.5
"""Seconds between looks at the store (a stat call) and at expiries."""


class UnusableStore:
    """The store of a server whose state directory could not be prepared: nothing to read,
    every write an error saying why (a null object, so the rest has no special case)."""

    def __init__(self, where: str, why: str) -> None:
        self._where = where
        self._why = why

    @property
    def where(self) -> str:
        return self._where

    def load(self) -> dict[TierKey, Order] | None:
        return None

    def save(self, key: TierKey, order: Order | None, replacing: Order | None = None) -> None:
        raise StoreError(self._why)

    def version(self) -> object:
        return None


class DurableOrders:
    """The admin API's ``Orders`` over a registry and a state store."""

    def __init__(self, registry: StateRegistry, store: StateStore) -> None:
        self._registry = registry
        self.store = store
        self._lock = asyncio.Lock()
        self._expired: list[tuple[TierKey, ForceOrder]] = []
        self._unsaved: dict[str, CanaryOrder] = {}
        """Guardrail aborts not yet in the store, by model."""
        self._logged: dict[str, CanaryOrder] = {}
        """The last abort of each model whose failure to be stored was logged."""
        self._seen: object = None

    def note(self, change: ForceChange) -> None:
        """The registry's changes (a sink): an expired order is to be removed from the store."""
        if change.ended_by == EXPIRY:
            self._expired.append(((change.model, change.tier), change.order))

    def note_canary(self, change: CanaryChange) -> None:
        """The canaries' changes (a sink): a guardrail's abort is to be stored."""
        if change.verdict and change.order is not None:
            self._unsaved[change.model] = change.order

    async def canary(self, model: str, order: CanaryOrder | None, caller: str) -> tuple[CanaryChange, str]:
        """Put an operator's canary order in force (None: resume, or drop an order kept for a
        canary the policy no longer has), stored first. UnknownCanary, or RouteChanged for an order
        whose version is not the live canary's, before anything is written; if a reload changes the
        route while the order is being written, the model's order in force is written back and
        RouteChanged raised, so a refused order never stays in the store."""
        async with self._lock:
            canaries = self._registry.canaries
            if order is not None or not canaries.kept(model):
                canaries.check(model, order)
            warning = await self._save((model, CANARY_KEY), order)
            try:
                change = canaries.give(model, order, caller)
            except RouteChanged:
                kept = self._unsaved.get(model) or canaries.orders().get(model)
                await self._save((model, CANARY_KEY), kept)
                raise
            self._unsaved.pop(model, None)
            return change, warning

    async def _save(self, key: TierKey, order: Order | None) -> str:
        try:
            await asyncio.to_thread(self.store.save, key, order)
        except StoreError as exc:
            log.error("order not saved: %s", exc, extra={"event": "order_not_saved", "model": key[0], "key": key[1]})
            return f"in force, but not saved ({exc}): it will not survive a restart"
        return ""

    async def restore(self) -> None:
        """Read the store and put its orders in force (at start-up, and when it changed)."""
        async with self._lock:
            await self._read()

    async def force(self, model: str, tier: str, order: ForceOrder) -> tuple[ForceChange, str]:
        async with self._lock:
            dormant = order.mode is ForceMode.AUTO and (model, tier) in self.dormant()
            if not dormant:
                self._registry.find(model, tier)  # UnknownTier before anything is written
            # Written even for ``auto`` on a tier this process does not see forced: another worker
            # may have forced it a moment ago, before this one followed the store.
            warning = await self._save((model, tier), None if order.mode is ForceMode.AUTO else order)
            if dormant:
                return self._registry.forget(model, tier, order.caller), warning
            return self._registry.force(model, tier, order), warning

    def dormant(self) -> dict[TierKey, ForceOrder]:
        known = {(state.model_name, state.name) for state in self._registry.tiers()}
        return {key: order for key, order in self._registry.orders().items() if key not in known}

    async def tick(self) -> None:
        """Expiries and guardrail aborts, then whatever another process wrote."""
        async with self._lock:
            self._registry.expire_due()
            await self._save_aborts()
            expired, self._expired = self._expired, []
            for key, order in expired:
                try:
                    await asyncio.to_thread(self.store.save, key, None, order)
                except StoreError as exc:
                    log.error("expired order not removed from the store: %s", exc, extra={"event": "store_error"})
            if self.store.version() != self._seen:
                await self._read()

    async def _save_aborts(self) -> None:
        """Store the guardrails' aborts; one that cannot be stored stays in force here (and is
        tried again every tick, logged once)."""
        for model, abort in list(self._unsaved.items()):
            try:
                await asyncio.to_thread(self.store.save, (model, CANARY_KEY), abort)
            except StoreError as exc:
                if self._logged.get(model) != abort:
                    self._logged[model] = abort
                    log.error(
                        "canary abort not saved: %s; it holds in this process, not across a restart",
                        exc,
                        extra={"event": "order_not_saved", "model": model, "key": CANARY_KEY},
                    )
                continue
            if self._unsaved.get(model) == abort:
                del self._unsaved[model]

    async def follow(self, interval: float = FOLLOW_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except Exception:  # never let the follower die: log and go on
                log.exception("following the state store failed", extra={"event": "store_error"})

    async def _read(self) -> None:
        version = self.store.version()
        orders = await asyncio.to_thread(self.store.load)
        self._seen = version
        if orders is None:  # unreadable: the orders in force stay as they are
            return
        forced = {key: order for key, order in orders.items() if isinstance(order, ForceOrder)}
        canaries = {key[0]: order for key, order in orders.items() if isinstance(order, CanaryOrder)}
        canaries.update(self._unsaved)
        self._registry.restore(forced)  # each change is logged and published by the registry's sinks
        self._registry.canaries.restore(canaries)

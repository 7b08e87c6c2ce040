"""Forced states made durable: the admin API's orders go to the state store before they take
effect, are read back at start-up, and are followed while serving.

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

from ext_proc.core.forcing import ForceChange, ForceMode, ForceOrder
from ext_proc.core.registry import EXPIRY, StateRegistry, TierKey
from ext_proc.store import StateStore, StoreError

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

    def load(self) -> dict[TierKey, ForceOrder] | None:
        return None

    def save(self, key: TierKey, order: ForceOrder | None, replacing: ForceOrder | None = None) -> None:
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
        self._seen: object = None

    def note(self, change: ForceChange) -> None:
        """The registry's changes (a sink): an expired order is to be removed from the store."""
        if change.ended_by == EXPIRY:
            self._expired.append(((change.model, change.tier), change.order))

    async def restore(self) -> None:
        """Read the store and put its orders in force (at start-up, and when it changed)."""
        async with self._lock:
            await self._read()

    async def force(self, model: str, tier: str, order: ForceOrder) -> tuple[ForceChange, str]:
        async with self._lock:
            dormant = order.mode is ForceMode.AUTO and (model, tier) in self.dormant()
            if not dormant:
                self._registry.find(model, tier)  # UnknownTier before anything is written
            warning = ""
            # Written even for ``auto`` on a tier this process does not see forced: another worker
            # may have forced it a moment ago, before this one followed the store.
            try:
                await asyncio.to_thread(self.store.save, (model, tier), None if order.mode is ForceMode.AUTO else order)
            except StoreError as exc:
                warning = f"in force, but not saved ({exc}): it will not survive a restart"
                log.error(
                    "forced state not saved: %s",
                    exc,
                    extra={"event": "forced_state_not_saved", "model": model, "tier": tier},
                )
            if dormant:
                return self._registry.forget(model, tier, order.caller), warning
            return self._registry.force(model, tier, order), warning

    def dormant(self) -> dict[TierKey, ForceOrder]:
        known = {(state.model_name, state.name) for state in self._registry.tiers()}
        return {key: order for key, order in self._registry.orders().items() if key not in known}

    async def tick(self) -> None:
        """Expiries, then whatever another process wrote."""
        async with self._lock:
            self._registry.expire_due()
            expired, self._expired = self._expired, []
            for key, order in expired:
                try:
                    await asyncio.to_thread(self.store.save, key, None, order)
                except StoreError as exc:
                    log.error("expired order not removed from the store: %s", exc, extra={"event": "store_error"})
            if self.store.version() != self._seen:
                await self._read()

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
        if orders is not None:  # unreadable: the orders in force stay as they are
            self._registry.restore(orders)  # each change is logged and published by the registry's sink

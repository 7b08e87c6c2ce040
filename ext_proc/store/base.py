"""The state store's interface and the form an order takes outside the process: forced states by
(model, tier), and canary orders by (model, ``CANARY_KEY``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ext_proc.core.canary.run import Action, CanaryOrder
from ext_proc.core.forcing import ForceMode, ForceOrder
from ext_proc.policy import BUCKETS

TierKey = tuple[str, str]
"""(model, tier)."""
Order = ForceOrder | CanaryOrder
CANARY_KEY = "@canary"
"""The second half of the key of a model's canary order (no tier name can be it)."""
CANARY_KIND = "canary"

LATEST = 253_402_300_799
"""9999-12-31T23:59:59Z, the last second a protobuf Timestamp (and so the admin API) can carry."""
MAX_TEXT = 500
"""The longest reason or caller kept: a record is for people to read, not a place to store data."""


class StoreError(OSError):
    """The store cannot be written (or read at all); the message names where and why."""


class StateStore(Protocol):
    """Where forced states outlive the process. Implementations are safe to call from several
    processes at once (``--workers``): a write changes one tier's record and keeps the others'."""

    @property
    def where(self) -> str:
        """For logs and errors: the directory, or the backend's address."""
        ...

    def load(self) -> dict[TierKey, Order] | None:
        """Every order stored, or None when there is nothing to read (never written, gone) or it
        cannot be read at all: the orders in force then stay as they are. Nothing is raised:
        what cannot be read is logged and skipped, since a corrupt store must not keep
        modelguard from serving."""
        ...

    def save(self, key: TierKey, order: Order | None, replacing: Order | None = None) -> None:
        """Store ``order`` for ``key`` (None: remove it); with ``replacing``, only if the stored
        order is still that one (an expiry must not remove a newer order). StoreError if it cannot."""
        ...

    def version(self) -> object:
        """Something that changes when the stored orders may have (another process wrote them)."""
        ...


def order_to_record(key: TierKey, order: Order) -> dict[str, object]:
    if isinstance(order, CanaryOrder):
        return {"model": key[0], "kind": CANARY_KIND, **order.to_json()}
    return {"model": key[0], "tier": key[1], **order.to_json()}


def order_from_record(record: object) -> tuple[TierKey, Order]:
    """ValueError naming what is wrong with a stored record."""
    if not isinstance(record, Mapping):
        raise ValueError("a record must be an object")
    if record.get("kind") == CANARY_KIND:
        return _canary_from_record(record)
    model, tier = _text(record, "model"), _text(record, "tier")
    if not model or not tier:
        raise ValueError("model and tier must not be empty")
    try:
        mode = ForceMode(record.get("mode"))
    except ValueError:
        raise ValueError(f"mode must be forced_open or forced_closed, not {record.get('mode')!r}") from None
    if mode is ForceMode.AUTO:
        raise ValueError("auto is not stored: it is the absence of an order")
    since = _seconds(record, "since")
    until = None if record.get("until") is None else _seconds(record, "until")
    if since is None:
        raise ValueError("since is missing")
    order = ForceOrder(mode, _text(record, "reason"), _text(record, "caller"), since, until)
    return (model, tier), order


def _canary_from_record(record: Mapping[str, object]) -> tuple[TierKey, CanaryOrder]:
    model, route = _text(record, "model"), _text(record, "route")
    if not model or not route:
        raise ValueError("model and route must not be empty")
    try:
        action = Action(record.get("action"))
    except ValueError:
        raise ValueError(f"action must be abort, promote or weight, not {record.get('action')!r}") from None
    weight = record.get("weight", 0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
        raise ValueError("weight must be a share from 0 to 1")
    since = _seconds(record, "since")
    if since is None:
        raise ValueError("since is missing")
    order = CanaryOrder(action, route, _text(record, "reason"), _text(record, "caller"), since, round(weight * BUCKETS))
    return (model, CANARY_KEY), order


def _text(record: Mapping[str, object], name: str) -> str:
    value = record.get(name, "")
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ValueError(f"{name} must be a string of at most {MAX_TEXT} characters")
    return value


def _seconds(record: Mapping[str, object], name: str) -> float | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= LATEST:
        raise ValueError(f"{name} must be a non-negative number of seconds")
    return float(value)

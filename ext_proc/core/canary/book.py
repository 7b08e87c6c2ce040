"""Every model's canary, kept across policies as the breakers are (core/registry.py owns one).

A reload that keeps a model's canary route keeps its run: state, weight, evidence, order. A new
route is a new version: a fresh run, with no order (an abort of v2 does not hold back v3). Orders
are kept by model whether the live policy has that canary or not, and applied when a policy with
a canary of their route comes, as forced states are.
"""

from __future__ import annotations

import random

from ext_proc.core.canary.run import Action, CanaryChange, CanaryOrder, CanaryRun, CanaryState, ChangeSink
from ext_proc.core.clock import Clock
from ext_proc.core.listing import listed
from ext_proc.policy import Canary
from ext_proc.policy.durations import shown

RESTORED = "state store"
_STATE_OF = {
    Action.ABORT: CanaryState.ABORTED.value,
    Action.PROMOTE: CanaryState.PROMOTED.value,
    Action.WEIGHT: CanaryState.ACTIVE.value,
}
"""The caller of a change read back from the state store."""


class UnknownCanary(KeyError):
    """No canary for that model in the live policy; ``known`` lists the models that have one."""

    def __init__(self, model: str, known: list[str]) -> None:
        super().__init__(model)
        self.model = model
        self.known = known

    def __str__(self) -> str:
        return f"no canary for model {shown(self.model)}; models with a canary: {listed(self.known)}"


class RouteChanged(ValueError):
    """An order for a version that is no longer the model's canary (a reload changed the route)."""


class CanaryBook:
    def __init__(self, clock: Clock, wall: Clock, rng: random.Random, sink: ChangeSink) -> None:
        self.clock = clock
        self.wall = wall
        self._rng = rng
        self.sink = sink
        self._runs: dict[str, CanaryRun] = {}
        self._orders: dict[str, CanaryOrder] = {}

    def run(self, model: str, settings: Canary, build: int) -> CanaryRun:
        """The run of a model's canary: the one held (reconfigured), or a fresh one."""
        run = self._runs.get(model)
        if run is None or run.route != settings.route:
            if run is not None:
                run.retired = True
            run = self._runs[model] = CanaryRun(model, settings, self.clock, self.wall, self._rng, self._changed)
            order = self._orders.get(model)
            if order is not None and order.route == settings.route:
                run.apply(order, cause="order kept")
        elif run.settings != settings:
            run.reconfigure(settings)
        run.mark = build
        return run

    def sweep(self, build: int) -> None:
        for run in self._runs.values():
            run.retired = run.mark != build
        self._runs = {model: run for model, run in self._runs.items() if run.mark == build}

    def runs(self) -> list[CanaryRun]:
        return list(self._runs.values())

    def find(self, model: str) -> CanaryRun:
        run = self._runs.get(model)
        if run is None:
            raise UnknownCanary(model, sorted(self._runs))
        return run

    def orders(self) -> dict[str, CanaryOrder]:
        return dict(self._orders)

    def give(self, model: str, order: CanaryOrder | None, caller: str) -> CanaryChange:
        """Put an operator's order in force (None: resume); ``UnknownCanary`` if there is no
        canary (a resume also drops an order kept for a canary the policy no longer has),
        ``RouteChanged`` if the order is for another version than the live one."""
        run = self._runs.get(model)
        if run is None and order is None and model in self._orders:
            kept = self._orders.pop(model)
            return CanaryChange(
                model, kept.route, _STATE_OF[kept.action], "none", 0.0, 0.0, f"dropped by {caller}", caller
            )
        run = self.find(model)
        if order is not None and order.route != run.route:
            raise RouteChanged(f"the canary of {shown(model)} is now {shown(run.route)}, not {shown(order.route)}")
        if order is None:
            self._orders.pop(model, None)
            return run.apply(None, cause=f"resumed by {caller}")
        self._orders[model] = order
        return run.apply(order, cause=f"{order.action.value} by {caller}")

    def kept(self, model: str) -> bool:
        """An order is kept for the model (its canary live or not)."""
        return model in self._orders

    def _changed(self, change: CanaryChange) -> None:
        """Every run's changes; a run's own order (a guardrail's abort) is kept like an operator's
        (only the live run's: a retired one judges nothing, but say so here too)."""
        if change.verdict:
            live = self._runs.get(change.model)
            if live is None or live.route != change.route:
                return
            if change.order is not None:
                self._orders[change.model] = change.order
        self.sink(change)

    def restore(self, orders: dict[str, CanaryOrder]) -> list[CanaryChange]:
        """Make ``orders`` the orders in force (read back from the state store)."""
        changes = []
        for model in set(self._orders) | set(orders):
            order, previous = orders.get(model), self._orders.get(model)
            if order == previous:
                continue
            if order is None:
                self._orders.pop(model, None)
            else:
                self._orders[model] = order
            run = self._runs.get(model)
            if run is None or (order is not None and order.route != run.route):
                continue
            if order is None and (previous is None or previous.route != run.route):
                continue
            changes.append(run.apply(order, cause=f"{'resumed' if order is None else order.action.value} ({RESTORED})"))
        return changes

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
        """The live guard's runs, by model."""
        self._staged: dict[str, CanaryRun] = {}
        """Runs for a new route, built for a guard not yet live."""
        self._orders: dict[str, CanaryOrder] = {}

    def run(self, model: str, settings: Canary, build: int) -> CanaryRun:
        """The run of a model's canary: the one held (reconfigured), or a fresh one. A fresh run
        for a new route is staged: the live guard decides through the old run until the build's
        guard goes live (``sweep``), as the registry does with a tier's state for a new route."""
        live, staged = self._runs.get(model), self._staged.get(model)
        run = staged if staged is not None and staged.route == settings.route else live
        if run is None or run.route != settings.route:
            run = CanaryRun(model, settings, self.clock, self.wall, self._rng, self._changed)
            if live is None:
                self._runs[model] = run
            else:
                self._staged[model] = run
            order = self._orders.get(model)
            if order is not None and order.route == settings.route:
                run.apply(order, cause="order kept")
        elif run.settings != settings:
            run.reconfigure(settings)
        run.mark = build
        return run

    def sweep(self, build: int) -> None:
        """Build ``build`` went live: its staged runs replace the runs of the old routes, and runs
        it did not ask for are dropped; either way, a retired run judges nothing more."""
        for model, staged in self._staged.items():
            if staged.mark == build:
                replaced = self._runs.get(model)
                if replaced is not None:
                    replaced.retired = True
                self._runs[model] = staged
        self._staged = {}
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
        run = self.check(model, order)
        if order is None:
            self._orders.pop(model, None)
            return run.apply(None, cause=f"resumed by {caller}")
        self._orders[model] = order
        return run.apply(order, cause=f"{order.action.value} by {caller}")

    def check(self, model: str, order: CanaryOrder | None) -> CanaryRun:
        """The live run an order would go to: ``UnknownCanary``, or ``RouteChanged`` if the order
        names another version."""
        run = self.find(model)
        if order is not None and order.route != run.route:
            raise RouteChanged(f"the canary of {shown(model)} is now {shown(run.route)}, not {shown(order.route)}")
        return run

    def breaker_opened(self, model: str, route: str) -> None:
        """The canary route's breaker opened from closed (core/registry.py tells)."""
        run = self._runs.get(model)
        if run is not None and run.route == route:
            run.breaker_open()

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
        """Make ``orders`` the orders in force (read back from the state store). An order for
        another route than the live canary's is kept (it applies if that version comes back) but
        changes nothing now."""
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
            if run is None:
                continue
            was_live = previous is not None and previous.route == run.route
            if order is not None and order.route == run.route:
                changes.append(run.apply(order, cause=f"{order.action.value} ({RESTORED})"))
            elif was_live:
                changes.append(run.apply(None, cause=f"resumed ({RESTORED})"))
        return changes

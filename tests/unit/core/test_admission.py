"""The admission chain: all or nothing, and every token settled exactly once."""

from __future__ import annotations

from dataclasses import dataclass, field

from ext_proc.core.admission import Token, admit_all, reason_of


@dataclass
class FakeToken:
    name: str
    log: list[str]
    reason: str | None = None

    def record(self, outcome: str, latency: float, started: float) -> None:
        self.log.append(f"{self.name} record {outcome}")

    def release(self, started: float) -> None:
        self.log.append(f"{self.name} release")


@dataclass
class FakeAdmitter:
    name: str
    admits: bool
    log: list[str] = field(default_factory=list)
    reason: str | None = None

    def admit(self, now: float) -> Token | None:
        self.log.append(f"{self.name} admit")
        return FakeToken(self.name, self.log, self.reason) if self.admits else None


def test_a_refusal_releases_what_was_taken_and_stops_the_chain() -> None:
    log: list[str] = []
    chain = [FakeAdmitter("limit", True, log), FakeAdmitter("breaker", False, log), FakeAdmitter("arm", True, log)]
    assert admit_all(chain, 1.0) is None
    assert log == ["limit admit", "breaker admit", "limit release"]


def test_every_admitter_gives_a_token_in_order() -> None:
    log: list[str] = []
    chain = [FakeAdmitter("limit", True, log), FakeAdmitter("breaker", True, log, reason="half_open_probe")]
    tokens = admit_all(chain, 1.0)
    assert tokens is not None and [t.reason for t in tokens] == [None, "half_open_probe"]
    assert reason_of(tokens) == "half_open_probe"


def test_a_guard_settles_every_token_once() -> None:
    import random

    from ext_proc.core.clock import ManualClock
    from ext_proc.core.guard import Guard
    from ext_proc.core.registry import StateRegistry
    from ext_proc.policy import parse_policy

    guard = Guard(
        parse_policy("models: [{name: m, match: {path_prefix: /m}, tiers: [{name: t, route: r}]}]"),
        StateRegistry(ManualClock(), random.Random(1)),
    )
    log: list[str] = []
    tier = guard.models[0].tiers[0]
    tier.chain = (FakeAdmitter("limit", True, log),)  # the chain now has two admitters: the gate and this
    ticket = guard.decide({":method": "POST", ":path": "/m/infer"})
    assert len(ticket.tokens) == 2
    assert guard.record(ticket, 500, None) == "failure"
    assert guard.record(ticket, 200, None) is None
    guard.release(ticket)
    assert log == ["limit admit", "limit record failure"]
    second = guard.decide({":method": "POST", ":path": "/m/infer"})
    guard.release(second)
    guard.release(second)
    assert log[-2:] == ["limit admit", "limit release"]
    assert guard.registry.get("m", "t").inflight == 0

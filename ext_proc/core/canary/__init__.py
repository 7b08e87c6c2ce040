"""Canary gating: a sticky share of a model's keys served by a new version at its first tier,
judged against the stable version on every response, and aborted as soon as the evidence says
so (README, "Canary gating"). Pure: clock and randomness injected, no I/O.

- buckets.py: sticky, monotone assignment of keys to buckets.
- betting.py: the anytime-valid sequential tests and the stable rate's confidence bound.
- sketch.py: stable's recent latency quantile in bounded memory.
- evidence.py: both arms' figures and the tests over them: a verdict or none.
- run.py: one canary's life (states, weight, ramp, operators' orders) and its changes.
- book.py: every model's canary, kept across policies like the breakers.
"""

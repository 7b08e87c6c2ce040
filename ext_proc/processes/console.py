"""What the demo and the benchmarks print while they run."""

from __future__ import annotations

__all__ = ["say"]


def say(text: str) -> None:
    """One progress line on stdout, flushed at once: it shows while the run goes on, also
    through a pipe, in order with what child processes write to the same terminal."""
    print(text, flush=True)

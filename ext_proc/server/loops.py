"""Which asyncio event loop ``modelguard serve`` runs on.

uvloop when it is installed (it is a dependency on Linux and macOS): measured through real Envoy,
the same server costs about 15% less CPU per request on it, most of a Python ext_proc server's
time being event-loop and gRPC plumbing rather than its own code (bench/README.md). The
standard loop stays one flag away (``--event-loop asyncio``) for platforms without uvloop or
for ruling the loop out when chasing a problem.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

AUTO = "auto"
UVLOOP = "uvloop"
ASYNCIO = "asyncio"
EVENT_LOOPS = (AUTO, UVLOOP, ASYNCIO)

T = TypeVar("T")


class EventLoopUnavailable(RuntimeError):
    pass


def loop_factory(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """(the loop's name, a factory for it). ``auto`` is uvloop if importable, else asyncio."""
    if choice not in EVENT_LOOPS:
        raise ValueError(f"event loop must be one of {', '.join(EVENT_LOOPS)}, got {choice!r}")
    if choice in (AUTO, UVLOOP):
        try:
            import uvloop
        except ImportError as exc:
            if choice == UVLOOP:
                raise EventLoopUnavailable(f"uvloop is not installed ({exc}); use --event-loop asyncio") from exc
        else:
            return UVLOOP, uvloop.new_event_loop
    return ASYNCIO, asyncio.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: str = AUTO) -> T:
    """asyncio.run on the chosen loop."""
    _name, factory = loop_factory(choice)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """``uvloop`` or ``asyncio``: what the running loop is, for the serving log line."""
    return UVLOOP if type(asyncio.get_running_loop()).__module__.startswith(UVLOOP) else ASYNCIO

"""Choosing the event loop: uvloop when installed, the standard loop on request or as fallback."""

from __future__ import annotations

import asyncio
import sys

import pytest

from ext_proc.server.loops import EventLoopUnavailable, loop_factory, run, running_loop_name


async def _name() -> str:
    return running_loop_name()


def test_auto_prefers_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")
    name, _factory = loop_factory("auto")
    assert name == "uvloop"
    assert run(_name(), "auto") == "uvloop"


def test_asyncio_on_request() -> None:
    name, factory = loop_factory("asyncio")
    assert name == "asyncio" and factory is asyncio.new_event_loop
    assert run(_name(), "asyncio") == "asyncio"


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert loop_factory("auto")[0] == "asyncio"
    with pytest.raises(EventLoopUnavailable, match="--event-loop asyncio"):
        loop_factory("uvloop")


def test_unknown_loop_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="auto, uvloop, asyncio"):
        loop_factory("trio")

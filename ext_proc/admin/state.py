"""The /v1/state body: ``Guard.snapshot()`` as JSON, written one model at a time in slices
(observe/exposition.py's ``sliced``), so that 10,000 models never hold the event loop."""

from __future__ import annotations

import json
from collections.abc import Iterator

from ext_proc.core.guard import Guard, ModelGuard
from ext_proc.observe.exposition import SLICE_SECONDS, sliced


def _model_json(model: ModelGuard) -> str:
    return f"{json.dumps(model.name)}: {json.dumps(model.snapshot())}"


def state_text(guard: Guard) -> Iterator[str]:
    """``json.dumps(guard.snapshot())``, one model at a time (model names are unique in a policy)."""
    yield '{"models": {'
    for index, model in enumerate(guard.models):
        yield _model_json(model) if index == 0 else ", " + _model_json(model)
    yield f'}}, "unmatched_requests": {json.dumps(guard.unmatched.count)}}}'


async def render_state(guard: Guard, budget: float = SLICE_SECONDS) -> list[bytes]:
    return await sliced(state_text(guard), budget)

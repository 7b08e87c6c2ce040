"""The demo model servers' error answers, in the protocol of the call: KServe v2's
``{"error": "<message>"}`` (what tritonclient and the KServe client parse) or OpenAI's error object
(what the openai SDK raises with its message), with aiohttp's own errors worded the same way."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from ext_proc.demo.kserve import BadRequest
from ext_proc.demo.openai_api import error_body

# The kinds of error answer, which each protocol words its own way.
BAD_REQUEST = "bad_request"
NOT_FOUND = "not_found"
FAULT = "fault"
OVERLOAD = "overload"
UNAVAILABLE = "unavailable"

_OPENAI_ERRORS = {  # kind -> (OpenAI error type, code)
    BAD_REQUEST: ("invalid_request_error", None),
    NOT_FOUND: ("invalid_request_error", "model_not_found"),
    FAULT: ("server_error", "model_error"),
    OVERLOAD: ("server_error", "overloaded"),
    UNAVAILABLE: ("server_error", "unavailable"),
}

ErrorAnswer = Callable[[int, str, str], web.Response]
"""(status, message, kind) -> an error answer in the call's protocol."""


def json_error(status: int, message: str, **extra: object) -> web.Response:
    """KServe v2's error answer (``extra`` adds fields beside ``error``)."""
    return web.json_response({"error": message, **extra}, status=status)


def openai_error(status: int, message: str, kind: str) -> web.Response:
    error_type, code = _OPENAI_ERRORS[kind]
    return web.json_response(error_body(message, error_type, code), status=status)


def json_body(body: bytes) -> object:
    """A request body as JSON; BadRequest when it is not."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("request body must be JSON") from None


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own errors (no route, wrong method, body too large) as JSON, like ours: OpenAI's
    error object under ``/v1/``, KServe's elsewhere."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if request.path.startswith("/v1/"):
            response = openai_error(exc.status, exc.reason, BAD_REQUEST)
        else:
            response = json_error(exc.status, exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response

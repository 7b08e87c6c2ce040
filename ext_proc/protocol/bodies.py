"""The ``model`` of an OpenAI-style request body, read without trusting the body.

OpenAI's APIs (``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``) name the model in
the JSON body, not the path. Only the top level of the object is walked, one byte at a time and
without recursion (nesting is counted, never followed), over at most the bytes given; strings are
JSON strings (escapes decoded, the model's name must be plain text); the first error, or the end of
what was given before the name, is "no model". A body naming ``model`` twice names no model: a model
server keeps the last (Python's json, pydantic), a scanner would take the first, and a client must
not be able to be judged as one model while served as another.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ext_proc.protocol.paths import routed_path

BODY_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
"""API paths whose requests name their model in the body (any prefix before them: a gateway's
``/openai/v1/chat/completions``)."""
MAX_NAME = 256
"""Bytes of a model name at most."""
_WHITESPACE = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class BodyModel:
    name: str
    start: int
    """Where the name's JSON string starts (its opening quote) in the body."""
    end: int
    """Just after its closing quote: ``body[start:end]`` is the JSON string, to replace whole."""


class _Stop(Exception):
    """The body does not parse (or ends) before a verdict."""


def names_model_in_body(path: str) -> bool:
    """Whether a request's ``:path`` is one of BODY_PATHS, as a server would route it."""
    return routed_path(path).endswith(BODY_PATHS)


def model_of(body: bytes) -> BodyModel | None:
    """The top-level ``"model"`` string of a JSON object, or None (see the module)."""
    try:
        return _Scan(body).object()
    except _Stop:
        return None


class _Scan:
    __slots__ = ("at", "body")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.at = 0

    def object(self) -> BodyModel | None:
        self.expect(b"{")
        found: BodyModel | None = None
        if self.peek() == b"}":
            return None
        while True:
            key = self.string_bytes()
            self.expect(b":")
            if key == b'"model"':
                if found is not None:
                    return None  # named twice: no model
                found = self.name()
            else:
                self.skip_value()
            if self.next_structural() == b"}":
                return found
            # a comma: another member follows

    def name(self) -> BodyModel:
        self.skip_space()
        start = self.at
        raw = self.string_bytes()
        if len(raw) > MAX_NAME + 2:
            raise _Stop
        try:
            name = json.loads(raw)
        except ValueError:
            raise _Stop from None
        if not isinstance(name, str) or not name or not name.isprintable():
            raise _Stop
        return BodyModel(name, start, self.at)

    def string_bytes(self) -> bytes:
        """A JSON string at the cursor (after space), returned raw with its quotes."""
        self.skip_space()
        body = self.body
        start = self.at
        if body[start : start + 1] != b'"':
            raise _Stop
        at = start + 1
        while True:
            quote = body.find(b'"', at)
            if quote < 0:
                raise _Stop
            slashes = 0
            back = quote - 1
            while back > start and body[back] == 0x5C:  # backslashes right before the quote
                slashes += 1
                back -= 1
            if slashes % 2 == 0:
                self.at = quote + 1
                return body[start : self.at]
            at = quote + 1

    def skip_value(self) -> None:
        """Past one value of any kind, nested ones counted, not followed."""
        self.skip_space()
        first = self.peek()
        if first == b'"':
            self.string_bytes()
            return
        if first in (b"{", b"["):
            self.skip_nested()
            return
        found = _SCALAR_END.search(self.body, self.at)
        if found is None or found.start() == self.at:
            raise _Stop
        self.at = found.start()

    def skip_nested(self) -> None:
        """Past an object or array: only strings and brackets are looked at, found by a regular
        expression, so that a megabyte of numbers costs a search, not a Python loop per byte."""
        body = self.body
        depth = 0
        while True:
            found = _NESTING.search(body, self.at)
            if found is None:
                raise _Stop
            self.at = found.start()
            char = body[self.at]
            if char == _QUOTE:
                self.string_bytes()
                continue
            depth += 1 if char in _OPENING else -1
            self.at += 1
            if depth == 0:
                return

    def next_structural(self) -> bytes:
        self.skip_space()
        char = self.peek()
        if char not in (b",", b"}"):
            raise _Stop
        self.at += 1
        return char

    def expect(self, char: bytes) -> None:
        self.skip_space()
        if self.peek() != char:
            raise _Stop
        self.at += 1

    def peek(self) -> bytes:
        return self.body[self.at : self.at + 1]

    def skip_space(self) -> None:
        body = self.body
        at = self.at
        while at < len(body) and body[at] in _WHITESPACE:
            at += 1
        self.at = at


_SCALAR_END = re.compile(rb"[,}\]\s]")
_NESTING = re.compile(rb'["{}\[\]]')
_QUOTE = ord('"')
_OPENING = frozenset(b"{[")

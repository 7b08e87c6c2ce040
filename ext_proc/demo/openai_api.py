"""The demo model servers' OpenAI-compatible endpoints: ``POST /v1/chat/completions`` and
``POST /v1/completions``, whole answers or ``stream: true`` server-sent events, in the shapes the
openai SDK parses.

The model behind them is the server's own recommender, so the text answers come from real
inference: the prompt's words are hashed into the model's input row (the hashing trick), and the
answer names the top-scoring items (``item-17 item-4 ...``), one word per token. The same prompt
gets the same answer from the same variant; the primary and light variants answer differently.

Every request is untrusted: each problem is a `BadRequest` (a 400 with an OpenAI error object).
Fields the demo does not use are ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ext_proc.demo.kserve import MAX_NAME_CHARS, BadRequest, quoted

CHAT = "chat"
COMPLETION = "completion"
DEFAULT_ITEMS = 5
"""Items (tokens) in an answer unless ``max_tokens`` asks for fewer."""
MAX_MESSAGES = 256
MAX_PROMPT_CHARS = 100_000
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
SSE_CONTENT_TYPE = "text/event-stream"
DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class TextRequest:
    endpoint: str
    """CHAT or COMPLETION."""
    model: str
    prompts: tuple[str, ...]
    """One per choice: a chat's messages in one text; a completion's prompts, a batch."""
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None


@dataclass(frozen=True)
class Choice:
    words: tuple[str, ...]
    finish_reason: str


def parse_chat(body: object) -> TextRequest:
    document, model = _common(body)
    messages = document.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
        raise BadRequest(f"messages: required, a list of 1 to {MAX_MESSAGES} messages")
    texts = [_message_text(message, f"messages[{index}]") for index, message in enumerate(messages)]
    return _request(document, CHAT, model, ("\n".join(texts),))


def parse_completion(body: object, max_batch: int) -> TextRequest:
    document, model = _common(body)
    prompt = document.get("prompt")
    if isinstance(prompt, str):
        prompts: tuple[str, ...] = (prompt,)
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if len(prompt) > max_batch:
            raise BadRequest(f"prompt: at most {max_batch} prompts, got {len(prompt)}")
        prompts = tuple(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(p, int | list) for p in prompt):
        raise BadRequest("prompt: token arrays are not supported, send text")
    else:
        raise BadRequest("prompt: required, a string or a non-empty list of strings")
    return _request(document, COMPLETION, model, prompts)


def _common(body: object) -> tuple[Mapping[str, object], str]:
    """The request as an object, and its model's name (any name is this server's model)."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not 1 <= len(model) <= MAX_NAME_CHARS:
        raise BadRequest(f"model: required, a name of 1 to {MAX_NAME_CHARS} characters")
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise BadRequest(f"n: only 1 is supported, got {quoted(n)}")
    return body, model


def _request(document: Mapping[str, object], endpoint: str, model: str, prompts: tuple[str, ...]) -> TextRequest:
    if sum(len(p) for p in prompts) > MAX_PROMPT_CHARS:
        raise BadRequest(f"the prompt is longer than {MAX_PROMPT_CHARS} characters")
    stream = document.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest(f"stream: must be true or false, got {quoted(stream)}")
    options = document.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("stream_options: must be an object")
    include_usage = (options or {}).get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise BadRequest(f"stream_options.include_usage: must be true or false, got {quoted(include_usage)}")
    max_tokens: int | None = None
    for key in ("max_tokens", "max_completion_tokens"):
        value = document.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"{key}: must be a whole number of at least 1, got {quoted(value)}")
        max_tokens = value if max_tokens is None else min(max_tokens, value)
    return TextRequest(endpoint, model, prompts, stream is True, include_usage is True, max_tokens)


def _message_text(message: object, path: str) -> str:
    if not isinstance(message, dict):
        raise BadRequest(f"{path}: must be an object")
    role = message.get("role")
    if role not in ROLES:
        raise BadRequest(f"{path}.role: must be one of {', '.join(ROLES)}, got {quoted(role)}")
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise BadRequest(f"{path}.content: must be a string or a list of text parts")
    texts: list[str] = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else part
            raise BadRequest(f"{path}.content[{index}]: only text parts are supported, got {quoted(kind)}")
        texts.append(part["text"])
    return "\n".join(texts)


def text_features(text: str, size: int) -> list[float]:
    """The model's input row for a text: its words hashed into ``size`` signed buckets, scaled to
    a mean square of 1 (all zeros for a text without words)."""
    row = [0.0] * size
    for word in text.lower().split():
        digest = zlib.crc32(word.encode("utf-8", "surrogatepass"))
        row[digest % size] += 1.0 if digest & 0x8000_0000 else -1.0
    norm = math.sqrt(sum(v * v for v in row))
    return [v * math.sqrt(size) / norm for v in row] if norm else row


def choose(scores: Sequence[float], max_tokens: int | None) -> Choice:
    """The answer to one prompt: the top-scoring items, best first."""
    count = DEFAULT_ITEMS if max_tokens is None else min(DEFAULT_ITEMS, max_tokens)
    best = sorted(range(len(scores)), key=lambda index: (-scores[index], index))[:count]
    return Choice(tuple(f"item-{index}" for index in best), "length" if count < DEFAULT_ITEMS else "stop")


def usage(request: TextRequest, choices: Sequence[Choice]) -> dict[str, int]:
    prompt = sum(len(p.split()) for p in request.prompts)
    completion = sum(len(c.words) for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def answer(request: TextRequest, choices: Sequence[Choice], answer_id: str, created: int) -> dict[str, object]:
    """The whole (non-streamed) answer."""
    if request.endpoint == CHAT:
        listed: list[dict[str, object]] = [
            {
                "index": index,
                "message": {"role": "assistant", "content": " ".join(c.words), "refusal": None},
                "logprobs": None,
                "finish_reason": c.finish_reason,
            }
            for index, c in enumerate(choices)
        ]
    else:
        listed = [
            {"index": index, "text": " ".join(c.words), "logprobs": None, "finish_reason": c.finish_reason}
            for index, c in enumerate(choices)
        ]
    return {**_envelope(request, answer_id, created, chunk=False), "choices": listed, "usage": usage(request, choices)}


def stream_events(request: TextRequest, choices: Sequence[Choice], answer_id: str, created: int) -> list[bytes]:
    """The server-sent events of a streamed answer: a chunk per token, a last chunk per choice
    with its finish reason, the usage when asked for, then ``[DONE]``."""
    envelope = _envelope(request, answer_id, created, chunk=True)
    chat = request.endpoint == CHAT

    def chunk(index: int, piece: str | None, finish_reason: str | None) -> bytes:
        choice: dict[str, object]
        if chat:
            delta: dict[str, object] = {} if piece is None else {"content": piece}
            if piece == "":
                delta["role"] = "assistant"
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": index, "text": piece or "", "logprobs": None, "finish_reason": finish_reason}
        return _event({**envelope, "choices": [choice]})

    events: list[bytes] = []
    for index, c in enumerate(choices):
        if chat:
            events.append(chunk(index, "", None))  # the role first, as OpenAI streams it
        events.extend(chunk(index, word if n == 0 else " " + word, None) for n, word in enumerate(c.words))
        events.append(chunk(index, None, c.finish_reason))
    if request.include_usage:
        events.append(_event({**envelope, "choices": [], "usage": usage(request, choices)}))
    events.append(DONE)
    return events


def error_body(message: str, kind: str, code: str | None = None) -> dict[str, object]:
    """OpenAI's error object, which the SDK raises as an APIStatusError with this message."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _envelope(request: TextRequest, answer_id: str, created: int, *, chunk: bool) -> dict[str, object]:
    if request.endpoint == CHAT:
        kind, prefix = ("chat.completion.chunk" if chunk else "chat.completion"), "chatcmpl-"
    else:
        kind, prefix = "text_completion", "cmpl-"
    return {
        "id": prefix + answer_id,
        "object": kind,
        "created": created,
        "model": request.model,
        "system_fingerprint": None,
    }


def _event(data: Mapping[str, object]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"

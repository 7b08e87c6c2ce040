"""The demo model servers' OpenAI-compatible endpoints: request checks, and answers in the shapes
the openai SDK's own models validate."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ext_proc.demo.kserve import BadRequest
from ext_proc.demo.openai_api import (
    CHAT,
    COMPLETION,
    DONE,
    Choice,
    TextRequest,
    answer,
    choose,
    error_body,
    parse_chat,
    parse_completion,
    stream_events,
    text_features,
)

MAX_BATCH = 4


def chat(**changes: Any) -> dict[str, Any]:
    return {"model": "any-model", "messages": [{"role": "user", "content": "hello there"}], **changes}


def test_a_chat_request() -> None:
    body = chat(
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "red"}, {"type": "text", "text": "shoes"}]},
            {"role": "assistant", "content": None, "tool_calls": []},
        ],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=9,
        max_completion_tokens=3,
        temperature=0.2,
        some_future_field={"x": 1},
    )
    assert parse_chat(body) == TextRequest(CHAT, "any-model", ("be brief\nred\nshoes\n",), True, True, 3)


def test_a_completion_request() -> None:
    assert parse_completion({"model": "m", "prompt": "one two"}, MAX_BATCH).prompts == ("one two",)
    batch = parse_completion({"model": "m", "prompt": ["a", "b", "c"], "stream": None}, MAX_BATCH)
    assert (batch.endpoint, batch.prompts, batch.stream) == (COMPLETION, ("a", "b", "c"), False)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"messages": []}, "model: required"),
        (chat(model=""), "model: required"),
        (chat(model="m" * 257), "model: required"),
        (chat(model=5), "model: required"),
        (chat(messages=[]), "messages: required"),
        (chat(messages="hi"), "messages: required"),
        (chat(messages=[{"role": "user"}] * 257), "messages: required"),
        (chat(messages=["hi"]), "messages[0]: must be an object"),
        (chat(messages=[{"role": "robot", "content": "x"}]), "messages[0].role: must be one of"),
        (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content: must be a string"),
        (
            chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
            "messages[0].content[0]: only text parts are supported, got 'image_url'",
        ),
        (chat(messages=[{"role": "user", "content": [{"type": "text", "text": 1}]}]), "only text parts"),
        (chat(messages=[{"role": "user", "content": ["x"]}]), "only text parts"),
        (chat(n=2), "n: only 1 is supported"),
        (chat(n=True), "n: only 1 is supported"),
        (chat(stream="yes"), "stream: must be true or false"),
        (chat(stream_options=[]), "stream_options: must be an object"),
        (chat(stream_options={"include_usage": 1}), "include_usage: must be true or false"),
        (chat(max_tokens=0), "max_tokens: must be a whole number"),
        (chat(max_tokens=1.5), "max_tokens: must be a whole number"),
        (chat(max_completion_tokens=True), "max_completion_tokens: must be a whole number"),
        (chat(messages=[{"role": "user", "content": "x" * 100_001}]), "longer than 100000 characters"),
    ],
)
def test_bad_chat_requests(body: Any, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_chat(body)
    assert message in str(caught.value)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (None, "prompt: required"),
        ([], "prompt: required"),
        (5, "prompt: required"),
        (["a", 1], "prompt: required"),
        ([1, 2, 3], "token arrays are not supported"),
        ([[1, 2]], "token arrays are not supported"),
        (["a"] * 5, "at most 4 prompts"),
        (["x" * 60_000] * 2, "longer than"),
    ],
)
def test_bad_completion_requests(prompt: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_completion({"model": "m", "prompt": prompt}, MAX_BATCH)


def test_text_features_are_deterministic_and_bounded() -> None:
    row = text_features("Red shoes, red SHOES", 64)
    assert row == text_features("red shoes, RED shoes", 64)
    assert len(row) == 64 and row != [0.0] * 64
    assert sum(v * v for v in row) == pytest.approx(64)
    assert text_features("", 64) == [0.0] * 64
    assert text_features("   \n", 64) == [0.0] * 64
    assert len(text_features("\ud800 lone surrogate", 64)) == 64  # JSON can carry one


def test_choose_names_the_best_items() -> None:
    scores = [0.1, 0.5, 0.05, 0.3, 0.05]
    assert choose(scores, None) == Choice(("item-1", "item-3", "item-0", "item-2", "item-4"), "stop")
    assert choose(scores, 2) == Choice(("item-1", "item-3"), "length")
    assert choose(scores, 100).finish_reason == "stop"


CHOICES = [Choice(("item-3", "item-1"), "stop")]


def test_a_chat_answer_is_what_the_sdk_parses() -> None:
    request = parse_chat(chat(model="ranker"))
    parsed = ChatCompletion.model_validate(answer(request, CHOICES, "h-1", 1700000000))
    assert parsed.id == "chatcmpl-h-1" and parsed.model == "ranker" and parsed.object == "chat.completion"
    assert parsed.choices[0].message.content == "item-3 item-1"
    assert parsed.choices[0].message.role == "assistant"
    assert parsed.choices[0].finish_reason == "stop"
    assert parsed.usage is not None and (parsed.usage.prompt_tokens, parsed.usage.completion_tokens) == (2, 2)


def test_a_completion_answer_is_what_the_sdk_parses() -> None:
    request = parse_completion({"model": "m", "prompt": ["a b", "c"]}, MAX_BATCH)
    choices = [*CHOICES, Choice(("item-0",), "length")]
    parsed = Completion.model_validate(answer(request, choices, "h-2", 1))
    assert [c.text for c in parsed.choices] == ["item-3 item-1", "item-0"]
    assert [c.finish_reason for c in parsed.choices] == ["stop", "length"]
    assert parsed.usage is not None and parsed.usage.total_tokens == 6


def events(request: TextRequest, choices: list[Choice]) -> list[dict[str, Any]]:
    frames = stream_events(request, choices, "h-3", 1)
    assert frames[-1] == DONE
    for frame in frames:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    return [json.loads(frame[len(b"data: ") :]) for frame in frames[:-1]]


def test_a_streamed_chat_answer_is_what_the_sdk_parses() -> None:
    request = parse_chat(chat(stream=True, stream_options={"include_usage": True}))
    chunks = [ChatCompletionChunk.model_validate(event) for event in events(request, CHOICES)]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "item-3 item-1"
    finished = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finished == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


def test_a_streamed_completion_answer_is_what_the_sdk_parses() -> None:
    request = parse_completion({"model": "m", "prompt": "x", "stream": True}, MAX_BATCH)
    streamed = events(request, CHOICES)
    # Mid-stream chunks carry finish_reason null, as OpenAI's own do: the SDK's Completion type
    # does not allow it, but the SDK parses responses without strict validation (the default).
    chunks = [
        Completion.model_validate({**e, "choices": [{**e["choices"][0], "finish_reason": "stop"}]}) for e in streamed
    ]
    assert [e["choices"][0]["finish_reason"] for e in streamed] == [None, None, "stop"]
    assert "".join(c.choices[0].text for c in chunks) == "item-3 item-1"
    assert all(c.usage is None for c in chunks)


def test_the_error_object() -> None:
    assert error_body("bad", "invalid_request_error") == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}
    }

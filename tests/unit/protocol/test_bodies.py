"""The model named in an OpenAI-style body, read from bodies no one vouches for."""

from __future__ import annotations

import json
import time

import pytest

from ext_proc.protocol.bodies import model_of


def test_the_top_level_model_is_found_with_where_its_string_lies() -> None:
    body = b'{"messages": [{"role": "user", "content": "say \\"model\\": x"}], "model" : "llama-3",\n "n": 1}'
    found = model_of(body)
    assert found is not None and found.name == "llama-3"
    assert body[found.start : found.end] == b'"llama-3"'


@pytest.mark.parametrize(
    "document",
    [
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
        {"stream": True, "temperature": 0.5, "stop": None, "model": "m\u00e9"},
        {"input": [[1, 2, 3], [4, [5, {"model": "inner"}]]], "model": "embed"},
        {"model": 'a\\b"c'},
    ],
)
def test_it_agrees_with_json(document: dict[str, object]) -> None:
    body = json.dumps(document).encode()
    found = model_of(body)
    assert found is not None and found.name == document["model"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"messages": []}',
        b'{"model": 3}',
        b'{"model": ""}',
        b'{"model": null}',
        b'{"model": "a\\u0000b"}',  # not printable text
        b'{"model": "x' + b"y" * 300 + b'"}',  # too long
        b'{"model": "\xff\xfe"}',  # not UTF-8
        b'{"model": "first", "model": "second"}',  # named twice: no model
        b'{"messages": [1, 2, {"a": ]}',  # broken before the name
        b'{"model": "trunc',
        b'{"input": [[[[[[',
        b"not json at all",
    ],
)
def test_anything_else_names_no_model(body: bytes) -> None:
    assert model_of(body) is None


def test_a_body_cut_after_the_name_still_names_no_model_if_a_second_one_could_follow() -> None:
    assert model_of(b'{"model": "a", "messages": [') is None


def test_deep_nesting_and_a_megabyte_of_numbers_cost_no_recursion_and_little_time() -> None:
    deep = b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b', "model": "m"}'
    assert model_of(deep) is not None
    numbers = b'{"input": [' + b",".join(b"12345" for _ in range(200_000)) + b'], "model": "m"}'
    started = time.process_time()
    found = model_of(numbers)
    assert found is not None and found.name == "m"
    assert time.process_time() - started < 0.5  # a regular expression's search, not a loop per byte

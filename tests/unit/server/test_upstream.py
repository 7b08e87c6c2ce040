"""The upstream attributes Envoy sends with the response headers, read as anything could send them."""

from __future__ import annotations

import pytest
from google.protobuf.struct_pb2 import Value

from ext_proc.server.servicer import MAX_ATTEMPTS, _count


@pytest.mark.parametrize(
    ("value", "attempts"),
    [
        (Value(number_value=3), 3),
        (Value(string_value="2"), 2),
        (Value(string_value="²"), 1),  # a digit to str.isdigit, not to int(): must not raise
        (Value(string_value="9" * 5000), 1),
        (Value(string_value="-1"), 1),
        (Value(number_value=0), 1),
        (Value(number_value=float("nan")), 1),
        (Value(number_value=1e300), 1),
        (Value(number_value=MAX_ATTEMPTS), MAX_ATTEMPTS),
        (Value(bool_value=True), 1),
    ],
)
def test_an_attempt_count_is_read_safely(value: Value, attempts: int) -> None:
    assert _count(value) == attempts

"""Path normalization for matching: every spelling of a path maps to the one a server acts on."""

from __future__ import annotations

import pytest

from ext_proc.protocol.paths import needs_normalizing, normalize_path


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/v2/models/r%65commender/infer", "/v2/models/recommender/infer"),  # unreserved escape
        ("/v2/models/r%45commender", "/v2/models/rEcommender"),  # case stays significant
        ("/v2/models%2Frecommender", "/v2/models/recommender"),  # escaped slash
        ("/v2/models%2frecommender", "/v2/models/recommender"),  # lower-case hex
        ("/v2//models///recommender", "/v2/models/recommender"),  # repeated slashes
        ("/v2/./models/x/../recommender", "/v2/models/recommender"),  # dot segments
        ("/v2/models/%2e/recommender", "/v2/models/recommender"),  # escaped dot segment
        ("/%2e%2e/v2/models/recommender", "/v2/models/recommender"),  # above the root
        ("/v2/models/recommender/x/..", "/v2/models/recommender/"),
        ("/v2/models/recommender/.", "/v2/models/recommender/"),
        ("/v1/models/rec%3Apredict", "/v1/models/rec:predict"),  # reserved escape, decoded too
        ("/v2\\models%5Crecommender", "/v2/models/recommender"),  # backslashes, literal or escaped
        ("/v2/models/%252F", "/v2/models/%2F"),  # decoded once, like a server
        ("/caf%C3%A9", "/caf%C3%A9"),  # non-ASCII escapes left escaped
        ("/caf%c3%a9", "/caf%C3%A9"),  # ... with upper-case hex: one path whichever case the client chose
        ("/my%20model/%7f%00", "/my%20model/%7F%00"),  # a space or a control character cannot be sent raw
        ("/..", "/"),
        ("//", "/"),
        ("/v2/models/rec%", "/v2/models/rec%"),  # a broken escape stays as it came
    ],
)
def test_normalize_path(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/v2//models/rec?next=//a/../b&x=%2F", "/v2/models/rec?next=//a/../b&x=%2F"),
        ("/v2/models/./rec#a//b", "/v2/models/rec#a//b"),
    ],
)
def test_query_and_fragment_are_left_as_they_came(raw: str, normal: str) -> None:
    assert normalize_path(raw) == normal


@pytest.mark.parametrize("path", ["/v2/models/recommender/infer", "/v1/models/rec:predict", "/a.b/c.json", "/"])
def test_ordinary_paths_take_the_fast_way(path: str) -> None:
    assert not needs_normalizing(path)
    assert normalize_path(path) is path

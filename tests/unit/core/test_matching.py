"""Matcher: first match in policy order; path prefixes end on segment boundaries."""

from __future__ import annotations

import pytest

from ext_proc.core.matching import AUTHORITY, Matcher
from ext_proc.policy import Match, parse_policy
from ext_proc.protocol.headers import PATH


def prefix(p: str) -> Match:
    return Match(path_prefix=p)


def authority(a: str) -> Match:
    return Match(authority=a)


def header(name: str, value: str) -> Match:
    return Match(header_name=name, header_value=value)


# -- path prefixes and segment boundaries ---------------------------------------------------

REC = Matcher([(prefix("/v2/models/rec"), "rec")])
POLICY_WITH = "models: [{{name: m, match: {{path_prefix: '{prefix}'}}, tiers: [{{name: p, route: r}}]}}]"


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/rec",
        "/v2/models/rec/infer",
        "/v2/models/rec/",
        "/v2/models/rec?x=1",
        "/v2/models/rec#frag",
        "/v2/models/rec;v=1",
        "/v2/models/rec:predict",
    ],
)
def test_prefix_matches_at_segment_boundary(path: str) -> None:
    assert REC.match({PATH: path}) == "rec"


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/recipe/infer",
        "/v2/models/recipe",
        "/v2/models/rec2",
        "/v2/models/rec-x",
        "/v2/models/re",
        "/v2/models",
        "/v2/models/REC",
        "/v1/models/rec",
        "",
    ],
)
def test_prefix_does_not_match_inside_a_segment(path: str) -> None:
    assert REC.match({PATH: path}) is None


def test_tf_serving_predict_style() -> None:
    matcher = Matcher([(prefix("/v1/models/rec"), "rec")])
    assert matcher.match({PATH: "/v1/models/rec:predict"}) == "rec"
    assert matcher.match({PATH: "/v1/models/recipe:predict"}) is None


def test_no_path_header() -> None:
    assert REC.match({}) is None
    assert REC.match({AUTHORITY: "rec"}) is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/models/x", "models"),
        ("/v2/models/", "models"),
        ("/v2/models/rec/infer", "models"),
        ("/v2/models", None),
        ("/v2/modelsx/y", None),
    ],
)
def test_prefix_ending_in_slash(path: str, expected: str | None) -> None:
    matcher = Matcher([(prefix("/v2/models/"), "models")])
    assert matcher.match({PATH: path}) == expected


def test_root_prefix_matches_everything() -> None:
    matcher = Matcher([(prefix("/"), "all")])
    assert matcher.match({PATH: "/"}) == "all"
    assert matcher.match({PATH: "/anything/at/all?x"}) == "all"


def test_longest_prefix_does_not_beat_policy_order() -> None:
    short_first = Matcher([(prefix("/v2"), "short"), (prefix("/v2/models/rec"), "long")])
    assert short_first.match({PATH: "/v2/models/rec/infer"}) == "short"
    long_first = Matcher([(prefix("/v2/models/rec"), "long"), (prefix("/v2"), "short")])
    assert long_first.match({PATH: "/v2/models/rec/infer"}) == "long"
    # A path the long prefix does not cover (segment boundary) falls to the short one.
    assert long_first.match({PATH: "/v2/models/recipe"}) == "short"


def test_shorter_later_prefix_used_when_earlier_longer_fails_boundary() -> None:
    matcher = Matcher([(prefix("/a/bc"), "first"), (prefix("/a"), "second")])
    assert matcher.match({PATH: "/a/bcd"}) == "second"
    assert matcher.match({PATH: "/a/bc/d"}) == "first"


def test_duplicate_prefix_first_wins() -> None:
    matcher = Matcher([(prefix("/m"), "one"), (prefix("/m"), "two")])
    assert matcher.match({PATH: "/m/x"}) == "one"


# -- authority ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("api.example.com", "host"),
        ("API.Example.COM", "host"),
        ("api.example.com:8080", "host"),
        ("API.EXAMPLE.COM:443", "host"),
        ("other.example.com", None),
        ("api.example.com.evil", None),
        ("xapi.example.com", None),
    ],
)
def test_authority_without_port_in_policy(value: str, expected: str | None) -> None:
    matcher = Matcher([(authority("api.example.com"), "host")])
    assert matcher.match({AUTHORITY: value}) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("api.example.com:8080", "ported"),
        ("API.example.com:8080", "ported"),
        ("api.example.com", None),
        ("api.example.com:9090", None),
    ],
)
def test_authority_with_port_in_policy(value: str, expected: str | None) -> None:
    matcher = Matcher([(authority("api.example.com:8080"), "ported")])
    assert matcher.match({AUTHORITY: value}) == expected


def test_authority_port_specific_and_generic() -> None:
    matcher = Matcher([(authority("api.example.com"), "any"), (authority("api.example.com:8080"), "ported")])
    # Policy order: the generic one is first, so it wins even for the port it does not name.
    assert matcher.match({AUTHORITY: "api.example.com:8080"}) == "any"
    reversed_order = Matcher([(authority("api.example.com:8080"), "ported"), (authority("api.example.com"), "any")])
    assert reversed_order.match({AUTHORITY: "api.example.com:8080"}) == "ported"
    assert reversed_order.match({AUTHORITY: "api.example.com:1"}) == "any"


def test_policy_authority_is_lowercased_by_the_loader() -> None:
    policy = parse_policy(
        """
models:
  - name: m
    match: {authority: API.Example.com}
    tiers: [{name: p, route: r}]
"""
    )
    matcher = Matcher([(m.match, m.name) for m in policy.models])
    assert matcher.match({AUTHORITY: "api.example.COM:80"}) == "m"


# -- header ---------------------------------------------------------------------------------


def test_header_exact_value() -> None:
    matcher = Matcher([(header("x-model", "rec"), "rec")])
    assert matcher.match({"x-model": "rec"}) == "rec"
    assert matcher.match({"x-model": "REC"}) is None
    assert matcher.match({"x-model": "rec "}) is None
    assert matcher.match({"x-model": "recipe"}) is None
    assert matcher.match({"x-model": ""}) is None
    assert matcher.match({"x-other": "rec"}) is None
    assert matcher.match({}) is None


def test_header_several_values_and_names() -> None:
    matcher = Matcher(
        [
            (header("x-model", "a"), "A"),
            (header("x-model", "b"), "B"),
            (header("x-tenant", "a"), "TA"),
        ]
    )
    assert matcher.match({"x-model": "b"}) == "B"
    assert matcher.match({"x-tenant": "a"}) == "TA"
    assert matcher.match({"x-model": "a", "x-tenant": "a"}) == "A"
    assert matcher.match({"x-model": "c", "x-tenant": "a"}) == "TA"


# -- order across kinds ---------------------------------------------------------------------

ALL_HEADERS = {PATH: "/v2/models/rec/infer", AUTHORITY: "rec.example.com:8000", "x-model": "rec"}


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        (("header", "path", "authority"), "header"),
        (("path", "header", "authority"), "path"),
        (("authority", "path", "header"), "authority"),
        (("authority", "header", "path"), "authority"),
        (("header", "authority", "path"), "header"),
        (("path", "authority", "header"), "path"),
    ],
)
def test_first_match_in_policy_order_across_kinds(order: tuple[str, str, str], expected: str) -> None:
    matches = {
        "path": prefix("/v2/models/rec"),
        "authority": authority("rec.example.com"),
        "header": header("x-model", "rec"),
    }
    matcher = Matcher([(matches[kind], kind) for kind in order])
    assert matcher.match(ALL_HEADERS) == expected


def test_earlier_non_matching_entries_are_skipped() -> None:
    matcher = Matcher(
        [
            (header("x-model", "other"), "h"),
            (prefix("/v2/models/zzz"), "p"),
            (authority("rec.example.com"), "a"),
            (prefix("/v2/models/rec"), "p2"),
        ]
    )
    assert matcher.match(ALL_HEADERS) == "a"
    assert matcher.match({PATH: "/v2/models/rec"}) == "p2"


def test_empty_matcher() -> None:
    matcher: Matcher[str] = Matcher([])
    assert matcher.match(ALL_HEADERS) is None
    assert matcher.header_names == frozenset()


# -- header_names ---------------------------------------------------------------------------


def test_header_names_only_what_is_needed() -> None:
    assert Matcher([(prefix("/a"), 1)]).header_names == frozenset({PATH})
    assert Matcher([(authority("a"), 1)]).header_names == frozenset({AUTHORITY})
    assert Matcher([(header("x-model", "a"), 1)]).header_names == frozenset({"x-model"})
    mixed = Matcher(
        [
            (header("x-model", "a"), 1),
            (header("x-model", "b"), 2),
            (header("x-tenant", "c"), 3),
            (prefix("/a"), 4),
        ]
    )
    assert mixed.header_names == frozenset({"x-model", "x-tenant", PATH})


# -- scale ----------------------------------------------------------------------------------


def _big_policy_text(count: int) -> str:
    lines = ["models:"]
    for i in range(count):
        if i % 3 == 0:
            match = f"{{path_prefix: /v2/models/m{i}}}"
        elif i % 3 == 1:
            match = f"{{authority: m{i}.example.com}}"
        else:
            match = f"{{header: {{name: x-model, value: m{i}}}}}"
        lines.append(f"  - name: m{i}")
        lines.append(f"    match: {match}")
        lines.append("    tiers: [{name: primary, route: r}]")
    return "\n".join(lines) + "\n"


def test_thousand_model_policy() -> None:
    policy = parse_policy(_big_policy_text(1000))
    assert len(policy.models) == 1000
    matcher = Matcher([(m.match, m.name) for m in policy.models])
    assert matcher.header_names == frozenset({PATH, AUTHORITY, "x-model"})
    # first and last model
    assert matcher.match({PATH: "/v2/models/m0/infer"}) == "m0"
    assert matcher.match({PATH: "/v2/models/m999"}) == "m999"  # 999 % 3 == 0: a path prefix
    # Segment boundaries hold at scale: m1 is not a prefix model, m10 must not take m100's path.
    assert matcher.match({PATH: "/v2/models/m99/infer"}) == "m99"
    assert matcher.match({PATH: "/v2/models/m9990"}) is None
    assert matcher.match({AUTHORITY: "m1.example.com"}) == "m1"
    assert matcher.match({AUTHORITY: "M997.example.com:443"}) == "m997"
    assert matcher.match({"x-model": "m998"}) == "m998"
    assert matcher.match({"x-model": "m2"}) == "m2"
    assert matcher.match({"x-model": "m1000"}) is None
    # Every model is reachable by its own match.
    for i, model in enumerate(policy.models):
        if i % 3 == 0:
            request = {PATH: f"/v2/models/m{i}/infer"}
        elif i % 3 == 1:
            request = {AUTHORITY: f"m{i}.example.com"}
        else:
            request = {"x-model": f"m{i}"}
        assert matcher.match(request) == model.name


def test_thousand_models_policy_order_with_catch_all_last() -> None:
    entries = [(prefix(f"/v2/models/m{i}"), f"m{i}") for i in range(1000)]
    entries.append((prefix("/"), "catch-all"))
    matcher = Matcher(entries)
    assert matcher.match({PATH: "/v2/models/m0"}) == "m0"
    assert matcher.match({PATH: "/v2/models/m999/infer"}) == "m999"
    assert matcher.match({PATH: "/v2/models/unknown"}) == "catch-all"
    # A catch-all first shadows everything after it.
    shadowed = Matcher([(prefix("/"), "catch-all"), *entries[:-1]])
    assert shadowed.match({PATH: "/v2/models/m999/infer"}) == "catch-all"


# -- spellings of a path ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/r%65c/infer",
        "/v2/models%2Frec/infer",
        "/v2/models%2frec",
        "/v2//models//rec/infer",
        "/v2/./models/rec",
        "/v2/models/x/../rec/infer",
        "/v2/models/%2E/rec",
        "/../v2/models/rec",
        "/v2\\models\\rec",
        "/v2/models/rec%3Apredict",
        "/v2/models/rec/infer?x=%2F",
    ],
)
def test_every_spelling_of_a_models_path_matches_it(path: str) -> None:
    assert REC.match({PATH: path}) == "rec"


@pytest.mark.parametrize("path", ["/v2/models/REC", "/v2/models/r%45c", "/v2/models/recipe", "/v2/models/rec%65"])
def test_spellings_of_other_paths_do_not_match(path: str) -> None:
    assert REC.match({PATH: path}) is None


@pytest.mark.parametrize(
    ("policy_prefix", "path"),
    [
        ("/v2/models/caf%C3%A9", "/v2/models/caf%c3%a9/infer"),
        ("/v2/models/caf%C3%A9", "/v2/models/caf%C3%a9"),
        ("/v2/models/my%20model", "/v2/models/my%20model/infer"),
        ("/v2/models/my%20model", "/v2//models/./my%20model"),
    ],
)
def test_escapes_that_stay_escaped_match_in_either_hex_case(policy_prefix: str, path: str) -> None:
    assert parse_policy(POLICY_WITH.format(prefix=policy_prefix)).models[0].match.path_prefix == policy_prefix
    assert Matcher([(prefix(policy_prefix), "m")]).match({PATH: path}) == "m"

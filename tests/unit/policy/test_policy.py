"""The policy loader: typed values, defaults, and every error collected with its path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ext_proc.policy import (
    MAX_FILE_BYTES,
    MAX_MODELS,
    BreakerSettings,
    FailureSettings,
    Match,
    Policy,
    PolicyError,
    Respond,
    build_policy,
    load_policy,
    parse_policy,
)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "policy.yaml"

MINIMAL = """
models:
  - name: m
    match: {path_prefix: /m}
    tiers: [{name: p, route: r}]
"""


def _with_breaker(breaker: str, defaults: str = "") -> str:
    return f"""
{defaults}
models:
  - name: m
    match: {{path_prefix: /m}}
    tiers: [{{name: p, route: r}}]
    breaker: {breaker}
"""


def _errors(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    assert info.value.errors, "a PolicyError must name at least one problem"
    return info.value.errors


def _error_at(errors: list[str], path: str) -> str:
    found = [e for e in errors if e.startswith(f"{path}: ")]
    assert found, f"no error at {path!r}; errors were:\n" + "\n".join(errors)
    return found[0]


# -- the example ----------------------------------------------------------------------------


def test_example_loads_unchanged() -> None:
    policy = load_policy(EXAMPLE)
    assert isinstance(policy, Policy)
    assert [m.name for m in policy.models] == ["recommender"]
    model = policy.model("recommender")
    assert model.match == Match(path_prefix="/v2/models/recommender")

    assert [t.name for t in model.tiers] == ["primary", "light", "default"]
    assert model.tiers[0].route == "recommender-resnet50"
    assert model.tiers[0].respond is None
    assert model.tiers[1].route == "recommender-mobilenet"
    last = model.tiers[2]
    assert last.route is None
    assert last.respond == Respond(status=503, content_type="application/json", body="", grpc_status=14)

    breaker = model.breaker
    assert breaker.window == 10.0
    assert breaker.window_calls is None
    assert breaker.min_calls == 20
    assert breaker.failure_rate == 0.5
    assert breaker.slow_call_duration == 1.0
    assert breaker.slow_call_rate == 0.8
    assert breaker.consecutive_failures == 5
    assert breaker.open_duration == 5.0
    assert breaker.max_open_duration == 60.0
    assert breaker.half_open_probes == 3
    assert breaker.jitter == 0.1  # not in the file: the default

    assert model.failure.statuses == frozenset(range(500, 600))
    assert model.failure.grpc_statuses == frozenset({14, 4, 8})


def test_example_via_string_path_and_parse_policy_agree() -> None:
    assert load_policy(str(EXAMPLE)) == parse_policy(EXAMPLE.read_text(encoding="utf-8"))


def test_policy_model_lookup_unknown_raises_key_error() -> None:
    policy = load_policy(EXAMPLE)
    with pytest.raises(KeyError):
        policy.model("nope")


# -- defaults -------------------------------------------------------------------------------


def test_defaults_when_breaker_and_failure_omitted() -> None:
    model = parse_policy(MINIMAL).models[0]
    assert model.breaker == BreakerSettings()
    assert model.failure == FailureSettings()
    breaker = model.breaker
    assert (breaker.window, breaker.window_calls, breaker.min_calls) == (10.0, None, 20)
    assert (breaker.failure_rate, breaker.slow_call_duration, breaker.slow_call_rate) == (0.5, 10.0, 1.0)
    assert (breaker.consecutive_failures, breaker.open_duration, breaker.max_open_duration) == (5, 5.0, 60.0)
    assert (breaker.half_open_probes, breaker.jitter) == (3, 0.1)
    assert model.failure.statuses == frozenset(range(500, 600))
    assert model.failure.grpc_statuses == frozenset({14, 4, 13})


def test_empty_breaker_and_failure_mappings_are_defaults() -> None:
    model = parse_policy(MINIMAL + "    breaker: {}\n    failure: {}\n").models[0]
    assert model.breaker == BreakerSettings()
    assert model.failure == FailureSettings()


def test_explicit_breaker_values_equal_to_defaults_give_default_settings() -> None:
    breaker = (
        parse_policy(
            _with_breaker(
                "{window: 10s, min_calls: 20, failure_rate: 0.5, slow_call_duration: 10s, slow_call_rate: 1,"
                " consecutive_failures: 5, open_duration: 5s, max_open_duration: 60s, half_open_probes: 3,"
                " jitter: 0.1}"
            )
        )
        .models[0]
        .breaker
    )
    assert breaker == BreakerSettings()
    assert isinstance(breaker.slow_call_rate, float)


def test_respond_defaults() -> None:
    text = """
models:
  - name: m
    match: {path_prefix: /m}
    tiers: [{name: p, route: r}, {name: d, respond: {}}]
"""
    respond = parse_policy(text).models[0].tiers[1].respond
    assert respond == Respond(status=503, content_type="application/json", body="", grpc_status=14)


@pytest.mark.parametrize(("value", "code"), [("unavailable", 14), ("INTERNAL", 13), (4, 4), ("Aborted", 10)])
def test_respond_grpc_status_names_and_numbers(value: object, code: int) -> None:
    text = f"""
models:
  - name: m
    match: {{path_prefix: /m}}
    tiers: [{{name: d, respond: {{grpc_status: {value}}}}}]
"""
    respond = parse_policy(text).models[0].tiers[0].respond
    assert respond is not None
    assert respond.grpc_status == code


def test_defaults_block_merges_and_model_keys_win() -> None:
    text = """
defaults:
  breaker: {failure_rate: 0.3, min_calls: 50, open_duration: 2s}
  failure: {statuses: [503]}
models:
  - name: a
    match: {path_prefix: /a}
    tiers: [{name: p, route: r}]
  - name: b
    match: {path_prefix: /b}
    tiers: [{name: p, route: r}]
    breaker: {min_calls: 7, jitter: 0}
    failure: {statuses: ["5xx", 429], grpc_statuses: [INTERNAL]}
"""
    policy = parse_policy(text)
    a, b = policy.model("a"), policy.model("b")
    # a: everything from defaults, the rest built-in defaults.
    assert a.breaker.failure_rate == 0.3
    assert a.breaker.min_calls == 50
    assert a.breaker.open_duration == 2.0
    assert a.breaker.jitter == 0.1
    assert a.breaker.window == 10.0
    assert a.failure.statuses == frozenset({503})
    assert a.failure.grpc_statuses == FailureSettings().grpc_statuses
    # b: its own keys win, the rest of the defaults block still applies (merged, not replaced).
    assert b.breaker.min_calls == 7
    assert b.breaker.jitter == 0.0
    assert b.breaker.failure_rate == 0.3
    assert b.breaker.open_duration == 2.0
    assert b.failure.statuses == frozenset({*range(500, 600), 429})
    assert b.failure.grpc_statuses == frozenset({13})


def test_defaults_block_unknown_key_is_an_error() -> None:
    errors = _errors("defaults: {breakr: {}}\n" + MINIMAL)
    assert _error_at(errors, "defaults.breakr").startswith("defaults.breakr: unknown key")


def test_defaults_block_must_be_a_mapping() -> None:
    errors = _errors("defaults: [1]\n" + MINIMAL)
    assert _error_at(errors, "defaults") == "defaults: must be a mapping, got a list"


def test_defaults_errors_are_reported() -> None:
    errors = _errors("defaults: {breaker: {failure_rate: 2}}\n" + MINIMAL)
    assert any("failure_rate" in e and "between 0 and 1" in e for e in errors)


# -- count-based window ---------------------------------------------------------------------


def test_window_calls_instead_of_window() -> None:
    breaker = parse_policy(_with_breaker("{window_calls: 100, min_calls: 10}")).models[0].breaker
    assert breaker.window_calls == 100
    assert breaker.window is None
    assert breaker.min_calls == 10


def test_window_calls_equal_to_min_calls_is_ok() -> None:
    breaker = parse_policy(_with_breaker("{window_calls: 20, min_calls: 20}")).models[0].breaker
    assert (breaker.window_calls, breaker.min_calls) == (20, 20)


def test_window_and_window_calls_both_set() -> None:
    errors = _errors(_with_breaker("{window: 10s, window_calls: 100}"))
    assert _error_at(errors, "models[0].breaker") == (
        "models[0].breaker: set one of window (time-based) or window_calls (count-based), not both"
    )


def test_min_calls_above_window_calls() -> None:
    errors = _errors(_with_breaker("{window_calls: 10, min_calls: 11}"))
    message = _error_at(errors, "models[0].breaker.min_calls")
    assert "must not exceed window_calls (10)" in message


@pytest.mark.parametrize("value", [0, -1, 10_001, 100_000, 1.5, "10", True])
def test_window_calls_out_of_range(value: object) -> None:
    # 10,000 calls per window: 10,000 models x 3 tiers x 100,000 calls would need gigabytes.
    errors = _errors(_with_breaker(f"{{window_calls: {value!r}, min_calls: 1}}".replace("'", '"')))
    assert "must be a whole number from 1 to 10000" in _error_at(errors, "models[0].breaker.window_calls")


# -- many errors at once --------------------------------------------------------------------

BROKEN = """
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: recommender-resnet50}
      - name: early
        respond: {status: 200, body: 'x'}
      - {name: primary, route: recommender-mobilenet}
      - {name: spaced, route: "bad route!"}
      - name: default
        respond: {status: 200, content_type: application/json, grpc_status: OK}
    breaker:
      window: 10
      min_calls: 0
      failure_rate: 1.5
      failure_rat: 0.5
      slow_call_duration: 1s
      open_duration: 30s
      max_open_duration: 10s
    failure: {statuses: ["6xx"], grpc_statuses: [UNAVAILABLE, NOT_A_STATUS]}
  - match: {path_prefix: /a, authority: a.example.com}
    tiers: [{name: p, route: r}]
  - name: twin
    match: {path_prefix: /twin1}
    tiers: [{name: p, route: r}]
  - name: twin
    match: {path_prefix: /twin2}
    tiers: [{name: p, route: r}]
"""

BROKEN_EXPECTED = {
    "models[0].breaker.window": "must be a duration string with a unit",
    "models[0].breaker.min_calls": "must be a whole number from 1 to 100000, got 0",
    "models[0].breaker.failure_rate": "must be between 0 and 1",
    "models[0].breaker.failure_rat": "unknown key",
    "models[0].breaker.max_open_duration": "must be at least open_duration",
    "models[0].tiers[1].respond": "only the last tier may respond directly",
    "models[0].tiers[2].name": "duplicate tier name 'primary'",
    "models[0].tiers[3].route": "must be 1-128 characters",
    "models[0].tiers[4].respond.grpc_status": "must not be OK",
    "models[0].failure.statuses[0]": "must be an HTTP status (100-599) or a class such as 5xx, got '6xx'",
    "models[0].failure.grpc_statuses[1]": "unknown gRPC status 'NOT_A_STATUS'",
    "models[1].name": "required",
    "models[1].match": "must have exactly one of path_prefix, authority, header, body_model",
    "models[3].name": "duplicate model name 'twin' (also models[2])",
}


def test_broken_policy_collects_every_error_in_one_run() -> None:
    errors = _errors(BROKEN)
    for path, message in BROKEN_EXPECTED.items():
        found = _error_at(errors, path)
        assert found.startswith(f"{path}: {message}"), found
    assert len(errors) == len(BROKEN_EXPECTED), "\n".join(errors)
    path_first = re.compile(r"^models\[\d+\](\.[a-z_]+(\[\d+\])?)*: \S")
    for error in errors:
        assert path_first.match(error), error


def test_broken_example_copy_via_load_policy(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("failure_rate: 0.5", "failure_rate: 1.5\n      failure_rat: 0.5")
    text = text.replace("min_calls: 20", "min_calls: 0")
    text = text.replace("window: 10s", "window: 10")
    text = text.replace('["5xx"]', '["6xx"]')
    text = text.replace("max_open_duration: 60s", "max_open_duration: 1s")
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    errors = info.value.errors
    assert info.value.source == str(path)
    _error_at(errors, "models[0].breaker.failure_rate")
    _error_at(errors, "models[0].breaker.failure_rat")
    _error_at(errors, "models[0].breaker.min_calls")
    _error_at(errors, "models[0].breaker.window")
    _error_at(errors, "models[0].breaker.max_open_duration")
    _error_at(errors, "models[0].failure.statuses[0]")
    assert len(errors) == 6, errors
    # The exception text carries the source, the count and every error.
    text_of = str(info.value)
    assert text_of.startswith(f"{path}: 6 error(s)\n")
    for error in errors:
        assert error in text_of


def test_error_in_one_model_does_not_hide_errors_in_others() -> None:
    text = """
models:
  - name: a
    match: {path_prefix: nope}
    tiers: [{name: p, route: r}]
  - name: b
    match: {path_prefix: /b}
    tiers: []
  - name: c
    match: {path_prefix: /c}
    tiers: [{name: p, route: r}]
    breaker: {jitter: 2}
"""
    errors = _errors(text)
    assert _error_at(errors, "models[0].match.path_prefix") == (
        "models[0].match.path_prefix: must be a string starting with '/'"
    )
    assert "non-empty list of tiers" in _error_at(errors, "models[1].tiers")
    assert "from 0 to 1" in _error_at(errors, "models[2].breaker.jitter")
    assert len(errors) == 3


# -- individual validation rules ------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "path", "message"),
    [
        ("name: unmatched", "models[0].name", "'unmatched' is reserved"),
        ("name: none", "models[0].name", "'none' is reserved"),
        ("name: -bad", "models[0].name", "must be 1-63 characters"),
        ("name: " + "a" * 64, "models[0].name", "must be 1-63 characters"),
        ("name: 'has space'", "models[0].name", "must be 1-63 characters"),
        ("namee: m", "models[0].namee", "unknown key"),
    ],
)
def test_model_name_rules(model: str, path: str, message: str) -> None:
    text = f"""
models:
  - {model}
    match: {{path_prefix: /m}}
    tiers: [{{name: p, route: r}}]
"""
    assert message in _error_at(_errors(text), path)


def test_longest_allowed_name() -> None:
    name = "a" * 63
    assert parse_policy(MINIMAL.replace("name: m", f"name: {name}")).models[0].name == name


@pytest.mark.parametrize(
    ("match", "path", "message"),
    [
        ("{}", "models[0].match", "must have exactly one of path_prefix, authority, header, body_model (got 0)"),
        ("[/m]", "models[0].match", "must be a mapping, got a list"),
        ("{path_prefix: m}", "models[0].match.path_prefix", "must be a string starting with '/'"),
        ("{authority: ''}", "models[0].match.authority", "must be a host name"),
        ("{authority: 'a b'}", "models[0].match.authority", "must be a host name"),
        ("{header: {name: x-model}}", "models[0].match.header.value", "required"),
        ("{header: {value: v}}", "models[0].match.header.name", "required"),
        ("{header: {name: x-modelguard-tier, value: v}}", "models[0].match.header.name", "must not be"),
        ("{header: {name: ':path', value: v}}", "models[0].match.header.name", "required"),
        ("{header: {name: x-model, value: v, extra: 1}}", "models[0].match.header.extra", "unknown key"),
    ],
)
def test_match_rules(match: str, path: str, message: str) -> None:
    text = f"""
models:
  - name: m
    match: {match}
    tiers: [{{name: p, route: r}}]
"""
    assert message in _error_at(_errors(text), path)


def test_match_missing() -> None:
    text = "models:\n  - name: m\n    tiers: [{name: p, route: r}]\n"
    assert "required" in _error_at(_errors(text), "models[0].match")


def test_match_single_unknown_key_is_a_policy_error() -> None:
    # A typo such as `prefix:` for `path_prefix:` must be reported, not crash the loader.
    # BUG (ext_proc/policy.py, _Reader.match): with one unknown key, len(node) == 1 passes, neither
    # path_prefix nor authority is present, and node["header"] raises KeyError.
    text = "models:\n  - name: m\n    match: {prefix: /m}\n    tiers: [{name: p, route: r}]\n"
    errors = _errors(text)
    assert "unknown key" in _error_at(errors, "models[0].match.prefix")


def test_header_match_is_lowercased() -> None:
    text = """
models:
  - name: m
    match: {header: {name: X-Model, value: Rec}}
    tiers: [{name: p, route: r}]
"""
    assert parse_policy(text).models[0].match == Match(header_name="x-model", header_value="Rec")


@pytest.mark.parametrize(
    ("tiers", "path", "message"),
    [
        ("[]", "models[0].tiers", "non-empty list of tiers"),
        ("[{name: p}]", "models[0].tiers[0]", "must have exactly one of route, respond"),
        (
            "[{name: p, route: r, respond: {}}]",
            "models[0].tiers[0]",
            "must have exactly one of route, respond",
        ),
        ("[{route: r}]", "models[0].tiers[0].name", "required"),
        ("[{name: p, route: ''}]", "models[0].tiers[0].route", "must be 1-128 characters"),
        ("[{name: p, route: " + "r" * 129 + "}]", "models[0].tiers[0].route", "must be 1-128 characters"),
        ("[{name: p, respond: {status: 199}}]", "models[0].tiers[0].respond.status", "from 200 to 599"),
        ("[{name: p, respond: {status: 600}}]", "models[0].tiers[0].respond.status", "from 200 to 599"),
        ("[{name: p, respond: {status: '200'}}]", "models[0].tiers[0].respond.status", "from 200 to 599"),
        ("[{name: p, respond: {body: 5}}]", "models[0].tiers[0].respond.body", "must be a string"),
        (
            "[{name: p, respond: {content_type: ''}}]",
            "models[0].tiers[0].respond.content_type",
            "content type",
        ),
        (
            "[{name: p, respond: {grpc_status: NOPE}}]",
            "models[0].tiers[0].respond.grpc_status",
            "unknown gRPC",
        ),
        ("[{name: p, respond: {grpc_status: 17}}]", "models[0].tiers[0].respond.grpc_status", "unknown gRPC"),
        (
            "[{name: p, respond: {grpc_status: 0}}]",
            "models[0].tiers[0].respond.grpc_status",
            "must not be OK",
        ),
        ("[{name: p, respond: {stauts: 200}}]", "models[0].tiers[0].respond.stauts", "unknown key"),
    ],
)
def test_tier_rules(tiers: str, path: str, message: str) -> None:
    text = f"""
models:
  - name: m
    match: {{path_prefix: /m}}
    tiers: {tiers}
"""
    assert message in _error_at(_errors(text), path)


def test_route_allows_its_documented_characters() -> None:
    route = "ns/cluster_a.b:8080-x"
    text = MINIMAL.replace("route: r", f"route: '{route}'")
    assert parse_policy(text).models[0].tiers[0].route == route


@pytest.mark.parametrize(
    ("breaker", "path", "message"),
    [
        ("{window: 10}", "window", "must be a duration string with a unit"),
        ("{window: 10sec}", "window", "must be a duration such as"),
        ("{window: 50ms}", "window", "must be from 100ms to 3600s"),
        ("{window: 2h}", "window", "must be from 100ms to 3600s"),
        ("{min_calls: 0}", "min_calls", "from 1 to 100000"),
        ("{min_calls: 2.5}", "min_calls", "from 1 to 100000"),
        ("{min_calls: true}", "min_calls", "from 1 to 100000"),
        ("{failure_rate: 0}", "failure_rate", "above 0"),
        ("{failure_rate: 1.01}", "failure_rate", "between 0 and 1"),
        ("{failure_rate: -0.5}", "failure_rate", "between 0 and 1"),
        ("{failure_rate: '0.5'}", "failure_rate", "between 0 and 1"),
        ("{failure_rate: true}", "failure_rate", "between 0 and 1"),
        ("{failure_rate: .nan}", "failure_rate", "between 0 and 1"),
        ("{slow_call_rate: 0}", "slow_call_rate", "above 0"),
        ("{slow_call_duration: 5}", "slow_call_duration", "with a unit"),
        ("{consecutive_failures: -1}", "consecutive_failures", "from 0 to 100000"),
        ("{half_open_probes: 0}", "half_open_probes", "from 1 to 1000"),
        ("{jitter: 1.5}", "jitter", "from 0 to 1"),
        ("{jitter: -0.1}", "jitter", "from 0 to 1"),
        ("{open_duration: 5ms}", "open_duration", "must be from 10ms to 86400s"),
        (
            "{open_duration: 10s, max_open_duration: 9s}",
            "max_open_duration",
            "must be at least open_duration",
        ),
        ("{open_duration: 120s}", "max_open_duration", "must be at least open_duration"),
    ],
)
def test_breaker_rules(breaker: str, path: str, message: str) -> None:
    assert message in _error_at(_errors(_with_breaker(breaker)), f"models[0].breaker.{path}")


def test_breaker_must_be_a_mapping() -> None:
    assert _error_at(_errors(_with_breaker("[1]")), "models[0].breaker") == (
        "models[0].breaker: must be a mapping, got a list"
    )


# -- boundary values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("breaker", "attribute", "value"),
    [
        ("{failure_rate: 1.0}", "failure_rate", 1.0),
        ("{failure_rate: 1}", "failure_rate", 1.0),
        ("{failure_rate: 0.001}", "failure_rate", 0.001),
        ("{slow_call_rate: 1}", "slow_call_rate", 1.0),
        ("{jitter: 0}", "jitter", 0.0),
        ("{jitter: 1}", "jitter", 1.0),
        ("{consecutive_failures: 0}", "consecutive_failures", 0),
        ("{min_calls: 1}", "min_calls", 1),
        ("{min_calls: 100000}", "min_calls", 100_000),
        ("{window: 100ms}", "window", 0.1),
        ("{window: 1h}", "window", 3600.0),
        ("{window: 60m}", "window", 3600.0),
        ("{window: 1.5s}", "window", 1.5),
        ("{window_calls: 1, min_calls: 1}", "window_calls", 1),
        ("{window_calls: 10000}", "window_calls", 10_000),
        ("{half_open_probes: 1000}", "half_open_probes", 1000),
        ("{slow_call_duration: 1ms}", "slow_call_duration", 0.001),
        ("{open_duration: 10ms, max_open_duration: 10ms}", "max_open_duration", 0.01),
        ("{open_duration: 60s, max_open_duration: 60s}", "open_duration", 60.0),
    ],
)
def test_boundary_values_accepted(breaker: str, attribute: str, value: object) -> None:
    settings = parse_policy(_with_breaker(breaker)).models[0].breaker
    assert getattr(settings, attribute) == pytest.approx(value)


def test_failure_rate_zero_message() -> None:
    message = _error_at(_errors(_with_breaker("{failure_rate: 0}")), "models[0].breaker.failure_rate")
    assert message == "models[0].breaker.failure_rate: must be between 0 and 1 (above 0, at most 1), got 0"


# -- failure statuses -----------------------------------------------------------------------


def _failure(failure: str) -> FailureSettings:
    return parse_policy(MINIMAL + f"    failure: {failure}\n").models[0].failure


def test_status_list_mixes_classes_numbers_and_strings() -> None:
    statuses = _failure('{statuses: ["5xx", 429, "404"]}').statuses
    assert statuses == frozenset({*range(500, 600), 429, 404})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('["1xx"]', set(range(100, 200))),
        ('["4XX"]', set(range(400, 500))),
        ('[" 5xx "]', set(range(500, 600))),
        ("[503, 503, 504]", {503, 504}),
        ("[100, 599]", {100, 599}),
    ],
)
def test_status_list_forms(value: str, expected: set[int]) -> None:
    assert _failure(f"{{statuses: {value}}}").statuses == frozenset(expected)


def test_statuses_replace_defaults_but_grpc_defaults_stay() -> None:
    failure = _failure("{statuses: [503]}")
    assert failure.statuses == frozenset({503})
    assert failure.grpc_statuses == FailureSettings().grpc_statuses


@pytest.mark.parametrize(
    ("value", "index"),
    [
        ('["6xx"]', 0),
        ('["0xx"]', 0),
        ("[503, 600]", 1),
        ("[99]", 0),
        ('["5x"]', 0),
        ("[true]", 0),
        ("[500.0]", 0),
    ],
)
def test_bad_status_entries(value: str, index: int) -> None:
    errors = _errors(MINIMAL + f"    failure: {{statuses: {value}}}\n")
    assert "must be an HTTP status (100-599)" in _error_at(errors, f"models[0].failure.statuses[{index}]")


def test_statuses_must_be_a_list() -> None:
    errors = _errors(MINIMAL + '    failure: {statuses: "5xx"}\n')
    assert "must be a list" in _error_at(errors, "models[0].failure.statuses")


def test_grpc_statuses_by_name_and_number() -> None:
    assert _failure("{grpc_statuses: [unavailable, 13, RESOURCE_EXHAUSTED]}").grpc_statuses == frozenset({14, 13, 8})


def test_grpc_statuses_rules() -> None:
    assert "must not contain OK" in _error_at(
        _errors(MINIMAL + "    failure: {grpc_statuses: [OK]}\n"), "models[0].failure.grpc_statuses"
    )
    assert "must be a list" in _error_at(
        _errors(MINIMAL + "    failure: {grpc_statuses: UNAVAILABLE}\n"), "models[0].failure.grpc_statuses"
    )
    assert "unknown gRPC status 'NOPE'" in _error_at(
        _errors(MINIMAL + "    failure: {grpc_statuses: [UNAVAILABLE, NOPE]}\n"),
        "models[0].failure.grpc_statuses[1]",
    )


def test_status_with_non_ascii_digit_is_a_policy_error() -> None:
    # BUG (ext_proc/policy.py, _Reader.statuses): "5²".isdigit() is True but int("5²") raises
    # ValueError, which escapes the loader instead of becoming a PolicyError.
    errors = _errors(MINIMAL + '    failure: {statuses: ["5²"]}\n')
    assert "must be an HTTP status" in _error_at(errors, "models[0].failure.statuses[0]")


# -- document-level errors ------------------------------------------------------------------


def test_yaml_syntax_error_has_line_and_column() -> None:
    text = "models:\n  - name: m\n    match: {path_prefix: /m\n    tiers: [}\n"
    errors = _errors(text)
    assert len(errors) == 1
    assert re.match(r"^\(yaml\) line \d+, column \d+: \S", errors[0]), errors[0]


def test_yaml_tab_error_points_at_the_tab() -> None:
    errors = _errors("models:\n\t- name: m\n")
    assert errors[0].startswith("(yaml) line 2, column 1: ")


def test_yaml_syntax_error_through_load_policy(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("models: [\n", encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.source == str(path)
    assert info.value.errors[0].startswith("(yaml) line ")


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n", "---\n"])
def test_empty_document(text: str) -> None:
    assert _errors(text) == ["(root): the policy is empty"]


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.errors == ["(root): the policy is empty"]


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "a list"), ("hello\n", "a string"), ("42\n", "int")])
def test_non_mapping_root(text: str, kind: str) -> None:
    errors = _errors(text)
    assert len(errors) == 1
    assert f"must be a mapping, got {kind}" in errors[0]


def test_non_mapping_root_error_names_the_root() -> None:
    # Every error starts with its path; for the document itself that is "(root)", as for the
    # empty policy. BUG (ext_proc/policy.py, _Reader.policy/mapping): the path is "", giving
    # ": must be a mapping, got a list".
    errors = _errors("- a\n- b\n")
    assert errors == ["(root): must be a mapping, got a list"]


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("defaults: {}\n", "models", "required"),
        ("models: []\n", "models", "must be a non-empty list"),
        ("models: {a: 1}\n", "models", "must be a non-empty list, got a mapping"),
        ("models: [1]\n", "models[0]", "must be a mapping, got int"),
        ("modles: []\nmodels: [1]\n", "modles", "unknown key"),
    ],
)
def test_root_structure_errors(text: str, path: str, message: str) -> None:
    assert message in _error_at(_errors(text), path)


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "does-not-exist.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(missing)
    assert info.value.source == str(missing)
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith("cannot read the file: ")
    assert "No such file" in info.value.errors[0]


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path)
    assert info.value.errors[0].startswith("cannot read the file: ")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"models:\n  - name: caf\xe9\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.errors[0].startswith("not UTF-8 text: ")


def test_build_policy_accepts_python_structures() -> None:
    document = {
        "models": [
            {
                "name": "m",
                "match": {"header": {"name": "x-model", "value": "m"}},
                "tiers": [{"name": "p", "route": "r"}, {"name": "d", "respond": {"status": 503}}],
                "breaker": {"window_calls": 50, "min_calls": 5},
            }
        ]
    }
    policy = build_policy(document)
    model = policy.models[0]
    assert model.breaker.window is None
    assert model.breaker.window_calls == 50
    assert model.tiers[1].respond == Respond()


def test_policy_error_message_format() -> None:
    error = PolicyError(["a: one", "b: two"], "file.yaml")
    assert error.errors == ["a: one", "b: two"]
    assert error.source == "file.yaml"
    assert str(error) == "file.yaml: 2 error(s)\na: one\nb: two"


def test_defaults_errors_are_reported_once_at_their_own_path() -> None:
    text = """
defaults:
  breaker: {failure_rate: 2}
models:
  - {name: a, match: {path_prefix: /a}, tiers: [{name: p, route: a}]}
  - {name: b, match: {path_prefix: /b}, tiers: [{name: p, route: b}]}
"""
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert [e.split(":")[0] for e in caught.value.errors] == ["defaults.breaker.failure_rate"]


def test_model_window_kind_replaces_the_defaults_kind() -> None:
    text = """
defaults:
  breaker: {window: 30s}
models:
  - {name: a, match: {path_prefix: /a}, tiers: [{name: p, route: a}], breaker: {window_calls: 10}}
  - {name: b, match: {path_prefix: /b}, tiers: [{name: p, route: b}]}
"""
    policy = parse_policy(text)
    assert policy.models[0].breaker.window is None and policy.models[0].breaker.window_calls == 10
    assert policy.models[0].breaker.min_calls == 10  # the default min_calls is capped at window_calls
    assert policy.models[1].breaker.window == 30.0


# -- hardening: whole-value patterns -----------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        # `$` matches before a trailing newline: each of these passed re.match(r"^...$").
        ("name: m", 'name: "m\\n"', "models[0].name"),
        ("{name: p, route: r}", '{name: "p\\n", route: r}', "models[0].tiers[0].name"),
        ("{name: p, route: r}", '{name: p, route: "r\\n"}', "models[0].tiers[0].route"),
        ("{name: p, route: r}", '{name: p, route: "r\\u0000"}', "models[0].tiers[0].route"),
        ("{path_prefix: /m}", '{header: {name: "x-model\\n", value: m}}', "models[0].match.header.name"),
        ("{path_prefix: /m}", "{header: {name: x-\u212aey, value: m}}", "models[0].match.header.name"),  # Kelvin K
        ("{path_prefix: /m}", "{header: {name: " + "x" * 129 + ", value: m}}", "models[0].match.header.name"),
        ("{path_prefix: /m}", '{header: {name: x-model, value: "m\\n"}}', "models[0].match.header.value"),
        ("{path_prefix: /m}", '{header: {name: x-model, value: "m\\r\\nx-a: b"}}', "models[0].match.header.value"),
        ("{path_prefix: /m}", '{header: {name: x-model, value: " m"}}', "models[0].match.header.value"),
        ("{path_prefix: /m}", '{path_prefix: "/m\\n"}', "models[0].match.path_prefix"),
        ("{path_prefix: /m}", '{path_prefix: "/m x"}', "models[0].match.path_prefix"),
        ("{path_prefix: /m}", "{path_prefix: /caf\u00e9}", "models[0].match.path_prefix"),
        ("{path_prefix: /m}", '{authority: "m.example\\n"}', "models[0].match.authority"),
        ("{path_prefix: /m}", "{authority: b\u00fccher.example}", "models[0].match.authority"),
    ],
)
def test_whole_values_are_checked(old: str, new: str, path: str) -> None:
    assert old in MINIMAL
    _error_at(_errors(MINIMAL.replace(old, new)), path)


def test_longest_allowed_header_name_and_value() -> None:
    text = MINIMAL.replace("{path_prefix: /m}", f"{{header: {{name: {'x' * 128}, value: '{'v w' * 341}v'}}}}")
    assert parse_policy(text).models[0].match.header_name == "x" * 128


# -- hardening: bounded error messages and bounded walks ---------------------------------------

BOMB = """
a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]
a1: &a1 [*a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0]
a2: &a2 [*a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1]
a3: &a3 [*a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2]
a4: &a4 [*a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3]
a5: &a5 [*a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4]
a6: &a6 [*a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5]
a7: &a7 [*a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6]
a8: &a8 [*a7, *a7, *a7, *a7, *a7, *a7, *a7, *a7, *a7, *a7]
a9: &a9 [*a8, *a8, *a8, *a8, *a8, *a8, *a8, *a8, *a8, *a8]
"""
"""Ten billion references in 700 bytes; repr() or str() of *a9 would need hundreds of gigabytes."""
SMALL_BOMB = BOMB.split("a4:")[0]
"""Up to *a3: 10,000 references, within the node budget, so validation sees it; repr() of *a3 is
70 KB, which an error message must not quote."""


def test_a_billion_laughs_is_refused_by_the_node_budget_before_it_is_built() -> None:
    for field in ("    failure: {statuses: *a9}\n", "    breaker: {window: *a9}\n", "    tiers: [*a5]\n"):
        errors = _errors(BOMB + MINIMAL + field)
        assert len(errors) == 1 and errors[0].endswith("more than 500,000 values once aliases are expanded; "
                                                       "a policy needs far fewer"), errors  # fmt: skip


def test_aliases_count_as_often_as_they_are_used() -> None:
    model = "m: &m {name: a, match: {path_prefix: /a}, tiers: [{name: p, route: r}]}\n"
    assert _errors(model + "models:\n" + "  - *m\n" * 200_000)[0].endswith("a policy needs far fewer")
    fewer = _errors(model + "models:\n" + "  - *m\n" * 20_000)  # 20,000 x 12: within the budget
    assert fewer[-1] == "models: at most 10000 models, got 20000"


def test_a_large_policy_is_within_the_node_budget() -> None:
    from ext_proc.policy.loading import _check_shape

    model = (
        "  - {{name: model-{0}, match: {{path_prefix: /v2/models/model-{0}}}, tiers: [{{name: primary, route:"
        " model-{0}-primary}}, {{name: light, route: model-{0}-light}}, {{name: default, respond: {{status: 200,"
        ' body: \'{{"items": [], "degraded": true}}\'}}}}]}}\n'
    )
    defaults = (
        "defaults:\n  breaker: {window: 10s, min_calls: 20, failure_rate: 0.5, slow_call_duration: 2s}\n"
        "  failure: {statuses: [5xx], grpc_statuses: [UNAVAILABLE, INTERNAL]}\n"
    )
    text = defaults + "models:\n" + "".join(model.format(i) for i in range(MAX_MODELS))
    assert len(text) < MAX_FILE_BYTES
    _check_shape(text)  # the largest policy of the usual shape: no error
    parse_policy(defaults + "models:\n" + model.format(0))  # the model above is a valid one


def test_long_strings_cost_by_their_length() -> None:
    big = "a" * 1_000_000
    errors = _errors(f"x: &s {big}\n" + MINIMAL + "    failure: {statuses: [" + ", ".join(["*s"] * 40) + "]}\n")
    assert errors[0].endswith("more than 500,000 values once aliases are expanded; a policy needs far fewer")
    assert len(_errors(f"x: {big}\n" + MINIMAL)) == 1  # one long string once is fine (an unknown key here)


@pytest.mark.parametrize(
    ("field", "path"),
    [
        ("    failure: {statuses: *a3}\n", "models[0].failure.statuses[0]"),
        ("    failure: {statuses: [*a3]}\n", "models[0].failure.statuses[0]"),
        ("    failure: {grpc_statuses: [*a3]}\n", "models[0].failure.grpc_statuses[0]"),
        ("    breaker: {window: *a3}\n", "models[0].breaker.window"),
        ("    breaker: {failure_rate: *a3}\n", "models[0].breaker.failure_rate"),
        ("    breaker: {min_calls: *a3}\n", "models[0].breaker.min_calls"),
        ("    breaker: {max_probe_duration: *a3}\n", "models[0].breaker.max_probe_duration"),
    ],
)
def test_alias_bomb_in_a_scalar_field_gives_a_short_error(field: str, path: str) -> None:
    errors = _errors(SMALL_BOMB + MINIMAL + field)
    message = _error_at(errors, path)
    assert len(message) < 250, message
    assert all(len(e) < 250 for e in errors)


def test_alias_bomb_as_a_tier_route_and_respond_fields() -> None:
    text = SMALL_BOMB + MINIMAL.replace(
        "tiers: [{name: p, route: r}]",
        "tiers: [{name: p, route: *a3}, {name: d, respond: {status: *a3, content_type: *a3, body: *a3,"
        " grpc_status: *a3}}]",
    )
    errors = _errors(text)
    for path in ("route", "respond.status", "respond.content_type", "respond.body", "respond.grpc_status"):
        assert len(_error_at(errors, f"models[0].tiers[{0 if path == 'route' else 1}].{path}")) < 250


def test_unknown_keys_are_shown_bounded() -> None:
    errors = _errors(MINIMAL + f"    ? {'k' * 5000}\n    : 1\n")  # an explicit key: no 1024 limit
    assert all(len(e) < 400 for e in errors)
    assert any(e.startswith("models[0].'kkkk") and "unknown key" in e for e in errors)


def _refs(value: str, count: int) -> str:
    """A list of count entries, all one shared value (an anchor and its aliases)."""
    return f"[&s {value}" + ", *s" * (count - 1) + "]"


def test_a_long_status_list_is_refused_before_it_is_walked() -> None:
    text = MINIMAL + f"    failure: {{statuses: {_refs('503', 101)}}}\n"
    assert "at most 100 entries, got 101" in _error_at(_errors(text), "models[0].failure.statuses")
    text = MINIMAL + f"    failure: {{grpc_statuses: {_refs('UNAVAILABLE', 101)}}}\n"
    assert "at most 100 entries, got 101" in _error_at(_errors(text), "models[0].failure.grpc_statuses")


def test_hundred_statuses_are_allowed() -> None:
    text = MINIMAL + f"    failure: {{statuses: {_refs('503', 100)}}}\n"
    assert parse_policy(text).models[0].failure.statuses == frozenset({503})


def test_a_long_tier_list_is_refused() -> None:
    tiers = ", ".join(f"{{name: t{i}, route: r}}" for i in range(17))
    errors = _errors(MINIMAL.replace("[{name: p, route: r}]", f"[{tiers}]"))
    assert _error_at(errors, "models[0].tiers") == "models[0].tiers: at most 16 tiers, got 17"
    tiers = ", ".join(f"{{name: t{i}, route: r}}" for i in range(16))
    assert len(parse_policy(MINIMAL.replace("[{name: p, route: r}]", f"[{tiers}]")).models[0].tiers) == 16


def test_models_are_bounded() -> None:
    model = {"name": "m", "match": {"path_prefix": "/m"}, "tiers": [{"name": "p", "route": "r"}]}
    with pytest.raises(PolicyError) as info:
        build_policy({"models": [model] * 10_001})
    assert info.value.errors == ["models: at most 10000 models, got 10001"]


def test_errors_past_the_cap_are_counted_not_kept() -> None:
    models = [{"name": "-bad", "match": {"path_prefix": "/m"}, "tiers": [{"name": "p", "route": "r"}]}]
    with pytest.raises(PolicyError) as info:
        build_policy({"models": models * 150})
    assert len(info.value.errors) == 100
    assert info.value.omitted == 50
    assert str(info.value).startswith("policy: 150 error(s)\n")
    assert str(info.value).endswith("\n... and 50 more error(s)")


# -- hardening: nesting, duplicate keys, merge keys ---------------------------------------------


def _nested(levels: int, flow: str) -> str:
    opening, closing = ("[", "]") if flow == "list" else ("{a: ", "}")
    return "models: " + opening * levels + ("" if flow == "list" else "1") + closing * levels + "\n"


@pytest.mark.parametrize("flow", ["list", "map"])
@pytest.mark.parametrize("levels", [64, 2000, 20_000])
def test_deep_nesting_is_a_policy_error(flow: str, levels: int) -> None:
    # models: is level 1 (the root mapping), so 64 more levels make 65.
    errors = _errors(_nested(levels, flow))
    assert len(errors) == 1
    assert re.fullmatch(r"\(yaml\) line 1, column \d+: nesting deeper than 64 levels", errors[0]), errors[0]


@pytest.mark.parametrize("flow", ["list", "map"])
def test_nesting_at_the_limit_is_read(flow: str) -> None:
    errors = _errors(_nested(63, flow))  # 64 levels: a structural error, not a nesting one
    assert "nesting" not in errors[0]


def test_block_nesting_is_bounded_too() -> None:
    errors = _errors("models:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 80)))
    assert errors[0].startswith("(yaml) line 65, column ")
    assert errors[0].endswith("nesting deeper than 64 levels")


def test_recursion_in_the_reader_is_a_policy_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import ext_proc.policy.reader as policy_module

    def recurse(self: object, document: object) -> None:
        raise RecursionError

    monkeypatch.setattr(policy_module._Reader, "policy", recurse)
    with pytest.raises(PolicyError) as info:
        parse_policy(MINIMAL)
    assert info.value.errors == ["(root): nesting deeper than 64 levels"]


def test_duplicate_top_level_key_names_both_lines() -> None:
    # Without the check, the second models: silently replaced the first list.
    errors = _errors(MINIMAL + "models:\n  - {name: x, match: {path_prefix: /x}, tiers: [{name: p, route: r}]}\n")
    assert errors == [
        "(yaml) line 6, column 1: duplicate key 'models' (first at line 2); YAML would silently keep only the last"
    ]


def test_every_duplicate_key_at_any_depth_is_reported() -> None:
    text = """
models:
  - name: m
    match: {path_prefix: /m, path_prefix: /n}
    tiers: [{name: p, route: r, route: s}]
    name: n
    breaker:
      window: 10s
      window: 20s
"""
    errors = _errors(text)
    assert [e.split(": duplicate")[0] for e in errors] == [
        "(yaml) line 4, column 30",
        "(yaml) line 5, column 33",
        "(yaml) line 6, column 5",
        "(yaml) line 9, column 7",
    ]
    assert "duplicate key 'path_prefix' (first at line 4)" in errors[0]
    assert "duplicate key 'name' (first at line 3)" in errors[2]
    assert "duplicate key 'window' (first at line 8)" in errors[3]


def test_duplicate_in_an_anchored_mapping_is_reported_once() -> None:
    text = "b: &b {jitter: 0, jitter: 1}\n" + MINIMAL + "    breaker: *b\n"
    errors = _errors(text)
    assert len([e for e in errors if "duplicate key 'jitter'" in e]) == 1


def test_keys_equal_as_values_are_duplicates() -> None:
    # {1: a, true: b} is one key to Python: the loader kept only b.
    errors = _errors("1: a\ntrue: b\n")
    assert "duplicate key True (first at line 1)" in errors[0]


def test_merge_keys_are_refused() -> None:
    text = "common: &c {path_prefix: /m}\nmodels:\n  - name: m\n    match: {<<: *c}\n    tiers: [{name: p, route: r}]\n"
    errors = _errors(text)
    assert errors == [
        "(yaml) line 4, column 13: merge keys (<<) are not supported: put shared breaker and failure settings"
        " in defaults"
    ]


def test_aliases_still_share_values() -> None:
    text = """
models:
  - {name: a, match: {path_prefix: /a}, tiers: &ladder [{name: p, route: r}, {name: d, respond: {}}]}
  - {name: b, match: {path_prefix: /b}, tiers: *ladder}
"""
    a, b = parse_policy(text).models
    assert a.tiers == b.tiers and [t.name for t in b.tiers] == ["p", "d"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL + "\x00", "(yaml) line 6, column 1: character #x0000: "),
        (MINIMAL + "x: \x1b[0m\n", "(yaml) line 6, column 4: character #x001b: "),
        (MINIMAL + "    breaker: {min_calls: 1" + "0" * 5000 + "}\n", "(yaml) cannot read a value: "),
        (MINIMAL + "---\n" + MINIMAL, "(yaml) line 6, column 1: "),
    ],
)
def test_unreadable_yaml_is_one_error(text: str, message: str) -> None:
    errors = _errors(text)
    assert len(errors) == 1 and errors[0].startswith(message), errors
    assert "\n" not in errors[0]


# -- hardening: duplicate matches -------------------------------------------------------------


def _two(first: str, second: str) -> str:
    return f"""
models:
  - {{name: recommender, match: {first}, tiers: [{{name: p, route: r}}]}}
  - {{name: other, match: {second}, tiers: [{{name: p, route: r}}]}}
"""


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("{path_prefix: /v2/models/rec}", "{path_prefix: /v2/models/rec}"),
        ("{authority: rec.example.com}", "{authority: REC.Example.com}"),
        ("{authority: rec.example.com:8080}", "{authority: rec.example.com:8080}"),
        ("{header: {name: x-model, value: rec}}", "{header: {name: X-Model, value: rec}}"),
    ],
)
def test_same_match_twice_is_an_error(first: str, second: str) -> None:
    errors = _errors(_two(first, second))
    assert errors == ["models[1].match: same match as models[0] (recommender); the second never matches"]


def test_authority_without_port_covers_every_port() -> None:
    errors = _errors(_two("{authority: rec.example.com}", "{authority: rec.example.com:8080}"))
    assert errors == [
        "models[1].match: its host on any port is already matched by models[0] (recommender); the second never matches"
    ]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("{authority: rec.example.com:8080}", "{authority: rec.example.com}"),  # the first takes one port only
        ("{authority: rec.example.com:8080}", "{authority: rec.example.com:9090}"),
        ("{header: {name: x-model, value: rec}}", "{header: {name: x-model, value: Rec}}"),
        ("{header: {name: x-model, value: rec}}", "{header: {name: x-other, value: rec}}"),
        ("{path_prefix: /v2/models/rec}", "{path_prefix: /v2/models/recipe}"),
        ("{path_prefix: /rec}", "{authority: rec}"),
    ],
)
def test_different_matches_are_fine(first: str, second: str) -> None:
    assert len(parse_policy(_two(first, second)).models) == 2


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("/v1", "/v1/models/x"),
        ("/v1/", "/v1/models/x"),
        ("/", "/v2/models/rec"),
        ("/v1/models/x", "/v1/models/x:predict"),
        ("/v1/models/x", "/v1/models/x;v=2"),
    ],
)
def test_a_longer_prefix_after_a_shorter_one_it_continues_never_matches(first: str, second: str) -> None:
    errors = _errors(_two(f"{{path_prefix: '{first}'}}", f"{{path_prefix: '{second}'}}"))
    assert errors == [
        "models[1].match: every path it matches is already matched by models[0] (recommender); the second never matches"
    ]


def test_the_shadowing_rule_is_the_matchers() -> None:
    """Shorter prefixes first are refused exactly when the matcher gives the longer one's paths away."""
    from ext_proc.core.matching import Matcher

    for first, second in [("/v1", "/v1/models/x"), ("/v1/models/x", "/v1/models/xy"), ("/v1/mo", "/v1/models")]:
        matcher = Matcher([(Match(path_prefix=first), "first"), (Match(path_prefix=second), "second")])
        reachable = matcher.match({":path": second + "/infer"}) == "second"
        try:
            parse_policy(_two(f"{{path_prefix: '{first}'}}", f"{{path_prefix: '{second}'}}"))
            refused = False
        except PolicyError:
            refused = True
        assert refused is not reachable, (first, second)


def test_a_longer_prefix_before_a_shorter_one_is_fine() -> None:
    assert len(parse_policy(_two("{path_prefix: /v1/models/x}", "{path_prefix: /v1}")).models) == 2


@pytest.mark.parametrize(
    ("prefix", "normal"),
    [
        ("/v1/models//x", "'/v1/models/x'"),
        ("/v1/models/%78", "'/v1/models/x'"),
        ("/a/./b", "'/a/b'"),
        ("/a/b/..", "'/a/'"),
        ("/v1/models/y?", "'/v1/models/y'"),
        ("/v1/models/y#frag", "'/v1/models/y'"),
        ("/v1\\models", "'/v1/models'"),
    ],
)
def test_a_prefix_no_normalized_path_can_start_with_is_refused(prefix: str, normal: str) -> None:
    errors = _errors(MINIMAL.replace("{path_prefix: /m}", f"{{path_prefix: '{prefix}'}}"))
    message = _error_at(errors, "models[0].match.path_prefix")
    assert "never matches: paths are matched as normalized" in message and normal in message, message


@pytest.mark.parametrize("value", ["1" + "0" * 400, "-" + "1" * 400])
def test_a_huge_integer_as_a_ratio_is_an_error_not_a_crash(value: str) -> None:
    for field in ("failure_rate", "slow_call_rate", "jitter"):
        errors = _errors(MINIMAL + f"    breaker: {{{field}: {value}}}\n")
        assert "must be" in _error_at(errors, f"models[0].breaker.{field}")


@pytest.mark.parametrize("value", ["010", "0x14", "0o24", "2_0", "1:30", "+0x14"])
def test_yaml_1_1_number_forms_are_not_numbers(value: str) -> None:
    errors = _errors(MINIMAL + f"    breaker: {{min_calls: {value}, half_open_probes: {value}}}\n")
    assert f"got '{value}'" in _error_at(errors, "models[0].breaker.min_calls")
    assert f"got '{value}'" in _error_at(errors, "models[0].breaker.half_open_probes")


@pytest.mark.parametrize("value", ["!!int 010", "!!int 0x14", '!!int "1:30"', "!!int 2_0", "!!float 1_0.5"])
def test_explicit_tags_do_not_bring_the_yaml_1_1_forms_back(value: str) -> None:
    errors = _errors(MINIMAL + f"    breaker: {{min_calls: {value}}}\n")
    assert len(errors) == 1 and "is not a plain" in errors[0], errors


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "y", "n"])
def test_yes_no_on_off_are_words(word: str) -> None:
    text = MINIMAL.replace("{path_prefix: /m}", f"{{header: {{name: x-canary, value: {word}}}}}")
    assert parse_policy(text).models[0].match == Match(header_name="x-canary", header_value=word)


def test_true_and_false_are_still_booleans() -> None:
    errors = _errors(MINIMAL.replace("{path_prefix: /m}", "{header: {name: x-canary, value: true}}"))
    assert _error_at(errors, "models[0].match.header.value")


def test_a_duplicate_anchor_says_so() -> None:
    errors = _errors("a: &x 1\nb: &x 2\n" + MINIMAL)
    assert "duplicate anchor" in errors[0], errors


@pytest.mark.parametrize(("value", "number"), [("20", 20), ("+20", 20), ("0.25", 0.25), (".25", 0.25)])
def test_plain_numbers_still_are(value: str, number: float) -> None:
    text = MINIMAL + f"    breaker: {{min_calls: 20, failure_rate: {value if number < 1 else 0.5}}}\n"
    text = text.replace("min_calls: 20", f"min_calls: {value if number >= 1 else 20}")
    breaker = parse_policy(text).models[0].breaker
    assert (breaker.min_calls if number >= 1 else breaker.failure_rate) == number


# -- hardening: ASCII digits, content types, bodies, empty status lists ---------------------------


@pytest.mark.parametrize("value", ['"\uff15\uff10\uff13"', '"\uff15xx"', '"5\uff58\uff58"', '"\u3000503"'])
def test_status_with_non_ascii_characters_is_refused(value: str) -> None:
    errors = _errors(MINIMAL + f"    failure: {{statuses: [{value}]}}\n")
    assert "must be an HTTP status" in _error_at(errors, "models[0].failure.statuses[0]")


def test_grpc_status_names_are_ascii() -> None:
    # "\u0131nternal".upper() is "INTERNAL" (dotless i).
    errors = _errors(MINIMAL + "    failure: {grpc_statuses: [\u0131nternal]}\n")
    assert "unknown gRPC status" in _error_at(errors, "models[0].failure.grpc_statuses[0]")


def _respond(respond: str) -> str:
    return MINIMAL.replace("tiers: [{name: p, route: r}]", f"tiers: [{{name: d, respond: {respond}}}]")


@pytest.mark.parametrize(
    "content_type",
    [
        '"text/plain\\r\\nx-injected: 1"',
        '"text/plain\\t"',
        '" text/plain"',
        '"text/plain "',
        '"text/pl\\u00e4in"',
        '"text/plain\\u0000"',
        "t" * 257,
    ],
)
def test_content_type_is_visible_ascii(content_type: str) -> None:
    errors = _errors(_respond(f"{{content_type: {content_type}}}"))
    assert "must be a content type" in _error_at(errors, "models[0].tiers[0].respond.content_type")


@pytest.mark.parametrize("content_type", ["text/plain; charset=utf-8", "t" * 256, "a"])
def test_content_type_accepted(content_type: str) -> None:
    respond = parse_policy(_respond(f"{{content_type: '{content_type}'}}")).models[0].tiers[0].respond
    assert respond is not None and respond.content_type == content_type


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_on_204_and_304(status: int) -> None:
    errors = _errors(_respond(f"{{status: {status}, body: x}}"))
    assert _error_at(errors, "models[0].tiers[0].respond.body") == (
        "models[0].tiers[0].respond.body: must be empty: 204 and 304 answers carry no body"
    )
    respond = parse_policy(_respond(f"{{status: {status}}}")).models[0].tiers[0].respond
    assert respond is not None and respond.status == status and respond.body == ""


@pytest.mark.parametrize("key", ["statuses", "grpc_statuses"])
def test_empty_status_lists_are_errors(key: str) -> None:
    # A breaker with no failure statuses never opens on errors, and nothing said so.
    message = _error_at(_errors(MINIMAL + f"    failure: {{{key}: []}}\n"), f"models[0].failure.{key}")
    assert "must list at least one status: a breaker with none never opens on errors" in message
    assert "omit the key for the defaults" in message
    errors = _errors(f"defaults: {{failure: {{{key}: []}}}}\n" + MINIMAL)
    _error_at(errors, f"defaults.failure.{key}")


# -- hardening: sizes ---------------------------------------------------------------------------


def test_file_over_4_mib_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(MINIMAL.encode() + b"#" * (4 * 1024 * 1024))
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.errors == ["(file): larger than 4194304 bytes (4 MiB), the most a policy may be"]


def test_file_of_4_mib_is_read(tmp_path: Path) -> None:
    path = tmp_path / "padded.yaml"
    data = MINIMAL.encode()
    path.write_bytes(data + b"#" * (4 * 1024 * 1024 - len(data)))
    assert load_policy(path).models[0].name == "m"


def test_endless_device_is_read_only_up_to_the_limit() -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    with pytest.raises(PolicyError) as info:
        load_policy("/dev/zero")  # no size to check: the read itself is bounded
    assert info.value.errors[0].startswith("(file): larger than 4194304 bytes")


def test_text_over_4_mib_is_refused() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(MINIMAL + "#" * (4 * 1024 * 1024))
    assert info.value.errors[0].startswith("(file): ")
    assert "at most 4194304" in info.value.errors[0]


def test_binary_file_is_a_policy_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert len(info.value.errors) == 1


# -- max_probe_duration ----------------------------------------------------------------------------


def test_max_probe_duration_defaults_to_slow_call_duration() -> None:
    assert BreakerSettings().max_probe_duration == 10.0
    assert parse_policy(MINIMAL).models[0].breaker.max_probe_duration == 10.0
    breaker = parse_policy(_with_breaker("{slow_call_duration: 250ms}")).models[0].breaker
    assert breaker.max_probe_duration == 0.25
    breaker = parse_policy(_with_breaker("{}", "defaults: {breaker: {slow_call_duration: 3s}}")).models[0].breaker
    assert breaker.max_probe_duration == 3.0


def test_max_probe_duration_set() -> None:
    breaker = parse_policy(_with_breaker("{slow_call_duration: 1s, max_probe_duration: 30s}")).models[0].breaker
    assert (breaker.slow_call_duration, breaker.max_probe_duration) == (1.0, 30.0)


def test_max_probe_duration_from_defaults_merges_like_other_keys() -> None:
    text = """
defaults: {breaker: {max_probe_duration: 5s, slow_call_duration: 2s}}
models:
  - {name: a, match: {path_prefix: /a}, tiers: [{name: p, route: r}]}
  - {name: b, match: {path_prefix: /b}, tiers: [{name: p, route: r}], breaker: {slow_call_duration: 1s}}
  - {name: c, match: {path_prefix: /c}, tiers: [{name: p, route: r}], breaker: {max_probe_duration: 1m}}
"""
    policy = parse_policy(text)
    assert [m.breaker.max_probe_duration for m in policy.models] == [5.0, 5.0, 60.0]
    assert [m.breaker.slow_call_duration for m in policy.models] == [2.0, 1.0, 2.0]


@pytest.mark.parametrize(("value", "seconds"), [("1ms", 0.001), ("1h", 3600.0), ("60m", 3600.0)])
def test_max_probe_duration_bounds_accepted(value: str, seconds: float) -> None:
    breaker = parse_policy(_with_breaker(f"{{max_probe_duration: {value}}}")).models[0].breaker
    assert breaker.max_probe_duration == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0ms", "must be from 1ms to 3600s"),
        ("0.5ms", "must be from 1ms to 3600s"),
        ("61m", "must be from 1ms to 3600s"),
        ("10", "must be a duration string with a unit"),
        ('"10"', "must be a duration such as"),
        ("[1s]", "must be a duration string with a unit"),
    ],
)
def test_max_probe_duration_rules(value: str, message: str) -> None:
    errors = _errors(_with_breaker(f"{{max_probe_duration: {value}}}"))
    assert message in _error_at(errors, "models[0].breaker.max_probe_duration")
    errors = _errors(_with_breaker("{}", f"defaults: {{breaker: {{max_probe_duration: {value}}}}}"))
    assert message in _error_at(errors, "defaults.breaker.max_probe_duration")

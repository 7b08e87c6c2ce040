"""The whole loop with real Envoy and real modelguard: degrade to light, recover to primary.

The primary tier runs on three hosts (as in envoy/envoy.yaml), the light tier on one.

Phase 1: all traffic on primary; a forged x-modelguard-route header changes nothing.
Phase 2: every primary host answers 503 (a bad model, not a bad host) -> within one breaker
         window traffic moves to light, tagged x-modelguard-degraded: true, and /v1/state shows
         primary open. Envoy's outlier detection ejects at most one of the three hosts
         (max_ejection_percent), so it does not hide the fault from modelguard.
Phase 3: primary healthy again -> after the open period and successful half-open probes,
         primary serves again and its breaker is closed.

The measured times are printed (and recorded as junit properties) so they can be quoted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ext_proc.processes import (
    EnvoyProcess,
    HttpResult,
    ModelguardProcess,
    wait_for,
)
from tests.e2e.e2e_harness import (
    EXAMPLE_POLICY,
    MODEL_PATH,
    PRIMARY_CLUSTER,
    EnvoyFactory,
    Sample,
    Traffic,
    Upstream,
    free_port,
    infer,
    model_cluster_ports,
    running_traffic,
    send_sample,
    summarize,
)

pytestmark = pytest.mark.e2e

MODEL = "recommender"

POLICY = """\
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: recommender-resnet50}
      - {name: light,   route: recommender-mobilenet}
    breaker:
      window: 2s
      min_calls: 10
      failure_rate: 0.5
      consecutive_failures: 5
      open_duration: 1s
      max_open_duration: 4s
      half_open_probes: 2
    failure: {statuses: ["5xx"]}
"""

REQUEST_INTERVAL_S = 0.02  # one request every 20 ms
FAULT_TO_LIGHT_MAX_S = 3.0  # "within one window" (2 s) plus slack
FAULTED_HOLD_S = 4.0  # keep primary failing long enough for failed half-open probes
CLEAR_TO_PRIMARY_MAX_S = 10.0  # open period (<= max_open_duration 4 s) + probes + slack
STEADY_RUN = 10  # consecutive samples that count as "serving again"
PRIMARY_HOSTS = 3

FORGED_HEADERS = {
    "x-modelguard-route": "recommender-mobilenet",
    "x-modelguard-tier": "light",
    "x-modelguard-reason": "forged-by-client",
}


@dataclass
class Stack:
    envoy: EnvoyProcess
    modelguard: ModelguardProcess
    primaries: list[Upstream]
    light: Upstream

    @property
    def url(self) -> str:
        return self.envoy.url + MODEL_PATH

    def set_primary_fault(self, on: bool) -> None:
        for host in self.primaries:
            host.set_fault(on)

    def primary_saw_route(self, value: str) -> bool:
        return any(h.last_headers.get("x-modelguard-route") == value for h in self.primaries)


@pytest.fixture
def stack(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> Stack:
    primaries = [upstream_factory("primary") for _ in range(PRIMARY_HOSTS)]
    light = upstream_factory("light")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    modelguard = modelguard_factory(policy)
    envoy = envoy_factory(model_cluster_ports(modelguard.grpc_port, [p.port for p in primaries], [light.port]))
    return Stack(envoy=envoy, modelguard=modelguard, primaries=primaries, light=light)


def on_primary(s: Sample) -> bool:
    return s.served_by_primary and s.degraded != "true"


def on_light_degraded(s: Sample) -> bool:
    return s.served_degraded_by_light


def received_at(s: Sample) -> float:
    return s.t + s.latency


def test_degrade_to_light_and_recover(
    stack: Stack,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    timings: dict[str, float] = {
        "envoy_ready_s": stack.envoy.ready_after or -1.0,
        "modelguard_ready_s": stack.modelguard.ready_after or -1.0,
    }

    # Warm-up: the first request opens Envoy's HTTP/2 connection to modelguard.
    warm = wait_for(lambda: on_primary(s := send_sample(stack.url)) and s, 10.0, 0.1)
    assert warm, f"no request came back tagged by modelguard: {send_sample(stack.url)}"
    assert stack.modelguard.tier_state(MODEL, "primary") == "closed"

    traffic = Traffic(stack.url, interval=REQUEST_INTERVAL_S, max_duration=60.0)
    with running_traffic(traffic):
        # ---------------------------------------------------------------- phase 1: normal
        t_start = time.monotonic()
        assert wait_for(lambda: len(traffic.since(t_start)) >= 25 or None, 5.0)
        for _ in range(5):
            forged = send_sample(stack.url, headers=FORGED_HEADERS)
            assert on_primary(forged), f"forged x-modelguard-route changed routing: {forged}"
        t_fault = time.monotonic()
        normal = traffic.since(t_start, until=t_fault)
        assert all(on_primary(s) for s in normal), summarize(normal)
        assert stack.light.request_count == 0
        assert stack.primary_saw_route("recommender-resnet50")
        assert all(h.request_count > 0 for h in stack.primaries), "round robin over 3 hosts"

        # ---------------------------------------------------------------- phase 2: fault
        stack.set_primary_fault(True)
        first_light = traffic.wait_first(t_fault, on_light_degraded, FAULT_TO_LIGHT_MAX_S + 2)
        assert first_light is not None, summarize(traffic.since(t_fault))
        timings["fault_to_first_light_s"] = received_at(first_light) - t_fault

        seen_open = wait_for(lambda: stack.modelguard.tier_state(MODEL, "primary") == "open", 3.0, 0.02)
        timings["fault_to_state_open_s"] = time.monotonic() - t_fault
        assert seen_open, f"/v1/state never showed primary open: {stack.modelguard.state()}"

        time.sleep(max(0.0, t_fault + FAULTED_HOLD_S - time.monotonic()))
        assert stack.modelguard.tier_state(MODEL, "primary") in ("open", "half_open")
        t_clear = time.monotonic()
        degraded = traffic.since(first_light.t, until=t_clear)
        light_share = sum(on_light_degraded(s) for s in degraded) / len(degraded)
        probes = sum(s.server == "primary" and s.status == 503 for s in degraded)
        assert light_share >= 0.8, summarize(degraded)
        assert stack.light.last_headers.get("x-modelguard-route") == "recommender-mobilenet"

        outlier = f"cluster.{PRIMARY_CLUSTER}.outlier_detection."
        ejections = stack.envoy.stats(outlier.replace(".", r"\."))
        # One host of three may be ejected, never two: the rest keep answering, so the bad
        # model stays visible to modelguard (no "no healthy upstream").
        assert ejections.get(outlier + "ejections_active", 0) <= 1, ejections

        # ---------------------------------------------------------------- phase 3: recover
        stack.set_primary_fault(False)
        back = traffic.wait_run(t_clear, on_primary, STEADY_RUN, CLEAR_TO_PRIMARY_MAX_S)
        assert back is not None, summarize(traffic.since(t_clear))
        first_primary = traffic.first_since(t_clear, on_primary)
        assert first_primary is not None
        timings["clear_to_first_primary_s"] = received_at(first_primary) - t_clear
        timings["clear_to_primary_back_s"] = received_at(back) - t_clear

        closed = wait_for(lambda: stack.modelguard.tier_state(MODEL, "primary") == "closed", 5.0, 0.02)
        timings["clear_to_state_closed_s"] = time.monotonic() - t_clear
        assert closed, f"primary breaker not closed: {stack.modelguard.state()}"
        recovered = traffic.since(back.t)

    assert all(on_primary(s) for s in recovered), summarize(recovered)

    prefix = "http.ingress_http.ext_proc.modelguard."
    stats = stack.envoy.stats(prefix.replace(".", r"\."))
    assert stats.get(prefix + "rejected_header_mutations", 0) == 0, stats

    latencies = sorted(s.latency for s in traffic.samples)
    p50 = latencies[len(latencies) // 2]
    span = received_at(traffic.samples[-1]) - traffic.samples[0].t
    report = [
        f"requests sent: {len(traffic.samples)} in {span:.1f}s ({len(traffic.samples) / span:.0f}/s, "
        f"one every {REQUEST_INTERVAL_S * 1000:.0f} ms at most); latency p50 {p50 * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms",
        f"phase 1: {summarize(normal)}",
        f"phase 2: {summarize(degraded)}; light share {light_share:.1%}, primary probes {probes}",
        f"phase 3: {summarize(traffic.since(t_clear))}",
        "envoy outlier (primary, during the fault): "
        + ", ".join(
            f"{k}={ejections.get(outlier + k, 0)}"
            for k in ("ejections_active", "ejections_enforced_total", "ejections_overflow")
        ),
        *(f"{k}: {v:.3f}" for k, v in timings.items()),
        "envoy ext_proc: "
        + ", ".join(
            f"{k.removeprefix(prefix)}={stats.get(prefix + k, 0)}"
            for k in ("streams_started", "failure_mode_allowed", "message_timeouts")
        ),
    ]
    for key, value in timings.items():
        record_property(key, round(value, 3))
    with capsys.disabled():
        print("\n[e2e degrade] " + "\n[e2e degrade] ".join(report))

    assert timings["fault_to_first_light_s"] <= FAULT_TO_LIGHT_MAX_S, timings
    assert timings["clear_to_primary_back_s"] <= CLEAR_TO_PRIMARY_MAX_S, timings


def test_unreachable_primary_degrades_to_light(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    """Nothing listens on primary: each refused connection is a failed try that Envoy retries,
    the last time on the light tier, and logs to modelguard. Clients get light's answers from the
    first call; the breaker counts the logged tries (two per call) and opens, after which calls
    go to light directly, tagged as degraded."""
    light = upstream_factory("light")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    modelguard = modelguard_factory(policy)
    envoy = envoy_factory(model_cluster_ports(modelguard.grpc_port, [free_port()], [light.port]))
    samples = []
    for _ in range(30):
        samples.append(send_sample(envoy.url + MODEL_PATH))
        time.sleep(0.02)  # the log's batches are sent every 20 ms
    assert all(s.status == 200 for s in samples), summarize(samples)
    first_light = next((i for i, s in enumerate(samples) if on_light_degraded(s)), None)
    assert first_light is not None, summarize(samples)
    # consecutive_failures: 5 -> three calls' logged tries open it (a little slack for the log's batching).
    assert first_light <= 6, summarize(samples)
    assert all(s.tier == "primary" for s in samples[:first_light])
    assert all(on_light_degraded(s) for s in samples[first_light:]), summarize(samples)
    assert modelguard.tier_state(MODEL, "primary") == "open"


def test_ladder_ends_in_immediate_response(
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    """examples/policy.yaml with both models failing: the `default` tier's answer comes from
    Envoy (ImmediateResponse), a KServe v2 error with Retry-After, and neither model server
    sees the request."""
    primary = upstream_factory("primary")
    light = upstream_factory("light")
    primary.set_fault(True)
    light.set_fault(True)
    modelguard = modelguard_factory(EXAMPLE_POLICY)
    envoy = envoy_factory(model_cluster_ports(modelguard.grpc_port, [primary.port], [light.port]))
    answers: list[HttpResult] = []
    for _ in range(40):
        res = infer(envoy.url + MODEL_PATH)
        answers.append(res)
        if res.headers.get("x-modelguard-tier") == "default":
            break
    last = answers[-1]
    tiers = [a.headers.get("x-modelguard-tier") for a in answers]
    assert last.headers.get("x-modelguard-tier") == "default", tiers
    assert last.status == 503
    error = last.json()["error"]
    assert isinstance(error, str) and "recommender" in error
    assert last.headers["content-type"] == "application/json"
    assert int(last.headers["retry-after"]) >= 1
    assert last.headers.get("x-modelguard-degraded") == "true"

    served = primary.request_count + light.request_count
    for _ in range(5):
        res = infer(envoy.url + MODEL_PATH)
        assert res.status == 503 and res.headers.get("x-modelguard-tier") == "default"
    assert primary.request_count + light.request_count == served

"""A live modelguard (the demo policy, with its canary) serves on /metrics every modelguard series the
Grafana dashboard and the PrometheusRule of istio/monitoring/ read, with the label values the alerts
wait for once the things they watch have happened: an open breaker, a forced state, a refused reload,
a protocol error, canary traffic."""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc
from envoy.service.ext_proc.v3.external_processor_pb2 import ProcessingRequest

from ext_proc.core.clock import ManualClock
from ext_proc.core.forcing import ForceMode, ForceOrder
from ext_proc.policy.loading import load_policy_file
from ext_proc.server.reload import Reloader
from ext_proc.server.service import Service
from tests.component.conftest import Harness
from tests.unit.istio.monitoring_queries import MODELGUARD_PREFIX, ROOT, Sample, samples, used_metric_names

DEMO_POLICY = ROOT / "ext_proc" / "demo" / "policy.yaml"
PATH = "/v2/models/recommender/infer"
TARGET_LABELS = ("namespace", "pod", "job", "instance")


@dataclass
class Live:
    harness: Harness
    reloader: Reloader
    policy: Path
    sha256: str

    async def metrics(self) -> list[Sample]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.harness.admin_url + "/metrics", timeout=aiohttp.ClientTimeout(total=10)) as response,
        ):
            assert response.status == 200
            return samples(await response.text())


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    """modelguard as `serve` wires it (the policy file's hash on /metrics, reloads counted), on
    127.0.0.1 and free ports, with a clock the test moves."""
    policy = tmp_path / "policy.yaml"
    shutil.copyfile(DEMO_POLICY, policy)
    loaded = load_policy_file(policy)
    clock = ManualClock()
    service = Service(loaded.policy, clock=clock, rng=random.Random(7))
    reloader = Reloader(str(policy), service.servicer, service.registry, service.stats, loaded, service.on_reload)
    ports = await service.start("127.0.0.1:0", "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{ports.grpc}")
    try:
        harness = Harness(service, ports, clock, channel, ext_proc_grpc.ExternalProcessorStub(channel))
        yield Live(harness, reloader, policy, loaded.sha256)
    finally:
        await channel.close()
        await service.stop(0.5)


async def drive(live: Live) -> None:
    """Traffic on both arms of the canary, failures that open the primary tier's breaker, an operator
    forcing the light tier open, an empty ext_proc message, and a policy file that does not load."""
    harness = live.harness
    for index in range(120):
        await harness.exchange({":path": PATH, ":authority": "gw", "x-user-id": f"user-{index}"}, 200)
        harness.clock.advance(0.01)
    for index in range(40):
        await harness.exchange({":path": PATH, ":authority": "gw", "x-user-id": f"user-{index}"}, 503)
        harness.clock.advance(0.01)
    order = ForceOrder(ForceMode.FORCED_OPEN, "monitoring test", "tests", time.time())
    await harness.service.orders.force("recommender", "light", order)
    await harness.exchange({":path": PATH, ":authority": "gw"}, 200)
    call = harness.stub.Process()
    await call.write(ProcessingRequest())
    assert await call.code() == grpc.StatusCode.INVALID_ARGUMENT
    live.policy.write_text("models: [\n", encoding="utf-8")
    assert await live.reloader.reload("test") == "error"


def value(found: list[Sample], name: str, **labels: str) -> float:
    picked = [s.value for s in found if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert picked, f"no {name} with {labels}"
    return sum(picked)


async def test_every_modelguard_series_the_dashboard_and_alerts_read_is_served(live: Live) -> None:
    await drive(live)
    found = await live.metrics()
    served = {sample.name for sample in found}
    wanted = {name for name in used_metric_names() if name.startswith(MODELGUARD_PREFIX)}
    assert len(wanted) >= 13
    assert wanted - served == set()


async def test_the_series_the_alerts_watch_move_as_the_alerts_expect(live: Live) -> None:
    before = await live.metrics()
    assert value(before, "modelguard_breaker_state", tier="primary", state="open") == 0
    assert value(before, "modelguard_policy_reloads_total", result="error") == 0
    await drive(live)
    found = await live.metrics()
    # ModelguardBreakerOpen and the breaker timeline
    assert value(found, "modelguard_breaker_state", model="recommender", tier="primary", state="open") == 1
    assert value(found, "modelguard_breaker_transitions_total", tier="primary", to_state="open") >= 1
    # ModelguardTierForcedOpen and the forced-state panels
    assert value(found, "modelguard_breaker_state", tier="light", state="forced_open") == 1
    assert value(found, "modelguard_forced_state_changes_total", tier="light", state="forced_open") == 1
    # the canary arms: requests under the first tier with reason canary, outcomes under primary@canary
    assert value(found, "modelguard_requests_total", model="recommender", reason="canary") > 0
    assert value(found, "modelguard_outcomes_total", tier="primary@canary", outcome="success") > 0
    assert value(found, "modelguard_outcomes_total", tier="primary", outcome="failure") >= 5
    assert value(found, "modelguard_upstream_latency_seconds_count", tier="primary@canary") > 0
    assert value(found, "modelguard_decision_duration_seconds_count") > 0
    # ModelguardPolicyReloadFailed, and ModelguardPolicyDiverged's hash: still the file first loaded
    assert value(found, "modelguard_policy_reloads_total", result="error") == 1
    assert value(found, "modelguard_policy_info", sha256=live.sha256) == 1
    assert value(found, "modelguard_protocol_errors_total", kind="empty_message") == 1


async def test_modelguard_leaves_the_target_labels_to_prometheus(live: Live) -> None:
    """The queries filter and sum by namespace and pod, which the scrape adds: a series of modelguard's
    own with such a label would be renamed exported_namespace and slip through every filter."""
    await drive(live)
    found = [sample for sample in await live.metrics() if sample.name.startswith(MODELGUARD_PREFIX)]
    assert found
    for sample in found:
        assert not set(sample.labels) & set(TARGET_LABELS), sample

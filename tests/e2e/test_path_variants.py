"""Spellings of a model's path through the reference Envoy config: none skips the breaker.

With the primary tier open, a request whose path is a variant of the model's path (escaped
unreserved characters, escaped slashes, repeated slashes, dot segments) must be stepped down to
the light tier like any other request for the model, never routed to the failing primary by the
catch-all route.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ext_proc.processes import ModelguardProcess, wait_for
from tests.e2e.e2e_harness import EnvoyFactory, Upstream, model_cluster_ports, send_sample

pytestmark = pytest.mark.e2e

POLICY = """\
models:
  - name: recommender
    match: {path_prefix: /v2/models/recommender}
    tiers:
      - {name: primary, route: recommender-resnet50}
      - {name: light,   route: recommender-mobilenet}
    breaker: {consecutive_failures: 2, open_duration: 60s, max_open_duration: 60s}
"""

VARIANTS = [
    "/v2/models/r%65commender/infer",
    "/v2/models/recomm%65nder/infer",
    "/v2/models%2Frecommender/infer",
    "/v2/models%2frecommender/infer",
    "/v2//models//recommender/infer",
    "//v2/models/recommender/infer",
    "/v2/./models/recommender/infer",
    "/v2/models/x/../recommender/infer",
    "/v2/models/%2e/recommender/infer",
    "/v2/models/%2E%2E/models/recommender/infer",
]


def test_no_spelling_of_the_path_reaches_an_open_primary(
    tmp_path: Path,
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    primary = upstream_factory("primary")
    light = upstream_factory("light")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    modelguard = modelguard_factory(policy)
    envoy = envoy_factory(model_cluster_ports(modelguard.grpc_port, [primary.port], [light.port]))
    url = envoy.url

    first = wait_for(lambda: (s := send_sample(url + "/v2/models/recommender/infer")).tier == "primary" and s, 10, 0.1)
    assert first, "modelguard never tagged a request"
    primary.set_fault(True)

    def failing_variant_opens_primary() -> bool:
        send_sample(url + VARIANTS[0])  # judged like the plain path: its 503s open the breaker
        return modelguard.tier_state("recommender", "primary") == "open"

    assert wait_for(failing_variant_opens_primary, 10, 0.05), "the primary never opened on a variant's failures"
    served_before = primary.request_count

    for path in VARIANTS:
        sample = send_sample(url + path)
        assert sample.server == "light" and sample.tier == "light", (path, sample)
    assert primary.request_count == served_before, "a variant reached the open primary"

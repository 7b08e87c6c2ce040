"""Who ends an ext_proc stream, checked against real Envoy.

modelguard closes each stream itself (cleanly) once it has nothing left to do on it: on judging
the response headers (instead of answering them), or right after the request-phase answer for a
request it does not route (unmatched, answered directly). The ext_proc protocol says Envoy then
goes on without the processor; this test holds Envoy to that: every request is answered as usual,
routed answers still carry the tier tag (copied by the reference config from the request headers
modelguard set), every routed response is judged, and Envoy counts no failed stream, no fail-open
and no timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ext_proc.processes import ModelguardProcess, http_request
from tests.e2e.e2e_harness import EXAMPLE_POLICY, MODEL_PATH, EnvoyFactory, Upstream, infer, model_cluster_ports

pytestmark = pytest.mark.e2e

ROUTED = 40
UNMATCHED = 40
EXT_PROC = "http.ingress_http.ext_proc.modelguard."


def test_envoy_goes_on_after_modelguard_ends_the_stream(
    upstream_factory: Callable[[str], Upstream],
    modelguard_factory: Callable[[Path], ModelguardProcess],
    envoy_factory: EnvoyFactory,
) -> None:
    primary = upstream_factory("primary")
    light = upstream_factory("light")
    modelguard = modelguard_factory(EXAMPLE_POLICY)
    envoy = envoy_factory(model_cluster_ports(modelguard.grpc_port, [primary.port], [light.port]))

    for _ in range(ROUTED):
        res = infer(envoy.url + MODEL_PATH)
        assert res.status == 200
        # Set on the request by modelguard, copied onto the response by Envoy's virtual host.
        assert res.headers.get("x-modelguard-tier") == "primary"
        assert "x-modelguard-degraded" not in res.headers
    for _ in range(UNMATCHED):
        res = http_request(envoy.url + "/not-a-model")
        assert res.status == 200 and "x-modelguard-tier" not in res.headers
    assert primary.request_count == ROUTED + UNMATCHED  # unmatched takes the default route

    tier = modelguard.state()["models"]["recommender"]["tiers"]["primary"]
    assert tier["outcomes"]["success"] == ROUTED and tier["outcomes"]["dropped"] == 0
    assert tier["inflight"] == 0
    assert modelguard.state()["unmatched_requests"] == UNMATCHED

    stats = envoy.stats(r"^http\.ingress_http\.ext_proc\.")
    assert stats.get(EXT_PROC + "streams_started") == ROUTED + UNMATCHED
    for name in ("streams_failed", "failure_mode_allowed", "message_timeouts", "spurious_msgs_received"):
        assert stats.get(EXT_PROC + name, 0) == 0, (name, stats)
    # modelguard answered each stream once, on its request headers; it ended the routed streams on
    # their response headers instead of answering, and the unmatched ones right after the first
    # answer. Envoy counts streams the server ended (server_half_closed). When an upstream answers
    # faster than the close arrives, Envoy may still send response headers on an unmatched stream;
    # it then goes on when the close comes, without an answer and without error.
    assert stats.get(EXT_PROC + "stream_msgs_received") == ROUTED + UNMATCHED, stats
    assert stats.get(EXT_PROC + "server_half_closed", 0) == ROUTED + UNMATCHED, stats

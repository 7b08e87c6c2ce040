"""Micro-benchmark of modelguard's own per-request work, without gRPC or Envoy.

Measures CPU time (process_time) per request for:
  core      Guard.decide + Guard.record on a header dict (the pure decision core)
  core, path to normalize
            the same with paths that need normalizing before matching (an escape, a doubled
            slash, a dot segment): what such a spelling costs over the fast check
  core, every model with a canary
            the same where every model has a canary at 10% keyed by x-request-id: the arm's hash,
            the stable or canary token, and the judgement of every canary response
  core, every tier limited
            the same where every routed tier has a concurrency limit (adaptive on the primary):
            the criticality read, the limiter's admission and its latency sample per answer
  adapter   what the servicer does per request: parse the request-headers ProcessingRequest,
            extract headers, decide, pick the prebuilt answer; then parse the response-headers
            message, judge it, pick the prebuilt answer (everything but the gRPC machinery)
  logged try
            what a failed try from Envoy's access log costs (server/tries.py): its share of a
            parsed batch of 16 entries, read and judged into a closed breaker (only failed tries
            are logged: a healthy model costs nothing here)

Usage: python -m bench.micro [--requests N] [--models M] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue, RequestMethod
from envoy.data.accesslog.v3.accesslog_pb2 import HTTPAccessLogEntry
from envoy.service.accesslog.v3.als_pb2 import StreamAccessLogsMessage
from envoy.service.ext_proc.v3.external_processor_pb2 import HttpHeaders, ProcessingRequest

from bench.policies import policy_with
from ext_proc.core.guard import Guard
from ext_proc.core.registry import StateRegistry
from ext_proc.policy import parse_policy
from ext_proc.server.servicer import ExtProcServicer
from ext_proc.server.tries import TryLog


def request_headers_message(path: str) -> bytes:
    headers = {
        ":method": "POST",
        ":path": path,
        ":authority": "models.internal:8080",
        ":scheme": "http",
        "content-type": "application/json",
        "user-agent": "bench/1.0",
        "x-request-id": "5f0c6e1e-8d4f-4d0b-9f65-0c1a2b3c4d5e",
        "x-user-id": "user-12345",
        "accept": "application/json",
        "content-length": "128",
    }
    return _message("request_headers", headers)


def response_headers_message() -> bytes:
    headers = {
        ":status": "200",
        "content-type": "application/json",
        "content-length": "64",
        "server": "envoy",
    }
    return _message("response_headers", headers)


def _message(phase: str, headers: dict[str, str]) -> bytes:
    header_map = HeaderMap(headers=[HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()])
    wire: bytes = ProcessingRequest(**{phase: HttpHeaders(headers=header_map)}).SerializeToString()
    return wire


def measure(run: Callable[[int], None], requests: int) -> float:
    """Best of three CPU-time runs, in microseconds per request."""
    run(min(requests, 1000))  # warm up
    best = float("inf")
    for _ in range(3):
        gc.collect()
        start = time.process_time()
        run(requests)
        best = min(best, time.process_time() - start)
    return best / requests * 1e6


def bench(requests: int, models: int) -> dict[str, Any]:
    guard = Guard(policy_with(models), StateRegistry(rng=random.Random(1)))
    paths = [f"/v2/models/model-{i % models}/infer" for i in range(64)]
    header_dicts = [{":method": "POST", ":path": p, ":authority": "models.internal:8080"} for p in paths]
    odd_dicts = [{":method": "POST", ":path": p.replace("/models/", "/m%6Fdels//./"), ":authority": "x"} for p in paths]

    def core(n: int) -> None:
        decide, record = guard.decide, guard.record
        for i in range(n):
            record(decide(header_dicts[i & 63]), 200, None)

    canary_guard = Guard(policy_with(models, canaries=models), StateRegistry(rng=random.Random(1)))
    keyed = [{**headers, "x-request-id": f"5f0c6e1e-8d4f-4d0b-9f65-{i:012x}"} for i, headers in enumerate(header_dicts)]

    def core_canary(n: int) -> None:
        decide, record = canary_guard.decide, canary_guard.record
        for i in range(n):
            record(decide(keyed[i & 63]), 200, None)

    limited_guard = Guard(policy_with(models, limits=True), StateRegistry(rng=random.Random(1)))
    classed = [{**headers, "x-request-criticality": "standard"} for headers in header_dicts]

    def core_limited(n: int) -> None:
        decide, record = limited_guard.decide, limited_guard.record
        for i in range(n):
            record(decide(classed[i & 63]), 200, None)

    def core_normalized(n: int) -> None:
        decide, record = guard.decide, guard.record
        for i in range(n):
            record(decide(odd_dicts[i & 63]), 200, None)

    servicer = ExtProcServicer(Guard(policy_with(models), StateRegistry(rng=random.Random(1))))
    plan = servicer.plan
    request_wires = [request_headers_message(p) for p in paths]
    response_wire = response_headers_message()

    def adapter(n: int) -> None:
        parse = ProcessingRequest.FromString
        for i in range(n):
            request = parse(request_wires[i & 63])
            request.WhichOneof("request")
            ticket, _answer, _last = servicer._decide(plan, request)
            response = parse(response_wire)
            response.WhichOneof("request")
            servicer._on_response(plan.guard, ticket, response)
            _ = plan.answers[ticket.decision].request_is_last

    def parse_only(n: int) -> None:
        parse = ProcessingRequest.FromString
        for i in range(n):
            parse(request_wires[i & 63]).WhichOneof("request")
            parse(response_wire).WhichOneof("request")

    tries = logged_try_cost(min(requests, LOGGED_TRIES))
    results = {
        "requests": requests,
        "models": models,
        "core_us": round(measure(core, requests), 3),
        "core_normalized_path_us": round(measure(core_normalized, requests), 3),
        "core_canary_us": round(measure(core_canary, requests), 3),
        "core_limited_us": round(measure(core_limited, requests), 3),
        "adapter_us": round(measure(adapter, requests), 3),
        "protobuf_parse_us": round(measure(parse_only, requests), 3),
        "logged_try_us": tries,
    }
    results["adapter_minus_parse_us"] = round(results["adapter_us"] - results["protobuf_parse_us"], 3)
    return results


LOGGED_TRIES = 16_000
"""Failed tries per measured run: 4 runs stay under the policy's min_calls, so the breaker judges
every one closed and never opens (an open one would skip the work)."""
TRY_POLICY = """
models:
  - name: m
    match: {path_prefix: /v2/models/m}
    tiers: [{name: primary, route: m-primary}, {name: light, route: m-light}]
    breaker: {window: 600s, min_calls: 100000, consecutive_failures: 0}
"""


def logged_try_cost(tries: int) -> float:
    registry = StateRegistry(rng=random.Random(1))
    guard = Guard(parse_policy(TRY_POLICY), registry)
    log = TryLog(lambda: guard, registry)
    message = StreamAccessLogsMessage()
    for index in range(16):
        entry: HTTPAccessLogEntry = message.http_logs.log_entry.add()
        entry.common_properties.upstream_cluster = "m-primary"
        entry.common_properties.upstream_remote_address.socket_address.address = f"10.0.0.{index % 3}"
        entry.common_properties.upstream_remote_address.socket_address.port_value = 8000
        entry.common_properties.duration.FromMilliseconds(40)
        entry.request.request_method = RequestMethod.POST
        entry.request.path = "/v2/models/m/infer"
        entry.request.authority = "models.internal"
        entry.request.request_headers["x-modelguard-tier"] = "primary"
        entry.request.request_headers["x-modelguard-route"] = "m-primary"
        entry.response.response_code.value = 503
    wire = message.SerializeToString()

    def judge(n: int) -> None:
        parse = StreamAccessLogsMessage.FromString
        for _ in range(n // 16):
            log.judge(parse(wire).http_logs.log_entry)

    cost = measure(judge, tries)
    assert log.tries["counted"] > 0 and not log.tries["error"], log.tries
    return round(cost, 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--models", type=int, nargs="+", default=[1, 20, 1000])
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    rows = [bench(args.requests, m) for m in args.models]
    print(
        "| models | core decide+record (µs) | core, a path to normalize (µs) | core, every model with a canary (µs) "
        "| core, every tier limited (µs) | adapter per request (µs) | of which protobuf parse (µs) "
        "| a logged failed try (µs) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['models']} | {row['core_us']} | {row['core_normalized_path_us']} | {row['core_canary_us']} "
            f"| {row['core_limited_us']} | {row['adapter_us']} "
            f"| {row['protobuf_parse_us']} | {row['logged_try_us']} |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"python": sys.version.split()[0], "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

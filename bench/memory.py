"""Memory benchmark: RSS of modelguard with 1,000 models after 1,000,000 distinct request ids and
sticky keys.

Two figures:
  serve_idle_rss_mb   a real ``modelguard serve`` process with the 1,000-model policy, just started
  after_requests_mb   this process after pushing N requests, each with its own x-request-id and
                      x-user-id, spread over every model, through the servicer's own per-request
                      path (protobuf parse, header extraction, decision, response judgement): all
                      of modelguard but the gRPC transport, which holds no per-request state once
                      a stream ends

Usage: python -m bench.memory [--models 1000] [--requests 1000000] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.service.ext_proc.v3.external_processor_pb2 import HttpHeaders, ProcessingRequest

from bench.policies import policy_document, policy_with
from ext_proc.core.guard import Guard
from ext_proc.core.registry import StateRegistry
from ext_proc.processes import free_ports, http_request, modelguard_command, wait_for
from ext_proc.server.servicer import ExtProcServicer

RESPONSE = ProcessingRequest(
    response_headers=HttpHeaders(headers=HeaderMap(headers=[HeaderValue(key=":status", raw_value=b"200")]))
)


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


def serve_idle_rss(models: int) -> float:
    """RSS of a real `modelguard serve` with the policy loaded and both ports listening."""
    with tempfile.TemporaryDirectory() as scratch:
        policy = Path(scratch) / "policy.yaml"
        policy.write_text(yaml.safe_dump(policy_document(models)))
        grpc_port, admin_port = free_ports(2)
        process = subprocess.Popen(
            [
                *modelguard_command(),
                "serve",
                "--policy",
                str(policy),
                "--grpc-address",
                f"127.0.0.1:{grpc_port}",
                "--admin-address",
                f"127.0.0.1:{admin_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{admin_port}/readyz"
            ready = wait_for(lambda: _ready(url), 30.0, 0.1)
            if not ready:
                raise RuntimeError("modelguard serve did not become ready")
            time.sleep(0.5)
            return rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=10)


def _ready(url: str) -> bool | None:
    try:
        return http_request(url, timeout=1.0).status == 200 or None
    except OSError:
        return None


def push_requests(models: int, requests: int) -> dict[str, float]:
    servicer = ExtProcServicer(Guard(policy_with(models), StateRegistry(rng=random.Random(1))))
    plan = servicer.plan
    gc.collect()
    before = rss_mb()
    started = time.process_time()
    for index in range(requests):
        headers = [
            HeaderValue(key=":method", raw_value=b"POST"),
            HeaderValue(key=":path", raw_value=f"/v2/models/model-{index % models}/infer".encode()),
            HeaderValue(key=":authority", raw_value=b"models.internal"),
            HeaderValue(key="x-request-id", raw_value=f"req-{index:012d}".encode()),
            HeaderValue(key="x-user-id", raw_value=f"user-{index:012d}".encode()),
        ]
        request = ProcessingRequest(request_headers=HttpHeaders(headers=HeaderMap(headers=headers)))
        ticket, _answer, _last = servicer._decide(plan, request)
        servicer._on_response(plan.guard, ticket, RESPONSE)
    cpu = time.process_time() - started
    gc.collect()
    return {"before_mb": round(before, 1), "after_mb": round(rss_mb(), 1), "cpu_s": round(cpu, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    idle = serve_idle_rss(args.models)
    pushed = push_requests(args.models, args.requests)
    result = {"models": args.models, "requests": args.requests, "serve_idle_rss_mb": round(idle, 1), **pushed}
    print("| models | distinct request ids / sticky keys | serve, idle (MB) | after the requests (MB) | target |")
    print("|---:|---:|---:|---:|---|")
    verdict = "met" if max(idle, pushed["after_mb"]) <= 150 else "MISSED"
    print(f"| {args.models} | {args.requests:,} | {idle:.1f} | {pushed['after_mb']} | <= 150 MB: {verdict} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

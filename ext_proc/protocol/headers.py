"""Header names of modelguard's contract with Envoy routes and with clients (see README)."""

from __future__ import annotations

PREFIX = "x-modelguard-"
ROUTE = "x-modelguard-route"
TIER = "x-modelguard-tier"
REASON = "x-modelguard-reason"
DEGRADED = "x-modelguard-degraded"
ARM = "x-modelguard-arm"
"""``canary`` or ``stable``, on requests of a model with a canary served by its first tier."""
REQUEST_ID = "x-request-id"
MODEL_SCOPE = "x-modelguard-model"
"""gRPC metadata of an ext_proc stream, not a request header: the one model the stream's request
may be for. The Istio EnvoyFilters set it per model Service (sidecars) and per model route (gateways),
so a request is judged only for the model whose Service Envoy routes it to, never charged to another
model's breaker."""

TRY_LOG = "x-modelguard-try-log"
TRY_LOG_ON = "on"
"""gRPC metadata of an ext_proc stream, not a request header: ``on`` says the stream's Envoy logs its
failed upstream tries to modelguard (envoy/envoy.yaml: ``initial_metadata`` of the ext_proc filter's
``grpc_service``, beside the router's ``upstream_log``), so answers after failed tries are left to that
log (core/tries.py). Set from Envoy's config, never from a client."""

MAX_RETRIES = "x-envoy-max-retries"
UPSTREAM_TIMEOUT = "x-envoy-upstream-rq-timeout-ms"
"""Envoy's router reads them from the request after the ext_proc filter: modelguard sets them to
hold retries back where a tier struggles (README, "Retry-storm control")."""

STATUS = ":status"
PATH = ":path"
AUTHORITY = ":authority"
METHOD = ":method"
CONTENT_TYPE = "content-type"
GRPC_STATUS = "grpc-status"
RETRY_AFTER = "retry-after"
GRPC_CONTENT_TYPE = "application/grpc"

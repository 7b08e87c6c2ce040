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
may be for. The Istio EnvoyFilter sets it per virtual host (a model's Service), so a request sent to
one model's Service with another model's path is left alone instead of being charged to the other
model's breaker."""

STATUS = ":status"
CONTENT_TYPE = "content-type"
GRPC_STATUS = "grpc-status"
GRPC_CONTENT_TYPE = "application/grpc"

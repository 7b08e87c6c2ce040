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

STATUS = ":status"
CONTENT_TYPE = "content-type"
GRPC_STATUS = "grpc-status"
GRPC_CONTENT_TYPE = "application/grpc"

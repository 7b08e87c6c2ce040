"""What ``modelguard serve`` settles before gRPC is imported: its defaults and gRPC's runtime flags.

gRPC reads ``GRPC_EXPERIMENTS`` once, when it initializes on import, so the CLI parses its
arguments and applies ``apply_grpc_defaults`` before it imports anything that imports grpc.
modelguard's default turns off two of gRPC's EventEngine experiments (its new listener and I/O
for other endpoints), which puts the server back on gRPC's long-standing poller: measured through
Envoy, 12% less processor CPU per request and about 15% more streams per second for the same
server (bench/README.md). An operator's own ``GRPC_EXPERIMENTS``, even empty (gRPC's defaults),
always wins.
"""

from __future__ import annotations

from collections.abc import MutableMapping

DEFAULT_GRPC_ADDRESS = "0.0.0.0:50051"
DEFAULT_ADMIN_ADDRESS = "127.0.0.1:9464"
DEFAULT_ADMIN_GRPC_ADDRESS = "127.0.0.1:9465"
"""The operator API: loopback unless told otherwise, since it changes what modelguard does. When
not given, it is the admin address's host with the port after the admin ports' block
(``default_admin_grpc_address``): 9465 for one process, and ephemeral when the admin port is."""
ADMIN_GRPC_OFF = "off"
DEFAULT_GRACE = 5.0
MAX_GRACE = 3600.0
"""The longest ``--grace`` accepted: past an hour a drain is a hang, longer than any orchestrator
waits before its SIGKILL (Kubernetes' terminationGracePeriodSeconds defaults to 30)."""

MAX_STREAMS_PER_PROCESS = 10_000
"""The burst of new ext_proc streams one process accepts at once. gRPC queues streams the
server has not picked up yet and, past ``grpc.server.max_pending_requests`` (1,000 by default),
cancels the excess: a gateway's traffic spike had most of a 2,000-stream burst fail open that
way. The queue bound is raised to this, and Envoy's circuit breaker on the modelguard cluster
caps streams in flight at the same figure per process (envoy/envoy.yaml), so any excess fails
open by Envoy's choice, counted in its stats, rather than gRPC's."""

GRPC_EXPERIMENTS = "GRPC_EXPERIMENTS"
DEFAULT_GRPC_EXPERIMENTS = "-event_engine_listener,-event_engine_for_all_other_endpoints"


def apply_grpc_defaults(environ: MutableMapping[str, str]) -> str:
    """Set modelguard's ``GRPC_EXPERIMENTS`` unless one is set already; the value in force."""
    return environ.setdefault(GRPC_EXPERIMENTS, DEFAULT_GRPC_EXPERIMENTS)


def default_admin_grpc_address(admin_address: str, workers: int = 1) -> str:
    """The admin gRPC address when none is given: beside the admin HTTP ports (one per worker)."""
    host, port = split_address(admin_address)
    return join_address(host, 0 if port == 0 else port + workers)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` to (host, port); ValueError with a readable message."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port_text)

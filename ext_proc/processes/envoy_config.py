"""Envoy configs for local runs, rendered from the reference bootstrap envoy/envoy.yaml.

The demo, the tests and the benchmarks run the config users copy (`reference_envoy_config`),
moved onto 127.0.0.1 ports by `render_envoy_config`; `validate_envoy_config` asks Envoy itself
whether it accepts a config.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ext_proc.processes.locations import envoy_binary
from ext_proc.processes.network import LOCALHOST
from ext_proc.protocol.headers import TRY_LOG

__all__ = ["EXT_PROC_FILTER", "render_envoy_config", "validate_envoy_config", "yaml_text"]

EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
_EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
# Cluster fields that only mean something for DNS-resolved clusters; dropped when a cluster is
# rewritten to STATIC endpoints on 127.0.0.1.
_DNS_FIELDS = (
    "dns_lookup_family",
    "dns_refresh_rate",
    "dns_failure_refresh_rate",
    "respect_dns_ttl",
    "dns_resolvers",
    "dns_resolution_config",
    "typed_dns_resolver_config",
    "use_tcp_for_dns_lookups",
    "dns_jitter",
)


class _NoAliasDumper(yaml.SafeDumper):
    """Writes shared objects (YAML anchors in the source) out in full: no &id001 / *id001."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def yaml_text(data: object) -> str:
    """YAML for configs people read and Envoy loads: keys in the order built, no anchors."""
    return yaml.dump(data, Dumper=_NoAliasDumper, sort_keys=False, width=120)


_AGGREGATE = "envoy.clusters.aggregate"


def _local_address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": LOCALHOST, "port_value": port}}


def _http_connection_managers(config: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for listener in config.get("static_resources", {}).get("listeners", []):
        for chain in listener.get("filter_chains", []):
            for net_filter in chain.get("filters", []):
                if net_filter.get("name") == "envoy.filters.network.http_connection_manager":
                    found.append(net_filter["typed_config"])
    return found


def _is_ext_proc(http_filter: Mapping[str, Any]) -> bool:
    typed = http_filter.get("typed_config") or {}
    return http_filter.get("name") == EXT_PROC_FILTER or typed.get("@type") == _EXT_PROC_TYPE


def _ext_proc_clusters(hcm: Mapping[str, Any]) -> set[str]:
    names: set[str] = set()
    for http_filter in hcm.get("http_filters", []):
        if _is_ext_proc(http_filter):
            grpc = http_filter.get("typed_config", {}).get("grpc_service", {})
            name = grpc.get("envoy_grpc", {}).get("cluster_name")
            if name:
                names.add(name)
    return names


def _strip_ext_proc(hcm: dict[str, Any]) -> set[str]:
    """Remove the ext_proc filters and their per-route/per-vhost configs; return their clusters."""
    clusters = _ext_proc_clusters(hcm)
    filter_names = {f["name"] for f in hcm.get("http_filters", []) if _is_ext_proc(f)}
    hcm["http_filters"] = [f for f in hcm.get("http_filters", []) if not _is_ext_proc(f)]
    route_config = hcm.get("route_config", {})
    holders: list[dict[str, Any]] = [route_config]
    for vhost in route_config.get("virtual_hosts", []):
        holders.append(vhost)
        holders.extend(vhost.get("routes", []))
    for holder in holders:
        per_filter = holder.get("typed_per_filter_config")
        if not per_filter:
            continue
        for name in filter_names:
            per_filter.pop(name, None)
        if not per_filter:
            del holder["typed_per_filter_config"]
    for http_filter in hcm.get("http_filters", []):
        _strip_logs_to(http_filter.get("typed_config") or {}, clusters)
    return clusters


def _without_next_tier(hcm: dict[str, Any], clusters: Sequence[Mapping[str, Any]]) -> set[str]:
    """Point the routes at an aggregate cluster to its first cluster, with one retry fewer and no
    retry_priority; returns the aggregate clusters (no longer used)."""
    firsts = {
        c["name"]: c["cluster_type"]["typed_config"]["clusters"][0]
        for c in clusters
        if c.get("cluster_type", {}).get("name") == _AGGREGATE
    }
    for vhost in hcm.get("route_config", {}).get("virtual_hosts", []):
        for route in vhost.get("routes", []):
            action = route.get("route") or {}
            if action.get("cluster") not in firsts:
                continue
            action["cluster"] = firsts[action["cluster"]]
            retry = action.get("retry_policy")
            if retry and retry.pop("retry_priority", None) is not None:
                retry["num_retries"] = max(1, int(retry.get("num_retries", 1)) - 1)
    return set(firsts)


def without_try_log(ext_proc_filter: Mapping[str, Any]) -> None:
    """Take the ext_proc filter's word that failed tries are logged (``x-modelguard-try-log``)
    off its gRPC metadata: for a config that does not log them."""
    grpc = ext_proc_filter.get("typed_config", {}).get("grpc_service", {})
    metadata = grpc.get("initial_metadata")
    if metadata is None:
        return
    kept = [entry for entry in metadata if entry.get("key") != TRY_LOG]
    if kept:
        grpc["initial_metadata"] = kept
    else:
        del grpc["initial_metadata"]


def _strip_logs_to(router: dict[str, Any], clusters: set[str]) -> None:
    """Remove the router's upstream logs that send to one of ``clusters`` (the failed tries that
    modelguard reads: there is no modelguard to read them, and Envoy refuses a log to a cluster
    that does not exist)."""
    logs = router.get("upstream_log")
    if not logs:
        return
    kept = [entry for entry in logs if _log_cluster(entry) not in clusters]
    if kept:
        router["upstream_log"] = kept
    else:
        del router["upstream_log"]


def _log_cluster(entry: Mapping[str, Any]) -> str | None:
    grpc = (entry.get("typed_config") or {}).get("common_config", {}).get("grpc_service", {})
    name: str | None = grpc.get("envoy_grpc", {}).get("cluster_name")
    return name


def render_envoy_config(
    source: Path,
    dest: Path,
    *,
    listener_port: int,
    admin_port: int,
    cluster_ports: Mapping[str, Sequence[int]],
    without_ext_proc: bool = False,
    extra_http_filters: Sequence[Mapping[str, Any]] = (),
    transport_sockets: Mapping[str, Mapping[str, Any]] | None = None,
    next_tier_retries: bool = True,
    try_log: bool = True,
) -> Path:
    """Write a copy of the Envoy bootstrap `source` to `dest` that runs on this machine.

    - admin and the (single) listener move to 127.0.0.1:`admin_port` / `listener_port`;
    - every cluster with endpoints (`load_assignment`) becomes STATIC with one endpoint
      127.0.0.1:port per port in `cluster_ports[name]`, in order. That includes the ext_proc
      cluster (`modelguard` in the reference config). `cluster_ports` must name each such
      cluster exactly, so nothing rendered can reach a port of the reference file. Clusters
      without endpoints (an aggregate cluster) are left as they are;
    - `without_ext_proc=True` removes the ext_proc filter, its per-route/per-vhost overrides and
      the cluster it calls (whose entry in `cluster_ports` is then optional and unused): the same
      routes, retries and outlier detection, without modelguard. Requests carry no
      x-modelguard-route header then, so they take the header-less default route.
    - `extra_http_filters` are inserted just before the router (the last HTTP filter).
    - `transport_sockets` sets the `transport_socket` of the named clusters (e.g. the mTLS block of
      envoy/modelguard-mtls-cluster.yaml for `modelguard`), replacing any they had.
    - `next_tier_retries=False` sends the routes to an aggregate cluster (the primary tier, then
      the light one) to its first cluster instead, without the retry that went to the next tier
      (`retry_priority`, and one retry fewer): retries on another host of the same tier only, as
      an Envoy without that fallback has them. For comparisons (bench/protection.py).
    - `try_log=False` removes the router's upstream logs to the ext_proc cluster (the failed tries
      modelguard reads): answers are judged from the response phase alone. For comparisons.

    Raises ValueError for a config it cannot render or for `cluster_ports` that do not match.
    """
    loaded = yaml.safe_load(source.read_text())
    if not isinstance(loaded, dict):
        raise ValueError(f"{source}: not an Envoy bootstrap (top level is not a mapping)")
    config: dict[str, Any] = copy.deepcopy(loaded)

    if "admin" not in config:
        raise ValueError(f"{source}: no admin section")
    config["admin"]["address"] = _local_address(admin_port)

    static = config.get("static_resources") or {}
    listeners = static.get("listeners") or []
    if len(listeners) != 1:
        raise ValueError(f"{source}: expected one listener, found {len(listeners)}")
    listeners[0]["address"] = _local_address(listener_port)

    removed: set[str] = set()
    if without_ext_proc:
        for hcm in _http_connection_managers(config):
            removed |= _strip_ext_proc(hcm)
    elif not try_log:
        for hcm in _http_connection_managers(config):
            for http_filter in hcm.get("http_filters", []):
                _strip_logs_to(http_filter.get("typed_config") or {}, _ext_proc_clusters(hcm))
                if _is_ext_proc(http_filter):
                    without_try_log(http_filter)
    for hcm in _http_connection_managers(config):
        # Extra filters (e.g. admission_control for a comparison) go right before the router.
        filters = hcm["http_filters"]
        filters[len(filters) - 1 : len(filters) - 1] = [copy.deepcopy(dict(f)) for f in extra_http_filters]

    clusters: list[dict[str, Any]] = static.get("clusters") or []
    if not next_tier_retries:
        for hcm in _http_connection_managers(config):
            removed |= _without_next_tier(hcm, clusters)
    static["clusters"] = clusters = [c for c in clusters if c["name"] not in removed]
    with_endpoints = {c["name"] for c in clusters if "load_assignment" in c}
    unknown = sorted(set(cluster_ports) - with_endpoints - removed)
    missing = sorted(with_endpoints - set(cluster_ports))
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(f"unknown cluster(s) {unknown}")
        if missing:
            problems.append(f"no ports for cluster(s) {missing}")
        raise ValueError(
            f"cluster_ports must name exactly the clusters with endpoints in {source} "
            f"{sorted(with_endpoints)}: " + "; ".join(problems)
        )

    sockets = dict(transport_sockets or {})
    unknown = sorted(set(sockets) - {c["name"] for c in clusters})
    if unknown:
        raise ValueError(f"transport_sockets name cluster(s) not in {source}: {unknown}")
    for cluster in clusters:
        name = cluster["name"]
        if name in sockets:
            cluster["transport_socket"] = copy.deepcopy(dict(sockets[name]))
        if name not in with_endpoints:
            continue
        ports = list(cluster_ports[name])
        if not ports:
            raise ValueError(f"cluster_ports[{name!r}] is empty: a cluster needs at least one port")
        if len(set(ports)) != len(ports):
            raise ValueError(f"cluster_ports[{name!r}] repeats a port: {ports}")
        if any(not isinstance(p, int) or isinstance(p, bool) or not 0 < p < 65536 for p in ports):
            raise ValueError(f"cluster_ports[{name!r}] holds an invalid port: {ports}")
        cluster["type"] = "STATIC"
        for field in _DNS_FIELDS:
            cluster.pop(field, None)
        policy = cluster["load_assignment"].get("policy")
        cluster["load_assignment"] = {
            "cluster_name": name,
            **({"policy": policy} if policy else {}),
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _local_address(p)}} for p in ports]}],
        }

    dest.write_text(yaml_text(config))
    return dest


def validate_envoy_config(
    config: Path, *, envoy: Path | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate -c config`; returncode 0 means Envoy accepts it."""
    binary = envoy if envoy is not None else envoy_binary()
    return subprocess.run(
        [str(binary), "--mode", "validate", "-c", str(config), "-l", "warning"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )

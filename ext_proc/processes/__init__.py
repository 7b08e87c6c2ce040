"""Real processes for a local modelguard stack: Envoy, modelguard, and the configs they run on.

Shared by `modelguard demo`, the tests and the benchmarks, so all start, wait for and stop
processes the same way. Everything binds 127.0.0.1 only, every wait is bounded, and every process
started here is stopped by whoever started it (`ManagedProcess.stop`, or a `with` block).

Envoy's config is always rendered from the reference bootstrap `envoy/envoy.yaml`, which the package
ships as `ext_proc/reference/envoy.yaml` (`render_envoy_config`), so the demo and the tests run the
config users copy, from a checkout or an installed wheel alike.

- `locations`: the reference Envoy config, the envoy binary, the modelguard command, the checkout;
- `network`: free ports on 127.0.0.1 and one HTTP/1.1 request;
- `waiting`: `wait_for`, bounded polling;
- `envoy_config`: render and validate Envoy configs;
- `managed`: `ManagedProcess` and its Envoy and modelguard kinds;
- `console`: `say`, the progress lines of the demo and the benchmarks;
- `errors`: `StackError`.

Import the names from here; patch them (in tests) in the module that looks them up.
"""

from __future__ import annotations

from ext_proc.processes.console import say
from ext_proc.processes.envoy_config import EXT_PROC_FILTER, render_envoy_config, validate_envoy_config
from ext_proc.processes.errors import StackError
from ext_proc.processes.locations import envoy_binary, modelguard_command, reference_envoy_config, repo_root
from ext_proc.processes.managed import EnvoyProcess, ManagedProcess, ModelguardProcess
from ext_proc.processes.network import (
    LOCALHOST,
    HttpResult,
    consecutive_free_ports,
    free_ports,
    http_request,
    http_status,
)
from ext_proc.processes.waiting import wait_for

__all__ = [
    "EXT_PROC_FILTER",
    "LOCALHOST",
    "EnvoyProcess",
    "HttpResult",
    "ManagedProcess",
    "ModelguardProcess",
    "StackError",
    "consecutive_free_ports",
    "envoy_binary",
    "free_ports",
    "http_request",
    "http_status",
    "modelguard_command",
    "reference_envoy_config",
    "render_envoy_config",
    "repo_root",
    "say",
    "validate_envoy_config",
    "wait_for",
]

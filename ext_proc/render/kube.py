"""What every rendered Kubernetes object carries."""

from __future__ import annotations

from typing import Any

__all__ = ["metadata"]

_PART_OF = {"app.kubernetes.io/part-of": "modelguard"}


def metadata(name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(_PART_OF)}

"""The admin gRPC API's contract in Python: the messages generated from
``proto/modelguard/admin/v1/admin.proto`` (``python -m ext_proc.api.generate``) and its calls,
bound from the service's descriptor, so that the .proto is the one definition of both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ext_proc.api.modelguard.admin.v1 import admin_pb2

_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
SERVICE_NAME: str = _SERVICE.full_name
"""``modelguard.admin.v1.Admin``."""


@dataclass(frozen=True)
class Call:
    name: str
    path: str
    """``/modelguard.admin.v1.Admin/GetState``."""
    request: Any
    response: Any
    streaming: bool
    """The server answers with a stream (WatchEvents)."""


CALLS: dict[str, Call] = {
    method.name: Call(
        method.name,
        f"/{SERVICE_NAME}/{method.name}",
        getattr(admin_pb2, method.input_type.name),
        getattr(admin_pb2, method.output_type.name),
        method.server_streaming,
    )
    for method in _SERVICE.methods
}

__all__ = ["CALLS", "SERVICE_NAME", "Call", "admin_pb2"]

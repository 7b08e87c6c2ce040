"""The admin gRPC port (``--admin-grpc-address``): the operator API, the standard health service
and server reflection (so ``grpcurl`` lists and calls it without the .proto), plaintext or TLS
as on the ext_proc port. Its own server, so that operators' calls never queue behind Envoy's
streams and the port can be kept to loopback or a management network.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ext_proc.admin.api import AdminApi
from ext_proc.admin.auth import TokenSource
from ext_proc.api import SERVICE_NAME
from ext_proc.server.settings import split_address
from ext_proc.server.tls import TlsFiles, add_port

log = logging.getLogger("modelguard.admin")

MAX_STATE_BYTES = 64 * 1024 * 1024
"""GetState of a 10,000-model policy is a few MB, past gRPC's 4 MB default."""
_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_send_message_length", MAX_STATE_BYTES),
    ("grpc.max_receive_message_length", 64 * 1024),  # requests are a few names
    ("grpc.max_concurrent_streams", 64),
]


@dataclass
class AdminGrpcSettings:
    """What ``serve`` was told about the admin gRPC port."""

    address: str
    tokens: TokenSource
    tls: TlsFiles | None = None
    worker: int = 0
    workers: tuple[str, ...] = field(default_factory=tuple)
    """Every worker's admin gRPC address, under ``--workers``."""


class AdminGrpcServer:
    def __init__(self, api: AdminApi, settings: AdminGrpcSettings) -> None:
        self._api = api
        self._settings = settings
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Bind and serve; the port. OSError if the address cannot be listened on."""
        settings = self._settings
        split_address(settings.address)
        server = grpc.aio.server(options=_OPTIONS)
        server.add_generic_rpc_handlers((self._api.handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        port = add_port(server, settings.address, settings.tls, "the admin gRPC API")
        await server.start()
        self._server = server
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        host, _ = split_address(settings.address)
        if settings.tls is None and settings.tokens.configured and host not in ("127.0.0.1", "::1", "localhost"):
            log.warning(
                "the admin gRPC API listens beyond loopback without TLS: its token crosses the network in clear",
                extra={"event": "admin_grpc_plaintext", "address": settings.address},
            )
        return port

    async def stop(self, grace: float) -> None:
        if self._server is not None:
            await self.health.enter_graceful_shutdown()
            await self._server.stop(grace)
            self._server = None

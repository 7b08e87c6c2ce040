"""``grpc_health_check.v1.health_pb2`` -> ``grpc_health.v1.health_pb2`` (the messages the SDK uses)."""

from grpc_health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

__all__ = ["HealthCheckRequest", "HealthCheckResponse"]

"""``grpc_health_check.v1.health_pb2_grpc`` -> ``grpc_health.v1.health_pb2_grpc`` (what the SDK uses)."""

from grpc_health.v1.health_pb2_grpc import HealthServicer, HealthStub, add_HealthServicer_to_server

__all__ = ["HealthServicer", "HealthStub", "add_HealthServicer_to_server"]

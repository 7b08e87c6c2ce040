"""``grpc_health_check.v1``: grpcio-health-checking's ``grpc_health.v1`` under the name the SDK imports."""

"""Shim for envoy-extproc-sdk 0.1.x: its health module imports ``grpc_health_check.v1``.

No package of that name is published with the standard health service; grpcio-health-checking
ships the same messages and servicer as ``grpc_health.v1``. bench/overhead.py copies this
package into the SDK's own venv (never into modelguard's). See bench/README.md.
"""

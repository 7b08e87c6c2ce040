"""Run envoy-extproc-sdk's do-nothing processor on 127.0.0.1:PORT. Runs in the SDK's own venv.

The SDK's processor that does nothing is its ``BaseExtProcService`` itself (every
``process_<phase>`` hook returns the response unchanged); ``python -m envoy_extproc_sdk`` serves
it. This launcher builds the same server as the SDK's ``create_server`` (a ``grpc.aio`` server,
the SDK's ExternalProcessor servicer and its health service) with two differences:

- it binds 127.0.0.1:PORT, where ``create_server`` binds ``[::]:PORT`` (every interface);
- it registers an *instance* of the SDK's ``HealthService``: ``create_server`` passes the class,
  so every health check fails with a TypeError, and the reference Envoy config health-checks
  its ext_proc cluster.

Everything on the request path is the SDK's code, as published (ddtrace spans, header
extraction, the ``x-ext-procs-applied`` response header). It must run with the SDK venv's
interpreter, with the ``grpc_health_check`` shim installed in that venv (bench/overhead.py does
both); it imports nothing from modelguard.

Usage: <sdk-venv>/bin/python sdk_noop_server.py --port P [--grace S]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import signal
import sys

import grpc


async def serve(port: int, grace: float) -> int:
    sdk = importlib.import_module("envoy_extproc_sdk")
    sdk_health = importlib.import_module("envoy_extproc_sdk.health")
    sdk_envoy = importlib.import_module("envoy_extproc_sdk.util.envoy")
    server = grpc.aio.server()
    sdk_envoy.add_ExternalProcessorServicer_to_server(sdk.BaseExtProcService(), server)
    sdk_health.add_HealthServicer_to_server(sdk_health.HealthService(), server)
    bound = int(server.add_insecure_port(f"127.0.0.1:{port}"))
    if bound == 0:
        print(f"sdk_noop_server: cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        return 1
    await server.start()
    print(json.dumps({"event": "serving", "grpc_port": bound, "sdk": sdk.__name__}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(grace)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grace", type=float, default=1.0)
    args = parser.parse_args(argv)
    return asyncio.run(serve(args.port, args.grace))


if __name__ == "__main__":
    sys.exit(main())

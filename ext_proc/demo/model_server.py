"""A demo model server process: Open Inference Protocol (KServe v2, JSON and binary tensors) and
OpenAI-compatible text endpoints over HTTP, with runtime faults.

The demo needs model servers that behave like real ones when healthy (real inference, standard
protocols, so Envoy and modelguard see ordinary traffic, and the SDKs' defaults work against them)
and that can be made sick on cue, on the same port, without a restart: slow, failing, overloaded,
resetting connections, or hung. The application is `ext_proc.demo.model_app`; its codecs are
`ext_proc.demo.kserve` and `ext_proc.demo.openai_api`; its faults `ext_proc.demo.faults`.

This module must not import NumPy at its top: ``main`` sets the BLAS thread variables first
(the demo runs about ten processes on two cores), and only then imports the models.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ext_proc.demo.faults import Fault, FaultError
from ext_proc.demo.model_app import DEFAULT_MAX_BATCH, DEFAULT_MAX_HANG_S, ModelServer, check_options

if TYPE_CHECKING:
    from ext_proc.demo.models import Model

__all__ = ["Fault", "FaultError", "ModelServer", "RunningModelServer", "main", "start_model_server"]

DEFAULT_PORT = 8000
DEFAULT_SHUTDOWN_TIMEOUT_S = 2.0
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class RunningModelServer:
    server: ModelServer
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        self.server.close()
        await self.runner.cleanup()


async def start_model_server(
    model: Model,
    host_id: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int | None = None,
    base_latency_ms: float = 0.0,
    base_latency_sigma: float = 0.0,
    max_hang_s: float = DEFAULT_MAX_HANG_S,
    max_batch: int = DEFAULT_MAX_BATCH,
    fault: Fault | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
    workers: int = 0,
    queue: int = 0,
) -> RunningModelServer:
    """Serve ``model`` on host:port (0: a free port) in the running event loop."""
    server = ModelServer(
        model,
        host_id,
        seed=seed,
        base_latency_ms=base_latency_ms,
        base_latency_sigma=base_latency_sigma,
        max_hang_s=max_hang_s,
        max_batch=max_batch,
        fault=fault,
        workers=workers,
        queue=queue,
    )
    # handler_cancellation: a client that gives up on a hung or slow request ends it here too,
    # so in_flight/hanging stay true and shutdown does not wait for it.
    runner = web.AppRunner(
        server.app(),
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=False)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple):
            bound = int(address[1])
            break
    return RunningModelServer(server, runner, host, bound)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ext_proc.demo.model_server",
        description=(
            "A demo model server (Open Inference Protocol v2, OpenAI-compatible text) with runtime fault injection."
        ),
    )
    parser.add_argument("--model", default="recommender", help="model name (recommender)")
    parser.add_argument("--variant", default="primary", help="model variant: primary, light or v2 (primary)")
    parser.add_argument("--host-id", help="this host's id, in x-demo-host (MODEL-VARIANT)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"listen port; 0: free ({DEFAULT_PORT})")
    parser.add_argument("--seed", type=int, help="seed of the fault draws (default: from the host id)")
    parser.add_argument(
        "--base-latency-ms", type=float, default=0.0, help="latency added to every answer when healthy (0)"
    )
    parser.add_argument(
        "--base-latency-sigma",
        type=float,
        default=0.0,
        help="> 0: the base latency is lognormal with that sigma around its median (0: fixed)",
    )
    parser.add_argument("--max-hang-s", type=float, default=DEFAULT_MAX_HANG_S, help="cap of a hang (60)")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="largest batch (64)")
    parser.add_argument("--fault", help="initial fault, as the JSON of PUT /admin/fault")
    parser.add_argument(
        "--workers", type=int, default=0, help="inference calls served at once; 0: no limit (0). See demo/capacity.py"
    )
    parser.add_argument("--queue", type=int, default=0, help="calls that may wait for a worker; past it: 429 (0)")
    parser.add_argument("--blas-threads", type=int, default=1, help="BLAS/OpenMP threads, set before NumPy loads (1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.blas_threads < 1:
        parser.error("--blas-threads must be at least 1")
    if args.workers < 0 or args.queue < 0:
        parser.error("--workers and --queue must be 0 or more")
    try:
        check_options(args.base_latency_ms, args.base_latency_sigma, args.max_hang_s, args.max_batch)
    except ValueError as exc:
        parser.error(str(exc))
    # Before the first NumPy import in this process; without effect if NumPy is already loaded.
    for variable in BLAS_THREAD_VARIABLES:
        os.environ[variable] = str(args.blas_threads)
    from ext_proc.demo.models import spec_for, variant_for

    try:
        spec_for(args.model, args.variant)
    except ValueError as exc:
        parser.error(str(exc))
    fault: Fault | None = None
    if args.fault is not None:
        try:
            fault = Fault.parse(json.loads(args.fault))
        except (ValueError, RecursionError) as exc:
            parser.error(f"--fault: {exc}")
    host_id = args.host_id or f"{args.model}-{args.variant}"
    model = variant_for(args.model, args.variant)
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "seed": args.seed,
        "base_latency_ms": args.base_latency_ms,
        "base_latency_sigma": args.base_latency_sigma,
        "max_hang_s": args.max_hang_s,
        "max_batch": args.max_batch,
        "fault": fault,
        "workers": args.workers,
        "queue": args.queue,
    }
    try:
        return asyncio.run(_serve(model, host_id, options, started))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        return 130


async def _serve(model: Model, host_id: str, options: Mapping[str, Any], started: float) -> int:
    try:
        running = await start_model_server(model, host_id, **options)
    except OSError as exc:
        _emit({"event": "model_server_failed", "host_id": host_id, "error": str(exc)}, sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    _emit(
        {
            "event": "model_server_ready",
            "host_id": host_id,
            "model": model.name,
            "variant": model.variant,
            "host": running.host,
            "port": running.port,
            "url": running.url,
            "pid": os.getpid(),
            "seed": running.server.seed,
            "blas_threads": int(os.environ[BLAS_THREAD_VARIABLES[0]]),
            "startup_s": round(time.monotonic() - started, 3),
        },
        sys.stdout,
    )
    await stop.wait()
    await running.stop()
    _emit({"event": "model_server_stopped", "host_id": host_id, "stats": running.server.stats_json()}, sys.stdout)
    return 0


def _emit(entry: Mapping[str, object], stream: Any) -> None:
    print(json.dumps(entry), file=stream, flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""Child processes with their output in a log file: any command, Envoy, and `modelguard serve`.

Every wait is bounded, and every process started here is stopped by whoever started it
(`ManagedProcess.stop`, or a `with` block).
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self
from urllib.parse import quote

from ext_proc.processes.errors import StackError
from ext_proc.processes.locations import envoy_binary, modelguard_command
from ext_proc.processes.network import LOCALHOST, http_request, http_status
from ext_proc.processes.waiting import wait_for

__all__ = ["EnvoyProcess", "ManagedProcess", "ModelguardProcess"]


class ManagedProcess:
    """A child process with stdout and stderr in one log file.

    `stop()` sends SIGTERM, waits up to `grace` seconds, then SIGKILLs: it always returns within
    about grace + 5 s. Usable as a context manager (stops on exit).
    """

    name = "process"

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.started_at = time.monotonic()
        self.ready_after: float | None = None
        self._log: IO[bytes] = log_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=None if env is None else dict(env),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches only the parent
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` s; the exit status (None if it would not die)."""
        try:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        self.proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(timeout=5)
            return self.proc.poll()
        finally:
            self._log.close()

    def log_text(self, limit: int = 20_000) -> str:
        """The last `limit` characters of the log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<cannot read {self.log_path}: {exc}>"
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def describe(self) -> str:
        return (
            f"----- {self.name} (pid {self.proc.pid}, rc {self.proc.poll()}) "
            f"log {self.log_path} -----\n{self.log_text()}"
        )

    def _wait_ready(self, probe: Callable[[], bool], timeout: float, what: str) -> float:
        def ready() -> bool:
            if not self.running():
                raise StackError(f"{self.name} exited before {what}\n{self.describe()}")
            return probe()

        if not wait_for(ready, timeout, interval=0.05):
            raise StackError(f"{self.name} not {what} within {timeout}s\n{self.describe()}")
        self.ready_after = time.monotonic() - self.started_at
        return self.ready_after

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_BASE_IDS = itertools.count(1)


def _unique_base_id() -> int:
    """A hot-restart base id that no other Envoy started by this or another process uses."""
    return (os.getpid() % 100_000) * 1_000 + next(_BASE_IDS) % 1_000


class EnvoyProcess(ManagedProcess):
    """`envoy -c config` with a base id of its own, so several can run side by side."""

    name = "envoy"

    def __init__(
        self,
        config_path: Path,
        *,
        listener_port: int,
        admin_port: int,
        log_path: Path,
        concurrency: int = 1,
        base_id: int | None = None,
        log_level: str = "warning",
        envoy: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.config_path = config_path
        self.listener_port = listener_port
        self.admin_port = admin_port
        self.concurrency = concurrency
        self.base_id = _unique_base_id() if base_id is None else base_id
        binary = envoy if envoy is not None else envoy_binary()
        super().__init__(
            [
                str(binary),
                "-c",
                str(config_path),
                "--base-id",
                str(self.base_id),
                "--concurrency",
                str(concurrency),
                "-l",
                log_level,
                *extra_args,
            ],
            log_path,
        )

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.listener_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOCALHOST}:{self.admin_port}"

    def wait_ready(self, timeout: float = 20.0) -> float:
        """Wait until admin /ready answers LIVE; seconds since launch. StackError otherwise."""

        def live() -> bool:
            try:
                res = http_request(self.admin_url + "/ready", timeout=0.5)
            except (OSError, http.client.HTTPException):
                return False
            return res.status == 200 and res.body.strip() == b"LIVE"

        return self._wait_ready(live, timeout, "LIVE")

    def stats(self, filter_regex: str = "") -> dict[str, int]:
        """Counters and gauges from admin /stats (optionally filtered by a regex); no histograms."""
        path = "/stats"
        if filter_regex:
            path += "?filter=" + quote(filter_regex, safe="")
        res = http_request(self.admin_url + path, timeout=2.0)
        if res.status != 200:
            raise StackError(f"envoy /stats answered {res.status}: {res.body[:200]!r}")
        out: dict[str, int] = {}
        for line in res.body.decode(errors="replace").splitlines():
            name, sep, value = line.partition(": ")
            value = value.strip()
            if sep and value.lstrip("-").isdigit():
                out[name] = int(value)
        return out


class ModelguardProcess(ManagedProcess):
    """`modelguard serve` on 127.0.0.1:grpc_port (ext_proc) and 127.0.0.1:admin_port (HTTP)."""

    name = "modelguard"

    def __init__(
        self,
        policy: Path,
        *,
        grpc_port: int,
        admin_port: int,
        log_path: Path,
        command: Sequence[str] | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.policy = policy
        self.grpc_port = grpc_port
        self.admin_port = admin_port
        argv = [
            *(modelguard_command() if command is None else command),
            "serve",
            "--policy",
            str(policy),
            "--grpc-address",
            f"{LOCALHOST}:{grpc_port}",
            "--admin-address",
            f"{LOCALHOST}:{admin_port}",
            # No operator API unless asked for in extra_args (the last flag wins): the port beside
            # the admin port is not known to be free.
            "--admin-grpc-address",
            "off",
            *extra_args,
        ]
        super().__init__(argv, log_path, env=env)

    @property
    def admin_url(self) -> str:
        return f"http://{LOCALHOST}:{self.admin_port}"

    def ready(self) -> bool:
        """Whether /readyz answers 200 now."""
        return http_status(self.admin_url + "/readyz", timeout=0.5) == 200

    def wait_ready(self, timeout: float = 20.0) -> float:
        """Wait until /readyz answers 200; seconds since launch. StackError otherwise."""
        return self._wait_ready(self.ready, timeout, "ready")

    def state(self) -> dict[str, Any]:
        """/v1/state as JSON. Raises StackError on a non-200 answer, OSError when unreachable."""
        res = http_request(self.admin_url + "/v1/state", timeout=1.0)
        if res.status != 200:
            raise StackError(f"/v1/state answered {res.status}: {res.body[:200]!r}")
        data: dict[str, Any] = res.json()
        return data

    def tier_state(self, model: str, tier: str) -> str | None:
        """The breaker state of one tier (`closed`, `open`, `half_open`), None if unknown."""
        try:
            state = self.state()
        except (OSError, http.client.HTTPException, StackError, ValueError):
            return None
        try:
            return str(state["models"][model]["tiers"][tier]["state"])
        except (KeyError, TypeError):
            return None

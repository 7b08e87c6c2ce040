"""A refused policy's errors as lines, the same whether ``modelguard check`` prints them or a
reload logs them, so that an operator reads one format wherever the refusal shows up."""

from __future__ import annotations

from ext_proc.policy.model import PolicyError


def error_lines(exc: PolicyError) -> list[str]:
    """``FILE: N error(s)``, then each error indented by two spaces, then any omitted count."""
    lines = [f"{exc.source}: {len(exc.errors) + exc.omitted} error(s)"]
    lines.extend(f"  {error}" for error in exc.errors)
    if exc.omitted:
        lines.append(f"  ... and {exc.omitted} more error(s)")
    return lines

"""The one error of the stack helpers."""

from __future__ import annotations

__all__ = ["StackError"]


class StackError(RuntimeError):
    """A piece of the stack is missing, or a process did not start or exited early."""

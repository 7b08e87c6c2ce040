"""What ``modelguard serve`` does on each signal, the same for one server and for the ``--workers`` supervisor.

TERM and INT drain. HUP, USR1 and USR2 are caught only so that they stop being fatal: their
default action ends the process on the spot, and a stray ``kill -HUP`` (a log rotator's habit, a
config-management tool's idea of "reload", a closed terminal) dropped every in-flight stream with
no drain. HUP is kept for reloading the policy, a later change; until then it is logged, so an
operator who expected a reload sees at once that nothing was reloaded. No grpc import here: the
supervisor and the CLI load this before gRPC's runtime flags are settled.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping

DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT)

IGNORED_SIGNALS: Mapping[signal.Signals, str] = {
    signal.SIGHUP: "policy reload is not implemented yet; restart to apply a new policy",
    signal.SIGUSR1: "SIGUSR1 has no meaning to modelguard",
    signal.SIGUSR2: "SIGUSR2 has no meaning to modelguard",
}

ALREADY_DRAINING = "already draining; in-flight streams keep the rest of --grace"


def log_ignored(logger: logging.Logger, signum: int, reason: str) -> None:
    """One JSON line per signal received and not acted on, so that it is never a silent no-op."""
    name = signal.Signals(signum).name
    logger.warning("%s ignored: %s", name, reason, extra={"event": "signal_ignored", "signal": name, "reason": reason})

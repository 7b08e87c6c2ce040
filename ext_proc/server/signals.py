"""What ``modelguard serve`` does on each signal, the same for one server and for the ``--workers`` supervisor.

TERM and INT drain. HUP reloads the policy file (server/reload.py; the ``--workers`` supervisor
passes it to every worker). USR1 and USR2 are caught only so that they stop being fatal: their
default action ends the process on the spot, dropping every in-flight stream with no drain; each
is logged, so that it is never a silent no-op. No grpc import here: the supervisor and the CLI
load this before gRPC's runtime flags are settled.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping
from types import FrameType

DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RELOAD_SIGNAL = signal.SIGHUP

IGNORED_SIGNALS: Mapping[signal.Signals, str] = {
    signal.SIGUSR1: "SIGUSR1 has no meaning to modelguard",
    signal.SIGUSR2: "SIGUSR2 has no meaning to modelguard",
}

ALREADY_DRAINING = "already draining; in-flight streams keep the rest of --grace"
NO_RELOAD_WHILE_DRAINING = "draining: the policy is not reloaded any more"


def log_ignored(logger: logging.Logger, signum: int, reason: str) -> None:
    """One JSON line per signal received and not acted on, so that it is never a silent no-op."""
    name = signal.Signals(signum).name
    logger.warning("%s ignored: %s", name, reason, extra={"event": "signal_ignored", "signal": name, "reason": reason})


class EarlySignals:
    """Notes every signal above from the moment ``modelguard serve`` has read its command line
    until the server (or the supervisor) installs its own handlers and replays them.

    Loading a large policy and importing gRPC take a second or more; without this, a TERM in that
    second killed the process with no log line, and a stray HUP did too, exactly what the
    handlers exist to prevent."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def install(self) -> None:
        for signum in (*DRAIN_SIGNALS, RELOAD_SIGNAL, *IGNORED_SIGNALS):
            signal.signal(signum, self._note)
        # A --workers supervisor starts its workers with HUP blocked (its default action kills);
        # now that it is caught, let it in, including one already pending.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {RELOAD_SIGNAL})

    def _note(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)

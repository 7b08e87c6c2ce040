"""The server's own figures and their families: decision time, protocol errors, policy reloads
and the live policy's hash. Counted by the servicer and the reloader, rendered at scrape time
(observe/exposition.py's MetricSource)."""

from __future__ import annotations

from collections.abc import Iterator

from ext_proc.core.stats import DECISION_BUCKETS, Histogram
from ext_proc.observe.exposition import PREFIX, escape, header, histogram, number

DURATION = PREFIX + "decision_duration_seconds"
ERRORS = PREFIX + "protocol_errors_total"
RELOADS = PREFIX + "policy_reloads_total"
INFO = PREFIX + "policy_info"

SUCCESS, ERROR, UNCHANGED = "success", "error", "unchanged"
RELOAD_RESULTS = (SUCCESS, ERROR, UNCHANGED)
"""``success``: a new policy is live; ``error``: the file was refused, the old policy serves on;
``unchanged``: the file read back the same as the live policy (a touch, a SIGHUP), nothing done."""

_HEADERS = {
    DURATION: header(DURATION, "histogram", "Time inside modelguard to decide a request's tier."),
    ERRORS: header(ERRORS, "counter", "ext_proc messages that broke the protocol, by kind."),
    RELOADS: header(RELOADS, "counter", "Policy reloads, by result (success, error, unchanged)."),
    INFO: header(INFO, "gauge", "1, labelled with the SHA-256 of the live policy file."),
}


class ProtocolErrors:
    """Counts of streams that broke the ext_proc protocol, by kind."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1


class ServerStats:
    """Everything the server counts, and its MetricSource."""

    def __init__(self) -> None:
        self.errors = ProtocolErrors()
        self.decision_duration = Histogram(DECISION_BUCKETS)
        self.reloads: dict[str, int] = dict.fromkeys(RELOAD_RESULTS, 0)
        self.policy_sha256 = ""

    def pieces(self) -> Iterator[str]:
        yield _HEADERS[DURATION] + histogram(DURATION, "", self.decision_duration)
        yield _HEADERS[ERRORS]
        for kind, count in sorted(self.errors.counts.items()):
            yield f'{ERRORS}{{kind="{escape(kind)}"}} {number(count)}\n'
        yield _HEADERS[RELOADS] + "".join(
            f'{RELOADS}{{result="{result}"}} {number(count)}\n' for result, count in self.reloads.items()
        )
        if self.policy_sha256:
            yield _HEADERS[INFO] + f'{INFO}{{sha256="{self.policy_sha256}"}} 1.0\n'

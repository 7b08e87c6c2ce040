"""Which of a model's requests are calls its breakers judge.

A readiness check, a metadata read or a health probe answers 200 while every inference call of
the model fails; judged with the inference calls, two ready checks per call keep a failure rate
of 100% under 0.5 and the breaker never opens. So only inference calls are judged (policy
``calls``, README "Which calls are judged"): an HTTP request whose method is listed and whose
path, as a server acts on it (paths.py, query left off, a trailing slash ignored), ends with a
listed ending; and any gRPC call, whose methods are inference by the protocol's design (health
and reflection are other services, not routed to a model). Every other request of the model is
passed through unjudged: routed as if modelguard were not there, never answered by a tier.
"""

from __future__ import annotations

from collections.abc import Mapping

from ext_proc.policy import Calls
from ext_proc.protocol.headers import CONTENT_TYPE, GRPC_CONTENT_TYPE, METHOD, PATH
from ext_proc.protocol.paths import routed_path

HEADER_NAMES = frozenset({METHOD, PATH, CONTENT_TYPE})
"""The request headers the rule reads."""


class CallRule:
    """The policy's ``calls`` of one model, as a check on a request's headers."""

    __slots__ = ("_endings", "_methods", "judges_all")

    def __init__(self, calls: Calls) -> None:
        self.judges_all = calls.judge == "all"
        self._methods = calls.methods
        self._endings = tuple(sorted(calls.paths))

    def judged(self, headers: Mapping[str, str]) -> bool:
        if self.judges_all:
            return True
        if headers.get(CONTENT_TYPE, "").startswith(GRPC_CONTENT_TYPE):
            return True
        if headers.get(METHOD) not in self._methods:
            return False
        return routed_path(headers.get(PATH, "")).endswith(self._endings)

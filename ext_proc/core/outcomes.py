"""How a response is judged: success, failure, or overload (which is neither)."""

from __future__ import annotations

from ext_proc.policy import FailureSettings
from ext_proc.protocol.grpc_codes import RESOURCE_EXHAUSTED

SUCCESS = "success"
FAILURE = "failure"
OVERLOAD = "overload"
DROPPED = "dropped"
"""A stream that ended before response headers: the client left or Envoy answered locally."""

OUTCOMES = (SUCCESS, FAILURE, OVERLOAD, DROPPED)

LOGGED = "logged"
"""What the admitters are told of an answer whose failed tries Envoy's access log brings
(core/tries.py): a failure for a probe or a canary, but nothing for a closed breaker's window, which
counts each failed try from the log instead, with the host that failed it. Never a counter label:
the tier counts the answer's own outcome."""

TOO_MANY_REQUESTS = 429
NOT_FOUND = 404
"""To a call on the model's own path (``/v2/models/NAME/infer``), the tier does not serve the model
(a server that knows it under another name, or not at all): a failure whatever ``failure.statuses``
lists, or that tier's breaker would stay closed while every call to it fails. To any other call
(``/versions/9/infer``, a path with more between the name and the ending, an OpenAI body's model)
it is the client's: a name or version the client chose, which must not let a client open a breaker
for everyone (``calls.lacks_model``)."""


def classify(status: int, grpc_status: int | None, failure: FailureSettings, lacks_model: bool = False) -> str:
    """Judge a response by its HTTP status and, for trailers-only gRPC, its grpc-status.

    429 and RESOURCE_EXHAUSTED mean "slow down", not "broken": they count as overload, so a
    model server shedding load does not trip its own breaker, unless the policy lists them.
    ``lacks_model``: a 404 that says the tier does not serve the model (NOT_FOUND).
    """
    if status in failure.statuses or lacks_model:
        return FAILURE
    if grpc_status is not None and grpc_status in failure.grpc_statuses:
        return FAILURE
    if status == TOO_MANY_REQUESTS or grpc_status == RESOURCE_EXHAUSTED:
        return OVERLOAD
    return SUCCESS

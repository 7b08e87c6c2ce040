"""Which of a model's requests are calls its breakers judge.

A readiness check, a metadata read or a health probe answers 200 while every inference call of
the model fails; judged with the inference calls, two ready checks per call keep a failure rate
of 100% under 0.5 and the breaker never opens. So only inference calls are judged (policy
``calls``, README "Which calls are judged"): an HTTP request whose method is listed and whose
path, as a server acts on it (paths.py, query left off, a trailing slash ignored), ends with a
listed ending; and any gRPC call (a POST of ``application/grpc``) but the methods that only ask
about the server or the model (``GRPC_NOT_INFERENCE``: KServe v2's ``ServerReady``, ``ModelReady``,
``ModelMetadata`` ..., health checks, reflection). Every other request of the model is passed
through unjudged: routed as if modelguard were not there, never answered by a tier.
"""

from __future__ import annotations

from collections.abc import Mapping

from ext_proc.policy import Calls
from ext_proc.protocol.headers import CONTENT_TYPE, GRPC_CONTENT_TYPE, METHOD, PATH
from ext_proc.protocol.paths import named_model, needs_normalizing, routed_path

HEADER_NAMES = frozenset({METHOD, PATH, CONTENT_TYPE})
"""The request headers the rule reads."""

GRPC_NOT_INFERENCE = frozenset(
    {
        # KServe v2 / Triton (inference.GRPCInferenceService)
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelConfig",
        "ModelStatistics",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
        "SystemSharedMemoryStatus",
        "SystemSharedMemoryRegister",
        "SystemSharedMemoryUnregister",
        "CudaSharedMemoryStatus",
        "CudaSharedMemoryRegister",
        "CudaSharedMemoryUnregister",
        "TraceSetting",
        "LogSettings",
        # TensorFlow Serving (tensorflow.serving.ModelService, PredictionService)
        "GetModelStatus",
        "GetModelMetadata",
        "HandleReloadConfigRequest",
        # grpc.health.v1.Health, grpc.reflection
        "Check",
        "Watch",
        "ServerReflectionInfo",
    }
)
"""gRPC method names (the path's last segment) that are not inference calls."""
GRPC_MARK_LENGTH = len(GRPC_CONTENT_TYPE)


class CallRule:
    """The policy's ``calls`` of one model, as a check on a request's headers."""

    __slots__ = ("_endings", "_literal", "_methods", "judges_all")

    def __init__(self, calls: Calls) -> None:
        self.judges_all = calls.judge == "all"
        self._methods = calls.methods
        self._endings = tuple(sorted(calls.paths))
        self._literal = all(literal_ending(ending) for ending in self._endings)
        """Every ending survives normalization as written: a path that ends with one and has no
        query is judged without normalizing it (``literal_ending``)."""

    def judged(self, headers: Mapping[str, str]) -> bool:
        if self.judges_all:
            return True
        content_type = headers.get(CONTENT_TYPE)
        if content_type and content_type[:GRPC_MARK_LENGTH].lower() == GRPC_CONTENT_TYPE:
            return headers.get(METHOD) == "POST" and _grpc_method(headers.get(PATH, "")) not in GRPC_NOT_INFERENCE
        if headers.get(METHOD) not in self._methods:
            return False
        path = headers.get(PATH, "")
        if self._literal and path.endswith(self._endings) and path[:1] == "/" and "?" not in path and "#" not in path:
            return True
        return routed_path(path).endswith(self._endings)


def own_call_paths(path_prefix: str | None, calls: Calls) -> frozenset[str]:
    """The paths of a model's calls that name the model and then the call (``/v2/models/NAME/infer``,
    ``/v1/models/NAME:predict``): the model's path prefix and an ending of one segment (an API path
    such as ``/v1/chat/completions`` after a model's name is one no server has). None when the path
    does not name the model (a header match, an OpenAI body's model)."""
    if path_prefix is None or named_model(path_prefix) is None:
        return frozenset()
    return frozenset(path_prefix + ending for ending in calls.paths if "/" not in ending[1:])


def lacks_model(own_paths: frozenset[str], headers: Mapping[str, str]) -> bool:
    """Whether a 404 to this call says the tier does not serve the model (core/outcomes.py NOT_FOUND):
    only on one of the model's own paths, which a server of the model answers. Any other 404 (a
    version, a model name, a path the client made up) is the client's, or a client could open the
    breaker for everyone with calls it knows will 404."""
    return bool(own_paths) and routed_path(headers.get(PATH, "")) in own_paths


def literal_ending(ending: str) -> bool:
    """Whether every query-less absolute path that ends with ``ending`` as written still ends with
    it as a server routes it. True for an ending with nothing to normalize in it and no trailing slash:
    it begins with '/' or ':', so no escape reaches into it; merged slashes and dot segments
    before it leave it whole, and none is after it."""
    return not needs_normalizing(ending) and not ending.endswith("/")


def _grpc_method(path: str) -> str:
    """The method name of a gRPC path (``/package.Service/Method``), as a server dispatches it."""
    return routed_path(path).rpartition("/")[2]

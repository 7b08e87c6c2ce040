import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Force(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FORCE_UNSPECIFIED: _ClassVar[Force]
    AUTO: _ClassVar[Force]
    FORCED_OPEN: _ClassVar[Force]
    FORCED_CLOSED: _ClassVar[Force]
FORCE_UNSPECIFIED: Force
AUTO: Force
FORCED_OPEN: Force
FORCED_CLOSED: Force

class GetStateRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetStateResponse(_message.Message):
    __slots__ = ("policy_sha256", "models", "unmatched_requests", "worker", "workers", "dormant")
    POLICY_SHA256_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    UNMATCHED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    DORMANT_FIELD_NUMBER: _ClassVar[int]
    policy_sha256: str
    models: _containers.RepeatedCompositeFieldContainer[ModelState]
    unmatched_requests: int
    worker: int
    workers: _containers.RepeatedScalarFieldContainer[str]
    dormant: _containers.RepeatedCompositeFieldContainer[StoredOrder]
    def __init__(self, policy_sha256: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelState, _Mapping]]] = ..., unmatched_requests: _Optional[int] = ..., worker: _Optional[int] = ..., workers: _Optional[_Iterable[str]] = ..., dormant: _Optional[_Iterable[_Union[StoredOrder, _Mapping]]] = ...) -> None: ...

class ModelState(_message.Message):
    __slots__ = ("name", "tiers", "canary")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    name: str
    tiers: _containers.RepeatedCompositeFieldContainer[TierState]
    canary: CanaryState
    def __init__(self, name: _Optional[str] = ..., tiers: _Optional[_Iterable[_Union[TierState, _Mapping]]] = ..., canary: _Optional[_Union[CanaryState, _Mapping]] = ...) -> None: ...

class CanaryState(_message.Message):
    __slots__ = ("route", "state", "weight", "since", "order", "canary", "stable", "tests", "min_calls", "breaker_state")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    MIN_CALLS_FIELD_NUMBER: _ClassVar[int]
    BREAKER_STATE_FIELD_NUMBER: _ClassVar[int]
    route: str
    state: str
    weight: float
    since: _timestamp_pb2.Timestamp
    order: CanaryOrder
    canary: ArmFigures
    stable: ArmFigures
    tests: _containers.RepeatedCompositeFieldContainer[CanaryTest]
    min_calls: int
    breaker_state: str
    def __init__(self, route: _Optional[str] = ..., state: _Optional[str] = ..., weight: _Optional[float] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., order: _Optional[_Union[CanaryOrder, _Mapping]] = ..., canary: _Optional[_Union[ArmFigures, _Mapping]] = ..., stable: _Optional[_Union[ArmFigures, _Mapping]] = ..., tests: _Optional[_Iterable[_Union[CanaryTest, _Mapping]]] = ..., min_calls: _Optional[int] = ..., breaker_state: _Optional[str] = ...) -> None: ...

class ArmFigures(_message.Message):
    __slots__ = ("calls", "failures", "failure_rate", "slow", "slow_after_seconds", "failure_rate_bound", "latency_p95_seconds")
    CALLS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    FAILURE_RATE_FIELD_NUMBER: _ClassVar[int]
    SLOW_FIELD_NUMBER: _ClassVar[int]
    SLOW_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_RATE_BOUND_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_SECONDS_FIELD_NUMBER: _ClassVar[int]
    calls: int
    failures: int
    failure_rate: float
    slow: int
    slow_after_seconds: float
    failure_rate_bound: float
    latency_p95_seconds: float
    def __init__(self, calls: _Optional[int] = ..., failures: _Optional[int] = ..., failure_rate: _Optional[float] = ..., slow: _Optional[int] = ..., slow_after_seconds: _Optional[float] = ..., failure_rate_bound: _Optional[float] = ..., latency_p95_seconds: _Optional[float] = ...) -> None: ...

class CanaryTest(_message.Message):
    __slots__ = ("name", "statistic", "boundary", "null_rate")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    BOUNDARY_FIELD_NUMBER: _ClassVar[int]
    NULL_RATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    statistic: float
    boundary: float
    null_rate: float
    def __init__(self, name: _Optional[str] = ..., statistic: _Optional[float] = ..., boundary: _Optional[float] = ..., null_rate: _Optional[float] = ...) -> None: ...

class CanaryOrder(_message.Message):
    __slots__ = ("action", "route", "weight", "reason", "caller", "since")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    action: str
    route: str
    weight: float
    reason: str
    caller: str
    since: _timestamp_pb2.Timestamp
    def __init__(self, action: _Optional[str] = ..., route: _Optional[str] = ..., weight: _Optional[float] = ..., reason: _Optional[str] = ..., caller: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetCanaryRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetCanaryResponse(_message.Message):
    __slots__ = ("canaries", "worker", "workers")
    CANARIES_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    canaries: _containers.RepeatedCompositeFieldContainer[ModelCanary]
    worker: int
    workers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, canaries: _Optional[_Iterable[_Union[ModelCanary, _Mapping]]] = ..., worker: _Optional[int] = ..., workers: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelCanary(_message.Message):
    __slots__ = ("model", "canary")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    model: str
    canary: CanaryState
    def __init__(self, model: _Optional[str] = ..., canary: _Optional[_Union[CanaryState, _Mapping]] = ...) -> None: ...

class CanaryOrderRequest(_message.Message):
    __slots__ = ("model", "reason", "caller", "weight")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    model: str
    reason: str
    caller: str
    weight: float
    def __init__(self, model: _Optional[str] = ..., reason: _Optional[str] = ..., caller: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class CanaryOrderResponse(_message.Message):
    __slots__ = ("canary", "previous_state", "warning")
    CANARY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    canary: ModelCanary
    previous_state: str
    warning: str
    def __init__(self, canary: _Optional[_Union[ModelCanary, _Mapping]] = ..., previous_state: _Optional[str] = ..., warning: _Optional[str] = ...) -> None: ...

class TierState(_message.Message):
    __slots__ = ("name", "route", "respond", "state", "breaker_state", "window", "forced", "would_open", "inflight", "outcomes", "consecutive_failures", "open_remaining", "probes_in_flight")
    class OutcomesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    RESPOND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BREAKER_STATE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    WOULD_OPEN_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    OPEN_REMAINING_FIELD_NUMBER: _ClassVar[int]
    PROBES_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    route: str
    respond: bool
    state: str
    breaker_state: str
    window: Window
    forced: ForcedState
    would_open: str
    inflight: int
    outcomes: _containers.ScalarMap[str, int]
    consecutive_failures: int
    open_remaining: _duration_pb2.Duration
    probes_in_flight: int
    def __init__(self, name: _Optional[str] = ..., route: _Optional[str] = ..., respond: _Optional[bool] = ..., state: _Optional[str] = ..., breaker_state: _Optional[str] = ..., window: _Optional[_Union[Window, _Mapping]] = ..., forced: _Optional[_Union[ForcedState, _Mapping]] = ..., would_open: _Optional[str] = ..., inflight: _Optional[int] = ..., outcomes: _Optional[_Mapping[str, int]] = ..., consecutive_failures: _Optional[int] = ..., open_remaining: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., probes_in_flight: _Optional[int] = ...) -> None: ...

class Window(_message.Message):
    __slots__ = ("calls", "failures", "slow", "overloaded", "failure_rate", "slow_rate")
    CALLS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    SLOW_FIELD_NUMBER: _ClassVar[int]
    OVERLOADED_FIELD_NUMBER: _ClassVar[int]
    FAILURE_RATE_FIELD_NUMBER: _ClassVar[int]
    SLOW_RATE_FIELD_NUMBER: _ClassVar[int]
    calls: int
    failures: int
    slow: int
    overloaded: int
    failure_rate: float
    slow_rate: float
    def __init__(self, calls: _Optional[int] = ..., failures: _Optional[int] = ..., slow: _Optional[int] = ..., overloaded: _Optional[int] = ..., failure_rate: _Optional[float] = ..., slow_rate: _Optional[float] = ...) -> None: ...

class ForcedState(_message.Message):
    __slots__ = ("mode", "reason", "caller", "since", "until")
    MODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    mode: Force
    reason: str
    caller: str
    since: _timestamp_pb2.Timestamp
    until: _timestamp_pb2.Timestamp
    def __init__(self, mode: _Optional[_Union[Force, str]] = ..., reason: _Optional[str] = ..., caller: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StoredOrder(_message.Message):
    __slots__ = ("model", "tier", "forced")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    model: str
    tier: str
    forced: ForcedState
    def __init__(self, model: _Optional[str] = ..., tier: _Optional[str] = ..., forced: _Optional[_Union[ForcedState, _Mapping]] = ...) -> None: ...

class ForceStateRequest(_message.Message):
    __slots__ = ("model", "tier", "mode", "reason", "duration", "caller")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    model: str
    tier: str
    mode: Force
    reason: str
    duration: _duration_pb2.Duration
    caller: str
    def __init__(self, model: _Optional[str] = ..., tier: _Optional[str] = ..., mode: _Optional[_Union[Force, str]] = ..., reason: _Optional[str] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., caller: _Optional[str] = ...) -> None: ...

class ForceStateResponse(_message.Message):
    __slots__ = ("tier", "previous_state", "warning")
    TIER_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    tier: TierState
    previous_state: str
    warning: str
    def __init__(self, tier: _Optional[_Union[TierState, _Mapping]] = ..., previous_state: _Optional[str] = ..., warning: _Optional[str] = ...) -> None: ...

class ResetBreakerRequest(_message.Message):
    __slots__ = ("model", "tier", "caller")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    model: str
    tier: str
    caller: str
    def __init__(self, model: _Optional[str] = ..., tier: _Optional[str] = ..., caller: _Optional[str] = ...) -> None: ...

class ResetBreakerResponse(_message.Message):
    __slots__ = ("tier",)
    TIER_FIELD_NUMBER: _ClassVar[int]
    tier: TierState
    def __init__(self, tier: _Optional[_Union[TierState, _Mapping]] = ...) -> None: ...

class ReloadPolicyRequest(_message.Message):
    __slots__ = ("caller",)
    CALLER_FIELD_NUMBER: _ClassVar[int]
    caller: str
    def __init__(self, caller: _Optional[str] = ...) -> None: ...

class ReloadPolicyResponse(_message.Message):
    __slots__ = ("result", "policy_sha256", "errors")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    POLICY_SHA256_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    result: str
    policy_sha256: str
    errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, result: _Optional[str] = ..., policy_sha256: _Optional[str] = ..., errors: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Event(_message.Message):
    __slots__ = ("time", "worker", "breaker_transition", "forced_state_change", "policy_reload", "canary_change")
    TIME_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    BREAKER_TRANSITION_FIELD_NUMBER: _ClassVar[int]
    FORCED_STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    POLICY_RELOAD_FIELD_NUMBER: _ClassVar[int]
    CANARY_CHANGE_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    worker: int
    breaker_transition: BreakerTransition
    forced_state_change: ForcedStateChange
    policy_reload: PolicyReload
    canary_change: CanaryChange
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., worker: _Optional[int] = ..., breaker_transition: _Optional[_Union[BreakerTransition, _Mapping]] = ..., forced_state_change: _Optional[_Union[ForcedStateChange, _Mapping]] = ..., policy_reload: _Optional[_Union[PolicyReload, _Mapping]] = ..., canary_change: _Optional[_Union[CanaryChange, _Mapping]] = ...) -> None: ...

class BreakerTransition(_message.Message):
    __slots__ = ("model", "tier", "from_state", "to_state", "cause", "window")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    model: str
    tier: str
    from_state: str
    to_state: str
    cause: str
    window: Window
    def __init__(self, model: _Optional[str] = ..., tier: _Optional[str] = ..., from_state: _Optional[str] = ..., to_state: _Optional[str] = ..., cause: _Optional[str] = ..., window: _Optional[_Union[Window, _Mapping]] = ...) -> None: ...

class ForcedStateChange(_message.Message):
    __slots__ = ("model", "tier", "from_state", "to_state", "forced", "ended_by")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    ENDED_BY_FIELD_NUMBER: _ClassVar[int]
    model: str
    tier: str
    from_state: str
    to_state: str
    forced: ForcedState
    ended_by: str
    def __init__(self, model: _Optional[str] = ..., tier: _Optional[str] = ..., from_state: _Optional[str] = ..., to_state: _Optional[str] = ..., forced: _Optional[_Union[ForcedState, _Mapping]] = ..., ended_by: _Optional[str] = ...) -> None: ...

class CanaryChange(_message.Message):
    __slots__ = ("model", "route", "from_state", "to_state", "from_weight", "to_weight", "cause", "caller", "canary")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    FROM_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TO_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    model: str
    route: str
    from_state: str
    to_state: str
    from_weight: float
    to_weight: float
    cause: str
    caller: str
    canary: CanaryState
    def __init__(self, model: _Optional[str] = ..., route: _Optional[str] = ..., from_state: _Optional[str] = ..., to_state: _Optional[str] = ..., from_weight: _Optional[float] = ..., to_weight: _Optional[float] = ..., cause: _Optional[str] = ..., caller: _Optional[str] = ..., canary: _Optional[_Union[CanaryState, _Mapping]] = ...) -> None: ...

class PolicyReload(_message.Message):
    __slots__ = ("result", "trigger", "policy_sha256", "errors")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    POLICY_SHA256_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    result: str
    trigger: str
    policy_sha256: str
    errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, result: _Optional[str] = ..., trigger: _Optional[str] = ..., policy_sha256: _Optional[str] = ..., errors: _Optional[_Iterable[str]] = ...) -> None: ...

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
    __slots__ = ("name", "tiers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    tiers: _containers.RepeatedCompositeFieldContainer[TierState]
    def __init__(self, name: _Optional[str] = ..., tiers: _Optional[_Iterable[_Union[TierState, _Mapping]]] = ...) -> None: ...

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
    __slots__ = ("time", "worker", "breaker_transition", "forced_state_change", "policy_reload")
    TIME_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    BREAKER_TRANSITION_FIELD_NUMBER: _ClassVar[int]
    FORCED_STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    POLICY_RELOAD_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    worker: int
    breaker_transition: BreakerTransition
    forced_state_change: ForcedStateChange
    policy_reload: PolicyReload
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., worker: _Optional[int] = ..., breaker_transition: _Optional[_Union[BreakerTransition, _Mapping]] = ..., forced_state_change: _Optional[_Union[ForcedStateChange, _Mapping]] = ..., policy_reload: _Optional[_Union[PolicyReload, _Mapping]] = ...) -> None: ...

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

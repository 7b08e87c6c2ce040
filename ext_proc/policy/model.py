"""The policy's typed model: what the rest of modelguard reads, frozen once validated.

The defaults here are the documented defaults (README, "Policy file"); the reader fills every
field from the file or from ``defaults:``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ext_proc.protocol.grpc_codes import GRPC_STATUS_CODES

RESERVED_LABELS = frozenset({"unmatched", "none"})


class PolicyError(Exception):
    """A policy that failed validation; ``errors`` holds every problem as ``path: message``.

    ``omitted`` counts the errors past MAX_ERRORS that were found but not kept."""

    def __init__(self, errors: list[str], source: str = "policy", omitted: int = 0) -> None:
        self.errors = errors
        self.source = source
        self.omitted = omitted
        more = f"\n... and {omitted} more error(s)" if omitted else ""
        super().__init__(f"{source}: {len(errors) + omitted} error(s)\n" + "\n".join(errors) + more)


@dataclass(frozen=True, slots=True)
class Match:
    """How a request is recognised as a model's; exactly one field is set."""

    path_prefix: str | None = None
    authority: str | None = None
    header_name: str | None = None
    header_value: str | None = None
    body_model: str | None = None
    """The ``model`` of an OpenAI-style JSON body (README, "The model from the request body")."""


@dataclass(frozen=True, slots=True)
class Respond:
    """A direct answer from Envoy (ImmediateResponse), for the last rung of the ladder."""

    status: int = 503
    content_type: str = "application/json"
    body: str = ""
    grpc_status: int = GRPC_STATUS_CODES["UNAVAILABLE"]


@dataclass(frozen=True, slots=True)
class AdaptiveLimit:
    """A gradient concurrency limit (core/overload/gradient.py; README, "Concurrency limits")."""

    initial: int = 20
    min: int = 4
    """The limit never goes below this: the tier always takes this many calls at once."""
    max: int = 1000
    tolerance: float = 1.5
    """Latency may reach this multiple of the baseline before the limit shrinks."""
    smoothing: float = 0.2
    """Share of each window's proposed limit taken: lower is steadier and slower."""
    window: float = 0.1
    """Seconds of answers a latency sample averages (at least ``min_samples`` answers)."""
    min_samples: int = 10
    baseline_windows: int = 600
    """Windows the baseline's moving average spans (600 x 100 ms: about a minute)."""


@dataclass(frozen=True, slots=True)
class Limit:
    """A tier's concurrency limit: a static ``max_inflight``, an adaptive limit, or both (the static
    one then caps the adaptive one)."""

    max_inflight: int | None = None
    adaptive: AdaptiveLimit | None = None


@dataclass(frozen=True, slots=True)
class LoadSignal:
    """A tier's model servers' own load, scraped off the request path (server/load_signals.py;
    README, "Backend load signals")."""

    urls: tuple[str, ...] = ()
    metric: str = ""
    """A gauge of the Prometheus text at each URL (its samples summed per URL), e.g. vLLM's
    ``vllm:num_requests_waiting``."""
    max: float = 0.0
    """Over this, on any one URL, the tier is overloaded."""
    interval: float = 0.5
    timeout: float = 0.5
    stale_after: float = 2.0
    """A URL's figure older than this is unknown, and unknown never holds traffic back."""


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    route: str | None = None
    respond: Respond | None = None
    model: str | None = None
    """The name the tier's servers know the model by, when it is not the one in the request's path:
    rendered routes rewrite the path's model segment to it (render/plan.py). Routed tiers only."""
    limit: Limit | None = None
    """Calls the tier takes at once (core/overload/); None: no limit. Routed tiers only."""
    deadline: float | None = None
    """Set as Envoy's ``x-envoy-upstream-rq-timeout-ms`` when retries are held back (README,
    "Retry-storm control"); None: the route's own timeout."""
    load_signal: LoadSignal | None = None
    """The tier's servers' queue, scraped (None: not scraped)."""


CRITICAL = "critical"
STANDARD = "standard"
SHEDDABLE = "sheddable"
CRITICALITIES = (CRITICAL, STANDARD, SHEDDABLE)
"""The values of ``x-request-criticality``, most important first (README, "Shedding")."""


@dataclass(frozen=True, slots=True)
class Overload:
    """How a model's requests are treated over a tier's limit (README, "Shedding")."""

    header: str = "x-request-criticality"
    default: str = STANDARD
    """The criticality of a request without the header, or with a value not honoured."""
    honoured: frozenset[str] = frozenset({STANDARD, SHEDDABLE})
    """Values taken from the request as they are. ``critical`` is not by default: any client could
    send it; list it where the mesh sets or checks the header (README, "Shedding")."""
    sheddable_share: float = 0.8
    """Sheddable requests are admitted while the tier's calls in flight are under this share of its
    limit, so they are shed before standard ones step down."""
    critical_share: float = 1.25
    """Critical requests are admitted up to this multiple of the limit before they step down."""
    retry_after: int = 1
    """Seconds in the Retry-After of a shed request."""
    hold_retries: bool = True
    """Set ``x-envoy-max-retries: 0`` on requests to a tier that is half-open, over its limit or
    serving degraded traffic (README, "Retry-storm control")."""
    pushback_share: float = 0.5
    """A tier whose answers in its breaker's window are at least this share of 429 /
    RESOURCE_EXHAUSTED (and at least ``pushback_min`` of them) is overloaded: its requests but the
    critical ones step down for the time its last such answer's Retry-After says. Half by default:
    a server also answers 429 to one client over its own quota, and that client must not be able to
    step everyone down."""
    pushback_min: int = 5
    max_pushback: float = 30.0
    """The longest a Retry-After is honoured for, seconds (1 when the answer has none)."""


@dataclass(frozen=True, slots=True)
class AutoSlow:
    """``slow_call_duration: auto``: the threshold learnt from the tier's own latency
    (core/slowness.py; README, "A learnt slow-call threshold")."""

    initial: float = 10.0
    """The threshold until ``min_calls`` calls are learnt."""
    factor: float = 3.0
    quantile: float = 0.99
    floor: float = 0.05
    ceiling: float = 60.0
    calls: int = 1000
    """Calls a window of the latency sketch holds: the baseline is over the last one to two windows."""
    min_calls: int = 200


LEARNT = -1.0
"""What the table reads ``slow_call_duration: auto`` as, before the reader turns it into the
``slow_call_auto`` settings and their initial value (never seen past the reader)."""


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """Thresholds of one breaker; the README documents each default."""

    window: float | None = 10.0
    window_calls: int | None = None
    min_calls: int = 20
    failure_rate: float = 0.5
    slow_call_duration: float = 10.0
    slow_call_rate: float = 1.0
    consecutive_failures: int = 5
    open_duration: float = 5.0
    max_open_duration: float = 60.0
    half_open_probes: int = 3
    jitter: float = 0.1
    max_probe_duration: float = 10.0
    """A probe held longer than this counts as a slow failure; the reader defaults it to
    slow_call_duration."""
    min_failing_hosts: int = 2
    """Hosts a verdict's evidence must come from, or every host seen if fewer (core/hosts.py)."""
    slow_call_auto: AutoSlow | None = None
    """Set: ``slow_call_duration`` is learnt, starting from its ``initial`` (the reader sets
    ``slow_call_duration`` to it)."""


@dataclass(frozen=True, slots=True)
class FailureSettings:
    """Which responses count as failures. 429 and RESOURCE_EXHAUSTED count as overload unless
    listed here explicitly."""

    statuses: frozenset[int] = field(default_factory=lambda: frozenset(range(500, 600)))
    grpc_statuses: frozenset[int] = field(
        default_factory=lambda: frozenset(
            GRPC_STATUS_CODES[name] for name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL")
        )
    )


INFERENCE_PATHS = frozenset(
    {
        "/infer",  # KServe v2 / Triton: /v2/models/NAME[/versions/N]/infer
        "/generate",  # the v2 generate extension (Triton, LLM servers)
        "/generate_stream",
        ":predict",  # KServe v1 (TensorFlow Serving's REST): /v1/models/NAME:predict
        "/v1/chat/completions",  # OpenAI-compatible servers (vLLM, TGI, ...)
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/invocations",  # SageMaker-style model servers (MLflow, TorchServe's SageMaker mode)
    }
)
"""Path endings of inference calls by default (README, "Which calls are judged")."""


@dataclass(frozen=True, slots=True)
class Calls:
    """Which of a model's requests are calls its breakers judge: readiness, metadata and health
    checks answer 200 while every inference fails, so judging them would hide a broken model."""

    judge: str = "inference"
    """``inference``: only calls matching ``methods`` and ``paths`` (and gRPC calls); ``all``: every
    request of the model, as before calls were told apart."""
    methods: frozenset[str] = frozenset({"POST"})
    paths: frozenset[str] = INFERENCE_PATHS
    """Endings of the normalized path (query left off) of an HTTP inference call; any gRPC call
    is one."""


BUCKETS = 10_000
"""A canary weight's resolution: sticky keys hash into this many buckets (0.01% each)."""


@dataclass(frozen=True, slots=True)
class Guardrails:
    """When a canary is aborted (README, "Canary gating", says how each is tested)."""

    min_calls: int = 20
    max_failure_rate: float = 0.10
    max_failure_rate_increase: float = 0.05
    max_latency_ratio: float = 1.5
    max_harm: int = 20
    confidence: float = 0.99


@dataclass(frozen=True, slots=True)
class Ramp:
    """Raise the weight by ``step`` every ``every`` seconds while healthy, up to ``max`` (buckets)."""

    step: int = 500
    every: float = 60.0
    max: int = 5000


@dataclass(frozen=True, slots=True)
class Exclude:
    """Requests whose ``header`` has one of ``values`` never go to the canary."""

    header: str = "x-request-criticality"
    values: frozenset[str] = frozenset({"critical"})


@dataclass(frozen=True, slots=True)
class Canary:
    """A new version of the model, served at its first tier to a sticky share of keys."""

    route: str = ""
    weight: int = 500
    """Buckets out of BUCKETS (500: 5%)."""
    sticky_header: str = "x-request-id"
    exclude: Exclude | None = None
    guardrails: Guardrails = field(default_factory=Guardrails)
    ramp: Ramp | None = None


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    name: str
    match: Match
    tiers: tuple[Tier, ...]
    breaker: BreakerSettings
    failure: FailureSettings
    canary: Canary | None = None
    calls: Calls = field(default_factory=Calls)
    protocol: str = "auto"
    """The HTTP protocol of the answers modelguard gives itself (protocol/answers.py): ``auto`` (by
    the request's path), ``kserve`` or ``openai``; gRPC clients always get a status."""
    overload: Overload = field(default_factory=Overload)


@dataclass(frozen=True, slots=True)
class Policy:
    models: tuple[ModelPolicy, ...]

    def model(self, name: str) -> ModelPolicy:
        for model in self.models:
            if model.name == name:
                return model
        raise KeyError(name)

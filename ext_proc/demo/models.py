"""Small, real NumPy models for the demo's model servers.

The demo needs two variants of one model whose cost really differs, so that moving traffic from
the heavier one to the lighter one is visible in CPU time and latency (plus a new version of the
heavier one, for the canary), and whose answers are real
(deterministic, valid probabilities), so that a degraded answer is still an answer. The weights are
random but come from a fixed seed: every process that builds a variant holds the same model, and
the same input batch always gives the same scores.

BLAS threads: the demo runs about ten processes on two cores, and a multi-threaded BLAS in each
of them would only fight over the cores. `ext_proc.demo.model_server.main` sets
``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` (to ``--blas-threads``,
default 1) before NumPy is first imported; this module imports NumPy at its top, so whoever imports
it first in a process decides the thread count.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ModelSpec:
    """What a variant is; the weights follow from it (the seed makes them reproducible)."""

    name: str
    variant: str
    input_size: int
    hidden: tuple[int, ...]
    output_size: int
    seed: int

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (self.input_size, *self.hidden, self.output_size)


class Model:
    """A multi-layer perceptron: ReLU hidden layers, softmax scores.

    ``predict`` reads the weights and never writes them (they are read-only arrays), so one
    instance can serve concurrent requests and two instances from one spec answer alike.
    """

    def __init__(
        self,
        name: str,
        variant: str,
        input_size: int,
        hidden: Sequence[int],
        output_size: int,
        seed: int,
    ) -> None:
        if input_size < 1 or output_size < 1 or any(size < 1 for size in hidden):
            raise ValueError("layer sizes must be positive")
        self.spec = ModelSpec(name, variant, input_size, tuple(hidden), output_size, seed)
        rng = np.random.default_rng(seed)
        self._weights: list[FloatArray] = []
        self._biases: list[FloatArray] = []
        sizes = self.spec.layer_sizes
        for fan_in, fan_out in itertools.pairwise(sizes):
            # He initialisation keeps activations in a sane range through the ReLU stack, so the
            # softmax neither saturates to one-hot nor flattens to uniform.
            weight = rng.standard_normal((fan_in, fan_out), dtype=np.float32)
            weight *= np.float32(np.sqrt(2.0 / fan_in))
            bias = rng.standard_normal(fan_out, dtype=np.float32)
            bias *= np.float32(0.01)
            weight.flags.writeable = False
            bias.flags.writeable = False
            self._weights.append(weight)
            self._biases.append(bias)

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> Model:
        return cls(spec.name, spec.variant, spec.input_size, spec.hidden, spec.output_size, spec.seed)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def variant(self) -> str:
        return self.spec.variant

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @property
    def output_size(self) -> int:
        return self.spec.output_size

    @property
    def parameter_count(self) -> int:
        return sum(w.size + b.size for w, b in zip(self._weights, self._biases, strict=True))

    @property
    def flops_per_row(self) -> int:
        """Multiply-adds count as two; bias and ReLU as one each (softmax left out: it is the same
        for every variant with the same output size)."""
        sizes = self.spec.layer_sizes
        return sum(2 * fan_in * fan_out + 2 * fan_out for fan_in, fan_out in itertools.pairwise(sizes))

    def predict(self, batch: npt.ArrayLike) -> FloatArray:
        """Scores for a batch of shape (B, input_size): shape (B, output_size), rows sum to 1."""
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"expected a batch of shape [B, {self.input_size}], got {list(x.shape)}")
        last = len(self._weights) - 1
        for index, (weight, bias) in enumerate(zip(self._weights, self._biases, strict=True)):
            x = x @ weight + bias
            if index != last:
                np.maximum(x, 0.0, out=x)
        return softmax(x)

    def predict_flat(self, values: Sequence[float], batch_size: int) -> list[float]:
        """``predict`` for the Open Inference Protocol's row-major flat lists, so that the HTTP
        server never has to touch NumPy (it must not import it before setting the BLAS threads)."""
        if batch_size < 1 or len(values) != batch_size * self.input_size:
            raise ValueError(f"expected {batch_size} x {self.input_size} values, got {len(values)}")
        with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
            x = np.asarray(values, dtype=np.float32).reshape(batch_size, self.input_size)
        if not np.all(np.isfinite(x)):
            raise ValueError("input values must be finite float32 numbers")
        scores: list[float] = self.predict(x).ravel().tolist()
        return scores


def softmax(logits: FloatArray) -> FloatArray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: FloatArray = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return result


INPUT_SIZE = 64
OUTPUT_SIZE = 32

SPECS: dict[tuple[str, str], ModelSpec] = {
    (spec.name, spec.variant): spec
    for spec in (
        # About 19 M parameters (73 MiB of float32): more than a last-level cache holds, so a
        # request streams the weights from memory and costs a few milliseconds of one core; a
        # 1024-wide stack stays in cache and answers in a tenth of a millisecond, too cheap to show.
        ModelSpec("recommender", "primary", INPUT_SIZE, (3072, 3072, 3072), OUTPUT_SIZE, seed=1001),
        # About 6 k parameters: well under a millisecond, the cheap fallback.
        ModelSpec("recommender", "light", INPUT_SIZE, (64,), OUTPUT_SIZE, seed=2002),
        # The canary's new version of the primary: the same network retrained (other weights), so
        # it costs what the primary costs and answers a little differently.
        ModelSpec("recommender", "v2", INPUT_SIZE, (3072, 3072, 3072), OUTPUT_SIZE, seed=1003),
    )
}


def variants(name: str) -> list[str]:
    return [variant for (model, variant) in SPECS if model == name]


def spec_for(name: str, variant: str) -> ModelSpec:
    """The registered spec, or a ValueError naming what exists (for a CLI error message)."""
    try:
        return SPECS[(name, variant)]
    except KeyError:
        known = ", ".join(f"{m}/{v}" for m, v in SPECS)
        raise ValueError(f"no model {name!r} variant {variant!r} (known: {known})") from None


def variant_for(name: str, variant: str) -> Model:
    """Build the registered variant; its weights are the same in every process."""
    return Model.from_spec(spec_for(name, variant))

"""The demo's NumPy models: real, deterministic, and of clearly different cost."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ext_proc.demo.models import SPECS, Model, spec_for, variant_for, variants


@pytest.fixture(scope="module")
def primary() -> Model:
    return variant_for("recommender", "primary")


@pytest.fixture(scope="module")
def light() -> Model:
    return variant_for("recommender", "light")


def batch(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 64)).astype(np.float32)


def test_same_input_same_output_across_instances(primary: Model) -> None:
    x = batch(4)
    again = variant_for("recommender", "primary")
    assert np.array_equal(primary.predict(x), primary.predict(x))
    assert np.array_equal(primary.predict(x), again.predict(x))


def test_light_is_deterministic_too(light: Model) -> None:
    x = batch(3, seed=5)
    assert np.array_equal(light.predict(x), Model.from_spec(light.spec).predict(x))


@pytest.mark.parametrize("rows", [1, 2, 17])
def test_output_shape_and_softmax_rows(primary: Model, light: Model, rows: int) -> None:
    x = batch(rows, seed=rows)
    for model in (primary, light):
        scores = model.predict(x)
        assert scores.shape == (rows, 32)
        assert scores.dtype == np.float32
        assert np.all(scores >= 0)
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)


def test_outputs_are_not_degenerate(primary: Model, light: Model) -> None:
    """Neither one-hot nor uniform: the scores carry information about the input."""
    x = batch(8, seed=3)
    for model in (primary, light):
        scores = model.predict(x)
        assert float(scores.max()) < 0.99
        assert float(scores.max(axis=1).min()) > 1.5 / 32
        assert not np.allclose(scores[0], scores[1])


def test_primary_and_light_answer_differently(primary: Model, light: Model) -> None:
    x = batch(2, seed=9)
    assert not np.allclose(primary.predict(x), light.predict(x), atol=1e-3)


def test_primary_is_much_heavier(primary: Model, light: Model) -> None:
    assert primary.flops_per_row > 1000 * light.flops_per_row
    assert primary.parameter_count > 1000 * light.parameter_count
    sizes = primary.spec.layer_sizes
    assert primary.parameter_count == sum(a * b + b for a, b in itertools.pairwise(sizes))
    assert light.flops_per_row == 2 * (64 * 64 + 64) + 2 * (64 * 32 + 32)


def test_rows_do_not_depend_on_their_batch(light: Model) -> None:
    x = batch(5, seed=11)
    whole = light.predict(x)
    for row in range(5):
        np.testing.assert_allclose(light.predict(x[row : row + 1])[0], whole[row], rtol=1e-5, atol=1e-7)


def test_predict_leaves_its_input_alone(light: Model) -> None:
    x = batch(2)
    before = x.copy()
    light.predict(x)
    assert np.array_equal(x, before)


def test_predict_refuses_a_wrong_shape(light: Model) -> None:
    with pytest.raises(ValueError, match=r"\[B, 64\]"):
        light.predict(np.zeros((2, 63), dtype=np.float32))
    with pytest.raises(ValueError):
        light.predict(np.zeros(64, dtype=np.float32))


def test_predict_flat_matches_predict(light: Model) -> None:
    x = batch(3, seed=4)
    flat = light.predict_flat(x.ravel().tolist(), 3)
    assert flat == light.predict(x).ravel().tolist()
    assert len(flat) == 3 * 32


def test_predict_flat_refuses_bad_values(light: Model) -> None:
    with pytest.raises(ValueError, match="values"):
        light.predict_flat([0.0] * 63, 1)
    with pytest.raises(ValueError, match="values"):
        light.predict_flat([], 0)
    with pytest.raises(ValueError, match="finite"):
        light.predict_flat([float("nan")] + [0.0] * 63, 1)
    with pytest.raises(ValueError, match="finite"):
        light.predict_flat([1e39] + [0.0] * 63, 1)  # beyond float32: inf


def test_registry() -> None:
    assert variants("recommender") == ["primary", "light", "v2"]
    assert variants("nope") == []
    assert spec_for("recommender", "light") is SPECS[("recommender", "light")]
    with pytest.raises(ValueError, match="known: recommender/primary"):
        spec_for("recommender", "huge")
    assert variant_for("recommender", "light").variant == "light"


def test_the_canary_version_costs_what_the_primary_costs_with_other_weights() -> None:
    """v2 is the primary retrained: the same layers (so the canary's latency is the primary's) and
    another seed (so it is a different model, not a copy)."""
    primary, v2 = spec_for("recommender", "primary"), spec_for("recommender", "v2")
    assert v2.layer_sizes == primary.layer_sizes
    assert v2.seed != primary.seed


def test_weights_are_read_only(light: Model) -> None:
    with pytest.raises(ValueError):
        light._weights[0][0, 0] = 1.0


def test_layer_sizes_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Model("m", "v", 4, (0,), 2, seed=1)

"""JAX initializers (``nnx.initializers``, ``jax.nn.initializers``) given to initialize: the same distribution as
JAX's own draw. Called as a plain ``fn(shape, dtype)`` one failed inside JAX with an unrelated TypeError."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

pytest.importorskip("flax")
import jax  # noqa: E402 - after the importorskip
from flax import nnx  # noqa: E402

import polyparam as pp  # noqa: E402
from polyparam import errors  # noqa: E402

init = nnx.initializers
CASES: dict[str, Callable[..., Any]] = {
    "lecun_normal": init.lecun_normal(),
    "glorot_uniform": init.glorot_uniform(),
    "he_normal": init.he_normal(),
    "variance_scaling(2, fan_out, normal)": init.variance_scaling(2.0, "fan_out", "normal"),
    "normal(0.02)": init.normal(0.02),
    "truncated_normal(0.1)": init.truncated_normal(0.1),
    "uniform(0.5)": init.uniform(0.5),
    "constant(0.5)": init.constant(0.5),
    "orthogonal": init.orthogonal(),
    "zeros": init.zeros,
    "ones": init.ones,
}

BOUNDED = {"glorot_uniform", "truncated_normal(0.1)", "uniform(0.5)", "constant(0.5)", "zeros", "ones"}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("make", [lambda: nnx.Linear(700, 300, rngs=nnx.Rngs(0)),
                                  lambda: nnx.Conv(32, 64, (5, 5), rngs=nnx.Rngs(0))], ids=["dense", "conv"])
def test_same_distribution_as_jax(name: str, make: Callable[[], Any]) -> None:
    """Mean, std and range within 5% of JAX's own draw on the kernel's own (native) shape; fan_in != fan_out, so
    a swapped fan shows."""
    fn = CASES[name]
    layer = make()
    native = np.asarray(fn(jax.random.key(1), layer.kernel[...].shape, np.float32))
    pp.tree(layer).initialize(fn, seed=0, force_reinit=True)
    ours = np.asarray(layer.kernel[...])
    scale = max(native.std(), abs(native.mean()), 1e-12)
    assert abs(ours.std() - native.std()) <= 0.05 * scale, (ours.std(), native.std())
    assert abs(ours.mean() - native.mean()) <= 0.05 * scale, (ours.mean(), native.mean())
    if name in BOUNDED:    # the same range: [0, 0.5) for JAX's uniform, not [-0.5, 0.5]
        assert native.min() - 0.05 * scale <= ours.min() and ours.max() <= native.max() + 0.05 * scale, name


def test_an_initializer_without_an_equivalent_is_refused_by_name() -> None:
    layer = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    before = np.asarray(layer.kernel[...]).copy()
    for fn, words in ((init.delta_orthogonal(), "delta_orthogonal"), (init.orthogonal(column_axis=0), "axis 0")):
        with pytest.raises(errors.InitializerError, match=words):
            pp.tree(layer).initialize(fn, force_reinit=True)
    np.testing.assert_array_equal(np.asarray(layer.kernel[...]), before)

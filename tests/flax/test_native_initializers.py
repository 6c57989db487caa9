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


class _Dense(nnx.Module):
    """A layer that keeps the initializers it was built with, as many hand-written NNX layers do."""

    def __init__(self, din: int, dout: int, kernel_init: Any, bias_init: Any, *, rngs: nnx.Rngs) -> None:
        self.kernel_init, self.bias_init = kernel_init, bias_init
        self.kernel = nnx.Param(kernel_init(rngs.params(), (din, dout)))
        self.bias = nnx.Param(bias_init(rngs.params(), (dout,)))


def test_declared_reads_the_initializers_a_module_keeps() -> None:
    """``pp.init.Declared()`` finds ``<name>_init`` on the module: a JAX one is drawn as the built-in of its
    distribution, one of your own runs in JAX on the native shape (its value comes back in canonical layout)."""
    def arange_rows(key: Any, shape: tuple[int, ...], dtype: Any = np.float32) -> Any:
        return jax.numpy.broadcast_to(jax.numpy.arange(shape[-1], dtype=dtype), shape)

    model = nnx.Sequential(_Dense(256, 128, init.normal(0.5), init.constant(0.25), rngs=nnx.Rngs(0)),
                           _Dense(4, 3, arange_rows, init.zeros, rngs=nnx.Rngs(1)))
    report = pp.tree(model).initialize(pp.init.Declared(), seed=0, force_reinit=True)
    assert len(report.initialized) == 4
    assert abs(float(np.asarray(model.layers[0].kernel[...]).std()) - 0.5) < 0.02
    np.testing.assert_array_equal(np.asarray(model.layers[0].bias[...]), 0.25)
    np.testing.assert_array_equal(np.asarray(model.layers[1].kernel[...]), np.tile(np.arange(3.0), (4, 1)))


def test_declared_on_a_layer_that_keeps_no_initializer_is_refused_by_name() -> None:
    """Flax's own layers (``nnx.Linear``) do not keep ``kernel_init`` after construction: nothing to read."""
    layer = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    with pytest.raises(errors.InitializerError, match="declare an initializer"):
        pp.tree(layer).initialize(pp.init.Declared(), force_reinit=True)
    pp.tree(layer).initialize(pp.init.Declared(default=pp.init.Xavier()), seed=0, force_reinit=True)


def test_explicit_fan_axes_and_a_key_taking_function_are_refused_by_name() -> None:
    """Fans come from axis roles: ``variance_scaling(..., out_axis=0)`` (``nnx.Embed``'s default) named native axes
    and drew 25x too narrow; a function ``(key, shape, dtype)`` of your own failed inside JAX."""
    layer = nnx.Embed(1000, 16, rngs=nnx.Rngs(0))
    before = np.asarray(layer.embedding[...]).copy()
    for fn, words in ((init.variance_scaling(1.0, "fan_in", "normal", out_axis=0), "out_axis"),
                      (lambda key, shape, dtype: jax.random.normal(key, shape, dtype), "random key")):
        with pytest.raises(errors.InitializerError, match=words):
            pp.tree(layer).initialize(fn, force_reinit=True)
    np.testing.assert_array_equal(np.asarray(layer.embedding[...]), before)

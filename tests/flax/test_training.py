"""Training on Flax NNX with optax: frozen Params through nnx.Optimizer, pp.param_groups as multi_transform labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("flax")
optax = pytest.importorskip("optax")
import jax  # noqa: E402 - after the importorskip
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import polyparam as pp  # noqa: E402
import polyparam_flax  # noqa: E402
from polyparam import errors  # noqa: E402

X = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (5, 4)), jnp.float32)


def _mlp() -> nnx.Sequential:
    rngs = nnx.Rngs(0)
    return nnx.Sequential(nnx.Linear(4, 8, rngs=rngs), nnx.relu, nnx.Linear(8, 3, rngs=rngs))


def _loss(model: Any, x: Any) -> Any:
    return jnp.sum(model(x) ** 2)


def _grads(model: Any) -> dict[tuple[Any, ...], np.ndarray]:
    grads = nnx.grad(_loss, argnums=nnx.DiffState(0, polyparam_flax.trainable))(model, X)
    return {tuple(path): np.asarray(v[...]) for path, v in nnx.to_flat_state(grads)}


def _values(model: Any) -> dict[tuple[Any, ...], np.ndarray]:
    return {tuple(path): np.array(v[...]) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _step(model: Any, tx: Any) -> None:
    optimizer = nnx.Optimizer(model, tx, wrt=polyparam_flax.trainable)
    optimizer.update(model, nnx.grad(_loss, argnums=nnx.DiffState(0, polyparam_flax.trainable))(model, X))


def test_param_groups_label_every_trainable_param_once_and_frozen_ones_not() -> None:
    model = _mlp()
    tree = pp.tree(model)
    tree["0.weight"].trainable = False
    groups = pp.param_groups(tree, [("role:bias", {"learning_rate": 0.0})], default={"learning_rate": 0.1})
    assert isinstance(groups, polyparam_flax.OptaxGroups) and len(groups) == 2
    assert groups.options == {"0": {"learning_rate": 0.0}, "1": {"learning_rate": 0.1}}
    labels = {tuple(path): label for path, label in nnx.to_flat_state(groups.labels)}
    assert labels == {("layers", 0, "bias"): "0", ("layers", 2, "bias"): "0", ("layers", 2, "kernel"): "1"}
    shaped_like = nnx.as_pure(nnx.state(model, polyparam_flax.trainable))
    assert jax.tree.structure(groups.labels) == jax.tree.structure(jax.tree.map(lambda _: "", shaped_like))


def test_a_real_optax_step_follows_the_groups_and_leaves_frozen_params_bitwise() -> None:
    model = _mlp()
    tree = pp.tree(model)
    tree["0.weight"].trainable = False
    groups = pp.param_groups(model, [("2.bias", {"learning_rate": 0.0})], default={"learning_rate": 0.1})
    before, grads = _values(model), _grads(model)
    assert ("layers", 0, "kernel") not in grads   # frozen: no gradient, as torch gives None
    _step(model, groups.transform(optax.sgd))
    after = _values(model)
    np.testing.assert_array_equal(after[("layers", 0, "kernel")], before[("layers", 0, "kernel")])
    np.testing.assert_array_equal(after[("layers", 2, "bias")], before[("layers", 2, "bias")])
    for path in [("layers", 0, "bias"), ("layers", 2, "kernel")]:
        np.testing.assert_allclose(after[path], before[path] - 0.1 * grads[path], rtol=1e-6, atol=1e-7)


def test_optimizer_factory_returns_the_multi_transform_with_weight_decay_per_group() -> None:
    """AdamW with decay on kernels only: with zero gradients, only the kernels shrink (by lr * wd * value)."""
    model = _mlp()
    tx = pp.param_groups(model, [("role:bias", {"weight_decay": 0.0})], default={"weight_decay": 0.5},
                         optimizer=lambda **o: optax.adamw(0.1, **o))
    assert isinstance(tx, optax.GradientTransformation)
    before = _values(model)
    optimizer = nnx.Optimizer(model, tx, wrt=polyparam_flax.trainable)
    zeros = jax.tree.map(jnp.zeros_like, nnx.state(model, polyparam_flax.trainable))
    optimizer.update(model, zeros)
    after = _values(model)
    for path, value in before.items():
        expected = value * (1 - 0.1 * 0.5) if path[-1] == "kernel" else value
        np.testing.assert_allclose(after[path], expected, rtol=1e-6, atol=1e-7)


def test_tied_params_take_one_label_and_freeze_together() -> None:
    rngs = nnx.Rngs(0)
    shared = nnx.Linear(4, 4, rngs=rngs)
    model = nnx.Sequential(shared, nnx.relu, shared, nnx.Linear(4, 2, rngs=rngs))
    tree = pp.tree(model)
    groups = pp.param_groups(tree, [("0.*", {"learning_rate": 0.0})], default={"learning_rate": 0.1})
    labels = {tuple(path): label for path, label in nnx.to_flat_state(groups.labels)}
    assert labels[("layers", 0, "kernel")] == "0" and not any(path[1] == 2 for path in labels)
    tree["2.weight"].trainable = False
    assert not tree["0.weight"].trainable
    before = _values(model)
    _step(model, optax.sgd(0.1))
    after = _values(model)
    np.testing.assert_array_equal(after[("layers", 0, "kernel")], before[("layers", 0, "kernel")])
    assert not np.array_equal(after[("layers", 3, "kernel")], before[("layers", 3, "kernel")])


def test_an_optimizer_that_is_not_a_factory_is_refused() -> None:
    model = _mlp()
    with pytest.raises(errors.InvalidArgumentError, match="optax.GradientTransformation"):
        pp.param_groups(model, [("role:bias", {"weight_decay": 0.0})], optimizer=optax.sgd(0.1))

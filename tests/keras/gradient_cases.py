"""Gradients through ``polyparam_keras`` under whichever Keras backend this process runs, against NumPy.

Run by test_gradients_per_backend.py in a subprocess per Keras backend (tensorflow, torch, jax: Keras
reads KERAS_BACKEND once, at import); not collected alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
import polyparam as pp  # noqa: E402 - after the importorskip
import polyparam_keras  # noqa: E402
from polyparam.testing import snapshot  # noqa: E402
from polyparam_keras import _backend  # noqa: E402

L = keras.layers


def _x(n: int = 5, features: int = 6) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (n, features)).astype(np.float32)


def _tanh_mlp() -> Any:
    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((6,)), L.Dense(6, activation="tanh"), L.Dense(6, activation="tanh"),
                             L.Dense(1)])


def _numpy_grads(model: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    """Hand-derived gradients of ``sum((model(x)) ** 2)`` for ``_tanh_mlp``, canonical layout (out, in)."""
    w = [keras.ops.convert_to_numpy(layer.kernel).astype(np.float64) for layer in model.layers]
    b = [keras.ops.convert_to_numpy(layer.bias).astype(np.float64) for layer in model.layers]
    h1 = np.tanh(x @ w[0] + b[0])
    h2 = np.tanh(h1 @ w[1] + b[1])
    out = h2 @ w[2] + b[2]
    d_out = 2 * out
    d_z2 = (d_out @ w[2].T) * (1 - h2 ** 2)
    d_z1 = (d_z2 @ w[1].T) * (1 - h1 ** 2)
    return {"0.weight": (x.T @ d_z1).T, "0.bias": d_z1.sum(0), "1.weight": (h1.T @ d_z2).T, "1.bias": d_z2.sum(0),
            "2.weight": (h2.T @ d_out).T, "2.bias": d_out.sum(0)}


def test_backward_gives_the_hand_derived_gradients_in_canonical_layout() -> None:
    model = _tanh_mlp()
    tree = pp.tree(model)
    x = _x()
    expected_loss = float((keras.ops.convert_to_numpy(model(x)).astype(np.float64) ** 2).sum())
    loss = polyparam_keras.backward(model, x, loss=lambda out: keras.ops.sum(out * out))
    assert isinstance(loss, np.ndarray) and loss.shape == ()
    np.testing.assert_allclose(float(loss), expected_loss, rtol=1e-5)
    for path, grad in _numpy_grads(model, x).items():
        assert tree[path].grad().shape == tree[path].shape, path
        np.testing.assert_allclose(tree[path].grad(), grad, rtol=1e-4, atol=1e-5, err_msg=path)


def test_the_gradient_of_a_tie_is_the_sum_over_its_uses() -> None:
    """Tied after construction: one variable, one gradient, the sum of what the two layers get untied."""
    model = _tanh_mlp()
    tree = pp.tree(model)
    pp.tie(tree[0], tree[1])
    x = _x()
    polyparam_keras.backward(model, x)
    tied = np.array(tree["0.weight"].grad(), copy=True)
    np.testing.assert_array_equal(tied, tree["1.weight"].grad())
    for group in tree.ties():
        group.untie()
    tree["1.weight"].set(tree["0.weight"].numpy())
    tree["1.bias"].set(tree["0.bias"].numpy())
    polyparam_keras.backward(model, x)
    np.testing.assert_allclose(tied, tree["0.weight"].grad() + tree["1.weight"].grad(), rtol=1e-4, atol=1e-6)


def test_record_gradients_takes_the_active_backends_tensors() -> None:
    """Gradients your own step computed (here: tensors of the active backend) read back in canonical layout."""
    model = _tanh_mlp()
    tree = pp.tree(model)
    grads = [keras.ops.convert_to_tensor(np.full(tuple(v.shape), i + 1, np.float32))
             for i, v in enumerate(model.trainable_variables)]
    polyparam_keras.record_gradients(zip(grads, model.trainable_variables))
    np.testing.assert_array_equal(tree["0.weight"].grad(), np.ones((6, 6), np.float32))
    np.testing.assert_array_equal(tree["2.weight"].grad(), np.full((1, 6), 5, np.float32))
    polyparam_keras.record_gradients([(None, model.layers[2].bias)])
    np.testing.assert_array_equal(tree["2.bias"].grad(), np.zeros(1, np.float32))


def test_clipped_gradients_reach_the_optimizer() -> None:
    """clip_grads rewrites what backward holds; recorded_gradients hands that to apply_gradients."""
    model = _tanh_mlp()
    tree = pp.tree(model)
    x = _x()
    polyparam_keras.backward(model, x, loss=lambda out: keras.ops.sum(out * out))
    norm = tree.clip_grads(0.5)
    assert norm > 0.5
    grads = {p.path: np.array(p.grad(), copy=True) for p in tree.parameters()}
    np.testing.assert_allclose(np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads.values())), 0.5,
                               rtol=1e-4)
    before = snapshot(tree)
    keras.optimizers.SGD(learning_rate=0.1).apply_gradients(polyparam_keras.recorded_gradients(model))
    for path, grad in grads.items():
        np.testing.assert_allclose(tree[path].numpy(), before[path] - 0.1 * grad, rtol=1e-5, atol=1e-6,
                                   err_msg=path)


def test_frozen_variables_get_no_gradient_and_lose_an_old_one() -> None:
    model = _tanh_mlp()
    tree = pp.tree(model)
    x = _x()
    polyparam_keras.backward(model, x)
    assert tree["0.weight"].grad() is not None
    tree.select("0.*").freeze()
    polyparam_keras.backward(model, x, loss=lambda out: keras.ops.sum(out * out))
    assert tree["0.weight"].grad() is None and tree["0.bias"].grad() is None
    np.testing.assert_allclose(tree["2.weight"].grad(), _numpy_grads(model, x)["2.weight"], rtol=1e-4, atol=1e-5)
    assert [p.path for p in tree.parameters() if p.trainable] == ["1.weight", "1.bias", "2.weight", "2.bias"]


def test_backward_moves_batch_norm_statistics_as_a_training_call_does() -> None:
    """The training forward of backward updates moving mean/variance on every backend (JAX: written back
    from the stateless call); the norm's scale and shift get gradients."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), L.Dense(4), L.BatchNormalization(momentum=0.5), L.Dense(1)])
    tree = pp.tree(model)
    x = _x(8)
    h = x @ keras.ops.convert_to_numpy(model.layers[0].kernel) + keras.ops.convert_to_numpy(model.layers[0].bias)
    polyparam_keras.backward(model, x, loss=lambda out: keras.ops.sum(out * out))
    np.testing.assert_allclose(tree["1.running_mean"].numpy(), 0.5 * h.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(tree["1.running_var"].numpy(), 0.5 + 0.5 * h.var(0), rtol=1e-4, atol=1e-6)
    assert tree["1.running_mean"].grad() is None
    assert np.abs(tree["1.weight"].grad()).sum() > 0


def test_backward_builds_an_unbuilt_model_and_records_every_variable() -> None:
    model = keras.Sequential([L.Dense(3), L.Dense(2)])
    tree = pp.tree(model)
    assert tree["0.weight"].shape == (3, None)
    polyparam_keras.backward(model, _x())
    assert len(polyparam_keras.recorded_gradients(model)) == 4
    assert tree["0.weight"].grad().shape == (3, 6)
    np.testing.assert_allclose(tree["1.bias"].grad(), np.full(2, 5, np.float32))   # d sum / d bias = batch size


def test_the_model_factorys_sgd_step_is_one_sgd_step() -> None:
    factory = _backend.models()
    case = factory.mlp()
    tree = pp.tree(case.model)
    x = np.random.default_rng(1).normal(size=(3, case.in_features)).astype(np.float32)
    before = snapshot(tree)
    factory.sgd_step(case.model, x, lr=0.25)
    for p in tree.parameters():
        np.testing.assert_allclose(p.numpy(), before[p.path] - 0.25 * p.grad(), rtol=1e-5, atol=1e-6,
                                   err_msg=p.path)
    assert any(not np.array_equal(p.numpy(), before[p.path]) for p in tree.parameters())


def test_a_freeze_after_fit_holds_through_the_next_fit() -> None:
    """On JAX, Keras rebuilds its optimizer after trainability changes (as for layer.trainable): polyparam says so."""
    model = _tanh_mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = _x(8), np.ones((8, 1), np.float32)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    tree = pp.tree(model)
    if keras.backend.backend() == "jax":
        with pytest.warns(pp.errors.PolyparamWarning, match=r"model.compile\(...\) again"):
            tree.select("1.*").freeze()
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    else:
        tree.select("1.*").freeze()
    before = snapshot(tree)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    after = snapshot(tree)
    assert np.array_equal(before["1.weight"], after["1.weight"]) and np.array_equal(before["1.bias"], after["1.bias"])
    assert not np.array_equal(before["0.weight"], after["0.weight"])


def test_a_callback_reads_and_writes_through_a_tree_made_before_fit() -> None:
    """On JAX, fit holds the values outside the variables (each holds None) between steps: a read from a callback
    was refused as "never initialized", and a write was dropped when fit put its own values back. Now the tree
    syncs first, as Callback.model does, and the next step starts from what was written."""
    model = _tanh_mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")    # lr 0: the steps change nothing
    tree = pp.tree(model)
    start = snapshot(tree)
    seen: list[np.ndarray] = []

    class Writes(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if batch == 1:
                seen.append(tree["0.bias"].numpy().copy())
                tree.load_state({"0.bias": np.full(6, 7.0, np.float32)}, strict=False)

    model.fit(_x(32), np.ones((32, 1), np.float32), epochs=1, batch_size=8, verbose=0, callbacks=[Writes()])
    np.testing.assert_array_equal(seen[0], start["0.bias"])
    np.testing.assert_array_equal(tree["0.bias"].numpy(), np.full(6, 7.0, np.float32))
    np.testing.assert_array_equal(tree["0.weight"].numpy(), start["0.weight"])


def test_writes_inside_a_stateless_scope_reach_the_variable() -> None:
    """polyparam writes the variable itself on every Keras backend, not a StatelessScope's pending updates (which
    stateless_call and a custom train step drop): on JAX they went into the scope and were lost."""
    model = _tanh_mlp()
    tree = pp.tree(model)
    with keras.StatelessScope():
        tree["0.bias"].set(np.full(6, 2.0, np.float32))
        tree.load_state({"1.bias": np.full(6, 3.0, np.float32)}, strict=False)
        tree["2.bias"].initialize(pp.init.Constant(4.0), force_reinit=True)
    for path, value in (("0.bias", 2.0), ("1.bias", 3.0), ("2.bias", 4.0)):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer(index=int(path[0])).bias),
                                      np.full(model.layers[int(path[0])].bias.shape, value, np.float32), err_msg=path)


def test_a_tree_of_a_model_inside_the_one_fit_runs_writes_or_refuses_by_name() -> None:
    """A tree of a nested model cannot reach the outer model fit runs: on JAX, whose fit empties the variables,
    its write was dropped silently and its read said "never initialized"; now both are refused, naming the fix.
    On the other backends the variables stay live and the write lands."""
    keras.utils.set_random_seed(1)
    inner = keras.Sequential([keras.Input((6,)), L.Dense(6)])
    model = keras.Sequential([keras.Input((6,)), inner, L.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    tree = pp.tree(inner)
    start = snapshot(tree)
    outcome: list[str] = []

    class Writes(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if batch == 1:
                try:
                    tree.load_state({"0.bias": np.full(6, 7.0, np.float32)}, strict=False)
                    outcome.append("written")
                except pp.errors.UnsupportedModelError as exc:
                    outcome.append(str(exc))

    model.fit(_x(32), np.ones((32, 1), np.float32), epochs=1, batch_size=8, verbose=0, callbacks=[Writes()])
    if keras.backend.backend() == "jax":
        assert "pp.tree(self.model)" in outcome[0]
        np.testing.assert_array_equal(tree["0.bias"].numpy(), start["0.bias"])
    else:
        assert outcome == ["written"]
        np.testing.assert_array_equal(tree["0.bias"].numpy(), np.full(6, 7.0, np.float32))


def test_a_tie_or_untie_after_fit_warns_on_jax_as_a_freeze_does() -> None:
    """A tie changes the variables Keras' optimizer was built for, as a freeze does; on JAX the next fit then fails
    part-way and leaves every variable empty. The freeze warned; a tie and an untie did not."""
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((6,)), L.Dense(6), L.Dense(6), L.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(_x(8), np.ones((8, 1), np.float32), epochs=1, batch_size=8, verbose=0)
    tree = pp.tree(model)
    if keras.backend.backend() == "jax":
        with pytest.warns(pp.errors.PolyparamWarning, match=r"tied .* model.compile\(...\) again"):
            [group] = pp.tie(tree["0.weight"], tree["1.weight"])
        with pytest.warns(pp.errors.PolyparamWarning, match=r"untied .* model.compile\(...\) again"):
            group.untie()
    else:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error", pp.errors.PolyparamWarning)
            [group] = pp.tie(tree["0.weight"], tree["1.weight"])
            group.untie()

"""Training-loop operations on Keras: freezing as Keras' optimizers and fit see it, groups for AdamW,
gradient norms and clipping on the gradients ``polyparam_keras.backward`` holds, vectors, averages, casts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
import polyparam as pp  # noqa: E402 - after the importorskip
import polyparam_keras  # noqa: E402
from polyparam import errors  # noqa: E402
from polyparam.testing import snapshot  # noqa: E402
from polyparam_keras import _backend  # noqa: E402

L = keras.layers


def _x(n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, (n, 4)).astype(np.float32)


def _model(seed: int = 0) -> Any:
    """Dense -> BatchNormalization -> Dense, with non-trivial norm values."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), L.Dense(8), L.BatchNormalization(), L.Dense(3)])
    tree = pp.tree(model)
    rng = np.random.default_rng(seed)
    for path in ("1.weight", "1.bias", "0.bias", "2.bias"):
        tree[path].set(rng.uniform(0.5, 1.5, tree[path].shape).astype(np.float32))
    return model


def _step(model: Any, optimizer: Any) -> None:
    """One step of a Keras optimizer on sum(model(x) ** 2), with the gradients polyparam_keras records
    (with sum(model(x)) batch statistics make the norm scale's gradient zero)."""
    polyparam_keras.backward(model, _x(), loss=lambda out: keras.ops.sum(out * out))
    optimizer.apply_gradients(polyparam_keras.recorded_gradients(model))


def _sizes(variables: list[Any]) -> int:
    return sum(math.prod(int(d) for d in v.shape) for v in variables)


# ---- freezing -------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: keras.optimizers.SGD(0.1), lambda: keras.optimizers.AdamW(0.01)],
                         ids=["SGD", "AdamW"])
def test_freeze_by_selection_holds_through_keras_optimizers(make: Any) -> None:
    model = _model()
    tree = pp.tree(model)
    tree.select("0.*").freeze()
    assert [p.trainable for p in tree.select("0.*")] == [False, False]
    assert not any(v.trainable for v in model.layers[0].weights)
    before = snapshot(tree)
    _step(model, make())
    after = snapshot(tree)
    for path, value in before.items():
        if ".running_" in path:
            continue        # the training forward updates BatchNormalization's statistics
        assert np.array_equal(value, after[path]) == path.startswith("0."), path
    tree.select("0.*").unfreeze()
    assert all(v.trainable for v in model.layers[0].weights)


def test_native_freeze_agrees_and_counts_match_keras() -> None:
    model = _model()
    tree = pp.tree(model)
    assert tree.count() == model.count_params()
    assert tree.count(trainable=True) == _sizes(model.trainable_weights)
    model.layers[1].trainable = False
    assert [tree[p].trainable for p in ("1.weight", "1.bias", "1.running_mean")] == [False, False, False]
    model.layers[0].trainable = False
    assert not tree["0.weight"].trainable
    assert tree.count(trainable=True) == _sizes(model.trainable_weights) == 8 * 3 + 3
    assert tree.count(trainable=False) == _sizes(model.non_trainable_weights)
    assert tree.count() == model.count_params()
    with pytest.raises(errors.UsageError, match="frozen"):
        tree["0.weight"].trainable = True        # its layer is frozen: Keras would not train it
    assert not tree["0.weight"].trainable
    model.trainable = False
    assert tree.count(trainable=True) == 0 == _sizes(model.trainable_weights)


def test_fit_sees_a_freeze_made_after_compile() -> None:
    model = _model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = _x(8), np.ones((8, 3), np.float32)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    tree = pp.tree(model)
    tree.select("2.*").freeze()
    before = snapshot(tree)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    after = snapshot(tree)
    assert all(np.array_equal(before[p], after[p]) for p in ("2.weight", "2.bias"))
    assert not np.array_equal(before["0.weight"], after["0.weight"])
    tree.select("2.*").unfreeze()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert not np.array_equal(after["2.weight"], tree["2.weight"].numpy())


def test_a_freeze_drops_the_step_functions_once_per_model_not_once_per_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropping a model's compiled functions walks every layer: once per variable made freezing O(n^2)."""
    from polyparam_keras import _parameter

    model = keras.Sequential([keras.Input((4,))] + [L.Dense(4) for _ in range(30)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(_x(4), np.ones((4, 4), np.float32), epochs=1, verbose=0)
    walks: list[Any] = []
    original = _parameter.refresh
    monkeypatch.setattr(_parameter, "refresh", lambda root: (walks.append(root), original(root)))
    pp.tree(model).freeze()
    assert walks == [model] and model.train_function is None
    assert not any(v.trainable for v in model.weights)
    pp.tree(model)["3.weight"].trainable = True
    assert len(walks) == 2 and model.get_layer(index=3).kernel.trainable


# ---- optimizer groups -------------------------------------------------------------------------


def test_adamw_groups_exclude_biases_and_norm_scales_from_decay() -> None:
    model = _model()
    tree = pp.tree(model)
    lr, wd = 0.01, 0.1
    optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=wd)
    groups = pp.param_groups(model, [("role:bias", {"weight_decay": 0.0}), ("role:scale", {"weight_decay": 0.0})],
                             optimizer=optimizer)
    assert [sorted(v.path for v in g["params"]) for g in groups] == [
        sorted(v.path for v in (model.layers[0].bias, model.layers[2].bias)),
        [model.layers[1].gamma.path],
        sorted(v.path for v in (model.layers[0].kernel, model.layers[1].beta, model.layers[2].kernel))]
    assert [g["weight_decay"] for g in groups[:2]] == [0.0, 0.0] and "weight_decay" not in groups[2]
    variables = [v for g in groups for v in g["params"]]
    before = snapshot(tree)
    optimizer.apply_gradients([(keras.ops.zeros_like(v), v) for v in variables])
    after = snapshot(tree)
    for path in ("0.bias", "2.bias", "1.weight", "1.running_mean", "1.running_var"):
        np.testing.assert_array_equal(after[path], before[path])
    for path in ("0.weight", "2.weight", "1.bias"):
        np.testing.assert_allclose(after[path], before[path] * (1 - lr * wd), rtol=1e-6)
    with pytest.raises(errors.UsageError, match="built"):
        pp.param_groups(model, [("role:bias", {"weight_decay": 0.0})], optimizer=optimizer)


def test_param_groups_leave_frozen_parameters_out() -> None:
    model = _model()
    pp.tree(model).select("0.*").freeze()
    groups = pp.param_groups(model, [("role:bias", {"weight_decay": 0.0})])
    listed = {id(v) for g in groups for v in g["params"]}
    assert listed == {id(v) for v in model.trainable_weights}


# ---- gradients ---------------------------------------------------------------------------------


def test_grad_norm_clip_and_zero_against_numpy() -> None:
    model = _model()
    tree = pp.tree(model)
    polyparam_keras.backward(model, _x())
    native = {id(v): np.asarray(keras.ops.convert_to_numpy(g)) for g, v in polyparam_keras.recorded_gradients(model)}
    assert len(native) == len(model.trainable_weights)
    norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in native.values()))
    assert tree.grad_norm() == pytest.approx(norm, rel=1e-6)
    assert tree.grad_norm(math.inf) == pytest.approx(max(float(np.max(np.abs(g))) for g in native.values()))
    assert tree.clip_grads(norm / 4) == pytest.approx(norm, rel=1e-6)
    factor = (norm / 4) / (norm + 1e-6)
    for g, v in polyparam_keras.recorded_gradients(model):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(g), native[id(v)] * factor, rtol=1e-5, atol=1e-7)
    assert tree.grad_norm() == pytest.approx(norm / 4, rel=1e-4)
    kernel = model.layers[0].kernel
    np.testing.assert_allclose(tree["0.weight"].grad(), (native[id(kernel)] * factor).T, rtol=1e-5, atol=1e-7)
    tree.zero_grads()
    assert tree.grad_norm() == 0.0
    assert all(not np.any(keras.ops.convert_to_numpy(g)) for g, _ in polyparam_keras.recorded_gradients(model))


def test_an_embeddings_gradient_is_recorded_dense() -> None:
    """TensorFlow gives an Embedding's gradient as IndexedSlices (rows and their values): it is recorded as the
    dense gradient, duplicate rows summed, on every Keras backend."""
    model = keras.Sequential([keras.Input((3,), dtype="int32"), L.Embedding(10, 4), L.Flatten(), L.Dense(2)])
    x = np.array([[1, 2, 1], [7, 2, 0]], np.int32)
    polyparam_keras.backward(model, x)                       # loss: the sum of the outputs
    kernel = keras.ops.convert_to_numpy(model.layers[2].kernel)
    per_position = kernel.sum(axis=1).reshape(3, 4)         # d loss / d embedding output at each position
    expected = np.zeros((10, 4), np.float32)
    for row, position in zip(x.ravel(), np.tile(np.arange(3), 2)):
        expected[row] += per_position[position]
    np.testing.assert_allclose(pp.tree(model)["0.weight"].grad(), expected, rtol=1e-6)
    if keras.backend.backend() == "tensorflow":              # the documented path from the user's own tape
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x))
        grads = tape.gradient(loss, model.trainable_variables)
        assert type(grads[0]).__name__ == "IndexedSlices"
        polyparam_keras.backward(model, x)
        polyparam_keras.record_gradients(zip(grads, model.trainable_variables))
        np.testing.assert_allclose(pp.tree(model)["0.weight"].grad(), expected, rtol=1e-6)
        dense = [tf.convert_to_tensor(g).numpy().astype(np.float64) for g in grads]
        assert pp.tree(model).grad_norm() == pytest.approx(math.sqrt(sum(np.sum(g ** 2) for g in dense)), rel=1e-6)
        # (tf.linalg.global_norm sums the squares of the slices' values: a row given twice counts twice)
        table = model.layers[0].embeddings
        values = tf.ones((2, 4))
        for bad, got in ((tf.IndexedSlices(values, tf.constant([1, 10])), r"rows \[10\]"),     # past the table
                         (tf.IndexedSlices(tf.ones((2, 3)), tf.constant([1, 2])), r"slices of values \(2, 3\)")):
            with pytest.raises(errors.ShapeMismatchError, match=got):
                polyparam_keras.record_gradients([(bad, table)])
        np.testing.assert_allclose(pp.tree(model)["0.weight"].grad(), expected, rtol=1e-6)   # nothing stored
        summed = tf.IndexedSlices(values, tf.constant([3, 3]))                 # no dense_shape: the variable's
        polyparam_keras.record_gradients([(summed, table)])
        assert pp.tree(model)["0.weight"].grad()[3].tolist() == [2.0] * 4
        plain = tf.Variable(tf.zeros((2, 2)))                                   # not a Keras variable: no .path
        with pytest.raises(errors.ShapeMismatchError, match="variable 'Variable"):
            polyparam_keras.record_gradients([(np.ones(3, np.float32), plain)])


def test_record_gradients_refuses_a_gradient_of_another_shape_and_stores_none() -> None:
    """Pairs zipped out of order: a typed error naming the variable, and no gradient stored from the call."""
    model = _model()
    variables = model.trainable_variables
    grads = [np.ones(tuple(v.shape), np.float32) for v in variables]
    with pytest.raises(errors.ShapeMismatchError, match=r"expected shape .* got .*zip") as info:
        polyparam_keras.record_gradients(zip(grads, variables[1:] + variables[:1]))
    assert info.value.path == variables[1].path
    assert all(p.grad() is None for _, p in pp.tree(model).items())


def test_clipped_gradients_are_what_the_optimizer_applies() -> None:
    model = _model()
    tree = pp.tree(model)
    polyparam_keras.backward(model, _x())
    tree.clip_grads(1e-3)
    grads = {path: p.grad() for path, p in tree.items() if p.grad() is not None}
    before = snapshot(tree)
    keras.optimizers.SGD(1.0).apply_gradients(polyparam_keras.recorded_gradients(model))
    for path, g in grads.items():
        np.testing.assert_allclose(tree[path].numpy(), before[path] - g, rtol=1e-6, atol=1e-7)


def test_write_grad_none_clears_and_a_flattened_map_kernel_round_trips() -> None:
    model = keras.Sequential([keras.Input((3, 2, 4)), L.Flatten(), L.Dense(5)])
    tree = pp.tree(model)
    p = tree["1.weight"]
    g = np.arange(5 * 24, dtype=np.float32).reshape(5, 24)
    p._write_grad(g)
    np.testing.assert_array_equal(p.grad(), g)
    stored = dict((id(v), keras.ops.convert_to_numpy(x)) for x, v in polyparam_keras.recorded_gradients(model))
    np.testing.assert_array_equal(stored[id(model.layers[1].kernel)],
                                  g.reshape(5, 4, 3, 2).transpose(0, 2, 3, 1).reshape(5, 24).T)
    p._write_grad(None)
    assert p.grad() is None


# ---- whole-tree values --------------------------------------------------------------------------


def test_vector_round_trip() -> None:
    model = _model()
    tree = pp.tree(model)
    v = tree.vector()
    assert v.shape == (model.count_params(),)
    tree.load_vector(np.zeros_like(v))
    assert not np.any(tree.vector())
    tree.load_vector(v)
    np.testing.assert_array_equal(tree.vector(), v)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.layers[0].kernel).T, tree["0.weight"].numpy())


def test_average_ema_and_mean() -> None:
    dst, a, b = _model(0), _model(1), _model(2)
    start, va, vb = (pp.tree(m).vector().astype(np.float64) for m in (dst, a, b))
    pp.average(dst, a, decay=0.75)
    ema = 0.75 * start + 0.25 * va
    np.testing.assert_allclose(pp.tree(dst).vector(), ema.astype(np.float32), rtol=1e-6)
    pp.average(dst, a, b)
    np.testing.assert_allclose(pp.tree(dst).vector(), ((va + vb) / 2).astype(np.float32), rtol=1e-6)
    x = _x()
    pp.average(dst, a, decay=0.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(dst(x, training=False)),
                                  keras.ops.convert_to_numpy(a(x, training=False)))


# ---- casts -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_cast_is_refused_with_what_to_do(dtype: str) -> None:
    model = _model()
    tree = pp.tree(model)
    before = snapshot(tree)
    variables = list(model.weights)
    with pytest.raises(errors.UnsupportedModelError, match=dtype) as info:
        tree.cast(dtype)
    assert info.value.path == "0.weight"
    assert "dtype=" in str(info.value) and "pp.transfer" in str(info.value)
    assert all(a is b for a, b in zip(model.weights, variables))
    assert {str(v.dtype) for v in model.weights} == {"float32"}
    after = snapshot(tree)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert "casting" not in _backend.CAPABILITIES and "training" in _backend.CAPABILITIES


def test_the_way_a_cast_is_done_on_keras() -> None:
    """What the refusal says to do: build the model in the dtype and transfer the values."""
    model = _model()
    keras.utils.set_random_seed(0)
    half = keras.Sequential([keras.Input((4,)), L.Dense(8, dtype="float16"),
                             L.BatchNormalization(dtype="float16"), L.Dense(3, dtype="float16")])
    pp.transfer(model, half)
    assert {str(v.dtype) for v in half.weights} == {"float16"}
    for path, value in snapshot(pp.tree(model)).items():
        np.testing.assert_array_equal(pp.tree(half)[path].numpy(), value.astype(np.float16))

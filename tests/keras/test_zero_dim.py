"""Keras variables of unusual shapes (0-d such as Normalization's ``count``, empty, 1-element, 5-d,
integer and float16) through every read and write path, alone and inside EfficientNetB0."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

keras = pytest.importorskip("keras")
import polyparam as pp  # noqa: E402 - after the importorskip
from polyparam import errors  # noqa: E402
from polyparam.testing.base.faults import failing_writes  # noqa: E402

L = keras.layers
X = np.random.default_rng(0).normal(5, 2, (16, 3)).astype(np.float32)


class _Odd(L.Layer):
    """A layer whose variables have every awkward shape and dtype."""

    def build(self, input_shape: Any) -> None:
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")
        self.steps = self.add_weight(shape=(), initializer="zeros", dtype="int32", trainable=False, name="steps")
        self.empty = self.add_weight(shape=(0,), initializer="zeros", name="empty")
        self.one = self.add_weight(shape=(1,), initializer="ones", name="one")
        self.five = self.add_weight(shape=(2, 1, 3, 1, 2), initializer="ones", name="five")
        self.half = self.add_weight(shape=(3,), initializer="ones", dtype="float16", name="half")

    def call(self, x: Any) -> Any:
        return x * self.scale + self.one


def _model(odd: bool = False) -> Any:
    """Normalization (adapted: its ``count`` is a 0-d int64) then Dense layers, built."""
    layers = [keras.Input((3,)), L.Normalization()] + ([_Odd()] if odd else []) + [L.Dense(4), L.Dense(2)]
    model = keras.Sequential(layers)
    model.layers[0].adapt(X)
    return model


def _values(tree: pp.ParameterTree, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {path: (rng.uniform(1, 9, p.shape) * 10).astype(p.dtype) for path, p in tree.items()}


def _assert_values(tree: pp.ParameterTree, expected: dict[str, np.ndarray]) -> None:
    assert sorted(tree.paths()) == sorted(expected)
    for path, p in tree.items():
        value = p.numpy()
        assert isinstance(value, np.ndarray) and value.shape == expected[path].shape, path
        np.testing.assert_array_equal(value, expected[path], err_msg=path)


def _out(model: Any) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(X))


# ---- reads ------------------------------------------------------------------------------


def test_a_zero_dim_variable_reads_as_a_zero_dim_array() -> None:
    tree = pp.tree(_model())
    count = tree["0.count"]
    assert count.shape == () and count.dtype.kind == "i"  # int64 under TensorFlow, int32 under torch
    for value in (count.numpy(), tree.state()["0.count"], tree.state(copy=True)["0.count"]):
        assert isinstance(value, np.ndarray) and value.shape == ()
    np.testing.assert_array_equal(count.numpy(), keras.ops.convert_to_numpy(count.native))


# ---- every write path ---------------------------------------------------------------------


@pytest.mark.parametrize("odd", [False, True], ids=["normalization", "odd_shapes"])
def test_set_and_item_write(odd: bool) -> None:
    tree = pp.tree(_model(odd))
    values = _values(tree, 1)
    for path, p in tree.items():
        p.set(values[path])
    _assert_values(tree, values)
    tree["0.count"][()] = 12
    assert tree["0.count"].numpy() == 12
    tree["0.count"].set(np.int64(13))
    assert tree["0.count"].numpy() == 13


@pytest.mark.parametrize("odd", [False, True], ids=["normalization", "odd_shapes"])
def test_state_round_trip(odd: bool) -> None:
    model = _model(odd)
    tree = pp.tree(model)
    state, y = tree.state(copy=True), _out(model)
    values = _values(tree, 2)
    tree.load_state(values)
    _assert_values(tree, values)
    tree.load_state(state)
    _assert_values(tree, state)
    np.testing.assert_array_equal(_out(model), y)


@pytest.mark.parametrize("odd", [False, True], ids=["normalization", "odd_shapes"])
def test_load_a_saved_file_into_a_fresh_copy(odd: bool, tmp_path: Path) -> None:
    source = _model(odd)
    pp.tree(source).load_state(_values(pp.tree(source), 3))
    file = tmp_path / "normalization.safetensors"
    pp.save(source, file)
    target = _model(odd)
    pp.load(target, file)
    _assert_values(pp.tree(target), pp.tree(source).state(copy=True))
    np.testing.assert_array_equal(_out(target), _out(source))


@pytest.mark.parametrize("odd", [False, True], ids=["normalization", "odd_shapes"])
def test_transfer_into_a_second_instance(odd: bool) -> None:
    source, target = _model(odd), _model(odd)
    pp.tree(source).load_state(_values(pp.tree(source), 4))
    pp.transfer(source, target)
    _assert_values(pp.tree(target), pp.tree(source).state(copy=True))
    np.testing.assert_array_equal(_out(target), _out(source))


def test_initialize_writes_a_zero_dim_variable() -> None:
    tree = pp.tree(_model(odd=True))
    tree["1.scale"].initialize(pp.init.Constant(3), force_reinit=True)
    assert tree["1.scale"].numpy() == 3 and tree["1.scale"].numpy().shape == ()
    tree.initialize(pp.init.Uniform(), seed=0, force_reinit=True)
    assert tree["1.scale"].numpy().shape == () and tree["0.count"].numpy().shape == ()


# ---- a failure midway restores every value --------------------------------------------------


def _exact(tree: pp.ParameterTree) -> dict[str, bytes]:
    return {path: np.asarray(value).tobytes() for path, value in tree.state(copy=True).items()}


def _run_failing(tree: pp.ParameterTree, operation: Callable[[], Any], positions: list[int]) -> None:
    param_class = type(tree.parameters()[0])
    for at in positions:
        before = _exact(tree)
        with failing_writes(param_class, at, RuntimeError("refused")), pytest.raises(errors.WriteFailedError):
            operation()
        assert _exact(tree) == before, f"a write failing at position {at} changed values"


@pytest.mark.parametrize("operation", ["load_state", "load", "transfer"])
def test_a_write_failing_at_any_position_changes_nothing(operation: str, tmp_path: Path) -> None:
    source = _model(odd=True)
    pp.tree(source).load_state(_values(pp.tree(source), 5))
    file = tmp_path / "source.safetensors"
    pp.save(source, file)
    tree = pp.tree(_model(odd=True))
    run: dict[str, Callable[[], Any]] = {
        "load_state": lambda: tree.load_state(pp.tree(source).state(copy=True)),
        "load": lambda: pp.load(tree, file),
        "transfer": lambda: pp.transfer(source, tree),
    }
    _run_failing(tree, run[operation], list(range(len(tree.items()))))
    run[operation]()
    _assert_values(tree, pp.tree(source).state(copy=True))


# ---- a real model -------------------------------------------------------------------------


def _efficientnet() -> Any:
    """EfficientNetB0 with random weights (no download) at a small input size; it holds a Normalization."""
    keras.utils.set_random_seed(0)
    return keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3))


def test_efficientnet_state_load_state_and_a_failed_load() -> None:
    model = _efficientnet()
    tree = pp.tree(model)
    assert any(p.shape == () for p in tree.parameters())
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    state = tree.state(copy=True)
    y = keras.ops.convert_to_numpy(model(x))
    shifted = {path: value + 1 for path, value in state.items()}
    tree.load_state(shifted)
    assert not np.array_equal(keras.ops.convert_to_numpy(model(x)), y)
    zero_dim = [i for i, p in enumerate(tree.parameters()) if p.shape == ()]
    _run_failing(tree, lambda: tree.load_state(state), [zero_dim[0], zero_dim[0] + 1, len(tree.items()) - 1])
    _assert_values(tree, shifted)
    tree.load_state(state)
    _assert_values(tree, state)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), y)

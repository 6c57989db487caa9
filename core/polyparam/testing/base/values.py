"""Values: writes reach the framework, wrong shapes and dtypes change nothing, state round trips, gradients."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam.backend import Case, ModelFactory
from polyparam.testing.base.kit import _inputs, _Kit, assert_unchanged, snapshot

__all__ = ["BaseValueTests"]


class BaseValueTests(_Kit):
    """Writes reach the framework; refused writes change nothing; state round trips; gradients."""

    def test_set_round_trip(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """set() stores the value; float64 input is cast to the parameter's dtype."""
        case, tree = mlp
        p = tree[f"{case.layers[0]}.weight"]
        value = np.arange(32, dtype=np.float64).reshape(8, 4) / 7
        p.set(value)
        np.testing.assert_array_equal(p.numpy(), value.astype(np.float32))

    def test_writes_reach_the_framework(self, models: ModelFactory, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """After set(), the framework's forward pass uses the new values."""
        case, tree = mlp
        last = case.layers[-1]
        tree[f"{last}.weight"].set(np.zeros((1, 8), np.float32))
        tree[f"{last}.bias"].set(np.array([3.0], np.float32))
        out = models.forward(case.model, _inputs(case))
        np.testing.assert_allclose(out, np.full((3, 1), 3.0, np.float32))

    def test_item_writes(self, models: ModelFactory, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """p[i, j] = v writes through; p.numpy()[...] += is not needed."""
        case, tree = mlp
        p = tree[f"{case.layers[0]}.weight"]
        before = np.array(p.numpy(), copy=True)
        p[0, 0] = 42
        after = p.numpy()
        assert after[0, 0] == 42
        np.testing.assert_array_equal(after[1:], before[1:])
        last = case.layers[-1]
        tree[f"{last}.weight"][:] = 0
        tree[f"{last}.bias"][0] = -2
        np.testing.assert_allclose(models.forward(case.model, _inputs(case)), np.full((3, 1), -2.0))

    def test_writes_keep_no_hold_on_the_value(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """set(), load_state() and item writes copy the value: a later write to the caller's array (a
        torch tensor's memory after ``pp.transfer``, a buffer reused) never reaches the parameter.

        The arrays are page-aligned: TensorFlow and JAX adopt an aligned NumPy buffer without copying it.
        """
        case, tree = mlp
        first, last = case.layers[0], case.layers[-1]
        weight, bias = _aligned(np.arange(32).reshape(8, 4) / 7), _aligned(np.arange(8) / 3)
        tree[f"{first}.weight"].set(weight)
        tree[f"{first}.bias"].set(bias)
        state = {path: _aligned(value + 1) for path, value in tree.state(copy=True).items()}
        kept = {path: np.array(value, copy=True) for path, value in state.items()}
        tree.load_state(state)
        row = _aligned(np.full(8, 5.0))
        tree[f"{last}.weight"][0, :] = row
        kept[f"{last}.weight"][0, :] = 5.0
        for array in (weight, bias, row, *state.values()):
            array[...] = 99
        for path, value in kept.items():
            np.testing.assert_array_equal(tree[path].numpy(), value, err_msg=path)

    def test_set_wrong_shape_changes_nothing(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """A wrong shape (also a transposed one) raises ShapeMismatchError with the facts."""
        case, tree = mlp
        before = snapshot(tree)
        path = f"{case.layers[0]}.weight"
        for bad in (np.zeros((4, 8), np.float32), np.zeros((8,), np.float32), np.zeros((8, 4, 1), np.float32)):
            with pytest.raises(errors.ShapeMismatchError) as info:
                tree[path].set(bad)
            assert info.value.path == path
            assert info.value.expected == (8, 4) and info.value.got == bad.shape
            assert path in str(info.value)
        assert_unchanged(before, tree)

    def test_set_wrong_dtype_changes_nothing(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """Values that cannot be cast without changing kind raise DTypeMismatchError."""
        case, tree = mlp
        before = snapshot(tree)
        path = f"{case.layers[0]}.bias"
        for bad in (np.zeros(8, np.complex64), np.array(["a"] * 8)):
            with pytest.raises(errors.DTypeMismatchError) as info:
                tree[path].set(bad)
            assert info.value.path == path
        with pytest.raises(errors.DTypeMismatchError):
            tree[path][0] = 1j
        assert_unchanged(before, tree)

    def test_a_value_the_dtype_cannot_hold_changes_nothing(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """A finite float64 beyond float32's range (a cast would make it inf) raises DTypeMismatchError naming
        the path and the range, by ``set``, an item write and ``load_state`` (all or nothing); an inf given is
        written as it is."""
        case, tree = mlp
        before = snapshot(tree)
        path = f"{case.layers[0]}.bias"
        huge = np.full(8, 1e300)
        with pytest.raises(errors.DTypeMismatchError, match="float32 holds") as info:
            tree[path].set(huge)
        assert info.value.path == path
        with pytest.raises(errors.DTypeMismatchError, match="float32 holds"):
            tree[path][0] = -1e300
        state = {p: value.astype(np.float64) + 1 for p, value in before.items()}
        state[path] = huge
        with pytest.raises(errors.DTypeMismatchError, match=path.replace(".", r"\.")):
            tree.load_state(state)
        assert_unchanged(before, tree)
        tree[path][0] = np.inf
        assert np.isinf(tree[path].numpy()[0])

    def test_load_state_round_trip(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """load_state(state(copy=True)) restores every value."""
        _, tree = mlp
        saved = tree.state(copy=True)
        tree.initialize(pp.init.Constant(0.5), force_reinit=True)
        tree.load_state(saved)
        for path, value in saved.items():
            np.testing.assert_array_equal(tree[path].numpy(), value)

    def test_state_copy_arrays_are_independent(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """state(copy=True) gives writable arrays that share no memory with the parameters or each other."""
        _, tree = mlp
        before = snapshot(tree)
        copies = tree.state(copy=True)
        views = tree.state()
        assert copies.keys() == views.keys()
        for path, value in copies.items():
            assert value.flags.writeable, path
            assert not any(np.shares_memory(value, other) for other in views.values()), path
            assert not any(np.shares_memory(value, other) for key, other in copies.items() if key != path), path
            value += 1
        assert_unchanged(before, tree)

    def test_load_state_is_all_or_nothing(self, rgnet: tuple[Case, pp.ParameterTree]) -> None:
        """A fault at any position (wrong shape, wrong dtype) changes no parameter."""
        _, tree = rgnet
        before = snapshot(tree)
        good = {path: value + 1 for path, value in before.items()}
        for i, path in enumerate(good):
            fault = "shape" if i % 2 == 0 else "dtype"
            state = dict(good)
            state[path] = np.zeros(good[path].shape + (1,), np.float32) if fault == "shape" else \
                good[path].astype(np.complex64)
            expected = errors.ShapeMismatchError if fault == "shape" else errors.DTypeMismatchError
            with pytest.raises(expected) as info:
                tree.load_state(state)
            assert path in str(info.value)
            assert_unchanged(before, tree)

    def test_load_state_keys(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """Missing and unexpected keys are refused with strict=True and skipped without."""
        _, tree = mlp
        before = snapshot(tree)
        paths = list(before)
        missing = {path: v + 1 for path, v in before.items() if path != paths[-1]}
        with pytest.raises(errors.StateError) as info:
            tree.load_state(missing)
        assert info.value.path == paths[-1]
        unexpected = {**{path: v + 1 for path, v in before.items()}, "extra.weight": np.zeros(3, np.float32)}
        with pytest.raises(errors.StateError) as info:
            tree.load_state(unexpected)
        assert "extra.weight" in str(info.value)
        assert_unchanged(before, tree)
        tree.load_state(unexpected, strict=False)
        tree.load_state(missing, strict=False)
        for path in paths:
            np.testing.assert_array_equal(tree[path].numpy(), before[path] + 1)

    def test_grad(self, models: ModelFactory, mlp: tuple[Case, pp.ParameterTree],
                 require: Callable[[str], None]) -> None:
        """grad() is None before backward; after it, d sum(out) / d last bias is the batch size."""
        require("gradients")
        case, tree = mlp
        for _, p in tree.items():
            assert p.grad() is None
        x = _inputs(case, batch=5)
        models.backward(case.model, x)
        for _, p in tree.items():
            g = p.grad()
            assert g is not None and g.shape == p.shape and np.isfinite(g).all()
        np.testing.assert_allclose(tree[f"{case.layers[-1]}.bias"].grad(), [5.0], rtol=1e-6)


def _aligned(value: np.ndarray) -> np.ndarray:
    """A float32 copy of ``value`` whose data starts on a page boundary (4096 bytes)."""
    value = np.asarray(value, np.float32)
    raw = np.empty(value.nbytes + 4096, np.uint8)
    start = -raw.ctypes.data % 4096
    out = raw[start:start + value.nbytes].view(np.float32).reshape(value.shape)
    out[...] = value
    return out

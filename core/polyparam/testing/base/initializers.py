"""Initialization: built-in, per parameter and per block, seeded, custom (Gluon style, Keras style, callables)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam.backend import Case, ModelFactory
from polyparam.testing.base.kit import _Kit, assert_unchanged, reference_values, snapshot

__all__ = ["BaseInitializerTests"]


class BaseInitializerTests(_Kit):
    """initialize() on trees, blocks and parameters: built-in, seeded, custom, and the refusals."""

    def test_normal_weights_zero_biases(self, rgnet: tuple[Case, pp.ParameterTree]) -> None:
        """Normal(sigma=0.01): weights N(0, 0.01^2), biases cleared to 0."""
        _, tree = rgnet
        report = tree.initialize(pp.init.Normal(sigma=0.01), force_reinit=True)
        assert report.initialized == tree.paths()
        weights = np.concatenate([p.numpy().ravel() for p in tree.select("*.weight")])
        assert 0.008 < weights.std() < 0.012
        for p in tree.select("*.bias"):
            np.testing.assert_array_equal(p.numpy(), 0)

    def test_declared_fills_every_parameter_and_repeats_with_the_seed(self, mlp: tuple[Case, pp.ParameterTree]
                                                                         ) -> None:
        """pp.init.Declared: what the framework declares (Parameter._declared_initializer), else the default."""
        _, tree = mlp
        init = pp.init.Declared(default=pp.init.Uniform(0.5))
        tree.initialize(init, seed=3, force_reinit=True)
        first = snapshot(tree)
        tree.initialize(init, seed=3, force_reinit=True)
        assert_unchanged(first, tree)
        assert all(np.all(np.isfinite(v)) for v in first.values())

    def test_constant(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """Constant(1): weights 1, biases 0."""
        _, tree = mlp
        tree.initialize(pp.init.Constant(1), force_reinit=True)
        for p in tree.select("*.weight"):
            np.testing.assert_array_equal(p.numpy(), 1)
        for p in tree.select("*.bias"):
            np.testing.assert_array_equal(p.numpy(), 0)

    def test_per_parameter_and_per_block(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """One parameter with Xavier, one block with Constant(42); nothing else moves."""
        case, tree = mlp
        first, last = case.layers[0], case.layers[-1]
        before = snapshot(tree)
        tree[f"{first}.weight"].initialize(pp.init.Xavier(), force_reinit=True)
        tree[last].initialize(pp.init.Constant(42), force_reinit=True)
        bound = np.sqrt(6 / (4 + 8))
        w = tree[f"{first}.weight"].numpy()
        assert np.abs(w).max() <= bound and not np.array_equal(w, before[f"{first}.weight"])
        np.testing.assert_array_equal(tree[f"{last}.weight"].numpy(), 42)
        np.testing.assert_array_equal(tree[f"{last}.bias"].numpy(), 0)
        np.testing.assert_array_equal(tree[f"{first}.bias"].numpy(), before[f"{first}.bias"])

    def test_initialized_parameters_are_skipped_with_a_warning(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """Without force_reinit, initialized parameters are kept and reported as skipped."""
        _, tree = mlp
        before = snapshot(tree)
        with pytest.warns(errors.AlreadyInitializedWarning):
            report = tree.initialize(pp.init.Constant(5))
        assert report.initialized == [] and sorted(report.skipped) == sorted(tree.paths())
        assert_unchanged(before, tree)

    @pytest.mark.parametrize("init", [pp.init.Uniform(0.07), pp.init.Xavier(), pp.init.Normal(0.5),
                                      pp.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)],
                             ids=["uniform", "xavier", "normal", "xavier-gaussian-in"])
    def test_seeded_values_are_the_reference_draw(self, rgnet: tuple[Case, pp.ParameterTree],
                                                 init: pp.Initializer) -> None:
        """With a seed, every weight is bit-identical to the NumPy reference draw for its path."""
        _, tree = rgnet
        tree.initialize(init, seed=1234, force_reinit=True)
        for p in tree.select("*.weight"):
            np.testing.assert_array_equal(p.numpy(), reference_values(p, init, 1234), err_msg=p.path)

    def test_seeded_values_do_not_depend_on_order(self, models: ModelFactory) -> None:
        """Initializing a block first and then the whole tree gives the whole-tree values."""
        one, two = models.rgnet(), models.rgnet()
        a, b = pp.tree(one.model), pp.tree(two.model)
        a.initialize(pp.init.Xavier(), seed=5, force_reinit=True)
        b[one.layers[-1]].initialize(pp.init.Xavier(), seed=5, force_reinit=True)
        b.initialize(pp.init.Xavier(), seed=5, force_reinit=True)
        for path, value in a.state().items():
            np.testing.assert_array_equal(b[path].numpy(), value)

    def test_unseeded_calls_differ(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """Without a seed, every call draws new values."""
        case, tree = mlp
        path = f"{case.layers[0]}.weight"
        tree.initialize(pp.init.Uniform(), force_reinit=True)
        first = np.array(tree[path].numpy(), copy=True)
        tree.initialize(pp.init.Uniform(), force_reinit=True)
        assert not np.array_equal(first, tree[path].numpy())

    def test_custom_init_weight_style(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """The chapter's MyInit (Gluon style) with the per-parameter generator."""
        _, tree = mlp
        names = []

        class MyInit(pp.init.Initializer):
            def init_weight(self, name: str, arr: np.ndarray) -> None:
                names.append((name, self.param.path, arr.shape))  # type: ignore[union-attr]  # set while filling
                arr[:] = self.rng.uniform(-10, 10, arr.shape)
                arr *= np.abs(arr) >= 5

        tree.initialize(MyInit(), force_reinit=True)
        weights = tree.select("*.weight")
        assert [(p.native_name, p.path, p.shape) for p in weights] == names
        for p in weights:
            w = p.numpy()
            assert ((w == 0) | ((np.abs(w) >= 5) & (np.abs(w) <= 10))).all()
        for p in tree.select("*.bias"):
            np.testing.assert_array_equal(p.numpy(), 0)

    @pytest.mark.parametrize("base", [pp.init.Zero, pp.init.Initializer], ids=["built-in subclass", "custom"])
    def test_a_fill_of_part_of_a_tensor_keeps_the_rest(self, mlp: tuple[Case, pp.ParameterTree],
                                                        base: type[pp.init.Initializer]) -> None:
        """Elements a fill leaves keep their values, whether the backend fills through a view of the storage,
        a scratch array or a fresh buffer: never memory no one wrote."""
        _, tree = mlp

        class FirstRow(base):  # type: ignore[misc, valid-type]  # a class chosen per test
            def init_weight(self, name: str, arr: np.ndarray) -> None:
                arr[0] = 3.0

        weights = tree.select("*.weight")
        weights.initialize(pp.init.Constant(2.0), force_reinit=True)
        weights.initialize(FirstRow(), force_reinit=True)
        for p in weights:
            w = p.numpy()
            np.testing.assert_array_equal(w[0], 3.0, err_msg=p.path)
            np.testing.assert_array_equal(w[1:], 2.0, err_msg=p.path)

    def test_custom_keras_style_and_callable(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """Keras-style __call__(shape, dtype) and plain callables."""
        _, tree = mlp

        class Quarter(pp.init.Initializer):
            def __call__(self, shape: Sequence[int], dtype: Any = "float32") -> np.ndarray:
                return np.full(shape, 0.25, dtype)

        tree.initialize(Quarter(), force_reinit=True)
        for p in tree.select("*.weight"):
            np.testing.assert_array_equal(p.numpy(), 0.25)
        tree.initialize(lambda shape, dtype: np.full(shape, -1.0, dtype), force_reinit=True)
        for p in tree.select("*.weight"):
            np.testing.assert_array_equal(p.numpy(), -1.0)

    def test_custom_wrong_shape_changes_nothing(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """A custom initializer returning the wrong shape raises InitializerError; nothing changes."""
        case, tree = mlp
        before = snapshot(tree)
        calls = []

        def bad(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            calls.append(shape)
            return np.zeros(shape if len(calls) == 1 else (3, 3), dtype)

        with pytest.raises(errors.InitializerError) as info:
            tree.initialize(bad, force_reinit=True)
        assert info.value.path == f"{case.layers[-1]}.weight"
        assert_unchanged(before, tree)

    def test_fan_initializer_on_a_vector_is_refused(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """Xavier given to a bias directly raises InitializerError naming it; nothing changes."""
        case, tree = mlp
        before = snapshot(tree)
        path = f"{case.layers[0]}.bias"
        with pytest.raises(errors.InitializerError) as info:
            tree[path].initialize(pp.init.Xavier(), force_reinit=True)
        assert info.value.path == path
        assert_unchanged(before, tree)

    def test_negative_scale_is_refused(self) -> None:
        with pytest.raises(errors.InitializerError):
            pp.init.Normal(sigma=-1)
        with pytest.raises(errors.InitializerError):
            pp.init.Uniform(scale=-0.1)

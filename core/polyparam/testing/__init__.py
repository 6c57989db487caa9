"""The conformance kit: every test a polyparam backend must pass.

A backend author writes one small test module::

    import pytest
    from polyparam.testing import ConformanceTests
    from polyparam_mybackend import _backend

    class TestMyBackend(ConformanceTests):
        @pytest.fixture
        def backend(self):
            return _backend

The kit builds the seed chapter's models through ``backend.models()`` (a
:class:`polyparam.ModelFactory`) and checks access, canonical paths, values, the
error contract, initialization (built-in, per-parameter, custom, seeded, deferred),
ties (detection, write-through, summed gradients, tie/untie after construction) and
state round trips. Tests that need a capability the backend does not declare in
``CAPABILITIES`` are skipped with the reason; ``polyparam``'s own CI fails on skips.

Checkpoints (BaseCheckpointTests: round trips, ties through files, a fault at every
position changing nothing, transfer between two models of the backend) are included.
Not covered here: cross-framework transfer (tests/checkpoint),
device moves (backend-specific).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam._backend import BACKEND_NAMES
from polyparam._models import Case, ModelFactory
from polyparam.init import ParamInfo
from polyparam.testing._checkpoint import BaseCheckpointTests
from polyparam.testing._initializers import BaseInitializerLibraryTests

__all__ = [
    "BaseAccessTests",
    "BaseBackendModuleTests",
    "BaseDeferredTests",
    "BaseInitializerLibraryTests",
    "BaseInitializerTests",
    "BaseTieTests",
    "BaseValueTests",
    "ConformanceTests",
    "reference_values",
    "snapshot",
]


def snapshot(tree: pp.ParameterTree) -> dict[str, np.ndarray]:
    """Independent copies of every initialized parameter's value, by path."""
    return {path: np.array(p.numpy(), copy=True) for path, p in tree.items() if p.state == "initialized"}


def assert_unchanged(before: dict[str, np.ndarray], tree: pp.ParameterTree) -> None:
    after = snapshot(tree)
    assert after.keys() == before.keys()
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=f"{path} changed")


def reference_values(p: pp.Parameter, init: pp.Initializer, seed: int) -> np.ndarray:
    """What ``init`` with ``seed`` must give ``p``: the NumPy reference draw in canonical layout."""
    info = ParamInfo(path=p.path, native_name=p.native_name, role=p.role, axes=p.axes,
                     shape=tuple(p.shape), dtype=p.dtype, groups=p.groups)
    out = np.empty(info.shape, info.dtype)
    init.fill(out, info, seed=seed)
    return out


def _inputs(case: Case, batch: int = 3) -> np.ndarray:
    return np.random.default_rng(0).uniform(-1, 1, size=(batch, case.in_features)).astype(np.float32)


class _Kit:
    """Fixtures and helpers every Base*Tests class shares."""

    @pytest.fixture
    def backend(self) -> Any:
        """The backend module under test (satisfies :class:`polyparam.Backend`)."""
        raise NotImplementedError("Override the `backend` fixture in your ConformanceTests subclass.")

    @pytest.fixture
    def models(self, backend: Any) -> ModelFactory:
        """The model factory; defaults to ``backend.models()``."""
        return backend.models()

    @pytest.fixture
    def require(self, backend: Any) -> Callable[[str], None]:
        def require(capability: str) -> None:
            if capability not in backend.CAPABILITIES:
                pytest.skip(f"{backend.NAME} backend does not declare capability {capability!r}")

        return require

    @pytest.fixture
    def mlp(self, models: ModelFactory) -> tuple[Case, pp.ParameterTree]:
        case = models.mlp()
        return case, pp.tree(case.model)

    @pytest.fixture
    def rgnet(self, models: ModelFactory) -> tuple[Case, pp.ParameterTree]:
        case = models.rgnet()
        return case, pp.tree(case.model)

    @pytest.fixture
    def shared(self, models: ModelFactory, require: Callable[[str], None]) -> tuple[Case, pp.ParameterTree]:
        require("tying")
        case = models.shared()
        return case, pp.tree(case.model)

    @pytest.fixture
    def lazy(self, models: ModelFactory, require: Callable[[str], None]) -> tuple[Case, pp.ParameterTree]:
        require("deferred")
        case = models.lazy()
        return case, pp.tree(case.model)


class BaseBackendModuleTests(_Kit):
    def test_backend_defines_the_protocol_names(self, backend: Any) -> None:
        """The backend module defines exactly the Backend protocol's public names."""
        assert sorted(getattr(backend, "__all__", [])) == sorted(BACKEND_NAMES)
        for name in BACKEND_NAMES:
            assert hasattr(backend, name), name
        assert isinstance(backend.CAPABILITIES, frozenset)
        assert isinstance(backend.framework_version(), str)

    def test_backend_is_registered(self, backend: Any) -> None:
        """The plugin system finds the backend by name."""
        assert backend.NAME in pp.list_backends()
        assert pp.get_backend(backend.NAME) is backend

    def test_backend_owns_its_models(self, backend: Any, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """pp.tree dispatches the backend's models to it."""
        case, tree = mlp
        assert backend.is_native(case.model)
        assert pp.backend_for(case.model) == backend.NAME
        assert tree.backend == backend.NAME
        assert tree.native is case.model


class BaseAccessTests(_Kit):
    def test_mlp_shapes_dtypes_devices(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """Canonical layout: dense weights are (out, in)."""
        case, tree = mlp
        first, last = case.layers[0], case.layers[-1]
        assert tree[f"{first}.weight"].shape == (8, 4)
        assert tree[f"{first}.bias"].shape == (8,)
        assert tree[f"{last}.weight"].shape == (1, 8)
        assert tree[f"{last}.bias"].shape == (1,)
        for path, p in tree.items():
            assert p.path == path
            assert p.dtype == np.float32
            assert isinstance(p.device, str) and p.device
            value = p.numpy()
            assert isinstance(value, np.ndarray)
            assert value.shape == p.shape and value.dtype == np.float32
            assert p.state == "initialized"

    def test_roles(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """Weights and biases carry their roles and dense axis roles."""
        case, tree = mlp
        weight = tree[f"{case.layers[0]}.weight"]
        assert weight.role == "weight" and weight.axes == ("out", "in")
        assert tree[f"{case.layers[0]}.bias"].role == "bias"

    def test_positional_indexing_mirrors_the_framework(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """tree[i] is the i-th child block and tree[i]["bias"] its bias."""
        case, tree = mlp
        last = case.layers[-1]
        block = tree[int(last)]
        assert isinstance(block, pp.ParameterTree)
        assert block.path == last
        assert block["bias"].path == f"{last}.bias"
        assert block["bias"].is_tied_to(tree[f"{last}.bias"])

    def test_nested_indexing(self, rgnet: tuple[Case, pp.ParameterTree]) -> None:
        """tree[0][1][0]["bias"] is the first dense layer of the second inner block."""
        case, tree = rgnet
        bias = tree[0][1][0]["bias"]
        assert bias.path == f"{case.layers[2]}.bias"
        assert tree[bias.path].is_tied_to(bias)

    def test_every_path_navigates(self, rgnet: tuple[Case, pp.ParameterTree]) -> None:
        """Dotted paths, nested names and positions reach the same parameters."""
        case, tree = rgnet
        for path, p in tree.items():
            assert tree[path].is_tied_to(p)
            node: Any = tree
            segments = path.split(".")
            for segment in segments[:-1]:
                node = node[segment]
            assert node[segments[-1]].is_tied_to(p)

        def walk(node: pp.ParameterTree) -> None:
            for i, (name, child) in enumerate(node.children()):
                assert node[i].path == child.path
                assert node[name].path == child.path
                walk(child)

        walk(tree)
        assert len(tree.items()) == 2 * len(case.layers)

    def test_subtree_items(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """A block's items are its own parameters, with full paths."""
        case, tree = mlp
        first = case.layers[0]
        assert [path for path, _ in tree[first].items()] == [f"{first}.weight", f"{first}.bias"]

    def test_native_names_are_unique_and_found(self, rgnet: tuple[Case, pp.ParameterTree]) -> None:
        """get() finds each parameter by its framework name."""
        _, tree = rgnet
        names = [p.native_name for _, p in tree.items()]
        assert len(set(names)) == len(names)
        for _, p in tree.items():
            assert tree.get(p.native_name).is_tied_to(p)
            assert p.native is not None

    def test_get_by_suffix(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """A unique suffix works; an ambiguous one is refused with the candidates."""
        case, tree = mlp
        last = case.layers[-1]
        assert tree.get(f"{last}.bias").is_tied_to(tree[f"{last}.bias"])
        with pytest.raises(errors.AmbiguousNameError) as info:
            tree.get("bias")
        assert info.value.path == "bias" and len(info.value.got) == 2
        with pytest.raises(errors.ParameterNotFoundError) as info:
            tree.get("no_such_parameter_zz")
        assert info.value.path == "no_such_parameter_zz"

    def test_unknown_paths(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """Unknown paths and positions raise ParameterNotFoundError naming the path."""
        _, tree = mlp
        with pytest.raises(errors.ParameterNotFoundError) as info:
            tree["no.such.path"]
        assert info.value.path == "no.such.path"
        with pytest.raises(errors.ParameterNotFoundError):
            tree[99]
        with pytest.raises(KeyError):  # also a KeyError, as users expect from a mapping
            tree["nope"]

    def test_select(self, rgnet: tuple[Case, pp.ParameterTree]) -> None:
        """select() by glob, regex and predicate."""
        case, tree = rgnet
        weights = tree.select("*.weight")
        assert weights.paths() == [f"{layer}.weight" for layer in case.layers]
        assert tree.select(regex=r"bias$").paths() == [f"{layer}.bias" for layer in case.layers]
        assert tree.select(where=lambda p: p.role == "bias").paths() == [f"{layer}.bias" for layer in case.layers]
        assert tree.select("0.*", where=lambda p: p.role == "weight").paths() == \
            [f"{layer}.weight" for layer in case.layers if layer.startswith("0.")]

    def test_state_has_every_parameter(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """state() maps each path to its canonical value."""
        _, tree = mlp
        state = tree.state()
        assert list(state) == tree.paths()
        for path, value in state.items():
            np.testing.assert_array_equal(value, tree[path].numpy())

    def test_printed_table(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """print(tree) lists every path, shape and the totals."""
        _, tree = mlp
        text = str(tree)
        for path, p in tree.items():
            assert path in text
        assert "4 tensors" in text and "49 scalars" in text


class BaseValueTests(_Kit):
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


class BaseInitializerTests(_Kit):
    def test_normal_weights_zero_biases(self, rgnet: tuple[Case, pp.ParameterTree]) -> None:
        """Normal(sigma=0.01): weights N(0, 0.01^2), biases cleared to 0."""
        _, tree = rgnet
        report = tree.initialize(pp.init.Normal(sigma=0.01), force_reinit=True)
        assert report.initialized == tree.paths()
        weights = np.concatenate([p.numpy().ravel() for p in tree.select("*.weight")])
        assert 0.008 < weights.std() < 0.012
        for p in tree.select("*.bias"):
            np.testing.assert_array_equal(p.numpy(), 0)

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
        """The seed's MyInit (Gluon style) with the per-parameter generator."""
        _, tree = mlp
        names = []

        class MyInit(pp.init.Initializer):
            def init_weight(self, name: str, arr: np.ndarray) -> None:
                names.append((name, self.param.path, arr.shape))
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

    def test_custom_keras_style_and_callable(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """Keras-style __call__(shape, dtype) and plain callables."""
        _, tree = mlp

        class Quarter(pp.init.Initializer):
            def __call__(self, shape: tuple[int, ...], dtype: Any = "float32") -> np.ndarray:
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


class BaseDeferredTests(_Kit):
    def test_unknown_dimensions_show_as_none(self, lazy: tuple[Case, pp.ParameterTree]) -> None:
        case, tree = lazy
        weight = tree[f"{case.layers[0]}.weight"]
        assert weight.shape[0] == 256 and weight.shape[1] is None
        assert weight.state == "deferred"
        assert "?" in str(tree)

    def test_reading_a_deferred_parameter_teaches(self, lazy: tuple[Case, pp.ParameterTree]) -> None:
        case, tree = lazy
        path = f"{case.layers[0]}.weight"
        with pytest.raises(errors.DeferredInitializationError) as info:
            tree[path].numpy()
        assert info.value.path == path and "forward" in str(info.value)

    def test_initializer_runs_at_first_forward_only(self, models: ModelFactory,
                                                    lazy: tuple[Case, pp.ParameterTree]) -> None:
        """initialize() is recorded; the first forward runs it once per weight; the second does not."""
        case, tree = lazy
        calls = []

        class PrintInit(pp.init.Initializer):
            def init_weight(self, name: str, arr: np.ndarray) -> None:
                calls.append((self.param.path, arr.shape))
                arr[...] = 0.5

        report = tree.initialize(PrintInit())
        assert calls == []
        assert f"{case.layers[0]}.weight" in report.deferred
        x = _inputs(case)
        models.forward(case.model, x)
        assert calls == [(f"{case.layers[0]}.weight", (256, 20)), (f"{case.layers[1]}.weight", (10, 256))]
        np.testing.assert_array_equal(tree[f"{case.layers[0]}.weight"].numpy(), 0.5)
        np.testing.assert_array_equal(tree[f"{case.layers[0]}.bias"].numpy(), 0)
        models.forward(case.model, x)
        assert len(calls) == 2

    def test_deferred_seeded_values_equal_eager_ones(self, models: ModelFactory,
                                                     lazy: tuple[Case, pp.ParameterTree]) -> None:
        """Values drawn at the first forward equal the reference (eager) draw for the same seed."""
        case, tree = lazy
        init = pp.init.Xavier()
        tree.initialize(init, seed=11)
        models.forward(case.model, _inputs(case))
        for p in tree.select("*.weight"):
            np.testing.assert_array_equal(p.numpy(), reference_values(p, init, 11), err_msg=p.path)


class BaseTieTests(_Kit):
    @staticmethod
    def _groups(tree: pp.ParameterTree) -> set[frozenset[str]]:
        return {frozenset(group.paths) for group in tree.ties()}

    def test_ties_are_detected(self, shared: tuple[Case, pp.ParameterTree]) -> None:
        case, tree = shared
        a, b = case.tied[0]
        assert self._groups(tree) == {frozenset({f"{a}.weight", f"{b}.weight"}), frozenset({f"{a}.bias", f"{b}.bias"})}
        assert tree[f"{a}.weight"].is_tied_to(tree[f"{b}.weight"])
        paths = tree.paths()
        assert f"{a}.weight" in paths and f"{b}.weight" not in paths
        assert len(paths) == 2 * len(case.layers) - 2
        assert f"{b}.weight" in str(tree)

    def test_writes_are_visible_through_every_member(self, shared: tuple[Case, pp.ParameterTree]) -> None:
        case, tree = shared
        a, b = case.tied[0]
        tree[f"{a}.weight"][0, 0] = 100
        assert tree[f"{b}.weight"].numpy()[0, 0] == 100
        tree[f"{b}.bias"].set(np.full(8, 7, np.float32))
        np.testing.assert_array_equal(tree[f"{a}.bias"].numpy(), 7)

    def test_gradients_of_a_tied_group_are_summed(self, models: ModelFactory, shared: tuple[Case, pp.ParameterTree],
                                                  require: Callable[[str], None]) -> None:
        """The tied gradient equals the sum of the members' gradients once untied."""
        require("gradients")
        case, tree = shared
        a, b = case.tied[0]
        x = _inputs(case, batch=4)
        models.backward(case.model, x)
        tied = np.array(tree[f"{a}.weight"].grad(), copy=True)
        for group in tree.ties():
            group.untie()
        assert tree.ties() == []
        models.backward(case.model, x)
        g1, g2 = tree[f"{a}.weight"].grad(), tree[f"{b}.weight"].grad()
        assert not np.allclose(g1, 0) and not np.allclose(g2, 0)
        np.testing.assert_allclose(tied, g1 + g2, rtol=1e-4, atol=1e-6)

    def test_untie_then_tie_after_construction(self, models: ModelFactory,
                                               shared: tuple[Case, pp.ParameterTree]) -> None:
        """untie() gives members their own copies; pp.tie() ties blocks again, on every backend."""
        case, tree = shared
        a, b = case.tied[0]
        for group in tree.ties():
            group.untie()
        tree[f"{a}.weight"][0, 0] = 1.5
        assert tree[f"{b}.weight"].numpy()[0, 0] != 1.5
        tree[b].initialize(pp.init.Constant(3), force_reinit=True)
        groups = pp.tie(tree[a], tree[b])
        assert {frozenset(g.paths) for g in groups} == self._groups(tree)
        assert self._groups(tree) == {frozenset({f"{a}.weight", f"{b}.weight"}), frozenset({f"{a}.bias", f"{b}.bias"})}
        assert tree[f"{b}.weight"].numpy()[0, 0] == 1.5  # members take the first argument's value
        tree[f"{b}.weight"][1, 1] = -4
        assert tree[f"{a}.weight"].numpy()[1, 1] == -4
        out = models.forward(case.model, _inputs(case))
        assert np.isfinite(out).all()

    def test_tying_parameters_of_different_shapes_is_refused(self, shared: tuple[Case, pp.ParameterTree]) -> None:
        case, tree = shared
        before = self._groups(tree)
        first, last = case.layers[0], case.layers[-1]
        with pytest.raises(errors.TieError) as info:
            pp.tie(tree[f"{first}.weight"], tree[f"{last}.weight"])
        assert info.value.path == f"{last}.weight"
        with pytest.raises(errors.TieError):
            pp.tie(tree[first], tree[last])
        with pytest.raises(errors.TieError):
            pp.tie(tree[f"{first}.weight"])
        assert self._groups(tree) == before

    def test_a_tied_group_is_initialized_once(self, shared: tuple[Case, pp.ParameterTree]) -> None:
        case, tree = shared
        a, b = case.tied[0]
        report = tree.initialize(pp.init.Uniform(), seed=3, force_reinit=True)
        assert f"{a}.weight" in report.initialized and f"{b}.weight" not in report.initialized
        np.testing.assert_array_equal(tree[f"{a}.weight"].numpy(), tree[f"{b}.weight"].numpy())

    def test_load_state_restores_tied_values(self, shared: tuple[Case, pp.ParameterTree]) -> None:
        """A tie group takes one value from a state; conflicting values are refused."""
        case, tree = shared
        a, b = case.tied[0]
        state = tree.state(copy=True)
        state[f"{a}.weight"] = state[f"{a}.weight"] + 1
        tree.load_state(state)
        np.testing.assert_array_equal(tree[f"{b}.weight"].numpy(), state[f"{a}.weight"])
        before = snapshot(tree)
        state[f"{b}.weight"] = state[f"{a}.weight"] + 1
        with pytest.raises(errors.StateError):
            tree.load_state(state)
        assert_unchanged(before, tree)


class ConformanceTests(BaseBackendModuleTests, BaseAccessTests, BaseValueTests, BaseInitializerTests,
                       BaseInitializerLibraryTests, BaseDeferredTests, BaseTieTests, BaseCheckpointTests):
    """Every test a polyparam backend must pass. Subclass it and override ``backend``.

    Optional capabilities (skipped when not in ``backend.CAPABILITIES``):
    ``"tying"``, ``"deferred"``, ``"gradients"``.
    """

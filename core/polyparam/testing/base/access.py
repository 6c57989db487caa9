"""Access: the backend module's names and registration, canonical paths, indexing, look-ups, state and printing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam.backend import BACKEND_NAMES, Case
from polyparam.testing.base.kit import _Kit

__all__ = ["BaseAccessTests", "BaseBackendModuleTests"]


class BaseBackendModuleTests(_Kit):
    """The backend module defines the protocol's names, is registered, and owns its models."""

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
    """Canonical shapes, roles and paths; indexing by name, position and suffix; select, state and print."""

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
            assert (p.ndim, p.size, p.nbytes) == (value.ndim, value.size, value.nbytes)
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

    def test_the_walk_lists_what_the_core_walk_lists(self, rgnet: tuple[Case, pp.ParameterTree]) -> None:
        """A backend's own ``_occurrences`` (a speed hook) lists what the core's node-by-node walk lists, in the
        same order and storages, from every node (shared blocks under each of their paths)."""
        _, tree = rgnet

        def check(node: pp.ParameterTree) -> None:
            ours, core = node._occurrences(), pp.ParameterTree._occurrences(node)
            assert [path for path, _ in ours] == [path for path, _ in core]
            assert [p._identity() for _, p in ours] == [p._identity() for _, p in core]
            assert [p.shape for _, p in ours] == [p.shape for _, p in core]
            for _, child in node.children():
                check(child)

        check(tree)

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
        with pytest.raises(errors.ParameterNotFoundError) as missing:
            tree.get("no_such_parameter_zz")
        assert missing.value.path == "no_such_parameter_zz"

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
        for path, _ in tree.items():
            assert path in text
        assert "4 tensors" in text and "49 scalars" in text

    def test_to_the_current_device_keeps_values_and_ties(self, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """tree.to(device) with the device the parameters are on is accepted by every backend and changes nothing."""
        _, tree = mlp
        device = tree.parameters()[0].device
        before = {path: value.copy() for path, value in tree.state().items()}
        ties = [group.paths for group in tree.ties()]
        assert tree.to(device) is tree
        after = tree.state()
        assert list(after) == list(before)
        for path, value in before.items():
            np.testing.assert_array_equal(after[path], value)
        assert [group.paths for group in tree.ties()] == ties
        assert {p.device for p in tree.parameters()} == {device}

    def test_kinds(self, models: Any, mlp: tuple[Case, pp.ParameterTree]) -> None:
        """Every tensor says what its framework calls it; dense weights and biases are parameters."""
        from polyparam.backend import KINDS

        _, tree = mlp
        assert {path: p.kind for path, p in tree.items()} == {path: "parameter" for path in tree.paths()}
        for path, p in pp.tree(models.layer("batchnorm")).items():
            assert p.kind in KINDS, f"batchnorm {path!r}: expected a kind in {KINDS}, got {p.kind!r}"

"""KerasTree's own walk (objects handed down, variables found with the slots) gives what the core's walk gives."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
import polyparam as pp  # noqa: E402 - after the importorskip
from polyparam.backend import ParameterTree  # noqa: E402

L = keras.layers


class _Blocks(keras.Model):
    """A subclassed model with a list, a dict and a plain attribute of layers, one of them used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = L.Conv2D(4, 3, padding="same")
        self.blocks = [L.BatchNormalization(), L.DepthwiseConv2D(3, padding="same")]
        self.heads = {"a": L.Dense(3), "b": L.Dense(2)}
        self.again = self.stem

    def call(self, x: object) -> object:
        h = self.blocks[1](self.blocks[0](self.stem(x)))
        h = keras.ops.mean(h, axis=(1, 2))
        return self.heads["a"](h) + keras.ops.sum(self.heads["b"](h))


def _models() -> dict[str, object]:
    inputs = keras.Input((8, 8, 3))
    shared = L.Conv2D(3, 1)
    h = shared(shared(inputs))
    h = L.SeparableConv2D(5, 3)(h)
    functional = keras.Model(inputs, L.Dense(2)(L.Flatten()(h)))
    nested = keras.Sequential([keras.Input((6,)), L.Dense(4), keras.Sequential([L.Dense(3), L.LayerNormalization()]),
                               L.Dense(2)])
    unbuilt = keras.Sequential([L.Dense(4), L.Dense(2)])
    blocks = _Blocks()
    blocks(np.zeros((1, 8, 8, 3), np.float32))
    tied = keras.Sequential([keras.Input((4,)), L.Dense(4), L.Dense(4), L.Dense(2)])
    pp.tie(pp.tree(tied)["0.weight"], pp.tree(tied)["1.weight"])
    return {"functional": functional, "nested": nested, "unbuilt": unbuilt, "subclassed": blocks, "tied": tied}


@pytest.mark.parametrize("name", ["functional", "nested", "unbuilt", "subclassed", "tied"])
def test_the_walk_lists_what_the_core_walk_lists(name: str) -> None:
    model = _models()[name]
    tree = pp.tree(model)
    core_occurrences = ParameterTree._occurrences(tree)
    core_items = ParameterTree.items(tree)
    assert [path for path, _ in tree._occurrences()] == [path for path, _ in core_occurrences]
    assert [path for path, _ in tree.items()] == [path for path, _ in core_items]
    for (_, ours), (_, core) in zip(tree.items(), core_items):
        assert ours._identity() == core._identity()
        assert ours.shape == core.shape and ours.role == core.role and ours.groups == core.groups
        if ours.state == "initialized":
            np.testing.assert_array_equal(ours.numpy(), core.numpy())
    for _, sub in tree.children():   # a subtree walks from where it is
        assert [path for path, _ in sub.items()] == [path for path, _ in ParameterTree.items(sub)]


def test_a_parameter_from_the_walk_follows_its_layer_when_the_variable_changes() -> None:
    """The variable found with the slots is a hint: a tie made later swaps the layer's variable, and the
    parameter taken before reads the new one (and after untie, its own again)."""
    model = keras.Sequential([keras.Input((4,)), L.Dense(4), L.Dense(4)])
    tree = pp.tree(model)
    second = tree["1.weight"]
    own = model.layers[1].kernel
    assert second.native is own
    groups = pp.tie(tree["0.weight"], second)
    assert second.native is model.layers[0].kernel
    second[0, 0] = 7
    assert tree["0.weight"].numpy()[0, 0] == 7
    for group in groups:
        group.untie()
    assert second.native is own is model.layers[1].kernel
    second[0, 0] = 5
    assert tree["0.weight"].numpy()[0, 0] == 7


def test_a_parameter_from_the_walk_follows_a_replaced_layer() -> None:
    """Parameters find their layer live: a Sequential's layer replaced after the walk is the one read."""
    model = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    tree = pp.tree(model)
    weight = tree["0.weight"]
    replacement = L.Dense(2, kernel_initializer="ones")
    replacement.build((None, 3))
    model._layers[model._layers.index(model.layers[0])] = replacement
    np.testing.assert_array_equal(weight.numpy(), np.ones((2, 3), np.float32))

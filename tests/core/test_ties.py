"""Ties on the NumPy reference backend: ``pp.tie``, ``TieGroup``, ``tree.ties()`` and untie.

The conformance kit (``polyparam.testing``) checks ties of the reference "shared" model
on every backend; these tests pin the core's rules for ties made after construction.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam import numpy as pnp
from polyparam.backend import ParameterTree


def make_net() -> pnp.Sequential:
    """Two layers of one architecture (3 -> 3, linear), then a 3 -> 1 head."""
    return pnp.Sequential(pnp.Dense(3, in_units=3, prefix="a_"), pnp.Dense(3, in_units=3, prefix="b_"),
                          pnp.Dense(1, in_units=3, prefix="head_"))


@pytest.fixture
def net() -> pnp.Sequential:
    return make_net()


@pytest.fixture
def tree(net: pnp.Sequential) -> ParameterTree:
    tree = pp.tree(net)
    tree.initialize(pp.init.Normal(1.0), seed=0)
    for i, p in enumerate(tree.select("*.bias")):
        p.set(np.random.default_rng(i).normal(size=p.shape))
    return tree


def numeric_grad(f: Callable[[], float], x: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to the array ``x``, changed in place."""
    g = np.zeros(x.shape, np.float64)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f()
        x[i] = old - eps
        down = f()
        x[i] = old
        g[i] = (up - down) / (2 * eps)
    return g


# ---- tie -----------------------------------------------------------------------------------


def test_tying_two_layers_gives_one_group_per_parameter(net: pnp.Sequential, tree: ParameterTree) -> None:
    first = tree.state(copy=True)
    groups = pp.tie(tree[0], tree[1])
    assert groups == [["0.weight", "1.weight"], ["0.bias", "1.bias"]]
    assert net[1].params["weight"] is net[0].params["weight"]  # one storage
    for name in ("weight", "bias"):
        np.testing.assert_array_equal(tree[f"1.{name}"].numpy(), first[f"0.{name}"])  # the first argument's value
    assert tree.ties() == groups
    assert tree.paths() == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert list(tree.state()) == tree.paths()


def test_a_write_through_one_member_is_seen_through_the_other(net: pnp.Sequential, tree: ParameterTree) -> None:
    pp.tie(tree[0], tree[1])
    tree["1.weight"][0, 0] = 5
    assert tree["0.weight"].numpy()[0, 0] == 5
    tree["0.bias"].set([1, 2, 3])
    np.testing.assert_array_equal(tree["1.bias"].numpy(), [1, 2, 3])
    state = tree.state(copy=True)
    state["0.bias"] = np.array([-1, -2, -3], np.float32)
    tree.load_state(state)
    np.testing.assert_array_equal(net[1].params["bias"].data, [-1, -2, -3])


def test_a_tie_made_after_construction_sums_the_gradients_of_every_use(net: pnp.Sequential,
                                                                     tree: ParameterTree) -> None:
    pp.tie(tree[0], tree[1])
    x = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)
    net(x)
    net.backward()
    shared = net[0].params["weight"].data
    expected = numeric_grad(lambda: float(net(x).astype(np.float64).sum()), shared)
    np.testing.assert_allclose(tree["0.weight"].grad(), expected, rtol=2e-2, atol=2e-3)
    np.testing.assert_array_equal(tree["1.weight"].grad(), tree["0.weight"].grad())


def test_three_parameters_make_one_group_in_argument_order() -> None:
    net = pnp.Sequential(*(pnp.Dense(2, in_units=2) for _ in range(3)))
    tree = pp.tree(net)
    tree.initialize(pp.init.Normal(1.0), seed=0)
    third = tree["2.weight"].numpy().copy()
    (group,) = pp.tie(tree["2.weight"], tree["0.weight"], tree["1.weight"])
    assert group.paths == ["2.weight", "0.weight", "1.weight"]
    for path in ("0.weight", "1.weight"):
        np.testing.assert_array_equal(tree[path].numpy(), third)
    assert tree.ties() == [["0.weight", "1.weight", "2.weight"]]  # the tree lists paths in model order
    assert tree.select("1.*").ties() == []  # a selection sees one member only
    assert tree.select("*.weight").ties() == [["0.weight", "1.weight", "2.weight"]]


def test_tying_tied_parameters_again_changes_nothing(net: pnp.Sequential, tree: ParameterTree) -> None:
    pp.tie(tree[0], tree[1])
    storage = net[0].params["weight"]
    tree["1.weight"][2, 2] = 9
    again = pp.tie(tree[1], tree[0])
    assert again == [["1.weight", "0.weight"], ["1.bias", "0.bias"]]
    assert net[0].params["weight"] is storage and net[1].params["weight"] is storage
    assert tree["0.weight"].numpy()[2, 2] == 9


# ---- refusals --------------------------------------------------------------------------------


def test_a_parameter_or_block_tied_to_itself_is_refused(net: pnp.Sequential, tree: ParameterTree) -> None:
    """``pp.tie(p, p)`` returned a group listing one path twice; it names the mistake instead."""
    with pytest.raises(errors.TieError, match="'0.weight' to itself"):
        pp.tie(tree["0.weight"], tree["0.weight"])
    with pytest.raises(errors.TieError, match="to itself"):
        pp.tie(tree[1], tree[1])
    assert tree.ties() == []


def assert_untied(net: pnp.Sequential, tree: ParameterTree, before: dict[str, np.ndarray]) -> None:
    assert tree.ties() == []
    assert net[1].params["weight"] is not net[0].params["weight"]
    after = tree.state(copy=True)
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)


def test_a_shape_mismatch_is_refused_with_the_facts(net: pnp.Sequential, tree: ParameterTree) -> None:
    before = tree.state(copy=True)
    with pytest.raises(errors.TieError) as info:
        pp.tie(tree["0.weight"], tree["2.weight"])
    assert isinstance(info.value, ValueError)
    assert (info.value.path, info.value.expected, info.value.got) == ("2.weight", (3, 3), (1, 3))
    assert "expected shape (3, 3), got (1, 3)" in str(info.value)
    assert_untied(net, tree, before)


def test_a_dtype_mismatch_is_refused_with_the_facts() -> None:
    net = pnp.Sequential(pnp.Dense(3, in_units=3), pnp.Dense(3, in_units=3, dtype="float64"))
    tree = pp.tree(net)
    tree.initialize(pp.init.Normal(1.0), seed=0)
    before = tree.state(copy=True)
    with pytest.raises(errors.TieError) as info:
        pp.tie(tree[0], tree[1])
    assert (info.value.path, info.value.expected, info.value.got) == \
        ("1.weight", np.dtype("float32"), np.dtype("float64"))
    assert "expected dtype 'float32', got 'float64'" in str(info.value)
    assert_untied(net, tree, before)


def test_every_pair_is_checked_before_the_first_tie() -> None:
    """Blocks whose weights fit but whose biases do not: the weights are not tied either."""
    def block(bias_dtype: str) -> pnp.Block:
        b = pnp.Block()
        b.params["weight"] = pnp.Param("w", (2, 2))
        b.params["bias"] = pnp.Param("b", (2,), dtype=bias_dtype, role="bias")
        return b

    net = pnp.Sequential(block("float32"), block("float64"))
    tree = pp.tree(net)
    tree.initialize(pp.init.Normal(1.0), seed=0)
    with pytest.raises(errors.TieError) as info:
        pp.tie(tree[0], tree[1])
    assert info.value.path == "1.bias"
    assert tree.ties() == [] and not tree["0.weight"].is_tied_to(tree["1.weight"])


def test_ties_of_the_wrong_things_are_refused(tree: ParameterTree) -> None:
    with pytest.raises(errors.TieError) as info:
        pp.tie(tree["0.weight"])
    assert (info.value.expected, info.value.got) == (">= 2", 1)
    with pytest.raises(errors.TieError) as info:
        pp.tie(tree[0], tree["1.weight"])
    assert info.value.got == [type(tree[0]).__name__, type(tree["1.weight"]).__name__]
    other = pp.tree(pnp.Sequential(pnp.Dense(3, in_units=3, use_bias=False)))
    with pytest.raises(errors.TieError) as info:
        pp.tie(tree[0], other[0])
    assert (info.value.expected, info.value.got) == (["bias", "weight"], ["weight"])
    empty = pp.tree(pnp.Sequential(pnp.Block(), pnp.Block()))
    with pytest.raises(errors.TieError) as info:
        pp.tie(empty[0], empty[1])
    assert (info.value.path, info.value.got) == ("0", [])
    assert tree.ties() == []


# ---- untie -----------------------------------------------------------------------------------


def test_untie_gives_every_member_but_the_first_its_own_copy(net: pnp.Sequential, tree: ParameterTree) -> None:
    groups = pp.tie(tree[0], tree[1])
    original = net[0].params["weight"]
    tree["1.weight"][0, 0] = 4
    for group in tree.ties():
        group.untie()
    assert tree.ties() == []
    assert net[0].params["weight"] is original and net[1].params["weight"] is not original
    np.testing.assert_array_equal(tree["1.weight"].numpy(), tree["0.weight"].numpy())  # the current value
    tree["1.weight"][0, 0] = -1
    assert tree["0.weight"].numpy()[0, 0] == 4
    groups[0].untie()  # untying an untied group is a no-op
    assert tree["1.weight"].numpy()[0, 0] == -1 and tree.ties() == []
    assert pp.tie(tree[0], tree[1]) == groups  # and the layers can be tied again
    assert tree["1.weight"].numpy()[0, 0] == 4


# ---- TieGroup ----------------------------------------------------------------------------------


def test_tie_group_attributes_equality_and_repr(tree: ParameterTree) -> None:
    (group, _) = pp.tie(tree[0], tree[1])
    assert isinstance(group, pp.TieGroup)
    assert group.paths == ["0.weight", "1.weight"]
    assert all(isinstance(p, pp.Parameter) for p in group.members)
    assert [p.path for p in group.members] == group.paths
    assert group.members[0].is_tied_to(group.members[1])
    assert group == ["0.weight", "1.weight"] and group == ("0.weight", "1.weight")
    assert group != ["1.weight", "0.weight"] and group != 3
    same = pp.TieGroup([tree["0.weight"], tree["1.weight"]])  # paths default to the members' paths
    assert same == group and hash(same) == hash(group) and len({same, group}) == 1
    named = pp.TieGroup([tree["0.weight"], tree["1.weight"]], paths=["x", "y"])
    assert named.paths == ["x", "y"] and named != group
    assert repr(group) == "TieGroup(['0.weight', '1.weight'])"

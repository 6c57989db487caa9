"""ParameterTree, ParameterSelection and what they share, on the NumPy reference backend.

The conformance kit (``polyparam.testing``) checks what every backend must do with the
reference models; these tests pin the core's own rules: how paths, positions, look-ups,
ties, keys and the table behave, with the exact facts each error carries.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam import numpy as pnp
from polyparam.backend import ParameterSelection, ParameterTree

PATHS = ["0.weight", "0.bias", "1.0.weight", "1.0.bias", "1.1.weight", "1.1.bias"]


def make_net() -> pnp.Sequential:
    """``0``: Dense 3->4; ``1``: Sequential(Dense 4->2, Dense 2->2). Fixed prefixes give fixed native names."""
    head = pnp.Sequential(pnp.Dense(2, in_units=4, prefix="mid_"), pnp.Dense(2, in_units=2, prefix="out_"),
                          prefix="head_")
    return pnp.Sequential(pnp.Dense(4, in_units=3, prefix="enc_"), head, prefix="net_")


def make_tied_net() -> pnp.Sequential:
    """Layers 1 and 2 share their parameters (Gluon's ``params=``); 8 paths, 6 storages."""
    shared = pnp.Dense(3, in_units=3, prefix="shared_")
    return pnp.Sequential(pnp.Dense(3, in_units=2, prefix="in_"), shared,
                          pnp.Dense(3, in_units=3, params=shared.params, prefix="again_"),
                          pnp.Dense(1, in_units=3, prefix="last_"))


@pytest.fixture
def net() -> pnp.Sequential:
    return make_net()


@pytest.fixture
def tree(net: pnp.Sequential) -> ParameterTree:
    tree = pp.tree(net)
    tree.initialize(pp.init.Normal(1.0), seed=0)
    return tree


@pytest.fixture
def tied() -> ParameterTree:
    tree = pp.tree(make_tied_net())
    tree.initialize(pp.init.Normal(1.0), seed=0)
    return tree


def values(tree: pp.ParameterTree) -> dict[str, np.ndarray]:
    return tree.state(copy=True)


def assert_same_values(before: dict[str, np.ndarray], tree: pp.ParameterTree) -> None:
    after = values(tree)
    assert after.keys() == before.keys()
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)


# ---- paths and positions ----------------------------------------------------------------


def test_positions_names_and_dotted_paths_reach_the_same_parameter(net: pnp.Sequential, tree: ParameterTree) -> None:
    assert tree.paths() == PATHS
    assert tree.path == "" and tree.native is net
    by_position = tree[1][0]["bias"]
    assert by_position.path == "1.0.bias"
    assert by_position.is_tied_to(tree["1.0.bias"])
    assert tree["1"]["0.bias"].path == "1.0.bias"
    assert tree["1.0"]["bias"].is_tied_to(by_position)
    assert by_position.native is net[1][0].params["bias"]
    assert tree[-1].path == "1" and tree[np.int64(0)].path == "0"
    assert isinstance(tree["1.1"], ParameterTree) and tree["1.1"].native is net[1][1]


def test_a_subtree_keeps_full_paths(tree: ParameterTree) -> None:
    sub = tree[1]
    assert sub.path == "1"
    assert sub.paths() == PATHS[2:]
    assert [name for name, _ in sub.children()] == ["0", "1"]
    assert [child.path for _, child in sub.children()] == ["1.0", "1.1"]


def test_a_position_out_of_range_names_the_range(tree: ParameterTree) -> None:
    with pytest.raises(errors.ParameterNotFoundError) as info:
        tree[2]
    assert (info.value.path, info.value.expected, info.value.got) == ("2", 2, 2)
    assert "[-2, 2)" in str(info.value)
    with pytest.raises(errors.ParameterNotFoundError) as info:
        tree[1][5]
    assert info.value.path == "1.5"
    with pytest.raises(errors.ParameterNotFoundError) as info:
        tree[1.5]  # type: ignore[index]
    assert info.value.expected == "int or str" and info.value.got == 1.5


def test_an_unknown_path_suggests_close_names(tree: ParameterTree) -> None:
    with pytest.raises(errors.ParameterNotFoundError) as info:
        tree["1.0.bais"]
    assert isinstance(info.value, KeyError)
    assert (info.value.path, info.value.expected, info.value.got) == ("1.0.bais", ["weight", "bias"], "bais")
    assert "Did you mean ['bias']?" in str(info.value)
    with pytest.raises(errors.ParameterNotFoundError) as info:
        tree[1]["0.bais"]
    assert info.value.path == "1.0.bais"  # the full path, also from a subtree
    with pytest.raises(errors.ParameterNotFoundError) as info:
        tree["zzz"]
    assert "It has ['0', '1']." in str(info.value)


# ---- select ------------------------------------------------------------------------------


def test_select_glob_crosses_dots_and_regex_searches(tree: ParameterTree) -> None:
    assert tree.select("1.*").paths() == PATHS[2:]
    assert tree.select("*bias").paths() == ["0.bias", "1.0.bias", "1.1.bias"]
    assert tree.select(regex=r"\.0\.").paths() == ["1.0.weight", "1.0.bias"]  # searched, not anchored
    assert tree.select(regex=r"^0").paths() == ["0.weight", "0.bias"]
    assert tree.select(where=lambda p: p.shape == (2, 2)).paths() == ["1.1.weight"]
    assert tree.select("1.*", regex="weight", where=lambda p: p.shape[1] == 4).paths() == ["1.0.weight"]
    empty = tree.select("nothing*")
    assert isinstance(empty, ParameterSelection)
    assert (len(empty), empty.paths(), empty.state(), empty.ties()) == (0, [], {}, [])


def test_select_takes_param_groups_rules_as_its_pattern(tree: ParameterTree) -> None:
    """``"role:bias"``, ``"kind:parameter"`` and a compiled regex, as ``pp.param_groups`` takes them (a glob
    would match no path and select nothing, silently); anything else is a typed error."""
    assert tree.select("role:bias").paths() == ["0.bias", "1.0.bias", "1.1.bias"]
    assert tree.select("kind:parameter").paths() == PATHS and tree.select("kind:buffer").paths() == []
    assert tree.select(re.compile(r"^1\.")).paths() == PATHS[2:]
    assert tree.select("role:weight", regex="^1").paths() == ["1.0.weight", "1.1.weight"]
    with pytest.raises(errors.InvalidArgumentError, match=r"`pattern`.*int 5.*where="):
        tree.select(5)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgumentError, match=r"got 'role:biass'\. Did you mean 'role:bias'\?"):
        tree.select("role:biass")                   # a typo would select nothing: freeze() would do nothing
    with pytest.raises(errors.InvalidArgumentError, match=r"kind:<one of parameter, buffer, constant>"):
        tree.select("kind:")
    for bad in ({"regex": b"0"}, {"where": 3}):
        with pytest.raises(errors.InvalidArgumentError):
            tree.select(**bad)  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidArgumentError, match="`pattern`"):
        tree.select(re.compile(b"0"))  # type: ignore[arg-type]


def test_a_selection_is_a_collection_of_its_own(tree: ParameterTree) -> None:
    weights = tree.select("*.weight")
    assert weights.backend == "numpy"
    assert len(weights) == 3 and [p.path for p in weights] == ["0.weight", "1.0.weight", "1.1.weight"]
    assert repr(weights) == "ParameterSelection(['0.weight', '1.0.weight', '1.1.weight'])"
    assert weights["1.0.weight"].is_tied_to(tree["1.0.weight"])
    assert "0.weight" in weights and "0.bias" not in weights
    assert weights.get("mid_weight").path == "1.0.weight"
    with pytest.raises(errors.ParameterNotFoundError) as info:
        weights["0.bias"]
    assert info.value.path == "0.bias" and "'1.1.weight'" in str(info.value)

    before = values(tree)
    weights.initialize(pp.init.Constant(2), force_reinit=True)
    for path in ("0.weight", "1.0.weight", "1.1.weight"):
        np.testing.assert_array_equal(tree[path].numpy(), 2)
    for path in ("0.bias", "1.0.bias", "1.1.bias"):
        np.testing.assert_array_equal(tree[path].numpy(), before[path])
    # load_state on a selection wants the selection's keys only
    weights.load_state({path: np.full(tree[path].shape, -1.0) for path in weights.paths()})
    np.testing.assert_array_equal(tree["1.1.weight"].numpy(), -1)


# ---- get ---------------------------------------------------------------------------------


def test_get_by_native_name_path_and_unique_suffix(tree: ParameterTree) -> None:
    assert tree.get("enc_weight").path == "0.weight"
    assert tree.get("out_bias").path == "1.1.bias"
    assert tree.get("1.1.weight").path == "1.1.weight"
    assert tree.get("1.bias").path == "1.1.bias"  # suffix at a separator
    assert tree.get("0.weight").path == "0.weight"  # a full path wins over being a suffix of "1.0.weight"


def test_get_counts_a_tie_group_as_one_match(tied: ParameterTree) -> None:
    assert tied.get("2.weight").is_tied_to(tied["1.weight"])
    assert tied.get("shared_weight").path == "1.weight"
    # "weight" ends "1.weight", "2.weight" and "shared_weight": one storage, so one match
    assert tied.select("[12].*").get("weight").path == "1.weight"


def test_an_ambiguous_name_lists_the_candidates(tree: ParameterTree) -> None:
    with pytest.raises(errors.AmbiguousNameError) as info:
        tree.get("bias")
    assert isinstance(info.value, KeyError) and isinstance(info.value, errors.PolyparamError)
    assert info.value.path == "bias" and info.value.expected == "one match"
    assert info.value.got == ["0.bias", "1.0.bias", "1.1.bias"]
    assert "['0.bias', '1.0.bias', '1.1.bias']" in str(info.value) and "longer suffix" in str(info.value)
    with pytest.raises(errors.AmbiguousNameError) as info:
        tree.get("_weight")  # a suffix of every native name ("enc_weight", "mid_weight", ...)
    assert info.value.got == ["0.weight", "1.0.weight", "1.1.weight"]


def test_a_name_not_found_suggests_close_matches(tree: ParameterTree) -> None:
    with pytest.raises(errors.ParameterNotFoundError) as info:
        tree.get("1.0.bais")
    assert (info.value.path, info.value.expected, info.value.got) == ("1.0.bais", "an existing name", "1.0.bais")
    assert "Did you mean" in str(info.value) and "'1.0.bias'" in str(info.value)
    with pytest.raises(errors.ParameterNotFoundError):
        tree.get("ias")  # a suffix must start at a separator
    with pytest.raises(errors.ParameterNotFoundError) as info:
        tree.get("qqqqqqqq")
    assert str(info.value).endswith("Print the tree to see every path.")


# ---- items, state, ties once ---------------------------------------------------------------


def test_tied_parameters_appear_once_under_their_first_path(tied: ParameterTree) -> None:
    once = ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"]
    assert [path for path, _ in tied.items()] == once
    assert tied.paths() == once and len(tied.parameters()) == 6
    assert list(tied.state()) == once and list(tied.state(copy=True)) == once
    assert tied.ties() == [["1.weight", "2.weight"], ["1.bias", "2.bias"]]
    assert "2.weight" in tied  # every path is there, only listed once
    assert tied.select("*.weight").paths() == ["0.weight", "1.weight", "3.weight"]
    assert tied.select("2.*").paths() == ["2.weight", "2.bias"]  # a selection of only the second path keeps it


def test_len_iteration_and_membership(tree: ParameterTree) -> None:
    assert len(tree) == 2 and len(tree[1]) == 2 and len(tree[0]) == 0  # child blocks, like len(net)
    assert [child.path for child in tree] == ["0", "1"]
    assert list(tree[0]) == []
    assert len(tree.items()) == 6
    assert "1.0.bias" in tree and "1.0.bias" in tree[1]
    assert "1.0" not in tree  # block paths are not parameter paths
    assert "bias" not in tree  # no suffix matching
    assert "0.bias" not in tree[1]
    assert tree["0.bias"] not in tree  # paths only


def test_state_views_write_through_and_copies_do_not(net: pnp.Sequential, tree: ParameterTree) -> None:
    views = tree.state()
    assert np.shares_memory(views["1.0.weight"], net[1][0].params["weight"].data)
    views["1.0.weight"][0, 0] = 123.0
    assert tree["1.0.weight"].numpy()[0, 0] == 123.0

    copies = tree.state(copy=True)
    tree["1.0.weight"][0, 0] = -5.0
    assert copies["1.0.weight"][0, 0] == 123.0  # later writes to the tree do not reach a copy
    copies["0.bias"][:] = 99.0
    assert not (tree["0.bias"].numpy() == 99.0).any()


def test_state_of_an_uninitialized_tree_raises(net: pnp.Sequential) -> None:
    tree = pp.tree(net)
    for copy in (False, True):
        with pytest.raises(errors.UninitializedParameterError) as info:
            tree.state(copy=copy)
        assert info.value.path == "0.weight"


# ---- load_state ---------------------------------------------------------------------------


def test_a_bad_shape_at_the_last_key_changes_nothing() -> None:
    net = pnp.Sequential(pnp.Dense(3), pnp.Dense(2))  # deferred: the first value would materialize "0.weight"
    tree = pp.tree(net)
    state = {"0.weight": np.ones((3, 5)), "0.bias": np.ones(3), "1.weight": np.ones((2, 3)), "1.bias": np.ones(3)}
    with pytest.raises(errors.ShapeMismatchError) as info:
        tree.load_state(state)
    assert (info.value.path, info.value.expected, info.value.got) == ("1.bias", (2,), (3,))
    assert [p.state for p in tree.parameters()] == ["deferred", "uninitialized", "deferred", "uninitialized"]
    assert tree["0.weight"].shape == (3, None)
    state["1.bias"] = np.array([0.5, -0.5])
    tree.load_state(state)
    np.testing.assert_array_equal(net(np.ones((1, 5))), [[18.5, 17.5]])  # 3 * (5 + 1) +- 0.5


def test_a_bad_dtype_at_the_last_key_changes_nothing(tree: ParameterTree) -> None:
    before = values(tree)
    state = {path: value + 1 for path, value in before.items()}
    state["1.1.bias"] = state["1.1.bias"].astype(np.complex64)
    with pytest.raises(errors.DTypeMismatchError) as info:
        tree.load_state(state)
    assert info.value.path == "1.1.bias" and "'1.1.bias'" in str(info.value)
    assert_same_values(before, tree)


def test_strict_keys_report_missing_and_unexpected(tree: ParameterTree) -> None:
    before = values(tree)
    state = {path: value + 1 for path, value in before.items() if path != "1.1.bias"}
    state["2.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(errors.StateError) as info:
        tree.load_state(state)
    assert info.value.path == "1.1.bias"
    assert info.value.expected == ["1.1.bias"] and info.value.got == ["2.weight"]
    message = str(info.value)
    assert "got 1 missing and 1 unexpected" in message
    assert "Missing (in the model, not in the source): '1.1.bias'." in message
    assert "Unexpected (in the source, not in the model): '2.weight'." in message
    assert "strict=False" in message
    assert_same_values(before, tree)

    with pytest.warns(errors.PolyparamWarning, match="1 parameters kept their values"):
        report = tree.load_state(state, strict=False)
    assert report.missing == ["1.1.bias"] and report.unexpected == ["2.weight"] and len(report.loaded) == 5
    np.testing.assert_array_equal(tree["0.weight"].numpy(), before["0.weight"] + 1)
    np.testing.assert_array_equal(tree["1.1.bias"].numpy(), before["1.1.bias"])  # not given: kept


def test_a_tie_group_may_be_given_under_any_of_its_paths(tied: ParameterTree) -> None:
    state = tied.state(copy=True)
    state["2.weight"] = state.pop("1.weight") + 1  # the second path only: the group is covered
    tied.load_state(state)
    np.testing.assert_array_equal(tied["1.weight"].numpy(), state["2.weight"])
    state["1.weight"] = state["2.weight"].copy()  # both paths, equal values
    tied.load_state(state)


def test_a_tie_group_given_two_different_values_is_refused(tied: ParameterTree) -> None:
    before = values(tied)
    state = {path: value + 1 for path, value in before.items()}
    state["2.weight"] = state["1.weight"] + 1
    with pytest.raises(errors.StateError) as info:
        tied.load_state(state)
    assert (info.value.path, info.value.expected, info.value.got) == ("2.weight", "equal values", "different values")
    assert "'1.weight' and '2.weight'" in str(info.value)
    assert_same_values(before, tied)  # "0.weight", checked before the conflict, is not written either


# ---- display -------------------------------------------------------------------------------


def test_the_table_caption_counts_tied_parameters_once(tied: ParameterTree) -> None:
    table = tied.table()
    assert table.title == "numpy parameters"
    assert table.row_count == 8  # every path has a row
    assert table.caption == "6 tensors, 25 scalars, 100 B"  # 6 + 3, 9 + 3, 3 + 1 (all trainable: no split)
    lines = str(tied).splitlines()
    assert lines[-1].strip() == table.caption
    row = next(line for line in lines if "2.weight" in line)
    assert "1.weight" in row  # the "tied with" column


def test_the_caption_shows_deferred_and_binary_units() -> None:
    assert pp.tree(pnp.Sequential(pnp.Dense(3))).table().caption == "2 tensors, 3 scalars + deferred, 12 B"
    big = pp.tree(pnp.Sequential(pnp.Dense(256, in_units=4)))
    assert big.table().caption == "2 tensors, 1,280 scalars, 5.0 KiB"
    assert str(big).splitlines()[-1].strip() == "2 tensors, 1,280 scalars, 5.0 KiB"


def test_the_html_table_has_every_path(tied: ParameterTree) -> None:
    html = tied._repr_html_()
    assert html.startswith("<") and "<pre" in html
    for path in ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias", "3.weight", "3.bias"]:
        assert path in html, path
    assert "6 tensors, 25 scalars, 100 B" in html


def test_repr_names_the_native_type_the_path_and_the_count(tree: ParameterTree, tied: ParameterTree) -> None:
    kind = type(tree).__name__
    assert repr(tree) == f"<{kind} of Sequential: 6 parameters>"
    assert repr(tree[1]) == f"<{kind} of Sequential at '1': 4 parameters>"
    assert repr(tree["1.0"]) == f"<{kind} of Dense at '1.0': 2 parameters>"
    assert repr(tied) == f"<{type(tied).__name__} of Sequential: 6 parameters>"
    arrays = pp.tree({"a": {"weight": np.zeros((2, 2)), "bias": np.zeros(2)}})
    assert repr(arrays) == f"<{type(arrays).__name__} of dict: 2 parameters>"


def test_a_concrete_subclass_without_a_backend_name_is_refused_at_definition() -> None:
    """Forgetting ``backend = NAME`` fails where the class is written, not later as "No backend named ''"."""
    hooks = {"_children": lambda self: [], "_leaves": lambda self: []}
    with pytest.raises(errors.PluginContractError, match=r"ParameterTree subclass .*Nameless.*backend = NAME") as info:
        type("Nameless", (ParameterTree,), dict(hooks))
    assert isinstance(info.value, TypeError) and info.value.got == ""
    named = type("Named", (ParameterTree,), {**hooks, "backend": "mybackend"})
    assert named({}).backend == "mybackend"
    assert type("Partial", (ParameterTree,), {"_leaves": hooks["_leaves"]}).__abstractmethods__ == {"_children"}


def test_load_state_of_views_from_a_model_sharing_layers_swaps_them() -> None:
    """``state()`` returns the arrays themselves: loading it into a model holding the same layers in
    another order reads every value before the first write, as ``state(copy=True)`` would."""
    first, second = pnp.Dense(4, in_units=4), pnp.Dense(4, in_units=4)
    pnp.Sequential(first, second).initialize(seed=1)
    a, b = pp.tree(first).state(copy=True), pp.tree(second).state(copy=True)
    pp.tree(pnp.Sequential(second, first)).load_state(pp.tree(pnp.Sequential(first, second)).state())
    assert all(np.array_equal(v, a[k]) for k, v in pp.tree(second).state().items())
    assert all(np.array_equal(v, b[k]) for k, v in pp.tree(first).state().items())


def test_load_state_of_its_own_state_changes_nothing() -> None:
    net = make_net()
    net.initialize(seed=2)
    tree = pp.tree(net)
    before = tree.state(copy=True)
    tree.load_state(tree.state())
    assert all(np.array_equal(v, before[k]) for k, v in tree.state().items())

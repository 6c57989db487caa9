"""Parameter on the NumPy reference backend: its facts, checks, writes, reads and gradient.

The conformance kit (``polyparam.testing``) checks the reference models on every
backend; these tests pin the rules the core's ``Parameter`` applies itself.
"""

from __future__ import annotations

import numpy as np
import pytest

import polyparam as pp
from polyparam import errors
from polyparam import numpy as pnp
from polyparam.backend import Parameter, ParameterTree


@pytest.fixture
def net() -> pnp.Sequential:
    return pnp.Sequential(pnp.Dense(4, in_units=3, prefix="enc_"), pnp.Dense(2, in_units=4, prefix="dec_"))


@pytest.fixture
def tree(net: pnp.Sequential) -> ParameterTree:
    tree = pp.tree(net)
    tree.initialize(pp.init.Normal(1.0), seed=0)
    return tree


def block_with(**params: pnp.Param) -> pnp.Block:
    """A bare block holding ``params`` under their keyword names."""
    block = pnp.Block(prefix="holder_")
    for name, param in params.items():
        block.params[name] = param
    return block


# ---- facts ---------------------------------------------------------------------------------


def test_facts_of_a_dense_weight_and_bias(net: pnp.Sequential, tree: ParameterTree) -> None:
    weight, bias = tree["0.weight"], tree["0.bias"]
    assert isinstance(weight, Parameter) and isinstance(weight, pp.Parameter)
    assert (weight.path, weight.backend, weight.native_name) == ("0.weight", "numpy", "enc_weight")
    assert weight.native is net[0].params["weight"]
    assert (weight.shape, weight.ndim, weight.size, weight.nbytes) == ((4, 3), 2, 12, 48)
    assert isinstance(weight.dtype, np.dtype) and weight.dtype == np.float32
    assert (weight.device, weight.state, weight.role, weight.axes) == ("cpu", "initialized", "weight", ("out", "in"))
    assert weight.trainable is True
    assert (bias.shape, bias.ndim, bias.size, bias.nbytes) == ((4,), 1, 4, 16)
    assert (bias.role, bias.axes) == ("bias", ("out",))
    double = pp.tree(pnp.Dense(2, in_units=5, dtype="float64"))["weight"]
    assert double.dtype == np.float64 and double.nbytes == 80


def test_facts_of_deferred_and_uninitialized_parameters() -> None:
    tree = pp.tree(pnp.Sequential(pnp.Dense(4)))
    weight, bias = tree["0.weight"], tree["0.bias"]
    assert weight.state == "deferred"
    assert (weight.shape, weight.ndim, weight.size, weight.nbytes) == ((4, None), 2, None, None)
    assert "shape=(4, ?)" in repr(weight)
    assert bias.state == "uninitialized" and (bias.shape, bias.size) == ((4,), 4)


def test_roles_and_axes_of_arrays_and_declared_axes() -> None:
    arrays = {"norm": {"weight": np.ones(3, np.float32), "running_var": np.ones(3, np.float32)},
              "conv": {"weight": np.zeros((8, 4, 3, 3), np.float32), "table": np.zeros((5, 2), np.float32)},
              "step": np.array(2.0, np.float32)}
    tree = pp.tree(arrays)
    facts = {path: (p.role, p.axes) for path, p in tree.items()}
    assert facts == {"norm.weight": ("scale", ("out",)), "norm.running_var": ("running_var", ("out",)),
                     "conv.weight": ("weight", ("out", "in", "space", "space")),
                     "conv.table": ("other", ("other", "other")), "step": ("other", ())}
    step = tree["step"]
    assert (step.shape, step.ndim, step.size, step.nbytes) == ((), 0, 1, 4)
    declared = pp.tree(block_with(w=pnp.Param("w", (3, 2), axes=("in", "out"))))["w"]
    assert declared.axes == ("in", "out")  # what the adapter declares wins over the default
    buffer = pp.tree(block_with(m=pnp.Param("m", (3,), role="running_mean", trainable=False)))["m"]
    assert (buffer.role, buffer.trainable) == ("running_mean", False)


def test_an_invalid_role_is_rejected_by_the_constructor() -> None:
    tree = pp.tree(block_with(w=pnp.Param("w", (2,), role="bogus")))
    with pytest.raises(errors.InvalidArgumentError, match=r"role=.bogus.") as info:
        tree.items()
    assert "'weight'" in str(info.value)  # it lists the valid roles
    assert isinstance(info.value, ValueError)  # what it was before it had a polyparam type
    assert (info.value.path, info.value.got, info.value.argument) == ("w", "bogus", "role")


def test_an_unknown_axis_word_is_rejected_by_the_constructor() -> None:
    tree = pp.tree(block_with(w=pnp.Param("w", (2, 3), axes=("out", "inn"))))
    with pytest.raises(errors.InvalidArgumentError, match="axes") as info:
        tree.items()
    assert info.value.got == ("out", "inn") and info.value.argument == "axes"


def test_a_concrete_subclass_without_a_backend_name_is_refused_at_definition() -> None:
    """Forgetting ``backend = NAME`` fails where the class is written, saying what to add."""
    hooks = {name: (lambda self, *args: None) for name in Parameter.__abstractmethods__}
    with pytest.raises(errors.PluginContractError, match=r"`backend`.*Add `backend = NAME`") as info:
        type("Nameless", (Parameter,), dict(hooks))
    assert isinstance(info.value, TypeError) and info.value.got == ""
    with pytest.raises(errors.PluginContractError, match="Nameless"):
        type("Nameless", (Parameter,), {**hooks, "backend": ""})
    named = type("Named", (Parameter,), {**hooks, "backend": "mybackend"})
    assert named.backend == "mybackend"
    assert type("Inherits", (named,), {}).backend == "mybackend"  # a subclass of a named class is named
    partial = type("Partial", (Parameter,), {"_shape": hooks["_shape"]})  # abstract: a base for others
    assert partial.__abstractmethods__


def test_repr(tree: ParameterTree) -> None:
    p = tree["1.bias"]
    assert repr(p) == f"{type(p).__name__}('1.bias', shape=(2,), dtype=float32, device='cpu')"


# ---- coerce and set --------------------------------------------------------------------------


def test_coerce_returns_the_value_in_the_parameters_dtype(tree: ParameterTree) -> None:
    p = tree["0.weight"]
    before = p.numpy().copy()
    array = p.coerce([[1, 2, 3]] * 4)
    assert array.dtype == np.float32 and array.shape == (4, 3)
    np.testing.assert_array_equal(array[0], [1, 2, 3])
    np.testing.assert_array_equal(p.numpy(), before)  # coerce checks, it does not write


def test_coerce_refuses_a_shape_with_the_facts(tree: ParameterTree) -> None:
    p = tree["0.weight"]
    with pytest.raises(errors.ShapeMismatchError) as info:
        p.coerce(np.zeros((3, 4)))
    assert isinstance(info.value, ValueError)
    assert (info.value.path, info.value.expected, info.value.got) == ("0.weight", (4, 3), (3, 4))
    assert str(info.value).startswith("Cannot set parameter '0.weight': expected shape (4, 3), got (3, 4).")
    with pytest.raises(errors.ShapeMismatchError) as info:
        p.coerce(np.zeros(12), action="load 'x' into")
    assert str(info.value).startswith("Cannot load 'x' into parameter '0.weight': expected shape (4, 3), got (12,).")


def test_coerce_refuses_a_dtype_with_the_facts(tree: ParameterTree) -> None:
    with pytest.raises(errors.DTypeMismatchError) as info:
        tree["0.bias"].coerce(np.zeros(4, np.complex128))
    assert isinstance(info.value, TypeError)
    assert (info.value.path, info.value.expected, info.value.got) == \
        ("0.bias", np.dtype("float32"), np.dtype("complex128"))
    assert "value.astype('float32')" in str(info.value)


def test_coerce_accepts_any_size_for_unknown_dimensions() -> None:
    p = pp.tree(pnp.Sequential(pnp.Dense(4)))["0.weight"]
    assert p.coerce(np.ones((4, 7))).shape == (4, 7)
    with pytest.raises(errors.ShapeMismatchError) as info:
        p.coerce(np.ones((5, 7)))
    assert info.value.expected == (4, None) and "expected shape (4, ?)" in str(info.value)
    assert p.state == "deferred"


def test_set_casts_within_a_kind_in_place(net: pnp.Sequential, tree: ParameterTree) -> None:
    p = tree["0.bias"]
    storage = net[0].params["bias"].data
    for value in (np.array([1, 2, 3, 4], np.int64), np.array([0.5, 1.5, 2.5, 3.5]), np.array([True, False] * 2),
                  [7, 8, 9, 10]):
        p.set(value)
        np.testing.assert_array_equal(p.numpy(), np.asarray(value, np.float32))
        assert p.dtype == np.float32
    assert net[0].params["bias"].data is storage  # written in place, not replaced


def test_set_refuses_other_kinds_and_changes_nothing(tree: ParameterTree) -> None:
    p = tree["0.bias"]
    p.set([1, 2, 3, 4])
    for bad in (np.zeros(4, np.complex64), np.array(["a", "b", "c", "d"])):
        with pytest.raises(errors.DTypeMismatchError) as info:
            p.set(bad)
        assert info.value.path == "0.bias" and info.value.got == bad.dtype
    np.testing.assert_array_equal(p.numpy(), [1, 2, 3, 4])
    ints = pp.tree({"count": np.zeros(3, np.int32), "flags": np.zeros(3, np.uint8)})
    ints["count"].set(np.array([1, 2, 3], np.int64))  # int64 -> int32: same kind
    np.testing.assert_array_equal(ints["count"].numpy(), [1, 2, 3])
    with pytest.raises(errors.DTypeMismatchError) as info:
        ints["count"].set(np.array([1.5, 2, 3]))
    assert (info.value.expected, info.value.got) == (np.dtype("int32"), np.dtype("float64"))
    with pytest.raises(errors.DTypeMismatchError):
        ints["flags"].set(np.array([-1, 0, 300]))  # signed -> unsigned changes kind
    np.testing.assert_array_equal(ints["flags"].numpy(), 0)


# ---- item writes -------------------------------------------------------------------------------


def test_item_writes_go_to_the_framework_storage(net: pnp.Sequential, tree: ParameterTree) -> None:
    weight = tree["0.weight"]
    storage = net[0].params["weight"].data
    weight[1, 2] = 7
    weight[0] = [1.0, 2.0, 3.0]
    weight[:, 0] = 0
    assert storage[1, 2] == 7 and storage[0, 1] == 2 and (storage[:, 0] == 0).all()
    assert net[0].params["weight"].data is storage
    model = {"layer": {"weight": np.zeros((2, 2), np.float32)}}
    pp.tree(model)["layer.weight"][1, 0] = 4
    assert model["layer"]["weight"][1, 0] == 4  # into the user's own array


def test_item_writes_refuse_other_kinds_and_missing_data(tree: ParameterTree) -> None:
    ints = pp.tree({"count": np.zeros(3, np.int32)})["count"]
    with pytest.raises(errors.DTypeMismatchError) as info:
        ints[0] = 1.5
    assert info.value.path == "count" and str(info.value).startswith("Cannot write to parameter 'count'")
    np.testing.assert_array_equal(ints.numpy(), 0)
    lazy = pp.tree(pnp.Sequential(pnp.Dense(4)))
    with pytest.raises(errors.DeferredInitializationError):
        lazy["0.weight"][0, 0] = 1
    with pytest.raises(errors.UninitializedParameterError):
        lazy["0.bias"][0] = 1


# ---- reads -------------------------------------------------------------------------------------


def test_reading_a_deferred_parameter_raises_the_typed_error() -> None:
    p = pp.tree(pnp.Sequential(pnp.Dense(4)))["0.weight"]
    for read in (p.numpy, lambda: np.asarray(p), lambda: p[0], p.grad):
        with pytest.raises(errors.DeferredInitializationError) as info:
            read()
        assert isinstance(info.value, RuntimeError)
        assert (info.value.path, info.value.expected, info.value.got) == ("0.weight", "known shape", (4, None))


def test_reading_an_uninitialized_parameter_raises_the_typed_error() -> None:
    p = pp.tree(pnp.Sequential(pnp.Dense(4, in_units=3)))["0.weight"]
    for read in (p.numpy, lambda: np.asarray(p), lambda: p[0], p.grad):
        with pytest.raises(errors.UninitializedParameterError) as info:
            read()
        assert (info.value.path, info.value.expected, info.value.got) == ("0.weight", "initialized", "uninitialized")
        assert "tree.initialize()" in str(info.value)


def test_reads_share_the_storage_and_follow_numpy_protocols(net: pnp.Sequential, tree: ParameterTree) -> None:
    p = tree["0.weight"]
    assert np.shares_memory(p.numpy(), net[0].params["weight"].data)
    np.testing.assert_array_equal(np.asarray(p), p.numpy())
    assert np.asarray(p, dtype=np.float64).dtype == np.float64
    np.testing.assert_array_equal(p[1], net[0].params["weight"].data[1])
    assert p[2, 1] == net[0].params["weight"].data[2, 1]


# ---- gradient ----------------------------------------------------------------------------------


def test_grad_is_none_before_backward_and_the_exact_gradient_after() -> None:
    net = pnp.Sequential(pnp.Dense(2, in_units=3))  # linear: d sum(x W^T + b) / dW = ones^T x
    tree = pp.tree(net)
    tree.initialize(pp.init.Normal(1.0), seed=0)
    weight, bias = tree["0.weight"], tree["0.bias"]
    assert weight.grad() is None and bias.grad() is None
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    net(x)
    net.backward()
    np.testing.assert_allclose(weight.grad(), np.tile(x.sum(axis=0), (2, 1)), rtol=1e-6)
    np.testing.assert_array_equal(bias.grad(), [5, 5])
    upstream = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    net(x)
    net.backward(upstream)  # gradients are overwritten, not accumulated across calls
    np.testing.assert_allclose(weight.grad(), upstream.T @ x, rtol=1e-5)
    np.testing.assert_allclose(bias.grad(), upstream.sum(axis=0), rtol=1e-5)


# ---- identity and initialize -------------------------------------------------------------------


def test_is_tied_to_compares_storage_not_wrappers(tree: ParameterTree) -> None:
    a, b = tree["0.weight"], tree["0.weight"]
    assert a is not b and a.is_tied_to(b)
    assert tree[1]["weight"].is_tied_to(tree["1.weight"])
    assert not tree["0.weight"].is_tied_to(tree["1.weight"])
    shared = pnp.Dense(3, in_units=3)
    other = pp.tree(pnp.Sequential(shared, pnp.Dense(3, in_units=3, params=shared.params)))
    assert other["0.weight"].is_tied_to(other["1.weight"]) and other["1.weight"].is_tied_to(other["0.weight"])
    assert not other["0.weight"].is_tied_to(other["1.bias"])


def test_initialize_one_parameter_fills_it_as_a_weight(tree: ParameterTree) -> None:
    before = tree["1.weight"].numpy().copy()
    report = tree["1.bias"].initialize(pp.init.Constant(3), force_reinit=True)
    np.testing.assert_array_equal(tree["1.bias"].numpy(), 3)  # not the bias convention (0)
    np.testing.assert_array_equal(tree["1.weight"].numpy(), before)
    assert report.initialized == ["1.bias"]


def test_array_protocol_takes_numpy_2s_copy_keyword() -> None:
    """NumPy 2 passes ``copy=`` to ``__array__`` (and warns when it is not accepted)."""
    state = {"weight": np.ones((2, 2), np.float32)}
    p = pp.tree(state)["weight"]
    private = p.__array__(copy=True)
    private[0, 0] = 5
    assert state["weight"][0, 0] == 1
    assert p.__array__(np.float64, copy=False).dtype == np.float64
    np.testing.assert_array_equal(np.asarray(p), state["weight"])

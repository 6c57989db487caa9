"""Initializers and parameters as Gluon defines them, through polyparam.

Three parts: Gluon's rule for a parameter's own ``init`` (``net.initialize(init)`` keeps
it; only an initializer given to that one parameter replaces it) and ``pp.init.Declared``;
row_sparse parameters; and a port of MXNet 1.9.1's ``tests/python/unittest/test_init.py``
and the parameter/initializer tests of ``test_gluon.py``: each upstream test's
initialization (and, where it has one, its load) done through polyparam with the upstream
assertions kept, on two routes: polyparam's built-ins (``"builtin"``) and Gluon's own
``mx.init`` objects handed to ``initialize`` (``"mxinit"``).
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any, Callable

import numpy as np
import pytest

if importlib.util.find_spec("mxnet") is None:
    pytest.skip("mxnet is not installed", allow_module_level=True)

# The adapter imports mxnet after its load-order check, so it comes first.
# isort: off
import polyparam as pp  # noqa: E402

import mxnet as mx  # noqa: E402
from mxnet import gluon  # noqa: E402
from mxnet.gluon import nn  # noqa: E402
# isort: on

ROUTES = ("builtin", "mxinit")

#: The same initializer on both routes: polyparam's built-in, or Gluon's own object.
_INITS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "uniform": (pp.init.Uniform, mx.init.Uniform),
    "xavier": (pp.init.Xavier, mx.init.Xavier),
    "one": (pp.init.One, mx.init.One),
    "zero": (pp.init.Zero, mx.init.Zero),
    "constant": (pp.init.Constant, mx.init.Constant),
    "bilinear": (pp.init.Bilinear, mx.init.Bilinear),
}


def make(route: str, name: str, *args: Any) -> Any:
    """The initializer ``name`` on ``route``."""
    builtin, native = _INITS[name]
    return builtin(*args) if route == "builtin" else native(*args)


class Holder(gluon.Block):
    """A block holding the given Gluon Parameters (the upstream tests use bare Parameters)."""

    def __init__(self, **params: gluon.Parameter) -> None:
        super().__init__(prefix="")
        for name, param in params.items():
            self._reg_params[name] = param
            self._params._params[param.name] = param
            object.__setattr__(self, name, param)


def _dense_net() -> nn.Sequential:
    net = nn.Sequential()
    net.add(nn.Dense(3, in_units=4, weight_initializer=mx.init.Constant(2.0), bias_initializer="ones"),
            nn.Dense(2, in_units=3), nn.PReLU())
    return net


# ---- Gluon's rule: a parameter's own init wins over a tree-wide one ------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_tree_wide_initialize_keeps_each_parameters_own_init(route: str) -> None:
    net = _dense_net()
    pp.tree(net).initialize(make(route, "xavier"), seed=0)  # a PReLU no longer refuses Xavier
    np.testing.assert_array_equal(net[0].weight.data().asnumpy(), 2.0)
    np.testing.assert_array_equal(net[0].bias.data().asnumpy(), 1.0)
    np.testing.assert_array_equal(net[2].alpha.data().asnumpy(), 0.25)
    w = net[1].weight.data().asnumpy()
    bound = np.sqrt(3.0 / ((3 + 2) / 2))                    # Xavier(uniform, avg, 3) on the default weight
    assert np.abs(w).max() <= bound and w.std() > 0.1
    np.testing.assert_array_equal(net[1].bias.data().asnumpy(), 0.0)
    # the same as Gluon's own net.initialize(Xavier()) for every parameter with its own init
    native = _dense_net()
    native.initialize(mx.init.Xavier())
    for ours, theirs in zip(net.collect_params().values(), native.collect_params().values()):
        if ours.init is not None:
            np.testing.assert_array_equal(ours.data().asnumpy(), theirs.data().asnumpy())


def test_one_parameter_initialize_overrides_its_own_init() -> None:
    net = _dense_net()
    tree = pp.tree(net)
    tree.initialize(pp.init.Xavier(), seed=0)
    tree["0.weight"].initialize(pp.init.Constant(-3.0), force_reinit=True)
    tree["2.alpha"].initialize(mx.init.Constant(0.5), force_reinit=True)
    np.testing.assert_array_equal(net[0].weight.data().asnumpy(), -3.0)
    np.testing.assert_array_equal(net[2].alpha.data().asnumpy(), 0.5)
    np.testing.assert_array_equal(net[0].bias.data().asnumpy(), 1.0)    # untouched


def test_selection_wide_initialize_keeps_own_inits() -> None:
    net = _dense_net()
    tree = pp.tree(net)
    tree.initialize(pp.init.Zero(), seed=0)
    tree.select("*.weight").initialize(pp.init.Constant(7.0), force_reinit=True)
    np.testing.assert_array_equal(net[0].weight.data().asnumpy(), 2.0)   # its own Constant(2.0)
    np.testing.assert_array_equal(net[1].weight.data().asnumpy(), 7.0)
    tree.select("*.alpha").initialize(pp.init.Xavier(), force_reinit=True)
    np.testing.assert_array_equal(net[2].alpha.data().asnumpy(), 0.25)


def test_parameter_init_and_deferred_layers_keep_their_init() -> None:
    class Block(gluon.Block):
        def __init__(self) -> None:
            super().__init__()
            with self.name_scope():
                self.w = self.params.get("w", shape=(3, 4), init=mx.init.Constant(-1.0))
                self.dense = nn.Dense(2, weight_initializer="ones")    # deferred: in_units unknown

        def forward(self, x: Any) -> Any:
            return self.dense(x)

    block = Block()
    pp.tree(block).initialize(pp.init.Xavier(), seed=0)
    block(mx.nd.ones((1, 5)))
    np.testing.assert_array_equal(block.w.data().asnumpy(), -1.0)
    np.testing.assert_array_equal(block.dense.weight.data().asnumpy(), 1.0)


@pytest.mark.parametrize("route", ROUTES)
def test_shared_parameters_keep_a_non_default_init(route: str) -> None:
    class MyBlock(gluon.HybridBlock):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            with self.name_scope():
                self.param = self.params.get("param", shape=(1,), init=mx.init.Constant(-10.0))

    net = nn.Sequential()
    first = MyBlock()
    net.add(first, MyBlock(params=first.collect_params()))
    pp.tree(net).initialize(make(route, "uniform"), seed=0)
    np.testing.assert_array_equal(net[0].param.data().asnumpy(), -10.0)
    assert net[1].param is net[0].param


def test_an_init_polyparam_has_no_builtin_for_is_drawn_by_gluon() -> None:
    block = Holder(b=gluon.Parameter("b", shape=(8,), init=mx.init.LSTMBias(forget_bias=1.0)))
    pp.tree(block).initialize(pp.init.Xavier(), seed=0)
    np.testing.assert_array_equal(block.b.data().asnumpy(), [0, 0, 1, 1, 0, 0, 0, 0])  # LSTMBias' forget gate


def test_conventional_init_lets_rules_reach_biases() -> None:
    """Difference from MXNet: a bias's declared "zeros" (what role dispatch gives anyway) is not "own"."""
    net = nn.Dense(3, in_units=4)
    pp.tree(net).initialize(pp.init.Mixed({"*bias": pp.init.Constant(0.1), "*": pp.init.Xavier()}), seed=0)
    np.testing.assert_allclose(net.bias.data().asnumpy(), 0.1)
    native = nn.Dense(3, in_units=4)
    native.initialize(mx.init.Constant(0.1))
    np.testing.assert_array_equal(native.bias.data().asnumpy(), 0.0)    # Gluon keeps the declared zeros


def test_declared_fills_what_gluon_declares() -> None:
    class Block(gluon.Block):
        def __init__(self) -> None:
            super().__init__()
            with self.name_scope():
                self.dense = nn.Dense(300, in_units=200, bias_initializer="ones")
                self.bias = self.params.get("bias", shape=(5000,))   # no init: Gluon draws Uniform(0.07)
                self.prelu = nn.PReLU()

    block = Block()
    pp.tree(block).initialize(pp.init.Declared(), seed=0)
    w = block.dense.weight.data().asnumpy()
    assert np.abs(w).max() <= 0.07 and abs(w.std() - 0.07 / np.sqrt(3)) < 0.002
    np.testing.assert_array_equal(block.dense.bias.data().asnumpy(), 1.0)
    b = block.bias.data().asnumpy()
    assert np.abs(b).max() <= 0.07 and b.std() > 0.03
    np.testing.assert_array_equal(block.prelu.alpha.data().asnumpy(), 0.25)
    first = block.dense.weight.data().asnumpy()
    pp.tree(block).initialize(pp.init.Declared(), seed=0, force_reinit=True)
    np.testing.assert_array_equal(block.dense.weight.data().asnumpy(), first)   # seeded


def test_declared_initializer_hook_values() -> None:
    net = _dense_net()
    tree = pp.tree(net)
    assert tree["0.weight"]._declared_initializer() == pp.init.Constant(2.0)
    assert tree["0.bias"]._declared_initializer() == pp.init.One()
    assert tree["1.weight"]._declared_initializer() == pp.init.Uniform(0.07)
    assert tree["1.bias"]._declared_initializer() == pp.init.Zero()
    assert tree["2.alpha"]._declared_initializer() == pp.init.Constant(0.25)
    assert tree["1.weight"]._own_initializer() is None and tree["1.bias"]._own_initializer() is None
    assert tree["2.alpha"]._own_initializer() == pp.init.Constant(0.25)
    holder = Holder(c=gluon.Constant("c", np.array([[1.0, 2.0]], np.float32)))
    declared = pp.tree(holder)["c"]._declared_initializer()
    assert isinstance(declared, pp.init.Constant)
    np.testing.assert_array_equal(declared.value, [[1.0, 2.0]])
    assert pp.tree(holder)["c"]._own_initializer() is None   # a selection can still set a constant


# ---- row_sparse parameters ------------------------------------------------------------------


def _sparse_block(**kwargs: Any) -> Holder:
    return Holder(weight=gluon.Parameter("weight", shape=(4, 2), stype="row_sparse", grad_stype="row_sparse",
                                         **kwargs))


def test_row_sparse_initialize_keeps_storage_and_trainer_works() -> None:
    block = _sparse_block()
    tree = pp.tree(block)
    tree.to("cpu,cpu:1")
    tree.initialize(pp.init.Xavier(), seed=0)
    assert all(d.stype == "row_sparse" for d in block.weight._data)
    assert all(g.stype == "row_sparse" for g in block.weight._grad)
    gluon.Trainer(block.collect_params(), "sgd")
    rows = block.weight.row_sparse_data(mx.nd.arange(0, 4))
    assert rows.stype == "row_sparse"
    np.testing.assert_array_equal(rows.asnumpy(), tree["weight"].numpy())


def test_row_sparse_set_reinit_and_load_write_through_the_sparse_api() -> None:
    block = _sparse_block()
    block.initialize(mx.init.Xavier(), ctx=[mx.cpu(0), mx.cpu(1)])
    gluon.Trainer(block.collect_params(), "sgd")
    block.weight.row_sparse_data(mx.nd.arange(0, 4))             # the kvstore now holds the weight
    tree = pp.tree(block)
    value = np.arange(8, dtype=np.float32).reshape(4, 2)
    tree["weight"].set(value)
    for data in block.weight._data:
        assert data.stype == "row_sparse"
        np.testing.assert_array_equal(data.asnumpy(), value)
    np.testing.assert_array_equal(block.weight.row_sparse_data(mx.nd.arange(0, 4)).asnumpy(), value)
    tree.initialize(pp.init.One(), force_reinit=True)
    np.testing.assert_array_equal(block.weight.row_sparse_data(mx.nd.arange(0, 4)).asnumpy(), 1.0)
    tree.load_state({"weight": value * 2})
    assert block.weight._data[1].stype == "row_sparse"
    np.testing.assert_array_equal(block.weight.row_sparse_data(mx.nd.arange(0, 4)).asnumpy(), value * 2)


# ---- differences from MXNet, pinned ---------------------------------------------------------


def test_load_state_keeps_the_current_dtype() -> None:
    """Difference: polyparam's loads never change a parameter's dtype (Gluon's dtype_source="saved" does)."""
    net = nn.Dense(10, in_units=10)
    pp.tree(net).initialize(seed=0)
    net.cast("float16")
    pp.tree(net).load_state({"weight": np.ones((10, 10), np.float32), "bias": np.zeros(10, np.float32)})
    assert np.dtype(net.weight.dtype) == np.float16


def test_parameters_without_init_are_filled_by_role() -> None:
    """Difference: Gluon fills a parameter without ``init`` with its default's ``_init_weight``, whatever its
    name; polyparam's tree-wide initialize dispatches by role (a bias gets 0). ``Declared()`` gives Gluon's."""
    def block() -> Holder:
        return Holder(bias=gluon.Parameter("bias", shape=(100,)))

    ours, native, declared = block(), block(), block()
    pp.tree(ours).initialize(pp.init.Uniform(0.07), seed=0)
    native.initialize(mx.init.Uniform(0.07))
    pp.tree(declared).initialize(pp.init.Declared(), seed=0)
    np.testing.assert_array_equal(ours.bias.data().asnumpy(), 0.0)
    assert native.bias.data().asnumpy().std() > 0.02
    assert declared.bias.data().asnumpy().std() > 0.02


def test_to_before_initialize_chooses_the_contexts() -> None:
    """Difference: no ``ctx=`` argument; ``tree.to(...)`` before ``initialize`` says where the data goes."""
    block = Holder(w=gluon.Parameter("w", shape=(2, 2)))
    tree = pp.tree(block).to("cpu:1,cpu:2")
    tree.initialize(pp.init.One())
    assert block.w.list_ctx() == [mx.cpu(1), mx.cpu(2)]


# ---- upstream: tests/python/unittest/test_init.py (MXNet 1.9.1) ------------------------------
#
# The symbolic Module API has no polyparam tree; each test checks the same property on the
# Gluon block with the same parameters (PReLU's alpha, BatchNorm's statistics, a row_sparse
# weight), initialized through polyparam.



@pytest.mark.parametrize("route", ROUTES)
def test_default_init(route: str) -> None:
    net = nn.PReLU()
    pp.tree(net).initialize(make(route, "uniform"), seed=0)
    net(mx.nd.ones((10, 10)))
    assert (net.alpha.data().asnumpy() == 0.25).all()


@pytest.mark.parametrize("route", ROUTES)
def test_variable_init(route: str) -> None:
    net = nn.PReLU(alpha_initializer=make(route, "one"))
    pp.tree(net).initialize(make(route, "uniform"), seed=0)
    net(mx.nd.ones((10, 10)))
    assert (net.alpha.data().asnumpy() == 1).all()


@pytest.mark.parametrize("route", ROUTES)
def test_aux_init(route: str) -> None:
    net = nn.BatchNorm()
    pp.tree(net).initialize(make(route, "uniform"), seed=0)
    net(mx.nd.ones((10, 10, 3, 3)))
    assert (net.running_var.data().asnumpy() == 1).all()
    assert (net.running_mean.data().asnumpy() == 0).all()


@pytest.mark.parametrize("route", ROUTES)
def test_rsp_const_init(route: str) -> None:
    def check_rsp_const_init(init: Any, val: float) -> None:
        shape = (10, 10)
        block = Holder(weight=gluon.Parameter("weight", shape=(shape[1], 2), init=init, stype="row_sparse"))
        pp.tree(block).initialize(make(route, "uniform"), seed=0)
        assert block.weight._data[0].stype == "row_sparse"
        assert (block.weight._data[0].asnumpy() == val).all()

    check_rsp_const_init(make(route, "constant", 2.0), 2.)
    check_rsp_const_init(make(route, "zero"), 0.)
    check_rsp_const_init(make(route, "one"), 1.)


@pytest.mark.parametrize("route", ROUTES)
def test_bilinear_init(route: str) -> None:
    layer = nn.Conv2DTranspose(1, 4, in_channels=1, use_bias=False)
    pp.tree(layer).initialize(make(route, "bilinear"), seed=0)
    bili_weight = layer.weight.data()
    bili_1d = np.array([[1 / float(4), 3 / float(4), 3 / float(4), 1 / float(4)]])
    bili_2d = bili_1d * np.transpose(bili_1d)
    assert (bili_2d == bili_weight.asnumpy()).all()


@pytest.mark.parametrize("route", ROUTES)
def test_const_init_dumps(route: str) -> None:
    shape = tuple(np.random.randint(1, 10, size=np.random.randint(1, 5)))

    def as_pp(value: Any) -> Any:
        return pp.init.Constant(value) if route == "builtin" else pp.init.as_initializer(mx.init.Constant(value))

    # scalar input
    assert pp.init.dumps(as_pp(1)) == '["constant", {"value": 1}]'
    # NDArray input
    init = mx.init.Constant(mx.nd.ones(shape))
    val = pp.init.dumps(as_pp(mx.nd.ones(shape)))
    assert val == init.dumps() == json.dumps([init.__class__.__name__.lower(), init._kwargs])
    # numpy input
    init = mx.init.Constant(np.ones(shape))
    val = pp.init.dumps(as_pp(np.ones(shape)))
    assert val == init.dumps() == json.dumps([init.__class__.__name__.lower(), init._kwargs])


def test_const_init_dumps_builtin_arrays() -> None:
    """The builtin route of test_const_init_dumps past its scalar case: Gluon's JSON for array values."""
    shape = (2, 3)
    assert pp.init.dumps(pp.init.Constant(np.ones(shape))) == mx.init.Constant(np.ones(shape)).dumps()
    assert pp.init.dumps(pp.init.Constant(mx.nd.ones(shape))) == mx.init.Constant(mx.nd.ones(shape)).dumps()


# ---- upstream: the parameter and initializer tests of tests/python/unittest/test_gluon.py -----


@pytest.mark.parametrize("route", ROUTES)
def test_parameter(route: str) -> None:
    p = gluon.Parameter("weight", shape=(10, 10))
    tree = pp.tree(Holder(weight=p)).to("cpu,cpu:1")
    tree.initialize(make(route, "xavier"), seed=0)
    assert len(p.list_data()) == 2
    assert len(p.list_grad()) == 2
    assert p.data(mx.cpu(1)).context == mx.cpu(1)
    assert p.data(mx.cpu(0)).shape == (10, 10)
    assert p.var().name == "weight"
    assert p.grad(mx.cpu(0)).stype == "default"
    assert p.data(mx.cpu(0)).stype == "default"

    tree.to("cpu:1,cpu:2")
    assert p.list_ctx() == [mx.cpu(1), mx.cpu(2)]


def test_invalid_parameter_stype() -> None:
    """Gluon refuses the Parameter itself: there is nothing for polyparam to wrap (both routes)."""
    with pytest.raises(AssertionError):
        gluon.Parameter("weight", shape=(10, 10), stype="invalid")


def test_invalid_parameter_grad_stype() -> None:
    with pytest.raises(AssertionError):
        gluon.Parameter("weight", shape=(10, 10), grad_stype="invalid")


@pytest.mark.parametrize("route", ROUTES)
def test_sparse_parameter(route: str) -> None:
    p = gluon.Parameter("weight", shape=(10, 10), stype="row_sparse", grad_stype="row_sparse")
    tree = pp.tree(Holder(weight=p)).to("cpu,cpu:1")
    tree.initialize(make(route, "xavier"), seed=0)
    row_id = mx.nd.arange(0, 10, ctx=mx.cpu(1))
    assert len(p.list_grad()) == 2
    # getting row_sparse data without trainer throws an exception
    with pytest.raises(RuntimeError):
        p.list_row_sparse_data(row_id)
    mx.gluon.Trainer([p], "sgd")
    assert len(p.list_row_sparse_data(row_id)) == 2
    weight = p.row_sparse_data(row_id)
    assert weight.context == mx.cpu(1)
    assert weight.shape == (10, 10)
    assert weight.stype == "row_sparse"
    assert p.var().name == "weight"
    assert p.var().attr("__storage_type__") == str(mx.ndarray.ndarray._STORAGE_TYPE_STR_TO_ID["row_sparse"])
    assert p.grad(mx.cpu(0)).stype == "row_sparse"

    tree.to("cpu:1,cpu:2")
    assert p.list_ctx() == [mx.cpu(1), mx.cpu(2)]


@pytest.mark.parametrize("route", ROUTES)
def test_parameter_invalid_access(route: str) -> None:
    # cannot call data on row_sparse parameters
    p0 = gluon.Parameter("weight", shape=(10, 10), stype="row_sparse", grad_stype="row_sparse")
    pp.tree(Holder(weight=p0)).to("cpu,cpu:1").initialize(make(route, "xavier"), seed=0)
    with pytest.raises(RuntimeError):
        p0.data()
    with pytest.raises(RuntimeError):
        p0.list_data()
    row_id = mx.nd.arange(0, 10)
    # cannot call row_sparse_data on dense parameters
    p1 = gluon.Parameter("weight", shape=(10, 10))
    pp.tree(Holder(weight=p1)).to("cpu,cpu:1").initialize(make(route, "xavier"), seed=0)
    with pytest.raises(RuntimeError):
        p1.row_sparse_data(row_id.copyto(mx.cpu(0)))
    with pytest.raises(RuntimeError):
        p1.list_row_sparse_data(row_id)


def _dict_block(w1_stype: str = "row_sparse", dtypes: tuple[str, str] = ("float32", "float32")) -> Holder:
    return Holder(w0=gluon.Parameter("net_w0", shape=(10, 10), dtype=dtypes[0]),
                  w1=gluon.Parameter("net_w1", shape=(10, 10), stype=w1_stype, dtype=dtypes[1]))


@pytest.mark.parametrize("route", ROUTES)
def test_parameter_dict(route: str) -> None:
    ctx = "cpu:1"
    all_row_ids = mx.nd.arange(0, 10, ctx=mx.cpu(1))
    block0 = _dict_block()
    tree0 = pp.tree(block0).to(ctx)
    assert [p.native_name for p in tree0.parameters()] == ["net_w0", "net_w1"]
    tree0.initialize(make(route, "uniform"), seed=0)
    mx.gluon.Trainer(block0.collect_params(), "sgd")
    prev_w0 = block0.w0.data(mx.cpu(1))
    prev_w1 = block0.w1.row_sparse_data(all_row_ids)
    state = tree0.state()                                     # save

    block1 = _dict_block()                                    # load
    pp.tree(block1).to(ctx).load_state(state)
    mx.gluon.Trainer(block1.collect_params(), "sgd")
    cur_w0 = block1.w0.data(mx.cpu(1))
    cur_w1 = block1.w1.row_sparse_data(all_row_ids)
    assert cur_w1.stype == "row_sparse"
    mx.test_utils.assert_almost_equal(prev_w0.asnumpy(), cur_w0.asnumpy())
    mx.test_utils.assert_almost_equal(prev_w1.asnumpy(), cur_w1.asnumpy())

    # dense params loaded from the state of sparse & dense params
    block2 = _dict_block("default")
    pp.tree(block2).to(ctx).load_state(state)
    mx.test_utils.assert_almost_equal(prev_w0.asnumpy(), block2.w0.data(mx.cpu(1)).asnumpy())
    mx.test_utils.assert_almost_equal(prev_w1.asnumpy(), block2.w1.data(mx.cpu(1)).asnumpy())

    # reset_ctx
    block3 = _dict_block("default")
    tree3 = pp.tree(block3).to(ctx)
    tree3.initialize(make(route, "uniform"), seed=0)
    tree3.to("cpu:42,cpu:24")
    for p in block3.collect_params().values():
        assert set(p.list_ctx()) == {mx.cpu(42), mx.cpu(24)}
    assert set(block3.collect_params().list_ctx()) == {mx.cpu(42), mx.cpu(24)}

    # dtype casting, dtype_source="current" (polyparam keeps the current dtype; see the differences)
    block4 = _dict_block("default", ("float32", "int8"))
    pp.tree(block4).initialize(make(route, "one"), seed=0)
    block5 = _dict_block("default", ("float16", "float64"))
    pp.tree(block5).load_state(pp.tree(block4).state())
    assert block5.w0.data().dtype == np.float16
    assert block5.w1.data().dtype == np.float64


@pytest.mark.parametrize("route", ROUTES)
def test_parameter_row_sparse_data(route: str) -> None:
    ctx0 = mx.cpu(1)
    ctx1 = mx.cpu(2)
    dim0 = 4
    x = gluon.Parameter("x", shape=(dim0, 2), stype="row_sparse")
    pp.tree(Holder(x=x)).to("cpu:1,cpu:2").initialize(make(route, "xavier"), seed=0)
    gluon.Trainer([x], "sgd")
    x_param = x._data[0].copy()
    assert x_param.stype == "row_sparse"
    row_id_0 = mx.nd.array([0, 1], ctx=ctx0)
    retained_0 = x.row_sparse_data(row_id_0)
    retained_target_0 = mx.nd.sparse.retain(x_param, row_id_0.as_in_context(ctx0))
    mx.test_utils.assert_almost_equal(retained_0.asnumpy(), retained_target_0.asnumpy())
    assert retained_0.context == ctx0
    row_id_1 = mx.nd.arange(0, dim0, ctx=ctx1)
    retained_1 = x.row_sparse_data(row_id_1)
    retained_target_1 = x_param
    mx.test_utils.assert_almost_equal(retained_1.asnumpy(), retained_target_1.asnumpy())
    assert retained_1.context == ctx1
    row_id_2 = mx.nd.array([0, 1, 2])
    retained_2 = x.list_row_sparse_data(row_id_2)
    retained_target_2 = mx.nd.sparse.retain(x_param, row_id_2.as_in_context(ctx0))
    mx.test_utils.assert_almost_equal(retained_2[0].asnumpy(), retained_target_2.asnumpy())


class ConstantTest(gluon.HybridBlock):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.value = np.asarray([[1, 2], [3, 4]])
        self.const = self.params.get_constant("const", self.value)

    def hybrid_forward(self, F: Any, x: Any, const: Any) -> Any:  # noqa: N803 - Gluon's name
        return x + const


@pytest.mark.parametrize("route", ROUTES)
def test_constant(route: str) -> None:
    test = ConstantTest()
    pp.tree(test).initialize(make(route, "uniform"), seed=0)
    trainer = gluon.Trainer(test.collect_params(), "sgd", {"learning_rate": 1.0, "momentum": 0.5})
    with mx.autograd.record():
        x = mx.nd.ones((2, 2))
        x.attach_grad()
        y = test(x)
        y.backward()
    trainer.step(1)
    assert (test.const.data().asnumpy() == test.value).all()
    assert (x.grad.asnumpy() == 1).all()


class SharingNet(gluon.Block):
    def __init__(self, in_units: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with self.name_scope():
            self.dense0 = nn.Dense(5, in_units=in_units)
            self.dense1 = nn.Dense(5, in_units=in_units)

    def forward(self, x: Any) -> Any:
        return self.dense1(self.dense0(x))


@pytest.mark.parametrize("route", ROUTES)
def test_parameter_sharing(route: str) -> None:
    net1 = SharingNet(prefix="net1_", in_units=5)
    net2 = SharingNet(prefix="net2_", params=net1.collect_params())
    pp.tree(net1).initialize(make(route, "uniform"), seed=0)
    net2(mx.nd.zeros((3, 5)))
    state = pp.tree(net1).state()

    net3 = SharingNet(prefix="net3_")
    pp.tree(net3).load_state(state)                            # into deferred parameters (in_units=0)
    np.testing.assert_array_equal(net3.dense0.weight.data().asnumpy(), net1.dense0.weight.data().asnumpy())

    net4 = SharingNet(prefix="net4_")
    net5 = SharingNet(prefix="net5_", in_units=5, params=net4.collect_params())
    pp.tree(net4).initialize(make(route, "uniform"), seed=0)
    net5(mx.nd.zeros((3, 5)))
    net6 = SharingNet(prefix="net6_")
    pp.tree(net6).load_state(pp.tree(net4).state())
    np.testing.assert_array_equal(net6.dense1.bias.data().asnumpy(), net4.dense1.bias.data().asnumpy())


@pytest.mark.parametrize("route", ROUTES)
def test_parameter_str(route: str) -> None:
    class Net(gluon.Block):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            with self.name_scope():
                self.dense0 = nn.Dense(10, in_units=5, use_bias=False)

    net = Net(prefix="net1_")
    pp.tree(net).initialize(make(route, "uniform"), seed=0)
    lines = str(net.collect_params()).splitlines()
    assert lines[0] == "net1_ ("
    assert "net1_dense0_weight" in lines[1]
    assert "(10, 5)" in lines[1]
    assert "float32" in lines[1]
    assert lines[2] == ")"


def test_collect_parameters() -> None:
    """Route-free: names, not values (both routes)."""
    net = nn.HybridSequential(prefix="test_")
    with net.name_scope():
        net.add(nn.Conv2D(10, 3))
        net.add(nn.Dense(10, activation="relu"))
    tree = pp.tree(net)
    assert {p.native_name for p in tree.parameters()} == \
        {"test_conv0_weight", "test_conv0_bias", "test_dense0_weight", "test_dense0_bias"}
    assert {p.native_name for p in tree.select(regex=r"weight$").parameters()} == \
        {"test_conv0_weight", "test_dense0_weight"}
    assert {p.native_name for p in tree.select(where=lambda p: p.native_name in (
        "test_conv0_bias", "test_dense0_bias")).parameters()} == {"test_conv0_bias", "test_dense0_bias"}


@pytest.mark.parametrize("route", ROUTES)
def test_deferred_init(route: str) -> None:
    x = mx.nd.ones((5, 4, 10, 10))
    layer = nn.Conv2D(10, 2)
    pp.tree(layer).initialize(make(route, "uniform"), seed=0)
    layer(x)
    assert layer.weight.shape == (10, 4, 2, 2)


def _fill_net() -> nn.HybridSequential:
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Conv2D(64, kernel_size=2, padding=1), nn.BatchNorm(), nn.Dense(10))
    net.hybridize()
    return net


@pytest.mark.parametrize("route", ROUTES)
def test_fill_shape_deferred(route: str) -> None:
    net = _fill_net()
    pp.tree(net).initialize(make(route, "uniform"), seed=0)
    net(mx.nd.ones((2, 3, 5, 7)))
    assert net[0].weight.shape[1] == 3, net[0].weight.shape[1]
    assert net[1].gamma.shape[0] == 64, net[1].gamma.shape[0]
    assert net[2].weight.shape[1] == 3072, net[2].weight.shape[1]


@pytest.mark.parametrize("route", ROUTES)
def test_fill_shape_load(route: str) -> None:
    net1 = _fill_net()
    pp.tree(net1).initialize(make(route, "uniform"), seed=0)
    net1(mx.nd.ones((2, 3, 5, 7)))
    state = pp.tree(net1).state()
    net2 = _fill_net()
    pp.tree(net2).initialize(make(route, "uniform"), seed=0)
    pp.tree(net2).load_state(state)
    assert net2[0].weight.shape[1] == 3, net2[0].weight.shape[1]
    assert net2[1].gamma.shape[0] == 64, net2[1].gamma.shape[0]
    assert net2[2].weight.shape[1] == 3072, net2[2].weight.shape[1]


class SharedB(gluon.Block):
    def __init__(self, params: Any = None) -> None:
        super().__init__(params=params)
        with self.name_scope():
            self.weight = self.params.get("weight", shape=(10, 10))


class SharedC(gluon.Block):
    def __init__(self, b1: gluon.Block, b2: gluon.Block) -> None:
        super().__init__()
        self.b1 = b1
        self.b2 = b2


def _shared_c() -> SharedC:
    b1 = SharedB()
    return SharedC(b1, SharedB(b1.collect_params()))


@pytest.mark.parametrize("route", ROUTES)
def test_save_load_deduplicate_with_shared_params(route: str, tmp_path: Any) -> None:
    c = _shared_c()
    pp.tree(c).initialize(make(route, "uniform"), seed=0)
    c.save_parameters(str(tmp_path / "tmp.params"), deduplicate=True)
    assert len(mx.nd.load(str(tmp_path / "tmp.params"))) == 1  # Only a single copy of the shared parameter
    c2 = _shared_c()
    pp.tree(c2).load_state({"b1.weight": pp.tree(c)["b1.weight"].numpy()})   # one key for the tied group
    assert c2.b1.weight is c2.b2.weight
    np.testing.assert_array_equal(c2.b2.weight.data().asnumpy(), c.b1.weight.data().asnumpy())

    # default behavior
    c.save_parameters(str(tmp_path / "tmp2.params"), deduplicate=False)
    assert len(mx.nd.load(str(tmp_path / "tmp2.params"))) == 2
    c3 = _shared_c()
    pp.tree(c3).load_state(pp.tree(c).state())                 # both keys, equal values
    np.testing.assert_array_equal(c3.b1.weight.data().asnumpy(), c.b1.weight.data().asnumpy())


@pytest.mark.parametrize("route", ROUTES)
def test_np_shape_parameters(route: str) -> None:
    class Foo(gluon.Block):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.dense = gluon.nn.Dense(16)

        def forward(self, x: Any) -> Any:
            return self.dense(x)

    with mx.np_shape(True):
        z = mx.nd.zeros((2, 2016))
        foo = Foo()
        pp.tree(foo).initialize(make(route, "uniform"), seed=0)
        assert foo(z).shape == (2, 16)


@pytest.mark.parametrize("route", ROUTES)
def test_gluon_param_load(route: str) -> None:
    net = mx.gluon.nn.Dense(10, in_units=10)
    pp.tree(net).initialize(make(route, "uniform"), seed=0)
    state = pp.tree(net).state()
    net.cast("float16")
    pp.tree(net).load_state(state)                            # cast_dtype=True: into the current dtype
    mx.nd.waitall()
    assert np.dtype(net.weight.dtype) == np.float16


@pytest.mark.parametrize("route", ROUTES)
def test_gluon_param_load_dtype_source(route: str, tmp_path: Any) -> None:
    """polyparam initializes; the load with dtype_source="saved" is Gluon's (polyparam's keeps the current
    dtype: see test_load_state_keeps_the_current_dtype)."""
    net = mx.gluon.nn.Dense(10, in_units=10)
    pp.tree(net).initialize(make(route, "uniform"), seed=0)
    net.cast("float16")
    net.save_parameters(str(tmp_path / "p.params"))
    net.cast("float32")
    net.load_parameters(str(tmp_path / "p.params"), cast_dtype=True, dtype_source="saved")
    assert net.weight.dtype == np.float16
    mx.nd.waitall()


@pytest.mark.parametrize("route", ROUTES)
def test_shared_parameters_with_non_default_initializer(route: str) -> None:
    class MyBlock(gluon.HybridBlock):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            with self.name_scope():
                self.param = self.params.get("param", shape=(1,), init=mx.init.Constant(-10.0))

    bl = MyBlock()
    bl2 = MyBlock(params=bl.collect_params())
    assert bl.param is bl2.param
    bl3 = MyBlock()
    assert bl.param is not bl3.param
    assert bl.param.init == bl3.param.init
    net = nn.HybridSequential()
    net.add(bl, bl2, bl3)
    pp.tree(net).initialize(make(route, "uniform"), seed=0)
    for block in (bl, bl2, bl3):
        assert (block.param.data().asnumpy() == -10.0).all()


@pytest.mark.parametrize("route", ROUTES)
def test_embedding(route: str) -> None:
    def check_embedding(sparse_grad: bool) -> None:
        layer = gluon.nn.Embedding(10, 100, sparse_grad=sparse_grad)
        pp.tree(layer).initialize(make(route, "uniform"), seed=0)
        x = mx.nd.array([3, 4, 2, 0, 1])
        with mx.autograd.record():
            y = layer(x)
            y.backward()
        assert (layer.weight.grad().asnumpy()[:5] == 1).all()
        assert (layer.weight.grad().asnumpy()[5:] == 0).all()
        grad = pp.tree(layer)["weight"].grad()
        assert grad is not None and (grad[:5] == 1).all() and (grad[5:] == 0).all()

    def check_embedding_large_input(sparse_grad: bool) -> None:
        embedding = mx.gluon.nn.Embedding(10, 1, sparse_grad=True)
        pp.tree(embedding).initialize(make(route, "uniform"), seed=0)
        embedding.hybridize()
        shape = (20481,)
        with mx.autograd.record():
            emb_in = embedding(mx.nd.ones(shape))
            loss = emb_in.sum()
        loss.backward()
        assert embedding.weight.grad().data.sum().asscalar() == 20481

    check_embedding(True)
    check_embedding(False)
    check_embedding_large_input(True)
    check_embedding_large_input(False)

"""Every code cell of the chapter's Gluon versions (D2L "Parameter Management", MXNet tab;
the older Gluon chapter; MXNet's "Initialization" tutorial), done through polyparam on
real Gluon networks."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

if importlib.util.find_spec("mxnet") is None:
    pytest.skip("mxnet is not installed", allow_module_level=True)

# The adapter imports mxnet after its load-order check, so it comes first.
# isort: off
import polyparam as pp  # noqa: E402
from polyparam_mxnet import _backend  # noqa: E402,F401

import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon, nd, npx  # noqa: E402
from mxnet.gluon import nn  # noqa: E402
# isort: on


@pytest.fixture
def np_semantics():
    """The D2L version runs under ``npx.set_np()``; restore the legacy mode for the other tests."""
    npx.set_np()
    yield
    npx.reset_np()


class MyInit(pp.init.Initializer):
    """The chapter's MyInit, on NumPy arrays and the parameter's own generator."""

    def init_weight(self, name, arr):
        print("Init", name, arr.shape)
        arr[:] = self.rng.uniform(-10, 10, arr.shape)
        arr *= np.abs(arr) >= 5


def _check_my_init(w: np.ndarray) -> None:
    assert ((w == 0) | ((np.abs(w) >= 5) & (np.abs(w) <= 10))).all()
    assert (w != 0).any()


# ---- D2L "Parameter Management", MXNet tab (NumPy semantics) ---------------------------------


def test_d2l_parameter_management(np_semantics, capsys) -> None:
    from mxnet import np as mnp

    # net = nn.Sequential(); net.add(...); net.initialize(); net(X)
    net = nn.Sequential()
    net.add(nn.Dense(8, activation="relu"))
    net.add(nn.Dense(1))
    tree = pp.tree(net)
    assert tree.backend == "mxnet"
    report = tree.initialize()  # Gluon's default: U(-0.07, 0.07) weights, zero biases
    # as in Gluon, shapes known now (biases) are filled now, the others at the first forward
    assert report.deferred == ["0.weight", "1.weight"] and report.initialized == ["0.bias", "1.bias"]
    X = mnp.random.uniform(size=(2, 4))  # noqa: N806 - the chapter's name
    out = net(X)
    assert out.shape == (2, 1)
    for p in tree.select("*.weight"):
        assert 0 < np.abs(p.numpy()).max() <= 0.07

    # print(net[1].params)
    layer = tree[1]
    assert [(path, p.shape, p.dtype.name) for path, p in layer.items()] == \
        [("1.weight", (1, 8), "float32"), ("1.bias", (1,), "float32")]
    assert [p.native_name for p in layer.parameters()] == [net[1].weight.name, net[1].bias.name]
    text = str(layer)
    assert "1.weight" in text and "(1, 8)" in text and "float32" in text

    # type(net[1].bias); net[1].bias; net[1].bias.data()
    bias = tree[1]["bias"]
    assert isinstance(bias.native, gluon.Parameter) and bias.native is net[1].bias
    np.testing.assert_array_equal(bias.numpy(), [0.0])

    # net[1].weight.grad(): no backward yet
    assert tree[1]["weight"].grad() is None

    # net[0].collect_params(); net.collect_params()
    assert [(path, p.shape) for path, p in tree[0].items()] == [("0.weight", (8, 4)), ("0.bias", (8,))]
    assert [(path, p.shape) for path, p in tree.items()] == \
        [("0.weight", (8, 4)), ("0.bias", (8,)), ("1.weight", (1, 8)), ("1.bias", (1,))]
    assert [p.native_name for p in tree.parameters()] == list(net.collect_params().keys())

    # net.collect_params()['dense1_bias'].data()
    np.testing.assert_array_equal(tree.get(net[1].bias.name).numpy(), [0.0])

    # nested blocks: block1, block2, rgnet
    def block1():
        b = nn.Sequential()
        b.add(nn.Dense(32, activation="relu"))
        b.add(nn.Dense(16, activation="relu"))
        return b

    def block2():
        b = nn.Sequential()
        for _ in range(4):
            b.add(block1())
        return b

    rgnet = nn.Sequential()
    rgnet.add(block2())
    rgnet.add(nn.Dense(10))
    rg = pp.tree(rgnet)
    rg.initialize()
    assert rgnet(X).shape == (2, 10)
    assert len(rg.items()) == 18
    assert [p.native_name for p in rg.parameters()] == list(rgnet.collect_params().keys())
    assert rg["0.0.0.weight"].shape == (32, 4) and rg["1.weight"].shape == (10, 16)
    # rgnet[0][1][0].bias.data()
    inner = rg[0][1][0]["bias"]
    assert inner.native is rgnet[0][1][0].bias
    np.testing.assert_array_equal(inner.numpy(), np.zeros(32))

    # net.initialize(init=init.Normal(sigma=0.01), force_reinit=True); net[0].weight.data()[0]
    tree.initialize(pp.init.Normal(sigma=0.01), force_reinit=True)
    w0 = tree[0]["weight"].numpy()
    assert w0.shape == (8, 4) and 0 < np.abs(w0).max() < 0.06
    np.testing.assert_array_equal(tree[0]["bias"].numpy(), 0)
    # Constant(1)
    tree.initialize(pp.init.Constant(1), force_reinit=True)
    np.testing.assert_array_equal(tree["0.weight"].numpy()[0], [1, 1, 1, 1])
    # net[0].weight.initialize(init=init.Xavier(), ...); net[1].initialize(init=init.Constant(42), ...)
    tree[0]["weight"].initialize(pp.init.Xavier(), force_reinit=True)
    tree[1].initialize(pp.init.Constant(42), force_reinit=True)
    assert np.abs(tree["0.weight"].numpy()).max() <= np.sqrt(6 / 12)
    np.testing.assert_array_equal(tree["1.weight"].numpy(), np.full((1, 8), 42))
    # the framework sees the values
    np.testing.assert_array_equal(net[1].weight.data().asnumpy(), np.full((1, 8), 42))

    # class MyInit(init.Initializer): def _init_weight(...); net.initialize(MyInit(), force_reinit=True)
    capsys.readouterr()
    tree.initialize(MyInit(), force_reinit=True)
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"Init {net[0].weight.name} (8, 4)", f"Init {net[1].weight.name} (1, 8)"]
    _check_my_init(tree["0.weight"].numpy())

    # net[0].weight.data()[:] += 1; net[0].weight.data()[0, 0] = 42
    w = tree["0.weight"]
    before = w.numpy().copy()
    w[:] = w.numpy() + 1
    w[0, 0] = 42
    expected = before + 1
    expected[0, 0] = 42
    np.testing.assert_array_equal(w.numpy(), expected)
    np.testing.assert_array_equal(net[0].weight.data().asnumpy(), expected)

    # tied parameters: params=shared.params
    net = nn.Sequential()
    shared = nn.Dense(8, activation="relu")
    net.add(nn.Dense(8, activation="relu"), shared, nn.Dense(8, activation="relu", params=shared.params),
            nn.Dense(10))
    tree = pp.tree(net)
    tree.initialize()
    X = mnp.random.uniform(size=(2, 20))  # noqa: N806 - the chapter's name
    net(X)
    assert {frozenset(g.paths) for g in tree.ties()} == {frozenset({"1.weight", "2.weight"}),
                                                         frozenset({"1.bias", "2.bias"})}
    assert (tree[1]["weight"].numpy()[0] == tree[2]["weight"].numpy()[0]).all()
    tree[1]["weight"][0, 0] = 100
    assert (tree[1]["weight"].numpy()[0] == tree[2]["weight"].numpy()[0]).all()
    assert net[2].weight.data()[0, 0].item() == 100
    # "the gradients of the second and third hidden layer are added together"
    with autograd.record():
        y = net(X)
    y.backward()
    grad = tree[1]["weight"].grad()
    assert grad is not None and grad.shape == (8, 8)
    np.testing.assert_array_equal(grad, net[1].weight.grad().asnumpy())


# ---- the older Gluon chapter (nd, name_scope) ------------------------------------------------


def get_net():
    net = nn.Sequential()
    with net.name_scope():
        net.add(nn.Dense(4, activation="relu"))
        net.add(nn.Dense(2))
    return net


def test_gluon_chapter_initializing_parameters(capsys) -> None:
    x = nd.random.uniform(shape=(3, 5))

    # forward without initialize: Gluon complains; polyparam says why and what to do
    net = get_net()
    tree = pp.tree(net)
    with pytest.raises(RuntimeError):
        net(x)
    with pytest.raises(pp.errors.DeferredInitializationError) as info:
        tree["0.weight"].numpy()
    assert info.value.path == "0.weight" and "forward" in str(info.value)

    # net.initialize(); net(x)
    tree.initialize()
    assert net(x).shape == (3, 2)

    # w = net[0].weight; b = net[0].bias; name, data, grad
    w, b = tree[0]["weight"], tree[0]["bias"]
    assert w.native_name == net[0].weight.name and w.native_name.endswith("dense0_weight")
    assert w.shape == (4, 5) and b.shape == (4,)
    assert np.abs(w.numpy()).max() <= 0.07
    np.testing.assert_array_equal(b.numpy(), 0)
    assert w.grad() is None and b.grad() is None

    # params = net.collect_params(); params['sequential0_dense0_bias']; params.get('dense0_weight')
    np.testing.assert_array_equal(tree.get(net[0].bias.name).numpy(), 0)
    assert tree.get("dense0_weight").is_tied_to(w)
    np.testing.assert_array_equal(tree.get("dense0_weight").numpy(), w.numpy())

    # params.initialize(init=init.Normal(sigma=0.02), force_reinit=True)
    tree.initialize(pp.init.Normal(sigma=0.02), force_reinit=True)
    assert 0 < np.abs(w.numpy()).max() < 0.15
    np.testing.assert_array_equal(b.numpy(), 0)
    # params.initialize(init=init.One(), force_reinit=True)
    tree.initialize(pp.init.One(), force_reinit=True)
    np.testing.assert_array_equal(w.numpy(), np.ones((4, 5)))
    np.testing.assert_array_equal(b.numpy(), 0)

    # deferred initialization: shapes have unknown dims before and after initialize()
    net = get_net()
    tree = pp.tree(net)
    assert tree["0.weight"].shape == (4, None) and tree["1.weight"].shape == (2, None)
    tree.initialize()
    assert tree["0.weight"].shape == (4, None) and tree["0.weight"].state == "deferred"
    net(x)
    assert tree["0.weight"].shape == (4, 5) and tree["1.weight"].shape == (2, 4)

    # shared parameters: params=net[-1].params
    net = nn.Sequential()
    with net.name_scope():
        net.add(nn.Dense(4, activation="relu"))
        net.add(nn.Dense(4, activation="relu"))
        net.add(nn.Dense(4, activation="relu", params=net[-1].params))
        net.add(nn.Dense(2))
    tree = pp.tree(net)
    tree.initialize()
    net(x)
    assert [g.paths for g in tree.ties()] == [["1.weight", "2.weight"], ["1.bias", "2.bias"]]
    np.testing.assert_array_equal(tree["1.weight"].numpy(), tree["2.weight"].numpy())
    assert not np.array_equal(tree["0.weight"].numpy()[:, :4], tree["1.weight"].numpy())

    # custom init: _init_weight uniform(5, 10), _init_bias = 1 (Gluon's biases keep their own 'zeros')
    class BiasOneInit(pp.init.Initializer):
        def _init_weight(self, _, arr):
            arr[:] = self.rng.uniform(5, 10, arr.shape)

        def _init_bias(self, _, arr):
            arr[:] = 1.0

    net = get_net()
    tree = pp.tree(net)
    tree.initialize(BiasOneInit())
    net(x)
    np.testing.assert_array_equal(tree["0.bias"].numpy(), 0)
    w = tree["0.weight"].numpy()
    assert w.shape == (4, 5) and (w >= 5).all() and (w <= 10).all()

    # w.set_data(nd.ones(w.shape))
    net = get_net()
    tree = pp.tree(net)
    tree.initialize()
    net(x)
    w = tree[1]["weight"]
    w.set(np.ones(w.shape))
    np.testing.assert_array_equal(net[1].weight.data().asnumpy(), np.ones((2, 4)))

    # net[0].params.initialize(init=init.Uniform()); net[1].params.initialize(init=init.Constant(3))
    net = get_net()
    tree = pp.tree(net)
    tree[0].initialize(pp.init.Uniform())
    tree[1].initialize(pp.init.Constant(3))
    out = net(x).asnumpy()
    np.testing.assert_array_equal(tree["1.weight"].numpy(), np.full((2, 4), 3))
    np.testing.assert_array_equal(out[:, 0], out[:, 1])
    # again without force_reinit: warned and kept
    before = tree.state(copy=True)
    with pytest.warns(pp.errors.AlreadyInitializedWarning):
        tree[0].initialize(pp.init.Uniform())
    with pytest.warns(pp.errors.AlreadyInitializedWarning):
        tree[1].initialize(pp.init.Constant(3))
    for path, value in before.items():
        np.testing.assert_array_equal(tree[path].numpy(), value)
    assert "Dense(5 -> 4" in repr(net)

    # in_units given: Dense 0 and 1 tied, initialized at once by MyInit; then a training step
    net = nn.Sequential()
    with net.name_scope():
        net.add(nn.Dense(4, in_units=4, activation="relu"))
        net.add(nn.Dense(4, in_units=4, activation="relu", params=net[-1].params))
        net.add(nn.Dense(1, in_units=4))
    tree = pp.tree(net)

    class UniformInit(pp.init.Initializer):
        def _init_weight(self, _, arr):
            arr[:] = self.rng.uniform(5, 10, arr.shape)

    report = tree.initialize(UniformInit())
    assert report.initialized == ["0.weight", "0.bias", "2.weight", "2.bias"]
    np.testing.assert_array_equal(tree["0.weight"].numpy(), tree["1.weight"].numpy())
    assert (tree["2.weight"].numpy() >= 5).all()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    mx.random.seed(2)  # a batch that reaches past the ReLUs: an all-dead batch has all-zero gradients
    a = nd.random_normal(shape=(4, 4))
    with autograd.record():
        y = net(a)
    y.backward()
    trainer.step(1)
    assert len(tree.items()) == 4 == len(net.collect_params().keys())
    np.testing.assert_array_equal(tree["0.weight"].numpy(), tree["1.weight"].numpy())
    np.testing.assert_array_equal(tree["0.weight"].grad(), tree["1.weight"].grad())
    assert net[0].weight.grad().asnumpy().any()
    np.testing.assert_array_equal(tree["0.weight"].grad(), net[0].weight.grad().asnumpy())


# ---- MXNet's "Initialization" tutorial -------------------------------------------------------


def getnet():
    net = nn.Sequential()
    net.add(nn.Dense(256, activation="relu"))
    net.add(nn.Dense(10))
    return net


def test_initialization_tutorial_deferred_and_forced(capsys) -> None:
    net = getnet()
    tree = pp.tree(net)
    # print(net.collect_params()): unknown dims
    assert tree["0.weight"].shape == (256, None) and tree["1.weight"].shape == (10, None)
    assert "(256, ?)" in str(tree)
    with pytest.raises(pp.errors.DeferredInitializationError):
        tree["0.weight"].numpy()
    # net.initialize(); nothing changes
    tree.initialize()
    assert tree["0.weight"].shape == (256, None)
    # x = nd.random.uniform(shape=(2, 20)); net(x): shapes determined, parameters initialized
    x = nd.random.uniform(shape=(2, 20))
    net(x)
    assert tree["0.weight"].shape == (256, 20) and tree["1.weight"].shape == (10, 256)
    assert all(p.state == "initialized" for p in tree.parameters())

    # PrintInit: initialize prints nothing, the first forward prints once, the second not at all
    class PrintInit(pp.init.Initializer):
        def _init_weight(self, name, data):
            print("Init", name, data.shape)

    net = getnet()
    tree = pp.tree(net)
    capsys.readouterr()
    tree.initialize(PrintInit())
    assert capsys.readouterr().out == ""
    y = net(x)
    assert capsys.readouterr().out.splitlines() == [f"Init {net[0].weight.name} (256, 20)",
                                                     f"Init {net[1].weight.name} (10, 256)"]
    y = net(x)
    assert capsys.readouterr().out == ""
    assert y.shape == (2, 10)

    # forced initialization, case 1: shapes known now, so force_reinit runs at once
    tree.initialize(MyInit(), force_reinit=True)
    assert capsys.readouterr().out.count("Init ") == 2
    _check_my_init(tree["0.weight"].numpy())
    # case 2: in_units given
    net = nn.Sequential()
    net.add(nn.Dense(256, in_units=20, activation="relu"))
    net.add(nn.Dense(10, in_units=256))
    tree = pp.tree(net)
    tree.initialize(MyInit())
    assert capsys.readouterr().out.splitlines() == [f"Init {net[0].weight.name} (256, 20)",
                                                     f"Init {net[1].weight.name} (10, 256)"]

    # built-in initializers
    tree.initialize(pp.init.Normal(sigma=0.01), force_reinit=True)
    assert 0.008 < tree["0.weight"].numpy().std() < 0.012
    tree.initialize(pp.init.Constant(1), force_reinit=True)
    np.testing.assert_array_equal(tree["0.weight"].numpy()[0], np.ones(20))
    tree[0]["weight"].initialize(pp.init.Xavier(), force_reinit=True)
    tree[1].initialize(pp.init.Constant(42), force_reinit=True)
    assert np.abs(tree["0.weight"].numpy()).max() <= np.sqrt(6 / 276)
    assert tree["0.bias"].numpy()[0] == 0
    assert tree["1.weight"].numpy()[0, 0] == 42 and tree["1.bias"].numpy()[0] == 0

    # custom initialization (data.abs() >= 5), then direct writes
    tree.initialize(MyInit(), force_reinit=True)
    _check_my_init(tree["0.weight"].numpy())
    w = tree["0.weight"]
    expected = w.numpy() + 1
    expected[0, 0] = 42
    w[:] = w.numpy() + 1
    w[0, 0] = 42
    np.testing.assert_array_equal(net[0].weight.data().asnumpy(), expected)

    # tied parameters
    net = nn.Sequential()
    shared = nn.Dense(8, activation="relu")
    net.add(nn.Dense(8, activation="relu"), shared, nn.Dense(8, activation="relu", params=shared.params),
            nn.Dense(10))
    tree = pp.tree(net)
    tree.initialize()
    x = nd.random.uniform(shape=(2, 20))
    net(x)
    assert (tree[1]["weight"].numpy()[0] == tree[2]["weight"].numpy()[0]).all()
    tree[1]["weight"][0, 0] = 100
    assert (tree[1]["weight"].numpy()[0] == tree[2]["weight"].numpy()[0]).all()
    assert tree[2]["weight"].native is shared.weight


def test_initialization_tutorial_prints_gluon_names_in_a_fresh_process() -> None:
    """The tutorial's exact output: 'Init dense0_weight (256, 20)' once, at the first forward."""
    script = textwrap.dedent("""
        import numpy as np
        import polyparam as pp
        from mxnet import nd
        from mxnet.gluon import nn

        class PrintInit(pp.init.Initializer):
            def _init_weight(self, name, data):
                print('Init', name, data.shape)

        net = nn.Sequential()
        net.add(nn.Dense(256, activation='relu'))
        net.add(nn.Dense(10))
        pp.tree(net).initialize(PrintInit())
        print('-- forward 1')
        x = nd.random.uniform(shape=(2, 20))
        y = net(x)
        print('-- forward 2')
        y = net(x)
        print(pp.tree(net).get('dense1_bias').native_name)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["-- forward 1", "Init dense0_weight (256, 20)", "Init dense1_weight (10, 256)",
                                        "-- forward 2", "dense1_bias"]


def test_gluon_warns_like_gluon_without_force_reinit() -> None:
    """Native net.initialize twice warns; polyparam warns with its own typed warning and keeps values."""
    net = getnet()
    net.initialize()
    net(nd.ones((1, 20)))
    tree = pp.tree(net)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net.initialize()
    assert any("already initialized" in str(w.message) for w in caught)
    before = tree.state(copy=True)
    with pytest.warns(pp.errors.AlreadyInitializedWarning):
        report = tree.initialize(pp.init.Constant(5))
    assert sorted(report.skipped) == sorted(before)
    for path, value in before.items():
        np.testing.assert_array_equal(tree[path].numpy(), value)
    assert isinstance(mx.__version__, str)

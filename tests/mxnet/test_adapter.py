"""MXNet-specific behaviour the conformance kit does not cover: contexts, hybridized
blocks, autograd scopes, Gluon layouts and roles, ties after construction."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("mxnet") is None:
    pytest.skip("mxnet is not installed", allow_module_level=True)

# The adapter imports mxnet after its load-order check, so it comes first.
# isort: off
import polyparam as pp  # noqa: E402
from polyparam_mxnet import _backend  # noqa: E402

import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon, nd  # noqa: E402
from mxnet.gluon import nn  # noqa: E402
# isort: on

CPUS = [mx.cpu(0), mx.cpu(1)]


def _mlp(in_units: int | None = 4) -> nn.Sequential:
    net = nn.Sequential()
    net.add(nn.Dense(8, activation="relu", in_units=in_units or 0), nn.Dense(3, in_units=8))
    return net


def _replicas(p: pp.Parameter) -> list[np.ndarray]:
    return [a.asnumpy() for a in p.native.list_data()]


def _assert_replicas_equal(tree: pp.ParameterTree) -> None:
    for path, p in tree.items():
        first, *others = _replicas(p)
        for other in others:
            np.testing.assert_array_equal(first, other, err_msg=path)


# ---- contexts ----------------------------------------------------------------------


def test_several_contexts_stay_identical_after_init_set_and_load() -> None:
    net = _mlp()
    net.initialize(ctx=CPUS)
    tree = pp.tree(net)
    assert tree["0.weight"].device == "cpu,cpu:1"
    tree.initialize(pp.init.Xavier(), seed=3, force_reinit=True)
    _assert_replicas_equal(tree)
    tree["0.weight"].set(np.full((8, 4), 0.5, np.float32))
    tree["0.bias"][2] = 7
    _assert_replicas_equal(tree)
    assert _replicas(tree["0.bias"])[1][2] == 7
    state = {path: value + 1 for path, value in tree.state(copy=True).items()}
    tree.load_state(state)
    _assert_replicas_equal(tree)
    np.testing.assert_array_equal(_replicas(tree["1.weight"])[1], state["1.weight"])


def test_deferred_on_several_contexts() -> None:
    net = _mlp(in_units=None)
    net.initialize(ctx=CPUS)  # Gluon records the contexts with the deferred init
    tree = pp.tree(net)
    assert tree["0.weight"].device == "cpu,cpu:1" and tree["0.weight"].state == "deferred"
    tree.initialize(pp.init.Uniform(0.5), seed=1, force_reinit=True)
    net(nd.ones((2, 6), ctx=mx.cpu(1)))
    _assert_replicas_equal(tree)
    assert tree["0.weight"].shape == (8, 6)


def test_grad_sums_replicas() -> None:
    net = _mlp()
    net.initialize(ctx=CPUS)
    tree = pp.tree(net)
    x = np.ones((2, 4), np.float32)
    with autograd.record():
        ys = [net(nd.array(x, ctx=c)) for c in CPUS]
    autograd.backward(ys)
    np.testing.assert_allclose(tree["1.bias"].grad(), np.full(3, 4.0))  # 2 rows x 2 replicas


def test_to_moves_and_refuses_unknown_devices() -> None:
    net = _mlp()
    net.initialize()
    tree = pp.tree(net)
    before = tree.state(copy=True)
    tree.to("cpu:1")
    assert {p.device for p in tree.parameters()} == {"cpu:1"}
    assert net(nd.ones((1, 4), ctx=mx.cpu(1))).context == mx.cpu(1)
    tree.to("cpu,cpu:1")
    assert tree["0.weight"].device == "cpu,cpu:1"
    _assert_replicas_equal(tree)
    for path, value in before.items():
        np.testing.assert_array_equal(tree[path].numpy(), value)
    with pytest.raises(pp.errors.DeviceMismatchError):
        tree.to(f"cuda:{mx.context.num_gpus()}")
    with pytest.raises(pp.errors.DeviceMismatchError):
        tree.to("tpu")
    assert tree["0.weight"].device == "cpu,cpu:1"


# ---- values under autograd and hybridize --------------------------------------------------


def test_set_inside_autograd_record() -> None:
    net = _mlp()
    net.initialize()
    tree = pp.tree(net)
    x = nd.ones((2, 4))
    with autograd.record():
        tree["1.weight"].set(np.zeros((3, 8), np.float32))
        tree["1.bias"].set(np.array([1, 2, 3], np.float32))
        y = net(x)
    y.backward()
    np.testing.assert_allclose(y.asnumpy(), [[1, 2, 3], [1, 2, 3]])
    np.testing.assert_allclose(tree["1.bias"].grad(), [2, 2, 2])


def test_writes_keep_the_trainer_working() -> None:
    net = _mlp()
    net.initialize()
    tree = pp.tree(net)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 1.0})
    tree["1.bias"].set(np.zeros(3, np.float32))
    with autograd.record():
        y = net(nd.ones((2, 4)))
    y.backward()
    trainer.step(1)
    np.testing.assert_allclose(tree["1.bias"].numpy(), [-2, -2, -2])
    # the gradient is still reported after the step
    np.testing.assert_allclose(tree["1.bias"].grad(), [2, 2, 2])


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
def test_tie_after_construction_is_used_by_forward(hybridize: bool) -> None:
    net = nn.HybridSequential()
    net.add(nn.Dense(4, in_units=4), nn.Dense(4, in_units=4), nn.Dense(4, in_units=4))
    net.initialize()
    if hybridize:
        net.hybridize()
    x = nd.ones((1, 4))
    net(x)  # builds the cached graph with the old parameters
    tree = pp.tree(net)
    groups = pp.tie(tree[1], tree[2])
    assert [g.paths for g in groups] == [["1.weight", "2.weight"], ["1.bias", "2.bias"]]
    assert net[2].weight is net[1].weight
    assert list(net[2].params.keys()) == [net[1].weight.name, net[1].bias.name]
    assert len(net.collect_params().keys()) == 4
    tree["1.weight"].set(np.eye(4, dtype=np.float32))
    tree["1.bias"].set(np.zeros(4, np.float32))
    tree["0.weight"].set(np.eye(4, dtype=np.float32))
    tree["0.bias"].set(np.arange(4, dtype=np.float32))
    np.testing.assert_allclose(net(x).asnumpy(), [[1, 2, 3, 4]])
    # gradients of the tied group are summed
    with autograd.record():
        y = net(x)
    y.backward()
    np.testing.assert_allclose(tree["1.bias"].grad(), [2, 2, 2, 2])
    # untie: own copies, and forward uses them
    for group in tree.ties():
        group.untie()
    assert tree.ties() == [] and net[2].weight is not net[1].weight
    assert len(set(net.collect_params().keys())) == 6
    tree["2.bias"].set(np.ones(4, np.float32))
    np.testing.assert_allclose(net(x).asnumpy(), [[2, 3, 4, 5]])
    np.testing.assert_allclose(tree["1.bias"].numpy(), 0)


def test_tie_and_untie_warn_when_a_trainer_holds_the_replaced_parameter() -> None:
    """A Trainer keeps the Parameter objects it was given: replacing one under it warns, naming the path."""
    import warnings

    net = nn.Sequential()
    net.add(nn.Dense(4, in_units=4), nn.Dense(4, in_units=4))
    net.initialize()
    tree = pp.tree(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")               # no trainer: no warning
        for group in pp.tie(tree[0], tree[1]):
            group.untie()
    gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    with pytest.warns(pp.errors.StaleOptimizerWarning, match="'1.bias'.*Create the Trainer after"):
        pp.tie(tree["0.bias"], tree["1.bias"])
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    with pytest.warns(pp.errors.StaleOptimizerWarning, match="'1.bias'"):
        tree.ties()[0].untie()
    assert trainer is not None


def test_untie_a_reused_block_is_refused() -> None:
    dense = nn.Dense(4, in_units=4)
    net = nn.Sequential()
    net.add(dense, dense)
    net.initialize()
    tree = pp.tree(net)
    assert [g.paths for g in tree.ties()] == [["0.weight", "1.weight"], ["0.bias", "1.bias"]]
    with pytest.raises(pp.errors.TieError) as info:
        tree.ties()[0].untie()
    assert info.value.path == "1.weight"
    assert net[1].weight is net[0].weight


def test_tie_deferred_blocks_then_materialize() -> None:
    net = nn.Sequential()
    net.add(nn.Dense(4), nn.Dense(4), nn.Dense(4))
    tree = pp.tree(net)
    pp.tie(tree[1], tree[2])
    tree.initialize(pp.init.Xavier(), seed=2)
    net(nd.ones((1, 4)))
    np.testing.assert_array_equal(tree["1.weight"].numpy(), tree["2.weight"].numpy())
    assert tree["1.weight"].shape == (4, 4)


# ---- deferred details ----------------------------------------------------------------------


def test_deferred_value_can_be_set_before_forward() -> None:
    net = _mlp(in_units=None)
    tree = pp.tree(net)
    tree.initialize()
    assert tree["0.weight"].state == "deferred"
    tree["0.weight"].set(np.full((8, 5), 0.25, np.float32))
    assert tree["0.weight"].shape == (8, 5) and tree["0.weight"].state == "initialized"
    net(nd.ones((2, 5)))
    np.testing.assert_array_equal(tree["0.weight"].numpy(), 0.25)


def test_native_initialize_after_polyparam_defer_wins() -> None:
    """A later Gluon initialize(force_reinit=True) replaces polyparam's recorded fill, as in Gluon."""
    net = _mlp(in_units=None)
    tree = pp.tree(net)
    tree.initialize(pp.init.Constant(3))
    net.initialize(mx.init.Constant(-1), force_reinit=True)
    net(nd.ones((1, 4)))
    np.testing.assert_array_equal(tree["0.weight"].numpy(), -1)


def test_defer_without_allow_deferred_init_is_refused() -> None:
    class Custom(gluon.Block):
        def __init__(self):
            super().__init__()
            self.w = self.params.get("w", shape=(3, 0))

        def forward(self, x):
            return x

    block = Custom()
    tree = pp.tree(block)
    assert tree["w"].state == "deferred" and tree["w"].shape == (3, None)
    with pytest.raises(pp.errors.DeferredInitializationError) as info:
        tree.initialize()
    assert info.value.path == "w"


# ---- layouts, roles, names -------------------------------------------------------------------


def test_batchnorm_roles_and_names() -> None:
    net = nn.HybridSequential()
    net.add(nn.Dense(4, in_units=3), nn.BatchNorm(in_channels=4))
    net.initialize()
    tree = pp.tree(net)
    assert tree[1].paths() == ["1.weight", "1.bias", "1.running_mean", "1.running_var"]
    roles = {path: (p.role, p.trainable) for path, p in tree[1].items()}
    assert roles == {"1.weight": ("scale", True), "1.bias": ("shift", True),
                     "1.running_mean": ("running_mean", False), "1.running_var": ("running_var", False)}
    assert tree["1.weight"].native is net[1].gamma
    tree.initialize(pp.init.Constant(5), force_reinit=True)
    np.testing.assert_array_equal(tree["1.weight"].numpy(), 1)
    np.testing.assert_array_equal(tree["1.bias"].numpy(), 0)
    np.testing.assert_array_equal(tree["1.running_var"].numpy(), 1)
    np.testing.assert_array_equal(tree["0.weight"].numpy(), 5)


def test_conv_layouts() -> None:
    first = nn.Conv2D(8, (3, 5), in_channels=2)
    last = nn.Conv2D(8, (3, 5), in_channels=2, layout="NHWC")
    deconv = nn.Conv2DTranspose(8, (3, 5), in_channels=2)
    for block in (first, last, deconv):
        block.initialize()
    a, b, c = (pp.tree(block)["weight"] for block in (first, last, deconv))
    assert a.shape == b.shape == (8, 2, 3, 5)
    assert a.axes == b.axes == ("out", "in", "space", "space")
    assert c.shape == (2, 8, 3, 5) and c.axes == ("in", "out", "space", "space")
    value = np.arange(240, dtype=np.float32).reshape(8, 2, 3, 5)
    b.set(value)
    np.testing.assert_array_equal(last.weight.data().asnumpy(), value.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(b.numpy(), value)
    b.initialize(pp.init.Xavier(), seed=4, force_reinit=True)
    a.initialize(pp.init.Xavier(), seed=4, force_reinit=True)
    assert b.path == a.path == "weight"
    np.testing.assert_array_equal(a.numpy(), b.numpy())  # same canonical draw, whatever the layout


def test_custom_block_paths_and_native_names() -> None:
    class MLP(nn.Block):
        def __init__(self):
            super().__init__()
            with self.name_scope():
                self.hidden = nn.Dense(5, in_units=3)
                self.out = nn.Dense(2, in_units=5)

        def forward(self, x):
            return self.out(self.hidden(x))

    model = MLP()
    model.initialize()
    tree = pp.tree(model)
    assert tree.paths() == list(model._collect_params_with_prefix().keys())
    assert tree.paths() == ["hidden.weight", "hidden.bias", "out.weight", "out.bias"]
    assert tree[0].path == "hidden" and tree["out"]["bias"].native is model.out.bias
    assert tree.get("dense1_bias").native is model.out.bias
    assert pp.tree(model).native is model


def test_non_blocks_are_not_ours() -> None:
    assert not _backend.is_native(nd.ones(3))
    with pytest.raises(pp.errors.UnsupportedModelError):
        _backend.tree(nd.ones(3))
    assert pp.backend_for(_mlp()) == "mxnet"
    assert _backend.framework_version() == mx.__version__


# ---- a Trainer whose kvstore holds the weights (update_on_kvstore) ---------------------------

_CONTEXTS = [mx.cpu(0), mx.cpu(1)]   # one context makes no kvstore
_X = np.random.default_rng(3).uniform(size=(4, 5)).astype(np.float32)
_Y = np.array([0, 1, 2, 1], np.float32)


def _kv_dense(seed: int) -> nn.Dense:
    mx.random.seed(seed)
    net = nn.Dense(3, in_units=5)
    net.initialize(mx.init.Xavier(), ctx=_CONTEXTS)
    return net


def _kv_trainer(net: nn.Dense) -> gluon.Trainer:
    return gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.5, "momentum": 0.9},
                         update_on_kvstore=True, kvstore="local")


def _kv_step(net: nn.Dense, trainer: gluon.Trainer, dtype: str = "float32") -> None:
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    with autograd.record():
        losses = [loss(net(nd.array(_X, ctx=c, dtype=dtype)), nd.array(_Y, ctx=c, dtype=dtype)) for c in _CONTEXTS]
    autograd.backward(losses)
    trainer.step(8)


def _kv_values(net: nn.Dense) -> list[np.ndarray]:
    return [p.data(c).asnumpy() for p in net.collect_params().values() for c in _CONTEXTS]


def _assert_next_steps_equal(net: nn.Dense, other: nn.Dense, trainers: list[gluon.Trainer]) -> None:
    """One more step of each (``trainers`` in that order) leaves both with the same values on every context."""
    _kv_step(net, trainers[0])
    _kv_step(other, trainers[1])
    for got, expected in zip(_kv_values(net), _kv_values(other)):
        np.testing.assert_array_equal(got, expected)


# mx.nd.array's own SciPy check warns on every call (mxnet 1.9.1 with a recent SciPy)
_QUIET = pytest.mark.filterwarnings("ignore:Please use `csr_matrix`:DeprecationWarning")


@_QUIET
@pytest.mark.parametrize("operation", ["transfer", "load_state"])
def test_a_write_undone_keeps_the_kvstore_s_optimizer_state(operation: str) -> None:
    """Gluon drops a Trainer's kvstore (and the momentum it holds) when a weight is set; a write that
    fails halfway is undone and must leave that state too: the next step equals an untouched twin's."""
    from polyparam.testing.base.faults import failing_writes

    source, net, twin = _kv_dense(1), _kv_dense(2), _kv_dense(2)
    trainers = [_kv_trainer(net), _kv_trainer(twin)]
    _kv_step(net, trainers[0])
    _kv_step(twin, trainers[1])
    tree = pp.tree(net)
    with failing_writes(type(tree.parameters()[0]), 1, KeyboardInterrupt()), pytest.raises(KeyboardInterrupt):
        if operation == "transfer":
            pp.transfer(source, net)
        else:
            tree.load_state(pp.tree(source).state(copy=True))
    _assert_next_steps_equal(net, twin, trainers)


@_QUIET
def test_a_write_that_succeeds_drops_the_kvstore_as_set_data_does() -> None:
    source, net, native = _kv_dense(1), _kv_dense(2), _kv_dense(2)
    trainers = [_kv_trainer(net), _kv_trainer(native)]
    _kv_step(net, trainers[0])
    _kv_step(native, trainers[1])
    pp.transfer(source, net)
    for p, q in zip(source.collect_params().values(), native.collect_params().values()):
        q.set_data(p.data())
    _assert_next_steps_equal(net, native, trainers)


@_QUIET
def test_a_cast_that_fails_part_way_keeps_the_kvstore_s_optimizer_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """tree.cast casts back what it cast when one parameter refuses; the kvstore (and the momentum it holds)
    must then be left as it was, as for a write: the next step equals an untouched twin's."""
    net, twin = _kv_dense(2), _kv_dense(2)
    trainers = [_kv_trainer(net), _kv_trainer(twin)]
    _kv_step(net, trainers[0])
    _kv_step(twin, trainers[1])
    param_class = type(pp.tree(net).parameters()[0])
    real, calls = param_class._cast, []

    def refusing(self: pp.Parameter, dtype: np.dtype, /) -> None:
        calls.append(self.path)
        if len(calls) == 2:
            raise RuntimeError("refused")
        real(self, dtype)

    monkeypatch.setattr(param_class, "_cast", refusing)
    with pytest.raises(RuntimeError, match="refused"):
        pp.tree(net).cast("float64")
    monkeypatch.undo()
    assert {p.dtype for p in pp.tree(net).parameters()} == {np.dtype(np.float32)}
    _assert_next_steps_equal(net, twin, trainers)
    pp.tree(net).cast("float64")   # and one that succeeds leaves a model that trains in its new dtype
    _kv_step(net, trainers[0], "float64")
    assert {v.dtype for v in _kv_values(net)} == {np.dtype(np.float64)}


def test_a_save_writes_the_copies_asnumpy_made_without_copying_them_again(tmp_path: Path) -> None:
    """A Gluon value leaves MXNet as a copy (``asnumpy``), MKLDNN layouts converted: the save writes that copy as it
    is (it is marked ``own_copy``), a copy no one else writes, so the file holds the values the net had."""
    from polyparam._copies import is_own_copy

    net = nn.HybridSequential()
    net.add(nn.Conv2D(16, 3, in_channels=3), nn.BatchNorm(in_channels=16), nn.Dense(5, in_units=16 * 30 * 30))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(nd.ones((1, 3, 32, 32)))   # MKLDNN may keep the weights in its own layout from here on
    nd.waitall()
    tree = pp.tree(net)
    before = {path: p.numpy() for path, p in tree.items()}
    for path, p in tree.items():
        view = p._read_view()
        assert is_own_copy(view) and not np.shares_memory(view, p.native.data().asnumpy()), path
        np.testing.assert_array_equal(view, before[path])
    from safetensors.numpy import load_file

    file = tmp_path / "net.safetensors"
    pp.save(tree, file)
    stored = load_file(str(file))
    assert stored.keys() == before.keys()
    for path, value in before.items():
        np.testing.assert_array_equal(stored[path], value)
    assert len(pp.load(tree, file).loaded) == len(before)   # every checksum agrees with the bytes written
    pp.save(tree, tmp_path / "background.safetensors", background=True).wait()
    assert (tmp_path / "background.safetensors").read_bytes() == file.read_bytes()

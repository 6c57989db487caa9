"""Training-loop operations against Gluon's own machinery: a ``gluon.Trainer`` step after a freeze,
``grad_req="null"``, ``wd_mult``/``lr_mult`` groups, ``gluon.utils.clip_global_norm``, gradient
buffers, ``Parameter.cast``, flat vectors and averages."""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import numpy as np
import pytest

if importlib.util.find_spec("mxnet") is None:
    pytest.skip("mxnet is not installed", allow_module_level=True)

# The adapter imports mxnet after its load-order check, so it comes first.
# isort: off
import polyparam as pp  # noqa: E402
from polyparam import errors  # noqa: E402
from polyparam_mxnet import _backend  # noqa: E402

import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon  # noqa: E402
from mxnet.gluon import nn  # noqa: E402
# isort: on

X = np.random.default_rng(3).uniform(-1, 1, (5, 4)).astype(np.float32)


def _nd(x: np.ndarray, ctx: Any = None) -> Any:
    out = mx.nd.empty(x.shape, ctx=ctx or mx.cpu(), dtype=x.dtype)
    out[:] = x
    return out


def _mlp(seed: int = 0, *, norm: bool = False, hybridize: bool = False) -> nn.HybridSequential:
    """Dense(8) -> [BatchNorm] -> Dense(3), initialized, after one forward pass."""
    mx.random.seed(seed)
    net = nn.HybridSequential()
    net.add(nn.Dense(8, in_units=4, activation="relu"))
    if norm:
        net.add(nn.BatchNorm(in_channels=8))
    net.add(nn.Dense(3, in_units=8))
    net.initialize(mx.init.Xavier())
    if hybridize:
        net.hybridize()
    net(_nd(X))
    return net


def _shared() -> nn.HybridSequential:
    """Dense(8) twice with one Parameter set (``params=``), then a head: one tie."""
    mx.random.seed(1)
    net = nn.HybridSequential()
    shared = nn.Dense(4, in_units=4, activation="relu")
    net.add(shared, nn.Dense(4, in_units=4, activation="relu", params=shared.params), nn.Dense(2, in_units=4))
    net.initialize(mx.init.Xavier())
    net(_nd(X))
    return net


def _backward(net: gluon.Block, x: np.ndarray = X) -> None:
    with autograd.record():
        y = net(_nd(x))
    y.backward()


def _values(net: gluon.Block) -> dict[str, np.ndarray]:
    """Every value by Gluon's structural key (``0.weight``), shared parameters under each key."""
    return {key: p.data().asnumpy().copy() for key, p in net._collect_params_with_prefix().items()}


def _grads(net: gluon.Block) -> dict[str, np.ndarray]:
    """Every gradient (summed over replicas) by structural key; frozen parameters left out."""
    return {key: sum(g.asnumpy() for g in p.list_grad()) for key, p in net._collect_params_with_prefix().items()
            if p.grad_req != "null"}


# ---- freezing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("hybridize", [False, True])
def test_freeze_holds_through_a_gluon_trainer_step(optimizer: str, hybridize: bool) -> None:
    net = _mlp(hybridize=hybridize)
    tree = pp.tree(net)
    tree.select("0.*").freeze()
    assert [p.grad_req for p in (net[0].weight, net[0].bias)] == ["null", "null"]
    before = _values(net)
    trainer = gluon.Trainer(net.collect_params(), optimizer, {"learning_rate": 0.1})
    _backward(net)
    trainer.step(1)
    after = _values(net)
    for name in before:
        frozen = name.startswith("0.")
        assert np.array_equal(before[name], after[name]) == frozen, name
    tree.select("0.*").unfreeze()
    assert net[0].weight.grad_req == "write"


def test_native_grad_req_null_is_read_live_and_counts_agree() -> None:
    net = _mlp(norm=True)
    tree = pp.tree(net)
    net.collect_params(".*weight").setattr("grad_req", "null")
    assert not tree["0.weight"].trainable and tree["0.bias"].trainable
    for p in net.collect_params().values():
        assert (p.grad_req != "null") == tree.get(p.name).trainable
    gluon_trainable = sum(p.data().size for p in net.collect_params().values() if p.grad_req != "null")
    gluon_total = sum(p.data().size for p in net.collect_params().values())
    assert tree.count(trainable=True) == gluon_trainable
    assert tree.count(trainable=False) == gluon_total - gluon_trainable
    assert tree.count() == gluon_total


def test_count_counts_shared_parameters_once_as_gluon_does() -> None:
    net = _shared()
    tree = pp.tree(net)
    assert tree.count() == sum(p.data().size for p in net.collect_params().values())
    tree["1.weight"].trainable = False
    assert net[0].weight.grad_req == "null"   # one object
    assert tree.count(trainable=True) == sum(
        p.data().size for p in net.collect_params().values() if p.grad_req != "null")


# ---- optimizer groups ---------------------------------------------------------------------------


def test_param_groups_return_what_a_trainer_takes_with_mults_set() -> None:
    net = _mlp(norm=True)
    tree = pp.tree(net)
    tree["2.weight"].trainable = False
    groups = pp.param_groups(net, [("role:bias", {"wd_mult": 0.0}), ("role:scale", {"lr_mult": 0.5})])
    assert isinstance(groups, dict)
    assert all(isinstance(p, gluon.Parameter) for p in groups.values())
    assert set(groups) == {p.name for p in net.collect_params().values()
                           if p.grad_req != "null"}        # frozen, running statistics left out
    assert all(groups[p.name] is p for p in net.collect_params().values() if p.name in groups)
    assert (net[0].bias.wd_mult, net[0].bias.lr_mult) == (0.0, 1.0)
    assert (net[1].gamma.wd_mult, net[1].gamma.lr_mult) == (1.0, 0.5)
    assert (net[0].weight.wd_mult, net[0].weight.lr_mult) == (1.0, 1.0)
    gluon.Trainer(groups, "sgd")


@pytest.mark.parametrize("hybridize", [False, True])
def test_param_groups_without_weight_decay_keep_biases_and_scales(hybridize: bool) -> None:
    """SGD with ``wd`` and zero gradients: biases and BatchNorm scales stay, weights shrink by ``1 - lr*wd``."""
    lr, wd = 0.1, 0.05
    net = _mlp(norm=True, hybridize=hybridize)
    tree = pp.tree(net)
    groups = pp.param_groups(net, [("role:bias", {"weight_decay": 0}), ("role:scale", {"weight_decay": 0}),
                                   ("role:shift", {"weight_decay": 0})])
    trainer = gluon.Trainer(groups, "sgd", {"learning_rate": lr, "wd": wd})
    before = {path: p.numpy() for path, p in tree.items()}
    _backward(net)
    tree.zero_grads()
    trainer.step(1)
    for path, p in tree.items():
        if p.role == "weight":
            expected = before[path] * np.float32(1 - lr * wd)
            np.testing.assert_allclose(p.numpy(), expected, rtol=1e-6, err_msg=path)
            assert not np.array_equal(p.numpy(), before[path])
        elif p.kind == "parameter":
            np.testing.assert_array_equal(p.numpy(), before[path], err_msg=path)


def test_param_groups_weight_decay_becomes_wd_mult_of_the_optimizers_wd() -> None:
    net = _mlp()
    rules = [("*.bias", {"weight_decay": 0.01, "lr": 0.05})]
    pp.param_groups(net, rules, optimizer={"learning_rate": 0.1, "wd": 0.04})
    assert net[0].bias.wd_mult == pytest.approx(0.25) and net[0].bias.lr_mult == pytest.approx(0.5)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.2, "wd": 0.02})
    pp.param_groups(net, rules, optimizer=trainer)
    assert net[0].bias.wd_mult == pytest.approx(0.5) and net[0].bias.lr_mult == pytest.approx(0.25)
    pp.param_groups(net, rules, optimizer=mx.optimizer.SGD(learning_rate=0.05, wd=0.01))
    assert net[0].bias.wd_mult == pytest.approx(1.0) and net[0].bias.lr_mult == pytest.approx(1.0)
    pp.param_groups(net, [("*.bias", {"wd_mult": 0.0})])
    assert (net[0].bias.wd_mult, net[0].bias.lr_mult) == (0.0, 1.0)   # a new call sets every mult again


def test_param_groups_refuse_what_gluon_cannot_express() -> None:
    net = _mlp()
    before = [(p.wd_mult, p.lr_mult) for p in net.collect_params().values()]
    with pytest.raises(errors.InvalidArgumentError, match="weight_decay.*optimizer="):
        pp.param_groups(net, [("*.bias", {"weight_decay": 0.01})])
    with pytest.raises(errors.InvalidArgumentError, match="momentum"):
        pp.param_groups(net, [("*.bias", {"momentum": 0.9})])
    with pytest.raises(errors.InvalidArgumentError, match="wd"):
        pp.param_groups(net, [("*.bias", {"weight_decay": 0.01})], optimizer={"wd": 0.0})
    assert [(p.wd_mult, p.lr_mult) for p in net.collect_params().values()] == before


# ---- gradients ----------------------------------------------------------------------------------


def test_grad_norm_and_clip_grads_match_numpy_and_gluons_clip_global_norm() -> None:
    net = _mlp(norm=True)
    tree = pp.tree(net)
    _backward(net)
    grads = _grads(net)
    expected = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    assert tree.grad_norm() == pytest.approx(expected, rel=1e-6)
    assert tree.grad_norm(math.inf) == pytest.approx(max(float(np.abs(g).max()) for g in grads.values()))
    arrays = [_nd(g) for g in grads.values()]
    gluon_norm = gluon.utils.clip_global_norm(arrays, expected / 3)
    assert tree.clip_grads(expected / 3) == pytest.approx(gluon_norm, rel=1e-5)
    for (name, _), clipped in zip(grads.items(), arrays):
        np.testing.assert_allclose(_grads(net)[name], clipped.asnumpy(), rtol=1e-5, atol=1e-8, err_msg=name)
    assert tree.grad_norm() == pytest.approx(expected / 3, rel=1e-5)


def test_clip_grads_is_what_the_next_trainer_step_applies() -> None:
    net = _mlp()
    tree = pp.tree(net)
    _backward(net)
    norm = tree.clip_grads(0.5)
    clipped = _grads(net)
    before = _values(net)
    gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1}).step(1)
    for name, value in _values(net).items():
        np.testing.assert_allclose(value, before[name] - 0.1 * clipped[name], rtol=1e-6, atol=1e-7)
    assert norm > 0.5


def test_zero_grads_zero_gluons_buffers_in_place() -> None:
    net = _mlp()
    tree = pp.tree(net)
    _backward(net)
    buffers = {name: list(p.list_grad()) for name, p in net.collect_params().items()}
    tree.zero_grads()
    assert tree.grad_norm() == 0.0
    for name, p in net.collect_params().items():
        assert all(a is b for a, b in zip(p.list_grad(), buffers[name]))   # Gluon's own arrays, written in place
        assert not any(g.asnumpy().any() for g in p.list_grad())
    before = _values(net)
    gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1}).step(1)
    assert all(np.array_equal(v, _values(net)[k]) for k, v in before.items())


def test_write_grad_none_zeroes_as_zero_grad_does() -> None:
    net = _mlp()
    _backward(net)
    p = pp.tree(net)["0.weight"]
    p._write_grad(None)
    assert not net[0].weight.grad().asnumpy().any()
    net[0].weight.grad_req = "null"
    p._write_grad(None)   # no buffers: nothing to clear
    with pytest.raises(errors.StateError, match="grad_req='null'"):
        p._write_grad(np.ones((8, 4), np.float32))


def test_gradients_of_replicas_sum_to_what_was_written() -> None:
    net = nn.HybridSequential()
    net.add(nn.Dense(3, in_units=4))
    net.initialize(ctx=[mx.cpu(0), mx.cpu(1)])
    tree = pp.tree(net)
    with autograd.record():
        ys = [net(_nd(X[:2], mx.cpu(0))), net(_nd(X[2:], mx.cpu(1)))]
    autograd.backward(ys)
    total = tree["0.weight"].grad()
    norm = tree.clip_grads(0.1)
    assert norm > 0.1
    replicas = [g.asnumpy() for g in net[0].weight.list_grad()]
    np.testing.assert_allclose(sum(replicas), total * (0.1 / (norm + 1e-6)), rtol=1e-5)
    assert tree.grad_norm() == pytest.approx(0.1, rel=1e-4)


def test_row_sparse_gradients_stay_row_sparse() -> None:
    net = nn.HybridSequential()
    net.add(nn.Embedding(10, 3, sparse_grad=True))
    net.initialize()
    tree = pp.tree(net)
    with autograd.record():
        y = net(_nd(np.array([[1, 4]], np.float32)))
    y.backward()
    norm = tree.grad_norm()
    tree.clip_grads(norm / 2)
    assert net[0].weight.grad().stype == "row_sparse"
    assert tree.grad_norm() == pytest.approx(norm / 2, rel=1e-5)


# ---- casts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("hybridize", [False, True])
def test_cast_keeps_a_trainers_parameters_and_ties(hybridize: bool) -> None:
    net = _shared()
    if hybridize:
        net.hybridize()
    tree = pp.tree(net)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    held = list(trainer._params)
    ties = [sorted(g.paths) for g in tree.ties()]
    y32 = net(_nd(X)).asnumpy()
    tree.cast("float16")
    assert {p.dtype.name for p in tree.parameters()} == {"float16"}
    assert all(p.data().dtype == np.float16 for p in net.collect_params().values())
    assert all(a is b for a, b in zip(trainer._params, held))
    assert {id(p) for p in trainer._params} == {id(p) for p in net.collect_params().values()}
    assert net[0].weight is net[1].weight and [sorted(g.paths) for g in tree.ties()] == ties
    tree.cast(np.float32)       # (MXNet's CPU operators take no float16 Dense: the forward runs in float32)
    assert {p.dtype.name for p in tree.parameters()} == {"float32"}
    assert all(a is b for a, b in zip(trainer._params, held))
    np.testing.assert_allclose(net(_nd(X)).asnumpy(), y32, rtol=1e-2, atol=1e-2)
    before = _values(net)
    _backward(net)
    trainer.step(1)                            # the Trainer still updates the model's Parameters
    assert all(not np.array_equal(before[k], v) for k, v in _values(net).items())


def test_cast_round_trip_keeps_values_and_batchnorm_stays_float32() -> None:
    net = _mlp(norm=True)
    tree = pp.tree(net)
    before = {path: p.numpy() for path, p in tree.items()}
    y32 = net(_nd(X)).asnumpy()
    tree.cast("float64")
    assert {p.dtype.name for p in tree.parameters()} == {"float64"}
    assert all(np.array_equal(tree[k].numpy(), v.astype(np.float64)) for k, v in before.items())
    y64 = net(_nd(X.astype(np.float64))).asnumpy()
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, y32, rtol=1e-5, atol=1e-6)
    tree.cast("float16")
    dtypes = {path: p.dtype.name for path, p in tree.items()}
    assert {dtypes[k] for k in dtypes if k.startswith("1.")} == {"float32"}   # as BatchNorm.cast keeps them
    assert {dtypes[k] for k in dtypes if not k.startswith("1.")} == {"float16"}
    tree.cast("float32")
    for path, value in before.items():
        np.testing.assert_allclose(tree[path].numpy(), value, rtol=1e-3, atol=1e-3)


def test_cast_carries_a_trainers_momentum_along() -> None:
    """Optimizer states made before the cast follow the weight: the next step runs, momentum kept."""
    net, ref = _mlp(), _mlp()
    trainers = [gluon.Trainer(m.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9}) for m in (net, ref)]
    for m, t in zip((net, ref), trainers):
        _backward(m)
        t.step(1)
    pp.tree(net).cast("float64")
    for m, t, dtype in ((net, trainers[0], np.float64), (ref, trainers[1], np.float32)):
        _backward(m, X.astype(dtype))
        t.step(1)
    for key, value in _values(ref).items():
        np.testing.assert_allclose(_values(net)[key], value, rtol=1e-5, atol=1e-6)


def test_cast_to_float16_with_multi_precision_states_is_refused() -> None:
    net = _mlp()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9,
                                                          "multi_precision": True})
    _backward(net)
    trainer.step(1)
    before = _values(net)
    with pytest.raises(errors.UnsupportedModelError, match="Cast first, then create the Trainer"):
        pp.tree(net).cast("float16")
    assert {p.data().dtype for p in net.collect_params().values()} == {np.float32}
    assert all(np.array_equal(v, _values(net)[k]) for k, v in before.items())


def test_cast_to_bfloat16_is_refused_and_changes_nothing() -> None:
    pytest.importorskip("ml_dtypes")
    net = _mlp()
    tree = pp.tree(net)
    before = _values(net)
    with pytest.raises(errors.UnsupportedModelError, match="bfloat16.*float16, float32 or float64"):
        tree.cast("bfloat16")
    assert {p.dtype.name for p in tree.parameters()} == {"float32"}
    assert all(np.array_equal(v, _values(net)[k]) for k, v in before.items())


def test_cast_of_an_lstm_keeps_begin_state_in_step() -> None:
    mx.random.seed(0)
    layer = gluon.rnn.LSTM(4, input_size=3)
    layer.initialize()
    pp.tree(layer).cast("float64")
    assert layer._dtype == "float64"
    out = layer(mx.nd.ones((2, 1, 3), dtype="float64"))
    assert out.dtype == np.float64


# ---- whole-tree values -------------------------------------------------------------------------


def test_vector_round_trip_and_ties_once() -> None:
    net = _shared()
    tree = pp.tree(net)
    v = tree.vector()
    assert v.size == tree.count() == sum(p.data().size for p in net.collect_params().values())
    tree.load_vector(v * 2)
    np.testing.assert_array_equal(tree.vector(), v * 2)
    assert np.array_equal(net[1].weight.data().asnumpy(), net[0].weight.data().asnumpy())
    tree.load_vector(v)
    np.testing.assert_array_equal(tree.vector(), v)


def test_average_ema_and_mean_of_gluon_models() -> None:
    dst, a, b, c = (_mlp(seed) for seed in range(4))
    values = [pp.tree(m).vector().astype(np.float64) for m in (dst, a, b, c)]
    pp.average(dst, a, decay=0.9)
    np.testing.assert_allclose(pp.tree(dst).vector(), 0.9 * values[0] + 0.1 * values[1], rtol=1e-6, atol=1e-7)
    pp.average(dst, a, b, c)
    np.testing.assert_allclose(pp.tree(dst).vector(), np.mean(values[1:], axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dst(_nd(X)).asnumpy(), dst(_nd(X)).asnumpy())


# ---- the reference step ------------------------------------------------------------------------


def test_sgd_step_is_one_plain_sgd_step_of_a_gluon_trainer() -> None:
    net, ref = _mlp(), _mlp()
    _backward(ref)
    grads, before = _grads(ref), _values(ref)
    _backend.models().sgd_step(net, X, lr=0.1)
    for name, value in _values(net).items():
        np.testing.assert_allclose(value, before[name] - 0.1 * grads[name], rtol=1e-6, atol=1e-7)


def test_capabilities_declare_training_and_casting() -> None:
    assert {"training", "casting"} <= _backend.CAPABILITIES

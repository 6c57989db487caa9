"""Writes after a CPU forward pass, where the default (MKLDNN) mxnet build keeps convolution
weights in its own memory layout: every write path works and reads give the values written."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

if importlib.util.find_spec("mxnet") is None:
    pytest.skip("mxnet is not installed", allow_module_level=True)

# The adapter imports mxnet after its load-order check, so it comes first.
# isort: off
import polyparam as pp  # noqa: E402
from polyparam import errors  # noqa: E402
from polyparam.testing.base.faults import failing_writes  # noqa: E402
from polyparam_mxnet import _backend  # noqa: E402, F401

import mxnet as mx  # noqa: E402
from mxnet import autograd, gluon, nd  # noqa: E402
from mxnet.gluon import nn  # noqa: E402
from mxnet.gluon.model_zoo import vision  # noqa: E402
# isort: on

# mx.nd.array's own SciPy check warns on every call (mxnet 1.9.1 with a recent SciPy)
pytestmark = pytest.mark.filterwarnings("ignore:Please use `csr_matrix`:DeprecationWarning")

MKLDNN = mx.runtime.Features().is_enabled("MKLDNN")
X = np.random.default_rng(0).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)


def _forwarded(build: Callable[[], gluon.HybridBlock] = vision.resnet18_v1, *, hybridize: bool = False,
               seed: int = 0) -> gluon.HybridBlock:
    """A model-zoo CNN (random weights, no download) after one forward pass on a small batch."""
    mx.random.seed(seed)
    net = build()
    net.initialize()
    if hybridize:
        net.hybridize()
    net(nd.array(X)).wait_to_read()
    return net


def _out(net: gluon.Block) -> np.ndarray:
    return net(nd.array(X)).asnumpy()


def _values(tree: pp.ParameterTree, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {path: rng.uniform(0.5, 1.5, p.shape).astype(p.dtype) for path, p in tree.items()}


def _assert_values(tree: pp.ParameterTree, expected: dict[str, np.ndarray]) -> None:
    assert sorted(tree.paths()) == sorted(expected)
    for path, p in tree.items():
        np.testing.assert_array_equal(p.numpy(), expected[path], err_msg=path)


def _assert_mkldnn_layout(net: gluon.Block) -> None:
    """The premise: the first conv weight refuses a raw NumPy copy (MKLDNN layout) on this build."""
    if not MKLDNN:
        return
    weight = pp.tree(net).parameters()[0].native
    data = weight.data()
    assert weight.shape[0] >= 8 and data.ndim == 4
    with pytest.raises(mx.base.MXNetError, match="MKLDNN"):
        data._sync_copyfrom(data.asnumpy())


def _gluon_set(net: gluon.Block, values: dict[str, np.ndarray]) -> None:
    """The same values written Gluon's own way (Parameter.set_data)."""
    for path, p in pp.tree(net).items():
        p.native.set_data(nd.array(values[path], dtype=p.native.dtype))


# ---- reads -----------------------------------------------------------------------------


def test_reads_after_forward_are_the_values_gluon_holds() -> None:
    net = _forwarded()
    _assert_mkldnn_layout(net)
    tree = pp.tree(net)
    values = _values(tree, 1)
    _gluon_set(net, values)
    _out(net)  # the weights go back to the MKLDNN layout
    _assert_values(tree, values)
    for path, p in tree.items():
        np.testing.assert_array_equal(p.numpy(), p.native.data().asnumpy(), err_msg=path)


def test_a_value_set_before_the_forward_reads_back_after_it() -> None:
    net = nn.HybridSequential()
    net.add(nn.BatchNorm(in_channels=3), nn.Conv2D(16, 3, in_channels=3))
    net.initialize()
    tree = pp.tree(net)
    values = _values(tree, 2)
    tree.load_state(values)
    _out(net)
    _assert_mkldnn_layout(net[1:])
    _assert_values(tree, values)


# ---- every write path ------------------------------------------------------------------


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
def test_set_after_forward_writes_what_gluon_set_data_writes(hybridize: bool) -> None:
    net, reference = _forwarded(hybridize=hybridize), _forwarded(hybridize=hybridize)
    _assert_mkldnn_layout(net)
    tree = pp.tree(net)
    values = _values(tree, 3)
    for path, p in tree.items():
        p.set(values[path])
    _assert_values(tree, values)
    _gluon_set(reference, values)
    np.testing.assert_array_equal(_out(net), _out(reference))
    _assert_values(tree, values)  # and still after a second forward


def test_item_write_after_forward() -> None:
    net = _forwarded()
    tree = pp.tree(net)
    p = tree.parameters()[0]
    expected = p.numpy().copy()
    expected[0, 0] = 42
    p[0, 0] = 42
    np.testing.assert_array_equal(p.numpy(), expected)


def test_load_state_after_forward() -> None:
    net = _forwarded()
    _assert_mkldnn_layout(net)
    tree = pp.tree(net)
    values = _values(tree, 4)
    tree.load_state(values)
    _assert_values(tree, values)
    reference = _forwarded()
    _gluon_set(reference, values)
    np.testing.assert_array_equal(_out(net), _out(reference))


@pytest.mark.skipif(not MKLDNN, reason="the refusal comes from MXNet's MKLDNN build")
def test_an_array_that_refused_a_raw_copy_is_not_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """MXNet takes about 170 us to refuse a raw copy into an MKLDNN array (it formats a stack
    trace): a second load sends those arrays straight to the copy operator."""
    net = _forwarded()
    tree = pp.tree(net)
    refused: list[int] = []
    raw_copy = nd.NDArray._sync_copyfrom

    def counted(self: nd.NDArray, source: Any) -> None:
        try:
            raw_copy(self, source)
        except mx.base.MXNetError:
            refused.append(self.handle.value)
            raise

    monkeypatch.setattr(nd.NDArray, "_sync_copyfrom", counted)
    tree.load_state(_values(tree, 5))
    assert refused, "the premise: some arrays are in the MKLDNN layout"
    first = len(refused)
    values = _values(tree, 6)
    tree.load_state(values)
    assert len(refused) == first
    _assert_values(tree, values)


def test_initialize_force_reinit_after_forward_equals_the_same_seed_elsewhere() -> None:
    net = _forwarded()
    _assert_mkldnn_layout(net)
    tree = pp.tree(net)
    before = tree.state(copy=True)
    tree.initialize(pp.init.Xavier(), seed=7, force_reinit=True)
    fresh = pp.tree(_forwarded(seed=1))
    fresh.initialize(pp.init.Xavier(), seed=7, force_reinit=True)
    _assert_values(tree, fresh.state(copy=True))
    weight = tree.parameters()[0].path
    assert not np.array_equal(tree[weight].numpy(), before[weight])


def test_pp_load_after_forward(tmp_path: Path) -> None:
    source = pp.tree(_forwarded(seed=1))
    source.load_state(_values(source, 5))
    file = tmp_path / "resnet18.safetensors"
    pp.save(source, file)
    net = _forwarded()
    _assert_mkldnn_layout(net)
    pp.load(net, file)
    _assert_values(pp.tree(net), source.state(copy=True))
    np.testing.assert_array_equal(_out(net), _out(source.native))


def test_transfer_after_forward() -> None:
    source = _forwarded(seed=1)
    pp.tree(source).load_state(_values(pp.tree(source), 6))
    net = _forwarded()
    _assert_mkldnn_layout(net)
    pp.transfer(source, net)
    _assert_values(pp.tree(net), pp.tree(source).state(copy=True))
    np.testing.assert_array_equal(_out(net), _out(source))


@pytest.mark.parametrize("hybridize", [False, True])
def test_transfer_copies_ndarray_to_ndarray(hybridize: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gluon to Gluon of one dtype, pp.transfer copies as ``set_data(p.data())`` does, never reading the
    source through NumPy; a cast (float64 into float32) still goes through NumPy."""
    source = _forwarded(seed=1, hybridize=hybridize)
    pp.tree(source).load_state(_values(pp.tree(source), 6))
    net = _forwarded(hybridize=hybridize)
    read: list[int] = []
    asnumpy = nd.NDArray.asnumpy

    def counted(self: nd.NDArray) -> np.ndarray:
        read.append(self.handle.value)
        return asnumpy(self)

    sources = {p.data().handle.value for p in source.collect_params().values()}
    monkeypatch.setattr(nd.NDArray, "asnumpy", counted)
    pp.transfer(source, net)
    assert not sources & set(read)
    monkeypatch.undo()
    _assert_values(pp.tree(net), pp.tree(source).state(copy=True))
    np.testing.assert_array_equal(_out(net), _out(source))
    wide = gluon.nn.Dense(3, in_units=4, dtype="float64")
    wide.initialize()
    narrow = gluon.nn.Dense(3, in_units=4)
    narrow.initialize()
    pp.transfer(wide, narrow)
    np.testing.assert_array_equal(narrow.weight.data().asnumpy(), wide.weight.data().asnumpy().astype(np.float32))


def test_set_after_forward_inside_autograd_record_then_train() -> None:
    net = nn.HybridSequential()
    net.add(nn.Conv2D(16, 3, in_channels=3), nn.Dense(2, in_units=16 * 30 * 30))
    net.initialize()
    _out(net)
    _assert_mkldnn_layout(net)
    tree = pp.tree(net)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    with autograd.record():
        tree["0.weight"].set(np.zeros((16, 3, 3, 3), np.float32))
        tree["0.bias"].set(np.ones(16, np.float32))
        y = net(nd.array(X))
    y.backward()
    np.testing.assert_array_equal(tree["0.weight"].numpy(), 0)
    trainer.step(2)
    assert np.abs(tree["0.weight"].numpy()).max() > 0  # the Trainer updates the array polyparam wrote


# ---- a failure midway restores every value ----------------------------------------------


def _exact(tree: pp.ParameterTree) -> dict[str, bytes]:
    return {path: value.tobytes() for path, value in tree.state(copy=True).items()}


@pytest.mark.parametrize("operation", ["load_state", "load", "transfer"])
def test_a_write_failing_midway_after_forward_changes_nothing(operation: str, tmp_path: Path) -> None:
    source = pp.tree(_forwarded(seed=1))
    source.load_state(_values(source, 8))
    file = tmp_path / "source.safetensors"
    pp.save(source, file)
    run: dict[str, Callable[[pp.ParameterTree], Any]] = {
        "load_state": lambda tree: tree.load_state(source.state(copy=True)),
        "load": lambda tree: pp.load(tree, file),
        "transfer": lambda tree: pp.transfer(source, tree),
    }
    net = _forwarded()
    tree = pp.tree(net)
    y = _out(net)
    n = len(tree.items())
    for at in (0, 1, n // 2, n - 1):
        before = _exact(tree)
        with failing_writes(type(tree.parameters()[0]), at, RuntimeError("refused")), \
                pytest.raises(errors.WriteFailedError):
            run[operation](tree)
        assert _exact(tree) == before, f"a write failing at {at} of {n} changed values"
        np.testing.assert_array_equal(_out(net), y)
    run[operation](tree)  # and then it goes through
    _assert_values(tree, source.state(copy=True))

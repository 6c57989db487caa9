"""The Gluon zoo: model-zoo CNNs (random weights, no download) and a custom block with Gluon
constants, each after one forward pass with the default (MKLDNN) build, imperative and
hybridized. Per model: the tree holds every variable Gluon counts and saves, a tree-wide
seeded Xavier leaves non-weights as specified and repeats bitwise, and ``pp.save``/``pp.load``,
Gluon's own ``save_parameters`` and ``pp.transfer`` give a fresh copy bitwise equal outputs."""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
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
from polyparam_mxnet import _backend  # noqa: E402, F401

import mxnet as mx  # noqa: E402
from mxnet import gluon, nd  # noqa: E402
from mxnet.gluon import nn  # noqa: E402
from mxnet.gluon.model_zoo import vision  # noqa: E402
# isort: on

# mx.nd.array's own SciPy check warns on every call (mxnet 1.9.1 with a recent SciPy)
pytestmark = pytest.mark.filterwarnings("ignore:Please use `csr_matrix`:DeprecationWarning")

#: Gluon's structural names (``save_parameters``) shown under the names every backend uses.
RENAMES = {"gamma": "weight", "beta": "bias"}


class ConstantHead(gluon.HybridBlock):
    """A small CNN whose head scales by a Gluon ``Constant`` and adds a fixed offset."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with self.name_scope():
            self.conv = nn.Conv2D(8, 3, in_channels=3)
            self.norm = nn.BatchNorm(in_channels=8)
            self.pool = nn.GlobalAvgPool2D()
            self.fc = nn.Dense(5, in_units=8)
            self.scale = self.params.get_constant("scale", np.linspace(0.5, 2.0, 5, dtype=np.float32)[None])
            self.offset = self.params.get_constant("offset", np.full((1, 5), 0.25, np.float32))

    def hybrid_forward(self, F: Any, x: Any, scale: Any, offset: Any) -> Any:  # noqa: N803 - Gluon's name
        y = self.fc(self.pool(F.relu(self.norm(self.conv(x)))))
        return F.broadcast_add(F.broadcast_mul(y, scale), offset)


@dataclass(frozen=True)
class Model:
    build: Callable[[], gluon.HybridBlock]
    input_shape: tuple[int, ...]


ZOO = {
    "resnet18_v1": Model(lambda: vision.get_model("resnet18_v1", pretrained=False), (1, 3, 32, 32)),
    "mobilenet1.0": Model(lambda: vision.get_model("mobilenet1.0", pretrained=False), (1, 3, 32, 32)),
    # densenet121 ends in AvgPool2D(7): 224x224 is the input it is built for
    "densenet121": Model(lambda: vision.get_model("densenet121", pretrained=False), (1, 3, 224, 224)),
    "constant_head": Model(ConstantHead, (2, 3, 16, 16)),
}

CASES = [pytest.param(name, hybridize, id=f"{name}-{'hybridized' if hybridize else 'imperative'}")
         for name in ZOO for hybridize in (False, True)]


def _input(name: str) -> nd.NDArray:
    return nd.array(np.random.default_rng(0).uniform(-1, 1, ZOO[name].input_shape).astype(np.float32))


def build(name: str, *, seed: int = 0, hybridize: bool = False) -> gluon.HybridBlock:
    """The model with Gluon's random initialization (seeded) after one forward pass."""
    mx.random.seed(seed)
    net = ZOO[name].build()
    net.initialize()
    if hybridize:
        net.hybridize()
    net(_input(name)).wait_to_read()
    return net


def out(net: gluon.Block, name: str) -> np.ndarray:
    """The forward in inference mode (outside autograd.record: running statistics)."""
    return net(_input(name)).asnumpy()


def exact(tree: pp.ParameterTree) -> dict[str, bytes]:
    return {path: value.tobytes() for path, value in tree.state(copy=True).items()}


def trained_like(name: str, *, seed: int = 0, hybridize: bool = False) -> gluon.HybridBlock:
    """A model whose statistics, scales and shifts are not their initial values (as after training)."""
    net = build(name, seed=seed, hybridize=hybridize)
    tree = pp.tree(net)
    rng = np.random.default_rng(seed + 100)
    for p in tree.parameters():
        if p.role == "running_mean" or p.role == "shift":
            p.set(rng.uniform(-0.1, 0.1, p.shape).astype(p.dtype))
        elif p.role == "running_var" or p.role == "scale" or p.kind == "constant":
            p.set(rng.uniform(0.5, 1.5, p.shape).astype(p.dtype))
    return net


def assert_same_outputs(source: gluon.Block, target: gluon.Block, name: str) -> None:
    np.testing.assert_array_equal(out(target, name), out(source, name))
    assert exact(pp.tree(target)) == exact(pp.tree(source))


def fresh(name: str, source: gluon.Block, hybridize: bool) -> gluon.HybridBlock:
    """A differently seeded copy whose outputs differ from ``source``'s before any load."""
    target = build(name, seed=1, hybridize=hybridize)
    assert not np.array_equal(out(target, name), out(source, name))
    return target


# ---- 1. counts and names ------------------------------------------------------------------------


@pytest.mark.parametrize("name, hybridize", CASES)
def test_counts_and_names_are_gluons(name: str, hybridize: bool, tmp_path: Path) -> None:
    net = build(name, hybridize=hybridize)
    tree = pp.tree(net)
    gluon_params = net.collect_params()
    total = sum(p.data().size for p in gluon_params.values())
    trainable = sum(p.data().size for p in gluon_params.values() if p.grad_req != "null")
    assert sum(p.size or 0 for p in tree.parameters()) == total
    assert sum(p.size or 0 for p in tree.parameters() if p.trainable) == trainable
    assert total > trainable  # statistics (and constants) are not trainable
    # native names are Gluon's collect_params() names; paths its save_parameters (structural) names
    assert sorted(p.native_name for p in tree.parameters()) == sorted(gluon_params.keys())
    file = tmp_path / "net.params"
    net.save_parameters(str(file))
    saved = list(nd.load(str(file)))
    assert saved == list(net._collect_params_with_prefix())
    renamed = [".".join([*key.split(".")[:-1], RENAMES.get(key.split(".")[-1], key.split(".")[-1])])
               for key in saved]
    assert tree.paths() == renamed


# ---- 2. tree-wide seeded initialize --------------------------------------------------------------


@pytest.mark.parametrize("name, hybridize", CASES)
def test_tree_wide_xavier(name: str, hybridize: bool) -> None:
    net = build(name, hybridize=hybridize)
    tree = pp.tree(net)
    before = tree.state(copy=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    left = [p.path for p in tree.parameters() if p.kind != "parameter" and p.role == "other"]
    assert sorted(report.skipped) == sorted(left)
    warned = [str(w.message) for w in caught if issubclass(w.category, errors.PolyparamWarning)]
    assert len(warned) == (1 if left else 0), warned  # once, naming what it left
    after = tree.state(copy=True)
    expected = {"bias": 0.0, "shift": 0.0, "scale": 1.0}
    for p in tree.parameters():
        value = after[p.path]
        if isinstance(p.native, gluon.Constant) or not p.native._differentiable:  # as Gluon says, not the tree
            assert p.kind == ("constant" if isinstance(p.native, gluon.Constant) else "buffer"), p.path
            np.testing.assert_array_equal(value, before[p.path], err_msg=p.path)
        elif p.role == "weight":
            assert not np.array_equal(value, before[p.path]), p.path
            assert np.isfinite(value).all() and value.std() > 0, p.path
        elif p.role in expected:
            np.testing.assert_array_equal(value, expected[p.role], err_msg=p.path)
        else:  # running statistics (never updated by an inference forward), constants
            assert p.role in ("running_mean", "running_var", "other"), p.path
            np.testing.assert_array_equal(value, before[p.path], err_msg=p.path)
    assert np.isfinite(out(net, name)).all()
    again = pp.tree(build(name, seed=1, hybridize=hybridize))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.PolyparamWarning)
        again.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    assert exact(again) == exact(tree)


# ---- 3. pp.save then pp.load ----------------------------------------------------------------------


@pytest.mark.parametrize("name, hybridize", CASES)
def test_save_then_load_into_a_fresh_copy(name: str, hybridize: bool, tmp_path: Path) -> None:
    source = trained_like(name, hybridize=hybridize)
    file = tmp_path / "net.safetensors"
    pp.save(source, file)
    target = fresh(name, source, hybridize)
    report = pp.load(target, file)
    assert len(report.loaded) == len(pp.tree(target).items())
    assert_same_outputs(source, target, name)


# ---- 4. Gluon's own checkpoint ------------------------------------------------------------------


@pytest.mark.parametrize("name, hybridize", CASES)
def test_save_parameters_loads_through_pp_load(name: str, hybridize: bool, tmp_path: Path) -> None:
    source = trained_like(name, hybridize=hybridize)
    file = tmp_path / "net.params"
    source.save_parameters(str(file))
    target = fresh(name, source, hybridize)
    pp.load(target, file)
    assert_same_outputs(source, target, name)
    reference = build(name, seed=1, hybridize=hybridize)   # Gluon's own loader: the same values
    reference.load_parameters(str(file))
    assert exact(pp.tree(reference)) == exact(pp.tree(target))


# ---- 5. transfer --------------------------------------------------------------------------------


@pytest.mark.parametrize("name, hybridize", CASES)
def test_transfer_to_a_fresh_copy(name: str, hybridize: bool) -> None:
    source = trained_like(name, hybridize=hybridize)
    target = fresh(name, source, hybridize)
    pp.transfer(source, target)
    assert_same_outputs(source, target, name)

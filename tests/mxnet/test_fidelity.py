"""The tree says what Gluon says: roles and axes declared with ``pp.roles`` for a custom block,
``Constant`` parameters (kind ``constant``, left alone by a tree-wide initialize), statistics
(kind ``buffer``) and ``trainable`` read live from ``grad_req``."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, Iterator

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
# isort: on

# mx.nd.array's own SciPy check warns on every call (mxnet 1.9.1 with a recent SciPy)
pytestmark = pytest.mark.filterwarnings("ignore:Please use `csr_matrix`:DeprecationWarning")

MASK = np.tril(np.ones((4, 4), np.float32))


def snapshot(tree: pp.ParameterTree) -> dict[str, np.ndarray]:
    return {path: np.array(p.numpy(), copy=True) for path, p in tree.items()}


def gluon_trainable(net: gluon.Block) -> int:
    return sum(p.data().size for p in net.collect_params().values() if p.grad_req != "null")


def tree_trainable(tree: pp.ParameterTree) -> int:
    return sum(p.size or 0 for p in tree.parameters() if p.trainable)


# ---- roles and axes declared for a custom block -------------------------------------------


class Affine(gluon.HybridBlock):
    """A block Gluon does not know: ``proj`` stored (in, out), a scale ``alpha``, an ``offset``."""

    def __init__(self, units: int = 3, in_units: int = 48, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with self.name_scope():
            self.proj = self.params.get("proj", shape=(in_units, units))
            self.alpha = self.params.get("alpha", shape=(units,), init=mx.init.Constant(0.5))
            self.offset = self.params.get("offset", shape=(units,), init=mx.init.Constant(0.25))

    def hybrid_forward(self, F: Any, x: Any, proj: Any, alpha: Any, offset: Any) -> Any:  # noqa: N803 - Gluon's name
        return F.broadcast_add(F.broadcast_mul(F.dot(x, proj), alpha), offset)


class WideAffine(Affine):
    """A subclass: inherits what is declared for :class:`Affine`."""


@pytest.fixture
def declared() -> Iterator[None]:
    pp.roles.register(Affine, {"alpha": "scale", "offset": "bias"}, axes={"proj": ("in", "out")})
    try:
        yield
    finally:
        pp.roles.unregister(Affine)


def _affine(cls: type[Affine] = Affine) -> Affine:
    net = cls()
    net.initialize()
    return net


def test_undeclared_custom_block_reads_roles_from_names() -> None:
    """Without a declaration: a 2-D tensor is an (out, in) weight, 1-D unknown names are "other"."""
    tree = pp.tree(_affine())
    assert {path: (p.role, p.axes) for path, p in tree.items()} == {
        "proj": ("weight", ("out", "in")), "alpha": ("other", ("other",)), "offset": ("other", ("other",))}


def test_declared_roles_and_axes_win(declared: None) -> None:
    tree = pp.tree(_affine())
    assert {path: (p.role, p.axes) for path, p in tree.items()} == {
        "proj": ("weight", ("in", "out")), "alpha": ("scale", ("out",)), "offset": ("bias", ("out",))}


def test_declared_axes_give_the_fans(declared: None) -> None:
    """He (fan_in) on proj (in=48, out=3): the bound is sqrt(6/48), not sqrt(6/3).

    alpha and offset keep their own init (Constant 0.5 and 0.25): Gluon's rule for a tree-wide initialize.
    """
    net = _affine()
    tree = pp.tree(net)
    tree.initialize(pp.init.He(), seed=0, force_reinit=True)
    bound = math.sqrt(6 / 48)
    value = np.abs(tree["proj"].numpy())
    assert value.max() <= bound
    assert value.max() > 0.9 * bound
    np.testing.assert_array_equal(net.alpha.data().asnumpy(), 0.5)
    np.testing.assert_array_equal(net.offset.data().asnumpy(), 0.25)


def test_a_subclass_inherits_the_declaration(declared: None) -> None:
    tree = pp.tree(_affine(WideAffine))
    assert (tree["alpha"].role, tree["offset"].role, tree["proj"].axes) == ("scale", "bias", ("in", "out"))


def test_declared_by_qualified_name() -> None:
    name = f"{Affine.__module__}.{Affine.__qualname__}"
    pp.roles.register(name, {"alpha": "scale"})
    try:
        tree = pp.tree(_affine())
        assert tree["alpha"].role == "scale"
        assert tree["offset"].role == "other"
    finally:
        pp.roles.unregister(name)
    assert pp.tree(_affine())["alpha"].role == "other"


def test_a_declared_role_wins_over_a_name_and_a_layer_type() -> None:
    """Declared roles override Gluon's own names: BatchNorm's gamma declared "other" is "other"."""

    class FixedNorm(nn.BatchNorm):
        pass

    pp.roles.register(FixedNorm, {"gamma": "other"})
    try:
        net = FixedNorm(in_channels=4)
        net.initialize()
        tree = pp.tree(net)
        assert tree["weight"].role == "other"
        assert tree["bias"].role == "shift"
    finally:
        pp.roles.unregister(FixedNorm)


def test_declared_axes_of_another_length_are_refused() -> None:
    pp.roles.register(Affine, axes={"alpha": ("in", "out")})
    try:
        tree = pp.tree(_affine())  # building the tree never raises
        with pytest.raises(errors.InvalidArgumentError, match="alpha"):
            _ = tree["alpha"].axes
    finally:
        pp.roles.unregister(Affine)


def test_declared_axes_of_a_channel_last_convolution_are_canonical() -> None:
    """Axes are declared in the order p.shape shows (canonical); the NHWC transpose still applies."""

    class MyConv(nn.Conv2D):
        pass

    pp.roles.register(MyConv, axes={"weight": ("in", "out", "space", "space")})
    try:
        net = MyConv(4, 3, in_channels=2, layout="NHWC")
        net.initialize()
        p = pp.tree(net)["weight"]
        assert p.shape == (4, 2, 3, 3)
        assert p.axes == ("in", "out", "space", "space")
        np.testing.assert_array_equal(p.numpy(), net.weight.data().asnumpy().transpose(0, 3, 1, 2))
    finally:
        pp.roles.unregister(MyConv)


# ---- constants -------------------------------------------------------------------------------


class Masked(gluon.HybridBlock):
    """A Dense followed by a Gluon Constant mask (``params.get_constant``) and a statistic."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with self.name_scope():
            self.fc = nn.Dense(4, in_units=4)
            self.mask = self.params.get_constant("mask", MASK)
            self.bias = self.params.get_constant("bias", np.full(4, 2, np.float32))  # a constant named like a bias
            self.count = self.params.get("count", shape=(4,), init="ones", grad_req="null", differentiable=False)

    def hybrid_forward(self, F: Any, x: Any, mask: Any, bias: Any, count: Any) -> Any:  # noqa: N803 - Gluon's name
        return F.broadcast_add(F.broadcast_mul(F.dot(self.fc(x), mask), count), bias)


class Attached(gluon.HybridBlock):
    """A ``gluon.Constant`` assigned as an attribute (Gluon registers it by its attribute name)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        with self.name_scope():
            self.fc = nn.Dense(4, in_units=4)
        self.scale = gluon.Constant("attached_scale", np.full((1, 4), 3, np.float32))

    def hybrid_forward(self, F: Any, x: Any, scale: Any) -> Any:  # noqa: N803 - Gluon's name
        return F.broadcast_mul(self.fc(x), scale)


def _masked(seed: int = 0, *, hybridize: bool = False) -> Masked:
    mx.random.seed(seed)
    net = Masked()
    net.initialize()
    if hybridize:
        net.hybridize()
    net(nd.ones((1, 4))).wait_to_read()
    return net


def _out(net: gluon.Block) -> np.ndarray:
    return net(nd.array(np.arange(8, dtype=np.float32).reshape(2, 4))).asnumpy()


def test_constants_are_constants_and_not_trainable() -> None:
    net = _masked()
    tree = pp.tree(net)
    assert {path: (p.kind, p.role, p.trainable) for path, p in tree.items()} == {
        "mask": ("constant", "other", False), "bias": ("constant", "other", False),
        "count": ("buffer", "other", False),
        "fc.weight": ("parameter", "weight", True), "fc.bias": ("parameter", "bias", True)}
    assert tree_trainable(tree) == gluon_trainable(net)
    np.testing.assert_array_equal(tree["mask"].numpy(), MASK)


def test_an_attached_gluon_constant_is_a_constant() -> None:
    net = Attached()
    net.initialize()
    net.scale.initialize()  # Gluon's collect_params() does not list an attribute Constant
    tree = pp.tree(net)
    assert (tree["scale"].kind, tree["scale"].role, tree["scale"].trainable) == ("constant", "other", False)
    np.testing.assert_array_equal(tree["scale"].numpy(), 3)


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
@pytest.mark.parametrize("init", [pp.init.Xavier(), pp.init.Uniform()], ids=["xavier", "uniform"])
def test_tree_wide_initialize_leaves_constants_and_buffers(init: pp.init.Initializer, hybridize: bool) -> None:
    """initialize(force_reinit=True) fills fc, leaves the constants and the statistic, as Gluon's own does."""
    net = _masked(hybridize=hybridize)
    tree = pp.tree(net)
    before = snapshot(tree)
    with pytest.warns(errors.PolyparamWarning, match=r"1 buffer\(s\) and 2 constant\(s\) of unknown role"):
        report = tree.initialize(init, seed=0, force_reinit=True)
    assert {"mask", "bias", "count"} <= set(report.skipped)
    after = snapshot(tree)
    for path in ("mask", "bias", "count"):
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    assert not np.array_equal(after["fc.weight"], before["fc.weight"])
    fc = net.fc(nd.array(np.arange(8, dtype=np.float32).reshape(2, 4))).asnumpy()
    np.testing.assert_allclose(_out(net), fc @ MASK + 2, rtol=1e-6)   # the forward still uses the constants


def test_gluon_own_force_reinit_also_keeps_constants() -> None:
    """The reference: Gluon's own force_reinit keeps a Constant's value."""
    net = _masked()
    net.initialize(mx.init.Uniform(), force_reinit=True)
    np.testing.assert_array_equal(net.mask.data().asnumpy(), MASK)


def test_a_selection_of_constants_is_initialized() -> None:
    net = _masked()
    pp.tree(net).select("mask").initialize(pp.init.Constant(3.0), force_reinit=True)
    np.testing.assert_array_equal(net.mask.data().asnumpy(), 3)


@pytest.mark.parametrize("native", [False, True], ids=["pp.save", "save_parameters"])
def test_constants_save_and_load(native: bool, tmp_path: Path) -> None:
    """A changed constant goes through pp.save/pp.load and through Gluon's save_parameters."""
    source = _masked(0)
    pp.tree(source)["mask"].set(np.full((4, 4), 0.5, np.float32))
    pp.tree(source)["count"].set(np.arange(4, dtype=np.float32))
    file = tmp_path / ("net.params" if native else "net.safetensors")
    if native:
        source.save_parameters(str(file))
    else:
        pp.save(source, file)
    target = _masked(1)
    report = pp.load(target, file)
    assert {"mask", "bias", "count"} <= set(report.loaded)
    np.testing.assert_array_equal(target.mask.data().asnumpy(), 0.5)
    np.testing.assert_array_equal(_out(target), _out(source))


def test_transfer_carries_constants() -> None:
    source, target = _masked(0), _masked(1)
    pp.tree(source)["bias"].set(np.full(4, -1, np.float32))
    pp.transfer(source, target)
    np.testing.assert_array_equal(target.bias.data().asnumpy(), -1)
    np.testing.assert_array_equal(_out(target), _out(source))


# ---- statistics and frozen parameters ---------------------------------------------------------


def test_batchnorm_statistics_are_buffers() -> None:
    net = nn.BatchNorm(in_channels=3)
    net.initialize()
    tree = pp.tree(net)
    assert {path: (p.kind, p.role, p.trainable) for path, p in tree.items()} == {
        "weight": ("parameter", "scale", True), "bias": ("parameter", "shift", True),
        "running_mean": ("buffer", "running_mean", False), "running_var": ("buffer", "running_var", False)}


def _mlp() -> nn.HybridSequential:
    net = nn.HybridSequential()
    net.add(nn.Dense(8, in_units=4), nn.BatchNorm(in_channels=8), nn.Dense(2, in_units=8))
    net.initialize()
    return net


def test_trainable_follows_grad_req_live() -> None:
    """A user freezing with collect_params().setattr('grad_req', 'null') freezes; kinds stay parameter."""
    net = _mlp()
    tree = pp.tree(net)
    assert tree_trainable(tree) == gluon_trainable(net) == 4 * 8 + 8 + 8 + 8 + 8 * 2 + 2
    net[0].collect_params().setattr("grad_req", "null")
    assert (tree["0.weight"].trainable, tree["0.bias"].trainable, tree["2.weight"].trainable) == (False, False, True)
    assert tree_trainable(tree) == gluon_trainable(net)
    net.collect_params().setattr("grad_req", "null")
    assert not any(p.trainable for p in tree.parameters())
    assert tree_trainable(pp.tree(net)) == gluon_trainable(net) == 0
    assert {path: p.kind for path, p in tree.items()} == {
        "0.weight": "parameter", "0.bias": "parameter", "1.weight": "parameter", "1.bias": "parameter",
        "1.running_mean": "buffer", "1.running_var": "buffer", "2.weight": "parameter", "2.bias": "parameter"}
    net.collect_params().setattr("grad_req", "write")
    assert tree_trainable(tree) == gluon_trainable(net) > 0


def test_frozen_parameters_are_still_initialized_tree_wide() -> None:
    """Frozen (grad_req null) parameters keep their role: a tree-wide initialize fills them, no warning."""
    net = _mlp()
    net.collect_params().setattr("grad_req", "null")
    tree = pp.tree(net)
    before = snapshot(tree)
    report = tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    assert not report.skipped
    assert not np.array_equal(tree["0.weight"].numpy(), before["0.weight"])
    np.testing.assert_array_equal(tree["0.bias"].numpy(), 0)


def test_an_untied_constant_stays_a_constant() -> None:
    """Untying two blocks' shared Constant gives each its own Constant with the same value."""
    net = nn.HybridSequential()
    net.add(Masked(), Masked())
    net.initialize()
    tree = pp.tree(net)
    pp.tie(tree["0.mask"], tree["1.mask"])
    assert net[1].mask is net[0].mask
    pp.tree(net).ties()[0].untie()
    assert net[1].mask is not net[0].mask and isinstance(net[1].mask, gluon.Constant)
    tree = pp.tree(net)
    assert (tree["1.mask"].kind, tree["1.mask"].trainable) == ("constant", False)
    np.testing.assert_array_equal(tree["1.mask"].numpy(), MASK)
    tree["1.mask"].set(np.zeros((4, 4), np.float32))
    np.testing.assert_array_equal(tree["0.mask"].numpy(), MASK)
    net(nd.ones((1, 4))).wait_to_read()

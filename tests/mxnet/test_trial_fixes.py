"""What users' trials of Gluon found: Gluon's own ``save_parameters`` file of a model with a fused
``rnn.LSTM``/``GRU``/``RNN`` loads with ``pp.load`` (Gluon writes those parameters under unfused keys),
recurrent biases have role ``bias`` as on torch and Keras; the parameters of an imported
``SymbolBlock`` have their data's shapes, ``unfreeze`` gives back ``grad_req="add"``, NDArrays are
values like NumPy arrays, and clipping keeps the replicas of a net on several contexts equal."""

from __future__ import annotations

import importlib.util
import warnings
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
from mxnet import autograd, gluon, nd  # noqa: E402
from mxnet.gluon import nn, rnn  # noqa: E402
# isort: on

X = np.random.default_rng(0).normal(size=(2, 6, 3)).astype(np.float32)


def _trial(seed: int) -> gluon.HybridBlock:
    """The trial's model: Dense, PReLU, a one-layer LSTM (NTC)."""
    mx.random.seed(seed)
    net = nn.HybridSequential()
    net.add(nn.Dense(4, in_units=3, flatten=False), nn.PReLU(), rnn.LSTM(5, input_size=4, layout="NTC"))
    net.initialize(mx.init.Xavier())
    return net


class _Named(gluon.HybridBlock):
    """A recurrent layer held as an attribute (``lstm``), then a Dense head."""

    def __init__(self, layer: Callable[[], gluon.HybridBlock]) -> None:
        super().__init__()
        with self.name_scope():
            self.lstm = layer()
            self.head = nn.Dense(2, flatten=False, in_units=12)

    def hybrid_forward(self, F, x):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201, N803
        return self.head(self.lstm(x))


RECURRENT: dict[str, Callable[[], gluon.HybridBlock]] = {
    "lstm": lambda: rnn.LSTM(6, num_layers=2, input_size=3, layout="NTC", bidirectional=True),
    "gru": lambda: rnn.GRU(6, num_layers=2, input_size=3, layout="NTC", bidirectional=True),
    "rnn": lambda: rnn.RNN(6, num_layers=3, input_size=3, layout="NTC", bidirectional=True, activation="relu"),
}


def _named(kind: str, seed: int) -> gluon.HybridBlock:
    mx.random.seed(seed)
    net = _Named(RECURRENT[kind])
    net.initialize(mx.init.Xavier())
    return net


def _unidirectional(kind: str, seed: int) -> gluon.HybridBlock:
    mx.random.seed(seed)
    layer = {"lstm": rnn.LSTM, "gru": rnn.GRU, "rnn": rnn.RNN}[kind]
    net = nn.HybridSequential()
    net.add(nn.Dense(4, in_units=3, flatten=False), layer(5, num_layers=2, input_size=4, layout="NTC"))
    net.initialize(mx.init.Xavier())
    return net


def _out(net: gluon.Block) -> np.ndarray:
    return net(nd.array(X)).asnumpy()


def _gluon_key(net: gluon.Block, p: pp.Parameter) -> list[str]:
    """The keys Gluon's ``save_parameters`` writes for ``p``."""
    return [k for k, v in net._collect_params_with_prefix().items() if v is p.native]


# ---- BUG 3: Gluon's own save_parameters file of a fused RNN loads ----------------------------


def test_trial_pp_load_reads_gluons_own_file_of_an_lstm(tmp_path: Path) -> None:
    """The trial's script: ``save_parameters`` then ``pp.load`` into a fresh copy gives equal outputs."""
    a, c = _trial(0), _trial(2)
    _out(a), _out(c)
    f = str(tmp_path / "a.params")
    a.save_parameters(f)
    assert any("_unfused" in k for k in nd.load(f))     # what makes the keys differ from the paths
    report = pp.load(c, f)
    assert not report.missing and not report.unexpected
    np.testing.assert_array_equal(_out(c), _out(a))


@pytest.mark.parametrize("kind", sorted(RECURRENT))
@pytest.mark.parametrize("hybridize", [False, True])
def test_trial_pp_load_reads_bidirectional_multilayer_files(kind: str, hybridize: bool, tmp_path: Path) -> None:
    """Bidirectional, several layers, held as an attribute: ``lstm._unfused.0.l_cell.i2h_weight``."""
    a, b = _named(kind, 0), _named(kind, 1)
    for net in (a, b):
        if hybridize:
            net.hybridize()
        _out(net)
    f = str(tmp_path / "a.params")
    a.save_parameters(f)
    assert "lstm._unfused.1.r_cell.h2h_bias" in nd.load(f)
    assert not np.array_equal(_out(a), _out(b))
    pp.load(b, f)
    np.testing.assert_array_equal(_out(b), _out(a))


@pytest.mark.parametrize("kind", sorted(RECURRENT))
def test_trial_pp_load_reads_unidirectional_multilayer_files(kind: str, tmp_path: Path) -> None:
    a, b = _unidirectional(kind, 0), _unidirectional(kind, 1)
    _out(a), _out(b)
    f = str(tmp_path / "a.params")
    a.save_parameters(f)
    assert "1._unfused.1.h2h_weight" in nd.load(f)
    pp.load(b, f)
    np.testing.assert_array_equal(_out(b), _out(a))


def test_trial_native_aliases_are_the_keys_gluon_writes() -> None:
    """Every key of ``save_parameters`` is a path or an alias of the parameter it holds, projections too."""
    mx.random.seed(0)
    nets = [_trial(0), _named("lstm", 0), _unidirectional("gru", 0)]
    projected = nn.HybridSequential()
    projected.add(rnn.LSTM(6, num_layers=2, input_size=3, projection_size=4, bidirectional=True))
    nets.append(projected)
    for net in nets:
        for path, p in pp.tree(net).items():
            keys = _gluon_key(net, p)
            assert keys and all(k == path or k in p._native_aliases() for k in keys), (path, keys)
            if "_unfused" in keys[0]:
                assert p._native_aliases() == tuple(keys)
            else:
                assert p._native_aliases() == ()
    aliases = dict(pp.tree(projected).items())["0.r1_h2r_weight"]._native_aliases()
    assert aliases == ("0._unfused.1.r_cell.h2r_weight",)


def test_trial_paths_and_native_names_unchanged() -> None:
    """The aliases add keys: paths stay Gluon's structural names and native names Gluon's global names."""
    net = _trial(0)
    tree = pp.tree(net)
    assert tree.paths() == ["0.weight", "0.bias", "1.alpha", "2.l0_i2h_weight", "2.l0_h2h_weight",
                            "2.l0_i2h_bias", "2.l0_h2h_bias"]
    for path, p in tree.items():
        assert p.native_name == p.native.name
        assert p.native_name.endswith(path.split(".")[-1])
    assert tree.get(tree["2.l0_i2h_weight"].native_name) is not None


def test_trial_pp_save_and_load_round_trip_still_uses_paths(tmp_path: Path) -> None:
    a, b = _named("gru", 0), _named("gru", 1)
    _out(a), _out(b)
    f = str(tmp_path / "a.safetensors")
    pp.save(a, f)
    pp.load(b, f)
    np.testing.assert_array_equal(_out(b), _out(a))


# ---- R4: recurrent biases have role "bias" ------------------------------------------------------


def test_trial_recurrent_roles_and_axes_match_torch_and_keras() -> None:
    """Fused layers and cells: ``*_bias`` role ``bias`` axes ``("out",)``; weights ``(gates*hidden, in)``."""
    net = _named("lstm", 0)
    _out(net)
    cell = rnn.LSTMCell(5, input_size=3)
    cell.initialize()
    gru_cell = rnn.GRUCell(5, input_size=3)
    gru_cell.initialize()
    for tree, gates in ((pp.tree(net.lstm), 4), (pp.tree(cell), 4), (pp.tree(gru_cell), 3)):
        for path, p in tree.items():
            if path.endswith("_bias"):
                assert (p.role, p.axes) == ("bias", ("out",)), path
                assert p.shape[0] % gates == 0
            else:
                assert (p.role, p.axes) == ("weight", ("out", "in")), path
                assert p.shape[0] == gates * 5 or p.shape[0] == gates * 6
    assert pp.tree(net)["lstm.l1_i2h_weight"].shape == (24, 12)   # 4 * hidden, 2 directions * hidden


def test_trial_recurrent_biases_initialize_as_biases() -> None:
    """Role ``bias``: a tree-wide initializer fills recurrent biases with zeros, as it does Dense biases."""
    net = _trial(0)
    tree = pp.tree(net)
    tree["2.l0_i2h_bias"].set(np.ones(20, np.float32))
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    np.testing.assert_array_equal(tree["2.l0_i2h_bias"].numpy(), np.zeros(20, np.float32))
    groups = pp.param_groups(net, [("role:bias", {"wd_mult": 0.0})])
    assert {p.name for p in groups.values() if p.wd_mult == 0.0} == {
        tree["0.bias"].native_name, tree["2.l0_i2h_bias"].native_name, tree["2.l0_h2h_bias"].native_name}


# ---- T1: an imported SymbolBlock's parameters have their data's shapes --------------------------


def _nd(x: np.ndarray) -> nd.NDArray:
    """An NDArray of ``x`` (``nd.array`` warns through a deprecated SciPy check on every call)."""
    out = nd.empty(x.shape, dtype=x.dtype)
    out[:] = x
    return out


def _exported(tmp_path: Path) -> tuple[gluon.HybridBlock, str]:
    """Dense(8) -> Dense(2) exported with ``net.export``; returns the net and the files' prefix."""
    mx.random.seed(0)
    net = nn.HybridSequential()
    net.add(nn.Dense(8, in_units=4), nn.Dense(2, in_units=8))
    net.initialize()
    net.hybridize()
    net(nd.ones((1, 4)))
    prefix = str(tmp_path / "exp")
    net.export(prefix, epoch=0)
    return net, prefix


def _imported(prefix: str, *, params: bool = True, call: bool = True) -> gluon.SymbolBlock:
    """``SymbolBlock.imports`` of the exported files (Gluon leaves ``param.shape`` None on each)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # Gluon: "data: None" while inferring the input's type
        sb = gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"],
                                       prefix + "-0000.params" if params else None)
    if call:
        sb(nd.ones((1, 4)))
    return sb


@pytest.mark.parametrize("call", [False, True])
def test_trial_imported_symbolblock_has_the_shapes_of_its_data(call: bool, tmp_path: Path) -> None:
    net, prefix = _exported(tmp_path)
    sb = _imported(prefix, call=call)
    assert all(p.shape is None for p in sb.collect_params().values())   # what Gluon leaves
    tree = pp.tree(sb)
    params = list(tree.parameters())          # paths follow Gluon's per-process name counters
    assert [p.shape for p in params] == [(8, 4), (8,), (2, 8), (2,)]
    assert tree.count() == 58 == len(tree.vector())
    np.testing.assert_array_equal(params[0].numpy(), net[0].weight.data().asnumpy())
    assert [p.role for p in params][::2] == ["weight", "weight"]


def test_trial_imported_symbolblock_takes_values_and_round_trips(tmp_path: Path) -> None:
    """``set``, a scalar refused with a typed error, ``load_vector``, ``pp.save`` then ``pp.load``."""
    _, prefix = _exported(tmp_path)
    sb = _imported(prefix)
    tree = pp.tree(sb)
    before = sb(nd.ones((1, 4))).asnumpy()
    weight = list(tree.parameters())[2]
    weight.set(np.full((2, 8), 0.5, np.float32))
    np.testing.assert_array_equal(weight.native.data().asnumpy(), np.full((2, 8), 0.5))
    with pytest.raises(errors.ShapeMismatchError, match=weight.path):
        weight.set(1.0)
    vector = tree.vector()
    tree.load_vector(vector * 2)
    np.testing.assert_array_equal(tree.vector(), vector * 2)
    tree.load_vector(vector)
    f = str(tmp_path / "sb.safetensors")
    pp.save(sb, f)
    tree.initialize(pp.init.Zero(), force_reinit=True)
    assert not tree.vector().any()
    report = pp.load(sb, f)
    assert not report.missing and not report.unexpected
    np.testing.assert_array_equal(tree.vector(), vector)
    other = _imported(prefix)
    pp.load(other, f)
    np.testing.assert_array_equal(other(nd.ones((1, 4))).asnumpy(), sb(nd.ones((1, 4))).asnumpy())
    assert not np.array_equal(before, sb(nd.ones((1, 4))).asnumpy())   # the set weight is what it computes with


def test_trial_imported_symbolblock_without_data_is_refused_with_typed_errors(tmp_path: Path) -> None:
    """Imported without a params file: nothing tells the rank, so counts, reads and writes say so; an
    initialize then the first forward pass give the shapes."""
    _, prefix = _exported(tmp_path)
    sb = _imported(prefix, params=False, call=False)
    tree = pp.tree(sb)
    p = list(tree.parameters())[0]
    assert p.state == "deferred"
    with pytest.raises(errors.DeferredInitializationError, match=p.path):
        tree.count()
    with pytest.raises(errors.DeferredInitializationError, match=p.path):
        p.numpy()
    with pytest.raises(errors.DeferredInitializationError, match=p.path):
        p.set(np.ones((8, 4), np.float32))
    tree.initialize(pp.init.Uniform(0.1), seed=0)   # Gluon infers the shapes on the first forward pass
    sb(nd.ones((1, 4)))
    assert [q.shape for q in tree.parameters()] == [(8, 4), (8,), (2, 8), (2,)]
    assert tree.count() == 58


# ---- T2: unfreeze gives back the grad_req a freeze found ----------------------------------------


def test_trial_unfreeze_restores_grad_req_add() -> None:
    """Gradient accumulation (``grad_req="add"``) survives ``freeze`` then ``unfreeze``, tree-wide and per parameter."""
    net = nn.Dense(2, in_units=3)
    net.initialize()
    net.collect_params().setattr("grad_req", "add")
    tree = pp.tree(net)
    tree.freeze()
    assert {p.grad_req for p in net.collect_params().values()} == {"null"}
    tree.unfreeze()
    assert (net.weight.grad_req, net.bias.grad_req) == ("add", "add")
    tree["weight"].trainable = False
    tree["weight"].trainable = True
    assert net.weight.grad_req == "add"
    net.bias.grad_req = "write"      # the user's own change after an unfreeze wins over what was remembered
    tree["bias"].trainable = False
    tree["bias"].trainable = True
    assert net.bias.grad_req == "write"


def test_trial_trainable_of_a_parameter_the_user_froze_is_write() -> None:
    """``grad_req="null"`` set by the user (never frozen by polyparam): ``trainable = True`` gives ``"write"``."""
    net = nn.Dense(2, in_units=3)
    net.initialize()
    net.collect_params().setattr("grad_req", "add")
    tree = pp.tree(net)
    tree.freeze()
    tree.unfreeze()
    net.collect_params().setattr("grad_req", "null")   # the user's freeze, after polyparam's
    tree["weight"].trainable = True
    assert net.weight.grad_req == "write"
    tree.unfreeze()
    assert net.bias.grad_req == "write"


# ---- T3: NDArrays are values ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["nd", "np"])
def test_trial_ndarrays_are_accepted_like_numpy_arrays(kind: str) -> None:
    """``set``, item writes and ``load_state`` take ``mx.nd`` and ``mx.np`` arrays, as ``set_data`` does."""
    net = nn.Dense(2, in_units=3)
    net.initialize()
    tree = pp.tree(net)

    def array(x: np.ndarray) -> Any:
        return _nd(x) if kind == "nd" else mx.np.array(x, dtype=x.dtype)

    tree["weight"].set(array(np.arange(6, dtype=np.float32).reshape(2, 3)))
    np.testing.assert_array_equal(net.weight.data().asnumpy(), np.arange(6).reshape(2, 3))
    tree["weight"][0, :] = array(np.ones(3, np.float32))
    np.testing.assert_array_equal(net.weight.data().asnumpy(), [[1, 1, 1], [3, 4, 5]])
    tree["bias"][1] = array(np.array([7.0], np.float32))   # a (1,) array broadcasts, as in NumPy
    np.testing.assert_array_equal(net.bias.data().asnumpy(), [0, 7])
    report = tree.load_state({"weight": array(np.full((2, 3), 2, np.float32)), "bias": array(np.ones(2, np.float32))})
    assert sorted(report.loaded) == ["bias", "weight"]
    np.testing.assert_array_equal(net.weight.data().asnumpy(), np.full((2, 3), 2))
    np.testing.assert_array_equal(net.bias.data().asnumpy(), np.ones(2))
    with pytest.raises(errors.ShapeMismatchError, match="weight"):
        tree["weight"].set(array(np.ones((3, 2), np.float32)))
    tree["bias"].set(array(np.full(2, 0.5, np.float64)))   # cast as a NumPy float64 array is
    assert net.bias.data().dtype == np.float32
    np.testing.assert_array_equal(net.bias.data().asnumpy(), [0.5, 0.5])


# ---- T4: clipping on several contexts scales every replica --------------------------------------


def _replicated_step(clip_after_allreduce: bool) -> dict[str, Any]:
    """Two CPU contexts, one backward each, ``clip_grads``, then the update: what each step left."""
    ctx = [mx.cpu(0), mx.cpu(1)]
    mx.random.seed(0)
    net = nn.Dense(3, in_units=4)
    net.initialize(ctx=ctx)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 1.0}, update_on_kvstore=False)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 4)).astype(np.float32)
    with autograd.record():
        losses = [(net(part) ** 2).sum() for part in gluon.utils.split_and_load(_nd(x), ctx)]
    for loss in losses:
        loss.backward()
    if clip_after_allreduce:
        trainer.allreduce_grads()   # Gluon's recipe: all-reduce, clip, update
    params = {"weight": net.weight, "bias": net.bias}
    before = {name: [g.asnumpy() for g in p.list_grad()] for name, p in params.items()}
    max_norm = 0.1 * len(ctx) if clip_after_allreduce else 0.1   # each replica holds the sum: counted twice
    norm = pp.tree(net).clip_grads(max_norm)
    clipped = {name: [g.asnumpy() for g in p.list_grad()] for name, p in params.items()}
    if clip_after_allreduce:
        trainer.update(4)
    else:
        trainer.step(4)
    weights = {name: [p.data(c).asnumpy() for c in ctx] for name, p in params.items()}
    return {"before": before, "clipped": clipped, "norm": norm, "factor": max_norm / (norm + 1e-6),
            "weights": weights}


@pytest.mark.parametrize("clip_after_allreduce", [False, True])
def test_trial_clip_grads_scales_every_replica_so_they_stay_equal(clip_after_allreduce: bool) -> None:
    """Before ``step`` or between ``allreduce_grads`` and ``update``: each replica's gradient is multiplied by
    the one factor (none zeroed), and after the update the replicas' weights are equal."""
    got = _replicated_step(clip_after_allreduce)
    summed = [np.sum(replicas, axis=0) for replicas in got["before"].values()]   # the documented gradient
    assert got["norm"] == pytest.approx(float(np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in summed))),
                                        rel=1e-5)
    assert got["factor"] < 1
    for name, replicas in got["clipped"].items():
        for replica, grad in zip(replicas, got["before"][name]):
            np.testing.assert_allclose(replica, grad * np.float32(got["factor"]), rtol=1e-6, err_msg=name)
            assert replica.any(), name
    if clip_after_allreduce:   # the global norm of the all-reduced gradient is max_norm / n
        one = [replicas[0] for replicas in got["clipped"].values()]
        assert float(np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in one))) == pytest.approx(0.1, rel=1e-4)
    for name, (first, second) in got["weights"].items():
        np.testing.assert_array_equal(first, second, err_msg=name)


@pytest.mark.parametrize("dims", [2, 3])
def test_a_channel_last_transposed_conv_weight_reads_in_torchs_order(dims: int) -> None:
    """``Conv2DTranspose(layout="NHWC")`` stores ``(in, kh, kw, out/groups)`` (MXNet lays its ``(in, out/groups,
    *k)`` weight out in the layer's layout): read as it was, a square one moved to torch unpermuted (8.5 off its
    outputs, silently). Canonical ``(in, out/groups, *k)`` now, as the other convolutions' weights are."""
    layer = (nn.Conv2DTranspose(6, (3, 2), layout="NHWC", in_channels=4, groups=2) if dims == 2 else
             nn.Conv3DTranspose(6, (3, 2, 2), layout="NDHWC", in_channels=4))
    layer.initialize()
    native = layer.weight.data().asnumpy()
    p = pp.tree(layer)["weight"]
    np.testing.assert_array_equal(p.numpy(), native.transpose(0, dims + 1, *range(1, dims + 1)))
    assert p.axes == ("in", "out", *("space",) * dims)
    p.set(p.numpy() + 1)
    np.testing.assert_array_equal(layer.weight.data().asnumpy(), native + 1)


def test_a_dense_in_a_model_with_channel_last_maps_is_in_doubt_and_a_transfer_refuses() -> None:
    """A channel-last map (``Conv2D(layout="NHWC")``) flattened by ``Dense(flatten=True)`` is in ``(H, W, C)``
    order, torch's ``(C, H, W)``: the Dense weight moved as it was (11-26 off the outputs, silently). A Gluon
    model shows no graph, so the weight is in doubt and a transfer with torch refuses, changing nothing."""
    torch = pytest.importorskip("torch")
    net = nn.HybridSequential()
    net.add(nn.Conv2D(6, (3, 2), layout="NHWC", in_channels=3), nn.Dense(5, in_units=54))
    net.initialize()
    tree = pp.tree(net)
    assert "(H, W, C)" in (tree["1.weight"]._layout_doubt() or "")
    assert tree["0.weight"]._layout_doubt() is None and tree["1.bias"]._layout_doubt() is None
    twin = torch.nn.Sequential(torch.nn.Conv2d(3, 6, (3, 2)), torch.nn.Flatten(), torch.nn.Linear(54, 5))
    before = {k: v.copy() for k, v in tree.state(copy=True).items()}
    with pytest.raises(errors.TransferError, match=r"1\.weight"):
        pp.transfer(twin, net)
    for path, value in tree.state().items():
        np.testing.assert_array_equal(value, before[path], err_msg=path)
    first = nn.HybridSequential()
    first.add(nn.Conv2D(6, (3, 2), in_channels=3), nn.Dense(5, in_units=54))
    first.initialize()
    assert all(p._layout_doubt() is None for p in pp.tree(first).parameters())

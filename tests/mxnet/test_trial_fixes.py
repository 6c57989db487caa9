"""What a new user's trial of Gluon recurrent layers found: Gluon's own ``save_parameters`` file of a
model with a fused ``rnn.LSTM``/``GRU``/``RNN`` loads with ``pp.load`` (Gluon writes those parameters
under unfused keys), and recurrent biases have role ``bias`` as on torch and Keras."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

if importlib.util.find_spec("mxnet") is None:
    pytest.skip("mxnet is not installed", allow_module_level=True)

# The adapter imports mxnet after its load-order check, so it comes first.
# isort: off
import polyparam as pp  # noqa: E402
from polyparam_mxnet import _backend  # noqa: E402, F401

import mxnet as mx  # noqa: E402
from mxnet import gluon, nd  # noqa: E402
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

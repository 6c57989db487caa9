"""Roles and axes read from the layer's type and attribute (the name only as a fallback), and what a
tree-wide initialize does with them: attention, layer scale, weight and spectral norm, buffers."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn.utils import parametrizations  # noqa: E402

import polyparam as pp  # noqa: E402
from polyparam import errors  # noqa: E402


def roles(tree: pp.ParameterTree) -> dict[str, str]:
    return {path: p.role for path, p in tree.items()}


def snapshot(tree: pp.ParameterTree) -> dict[str, np.ndarray]:
    return {path: np.array(p.numpy(), copy=True) for path, p in tree.items()}


def assert_biases_zero(tree: pp.ParameterTree) -> None:
    biases = [path for path, p in tree.items() if p.role in ("bias", "shift")]
    assert biases
    for path in biases:
        assert not tree[path].numpy().any(), path


def assert_xavier_fans(tree: pp.ParameterTree, path: str, fan_in: int, fan_out: int) -> None:
    bound = math.sqrt(6 / (fan_in + fan_out))
    value = np.abs(tree[path].numpy())
    assert value.max() <= bound
    assert value.max() > 0.9 * bound  # the full range: neither a smaller matrix's fans nor a larger one's


# ---- attention --------------------------------------------------------------------------


def test_transformer_encoder_layer_xavier_zeroes_every_bias() -> None:
    """in_proj_bias is a bias, in_proj_weight a (3*d, d) weight: a tree-wide Xavier runs and zeroes biases."""
    net = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32)
    tree = pp.tree(net)
    assert tree["self_attn.in_proj_bias"].role == "bias"
    assert tree["self_attn.in_proj_weight"].role == "weight"
    assert tree["self_attn.in_proj_weight"].axes == ("out", "in")
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    assert_biases_zero(tree)
    assert not net.self_attn.in_proj_bias.detach().numpy().any()   # as torch's own reset_parameters
    assert_xavier_fans(tree, "self_attn.in_proj_weight", 16, 48)


def test_transformer_xavier_runs_and_uniform_keeps_in_proj_bias_zero() -> None:
    """nn.Transformer (encoder and decoder attention): Xavier runs; Uniform leaves every bias at 0."""
    net = nn.Transformer(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=32)
    tree = pp.tree(net)
    in_proj = [path for path in roles(tree) if path.endswith("in_proj_bias")]
    assert len(in_proj) == 3 and all(tree[path].role == "bias" for path in in_proj)
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    assert_biases_zero(tree)
    for path in roles(tree):
        if path.endswith("in_proj_weight"):
            assert_xavier_fans(tree, path, 16, 48)
    tree.initialize(pp.init.Uniform(), seed=0, force_reinit=True)
    assert_biases_zero(tree)
    assert tree["encoder.layers.0.self_attn.in_proj_weight"].numpy().any()


def test_attention_with_separate_projections_and_bias_kv() -> None:
    """kdim/vdim projections are (out, in) weights; bias_k and bias_v are biases (0), as in_proj_bias."""
    net = nn.MultiheadAttention(16, 2, kdim=8, vdim=4, add_bias_kv=True)
    tree = pp.tree(net)
    assert {path: role for path, role in roles(tree).items() if not path.startswith("out_proj")} == {
        "q_proj_weight": "weight", "k_proj_weight": "weight", "v_proj_weight": "weight",
        "in_proj_bias": "bias", "bias_k": "bias", "bias_v": "bias"}
    assert tree["k_proj_weight"].axes == ("out", "in")
    assert tree["bias_k"].axes == ("other", "other", "out")
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    assert_biases_zero(tree)
    assert_xavier_fans(tree, "k_proj_weight", 8, 16)
    assert_xavier_fans(tree, "v_proj_weight", 4, 16)


def test_custom_module_bias_suffix_is_a_bias() -> None:
    """A parameter named ``*_bias`` (a relative-position or attention bias) is a bias by its name."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.attn_bias = nn.Parameter(torch.ones(4))

    tree = pp.tree(Block())
    assert tree["attn_bias"].role == "bias"
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    assert not tree["attn_bias"].numpy().any()


# ---- scales -----------------------------------------------------------------------------


class LayerScale(nn.Module):
    """timm's LayerScale and a custom RMSNorm: 1-D ``gamma``/``weight`` of a module torch does not know."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))
        self.norm_weight = nn.Module()
        self.norm_weight.weight = nn.Parameter(torch.full((dim,), 3.0))
        self.layer_scale = nn.Parameter(1e-6 * torch.ones(dim, 1, 1))   # torchvision's CNBlock


def test_layer_scale_gamma_is_a_scale_and_xavier_runs() -> None:
    """A 1-D gamma or weight (and torchvision's (C, 1, 1) layer_scale) is a scale: reset to 1, never refused."""
    tree = pp.tree(LayerScale(8))
    assert tree["gamma"].role == "scale"
    assert tree["norm_weight.weight"].role == "scale"
    assert tree["layer_scale"].role == "scale"
    assert tree["layer_scale"].axes == ("out", "other", "other")
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    for path in ("gamma", "norm_weight.weight", "layer_scale"):
        np.testing.assert_array_equal(tree[path].numpy(), 1)


def test_prelu_and_linear_with_one_input_keep_their_roles() -> None:
    """The scale fallback is for modules torch does not know: PReLU's slope and Linear(1, n) are not scales."""
    tree = pp.tree(nn.Sequential(nn.PReLU(3), nn.Linear(1, 3)))
    assert tree["0.weight"].role == "other"
    assert tree["1.weight"].role == "weight"


# ---- weight norm and spectral norm --------------------------------------------------------


def test_weight_norm_magnitude_is_a_per_output_scale() -> None:
    """weight_norm's g (parametrizations original0) is a scale on the output axis; v stays a weight."""
    tree = pp.tree(parametrizations.weight_norm(nn.Linear(4, 3)))
    g, v = tree["parametrizations.weight.original0"], tree["parametrizations.weight.original1"]
    assert (g.role, g.axes) == ("scale", ("out", "other"))
    assert (v.role, v.axes) == ("weight", ("out", "in"))
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    assert_xavier_fans(tree, "parametrizations.weight.original1", 4, 3)


@pytest.mark.parametrize("legacy", [False, True])
def test_a_tree_wide_draw_gives_weight_norm_the_drawn_weight(legacy: bool) -> None:
    """As weight_norm sets g = ‖v‖ when it wraps a layer, a tree-wide initialize that draws both g and v sets
    g = ‖v‖ (per output row): the layer's weight g * v / ‖v‖ is Xavier's draw, not rows of norm 1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # the hook-based weight_norm is deprecated
        wrap = nn.utils.weight_norm if legacy else parametrizations.weight_norm
        net = nn.Sequential(wrap(nn.Conv2d(3, 64, 7)), nn.ReLU(), wrap(nn.Linear(1024, 16), dim=1))
    tree = pp.tree(net)
    names = ("weight_g", "weight_v") if legacy else ("parametrizations.weight.original0",
                                                      "parametrizations.weight.original1")
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    for index, fan_in, fan_out, dim in ((0, 3 * 49, 64 * 49, 0), (2, 1024, 16, 1)):
        g, v = (tree[f"{index}.{name}"].numpy() for name in names)
        np.testing.assert_allclose(g, torch.norm_except_dim(torch.from_numpy(v), 2, dim).numpy(), rtol=1e-6)
        if legacy:
            net[index](torch.zeros(1, *((3, 8, 8) if index == 0 else (1024,))))   # the hook recomputes weight
        np.testing.assert_allclose(net[index].weight.detach().numpy(), v, rtol=1e-5, atol=1e-7)
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        assert 0.9 * limit < np.abs(v).max() <= limit    # Xavier's bound, not 1/‖row‖
    before = tree[f"0.{names[0]}"].numpy().copy()
    tree.select(f"*.{names[1]}").initialize(pp.init.Xavier(), seed=1, force_reinit=True)
    np.testing.assert_array_equal(tree[f"0.{names[0]}"].numpy(), before)   # g not selected: kept


def _weight_normed(device: str = "cpu") -> nn.Module:
    with torch.device(device):
        return nn.Sequential(parametrizations.weight_norm(nn.Linear(8, 6)), nn.ReLU(),
                             parametrizations.weight_norm(nn.Conv2d(2, 3, 3), dim=1))


def test_weight_norm_drawn_on_meta_equals_the_eager_draw() -> None:
    """On meta the magnitude follows v when the recorded fills run (materialize): as an eager draw."""
    eager, lazy = _weight_normed(), _weight_normed("meta")
    pp.tree(eager).initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    tree = pp.tree(lazy)
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    tree.materialize("cpu")
    for (path, a), (_, b) in zip(eager.state_dict().items(), lazy.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=path)


def test_a_weight_norm_magnitude_a_rule_chose_is_kept_and_a_tied_direction_serves_both() -> None:
    net = _weight_normed()
    rule = pp.init.Mixed([("*.original0", pp.init.Constant(0.5))], default=pp.init.Xavier())
    pp.tree(net).initialize(rule, seed=0, force_reinit=True)
    assert all(torch.all(m.parametrizations.weight.original0 == 0.5) for m in (net[0], net[2]))
    twins = nn.Sequential(parametrizations.weight_norm(nn.Linear(4, 3)), parametrizations.weight_norm(nn.Linear(4, 3)))
    tree = pp.tree(twins)
    pp.tie(tree["0.parametrizations.weight.original1"], tree["1.parametrizations.weight.original1"])
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    v = twins[0].parametrizations.weight.original1
    for m in twins:
        torch.testing.assert_close(m.parametrizations.weight.original0, torch.norm_except_dim(v, 2, 0))


def test_legacy_weight_norm_magnitude_is_a_scale() -> None:
    """The hook-based nn.utils.weight_norm: weight_g is a scale, weight_v a weight."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # deprecated in favour of parametrizations
        net = nn.utils.weight_norm(nn.Conv2d(2, 5, 3))
    tree = pp.tree(net)
    assert (tree["weight_g"].role, tree["weight_g"].axes) == ("scale", ("out", "other", "other", "other"))
    assert (tree["weight_v"].role, tree["weight_v"].axes) == ("weight", ("out", "in", "space", "space"))


def test_weight_norm_of_a_transposed_conv_reads_the_layer_axes() -> None:
    """A reparametrized weight has its layer's axes: (in, out, k, k) for ConvTranspose, g on dim 0 (in)."""
    tree = pp.tree(parametrizations.weight_norm(nn.ConvTranspose2d(6, 2, 3)))
    assert tree["parametrizations.weight.original1"].axes == ("in", "out", "space", "space")
    assert tree["parametrizations.weight.original0"].axes == ("in", "other", "other", "other")


@pytest.mark.parametrize("kind", ["parametrizations", "legacy"])
def test_spectral_norm_vectors_are_non_trainable_others(kind: str) -> None:
    """spectral_norm's u and v are buffers: role other, not trainable; its original weight keeps the layer's axes."""
    net = (parametrizations.spectral_norm(nn.ConvTranspose2d(4, 3, 3)) if kind == "parametrizations"
           else nn.utils.spectral_norm(nn.ConvTranspose2d(4, 3, 3)))
    tree = pp.tree(net)
    vectors = [p for _, p in tree.items() if p.role == "other"]
    assert len(vectors) == 2 and not any(p.trainable for p in vectors)
    original = "parametrizations.weight.original" if kind == "parametrizations" else "weight_orig"
    assert tree[original].axes == ("in", "out", "space", "space")


@pytest.mark.parametrize("kind", ["parametrizations", "legacy"])
def test_spectral_norm_tree_wide_xavier_runs(kind: str) -> None:
    """Xavier fills the weight and leaves the power-iteration vectors as they are (they stay unit vectors)."""
    net = (parametrizations.spectral_norm(nn.Linear(4, 3)) if kind == "parametrizations"
           else nn.utils.spectral_norm(nn.Linear(4, 3)))
    tree = pp.tree(net)
    before = snapshot(tree)
    with pytest.warns(errors.PolyparamWarning, match="buffer"):
        report = tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    after = snapshot(tree)
    assert {path for path, p in tree.items() if p.kind == "buffer"} <= set(report.skipped)
    for path, p in tree.items():
        if p.role == "other":
            np.testing.assert_array_equal(after[path], before[path])
    net(torch.ones(1, 4))


# ---- buffers ----------------------------------------------------------------------------


class Masked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("mask", torch.tril(torch.ones(4, 4)))
        self.register_buffer("position_ids", torch.arange(4))
        self.register_buffer("bias", torch.ones(4))   # an old GPT-2 style mask buffer named like a bias


def test_persistent_buffers_are_non_trainable_others() -> None:
    """A persistent buffer that is not a running statistic is role other and not trainable, whatever its name."""
    tree = pp.tree(Masked())
    assert {path: (p.role, p.trainable) for path, p in tree.items() if not path.startswith("fc")} == {
        "mask": ("other", False), "position_ids": ("other", False), "bias": ("other", False)}


@pytest.mark.parametrize("init", [pp.init.Xavier(), pp.init.Uniform()])
def test_force_reinit_leaves_persistent_buffers(init: pp.init.Initializer) -> None:
    """initialize(force_reinit=True) fills fc and leaves mask, position_ids and bias as they are."""
    net = Masked()
    tree = pp.tree(net)
    with pytest.warns(errors.PolyparamWarning, match="3 buffer"):
        report = tree.initialize(init, seed=0, force_reinit=True)
    assert {"mask", "position_ids", "bias"} <= set(report.skipped)
    np.testing.assert_array_equal(net.mask.numpy(), np.tril(np.ones((4, 4))))
    np.testing.assert_array_equal(net.position_ids.numpy(), np.arange(4))
    np.testing.assert_array_equal(net.bias.numpy(), 1)
    assert [p.kind for _, p in tree.items()].count("buffer") == 3


def test_a_selection_of_buffers_is_initialized() -> None:
    """Selecting buffers explicitly fills them."""
    net = Masked()
    pp.tree(net).select("mask").initialize(pp.init.Constant(3.0), force_reinit=True)
    np.testing.assert_array_equal(net.mask.numpy(), 3)


def test_batchnorm_step_counter_is_a_buffer_in_the_tree() -> None:
    """num_batches_tracked is an int64 buffer of role other: the tree's native names are the state_dict keys."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    tree = pp.tree(net)
    counter = tree["1.num_batches_tracked"]
    assert (counter.role, counter.kind, counter.trainable, counter.dtype, counter.shape) == (
        "other", "buffer", False, np.dtype(np.int64), ())
    assert {p.native_name for _, p in tree.items()} == set(net.state_dict())


def test_batchnorm_step_counter_survives_state_load_and_transfer(tmp_path: Path) -> None:
    """A BN trained for 3 steps: load_state, pp.save/pp.load and transfer give the copy the count 3;
    a tree-wide initialize leaves the count as it is."""
    src = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, momentum=None))
    for _ in range(3):
        src(torch.randn(8, 4))
    assert int(src[1].num_batches_tracked) == 3

    def fresh() -> nn.Module:
        return nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, momentum=None))

    a = fresh()
    pp.tree(a).load_state(pp.tree(src).state())
    file = tmp_path / "bn.safetensors"
    pp.save(src, file)
    b = fresh()
    pp.load(b, file)
    c = fresh()
    pp.transfer(src, c)
    for copy in (a, b, c):
        assert int(copy[1].num_batches_tracked) == 3
    with pytest.warns(errors.PolyparamWarning):
        pp.tree(c).initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    assert int(c[1].num_batches_tracked) == 3


# ---- declared roles and axes (pp.roles) -------------------------------------------------------


class Transposed(nn.Module):
    """A dense layer storing its weight (in, out), with a learned per-output gain named like nothing torch knows."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out))
        self.gain = nn.Parameter(torch.full((n_out,), 5.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.weight) * self.gain


@pytest.fixture
def declared_transposed() -> Iterator[None]:
    pp.roles.register(Transposed, {"gain": "scale"}, axes={"weight": ("in", "out")})
    try:
        yield
    finally:
        pp.roles.unregister(Transposed)


def test_declared_role_and_axes_win_and_set_the_fans(declared_transposed: None) -> None:
    """A declared (in, out) weight has fan_in = shape[0]; a declared scale is reset to 1."""
    tree = pp.tree(nn.Sequential(Transposed(64, 16)))
    w, gain = tree["0.weight"], tree["0.gain"]
    assert (w.role, w.axes) == ("weight", ("in", "out"))
    assert gain.role == "scale"
    tree.initialize(pp.init.He(mode="fan_in", distribution="normal"), seed=0, force_reinit=True)
    assert abs(w.numpy().std() / math.sqrt(2 / 64) - 1) < 0.1   # fan_in 64, not 16
    np.testing.assert_array_equal(gain.numpy(), 1)


def test_undeclared_layer_keeps_the_adapters_reading() -> None:
    tree = pp.tree(nn.Sequential(Transposed(64, 16)))
    assert (tree["0.weight"].role, tree["0.weight"].axes) == ("weight", ("out", "in"))
    assert tree["0.gain"].role == "other"


def test_declaration_of_a_subclass_wins_and_unregister_restores() -> None:
    class Sub(Transposed):
        pass

    pp.roles.register(Transposed, axes={"weight": ("in", "out")})
    pp.roles.register(Sub, axes={"weight": ("out", "in")})
    try:
        assert pp.tree(Sub(3, 2))["weight"].axes == ("out", "in")
        assert pp.tree(Transposed(3, 2))["weight"].axes == ("in", "out")
    finally:
        pp.roles.unregister(Sub)
        pp.roles.unregister(Transposed)
    assert pp.tree(Transposed(3, 2))["weight"].axes == ("out", "in")


def test_declared_axes_of_the_wrong_length_name_the_path() -> None:
    pp.roles.register(Transposed, axes={"weight": ("in", "out", "space")})
    try:
        tree = pp.tree(nn.Sequential(Transposed(4, 2)))
        with pytest.raises(errors.InvalidArgumentError, match=r"'0\.weight'"):
            _ = tree["0.weight"].axes
        with pytest.raises(errors.InvalidArgumentError, match=r"'0\.weight'") as info:
            tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
        assert info.value.path == "0.weight"
    finally:
        pp.roles.unregister(Transposed)


def test_declared_axes_reach_a_weight_normed_layer(declared_transposed: None) -> None:
    """weight_norm(dim=1) of a declared (in, out) weight: v has the declared axes, g keeps the out axis."""
    tree = pp.tree(parametrizations.weight_norm(Transposed(6, 3), dim=1))
    assert tree["parametrizations.weight.original1"].axes == ("in", "out")
    assert tree["parametrizations.weight.original0"].axes == ("other", "out")


def test_gpt2_conv1d_fans_come_from_its_in_out_layout() -> None:
    """Hugging Face GPT-2's Conv1D stores (in, out): the torch backend declares it, so He(fan_in) std is sqrt(2/in)."""
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.GPT2Config(n_layer=1, n_embd=128, n_head=4, vocab_size=500, n_positions=32)
    tree = pp.tree(transformers.GPT2LMHeadModel(config))
    attn, fc = tree["transformer.h.0.attn.c_attn.weight"], tree["transformer.h.0.mlp.c_fc.weight"]
    assert attn.shape == (128, 384) and attn.axes == ("in", "out")
    assert fc.axes == ("in", "out")
    tree.initialize(pp.init.He(mode="fan_in", distribution="normal"), seed=0, force_reinit=True)
    assert abs(attn.numpy().std() / 0.125 - 1) < 0.05   # sqrt(2 / 128); the (out, in) reading gave 0.072
    assert abs(fc.numpy().std() / 0.125 - 1) < 0.05     # the (out, in) reading gave 0.0625

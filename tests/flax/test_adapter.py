"""The Flax NNX adapter beyond the kit: paths and layouts, kinds, ties from shared Variables and pp.tie,
the gradient helpers, abstract models, casts, and transfers with torch that keep the outputs."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import pytest

flax = pytest.importorskip("flax")
import jax  # noqa: E402 - after the importorskip
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

torch = pytest.importorskip("torch")

import polyparam as pp  # noqa: E402
import polyparam_flax  # noqa: E402
from polyparam import errors  # noqa: E402


def _rngs() -> nnx.Rngs:
    return nnx.Rngs(0)


class Net(nnx.Module):
    """A subclassed model: a list of layers, a conv, a batch norm, an embedding, a layer norm."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.layers = nnx.List([nnx.Linear(6, 5, rngs=rngs), nnx.Linear(5, 2, rngs=rngs)])
        self.conv = nnx.Conv(4, 6, (3, 2), feature_group_count=2, rngs=rngs)
        self.norm = nnx.BatchNorm(6, rngs=rngs)
        self.embed = nnx.Embed(11, 6, rngs=rngs)
        self.ln = nnx.LayerNorm(6, rngs=rngs)

    def __call__(self, x: Any) -> Any:
        return x


def test_paths_follow_the_module_structure_with_canonical_leaves() -> None:
    net = Net(_rngs())
    tree = pp.tree(net)
    assert tree.backend == "flax" and tree.native is net
    assert tree.paths() == [
        "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "conv.weight", "conv.bias",
        "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var", "embed.weight", "ln.weight", "ln.bias"]
    weight = tree["layers.0.weight"]
    assert weight.native_name == "layers.0.kernel" and weight.native is net.layers[0].kernel
    assert weight.shape == (5, 6)
    np.testing.assert_array_equal(weight.numpy(), np.asarray(net.layers[0].kernel[...]).T)
    assert tree.get("layers.0.kernel").path == "layers.0.weight"
    assert tree["layers"][1].native is net.layers[1]


def test_conv_kernel_is_out_in_space_with_groups() -> None:
    net = Net(_rngs())
    p = pp.tree(net)["conv.weight"]
    assert net.conv.kernel.shape == (3, 2, 2, 6)
    assert p.shape == (6, 2, 3, 2) and p.groups == 2 and p.axes == ("out", "in", "space", "space")
    np.testing.assert_array_equal(p.numpy(), np.asarray(net.conv.kernel[...]).transpose(3, 2, 0, 1))


def test_batch_norm_statistics_are_buffers_and_params_trainable() -> None:
    tree = pp.tree(Net(_rngs()))
    kinds = {path: (p.role, p.kind, p.trainable) for path, p in tree.items() if path.startswith(("norm", "embed"))}
    assert kinds == {"norm.weight": ("scale", "parameter", True), "norm.bias": ("shift", "parameter", True),
                     "norm.running_mean": ("running_mean", "buffer", False),
                     "norm.running_var": ("running_var", "buffer", False),
                     "embed.weight": ("weight", "parameter", True)}
    assert tree["embed.weight"].axes == ("in", "out")


def test_linear_general_and_attention_kernels_are_weights_with_in_and_out_axes() -> None:
    """``LinearGeneral`` kernels ``(*batch, *in, *out)`` as Keras' EinsumDense ones: contracted axes ``in``, made
    axes ``out``, batch axes (one kernel each) neither; their biases ``bias``. Paths and layouts stay NNX's."""
    rngs = _rngs()
    mha = nnx.MultiHeadAttention(num_heads=2, in_features=8, qkv_features=8, decode=False, rngs=rngs)
    tree = pp.tree(mha)
    facts = {path: (p.role, p.axes, p.shape) for path, p in tree.items()}
    for name in ("query", "key", "value"):
        assert facts[f"{name}.kernel"] == ("weight", ("in", "out", "out"), (8, 2, 4))
        assert facts[f"{name}.bias"] == ("bias", ("out", "out"), (2, 4))
    assert facts["out.kernel"] == ("weight", ("in", "in", "out"), (2, 4, 8))
    assert facts["out.bias"] == ("bias", ("out",), (8,))
    batched = nnx.LinearGeneral((2, 3), 6, axis=(-2, -1), batch_axis={0: 7}, rngs=rngs)
    assert {path: (p.role, p.axes) for path, p in pp.tree(batched).items()} == {
        "kernel": ("weight", ("other", "in", "in", "out")), "bias": ("bias", ("other", "out"))}


def test_a_tree_wide_xavier_fills_attention_with_its_fans_and_zero_biases() -> None:
    import warnings

    rngs = _rngs()
    mha = nnx.MultiHeadAttention(num_heads=4, in_features=32, qkv_features=64, out_features=16, decode=False,
                                 rngs=rngs)
    tree = pp.tree(mha)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no "left ... parameter(s) of unknown role"
        report = tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    assert not report.skipped
    for path, fan_in, fan_out in [("query.kernel", 32, 64), ("value.kernel", 32, 64), ("out.kernel", 64, 16)]:
        bound = np.sqrt(6 / (fan_in + fan_out))   # Xavier uniform
        value = tree[path].numpy()
        assert np.abs(value).max() <= bound and np.abs(value).max() > 0.9 * bound, path
        assert np.std(value) == pytest.approx(bound / np.sqrt(3), rel=0.1), path
    for path in ("query.bias", "key.bias", "value.bias", "out.bias"):
        assert not tree[path].numpy().any(), path


def test_a_write_replaces_the_value_of_the_same_variable() -> None:
    net = Net(_rngs())
    variable = net.layers[0].kernel
    tree = pp.tree(net)
    tree["layers.0.weight"][1, 4] = 42
    assert net.layers[0].kernel is variable
    assert float(variable[...][4, 1]) == 42
    tree["layers.0.weight"].set(np.ones((5, 6), np.float32))
    assert isinstance(variable.get_value(), jax.Array) and np.all(np.asarray(variable[...]) == 1)


def test_a_failed_load_puts_back_the_arrays_it_replaced_not_copies() -> None:
    """JAX arrays are immutable, so the undo record of a write is the array it replaced (no copy), and a failure
    puts those very arrays back."""
    net = Net(_rngs())
    tree = pp.tree(net)
    before = {path: p.native.get_raw_value() for path, p in tree.items()}
    state = {path: np.full(p.shape, 3, p.dtype) for path, p in tree.items()}
    last = list(state)[-1]

    def refuse() -> None:
        raise RuntimeError("the framework refused the last write")

    original = type(tree[last])._write
    calls = {"n": 0}

    def write(self: Any, array: np.ndarray) -> None:
        calls["n"] += 1
        if self.path == last:
            refuse()
        original(self, array)

    type(tree[last])._write = write
    try:
        with pytest.raises(RuntimeError, match="refused the last write"):
            tree.load_state(state)
    finally:
        type(tree[last])._write = original
    assert calls["n"] == len(state)
    for path, p in tree.items():
        assert p.native.get_raw_value() is before[path], path


def test_subclasses_of_known_layers_read_as_those_layers_and_variable_subclasses_are_listed() -> None:
    class MyParam(nnx.Param):
        pass

    class MyConv(nnx.Conv):
        pass

    class Scaled(nnx.Linear):
        def __init__(self, *args: Any, rngs: nnx.Rngs, **kwargs: Any) -> None:
            super().__init__(*args, rngs=rngs, **kwargs)
            self.gain = MyParam(jnp.ones((3,)))

    class Holder(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.conv = MyConv(2, 3, (3, 3), rngs=rngs)
            self.fc = Scaled(4, 3, rngs=rngs)
            self.lora = nnx.LoRALinear(4, 3, lora_rank=2, rngs=rngs)
            self.rngs = rngs   # RNG keys and counters: not parameters

    tree = pp.tree(Holder(_rngs()))
    assert tree["conv.weight"].shape == (3, 2, 3, 3) and tree["conv.weight"].axes == ("out", "in", "space", "space")
    assert tree["fc.weight"].shape == (3, 4) and tree["fc.gain"].kind == "parameter"
    assert tree["lora.weight"].shape == (3, 4)
    assert not any(path.startswith("rngs") for path in tree.paths())


def test_sequential_positions_count_functions_like_torch() -> None:
    net = nnx.Sequential(nnx.Linear(4, 8, rngs=_rngs()), nnx.relu, nnx.Linear(8, 1, rngs=_rngs()))
    tree = pp.tree(net)
    assert tree.paths() == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert tree["2.weight"].native_name == "layers.2.kernel"
    assert tree[1].native is nnx.relu and tree[2].native is net.layers[2]


def test_freezing_sets_the_variables_metadata_and_the_trainable_filter_reads_it() -> None:
    net = Net(_rngs())
    tree = pp.tree(net)
    tree["layers.0.weight"].trainable = False
    assert net.layers[0].kernel.get_metadata("trainable") is False and not tree["layers.0.weight"].trainable
    kept = {tuple(path) for path, _ in nnx.to_flat_state(nnx.state(net, polyparam_flax.trainable))}
    assert ("layers", 0, "kernel") not in kept and ("layers", 0, "bias") in kept
    assert ("norm", "mean") not in kept   # a BatchStat is never trainable
    tree["layers.0.weight"].trainable = True
    assert not net.layers[0].kernel.has_metadata("trainable") and tree["layers.0.weight"].trainable


# ---- ties -------------------------------------------------------------------------------


def test_a_variable_held_twice_is_a_tie_and_untie_copies_it() -> None:
    a, b = nnx.Linear(8, 8, rngs=_rngs()), nnx.Linear(8, 8, rngs=_rngs())
    b.kernel = a.kernel
    net = nnx.Sequential(a, b)
    tree = pp.tree(net)
    assert [g.paths for g in tree.ties()] == [["0.weight", "1.weight"]]
    tree["1.weight"][0, 0] = 3
    assert float(a.kernel[...][0, 0]) == 3
    tree.ties()[0].untie()
    assert b.kernel is not a.kernel and tree.ties() == []
    tree["1.weight"][0, 0] = 5
    assert float(a.kernel[...][0, 0]) == 3


def test_pp_tie_makes_two_places_share_one_variable_and_gradients_sum() -> None:
    a, b = nnx.Linear(8, 8, rngs=_rngs()), nnx.Linear(8, 8, rngs=_rngs())
    net = nnx.Sequential(a, nnx.tanh, b)
    tree = pp.tree(net)
    pp.tie(tree[0], tree[2])
    assert b.kernel is a.kernel and b.bias is a.bias
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (3, 8)), jnp.float32)
    polyparam_flax.backward(net, lambda m, x: jnp.sum(m(x)), x)
    tied = np.array(tree["0.weight"].grad(), copy=True)
    for group in tree.ties():
        group.untie()
    polyparam_flax.backward(net, lambda m, x: jnp.sum(m(x)), x)
    np.testing.assert_allclose(tied, tree["0.weight"].grad() + tree["2.weight"].grad(), rtol=1e-5, atol=1e-6)


def test_tying_a_dense_kernel_to_an_embedding_is_refused_before_any_change() -> None:
    class Head(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.embed = nnx.Embed(8, 8, rngs=rngs)
            self.head = nnx.Linear(8, 8, use_bias=False, rngs=rngs)

    model = Head(_rngs())
    tree = pp.tree(model)
    with pytest.raises(errors.TieError):
        pp.tie(tree["embed.weight"], tree["head.weight"])
    assert model.head.kernel is not model.embed.embedding and tree.ties() == []


# ---- gradients --------------------------------------------------------------------------


def test_backward_stores_gradients_that_clip_and_zero_write_back() -> None:
    net = nnx.Sequential(nnx.Linear(4, 8, rngs=_rngs()), nnx.relu, nnx.Linear(8, 1, rngs=_rngs()))
    tree = pp.tree(net)
    assert tree["0.weight"].grad() is None
    x = jnp.ones((2, 4), jnp.float32)
    loss = polyparam_flax.backward(net, lambda m, x: jnp.sum(m(x) ** 2), x)
    grads = nnx.grad(lambda m, x: jnp.sum(m(x) ** 2))(net, x)
    np.testing.assert_allclose(tree["0.weight"].grad(), np.asarray(grads["layers"][0]["kernel"][...]).T, rtol=1e-6)
    assert loss.shape == ()
    norm = tree.grad_norm()
    tree.clip_grads(norm / 2)
    clipped = polyparam_flax.gradients(net)
    np.testing.assert_allclose(np.asarray(clipped["layers"][0]["kernel"][...]),
                               np.asarray(grads["layers"][0]["kernel"][...]) * 0.5, rtol=1e-4)
    tree.zero_grads()
    assert tree.grad_norm() == 0.0
    polyparam_flax.record_gradients(net, grads)
    assert tree.grad_norm() == pytest.approx(norm, rel=1e-6)


# ---- abstract models, casts ---------------------------------------------------------------


def test_a_model_built_under_eval_shape_is_uninitialized_until_initialize() -> None:
    net = nnx.eval_shape(lambda: nnx.Sequential(nnx.Linear(4, 8, rngs=_rngs()), nnx.relu,
                                                nnx.Linear(8, 1, rngs=_rngs())))
    tree = pp.tree(net)
    assert {p.state for p in tree.parameters()} == {"uninitialized"}
    assert tree["0.weight"].shape == (8, 4)
    tree.initialize(pp.init.Xavier(), seed=0)
    assert {p.state for p in tree.parameters()} == {"initialized"}
    assert net(jnp.ones((2, 4))).shape == (2, 1)


def test_cast_keeps_variables_and_refuses_float64_without_x64() -> None:
    net = Net(_rngs())
    tree = pp.tree(net)
    before = tree.state(copy=True)
    variable = net.layers[0].kernel
    tree.cast("bfloat16")
    assert net.layers[0].kernel is variable and variable.get_value().dtype == jnp.bfloat16
    tree.cast("float32")
    assert tree["layers.0.weight"].dtype == np.float32
    with pytest.raises(errors.UnsupportedModelError, match="jax_enable_x64"):
        tree.cast("float64")
    after = tree.state()
    assert all(after[k].dtype == np.float32 for k in before)


# ---- seeded values and transfers with torch ---------------------------------------------



def _torch_mlp() -> Any:
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _flax_mlp() -> Any:
    return nnx.Sequential(nnx.Linear(4, 8, rngs=_rngs()), nnx.relu, nnx.Linear(8, 3, rngs=_rngs()))


def _torch_cnn() -> Any:
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 10))


def _flax_cnn() -> Any:
    rngs = _rngs()
    return nnx.Sequential(nnx.Conv(3, 4, (3, 3), padding="VALID", rngs=rngs), nnx.BatchNorm(4, rngs=rngs), nnx.relu,
                          partial(nnx.max_pool, window_shape=(2, 2), strides=(2, 2)),
                          partial(jnp.mean, axis=(1, 2), keepdims=True), lambda x: x.reshape(x.shape[0], -1),
                          nnx.Linear(4, 10, rngs=rngs))


def _randomize_running_stats(model: Any) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)


def test_seeded_init_equals_torch_bitwise() -> None:
    t, f = pp.tree(_torch_mlp()), pp.tree(_flax_mlp())
    for tree in (t, f):
        tree.initialize(pp.init.Xavier(), seed=7, force_reinit=True)
    ts, fs = t.state(), f.state()
    assert ts.keys() == fs.keys()
    for path in ts:
        np.testing.assert_array_equal(np.asarray(ts[path]), fs[path], err_msg=path)


@pytest.mark.parametrize("direction", ["torch-to-flax", "flax-to-torch"])
def test_transfer_mlp_with_torch_keeps_outputs(direction: str) -> None:
    torch_net, flax_net = _torch_mlp(), _flax_mlp()
    src, dst = (torch_net, flax_net) if direction == "torch-to-flax" else (flax_net, torch_net)
    x = np.random.default_rng(1).uniform(-1, 1, (5, 4)).astype(np.float32)
    report = pp.transfer(src, dst, check=(x, x) if direction == "flax-to-torch" else x)
    assert report.ok and report.checked is not None and report.checked <= 1e-5
    with torch.no_grad():
        expected = torch_net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(flax_net(jnp.asarray(x))), expected, atol=1e-5)


@pytest.mark.parametrize("direction", ["torch-to-flax", "flax-to-torch"])
def test_transfer_cnn_with_torch_keeps_outputs(direction: str) -> None:
    """Conv, batch norm (running statistics moved too), pooling, dense: inputs NCHW for torch, NHWC for Flax."""
    torch_net, flax_net = _torch_cnn(), _flax_cnn()
    _randomize_running_stats(torch_net)
    if direction == "flax-to-torch":
        pp.tree(flax_net).initialize(pp.init.Normal(0.5), seed=3, force_reinit=True)
        pp.tree(flax_net)["1.running_var"].set(np.linspace(0.5, 2, 4, dtype=np.float32))
    x = np.random.default_rng(2).uniform(-1, 1, (2, 3, 10, 9)).astype(np.float32)
    x_flax = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    src, dst = (torch_net, flax_net) if direction == "torch-to-flax" else (flax_net, torch_net)
    check = (x, x_flax) if direction == "torch-to-flax" else (x_flax, x)
    report = pp.transfer(src, dst, check=check)
    assert report.ok and report.checked is not None and report.checked <= 1e-5
    assert report.ignored_buffers == ["1.num_batches_tracked"]
    torch_net.eval()
    with torch.no_grad():
        expected = torch_net(torch.from_numpy(x)).numpy()
    flax_net.eval()
    np.testing.assert_allclose(np.asarray(flax_net(jnp.asarray(x_flax))), expected, atol=1e-5)


def test_forward_check_leaves_training_mode_as_it_was() -> None:
    torch_net, flax_net = _torch_cnn(), _flax_cnn()
    flax_net.train()
    x = np.random.default_rng(2).uniform(-1, 1, (2, 3, 10, 9)).astype(np.float32)
    pp.transfer(torch_net, flax_net, check=(x, np.ascontiguousarray(x.transpose(0, 2, 3, 1))))
    assert flax_net.layers[1].use_running_average is False


class Sowing(nnx.Module):
    """A model that records an intermediate value on every call, as ``self.sow`` does."""

    def __init__(self, seed: int, sown_before: bool) -> None:
        self.fc = nnx.Linear(3, 2, rngs=nnx.Rngs(seed))
        self.inner = nnx.Linear(2, 2, rngs=nnx.Rngs(seed + 1))
        if sown_before:
            self.sow(nnx.Intermediate, "features", jnp.zeros((1, 3)))

    def __call__(self, x: Any) -> Any:
        self.sow(nnx.Intermediate, "features", x)
        self.inner.sow(nnx.Intermediate, "seen", x)
        return self.inner(self.fc(x))


@pytest.mark.parametrize("sown_before", [False, True])
def test_a_checked_transfer_leaves_no_sown_intermediates(sown_before: bool) -> None:
    """``check=`` runs both models; what they sow is taken back, so ``nnx.state`` keeps its structure (a jitted
    step or an orbax restore built for it still fits) and a value sown before stays as it was."""
    src, dst = Sowing(0, sown_before), Sowing(1, sown_before)
    structure = [sorted(".".join(map(str, k)) for k, _ in nnx.to_flat_state(nnx.state(m))) for m in (src, dst)]
    before = [np.asarray(m.features.get_value()[0]) for m in (src, dst)] if sown_before else None
    x = np.ones((1, 3), np.float32)
    pp.transfer(src, dst, check=x)
    assert [sorted(".".join(map(str, k)) for k, _ in nnx.to_flat_state(nnx.state(m))) for m in (src, dst)] == structure
    if before is not None:
        for m, value in zip((src, dst), before):
            assert len(m.features.get_value()) == 1
            np.testing.assert_array_equal(np.asarray(m.features.get_value()[0]), value)


@pytest.mark.parametrize("transpose_kernel", [False, True])
def test_conv_transpose_weight_means_torchs_with_either_kernel_convention(transpose_kernel: bool) -> None:
    from polyparam.testing import reference

    layer = nnx.ConvTranspose(6, 4, (3, 2), padding="VALID", transpose_kernel=transpose_kernel, rngs=_rngs())
    tree = pp.tree(layer)
    assert tree["weight"].shape == (6, 4, 3, 2) and tree["weight"].axes == ("in", "out", "space", "space")
    rng = np.random.default_rng(4)
    weight, bias = rng.normal(size=(6, 4, 3, 2)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    tree.load_state({"weight": weight, "bias": bias})
    x = rng.normal(size=(2, 6, 5, 4)).astype(np.float32)
    y = np.moveaxis(np.asarray(layer(jnp.asarray(np.moveaxis(x, 1, -1)))), -1, 1)
    np.testing.assert_allclose(y, reference.conv_transpose(x, weight, bias), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(tree["weight"].numpy(), weight)


class Counted(nnx.Module):
    """A learned scalar and a step counter held as Python numbers, as NNX allows."""

    def __init__(self, value: float) -> None:
        self.w = nnx.Param(jnp.full((2,), value))
        self.alpha = nnx.Param(value)
        self.step = nnx.Variable(int(value))
        self.flag = nnx.Variable(value > 5)

    def __call__(self, x: Any) -> Any:
        return self.alpha * x * self.w[...]


def test_python_numbers_in_variables_are_0d_parameters_that_round_trip(tmp_path: Any) -> None:
    a, b = Counted(1.0), Counted(9.0)
    tree = pp.tree(a)
    assert set(tree.paths()) == {".".join(map(str, k)) for k, _ in nnx.to_flat_state(nnx.state(a))}
    # the dtypes JAX gives them (jnp.asarray(1.0)), which a jitted step leaves in the Variable
    assert (tree["alpha"].shape, tree["alpha"].dtype, tree["alpha"].kind) == ((), np.float32, "parameter")
    assert (tree["step"].dtype, tree["step"].kind, tree["flag"].dtype) == (np.int32, "buffer", np.bool_)
    target = tmp_path / "counted.safetensors"
    pp.save(a, target)
    pp.load(b, target)
    assert (b.alpha.get_value(), b.step.get_value(), b.flag.get_value()) == (1.0, 1, False)
    assert (type(b.alpha.get_value()), type(b.step.get_value()), type(b.flag.get_value())) == (float, int, bool)
    np.testing.assert_array_equal(np.asarray(b(jnp.ones(2))), np.asarray(a(jnp.ones(2))))
    c = Counted(9.0)
    pp.transfer(a, c)
    assert (c.alpha.get_value(), c.step.get_value()) == (1.0, 1)
    assert not pp.diff(a, c)
    pp.tree(c)["alpha"].set(np.float32(2.5))
    assert c.alpha.get_value() == 2.5 and type(c.alpha.get_value()) is float
    d = Counted(1.0)   # a checkpoint saved before a jitted step loads after it, the numbers now JAX arrays
    nnx.jit(lambda m, x: m(x))(d, jnp.ones(2))
    pp.load(d, target)
    assert not pp.diff(a, d).dtypes and not pp.diff(a, d).changed
    pp.tree(c).cast("bfloat16", where=lambda p: p.path == "alpha")
    assert c.alpha.get_value().dtype == jnp.bfloat16
    grads = nnx.grad(lambda m: jnp.sum(m(jnp.ones(2))))(a)   # a Python number's gradient is a 0-d array
    polyparam_flax.record_gradients(a, grads)
    assert tree["alpha"].grad().shape == ()
    tree.clip_grads(1e-3)   # stays 0-d, in the store and in what the optimizer gets
    assert tree["alpha"].grad().shape == () and polyparam_flax.gradients(a)["alpha"].get_value().shape == ()
    tree.zero_grads()
    assert tree["alpha"].grad().shape == ()


def test_a_weak_typed_scalar_stays_weak_after_a_write(tmp_path: Any) -> None:
    """After a jitted step ``nnx.Param(1.0)`` holds a weak-typed float32, which does not promote the bfloat16
    values it multiplies; a load of it keeps it weak, as ``nnx.update`` does."""

    class Scaled(nnx.Module):
        def __init__(self) -> None:
            self.temp = nnx.Param(1.5)
            self.w = nnx.Param(jnp.ones(2))

        def __call__(self, x: Any) -> Any:
            return x * self.temp

    model = Scaled()
    x = jnp.ones((2,), jnp.bfloat16)
    nnx.jit(lambda m, x: m(x))(model, x)
    assert model.temp.get_raw_value().weak_type
    target = tmp_path / "scaled.safetensors"
    pp.save(model, target)
    pp.load(model, target)
    assert model.temp.get_raw_value().weak_type and model(x).dtype == jnp.bfloat16
    pp.tree(model)["temp"].set(np.float32(2.0))
    assert model.temp.get_raw_value().weak_type and float(model.temp.get_raw_value()) == 2.0
    assert not model.w.get_raw_value().weak_type


def test_a_write_runs_the_variables_on_set_value_hook_and_a_plain_one_takes_the_array() -> None:
    """A write skips ``set_value``'s own cost where it only takes the new array, as ``nnx.update`` does; a
    Variable with an ``on_set_value`` hook still has it run, and its undo puts back what it held."""

    class Model(nnx.Module):
        def __init__(self) -> None:
            self.hooked = nnx.Param(jnp.zeros(3), on_set_value=lambda _, x: x * 2)
            self.plain = nnx.Param(jnp.zeros(3))

    model = Model()
    tree = pp.tree(model)
    tree.load_state({"hooked": np.ones(3, np.float32), "plain": np.full(3, 5.0, np.float32)})
    np.testing.assert_array_equal(np.asarray(model.hooked.get_raw_value()), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(np.asarray(model.plain.get_raw_value()), [5.0, 5.0, 5.0])
    assert isinstance(model.plain.get_raw_value(), jax.Array)
    with pytest.raises(pp.errors.ShapeMismatchError):
        tree.load_state({"plain": np.ones(3, np.float32), "hooked": np.ones(4, np.float32)})
    np.testing.assert_array_equal(np.asarray(model.plain.get_raw_value()), [5.0, 5.0, 5.0])

"""The PyTorch backend beyond the conformance kit: torch structures, views, devices, meta, Lazy, ties."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import polyparam as pp  # noqa: E402
from polyparam import errors  # noqa: E402
from polyparam.testing import reference_values  # noqa: E402


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))


def values(tree: pp.ParameterTree) -> dict[str, np.ndarray]:
    return {path: np.array(p.numpy(), copy=True) for path, p in tree.items()}


# ---- structure ------------------------------------------------------------------------


def test_importing_the_plugin_does_not_import_torch() -> None:
    """The plugin's __init__ and the hooks work without importing torch."""
    code = ("import sys, polyparam_torch, polyparam; polyparam.list_backends(); "
            "import numpy as np; polyparam.backend_for({'w': np.zeros(2)}); "
            "assert 'torch' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sequential_positions_include_activations() -> None:
    """tree[i] is net[i], parameterless activations included."""
    net = mlp()
    tree = pp.tree(net)
    assert tree.backend == "torch" and len(tree) == 3
    assert [child.native for child in tree] == list(net)
    assert tree[1].items() == [] and tree[2].native is net[2]
    assert tree.paths() == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert tree["2.bias"].native is net[2].bias


def test_named_sequential_children_use_positions_and_native_names_are_state_dict_keys() -> None:
    """add_module('block 1', ...) gives path 0.1.0.bias and native name '0.block 1.0.bias'."""
    inner = nn.Sequential()
    for i in range(2):
        inner.add_module(f"block {i}", nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    net = nn.Sequential(inner, nn.Linear(4, 1))
    tree = pp.tree(net)
    p = tree[0][1][0]["bias"]
    assert p.path == "0.1.0.bias" and p.native_name == "0.block 1.0.bias"
    assert p.native is net[0][1][0].bias
    assert [q.native_name for q in tree.parameters()] == list(net.state_dict())
    assert tree.get("0.block 1.0.bias") is not None and tree.get("0.block 1.0.bias").path == "0.1.0.bias"


def test_module_list_dict_and_custom_modules() -> None:
    """ModuleList by position, ModuleDict and attributes by name, direct nn.Parameters as leaves."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3, 2))
            self.layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 3)])
            self.heads = nn.ModuleDict({"cls": nn.Linear(3, 5), "box": nn.Linear(3, 4, bias=False)})

    net = Net()
    tree = pp.tree(net)
    assert tree.paths() == ["scale", "layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias",
                            "heads.cls.weight", "heads.cls.bias", "heads.box.weight"]
    assert tree["layers"][1]["weight"].native is net.layers[1].weight
    assert tree["heads.box.weight"].shape == (4, 3)
    assert [p.native_name for p in tree.parameters()] == list(net.state_dict())


def test_batchnorm_buffers_are_non_trainable_parameters() -> None:
    """Running statistics appear with their roles, num_batches_tracked as a buffer; non-persistent buffers do not."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ConvTranspose2d(4, 2, 3))
    net[1].register_buffer("scratch", torch.zeros(2), persistent=False)
    tree = pp.tree(net)
    roles = {path: (p.role, p.trainable) for path, p in tree.items()}
    assert roles == {
        "0.weight": ("weight", True), "0.bias": ("bias", True),
        "1.weight": ("scale", True), "1.bias": ("shift", True),
        "1.running_mean": ("running_mean", False), "1.running_var": ("running_var", False),
        "1.num_batches_tracked": ("other", False),
        "2.weight": ("weight", True), "2.bias": ("bias", True),
    }
    assert tree["0.weight"].axes == ("out", "in", "space", "space")
    assert tree["2.weight"].axes == ("in", "out", "space", "space")  # torch's transposed layout
    tree.initialize(pp.init.Constant(2), force_reinit=True)
    np.testing.assert_array_equal(net[1].running_var.numpy(), 1)
    np.testing.assert_array_equal(net[1].weight.detach().numpy(), 1)
    np.testing.assert_array_equal(net[2].weight.detach().numpy(), 2)


def test_transposed_conv_xavier_uses_axis_roles() -> None:
    """Xavier's bound comes from the roles: fan_in = out_channels * k*k for torch's (in, out, k, k)."""
    net = nn.Sequential(nn.ConvTranspose2d(6, 2, 3))
    tree = pp.tree(net)
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    p = tree["0.weight"]
    fan_in, fan_out = 2 * 9, 6 * 9
    assert np.abs(p.numpy()).max() <= np.sqrt(6 / (fan_in + fan_out))
    np.testing.assert_array_equal(p.numpy(), reference_values(p, pp.init.Xavier(), 0))


def test_unsupported_object() -> None:
    from polyparam_torch import _backend

    with pytest.raises(errors.UnsupportedModelError):
        _backend.tree(torch.zeros(3))


# ---- values ---------------------------------------------------------------------------


def test_reads_are_zero_copy_views_of_cpu_storage() -> None:
    net = mlp()
    tree = pp.tree(net)
    for path, value in tree.state().items():
        assert np.shares_memory(value, net.state_dict()[path].numpy())
    copied = tree.state(copy=True)
    assert not np.shares_memory(copied["0.weight"], net[0].weight.detach().numpy())


def test_set_inside_autograd_keeps_the_parameter_object_for_optimizers() -> None:
    """set() and item writes inside enable_grad write in place; an optimizer keeps working."""
    net = mlp()
    weight = net[0].weight
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    tree = pp.tree(net)
    with torch.enable_grad():
        tree["0.weight"].set(np.ones((8, 4), np.float32))
        tree["0.weight"][0, 0] = 42
    assert net[0].weight is weight and weight.requires_grad
    assert weight[0, 0].item() == 42 and weight[1, 1].item() == 1
    net(torch.ones(2, 4)).sum().backward()
    grad = weight.grad.clone()
    opt.step()
    np.testing.assert_allclose(tree["0.weight"].numpy()[1], 1 - 0.5 * grad[1].numpy(), rtol=1e-6)


def test_set_bumps_the_autograd_version_like_an_in_place_copy() -> None:
    """A write between forward and backward is detected by autograd, as torch's own copy_ would be."""
    net = mlp()
    out = net(torch.ones(2, 4)).sum()
    pp.tree(net)["2.weight"].set(np.zeros((1, 8), np.float32))
    with pytest.raises(RuntimeError, match="inplace"):
        out.backward()


@pytest.mark.parametrize("how", ["tree", "selection", "meta", "large"])
def test_initialize_keeps_an_embeddings_padding_row_zero(how: str) -> None:
    """torch's reset_parameters (and Hugging Face's _init_weights) leave the padding_idx row zero, and it never
    gets a gradient: a drawn row would stay for good. Every other row is the seeded draw."""
    rows = 70_000 if how == "large" else 10    # large: filled in fresh storage, not in place
    def build() -> nn.Sequential:
        return nn.Sequential(nn.Embedding(rows, 4, padding_idx=1), nn.EmbeddingBag(rows, 4, padding_idx=-1))

    plain = nn.Sequential(nn.Embedding(rows, 4), nn.EmbeddingBag(rows, 4))
    pp.tree(plain).initialize(pp.init.Normal(1.0), seed=0, force_reinit=True)
    if how == "meta":
        with torch.device("meta"):
            model = build()
        tree = pp.tree(model)
        tree.initialize(pp.init.Normal(1.0), seed=0)
        tree.materialize("cpu")
    elif how == "selection":
        model = build()
        pp.tree(model).select("*.weight").initialize(pp.init.Normal(1.0), seed=0, force_reinit=True)
    else:
        model = build()
        pp.tree(model).initialize(pp.init.Normal(1.0), seed=0, force_reinit=True)
    for layer, pad in ((0, 1), (1, rows - 1)):
        weight, drawn = model[layer].weight.detach(), plain[layer].weight.detach()
        assert (weight[pad] == 0).all()
        keep = torch.ones(rows, dtype=torch.bool)
        keep[pad] = False
        torch.testing.assert_close(weight[keep], drawn[keep], rtol=0, atol=0)


def test_a_loaded_padding_row_and_one_tensors_own_initialize_are_kept_as_written() -> None:
    """The padding row is zeroed only after a draw of the whole model: a pretrained row pp.init.Load copies
    (BERT's [PAD]) stays, and one tensor given an initializer is filled whole, as torch's nn.init call does."""
    model = nn.Sequential(nn.Embedding(6, 3, padding_idx=0), nn.Linear(3, 2))
    pretrained = {"0.weight": np.full((6, 3), 7.0, np.float32)}
    pp.tree(model).initialize(pp.init.Load(pretrained, default="xavier"), seed=0, force_reinit=True)
    assert (model[0].weight.detach().numpy() == 7).all()
    pp.tree(model)["0.weight"].initialize(pp.init.Constant(1.0), force_reinit=True)
    assert (model[0].weight.detach().numpy() == 1).all()
    with torch.device("meta"):
        lazy = nn.Sequential(nn.Embedding(6, 3, padding_idx=0), nn.Linear(3, 2))
    tree = pp.tree(lazy)
    tree.initialize(pp.init.Mixed([("0.*", pp.init.Load(pretrained))], default="xavier"), seed=0)
    tree.materialize("cpu")
    assert (lazy[0].weight.detach().numpy() == 7).all()


def test_declared_values_of_role_other_follow_force_reinit_and_are_undone_with_the_rest() -> None:
    """PReLU's slope and BatchNorm's batch counter (role other) get what torch declares under
    pp.init.Declared(): not over a value without force_reinit, and restored when a later fill fails."""
    class Undeclared(nn.Module):   # torch declares nothing for it: Declared's default fills it
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(2, 2))

    model = nn.Sequential(nn.PReLU(3), nn.BatchNorm1d(3), nn.Linear(3, 2), Undeclared())
    with torch.no_grad():
        model[0].weight.fill_(0.9)
    model[1].num_batches_tracked.fill_(5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(errors.AlreadyInitializedWarning):
        report = pp.tree(model).initialize(pp.init.Declared())
    assert report.initialized == [] and "0.weight" in report.skipped
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key

    def boom(shape: tuple, dtype: object) -> np.ndarray:
        raise RuntimeError("the last fill fails")

    with pytest.raises(errors.WriteFailedError):
        pp.tree(model).initialize(pp.init.Declared(default=boom), force_reinit=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    report = pp.tree(model).initialize(pp.init.Declared(default="zeros"), seed=0, force_reinit=True)
    assert report.initialized[:2] == ["0.weight", "1.weight"]
    assert torch.equal(model[0].weight, torch.full((3,), 0.25)) and model[1].num_batches_tracked.item() == 0


def test_a_compiled_model_has_the_plain_models_paths_and_values(tmp_path) -> None:
    """``torch.compile`` wraps a module as ``_orig_mod`` (in its ``state_dict`` keys, not in the architecture):
    the canonical paths leave the wrapper out, whole or nested, so files, transfers and seeded values are
    those of the plain model; native names keep it, so the compiled model's own ``state_dict`` file loads."""
    from safetensors.torch import save_file

    def plain() -> nn.Sequential:
        return nn.Sequential(nn.Linear(4, 3), nn.Sequential(nn.Linear(3, 3), nn.Tanh()), nn.Linear(3, 2))

    model = plain()
    compiled = torch.compile(plain(), backend="eager")
    nested = plain()
    nested[1] = torch.compile(nested[1], backend="eager")
    paths = pp.tree(model).paths()
    assert pp.tree(compiled).paths() == paths and pp.tree(nested).paths() == paths
    assert pp.tree(compiled)["1.0.weight"].native_name == "_orig_mod.1.0.weight"
    assert pp.tree(nested)[1][0]["weight"].native is nested[1]._orig_mod[0].weight
    for tree in (pp.tree(model), pp.tree(compiled), pp.tree(nested)):
        tree.initialize(pp.init.Xavier(), seed=3, force_reinit=True)
    for other in (compiled, nested):
        assert not pp.diff(model, other)

    pp.save(model, tmp_path / "plain.safetensors")
    fresh = torch.compile(plain(), backend="eager")
    pp.load(fresh, tmp_path / "plain.safetensors")
    x = torch.ones(2, 4)
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    save_file(compiled.state_dict(), str(tmp_path / "native.safetensors"))   # keys _orig_mod.*
    again = torch.compile(plain(), backend="eager")
    pp.load(again, tmp_path / "native.safetensors")
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    target = plain()
    pp.transfer(compiled, target, check=x.numpy())
    torch.testing.assert_close(target(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("write", ["set", "load_state", "item", "initialize", "load"])
def test_a_tensor_whose_elements_share_memory_is_refused_before_any_write(write: str, tmp_path) -> None:
    """``nn.Parameter(torch.zeros(1, 3).expand(4, 3))``: a write would keep only the last row written (torch's
    own copy_ refuses); polyparam refuses before the first write, naming the path and the fix."""
    class Expanded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = nn.Linear(3, 3)
            self.w = nn.Parameter(torch.zeros(1, 3).expand(4, 3))

    model = Expanded()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tree = pp.tree(model)
    value = np.arange(12, dtype=np.float32).reshape(4, 3)
    with pytest.raises(errors.WriteFailedError, match=r"'w'.*share memory.*contiguous\(\)"):
        if write == "set":
            tree["w"].set(value)
        elif write == "load_state":
            tree.load_state({**tree.state(copy=True), "w": value})
        elif write == "item":
            tree["w"][0, 0] = 5.0
        elif write == "initialize":
            tree.initialize(pp.init.Normal(1.0), seed=0, force_reinit=True)
        else:
            pp.save({"first.weight": np.ones((3, 3), np.float32), "first.bias": np.ones(3, np.float32),
                     "w": value}, tmp_path / "m.safetensors")
            pp.load(model, tmp_path / "m.safetensors")
    for key, kept in model.state_dict().items():
        assert torch.equal(kept, before[key]), key
    model.w = nn.Parameter(model.w.detach().contiguous())     # the fix the message gives
    pp.tree(model)["w"].set(value)
    np.testing.assert_array_equal(model.w.detach().numpy(), value)


@pytest.mark.parametrize("write", ["item", "initialize", "initialize one", "initialize large"])
def test_a_write_through_a_view_bumps_the_autograd_version(write: str) -> None:
    """An item write or an in-place initialize between forward and backward is refused by autograd, as torch's own
    ``weight[0, 0] = 5`` or ``nn.init.xavier_uniform_`` under ``no_grad`` is: backward would otherwise use the new
    values with the graph of the old ones, silently."""
    width = 1024 if write == "initialize large" else 8
    net = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1))
    tree = pp.tree(net)
    out = net(torch.ones(2, width)).sum()
    if write == "item":   # (the last layer's weight: the backward to the first layer's saved it)
        tree["2.weight"][0, 0] = 5.0
    elif write == "initialize one":
        tree["2.weight"].initialize(pp.init.Constant(0.5), force_reinit=True)
    else:
        tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    with pytest.raises(RuntimeError, match="inplace"):
        out.backward()


def test_an_item_write_through_a_tie_after_a_plain_to_empty_lands_on_the_recorded_values() -> None:
    """A tied tensor's fill is recorded on its first path; an item write through the other path (which
    counts as a write since ``to_empty``) applies that fill first, so the rest of the tensor is not left as
    ``to_empty`` made it, and the write is not undone at the first forward."""
    def tied() -> nn.Sequential:
        net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        net[1].weight = net[0].weight
        return net

    eager = pp.tree(tied())
    eager.initialize(pp.init.Xavier(), seed=7, force_reinit=True)
    with torch.device("meta"):
        net = tied()
    pp.tree(net).initialize(pp.init.Xavier(), seed=7)
    net.to_empty(device="cpu")
    net[1].weight = net[0].weight    # to_empty makes one tensor per use
    pp.tree(net)["1.weight"][0, 0] = 5.0
    net(torch.ones(2, 4))
    expected = eager["0.weight"].numpy().copy()
    expected[0, 0] = 5.0
    np.testing.assert_array_equal(net[0].weight.detach().numpy(), expected)


@pytest.mark.parametrize("width", [8, 1024])   # under 1 MiB: np.copyto; from 1 MiB: torch's parallel copy_
def test_load_state_writes_small_and_large_values_in_place_and_bumps_the_version(width: int) -> None:
    net = nn.Linear(width, width)
    weight, version = net.weight, net.weight._version
    state = {"weight": np.full((width, width), 0.5, np.float32), "bias": np.arange(width, dtype=np.float64)}
    pp.tree(net).load_state(state)
    assert net.weight is weight and net.weight._version > version
    assert (net.weight.detach().numpy() == 0.5).all()
    np.testing.assert_array_equal(net.bias.detach().numpy(), np.arange(width, dtype=np.float32))


def test_load_state_from_read_only_arrays_warns_nothing() -> None:
    net = nn.Linear(1024, 1024)
    state = {"weight": np.ones((1024, 1024), np.float32), "bias": np.ones(1024, np.float32)}
    for value in state.values():
        value.flags.writeable = False    # as a mapped checkpoint's
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pp.tree(net).load_state(state)
    assert net.weight.detach().numpy().sum() == 1024 * 1024


def test_grad_is_none_then_the_accumulated_gradient() -> None:
    net = mlp()
    tree = pp.tree(net)
    assert tree["0.weight"].grad() is None
    x = torch.rand(3, 4)
    net(x).sum().backward()
    net(x).sum().backward()  # accumulates, as torch does
    np.testing.assert_array_equal(tree["0.weight"].grad(), net[0].weight.grad.numpy())
    np.testing.assert_allclose(tree["2.bias"].grad(), [6.0])


def test_non_float_and_float64_parameters() -> None:
    net = nn.Linear(3, 2).double()
    tree = pp.tree(net)
    assert tree["weight"].dtype == np.float64
    tree["weight"].set(np.ones((2, 3), np.float32))  # float32 -> float64 is the same kind
    assert net.weight.dtype == torch.float64 and net.weight.sum().item() == 6


@pytest.mark.parametrize("bad", [np.zeros((4, 8), np.float32), np.zeros(8, np.int64).astype(np.complex64)],
                         ids=["transposed", "complex"])
def test_bad_set_and_load_state_change_nothing(bad: np.ndarray) -> None:
    net = mlp()
    tree = pp.tree(net)
    before = values(tree)
    with pytest.raises((errors.ShapeMismatchError, errors.DTypeMismatchError)) as info:
        tree["0.weight"].set(bad)
    assert info.value.path == "0.weight"
    state = {k: v + 1 for k, v in before.items()}
    state["2.bias"] = bad
    with pytest.raises((errors.ShapeMismatchError, errors.DTypeMismatchError)):
        tree.load_state(state)
    with pytest.raises(errors.ParameterNotFoundError) as info:
        tree["3.weight"]
    assert info.value.path == "3.weight"
    for path, value in values(tree).items():
        np.testing.assert_array_equal(value, before[path])


def test_load_state_matches_load_state_dict() -> None:
    a, b = mlp(), mlp()
    pp.tree(b).load_state(pp.tree(a).state(copy=True))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_read_only_and_strided_values_are_accepted() -> None:
    net = mlp()
    tree = pp.tree(net)
    value = np.arange(32, dtype=np.float32).reshape(4, 8).T  # non-contiguous
    value.flags.writeable = False
    tree["0.weight"].set(value)
    np.testing.assert_array_equal(net[0].weight.detach().numpy(), value)
    tree["0.bias"].set(np.arange(16, dtype=np.float32)[::-2])  # negative strides
    np.testing.assert_array_equal(net[0].bias.detach().numpy(), np.arange(16)[::-2])


# ---- devices and meta -----------------------------------------------------------------


def test_devices_and_moves() -> None:
    net = mlp()
    tree = pp.tree(net)
    assert {p.device for p in tree.parameters()} == {"cpu"}
    assert tree.to("meta") is tree
    assert {p.device for p in tree.parameters()} == {"meta"}
    assert {p.state for p in tree.parameters()} == {"uninitialized"}
    with pytest.raises(errors.UninitializedParameterError, match="materialize"):
        tree["0.weight"].numpy()
    with pytest.raises(errors.DeviceMismatchError) as info:
        tree.to("no_such_device")
    assert info.value.got == "no_such_device"


def test_moving_to_an_unavailable_device_is_refused() -> None:
    tree = pp.tree(mlp())
    with pytest.raises(errors.DeviceMismatchError):
        tree.to("cuda:99")  # no CUDA build here; no 100th GPU anywhere
    assert {p.device for p in tree.parameters()} == {"cpu"}


def test_ties_survive_moves_through_meta() -> None:
    """torch's .to('meta') makes one new Parameter per use; the tree restores pp.tie ties."""
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    tree = pp.tree(net)
    pp.tie(tree[0], tree[1])
    tree.to("meta")
    assert net[0].weight is net[1].weight and net[0].bias is net[1].bias
    tree.initialize(pp.init.Uniform(), seed=1)
    tree.materialize("cpu")
    assert net[0].weight is net[1].weight and net[0].weight.device.type == "cpu"
    assert [sorted(g.paths) for g in tree.ties()] == [["0.weight", "1.weight"], ["0.bias", "1.bias"]]


def meta_mlp() -> nn.Sequential:
    with torch.device("meta"):
        return mlp()


def test_meta_initialize_is_recorded_and_materialize_gives_the_eager_values() -> None:
    net = meta_mlp()
    tree = pp.tree(net)
    report = tree.initialize(pp.init.Xavier(), seed=7)
    assert report.deferred == tree.paths() and report.initialized == []
    assert tree["0.weight"].state == "uninitialized" and tree["0.weight"].shape == (8, 4)
    assert tree.materialize("cpu") is tree
    eager = pp.tree(mlp())
    eager.initialize(pp.init.Xavier(), seed=7, force_reinit=True)
    for path, value in eager.state().items():
        np.testing.assert_array_equal(tree[path].numpy(), value, err_msg=path)
    assert net[0].weight.device.type == "cpu" and isinstance(net[0].weight, nn.Parameter)
    out = net(torch.ones(1, 4))
    assert out.shape == (1, 1)


def test_meta_load_state_and_set_are_applied_at_materialize() -> None:
    source = pp.tree(mlp())
    net = meta_mlp()
    tree = pp.tree(net)
    tree.load_state(source.state(copy=True))
    tree["2.bias"].set(np.array([5.0], np.float32))
    tree.materialize()
    for path, value in source.state().items():
        if path != "2.bias":
            np.testing.assert_array_equal(tree[path].numpy(), value)
    np.testing.assert_array_equal(tree["2.bias"].numpy(), [5.0])


def test_meta_initialize_then_a_plain_to_empty_applies_at_the_first_forward_or_read() -> None:
    """module.to_empty instead of tree.materialize: the recorded values arrive at the first forward
    (or polyparam read), not arbitrary memory; a value written after to_empty wins."""
    eager = pp.tree(mlp())
    eager.initialize(pp.init.Xavier(), seed=7, force_reinit=True)
    x = torch.ones(2, 4)

    net = meta_mlp()
    pp.tree(net).initialize(pp.init.Xavier(), seed=7)
    net.to_empty(device="cpu")
    out = net(x)                                           # forward first
    torch.testing.assert_close(out, eager.native(x), rtol=0, atol=0)

    net = meta_mlp()
    pp.tree(net).initialize(pp.init.Xavier(), seed=7)
    net.to_empty(device="cpu")
    for path, value in pp.tree(net).state().items():      # read first
        np.testing.assert_array_equal(value, eager[path].numpy(), err_msg=path)

    loaded = mlp()
    net = meta_mlp()
    pp.tree(net).initialize(pp.init.Xavier(), seed=7)
    net.to_empty(device="cpu")
    net.load_state_dict(loaded.state_dict())               # written after to_empty: kept
    torch.testing.assert_close(net(x), loaded(x), rtol=0, atol=0)
    assert pp.tree(net)["0.weight"].numpy().tobytes() != eager["0.weight"].numpy().tobytes()


def test_an_item_write_after_a_plain_to_empty_survives_the_first_forward() -> None:
    """An item written through polyparam after module.to_empty lands on the recorded values (they are
    applied first) and stays: the first forward must not apply them over it."""
    eager = pp.tree(mlp())
    eager.initialize(pp.init.Xavier(), seed=7, force_reinit=True)
    net = meta_mlp()
    pp.tree(net).initialize(pp.init.Xavier(), seed=7)
    net.to_empty(device="cpu")
    weight = pp.tree(net)["0.weight"]
    weight[0, 0] = 5.0
    net(torch.ones(2, 4))
    expected = eager["0.weight"].numpy().copy()
    expected[0, 0] = 5.0
    np.testing.assert_array_equal(weight.numpy(), expected)


def test_meta_without_recorded_values_gets_torch_defaults() -> None:
    net = meta_mlp()
    tree = pp.tree(net)
    tree["0.weight"].initialize(pp.init.Constant(3))
    tree.materialize("cpu")
    np.testing.assert_array_equal(tree["0.weight"].numpy(), 3)
    bound = 1 / np.sqrt(8)  # torch's Linear default for the last layer
    w = tree["2.weight"].numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0


def test_meta_bad_input_is_refused_before_recording() -> None:
    tree = pp.tree(meta_mlp())
    with pytest.raises(errors.ShapeMismatchError):
        tree["0.weight"].set(np.zeros((4, 8), np.float32))
    with pytest.raises(errors.InitializerError):
        tree["0.bias"].initialize(pp.init.Xavier())


def test_tying_across_devices_is_refused() -> None:
    a, b = mlp(), meta_mlp()
    net = nn.Sequential(a, b)
    tree = pp.tree(net)
    with pytest.raises(errors.DeviceMismatchError):
        pp.tie(tree["0.0.weight"], tree["1.0.weight"])
    assert net[0][0].weight is not net[1][0].weight


# ---- Lazy modules ---------------------------------------------------------------------


def test_lazy_shapes_show_unknown_dimensions() -> None:
    net = nn.Sequential(nn.LazyConv2d(4, 3), nn.LazyBatchNorm2d(), nn.LazyConvTranspose2d(2, 3), nn.LazyLinear(5))
    tree = pp.tree(net)
    shapes = {path: p.shape for path, p in tree.items()}
    assert shapes["0.weight"] == (4, None, 3, 3) and shapes["0.bias"] == (4,)
    assert shapes["1.weight"] == (None,) and shapes["1.running_var"] == (None,)
    assert shapes["2.weight"] == (None, 2, 3, 3)
    assert shapes["3.weight"] == (5, None) and shapes["3.bias"] == (5,)
    assert {p.state for path, p in tree.items() if path != "1.num_batches_tracked"} == {"deferred"}
    assert tree["1.num_batches_tracked"].state == "initialized"   # a lazy BatchNorm's step counter is a plain 0
    with pytest.raises(errors.DeferredInitializationError):
        tree["3.bias"].set(np.zeros(5, np.float32))


def test_lazy_seeded_values_equal_the_eager_model() -> None:
    """Recorded initializers run when torch materializes; values equal an eager model's with the same seed."""
    lazy = nn.Sequential(nn.LazyLinear(16), nn.ReLU(), nn.LazyLinear(3))
    tree = pp.tree(lazy)
    report = tree.initialize(pp.init.Xavier(), seed=21)
    assert report.deferred == tree.paths()
    lazy(torch.rand(2, 6))
    eager = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    pp.tree(eager).initialize(pp.init.Xavier(), seed=21, force_reinit=True)
    for path, value in pp.tree(eager).state().items():
        np.testing.assert_array_equal(tree[path].numpy(), value, err_msg=path)
    assert type(lazy[0]) is nn.Linear and len(lazy[0]._forward_pre_hooks) == 0


def test_lazy_conv_and_batchnorm_initialize_at_first_forward() -> None:
    net = nn.Sequential(nn.LazyConv2d(4, 3), nn.LazyBatchNorm2d())
    tree = pp.tree(net)
    tree.initialize(pp.init.Constant(0.5))
    net.eval()  # a training-mode forward would update the running statistics right after the fill
    net(torch.rand(1, 2, 5, 5))
    assert tree["0.weight"].shape == (4, 2, 3, 3)
    np.testing.assert_array_equal(tree["0.weight"].numpy(), 0.5)
    np.testing.assert_array_equal(tree["1.weight"].numpy(), 1)
    np.testing.assert_array_equal(tree["1.running_mean"].numpy(), 0)


def test_set_after_materialization_wins_over_nothing_pending() -> None:
    """A value set after the first forward is not overwritten by a later recorded fill."""
    net = nn.Sequential(nn.LazyLinear(2))
    tree = pp.tree(net)
    tree.initialize(pp.init.Constant(1))
    net(torch.rand(1, 3))
    tree["0.weight"].set(np.full((2, 3), 9, np.float32))
    net(torch.rand(1, 3))
    np.testing.assert_array_equal(tree["0.weight"].numpy(), 9)


# ---- ties -----------------------------------------------------------------------------


def test_tie_after_construction_shares_the_nn_parameter() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    tree = pp.tree(net)
    groups = pp.tie(tree["0.weight"], tree["2.weight"])
    assert net[0].weight is net[2].weight
    assert [g.paths for g in groups] == [["0.weight", "2.weight"]]
    assert [g.paths for g in tree.ties()] == [["0.weight", "2.weight"]]
    assert list(dict(net.named_parameters())) == ["0.weight", "0.bias", "2.bias"]  # torch dedupes too


def test_tied_gradients_are_summed_in_a_real_backward() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    x = torch.rand(3, 4)
    tree = pp.tree(net)
    pp.tie(tree[0], tree[2])
    net(x).sum().backward()
    tied = tree["0.weight"].grad()
    # the same computation with two separate copies of the tied value
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    for layer in (a, b):
        layer.load_state_dict(net[0].state_dict())
    nn.Sequential(a, nn.Tanh(), b)(x).sum().backward()
    np.testing.assert_allclose(tied, (a.weight.grad + b.weight.grad).numpy(), rtol=1e-5, atol=1e-7)


def test_untie_of_a_reused_module_copies_it_at_that_path_only() -> None:
    shared = nn.Linear(8, 8)
    net = nn.Sequential(nn.Linear(4, 8), shared, shared)
    tree = pp.tree(net)
    weights = [g for g in tree.ties() if g.paths == ["1.weight", "2.weight"]][0]
    weights.untie()
    assert net[1] is shared and net[2] is not shared
    assert net[2].weight is not shared.weight and net[2].bias is shared.bias  # bias still tied
    assert [g.paths for g in tree.ties()] == [["1.bias", "2.bias"]]
    torch.testing.assert_close(net[2].weight, shared.weight)
    tree["2.weight"][0, 0] = 5
    assert shared.weight[0, 0].item() != 5


def test_tying_different_shapes_changes_nothing() -> None:
    net = mlp()
    tree = pp.tree(net)
    with pytest.raises(errors.TieError) as info:
        pp.tie(tree["0.weight"], tree["2.weight"])
    assert info.value.path == "2.weight"
    assert tree.ties() == [] and net[0].weight is not net[2].weight


def test_bfloat16_round_trips_through_ml_dtypes() -> None:
    """bfloat16 parameters read and write as ml_dtypes.bfloat16 arrays (zero-copy on CPU)."""
    net = nn.Linear(3, 2).to(torch.bfloat16)
    tree = pp.tree(net)
    p = tree["weight"]
    try:
        import ml_dtypes
    except ImportError:  # NumPy alone has no bfloat16: refused with the typed error
        with pytest.raises(errors.DTypeMismatchError):
            p.numpy()
        return
    assert p.dtype == np.dtype(ml_dtypes.bfloat16)
    p.set(np.full((2, 3), 1.5, np.float32).astype(ml_dtypes.bfloat16))
    assert torch.all(net.weight == 1.5)
    p[0, 0] = np.array(2, ml_dtypes.bfloat16)
    assert net.weight[0, 0].item() == 2
    assert np.shares_memory(tree.state()["weight"], net.weight.detach().view(torch.int16).numpy())


def test_a_bfloat16_state_dict_is_refused_with_the_fix_and_changes_nothing() -> None:
    """NumPy cannot read a torch bfloat16 tensor: load_state(model.state_dict()) names the parameter and
    the conversion, before any write."""
    net = nn.Linear(3, 2).to(torch.bfloat16)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    other = nn.Linear(3, 2).to(torch.bfloat16)
    with pytest.raises(errors.DTypeMismatchError, match=r"'weight'.*tensor\.float\(\)\.numpy\(\)") as info:
        pp.tree(net).load_state(other.state_dict())
    assert info.value.path == "weight"
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    pp.tree(net).load_state({k: v.float().numpy() for k, v in other.state_dict().items()})
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in net.state_dict().items())


def test_a_parameter_assigned_to_two_modules_is_a_detected_tie() -> None:
    """Tying by hand in torch (b.weight = a.weight) is found by identity."""
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    net[1].weight = net[0].weight
    tree = pp.tree(net)
    assert [g.paths for g in tree.ties()] == [["0.weight", "1.weight"]]
    assert tree.paths() == ["0.weight", "0.bias", "1.bias"]


def test_fast_items_and_state_equal_the_generic_ones() -> None:
    """TorchTree's items()/state() shortcuts return what ParameterCollection's would."""
    from polyparam.backend import ParameterCollection

    shared = nn.Linear(3, 3)
    net = nn.Sequential(nn.Conv1d(2, 3, 1), nn.BatchNorm1d(3), nn.Flatten(), shared, nn.ReLU(), shared)
    tree = pp.tree(net)
    for node in (tree, tree[3]):
        assert [(q, p._identity()) for q, p in node.items()] == \
            [(q, p._identity()) for q, p in ParameterCollection.items(node)]
        fast, generic = node.state(), ParameterCollection.state(node)
        assert list(fast) == list(generic)
        for key in fast:
            np.testing.assert_array_equal(fast[key], generic[key])
        assert not any(np.shares_memory(a, b) for a, b in zip(node.state(copy=True).values(), fast.values()))


def test_a_held_parameter_follows_weight_norm_applied_again() -> None:
    """A parameter object finds its layer once, and again when the module's hooks change: weight norm
    removed and applied on another axis (same attribute names) gives the new magnitude's axes."""
    m = nn.Sequential(nn.Linear(6, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # the old weight_norm is deprecated, still used
        nn.utils.weight_norm(m[0], dim=0)
        g = pp.tree(m)["0.weight_g"]
        assert (g.shape, g.axes) == ((5, 1), ("out", "other"))
        nn.utils.remove_weight_norm(m[0])
        nn.utils.weight_norm(m[0], dim=1)
    assert (g.shape, g.axes) == ((1, 6), ("other", "in"))
    assert g.axes == pp.tree(m)["0.weight_g"].axes


def test_a_layer_with_a_metaclass_of_its_own_is_read() -> None:
    """Roles are looked up by the layer type's identity, never its metaclass's __eq__ or __hash__."""
    class Meta(type(nn.Module)):
        def __eq__(cls, other: object) -> bool:   # without __hash__: the class cannot be a dict key
            return cls is other

    class Block(nn.Module, metaclass=Meta):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Parameter(torch.zeros(3, 4))

    tree = pp.tree(nn.Sequential(Block()))
    assert tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True).initialized == ["0.proj"]
    assert tree["0.proj"].role == "weight"


def test_a_transfer_only_reads_a_non_contiguous_source() -> None:
    """The overlap check looks at a channels_last source's memory without a writable view: the source's
    version counter stays, so a backward through it still runs, and no fill is applied on its behalf."""
    src = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    dst = nn.Conv2d(3, 4, 3)
    loss = src(torch.ones(1, 3, 5, 5)).sum()
    version = src.weight._version
    pp.transfer(src, dst)
    assert src.weight._version == version
    loss.backward()
    torch.testing.assert_close(dst.weight, src.weight, rtol=0, atol=0)


def test_a_quantized_module_is_refused_not_left_out(tmp_path) -> None:
    """``quantize_dynamic`` packs a Linear's weight, scale and zero point into objects ``state_dict`` writes itself,
    neither parameters nor buffers: a tree left them out, so ``pp.save`` wrote a file without them and ``pp.diff``
    called two different quantized models equal. Refused, naming the module; QAT's float modules stay readable."""
    import warnings

    torch.manual_seed(0)
    float_model = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch.ao.quantization's deprecation notices
        quantized = torch.ao.quantization.quantize_dynamic(float_model, {torch.nn.Linear}, dtype=torch.qint8)
    for call in (lambda: pp.tree(quantized).paths(), lambda: pp.tree(quantized).state(),
                 lambda: pp.save(quantized, tmp_path / "q.safetensors"), lambda: pp.diff(quantized, quantized)):
        with pytest.raises(errors.UnsupportedModelError, match="quantized Linear") as info:
            call()
        assert info.value.path == "2" and "quantize it after" in str(info.value)
    assert not (tmp_path / "q.safetensors").exists()
    assert pp.tree(quantized)[0].paths() == ["0.weight"]      # a float part alone is fine
    reference = torch.ao.nn.quantized.reference.Linear(       # fx's reference modules: a float weight, buffers
        4, 3, weight_qparams={"qscheme": torch.per_tensor_affine, "dtype": torch.quint8, "scale": 0.1,
                              "zero_point": 0})
    assert pp.tree(reference).paths() == ["weight", "bias", "weight_scale", "weight_zero_point", "weight_axis"]
    assert pp.tree(float_model).paths() == ["0.weight", "1.weight", "1.bias", "2.weight", "2.bias"]

"""Training-loop operations on real torch models: torch's own optimizers, clipping, casts, vectors, averages.

``tree.count()`` counts what ``state_dict`` holds: every parameter and persistent buffer (BatchNorm's
running statistics and step counter), tied tensors once; ``count(trainable=True)`` is torch's
``sum(p.numel() for p in m.parameters() if p.requires_grad)``.
"""

from __future__ import annotations

import copy
import math
import re
import socket
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import polyparam as pp  # noqa: E402
from polyparam import errors  # noqa: E402
from polyparam.backend import Parameter  # noqa: E402
from polyparam_torch._parameter import TorchParameter  # noqa: E402

ml_dtypes = pytest.importorskip("ml_dtypes")


def net() -> nn.Sequential:
    """Weights, biases, a norm's scale and shift, and BatchNorm buffers."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 6), nn.BatchNorm1d(6),
                         nn.Linear(6, 3))


def shared() -> nn.Sequential:
    """One Linear used twice: a tie."""
    torch.manual_seed(1)
    block = nn.Linear(8, 8)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), block, nn.ReLU(), block, nn.Linear(8, 2))


def x(n: int = 5, features: int = 4) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(3).uniform(-1, 1, (n, features)).astype(np.float32))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def floats(tree: pp.ParameterTree) -> pp.ParameterSelection:
    """Every tensor but BatchNorm's integer step counter."""
    return tree.select(where=lambda p: p.dtype.kind == "f")


def gpt2() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    torch.manual_seed(2)
    return transformers.GPT2LMHeadModel(config)


def tokens() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(4).integers(0, 50, (2, 10)))


# ---- freezing ----------------------------------------------------------------------------


@pytest.mark.parametrize("make_optimizer", [
    lambda params: torch.optim.SGD(params, lr=0.1),
    lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.1),
], ids=["SGD", "AdamW"])
def test_freeze_by_selection_holds_through_torchs_own_optimizer_step(make_optimizer) -> None:
    """Freeze "0.*" through polyparam; one step of torch's SGD / AdamW on sum(out): the rest moves."""
    m = net()
    tree = pp.tree(m)
    tree.select("0.*").freeze()
    assert not m[0].weight.requires_grad and not m[0].bias.requires_grad
    opt = make_optimizer(m.parameters())   # frozen tensors included: torch skips those without a gradient
    before = snapshot(m)
    m.eval()   # BatchNorm on running statistics: in training mode sum(out) has no gradient before it
    opt.zero_grad(set_to_none=True)
    m(x()).sum().backward()
    opt.step()
    after = snapshot(m)
    for key in before:
        if key.startswith("0."):
            assert torch.equal(before[key], after[key]), key
        elif after[key].is_floating_point() and not key.endswith(("running_mean", "running_var")):
            assert not torch.equal(before[key], after[key]), f"{key} did not move"


def test_trainable_reads_a_native_freeze_and_counts_agree_with_torch() -> None:
    m = net()
    tree = pp.tree(m)
    m[3].weight.requires_grad_(False)
    m[1].requires_grad_(False)
    assert not tree["3.weight"].trainable and tree["3.bias"].trainable
    assert not tree["1.weight"].trainable and not tree["1.bias"].trainable
    assert not tree["4.running_mean"].trainable
    params = sum(p.numel() for p in m.parameters())
    buffers = sum(b.numel() for b in m.buffers())
    trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert tree.count(trainable=True) == trainable
    assert tree.count(trainable=False) == params - trainable + buffers
    assert tree.count() == params + buffers == sum(v.numel() for v in m.state_dict().values())
    m[3].weight.requires_grad_(True)
    assert tree["3.weight"].trainable


def test_counts_count_a_tie_once_as_torch_does() -> None:
    m = shared()
    tree = pp.tree(m)
    assert tree.count() == sum(p.numel() for p in m.parameters())
    tree["2.weight"].trainable = False
    assert not m[4].weight.requires_grad
    assert tree.count(trainable=True) == sum(p.numel() for p in m.parameters() if p.requires_grad)


# ---- optimizer groups --------------------------------------------------------------------


def test_param_groups_hold_the_modules_parameter_objects_once() -> None:
    m = shared()
    m[0].weight.requires_grad_(False)
    groups = pp.param_groups(m, [("role:bias", {"weight_decay": 0})], default={"weight_decay": 0.1})
    listed = [p for g in groups for p in g["params"]]
    assert all(type(p) is nn.Parameter for p in listed)
    assert len({id(p) for p in listed}) == len(listed)
    assert {id(p) for p in listed} == {id(p) for p in m.parameters() if p.requires_grad}
    assert [g["weight_decay"] for g in groups] == [0, 0.1]
    assert all(p.ndim == 1 for p in groups[0]["params"])


def test_param_groups_rules_match_a_ties_other_paths_as_select_does() -> None:
    """A tied parameter is listed once, under its first path; a rule naming any of its paths chooses it."""
    m = shared()   # the block is both 2.* and 4.*
    tree = pp.tree(m)
    assert {path for path, _ in tree.select("4.*").items()} == {"4.weight", "4.bias"}
    for rule in ("4.*", re.compile(r"^4\.")):
        groups = pp.param_groups(m, [(rule, {"lr": 0.5})], default={"lr": 0.1})
        assert [g["lr"] for g in groups] == [0.5, 0.1]
        assert {id(p) for p in groups[0]["params"]} == {id(m[4].weight), id(m[4].bias)}
        assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
    first = pp.param_groups(m, [("2.bias", {"lr": 0.2}), ("4.*", {"lr": 0.5})])   # the first rule still wins
    assert [(g.get("lr"), len(g["params"])) for g in first] == [(0.2, 1), (0.5, 1), (None, 4)]
    with pytest.warns(errors.PolyparamWarning, match=r"rule '4\.bias' chose no parameter: what it matches "
                                                     r"\('2\.bias'\) an earlier rule took"):
        pp.param_groups(m, [("2.*", {"lr": 0.2}), ("4.bias", {"lr": 0.5})])


def test_adamw_groups_without_decay_leave_biases_and_scales_and_shrink_weights() -> None:
    """Zero gradients: AdamW changes a parameter only by decay, which is param * (1 - lr * wd)."""
    m = net()
    tree = pp.tree(m)
    floats(tree).initialize(pp.init.Normal(1.0), seed=0, force_reinit=True)   # nonzero biases and shifts
    lr, wd = 0.01, 0.1
    groups = pp.param_groups(tree, [("role:bias", {"weight_decay": 0}), ("role:scale", {"weight_decay": 0})],
                             default={"weight_decay": wd})
    opt = torch.optim.AdamW(groups, lr=lr)
    m.train()
    m(x()).sum().backward()
    tree.zero_grads()
    before = {path: p.numpy().copy() for path, p in tree.items()}
    opt.step()
    shrink = 1 - lr * wd
    for path, p in tree.items():
        if p.kind != "parameter":
            continue
        after = p.numpy()
        if p.role in ("bias", "scale"):
            np.testing.assert_array_equal(after, before[path], err_msg=path)
        else:   # weights and the norm's shift (role "shift") are in the default group
            expected = torch.from_numpy(before[path]).mul(shrink).numpy()   # torch's own float32 product
            np.testing.assert_array_equal(after, expected, err_msg=path)
            np.testing.assert_allclose(after, before[path].astype(np.float64) * shrink, rtol=1e-7)


# ---- gradients ---------------------------------------------------------------------------


def test_clip_grads_agrees_with_clip_grad_norm() -> None:
    m = net()
    twin = copy.deepcopy(m)
    for model in (m, twin):
        model.eval()
        (100 * model(x()).sum()).backward()
    tree = pp.tree(m)
    expected = float(torch.nn.utils.clip_grad_norm_(twin.parameters(), 1.0))
    assert expected > 1
    assert tree.grad_norm() == pytest.approx(expected, rel=1e-5)
    assert tree.clip_grads(1.0) == pytest.approx(expected, rel=1e-5)
    assert tree.grad_norm() <= 1.0 + 1e-6
    for (name, a), b in zip(m.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-8, msg=name)
    grads = {id(p.grad) for p in m.parameters()}
    tree.zero_grads()
    for name, p in m.named_parameters():
        assert p.grad is not None and not torch.any(p.grad), name
    assert {id(p.grad) for p in m.parameters()} == grads   # written in place: torch's gradient tensors stay
    assert tree.grad_norm() == 0.0


def test_gradient_writes_on_a_tie_write_one_tensor_and_none_clears() -> None:
    m = shared()
    m(x()).sum().backward()
    tree = pp.tree(m)
    g = m[2].weight.grad.clone()
    p = tree["4.weight"]
    p._write_grad(np.full((8, 8), 2.0, np.float32))
    assert m[2].weight.grad is m[4].weight.grad and torch.all(m[2].weight.grad == 2.0)
    assert not torch.equal(g, m[2].weight.grad)
    p._write_grad(None)
    assert m[2].weight.grad is None
    p._write_grad(np.ones((8, 8), np.float32))   # no gradient yet: a new one, torch's dtype and device
    assert m[2].weight.grad.dtype == torch.float32 and torch.all(m[2].weight.grad == 1.0)
    with pytest.raises(errors.ShapeMismatchError, match="4.weight"):
        p._write_grad(np.ones((8, 4), np.float32))


def test_a_sparse_gradient_stays_sparse() -> None:
    m = nn.Embedding(10, 3, sparse=True)
    m(torch.tensor([1, 2, 2])).sum().backward()
    assert m.weight.grad.is_sparse
    tree = pp.tree(m)
    norm = tree.clip_grads(0.5)
    assert norm == pytest.approx(math.sqrt(3 * (1 + 4)), rel=1e-6)
    assert m.weight.grad.is_sparse and tree.grad_norm() == pytest.approx(0.5, rel=1e-5)
    tree.zero_grads()
    assert m.weight.grad.is_sparse and not torch.any(m.weight.grad.to_dense())


def test_gradient_writes_refuse_a_meta_parameter() -> None:
    with torch.device("meta"):
        m = nn.Linear(2, 2)
    with pytest.raises(errors.UninitializedParameterError, match="weight"):
        pp.tree(m)["weight"]._write_grad(np.zeros((2, 2), np.float32))


def test_grad_norm_is_zero_without_gradients() -> None:
    assert pp.tree(net()).grad_norm() == 0.0


# ---- precision ---------------------------------------------------------------------------


def test_bf16_round_trip_keeps_ties_parameter_objects_and_the_optimizers_references() -> None:
    m = gpt2()
    m.eval()
    tree = pp.tree(m)
    ids = [id(p) for p in m.parameters()]
    opt = torch.optim.SGD(m.parameters(), lr=0.1)   # made before the cast
    with torch.no_grad():
        reference = m(tokens()).logits.float().numpy()
    tree.cast("bfloat16")
    assert {t.dtype for t in m.parameters()} == {torch.bfloat16}
    assert {p.dtype.name for p in tree.parameters()} == {"bfloat16"}
    assert m.lm_head.weight is m.transformer.wte.weight
    assert [id(p) for p in m.parameters()] == ids
    with torch.no_grad():
        low = m(tokens()).logits.float().numpy()
    np.testing.assert_allclose(low, reference, rtol=0, atol=0.05 * float(np.abs(reference).max()))
    tree.cast(np.float32)
    assert {t.dtype for t in m.parameters()} == {torch.float32}
    assert m.lm_head.weight is m.transformer.wte.weight
    assert [id(p) for p in m.parameters()] == ids
    assert [g.paths for g in tree.ties()] == [["transformer.wte.weight", "lm_head.weight"]]
    with torch.no_grad():
        back = m(tokens()).logits.numpy()
    np.testing.assert_allclose(back, reference, rtol=0, atol=0.05 * float(np.abs(reference).max()))
    before = snapshot(m)
    m(tokens()).logits.sum().backward()
    opt.step()   # the optimizer made before both casts steps the same Parameter objects
    assert all(p is q for p, q in zip(opt.param_groups[0]["params"], m.parameters()))
    assert not torch.equal(before["transformer.wte.weight"], m.transformer.wte.weight)


def test_an_optimizer_made_before_a_bf16_cast_steps_in_bf16() -> None:
    m = net()
    opt = torch.optim.AdamW(m.parameters(), lr=0.01)
    tree = pp.tree(m)
    m(x()).sum().backward()   # a float32 gradient, cast with its parameter
    tree.cast("bfloat16")
    assert all(p.grad.dtype == torch.bfloat16 for p in m.parameters())
    assert m[4].running_mean.dtype == torch.bfloat16 and m[4].num_batches_tracked.dtype == torch.int64
    before = snapshot(m)
    opt.step()
    assert all(p.dtype == torch.bfloat16 for p in m.parameters())
    assert not torch.equal(before["0.weight"], m[0].weight)


def test_cast_where_selects_and_leaves_the_rest() -> None:
    m = net()
    pp.tree(m).cast("float16", where=lambda p: p.path.startswith("0."))
    assert m[0].weight.dtype == torch.float16 and m[3].weight.dtype == torch.float32


def test_a_bf16_safetensors_file_loads_into_an_fp32_model_with_cast(tmp_path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    source = net()
    pp.tree(source).cast("bfloat16")
    ours, theirs = str(tmp_path / "ours.safetensors"), str(tmp_path / "theirs.safetensors")
    pp.save(source, ours)
    safetensors_torch.save_file({k: v.contiguous() for k, v in source.state_dict().items()}, theirs)
    for file in (ours, theirs):
        target = net()
        floats(pp.tree(target)).initialize(pp.init.Zero(), force_reinit=True)
        with pytest.raises(errors.DTypeMismatchError):
            pp.load(target, file)
        pp.load(target, file, cast=True)
        for key, value in source.state_dict().items():
            got = target.state_dict()[key]
            assert got.dtype == (torch.int64 if key.endswith("num_batches_tracked") else torch.float32), key
            assert torch.equal(got, value.to(got.dtype)), key


@pytest.fixture
def mesh():
    """A one-process gloo group on loopback and its device mesh; destroyed afterwards."""
    dist = torch.distributed
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    from torch.distributed.device_mesh import init_device_mesh

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def test_sharded_parameters_take_gradient_writes_and_refuse_a_cast(mesh) -> None:
    """DTensor (FSDP2) gradients are clipped and zeroed in their shards; a cast refuses and changes nothing."""
    from torch.distributed.tensor import Shard, distribute_tensor

    twin = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    m = copy.deepcopy(twin)
    m[2].weight = nn.Parameter(distribute_tensor(m[2].weight.detach(), mesh, [Shard(0)]))
    (100 * twin(x()).sum()).backward()
    for a, b in zip(m.parameters(), twin.parameters()):
        a.grad = distribute_tensor(b.grad.clone(), mesh, [Shard(0)]) if a is m[2].weight else b.grad.clone()
    tree = pp.tree(m)
    first = [m[0].weight.detach().clone(), m[0].bias.detach().clone()]
    expected = float(torch.nn.utils.clip_grad_norm_(twin.parameters(), 1.0))
    assert tree.clip_grads(1.0) == pytest.approx(expected, rel=1e-5)
    grad = m[2].weight.grad
    torch.testing.assert_close(grad.full_tensor(), twin[2].weight.grad, rtol=1e-5, atol=1e-8)
    tree.zero_grads()
    assert m[2].weight.grad is grad and not torch.any(grad.full_tensor())
    with pytest.raises(errors.UnsupportedModelError, match="2.weight.*MixedPrecisionPolicy"):
        tree.cast("bfloat16")
    assert {t.dtype for t in m.parameters()} == {torch.float32}
    assert torch.equal(first[0], m[0].weight) and torch.equal(first[1], m[0].bias)   # cast back: all or nothing


# ---- whole-tree values -------------------------------------------------------------------


def test_vector_length_round_trip_and_parameters_to_vector() -> None:
    m = net()
    tree = pp.tree(m)
    v = tree.vector()
    assert v.shape == (tree.count(),) and len(v) == tree.count()
    tree.load_vector(np.zeros_like(v))
    assert not any(torch.any(t) for t in m.parameters())
    tree.load_vector(v)
    assert np.array_equal(tree.vector().view(np.uint8), v.view(np.uint8))   # bitwise
    no_buffers = shared()
    expected = nn.utils.parameters_to_vector(no_buffers.parameters()).detach().numpy()
    np.testing.assert_array_equal(pp.tree(no_buffers).vector(), expected)


def test_vector_of_bfloat16_with_other_dtypes_holds_every_value() -> None:
    """NumPy cannot promote ml_dtypes' bfloat16 with float16 or integers: the vector takes the smallest
    NumPy dtype that holds them all exactly (bfloat16 as float32), and loads back bit for bit."""
    m = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    m.train()
    m(torch.randn(3, 4))                                     # a counter of 1
    tree = pp.tree(m)
    tree.cast("bfloat16")                                    # num_batches_tracked stays int64
    v = tree.vector()
    assert v.dtype == np.float64 and len(v) == tree.count()
    before = {k: t.clone() for k, t in m.state_dict().items()}
    expected = np.concatenate([t.float().reshape(-1).numpy() for t in m.state_dict().values()])
    np.testing.assert_array_equal(v, expected)
    tree.load_vector(v)
    assert all(torch.equal(t, before[k]) for k, t in m.state_dict().items())
    mixed = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    pp.tree(mixed).cast("bfloat16", where=lambda p: p.path.startswith("0."))
    pp.tree(mixed).cast("float16", where=lambda p: p.path.startswith("1."))
    assert pp.tree(mixed).vector().dtype == np.float32


def test_a_soup_with_a_source_lacking_the_counter_takes_the_last_source_that_has_it() -> None:
    """A soup of a torch model (BatchNorm counter 3) and a model of a framework without the counter (here a
    NumPy tree of the same canonical paths): the counter is the last source's that has one, not dst's own."""
    dst, src = net(), net()
    src.train()
    for _ in range(3):
        src(x())
    other = {path: v for path, v in pp.tree(src).state(copy=True).items() if not path.endswith("num_batches_tracked")}
    pp.average(dst, src, pp.tree(other))
    assert int(dst[4].num_batches_tracked) == 3
    pp.average(dst, pp.tree(other), net())
    assert int(dst[4].num_batches_tracked) == 0      # the last source with a counter: net()'s, 0


def test_average_of_complex_weights_keeps_the_imaginary_part() -> None:
    dst, a, b = (nn.Linear(2, 2, dtype=torch.complex64) for _ in range(3))
    with torch.no_grad():
        for m, value in ((dst, 0), (a, 1 + 2j), (b, 3 + 4j)):
            m.weight.fill_(value)
            m.bias.fill_(value)
    pp.average(dst, a, b)
    assert torch.all(dst.weight == 2 + 3j) and torch.all(dst.bias == 2 + 3j)
    pp.average(dst, a, decay=0.5)
    assert torch.all(dst.weight == 1.5 + 2.5j)


def test_average_ema_and_mean_of_three_models() -> None:
    models = [net() for _ in range(4)]
    for i, m in enumerate(models):
        floats(pp.tree(m)).initialize(pp.init.Normal(1.0), seed=i, force_reinit=True)
        m.train()
        m(x())   # BatchNorm statistics and counters differ
    dst, a, b, c = models
    start = snapshot(dst)
    pp.average(dst, a, decay=1.0)
    assert all(torch.equal(start[k], v) for k, v in dst.state_dict().items())
    pp.average(dst, a, decay=0.0)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in dst.state_dict().items())
    pp.average(dst, a, b, c)
    for key, value in dst.state_dict().items():
        stack = np.stack([m.state_dict()[key].numpy() for m in (a, b, c)])
        if value.is_floating_point():
            np.testing.assert_allclose(value.numpy(), stack.astype(np.float64).mean(axis=0), rtol=1e-6, atol=1e-7,
                                       err_msg=key)
        else:
            assert np.array_equal(value.numpy(), stack[-1]), key
    tied, other = shared(), shared()
    pp.tree(other).initialize(pp.init.Normal(1.0), seed=9, force_reinit=True)
    pp.average(tied, other, decay=0.5)
    assert tied[2] is tied[4]


def test_average_a_torch_model_with_a_keras_model_of_the_same_architecture() -> None:
    keras = pytest.importorskip("keras")
    k = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.ReLU(), keras.layers.Dense(1)])
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    tm, tk = pp.tree(m), pp.tree(k)
    tk.initialize(pp.init.Normal(1.0), seed=5, force_reinit=True)
    start = tm.vector().astype(np.float64)
    pp.average(m, k, decay=0.25)
    np.testing.assert_allclose(tm.vector(), 0.25 * start + 0.75 * tk.vector(), rtol=1e-6, atol=1e-7)
    pp.average(m, k, decay=0.0)
    np.testing.assert_array_equal(tm.vector(), tk.vector())
    np.testing.assert_array_equal(m[0].weight.detach().numpy(), k.layers[0].kernel.numpy().T)
    y = x().numpy()
    np.testing.assert_allclose(m(x()).detach().numpy(), np.asarray(k(y)), rtol=1e-5, atol=1e-6)


# ---- bulk hooks: torch's one-call paths against the per-parameter defaults -----------------------


def mixed_precision() -> nn.Sequential:
    """float32, bfloat16 and float64 layers (three foreach groups), a tie, BatchNorm buffers; random gradients."""
    torch.manual_seed(5)
    block = nn.Linear(8, 8)
    m = nn.Sequential(nn.Linear(4, 8), block, nn.Linear(8, 8).to(torch.bfloat16), block,
                      nn.Linear(8, 3).to(torch.float64), nn.BatchNorm1d(3))
    for p in m.parameters():
        p.grad = torch.randn_like(p) * 10
    return m


def twin_of(m: nn.Module) -> nn.Module:
    """A deep copy with copies of the gradients too (``copy.deepcopy`` leaves them out)."""
    twin = copy.deepcopy(m)
    for a, b in zip(m.parameters(), twin.parameters()):
        b.grad = None if a.grad is None else a.grad.clone()
    return twin


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf], ids=["l2", "l1", "l3", "inf"])
def test_bulk_and_per_parameter_paths_give_the_same_norm_clip_and_zero(norm_type: float) -> None:
    """TorchParameter's foreach hooks against Parameter's defaults (through _grad/_write_grad) on a twin."""
    m = mixed_precision()
    twin = twin_of(m)
    tree, params = pp.tree(m), pp.tree(twin).parameters()
    norm = Parameter._grad_norm_many(params, norm_type)
    assert tree.grad_norm(norm_type) == pytest.approx(norm, rel=1e-5)
    limit = norm / 3
    assert tree.clip_grads(limit, norm_type) == pytest.approx(Parameter._clip_grads_many(params, limit, norm_type),
                                                              rel=1e-5)
    for (name, a), b in zip(m.named_parameters(), twin.parameters()):
        assert a.grad.dtype == b.grad.dtype == a.dtype, name
        tolerance = 1e-2 if a.dtype == torch.bfloat16 else 1e-5   # the default rounds the factor to bfloat16
        torch.testing.assert_close(a.grad, b.grad, rtol=tolerance, atol=1e-6, msg=name)
    assert tree.grad_norm(norm_type) == pytest.approx(limit, rel=1e-3)
    tree.zero_grads()
    Parameter._zero_grads_many(params)
    for a, b in zip(m.parameters(), twin.parameters()):
        assert not torch.any(a.grad) and not torch.any(b.grad) and a.grad.dtype == b.grad.dtype


def test_gradients_of_a_tie_count_once_and_clip_in_place() -> None:
    m = shared()
    twin = copy.deepcopy(m)
    for model in (m, twin):
        (100 * model(x()).sum()).backward()
    tree = pp.tree(m)
    expected = float(torch.nn.utils.clip_grad_norm_(twin.parameters(), 1.0))   # parameters() lists a tie once
    storage = [(id(p.grad), p.grad.data_ptr()) for p in m.parameters()]
    assert tree.clip_grads(1.0) == pytest.approx(expected, rel=1e-6)
    assert [(id(p.grad), p.grad.data_ptr()) for p in m.parameters()] == storage   # foreach_mul_: the same tensors
    for (name, a), b in zip(m.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-9, msg=name)


def test_a_sparse_gradient_among_dense_ones_takes_the_per_parameter_path() -> None:
    """(torch's own clip_grad_norm_ refuses this mix: its foreach kernels take no sparse tensor.)"""
    m = nn.Sequential(nn.Embedding(10, 3, sparse=True), nn.Linear(3, 2))
    m(torch.tensor([1, 2, 2])).sum().backward()
    grads = [p.grad.to_dense().double() for p in m.parameters()]
    expected = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    dense = m[1].weight.grad
    tree = pp.tree(m)
    assert tree.grad_norm() == pytest.approx(expected, rel=1e-6)
    assert tree.clip_grads(0.5) == pytest.approx(expected, rel=1e-6)
    assert m[0].weight.grad.is_sparse and m[1].weight.grad is dense
    factor = 0.5 / (expected + 1e-6)
    for p, g in zip(m.parameters(), grads):
        torch.testing.assert_close(p.grad.to_dense().double(), g * factor, rtol=1e-6, atol=1e-9)
    tree.zero_grads()
    assert m[0].weight.grad.is_sparse and not any(torch.any(p.grad.to_dense()) for p in m.parameters())


class _OtherClass(TorchParameter):
    """A second parameter class in one collection: the core calls each class's bulk hooks apart."""


class _RefusesPartWay(TorchParameter):
    """Bulk and per-parameter hooks that change one tensor and then refuse, as a failing backend would."""

    @staticmethod
    def _set_trainable_many(params: list[Parameter], value: bool, /) -> None:
        params[0]._set_trainable(value)
        raise errors.UsageError("refused part-way", path=params[0].path)

    def _write_grad(self, array: np.ndarray | None, /) -> None:
        raise errors.UnsupportedModelError("refused", path=self.path)

    def _cast(self, dtype: np.dtype, /) -> None:
        raise errors.UnsupportedModelError("refused", path=self.path)


def two_classes(m: nn.Module, last: type[TorchParameter]) -> pp.ParameterSelection:
    """A selection of every tensor of ``m`` whose last layer's parameters are of class ``last``."""
    chosen = pp.tree(m).select()
    for p in chosen:
        if p.path.startswith(f"{len(m) - 1}."):
            p.__class__ = last
    return chosen


def test_several_parameter_classes_give_what_one_gives() -> None:
    m = mixed_precision()
    twin = twin_of(m)
    one, several = pp.tree(twin), two_classes(m, _OtherClass)
    assert several.grad_norm() == pytest.approx(one.grad_norm(), rel=1e-6)
    assert several.clip_grads(1.0) == pytest.approx(one.clip_grads(1.0), rel=1e-6)
    for a, b in zip(m.parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-2 if a.dtype == torch.bfloat16 else 1e-5, atol=1e-6)
    several.freeze()
    assert not any(p.requires_grad for p in m.parameters())
    several.unfreeze()
    assert all(p.requires_grad for p in m.parameters())
    several.zero_grads()
    assert not any(torch.any(p.grad) for p in m.parameters())


def test_a_bulk_hook_that_refuses_part_way_changes_no_flag() -> None:
    m = net()
    chosen = two_classes(m, _RefusesPartWay)
    with pytest.raises(errors.UsageError, match="part-way"):
        chosen.freeze()
    assert all(p.requires_grad for p in m.parameters())
    m.requires_grad_(False)
    with pytest.raises(errors.UsageError, match="part-way"):
        chosen.unfreeze()
    assert not any(p.requires_grad for p in m.parameters())


def test_gradient_writes_that_refuse_part_way_change_no_gradient() -> None:
    m = mixed_precision()
    before = {name: p.grad.clone() for name, p in m.named_parameters()}
    chosen = two_classes(m, _RefusesPartWay)
    for change in (lambda: chosen.clip_grads(1e-3), chosen.zero_grads):
        with pytest.raises(errors.UnsupportedModelError, match="refused"):
            change()
        for name, p in m.named_parameters():
            assert torch.equal(p.grad, before[name]), name


def test_a_cast_that_fails_part_way_puts_back_every_dtype_value_and_object() -> None:
    """torch's bulk cast undoes from the storage it kept (narrowing) or by casting back (widening)."""

    class Refuses(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if func is torch.Tensor.to:
                raise RuntimeError("this tensor type cannot change its dtype")
            return super().__torch_function__(func, types, args, kwargs or {})

    for start, target in ((torch.float32, "bfloat16"), (torch.bfloat16, "float32")):
        m = net().to(start)
        m(x().to(start)).sum().backward()
        m[5].register_buffer("stat", torch.ones(3, dtype=start).as_subclass(Refuses))
        before = snapshot(m)
        objects = [(p, p.data.data_ptr(), p.grad) for p in m.parameters()]
        with pytest.raises(errors.UnsupportedModelError, match="cannot change its dtype") as caught:
            pp.tree(m).cast(target)
        assert caught.value.path == "5.stat" and isinstance(caught.value.__cause__, RuntimeError)
        after = snapshot(m)
        for key, value in before.items():
            assert after[key].dtype == value.dtype and torch.equal(after[key], value), key
        for (p, ptr, g), q in zip(objects, m.parameters()):
            assert p is q and p.dtype == start and p.grad.dtype == start
            assert p.grad is g or torch.equal(p.grad, g)
            if start == torch.float32:   # narrowing: the very storage comes back, no copy was made
                assert p.data.data_ptr() == ptr


def test_roles_read_in_bulk_equal_each_parameters_own() -> None:
    """The memo of TorchParameter._roles_many across module types, norms, weight norm and parametrizations."""

    class LayerScale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gamma = nn.Parameter(torch.ones(4, 1, 1))
            self.other = nn.Parameter(torch.ones(4, 2, 1))

    m = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), LayerScale(),
                      nn.utils.parametrizations.weight_norm(nn.Linear(4, 4)), nn.Embedding(5, 4),
                      nn.MultiheadAttention(4, 2, add_bias_kv=True), nn.Linear(4, 4), nn.LazyLinear(3))
    nn.utils.parametrizations.orthogonal(m[8], "weight")
    tree = pp.tree(m)
    assert TorchParameter._roles_many(tree.parameters()) == [p.role for p in tree.parameters()]
    chosen = tree.select()
    chosen["0.bias"].role = "other"
    assert TorchParameter._roles_many(chosen.parameters())[1] == "other"


def test_unfreeze_refuses_an_integer_parameter_before_changing_a_flag() -> None:
    m = net()
    m[0].register_parameter("steps", nn.Parameter(torch.zeros(2, dtype=torch.int64), requires_grad=False))
    m.requires_grad_(False)
    with pytest.raises(errors.UsageError, match="0.steps") as caught:
        pp.tree(m).unfreeze()
    assert caught.value.path == "0.steps"
    assert not any(p.requires_grad for p in m.parameters())
    with pytest.raises(errors.UsageError, match="0.steps"):
        pp.tree(m)["0.steps"].trainable = True     # one parameter's setter: the same typed refusal
    pp.tree(m).select(where=lambda p: p.dtype.kind == "f").unfreeze()
    assert sum(p.requires_grad for p in m.parameters()) == len(list(m.parameters())) - 1


def test_a_lazy_module_freezes_before_its_first_forward() -> None:
    m = nn.Sequential(nn.LazyLinear(3), nn.Linear(3, 2))
    tree = pp.tree(m)
    tree.select("0.*").freeze()
    assert not tree["0.weight"].trainable
    tree["0.bias"].trainable = True      # one Lazy parameter's setter, both ways
    tree["0.bias"].trainable = False
    m(torch.ones(2, 5))
    assert not m[0].weight.requires_grad and not m[0].bias.requires_grad and m[1].weight.requires_grad


def test_values_read_in_bulk_equal_each_parameters_own() -> None:
    """TorchParameter._read_many: views of plain CPU tensors, fills recorded on meta run first, the rest as numpy()."""
    with torch.device("meta"):
        m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    m[2] = m[1]   # a tie
    pp.tree(m).initialize(pp.init.Normal(1.0), seed=3)   # recorded: the tensors have no storage yet
    m.to_empty(device="cpu")   # torch's own: the recorded fills run at the first read
    m[0].to(torch.bfloat16)
    m[1].register_buffer("flipped", torch._neg_view(torch.arange(3.0)))   # a negated view: not zero-copy
    tree = pp.tree(m)
    bulk = TorchParameter._read_many(tree.parameters())
    each = [p.numpy() for p in pp.tree(m).parameters()]
    assert [v.dtype for v in bulk] == [v.dtype for v in each]
    assert all(np.array_equal(a.view(np.uint8), b.view(np.uint8)) for a, b in zip(bulk, each))   # bitwise
    assert np.any(bulk[0].astype(np.float32)) and np.array_equal(bulk[-1], -np.arange(3.0, dtype=np.float32))
    assert np.shares_memory(bulk[2], m[1].weight.detach().numpy())
    np.testing.assert_array_equal(tree.vector(), np.concatenate([v.astype(np.float32).ravel() for v in each]))


# ---- trial findings: vectors into counters, averages into ties, casts of pinned gradient dtypes -------


def test_load_vector_refuses_values_a_counter_cannot_hold() -> None:
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    tree = pp.tree(m)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    v = tree.vector()                      # float64: it holds the int64 counter
    paths = [path for path, _ in tree.items()]
    counter = sum(p.size for path, p in tree.items()[:paths.index("1.num_batches_tracked")])   # its offset
    for bad in (2.5, np.nan, 2.0 ** 63):
        w = v.copy()
        w[counter] = bad
        with pytest.raises(errors.DTypeMismatchError, match="1.num_batches_tracked") as caught:
            tree.load_vector(w)
        assert caught.value.path == "1.num_batches_tracked"
        assert all(torch.equal(m.state_dict()[k], before[k]) for k in before)
    w = v.copy()
    w[counter] = 7.0                       # a whole number loads
    tree.load_vector(w)
    assert int(m[1].num_batches_tracked) == 7


def test_average_into_a_tie_refuses_a_source_whose_copies_differ() -> None:
    def tied() -> nn.Sequential:
        m = nn.Sequential(nn.Embedding(6, 4), nn.Linear(4, 6, bias=False))
        m[1].weight = m[0].weight
        return m

    dst, untied = tied(), nn.Sequential(nn.Embedding(6, 4), nn.Linear(4, 6, bias=False))
    before = dst[0].weight.detach().clone()
    for call in (lambda: pp.average(dst, untied, decay=0.0), lambda: pp.average(dst, untied, untied)):
        with pytest.raises(errors.TieMismatchError, match="0.weight"):
            call()
        assert torch.equal(dst[0].weight, before) and dst[1].weight is dst[0].weight
    same = nn.Sequential(nn.Embedding(6, 4), nn.Linear(4, 6, bias=False))
    with torch.no_grad():
        same[1].weight.copy_(same[0].weight)   # untied, but one value: fine
    pp.average(dst, same, decay=0.0)
    assert torch.equal(dst[0].weight, same[0].weight)


def test_an_ema_step_with_decay_one_changes_nothing_counters_included() -> None:
    ema, model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    model.train()
    model(torch.ones(5, 3))                # the source's counter moves on
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    pp.average(ema, model, decay=1.0)
    assert all(torch.equal(ema.state_dict()[k], before[k]) for k in before)


def test_a_cast_keeps_the_gradient_object_as_model_to_does() -> None:
    m = nn.Linear(3, 2)
    m(torch.ones(1, 3)).sum().backward()
    grad = m.weight.grad
    pp.tree(m).cast("bfloat16")
    assert m.weight.dtype == torch.bfloat16 and m.weight.grad is grad and grad.dtype == torch.bfloat16


def test_cast_refuses_the_ambiguous_name_float() -> None:
    """NumPy's "float" is float64, torch's .float() float32: a cast by that name is refused, not guessed."""
    m = nn.Linear(3, 2)
    with pytest.raises(errors.InvalidArgumentError, match="'float32' or 'float64'"):
        pp.tree(m).cast("float")
    assert m.weight.dtype == torch.float32
    pp.tree(m).cast("float64")
    assert m.weight.dtype == torch.float64

"""Mapping keys on every path that reads them: renames, prefixes, subtrees, skipped mismatches,
order matching, and the messages a mismatch gives; and pp.diff."""

from __future__ import annotations

import itertools
import math
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from torch import nn

import polyparam as pp
from polyparam import errors

X = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)


def snapshot(model: Any) -> dict[str, np.ndarray]:
    return pp.tree(model).state(copy=True)


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


class Net(nn.Module):
    def __init__(self, classes: int = 7, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = mlp(seed)
        self.head = nn.Linear(3, classes)


# ---- prefixes, renames, subtrees --------------------------------------------------------


def test_a_ddp_file_loads_with_strip_prefix_and_the_error_says_so(tmp_path: Path) -> None:
    src, dst = mlp(0), mlp(1)
    file = tmp_path / "ddp.safetensors"
    save_file({f"module.{k}": v.numpy() for k, v in src.state_dict().items()}, str(file))
    before = snapshot(dst)
    with pytest.raises(errors.StateError, match=r"carry a prefix 'module\.': pass strip_prefix='module\.'"):
        pp.load(dst, file)
    assert same(before, snapshot(dst))
    report = pp.load(dst, file, strip_prefix="module.")
    assert report.renamed == {f"module.{k}": k for k in src.state_dict()}
    assert same(snapshot(src), snapshot(dst))


def test_a_backbone_file_loads_into_its_block_with_root(tmp_path: Path) -> None:
    backbone, net = mlp(0), Net(seed=1)
    file = tmp_path / "backbone.safetensors"
    pp.save(backbone, file)
    head = snapshot(net.head)
    with pytest.raises(errors.StateError, match=r"relative to the block 'backbone': pass root='backbone'"):
        pp.load(net, file)
    report = pp.load(net, file, root="backbone")
    assert report.loaded == ["backbone.0.weight", "backbone.0.bias", "backbone.2.weight", "backbone.2.bias"]
    assert same(snapshot(backbone), snapshot(net.backbone)) and same(head, snapshot(net.head))
    # the same through add_prefix, with the head allowed to be missing
    other = Net(seed=2)
    pp.load(other, file, add_prefix="backbone.", allow_missing=True)
    assert same(snapshot(backbone), snapshot(other.backbone))


def test_root_must_name_a_block() -> None:
    with pytest.raises(errors.InvalidArgumentError, match="expected a block"):
        pp.tree(Net()).load_state({}, root="head.weight")
    with pytest.raises(errors.ParameterNotFoundError):
        pp.tree(Net()).load_state({}, root="neck")


def test_a_new_head_loads_with_skip_mismatch(tmp_path: Path) -> None:
    src, dst = Net(classes=7, seed=0), Net(classes=5, seed=1)
    file = tmp_path / "net.safetensors"
    pp.save(src, file)
    with pytest.raises(errors.ShapeMismatchError):
        pp.load(dst, file)
    head = snapshot(dst.head)
    with pytest.warns(errors.PolyparamWarning, match=r"2 values skipped \(shape differs\)"):
        report = pp.load(dst, file, skip_mismatch=True)
    assert report.skipped == [("head.weight", (7, 3), (5, 3)), ("head.bias", (7,), (5,))]
    assert same(snapshot(src.backbone), snapshot(dst.backbone)) and same(head, snapshot(dst.head))
    state = pp.tree(src).state(copy=True)
    with pytest.warns(errors.PolyparamWarning):
        report = pp.tree(Net(classes=5)).load_state(state, skip_mismatch=True)
    assert [s[0] for s in report.skipped] == ["head.weight", "head.bias"]


@pytest.mark.parametrize("how", ["rules", "callable"])
def test_renames_by_rules_or_callable(how: str, tmp_path: Path) -> None:
    src, dst = mlp(0), mlp(1)
    file = tmp_path / "renamed.safetensors"
    save_file({k.replace("0.", "first.").replace("2.", "last."): v.numpy() for k, v in src.state_dict().items()},
              str(file))
    rename: Any = ([(r"^first\.", "0."), (r"^last\.", "2.")] if how == "rules"
                   else lambda k: k.replace("first.", "0.").replace("last.", "2."))
    report = pp.load(dst, file, rename=rename)
    assert report.renamed["first.weight"] == "0.weight"
    assert same(snapshot(src), snapshot(dst))


def test_a_callable_may_drop_keys() -> None:
    src, dst = mlp(0), mlp(1)
    state = pp.tree(src).state(copy=True)
    state["optimizer.step"] = np.zeros(1, np.float32)
    report = pp.tree(dst).load_state(state, rename=lambda k: None if k.startswith("optimizer.") else k)
    assert report.dropped == ["optimizer.step"] and same(snapshot(src), snapshot(dst))


def test_a_colliding_rename_changes_nothing(tmp_path: Path) -> None:
    src, dst = mlp(0), mlp(1)
    file = tmp_path / "m.safetensors"
    pp.save(src, file)
    before = snapshot(dst)
    with pytest.raises(errors.StateError, match=r"'0\.bias' and '2\.bias' both mapped to '0\.bias'"):
        pp.load(dst, file, rename=[(r"^2\.", "0.")])
    assert same(before, snapshot(dst))


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"strip_prefix": ""}, "non-empty string"), ({"rename": "x"}, "list of"), ({"rename": [("(", "")]}, "regex"),
    ({"rename": [("a",)]}, "pair"), ({"rename": lambda k: 3}, "expected a str")])
def test_bad_mappings_are_refused(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(errors.InvalidArgumentError, match=words):
        pp.tree(mlp(0)).load_state(pp.tree(mlp(1)).state(), **kwargs)


def test_allow_missing_and_ignore_extra_are_separate() -> None:
    src, dst = mlp(0), mlp(1)
    state = pp.tree(src).state(copy=True)
    del state["2.bias"]
    with pytest.raises(errors.StateError, match="1 missing"):
        pp.tree(dst).load_state(state)
    with pytest.warns(errors.PolyparamWarning):
        pp.tree(dst).load_state(state, allow_missing=True)
    state["extra.weight"] = np.zeros(2, np.float32)
    with pytest.raises(errors.StateError, match="Unexpected .*'extra.weight'"):
        pp.tree(dst).load_state(state, allow_missing=True)
    with pytest.raises(errors.StateError, match="Missing .*'2.bias'"):
        pp.tree(dst).load_state(state, ignore_extra=True)
    with pytest.warns(errors.PolyparamWarning):
        report = pp.tree(dst).load_state(state, allow_missing=True, ignore_extra=True)
    assert report.missing == ["2.bias"] and report.unexpected == ["extra.weight"]


def test_a_non_strict_load_that_matches_nothing_raises(tmp_path: Path) -> None:
    file = tmp_path / "other.safetensors"
    save_file({"encoder.weight": np.zeros((2, 2), np.float32)}, str(file))
    dst = mlp(1)
    before = snapshot(dst)
    with pytest.raises(errors.StateError, match="expected at least one key to match"):
        pp.load(dst, file, strict=False)
    assert same(before, snapshot(dst))


def test_a_mismatch_message_fits_a_screen() -> None:
    """A big model against another naming scheme: counts, a few keys, the cause; the full list on the report."""
    big = nn.Sequential(*[nn.Linear(8, 8) for _ in range(200)])
    other = {f"blocks.{i}.fc.{leaf}": v for i in range(200) for leaf, v in
             (("weight", np.zeros((8, 8), np.float32)), ("bias", np.zeros(8, np.float32)))}
    with pytest.raises(errors.StateError) as info:
        pp.tree(big).load_state(other)
    message = str(info.value)
    assert len(message) < 1000 and "400 missing and 400 unexpected" in message and "(395 more)" in message
    with pytest.raises(errors.TransferError) as transfer_info:
        pp.transfer(big, nn.Sequential(*[nn.Linear(8, 8) for _ in range(199)]))
    assert len(str(transfer_info.value)) < 1000 and len(str(transfer_info.value.report).splitlines()) > 2


# ---- order matching and renames across frameworks ---------------------------------------


def _torch5() -> tuple[Any, Callable[[np.ndarray], np.ndarray]]:
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()

    return net, forward


def _keras3() -> tuple[Any, Callable[[np.ndarray], np.ndarray]]:
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(6, activation="relu"), keras.layers.Dense(3)])
    return model, lambda x: keras.ops.convert_to_numpy(model(x, training=False))


def _gluon3() -> tuple[Any, Callable[[np.ndarray], np.ndarray]]:
    import mxnet as mx
    from mxnet.gluon import nn as gnn

    net = gnn.Sequential()
    net.add(gnn.Dense(8, activation="relu", in_units=4), gnn.Dense(6, activation="relu", in_units=8),
            gnn.Dense(3, in_units=6))
    net.initialize(mx.init.Xavier())
    return net, lambda x: net(mx.nd.array(x)).asnumpy()


BUILD = {"torch": _torch5, "keras": _keras3, "mxnet": _gluon3}
#: torch counts its ReLU modules: layer i of the others is torch's 2i.
TO_TORCH = [(r"^2\.", "4."), (r"^1\.", "2.")]
FROM_TORCH = [(r"^2\.", "1."), (r"^4\.", "2.")]


@pytest.mark.parametrize(("src", "dst"), list(itertools.permutations(BUILD, 2)))
@pytest.mark.parametrize("how", ["order", "rename"])
def test_an_index_shift_transfers_in_order_or_by_rename(src: str, dst: str, how: str) -> None:
    source, forward_src = BUILD[src]()
    target, forward_dst = BUILD[dst]()
    pp.tree(source).initialize(pp.init.Normal(0.5), seed=3, force_reinit=True)
    if how == "order":
        report = pp.transfer(source, target, match="order")
    elif src == dst or "torch" not in (src, dst):
        report = pp.transfer(source, target)
    else:
        report = pp.transfer(source, target, rename=TO_TORCH if dst == "torch" else FROM_TORCH)
    assert report.ok and len(report.moved) == 6
    np.testing.assert_allclose(forward_dst(X), forward_src(X), atol=1e-5, rtol=1e-5)


def test_order_matching_refuses_the_first_pair_that_does_not_fit() -> None:
    source, _ = _torch5()
    target = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 5), nn.Linear(5, 3))
    before = snapshot(target)
    with pytest.raises(errors.TransferError, match=r"tensor 2 .*'2\.weight' \(weight, \(6, 8\)\) and '1\.weight' "
                                                  r"\(weight, \(5, 8\)\)\. Nothing was changed"):
        pp.transfer(source, target, match="order")
    assert same(before, snapshot(target))
    with pytest.raises(errors.TransferError, match="expected as many tensors on both sides, got 6 and 4"):
        pp.transfer(source, nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 6)), match="order")


@pytest.mark.parametrize(("src", "dst"), list(itertools.permutations(BUILD, 2)))
@pytest.mark.parametrize("ext", ["safetensors", "npz"])
def test_a_file_loads_in_model_order_into_another_framework(src: str, dst: str, ext: str, tmp_path: Path) -> None:
    """pp.save records the model order, so pp.load(match='order') pairs across an index shift."""
    source, forward_src = BUILD[src]()
    target, forward_dst = BUILD[dst]()
    pp.tree(source).initialize(pp.init.Normal(0.5), seed=4, force_reinit=True)
    pp.save(source, tmp_path / f"m.{ext}")
    report = pp.load(target, tmp_path / f"m.{ext}", match="order")
    assert len(report.loaded) == 6
    np.testing.assert_allclose(forward_dst(X), forward_src(X), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dst", ["keras", "mxnet"])
def test_a_framework_file_loads_in_model_order(dst: str, tmp_path: Path) -> None:
    """A torch state_dict and a Gluon .params keep their framework's order: match='order' reads them."""
    source, forward_src = _torch5()
    torch.save(source.state_dict(), tmp_path / "m.pt")
    target, forward_dst = BUILD[dst]()
    report = pp.load(target, tmp_path / "m.pt", match="order")
    assert report.renamed and len(report.loaded) == 6
    np.testing.assert_allclose(forward_dst(X), forward_src(X), atol=1e-5, rtol=1e-5)


def test_an_mxnet_gluon_params_file_loads_in_model_order_into_torch(tmp_path: Path) -> None:
    source, forward_src = _gluon3()
    source.save_parameters(str(tmp_path / "m.params"))
    target, forward_dst = _torch5()
    pp.load(target, tmp_path / "m.params", match="order")
    np.testing.assert_allclose(forward_dst(X), forward_src(X), atol=1e-5, rtol=1e-5)


def test_loading_in_order_refuses_what_does_not_fit_and_files_without_an_order(tmp_path: Path) -> None:
    source, _ = _torch5()
    pp.save(source, tmp_path / "m.safetensors")
    target = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 5), nn.Linear(5, 3))
    before = snapshot(target)
    with pytest.raises(errors.StateError, match=r"tensor 2 .*'2\.weight' \(weight, \(6, 8\)\) and '1\.weight' "
                                                r"\(weight, \(5, 8\)\)\. Nothing was changed"):
        pp.load(target, tmp_path / "m.safetensors", match="order")
    assert same(before, snapshot(target))
    with pytest.raises(errors.StateError, match="got 6 and 4; the file has 2 more, from '4.weight'"):
        pp.load(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 6)), tmp_path / "m.safetensors", match="order")
    save_file({k: v.numpy() for k, v in source.state_dict().items()}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(errors.StateError, match="records its tensors' model order"):
        pp.load(_keras3()[0], tmp_path / "plain.safetensors", match="order")
    with pytest.raises(errors.InvalidArgumentError, match="match='order'"):
        pp.load(source, tmp_path / "m.safetensors", match="order", strip_prefix="x.")
    with pytest.raises(errors.InvalidArgumentError, match="match"):
        pp.load(source, tmp_path / "m.safetensors", match="name")  # type: ignore[arg-type]


def test_a_transfer_into_a_block_with_root() -> None:
    backbone, net = mlp(0), Net(seed=1)
    report = pp.transfer(backbone, net, root="backbone")
    assert report.ok and report.renamed["0.weight"] == "backbone.0.weight"
    assert same(snapshot(backbone), snapshot(net.backbone))


# ---- pp.diff ----------------------------------------------------------------------------


def test_diff_of_a_model_and_its_own_save_is_empty(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=16))
    pp.save(model, tmp_path / "gpt2.safetensors")
    result = pp.diff(model, tmp_path / "gpt2.safetensors")
    assert result.equal and not result and "equal" in str(result)
    with torch.no_grad():
        model.transformer.h[1].mlp.c_fc.weight[3, 4] += 0.5
    result = pp.diff(tmp_path / "gpt2.safetensors", model)
    assert result.changed == ["transformer.h.1.mlp.c_fc.weight"]
    assert result.values["transformer.h.1.mlp.c_fc.weight"][0] == pytest.approx(0.5, rel=1e-6)
    assert "transformer.h.1.mlp.c_fc.weight  max abs 0.5" in str(result)


def test_diff_reports_structure_across_frameworks() -> None:
    import keras

    source, _ = _torch5()
    k = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(6), keras.layers.Dense(3)])
    result = pp.diff(source, k)
    assert result.only_a == ["4.weight", "4.bias"] and result.only_b == ["1.weight", "1.bias"]
    assert result.shapes == [("2.weight", (6, 8), (3, 6)), ("2.bias", (6,), (3,))]
    assert set(result.values) == {"0.weight", "0.bias"} and result


def test_diff_writes_nothing(tmp_path: Path) -> None:
    a, b = mlp(0), mlp(1)
    before = snapshot(b)
    assert len(pp.diff(a, b).changed) == 4
    assert same(before, snapshot(b))


def test_polyparam_diff_exit_codes(tmp_path: Path) -> None:
    pp.save(mlp(0), tmp_path / "a.safetensors")
    pp.save(mlp(0), tmp_path / "same.npz")
    pp.save(mlp(1), tmp_path / "b.safetensors")

    def run(*files: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "polyparam", "diff", *map(str, files)], capture_output=True,
                              text=True, timeout=120)

    assert run(tmp_path / "a.safetensors", tmp_path / "same.npz").returncode == 0
    done = run(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert done.returncode == 1 and "4 of 4 shared tensors differ" in done.stdout
    assert run(tmp_path / "a.safetensors", tmp_path / "missing.npz").returncode == 2


def test_diff_nan_equals_nan_and_counts_dtypes() -> None:
    a = {"w": np.array([np.nan, 1.0], np.float32)}
    b = {"w": np.array([np.nan, 1.0], np.float64)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = pp.diff(a, b)
    assert result.dtypes == [("w", "float32", "float64")] and result.changed == []


def test_diff_compares_bfloat16_values_as_floats() -> None:
    """bfloat16 (an ml_dtypes type, NumPy kind 'V') is compared by value, against itself and other floats."""
    import ml_dtypes

    w = np.array([0.5, -1.25, 3.0], ml_dtypes.bfloat16)
    changed = w.copy()
    changed[0] = 0.5078125                     # one bfloat16 step above 0.5
    result = pp.diff({"w": w}, {"w": changed})
    assert result.values == {"w": (0.0078125, 0.0078125 / 3.0)}
    assert not pp.diff({"w": w}, {"w": w.copy()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # the dtype difference is reported, not an error
        across = pp.diff({"w": w}, {"w": w.astype(np.float32)})
    assert across.values == {"w": (0.0, 0.0)} and across.dtypes == [("w", "bfloat16", "float32")]
    infinite = pp.diff({"w": np.array([np.inf, 1.0], np.float32)}, {"w": np.array([1.0, 1.0], np.float32)})
    assert infinite.values == {"w": (math.inf, math.inf)}                   # not the largest float
    nibbles = pp.diff({"w": np.array([1, -3, 7], ml_dtypes.int4)}, {"w": np.array([1, 2, -8], ml_dtypes.int4)})
    assert nibbles.values == {"w": (15.0, 15.0 / 7.0)}                      # int4 by value, not "not numeric"


# ---- pp.init.Load ----------------------------------------------------------------------


def test_init_load_maps_keys_reads_torch_files_and_skips_mismatches(tmp_path: Path) -> None:
    src = Net(classes=7, seed=0)
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, tmp_path / "ddp.pt")
    dst = Net(classes=5, seed=1)
    init = pp.init.Load(tmp_path / "ddp.pt", default=pp.init.Zero(), strip_prefix="module.", skip_mismatch=True)
    pp.tree(dst).initialize(init, force_reinit=True)
    assert same(snapshot(src.backbone), snapshot(dst.backbone))
    assert not dst.head.weight.detach().numpy().any()   # skipped: the default filled it
    strict = pp.init.Load(tmp_path / "ddp.pt", strip_prefix="module.")
    with pytest.raises(errors.InitializerError, match=r"'head.weight'"):
        pp.tree(Net(classes=5)).initialize(strict, force_reinit=True)
    text = pp.init.dumps(pp.init.Load(str(tmp_path / "ddp.pt"), rename=[(r"^module\.", "")]))
    assert pp.init.loads(text).keymap.rename == [["^module\\.", ""]]


def test_convert_maps_keys_and_the_result_loads(tmp_path: Path) -> None:
    src = mlp(0)
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, tmp_path / "ddp.pt")
    done = subprocess.run([sys.executable, "-m", "polyparam", "convert", str(tmp_path / "ddp.pt"),
                           str(tmp_path / "clean.safetensors"), "--strip-prefix", "module.", "--rename", r"^2\.=last."],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    dst = mlp(1)
    pp.load(dst, tmp_path / "clean.safetensors", rename=[(r"^last\.", "2.")])
    assert same(snapshot(src), snapshot(dst))
    bad = subprocess.run([sys.executable, "-m", "polyparam", "convert", str(tmp_path / "ddp.pt"),
                          str(tmp_path / "x.npz"), "--rename", "nothing"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "REGEX=REPLACEMENT" in bad.stderr and not (tmp_path / "x.npz").exists()


def test_convert_keeps_ties_under_mapped_names(tmp_path: Path) -> None:
    from polyparam.checkpoint import convert

    net = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
    net[1].weight = net[0].weight
    pp.save(net, tmp_path / "tied.safetensors")
    meta = convert(tmp_path / "tied.safetensors", tmp_path / "out.safetensors", add_prefix="model.")
    assert meta.ties == [["model.0.weight", "model.1.weight"]]
    other = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
    pp.load(other, tmp_path / "out.safetensors", strip_prefix="model.")
    assert other[1].weight is other[0].weight


def test_diff_of_differing_0d_integers_and_bools_is_reported_not_a_crash() -> None:
    """A counter (torch's ``num_batches_tracked``, an NNX step) is 0-d: its difference is a number."""
    a = {"step": np.array(3, np.int64), "flag": np.array(True), "w": np.ones(2, np.float32)}
    b = {"step": np.array(7, np.int64), "flag": np.array(False), "w": np.ones(2, np.float32)}
    diff = pp.diff(a, b)
    assert set(diff.changed) == {"step", "flag"}
    assert diff.values["step"][0] == 4 and diff.values["flag"][0] == 1


def test_a_transfers_mismatch_suggests_only_arguments_transfer_takes() -> None:
    """The refusal's fix must be one the caller can follow: transfer has strict=, not allow_missing= /
    ignore_extra= (load_state's)."""
    import inspect

    src = {"a": np.ones(2, np.float32), "extra": np.ones(3, np.float32)}
    dst = {"a": np.zeros(2, np.float32), "other": np.zeros(4, np.float32)}
    with pytest.raises(errors.TransferError) as info:
        pp.transfer(src, dst)
    accepted = set(inspect.signature(pp.transfer).parameters)
    named = set(re.findall(r"\b([a-z_]+)=", str(info.value)))
    assert named and named <= accepted, named - accepted

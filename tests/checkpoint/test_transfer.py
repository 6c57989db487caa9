"""pp.transfer across frameworks: every directed pair, equal forward outputs, ties kept."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import polyparam as pp
from polyparam import errors

sys.path.insert(0, str(Path(__file__).parent))
import _zoo  # noqa: E402

AVAILABLE = [b for b in ("numpy", "torch", "keras", "mxnet") if b == "numpy" or importlib.util.find_spec(b)]
CASES = []
for kind, backends in _zoo.KINDS.items():
    for src, dst in itertools.permutations([b for b in backends if b in AVAILABLE], 2):
        CASES.append(pytest.param(kind, src, dst, id=f"{kind}-{src}-to-{dst}"))


@pytest.mark.parametrize(("kind", "src", "dst"), CASES)
def test_transfer_gives_equal_outputs(kind: str, src: str, dst: str) -> None:
    source, forward_src = _zoo.BUILDERS[src](kind)
    target, forward_dst = _zoo.BUILDERS[dst](kind)
    _zoo.randomize(source)
    x = _zoo.inputs(kind)
    if kind == "embed":  # untie the destination: transfer must restore the source's tie
        for group in pp.tree(target).ties():
            group.untie()
    if kind == "embed" and dst == "keras":
        # Keras cannot tie an embedding to a dense head (transposed layouts): refused, nothing changed
        before = pp.tree(target).state(copy=True)
        with pytest.raises(errors.TieMismatchError, match="same native layout"):
            pp.transfer(source, target)
        for path, value in pp.tree(target).state().items():
            np.testing.assert_array_equal(value, before[path])
        report = pp.transfer(source, target, ties="ignore")
    else:
        report = pp.transfer(source, target)
    assert report.ok and report.moved
    np.testing.assert_allclose(forward_dst(x), forward_src(x), atol=1e-5, rtol=1e-5)
    if kind == "embed" and "keras" not in (src, dst):
        assert [sorted(g.paths) for g in pp.tree(target).ties()] == [["0.weight", "1.weight"]]


def test_transfer_reports_structure_differences_and_changes_nothing() -> None:
    source, _ = _zoo.BUILDERS["numpy"]("mlp")
    target = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2), torch.nn.Linear(2, 2))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(errors.TransferError) as info:
        pp.transfer(source, target)
    report = info.value.report
    assert report.missing == ["3.weight", "3.bias"]
    assert [s[0] for s in report.shapes] == ["2.weight", "2.bias"]
    assert "only in destination: 3.weight" in str(report) and "shape differs" in str(report)
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key])
    partial = pp.transfer(source, target, strict=False)
    assert partial.moved == ["0.weight", "0.bias"]


def test_integers_never_move_into_a_floating_parameter_and_a_fit_refusal_names_no_renaming() -> None:
    """NumPy casts int8 to float32 safely, but integer values in a float parameter are codes (a quantized
    kernel's, its scale elsewhere), not values: refused with the rest of the dtype differences, nothing written.
    When every path pairs, the message is about the values, not about mapping keys."""
    class Held(torch.nn.Module):
        def __init__(self, dtype: torch.dtype) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3, 2)
            self.register_buffer("codes", torch.arange(6, dtype=dtype).reshape(2, 3))

    source, target = Held(torch.int8), Held(torch.float32)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(errors.TransferError, match="codes: int8 -> float32") as info:
        pp.transfer(source, target)
    message = str(info.value)
    assert "quantized" in message and "Map the keys" not in message and "0 missing" not in message
    assert info.value.report.dtypes == [("codes", "int8", "float32")]
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert pp.transfer(Held(torch.int64), Held(torch.int32)).moved   # within integers: a cast of the kind

    wide = torch.nn.Sequential(torch.nn.Linear(4, 8))
    with pytest.raises(errors.TransferError, match="2 shape and 0 dtype differences") as info:
        pp.transfer(wide, torch.nn.Sequential(torch.nn.Linear(4, 9)))
    assert "Map the keys" not in str(info.value)


# ---- checked transfers and layouts that cannot be known --------------------------------


def _snapshot(model: object) -> dict[str, np.ndarray]:
    return pp.tree(model).state(copy=True)


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("src", "dst"), [("torch", "keras"), ("keras", "mxnet"), ("mxnet", "torch")])
def test_a_checked_transfer_across_frameworks_passes(src: str, dst: str) -> None:
    source, _ = _zoo.BUILDERS[src]("flatten")
    target, _ = _zoo.BUILDERS[dst]("flatten")
    _zoo.randomize(source)
    x = _zoo.inputs("flatten")
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    report = pp.transfer(source, target, check=(nhwc if src == "keras" else x, nhwc if dst == "keras" else x))
    assert report.checked is not None and report.checked < 1e-5
    assert "outputs agree" in str(report)


def test_a_checked_transfer_into_another_function_changes_nothing() -> None:
    import keras

    source, _ = _zoo.BUILDERS["torch"]("mlp")
    target = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                               keras.layers.Identity(), keras.layers.Dense(3)])   # tanh where torch has ReLU
    _zoo.randomize(source)
    before = _snapshot(target)
    with pytest.raises(errors.TransferError, match=r"expected equal outputs.*Nothing was changed"):
        pp.transfer(source, target, check=_zoo.inputs("mlp"))
    assert _same(before, _snapshot(target))
    pp.transfer(source, target)   # unchecked, the same move is accepted: the check is what refused it


def test_a_flatten_the_structure_does_not_show_is_refused_across_frameworks() -> None:
    import keras

    class Head(keras.Model):   # subclassed: Keras records no graph, so the flatten's order is unknown
        def __init__(self) -> None:
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3)
            self.flat = keras.layers.Flatten()
            self.dense = keras.layers.Dense(5)

        def call(self, x: object) -> object:
            return self.dense(self.flat(self.conv(x)))

    head = _built(Head)
    source = torch.nn.Module()
    source.conv, source.flat, source.dense = torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(36, 5)
    assert pp.tree(head)["dense.weight"]._layout_doubt()
    before = _snapshot(head)
    with pytest.raises(errors.TransferError, match=r"dense\.weight.*flatten") as info:
        pp.transfer(source, head)
    assert "Nothing was changed" in str(info.value)
    assert _same(before, _snapshot(head))
    assert pp.transfer(head, _built(Head)).ok   # within Keras the native order round-trips: no refusal


def _built(cls: type) -> object:
    model = cls()
    model(np.zeros((1, 5, 5, 3), np.float32))
    return model


# ---- kernels stored (in, out) -----------------------------------------------------------------------


@pytest.mark.parametrize(("d_in", "d_out"), [(16, 16), (16, 8)])
def test_an_in_out_kernel_moves_transposed_into_an_out_in_weight(d_in: int, d_out: int) -> None:
    """Hugging Face's ``Conv1D`` (GPT-2) stores its weight ``(in, out)``, declared by its axis roles; ``nn.Linear``
    stores ``(out, in)``. A transfer either way permutes the value by the roles: a square kernel moved as it is
    computed another function without an error, another shape was refused as a shape difference."""
    conv1d = pytest.importorskip("transformers.pytorch_utils").Conv1D
    torch.manual_seed(0)
    x = torch.randn(3, d_in)
    src, dst = torch.nn.Sequential(conv1d(d_out, d_in)), torch.nn.Sequential(torch.nn.Linear(d_in, d_out))
    assert pp.tree(src)["0.weight"].axes == ("in", "out") and pp.tree(dst)["0.weight"].axes == ("out", "in")
    assert pp.transfer(src, dst).moved == ["0.weight", "0.bias"]
    torch.testing.assert_close(dst(x), src(x))
    torch.nn.init.normal_(dst[0].weight)
    pp.transfer(dst, src, check=x.numpy())
    torch.testing.assert_close(src(x), dst(x))


def test_a_torch_linear_into_a_keras_einsum_dense_kernel() -> None:
    """Keras' ``EinsumDense("ab,bc->ac")`` kernel is ``(in, out)`` in polyparam's layout too (its axis roles say
    so): a square torch ``Linear`` moved into it gives the same outputs."""
    keras = pytest.importorskip("keras")
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    km = keras.Sequential([keras.Input((16,)), keras.layers.EinsumDense("ab,bc->ac", output_shape=16, bias_axes="c")])
    tm = torch.nn.Sequential(torch.nn.Linear(16, 16))
    pp.transfer(tm, km, match="order", check=(x, x))
    with torch.no_grad():
        expected = tm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(keras.ops.convert_to_numpy(km(x))), expected, rtol=0, atol=1e-5)


def test_average_reads_an_in_out_kernel_in_the_destinations_axes() -> None:
    """``pp.average`` pairs by path as transfer does: a GPT-2 ``Conv1D`` source averaged into an ``nn.Linear``
    model is read transposed (a square one was averaged as stored, silently)."""
    conv1d = pytest.importorskip("transformers.pytorch_utils").Conv1D
    torch.manual_seed(0)
    src, dst = torch.nn.Sequential(conv1d(16, 16)), torch.nn.Sequential(torch.nn.Linear(16, 16))
    expected = (dst[0].weight.detach() + src[0].weight.detach().T) / 2
    pp.average(dst, dst, src)
    torch.testing.assert_close(dst[0].weight.detach(), expected)
    with pytest.raises(errors.TransferError, match="shape"):
        pp.average(dst, torch.nn.Sequential(conv1d(8, 16)))     # (16, 8) read as (8, 16): not dst's (16, 16)


def test_the_same_roles_in_another_order_with_one_repeated_are_refused() -> None:
    """``EinsumDense("abc,dce->abde")`` has kernel roles (out, in, out), ``"abc,cde->abde"`` (in, out, out): with
    every size 4 the kernels fit either way, and moving one as it was computed another function, silently."""
    keras = pytest.importorskip("keras")
    layers = keras.layers
    src = keras.Sequential([keras.Input((7, 4)), layers.EinsumDense("abc,dce->abde", output_shape=(None, 4, 4))])
    dst = keras.Sequential([keras.Input((7, 4)), layers.EinsumDense("abc,cde->abde", output_shape=(None, 4, 4))])
    assert pp.tree(src)["0.kernel"].axes == ("out", "in", "out")
    assert pp.tree(dst)["0.kernel"].axes == ("in", "out", "out")
    before = pp.tree(dst).state(copy=True)
    for move in (lambda: pp.transfer(src, dst), lambda: pp.average(dst, src)):
        with pytest.raises(errors.TransferError, match="one repeated") as info:
            move()
        assert info.value.path == "0.kernel"
        for path, value in before.items():
            np.testing.assert_array_equal(pp.tree(dst)[path].numpy(), value)

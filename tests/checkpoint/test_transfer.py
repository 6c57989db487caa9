"""pp.transfer across frameworks: every directed pair, equal forward outputs, ties kept."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

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
    torch = pytest.importorskip("torch")
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

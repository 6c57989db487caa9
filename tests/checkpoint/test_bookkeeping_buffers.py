"""A framework's bookkeeping buffers (torch's ``num_batches_tracked``) travel within the framework
and are passed over, never a difference, where the other framework has no such tensor."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

import polyparam as pp
from polyparam import errors

sys.path.insert(0, str(Path(__file__).parent))
import _zoo  # noqa: E402

COUNTER = "1.num_batches_tracked"


def trained_torch_cnn() -> torch.nn.Module:
    net, _ = _zoo.BUILDERS["torch"]("cnn")
    _zoo.randomize(net)
    net[1].num_batches_tracked.fill_(7)
    return net


def test_the_counter_is_in_the_tree_as_a_bookkeeping_buffer() -> None:
    p = pp.tree(trained_torch_cnn())[COUNTER]
    assert (p.kind, p.role, p.trainable, p.dtype) == ("buffer", "other", False, np.dtype("int64"))


def test_within_torch_the_counter_moves() -> None:
    src, (dst, _) = trained_torch_cnn(), _zoo.BUILDERS["torch"]("cnn")
    report = pp.transfer(src, dst)
    assert int(dst[1].num_batches_tracked) == 7 and report.ignored_buffers == []


@pytest.mark.parametrize("other", ["keras", "mxnet"])
def test_transfer_to_a_framework_without_it_passes_it_over(other: str) -> None:
    src = trained_torch_cnn()
    dst, forward = _zoo.BUILDERS[other]("cnn")
    report = pp.transfer(src, dst)
    assert report.ok and report.ignored_buffers == [COUNTER]
    assert "left as they are:    1 buffers only one side has (1.num_batches_tracked)" in str(report)
    x = _zoo.inputs("cnn")
    with torch.no_grad():
        expected = src(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(forward(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("other", ["keras", "mxnet"])
def test_transfer_from_a_framework_without_it_keeps_the_count(other: str) -> None:
    src, _ = _zoo.BUILDERS[other]("cnn")
    dst = trained_torch_cnn()
    report = pp.transfer(src, dst)
    assert report.ok and report.ignored_buffers == [COUNTER]
    assert int(dst[1].num_batches_tracked) == 7


@pytest.mark.parametrize("other", ["keras", "mxnet"])
def test_a_diff_passes_the_counter_over_as_transfers_do(other: str, tmp_path: Path) -> None:
    """``pp.diff`` of a torch model and the model a transfer filled, or the file either saved: equal, the counter
    only torch has listed as ignored (it was a difference, so ``diff.equal`` was False with every value equal)."""
    src = trained_torch_cnn()
    dst, _ = _zoo.BUILDERS[other]("cnn")
    pp.transfer(src, dst)
    pp.save(src, tmp_path / "torch.safetensors")
    for a, b in ((src, dst), (dst, src), (tmp_path / "torch.safetensors", dst)):
        found = pp.diff(a, b)
        assert found.equal, str(found)
        assert found.ignored_buffers == [COUNTER] and found.only_a == found.only_b == []
    pp.tree(dst).select("role:weight").initialize(pp.init.Constant(0.5), force_reinit=True)
    assert not pp.diff(src, dst).equal


@pytest.mark.parametrize("other", ["keras", "mxnet"])
def test_files_cross_both_ways_with_strict_loads(other: str, tmp_path: Path) -> None:
    src = trained_torch_cnn()
    pp.save(src, tmp_path / "torch.safetensors")
    dst, _ = _zoo.BUILDERS[other]("cnn")
    report = pp.load(dst, tmp_path / "torch.safetensors")
    assert report.ignored_buffers == [COUNTER] and report.missing == report.unexpected == []
    pp.save(dst, tmp_path / "other.safetensors")
    back = trained_torch_cnn()
    report = pp.load(back, tmp_path / "other.safetensors")
    assert report.ignored_buffers == [COUNTER] and int(back[1].num_batches_tracked) == 7


def test_a_torch_file_loads_the_count_into_torch(tmp_path: Path) -> None:
    pp.save(trained_torch_cnn(), tmp_path / "a.safetensors")
    dst, _ = _zoo.BUILDERS["torch"]("cnn")
    assert pp.load(dst, tmp_path / "a.safetensors").ignored_buffers == []
    assert int(dst[1].num_batches_tracked) == 7


def test_an_unmarked_extra_key_is_still_a_difference(tmp_path: Path) -> None:
    """Only keys the file marks as buffers are passed over; a plain file's extra key is unexpected."""
    state = pp.tree(trained_torch_cnn()).state(copy=True)
    save_file(state, str(tmp_path / "plain.safetensors"))
    dst, _ = _zoo.BUILDERS["keras"]("cnn")
    with pytest.raises(errors.StateError, match="1 unexpected"):
        pp.load(dst, tmp_path / "plain.safetensors")


def _saved_with(path: Path, **metadata: str) -> Path:
    """The trained torch CNN saved to ``path``, its polyparam metadata then edited (``polyparam_x=`` sets
    ``polyparam.x``), as a tampered file would be."""
    from safetensors import safe_open

    pp.save(trained_torch_cnn(), path)
    with safe_open(str(path), "np") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}   # noqa: SIM118 - safe_open has no iteration
    meta.update({key.replace("polyparam_", "polyparam."): value for key, value in metadata.items()})
    save_file(tensors, str(path), metadata=meta)
    return path


def test_buffers_metadata_naming_no_stored_key_is_refused(tmp_path: Path) -> None:
    path = _saved_with(tmp_path / "bad.safetensors", polyparam_buffers='["nowhere"]')
    dst, _ = _zoo.BUILDERS["torch"]("cnn")
    with pytest.raises(errors.MetadataError, match="buffers"):
        pp.load(dst, path)


@pytest.mark.parametrize("doubts", ['{"nowhere": "a flattened map"}', '{"0.weight": ""}', '["0.weight"]'])
def test_doubts_metadata_naming_no_stored_key_is_refused(tmp_path: Path, doubts: str) -> None:
    path = _saved_with(tmp_path / "bad.safetensors", polyparam_doubts=doubts)
    dst, _ = _zoo.BUILDERS["torch"]("cnn")
    with pytest.raises(errors.MetadataError, match="doubts"):
        pp.load(dst, path)


def test_a_huge_recorded_doubt_is_cut_short_in_the_refusal(tmp_path: Path) -> None:
    """A tampered file's doubt of megabytes would be put whole into the error message."""
    import json

    path = _saved_with(tmp_path / "huge.safetensors", polyparam_doubts=json.dumps({"0.weight": "x" * 1_000_000}),
                       polyparam_backend="keras")
    dst, _ = _zoo.BUILDERS["torch"]("cnn")
    with pytest.raises(errors.TransferError, match=r"0\.weight") as refused:
        pp.load(dst, path)
    assert len(str(refused.value)) < 5000

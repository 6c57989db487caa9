"""What a trial of the training-loop operations found in the core, shown on torch models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import polyparam as pp
from polyparam import errors


def test_load_vector_refuses_what_is_not_real_numbers() -> None:
    tree = pp.tree(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)))
    before = tree.vector()
    for bad in (before.astype(str), before.astype(np.complex64)):
        with pytest.raises(errors.DTypeMismatchError, match="expected real numbers"):
            tree.load_vector(bad)
    np.testing.assert_array_equal(tree.vector(), before)


def test_scalars_of_numpy_and_torch_are_numbers() -> None:
    net = torch.nn.Linear(3, 2)
    net(torch.ones(1, 3)).sum().backward()
    tree = pp.tree(net)
    tree.clip_grads(np.float32(0.5))
    tree.clip_grads(torch.tensor(0.5))
    pp.average(net, torch.nn.Linear(3, 2), decay=np.float32(0.9))
    with pytest.raises(errors.InvalidArgumentError, match="real number"):
        tree.clip_grads(True)


def test_cast_takes_a_frameworks_dtype() -> None:
    net = torch.nn.Linear(3, 2)
    pp.tree(net).cast(torch.bfloat16)
    assert net.weight.dtype == torch.bfloat16


def test_declared_resets_torchs_batch_counter() -> None:
    bn = torch.nn.BatchNorm1d(4)
    bn.num_batches_tracked.fill_(5)
    pp.tree(bn).initialize(pp.init.Declared(), seed=0, force_reinit=True)
    assert int(bn.num_batches_tracked) == 0


def test_load_cast_must_be_a_bool(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    pp.save(net, tmp_path / "a.safetensors")
    with pytest.raises(errors.InvalidArgumentError, match="cast"):
        pp.load(net, tmp_path / "a.safetensors", cast="yes")

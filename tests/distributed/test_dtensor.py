"""Sharded parameters on real gloo process groups (CPU, loopback), world sizes 1, 2 and 4."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
import torch  # noqa: E402

if not torch.distributed.is_available():  # pragma: no cover - every CPU wheel has it
    pytest.skip("torch.distributed is not available", allow_module_level=True)

sys.path.insert(0, os.path.dirname(__file__))
import _dist_workers as workers  # noqa: E402
from _dist_launch import launch  # noqa: E402

import polyparam as pp  # noqa: E402


@pytest.mark.parametrize("world", [1, 2, 4])
def test_initialize_access_and_write_on_shards(world: int) -> None:
    launch(workers.init_and_access, world, timeout=180)


def test_save_sharded_then_reshard_consolidate_and_restore_ties(tmp_path) -> None:
    directory = str(tmp_path / "ckpt")
    launch(workers.save, 2, directory, 21, timeout=120)
    assert sorted(os.listdir(directory)) == ["rank-00000-of-00002.safetensors", "rank-00001-of-00002.safetensors"]
    expected = workers.reference(workers.shared, pp.init.Xavier(), seed=21)

    # into one process, a model built without the tie: values and the tie come back
    plain = workers.untied()
    tree = pp.tree(plain)
    report = pp.load(tree, directory)
    assert report.tied == [["2.weight", "4.weight"], ["2.bias", "4.bias"]]
    assert plain[2] is not plain[4] and plain[2].weight is plain[4].weight
    assert {k: v for k, v in tree.state().items()}.keys() == expected.keys()
    for path, value in expected.items():
        assert np.array_equal(tree[path].numpy(), value), path

    # consolidated into one ordinary checkpoint
    single = str(tmp_path / "model.safetensors")
    pp.consolidate(directory, single)
    other = pp.tree(workers.untied())
    pp.load(other, single)
    assert [g.paths for g in other.ties()] == [["2.weight", "4.weight"], ["2.bias", "4.bias"]]
    for path, value in expected.items():
        assert np.array_equal(other[path].numpy(), value), path

    # another world size and placement: 4 ranks, every weight split on its last axis
    launch(workers.load, 4, directory, 21, "shard_last", timeout=180)
    # saved again on 4 ranks (FSDP2), read back on 2: the old files of 2 ranks are replaced
    launch(workers.save, 4, directory, 22, timeout=180)
    assert len(os.listdir(directory)) == 4
    launch(workers.load, 2, directory, 22, "fsdp", timeout=120)


def test_a_sharded_save_failing_on_one_rank_raises_on_every_rank_and_is_not_loadable(tmp_path) -> None:
    """No rank hangs at a barrier when another fails; the directory left mixes saves and is refused."""
    directory = str(tmp_path / "ckpt")
    launch(workers.save, 2, directory, 31, timeout=120)
    launch(workers.save_with_one_rank_failing, 2, directory, 32, timeout=120)


def test_sharded_save_of_a_plain_model_and_errors(tmp_path) -> None:
    from torch import nn

    directory = str(tmp_path / "one")
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    tree = pp.tree(model)
    tree.initialize(pp.init.Xavier(), seed=0, force_reinit=True)
    pp.save(tree, directory, sharded=True)
    assert os.listdir(directory) == ["rank-00000-of-00001.safetensors"]
    other = pp.tree(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)))
    pp.load(other, directory)
    for path, p in tree.items():
        assert np.array_equal(other[path].numpy(), p.numpy())
    # a wrong architecture changes nothing
    wrong = pp.tree(nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2)))
    before = wrong.state(copy=True)
    with pytest.raises(pp.errors.ShapeMismatchError, match="0.weight"):
        pp.load(wrong, directory)
    for path, value in before.items():
        assert np.array_equal(wrong[path].numpy(), value)
    # an incomplete directory is refused with the missing rank
    os.rename(os.path.join(directory, "rank-00000-of-00001.safetensors"),
              os.path.join(directory, "rank-00000-of-00002.safetensors"))
    with pytest.raises(pp.errors.MetadataError, match=r"ranks \[1\]"):
        pp.load(other, directory)


@pytest.mark.parametrize("world", [2, 4])
def test_a_hub_checkpoint_loads_straight_into_fsdp2_shards(tmp_path, world: int) -> None:
    """Each rank reads only its rows from the mapped shards: its memory grows by far less than the model."""
    directory = str(tmp_path / "hub")
    model = workers.wide()
    pp.tree(model).initialize(pp.init.Xavier(), seed=3, force_reinit=True)
    pp.save(model, directory, max_shard_size="5MB")
    total = sum(p.numel() * 4 for p in model.parameters())
    out = str(tmp_path / "growth")
    launch(workers.load_hub, world, directory, True, out, timeout=240)
    growth = [int(Path(f"{out}.{rank}").read_text()) for rank in range(world)]
    largest = 1024 * 1024 * 4
    print(f"per-rank peak memory growth of the load, {world} ranks: {growth} bytes; model {total} bytes")
    # the rank's own rows (written in place) and its journal copy of them, plus one tensor's worth of slack
    assert max(growth) < total / world + largest * 1.1, (growth, total)

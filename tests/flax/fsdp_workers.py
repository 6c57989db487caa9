"""torch FSDP2 workers for the JAX <-> torch sharded-checkpoint cases (one call per gloo rank; imports no JAX)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import polyparam as pp


class Net(nn.Module):
    """sharded_cases.Net in torch: the same canonical paths and shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(6, 8)
        self.conv = nn.Conv2d(3, 4, 3)
        self.embed = nn.Embedding(12, 5)


def _sharded(world: int) -> pp.ParameterTree:
    model = Net()
    fully_shard(model, mesh=init_device_mesh("cpu", (world,)))
    return pp.tree(model)


def load_and_compare(rank: int, world: int, directory: str, expected_file: str) -> None:
    """Load the JAX save into FSDP2 shards; every value equals the one JAX saved."""
    tree = _sharded(world)
    tree.initialize(pp.init.Constant(0.0), seed=0, force_reinit=True)
    pp.load(tree, directory)
    expected = dict(np.load(expected_file))
    for path, value in expected.items():
        got = tree[path].numpy()   # a collective: every rank reads
        assert np.array_equal(got, value), (path, rank)


def initialize_and_save(rank: int, world: int, directory: str, seed: int) -> None:
    tree = _sharded(world)
    tree.initialize(pp.init.Normal(1.0), seed=seed, force_reinit=True)
    pp.save(tree, directory, sharded=True)
    torch.distributed.barrier()

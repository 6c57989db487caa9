"""A refused transfer that had made ties gives the destination back its own nn.Parameter objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import polyparam as pp
from polyparam import errors


class LM(nn.Module):
    def __init__(self, act: str = "tanh") -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.head = nn.Linear(4, 7, bias=False)
        self.act = act

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb(ids)
        return self.head(torch.tanh(h) if self.act == "tanh" else torch.relu(h))


def test_a_refused_check_restores_the_parameter_objects_an_optimizer_holds() -> None:
    src = LM("tanh")
    src.head.weight = src.emb.weight   # tied in the source
    dst = LM("relu")                   # untied, and another function: the check refuses
    head = dst.head.weight
    optimizer = torch.optim.SGD(dst.parameters(), lr=0.1)
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(errors.TransferError, match="expected equal outputs"):
        pp.transfer(src, dst, check=ids.numpy())
    assert dst.head.weight is head and dst.head.weight is not dst.emb.weight
    before = head.detach().clone()
    dst(ids).sum().backward()
    optimizer.step()
    assert not torch.equal(dst.head.weight, before)   # the optimizer still trains the module's own weight
    assert np.isfinite(dst.head.weight.detach().numpy()).all()

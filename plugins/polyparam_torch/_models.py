"""TorchModels: the chapter's reference models as PyTorch builds them, and the layers of the initializer tests."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.parameter import UninitializedTensorMixin  # type: ignore[attr-defined]  # missing from torch's stubs

from polyparam.backend import Case, ModelFactory

__all__ = ["TorchModels"]


def _input(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    """``x`` as a float32 tensor on the device of the model's first materialized parameter (CPU if none)."""
    device = torch.device("cpu")
    for t in model.parameters():
        if not isinstance(t, UninitializedTensorMixin):
            device = t.device
        break
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)


class TorchModels(ModelFactory):
    """The chapter's reference models as PyTorch builds them (activations are layers)."""

    def mlp(self) -> Case:
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        return Case(net, in_features=4, layers=["0", "2"])

    def rgnet(self) -> Case:
        def block1() -> nn.Module:
            return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU())

        def block2() -> nn.Module:
            net = nn.Sequential()
            for i in range(4):
                net.add_module(f"block {i}", block1())
            return net

        net = nn.Sequential(block2(), nn.Linear(4, 1))
        layers = [f"0.{i}.{j}" for i in range(4) for j in (0, 2)] + ["1"]
        return Case(net, in_features=4, layers=layers)

    def shared(self) -> Case:
        shared = nn.Linear(8, 8)
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(8, 1))
        return Case(net, in_features=4, layers=["0", "2", "4", "6"], tied=[("2", "4")])

    def lazy(self) -> Case:
        net = nn.Sequential(nn.LazyLinear(256), nn.ReLU(), nn.LazyLinear(10))
        return Case(net, in_features=20, layers=["0", "2"])

    def forward(self, model: nn.Module, x: np.ndarray, /) -> np.ndarray:
        with torch.no_grad():
            out = model(_input(model, x))
        return out.detach().cpu().numpy()

    def backward(self, model: nn.Module, x: np.ndarray, /) -> None:
        model.zero_grad(set_to_none=True)
        model(_input(model, x)).sum().backward()

    def layer(self, kind: str, /) -> nn.Module:
        builders: dict[str, Callable[[], nn.Module]] = {
            "dense": lambda: nn.Linear(300, 400),
            "conv1d": lambda: nn.Conv1d(4, 8, 3),
            "conv2d": lambda: nn.Conv2d(3, 16, 5),
            "conv3d": lambda: nn.Conv3d(2, 4, 3),
            "conv_transpose2d": lambda: nn.ConvTranspose2d(6, 4, 3),
            "grouped_conv2d": lambda: nn.Conv2d(8, 16, 3, groups=4),
            "depthwise_conv2d": lambda: nn.Conv2d(8, 8, 3, groups=8),
            "embedding": lambda: nn.Embedding(50, 16),
            "batchnorm": lambda: nn.BatchNorm1d(8),
        }
        if kind not in builders:
            return super().layer(kind)
        return builders[kind]()

"""TorchModels: the chapter's reference models as PyTorch builds them, and the layers of the initializer tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.parameter import UninitializedTensorMixin  # type: ignore[attr-defined]  # missing from torch's stubs

from polyparam.backend import LAYER_SPECS, Case, ModelFactory

__all__ = ["TorchModels"]


def _input(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    """``x`` in the dtype (float32 if none) and on the device (CPU if none) of the model's first floating tensor."""
    first = next((t for t in model.parameters()
                  if not isinstance(t, UninitializedTensorMixin) and t.is_floating_point()), None)
    device = torch.device("cpu") if first is None else first.device
    dtype = torch.float32 if first is None else first.dtype
    return torch.from_numpy(np.ascontiguousarray(x)).to(device=device, dtype=dtype)


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

    def sgd_step(self, model: nn.Module, x: np.ndarray, /, *, lr: float = 0.1) -> None:
        """One step of ``torch.optim.SGD`` over ``model.parameters()`` on ``sum(model(x))``.

        Frozen tensors are passed too: torch skips those without a gradient.
        """
        optimizer = torch.optim.SGD(model.parameters(), lr=lr)
        optimizer.zero_grad(set_to_none=True)
        model(_input(model, x)).sum().backward()
        optimizer.step()

    def layer(self, kind: str, /) -> nn.Module:
        if kind == "batchnorm":
            return nn.BatchNorm1d(8)
        if kind == "layernorm":
            return nn.LayerNorm(8)
        if kind not in LAYER_SPECS:
            return super().layer(kind)
        spec = LAYER_SPECS[kind]
        if kind == "dense":
            out_features, in_features = spec.shape
            return nn.Linear(in_features, out_features)
        if kind == "embedding":
            num, dim = spec.shape
            return nn.Embedding(num, dim)
        kernel = spec.shape[2:]
        if kind == "conv_transpose2d":   # weight (in, out / groups, *kernel)
            return nn.ConvTranspose2d(spec.shape[0], spec.shape[1] * spec.groups, kernel, groups=spec.groups)
        convs: dict[int, type[nn.Conv1d | nn.Conv2d | nn.Conv3d]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
        # weight (out, in / groups, *kernel)
        return convs[len(kernel)](spec.shape[1] * spec.groups, spec.shape[0], kernel, groups=spec.groups)

    def forward_kinds(self) -> frozenset[str]:
        return frozenset(LAYER_SPECS) | {"batchnorm", "layernorm"}

    def forward_layer(self, model: nn.Module, kind: str, x: np.ndarray, /) -> np.ndarray:
        """Run ``model`` in inference mode on ``x`` (already PyTorch's layout); embeddings take int64 indices."""
        if kind not in self.forward_kinds():
            return super().forward_layer(model, kind, x)
        was_training = model.training
        model.eval()   # batch norm: running statistics
        try:
            with torch.no_grad():
                if kind == "embedding":
                    device = next(model.parameters()).device
                    out = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64)).to(device))
                else:
                    out = model(_input(model, x))
        finally:
            model.train(was_training)
        return out.detach().cpu().numpy()

""":class:`GluonModels`: the chapter's reference models built in Gluon."""

from __future__ import annotations

from typing import Callable

import numpy as np

from polyparam.backend import LAYER_SPECS, Case, ModelFactory
from polyparam_mxnet._convert import autograd, from_numpy, gluon, input_array, to_numpy

__all__ = ["GluonModels"]


class GluonModels(ModelFactory):
    """The chapter's reference models in Gluon, as the chapter's MXNet code builds them."""

    def mlp(self) -> Case:
        net = gluon.nn.Sequential()
        net.add(gluon.nn.Dense(8, activation="relu"))
        net.add(gluon.nn.Dense(1))
        net.initialize()
        net(input_array(np.zeros((1, 4), np.float32)))
        return Case(net, in_features=4, layers=["0", "1"])

    def rgnet(self) -> Case:
        def block1() -> gluon.nn.Sequential:
            net = gluon.nn.Sequential()
            net.add(gluon.nn.Dense(32, activation="relu"))
            net.add(gluon.nn.Dense(16, activation="relu"))
            return net

        def block2() -> gluon.nn.Sequential:
            net = gluon.nn.Sequential()
            for _ in range(4):
                net.add(block1())
            return net

        net = gluon.nn.Sequential()
        net.add(block2())
        net.add(gluon.nn.Dense(10))
        net.initialize()
        net(input_array(np.zeros((1, 4), np.float32)))
        layers = [f"0.{i}.{j}" for i in range(4) for j in range(2)] + ["1"]
        return Case(net, in_features=4, layers=layers)

    def shared(self) -> Case:
        net = gluon.nn.Sequential()
        shared = gluon.nn.Dense(8, activation="relu")
        net.add(gluon.nn.Dense(8, activation="relu"), shared,
                gluon.nn.Dense(8, activation="relu", params=shared.params), gluon.nn.Dense(10))
        net.initialize()
        net(input_array(np.zeros((1, 20), np.float32)))
        return Case(net, in_features=20, layers=["0", "1", "2", "3"], tied=[("1", "2")])

    def lazy(self) -> Case:
        net = gluon.nn.Sequential()
        net.add(gluon.nn.Dense(256, activation="relu"))
        net.add(gluon.nn.Dense(10))
        return Case(net, in_features=20, layers=["0", "1"])

    def forward(self, model: gluon.Block, x: np.ndarray, /) -> np.ndarray:
        """The model on ``x`` in its parameters' dtype, as Gluon takes inputs (float32 before any data)."""
        dtypes = [p.dtype for p in model.collect_params().values() if p._data is not None]
        return to_numpy(model(from_numpy(np.asarray(x), dtypes[0] if dtypes else np.float32)))

    def backward(self, model: gluon.Block, x: np.ndarray, /) -> None:
        with autograd.record():
            y = model(input_array(x))
        y.backward()  # head gradient of ones: d sum(y)

    def sgd_step(self, model: gluon.Block, x: np.ndarray, /, *, lr: float = 0.1) -> None:
        """One step of ``gluon.Trainer(model.collect_params(), "sgd")`` on ``sum(model(x))``.

        The Trainer skips parameters with ``grad_req="null"`` (frozen), as in any Gluon loop.
        """
        trainer = gluon.Trainer(model.collect_params(), "sgd", {"learning_rate": lr})
        with autograd.record():
            y = model(input_array(x))
        y.backward()   # head gradient of ones: d sum(y)
        trainer.step(1)

    def layer(self, kind: str, /) -> gluon.Block:
        """A layer of :data:`LAYER_SPECS` (shape from its spec, a bias on all but the embedding), or batch norm on 8."""
        if kind == "batchnorm":
            block: gluon.Block = gluon.nn.BatchNorm(in_channels=8)
        elif kind == "layernorm":
            block = gluon.nn.LayerNorm(in_channels=8)
        elif kind in LAYER_SPECS:
            block = _build(kind)
        else:
            return super().layer(kind)
        block.initialize()
        return block

    def forward_kinds(self) -> frozenset[str]:
        """Every kind :meth:`layer` builds: Gluon runs them all."""
        return frozenset(LAYER_SPECS) | {"batchnorm", "layernorm"}

    def forward_layer(self, model: gluon.Block, kind: str, x: np.ndarray, /) -> np.ndarray:
        """Gluon's forward in inference mode: Gluon is NCHW (PyTorch's layout), so nothing moves.

        ``autograd.predict_mode`` makes batch norm use its running statistics even inside
        ``autograd.record()``; embeddings take their indices as a float32 array, as Gluon does.
        """
        if kind not in self.forward_kinds():
            return super().forward_layer(model, kind, x)
        with autograd.predict_mode():
            return to_numpy(model(input_array(x)))


def _build(kind: str) -> gluon.Block:
    """The Gluon layer of ``LAYER_SPECS[kind]``: its weight has the spec's canonical shape."""
    nn = gluon.nn
    spec = LAYER_SPECS[kind]
    if kind == "dense":
        units, in_units = spec.shape
        return nn.Dense(units, in_units=in_units, use_bias=True)
    if kind == "embedding":
        input_dim, output_dim = spec.shape
        return nn.Embedding(input_dim, output_dim)
    kernel = spec.shape[2:]
    if spec.axes[0] == "in":  # transposed: weight (in, out / groups, *kernel), as Gluon's Conv*DTranspose
        transposed: dict[int, Callable[..., gluon.Block]] = {
            1: nn.Conv1DTranspose, 2: nn.Conv2DTranspose, 3: nn.Conv3DTranspose}
        return transposed[len(kernel)](spec.shape[1] * spec.groups, kernel, in_channels=spec.shape[0],
                                       groups=spec.groups, use_bias=True)
    convs: dict[int, Callable[..., gluon.Block]] = {1: nn.Conv1D, 2: nn.Conv2D, 3: nn.Conv3D}
    # weight (out, in / groups, *kernel), as Gluon's Conv*D in the default NC* layout
    return convs[len(kernel)](spec.shape[0], kernel, in_channels=spec.shape[1] * spec.groups,
                              groups=spec.groups, use_bias=True)

""":class:`GluonModels`: the chapter's reference models built in Gluon."""

from __future__ import annotations

from typing import Callable

import numpy as np

from polyparam.backend import Case, ModelFactory
from polyparam_mxnet._convert import autograd, gluon, input_array, to_numpy

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
        return to_numpy(model(input_array(x)))

    def backward(self, model: gluon.Block, x: np.ndarray, /) -> None:
        with autograd.record():
            y = model(input_array(x))
        y.backward()  # head gradient of ones: d sum(y)

    def layer(self, kind: str, /) -> gluon.Block:
        nn = gluon.nn
        builders: dict[str, Callable[[], gluon.Block]] = {
            "dense": lambda: nn.Dense(400, in_units=300),
            "conv1d": lambda: nn.Conv1D(8, 3, in_channels=4),
            "conv2d": lambda: nn.Conv2D(16, 5, in_channels=3),
            "conv3d": lambda: nn.Conv3D(4, 3, in_channels=2),
            "conv_transpose2d": lambda: nn.Conv2DTranspose(4, 3, in_channels=6),
            "grouped_conv2d": lambda: nn.Conv2D(16, 3, in_channels=8, groups=4),
            "depthwise_conv2d": lambda: nn.Conv2D(8, 3, in_channels=8, groups=8),
            "embedding": lambda: nn.Embedding(50, 16),
            "batchnorm": lambda: nn.BatchNorm(in_channels=8),
        }
        if kind not in builders:
            return super().layer(kind)
        block = builders[kind]()
        block.initialize()
        return block

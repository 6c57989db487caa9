"""KerasModels: the chapter's reference models in Keras 3, for the conformance kit and the tour."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from polyparam.backend import Case, ModelFactory
from polyparam_keras._gradients import backward

__all__ = ["KerasModels"]


class KerasModels(ModelFactory):
    """The chapter's models in Keras 3, laid out like the NumPy reference (no Flatten layers)."""

    def mlp(self) -> Case:
        net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
        return Case(net, in_features=4, layers=["0", "1"])

    def rgnet(self) -> Case:
        def block1() -> Any:
            return keras.Sequential([keras.layers.Dense(32, activation="relu"),
                                     keras.layers.Dense(16, activation="relu")])

        def block2() -> Any:
            return keras.Sequential([block1() for _ in range(4)])

        net = keras.Sequential([block2(), keras.layers.Dense(10)])
        net(np.zeros((1, 4), np.float32))
        layers = [f"0.{i}.{j}" for i in range(4) for j in range(2)] + ["1"]
        return Case(net, in_features=4, layers=layers)

    def shared(self) -> Case:
        shared = keras.layers.Dense(8, activation="relu")
        net = keras.Sequential([keras.Input((20,)), keras.layers.Dense(8, activation="relu"), shared, shared,
                                keras.layers.Dense(10)])
        return Case(net, in_features=20, layers=["0", "1", "2", "3"], tied=[("1", "2")])

    def lazy(self) -> Case:
        net = keras.Sequential([keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)])
        return Case(net, in_features=20, layers=["0", "1"])

    def forward(self, model: Any, x: np.ndarray, /) -> np.ndarray:
        return keras.ops.convert_to_numpy(model(np.asarray(x, np.float32)))

    def backward(self, model: Any, x: np.ndarray, /) -> None:
        backward(model, np.asarray(x, np.float32))

    def layer(self, kind: str, /) -> Any:
        layers = keras.layers
        builders = {
            "dense": (lambda: layers.Dense(400), (None, 300)),
            "conv1d": (lambda: layers.Conv1D(8, 3), (None, 10, 4)),
            "conv2d": (lambda: layers.Conv2D(16, 5), (None, 10, 10, 3)),
            "conv3d": (lambda: layers.Conv3D(4, 3), (None, 5, 5, 5, 2)),
            "conv_transpose2d": (lambda: layers.Conv2DTranspose(4, 3), (None, 5, 5, 6)),
            "grouped_conv2d": (lambda: layers.Conv2D(16, 3, groups=4), (None, 6, 6, 8)),
            "depthwise_conv2d": (lambda: layers.DepthwiseConv2D(3, depth_multiplier=1), (None, 6, 6, 8)),
            "embedding": (lambda: layers.Embedding(50, 16), (None, 3)),
            "batchnorm": (lambda: layers.BatchNormalization(), (None, 8)),
        }
        if kind not in builders:
            return super().layer(kind)
        make, input_shape = builders[kind]
        layer = make()
        layer.build(input_shape)
        return layer

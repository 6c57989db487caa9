"""KerasModels: the chapter's reference models in Keras 3, for the conformance kit and the tour."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from polyparam.backend import LAYER_INPUTS, LAYER_SPECS, Case, ModelFactory
from polyparam_keras._gradients import backward, recorded_gradients

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

    def sgd_step(self, model: Any, x: np.ndarray, /, *, lr: float = 0.1) -> None:
        """One step of ``keras.optimizers.SGD`` on ``model.trainable_weights``, gradients of ``sum(model(x))``
        by :func:`polyparam_keras.backward`."""
        backward(model, np.asarray(x, np.float32))
        pairs = recorded_gradients(model)
        keras.optimizers.SGD(learning_rate=lr).apply_gradients(pairs)

    def layer(self, kind: str, /) -> Any:
        """A built single-layer model of ``kind``, shaped by :data:`LAYER_SPECS` (channels last, bias on)."""
        layers = keras.layers
        if kind == "batchnorm":  # torch's epsilon, so that the layout tests compare with the reference's formula
            norm = layers.BatchNormalization(epsilon=1e-5)
            norm.build((None, 8))
            return norm
        if kind == "layernorm":  # over the last axis, torch's epsilon
            layer_norm = layers.LayerNormalization(epsilon=1e-5)
            layer_norm.build((None, 8))
            return layer_norm
        if kind not in LAYER_SPECS:
            return super().layer(kind)
        spec = LAYER_SPECS[kind]
        shape, groups = spec.shape, spec.groups
        spatial = LAYER_INPUTS[kind][2:]
        layer: Any
        input_shape: tuple[int | None, ...]
        if kind == "dense":
            layer, input_shape = layers.Dense(shape[0], use_bias=True), (None, shape[1])
        elif kind == "embedding":
            layer, input_shape = layers.Embedding(shape[0], shape[1]), (None, LAYER_INPUTS[kind][1])
        elif kind == "conv_transpose2d":  # canonical (in, out, *k)
            layer = layers.Conv2DTranspose(shape[1], shape[2:], use_bias=True, data_format="channels_last")
            input_shape = (None, *spatial, shape[0])
        elif kind == "depthwise_conv2d":  # canonical (in * multiplier, 1, *k) with groups = in
            layer = layers.DepthwiseConv2D(shape[2:], depth_multiplier=shape[0] // groups, use_bias=True,
                                           data_format="channels_last")
            input_shape = (None, *spatial, groups)
        else:  # conv1d, conv2d, conv3d, grouped_conv2d: canonical (out, in / groups, *k)
            conv = {1: layers.Conv1D, 2: layers.Conv2D, 3: layers.Conv3D}[len(shape) - 2]
            layer = conv(shape[0], shape[2:], groups=groups, use_bias=True, data_format="channels_last")
            input_shape = (None, *spatial, shape[1] * groups)
        layer.build(input_shape)
        return layer

    def forward_kinds(self) -> frozenset[str]:
        """Every kind of :data:`LAYER_SPECS`, ``"batchnorm"`` and ``"layernorm"``."""
        return frozenset([*LAYER_SPECS, "batchnorm", "layernorm"])

    def forward_layer(self, model: Any, kind: str, x: np.ndarray, /) -> np.ndarray:
        """Keras' own forward in inference mode; channels move last for convolutions and back first after."""
        if kind == "embedding":
            return keras.ops.convert_to_numpy(model(np.asarray(x, np.int32)))
        x = np.asarray(x, np.float32)
        if kind not in ("dense", "batchnorm", "layernorm"):  # (N, C, *spatial) -> (N, *spatial, C)
            y = model(np.ascontiguousarray(np.moveaxis(x, 1, -1)), training=False)
            return np.moveaxis(keras.ops.convert_to_numpy(y), -1, 1)
        return keras.ops.convert_to_numpy(model(x, training=False))

""":class:`JaxModels`: the chapter's reference models as stax networks."""

from __future__ import annotations

import numpy as np

from polyparam.backend import Case, ModelFactory
from polyparam_jax import model as jm
from polyparam_jax._convert import to_numpy

__all__ = ["JaxModels"]


class JaxModels(ModelFactory):
    """The chapter's reference models as stax networks, laid out like PyTorch's (ReLU is a layer)."""

    def mlp(self) -> Case:
        net = jm.Model(jm.Sequential(jm.Dense(8), jm.Relu, jm.Dense(1)), (-1, 4))
        return Case(net, in_features=4, layers=["0", "2"])

    def rgnet(self) -> Case:
        def block1() -> jm.Layer:
            return jm.Sequential(jm.Dense(8), jm.Relu, jm.Dense(4), jm.Relu)

        net = jm.Model(jm.Sequential(jm.Sequential(*[block1() for _ in range(4)]), jm.Dense(1)), (-1, 4))
        layers = [f"0.{i}.{j}" for i in range(4) for j in (0, 2)] + ["1"]
        return Case(net, in_features=4, layers=layers)

    def shared(self) -> Case:
        shared = jm.Dense(8)
        net = jm.Model(jm.Sequential(jm.Dense(8), jm.Relu, shared, jm.Relu, shared, jm.Relu, jm.Dense(10)), (-1, 20))
        return Case(net, in_features=20, layers=["0", "2", "4", "6"], tied=[("2", "4")])

    def lazy(self) -> Case:
        return Case(jm.Model(jm.Sequential(jm.Dense(256), jm.Relu, jm.Dense(10))), in_features=20, layers=["0", "2"])

    def forward(self, model: jm.Model, x: np.ndarray, /) -> np.ndarray:
        return to_numpy(model(x))

    def backward(self, model: jm.Model, x: np.ndarray, /) -> None:
        model.backward(x)

    def layer(self, kind: str, /) -> jm.Model:
        builders = {
            "dense": lambda: (jm.Dense(400), (-1, 300)),
            "conv1d": lambda: (jm.Conv(8, (3,)), (-1, 4, 10)),
            "conv2d": lambda: (jm.Conv(16, (5, 5)), (-1, 3, 8, 8)),
            "conv3d": lambda: (jm.Conv(4, (3, 3, 3)), (-1, 2, 5, 5, 5)),
            "conv_transpose2d": lambda: (jm.ConvTranspose(4, (3, 3)), (-1, 6, 5, 5)),
            "grouped_conv2d": lambda: (jm.Conv(16, (3, 3), groups=4), (-1, 8, 6, 6)),
            "depthwise_conv2d": lambda: (jm.Conv(8, (3, 3), groups=8), (-1, 8, 6, 6)),
            "embedding": lambda: (jm.Embedding(50, 16), (-1,)),
            "batchnorm": lambda: (jm.BatchNorm(8), (-1, 8)),
        }
        if kind not in builders:
            msg = f"Invalid value for argument `kind`: expected one of {sorted(builders)}. Received: kind={kind!r}."
            raise ValueError(msg)
        layer, shape = builders[kind]()
        return jm.Model(layer, shape)

""":class:`JaxModels`: the chapter's reference models as stax networks."""

from __future__ import annotations

import numpy as np

from polyparam.backend import LAYER_INPUTS, LAYER_SPECS, Case, ModelFactory
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

    def sgd_step(self, model: jm.Model, x: np.ndarray, /, *, lr: float = 0.1) -> None:
        model.sgd_step(x, lr)

    def layer(self, kind: str, /) -> jm.Model:
        """A single-layer model of ``kind`` with the shapes of ``LAYER_SPECS`` (a bias on all but the embedding)."""
        if kind == "batchnorm":
            return jm.Model(jm.BatchNorm(8), (-1, 8))
        if kind not in LAYER_SPECS:
            kinds = sorted([*LAYER_SPECS, "batchnorm"])
            msg = f"Invalid value for argument `kind`: expected one of {kinds}. Received: kind={kind!r}."
            raise ValueError(msg)
        spec = LAYER_SPECS[kind]
        shape, inputs = spec.shape, (-1, *LAYER_INPUTS[kind][1:])
        if kind == "dense":
            return jm.Model(jm.Dense(shape[0]), (-1, shape[1]))
        if kind == "embedding":
            return jm.Model(jm.Embedding(*shape), (-1,))
        if kind == "conv_transpose2d":  # (in, out / groups, *kernel)
            layer = jm.ConvTranspose(shape[1] * spec.groups, shape[2:], groups=spec.groups)
            return jm.Model(layer, inputs)
        layer = jm.Conv(shape[0], shape[2:], groups=spec.groups)  # (out, in / groups, *kernel)
        return jm.Model(layer, inputs)

    def forward_kinds(self) -> frozenset[str]:
        return frozenset([*LAYER_SPECS, "batchnorm"])

    def forward_layer(self, model: jm.Model, kind: str, x: np.ndarray, /) -> np.ndarray:
        """Run ``model`` on ``x``: the stax layers are channels-first already, so no axis moves."""
        if kind not in self.forward_kinds():
            kinds = sorted(self.forward_kinds())
            msg = f"Invalid value for argument `kind`: expected one of {kinds}. Received: kind={kind!r}."
            raise ValueError(msg)
        return to_numpy(model(x))

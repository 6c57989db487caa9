"""FlaxModels: the reference models and single layers in Flax NNX."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from polyparam.backend import LAYER_INPUTS, LAYER_SPECS, Case, ModelFactory
from polyparam_flax._gradients import backward
from polyparam_flax._training import trainable

__all__ = ["FlaxModels"]


def _sum_of_outputs(model: Any, x: Any) -> Any:
    return jnp.sum(model(x))


class FlaxModels(ModelFactory):
    """The chapter's models as ``nnx.Sequential``, laid out like torch's (``nnx.relu`` takes a position)."""

    def __init__(self) -> None:
        self._rngs = nnx.Rngs(0)

    def _linear(self, n_in: int, n_out: int) -> nnx.Linear:
        return nnx.Linear(n_in, n_out, rngs=self._rngs)

    def mlp(self) -> Case:
        net = nnx.Sequential(self._linear(4, 8), nnx.relu, self._linear(8, 1))
        return Case(net, in_features=4, layers=["0", "2"])

    def rgnet(self) -> Case:
        def block1() -> nnx.Sequential:
            return nnx.Sequential(self._linear(4, 8), nnx.relu, self._linear(8, 4), nnx.relu)

        net = nnx.Sequential(nnx.Sequential(*[block1() for _ in range(4)]), self._linear(4, 1))
        layers = [f"0.{i}.{j}" for i in range(4) for j in (0, 2)] + ["1"]
        return Case(net, in_features=4, layers=layers)

    def shared(self) -> Case:
        shared = self._linear(8, 8)
        net = nnx.Sequential(self._linear(20, 8), nnx.relu, shared, nnx.relu, shared, nnx.relu, self._linear(8, 10))
        return Case(net, in_features=20, layers=["0", "2", "4", "6"], tied=[("2", "4")])

    def lazy(self) -> Case:
        msg = "Flax NNX modules know their shapes at construction: the flax backend has no deferred models."
        raise NotImplementedError(msg)

    def forward(self, model: Any, x: np.ndarray, /) -> np.ndarray:
        return np.asarray(model(jnp.asarray(x)))

    def backward(self, model: Any, x: np.ndarray, /) -> None:
        backward(model, _sum_of_outputs, jnp.asarray(x, jnp.float32))

    def sgd_step(self, model: Any, x: np.ndarray, /, *, lr: float = 0.1) -> None:
        """One step of ``optax.sgd`` through ``nnx.Optimizer`` on ``sum(model(x))``, over the Params
        :data:`polyparam_flax.trainable` selects (the filter given to ``nnx.grad`` and ``wrt=``)."""
        import optax

        optimizer = nnx.Optimizer(model, optax.sgd(lr), wrt=trainable)
        grads = nnx.grad(_sum_of_outputs, argnums=nnx.DiffState(0, trainable))(model, jnp.asarray(x, jnp.float32))
        optimizer.update(model, grads)

    def layer(self, kind: str, /) -> Any:
        """A single-layer model of ``kind`` shaped by :data:`LAYER_SPECS` (channels last, stride 1, no padding)."""
        rngs = self._rngs
        if kind == "batchnorm":   # torch's epsilon and momentum, so that the layout tests use the reference's formula
            return nnx.BatchNorm(8, epsilon=1e-5, momentum=0.9, rngs=rngs)
        if kind == "layernorm":
            return nnx.LayerNorm(8, epsilon=1e-5, rngs=rngs)
        if kind not in LAYER_SPECS:
            return super().layer(kind)
        spec = LAYER_SPECS[kind]
        shape, groups = spec.shape, spec.groups
        if kind == "dense":
            return nnx.Linear(shape[1], shape[0], rngs=rngs)
        if kind == "embedding":
            return nnx.Embed(shape[0], shape[1], rngs=rngs)
        if kind == "conv_transpose2d":   # canonical (in, out, *k)
            return nnx.ConvTranspose(shape[0], shape[1], tuple(shape[2:]), padding="VALID", rngs=rngs)
        # conv1d/2d/3d, grouped and depthwise: canonical (out, in / groups, *k)
        return nnx.Conv(shape[1] * groups, shape[0], tuple(shape[2:]), feature_group_count=groups, padding="VALID",
                        rngs=rngs)

    def forward_kinds(self) -> frozenset[str]:
        """Every kind of :data:`LAYER_SPECS`, ``"batchnorm"`` and ``"layernorm"``."""
        return frozenset([*LAYER_SPECS, "batchnorm", "layernorm"])

    def forward_layer(self, model: Any, kind: str, x: np.ndarray, /) -> np.ndarray:
        """NNX's own forward in inference mode; channels move last for convolutions and back first after."""
        if kind == "embedding":
            return np.asarray(model(jnp.asarray(x, jnp.int32)))
        if kind == "batchnorm":
            return np.asarray(model(jnp.asarray(x, jnp.float32), use_running_average=True))
        if kind in ("dense", "layernorm"):
            return np.asarray(model(jnp.asarray(x, jnp.float32)))
        assert x.shape[1:] == LAYER_INPUTS[kind][1:], (kind, x.shape)
        y = model(jnp.asarray(np.moveaxis(x, 1, -1), jnp.float32))   # (N, C, *spatial) -> (N, *spatial, C)
        return np.moveaxis(np.asarray(y), -1, 1)

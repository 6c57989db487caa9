"""JAX backend. See :class:`polyparam.Backend` for the contract; only the differences are noted.

- Models are :class:`polyparam_jax.model.Model` (stax-style layers plus their parameters).
- Dense kernels are stored ``(in, out)``; they cross polyparam as ``(out, in)``.
- JAX arrays are immutable: a write replaces the array in the model's parameter tree.
- Gradients are those of the last :meth:`Model.backward` call.
- A tie makes one leaf feed several places of the function; ``jax.grad`` sums the
  group's gradients into the anchor.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from polyparam import Case, ModelFactory, Parameter, ParameterTree, errors
from polyparam._tree import join_path
from polyparam_jax import model as jm

__all__ = ["CAPABILITIES", "NAME", "framework_version", "is_native", "models", "tree"]

NAME = "jax"
CAPABILITIES = frozenset({"tying", "deferred", "gradients"})


def framework_version() -> str:
    return jax.__version__


def is_native(obj: object, /) -> bool:
    return isinstance(obj, jm.Model)


def tree(obj: object, /) -> ParameterTree:
    if not isinstance(obj, jm.Model):
        msg = (f"Cannot wrap {type(obj).__name__} with the jax backend: expected a polyparam_jax.model.Model, "
               f"got {type(obj).__name__}. Wrap the stax layers in Model(...).")
        raise errors.UnsupportedModelError(msg, backend=NAME, expected="Model", got=type(obj).__name__)
    return JaxTree(obj, obj.layer, ())


def models() -> ModelFactory:
    return JaxModels()


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(perm))


class JaxParameter(Parameter):
    """One leaf of a :class:`Model`'s parameter tree, addressed by its position."""

    backend = NAME

    def __init__(self, path: str, model: jm.Model, address: jm.Address, leaf: jm.Leaf) -> None:
        super().__init__(path, role=leaf.role, axes=leaf.axes, trainable=leaf.trainable, groups=leaf.groups)
        self._model, self._address, self._leaf = model, address, leaf

    @property
    def _where(self) -> jm.Address:
        return self._model.anchor(self._address)

    def _canonical(self, shape: tuple[Any, ...]) -> tuple[Any, ...]:
        perm = self._leaf.to_canonical
        return tuple(shape) if perm is None else tuple(shape[i] for i in perm)

    def _shape(self) -> tuple[int | None, ...]:
        if self._model.params is None:
            return self._canonical(self._model.abstract_shape(self._where))
        return self._canonical(jm._get(self._model.params, self._where).shape)

    def _dtype(self) -> Any:
        if self._model.params is None:
            return np.float32
        return np.dtype(jm._get(self._model.params, self._where).dtype)

    def _device(self) -> str:
        if self._model.params is None:
            return "cpu"
        devices = jm._get(self._model.params, self._where).devices()
        return ",".join(sorted(f"{d.platform}:{d.id}" if d.platform != "cpu" else "cpu" for d in devices))

    def _native(self) -> Any:
        return None if self._model.params is None else jm._get(self._model.params, self._where)

    def _native_name(self) -> str:
        return "params" + "".join(f"[{i}]" for i in self._address)

    def _state(self) -> str:
        return "deferred" if self._model.params is None else "initialized"

    def _to_canonical(self, array: np.ndarray) -> np.ndarray:
        perm = self._leaf.to_canonical
        return array if perm is None else array.transpose(perm)

    def _read(self) -> np.ndarray:
        return self._to_canonical(np.asarray(jm._get(self._model.params, self._where)))

    def _write(self, array: np.ndarray, /) -> None:
        perm = self._leaf.to_canonical
        native = array if perm is None else array.transpose(_inverse(perm))
        old = jm._get(self._model.params, self._where)
        jm._set(self._model.params, self._where, jnp.asarray(native, dtype=old.dtype))

    def _grad(self) -> np.ndarray | None:
        grads = self._model.grads
        if grads is None:
            return None
        return self._to_canonical(np.asarray(jm._get(grads, self._where)))

    def _identity(self) -> Any:
        return (id(self._model), self._where)

    def _defer(self, fill: Any, /) -> None:
        self._model.pending[self._where] = fill

    def _share(self, anchor: Parameter, /) -> None:
        if not isinstance(anchor, JaxParameter) or anchor._model is not self._model:
            msg = f"Cannot tie {self.path!r} to {anchor.path!r}: expected parameters of one jax Model, got two models."
            raise errors.TieError(msg, path=self.path, expected="the same Model", got=anchor.path)
        self._model.ties[self._address] = anchor._where

    def _unshare(self) -> None:
        model = self._model
        if self._address not in model.ties:
            return
        source = model.anchor(self._address)
        del model.ties[self._address]
        if model.params is not None:
            jm._set(model.params, self._address, jnp.array(jm._get(model.params, source), copy=True))
        if model.grads is not None:
            jm._set(model.grads, self._address, jnp.zeros_like(jm._get(model.grads, source)))


class JaxTree(ParameterTree):
    """A :class:`Model`'s layer: children by position, leaves by canonical name."""

    backend = NAME

    def __init__(self, model: jm.Model, layer: jm.Layer, address: jm.Address, *, path: str = "") -> None:
        super().__init__(model if not address else layer, path=path)
        self._model, self._layer, self._address = model, layer, address

    def _children(self) -> list[tuple[str, ParameterTree]]:
        return [(str(i), JaxTree(self._model, child, (*self._address, i), path=join_path(self.path, str(i))))
                for i, child in enumerate(self._layer.children)]

    def _leaves(self) -> list[tuple[str, Parameter]]:
        return [(leaf.name, JaxParameter(join_path(self.path, leaf.name), self._model, (*self._address, j), leaf))
                for j, leaf in enumerate(self._layer.leaves)]


class JaxModels(ModelFactory):
    """The chapter's models as stax networks, laid out like PyTorch's (ReLU is a layer)."""

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
        return np.asarray(model(x))

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

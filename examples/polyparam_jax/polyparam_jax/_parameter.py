""":class:`JaxParameter`: one leaf of a :class:`~polyparam_jax.model.Model` as a polyparam parameter."""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from polyparam import errors
from polyparam.backend import Parameter, Shape, State
from polyparam_jax import NAME
from polyparam_jax import model as jm
from polyparam_jax._convert import canonical_shape, device_name, from_numpy, to_canonical, to_native, to_numpy

__all__ = ["JaxParameter"]


class JaxParameter(Parameter):
    """One leaf of a :class:`Model`'s parameter tree, addressed by its position."""

    backend = NAME

    def __init__(self, path: str, model: jm.Model, address: jm.Address, leaf: jm.Leaf) -> None:
        super().__init__(path, role=leaf.role, axes=leaf.axes, trainable=leaf.trainable, groups=leaf.groups)
        self._model, self._address, self._leaf = model, address, leaf

    # ---- hooks: facts ------------------------------------------------------------

    def _shape(self) -> Shape:
        if self._model.params is None:
            return canonical_shape(self._model.abstract_shape(self._where), self._leaf.to_canonical)
        return canonical_shape(jm._get(self._model.params, self._where).shape, self._leaf.to_canonical)

    def _dtype(self) -> Any:
        if self._model.params is None:
            return np.float32
        return np.dtype(jm._get(self._model.params, self._where).dtype)

    def _device(self) -> str:
        if self._model.params is None:
            return "cpu"
        return device_name(jm._get(self._model.params, self._where))

    def _native(self) -> Any:
        return None if self._model.params is None else jm._get(self._model.params, self._where)

    def _native_name(self) -> str:
        return "params" + "".join(f"[{i}]" for i in self._address)

    def _state(self) -> State:
        return "deferred" if self._model.params is None else "initialized"

    # ---- hooks: values -----------------------------------------------------------

    def _read(self) -> np.ndarray:
        return to_canonical(to_numpy(jm._get(self._model.params, self._where)), self._leaf.to_canonical)

    def _write(self, array: np.ndarray, /) -> None:
        native = to_native(array, self._leaf.to_canonical)
        old = jm._get(self._model.params, self._where)
        jm._set(self._model.params, self._where, from_numpy(native, old.dtype))

    def _grad(self) -> np.ndarray | None:
        grads = self._model.grads
        if grads is None or self._where in self._model.frozen:
            return None
        return to_canonical(to_numpy(jm._get(grads, self._where)), self._leaf.to_canonical)

    def _write_grad(self, array: np.ndarray | None, /) -> None:
        grads = self._model.grads
        if grads is None:
            msg = f"Cannot write the gradient of {self.path!r}: expected a backward pass first, got none."
            raise errors.StateError(msg, path=self.path, expected="gradients", got=None)
        old = jm._get(grads, self._where)
        value = jnp.zeros_like(old) if array is None else from_numpy(to_native(array, self._leaf.to_canonical),
                                                                     old.dtype)
        jm._set(grads, self._where, value)

    # ---- hooks: training -----------------------------------------------------------

    def _trainable(self) -> bool:
        return self._leaf.trainable and self._where not in self._model.frozen

    def _set_trainable(self, value: bool, /) -> None:
        (self._model.frozen.discard if value else self._model.frozen.add)(self._where)

    def _identity(self) -> Any:
        return (id(self._model), self._where)

    # ---- hooks: deferred initialization ------------------------------------------

    def _defer(self, fill: Callable[[], None], /) -> None:
        self._model.pending[self._where] = fill

    # ---- hooks: ties -------------------------------------------------------------

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

    # ---- helpers (not hooks) -----------------------------------------------------

    @property
    def _where(self) -> jm.Address:
        """The address that holds this leaf's value (the tie anchor's, when tied)."""
        return self._model.anchor(self._address)

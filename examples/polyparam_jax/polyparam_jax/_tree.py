""":class:`JaxTree`: a :class:`~polyparam_jax.model.Model`'s layers as a polyparam parameter tree."""

from __future__ import annotations

from typing import Any

from polyparam.backend import Parameter, ParameterTree, join_path
from polyparam_jax import NAME
from polyparam_jax import model as jm
from polyparam_jax._convert import to_numpy
from polyparam_jax._parameter import JaxParameter

__all__ = ["JaxTree"]


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

    def _forward(self, inputs: Any, /) -> Any:
        """The whole model's output (stax layers have no training mode: BatchNorm uses its statistics)."""
        return to_numpy(self._model(inputs))

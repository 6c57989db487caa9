""":class:`GluonTree`: a Gluon ``Block`` as a polyparam parameter tree."""

from __future__ import annotations

from typing import Any

import numpy as np

from polyparam.backend import Parameter, ParameterTree, join_path
from polyparam_mxnet import NAME
from polyparam_mxnet._convert import from_numpy, gluon, parse_devices, to_numpy
from polyparam_mxnet._parameter import GluonParameter, clear_cached_graphs

__all__ = ["GluonTree"]

#: BatchNorm-style names shown under the names every backend uses (roles scale, shift).
_RENAMES = {"gamma": "weight", "beta": "bias"}


class GluonTree(ParameterTree):
    """A Gluon ``Block`` as a parameter tree (children from ``block._children``)."""

    backend = NAME

    def __init__(self, native: gluon.Block, /, *, path: str = "", root: gluon.Block | None = None) -> None:
        super().__init__(native, path=path)
        self._root = native if root is None else root

    def _children(self) -> list[tuple[str, ParameterTree]]:
        return [(name, GluonTree(child, path=join_path(self.path, name), root=self._root))
                for name, child in self.native._children.items()]

    def _leaves(self) -> list[tuple[str, Parameter]]:
        attrs = list(self.native._reg_params)
        out: list[tuple[str, Parameter]] = []
        for attr in attrs:
            leaf = _RENAMES.get(attr, attr)
            if leaf != attr and leaf in attrs:
                leaf = attr  # a custom block with both names: keep Gluon's
            out.append((leaf, GluonParameter(join_path(self.path, leaf), self.native, attr, self._root)))
        return out

    def _to(self, device: str) -> None:
        contexts = parse_devices(device)
        for param in self.native.collect_params().values():
            if param._data is not None or param._deferred_init:
                param.reset_ctx(contexts)
            else:
                param._ctx_list = list(contexts)  # not initialized yet: where initialize will put it
        clear_cached_graphs(self._root)

    def _forward(self, inputs: Any, /) -> Any:
        """The block on ``inputs`` in predict mode (running statistics, no dropout), on its parameters' context."""
        from mxnet import autograd

        contexts = [c for p in self.native.collect_params().values() if p._data is not None for c in p.list_ctx()]

        def as_input(x: Any) -> Any:
            if isinstance(x, (list, tuple)):
                return type(x)(as_input(v) for v in x)
            if isinstance(x, np.ndarray) or np.isscalar(x):
                x = np.asarray(x)
                x = from_numpy(x, x.dtype if x.dtype.kind == "f" else "float32")  # Gluon takes indices as floats
            return x.as_in_context(contexts[0]) if contexts and hasattr(x, "as_in_context") else x

        def as_output(y: Any) -> Any:
            return type(y)(as_output(v) for v in y) if isinstance(y, (list, tuple)) else to_numpy(y)

        with autograd.predict_mode():
            return as_output(self.native(as_input(inputs)))

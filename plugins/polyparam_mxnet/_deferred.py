"""Deferred initialization through Gluon's own machinery.

polyparam hands a deferred parameter a :class:`DeferredFill` as its Gluon initializer.
Gluon calls it with the fresh array once the shape is known (the first forward pass);
it runs polyparam's recorded fill, whose write lands in that array (:data:`TARGET`).
"""

from __future__ import annotations

import contextvars
from typing import Any, Callable

from polyparam_mxnet._convert import mx

__all__ = ["TARGET", "DeferredFill"]

#: The NDArray Gluon is materializing while a recorded polyparam fill runs.
TARGET: contextvars.ContextVar[Any] = contextvars.ContextVar("polyparam_mxnet_target")


class DeferredFill(mx.init.Initializer):
    """Given to Gluon as the parameter's initializer: Gluon calls it with the fresh
    array once the shape is known, and it runs polyparam's recorded fill into it."""

    def __init__(self, fill: Callable[[], None]) -> None:
        super().__init__()
        self._fill = fill

    def __call__(self, desc: Any, arr: Any) -> None:
        token = TARGET.set(arr)
        try:
            self._fill()
        finally:
            TARGET.reset(token)

    def _init_weight(self, name: Any, arr: Any) -> None:
        self(name, arr)

    def dumps(self) -> str:
        return '["polyparam_deferred", {}]'

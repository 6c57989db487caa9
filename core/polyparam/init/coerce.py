"""What users pass to ``initialize`` (an Initializer, a callable, a name, a framework's own initializer),
as an Initializer."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np

from polyparam import errors
from polyparam.init.base import Initializer, _checked_result, get
from polyparam.init.builtins import Uniform
from polyparam.init.foreign import translate

__all__ = ["as_initializer"]


class _CallableInitializer(Initializer):
    """Wraps a plain callable ``fn(shape, dtype[, rng])`` returning an array."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        try:
            self._takes_rng = "rng" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            self._takes_rng = False

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        kwargs = {"rng": self.rng} if self._takes_rng else {}
        value = self._fn(arr.shape, arr.dtype, **kwargs)
        arr[...] = _checked_result(value, self.param, repr(self._fn))  # type: ignore[arg-type]  # set while filling

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._fn!r})"


#: First-parameter names of a random key: an initializer drawn by JAX, ``init(key, shape, dtype)``.
_KEY_NAMES = frozenset({"key", "rng_key", "prng_key", "rngs"})


def _first_parameter(fn: Any) -> str | None:
    try:
        parameters = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None
    return parameters[0] if parameters else None


def as_initializer(init: Initializer | Callable[..., Any] | str | None) -> Initializer:
    """Turn what users pass to ``initialize`` into an :class:`Initializer`.

    ``None`` gives the default, ``Uniform(0.07)`` for weights and the conventional
    values for the other roles (Gluon's default); a string is a registered name. A
    framework's own initializer (a ``torch.nn.init`` function, a Keras initializer, an
    ``mx.init`` object) becomes the built-in with the same distribution.
    """
    return _as_initializer(init, "init")


def _as_initializer(init: Initializer | Callable[..., Any] | str | None, argument: str) -> Initializer:
    """:func:`as_initializer`, naming ``argument`` (``"default"``, a rule) when ``init`` is refused."""
    if init is None:
        return Uniform()
    if isinstance(init, Initializer):
        return init
    if isinstance(init, str):
        return get(init)
    native = translate(init)
    if native is not None:
        return native
    if callable(init):
        if _first_parameter(init) in _KEY_NAMES:
            msg = (f"Invalid value for argument `{argument}`: expected a callable (shape, dtype) -> array, got "
                   f"{getattr(init, '__name__', type(init).__name__)}, whose first parameter is a random key: a JAX "
                   "initializer init(key, shape, dtype) of your own. Use a pp.init initializer, a "
                   "jax.nn.initializers one (translated), or a function (shape, dtype, rng) drawing from the NumPy "
                   "generator rng.")
            raise errors.InitializerError(msg, expected="(shape, dtype) -> array", got=init)
        return _CallableInitializer(init)
    shown = repr(init) if len(repr(init)) <= 80 else f"{repr(init)[:77]}..."
    msg = (f"Invalid value for argument `{argument}`: expected a polyparam Initializer, a callable "
           f"(shape, dtype) -> array or a name. Received: {argument}={shown}.")
    raise errors.InitializerError(msg, expected="initializer", got=init)



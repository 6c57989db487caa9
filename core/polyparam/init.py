"""Initializers: built-ins with Gluon's arguments, and the base class for your own.

An initializer fills NumPy arrays in canonical layout. polyparam calls it once per
parameter (once per tie group) with a generator keyed by ``(seed, canonical path)``,
so a seeded initialization gives the same values on every backend, in any order.

Dispatch is by *role*: parameters whose role is ``weight`` (or ``other``) get
:meth:`Initializer.init_weight`; biases, BatchNorm scale/shift and running statistics
get their conventional values (0, 1, 0, 0, 1) unless a subclass overrides
``init_bias``, ``init_scale``, ``init_shift``, ``init_running_mean`` or
``init_running_var``. An initializer given to a single parameter
(``tree["0.bias"].initialize(init)``) fills it as a weight, as in Gluon.

Three styles of custom initializer are accepted::

    class MyInit(pp.init.Initializer):          # Gluon style: fill in place
        def init_weight(self, name, arr):
            arr[:] = self.rng.uniform(-10, 10, arr.shape)

    class KerasStyle(pp.init.Initializer):      # Keras style: return an array
        def __call__(self, shape, dtype):
            return np.full(shape, 0.5, dtype)

    def plain(shape, dtype):                    # any callable (shape, dtype) -> array
        return np.zeros(shape, dtype)

Inside ``init_weight`` and ``__call__``, :attr:`Initializer.rng` is the parameter's
own generator and :attr:`Initializer.param` describes it (path, role, axes, fans).
"""

from __future__ import annotations

import contextvars
import hashlib
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from polyparam import errors

__all__ = [
    "Constant",
    "Initializer",
    "Normal",
    "One",
    "ParamInfo",
    "Uniform",
    "Xavier",
    "Zero",
    "as_initializer",
    "generator_for",
]


def generator_for(seed: int, path: str) -> np.random.Generator:
    """The counter-based generator of one parameter: Philox keyed by ``(seed, path)``.

    The key does not depend on the order parameters are visited in, on the backend or
    on the device, which is what makes seeded values identical everywhere.
    """
    digest = hashlib.blake2b(f"{int(seed)}\x00{path}".encode(), digest_size=16).digest()
    return np.random.Generator(np.random.Philox(key=int.from_bytes(digest, "little")))


@dataclass(frozen=True)
class ParamInfo:
    """What an initializer knows of the parameter it fills."""

    path: str
    native_name: str
    role: str
    axes: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def receptive_field(self) -> int:
        return math.prod(d for d, a in zip(self.shape, self.axes) if a == "space")

    @property
    def fan_in(self) -> int:
        """Inputs feeding one output: the product of ``in`` axes times the receptive field."""
        return math.prod(d for d, a in zip(self.shape, self.axes) if a == "in") * self.receptive_field

    @property
    def fan_out(self) -> int:
        """Outputs fed by one input: the product of ``out`` axes times the receptive field."""
        return math.prod(d for d, a in zip(self.shape, self.axes) if a == "out") * self.receptive_field

    def require_fans(self, initializer: str) -> tuple[int, int]:
        """``(fan_in, fan_out)``, or an :class:`~polyparam.errors.InitializerError` if undefined."""
        if "in" not in self.axes or "out" not in self.axes:
            msg = (f"Cannot initialize parameter {self.path!r} with {initializer}: expected a parameter "
                   f"with input and output axes (2-D or more), got shape {self.shape} with axes {self.axes}. "
                   "Use a fan-free initializer (Uniform, Normal, Constant) for it.")
            raise errors.InitializerError(msg, path=self.path, expected="in and out axes", got=self.axes)
        return self.fan_in, self.fan_out


_CURRENT: contextvars.ContextVar[tuple[np.random.Generator, ParamInfo]] = contextvars.ContextVar("polyparam_init")

_CONVENTIONAL = {"bias": 0.0, "scale": 1.0, "shift": 0.0, "running_mean": 0.0, "running_var": 1.0}


def _keras_style(obj: Initializer) -> bool:
    return type(obj).__call__ is not Initializer.__call__


class Initializer:
    """Base class of initializers. Override :meth:`init_weight` (or ``__call__``, Keras style)."""

    #: Built-ins set this: they validate before writing, so they may fill the
    #: framework's storage in place. Custom initializers fill a scratch array first.
    _writes_in_place = False

    # ---- what the running initializer can see ------------------------------------

    @property
    def rng(self) -> np.random.Generator:
        """The generator of the parameter being filled (keyed by seed and path)."""
        current = _CURRENT.get(None)
        return current[0] if current is not None else np.random.default_rng()

    @property
    def param(self) -> ParamInfo | None:
        """The parameter being filled, or ``None`` outside of a fill."""
        current = _CURRENT.get(None)
        return current[1] if current is not None else None

    # ---- the template ------------------------------------------------------------

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        """Raise :class:`~polyparam.errors.InitializerError` if this initializer cannot fill ``info``.

        Called for every parameter before the first one is written.
        """

    def fill(self, arr: np.ndarray, info: ParamInfo, /, *, rng: np.random.Generator, by_role: bool = True) -> None:
        """Fill ``arr`` (canonical layout) for the parameter ``info``."""
        token = _CURRENT.set((rng, info))
        try:
            role = info.role if by_role else "weight"
            if role in _CONVENTIONAL:
                getattr(self, f"init_{role}")(info.native_name, arr)
            elif _keras_style(self):
                arr[...] = _checked_result(self(info.shape, info.dtype), info, type(self).__name__)
            else:
                self.init_weight(info.native_name, arr)
        finally:
            _CURRENT.reset(token)

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        """Fill a weight in place. ``name`` is the framework's name; ``self.param.path`` the canonical one."""
        legacy = getattr(self, "_init_weight", None)  # Gluon spelling
        if legacy is not None:
            legacy(name, arr)
            return
        msg = f"{type(self).__name__} must override init_weight(name, arr) or __call__(shape, dtype)."
        raise NotImplementedError(msg)

    def init_bias(self, name: str, arr: np.ndarray, /) -> None:
        arr[...] = 0

    def init_scale(self, name: str, arr: np.ndarray, /) -> None:
        arr[...] = 1

    def init_shift(self, name: str, arr: np.ndarray, /) -> None:
        arr[...] = 0

    def init_running_mean(self, name: str, arr: np.ndarray, /) -> None:
        arr[...] = 0

    def init_running_var(self, name: str, arr: np.ndarray, /) -> None:
        arr[...] = 1

    def __call__(self, shape: tuple[int, ...], dtype: Any = "float32") -> np.ndarray:
        """Keras style: a new array of ``shape`` filled as a weight in canonical layout."""
        info = ParamInfo(path="", native_name="", role="weight", axes=_default_axes(len(shape)),
                         shape=tuple(shape), dtype=np.dtype(dtype))
        self.check(info)
        current = _CURRENT.get(None)
        rng = current[0] if current is not None else np.random.default_rng()
        arr = np.empty(shape, dtype)
        self.fill(arr, info, rng=rng)
        return arr

    def config(self) -> dict[str, Any]:
        """The arguments that rebuild this initializer."""
        return dict(getattr(self, "_config", {}))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def _default_axes(ndim: int) -> tuple[str, ...]:
    from polyparam._parameter import default_axes

    return default_axes("weight", ndim)


def _checked_result(value: Any, info: ParamInfo, who: str) -> np.ndarray:
    array = np.asarray(value)
    if array.shape != info.shape:
        msg = (f"Cannot initialize parameter {info.path!r} with {who}: expected an array of shape {info.shape}, "
               f"got {array.shape}. Return np.ndarray of the `shape` argument.")
        raise errors.InitializerError(msg, path=info.path, expected=info.shape, got=array.shape)
    if array.dtype.kind in "OSUV" or not np.can_cast(array.dtype, info.dtype, casting="same_kind"):
        msg = (f"Cannot initialize parameter {info.path!r} with {who}: expected dtype {info.dtype.name!r}, "
               f"got {array.dtype.name!r}. Return an array of the `dtype` argument.")
        raise errors.InitializerError(msg, path=info.path, expected=info.dtype, got=array.dtype)
    return array


class _CallableInitializer(Initializer):
    """Wraps a plain callable ``fn(shape, dtype[, rng])`` returning an array."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        try:
            self._takes_rng = "rng" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            self._takes_rng = False

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        info = self.param
        kwargs = {"rng": self.rng} if self._takes_rng else {}
        arr[...] = _checked_result(self._fn(arr.shape, arr.dtype, **kwargs), info, repr(self._fn))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._fn!r})"


def as_initializer(init: Initializer | Callable[..., Any] | str | None) -> Initializer:
    """Turn what users pass to ``initialize`` into an :class:`Initializer`.

    ``None`` gives the default, ``Uniform(0.07)`` for weights and the conventional
    values for the other roles (Gluon's default).
    """
    if init is None:
        return Uniform()
    if isinstance(init, Initializer):
        return init
    if isinstance(init, str):
        return _from_name(init)
    if callable(init):
        return _CallableInitializer(init)
    msg = (f"Invalid value for argument `init`: expected a polyparam Initializer, a callable "
           f"(shape, dtype) -> array or a name. Received: init={init!r}.")
    raise errors.InitializerError(msg, expected="initializer", got=init)


# ---- built-ins -------------------------------------------------------------------


def _draw_into(arr: np.ndarray, draw: Callable[..., Any]) -> None:
    """Draw float values in C order of the canonical shape straight into ``arr`` when possible."""
    if arr.dtype in (np.float32, np.float64) and arr.flags.c_contiguous and arr.flags.writeable:
        draw(out=arr, dtype=arr.dtype)
        return
    dtype = np.float64 if arr.dtype == np.float64 else np.float32
    scratch = np.empty(arr.shape, dtype)
    draw(out=scratch, dtype=dtype)
    arr[...] = scratch


def _non_negative(name: str, value: float, owner: str) -> float:
    value = float(value)
    if not value >= 0:
        msg = f"Invalid value for argument `{name}` of {owner}: expected a number >= 0. Received: {name}={value!r}."
        raise errors.InitializerError(msg, expected=">= 0", got=value)
    return value


class _BuiltIn(Initializer):
    _writes_in_place = True


class Zero(_BuiltIn):
    """Weights 0."""

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        arr[...] = 0


class One(_BuiltIn):
    """Weights 1."""

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        arr[...] = 1


class Constant(_BuiltIn):
    """Weights set to ``value`` (a number, or an array that broadcasts to the weight)."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self._config = {"value": value}

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        try:
            np.broadcast_shapes(np.shape(self.value), info.shape)
        except ValueError:
            msg = (f"Cannot initialize parameter {info.path!r} with Constant: expected a value that broadcasts "
                   f"to {info.shape}, got shape {np.shape(self.value)}. Pass a scalar.")
            raise errors.InitializerError(msg, path=info.path, expected=info.shape, got=np.shape(self.value)) from None

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        arr[...] = self.value


class Uniform(_BuiltIn):
    """Weights from U(-scale, scale); Gluon's default with ``scale=0.07``."""

    def __init__(self, scale: float = 0.07) -> None:
        self.scale = _non_negative("scale", scale, "Uniform")
        self._config = {"scale": scale}

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        _uniform(arr, self.rng, self.scale)


class Normal(_BuiltIn):
    """Weights from N(0, sigma^2)."""

    def __init__(self, sigma: float = 0.01) -> None:
        self.sigma = _non_negative("sigma", sigma, "Normal")
        self._config = {"sigma": sigma}

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        _normal(arr, self.rng, self.sigma)


def _uniform(arr: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    _draw_into(arr, rng.random)          # [0, 1)
    arr *= 2 * scale
    arr -= scale


def _normal(arr: np.ndarray, rng: np.random.Generator, sigma: float) -> None:
    _draw_into(arr, rng.standard_normal)
    arr *= sigma


class Xavier(_BuiltIn):
    """Glorot/Xavier with Gluon's arguments; fans come from the parameter's axis roles.

    ``scale = sqrt(magnitude / factor)`` with ``factor`` the average of the fans
    (``"avg"``), ``fan_in`` (``"in"``) or ``fan_out`` (``"out"``); values from
    U(-scale, scale) (``rnd_type="uniform"``) or N(0, scale^2) (``"gaussian"``).
    """

    def __init__(self, rnd_type: str = "uniform", factor_type: str = "avg", magnitude: float = 3) -> None:
        if rnd_type not in ("uniform", "gaussian"):
            msg = f"Invalid value for argument `rnd_type`: expected one of ('uniform', 'gaussian'). Received: rnd_type={rnd_type!r}."
            raise errors.InitializerError(msg, expected=("uniform", "gaussian"), got=rnd_type)
        if factor_type not in ("avg", "in", "out"):
            msg = f"Invalid value for argument `factor_type`: expected one of ('avg', 'in', 'out'). Received: factor_type={factor_type!r}."
            raise errors.InitializerError(msg, expected=("avg", "in", "out"), got=factor_type)
        self.rnd_type, self.factor_type = rnd_type, factor_type
        self.magnitude = _non_negative("magnitude", magnitude, "Xavier")
        self._config = {"rnd_type": rnd_type, "factor_type": factor_type, "magnitude": magnitude}

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        if not by_role or info.role in ("weight", "other"):
            info.require_fans("Xavier")

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        fan_in, fan_out = self.param.require_fans("Xavier")
        factor = {"avg": (fan_in + fan_out) / 2.0, "in": fan_in, "out": fan_out}[self.factor_type]
        scale = math.sqrt(self.magnitude / factor)
        if self.rnd_type == "uniform":
            _uniform(arr, self.rng, scale)
        else:
            _normal(arr, self.rng, scale)


_NAMES: dict[str, type[Initializer]] = {
    "zero": Zero, "zeros": Zero, "one": One, "ones": One, "constant": Constant,
    "uniform": Uniform, "normal": Normal, "xavier": Xavier, "glorot": Xavier,
}


def _from_name(name: str) -> Initializer:
    cls = _NAMES.get(name.lower())
    if cls is None:
        msg = f"Invalid value for argument `init`: expected one of {sorted(_NAMES)}. Received: init={name!r}."
        raise errors.InitializerError(msg, expected=sorted(_NAMES), got=name)
    return cls()

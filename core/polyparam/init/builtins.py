"""The built-in initializers, with Gluon's (and Keras'/PyTorch's) arguments."""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

from polyparam import errors
from polyparam.init.base import _CONVENTIONAL, _CURRENT, Initializer, ParamInfo, _own_fill, register
from polyparam.init.streams import _normal_kernel, _uniform_kernel

__all__ = ["Bilinear", "Constant", "Dirac", "Glorot", "He", "Identity", "Kaiming", "LeCun", "MSRAPrelu", "Normal",
           "One", "Orthogonal", "TruncatedNormal", "Uniform", "VarianceScaling", "Xavier", "Zero", "calculate_gain"]


# ---- built-ins -------------------------------------------------------------------------


def _number(name: str, value: Any, owner: str, *, minimum: float | None = None, finite: bool = True) -> float:
    """``value`` as a float, or :class:`~polyparam.errors.InitializerError` when built.

    Refused: strings, bools, what ``float()`` refuses, NaN, infinities (unless not
    ``finite``) and values under ``minimum``, so no argument can fill a parameter with NaN.
    """
    number: float | None = None
    if not isinstance(value, (str, bytes, bool, np.bool_)):
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            number = None
    if number is not None and not math.isnan(number) and (math.isfinite(number) or not finite) and (
            minimum is None or number >= minimum):
        return number
    kind = "a finite number" if finite else "a number (not NaN)"
    bound = f" >= {minimum:g}" if minimum is not None else ""
    shown = repr(value) if len(repr(value)) <= 80 else f"{repr(value)[:77]}..."
    msg = (f"Invalid value for argument `{name}` of {owner}: expected {kind}{bound}. Received: {name}={shown}. "
           f"Pass a float{bound}.")
    raise errors.InitializerError(msg, expected=f"{kind}{bound}", got=value)


def _non_negative(name: str, value: Any, owner: str) -> float:
    return _number(name, value, owner, minimum=0)


def _positive_int(name: str, value: Any, owner: str) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and value >= 1:
        return int(value)
    msg = f"Invalid value for argument `{name}` of {owner}: expected an int >= 1. Received: {name}={value!r}."
    raise errors.InitializerError(msg, expected="an int >= 1", got=value)


def _choice(name: str, value: str, options: Sequence[str]) -> str:
    if value not in options:
        msg = f"Invalid value for argument `{name}`: expected one of {tuple(options)}. Received: {name}={value!r}."
        raise errors.InitializerError(msg, expected=tuple(options), got=value)
    return value


class _BuiltIn(Initializer):
    _writes_in_place = True

    @property
    def _fills_every_element(self) -> bool:
        # each built-in writes the whole array; a subclass defined elsewhere, or a method replaced, may not
        return _own_fill(self, __name__)


@register("zero", "zeros")
class Zero(_BuiltIn):
    """Weights 0."""

    _region_safe = True

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        arr[...] = 0


@register("one", "ones")
class One(_BuiltIn):
    """Weights 1."""

    _region_safe = True

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        arr[...] = 1


@register("constant")
class Constant(_BuiltIn):
    """Weights set to ``value`` (a number, or an array that broadcasts to the weight)."""

    _region_safe = True

    def __init__(self, value: Any) -> None:
        if hasattr(value, "asnumpy"):   # an MXNet NDArray, as mx.init.Constant takes
            value = value.asnumpy()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")      # NumPy < 1.24 warns on ragged lists
                kind = np.asarray(value).dtype.kind
        except (TypeError, ValueError, Warning):
            kind = "O"
        if kind not in "biufc":
            shown = repr(value) if len(repr(value)) <= 80 else f"{repr(value)[:77]}..."
            msg = (f"Invalid value for argument `value` of Constant: expected a number or a numeric array. "
                   f"Received: value={shown}. Pass a float, e.g. Constant(0.1).")
            raise errors.InitializerError(msg, expected="a number or numeric array", got=value)
        self.value = value

    def config(self) -> dict[str, Any]:
        """Gluon's JSON form: an array value as a (nested) list, ``["constant", {"value": [1.0, 1.0]}]``."""
        value = self.value
        return {"value": value.tolist() if isinstance(value, np.ndarray) else value}

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        if by_role and info.role in _CONVENTIONAL:
            return   # filled by role (a bias gets zeros), not with the value
        try:
            np.broadcast_shapes(np.shape(self.value), info.shape)
        except ValueError:
            msg = (f"Cannot initialize parameter {info.path!r} with Constant: expected a value that broadcasts "
                   f"to {info.shape}, got shape {np.shape(self.value)}. Pass a scalar.")
            raise errors.InitializerError(msg, path=info.path, expected=info.shape, got=np.shape(self.value)) from None

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        current = _CURRENT.get(None)
        if current is not None and current.region is not None and np.ndim(self.value):
            box = tuple(slice(a, b) for a, b in current.region)
            arr[...] = np.broadcast_to(np.asarray(self.value), current.info.shape)[box]
        else:
            arr[...] = self.value


@register("uniform")
class Uniform(_BuiltIn):
    """Weights from U(-scale, scale) (Gluon's default, ``scale=0.07``), or from U(low, high).

    ``Uniform(low=0, high=1)`` is the asymmetric form of torch's ``uniform_(a, b)`` and
    Keras' ``RandomUniform(minval, maxval)``; give both bounds, or neither.
    """

    _region_safe = True

    def __init__(self, scale: float = 0.07, *, low: float | None = None, high: float | None = None) -> None:
        self.scale = _non_negative("scale", scale, "Uniform")
        if (low is None) != (high is None):
            msg = ("Invalid arguments of Uniform: expected both low and high, or neither. "
                   f"Received: low={low!r}, high={high!r}.")
            raise errors.InitializerError(msg, expected="low and high", got=(low, high))
        self.low = None if low is None else _number("low", low, "Uniform")
        self.high = None if high is None else _number("high", high, "Uniform")
        if self.low is not None and self.high is not None and self.low > self.high:
            msg = f"Invalid arguments of Uniform: expected low <= high. Received: low={low!r}, high={high!r}."
            raise errors.InitializerError(msg, expected="low <= high", got=(low, high))

    @property
    def _bounds(self) -> tuple[float, float]:
        if self.low is not None and self.high is not None:
            return self.low, self.high
        return -self.scale, self.scale

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        low, high = self._bounds
        if (not by_role or info.role not in _CONVENTIONAL) and info.dtype.kind == "f" and (
                high - low > float(np.finfo(info.dtype).max) or max(abs(low), abs(high)) > np.finfo(info.dtype).max):
            msg = (f"Cannot initialize parameter {info.path!r} with {self!r}: expected a range that "
                   f"{info.dtype.name} can hold, got a width of {high - low!r}, which would fill it with "
                   "infinities and NaN. Pass a smaller range.")
            raise errors.InitializerError(msg, path=info.path, expected=f"a width <= {np.finfo(info.dtype).max}",
                                          got=high - low)

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        self._stream_fill(arr, _uniform_kernel(*self._bounds))


@register("normal", "gaussian")
class Normal(_BuiltIn):
    """Weights from N(mean, sigma^2) (Box-Muller on the parameter's streams)."""

    _region_safe = True

    def __init__(self, sigma: float = 0.01, mean: float = 0.0) -> None:
        self.sigma = _non_negative("sigma", sigma, "Normal")
        self.mean = _number("mean", mean, "Normal")

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        self._stream_fill(arr, _normal_kernel(self.mean, self.sigma))


@register("truncated_normal", "truncnorm")
class TruncatedNormal(_BuiltIn):
    """Weights from N(mean, sigma^2) truncated to ``[mean + a*sigma, mean + b*sigma]`` (default +-2 sigma).

    Out-of-range draws are redrawn (Keras and PyTorch do the same).
    """

    _region_safe = True

    def __init__(self, sigma: float = 0.05, mean: float = 0.0, a: float = -2.0, b: float = 2.0) -> None:
        self.sigma = _non_negative("sigma", sigma, "TruncatedNormal")
        self.mean = _number("mean", mean, "TruncatedNormal")
        self.a = _number("a", a, "TruncatedNormal", finite=False)   # infinite bounds: no truncation on that side
        self.b = _number("b", b, "TruncatedNormal", finite=False)
        if not self.a < self.b or self.b - self.a < 0.1:
            msg = (f"Invalid value for arguments `a`, `b` of TruncatedNormal: expected a < b - 0.1. "
                   f"Received: a={a!r}, b={b!r}.")
            raise errors.InitializerError(msg, expected="a < b", got=(a, b))

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        self._stream_fill(arr, _normal_kernel(self.mean, self.sigma, self.a, self.b))


class _FanBased(_BuiltIn):
    """Shared by every initializer whose scale comes from the fans."""

    label = "a fan-based initializer"

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        if not by_role or info.role in ("weight", "other"):
            info.require_fans(type(self).__name__)

    def _fans(self) -> tuple[int, int]:
        return self.param.require_fans(type(self).__name__)  # type: ignore[union-attr]  # set while filling


@register("variance_scaling")
class VarianceScaling(_FanBased):
    """Keras' VarianceScaling: variance ``scale / n`` with ``n`` the fan of ``mode``.

    Args:
        scale: Variance multiplier.
        mode: ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"``.
        distribution: ``"truncated_normal"`` (+-2 std, std corrected by 0.8796...),
            ``"untruncated_normal"`` or ``"uniform"``.
    """

    _region_safe = True

    def __init__(self, scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal") -> None:
        self.scale = _non_negative("scale", scale, "VarianceScaling")
        self.mode = _choice("mode", mode, ("fan_in", "fan_out", "fan_avg"))
        self.distribution = _choice("distribution", distribution, ("truncated_normal", "untruncated_normal", "uniform"))

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        fan_in, fan_out = self._fans()
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, n)
        if self.distribution == "uniform":
            limit = math.sqrt(3 * variance)
            self._stream_fill(arr, _uniform_kernel(-limit, limit))
        elif self.distribution == "untruncated_normal":
            self._stream_fill(arr, _normal_kernel(0.0, math.sqrt(variance)))
        else:
            self._stream_fill(arr, _normal_kernel(0.0, math.sqrt(variance) / 0.87962566103423978, -2.0, 2.0))


@register("xavier", "glorot")
class Xavier(_FanBased):
    """Glorot/Xavier with Gluon's arguments.

    ``scale = sqrt(magnitude / factor)`` with ``factor`` the average of the fans
    (``"avg"``), ``fan_in`` (``"in"``) or ``fan_out`` (``"out"``); values from
    U(-scale, scale) (``rnd_type="uniform"``) or N(0, scale^2) (``"gaussian"``).
    The defaults are Glorot uniform.
    """

    _region_safe = True

    def __init__(self, rnd_type: str = "uniform", factor_type: str = "avg", magnitude: float = 3) -> None:
        self.rnd_type = _choice("rnd_type", rnd_type, ("uniform", "gaussian"))
        self.factor_type = _choice("factor_type", factor_type, ("avg", "in", "out"))
        self.magnitude = _non_negative("magnitude", magnitude, "Xavier")

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        fan_in, fan_out = self._fans()
        factor = {"avg": (fan_in + fan_out) / 2.0, "in": fan_in, "out": fan_out}[self.factor_type]
        scale = math.sqrt(self.magnitude / factor)
        if self.rnd_type == "uniform":
            self._stream_fill(arr, _uniform_kernel(-scale, scale))
        else:
            self._stream_fill(arr, _normal_kernel(0.0, scale))


def Glorot(distribution: str = "uniform") -> Xavier:  # noqa: N802 - a constructor, like Keras' GlorotUniform
    """Glorot (Xavier) with Keras' argument: ``distribution="uniform"`` or ``"normal"``."""
    return Xavier(rnd_type="gaussian" if _choice("distribution", distribution, ("uniform", "normal")) == "normal"
                  else "uniform", factor_type="avg", magnitude=3 if distribution == "uniform" else 1)


@register("msraprelu", "msra")
class MSRAPrelu(Xavier):
    """Gluon's MSRAPrelu: gaussian Xavier with ``magnitude = 2 / (1 + slope^2)``."""

    def __init__(self, factor_type: str = "avg", slope: float = 0.25) -> None:
        s = _number("slope", slope, "MSRAPrelu")
        super().__init__(rnd_type="gaussian", factor_type=factor_type, magnitude=2.0 / (1 + s * s))
        self._config = {"factor_type": factor_type, "slope": slope}


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for ``nonlinearity``, as ``torch.nn.init.calculate_gain``."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
              "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else _number("param", param, "calculate_gain")
        return math.sqrt(2.0 / (1 + slope * slope))
    if nonlinearity == "selu":
        return 3.0 / 4
    names = (*linear, "tanh", "relu", "leaky_relu", "selu")
    msg = (f"Invalid value for argument `nonlinearity`: expected one of {names}. "
           f"Received: nonlinearity={nonlinearity!r}.")
    raise errors.InitializerError(msg, expected="a nonlinearity name", got=nonlinearity)


@register("he", "kaiming")
class He(_FanBased):
    """He/Kaiming with PyTorch's arguments: ``std = gain / sqrt(fan)``.

    Args:
        a: The negative slope for ``"leaky_relu"``.
        mode: ``"fan_in"`` (preserve forward variance) or ``"fan_out"`` (backward).
        nonlinearity: Anything :func:`calculate_gain` accepts.
        distribution: ``"uniform"`` (bound ``sqrt(3) * std``) or ``"normal"``.
    """

    _region_safe = True

    def __init__(self, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                 distribution: str = "uniform") -> None:
        self.a = _number("a", a, "He")
        self.mode = _choice("mode", mode, ("fan_in", "fan_out"))
        self.gain = calculate_gain(nonlinearity, a)
        self.distribution = _choice("distribution", distribution, ("uniform", "normal"))

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        fan_in, fan_out = self._fans()
        std = self.gain / math.sqrt(fan_in if self.mode == "fan_in" else fan_out)
        if self.distribution == "uniform":
            bound = math.sqrt(3.0) * std
            self._stream_fill(arr, _uniform_kernel(-bound, bound))
        else:
            self._stream_fill(arr, _normal_kernel(0.0, std))


Kaiming = He


@register("lecun")
class LeCun(VarianceScaling):
    """LeCun: variance ``1 / fan_in``; ``distribution="normal"`` (truncated, as Keras) or ``"uniform"``."""

    def __init__(self, distribution: str = "normal") -> None:
        _choice("distribution", distribution, ("normal", "uniform"))
        super().__init__(scale=1.0, mode="fan_in",
                         distribution="truncated_normal" if distribution == "normal" else "uniform")
        self._config = {"distribution": distribution}


@register("orthogonal")
class Orthogonal(_BuiltIn):
    """A (semi-)orthogonal matrix times ``gain`` (trailing axes flattened), by QR of a Gaussian matrix.

    ``rows = shape[0]``; as PyTorch, the sign of R's diagonal is folded into Q so the
    result is uniformly distributed (Haar).
    """

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = _number("gain", gain, "Orthogonal")

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        if (not by_role or info.role in ("weight", "other")) and len(info.shape) < 2:
            msg = (f"Cannot initialize parameter {info.path!r} with Orthogonal: expected 2 or more dimensions, "
                   f"got shape {info.shape}. Use it on weight matrices only.")
            raise errors.InitializerError(msg, path=info.path, expected=">= 2 dimensions", got=info.shape)

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        rows = arr.shape[0]
        cols = arr.size // rows
        flat = np.empty((rows, cols) if rows >= cols else (cols, rows), np.float64)
        self._stream_fill(flat, _normal_kernel(0.0, 1.0))
        q, r = np.linalg.qr(flat)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        arr[...] = (self.gain * q).reshape(arr.shape)


@register("bilinear")
class Bilinear(_BuiltIn):
    """Bilinear upsampling kernels over the two ``space`` axes (Gluon's Bilinear), for transposed convs."""

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        if (not by_role or info.role in ("weight", "other")) and info.axes.count("space") != 2:
            msg = (f"Cannot initialize parameter {info.path!r} with Bilinear: expected a 2-D convolution kernel "
                   f"(two space axes), got axes {info.axes}. Use it on upsampling (transposed) conv weights.")
            raise errors.InitializerError(msg, path=info.path, expected="two space axes", got=info.axes)

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        axes = self.param.axes  # type: ignore[union-attr]  # set while filling
        kh, kw = (arr.shape[i] for i, a in enumerate(axes) if a == "space")
        f = math.ceil(kw / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        y, x = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
        kernel = (1 - np.abs(x / f - c)) * (1 - np.abs(y / f - c))
        shape = [d if a == "space" else 1 for d, a in zip(arr.shape, axes)]
        arr[...] = kernel.reshape(shape)


@register("dirac")
class Dirac(_BuiltIn):
    """Identity convolution kernels (``torch.nn.init.dirac_``): input channels pass through unchanged."""

    def __init__(self, groups: int = 1) -> None:
        self.groups = _positive_int("groups", groups, "Dirac")

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        if (not by_role or info.role in ("weight", "other")) and (
                not 3 <= len(info.shape) <= 5 or info.axes[:2] != ("out", "in") or info.shape[0] % self.groups):
            msg = (f"Cannot initialize parameter {info.path!r} with Dirac: expected a 3-D to 5-D conv kernel "
                   f"(out, in, *k) with out divisible by groups={self.groups}, got shape {info.shape} axes "
                   f"{info.axes}.")
            raise errors.InitializerError(msg, path=info.path, expected="(out, in, *k)", got=info.shape)

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        arr[...] = 0
        out_per_group = arr.shape[0] // self.groups
        centre = tuple(d // 2 for d in arr.shape[2:])
        for g in range(self.groups):
            for d in range(min(out_per_group, arr.shape[1])):
                index = (g * out_per_group + d, d, *centre)
                arr[index] = 1


@register("sparse")
class Sparse(_BuiltIn):
    """A sparse 2-D weight (``torch.nn.init.sparse_``): N(0, sigma^2) values, with ``ceil(sparsity * rows)``
    rows of every column set to zero (Martens, 2010).
    """

    def __init__(self, sparsity: float, sigma: float = 0.01) -> None:
        self.sparsity = _number("sparsity", sparsity, "Sparse")
        if not 0 <= self.sparsity <= 1:
            msg = ("Invalid value for argument `sparsity` of Sparse: expected 0 <= sparsity <= 1. "
                   f"Received: sparsity={sparsity!r}.")
            raise errors.InitializerError(msg, expected="a fraction", got=sparsity)
        self.sigma = _non_negative("sigma", sigma, "Sparse")

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        if (not by_role or info.role in ("weight", "other")) and len(info.shape) != 2:
            msg = (f"Cannot initialize parameter {info.path!r} with Sparse: expected a 2-D weight, got shape "
                   f"{info.shape}. Use it on dense weights only.")
            raise errors.InitializerError(msg, path=info.path, expected="2-D", got=info.shape)

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        self._stream_fill(arr, _normal_kernel(0.0, self.sigma))
        rows, cols = arr.shape
        zeros = math.ceil(self.sparsity * rows)
        rng = self.rng   # the parameter's own seeded generator: the same seed zeroes the same rows
        for col in range(cols):
            arr[rng.permutation(rows)[:zeros], col] = 0


@register("identity", "eye")
class Identity(_BuiltIn):
    """``gain`` times the identity matrix (2-D weights), as Keras' Identity."""

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = _number("gain", gain, "Identity")

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        if (not by_role or info.role in ("weight", "other")) and len(info.shape) != 2:
            msg = (f"Cannot initialize parameter {info.path!r} with Identity: expected a 2-D weight, got shape "
                   f"{info.shape}. Use Dirac for convolution kernels.")
            raise errors.InitializerError(msg, path=info.path, expected="2-D", got=info.shape)

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        rows, cols = arr.shape[0], arr.shape[1]  # check() made it 2-D
        arr[...] = self.gain * np.eye(rows, cols)



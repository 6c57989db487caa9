"""Initializers: built-ins with Gluon's (and Keras'/PyTorch's) arguments, and the base for your own.

An initializer fills NumPy arrays in canonical layout. polyparam calls it once per
parameter (once per tie group) with random streams keyed by ``(seed, canonical
path)``, so a seeded initialization gives bit-identical values on every backend, on
any device, in any order, with any number of threads.

**Streams.** The key is a 128-bit hash of the seed and the path. Built-ins fill the
parameter's C-order flat array in blocks of :data:`BLOCK` elements; block ``b`` is
drawn by Philox (a counter-based generator) with that key and its counter starting
at ``b * 2**192``, so blocks are independent and are filled in parallel threads.
Custom initializers get :attr:`Initializer.rng`, the block-0 stream
(:func:`generator_for`).

**Roles.** Parameters whose role is ``weight`` (or ``other``) get
:meth:`Initializer.init_weight`; biases, BatchNorm scale/shift and running statistics
get their conventional values (0, 1, 0, 0, 1) unless the initializer overrides
``init_bias``, ``init_scale``, ``init_shift``, ``init_running_mean`` or
``init_running_var``. An initializer given to one parameter
(``tree["0.bias"].initialize(init)``) fills it as a weight, as in Gluon.

**Fans** come from the parameter's axis roles (``out``, ``in``, ``space``) and its
``groups``, never from axis positions: see :class:`ParamInfo`.

Three styles of custom initializer are accepted::

    class MyInit(pp.init.Initializer):          # Gluon style: fill in place
        def init_weight(self, name, arr):
            arr[:] = self.rng.uniform(-10, 10, arr.shape)

    class KerasStyle(pp.init.Initializer):      # Keras style: return an array
        def __call__(self, shape, dtype):
            return np.full(shape, 0.5, dtype)

    def plain(shape, dtype):                    # any callable (shape, dtype[, rng]) -> array
        return np.zeros(shape, dtype)

Every built-in and every class registered with :func:`register` has a name for
:func:`get` and a JSON form (:func:`dumps` / :func:`loads`, Gluon's
``["name", {kwargs}]``).
"""

from __future__ import annotations

import contextvars
import fnmatch
import hashlib
import inspect
import json
import math
import os
import re
import secrets
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from polyparam import errors
from polyparam._threads import parallel_map

__all__ = [
    "BLOCK",
    "Bilinear",
    "Constant",
    "Dirac",
    "Glorot",
    "He",
    "Identity",
    "Initializer",
    "Kaiming",
    "LeCun",
    "Load",
    "MSRAPrelu",
    "Mixed",
    "Normal",
    "One",
    "Orthogonal",
    "ParamInfo",
    "TruncatedNormal",
    "Uniform",
    "VarianceScaling",
    "Xavier",
    "Zero",
    "as_initializer",
    "calculate_gain",
    "dumps",
    "generator_for",
    "get",
    "loads",
    "register",
    "stream_key",
]

#: Elements per random-stream block. Part of what seeded values are: never change it.
BLOCK = 1 << 20


# ---- streams -----------------------------------------------------------------------


def stream_key(seed: int, path: str) -> int:
    """The 128-bit Philox key of one parameter: a hash of ``(seed, canonical path)``."""
    digest = hashlib.blake2b(f"{int(seed)}\x00{path}".encode(), digest_size=16).digest()
    return int.from_bytes(digest, "little")


def _block_generator(key: int, block: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(key=key, counter=[0, 0, 0, block]))


def generator_for(seed: int, path: str) -> np.random.Generator:
    """The counter-based generator of one parameter (its block-0 stream), keyed by ``(seed, path)``."""
    return _block_generator(stream_key(seed, path), 0)


def _fill_streams(arr: np.ndarray, key: int, kernel: Callable[[np.random.Generator, np.ndarray], None]) -> None:
    """Fill ``arr`` block by block, each block from its own counter range of the key's stream.

    Values depend only on the key and the C-order position, not on threads or memory layout.
    A C-contiguous float array is drawn into directly; any other (a strided view of a
    native layout, another dtype) gets each block drawn in :data:`_CHUNK`-element pieces
    into a small scratch and scattered to its place, so no whole-array copy is made.
    """
    dtype = np.float64 if arr.dtype == np.float64 else np.float32
    size = arr.size
    blocks = -(-size // BLOCK)
    if arr.dtype == dtype and arr.flags.c_contiguous and arr.flags.writeable:
        flat = arr.reshape(-1)

        def run(b: int) -> None:
            kernel(_block_generator(key, b), flat[b * BLOCK:(b + 1) * BLOCK])
    else:
        def run(b: int) -> None:
            # kernels consume their generator slice by slice, so drawing a block in pieces
            # of whole slices gives the values of drawing it at once
            g = _block_generator(key, b)
            lo, hi = b * BLOCK, min((b + 1) * BLOCK, size)
            scratch = np.empty(min(_CHUNK, hi - lo), dtype)
            for start in range(lo, hi, _CHUNK):
                piece = scratch[:min(_CHUNK, hi - start)]
                kernel(g, piece)
                _scatter(arr, start, piece)

    parallel_map(run, range(blocks))


def _scatter(arr: np.ndarray, start: int, values: np.ndarray) -> None:
    """Write the 1-D ``values`` to the C-order flat positions ``start, start + 1, ...`` of ``arr`` (any strides)."""
    n = values.size
    if n == 0:
        return
    if arr.ndim <= 1:
        arr.reshape(-1)[start:start + n] = values   # 0-d and 1-d arrays reshape to views
        return
    inner = math.prod(arr.shape[1:])
    first, end = start // inner, start + n
    if start % inner:                                # a partial leading sub-array
        take = min(n, inner - start % inner)
        _scatter(arr[first], start % inner, values[:take])
        values, start, first = values[take:], start + take, first + 1
    whole = (end - start) // inner
    if whole:
        arr[first:first + whole] = values[:whole * inner].reshape((whole, *arr.shape[1:]))
    if (end - start) % inner:                        # a partial trailing sub-array
        _scatter(arr[first + whole], 0, values[whole * inner:])


def _region(index: Sequence[slice], shape: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """``index`` (one step-1 slice per axis) as ``((start, stop), ...)`` within ``shape``."""
    index = tuple(index)
    if len(index) != len(shape) or not all(isinstance(s, slice) and s.step in (None, 1) for s in index):
        msg = (f"Invalid value for argument `index`: expected one slice with step 1 per axis of shape "
               f"{tuple(shape)}. Received: index={index!r}.")
        raise errors.InitializerError(msg, expected="tuple of slices", got=index)
    return tuple(s.indices(int(d))[:2] for s, d in zip(index, shape))


def _fill_region_streams(arr: np.ndarray, key: int, kernel: Callable[[np.random.Generator, np.ndarray], None],
                         shape: Sequence[int], region: Sequence[tuple[int, int]]) -> None:
    """Fill ``arr`` with the box ``region`` of what :func:`_fill_streams` gives an array of ``shape``.

    Only the blocks the box overlaps are drawn, each into its own scratch block
    (so memory is ``BLOCK`` elements per thread, whatever the array's size).
    """
    shape = tuple(int(d) for d in shape)
    lengths = tuple(max(0, b - a) for a, b in region)
    if arr.shape != lengths:
        msg = f"Cannot fill a slice of shape {arr.shape}: expected the box's shape {lengths}."
        raise errors.InitializerError(msg, expected=lengths, got=arr.shape)
    if math.prod(lengths) == 0:
        return
    if lengths == shape:
        _fill_streams(arr, key, kernel)
        return
    dtype = np.float64 if arr.dtype == np.float64 else np.float32
    total = math.prod(shape)
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    # the box as runs of the flat array: axes after the last partial one are whole
    k = max(i for i, (d, n) in enumerate(zip(shape, lengths)) if n != d)
    run = lengths[k] * strides[k]
    outer = lengths[:k]
    starts = np.full(math.prod(outer), region[k][0] * strides[k], dtype=np.int64)
    if outer:
        grids = np.indices(outer, dtype=np.int64).reshape(len(outer), -1)
        for i in range(len(outer)):
            starts += (grids[i] + region[i][0]) * strides[i]
        del grids
    ends = starts + run
    direct = arr.dtype == dtype and arr.flags.c_contiguous and arr.flags.writeable
    target = arr if direct else np.empty(arr.shape, dtype)
    rows = target.reshape(len(starts), run)
    first, last = int(starts[0]) // BLOCK, (int(ends[-1]) - 1) // BLOCK
    offsets = np.arange(min(run, BLOCK), dtype=np.int64)  # runs inside one block are at most BLOCK long

    def block(b: int) -> None:
        lo_flat, hi_flat = b * BLOCK, min((b + 1) * BLOCK, total)
        lo = int(np.searchsorted(ends, lo_flat, side="right"))
        hi = int(np.searchsorted(starts, hi_flat, side="left"))
        if lo >= hi:
            return
        if hi - lo == 1 and starts[lo] <= lo_flat and hi_flat <= ends[lo]:  # the block lies in one run: in place
            kernel(_block_generator(key, b), rows[lo, lo_flat - int(starts[lo]):hi_flat - int(starts[lo])])
            return
        values = np.empty(hi_flat - lo_flat, dtype)
        kernel(_block_generator(key, b), values)
        inside = np.flatnonzero((starts[lo:hi] >= lo_flat) & (ends[lo:hi] <= hi_flat)) + lo
        if inside.size:
            rows[inside] = values[(starts[inside] - lo_flat)[:, None] + offsets]
        for r in sorted({lo, hi - 1}):   # runs cut by the block's edges
            if lo_flat <= starts[r] and ends[r] <= hi_flat:
                continue
            a, e = max(int(starts[r]), lo_flat), min(int(ends[r]), hi_flat)
            rows[r, a - int(starts[r]):e - int(starts[r])] = values[a - lo_flat:e - lo_flat]

    parallel_map(block, range(first, last + 1))
    if not direct:
        arr[...] = target


#: Kernels work through a block in slices of this many elements (cache-sized; keeps
#: Box-Muller's scratch small). Part of what seeded normal values are.
_SLICE = 1 << 16

#: Elements drawn at a time into scratch when the target is not a contiguous float
#: array (a whole number of slices; its size only sets memory and speed, not values).
_CHUNK = 1 << 19


def _uniform_kernel(low: float, high: float) -> Callable[[np.random.Generator, np.ndarray], None]:
    def kernel(g: np.random.Generator, block: np.ndarray) -> None:
        scale, shift = block.dtype.type(high - low), block.dtype.type(low)
        for start in range(0, block.size, _SLICE):   # scale each slice while it is in cache
            v = block[start:start + _SLICE]
            g.random(out=v, dtype=v.dtype)
            v *= scale
            v += shift

    return kernel


def _box_muller(g: np.random.Generator, n: int, dtype: np.dtype, out: np.ndarray | None = None) -> np.ndarray:
    """``n`` standard normals by the Box-Muller transform of ``2 * ceil(n / 2)`` uniforms (exact)."""
    h = (n + 1) // 2
    u = g.random(2 * h, dtype=dtype)
    radius, angle = u[:h], u[h:]
    np.subtract(1, radius, out=radius)          # (0, 1]: log is finite
    np.log(radius, out=radius)
    radius *= -2
    np.sqrt(radius, out=radius)
    angle *= dtype.type(2 * np.pi)
    out = np.empty(n, dtype) if out is None else out
    cos = np.cos(angle)
    np.multiply(radius, cos, out=cos)
    np.sin(angle, out=angle)
    angle *= radius
    out[:h] = cos
    out[h:] = angle[:n - h]
    return out


def _normal_kernel(mean: float, std: float, low: float | None = None,
                   high: float | None = None) -> Callable[[np.random.Generator, np.ndarray], None]:
    """N(mean, std^2), optionally truncated to [low, high] (in standard deviations) by redrawing."""

    def kernel(g: np.random.Generator, block: np.ndarray) -> None:
        for start in range(0, block.size, _SLICE):
            v = block[start:start + _SLICE]
            _box_muller(g, v.size, v.dtype, out=v)
            if low is not None:
                bad = np.flatnonzero((v < low) | (v > high))
                while bad.size:
                    redraw = _box_muller(g, bad.size, v.dtype)
                    v[bad] = redraw
                    bad = bad[(redraw < low) | (redraw > high)]
        block *= block.dtype.type(std)
        if mean:
            block += block.dtype.type(mean)

    return kernel


# ---- what an initializer sees ---------------------------------------------------------


@dataclass(frozen=True)
class ParamInfo:
    """What an initializer knows of the parameter it fills.

    Fans: ``fan_in`` is the product of the ``in`` axes, ``fan_out`` of the ``out`` axes,
    each times the receptive field (the product of ``space`` axes). For grouped
    convolutions (``groups > 1``) the first channel axis holds the full channel count
    and the second the per-group count (canonical layout: conv ``(out, in/g, *k)``,
    transposed conv ``(in, out/g, *k)``), so the first one's fan is divided by ``groups``.
    """

    path: str
    native_name: str
    role: str
    axes: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype
    groups: int = 1

    @property
    def receptive_field(self) -> int:
        return math.prod(d for d, a in zip(self.shape, self.axes) if a == "space")

    def _fan(self, role: str) -> int:
        channels = math.prod(d for d, a in zip(self.shape, self.axes) if a == role)
        leading = next((a for a in self.axes if a in ("in", "out")), None)
        if self.groups > 1 and leading == role:
            channels //= self.groups
        return channels * self.receptive_field

    @property
    def fan_in(self) -> int:
        """Inputs feeding one output."""
        return self._fan("in")

    @property
    def fan_out(self) -> int:
        """Outputs fed by one input."""
        return self._fan("out")

    def require_fans(self, initializer: str) -> tuple[int, int]:
        """``(fan_in, fan_out)``, or an :class:`~polyparam.errors.InitializerError` if undefined."""
        if "in" not in self.axes or "out" not in self.axes:
            msg = (f"Cannot initialize parameter {self.path!r} with {initializer}: expected a parameter "
                   f"with input and output axes (2-D or more), got shape {self.shape} with axes {self.axes}. "
                   "Use a fan-free initializer (Uniform, Normal, Constant) for it.")
            raise errors.InitializerError(msg, path=self.path, expected="in and out axes", got=self.axes)
        return self.fan_in, self.fan_out


@dataclass
class _Context:
    info: ParamInfo
    seed: int
    _rng: np.random.Generator | None = None
    #: While :meth:`Initializer.fill_slice` runs: the box of the global array being filled.
    region: tuple[tuple[int, int], ...] | None = None

    @property
    def key(self) -> int:
        return stream_key(self.seed, self.info.path)

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:
            self._rng = _block_generator(self.key, 0)
        return self._rng


_CURRENT: contextvars.ContextVar[_Context] = contextvars.ContextVar("polyparam_init")

_CONVENTIONAL = ("bias", "scale", "shift", "running_mean", "running_var")
#: The methods that decide what an initializer writes (see ``Initializer._region_safe``).
_REGION_METHODS = ("init_weight", "_init_weight", "__call__", "fill",
                   *(f"init_{role}" for role in _CONVENTIONAL))


def _default_axes(ndim: int) -> tuple[str, ...]:
    from polyparam._parameter import default_axes

    return default_axes("weight", ndim)


def _keras_style(obj: Initializer) -> bool:
    return type(obj).__call__ is not Initializer.__call__


# ---- the base class ------------------------------------------------------------------


class Initializer:
    """Base class of initializers. Override :meth:`init_weight` (or ``__call__``, Keras style).

    The arguments a subclass's ``__init__`` receives are recorded, so every
    initializer has a :meth:`config` and, once :func:`register`-ed, a JSON form.
    """

    #: Built-ins set this: they validate before writing, so they may fill the
    #: framework's storage in place. Custom initializers fill a scratch array first.
    _writes_in_place = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            original = cls.__dict__["__init__"]
            signature = inspect.signature(original)

            def __init__(self: Initializer, *args: Any, **kw: Any) -> None:
                if not hasattr(self, "_config"):
                    bound = signature.bind(self, *args, **kw)
                    bound.apply_defaults()
                    self._config = {k: v for k, v in list(bound.arguments.items())[1:]
                                    if signature.parameters[k].kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                                             inspect.Parameter.VAR_KEYWORD)}
                original(self, *args, **kw)

            __init__.__wrapped__ = original  # type: ignore[attr-defined]
            __init__.__doc__ = original.__doc__
            cls.__init__ = __init__  # type: ignore[method-assign]

    # ---- what the running initializer can see ------------------------------------

    @property
    def rng(self) -> np.random.Generator:
        """The generator of the parameter being filled (its block-0 stream, keyed by seed and path)."""
        current = _CURRENT.get(None)
        return current.rng if current is not None else np.random.default_rng()

    @property
    def param(self) -> ParamInfo | None:
        """The parameter being filled, or ``None`` outside of a fill."""
        current = _CURRENT.get(None)
        return current.info if current is not None else None

    def _stream_fill(self, arr: np.ndarray, kernel: Callable[[np.random.Generator, np.ndarray], None]) -> None:
        """Fill ``arr`` from the current parameter's block streams (parallel, order-independent)."""
        current = _CURRENT.get(None)
        key = current.key if current is not None else secrets.randbits(128)
        if current is not None and current.region is not None:
            _fill_region_streams(arr, key, kernel, current.info.shape, current.region)
        else:
            _fill_streams(arr, key, kernel)

    # ---- the template ------------------------------------------------------------

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        """Raise :class:`~polyparam.errors.InitializerError` if this initializer cannot fill ``info``.

        Called for every parameter before the first one is written.
        """

    def fill(self, arr: np.ndarray, info: ParamInfo, /, *, seed: int, by_role: bool = True) -> None:
        """Fill ``arr`` (canonical layout) for the parameter ``info`` from the streams of ``seed``."""
        self._dispatch(arr, info, _Context(info, seed), by_role)

    def fill_slice(self, arr: np.ndarray, info: ParamInfo, index: Sequence[slice], /, *, seed: int,
                   by_role: bool = True) -> None:
        """Fill ``arr`` with the box ``index`` of the values :meth:`fill` would give the whole parameter.

        For sharded parameters: each rank fills only its shard, and the shards put together
        are bit-identical to a :meth:`fill` of the whole array. ``index`` holds one
        ``slice`` (step 1) per axis of ``info.shape`` (the global shape; fans use it), and
        ``arr`` has the box's shape. Built-in stream initializers draw only the
        :data:`BLOCK`-element blocks of the flat C-order array that the box overlaps, one
        block at a time per thread (a leading-axis box is a contiguous range of blocks; a
        box on another axis overlaps most blocks: same time, bounded memory). Initializers
        that need the whole array (``Orthogonal``, ``Bilinear``, custom ones) fill a full
        scratch array and keep the box.
        """
        region = _region(index, info.shape)
        if self._fills_regions():
            self._dispatch(arr, info, _Context(info, seed, region=region), by_role)
            return
        full = np.empty(info.shape, info.dtype)
        self.fill(full, info, seed=seed, by_role=by_role)
        arr[...] = full[tuple(slice(a, b) for a, b in region)]

    #: Classes that set this in their own body declare that their ``init_*`` methods
    #: touch ``arr`` only elementwise or through :meth:`_stream_fill`, so they can fill
    #: a box of the array (see :meth:`fill_slice`). Subclasses that override a method
    #: without declaring it again fall back to a full draw.
    _region_safe = False

    def _fills_regions(self) -> bool:
        for name in _REGION_METHODS:
            owner = next((c for c in type(self).__mro__ if name in c.__dict__), None)
            if owner is not None and owner is not Initializer and not owner.__dict__.get("_region_safe", False):
                return False
        return True

    def _dispatch(self, arr: np.ndarray, info: ParamInfo, context: _Context, by_role: bool) -> None:
        token = _CURRENT.set(context)
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

    def __call__(self, shape: Sequence[int], dtype: Any = "float32") -> np.ndarray:
        """Keras style: a new array of ``shape`` filled as a weight in canonical layout."""
        shape = tuple(int(d) for d in shape)
        current = _CURRENT.get(None)
        info = current.info if current is not None and current.info.shape == shape else ParamInfo(
            path="", native_name="", role="weight", axes=_default_axes(len(shape)), shape=shape, dtype=np.dtype(dtype))
        self.check(info, by_role=False)
        arr = np.empty(shape, dtype)
        self.fill(arr, info, seed=current.seed if current is not None else secrets.randbits(63), by_role=False)
        return arr

    # ---- hooks of a whole initialize() call ----------------------------------------

    def _note(self, info: ParamInfo, /) -> None:
        """Called for every parameter an ``initialize`` call considers (deferred ones too)."""

    def _finish(self) -> None:
        """Called once at the end of an ``initialize`` call."""

    # ---- naming --------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The arguments that rebuild this initializer."""
        return dict(getattr(self, "_config", {}))

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.config() == self.config()

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


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
        kwargs = {"rng": self.rng} if self._takes_rng else {}
        arr[...] = _checked_result(self._fn(arr.shape, arr.dtype, **kwargs), self.param, repr(self._fn))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._fn!r})"


def as_initializer(init: Initializer | Callable[..., Any] | str | None) -> Initializer:
    """Turn what users pass to ``initialize`` into an :class:`Initializer`.

    ``None`` gives the default, ``Uniform(0.07)`` for weights and the conventional
    values for the other roles (Gluon's default); a string is a registered name. A
    framework's own initializer (a ``torch.nn.init`` function, a Keras initializer, an
    ``mx.init`` object) becomes the built-in with the same distribution.
    """
    if init is None:
        return Uniform()
    if isinstance(init, Initializer):
        return init
    if isinstance(init, str):
        return get(init)
    from polyparam._foreign_init import translate

    native = translate(init)
    if native is not None:
        return native
    if callable(init):
        return _CallableInitializer(init)
    msg = (f"Invalid value for argument `init`: expected a polyparam Initializer, a callable "
           f"(shape, dtype) -> array or a name. Received: init={init!r}.")
    raise errors.InitializerError(msg, expected="initializer", got=init)


# ---- registry and JSON ---------------------------------------------------------------

_REGISTRY: dict[str, type[Initializer]] = {}


def register(*names: str) -> Callable[[type[Initializer]], type[Initializer]]:
    """Class decorator: make an initializer available to :func:`get` and :func:`loads` by name.

    With no names, the lowercased class name is used::

        @pp.init.register("my_init")
        class MyInit(pp.init.Initializer): ...
    """

    def decorate(cls: type[Initializer]) -> type[Initializer]:
        if not (isinstance(cls, type) and issubclass(cls, Initializer)):
            msg = f"Invalid value for register(): expected an Initializer subclass. Received: {cls!r}."
            raise errors.InitializerError(msg, expected="Initializer subclass", got=cls)
        for name in names or (cls.__name__.lower(),):
            _REGISTRY[name.lower()] = cls
        cls._registered_name = (names or (cls.__name__.lower(),))[0].lower()  # type: ignore[attr-defined]
        return cls

    return decorate


def get(name: str, /, **kwargs: Any) -> Initializer:
    """Build a registered initializer by name: ``get("xavier", magnitude=2)``."""
    cls = _REGISTRY.get(name.lower())
    if cls is None:
        msg = (f"Invalid value for argument `name`: expected one of {sorted(_REGISTRY)}. Received: name={name!r}. "
               "Register custom initializers with @pp.init.register(name).")
        raise errors.InitializerError(msg, expected=sorted(_REGISTRY), got=name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        msg = f"Cannot build initializer {name!r} from {kwargs!r}: {exc}."
        raise errors.InitializerError(msg, expected="valid arguments", got=kwargs) from exc


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, Initializer):
        return {"__initializer__": json.loads(dumps(value))}
    if isinstance(value, re.Pattern):
        return {"__regex__": value.pattern}
    if isinstance(value, np.ndarray):
        return {"__array__": value.tolist(), "dtype": value.dtype.name}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.generic,)):
        return value.item()
    return value


def _from_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        if "__initializer__" in value:
            return loads(json.dumps(value["__initializer__"]))
        if "__regex__" in value:
            return re.compile(value["__regex__"])
        if "__array__" in value:
            return np.asarray(value["__array__"], dtype=value["dtype"])
        return {k: _from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_jsonable(v) for v in value]
    return value


def dumps(init: Initializer, /) -> str:
    """The JSON form ``["name", {kwargs}]`` of a registered initializer (Gluon's ``dumps``)."""
    name = getattr(type(init), "_registered_name", None)
    if name is None or _REGISTRY.get(name) is not type(init):
        msg = (f"Cannot serialize {init!r}: expected a registered initializer, got an unregistered "
               f"{type(init).__name__}. Decorate the class with @pp.init.register().")
        raise errors.InitializerError(msg, expected="registered initializer", got=type(init).__name__)
    try:
        return json.dumps([name, _to_jsonable(init.config())])
    except TypeError as exc:
        msg = f"Cannot serialize {init!r}: expected JSON-compatible arguments, got {exc}. Use names, numbers or globs."
        raise errors.InitializerError(msg, expected="JSON-compatible arguments", got=init.config()) from exc


def loads(text: str, /) -> Initializer:
    """Rebuild an initializer from :func:`dumps` output."""
    try:
        name, kwargs = json.loads(text)
    except (ValueError, TypeError) as exc:
        msg = f"Cannot load initializer from {text[:80]!r}: expected JSON ['name', {{kwargs}}], got {exc}."
        raise errors.InitializerError(msg, expected='["name", {...}]', got=text[:80]) from exc
    return get(name, **_from_jsonable(kwargs))


# ---- built-ins -------------------------------------------------------------------------


def _non_negative(name: str, value: float, owner: str) -> float:
    value = float(value)
    if not value >= 0:
        msg = f"Invalid value for argument `{name}` of {owner}: expected a number >= 0. Received: {name}={value!r}."
        raise errors.InitializerError(msg, expected=">= 0", got=value)
    return value


def _choice(name: str, value: str, options: Sequence[str]) -> str:
    if value not in options:
        msg = f"Invalid value for argument `{name}`: expected one of {tuple(options)}. Received: {name}={value!r}."
        raise errors.InitializerError(msg, expected=tuple(options), got=value)
    return value


class _BuiltIn(Initializer):
    _writes_in_place = True


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
        self.value = value

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
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
    """Weights from U(-scale, scale); Gluon's default with ``scale=0.07``."""

    _region_safe = True

    def __init__(self, scale: float = 0.07) -> None:
        self.scale = _non_negative("scale", scale, "Uniform")

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        self._stream_fill(arr, _uniform_kernel(-self.scale, self.scale))


@register("normal", "gaussian")
class Normal(_BuiltIn):
    """Weights from N(mean, sigma^2) (Box-Muller on the parameter's streams)."""

    _region_safe = True

    def __init__(self, sigma: float = 0.01, mean: float = 0.0) -> None:
        self.sigma = _non_negative("sigma", sigma, "Normal")
        self.mean = float(mean)

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
        self.mean, self.a, self.b = float(mean), float(a), float(b)
        if not self.a < self.b or self.b - self.a < 0.1:
            msg = f"Invalid value for arguments `a`, `b` of TruncatedNormal: expected a < b - 0.1. Received: a={a!r}, b={b!r}."
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
        return self.param.require_fans(type(self).__name__)


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
        super().__init__(rnd_type="gaussian", factor_type=factor_type, magnitude=2.0 / (1 + float(slope) ** 2))
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
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    msg = (f"Invalid value for argument `nonlinearity`: expected one of {(*linear, 'tanh', 'relu', 'leaky_relu', 'selu')}. "
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
        self.a = float(a)
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
        self.gain = float(gain)

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
        axes = self.param.axes
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
        self.groups = int(groups)

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        if (not by_role or info.role in ("weight", "other")) and (
                len(info.shape) < 3 or info.axes[:2] != ("out", "in") or info.shape[0] % self.groups):
            msg = (f"Cannot initialize parameter {info.path!r} with Dirac: expected a conv kernel (out, in, *k) "
                   f"with out divisible by groups={self.groups}, got shape {info.shape} axes {info.axes}.")
            raise errors.InitializerError(msg, path=info.path, expected="(out, in, *k)", got=info.shape)

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        arr[...] = 0
        out_per_group = arr.shape[0] // self.groups
        centre = tuple(d // 2 for d in arr.shape[2:])
        for g in range(self.groups):
            for d in range(min(out_per_group, arr.shape[1])):
                arr[(g * out_per_group + d, d, *centre)] = 1


@register("identity", "eye")
class Identity(_BuiltIn):
    """``gain`` times the identity matrix (2-D weights), as Keras' Identity."""

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = float(gain)

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        if (not by_role or info.role in ("weight", "other")) and len(info.shape) != 2:
            msg = (f"Cannot initialize parameter {info.path!r} with Identity: expected a 2-D weight, got shape "
                   f"{info.shape}. Use Dirac for convolution kernels.")
            raise errors.InitializerError(msg, path=info.path, expected="2-D", got=info.shape)

    def init_weight(self, name: str, arr: np.ndarray, /) -> None:
        arr[...] = self.gain * np.eye(*arr.shape)


# ---- composites --------------------------------------------------------------------------

def _matches(rule: Any, info: ParamInfo) -> bool:
    if isinstance(rule, re.Pattern):
        return rule.search(info.path) is not None
    if isinstance(rule, str):
        if rule.startswith("role:"):
            return info.role == rule[5:]
        return fnmatch.fnmatchcase(info.path, rule)
    return bool(rule(info))


@register("mixed")
class Mixed(_BuiltIn):
    """Ordered rules: the first rule that matches a parameter chooses its initializer.

    A rule is a glob on the canonical path (``"*.weight"``), ``"role:bias"``, a
    compiled regex (searched in the path) or a predicate on :class:`ParamInfo`.
    The matched initializer fills the parameter whatever its role, so
    ``("*.bias", Constant(0.1))`` does set biases. Parameters no rule matches get
    ``default`` (role dispatch), or are refused if there is none. A rule that matched
    nothing in an ``initialize`` call is reported with a warning that names it.

    Unlike Gluon's ``init.Mixed``, it works with ``initialize`` and with deferred init.
    """

    def __init__(self, rules: Sequence[tuple[Any, Initializer]] | Mapping[Any, Initializer],
                 default: Initializer | None = None) -> None:
        pairs = list(rules.items()) if isinstance(rules, Mapping) else [tuple(r) for r in rules]
        self.rules = [(rule, as_initializer(init)) for rule, init in pairs]
        self.default = default
        self._config = {"rules": [[r, i] for r, i in self.rules], "default": default}
        self._hits = [0] * len(self.rules)

    def _pick(self, info: ParamInfo) -> tuple[int, Initializer | None]:
        for i, (rule, init) in enumerate(self.rules):
            if _matches(rule, info):
                return i, init
        return -1, self.default

    def _note(self, info: ParamInfo, /) -> None:
        i, _ = self._pick(info)
        if i >= 0:
            self._hits[i] += 1

    def _finish(self) -> None:
        for (rule, init), hits in zip(self.rules, self._hits):
            if not hits:
                warnings.warn(f"Mixed rule {rule!r} -> {init!r} matched no parameter. Check the pattern against "
                              "tree.paths().", errors.PolyparamWarning, stacklevel=4)
        self._hits = [0] * len(self.rules)

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        i, init = self._pick(info)
        if init is None:
            msg = (f"Cannot initialize parameter {info.path!r} with Mixed: expected a rule to match it, got none "
                   f"of {[r for r, _ in self.rules]!r}. Add a rule or a default initializer.")
            raise errors.InitializerError(msg, path=info.path, expected=[r for r, _ in self.rules], got=info.path)
        init.check(info, by_role=by_role and i < 0)

    @property
    def _writes_in_place(self) -> bool:  # type: ignore[override]
        return all(init._writes_in_place for _, init in self.rules) and (
            self.default is None or self.default._writes_in_place)

    def fill(self, arr: np.ndarray, info: ParamInfo, /, *, seed: int, by_role: bool = True) -> None:
        i, init = self._pick(info)
        assert init is not None, "check() refuses unmatched parameters"
        init.fill(arr, info, seed=seed, by_role=by_role and i < 0)

    def fill_slice(self, arr: np.ndarray, info: ParamInfo, index: Sequence[slice], /, *, seed: int,
                   by_role: bool = True) -> None:
        i, init = self._pick(info)
        assert init is not None, "check() refuses unmatched parameters"
        init.fill_slice(arr, info, index, seed=seed, by_role=by_role and i < 0)


@register("load")
class Load(_BuiltIn):
    """Values from a state dict ``{path: array}`` or a ``.npz`` / ``.safetensors`` file, by canonical path.

    Parameters missing from the source get ``default`` (role dispatch), or are
    refused if there is none. Loaded values are used whatever the role.
    """

    def __init__(self, source: Mapping[str, Any] | str | os.PathLike[str], default: Initializer | None = None) -> None:
        self.source = source
        self.default = default
        self._state: Mapping[str, Any] | None = None

    def config(self) -> dict[str, Any]:
        if not isinstance(self.source, (str, os.PathLike)):
            msg = "Cannot serialize Load from an in-memory state: expected a file path. Save the state first."
            raise errors.InitializerError(msg, expected="a file path", got=type(self.source).__name__)
        return {"source": os.fspath(self.source), "default": self.default}

    def _values(self) -> Mapping[str, Any]:
        if self._state is None:
            if isinstance(self.source, Mapping):
                self._state = self.source
            else:
                path = os.fspath(self.source)
                if path.endswith(".npz"):
                    with np.load(path, allow_pickle=False) as data:
                        self._state = {k: data[k] for k in data.files}
                elif path.endswith(".safetensors"):
                    from safetensors.numpy import load_file

                    self._state = load_file(path)
                else:
                    msg = f"Cannot load initial values from {path!r}: expected a .npz or .safetensors file, got another extension."
                    raise errors.InitializerError(msg, expected=(".npz", ".safetensors"), got=path)
        return self._state

    def check(self, info: ParamInfo, /, *, by_role: bool = True) -> None:
        values = self._values()
        if info.path not in values:
            if self.default is None:
                msg = (f"Cannot initialize parameter {info.path!r} with Load: expected it in the source, got "
                       f"{len(values)} other keys. Pass default= for parameters the source lacks.")
                raise errors.InitializerError(msg, path=info.path, expected=info.path, got=sorted(values)[:10])
            self.default.check(info, by_role=by_role)
            return
        _checked_result(values[info.path], info, "Load")

    def fill(self, arr: np.ndarray, info: ParamInfo, /, *, seed: int, by_role: bool = True) -> None:
        values = self._values()
        if info.path in values:
            arr[...] = _checked_result(values[info.path], info, "Load")
        else:
            assert self.default is not None
            self.default.fill(arr, info, seed=seed, by_role=by_role)

    def fill_slice(self, arr: np.ndarray, info: ParamInfo, index: Sequence[slice], /, *, seed: int,
                   by_role: bool = True) -> None:
        values = self._values()
        if info.path in values:
            box = tuple(slice(a, b) for a, b in _region(index, info.shape))
            arr[...] = _checked_result(values[info.path], info, "Load")[box]
        else:
            assert self.default is not None
            self.default.fill_slice(arr, info, index, seed=seed, by_role=by_role)


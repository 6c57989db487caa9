"""What an initializer sees (:class:`ParamInfo`), the :class:`Initializer` base class, the registry and JSON."""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from polyparam import errors
from polyparam._layout import default_axes
from polyparam.init.streams import _block_generator, _fill_region_streams, _fill_streams, _region, _seed, stream_key

__all__ = ["Initializer", "ParamInfo", "dumps", "get", "loads", "register"]

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
    #: ``"parameter"``, ``"buffer"`` or ``"constant"`` (:attr:`polyparam.Parameter.kind`), for ``"kind:"`` rules
    kind: str = "parameter"
    #: The framework's declared initializer for this parameter (see :class:`polyparam.init.Declared`),
    #: asked lazily: ``None`` when there is no parameter behind the info (a direct call).
    declared: Callable[[], Initializer | None] | None = field(default=None, compare=False, repr=False)

    @property
    def receptive_field(self) -> int:
        return self._fans[2]

    @functools.cached_property
    def _fans(self) -> tuple[int, int, int]:
        """``(fan_in, fan_out, receptive_field)``, worked out once (an initializer's check and fill both ask)."""
        sizes = {"in": 1, "out": 1, "space": 1}
        leading = None
        for d, a in zip(self.shape, self.axes):
            if a in sizes:
                sizes[a] *= d
                if leading is None and a != "space":
                    leading = a
        if self.groups > 1 and leading is not None:
            sizes[leading] //= self.groups
        field = sizes["space"]
        return sizes["in"] * field, sizes["out"] * field, field

    @property
    def fan_in(self) -> int:
        """Inputs feeding one output."""
        return self._fans[0]

    @property
    def fan_out(self) -> int:
        """Outputs fed by one input."""
        return self._fans[1]

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
    return default_axes("weight", ndim)


#: What decides what a fill writes: a class's or instance's own version of any of these may not write every element.
_FILL_METHODS = (*_REGION_METHODS, "fill_slice", "_dispatch", "_stream_fill")


def _own_fill(obj: Initializer, module: str) -> bool:
    """Whether ``obj`` is exactly a class of polyparam's ``module`` and fills with polyparam's own methods
    (none replaced on its class or on the instance)."""
    kind = type(obj)
    if kind.__module__ != module or any(name in vars(obj) for name in _FILL_METHODS):
        return False
    return all(getattr(getattr(kind, name, None), "__module__", module).startswith("polyparam.init.")
               for name in _FILL_METHODS)


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
    #: The arguments ``__init__`` received (set by the wrapper below, or by a built-in's ``__init__``).
    _config: dict[str, Any]

    @property
    def _fills_every_element(self) -> bool:
        """Whether a fill writes every element of its array, reading nothing but its arguments, so a backend
        may hand the fill fresh storage and keep the old one as the undo record (``initialize``). Only
        polyparam's own classes say so (see :func:`_own_fill`): other code may leave elements as they
        were, or read or write the model's tensors while it fills."""
        return False

    def _copies(self, info: ParamInfo, /) -> bool:
        """Whether filling ``info`` copies a value stored elsewhere (``Load``) rather than drawing one: a backend
        then keeps what it wrote (``Parameter._after_fill`` restores what a framework's own initialization keeps,
        an embedding's padding row of zeros, only after a draw). Composites answer for the one they pick."""
        return False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            original = cls.__dict__["__init__"]
            signature = inspect.signature(original)

            # named __init__: the wrapper stands in for it in signatures and tracebacks
            def __init__(self: Initializer, *args: Any, **kw: Any) -> None:  # noqa: N807
                if not hasattr(self, "_config"):
                    bound = signature.bind(self, *args, **kw)
                    bound.apply_defaults()
                    self._config = {k: v for k, v in list(bound.arguments.items())[1:]
                                    if signature.parameters[k].kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                                             inspect.Parameter.VAR_KEYWORD)}
                original(self, *args, **kw)

            __init__.__wrapped__ = original  # type: ignore[attr-defined]
            __init__.__doc__ = original.__doc__
            cls.__init__ = __init__  # type: ignore[method-assign,assignment]

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
        """Fill ``arr`` (canonical layout) for the parameter ``info`` from the streams of ``seed``.

        ``seed`` is an ``int`` from ``-2**63`` to ``2**64 - 1``; anything else raises
        :class:`~polyparam.errors.InvalidArgumentError`.
        """
        self._dispatch(arr, info, _Context(info, _seed(seed)), by_role)

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
        seed = _seed(seed)
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

    #: A framework's own seed for this initializer (a torch generator's state, a Keras ``seed=``): a
    #: callable giving a seed, asked by ``initialize`` when it gets no ``seed=``. ``None`` for polyparam's own.
    _framework_seed: Callable[[], int] | None = None

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
        # compared as JSON values: arrays by value, 0 equal to 0.0; one that has no JSON form (an unregistered
        # class, a Load of an in-memory state) equals only itself
        if type(other) is not type(self):
            return False
        try:
            return bool(json.loads(json.dumps(_to_jsonable(self.config())))
                        == json.loads(json.dumps(_to_jsonable(other.config()))))
        except (errors.InitializerError, TypeError, ValueError):
            return self is other

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
    cls = _REGISTRY.get(name.lower()) if isinstance(name, str) else None
    if cls is None:
        msg = (f"Invalid value for argument `name`: expected one of {sorted(_REGISTRY)}. "
               f"Received: name={_shown(name)}. Register custom initializers with @pp.init.register(name).")
        raise errors.InitializerError(msg, expected=sorted(_REGISTRY), got=name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        msg = f"Cannot build initializer {name!r} from {_shown(kwargs)}: {str(exc)[:200]}."
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


def _shown(value: Any, limit: int = 80) -> str:
    """A short ``repr`` of ``value`` for a message (long or deeply nested values are cut)."""
    if isinstance(value, (str, bytes, bytearray)):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    try:
        text = repr(value)
    except RecursionError:
        return f"a deeply nested {type(value).__name__}"
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _malformed(what: str, expected: str, got: Any, fix: str) -> errors.InitializerError:
    msg = f"Cannot load initializer from JSON: expected {what} to be {expected}, got {_shown(got)}. {fix}"
    return errors.InitializerError(msg, expected=expected, got=_shown(got))


def _array_from_json(value: dict[str, Any]) -> np.ndarray:
    """An ``{"__array__": [...], "dtype": name}`` argument as an array of a numeric dtype."""
    spec = value.get("dtype")
    try:
        dtype = np.dtype(spec) if isinstance(spec, str) else None
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or dtype.kind not in "biufc":
        raise _malformed("an array's dtype", "a numeric dtype name such as 'float32'", spec,
                         "Write arrays with pp.init.dumps.")
    try:
        return np.asarray(value["__array__"], dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _malformed("an array", f"a rectangular list of {dtype.name} numbers", value["__array__"],
                         "Write arrays with pp.init.dumps.") from exc


def _from_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        if "__initializer__" in value:
            return _build(value["__initializer__"])
        if "__regex__" in value:
            pattern = value["__regex__"]
            if not isinstance(pattern, str):
                raise _malformed("a regex", "a string", pattern, "Write rules with pp.init.dumps.")
            try:
                return re.compile(pattern)
            except re.error as exc:
                raise _malformed("a regex", f"a valid pattern ({exc})", pattern,
                                 "Fix the pattern, or use a glob string.") from exc
        if "__array__" in value:
            return _array_from_json(value)
        return {k: _from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_jsonable(v) for v in value]
    return value


def _build(parsed: Any) -> Initializer:
    """The initializer of a parsed ``["name", {kwargs}]``; every problem as an InitializerError."""
    if not (isinstance(parsed, list) and len(parsed) == 2 and isinstance(parsed[0], str)
            and isinstance(parsed[1], dict)):
        raise _malformed("the text", 'a JSON array ["name", {kwargs}]', parsed,
                         "Pass the string pp.init.dumps returned.")
    name, kwargs = parsed
    arguments = _from_jsonable(kwargs)
    try:
        return get(name, **arguments)
    except errors.PolyparamError:
        raise
    except (TypeError, ValueError, AttributeError, LookupError, ArithmeticError, re.error) as exc:
        msg = (f"Cannot load initializer {name!r} from JSON: expected arguments it accepts, got "
               f"{type(exc).__name__}: {str(exc)[:200]} for {_shown(arguments)}. "
               "Pass the string pp.init.dumps returned.")
        raise errors.InitializerError(msg, expected="valid arguments", got=_shown(arguments)) from exc


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
    """Rebuild an initializer from :func:`dumps` output.

    Anything else (text that is not JSON, not ``["name", {kwargs}]``, or arguments the
    initializer refuses) raises :class:`~polyparam.errors.InitializerError`.
    """
    fix = "Pass the string pp.init.dumps returned."
    if not isinstance(text, (str, bytes, bytearray)):
        raise _malformed("the text", "a str", text, fix)
    try:
        parsed = json.loads(text)
    except RecursionError:
        raise _malformed("the text", "JSON nested less deeply", text, fix) from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        msg = f"Cannot load initializer from {_shown(text)}: expected JSON ['name', {{kwargs}}], got {exc}."
        raise errors.InitializerError(msg, expected='["name", {...}]', got=_shown(text)) from exc
    try:
        return _build(parsed)
    except RecursionError:
        raise _malformed("the arguments", "nested less deeply", parsed, fix) from None

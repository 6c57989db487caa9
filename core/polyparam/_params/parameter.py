"""The :class:`Parameter` interface: one named, shaped, typed tensor owned by a backend."""

from __future__ import annotations

import abc
import math
from typing import TYPE_CHECKING, Any, Callable, ClassVar, cast

import numpy as np

from polyparam import errors
from polyparam._layout import (
    AXIS_ROLES,
    KINDS,
    ROLES,
    Shape,
    State,
    all_finite,
    default_axes,
    format_shape,
    is_floating,
    largest,
)
from polyparam._params import bulk

if TYPE_CHECKING:
    from polyparam.init import Initializer
    from polyparam.init.run import InitReport

__all__ = ["AXIS_ROLES", "ROLES", "Parameter", "Shape", "byte_bounds", "format_shape"]


def require_backend_name(cls: type, base: str) -> None:
    """Refuse a concrete (non-abstract) subclass of ``base`` whose ``backend`` class attribute is not set."""
    abstract = [name for name, value in vars(cls).items() if getattr(value, "__isabstractmethod__", False)]
    abstract += [name for parent in cls.__bases__ for name in getattr(parent, "__abstractmethods__", ())
                 if getattr(getattr(cls, name, None), "__isabstractmethod__", False)]
    name = getattr(cls, "backend", "")
    if not abstract and not (isinstance(name, str) and name):
        msg = (f"Cannot define {base} subclass {cls.__module__}.{cls.__qualname__}: expected a class "
               f"attribute `backend` naming its backend, got {name!r}. Add `backend = NAME` (the backend's "
               "name, e.g. \"mybackend\") to the class body.")
        raise errors.PluginContractError(msg, expected="backend = a non-empty str", got=name)


#: ``(first byte, one past the last)`` of the memory an array spans (``np.byte_bounds``, moved in NumPy 2).
byte_bounds: Callable[[np.ndarray], tuple[int, int]] = getattr(np.lib, "array_utils", np).byte_bounds


class Parameter(abc.ABC):
    """A named, shaped, typed tensor owned by some backend.

    Public methods validate their input and build the error messages here, then call
    one or two ``_``-prefixed hooks that each backend implements, so every backend
    refuses bad input with the same typed errors.

    Values cross this interface as NumPy arrays in *canonical layout* (PyTorch's:
    dense ``(out, in)``, conv ``(out, in, *kernel)``); the adapter converts.

    Attributes:
        role: What the parameter is for, one of :data:`ROLES`.
        axes: The role of each axis of the canonical layout, from :data:`AXIS_ROLES`.
        trainable: Whether an optimizer updates it (buffers such as running means are not); assignable.
        groups: For grouped convolution kernels, the number of groups (fans use it).

    **Backend hooks.** A backend subclasses ``Parameter`` and implements these
    ``_``-prefixed methods; the public methods above call them after validating, so a
    hook receives only checked input (canonical layout, the parameter's shape and dtype).

    Must implement (abstract):

    * `_shape`, `_dtype`, `_device`, `_native`, `_native_name`, `_state`: the facts.
    * `_read`: the canonical value (called only when initialized); may share memory.
    * `_write`: store a checked canonical array in place, so optimizers keep their objects; keep
      no hold on the array (a framework that adopts a NumPy buffer must be given a copy).
    * `_grad`: the gradient in canonical layout, or ``None``.
    * `_identity`: a hashable key, equal exactly for parameters that share storage (tied).

    May implement, for a capability the backend declares (the defaults refuse or say "no"):

    * deferred shapes: `_defer`, `_accepts_deferred_value`, `_write_deferred`, `_defers_init`,
      and `_require_data` (extend the core's check, e.g. to settle values recorded on
      meta tensors before a read);
    * tying: `_share`, `_unshare`, `_tie_refusal`, `_reattach` (undo a `_share` with the object held before);
    * buffers and constants: `_kind` (default ``"parameter"``);
    * refusals foreseen before the first write: `_write_refusal` (a read-only array,
      storage the framework will not take a value into now), so a multi-parameter
      write refuses up front instead of undoing;
    * training loops: `_trainable`/`_set_trainable` (the framework's flag, read live and
      assignable), `_write_grad` (clip and zero gradients), `_cast` (dtype in place);
    * the framework's declared initializers: `_declared_initializer` (what the layer
      declares for this tensor, for ``pp.init.Declared``), `_own_initializer` (one
      that wins over a tree-wide initializer, as Gluon's ``Parameter.init`` does),
      `_after_fill` (restore, after an initializer wrote the value, what the framework's
      own initialization keeps: torch's ``Embedding`` ``padding_idx`` row of zeros) and
      `_after_fill_many` (once for all drawn, what the framework derives from several:
      torch's weight norm magnitude);
    * the framework's own checkpoint files: `_native_aliases` (other keys this tensor has
      in them, such as a Keras ``.weights.h5`` path) and `_from_native_layout` (a value
      in the framework's storage layout, converted to canonical), so ``pp.load`` reads them;
    * layouts the adapter cannot establish: `_layout_doubt` (e.g. a dense kernel whose
      input is a flattened feature map of unknown channel order), so a transfer to
      another framework refuses instead of moving values in the wrong order;
    * distributed tensors: `_local_box`, `_local_view`, `_write_local`, `_read_local`,
      `_shard_writer`, `_placement`, `_agree_seed`; a value sharded over one process's
      devices (JAX): `_local_blocks`, `_write_blocks`.

    Override for speed (the defaults are correct, only slower):

    * `_writable_view`: a canonical NumPy view writes go through to (in-place fills and item writes);
    * `_staging`: a fresh native buffer the backend adopts after a fill (no transposing copy);
    * `_read_copy`: a private copy, for backends whose `_read` already copies;
    * `_read_view`: the value for one read right away (a save), without the copy a `_read` makes;
    * bulk hooks, static methods that take every parameter of their class at once (the
      defaults loop over the hooks above): `_trainable_many`, `_set_trainable_many`,
      `_roles_many` (freeze, ``pp.param_groups``), `_read_many` (``tree.vector()``),
      `_grad_norm_many`, `_clip_grads_many`, `_zero_grads_many` (gradient norm, in-place
      clip and zero), `_cast_many` and `_layout_doubts_many` (saves, loads and transfers
      across frameworks);
    * `_keep_storage`: before a write of the whole value, give the parameter fresh storage
      and keep the old one as the undo record (no undo copy);
    * `_native_copier`: a same-backend copy for ``pp.transfer``, bypassing NumPy;
    * `_memory_span`: the host bytes a view of the value spans (``load_state`` and ``pp.transfer``
      copy first a value or source over storage they write); the default makes a `_writable_view`.

    Core steps, not hooks (never override): `_commit` (the one write step of every
    operation), `_check_dtype`, `_check_range` and `_cast_checked` (values a narrower dtype
    cannot hold) and `_require_writable`.
    """

    #: The backend name, e.g. ``"torch"``; set by each subclass.
    backend: ClassVar[str] = ""
    #: Groups of a grouped convolution kernel (instances of conv adapters override it).
    groups: int = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse a concrete subclass that does not name its backend (``backend = "mybackend"``)."""
        super().__init_subclass__(**kwargs)
        require_backend_name(cls, "Parameter")

    def __init__(self, path: str, /, *, role: str = "weight", axes: tuple[str, ...] | None = None,
                 trainable: bool = True, groups: int = 1) -> None:
        if role not in ROLES:
            msg = f"Invalid value for argument `role`: expected one of {ROLES}. Received: role={role!r}."
            raise errors.InvalidArgumentError(msg, path=path, argument="role", expected=ROLES, got=role)
        if axes is not None and any(a not in AXIS_ROLES for a in axes):
            msg = (f"Invalid value for argument `axes` of parameter {path!r}: expected words of {AXIS_ROLES}. "
                   f"Received: axes={axes!r}.")
            raise errors.InvalidArgumentError(msg, path=path, argument="axes", expected=AXIS_ROLES, got=axes)
        self._path = path
        self.role = role
        self._axes = axes
        self._trainable_flag = trainable   # for backends that keep the flag here (the default hooks)
        self.groups = groups

    # ---- facts -----------------------------------------------------------------

    @property
    def path(self) -> str:
        """The canonical dotted path, the same in every backend (``"0.1.0.bias"``)."""
        return self._path

    @property
    def shape(self) -> Shape:
        """The shape in canonical layout; unknown (deferred) dimensions are ``None``."""
        return tuple(self._shape())

    @property
    def ndim(self) -> int:
        return len(self._shape())

    @property
    def axes(self) -> tuple[str, ...]:
        """The role of each canonical axis (``("out", "in")`` for a dense weight)."""
        return self._axes if self._axes is not None else default_axes(self.role, self.ndim)

    @property
    def dtype(self) -> np.dtype:
        """The dtype, as a NumPy dtype."""
        return np.dtype(self._dtype())

    @property
    def device(self) -> str:
        """Where the data lives: ``"cpu"``, ``"cuda:0"``, ``"meta"``; several are joined by commas."""
        return self._device()

    @property
    def native(self) -> Any:
        """The framework's own object (``nn.Parameter``, keras ``Variable``, gluon ``Parameter``)."""
        return self._native()

    @property
    def native_name(self) -> str:
        """The framework's own name (``"dense1_bias"``, ``"sequential/dense_1/kernel"``)."""
        return self._native_name()

    @property
    def kind(self) -> str:
        """``"parameter"``, ``"buffer"`` or ``"constant"`` (see :data:`KINDS`): what the framework calls it.

        A tree-wide ``initialize`` leaves buffers and constants of role ``"other"`` as they are
        (it cannot know what they hold) and lists them in the report; select them to fill them.
        """
        kind = self._kind()
        if kind not in KINDS:
            msg = f"Cannot read the kind of parameter {self.path!r}: expected one of {KINDS}, got {kind!r}."
            raise errors.PluginContractError(msg, path=self.path, expected=KINDS, got=kind)
        return kind

    @property
    def state(self) -> State:
        """``"initialized"``, ``"uninitialized"`` (shape known, no data yet) or ``"deferred"`` (shape unknown)."""
        return self._state()

    @property
    def trainable(self) -> bool:
        """Whether an optimizer updates it, read live from the framework's own flag.

        Assignable: ``p.trainable = False`` freezes it as the framework does
        (``requires_grad_(False)``, ``Variable.trainable``, ``grad_req = "null"``); tied
        parameters freeze together. Buffers and constants are never trainable.
        """
        return bool(self._trainable())

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            msg = (f"Cannot set trainable of parameter {self.path!r}: expected True or False, got "
                   f"{type(value).__name__} {value!r}.")
            raise errors.InvalidArgumentError(msg, path=self.path, argument="trainable", expected="a bool", got=value)
        if value and self.kind != "parameter":
            msg = (f"Cannot make {self.kind} {self.path!r} trainable: expected a parameter, got a {self.kind}, which "
                   "the framework never hands to an optimizer. Leave it frozen.")
            raise errors.UsageError(msg, path=self.path, expected="a parameter", got=self.kind)
        if bool(value) != self.trainable:
            self._set_trainable(bool(value))

    @property
    def size(self) -> int | None:
        """The number of elements, or ``None`` while the shape is unknown."""
        shape = self.shape
        return None if None in shape else int(math.prod(cast("tuple[int, ...]", shape)))

    @property
    def nbytes(self) -> int | None:
        size = self.size
        return None if size is None else size * self.dtype.itemsize

    # ---- values ----------------------------------------------------------------

    def numpy(self) -> np.ndarray:
        """The value as a NumPy array in canonical layout.

        It may share memory with the framework's storage (CPU tensors); use
        :meth:`set` or item assignment to write.

        Raises:
            DeferredInitializationError: The shape is not known yet.
            UninitializedParameterError: The parameter was never initialized.
        """
        self._require_data("read")
        return self._read()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """``np.asarray(p)``; NumPy 2's ``copy=True`` gives a private copy (``copy=False`` may share memory)."""
        value = self.numpy()
        value = value if dtype is None else value.astype(dtype, copy=False)
        return np.array(value, copy=True) if copy else value

    def __getitem__(self, key: Any) -> Any:
        return self.numpy()[key]

    def grad(self) -> np.ndarray | None:
        """The gradient as a NumPy array in canonical layout, or ``None`` before any backward pass.

        For a tied parameter this is the sum of the gradients of every use.
        """
        self._require_data("read the gradient of")
        return self._grad()

    def set(self, value: Any, /) -> None:
        """Write ``value`` (canonical layout) into the parameter.

        Works inside autograd scopes: the framework's storage is updated in place, so
        optimizers that hold the native parameter keep seeing it.

        Raises:
            ShapeMismatchError: ``value`` does not have the parameter's shape.
            DTypeMismatchError: ``value``'s dtype cannot be cast to the parameter's dtype
                without changing its kind (float to int, complex to float), or it holds
                integers the parameter's narrower integer dtype cannot (the cast would wrap).
            DeferredInitializationError: The shape is unknown and the backend cannot take
                a value before its first forward pass.
        """
        array = self.coerce(value, action="set")
        self._require_writable("set")
        self._commit(array)

    def __setitem__(self, key: Any, value: Any) -> None:
        """Item writes go through to the framework storage: ``p[0, 0] = 42``.

        ``key`` is any NumPy index of the canonical array; ``value`` broadcasts to what it
        selects. Both are checked before anything is written.

        Raises:
            InvalidIndexError: ``key`` selects no element (out of range, too many axes, not an index).
            ShapeMismatchError: ``value`` does not broadcast to the selection.
            DTypeMismatchError: ``value``'s dtype cannot be cast to the parameter's, as for :meth:`set`.
        """
        self._require_data("write to")
        value = np.asarray(value)
        self._check_dtype(value.dtype, action="write to")
        if value.dtype != self.dtype:
            value = self._cast_checked(value, self.dtype, action="write to")
        _check_item_write(self, key, value)
        self._require_writable("write to")
        view = self._writable_view()
        if view is not None:
            view[key] = value
            return
        updated = self._read().copy()
        updated[key] = value
        self._write(updated)

    def coerce(self, value: Any, /, *, action: str = "set") -> np.ndarray:
        """Check ``value`` against this parameter and return it as an array of its dtype.

        Unknown (deferred) dimensions accept any size. Raises the errors :meth:`set` documents,
        and :class:`~polyparam.errors.DTypeMismatchError` for a value NumPy cannot read (a torch
        bfloat16 tensor).
        """
        try:
            array = np.asarray(value)
        except (TypeError, ValueError, RuntimeError) as exc:
            msg = (f"Cannot {action} parameter {self.path!r}: expected a value NumPy can read as a "
                   f"{self.dtype.name!r} array, got a {type(value).__name__} it refuses ({exc}). Convert it first "
                   "(a torch bfloat16 tensor: tensor.float().numpy(), cast back exactly), or pass tree.state()'s "
                   "arrays.")
            raise errors.DTypeMismatchError(msg, path=self.path, expected=self.dtype,
                                            got=type(value).__name__) from exc
        shape = self.shape
        if array.ndim != len(shape) or any(d is not None and d != g for d, g in zip(shape, array.shape)):
            msg = (f"Cannot {action} parameter {self.path!r}: expected shape {format_shape(shape)}, "
                   f"got {format_shape(array.shape)}. Pass a value of the parameter's shape "
                   "(canonical layout: dense weights are (out, in)).")
            raise errors.ShapeMismatchError(msg, path=self.path, expected=shape, got=array.shape)
        expected = self.dtype
        self._check_dtype(array.dtype, action=action, expected=expected)
        if array.dtype == expected:
            return array
        return self._cast_checked(array, expected, action=action)

    def _check_range(self, array: np.ndarray, expected: np.dtype, *, action: str) -> None:
        """Refuse integers that ``expected`` (a narrower integer dtype) cannot hold: the cast would wrap them."""
        if (expected.kind not in "iu" or array.dtype.kind not in "iu" or array.size == 0
                or np.can_cast(array.dtype, expected, casting="safe")):
            return
        info, low, high = np.iinfo(expected), int(array.min()), int(array.max())
        if low < info.min or high > info.max:
            msg = (f"Cannot {action} parameter {self.path!r}: expected values {expected.name} holds ({info.min} to "
                   f"{info.max}), got {low} to {high} in a {array.dtype.name} value, which a cast would wrap. "
                   f"Clip the value first (np.clip(value, {info.min}, {info.max})) or build the parameter wider.")
            raise errors.DTypeMismatchError(msg, path=self.path, expected=(info.min, info.max), got=(low, high))

    def _cast_checked(self, array: np.ndarray, expected: np.dtype, *, action: str) -> np.ndarray:
        """``array`` cast to ``expected``, refused where the cast would change what a value is: an integer a
        narrower integer dtype cannot hold (the cast wraps it), a finite number a float dtype cannot hold (float64
        ``1e300`` into float32, ``70000`` into float16, ``1000.0`` into float8_e4m3fn: the cast makes it inf or
        NaN). An inf or NaN given stays one."""
        self._check_range(array, expected, action=action)
        with np.errstate(over="ignore", invalid="ignore"):     # what overflows is refused below, by name
            out = array.astype(expected)
        if out.dtype.kind in "biu" or np.can_cast(array.dtype, expected, casting="safe") or all_finite(out):
            return out
        bad = ~np.isfinite(out)
        if array.dtype.kind in "fcV":
            bad &= np.isfinite(array)
        if not bad.any():
            return out
        peak, limit = np.max(np.abs(array[bad])), largest(expected)
        holds = f" ({-limit} to {limit})" if limit is not None else ""
        fix = f"np.clip(value, {-limit}, {limit})" if limit is not None else "np.clip"
        msg = (f"Cannot {action} parameter {self.path!r}: expected values {expected.name} holds{holds}, got a "
               f"largest magnitude of {peak} in a {array.dtype.name} value, which a cast would make infinite (or "
               f"NaN). Clip the value first ({fix}) or build the parameter wider.")
        raise errors.DTypeMismatchError(msg, path=self.path, expected=limit, got=peak)

    def _check_dtype(self, got: np.dtype, *, action: str, expected: np.dtype | None = None) -> None:
        expected = self.dtype if expected is None else expected
        if got == expected:
            return
        integers = got.kind in "iu" and expected.kind in "iu"   # signed <-> unsigned too: _check_range checks values
        if (got.kind in "OSUV" and not is_floating(got)) or not (
                integers or np.can_cast(got, expected, casting="same_kind")):
            msg = (f"Cannot {action} parameter {self.path!r}: expected dtype {expected.name!r} "
                   f"(or one that casts to it without changing kind), got {got.name!r}. "
                   f"Convert the value first, e.g. value.astype({expected.name!r}).")
            raise errors.DTypeMismatchError(msg, path=self.path, expected=expected, got=got)

    def _require_data(self, action: str) -> None:
        state = self.state
        if state == "deferred":
            msg = (f"Cannot {action} parameter {self.path!r}: expected a materialized parameter, "
                   f"got shape {format_shape(self.shape)} with unknown dimensions (deferred initialization). "
                   "Run one forward pass (one batch of data through the network) first, "
                   "or give the layer its input size.")
            raise errors.DeferredInitializationError(msg, path=self.path, expected="known shape", got=self.shape)
        if state == "uninitialized":
            msg = (f"Cannot {action} parameter {self.path!r}: expected an initialized parameter, "
                   "got one that was never initialized. Call tree.initialize() first.")
            raise errors.UninitializedParameterError(msg, path=self.path, expected="initialized", got=state)

    # ---- initialization --------------------------------------------------------

    def initialize(self, init: Initializer | Callable[..., Any] | None = None, /, *,
                   force_reinit: bool = False, seed: int | None = None) -> InitReport:
        """Initialize this one parameter with ``init``, whatever its role.

        As in Gluon, an initializer given to one parameter fills it as a weight: a bias
        initialized this way gets the initializer's values, not zeros.
        """
        from polyparam.init.run import initialize_parameters

        return initialize_parameters([self], init, force_reinit=force_reinit, seed=seed, by_role=False)

    # ---- identity --------------------------------------------------------------

    def is_tied_to(self, other: Parameter) -> bool:
        """Whether ``other`` shares this parameter's storage."""
        return self._identity() == other._identity()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.path!r}, shape={format_shape(self.shape)}, "
                f"dtype={self.dtype.name}, device={self.device!r})")

    # ---- hooks a backend implements ----------------------------------------------

    @abc.abstractmethod
    def _shape(self) -> Shape:
        """Canonical shape; ``None`` for unknown dimensions."""

    @abc.abstractmethod
    def _dtype(self) -> Any:
        """Anything :class:`numpy.dtype` accepts."""

    @abc.abstractmethod
    def _device(self) -> str: ...

    @abc.abstractmethod
    def _native(self) -> Any: ...

    @abc.abstractmethod
    def _native_name(self) -> str: ...

    @abc.abstractmethod
    def _state(self) -> State: ...

    @abc.abstractmethod
    def _read(self) -> np.ndarray:
        """The canonical value; called only when the state is ``"initialized"``."""

    @abc.abstractmethod
    def _write(self, array: np.ndarray, /) -> None:
        """Store a validated canonical array of the parameter's shape and dtype, in place."""

    @abc.abstractmethod
    def _grad(self) -> np.ndarray | None: ...

    @abc.abstractmethod
    def _identity(self) -> Any:
        """A hashable key equal for parameters that share storage (tied)."""

    def _commit(self, array: np.ndarray, /, *, local: bool = False) -> None:
        """Write a checked canonical value: cast to the dtype, materializing a deferred parameter.

        The one commit step of ``set``, ``load_state``, ``pp.load``, the sharded load and
        ``pp.transfer``. With ``local``, ``array`` holds the box of :meth:`_local_box`
        (this process's shard of a distributed parameter).
        """
        array = np.asarray(array)
        dtype = self.dtype
        if array.dtype != dtype:
            array = self._cast_checked(array, dtype, action="write")
        if local and self._local_box() is not None:
            self._write_local(array)
        elif self.state == "deferred":
            self._write_deferred(array)
        else:
            self._write(array)

    def _read_copy(self) -> np.ndarray:
        """The canonical value in a writable array no one else holds (``state(copy=True)``, undo copies).

        Backends whose ``_read`` already returns a fresh array (TensorFlow and MXNet reads
        copy) override this to return it as is instead of copying it a second time.
        """
        return np.array(self._read(), copy=True)

    def _read_view(self) -> np.ndarray:
        """The canonical value for a caller that reads it once, right away, and writes nothing to it (a save).

        It may share memory with the framework's storage, be read-only and be a transposed
        view; the save copies it piece by piece as it writes. Backends whose ``_read`` copies
        (TensorFlow) return the framework's own buffer here instead; where the copy cannot be
        avoided (Gluon), return it through :func:`~polyparam.backend.own_copy`, and the save writes it without
        copying it again. Default: :meth:`_read`.
        """
        return self._read()

    def _keep_storage(self) -> Callable[[], None] | None:
        """Before a write of the whole value: move the current storage aside, or ``None`` (the default).

        The undo journal calls it right before a write that replaces every element
        without reading one (a load, a transfer). A backend that can give the
        parameter fresh storage (torch's ``p.data = new``) while keeping the native
        object optimizers hold does so and returns a function that puts the old
        storage back: the old storage is then the undo record, and the journal makes no
        copy. Change nothing visible before returning (prepare the fresh storage, and
        swap it in at the write, once filled): an interrupt between this call and the
        journal's record must lose nothing. Return ``None`` where anything else could
        reach the storage (a view, a tie by shared storage, a DLPack export, memory the
        framework did not allocate, shared or pinned memory): the journal then copies the value.
        """
        return None

    def _writable_view(self) -> np.ndarray | None:
        """A canonical NumPy view of the storage that writes go through to, or ``None``.

        Backends return one where the storage allows it (CPU, compatible layout); the
        core then writes in place instead of reading, copying and writing back.
        """
        return None

    def _native_copier(self, source: Parameter, /) -> Callable[[], Callable[[], None] | None] | None:
        """A function that writes ``source``'s whole value into this parameter without NumPy, or ``None``.

        ``pp.transfer`` asks before each write; ``source`` fits (checked shape, a dtype that
        casts) but may be of any backend. Return ``None`` (the default: the value goes
        through NumPy and :meth:`_commit`) unless ``source`` is this backend's, of the same
        dtype and native layout, and both hold data; the function then copies framework to
        framework (Gluon's ``NDArray.copyto``), doing what :meth:`_write` does around a
        write. Change nothing before it is called: the undo journal keeps the old value in
        between. A framework that copies asynchronously may return a function that waits for
        the copy and raises if it failed; the transfer calls each after its last write,
        while it can still undo every write.
        """
        return None

    def _memory_span(self) -> tuple[int, int, bool] | None:
        """``(first byte, one past the last, C-contiguous)`` of the host memory a canonical NumPy view of the
        value would see, or ``None``.

        ``load_state`` and ``pp.transfer`` compare it with the values and sources they read,
        to copy first one that shares memory with storage they also write. The default asks
        :meth:`_writable_view`; a backend whose reads copy has nothing to report (``None``),
        one that views can answer faster.
        """
        view = self._writable_view()
        return None if view is None else (*byte_bounds(view), bool(view.flags.c_contiguous))

    def _staging(self) -> tuple[np.ndarray, Callable[[], None]] | None:
        """A fresh buffer the backend can take as this parameter's storage without a copy, or ``None``.

        Returns ``(view, adopt)``: ``view`` is a canonical-layout view (often strided) of
        a new buffer in the backend's native layout; the core fills it, then calls
        ``adopt()`` to make the buffer the parameter's value. For storage NumPy cannot
        write in place (TensorFlow variables), this replaces "fill a canonical scratch
        array, then transpose it into the storage" by one pass and one buffer. The
        core keeps no reference to the buffer after ``adopt``.
        """
        return None

    # ---- sharded (distributed) parameters: optional ----------------------------------

    def _local_box(self) -> tuple[slice, ...] | None:
        """The box of the global canonical array this process holds, one ``slice`` per axis.

        ``None`` (the default) means the parameter is not sharded: this process holds
        it all. Backends of distributed tensors (torch ``DTensor``) return the box of the
        local shard; ``initialize`` then fills only that box (see
        :meth:`polyparam.init.Initializer.fill_slice`) and writes it with
        :meth:`_write_local`, never building the whole array.
        """
        return None

    def _local_view(self) -> np.ndarray | None:
        """A writable canonical NumPy view of the local shard (the box of :meth:`_local_box`), or ``None``."""
        return None

    def _write_local(self, array: np.ndarray, /) -> None:
        """Store ``array``, the values of the box of :meth:`_local_box`, into the local shard."""
        msg = f"Cannot write a shard of parameter {self.path!r}: the {self.backend} backend has no sharded parameters."
        raise NotImplementedError(msg)

    def _read_local(self) -> np.ndarray:
        """The values of the box of :meth:`_local_box` (this process's shard), without communication."""
        return self._read()

    def _local_blocks(self) -> list[tuple[slice, ...]] | None:
        """The canonical boxes of the distinct blocks this process's devices hold, or ``None`` (the default).

        Backends whose one value is sharded over several local devices (a JAX array with a
        ``NamedSharding``) return the boxes; ``initialize`` then draws each block alone
        (:meth:`polyparam.init.Initializer.fill_slice`) and hands them to
        :meth:`_write_blocks`, never building the whole array on the host.
        """
        return None

    def _write_blocks(self, values: list[tuple[tuple[slice, ...], np.ndarray]], /) -> None:
        """Store the value whose block at each box of :meth:`_local_blocks` is the array paired with it."""
        msg = f"Cannot write blocks of parameter {self.path!r}: the {self.backend} backend has no sharded values."
        raise NotImplementedError(msg)

    def _shard_writer(self) -> bool:
        """Whether this process writes its box in a sharded save (one process per distinct box). Default: yes."""
        return True

    def _placement(self) -> str | None:
        """How the parameter is distributed (``"Shard(0) on mesh (2,)"``), or ``None`` if it is not."""
        return None

    def _agree_seed(self, seed: int, /) -> int:
        """The seed every process of a distributed parameter uses for an unseeded ``initialize``.

        Distributed backends return the first process's ``seed`` (a collective), so shards
        are one draw and replicas stay equal. Default: ``seed``.
        """
        return seed

    def _accepts_deferred_value(self) -> bool:
        """Whether :meth:`_write_deferred` can take a value while the shape is unknown."""
        return False

    def _write_deferred(self, array: np.ndarray, /) -> None:
        """Take a value while the shape is unknown (materializing it), if the backend can."""
        self._require_data("set")

    def _defers_init(self) -> bool:
        """Whether initialization must be recorded with :meth:`_defer` although the shape is known.

        For storage that has a shape but cannot hold data yet (torch ``meta`` tensors):
        the state stays ``"uninitialized"`` (reading raises) and ``initialize`` records
        the fill instead of writing it. Default: ``False``.
        """
        return False

    def _defer(self, fill: Callable[[], None], /) -> None:
        """Record ``fill`` to run once the shape is known (the first forward pass).

        ``fill`` replaces any earlier recorded one; it writes the value through this
        Parameter. Backends with deferred shapes implement this.
        """
        msg = f"Cannot defer initialization of parameter {self.path!r}: the {self.backend} backend does not support it."
        raise errors.DeferredInitializationError(msg, path=self.path)

    def _kind(self) -> str:
        """What the framework calls this tensor, one of :data:`KINDS`; ``"parameter"`` by default."""
        return "parameter"

    def _declared_initializer(self) -> Any:
        """The initializer the framework declares for this tensor, as a polyparam initializer, or ``None``.

        A Keras layer's ``kernel_initializer``/``bias_initializer``, the formula of torch's
        ``reset_parameters``, Gluon's ``Parameter.init`` or its block's default.
        :class:`polyparam.init.Declared` fills each parameter with it. Default: ``None``.
        """
        return None

    def _own_initializer(self) -> Any:
        """An initializer attached to this tensor that wins over a tree-wide one, or ``None`` (the default).

        Gluon's rule: ``net.initialize(init)`` keeps each parameter's own ``init``
        (``Dense(weight_initializer=...)``, PReLU's alpha); only an initializer given to the
        parameter itself replaces it. Backends without such a rule return ``None``.
        """
        return None

    def _reattach(self, native: Any, /) -> bool:
        """Hold ``native`` again, the object this parameter held before a `_share`; whether it could.

        Called when a failed operation unmakes the ties it made, so an optimizer that holds
        the original object keeps training it. Default ``False``: the core then calls
        `_unshare` and writes the value it kept.
        """
        return False

    def _native_aliases(self) -> tuple[str, ...]:
        """Other keys this tensor has in the framework's own files (besides `_native_name`); none by default."""
        return ()

    def _from_native_layout(self, array: np.ndarray, /) -> np.ndarray:
        """``array``, stored in the framework's own layout (as its checkpoint files hold it), in canonical layout.

        ``pp.load`` calls it for files whose layout is this backend's name (a Keras
        ``.weights.h5``). The default refuses: such files then load only into models whose
        backend implements it.
        """
        msg = (f"Cannot load parameter {self.path!r} from a file in the {self.backend} backend's own layout: "
               f"expected a backend that converts it, got {self.backend}, which does not. Load a file written by "
               "pp.save instead.")
        raise errors.MetadataError(msg, path=self.path, expected="a native-layout converter", got=self.backend)

    def _trainable(self) -> bool:
        """The framework's flag: whether an optimizer updates this tensor. Default: the flag given to ``__init__``."""
        return self._trainable_flag

    def _set_trainable(self, value: bool, /) -> None:
        """Set the framework's own flag (``p.trainable = value``, ``freeze``). Default: refuse.

        A backend that keeps the flag itself (the NumPy reference) stores it; a framework
        adapter must change what the framework's optimizers and autograd read.
        """
        msg = (f"Cannot change trainable of parameter {self.path!r}: expected a backend that can freeze "
               f"parameters, got {self.backend}, which cannot. Freeze it with the framework's own API.")
        raise errors.UnsupportedModelError(msg, path=self.path, expected="freezing", got=self.backend)

    def _write_grad(self, array: np.ndarray | None, /) -> None:
        """Store ``array`` (canonical layout, the parameter's shape) as the gradient; ``None`` clears it.

        ``tree.clip_grads`` and ``tree.zero_grads`` write through it, so the framework's
        optimizer step sees the change. Default: refuse.
        """
        msg = (f"Cannot write the gradient of parameter {self.path!r}: the {self.backend} backend does not "
               "implement gradient writes. Clip or zero the gradients with the framework's own API.")
        raise errors.UnsupportedModelError(msg, path=self.path, expected="gradient writes", got=self.backend)

    def _cast(self, dtype: np.dtype, /) -> None:
        """Change the storage to ``dtype`` in place, keeping the native object an optimizer holds and ties.

        ``tree.cast`` calls it after checking ``dtype``; values convert as NumPy's ``astype``
        does. Default: refuse (say so, with what to do instead).
        """
        msg = (f"Cannot cast parameter {self.path!r} to {dtype.name}: the {self.backend} backend cannot change a "
               "parameter's dtype in place. Build the model in that dtype and pp.transfer the values.")
        raise errors.UnsupportedModelError(msg, path=self.path, expected="in-place casts", got=self.backend)

    # ---- bulk hooks: one call for many parameters of this class (override for speed) ------------
    # Static methods: the core groups a collection's parameters by class and calls these on
    # ``type(p)`` with that class's parameters (tied ones once, in model order). Each default
    # loops over the per-parameter hooks above, so a backend overrides only those it can do
    # faster; an override may hand some parameters on to the default (``Parameter._x_many``).

    @staticmethod
    def _trainable_many(params: list[Parameter], /) -> list[bool]:
        """The framework's flag of each of ``params``, as :meth:`_trainable` reads it. Default: one call each."""
        return [bool(p._trainable()) for p in params]

    @staticmethod
    def _set_trainable_many(params: list[Parameter], value: bool, /) -> None:
        """Set the flag of each of ``params`` to ``value``, as :meth:`_set_trainable` does.

        ``freeze``/``unfreeze`` pass the parameters whose flag differs (for ``unfreeze``, of
        kind ``"parameter"``). The hook may stop at the first refusal: the core then puts
        back, through :meth:`_set_trainable`, every flag that changed. Default:
        :meth:`_set_trainable` on each whose flag still differs (a tied one may have
        followed the one before).
        """
        for p in params:
            if bool(p._trainable()) != value:
                p._set_trainable(value)

    @staticmethod
    def _roles_many(params: list[Parameter], /) -> list[str]:
        """The :attr:`role` of each of ``params`` (``pp.param_groups``' ``role:`` rules). Default: one read each."""
        return [p.role for p in params]

    @staticmethod
    def _read_many(params: list[Parameter], /) -> list[np.ndarray]:
        """The value of each of ``params`` as :meth:`numpy` returns it (canonical layout, may share memory), for
        ``tree.vector()``; raises as :meth:`numpy` does. Default: one :meth:`numpy` call each."""
        return [p.numpy() for p in params]

    @staticmethod
    def _grad_norm_many(params: list[Parameter], norm_type: float, /) -> float:
        """The ``norm_type`` norm of the gradients of ``params`` taken together, as ``clip_grad_norm_`` computes it.

        Parameters without data or without a gradient are left out; ``0.0`` when none has
        one. ``norm_type`` is checked (``> 0``, may be ``math.inf``); the core combines the
        norms of several classes. Default: every gradient read with :meth:`_grad`, one BLAS
        dot each in its own floating dtype (float64 for narrower ones).
        """
        return bulk.numpy_grad_norm(params, norm_type)

    @staticmethod
    def _clip_grads_many(params: list[Parameter], max_norm: float, norm_type: float, /) -> float:
        """``clip_grads``: scale every gradient of ``params`` so their global norm is at most ``max_norm``.

        Returns the norm before clipping; the factor is torch's ``max_norm / (norm + 1e-6)``,
        applied when below 1 or NaN (a NaN norm makes every gradient NaN, as torch's), in place.
        All or none: a refusal raises with no gradient changed. Default: the norm of each
        class's :meth:`_grad_norm_many`, then each gradient read with :meth:`_grad`,
        multiplied in its own dtype and written with
        :meth:`_write_grad` (the ones written put back if one refuses).
        """
        norm = bulk.grad_norm_of(params, norm_type)
        factor = max_norm / (norm + 1e-6)
        if not factor >= 1.0:   # NaN too: torch's clamp keeps it
            bulk.rewrite_grads(params, lambda g: np.multiply(g, g.dtype.type(factor), dtype=g.dtype))
        return norm

    @staticmethod
    def _zero_grads_many(params: list[Parameter], /) -> None:
        """Set every gradient of ``params`` to zeros in place (``zero_grads``); all or none, as
        :meth:`_clip_grads_many`. Default: :meth:`_write_grad` of zeros for each."""
        bulk.rewrite_grads(params, np.zeros_like)

    @staticmethod
    def _cast_many(params: list[Parameter], dtype: np.dtype, /) -> None:
        """Cast each of ``params`` (floating, another dtype than ``dtype``) to ``dtype``, as :meth:`_cast`.

        All or none: a refusal raises with every parameter's dtype and value as before.
        Default: :meth:`_cast` on each; on a refusal, the ones cast are cast back and their
        values (copied before, a narrower dtype loses them) written back.
        """
        bulk.cast_each([(p, dtype) for p in params])

    def _layout_doubt(self) -> str | None:
        """Why this parameter's canonical layout cannot be established, or ``None`` (the default).

        A sentence such as "the input of this Dense kernel is a flattened feature map whose
        channel order the model's structure does not show". :func:`polyparam.transfer`
        between two different backends refuses such a parameter before writing anything, and
        so does :func:`polyparam.load` of a file another framework saved (or one that
        records a doubt of the model that saved it: ``pp.save`` records them); within one
        backend the native order round-trips and nothing is refused.
        """
        return None

    @staticmethod
    def _layout_doubts_many(params: list[Parameter], /) -> list[str | None]:
        """The :meth:`_layout_doubt` of each of ``params`` (``pp.save`` records them, a load or transfer across
        frameworks refuses them). Default: one call each."""
        return [p._layout_doubt() for p in params]

    def _after_fill(self) -> None:
        """Called after an initializer drew this parameter's value in a tree's or selection's ``initialize``
        (deferred ones when they run; not after a ``Load``'s copy, nor for one parameter's own ``initialize``),
        inside the operation's journal: write back what the framework's own initialization keeps whatever
        the draw, such as torch's ``Embedding`` ``padding_idx`` row of zeros (``reset_parameters`` and Hugging
        Face's ``_init_weights`` keep it; the row then never gets a gradient). The default does nothing."""
        return None

    @staticmethod
    def _after_fill_many(params: list[Parameter], /) -> None:
        """Called once after a tree's or selection's ``initialize`` drew ``params`` (this class's, each
        :meth:`_after_fill` already called; not a ``Load``'s copies), inside the operation's journal: set
        what the framework derives from several drawn tensors together, writing only ``params`` (the
        journal holds their values before the call). ``params`` includes deferred ones, whose fills are
        recorded (:meth:`_defer`): record what derives from them to run after those. For torch's weight
        norm, the magnitude ``g`` becomes ``‖v‖`` when both were drawn, as ``weight_norm`` sets it, so the
        layer's weight is the initializer's draw. The default does nothing."""
        return None

    def _write_refusal(self) -> str | None:
        """Why the backend would refuse to write this parameter now, or ``None`` (the default).

        Asked before the first write of ``set`` and of every multi-parameter write, so a
        refusal the backend can foresee (a read-only NumPy array, a framework state that
        rejects writes) changes nothing instead of being undone.
        """
        return None

    def _require_writable(self, action: str) -> None:
        """Raise :class:`~polyparam.errors.WriteFailedError` if :meth:`_write_refusal` gives a reason."""
        reason = self._write_refusal()
        if reason is not None:
            msg = f"Cannot {action} parameter {self.path!r}: expected storage that accepts writes, got {reason}."
            raise errors.WriteFailedError(msg, path=self.path, expected="writable storage", got=reason)

    def _tie_refusal(self, anchor: Parameter, /) -> str | None:
        """Why this backend cannot make this parameter share ``anchor``'s storage, or ``None``.

        Checked for every member before the first tie is made (shapes, dtypes and
        devices are already checked by the core). E.g. Keras cannot share one variable
        between an embedding ``(V, D)`` and a dense kernel stored ``(D, V)``.
        """
        return None

    def _share(self, anchor: Parameter, /) -> None:
        """Make this parameter use ``anchor``'s storage (tie). Shapes were checked."""
        msg = f"Cannot tie parameter {self.path!r}: the {self.backend} backend does not support tying."
        raise errors.TieError(msg, path=self.path)

    def _unshare(self) -> None:
        """Give this parameter its own copy of its current value (untie)."""
        msg = f"Cannot untie parameter {self.path!r}: the {self.backend} backend does not support tying."
        raise errors.TieError(msg, path=self.path)


def _check_item_write(p: Parameter, key: Any, value: np.ndarray) -> None:
    """Refuse an item write NumPy would refuse, with the typed errors of :meth:`Parameter.__setitem__`.

    The index is tried on a zero-stride probe of the parameter's shape (one byte, not
    a copy of the array; an advanced index allocates one byte per selected element).
    """
    shape = cast("tuple[int, ...]", p.shape)
    probe = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=shape, strides=(0,) * len(shape))
    shown = repr(key) if len(repr(key)) <= 80 else f"{repr(key)[:77]}..."
    try:
        target = np.shape(probe[key])
    except (IndexError, TypeError, ValueError) as exc:
        msg = (f"Cannot write to parameter {p.path!r} at index {shown}: expected an index within shape "
               f"{format_shape(shape)}, got {type(exc).__name__}: {exc}. Use integers, slices, masks or "
               "integer arrays within the shape (canonical layout: dense weights are (out, in)).")
        raise errors.InvalidIndexError(msg, path=p.path, expected=shape, got=key) from None
    got = value.shape
    while len(got) > len(target) and got[0] == 1:   # NumPy drops a value's leading unit axes
        got = got[1:]
    try:
        fits = np.broadcast_shapes(got, target) == target
    except ValueError:
        fits = False
    if not fits:
        msg = (f"Cannot write to parameter {p.path!r} at index {shown}: expected a value that broadcasts "
               f"to the selection's shape {format_shape(target)}, got shape {format_shape(value.shape)}. "
               "Pass a scalar or a value of the selection's shape.")
        raise errors.ShapeMismatchError(msg, path=p.path, expected=target, got=value.shape)

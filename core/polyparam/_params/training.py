"""Training-loop operations on any collection of parameters: freeze, count, gradients, casts, flat vectors.

Each works on the collection's tensors in model order, tied ones once, through the
backend's bulk hooks (`_set_trainable_many`, `_grad_norm_many`, `_clip_grads_many`,
`_zero_grads_many`, `_cast_many`: one call per parameter class, defaults looping over
`_set_trainable`, `_grad`/`_write_grad`, `_cast`), all or nothing: whatever a backend
raises part-way, what was changed is changed back.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator

import numpy as np

from polyparam import errors
from polyparam._layout import bfloat16, common_dtype, is_floating
from polyparam._params.bulk import by_class, cast_each, grad_norm_of
from polyparam._params.journal import exclusive_writes
from polyparam._params.parameter import Parameter
from polyparam._params.plan import WritePlan

__all__ = ["TrainingOps", "cast_together", "per_parameter", "require_predicate", "roles_of", "trainable_flags"]


def real_number(value: Any, argument: str) -> float:
    """``value`` as a float: Python, NumPy and 0-d framework scalars (``torch.tensor(0.5)``); never a bool."""
    if isinstance(value, (bool, np.bool_, str)):
        number = None
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = None
    if number is None:
        msg = f"Invalid value for argument `{argument}`: expected a real number, got {type(value).__name__} {value!r}."
        raise errors.InvalidArgumentError(msg, argument=argument, expected="a real number", got=value)
    return number


def _dtype_of(dtype: Any) -> np.dtype:
    """``dtype`` as NumPy's, accepting ``"bfloat16"`` (ml_dtypes) and framework dtypes (``torch.bfloat16``)."""
    if isinstance(dtype, str) and dtype.strip().lower() == "float":
        msg = ("Invalid value for argument `dtype`: expected an unambiguous dtype, got 'float', which is float64 "
               "to NumPy and float32 to torch ('.float()'). Pass 'float32' or 'float64'.")
        raise errors.InvalidArgumentError(msg, argument="dtype", expected="'float32' or 'float64'", got=dtype)
    if not isinstance(dtype, (str, np.dtype, type)):
        dtype = str(dtype).rsplit(".", 1)[-1]   # torch.bfloat16, tf.float16, jnp dtypes: by name
    try:
        return np.dtype(dtype)
    except TypeError:
        bf16 = bfloat16() if str(dtype) in ("bfloat16", "bf16") else None
        if bf16 is not None:
            return bf16
        msg = f"Invalid value for argument `dtype`: expected a NumPy dtype or its name, got {dtype!r}."
        raise errors.InvalidArgumentError(msg, argument="dtype", expected="a dtype", got=dtype) from None


@contextlib.contextmanager
def cast_together(casts: list[tuple[Parameter, np.dtype]]) -> Iterator[None]:
    """Cast each parameter to its dtype (``Parameter._cast``) for the block; if anything fails, in the casts or
    in the block, cast them back and put their old values back (a cast to a narrower dtype loses them)."""
    undo = cast_each(casts)
    try:
        yield
    except BaseException:
        undo()
        raise


def per_parameter(params: list[Parameter], hook: str) -> list[Any]:
    """What the bulk read hook ``hook`` (``"_trainable_many"``, ``"_roles_many"``, ``"_read_many"``) of each
    class returns for its parameters, in the order of ``params``."""
    groups = by_class(params)
    if len(groups) == 1:
        return list(getattr(groups[0][0], hook)(params))
    found = {id(p): r for cls, members in groups for p, r in zip(members, getattr(cls, hook)(members))}
    return [found[id(p)] for p in params]


def trainable_flags(params: list[Parameter]) -> list[bool]:
    """``p.trainable`` of each of ``params``, read through the bulk hook of each class."""
    return [bool(flag) for flag in per_parameter(params, "_trainable_many")]


def roles_of(params: list[Parameter]) -> list[str]:
    """``p.role`` of each of ``params``, read through the bulk hook of each class."""
    return per_parameter(params, "_roles_many")


def require_predicate(where: Any, operation: str, fix: str) -> None:
    """Refuse a ``where=`` of ``operation`` that is neither ``None`` nor a predicate on the Parameter."""
    if where is not None and not callable(where):
        msg = (f"Invalid value for argument `where` of {operation}: expected a predicate on the Parameter, got "
               f"{type(where).__name__} {where!r}. {fix}")
        raise errors.InvalidArgumentError(msg, argument="where", expected="a callable", got=where)


def _checked_norm_type(norm_type: Any) -> float:
    norm_type = real_number(norm_type, "norm_type")   # torch's "fro" and "nuc" are matrix norms: not here
    if not (norm_type > 0):
        msg = f"Invalid value for argument `norm_type`: expected a positive number or inf, got {norm_type!r}."
        raise errors.InvalidArgumentError(msg, argument="norm_type", expected="> 0", got=norm_type)
    return norm_type


def _require_whole(path: str, dtype: np.dtype, piece: np.ndarray) -> None:
    """Refuse floating values an integer tensor (a counter, a quantized kernel) cannot hold unchanged."""
    limits = (0, 1) if dtype.kind == "b" else (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    wide = piece.astype(np.float64)
    top = float(limits[1])     # 2**63 - 1 rounds up to 2**63 in float64: then that value is already too high
    too_high = wide >= top if int(top) > limits[1] else wide > top
    bad = ~np.isfinite(wide) | (wide != np.round(wide)) | (wide < limits[0]) | too_high
    if bad.any():
        got = wide.reshape(-1)[int(np.argmax(bad.reshape(-1)))]
        msg = (f"Cannot load a vector into parameter {path!r} ({dtype.name}): expected whole numbers from {limits[0]} "
               f"to {limits[1]}, got {got!r} (a cast would change it silently). Pass what tree.vector() returned, or "
               "select the floating parameters (tree.select(where=lambda p: p.dtype.kind == 'f')).")
        raise errors.DTypeMismatchError(msg, path=path, expected=f"whole numbers for {dtype.name}", got=float(got))


class TrainingOps:
    """Mixed into :class:`~polyparam._params.tree.ParameterCollection`: the operations of a training loop.

    Each reads the collection once (:meth:`items`) and hands each parameter class its
    parameters in one call of a bulk hook (`_set_trainable_many`, `_grad_norm_many`,
    `_clip_grads_many`, `_zero_grads_many`, `_cast_many`), whose defaults loop over the
    per-parameter hooks. Writes that must be all or nothing across several classes (a
    collection mixing backends) take the per-parameter path of the base class instead.
    """

    def items(self) -> list[tuple[str, Parameter]]:  # provided by ParameterCollection
        raise NotImplementedError

    def parameters(self) -> list[Parameter]:  # provided by ParameterCollection
        raise NotImplementedError

    # ---- trainability -------------------------------------------------------------

    def freeze(self) -> None:
        """Make every parameter of the collection non-trainable, as the framework's own switch does.

        Tied parameters freeze together; buffers and constants already are. All or nothing.
        """
        self._set_trainable_all(False)

    def unfreeze(self) -> None:
        """Make every parameter (kind ``parameter``) of the collection trainable again; buffers stay frozen."""
        self._set_trainable_all(True)

    def _set_trainable_all(self, value: bool) -> None:
        params = self.parameters()
        with exclusive_writes():
            todo: list[tuple[type[Parameter], list[Parameter]]] = []
            for cls, members in by_class(params):
                chosen = [p for p, flag in zip(members, cls._trainable_many(members)) if flag != value]
                if value:   # buffers and constants are never trainable (only frozen ones' kinds are read)
                    chosen = [p for p in chosen if p._kind() == "parameter"]
                if chosen:
                    todo.append((cls, chosen))
            try:
                for cls, chosen in todo:
                    cls._set_trainable_many(chosen, value)
            except BaseException:
                for _, chosen in reversed(todo):   # whatever the hook got to: every flag that changed
                    for p in reversed(chosen):
                        try:
                            if bool(p._trainable()) == value:
                                p._set_trainable(not value)
                        except Exception:  # noqa: BLE001 - restoring the others matters more than this one
                            continue
                raise

    def count(self, *, trainable: bool | None = None) -> int:
        """The number of scalars, tied parameters once; ``trainable=True``/``False`` counts only those.

        Equals the framework's own count (``sum(p.numel() for p in m.parameters())`` plus buffers,
        Keras' ``count_params()``, Gluon's ``collect_params()`` sizes).

        Raises:
            DeferredInitializationError: A parameter's shape is not known yet.
            InvalidArgumentError: ``trainable`` is not ``None``, ``True`` or ``False``.
        """
        if trainable is not None and not isinstance(trainable, (bool, np.bool_)):
            msg = (f"Invalid value for argument `trainable` of count: expected None, True or False, got "
                   f"{type(trainable).__name__} {trainable!r}. Pass trainable=True to count the trainable ones.")
            raise errors.InvalidArgumentError(msg, argument="trainable", expected="None, True or False",
                                              got=trainable)
        items = self.items()
        if trainable is not None:
            flags = trainable_flags([p for _, p in items])
            items = [item for item, flag in zip(items, flags) if flag == trainable]
        total = 0
        for path, p in items:
            size = p.size
            if size is None:
                msg = (f"Cannot count parameter {path!r}: expected a known shape, got {p.shape}. Run one forward "
                       "pass (or build the model) first.")
                raise errors.DeferredInitializationError(msg, path=path, expected="a known shape", got=p.shape)
            total += size
        return total

    # ---- gradients ----------------------------------------------------------------

    def grad_norm(self, norm_type: float = 2.0) -> float:
        """The global norm of every gradient (tied parameters once), as ``clip_grad_norm_`` computes it.

        Parameters without a gradient (frozen, or no backward pass yet) are left out;
        ``norm_type`` may be ``math.inf`` (the largest absolute value).
        """
        return grad_norm_of(self.parameters(), _checked_norm_type(norm_type))

    def clip_grads(self, max_norm: float, norm_type: float = 2.0) -> float:
        """Scale every gradient so the global norm is at most ``max_norm``; returns the norm before clipping.

        torch's ``clip_grad_norm_`` formula (``max_norm / (norm + 1e-6)``, never above 1),
        written through the framework's own gradient storage, in place. All or nothing. As
        torch's, a NaN norm makes every gradient NaN and an infinite one scales them by 0:
        check ``math.isfinite`` of the returned norm to skip such a step.
        """
        max_norm = real_number(max_norm, "max_norm")
        if not max_norm >= 0:
            msg = f"Invalid value for argument `max_norm`: expected a number >= 0, got {max_norm!r}."
            raise errors.InvalidArgumentError(msg, argument="max_norm", expected=">= 0", got=max_norm)
        norm_type = _checked_norm_type(norm_type)
        params = self.parameters()
        groups = by_class(params)
        if not groups:
            return 0.0
        # several classes (backends): the base class's per-parameter path keeps it all or nothing across them
        cls = groups[0][0] if len(groups) == 1 else Parameter
        with exclusive_writes():
            return float(cls._clip_grads_many(params, max_norm, norm_type))

    def zero_grads(self) -> None:
        """Set every gradient to zeros (tied parameters once), in place in the framework's gradient storage."""
        params = self.parameters()
        groups = by_class(params)
        if groups:
            cls = groups[0][0] if len(groups) == 1 else Parameter
            with exclusive_writes():
                cls._zero_grads_many(params)

    # ---- precision ----------------------------------------------------------------

    def cast(self, dtype: Any, /, *, where: Any = None) -> None:
        """Change the dtype of every floating parameter (or those ``where(p)`` selects) in place.

        The native objects an optimizer holds are kept where the framework allows (torch
        ``p.data``, Gluon ``Parameter.cast``), and ties stay; integer tensors (counters,
        quantized kernels) keep theirs. All or nothing: a backend that cannot cast refuses
        with a typed error before anything changes, and a failure part-way casts back.

        Args:
            dtype: A floating dtype or its name (``"float16"``, ``"bfloat16"``, ``np.float32``).
            where: A predicate on the :class:`Parameter` (a tied one is asked once, by its first path);
                default: every floating one. To choose by a glob, role or kind, ``select`` first.
        """
        target = _dtype_of(dtype)
        if target.kind != "f" and "bfloat16" not in target.name:
            msg = f"Cannot cast to {target.name}: expected a floating dtype (float16, bfloat16, float32, float64)."
            raise errors.InvalidArgumentError(msg, argument="dtype", expected="a floating dtype", got=target.name)
        require_predicate(where, "cast", f"Pass where=lambda p: p.path.startswith('0.'), or select first: "
                                         f"tree.select({where!r}).cast({target.name!r}).")
        todo = []
        for p in self.parameters():
            current = p.dtype
            if (current.kind == "f" or "bfloat16" in current.name) and current != target and (
                    where is None or where(p)):
                todo.append(p)
        groups = by_class(todo)
        with exclusive_writes():
            if groups:
                cls = groups[0][0] if len(groups) == 1 else Parameter
                cls._cast_many(todo, target)

    # ---- whole-tree values ------------------------------------------------------------

    def vector(self) -> np.ndarray:
        """Every value flattened into one 1-D array, in model order, tied parameters once (canonical layout).

        Its dtype holds every parameter's (``np.result_type``; bfloat16 with float16 or integers, which
        NumPy cannot promote, as float32 would be): next to floats, int64 values beyond 2**53 lose
        their last bits, as NumPy's float64 does. ``len(tree.vector()) == tree.count()``.
        """
        values = [np.asarray(v).ravel() for v in per_parameter(self.parameters(), "_read_many")]
        if not values:
            return np.zeros(0, np.float32)
        dtype = common_dtype(v.dtype for v in values)
        return np.concatenate([v.astype(dtype, copy=False) for v in values])

    def load_vector(self, vector: Any, /) -> None:
        """Write a flat vector back, as :meth:`vector` lays it out; all or nothing.

        Raises:
            ShapeMismatchError: The vector's length is not :meth:`count`.
        """
        v = np.asarray(vector.asnumpy() if hasattr(vector, "asnumpy") else vector)   # an MXNet NDArray too
        if v.dtype.kind not in "biuf" and not is_floating(v.dtype):
            msg = (f"Cannot load a vector: expected real numbers, got dtype {v.dtype.name}. Pass what tree.vector() "
                   "returned (or any real-valued array of that length).")
            raise errors.DTypeMismatchError(msg, expected="a real dtype", got=v.dtype.name)
        items = self.items()
        sizes = [p.size or 0 for _, p in items]
        if v.ndim != 1 or v.size != sum(sizes):
            msg = (f"Cannot load a vector: expected a 1-D array of {sum(sizes):,} values (tree.count()), got shape "
                   f"{v.shape}. Pass what tree.vector() returned for this architecture.")
            raise errors.ShapeMismatchError(msg, expected=(sum(sizes),), got=v.shape)
        plan = WritePlan("vector")
        offset = 0
        for (path, p), n in zip(items, sizes):
            piece = v[offset:offset + n].reshape(tuple(d or 0 for d in p.shape))
            offset += n
            plan.check_writable(path, p)
            if p.dtype.kind in "biu" and piece.dtype.kind not in "biu":
                _require_whole(path, p.dtype, piece)
            elif piece.dtype != p.dtype:   # integers into narrower integers, floats beyond a float's range
                piece = p._cast_checked(piece, p.dtype, action="load a vector into")
            array = p.coerce(piece.astype(p.dtype) if piece.dtype != p.dtype else piece, action="load a vector into")
            plan.add(path, p, functools.partial(np.asarray, array))
        plan.commit(description="load vector", progress=False)

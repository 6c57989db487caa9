"""Training-loop operations on any collection of parameters: freeze, count, gradients, casts, flat vectors.

Each works on the collection's tensors in model order, tied ones once, through the
backend's hooks (`_set_trainable`, `_grad`/`_write_grad`, `_cast`, `_write`), all or
nothing: whatever a backend raises part-way, what was changed is changed back.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from polyparam import errors
from polyparam._layout import is_floating
from polyparam._params.journal import exclusive_writes
from polyparam._params.plan import WritePlan

if TYPE_CHECKING:
    from polyparam._params.parameter import Parameter

__all__ = ["TrainingOps"]


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
    if not isinstance(dtype, (str, np.dtype, type)):
        dtype = str(dtype).rsplit(".", 1)[-1]   # torch.bfloat16, tf.float16, jnp dtypes: by name
    try:
        return np.dtype(dtype)
    except TypeError:
        if str(dtype) in ("bfloat16", "bf16"):
            try:
                import ml_dtypes
            except ImportError:
                pass
            else:
                return np.dtype(ml_dtypes.bfloat16)
        msg = f"Invalid value for argument `dtype`: expected a NumPy dtype or its name, got {dtype!r}."
        raise errors.InvalidArgumentError(msg, argument="dtype", expected="a dtype", got=dtype) from None


@contextlib.contextmanager
def cast_together(casts: list[tuple[Parameter, np.dtype]]) -> Iterator[None]:
    """Cast each parameter to its dtype (``Parameter._cast``) for the block; if anything fails, in the casts or
    in the block, cast them back and put their old values back (a cast to a narrower dtype loses them)."""
    done: list[tuple[Parameter, np.dtype, np.ndarray | None]] = []
    try:
        for p, dtype in casts:
            old = p.numpy().copy() if p.state == "initialized" else None
            old_dtype = p.dtype
            p._cast(dtype)
            done.append((p, old_dtype, old))
        yield
    except BaseException:
        for p, old_dtype, old in reversed(done):
            try:
                p._cast(old_dtype)
                if old is not None:
                    p._write(old)
            except Exception:  # noqa: BLE001 - restoring the others matters more than this one
                continue
        raise


class TrainingOps:
    """Mixed into :class:`~polyparam._params.tree.ParameterCollection`: the operations of a training loop."""

    def items(self) -> list[tuple[str, Parameter]]:  # provided by ParameterCollection
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
        todo = [(path, p) for path, p in self.items() if p.kind == "parameter" and p.trainable != value]
        done: list[Parameter] = []
        with exclusive_writes():
            try:
                for _, p in todo:   # the setter's checks, less those todo made (a bool, kind "parameter")
                    if bool(p._trainable()) != value:   # a tied one may have followed the one before
                        p._set_trainable(value)
                    done.append(p)
            except BaseException:
                for p in reversed(done):
                    try:
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
        """
        total = 0
        for path, p in self.items():
            if trainable is not None and p.trainable != trainable:
                continue
            if p.size is None:
                msg = (f"Cannot count parameter {path!r}: expected a known shape, got {p.shape}. Run one forward "
                       "pass (or build the model) first.")
                raise errors.DeferredInitializationError(msg, path=path, expected="a known shape", got=p.shape)
            total += p.size
        return total

    # ---- gradients ----------------------------------------------------------------

    def _grads(self) -> list[tuple[str, Parameter, np.ndarray]]:
        out = []
        for path, p in self.items():
            if p.state != "initialized":
                continue
            g = p.grad()
            if g is not None:
                out.append((path, p, g))
        return out

    def grad_norm(self, norm_type: float = 2.0) -> float:
        """The global norm of every gradient (tied parameters once), as ``clip_grad_norm_`` computes it.

        Parameters without a gradient (frozen, or no backward pass yet) are left out;
        ``norm_type`` may be ``math.inf`` (the largest absolute value).
        """
        norm_type = float(norm_type)
        if not (norm_type > 0):
            msg = f"Invalid value for argument `norm_type`: expected a positive number or inf, got {norm_type!r}."
            raise errors.InvalidArgumentError(msg, argument="norm_type", expected="> 0", got=norm_type)
        grads = [g for _, _, g in self._grads()]
        if not grads:
            return 0.0
        if math.isinf(norm_type):
            return float(max(float(np.max(np.abs(g))) if g.size else 0.0 for g in grads))
        if norm_type == 2.0:   # one BLAS dot per tensor, in its own float dtype (as torch's vector_norm), no copy
            total = 0.0
            for g in grads:
                flat = np.ravel(g)
                if flat.dtype.kind == "f" and flat.dtype.itemsize >= 4:
                    total += float(np.dot(flat, flat))
                else:
                    wide = flat.astype(np.float64)
                    total += float(np.dot(wide, wide))
            return math.sqrt(total)
        total = sum(float(np.sum(np.abs(g.astype(np.float64)) ** norm_type)) for g in grads)
        return float(total ** (1.0 / norm_type))

    def clip_grads(self, max_norm: float, norm_type: float = 2.0) -> float:
        """Scale every gradient so the global norm is at most ``max_norm``; returns the norm before clipping.

        torch's ``clip_grad_norm_`` formula (``max_norm / (norm + 1e-6)``, never above 1),
        written through the framework's own gradient storage. All or nothing.
        """
        max_norm = real_number(max_norm, "max_norm")
        if not max_norm >= 0:
            msg = f"Invalid value for argument `max_norm`: expected a number >= 0, got {max_norm!r}."
            raise errors.InvalidArgumentError(msg, argument="max_norm", expected=">= 0", got=max_norm)
        norm = self.grad_norm(norm_type)
        factor = max_norm / (norm + 1e-6)
        if factor < 1.0:
            self._rewrite_grads(lambda g: np.multiply(g, g.dtype.type(factor), dtype=g.dtype))
        return norm

    def zero_grads(self) -> None:
        """Set every gradient to zeros (tied parameters once), through the framework's gradient storage."""
        self._rewrite_grads(np.zeros_like)

    def _rewrite_grads(self, change: Any) -> None:
        grads = self._grads()
        done: list[tuple[Parameter, np.ndarray]] = []
        with exclusive_writes():
            try:
                for _, p, g in grads:
                    p._write_grad(np.ascontiguousarray(change(g)))
                    done.append((p, g))
            except BaseException:
                for p, g in reversed(done):
                    try:
                        p._write_grad(g)
                    except Exception:  # noqa: BLE001 - restoring the others matters more than this one
                        continue
                raise

    # ---- precision ----------------------------------------------------------------

    def cast(self, dtype: Any, /, *, where: Any = None) -> None:
        """Change the dtype of every floating parameter (or those ``where(p)`` selects) in place.

        The native objects an optimizer holds are kept where the framework allows (torch
        ``p.data``, Gluon ``Parameter.cast``), and ties stay; integer tensors (counters,
        quantized kernels) keep theirs. All or nothing: a backend that cannot cast refuses
        with a typed error before anything changes, and a failure part-way casts back.

        Args:
            dtype: A floating dtype or its name (``"float16"``, ``"bfloat16"``, ``np.float32``).
            where: A predicate on the :class:`Parameter`; default: every floating one.
        """
        target = _dtype_of(dtype)
        if target.kind != "f" and "bfloat16" not in target.name:
            msg = f"Cannot cast to {target.name}: expected a floating dtype (float16, bfloat16, float32, float64)."
            raise errors.InvalidArgumentError(msg, argument="dtype", expected="a floating dtype", got=target.name)
        todo = [(path, p) for path, p in self.items()
                if (p.dtype.kind == "f" or "bfloat16" in p.dtype.name) and p.dtype != target
                and (where is None or where(p))]
        with exclusive_writes(), cast_together([(p, target) for _, p in todo]):
            pass

    # ---- whole-tree values ------------------------------------------------------------

    def vector(self) -> np.ndarray:
        """Every value flattened into one 1-D array, in model order, tied parameters once (canonical layout).

        Its dtype holds every parameter's (``np.result_type``); ``len(tree.vector()) == tree.count()``.
        """
        values = [p.numpy().ravel() for _, p in self.items()]
        if not values:
            return np.zeros(0, np.float32)
        return np.concatenate([np.asarray(v) for v in values]).astype(np.result_type(*values), copy=False)

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
            array = p.coerce(piece.astype(p.dtype) if piece.dtype != p.dtype else piece, action="load a vector into")
            plan.add(path, p, functools.partial(np.asarray, array))
        plan.commit(description="load vector", progress=False)

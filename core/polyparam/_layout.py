"""Vocabulary shared by every layer of polyparam: shapes, roles and axis roles (a leaf module)."""

from __future__ import annotations

from typing import Iterable, Literal

import numpy as np

__all__ = ["AXIS_ROLES", "KINDS", "ROLES", "Shape", "State", "all_finite", "bfloat16", "default_axes", "format_shape",
           "is_floating", "join_path", "largest"]

Shape = tuple["int | None", ...]
State = Literal["initialized", "uninitialized", "deferred"]

#: What a parameter is for. Initializers dispatch on it: weights get the
#: initializer, the other roles get their conventional values (see
#: :mod:`polyparam.init`).
ROLES = ("weight", "bias", "scale", "shift", "running_mean", "running_var", "other")

#: What a tensor is to its framework: a trained ``parameter``, a ``buffer`` (state the
#: framework saves but no optimizer updates, such as an attention mask or a power-iteration
#: vector) or a ``constant``.
KINDS = ("parameter", "buffer", "constant")

#: What each axis of a parameter's canonical layout means. Fans are computed from
#: these, never from axis positions.
AXIS_ROLES = ("out", "in", "space", "other")


def format_shape(shape: Shape) -> str:
    """Format a shape with unknown dimensions shown as ``?``."""
    inner = ", ".join("?" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def default_axes(role: str, ndim: int) -> tuple[str, ...]:
    """Axis roles of a canonical (PyTorch-layout) parameter when an adapter declares none."""
    if role == "weight" and ndim >= 2:
        return ("out", "in") + ("space",) * (ndim - 2)
    if ndim == 1 and role in ("bias", "scale", "shift", "running_mean", "running_var"):
        return ("out",)
    return ("other",) * ndim


def join_path(prefix: str, name: str) -> str:
    """``prefix.name``, or ``name`` at the root: how canonical paths are built."""
    return f"{prefix}.{name}" if prefix else name


def bfloat16() -> np.dtype | None:
    """NumPy's bfloat16 (from ``ml_dtypes``, which NumPy needs for it), or ``None`` without that package."""
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


def is_floating(dtype: object) -> bool:
    """Whether ``dtype`` is a floating type, NumPy's own or an ``ml_dtypes`` one (``bfloat16``, ``float8_*``,
    ``float6_*``, ``float4_*``)."""
    kind, name = getattr(dtype, "kind", ""), getattr(dtype, "name", "")
    return kind == "f" or (kind == "V" and (name == "bfloat16" or name.startswith(("float8", "float6", "float4"))))


def common_dtype(dtypes: Iterable[np.dtype]) -> np.dtype:
    """``np.result_type`` of ``dtypes``; where NumPy knows no common type (an ``ml_dtypes`` float with float16 or
    an integer), the one of the same dtypes with each ``ml_dtypes`` float read as float32, which holds every
    bfloat16 and float8 value exactly (bfloat16 + float16: float32; bfloat16 + int64: float64)."""
    distinct = set(dtypes)
    try:
        return np.result_type(*distinct)
    except TypeError:   # NumPy 2's DTypePromotionError is one
        return np.result_type(*(np.dtype(np.float32) if d.kind == "V" and is_floating(d) else d for d in distinct))


def all_finite(array: np.ndarray) -> bool:
    """Whether every value of ``array`` is finite, asked a piece at a time (no mask as large as the array)."""
    flat = array.reshape(-1)
    step = 1 << 20
    return all(bool(np.isfinite(flat[i:i + step]).all()) for i in range(0, flat.size, step))


def largest(dtype: np.dtype) -> float | None:
    """The largest finite value of a float (or complex) dtype, NumPy's or an ``ml_dtypes`` one, else ``None``."""
    try:
        return float(np.finfo(dtype).max)
    except (TypeError, ValueError):
        pass
    try:
        import ml_dtypes

        return float(ml_dtypes.finfo(dtype).max)
    except (ImportError, TypeError, ValueError):
        return None

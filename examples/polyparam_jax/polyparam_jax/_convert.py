"""Between NumPy and JAX: arrays, layouts and devices."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = ["canonical_shape", "device_name", "from_numpy", "to_canonical", "to_native", "to_numpy"]


# ---- arrays -----------------------------------------------------------------------------


def to_numpy(array: Any) -> np.ndarray:
    """A JAX array as NumPy (read-only where JAX shares its host buffer)."""
    return np.asarray(array)


def from_numpy(array: np.ndarray, dtype: Any) -> Any:
    """A JAX array of ``dtype`` holding a copy of ``array``: ``jnp.asarray`` adopts an aligned NumPy buffer on
    the CPU without copying it, and the parameter would then change with the caller's array."""
    return jnp.array(array, dtype=dtype, copy=True)


# ---- layouts ----------------------------------------------------------------------------


def canonical_shape(shape: tuple[Any, ...], perm: tuple[int, ...] | None) -> tuple[Any, ...]:
    """A native shape in the canonical layout, given the native-to-canonical permutation (``None``: the same)."""
    return tuple(shape) if perm is None else tuple(shape[i] for i in perm)


def to_canonical(native: np.ndarray, perm: tuple[int, ...] | None) -> np.ndarray:
    """``native`` in the canonical layout (a transposed view)."""
    return native if perm is None else native.transpose(perm)


def to_native(canonical: np.ndarray, perm: tuple[int, ...] | None) -> np.ndarray:
    """``canonical`` in the native layout: the inverse of :func:`to_canonical`."""
    if perm is None:
        return canonical
    return canonical.transpose(tuple(int(i) for i in np.argsort(perm)))


# ---- devices ----------------------------------------------------------------------------


def device_name(array: Any) -> str:
    """polyparam's device name of a JAX array (``cpu``, ``gpu:0``; comma-separated when on several)."""
    return ",".join(sorted(f"{d.platform}:{d.id}" if d.platform != "cpu" else "cpu" for d in array.devices()))
